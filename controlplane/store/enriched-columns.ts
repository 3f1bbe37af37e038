// An agent's columnar batch (flowcolumns/columns.ts) after ingest: its rows as the agent
// sent them, plus what the control plane added per row (both ends named, the policy
// attribution, the address text, clock-corrected times), so that the history ring and
// the flow map take the batch column by column (FlowHistory.appendColumns,
// FlowMapStore.addColumns) and nobody builds a FlowRecord per row. `readRow` reads one row
// flat; `recordOfRow` builds its record for the readers that ask for records (follow
// streams, ClickHouse). The durable store reads each row's numbers with the same reader
// (`readRowNumbers`, flowcolumns/columns.ts) and these arrays itself.
//
// Per-row arrays are indexed by the row in `columns`, not by the position in `rows`:
// refused rows keep their (unused) slot.
import type { Endpoint, FlowRecord, PolicyAttribution } from "../../proto/gen/bulkhead/v1/flow.js";
import {
  columnsFromRecords, newRowValues, readRowValues, recordOfValues, type FlowColumns, type RowValues,
} from "../../flowcolumns/columns.js";
import { addressHash } from "./flowmap.js";

export interface EnrichedColumns {
  /** The node whose agent sent the batch. */
  node: string;
  columns: FlowColumns;
  /** The rows admitted, ascending (a row refused by ingest is left out). */
  rows: Uint32Array;
  /** Named ends; shared Endpoint objects (one per pod and address): read-only. */
  sources: (Endpoint | undefined)[];
  destinations: (Endpoint | undefined)[];
  /** The addresses as text (one shared string per distinct address). */
  sourceIps: string[];
  destinationIps: string[];
  /** addressHash() of each (store/flowmap.ts: the flow map's 5-tuple hash), once per distinct address. */
  sourceHashes: Uint32Array;
  destinationHashes: Uint32Array;
  /**
   * A number per distinct address for the stores' hint tables (the enricher's entry id:
   * consecutive, so that live addresses seldom share a slot); a hint is checked before
   * use, so any number is correct, a poor one only slower.
   */
  sourceHints: Uint32Array;
  destinationHints: Uint32Array;
  attributions: (PolicyAttribution | undefined)[];
  /** Start and end times, corrected for the agent's clock, as (seconds, nanoseconds). */
  startSeconds: Float64Array;
  startNanos: Uint32Array;
  endSeconds: Float64Array;
  endNanos: Uint32Array;
}

const NS = 1_000_000_000;
const LIMB = 65_536;

/**
 * A column of ns since the epoch as (seconds, nanoseconds) numbers, moved back by
 * `shiftMs` (an agent's clock ahead by that much): long division in 16-bit limbs, exact,
 * with no BigInt per row.
 */
export function splitNanoseconds(col: BigUint64Array, shiftMs: number, seconds: Float64Array, nanos: Uint32Array): void {
  const h = new Uint32Array(col.buffer, col.byteOffset, col.length * 2);
  const shiftS = Math.trunc(shiftMs / 1000);
  const shiftN = Math.round((shiftMs - shiftS * 1000) * 1e6);
  for (let i = 0; i < col.length; i++) {
    const lo = h[2 * i]!, hi = h[2 * i + 1]!;
    let cur = hi >>> 16;
    let r = cur; // < 1e9: its quotient digit is 0
    cur = r * LIMB + (hi & 0xffff);
    const q2 = Math.floor(cur / NS); r = cur - q2 * NS;
    cur = r * LIMB + (lo >>> 16);
    const q1 = Math.floor(cur / NS); r = cur - q1 * NS;
    cur = r * LIMB + (lo & 0xffff);
    const q0 = Math.floor(cur / NS); r = cur - q0 * NS;
    let s = (q2 * LIMB + q1) * LIMB + q0;
    let n = r - shiftN;
    s -= shiftS;
    if (n < 0) { n += NS; s -= 1; } else if (n >= NS) { n -= NS; s += 1; }
    seconds[i] = s;
    nanos[i] = n;
  }
}

/**
 * Row `i` of an enriched batch, flat: the row's values (RowValues, whose rules live in
 * flowcolumns/columns.ts) with what ingest added (clock-corrected times, address text,
 * named ends, attribution): the reader of a row for `recordOfRow`. Rows of an agent's
 * batch always have times, addresses and L4, so only `tcpFlags` says what is absent.
 */
