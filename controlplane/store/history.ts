// The recent-flows history behind GetFlows: a fixed-capacity ring of FlowRecords.
//
// Memory is the constraint (1M records in well under 600 MiB): a FlowRecord as decoded
// holds ~10 small objects (timestamps, Layer3, Layer4, TCP flags, three bigints), about
// 600 bytes a record. The ring therefore stores each record in columns (typed arrays for
// numbers; strings, Endpoints and attributions as u32 ids into dictionaries that count
// the rows holding each value, so the heap holds no array of a million references for
// the garbage collector to trace), about 130 bytes a record,
// and rebuilds FlowRecord objects only for the records a query returns. Endpoints are
// kept by reference, never copied: the enricher shares one Endpoint per pod, and the
// non-pod ones (world, Service, host) are de-duplicated here by address.
//
// Predicates run over a reusable view of a stored row (StoredFlowView), so a scan of the
// whole ring allocates nothing per record. That is why FlowPredicate must not keep the
// record it is given.
//
// Eviction by capacity is the expected steady state, not a loss: `evicted` counts it.

import type { Endpoint, FlowRecord, Layer3, Layer4, PolicyAttribution, TcpFlags } from "../../proto/gen/bulkhead/v1/flow.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";
import type { FlowPredicate } from "./filter.js";
import { reporterOf, type EnrichedColumns } from "./enriched-columns.js";
import { IpVersion } from "../../proto/gen/bulkhead/v1/flow.js";
import { PROTOCOL_NAMES, tcpFlagsByte, tcpFlagsFromByte } from "../../flowcolumns/columns.js";

export const DEFAULT_HISTORY_CAPACITY = 1_000_000;

export interface FlowHistoryOptions {
  /** Records kept; the oldest are evicted beyond it. Default 1,000,000. */
  capacity?: number;
  /**
   * Called when a subscriber's callback throws; that subscriber is removed either way.
   * Without it, append() rethrows the first such error after every subscriber has run.
   */
  onSubscriberError?: (error: unknown) => void;
}

export interface HistoryQuery {
  /** Default: every record. */
  predicate?: FlowPredicate;
  /** Records whose [startTime, endTime] overlaps [since, until]; either bound may be left out. */
  since?: Timestamp;
  until?: Timestamp;
  /** Only records that end strictly after this instant (the hot window's side of ControlPlane.flows' split). */
  endAfter?: Timestamp;
  /** Only the N newest matching records (by endTime); 0 or undefined: all. */
  last?: number;
}

// Column layout. Strings and Endpoints are references; everything else is numeric.
// Ids: node, interface, layer3 source, layer3 destination, protocol name (strings),
// source and destination (Endpoints), attribution; 0 is undefined.
const REF = 8;
const R_NODE = 0, R_IFACE = 1, R_IP_SRC = 2, R_IP_DST = 3, R_PROTO = 4, R_SOURCE = 5, R_DESTINATION = 6, R_ATTRIBUTION = 7;
const U32 = 8; // start nanos, end nanos, ifindex, protocol, source port, destination port, icmp type, icmp code
const U_START_NS = 0, U_END_NS = 1, U_IFINDEX = 2, U_PROTO = 3, U_SPORT = 4, U_DPORT = 5, U_ICMP_TYPE = 6, U_ICMP_CODE = 7;
const I32 = 5; // point, reporter, verdict, ip version, verdict reason: enums, kept exactly even when unrecognised
const I_POINT = 0, I_REPORTER = 1, I_VERDICT = 2, I_IP_VERSION = 3, I_REASON = 4;
const U8 = 2; // which optional messages are present, TCP flags
const B_PRESENT = 0, B_TCP_FLAGS = 1;
const F64 = 2; // start seconds, end seconds (exact below 2^53)
const F_START_S = 0, F_END_S = 1;
const U64 = 3; // packets, bytes, sequence
const L_PACKETS = 0, L_BYTES = 1, L_SEQUENCE = 2;

const HAS_START = 1, HAS_END = 2, HAS_IP = 4, HAS_L4 = 8, HAS_TCP_FLAGS = 16;

/** Slots of RowDictionary's hint table (a power of two). */
const HINT_MASK = 4095;

/**
 * The values a column of ids names, each counted by the rows that hold it: an id is freed
 * (and reused) when its last row is overwritten, so the dictionary holds exactly what
 * the ring does. Id 0 is undefined. Equal strings share one id (and one copy).
 */
class RowDictionary<T> {
  private readonly ids = new Map<T, number>();
  private readonly values: (T | undefined)[] = [undefined];
  private refs = new Uint32Array(1024);
  private readonly free: number[] = [];
  private readonly hints = new Uint32Array(HINT_MASK + 1);

  /** The id of `value` (undefined: 0), counted as held by one more row. */
  hold(value: T | undefined): number {
    if (value === undefined) return 0;
    let id = this.ids.get(value);
    if (id === undefined) {
      id = this.free.pop() ?? this.values.length;
      if (id === this.values.length) this.values.push(value); else this.values[id] = value;
      if (id >= this.refs.length) {
        const grown = new Uint32Array(this.refs.length * 2);
        grown.set(this.refs);
        this.refs = grown;
      }
      this.ids.set(value, id);
    }
    this.refs[id]!++;
    return id;
  }

