// An agent's columnar batch (flowcolumns/columns.ts) after ingest: its rows as the agent
// sent them, plus what the control plane added per row (both ends named, the policy
// attribution, the address text, clock-corrected times), so that the history ring and
// the flow map take the batch column by column (FlowHistory.appendColumns,
// FlowMapStore.addColumns) and nobody builds a FlowRecord per row. `recordOfRow` builds
// one for the readers that ask for records (follow streams, the durable stores).
//
// Per-row arrays are indexed by the row in `columns`, not by the position in `rows`:
// refused rows keep their (unused) slot.
import {
  IpVersion, ObservationPoint, ReporterSide, type Endpoint, type FlowRecord, type PolicyAttribution,
} from "../../proto/gen/bulkhead/v1/flow.js";
import { columnsFromRecords, recordAt, type FlowColumns } from "../../flowcolumns/columns.js";

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

/** The FlowRecord of row `i` (admitted), as the record path would have stored it. */
export function recordOfRow(b: EnrichedColumns, i: number): FlowRecord {
  const r = recordAt(b.columns, i, b.node);
  r.startTime = { seconds: BigInt(b.startSeconds[i]!), nanos: b.startNanos[i]! };
  r.endTime = { seconds: BigInt(b.endSeconds[i]!), nanos: b.endNanos[i]! };
  r.ip = { source: b.sourceIps[i]!, destination: b.destinationIps[i]!, version: r.ip?.version ?? IpVersion.IP_VERSION_UNSPECIFIED };
  r.source = b.sources[i];
  r.destination = b.destinations[i];
  r.attribution = b.attributions[i];
  return r;
}

/** Every admitted row as a FlowRecord: for readers that take records (durable stores). */
export function recordsOf(b: EnrichedColumns): FlowRecord[] {
  const out = new Array<FlowRecord>(b.rows.length);
  for (let k = 0; k < b.rows.length; k++) out[k] = recordOfRow(b, b.rows[k]!);
  return out;
}

/** Row `i`'s reporter side, as recordAt names it. */
export function reporterOf(point: number): ReporterSide {
  return point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION;
}

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
    attributions: records.map((r) => r.attribution),
    startSeconds: new Float64Array(n), startNanos: new Uint32Array(n), endSeconds: new Float64Array(n), endNanos: new Uint32Array(n),
  };
  splitNanoseconds(columns.startNs, 0, b.startSeconds, b.startNanos);
  splitNanoseconds(columns.endNs, 0, b.endSeconds, b.endNanos);
  return b;
}