export interface EnrichedRow extends RowValues {
  startSeconds: number;
  startNanos: number;
  endSeconds: number;
  endNanos: number;
  sourceIp: string;
  destinationIp: string;
  source: Endpoint | undefined;
  destination: Endpoint | undefined;
  attribution: PolicyAttribution | undefined;
}

/** An EnrichedRow to read rows into (one per reader, reused for every row). */
export function newEnrichedRow(): EnrichedRow {
  return {
    ...newRowValues(), startSeconds: 0, startNanos: 0, endSeconds: 0, endNanos: 0, sourceIp: "", destinationIp: "",
    source: undefined, destination: undefined, attribution: undefined,
  };
}

/** Reads row `i` (admitted) of `b` into `into` and returns it. */
export function readRow(b: EnrichedColumns, i: number, into: EnrichedRow): EnrichedRow {
  readRowValues(b.columns, i, into);
  into.startSeconds = b.startSeconds[i]!;
  into.startNanos = b.startNanos[i]!;
  into.endSeconds = b.endSeconds[i]!;
  into.endNanos = b.endNanos[i]!;
  into.sourceIp = b.sourceIps[i]!;
  into.destinationIp = b.destinationIps[i]!;
  into.source = b.sources[i];
  into.destination = b.destinations[i];
  into.attribution = b.attributions[i];
  return into;
}

const scratch = newEnrichedRow();

/** The FlowRecord of row `i` (admitted), as the record path would have stored it. */
export function recordOfRow(b: EnrichedColumns, i: number): FlowRecord {
  const v = readRow(b, i, scratch);
  const r = recordOfValues(v, b.node);
  r.startTime = { seconds: BigInt(v.startSeconds), nanos: v.startNanos };
  r.endTime = { seconds: BigInt(v.endSeconds), nanos: v.endNanos };
  r.ip.source = v.sourceIp;
  r.ip.destination = v.destinationIp;
  r.source = v.source;
  r.destination = v.destination;
  r.attribution = v.attribution;
  return r;
}

/** Every admitted row as a FlowRecord: for readers that take records (durable stores). */
export function recordsOf(b: EnrichedColumns): FlowRecord[] {
  const out = new Array<FlowRecord>(b.rows.length);
  for (let k = 0; k < b.rows.length; k++) out[k] = recordOfRow(b, b.rows[k]!);
  return out;
}

/** A row's reporter side from its observation point (the rule lives with the row reader). */
export { reporterOf } from "../../flowcolumns/columns.js";

/**
 * Records (consecutive sequences, one node) as the enriched columns ingest would make of
 * them, every row admitted: for tests and benchmarks of the column paths. What columns
 * cannot hold is derived as recordAt derives it (reporter from the point, ports of ICMP).
 */
export function enrichedFromRecords(node: string, records: readonly FlowRecord[]): EnrichedColumns {
  const columns = columnsFromRecords(records);
  const n = records.length;
  const b: EnrichedColumns = {
    node, columns, rows: Uint32Array.from({ length: n }, (_, i) => i),
    sources: records.map((r) => r.source), destinations: records.map((r) => r.destination),
    sourceIps: records.map((r) => r.ip?.source ?? ""), destinationIps: records.map((r) => r.ip?.destination ?? ""),
    sourceHashes: Uint32Array.from(records, (r) => addressHash(r.ip?.source ?? "")),
    destinationHashes: Uint32Array.from(records, (r) => addressHash(r.ip?.destination ?? "")),
    sourceHints: Uint32Array.from(records, (r) => addressHash(r.ip?.source ?? "")),
    destinationHints: Uint32Array.from(records, (r) => addressHash(r.ip?.destination ?? "")),
    attributions: records.map((r) => r.attribution),
    startSeconds: new Float64Array(n), startNanos: new Uint32Array(n), endSeconds: new Float64Array(n), endNanos: new Uint32Array(n),
  };
  splitNanoseconds(columns.startNs, 0, b.startSeconds, b.startNanos);
  splitNanoseconds(columns.endNs, 0, b.endSeconds, b.endNanos);
  return b;
}