  /**
   * hold() with a hint: `hash` (the address hash the enricher keeps per distinct address)
   * picks a slot of a small table remembering the id last handed out for it, which saves
   * the Map lookup per row. The id is used only while it still names an equal value, so a
   * collision of hashes or a freed and reused id falls back to hold() and never attaches
   * another row's string.
   */
  holdHinted(value: T, hash: number): number {
    const slot = hash & HINT_MASK;
    const id = this.hints[slot]!;
    if (id !== 0 && this.values[id] === value) {
      this.refs[id]!++;
      return id;
    }
    return (this.hints[slot] = this.hold(value));
  }

  /** One more row holds `id` (an id from hold(), still held). */
  holdId(id: number): void {
    if (id !== 0) this.refs[id]!++;
  }

  /** One row less holds `id`; the last one frees it. */
  release(id: number): void {
    if (id === 0 || --this.refs[id]! > 0) return;
    this.ids.delete(this.values[id]!);
    this.values[id] = undefined;
    this.free.push(id);
  }

  value(id: number): T | undefined { return this.values[id]; }
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const key of keys) if (!Object.hasOwn(b, key) || a[key] !== b[key]) return false;
  return true;
}

function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.ip === b.ip && a.namespace === b.namespace && a.podName === b.podName && a.podUid === b.podUid
    && a.workloadKind === b.workloadKind && a.workloadName === b.workloadName && a.node === b.node
    && a.service === b.service && a.world === b.world && sameLabels(a.labels, b.labels);
}

/**
 * One shared object per distinct non-pod Endpoint (world address, Service, host), which
 * an enricher may well build afresh for each record. Pod Endpoints are shared upstream.
 */
class EndpointInterner {
  private readonly endpoints = new Map<string, Endpoint>();
  constructor(private readonly limit: number) {}

  intern(endpoint: Endpoint): Endpoint {
    if (endpoint.podName !== "") return endpoint;
    const known = this.endpoints.get(endpoint.ip);
    if (known === endpoint) return known;
    if (known !== undefined && sameEndpoint(known, endpoint)) return known;
    if (known === undefined && this.endpoints.size >= this.limit) this.endpoints.clear();
    this.endpoints.set(endpoint.ip, endpoint);
    return endpoint;
  }
}

class Columns {
  readonly strings = new RowDictionary<string>();
  readonly endpoints = new RowDictionary<Endpoint>();
  /** The enricher shares one attribution per (policy version, identities, port). */
  readonly attributions = new RowDictionary<PolicyAttribution>();
  /** REF ids per slot. */
  readonly refs: Uint32Array;
  readonly u32: Uint32Array;
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  readonly f64: Float64Array;
  readonly u64: BigUint64Array;
  /** u64 as 32-bit words (little-endian pairs): copied without a BigInt per value. */
  readonly u64Words: Uint32Array;

  constructor(readonly capacity: number) {
    // Typed arrays are zero-filled lazily by the OS: memory grows with use, not capacity.
    this.refs = new Uint32Array(capacity * REF);
    this.u32 = new Uint32Array(capacity * U32);
    this.i32 = new Int32Array(capacity * I32);
    this.u8 = new Uint8Array(capacity * U8);
    this.f64 = new Float64Array(capacity * F64);
    this.u64 = new BigUint64Array(capacity * U64);
    this.u64Words = new Uint32Array(this.u64.buffer);
  }

  /** End time of a slot (or its start when it has no end), compared as (seconds, nanos). */
  endSeconds(slot: number): number { return this.f64[slot * F64 + F_END_S]!; }
  endNanos(slot: number): number { return this.u32[slot * U32 + U_END_NS]!; }

  string(slot: number, field: number): string { return this.strings.value(this.refs[slot * REF + field]!) ?? ""; }
  endpoint(slot: number, field: number): Endpoint | undefined { return this.endpoints.value(this.refs[slot * REF + field]!); }
  attribution(slot: number): PolicyAttribution | undefined { return this.attributions.value(this.refs[slot * REF + R_ATTRIBUTION]!); }

  /** A slot's dictionary ids (each already held for it). */
  setRefs(slot: number, node: number, iface: number, ipSource: number, ipDestination: number, protocolName: number,
    source: number, destination: number, attribution: number): void {
    const r = slot * REF, refs = this.refs;
    refs[r + R_NODE] = node;
    refs[r + R_IFACE] = iface;
    refs[r + R_IP_SRC] = ipSource;
    refs[r + R_IP_DST] = ipDestination;
    refs[r + R_PROTO] = protocolName;
    refs[r + R_SOURCE] = source;
    refs[r + R_DESTINATION] = destination;
    refs[r + R_ATTRIBUTION] = attribution;
  }

  /** Lets go of what an overwritten slot held. */
  release(slot: number): void {
    const r = slot * REF, refs = this.refs;
    for (let f = R_NODE; f <= R_PROTO; f++) this.strings.release(refs[r + f]!);
    this.endpoints.release(refs[r + R_SOURCE]!);
    this.endpoints.release(refs[r + R_DESTINATION]!);
    this.attributions.release(refs[r + R_ATTRIBUTION]!);
  }
}

/**
 * TCP flags by their packed bits, shared by every view and every built record (frozen: a
 * reader that changed one would change every record with the same flags).
 */
const TCP_FLAGS_BY_BITS: readonly TcpFlags[] = Array.from({ length: 256 }, (_, bits) => Object.freeze(tcpFlagsFromByte(bits)));

