// The recent-flows history behind GetFlows: a fixed-capacity ring of FlowRecords.
//
// Memory is the constraint (1M records in well under 600 MiB): a FlowRecord as decoded
// holds ~10 small objects (timestamps, Layer3, Layer4, TCP flags, three bigints), about
// 600 bytes a record. The ring therefore stores each record in columns (typed arrays for
// numbers; strings, Endpoints and attributions as ids into dictionaries that count
// the rows holding each value, so the heap holds no array of a million references for
// the garbage collector to trace), each column as narrow as the largest value it has held
// (widening-column.ts; about 60 bytes a record for an agent's records, 126 at full width),
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
import { MAX_U64, U64Column, WideningColumn, type CellWidth } from "./widening-column.js";
import { HintSlots } from "./hint-slots.js";

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
  /**
   * Only records with one of these verdicts (observation points): checked on the column
   * before the predicate runs, so a query that narrows by them calls its predicate for the
   * rows that pass only. The predicate must imply them (filter.ts columnsRequired).
   */
  verdicts?: ReadonlySet<number>;
  points?: ReadonlySet<number>;
  /** Only records with an end (source or destination Endpoint) in one of these namespaces: checked per distinct Endpoint, before the predicate. */
  namespaces?: ReadonlySet<string>;
}

const HAS_START = 1, HAS_END = 2, HAS_IP = 4, HAS_L4 = 8, HAS_TCP_FLAGS = 16;
// The Layer3 source (destination) address is the source (destination) Endpoint's, as it
// nearly always is: the address column holds 0 and nothing is held for it in `addresses`.
const IP_SOURCE_OF_SOURCE = 32, IP_DESTINATION_OF_DESTINATION = 64;

