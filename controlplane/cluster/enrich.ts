// Names both ends of every flow record: pod (with labels, workload and node), Service
// ClusterIP, node, or world, as of the record's start time, so that a reused pod IP is
// named after the pod that held it when the flow happened.
//
// This runs once per record at the full ingest rate, so the common case allocates
// nothing: the answer for an address is cached together with the time span over which it
// holds (between lease edges) and the version of that address's history it was computed
// from (so metadata churn elsewhere in the cluster does not empty the cache), and the
// Endpoint objects it hands out are shared, frozen objects (one per pod and address;
// see PodRecord.endpointFor). Consumers must treat record.source and record.destination
// as read-only; copy an Endpoint before changing it.
//
// An agent is trusted only for its own node: the one end it observes itself (the source
// of a from-pod record, the destination of a to-pod record) may carry its naming of a
// local pod (podUid, from the control plane's own list of that node's pods), which is
// honoured once ClusterState.podClaim accepts it; every other end, and a claim the control
// plane cannot check, is named from its address. A record whose local end is a pod of
// another node is refused (localEndProblem), so that an agent with a valid certificate
// cannot put flows on another node's pods.
import { ObservationPoint, VerdictReason, type Endpoint, type FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import type { ChangeCounter, ClusterState, PodClaim } from "./state.js";
import { ADDRESS_WIDTH, formatAddress, type FlowColumns } from "../../flowcolumns/columns.js";
import { splitNanoseconds, type EnrichedColumns } from "../store/enriched-columns.js";
import { addressHash } from "../store/flowmap.js";
import { TripleKeyTable } from "../triple-key-table.js";

/**
 * A cached answer for one address; times as (seconds, nanoseconds) pairs of numbers. A
 * class, as is AddressEntry, which extends it: every answer, and every entry, has one hidden
 * class with its fields inside the object. Built as `{ ...answer, ip, … }` each entry got a
 * hidden class of its own (7,510 for 7,520 entries in bench/ingest-profile), which made
 * every read of an entry field in the per-row loops a megamorphic lookup (bench/README,
 * control plane).
 */
class CachedAnswer {
  // No answer yet: version -1 never holds.
  endpoint: Endpoint = UNRESOLVED;
  version = -1;
  fromSeconds = 0;
  fromNanos = 0;
  toSeconds = 0;
  toNanos = 0;

  /** The answer stands while counter.version === version. */
  constructor(public counter: ChangeCounter) {}
}

/**
 * One distinct address on the column path, found by its 16 bytes: its text (formatted
 * once), its own cached answer (same rules as the text cache: a time span and the
 * address history's version; held in the entry itself, as every row reads both and a
 * separate object was one more cache miss per end and row), a small id for keys built of
 * addresses, and room for the caller's policy identity of the address (ControlPlane's
 * attribution).
 */
export class AddressEntry extends CachedAnswer {
  /**
   * ClusterState.generation when the answer's counter was last seen at its version: while
   * the model stands no counter moves, so a row need not read the counter (another object,
   * another cache miss per end and row). -1: not since the last fill.
   */
  checkedAt = -1;
  /** The address's policy identity (PolicyCompiler.addressIdentity), looked up at the caller's policy generation `policyGeneration` (-1: not yet). */
  policy: { readonly ip: string; readonly identity: number } | undefined = undefined;
  policyGeneration = -1;
  /** The last agent's naming of a pod checked for this address as a local end (admitColumns); undefined: none yet. */
  claim: LocalClaim | undefined = undefined;
  /** addressHash(ip), for the flow map. */
  readonly hash: number;

  constructor(readonly ip: string, readonly id: number, counter: ChangeCounter) {
    super(counter);
    this.hash = addressHash(ip);
  }
}

/**
 * A pod claim's answer for one local address: the pod `uid` on `node`, checked (podClaim,
 * then podEndpoint) while ClusterState.generation was `generation`. It holds until the
 * model changes, so a pod's claim is checked once while the model stands rather than once
 * in every batch (at 250 pods a node that took ~6 % of the gRPC ingest's time; bench/README,
 * control plane).
 */
interface LocalClaim {
  readonly uid: string;
  readonly node: string;
  readonly generation: number;
  readonly problem: LocalEndProblem | undefined;
  readonly endpoint: Endpoint | undefined;
}

/** admitColumns()'s answer: the batch for the store and flow map, and what it refused or renamed. */
export interface AdmittedColumns {
  batch: EnrichedColumns;
  /** Per row (set for admitted rows): the AddressEntry of both ends. */
  sourceEntries: AddressEntry[];
  destinationEntries: AddressEntry[];
  /** Rows by problem: refused ("foreign_pod", "foreign_address") or renamed ("unknown_pod"). */
  problems: Map<LocalEndProblem, number>;
}

/** What is wrong with the local end an agent named; "unknown_pod" is named from its address instead, the others are refused. */
export type LocalEndProblem = Exclude<PodClaim, "ok">;

export interface EnricherOptions {
  /** Addresses whose answer is cached; default 65,536. The cache is emptied when full. */
  cacheSize?: number;
}

const NS_PER_SECOND = 1_000_000_000n;

export class Enricher {
  private readonly byAddress = new Map<string, CachedAnswer>();
  /**
   * The column path's cache: IPv4 by its 32-bit value in v4Table (one probe of a typed
   * array, no Map per row), whose values index v4Entries; IPv6 by its 16 bytes as an
   * 8-character string.
   */
  private readonly byBytes = new Map<string, AddressEntry>();
  private readonly v4Table = new TripleKeyTable();
  private v4Entries: AddressEntry[] = [];
  private nextAddressId = 1;
  private readonly cacheSize: number;

  constructor(private readonly state: ClusterState, options: EnricherOptions = {}) {
    this.cacheSize = options.cacheSize ?? 65_536;
  }

  /**
   * Why the control plane must not take this record from the agent of record.node, or
   * undefined: its local end names a pod of another node ("foreign_pod"), or an address
   * that pod never had, or its address belonged to another node's pod at the record's time
   * ("foreign_address"). "unknown_pod": a pod the control plane does not know (any more);
   * enrich() names that end from its address.
   */
  localEndProblem(record: FlowRecord): LocalEndProblem | undefined {
    const fromPod = record.point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const given = fromPod ? record.source : record.destination;
    if (given !== undefined && given.podUid !== "") {
      const claim = this.state.podClaim(given.podUid, this.claimedAddress(record, given), record.node);
      return claim === "ok" ? undefined : claim;
    }
    // An unnamed SPOOFED sender stays unresolved: its address is forged.
    if (fromPod && record.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) return undefined;
    const ip = fromPod ? record.ip?.source : record.ip?.destination;
    if (ip === undefined || ip === "") return undefined;
    const [seconds, nanos] = recordTime(record);
    const resolved = this.resolve(ip, seconds, nanos);
    return resolved.podUid !== "" && resolved.node !== record.node ? "foreign_address" : undefined;
  }

  /**
   * Fills record.source and record.destination in place and returns the record. The local
   * end, when the agent named its pod and the claim holds (localEndProblem), is completed
   * from that pod, even one deleted within the lease retention; every other end is
   * resolved from its address at the record's startTime (endTime, or now, if absent).
   */
  enrich(record: FlowRecord): FlowRecord {
    this.name(record, this.localEndProblem(record) === undefined);
    return record;
  }

  /**
   * What ingest does per record: checks the local end (localEndProblem) once and, unless
   * the record is refused, names both ends (enrich). Returns the problem, if any.
   */
  admit(record: FlowRecord): LocalEndProblem | undefined {
    const problem = this.localEndProblem(record);
    if (problem !== "foreign_pod" && problem !== "foreign_address") this.name(record, problem === undefined);
    return problem;
  }

  /** enrich(), given whether the agent's naming of the local end holds (`trusted`). */
  private name(record: FlowRecord, trusted: boolean): void {
    const [seconds, nanos] = recordTime(record);
    const source = record.ip?.source ?? "";
    const destination = record.ip?.destination ?? "";
    const fromPod = record.point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const given = fromPod ? record.source : record.destination;
    const local = trusted && given !== undefined && given.podUid !== "" ? given : undefined;
    if (fromPod && record.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) {
      // The sender of a forged source address: the pod the agent named by the interface it
      // came from (under the pod's own address), never the owner of the forged address.
      // Unnamed, or a claim that does not hold, it stays unresolved.
      record.source = local === undefined ? undefined : this.state.podEndpoint(local.podUid, local.ip);
      record.destination = this.endpointOf(undefined, destination, seconds, nanos);
      return;
    }
    record.source = this.endpointOf(fromPod ? local : undefined, source, seconds, nanos);
    record.destination = this.endpointOf(fromPod ? undefined : local, destination, seconds, nanos);
  }

  /** The entry of the address at row `i` of a 16-byte address column (`version` 4: IPv4-mapped). */
  addressAt(col: Uint8Array, i: number, version: number): AddressEntry {
    const o = i * ADDRESS_WIDTH;
    if (version === 4) {
      const key = ((col[o + 12]! << 24) | (col[o + 13]! << 16) | (col[o + 14]! << 8) | col[o + 15]!) >>> 0;
      const known = this.v4Table.get(key, 0, 0);
      if (known >= 0) return this.v4Entries[known]!;
      const entry = this.newEntry(col, i, version);
      this.v4Table.set(key, 0, 0, this.v4Entries.push(entry) - 1);
      return entry;
    }
    let key = "";
    for (let g = 0; g < 16; g += 2) key += String.fromCharCode((col[o + g]! << 8) | col[o + g + 1]!);
    let entry = this.byBytes.get(key);
    if (entry === undefined) {
      entry = this.newEntry(col, i, version);
      this.byBytes.set(key, entry);
    }
    return entry;
  }

  /** A new entry for the address at row `i`, once the caches have room for it. */
  private newEntry(col: Uint8Array, i: number, version: number): AddressEntry {
    // Ids are never reused (an address seen again after this gets a new one), so keys built of ids stay true.
    if (this.byBytes.size + this.v4Entries.length >= this.cacheSize) {
      this.byBytes.clear();
      this.v4Table.clear();
      this.v4Entries = [];
    }
    return new AddressEntry(formatAddress(col, i, version), this.nextAddressId++, this.state.unknownAddresses);
  }

  /** What `entry`'s address named at the time: resolve() over the entry's own cached answer. */
  resolveEntry(entry: AddressEntry, seconds: number, nanos: number): Endpoint {
    const generation = this.state.generation;
    if (within(entry, seconds, nanos)) {
      if (entry.checkedAt === generation) return entry.endpoint;
      if (entry.counter.version === entry.version) {
        entry.checkedAt = generation;
        return entry.endpoint;
      }
    }
    const endpoint = this.fill(entry, entry.ip, seconds, nanos);
    entry.checkedAt = generation;
    return endpoint;
  }

  /**
   * admit() for every row of a columnar batch of `node`, without a record per row: each
   * distinct address is formatted and resolved once (then per row only when the row's time
   * leaves the span its answer holds for, or its address history changed: a reused pod IP
   * is named after the pod that held it at the row's time), and the agent's naming of a
   * local pod is looked up once per (dictionary entry, address) in the batch and checked
   * once per pod and address while the cluster model stands (the claim does not depend on
   * time; LocalClaim). Times move back by `shiftMs` (the agent's clock ahead).
   */
  admitColumns(node: string, columns: FlowColumns, shiftMs: number): AdmittedColumns {
    const n = columns.rows;
    const startSeconds = new Float64Array(n), startNanos = new Uint32Array(n);
    const endSeconds = new Float64Array(n), endNanos = new Uint32Array(n);
    splitNanoseconds(columns.startNs, shiftMs, startSeconds, startNanos);
    splitNanoseconds(columns.endNs, shiftMs, endSeconds, endNanos);
    const sources = new Array<Endpoint | undefined>(n), destinations = new Array<Endpoint | undefined>(n);
    const sourceIps = new Array<string>(n), destinationIps = new Array<string>(n);
    const sourceEntries = new Array<AddressEntry>(n), destinationEntries = new Array<AddressEntry>(n);
    const sourceHashes = new Uint32Array(n), destinationHashes = new Uint32Array(n);
    const sourceHints = new Uint32Array(n), destinationHints = new Uint32Array(n);
    const rows = new Uint32Array(n);
    let kept = 0;
    const problems = new Map<LocalEndProblem, number>();
    const claims = new Map<number, { readonly problem: LocalEndProblem | undefined; readonly endpoint: Endpoint | undefined }>();
    for (let i = 0; i < n; i++) {
      const v = columns.ipVersions[i]!;
      const src = this.addressAt(columns.sourceAddresses, i, v);
      const dst = this.addressAt(columns.destinationAddresses, i, v);
      const seconds = startSeconds[i]!, nanos = startNanos[i]!;
      const fromPod = columns.points[i] === ObservationPoint.OBSERVATION_POINT_FROM_POD;
      const spoofed = fromPod && columns.verdictReasons[i] === VerdictReason.VERDICT_REASON_SPOOFED;
      const local = fromPod ? src : dst;
      const k = columns.localEndpoints[i]!;
      const given = k === 0 ? undefined : columns.localEndpointNames[k - 1];
      let problem: LocalEndProblem | undefined;
      let claimed: Endpoint | undefined;
      if (given !== undefined && given.podUid !== "") {
        const key = (local.id * (columns.localEndpointNames.length + 1) + k) * 2 + (spoofed ? 1 : 0);
        let claim = claims.get(key);
        if (claim === undefined) {
          claim = spoofed ? this.checkClaim(given.podUid, given.ips[0] ?? "", node) : this.localClaim(local, given.podUid, node);
          claims.set(key, claim);
        }
        problem = claim.problem;
        claimed = claim.endpoint;
      } else if (!spoofed) {
        const resolved = this.resolveEntry(local, seconds, nanos);
        if (resolved.podUid !== "" && resolved.node !== node) problem = "foreign_address";
      }
      if (problem !== undefined) problems.set(problem, (problems.get(problem) ?? 0) + 1);
      if (problem === "foreign_pod" || problem === "foreign_address") continue;
      rows[kept++] = i;
      sourceIps[i] = src.ip;
      destinationIps[i] = dst.ip;
      sourceEntries[i] = src;
      destinationEntries[i] = dst;
      sourceHashes[i] = src.hash;
      destinationHashes[i] = dst.hash;
      sourceHints[i] = src.id;
      destinationHints[i] = dst.id;
      if (spoofed) {
        // As name(): the sender named by its interface under its own address, never the forged address's owner.
        sources[i] = claimed;
        destinations[i] = this.resolveEntry(dst, seconds, nanos);
      } else {
        sources[i] = fromPod && claimed !== undefined ? claimed : this.resolveEntry(src, seconds, nanos);
        destinations[i] = !fromPod && claimed !== undefined ? claimed : this.resolveEntry(dst, seconds, nanos);
      }
    }
    return {
      batch: {
        node, columns, rows: kept === n ? rows : rows.slice(0, kept), sources, destinations, sourceIps, destinationIps, sourceHashes, destinationHashes, sourceHints, destinationHints,
        attributions: new Array<undefined>(n), startSeconds, startNanos, endSeconds, endNanos,
      },
      sourceEntries, destinationEntries, problems,
    };
  }

  /** The claim of pod `uid` on `node` for the local address `entry`: the entry's own answer while the model is unchanged. */
  private localClaim(entry: AddressEntry, uid: string, node: string): LocalClaim {
    const known = entry.claim;
    if (known !== undefined && known.generation === this.state.generation && known.uid === uid && known.node === node) return known;
    const claim = this.checkClaim(uid, entry.ip, node);
    entry.claim = claim;
    return claim;
  }

  /** podClaim() of pod `uid` under address `ip` on `node`, with the Endpoint it names when the claim holds. */
  private checkClaim(uid: string, ip: string, node: string): LocalClaim {
    const answer = this.state.podClaim(uid, ip, node);
    const problem = answer === "ok" ? undefined : answer;
    return { uid, node, generation: this.state.generation, problem, endpoint: problem === undefined ? this.state.podEndpoint(uid, ip) : undefined };
  }

  /** The address the local end is shown under: the record's, except for a SPOOFED sender (its own). */
  private claimedAddress(record: FlowRecord, given: Endpoint): string {
    const fromPod = record.point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    if (fromPod && record.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) return given.ip;
    const ip = fromPod ? record.ip?.source : record.ip?.destination;
    return ip !== undefined && ip !== "" ? ip : given.ip;
  }

  /** `claimed`: the agent's accepted naming of this end; otherwise the end is named from its address. */
  private endpointOf(claimed: Endpoint | undefined, ip: string, seconds: number, nanos: number): Endpoint | undefined {
    if (claimed !== undefined) {
      const known = this.state.podEndpoint(claimed.podUid, ip !== "" ? ip : claimed.ip);
      if (known !== undefined) return known;
    }
    if (ip === "") return undefined;
    return this.resolve(ip, seconds, nanos);
  }

  private resolve(ip: string, seconds: number, nanos: number): Endpoint {
    const cached = this.byAddress.get(ip);
    if (cached !== undefined && holds(cached, seconds, nanos)) {
      return cached.endpoint;
    }
    return this.refresh(cached, ip, seconds, nanos);
  }

  private refresh(cached: CachedAnswer | undefined, ip: string, seconds: number, nanos: number): Endpoint {
    let answer = cached;
    if (answer === undefined) {
      if (this.byAddress.size >= this.cacheSize) this.byAddress.clear();
      answer = new CachedAnswer(this.state.unknownAddresses);
      this.byAddress.set(ip, answer);
    }
    return this.fill(answer, ip, seconds, nanos);
  }

  /** Resolves `ip` at the time into `answer`, with the span and version it holds for. */
  private fill(answer: CachedAnswer, ip: string, seconds: number, nanos: number): Endpoint {
    const span = this.state.resolveSpan(ip, BigInt(seconds) * NS_PER_SECOND + BigInt(nanos));
    answer.endpoint = span.endpoint;
    answer.counter = span.address ?? this.state.unknownAddresses;
    answer.version = answer.counter.version;
    if (span.fromNs === undefined) {
      answer.fromSeconds = -Infinity;
      answer.fromNanos = 0;
    } else {
      answer.fromSeconds = Number(floorSeconds(span.fromNs));
      answer.fromNanos = Number(span.fromNs - floorSeconds(span.fromNs) * NS_PER_SECOND);
    }
    if (span.toNs === undefined) {
      answer.toSeconds = Infinity;
      answer.toNanos = 0;
    } else {
      answer.toSeconds = Number(floorSeconds(span.toNs));
      answer.toNanos = Number(span.toNs - floorSeconds(span.toNs) * NS_PER_SECOND);
    }
    return span.endpoint;
  }
}

/** Whether a cached answer still names the address at this time: its history unchanged, the time in its span. */
function holds(a: CachedAnswer, seconds: number, nanos: number): boolean {
  return a.counter.version === a.version && within(a, seconds, nanos);
}

/** Whether the time lies in the span a cached answer was computed for. */
function within(a: CachedAnswer, seconds: number, nanos: number): boolean {
  return (seconds > a.fromSeconds || (seconds === a.fromSeconds && nanos >= a.fromNanos))
    && (seconds < a.toSeconds || (seconds === a.toSeconds && nanos < a.toNanos));
}

const UNRESOLVED: Endpoint = Object.freeze({
  ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false,
});

/** The record's startTime (endTime, or now, if absent) as (seconds, nanoseconds) numbers. */
function recordTime(record: FlowRecord): [number, number] {
  const time = record.startTime ?? record.endTime;
  // Seconds since 1970 fit a double exactly; comparing (seconds, nanos) pairs avoids
  // bigint arithmetic per record.
  if (time !== undefined) return [Number(time.seconds), time.nanos];
  const ms = Date.now();
  return [Math.floor(ms / 1000), (ms % 1000) * 1_000_000];
}

function floorSeconds(ns: bigint): bigint {
  const s = ns / NS_PER_SECOND;
  return ns < 0n && s * NS_PER_SECOND !== ns ? s - 1n : s;
}