/**
 * A row's numbers as the policy replays judge and sum it (FlowReplay.addStored,
 * PolicySuggester.addStored), read in one call (StoredFlowView.readNumbers) into an object the
 * caller reuses: read through the view's getters, one per field, the replay's per-row function
 * outgrew the optimizing compiler's inlining budget and paid a call per field (0.85 of the CPU).
 */
export interface StoredRowNumbers {
  /** StoredFlowView.sourceId and destinationId. */
  sourceId: number;
  destinationId: number;
  point: number;
  verdict: number;
  verdictReason: number;
  /** Whether `ip` and `l4` are defined. */
  hasIp: boolean;
  hasL4: boolean;
  /** l4's numbers; 0 without l4. */
  protocol: number;
  sourcePort: number;
  destinationPort: number;
  icmpType: number;
  /** synAckBits(l4.tcpFlags) (flowmap.ts): SYN and ACK (0x02, 0x10), -1 without flags. */
  synAckBits: number;
  /** StoredFlowView.packetCount, startMs and endMs. */
  packets: number;
  startMs: number;
  endMs: number;
}

export function newStoredRowNumbers(): StoredRowNumbers {
  return { sourceId: 0, destinationId: 0, point: 0, verdict: 0, verdictReason: 0, hasIp: false, hasL4: false, protocol: 0, sourcePort: 0,
    destinationPort: 0, icmpType: 0, synAckBits: -1, packets: 0, startMs: 0, endMs: 0 };
}

/**
 * A stored row seen as a FlowRecord, without building one. Valid until `slot` changes.
 * Besides the record's fields, numbers for scans that only sum (FlowHistory.scan): the
 * ends' dictionary ids, packets and times without a BigInt or a Timestamp.
 */
export class StoredFlowView implements FlowRecord {
  slot = 0;
  private readonly l3 = new StoredLayer3View(this);
  private readonly l4View = new StoredLayer4View(this);
  constructor(readonly columns: Columns) {}

  private present(bit: number): boolean { return (this.columns.u8[this.slot * U8 + B_PRESENT]! & bit) !== 0; }
  get startTime(): Timestamp | undefined {
    return this.present(HAS_START) ? timestampOf(this.columns, this.slot, F_START_S, U_START_NS) : undefined;
  }
  get endTime(): Timestamp | undefined {
    return this.present(HAS_END) ? timestampOf(this.columns, this.slot, F_END_S, U_END_NS) : undefined;
  }
  get node(): string { return this.columns.string(this.slot, R_NODE); }
  get point(): number { return this.columns.i32[this.slot * I32 + I_POINT]!; }
  get reporter(): number { return this.columns.i32[this.slot * I32 + I_REPORTER]!; }
  get interface(): string { return this.columns.string(this.slot, R_IFACE); }
  get ifindex(): number { return this.columns.u32[this.slot * U32 + U_IFINDEX]!; }
  get ip(): Layer3 | undefined { return this.present(HAS_IP) ? this.l3 : undefined; }
  get l4(): Layer4 | undefined { return this.present(HAS_L4) ? this.l4View : undefined; }
  get packets(): bigint { return this.columns.u64[this.slot * U64 + L_PACKETS]!; }
  get bytes(): bigint { return this.columns.u64[this.slot * U64 + L_BYTES]!; }
  get source(): Endpoint | undefined { return this.columns.endpoint(this.slot, R_SOURCE); }
  get destination(): Endpoint | undefined { return this.columns.endpoint(this.slot, R_DESTINATION); }
  get verdict(): number { return this.columns.i32[this.slot * I32 + I_VERDICT]!; }
  get verdictReason(): number { return this.columns.i32[this.slot * I32 + I_REASON]!; }
  get attribution(): PolicyAttribution | undefined { return this.columns.attribution(this.slot); }
  get sequence(): bigint { return this.columns.u64[this.slot * U64 + L_SEQUENCE]!; }
  /**
   * The source's and destination's ids in the history's dictionary of Endpoints (0: none):
   * one id per Endpoint object for as long as a row holds it, so equal ids are the same
   * object during a scan (nothing is appended meanwhile).
   */
  get sourceId(): number { return this.columns.refs[this.slot * REF + R_SOURCE]!; }
  get destinationId(): number { return this.columns.refs[this.slot * REF + R_DESTINATION]!; }
  /** Number(packets), from the column's two 32-bit words (the same rounding above 2^53). */
  get packetCount(): number {
    const w = this.columns.u64Words, l = (this.slot * U64 + L_PACKETS) * 2;
    return w[l + 1]! * 0x1_0000_0000 + w[l]!;
  }
  /** Start and end in milliseconds (seconds * 1000 + whole milliseconds of the nanos); 0 when absent. */
  get startMs(): number { return this.present(HAS_START) ? this.ms(F_START_S, U_START_NS) : 0; }
  get endMs(): number { return this.present(HAS_END) ? this.ms(F_END_S, U_END_NS) : 0; }
  /** The row's numbers (StoredRowNumbers) into `into`, which it returns. */
  readNumbers(into: StoredRowNumbers): StoredRowNumbers {
    const c = this.columns, slot = this.slot, u32 = c.u32, u8 = c.u8, f64 = c.f64, words = c.u64Words;
    const ref = slot * REF, i = slot * I32, u = slot * U32, b = slot * U8, f = slot * F64, l = (slot * U64 + L_PACKETS) * 2;
    const present = u8[b + B_PRESENT]!;
    into.sourceId = c.refs[ref + R_SOURCE]!;
    into.destinationId = c.refs[ref + R_DESTINATION]!;
    into.point = c.i32[i + I_POINT]!;
    into.verdict = c.i32[i + I_VERDICT]!;
    into.verdictReason = c.i32[i + I_REASON]!;
    into.hasIp = (present & HAS_IP) !== 0;
    into.hasL4 = (present & HAS_L4) !== 0;
    into.protocol = u32[u + U_PROTO]!;
    into.sourcePort = u32[u + U_SPORT]!;
    into.destinationPort = u32[u + U_DPORT]!;
    into.icmpType = u32[u + U_ICMP_TYPE]!;
    into.synAckBits = (present & HAS_TCP_FLAGS) !== 0 ? u8[b + B_TCP_FLAGS]! & 0x12 : -1;
    into.packets = words[l + 1]! * 0x1_0000_0000 + words[l]!;
    into.startMs = (present & HAS_START) !== 0 ? f64[f + F_START_S]! * 1000 + Math.floor(u32[u + U_START_NS]! / 1e6) : 0;
    into.endMs = (present & HAS_END) !== 0 ? f64[f + F_END_S]! * 1000 + Math.floor(u32[u + U_END_NS]! / 1e6) : 0;
    return into;
  }
  private ms(secondsField: number, nanosField: number): number {
    return this.columns.f64[this.slot * F64 + secondsField]! * 1000 + Math.floor(this.columns.u32[this.slot * U32 + nanosField]! / 1e6);
  }
}