/** Slots of RowDictionary's hint table (a power of two), minus one. */
const HINT_MASK = 16_383;

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
  /** holdHinted()'s table, made on its first use (most dictionaries never take hints). */
  private hints: Uint32Array | undefined;

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
   * hold() with a hint: `hint` (EnrichedColumns.sourceHints: a number per distinct address)
   * picks a slot of a small table remembering the id last handed out for it, which saves
   * the Map lookup per row. The id is used only while it still names the same value, so a
   * collision of hints or a freed and reused id falls back to hold() and never attaches
   * another row's value.
   */
  holdHinted(value: T, hint: number): number {
    const hints = this.hints ??= new Uint32Array(HINT_MASK + 1);
    const slot = hint & HINT_MASK;
    const id = hints[slot]!;
    if (id !== 0 && this.values[id] === value) {
      this.refs[id]!++;
      return id;
    }
    return (hints[slot] = this.hold(value));
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
  /** One more than the largest id given out so far. */
  get idLimit(): number { return this.values.length; }
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
  /** What intern() last answered for an Endpoint object, by its address's hint (internHinted). */
  private readonly hinted = new HintSlots<Endpoint, Endpoint>();
  constructor(private readonly limit: number) {}

  /**
   * intern() with a hint (EnrichedColumns.sourceHints): an Endpoint object interned before
   * under the same slot gets the same answer without the Map, an Endpoint equal to it
   * (Endpoints are read-only), though maybe no longer the one the Map holds for its address.
   */
  internHinted(endpoint: Endpoint, hint: number): Endpoint {
    const known = this.hinted.get(hint, endpoint);
    if (known !== undefined) return known;
    const interned = this.intern(endpoint);
    this.hinted.set(hint, endpoint, interned);
    return interned;
  }

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

/**
 * The ring's columns, one per field, each the narrowest typed array its values fit
 * (WideningColumn: widened, never truncated, when one does not). Strings, Endpoints and
 * attributions are ids into dictionaries, one per kind of value, so that each id column
 * is as narrow as the number of distinct values it holds (20 nodes: 1 byte; 8,000
 * addresses: 2). Id 0 is undefined.
 */
class Columns {
  readonly nodes = new RowDictionary<string>();
  readonly interfaces = new RowDictionary<string>();
  readonly addresses = new RowDictionary<string>();
  readonly protocolNames = new RowDictionary<string>();
  readonly endpoints = new RowDictionary<Endpoint>();
  /** The enricher shares one attribution per (policy version, identities, port). */
  readonly attributions = new RowDictionary<PolicyAttribution>();

  readonly node: WideningColumn;
  readonly iface: WideningColumn;
  readonly ipSource: WideningColumn;
  readonly ipDestination: WideningColumn;
  readonly protocolName: WideningColumn;
  readonly source: WideningColumn;
  readonly destination: WideningColumn;
  readonly attribution: WideningColumn;
  /** Seconds exact below 2^53 (4 bytes until 2106 or a negative time, then 8). */
  readonly startSeconds: WideningColumn;
  readonly endSeconds: WideningColumn;
  readonly startNanos: WideningColumn;
  readonly endNanos: WideningColumn;
  readonly ifindex: WideningColumn;
  readonly protocol: WideningColumn;
  readonly sourcePort: WideningColumn;
  readonly destinationPort: WideningColumn;
  readonly icmpType: WideningColumn;
  readonly icmpCode: WideningColumn;
  /** Enums, kept exactly even when unrecognised (a negative one widens its column to 8 bytes). */
  readonly point: WideningColumn;
  readonly reporter: WideningColumn;
  readonly verdict: WideningColumn;
  readonly ipVersion: WideningColumn;
  readonly verdictReason: WideningColumn;
  /** Which optional messages are present (HAS_*), and the TCP flags as one byte. */
  readonly present: Uint8Array;
  readonly tcpFlags: Uint8Array;
  readonly packets: U64Column;
  readonly bytes: U64Column;
  readonly sequence: U64Column;

  constructor(readonly capacity: number) {
    // Typed arrays are zero-filled lazily by the OS: memory grows with use, not capacity.
    const column = (initial: CellWidth = 1) => new WideningColumn(capacity, initial);
    this.node = column();
    this.iface = column();
    this.ipSource = column(0);
    this.ipDestination = column(0);
    this.protocolName = column();
    this.source = column();
    this.destination = column();
    this.attribution = column();
    this.startSeconds = column(4);
    this.endSeconds = column(4);
    this.startNanos = column(4);
    this.endNanos = column(4);
    this.ifindex = column();
    this.protocol = column();
    this.sourcePort = column();
    this.destinationPort = column();
    this.icmpType = column(0);
    this.icmpCode = column(0);
    this.point = column();
    this.reporter = column();
    this.verdict = column();
    this.ipVersion = column();
    this.verdictReason = column();
    this.present = new Uint8Array(capacity);
    this.tcpFlags = new Uint8Array(capacity);
    this.packets = new U64Column("packets", capacity);
    this.bytes = new U64Column("bytes", capacity);
    this.sequence = new U64Column("sequence", capacity);
  }

  /** Bytes of all columns (their cells at capacity; the dictionaries not counted). */
  get columnBytes(): number {
    let total = this.present.byteLength + this.tcpFlags.byteLength;
    for (const value of Object.values(this)) {
      if (value instanceof WideningColumn || value instanceof U64Column) total += value.bytes;
    }
    return total;
  }

  /** End time of a slot (or its start when it has no end), compared as (seconds, nanos). */
  endSecondsOf(slot: number): number { return this.endSeconds.get(slot); }
  endNanosOf(slot: number): number { return this.endNanos.get(slot); }

  nodeOf(slot: number): string { return this.nodes.value(this.node.get(slot)) ?? ""; }
  interfaceOf(slot: number): string { return this.interfaces.value(this.iface.get(slot)) ?? ""; }
  ipSourceOf(slot: number): string {
    if ((this.present[slot]! & IP_SOURCE_OF_SOURCE) !== 0) return this.sourceOf(slot)!.ip;
    return this.addresses.value(this.ipSource.get(slot)) ?? "";
  }
  ipDestinationOf(slot: number): string {
    if ((this.present[slot]! & IP_DESTINATION_OF_DESTINATION) !== 0) return this.destinationOf(slot)!.ip;
    return this.addresses.value(this.ipDestination.get(slot)) ?? "";
  }
  protocolNameOf(slot: number): string { return this.protocolNames.value(this.protocolName.get(slot)) ?? ""; }
  sourceOf(slot: number): Endpoint | undefined { return this.endpoints.value(this.source.get(slot)); }
  destinationOf(slot: number): Endpoint | undefined { return this.endpoints.value(this.destination.get(slot)); }
  attributionOf(slot: number): PolicyAttribution | undefined { return this.attributions.value(this.attribution.get(slot)); }

  /** A slot's dictionary ids (each already held for it). */
  setRefs(slot: number, node: number, iface: number, ipSource: number, ipDestination: number, protocolName: number,
    source: number, destination: number, attribution: number): void {
    this.node.set(slot, node);
    this.iface.set(slot, iface);
    this.ipSource.set(slot, ipSource);
    this.ipDestination.set(slot, ipDestination);
    this.protocolName.set(slot, protocolName);
    this.source.set(slot, source);
    this.destination.set(slot, destination);
    this.attribution.set(slot, attribution);
  }

  /** Lets go of what an overwritten slot held. */
  release(slot: number): void {
    this.nodes.release(this.node.get(slot));
    this.interfaces.release(this.iface.get(slot));
    this.addresses.release(this.ipSource.get(slot));
    this.addresses.release(this.ipDestination.get(slot));
    this.protocolNames.release(this.protocolName.get(slot));
    this.endpoints.release(this.source.get(slot));
    this.endpoints.release(this.destination.get(slot));
    this.attributions.release(this.attribution.get(slot));
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

  private present(bit: number): boolean { return (this.columns.present[this.slot]! & bit) !== 0; }
  get startTime(): Timestamp | undefined {
    const c = this.columns;
    return this.present(HAS_START) ? timestampOf(c.startSeconds, c.startNanos, this.slot) : undefined;
  }
  get endTime(): Timestamp | undefined {
    const c = this.columns;
    return this.present(HAS_END) ? timestampOf(c.endSeconds, c.endNanos, this.slot) : undefined;
  }
  get node(): string { return this.columns.nodeOf(this.slot); }
  get point(): number { return this.columns.point.get(this.slot); }
  get reporter(): number { return this.columns.reporter.get(this.slot); }
  get interface(): string { return this.columns.interfaceOf(this.slot); }
  get ifindex(): number { return this.columns.ifindex.get(this.slot); }
  get ip(): Layer3 | undefined { return this.present(HAS_IP) ? this.l3 : undefined; }
  get l4(): Layer4 | undefined { return this.present(HAS_L4) ? this.l4View : undefined; }
  get packets(): bigint { return this.columns.packets.bigint(this.slot); }
  get bytes(): bigint { return this.columns.bytes.bigint(this.slot); }
  get source(): Endpoint | undefined { return this.columns.sourceOf(this.slot); }
  get destination(): Endpoint | undefined { return this.columns.destinationOf(this.slot); }
  get verdict(): number { return this.columns.verdict.get(this.slot); }
  get verdictReason(): number { return this.columns.verdictReason.get(this.slot); }
  get attribution(): PolicyAttribution | undefined { return this.columns.attributionOf(this.slot); }
  get sequence(): bigint { return this.columns.sequence.bigint(this.slot); }
  /**
   * The source's and destination's ids in the history's dictionary of Endpoints (0: none):
   * one id per Endpoint object for as long as a row holds it, so equal ids are the same
   * object during a scan (nothing is appended meanwhile).
   */
  get sourceId(): number { return this.columns.source.get(this.slot); }
  get destinationId(): number { return this.columns.destination.get(this.slot); }
  /** Number(packets), without a BigInt below 2^32 (the same rounding above 2^53). */
  get packetCount(): number { return this.columns.packets.number(this.slot); }
  /** Start and end in milliseconds (seconds * 1000 + whole milliseconds of the nanos); 0 when absent. */
  get startMs(): number { return this.present(HAS_START) ? this.ms(this.columns.startSeconds, this.columns.startNanos) : 0; }
  get endMs(): number { return this.present(HAS_END) ? this.ms(this.columns.endSeconds, this.columns.endNanos) : 0; }
  /** The row's numbers (StoredRowNumbers) into `into`, which it returns. */
  readNumbers(into: StoredRowNumbers): StoredRowNumbers {
    const c = this.columns, slot = this.slot;
    const present = c.present[slot]!;
    into.sourceId = c.source.get(slot);
    into.destinationId = c.destination.get(slot);
    into.point = c.point.get(slot);
    into.verdict = c.verdict.get(slot);
    into.verdictReason = c.verdictReason.get(slot);
    into.hasIp = (present & HAS_IP) !== 0;
    into.hasL4 = (present & HAS_L4) !== 0;
    into.protocol = c.protocol.get(slot);
    into.sourcePort = c.sourcePort.get(slot);
    into.destinationPort = c.destinationPort.get(slot);
    into.icmpType = c.icmpType.get(slot);
    into.synAckBits = (present & HAS_TCP_FLAGS) !== 0 ? c.tcpFlags[slot]! & 0x12 : -1;
    into.packets = c.packets.number(slot);
    into.startMs = (present & HAS_START) !== 0 ? this.ms(c.startSeconds, c.startNanos) : 0;
    into.endMs = (present & HAS_END) !== 0 ? this.ms(c.endSeconds, c.endNanos) : 0;
    return into;
  }
  private ms(seconds: WideningColumn, nanos: WideningColumn): number {
    return seconds.get(this.slot) * 1000 + Math.floor(nanos.get(this.slot) / 1e6);
  }
}

class StoredLayer3View implements Layer3 {
  constructor(private readonly row: StoredFlowView) {}
  get source(): string { return this.row.columns.ipSourceOf(this.row.slot); }
  get destination(): string { return this.row.columns.ipDestinationOf(this.row.slot); }
  get version(): number { return this.row.columns.ipVersion.get(this.row.slot); }
}

class StoredLayer4View implements Layer4 {
  constructor(private readonly row: StoredFlowView) {}
  get protocol(): number { return this.row.columns.protocol.get(this.row.slot); }
  get protocolName(): string { return this.row.columns.protocolNameOf(this.row.slot); }
  get sourcePort(): number { return this.row.columns.sourcePort.get(this.row.slot); }
  get destinationPort(): number { return this.row.columns.destinationPort.get(this.row.slot); }
  get tcpFlags(): TcpFlags | undefined {
    const c = this.row.columns, slot = this.row.slot;
    return (c.present[slot]! & HAS_TCP_FLAGS) !== 0 ? TCP_FLAGS_BY_BITS[c.tcpFlags[slot]!] : undefined;
  }
  get icmpType(): number { return this.row.columns.icmpType.get(this.row.slot); }
  get icmpCode(): number { return this.row.columns.icmpCode.get(this.row.slot); }
}

function timestampOf(seconds: WideningColumn, nanos: WideningColumn, slot: number): Timestamp {
  return { seconds: BigInt(seconds.get(slot)), nanos: nanos.get(slot) };
}

function checkCounts(record: FlowRecord, index: number): void {
  for (const field of ["packets", "bytes", "sequence"] as const) {
    const value = record[field];
    if (value < 0n || value > MAX_U64) {
      throw new RangeError(`flow history: record ${index} of the batch: ${field} ${value} is outside an unsigned 64-bit integer [0, 2^64); nothing of the batch was stored`);
    }
  }
}

/** A set of small non-negative integers as a table: 1 at each member (a cell outside it reads undefined). */
function tableOf(members: ReadonlySet<number> | undefined): Uint8Array | undefined {
  if (members === undefined) return undefined;
  const valid = [...members].filter((m) => Number.isSafeInteger(m) && m >= 0);
  const table = new Uint8Array(Math.max(-1, ...valid) + 1);
  for (const m of valid) table[m] = 1;
  return table;
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

/** Seconds: absorbs the float rounding of (seconds + nanos / 1e9) in comparisons with a block's bound. */
const BOUND_MARGIN = 1e-3;

/** A binary heap of append order numbers, the oldest by `before` at the root. */
class OldestFirstHeap {
  readonly items: number[] = [];

  constructor(private readonly before: (a: number, b: number) => number) {}

  get size(): number { return this.items.length; }
  get root(): number { return this.items[0]!; }

  push(item: number): void {
    const items = this.items;
    let k = items.push(item) - 1;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      if (this.before(items[parent]!, item) <= 0) break;
      items[k] = items[parent]!;
      k = parent;
    }
    items[k] = item;
  }

  replaceRoot(item: number): void {
    const items = this.items, n = items.length;
    let k = 0;
    for (;;) {
      let child = 2 * k + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(items[child + 1]!, items[child]!) < 0) child++;
      if (this.before(item, items[child]!) <= 0) break;
      items[k] = items[child]!;
      k = child;
    }
    items[k] = item;
  }
}

export class FlowHistory {
  private readonly columns: Columns;
  private readonly view: StoredFlowView;
  private readonly nonPodEndpoints = new EndpointInterner(65_536);
  private readonly subscribers = new Set<Subscriber>();
  private readonly onSubscriberError: ((error: unknown) => void) | undefined;
  private appendedTotal = 0;
  private count = 0;
  /**
   * The ring's slots in blocks of 2^blockBits, and per block an upper bound of its rows'
   * end times (seconds): the latest end among the rows written in the block's current lap
   * of the ring, and among those of its previous lap until the lap overwrote them all.
   * A "last N" query skips every block that ends before its N newest rows so far, so one
   * batch that arrived late (an agent's buffer after an outage) costs it nothing, where a
   * bound on how late any row ever came made every later query look back that far.
   */
  private readonly blockBits: number;
  private readonly blockLatest: Float64Array;
  private readonly blockLatestBefore: Float64Array;
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
    // At least ~64 blocks (4-row blocks at the least, 4,096 rows at the most: 245 blocks for 1M).
    this.blockBits = Math.min(12, Math.max(2, Math.floor(Math.log2(capacity / 64))));
    const blocks = Math.ceil(capacity / 2 ** this.blockBits);
    this.blockLatest = new Float64Array(blocks).fill(-Infinity);
    this.blockLatestBefore = new Float64Array(blocks).fill(-Infinity);
    this.onSubscriberError = options.onSubscriberError;
  }

  get capacity(): number { return this.columns.capacity; }
  /** Bytes of the ring's columns at capacity (each as wide as the largest value it has held). */
  get columnBytes(): number { return this.columns.columnBytes; }
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
    const s = c.endSecondsOf(slot), ns = c.endNanosOf(slot);
    if (s > this.newestEvictedEndS || (s === this.newestEvictedEndS && ns > this.newestEvictedEndNs)) {
      this.newestEvictedEndS = s;
      this.newestEvictedEndNs = ns;
    }
  }

  /** Whether slot `a`'s end time is before slot `b`'s (seconds, then nanos). */
  private endsBefore(a: number, b: number): boolean {
    const c = this.columns;
    const sa = c.endSecondsOf(a), sb = c.endSecondsOf(b);
    return sa < sb || (sa === sb && c.endNanosOf(a) < c.endNanosOf(b));
  }

  /**
   * After row `a` (an append order number) is stored: its block's bound on end times, and
   * whether it is out of order (it ends before the row appended before it).
   */
  private noteEnd(a: number): void {
    const c = this.columns;
    const slot = a % c.capacity;
    const block = slot >>> this.blockBits;
    const first = block << this.blockBits, last = Math.min(first + 2 ** this.blockBits, c.capacity) - 1;
    if (slot === first) {
      // A new lap: the rows of the last one stay until overwritten.
      this.blockLatestBefore[block] = this.blockLatest[block]!;
      this.blockLatest[block] = -Infinity;
    }
    const endTime = c.endSecondsOf(slot) + c.endNanosOf(slot) / 1e9;
    if (endTime > this.blockLatest[block]!) this.blockLatest[block] = endTime;
    if (slot === last) this.blockLatestBefore[block] = -Infinity;
    if (a > 0 && c.capacity > 1 && this.endsBefore(slot, (slot + c.capacity - 1) % c.capacity)) this.outOfOrder++;
  }

  /** Refuses the whole batch (storing none of it) when a record's count does not fit 64 unsigned bits. */
  append(records: readonly FlowRecord[]): void {
    records.forEach(checkCounts);
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
    const { nodes, interfaces, protocolNames } = this.columns;
    const batch: BatchStrings = {
      node: nodes.hold(b.node),
      interfaces: Uint32Array.from(c.interfaceNames, (n) => interfaces.hold(n)),
      protocols: new Uint32Array(256),
      packets: new Uint32Array(c.packets.buffer, c.packets.byteOffset, c.rows * 2),
      bytes: new Uint32Array(c.bytes.buffer, c.bytes.byteOffset, c.rows * 2),
      sequenceLo: Number(c.firstSequence & 0xffff_ffffn),
      sequenceHi: Number(c.firstSequence >> 32n),
    };
    // Runs short enough that no slot is written twice, nor the slot after a run's last one before it is evicted.
    const run = Math.max(1, this.columns.capacity - 1);
    for (let from = 0; from < b.rows.length; from += run) this.storeRows(b, from, Math.min(b.rows.length, from + run), batch);
    nodes.release(batch.node);
    for (const id of batch.interfaces) interfaces.release(id);
    for (const id of batch.protocols) protocolNames.release(id);
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
      this.forEachMatch(query, view, (slot) => {
        view.slot = slot;
        each(view);
      });
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
    // The Layer3 addresses nearly always equal the Endpoints' addresses: then only a bit says so.
    const ipOfEnds = ip === undefined ? 0
      : (source !== undefined && source.ip === ip.source ? IP_SOURCE_OF_SOURCE : 0)
        | (destination !== undefined && destination.ip === ip.destination ? IP_DESTINATION_OF_DESTINATION : 0);
    // Held before the overwritten slot lets go, so that a value both hold keeps its id.
    const node = c.nodes.hold(record.node);
    const iface = c.interfaces.hold(record.interface);
    const ipSourceId = (ipOfEnds & IP_SOURCE_OF_SOURCE) !== 0 ? 0 : c.addresses.hold(ip === undefined ? "" : ip.source);
    const ipDestinationId = (ipOfEnds & IP_DESTINATION_OF_DESTINATION) !== 0 ? 0 : c.addresses.hold(ip === undefined ? "" : ip.destination);
    const protocolName = c.protocolNames.hold(l4 === undefined ? "" : l4.protocolName);
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
    c.startSeconds.set(slot, startSeconds);
    c.endSeconds.set(slot, endSeconds);
    c.startNanos.set(slot, start?.nanos ?? 0);
    c.endNanos.set(slot, end?.nanos ?? 0);
    c.ifindex.set(slot, record.ifindex);
    c.protocol.set(slot, l4?.protocol ?? 0);
    c.sourcePort.set(slot, l4?.sourcePort ?? 0);
    c.destinationPort.set(slot, l4?.destinationPort ?? 0);
    c.icmpType.set(slot, l4?.icmpType ?? 0);
    c.icmpCode.set(slot, l4?.icmpCode ?? 0);
    c.point.set(slot, record.point);
    c.reporter.set(slot, record.reporter);
    c.verdict.set(slot, record.verdict);
    c.ipVersion.set(slot, ip?.version ?? 0);
    c.verdictReason.set(slot, record.verdictReason);

    const tcpFlags = l4?.tcpFlags;
    c.present[slot] = ipOfEnds | (record.startTime !== undefined ? HAS_START : 0) | (record.endTime !== undefined ? HAS_END : 0)
      | (ip !== undefined ? HAS_IP : 0) | (l4 !== undefined ? HAS_L4 : 0) | (tcpFlags !== undefined ? HAS_TCP_FLAGS : 0);
    c.tcpFlags[slot] = tcpFlags === undefined ? 0 : tcpFlagsByte(tcpFlags);
    c.packets.setBigInt(slot, record.packets);
    c.bytes.setBigInt(slot, record.bytes);
    c.sequence.setBigInt(slot, record.sequence);

    this.noteEnd(this.appendedTotal);
    this.appendedTotal++;
    if (this.count < c.capacity) this.count++;
  }

  /**
   * Rows b.rows[from … to - 1] of an ingested batch into the next slots (store()'s layout,
   * from the columns; at most capacity - 1 rows): row by row what needs the row's values
   * (the dictionaries, derived columns), then the columns stored as they come, each in one
   * run per contiguous range of slots, then each row's place in time order. evict() reads
   * the overwritten rows' end times, which the runs have not overwritten yet.
   */
  private storeRows(b: EnrichedColumns, from: number, to: number, batch: BatchStrings): void {
    const first = this.appendedTotal;
    for (let k = from; k < to; k++) this.storeRow(b, b.rows[k]!, batch);
    const c = this.columns, cols = b.columns, rows = b.rows;
    const slot = first % c.capacity;
    const wrap = Math.min(to, from + c.capacity - slot);
    for (const [start, end, at] of [[from, wrap, slot], [wrap, to, 0]] as const) {
      c.startSeconds.setRows(at, b.startSeconds, rows, start, end);
      c.endSeconds.setRows(at, b.endSeconds, rows, start, end);
      c.startNanos.setRows(at, b.startNanos, rows, start, end);
      c.endNanos.setRows(at, b.endNanos, rows, start, end);
      c.ifindex.setRows(at, cols.ifindexes, rows, start, end);
      c.protocol.setRows(at, cols.protocols, rows, start, end);
      c.point.setRows(at, cols.points, rows, start, end);
      c.verdict.setRows(at, cols.verdicts, rows, start, end);
      c.verdictReason.setRows(at, cols.verdictReasons, rows, start, end);
    }
    for (let a = first; a < this.appendedTotal; a++) this.noteEnd(a);
  }

  /** Row `i` of an ingested batch into the next slot, but for storeRows()'s columns and noteEnd(). */
  private storeRow(b: EnrichedColumns, i: number, batch: BatchStrings): void {
    const c = this.columns;
    const cols = b.columns;
    const slot = this.appendedTotal % c.capacity;
    const evicting = this.count === c.capacity;
    if (evicting) this.evict(slot);
    const src = b.sources[i], dst = b.destinations[i];
    const source = src === undefined || src.podName !== "" ? src : this.nonPodEndpoints.internHinted(src, b.sourceHints[i]!);
    const destination = dst === undefined || dst.podName !== "" ? dst : this.nonPodEndpoints.internHinted(dst, b.destinationHints[i]!);
    const proto = cols.protocols[i]!;
    let protocolName = batch.protocols[proto]!;
    if (protocolName === 0) protocolName = batch.protocols[proto] = c.protocolNames.hold(PROTOCOL_NAMES[proto] ?? String(proto));
    c.protocolNames.holdId(protocolName);
    let iface = batch.interfaces[cols.interfaces[i]!];
    if (iface === undefined) iface = c.interfaces.hold("");
    else c.interfaces.holdId(iface);
    c.nodes.holdId(batch.node);
    // Held before the overwritten slot lets go, so that a value both hold keeps its id.
    const sourceIp = b.sourceIps[i]!, destinationIp = b.destinationIps[i]!;
    const ipOfEnds = (source !== undefined && source.ip === sourceIp ? IP_SOURCE_OF_SOURCE : 0)
      | (destination !== undefined && destination.ip === destinationIp ? IP_DESTINATION_OF_DESTINATION : 0);
    const ipSource = (ipOfEnds & IP_SOURCE_OF_SOURCE) !== 0 ? 0 : c.addresses.holdHinted(sourceIp, b.sourceHints[i]!);
    const ipDestination = (ipOfEnds & IP_DESTINATION_OF_DESTINATION) !== 0 ? 0 : c.addresses.holdHinted(destinationIp, b.destinationHints[i]!);
    const sourceId = source === undefined ? 0 : c.endpoints.holdHinted(source, b.sourceHints[i]!);
    const destinationId = destination === undefined ? 0 : c.endpoints.holdHinted(destination, b.destinationHints[i]!);
    const attribution = c.attributions.hold(b.attributions[i]);
    if (evicting) c.release(slot);
    c.setRefs(slot, batch.node, iface, ipSource, ipDestination, protocolName, sourceId, destinationId, attribution);
    const isIcmp = proto === 1 || proto === 58;
    const sport = cols.sourcePorts[i]!, dport = cols.destinationPorts[i]!;
    c.sourcePort.set(slot, isIcmp ? 0 : sport);
    c.destinationPort.set(slot, isIcmp ? 0 : dport);
    c.icmpType.set(slot, isIcmp ? sport : 0);
    c.icmpCode.set(slot, isIcmp ? dport : 0);
    const v = cols.ipVersions[i]!;
    c.reporter.set(slot, reporterOf(cols.points[i]!));
    c.ipVersion.set(slot, v === 6 ? IpVersion.IP_VERSION_IPV6 : v === 4 ? IpVersion.IP_VERSION_IPV4 : IpVersion.IP_VERSION_UNSPECIFIED);
    c.present[slot] = ipOfEnds | HAS_START | HAS_END | HAS_IP | HAS_L4 | (proto === 6 ? HAS_TCP_FLAGS : 0);
    c.tcpFlags[slot] = proto === 6 ? cols.tcpFlags[i]! : 0;
    c.packets.setWords(slot, batch.packets[2 * i]!, batch.packets[2 * i + 1]!);
    c.bytes.setWords(slot, batch.bytes[2 * i]!, batch.bytes[2 * i + 1]!);
    const lo = batch.sequenceLo + i;
    c.sequence.setWords(slot, lo >>> 0, batch.sequenceHi + (lo >= 2 ** 32 ? 1 : 0));
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
    const before = (a: number, b: number): number => {
      const sa = a % capacity, sb = b % capacity;
      return c.endSecondsOf(sa) - c.endSecondsOf(sb) || c.endNanosOf(sa) - c.endNanosOf(sb) || a - b;
    };
    let found: number[];
    if (last === 0) {
      found = [];
      const oldest = this.appendedTotal - this.count, oldestSlot = oldest % capacity;
      // Slots to append order numbers: the oldest held row's slot is its number's.
      this.forEachMatch(query, this.view, (slot) => found.push(oldest + (slot - oldestSlot + capacity) % capacity));
    } else {
      found = this.newestMatches(last, query, before);
    }
    let sorted = true;
    for (let k = 1; k < found.length; k++) {
      if (before(found[k - 1]!, found[k]!) > 0) { sorted = false; break; }
    }
    if (!sorted) found.sort(before);
    return found;
  }

  /** The earliest end time (seconds) a query's `since` and `endAfter` let a match have; -Infinity without them. */
  private endFloor(query: HistoryQuery): number {
    const at = (t: Timestamp | undefined) => (t === undefined ? -Infinity : secondsOf(t) + t.nanos / 1e9);
    return Math.max(at(query.since), at(query.endAfter));
  }

  /** Whether any row of `block` may end at or after `floor` (seconds): its bound, with a margin for the float sum of seconds and nanos. */
  private blockReaches(block: number, floor: number): boolean {
    return Math.max(this.blockLatest[block]!, this.blockLatestBefore[block]!) + BOUND_MARGIN >= floor;
  }

  /**
   * Calls `each(from, to)` for the held rows in append order, as runs [from, to) of append
   * order numbers within one block of the ring, leaving out the blocks whose rows all end
   * before `floor`.
   */
  private forEachRun(floor: number, each: (from: number, to: number) => void): void {
    const capacity = this.columns.capacity, bits = this.blockBits;
    for (let a = this.appendedTotal - this.count; a < this.appendedTotal;) {
      const slot = a % capacity;
      const block = slot >>> bits;
      const to = Math.min(this.appendedTotal, a + Math.min((block + 1) << bits, capacity) - slot);
      if (this.blockReaches(block, floor)) each(a, to);
      a = to;
    }
  }

  /**
   * Calls `each(slot)` for the slots of the held rows that match `query`, in append order,
   * leaving out the blocks that end before the query's time bound. With verdicts or points
   * the query's column tables pick a run's candidate slots in one pass over the column's
   * cells first, and the rest of the match runs on those only.
   */
  private forEachMatch(query: HistoryQuery, view: StoredFlowView, each: (slot: number) => void): void {
    const capacity = this.columns.capacity;
    const matches = this.matcher(query, view);
    const pass = this.columnPass(query);
    this.forEachRun(this.endFloor(query), (from, to) => {
      const first = from % capacity;
      if (pass === undefined) {
        for (let slot = first; slot < first + to - from; slot++) if (matches(slot)) each(slot);
        return;
      }
      const n = pass.pick(first, first + to - from);
      for (let k = 0; k < n; k++) {
        const slot = pass.slots[k]!;
        if (matches(slot)) each(slot);
      }
    });
  }

  /**
   * The query's column pass, the one place its verdicts and points are checked: `pick` puts
   * the slots of [first, end) (within one block) whose verdict and point the query names
   * into `slots`, in order, and returns how many (one pass over the verdict column's cells,
   * or the point column's without verdicts; the other column read for those only);
   * undefined when the query names neither.
   */
  private columnPass(query: HistoryQuery): { slots: Uint32Array; pick: (first: number, end: number) => number } | undefined {
    const c = this.columns;
    const verdicts = tableOf(query.verdicts), points = tableOf(query.points);
    if (verdicts === undefined && points === undefined) return undefined;
    const slots = new Uint32Array(2 ** this.blockBits);
    const pick = (first: number, end: number): number => {
      if (verdicts === undefined) return c.point.slotsIn(first, end, points!, slots);
      const n = c.verdict.slotsIn(first, end, verdicts, slots);
      if (points === undefined) return n;
      let kept = 0;
      for (let k = 0; k < n; k++) if (points[c.point.get(slots[k]!)] === 1) slots[kept++] = slots[k]!;
      return kept;
    };
    return { slots, pick };
  }

  /**
   * The `last` newest matches of `query` by `before` (end time, then arrival), in no
   * particular order: held in a heap whose root is the oldest of them, newest rows first, a
   * block of the ring at a time. A block whose rows all end before the query's time bound,
   * or (once `last` are held) before the root, is skipped unread; with the query's column
   * pass (verdicts or points) a block's rows are its candidate slots only.
   */
  private newestMatches(last: number, query: HistoryQuery, before: (a: number, b: number) => number): number[] {
    const c = this.columns, capacity = c.capacity, bits = this.blockBits;
    const matches = this.matcher(query, this.view);
    const floor = this.endFloor(query);
    const heap = new OldestFirstHeap(before);
    let rootEnd = -Infinity;
    const consider = (r: number): void => {
      if (!matches(r % capacity)) return;
      if (heap.size < last) heap.push(r);
      else if (before(r, heap.root) > 0) heap.replaceRoot(r);
      else return;
      if (heap.size === last) {
        const rs = heap.root % capacity;
        rootEnd = c.endSecondsOf(rs) + c.endNanosOf(rs) / 1e9;
      }
    };
    const pass = this.columnPass(query);
    const oldest = this.appendedTotal - this.count;
    for (let a = this.appendedTotal - 1; a >= oldest;) {
      const slot = a % capacity;
      const block = slot >>> bits;
      // This block's rows from `slot` down, as append order numbers [from, a].
      const from = a - (slot - Math.max(block << bits, slot - (a - oldest)));
      if (this.blockReaches(block, heap.size < last ? floor : Math.max(floor, rootEnd))) {
        if (pass === undefined) {
          for (let r = a; r >= from; r--) consider(r);
        } else {
          const first = from % capacity;
          for (let k = pass.pick(first, slot + 1) - 1; k >= 0; k--) consider(from + pass.slots[k]! - first);
        }
      }
      a = from - 1;
    }
    return heap.items;
  }

  /**
   * Whether the Endpoint of an id is in one of `namespaces`, decided once per id for the
   * query (the answer kept in a table over the dictionary's ids); undefined without them.
   */
  private endInNamespaces(namespaces: ReadonlySet<string> | undefined): ((id: number) => boolean) | undefined {
    if (namespaces === undefined) return undefined;
    const endpoints = this.columns.endpoints;
    // 0: not asked yet, 1: in, 2: not (id 0, no Endpoint, is never in).
    const known = new Uint8Array(endpoints.idLimit);
    return (id: number): boolean => {
      let k = known[id];
      if (k === 0) {
        const e = endpoints.value(id);
        k = known[id] = e !== undefined && namespaces.has(e.namespace) ? 1 : 2;
      }
      return k === 1;
    };
  }

  /**
   * Whether a slot is in the query's range, has an end in its namespaces and matches its
   * predicate (run over `view`). Its verdicts and points are the column pass's to check.
   */
  private matcher(query: HistoryQuery, view: StoredFlowView): (slot: number) => boolean {
    const { predicate, since, until, endAfter } = query;
    const c = this.columns;
    const endIn = this.endInNamespaces(query.namespaces);
    const sinceS = since === undefined ? -Infinity : secondsOf(since);
    const sinceN = since?.nanos ?? 0;
    const untilS = until === undefined ? Infinity : secondsOf(until);
    const untilN = until?.nanos ?? 0;
    const afterS = endAfter === undefined ? -Infinity : secondsOf(endAfter);
    const afterN = endAfter?.nanos ?? 0;
    return (slot: number): boolean => {
      if (endIn !== undefined && !endIn(c.source.get(slot)) && !endIn(c.destination.get(slot))) return false;
      if (since !== undefined) {
        const s = c.endSeconds.get(slot);
        if (s < sinceS || (s === sinceS && c.endNanos.get(slot) < sinceN)) return false;
      }
      if (endAfter !== undefined) {
        const s = c.endSeconds.get(slot);
        if (s < afterS || (s === afterS && c.endNanos.get(slot) <= afterN)) return false;
      }
      if (until !== undefined) {
        const s = c.startSeconds.get(slot);
        if (s > untilS || (s === untilS && c.startNanos.get(slot) > untilN)) return false;
      }
      if (predicate === undefined) return true;
      view.slot = slot;
      return predicate(view);
    };
  }

  private materialize(slot: number): FlowRecord {
    const c = this.columns;
    const present = c.present[slot]!;
    return {
      startTime: (present & HAS_START) !== 0 ? timestampOf(c.startSeconds, c.startNanos, slot) : undefined,
      endTime: (present & HAS_END) !== 0 ? timestampOf(c.endSeconds, c.endNanos, slot) : undefined,
      node: c.nodeOf(slot),
      point: c.point.get(slot),
      reporter: c.reporter.get(slot),
      interface: c.interfaceOf(slot),
      ifindex: c.ifindex.get(slot),
      ip: (present & HAS_IP) !== 0
        ? { source: c.ipSourceOf(slot), destination: c.ipDestinationOf(slot), version: c.ipVersion.get(slot) }
        : undefined,
      l4: (present & HAS_L4) !== 0
        ? {
          protocol: c.protocol.get(slot),
          protocolName: c.protocolNameOf(slot),
          sourcePort: c.sourcePort.get(slot),
          destinationPort: c.destinationPort.get(slot),
          tcpFlags: (present & HAS_TCP_FLAGS) !== 0 ? TCP_FLAGS_BY_BITS[c.tcpFlags[slot]!] : undefined,
          icmpType: c.icmpType.get(slot),
          icmpCode: c.icmpCode.get(slot),
        }
        : undefined,
      packets: c.packets.bigint(slot),
      bytes: c.bytes.bigint(slot),
      source: c.sourceOf(slot),
      destination: c.destinationOf(slot),
      verdict: c.verdict.get(slot),
      verdictReason: c.verdictReason.get(slot),
      attribution: c.attributionOf(slot),
      sequence: c.sequence.bigint(slot),
    };
  }
}