class StoredLayer3View implements Layer3 {
  constructor(private readonly row: StoredFlowView) {}
  get source(): string { return this.row.columns.string(this.row.slot, R_IP_SRC); }
  get destination(): string { return this.row.columns.string(this.row.slot, R_IP_DST); }
  get version(): number { return this.row.columns.i32[this.row.slot * I32 + I_IP_VERSION]!; }
}

class StoredLayer4View implements Layer4 {
  constructor(private readonly row: StoredFlowView) {}
  private u32(field: number): number { return this.row.columns.u32[this.row.slot * U32 + field]!; }
  get protocol(): number { return this.u32(U_PROTO); }
  get protocolName(): string { return this.row.columns.string(this.row.slot, R_PROTO); }
  get sourcePort(): number { return this.u32(U_SPORT); }
  get destinationPort(): number { return this.u32(U_DPORT); }
  get tcpFlags(): TcpFlags | undefined {
    const u8 = this.row.columns.u8;
    const base = this.row.slot * U8;
    return (u8[base + B_PRESENT]! & HAS_TCP_FLAGS) !== 0 ? TCP_FLAGS_BY_BITS[u8[base + B_TCP_FLAGS]!] : undefined;
  }
  get icmpType(): number { return this.u32(U_ICMP_TYPE); }
  get icmpCode(): number { return this.u32(U_ICMP_CODE); }
}

function timestampOf(c: Columns, slot: number, secondsField: number, nanosField: number): Timestamp {
  return { seconds: BigInt(c.f64[slot * F64 + secondsField]!), nanos: c.u32[slot * U32 + nanosField]! };
}

function secondsOf(t: Timestamp): number {
  return Number(t.seconds);
}

/** What appendColumns() resolves once per batch for storeRow(). */
interface BatchStrings {
  /** String ids the batch holds while it is stored (released after): the node, its interfaces by index, protocol names by number (0: not met yet). */
  node: number;
  interfaces: Uint32Array;
  protocols: Uint32Array;
  /** The batch's packets and bytes columns as 32-bit words. */
  packets: Uint32Array;
  bytes: Uint32Array;
  /** firstSequence in 32-bit halves. */
  sequenceLo: number;
  sequenceHi: number;
}

interface Subscriber {
  predicate: FlowPredicate;
  onRecords: (records: FlowRecord[]) => void;
}

export class FlowHistory {
  private readonly columns: Columns;
  private readonly view: StoredFlowView;
  private readonly nonPodEndpoints = new EndpointInterner(65_536);
  private readonly subscribers = new Set<Subscriber>();
  private readonly onSubscriberError: ((error: unknown) => void) | undefined;
  private appendedTotal = 0;
  private count = 0;
  // How far (seconds) a record's end time has trailed the newest end time seen when it
  // was appended. Lets a "last N" scan stop early although arrival order is only roughly
  // time order (agents drain on their own timers).
  private newestEnd = -Infinity;
  private maxLateness = 0;
  /** The newest end time among evicted records (whole seconds, nanoseconds): after it, nothing was evicted. */
  private newestEvictedEndS = -Infinity;
  private newestEvictedEndNs = 0;
  /**
   * Neighbouring rows held (in append order) whose end times are out of order: 0 when the
   * ring is in time order, so that scan() knows without walking every row (a pass over two
   * columns per scan, about a tenth of a replay's CPU). Kept by every append and eviction.
   */
  private outOfOrder = 0;

  constructor(options: FlowHistoryOptions = {}) {
    const capacity = options.capacity ?? DEFAULT_HISTORY_CAPACITY;
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new Error(`flow history capacity must be a positive integer, got ${capacity}`);
    }
    this.columns = new Columns(capacity);
    this.view = new StoredFlowView(this.columns);
    this.onSubscriberError = options.onSubscriberError;
  }

  get capacity(): number { return this.columns.capacity; }
  /** Records held now. */
  get size(): number { return this.count; }
  /** Records ever appended. */
  get appended(): number { return this.appendedTotal; }
  /** Records pushed out by newer ones because the history was full (expected, not a loss). */
  get evicted(): number { return this.appendedTotal - this.count; }
  /**
   * Every record appended that ends strictly after this instant is still held: the ring is
   * a complete window from there on. Undefined while nothing was evicted. Exact to the
   * nanosecond: records of one batch often share their end time, and one ending at this
   * very instant may be evicted or held.
   */
  get completeAfter(): Timestamp | undefined {
    return this.newestEvictedEndS === -Infinity ? undefined : { seconds: BigInt(this.newestEvictedEndS), nanos: this.newestEvictedEndNs };
  }

  /** Keeps the newest end time among evicted records (the slot about to be overwritten). */
  private evict(slot: number): void {
    const c = this.columns;
    // The row after it (the oldest one left) no longer has it as a neighbour.
    if (c.capacity > 1 && this.endsBefore((slot + 1) % c.capacity, slot)) this.outOfOrder--;
    const s = c.endSeconds(slot), ns = c.endNanos(slot);
    if (s > this.newestEvictedEndS || (s === this.newestEvictedEndS && ns > this.newestEvictedEndNs)) {
      this.newestEvictedEndS = s;
      this.newestEvictedEndNs = ns;
    }
  }

  /** Whether slot `a`'s end time is before slot `b`'s (seconds, then nanos). */
  private endsBefore(a: number, b: number): boolean {
    const c = this.columns;
    const sa = c.endSeconds(a), sb = c.endSeconds(b);
    return sa < sb || (sa === sb && c.endNanos(a) < c.endNanos(b));
  }

  /** Counts the row just stored in `slot` out of order when it ends before the row appended before it. */
  private noteOrder(slot: number): void {
    const c = this.columns;
    if (this.count > 0 && c.capacity > 1 && this.endsBefore(slot, (slot + c.capacity - 1) % c.capacity)) this.outOfOrder++;
  }

  append(records: readonly FlowRecord[]): void {
    for (const record of records) this.store(record);
    if (this.subscribers.size > 0) this.notify(records);
  }

  /**
   * An ingested columnar batch, column by column: no FlowRecord per row. Follow streams
   * get records built only for the rows their predicate takes (run over the stored rows).
   */
  appendColumns(b: EnrichedColumns): void {
    const first = this.appendedTotal;
    const c = b.columns;
    const strings = this.columns.strings;
    const batch: BatchStrings = {
      node: strings.hold(b.node),
      interfaces: Uint32Array.from(c.interfaceNames, (n) => strings.hold(n)),
      protocols: new Uint32Array(256),
      packets: new Uint32Array(c.packets.buffer, c.packets.byteOffset, c.rows * 2),
      bytes: new Uint32Array(c.bytes.buffer, c.bytes.byteOffset, c.rows * 2),
      sequenceLo: Number(c.firstSequence & 0xffff_ffffn),
      sequenceHi: Number(c.firstSequence >> 32n),
    };
    for (let k = 0; k < b.rows.length; k++) this.storeRow(b, b.rows[k]!, batch);
    strings.release(batch.node);
    for (const id of batch.interfaces) strings.release(id);
    for (const id of batch.protocols) strings.release(id);
    if (this.subscribers.size > 0) this.notifySlots(first);
  }

  /**
   * Matching records in time order (endTime, then arrival). Builds every result at once;
   * for large answers prefer iterate().
   */
  query(query: HistoryQuery = {}): FlowRecord[] {
    return [...this.iterate(query)];
  }

  /**
   * Like query(), but builds each record only when it is reached, so a caller streaming
   * a large answer holds one at a time. The set of matches is fixed when called; records
   * evicted before they are reached are skipped.
   */
  iterate(query: HistoryQuery = {}): Generator<FlowRecord, void, undefined> {
    const matches = this.select(query);
    const history = this;
    return (function* () {
      for (const absolute of matches) {
        if (absolute < history.appendedTotal - history.count) continue; // evicted meanwhile
        yield history.materialize(absolute % history.columns.capacity);
      }
    })();
  }

  /**
   * Calls `each` with a view of every matching row, in query() order, building no record:
   * for scans that only sum what they read (the policy replay, controlplane/policy/whatif.ts).
   * The view is valid only during the call and must not be kept.
   */
  scan(query: HistoryQuery, each: (row: StoredFlowView) => void): void {
    const view = new StoredFlowView(this.columns);
    const capacity = this.columns.capacity;
    if ((query.last ?? 0) === 0 && this.heldInTimeOrder()) {
      // select()'s matches in select()'s order (append order is time order here), without its array of indices.
      const matches = this.matcher(query, view);
      for (let a = this.appendedTotal - this.count; a < this.appendedTotal; a++) {
        const slot = a % capacity;
        if (!matches(slot)) continue;
        view.slot = slot;
        each(view);
      }
      return;
    }
    for (const absolute of this.select(query)) {
      view.slot = absolute % capacity;
      each(view);
    }
  }

  /** Whether the rows held, in append order, are in time order (end time, as select() sorts). */
  private heldInTimeOrder(): boolean {
    return this.outOfOrder === 0;
  }

  /** Calls onRecords with each appended batch's matching records; returns the unsubscribe. */
  subscribe(predicate: FlowPredicate, onRecords: (records: FlowRecord[]) => void): () => void {
    const subscriber: Subscriber = { predicate, onRecords };
    this.subscribers.add(subscriber);
    return () => { this.subscribers.delete(subscriber); };
  }

  private store(record: FlowRecord): void {
    const c = this.columns;
    const slot = this.appendedTotal % c.capacity;
    const evicting = this.count === c.capacity;
    if (evicting) this.evict(slot);

    const source = record.source === undefined ? undefined : this.nonPodEndpoints.intern(record.source);
    const destination = record.destination === undefined ? undefined : this.nonPodEndpoints.intern(record.destination);
    const ip = record.ip;
    const l4 = record.l4;
    // The Layer3 addresses nearly always equal the Endpoints' addresses; keep those
    // shared strings rather than this record's copies.
    const ipSource = ip === undefined ? "" : source !== undefined && source.ip === ip.source ? source.ip : ip.source;
    const ipDestination = ip === undefined ? ""
      : destination !== undefined && destination.ip === ip.destination ? destination.ip : ip.destination;
    // Held before the overwritten slot lets go, so that a value both hold keeps its id.
    const node = c.strings.hold(record.node);
    const iface = c.strings.hold(record.interface);
    const ipSourceId = c.strings.hold(ipSource);
    const ipDestinationId = c.strings.hold(ipDestination);
    const protocolName = c.strings.hold(l4 === undefined ? "" : l4.protocolName);
    const sourceId = c.endpoints.hold(source), destinationId = c.endpoints.hold(destination);
    const attribution = c.attributions.hold(record.attribution);
    if (evicting) c.release(slot);
    c.setRefs(slot, node, iface, ipSourceId, ipDestinationId, protocolName, sourceId, destinationId, attribution);

    // A missing start or end takes the other's value for ordering and time filters; the
    // presence bits restore undefined on the way out.
    const start = record.startTime ?? record.endTime;
    const end = record.endTime ?? record.startTime;
    const startSeconds = start === undefined ? 0 : secondsOf(start);
    const endSeconds = end === undefined ? 0 : secondsOf(end);
    const f = slot * F64;
    c.f64[f + F_START_S] = startSeconds;
    c.f64[f + F_END_S] = endSeconds;

    const u = slot * U32;
    c.u32[u + U_START_NS] = start?.nanos ?? 0;
    c.u32[u + U_END_NS] = end?.nanos ?? 0;
    c.u32[u + U_IFINDEX] = record.ifindex;
    c.u32[u + U_PROTO] = l4?.protocol ?? 0;
    c.u32[u + U_SPORT] = l4?.sourcePort ?? 0;
    c.u32[u + U_DPORT] = l4?.destinationPort ?? 0;
    c.u32[u + U_ICMP_TYPE] = l4?.icmpType ?? 0;
    c.u32[u + U_ICMP_CODE] = l4?.icmpCode ?? 0;

    const i = slot * I32;
    c.i32[i + I_POINT] = record.point;
    c.i32[i + I_REPORTER] = record.reporter;
    c.i32[i + I_VERDICT] = record.verdict;
    c.i32[i + I_IP_VERSION] = ip?.version ?? 0;
    c.i32[i + I_REASON] = record.verdictReason;

    const b = slot * U8;
    const tcpFlags = l4?.tcpFlags;
    c.u8[b + B_PRESENT] = (record.startTime !== undefined ? HAS_START : 0) | (record.endTime !== undefined ? HAS_END : 0)
      | (ip !== undefined ? HAS_IP : 0) | (l4 !== undefined ? HAS_L4 : 0) | (tcpFlags !== undefined ? HAS_TCP_FLAGS : 0);
    c.u8[b + B_TCP_FLAGS] = tcpFlags === undefined ? 0 : tcpFlagsByte(tcpFlags);

    const l = slot * U64;
    c.u64[l + L_PACKETS] = record.packets;
    c.u64[l + L_BYTES] = record.bytes;
    c.u64[l + L_SEQUENCE] = record.sequence;

    const endTime = endSeconds + (end?.nanos ?? 0) / 1e9;
    if (endTime > this.newestEnd) this.newestEnd = endTime;
    else if (this.newestEnd - endTime > this.maxLateness) this.maxLateness = this.newestEnd - endTime;
    this.noteOrder(slot);

    this.appendedTotal++;
    if (this.count < c.capacity) this.count++;
  }

  /** Row `i` of an ingested batch into the next slot (store()'s layout, from the columns). */
  private storeRow(b: EnrichedColumns, i: number, batch: BatchStrings): void {
    const c = this.columns;
    const cols = b.columns;
    const slot = this.appendedTotal % c.capacity;
    const evicting = this.count === c.capacity;
    if (evicting) this.evict(slot);
    const src = b.sources[i], dst = b.destinations[i];
    const source = src === undefined || src.podName !== "" ? src : this.nonPodEndpoints.intern(src);
    const destination = dst === undefined || dst.podName !== "" ? dst : this.nonPodEndpoints.intern(dst);
    const proto = cols.protocols[i]!;
    const strings = c.strings;
    let protocolName = batch.protocols[proto]!;
    if (protocolName === 0) protocolName = batch.protocols[proto] = strings.hold(PROTOCOL_NAMES[proto] ?? String(proto));
    strings.holdId(protocolName);
    let iface = batch.interfaces[cols.interfaces[i]!];
    if (iface === undefined) iface = strings.hold("");
    else strings.holdId(iface);
    strings.holdId(batch.node);
    // Held before the overwritten slot lets go, so that a value both hold keeps its id.
    const ipSource = strings.holdHinted(b.sourceIps[i]!, b.sourceHashes[i]!);
    const ipDestination = strings.holdHinted(b.destinationIps[i]!, b.destinationHashes[i]!);
    const sourceId = c.endpoints.hold(source), destinationId = c.endpoints.hold(destination);
    const attribution = c.attributions.hold(b.attributions[i]);
    if (evicting) c.release(slot);
    c.setRefs(slot, batch.node, iface, ipSource, ipDestination, protocolName, sourceId, destinationId, attribution);
    const f = slot * F64;
    const endSeconds = b.endSeconds[i]!, endNanos = b.endNanos[i]!;
    c.f64[f + F_START_S] = b.startSeconds[i]!;
    c.f64[f + F_END_S] = endSeconds;
    const isIcmp = proto === 1 || proto === 58;
    const sport = cols.sourcePorts[i]!, dport = cols.destinationPorts[i]!;
    const u = slot * U32;
    c.u32[u + U_START_NS] = b.startNanos[i]!;
    c.u32[u + U_END_NS] = endNanos;
    c.u32[u + U_IFINDEX] = cols.ifindexes[i]!;
    c.u32[u + U_PROTO] = proto;
    c.u32[u + U_SPORT] = isIcmp ? 0 : sport;
    c.u32[u + U_DPORT] = isIcmp ? 0 : dport;
    c.u32[u + U_ICMP_TYPE] = isIcmp ? sport : 0;
    c.u32[u + U_ICMP_CODE] = isIcmp ? dport : 0;
    const point = cols.points[i]!;
    const v = cols.ipVersions[i]!;
    const n = slot * I32;
    c.i32[n + I_POINT] = point;
    c.i32[n + I_REPORTER] = reporterOf(point);
    c.i32[n + I_VERDICT] = cols.verdicts[i]!;
    c.i32[n + I_IP_VERSION] = v === 6 ? IpVersion.IP_VERSION_IPV6 : v === 4 ? IpVersion.IP_VERSION_IPV4 : IpVersion.IP_VERSION_UNSPECIFIED;
    c.i32[n + I_REASON] = cols.verdictReasons[i]!;
    const u8 = slot * U8;
    c.u8[u8 + B_PRESENT] = HAS_START | HAS_END | HAS_IP | HAS_L4 | (proto === 6 ? HAS_TCP_FLAGS : 0);
    c.u8[u8 + B_TCP_FLAGS] = proto === 6 ? cols.tcpFlags[i]! : 0;
    const w = 2 * slot * U64, words = c.u64Words;
    words[w + 2 * L_PACKETS] = batch.packets[2 * i]!;
    words[w + 2 * L_PACKETS + 1] = batch.packets[2 * i + 1]!;
    words[w + 2 * L_BYTES] = batch.bytes[2 * i]!;
    words[w + 2 * L_BYTES + 1] = batch.bytes[2 * i + 1]!;
    const lo = batch.sequenceLo + i;
    words[w + 2 * L_SEQUENCE] = lo >>> 0;
    words[w + 2 * L_SEQUENCE + 1] = batch.sequenceHi + (lo >= 2 ** 32 ? 1 : 0);

    const endTime = endSeconds + endNanos / 1e9;
    if (endTime > this.newestEnd) this.newestEnd = endTime;
    else if (this.newestEnd - endTime > this.maxLateness) this.maxLateness = this.newestEnd - endTime;
    this.noteOrder(slot);
    this.appendedTotal++;
    if (this.count < c.capacity) this.count++;
  }

  /** notify() for the rows appended from absolute index `first` on, still held: records only for the matches. */
  private notifySlots(first: number): void {
    const from = Math.max(first, this.appendedTotal - this.count);
    this.deliver((subscriber) => {
      const matching: FlowRecord[] = [];
      for (let a = from; a < this.appendedTotal; a++) {
        const slot = a % this.columns.capacity;
        this.view.slot = slot;
        if (subscriber.predicate(this.view)) matching.push(this.materialize(slot));
      }
      return matching;
    });
  }

  private notify(records: readonly FlowRecord[]): void {
    this.deliver((subscriber) => records.filter(subscriber.predicate));
  }

  /**
   * Hands each subscriber its matches. One that throws is dropped and its error reported
   * (onSubscriberError, else thrown once all were served): the others still get theirs.
   */
  private deliver(matchesOf: (subscriber: Subscriber) => FlowRecord[]): void {
    let unreported: { error: unknown } | undefined;
    for (const subscriber of [...this.subscribers]) {
      try {
        const matching = matchesOf(subscriber);
        if (matching.length > 0) subscriber.onRecords(matching);
      } catch (error) {
        this.subscribers.delete(subscriber);
        if (this.onSubscriberError !== undefined) this.onSubscriberError(error);
        else unreported ??= { error };
      }
    }
    if (unreported !== undefined) throw unreported.error;
  }

  /** Absolute indices (append order numbers) of the matches, in time order. */
  private select(query: HistoryQuery): number[] {
    const last = query.last ?? 0;
    if (!Number.isSafeInteger(last) || last < 0) {
      throw new Error(`"last" must be a non-negative integer, got ${last}`);
    }
    const c = this.columns;
    const capacity = c.capacity;
    const oldest = this.appendedTotal - this.count;
    const matches = this.matcher(query, this.view);

    const found: number[] = [];
    if (last === 0) {
      for (let a = oldest; a < this.appendedTotal; a++) if (matches(a % capacity)) found.push(a);
    } else {
      // Newest first until no older record can still be among the N newest: everything
      // appended before `a` ends no later than a's end plus the worst lateness seen.
      let oldestOfFirstN = Infinity;
      const margin = 1e-3; // seconds; absorbs float rounding of (seconds + nanos)
      for (let a = this.appendedTotal - 1; a >= oldest; a--) {
        const slot = a % capacity;
        const endTime = c.endSeconds(slot) + c.endNanos(slot) / 1e9;
        if (found.length >= last && oldestOfFirstN > endTime + this.maxLateness + margin) break;
        if (!matches(slot)) continue;
        found.push(a);
        if (found.length <= last && endTime < oldestOfFirstN) oldestOfFirstN = endTime;
      }
      found.reverse();
    }

    const before = (a: number, b: number): number => {
      const sa = a % capacity, sb = b % capacity;
      return c.endSeconds(sa) - c.endSeconds(sb) || c.endNanos(sa) - c.endNanos(sb) || a - b;
    };
    let sorted = true;
    for (let k = 1; k < found.length; k++) {
      if (before(found[k - 1]!, found[k]!) > 0) { sorted = false; break; }
    }
    if (!sorted) found.sort(before);
    return last > 0 && found.length > last ? found.slice(found.length - last) : found;
  }

  /** Whether a slot is in the query's range and matches its predicate (run over `view`). */
  private matcher(query: HistoryQuery, view: StoredFlowView): (slot: number) => boolean {
    const { predicate, since, until, endAfter } = query;
    const c = this.columns;
    const sinceS = since === undefined ? -Infinity : secondsOf(since);
    const sinceN = since?.nanos ?? 0;
    const untilS = until === undefined ? Infinity : secondsOf(until);
    const untilN = until?.nanos ?? 0;
    const afterS = endAfter === undefined ? -Infinity : secondsOf(endAfter);
    const afterN = endAfter?.nanos ?? 0;
    return (slot: number): boolean => {
      if (since !== undefined) {
        const s = c.f64[slot * F64 + F_END_S]!;
        if (s < sinceS || (s === sinceS && c.u32[slot * U32 + U_END_NS]! < sinceN)) return false;
      }
      if (endAfter !== undefined) {
        const s = c.f64[slot * F64 + F_END_S]!;
        if (s < afterS || (s === afterS && c.u32[slot * U32 + U_END_NS]! <= afterN)) return false;
      }
      if (until !== undefined) {
        const s = c.f64[slot * F64 + F_START_S]!;
        if (s > untilS || (s === untilS && c.u32[slot * U32 + U_START_NS]! > untilN)) return false;
      }
      if (predicate === undefined) return true;
      view.slot = slot;
      return predicate(view);
    };
  }

  private materialize(slot: number): FlowRecord {
    const c = this.columns;
    const present = c.u8[slot * U8 + B_PRESENT]!;
    const u = slot * U32, i = slot * I32, l = slot * U64;
    return {
      startTime: (present & HAS_START) !== 0 ? timestampOf(c, slot, F_START_S, U_START_NS) : undefined,
      endTime: (present & HAS_END) !== 0 ? timestampOf(c, slot, F_END_S, U_END_NS) : undefined,
      node: c.string(slot, R_NODE),
      point: c.i32[i + I_POINT]!,
      reporter: c.i32[i + I_REPORTER]!,
      interface: c.string(slot, R_IFACE),
      ifindex: c.u32[u + U_IFINDEX]!,
      ip: (present & HAS_IP) !== 0
        ? { source: c.string(slot, R_IP_SRC), destination: c.string(slot, R_IP_DST), version: c.i32[i + I_IP_VERSION]! }
        : undefined,
      l4: (present & HAS_L4) !== 0
        ? {
          protocol: c.u32[u + U_PROTO]!,
          protocolName: c.string(slot, R_PROTO),
          sourcePort: c.u32[u + U_SPORT]!,
          destinationPort: c.u32[u + U_DPORT]!,
          tcpFlags: (present & HAS_TCP_FLAGS) !== 0 ? TCP_FLAGS_BY_BITS[c.u8[slot * U8 + B_TCP_FLAGS]!] : undefined,
          icmpType: c.u32[u + U_ICMP_TYPE]!,
          icmpCode: c.u32[u + U_ICMP_CODE]!,
        }
        : undefined,
      packets: c.u64[l + L_PACKETS]!,
      bytes: c.u64[l + L_BYTES]!,
      source: c.endpoint(slot, R_SOURCE),
      destination: c.endpoint(slot, R_DESTINATION),
      verdict: c.i32[i + I_VERDICT]!,
      verdictReason: c.i32[i + I_REASON]!,
      attribution: c.attribution(slot),
      sequence: c.u64[l + L_SEQUENCE]!,
    };
  }
}
