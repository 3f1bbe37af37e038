// The embedded durable flow store: one DuckDB file under --data-dir (issue 12).
//
// Layout. Flow rows live in one table per UTC day of their end time (`flows_20261202`),
// so retention drops whole tables (cheap, and the space is reused) and a time range reads
// only its days. Rows are numbers only: strings that repeat (node, interface, addresses,
// protocol names), Endpoints and policy attributions are dictionary ids into `strings`,
// `endpoints` and `attributions`; the dictionaries are small, kept in memory whole and
// written in the same transaction as the first row that uses an entry. Numbers go in
// through DataChunks (the per-value appender is ~10x slower and grows memory to GBs).
// Schema 2 packs a row into 17 columns (28 in schema 1; the engine's append costs per
// column): times as integer ns since the epoch (exact bounds in SQL), both ports in one
// UINTEGER, protocol, TCP flags and ICMP type/code in another, verdict, reason, point,
// reporter, IP version and the presence bits in a third (`PACK` below). A schema 1 file
// is rewritten into it when opened (`migrateV1`), in one transaction.
//
// Closed days in `cluster` order (schema 3). Rows arrive in time order, so a day's row
// groups each hold every verdict and namespace, and a query for one of them read the whole
// day. Each row also carries `cluster` (its verdict, then the smaller and the larger
// namespace id of its ends), and a day that has ended is rewritten once in that order
// (`compactClosedDays`, in the upkeep beside retention): the engine's min/max zone maps then
// skip every row group outside a query's `cluster` range (duckdb-filter.ts). The open day
// stays in time order, as appended. A schema 2 file gains the column when opened (`migrateV2`).
//
// Exactly once. Each append names its batches (agent instance, batch id); `instances`
// holds every instance's highest stored id, updated in the same transaction as the rows,
// so after a kill -9 the file says which batches are in. A batch at or below that id is
// a re-send: resolved as a duplicate, not stored. A batch that does not follow it (its
// predecessor failed) is refused, so a failed batch never leaves a gap that a later
// success would hide from the dedup rule.
//
// Group commit: appends share one transaction (one WAL sync) until GROUP_ROWS rows are
// waiting or `commitDelayMs` has passed since the first; transactions run one at a time
// in arrival order, so each agent's order holds. The file is attached with row groups of
// GROUP_ROWS: a transaction of at least one row group is written straight into the file
// (DuckDB's optimistic write, ~500k rows/s on one core) instead of through the WAL and a
// later checkpoint (~130k rows/s), so under load the queue that builds up during one
// commit becomes the next, large and fast, one.
//
// Threads: DuckDB is given the CPUs this process may run on (its affinity), not the
// machine's, which it would take: on one allowed core a second worker only contends.
//
// Versions: `bulkhead_schema` records the schema version. A file without it is refused
// as foreign (never reset); a version above SCHEMA_VERSION is refused naming both; an
// older one is migrated.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import duckdb from "@duckdb/node-bindings";
import {
  BIGINT, type DuckDBConnection, DuckDBDataChunk, DuckDBInstance, INTEGER, UBIGINT, UINTEGER, type DuckDBType, type DuckDBAppender,
} from "@duckdb/node-api";
import type { Endpoint, FlowRecord, PolicyAttribution } from "../../proto/gen/bulkhead/v1/flow.js";
import {
  PROTOCOL_NAME_OF, newRowNumbers, readRowNumbers, tcpFlagsByte, tcpFlagsFromByte, type RowNumbers,
} from "../../flowcolumns/columns.js";
import { batchRows, type FlowStore, type StoreOptions, type StoreQuery, type StoreStatus, type StoredBatch } from "./durable.js";
import type { EnrichedColumns } from "./enriched-columns.js";
import { NAMESPACE_MANY, clusterOf, whereClause, type SqlCondition, type SqlParam } from "./duckdb-filter.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";

export const SCHEMA_VERSION = 3;
const DAY_S = 86_400;
/** A day is put in `cluster` order once it ended this long ago (records come late by less, mostly). */
const COMPACT_AFTER_S = 600;
/** Rows per DataChunk: DuckDB's vector size. */
const CHUNK_ROWS = 2048;
/** Rows per page of a `last N` query's first pass (the engine's top-N holds one page). */
const NEWEST_PAGE_ROWS = 65_536;
/** Rows per row group, and the rows that start a commit without waiting (see above). */
const GROUP_ROWS = 16_384;
/** DataChunks kept for reuse: 64 × 2,048 rows, ~10 MiB. */
const CHUNK_POOL = 64;
/**
 * DuckDBStoreOptions.blockPoolBytes' default, 1 GiB. Without it ~30 % of a day's rewrite was
 * the kernel faulting in and zeroing pages DuckDB had just given back (bench/README.md
 * history-store: at 50M records, upkeep 74 → 60 s of CPU, ingest and upkeep together 283k →
 * 329k records per CPU second; 2 GiB measured no better).
 */
export const BLOCK_POOL_BYTES = 1 << 30;
/**
 * Open stores of this process that hold a block pool: at most one. With a pool, DuckDB maps
 * 80 % of the machine's (or the cgroup's) memory when the store opens; the kernel merges
 * adjacent mappings, and a process holding three of them cannot fork (spawn fails with
 * ENOMEM: the merged mapping exceeds the machine's memory, `vm.overcommit_memory` 0).
 */
let pooledStores = 0;

/** The columns of schema 2 (what `migrateV1` writes and `migrateV2` reads). */
const FLOW_COLUMNS_V2: readonly [string, DuckDBType][] = [
  ["end_time", BIGINT], ["start_time", BIGINT],
  ["node", INTEGER], ["iface", INTEGER], ["ifindex", UINTEGER], ["ip_src", INTEGER], ["ip_dst", INTEGER], ["proto_name", INTEGER],
  ["ports", UINTEGER], ["l4", UINTEGER], ["marks", UINTEGER],
  ["packets", UBIGINT], ["bytes", UBIGINT], ["sequence", UBIGINT],
  ["src_ep", INTEGER], ["dst_ep", INTEGER], ["attribution", INTEGER],
];
/** Schema 3 adds `cluster` (verdict and the ends' namespaces, `clusterOf`): a closed day's sort key. */
const FLOW_COLUMNS: readonly [string, DuckDBType][] = [...FLOW_COLUMNS_V2, ["cluster", UINTEGER]];
const columnsDdl = (columns: readonly [string, DuckDBType][]) => columns.map(([n, t]) => `${n} ${t.toString()} NOT NULL`).join(", ");
const C = Object.fromEntries(FLOW_COLUMNS.map(([name], i) => [name, i])) as Record<string, number>;
const COLUMN_LIST = FLOW_COLUMNS.map(([name]) => name).join(", ");
const TYPES = FLOW_COLUMNS.map(([, type]) => type);

// Presence bits: optional messages of a FlowRecord (0 ids stand for "none" elsewhere).
const HAS_START = 1, HAS_END = 2, HAS_IP = 4, HAS_L4 = 8, HAS_TCP_FLAGS = 16;

/**
 * The packed columns of schema 2, field by field: [column, lowest bit, bits]. `ports`:
 * source port << 16 | destination port; `l4`: protocol, TCP flags, ICMP type, ICMP code,
 * 8 bits each; `marks`: verdict, reason, point, reporter, IP version, presence bits.
 * A value wider than its field is refused by name, never cut.
 */
const PACK = {
  sport: ["ports", 16, 16], dport: ["ports", 0, 16],
  proto: ["l4", 0, 8], tcp_flags: ["l4", 8, 8], icmp_type: ["l4", 16, 8], icmp_code: ["l4", 24, 8],
  verdict: ["marks", 0, 8], reason: ["marks", 8, 8], point: ["marks", 16, 4], reporter: ["marks", 20, 2],
  ip_version: ["marks", 22, 2], present: ["marks", 24, 5],
} as const satisfies Record<string, readonly [string, number, number]>;
type PackedField = keyof typeof PACK;

/** SQL reading one packed field (for filters and the migration's checks). */
export function packedSql(field: PackedField): string {
  const [column, shift, bits] = PACK[field];
  return `((${column} >> ${shift}) & ${2 ** bits - 1})`;
}

/** One packed field, with its multiplier (2^shift) and limit (2^bits) computed once. */
interface FieldSpec { readonly name: PackedField; readonly bits: number; readonly mul: number; readonly limit: number }

/**
 * Every packed field's spec. pack and unpack run per row and take the spec, not the
 * name: looked up by name inside them (one lookup site for twelve names), filling a row
 * cost twice the JavaScript time (bench/README.md history-store).
 */
const F = Object.fromEntries(Object.entries(PACK).map(([name, [, shift, bits]]) =>
  [name, { name, bits, mul: 2 ** shift, limit: 2 ** bits }])) as { readonly [K in PackedField]: FieldSpec };

function packRefused(f: FieldSpec, x: number): Error {
  return new Error(`${f.name} ${x} does not fit the store's ${f.bits}-bit field (0–${f.limit - 1})`);
}

/** `x` placed in its packed field; refuses (naming the field) a value that does not fit. */
function pack(f: FieldSpec, x: number): number {
  if (!(x >= 0 && x < f.limit && Number.isInteger(x))) throw packRefused(f, x);
  return x * f.mul;
}

/** Field `f` of a packed column's value. */
function unpack(f: FieldSpec, v: number): number {
  return Math.floor(v / f.mul) % f.limit;
}

/**
 * The packed columns (`ports`, `l4`, `marks`) of the row being written, from its numbers
 * (RowNumbers: what the record holds) and the presence bits of its optional messages; the
 * TCP flags' bit follows `tcpFlags` (-1: none). Both ways in (records, batch columns)
 * pack here. A value wider than its field is refused by name, never cut.
 */
function putPacked(w: ChunkWriter, n: RowNumbers, present: number): void {
  const v = w.columns, j = w.rows;
  const tcp = n.tcpFlags >= 0;
  (v[C.ports!] as Uint32Array)[j] = pack(F.sport, n.sourcePort) + pack(F.dport, n.destinationPort);
  (v[C.l4!] as Uint32Array)[j] = pack(F.proto, n.protocol) + pack(F.tcp_flags, tcp ? n.tcpFlags : 0)
    + pack(F.icmp_type, n.icmpType) + pack(F.icmp_code, n.icmpCode);
  (v[C.marks!] as Uint32Array)[j] = pack(F.verdict, n.verdict) + pack(F.reason, n.verdictReason) + pack(F.point, n.point)
    + pack(F.reporter, n.reporter) + pack(F.ip_version, n.ipVersion) + pack(F.present, present | (tcp ? HAS_TCP_FLAGS : 0));
}

/** A batch's rows always have times, addresses and L4 (EnrichedRow); only TCP flags may be absent. */
const BATCH_ROW_PRESENT = HAS_START | HAS_END | HAS_IP | HAS_L4;

const NS_PER_S = 1_000_000_000n;
const TWO_32 = 4_294_967_296;

/** Nanoseconds since the epoch of a Timestamp, as the store's time columns hold them. */
export function nsOfTimestamp(t: Timestamp): bigint {
  return t.seconds * NS_PER_S + BigInt(t.nanos);
}

/** A record's time as the store's ns; refuses (naming the column) one it cannot hold. */
function nsOfRecordTime(t: Timestamp, column: string): bigint {
  // nanos checked before BigInt(nanos), which would throw on a fraction without naming the column.
  const ns = t.nanos >= 0 && t.nanos < 1e9 && Number.isInteger(t.nanos) ? nsOfTimestamp(t) : -1n;
  if (ns < 0n || ns >= 1n << 63n) {
    throw new Error(`${column} ${t.seconds} s ${t.nanos} ns is outside the store's range (1970 to 2262, nanos below 1e9)`);
  }
  return ns;
}

function timestampOfNs(ns: bigint): Timestamp {
  const seconds = ns / NS_PER_S;
  return { seconds, nanos: Number(ns - seconds * NS_PER_S) };
}

/**
 * Writes s·1e9 + n (0 ≤ s < 2^33, 0 ≤ n < 1e9) as the little-endian halves of int64 `j`
 * in `h`, with numbers only (each step exact below 2^53), no BigInt per row.
 */
function putNsHalves(h: Uint32Array, j: number, s: number, n: number): void {
  const sl = s % 65536, sh = (s - sl) / 65536;
  const a = sl * 1e9 + n;
  const b = sh * 1e9;
  const bl = b % 65536, bh = (b - bl) / 65536;
  const c = bl * 65536 + a;
  const cl = c % TWO_32;
  h[2 * j] = cl;
  h[2 * j + 1] = bh + (c - cl) / TWO_32;
}

const SCHEMA_V1 = [
  `CREATE TABLE bulkhead_schema (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp, product VARCHAR NOT NULL)`,
  `CREATE TABLE strings (id INTEGER NOT NULL, s VARCHAR NOT NULL)`,
  `CREATE TABLE endpoints (id INTEGER NOT NULL, ip VARCHAR NOT NULL, namespace VARCHAR NOT NULL, pod_name VARCHAR NOT NULL,
     pod_uid VARCHAR NOT NULL, labels VARCHAR NOT NULL, workload_kind VARCHAR NOT NULL, workload_name VARCHAR NOT NULL,
     node VARCHAR NOT NULL, service VARCHAR NOT NULL, world BOOLEAN NOT NULL)`,
  `CREATE TABLE attributions (id INTEGER NOT NULL, json VARCHAR NOT NULL)`,
  `CREATE TABLE instances (instance VARCHAR PRIMARY KEY, node VARCHAR NOT NULL, last_batch_id UBIGINT NOT NULL, updated_s DOUBLE NOT NULL)`,
  `CREATE TABLE counters (name VARCHAR PRIMARY KEY, value UBIGINT NOT NULL)`,
  `INSERT INTO counters VALUES ('retention_dropped_records', 0), ('retention_dropped_partitions', 0)`,
];
/** Tables schema 3 adds: the namespace dictionary of `cluster`, and the days written in its order with their rows then. */
const SCHEMA_V3_TABLES = [
  `CREATE TABLE namespaces (id INTEGER NOT NULL, s VARCHAR NOT NULL)`,
  `CREATE TABLE compacted (day INTEGER PRIMARY KEY, rows UBIGINT NOT NULL)`,
];

/** A store file that cannot be used as it is; the message names the file and what to do. */
export class StoreFileError extends Error {
  constructor(readonly file: string, message: string) {
    super(`flow store ${file}: ${message}`);
    this.name = "StoreFileError";
  }
}

export interface DuckDBStoreOptions extends StoreOptions {
  /** Appends arriving within this many ms share one transaction. Default 5. */
  commitDelayMs?: number;
  /**
   * DuckDB's worker threads. Default: the CPUs this process may run on
   * (`os.availableParallelism()`, which follows its CPU affinity: taskset, a cpuset), not
   * the machine's, which DuckDB would take: on one allowed core a second worker only
   * contends for it (ingest per CPU second 94–125k with 2 threads vs 136–201k with 1,
   * bench/README.md history-store).
   */
  threads?: number;
  /**
   * Bytes of DuckDB's buffer blocks kept mapped once touched (its `block_allocator_memory`),
   * so blocks freed by one append or day rewrite are reused by the next without the kernel
   * faulting in and zeroing fresh pages; never given back, so they count in the RSS once the
   * store has used them. Default BLOCK_POOL_BYTES; 0: every block from malloc (DuckDB's own
   * default). One store per process holds a pool: a store opened while another holds one
   * gets none (`blockPool` says "0 bytes"), see `pooledStores`.
   */
  blockPoolBytes?: number;
  /** Wall clock (ms) for retention; injectable for tests. */
  now?: () => number;
  /** Rows per page of a `last N` query's first pass; default NEWEST_PAGE_ROWS (tests make it small). */
  newestPageRows?: number;
}

interface PendingAppend {
  batches: readonly StoredBatch[];
  resolve: (stored: boolean[]) => void;
  reject: (err: Error) => void;
}

/** A row's place in a day table's end-time order; rowid breaks ties (stable within a snapshot). */
interface RowKey { end: bigint; rowid: bigint }

/** The key of row `i` of a result chunk that selected `rowid` after the flow columns. */
function keyAt(vectors: readonly ColumnArray[], rowids: BigInt64Array, i: number): RowKey {
  return { end: (vectors[C.end_time!] as BigInt64Array)[i]!, rowid: rowids[i]! };
}

/** SQL for "before `k` in the order", with the key's own numbers (never user input) as literals. */
function keyBefore(k: RowKey): string {
  return `(end_time < ${k.end} OR (end_time = ${k.end} AND rowid < ${k.rowid}))`;
}

/** SQL for "at `k` or after it in the order". */
function keyAtOrAfter(k: RowKey): string {
  return `(end_time > ${k.end} OR (end_time = ${k.end} AND rowid >= ${k.rowid}))`;
}

function dayOf(seconds: number): number {
  return Math.floor(seconds / DAY_S);
}

function tableOf(day: number): string {
  const d = new Date(day * DAY_S * 1000);
  return `flows_${d.getUTCFullYear()}${String(d.getUTCMonth() + 1).padStart(2, "0")}${String(d.getUTCDate()).padStart(2, "0")}`;
}

function dayOfTable(name: string): number | undefined {
  const m = /^flows_([0-9]{4})([0-9]{2})([0-9]{2})$/.exec(name);
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000 / DAY_S : undefined;
}

function endpointKey(e: Endpoint): string {
  const labels = Object.keys(e.labels).sort().map((k) => [k, e.labels[k]]);
  return JSON.stringify([e.ip, e.namespace, e.podName, e.podUid, e.workloadKind, e.workloadName, e.node, e.service, e.world, labels]);
}

function attributionJson(a: PolicyAttribution): string {
  return JSON.stringify({ ...a, policyVersion: a.policyVersion.toString() });
}

function attributionOf(json: string): PolicyAttribution {
  const raw = JSON.parse(json) as Omit<PolicyAttribution, "policyVersion"> & { policyVersion: string };
  // Rows written before the tier fields existed have none.
  const old = raw as Partial<Omit<PolicyAttribution, "policyVersion">>;
  return {
    ...raw, policyVersion: BigInt(raw.policyVersion),
    egressDecidedBy: old.egressDecidedBy ?? "", ingressDecidedBy: old.ingressDecidedBy ?? "",
    egressTierRules: old.egressTierRules ?? [], ingressTierRules: old.ingressTierRules ?? [],
  };
}

/** One dictionary: value ↔ id, with the entries not yet committed. */
class Dictionary<T> {
  private readonly ids = new Map<string, number>();
  private readonly byObject = new WeakMap<object, number>();
  readonly values: (T | undefined)[] = [undefined]; // id 0: none
  unsaved: number[] = [];

  constructor(private readonly keyOf: (value: T) => string) {}

  /** Loads a committed entry. */
  load(id: number, value: T): void {
    this.values[id] = value;
    this.ids.set(this.keyOf(value), id);
  }

  /** The id of a value, undefined when it has none (gives none, unlike `idOf`). */
  idIfKnown(value: T): number | undefined {
    return this.ids.get(this.keyOf(value));
  }

  /** Ids of the entries for which `match` holds (every entry is in memory). */
  idsWhere(match: (value: T) => boolean): number[] {
    const ids: number[] = [];
    for (let id = 1; id < this.values.length; id++) {
      const v = this.values[id];
      if (v !== undefined && match(v)) ids.push(id);
    }
    return ids;
  }

  idOf(value: T | undefined): number {
    if (value === undefined) return 0;
    const isObject = typeof value === "object" && value !== null;
    if (isObject) {
      const known = this.byObject.get(value);
      if (known !== undefined) return known;
    }
    const key = this.keyOf(value);
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(value);
      this.ids.set(key, id);
      this.unsaved.push(id);
    }
    if (isObject) this.byObject.set(value, id);
    return id;
  }
}

/** A column's values, typed as its DuckDB type stores them (NOT NULL, so no validity). */
type ColumnArray = BigInt64Array | Uint32Array | Int32Array | BigUint64Array;

function arrayOf(type: DuckDBType, rows: number): ColumnArray {
  switch (type.typeId) {
    case BIGINT.typeId: return new BigInt64Array(rows);
    case UINTEGER.typeId: return new Uint32Array(rows);
    case INTEGER.typeId: return new Int32Array(rows);
    case UBIGINT.typeId: return new BigUint64Array(rows);
    default: throw new Error(`flow column type ${type.toString()} has no typed array`);
  }
}

/** A view of a result vector's `rows` values (valid until the chunk is released). */
function viewOf(chunk: DuckDBDataChunk, column: number, rows: number): ColumnArray {
  const data = duckdb.vector_get_data(duckdb.data_chunk_get_vector(chunk.chunk, column), rows * BYTES[column]!);
  switch (TYPES[column]!.typeId) {
    case BIGINT.typeId: return new BigInt64Array(data.buffer, data.byteOffset, rows);
    case UINTEGER.typeId: return new Uint32Array(data.buffer, data.byteOffset, rows);
    case INTEGER.typeId: return new Int32Array(data.buffer, data.byteOffset, rows);
    default: return new BigUint64Array(data.buffer, data.byteOffset, rows);
  }
}

/** Puts a record's value in its column, refusing (naming the column) what the column's type cannot hold. */
function putU32(a: Uint32Array, i: number, x: number, column: string): void {
  a[i] = x;
  if (a[i] !== x) throw new Error(`${column} ${x} out of uint32 range`);
}
function putI32(a: Int32Array, i: number, x: number, column: string): void {
  a[i] = x;
  if (a[i] !== x) throw new Error(`${column} ${x} out of int32 range`);
}
function putU64(a: BigUint64Array, i: number, x: bigint, column: string): void {
  a[i] = x;
  if (a[i] !== x) throw new Error(`${column} ${x} out of uint64 range`);
}

const BYTES = TYPES.map((t) => arrayOf(t, 0).BYTES_PER_ELEMENT);
const LOGICAL_TYPES = TYPES.map((t) => t.toLogicalType().logical_type);

/**
 * DataChunks being filled for one day table: rows go into one typed array per column,
 * copied into the chunk's vectors in one call per column when it is sealed (a setItem per
 * value through the vector classes cost about as much as DuckDB's own append).
 */
class ChunkWriter {
  rows = 0;
  /** Rows written, in every chunk. */
  total = 0;
  readonly columns: ColumnArray[] = TYPES.map((t) => arrayOf(t, CHUNK_ROWS));
  /** The 64-bit columns as 32-bit halves (little-endian), to write them with numbers. */
  readonly halves: Uint32Array[] = this.columns.map((a) => new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4));
  readonly full: DuckDBDataChunk[] = [];

  endRow(): void {
    this.total++;
    if (++this.rows === CHUNK_ROWS) this.seal();
  }

  /** The chunks to append, the last one cut to its rows. */
  finish(): DuckDBDataChunk[] {
    if (this.rows > 0) this.seal();
    return this.full;
  }

  constructor(private readonly pool: DuckDBDataChunk[]) {}

  private seal(): void {
    // A chunk used before (the appender copied its rows): a new one's memory costs page
    // faults on first write, ~0.4 s of CPU per 1M rows.
    const chunk = this.pool.pop() ?? new DuckDBDataChunk(duckdb.create_data_chunk(LOGICAL_TYPES));
    for (let c = 0; c < this.columns.length; c++) {
      const a = this.columns[c]!;
      duckdb.copy_data_to_vector(duckdb.data_chunk_get_vector(chunk.chunk, c), 0, a.buffer as ArrayBuffer, a.byteOffset, this.rows * a.BYTES_PER_ELEMENT);
    }
    chunk.rowCount = this.rows;
    this.full.push(chunk);
    this.rows = 0;
  }
}

export class DuckDBFlowStore implements FlowStore {
  readonly streamsLast = true;
  private readonly strings = new Dictionary<string>((s) => s);
  private readonly endpoints = new Dictionary<Endpoint>(endpointKey);
  private readonly attributions = new Dictionary<PolicyAttribution>(attributionJson);
  private readonly namespaces = new Dictionary<string>((s) => s);
  /** Namespace id (`cluster`'s) by endpoint id, filled as endpoints are written (`namespaceOf`). */
  private readonly endpointNamespaces: number[] = [0];
  /** Days rewritten in `cluster` order, with their rows then. */
  private readonly compacted = new Map<number, bigint>();
  /** Write transactions (appends, retention, compaction) run one at a time, in order. */
  private exclusive: Promise<unknown> = Promise.resolve();
  /** Highest stored batch id per instance (loaded on first use). */
  private readonly committed = new Map<string, bigint | undefined>();
  /** Rows per day table. */
  private readonly days = new Map<number, bigint>();
  private queue: PendingAppend[] = [];
  /** DataChunks whose rows were appended, to fill again (ChunkWriter). */
  private readonly chunkPool: DuckDBDataChunk[] = [];
  private queuedRows = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private lastError = "";
  private droppedRecords = 0n;
  private droppedPartitions = 0n;
  private bytesOnDisk = 0n;
  private measuredAtMs = 0;
  private closed = false;
  /** A row's numbers, reused row after row: of a record (`row`), of a batch's row (`rowsOfColumns`). */
  private readonly recordNumbers = newRowNumbers();
  private readonly batchNumbers = newRowNumbers();
  /** DuckDB's worker threads, as the engine reports them (DuckDBStoreOptions.threads). */
  threads = 0;
  /** DuckDB's block pool, as the engine reports it (DuckDBStoreOptions.blockPoolBytes), e.g. "256.0 MiB". */
  blockPool = "";

  private constructor(
    readonly file: string,
    private readonly instance: DuckDBInstance,
    private readonly writer: DuckDBConnection,
    private readonly reader: DuckDBConnection,
    private readonly options: DuckDBStoreOptions,
    /** Holds this process's block pool (`pooledStores`). */
    private readonly pooled: boolean,
  ) {}

  /** Opens (or creates) `DIR/flows.duckdb`; refuses foreign, damaged and newer files. */
  static async open(dataDir: string, options: DuckDBStoreOptions = {}): Promise<DuckDBFlowStore> {
    fs.mkdirSync(dataDir, { recursive: true });
    const file = path.join(path.resolve(dataDir), "flows.duckdb");
    const threads = options.threads ?? os.availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`flow store ${file}: threads ${threads} is not a whole number of threads ≥ 1`);
    const asked = options.blockPoolBytes ?? BLOCK_POOL_BYTES;
    if (!Number.isSafeInteger(asked) || asked < 0) throw new Error(`flow store ${file}: block pool ${asked} is not a whole number of bytes ≥ 0`);
    // Taken before the first await, so that a store opened meanwhile gets none; given back if the open fails.
    const pooled = asked > 0 && pooledStores === 0;
    if (pooled) pooledStores++;
    try {
      return await DuckDBFlowStore.openFile(file, threads, pooled ? asked : 0, options);
    } catch (err) {
      if (pooled) pooledStores--;
      throw err;
    }
  }

  /** open(), given the file, the worker threads and the block pool (bytes; 0: none). */
  private static async openFile(file: string, threads: number, blockPool: number, options: DuckDBStoreOptions): Promise<DuckDBFlowStore> {
    // The file is attached (not the instance's own database) to set its row group size.
    const instance = await DuckDBInstance.create(":memory:", { threads: String(threads), block_allocator_memory: `${blockPool}B` });
    const writer = await instance.connect();
    try {
      await writer.run(`ATTACH ${sqlString(file)} AS store (ROW_GROUP_SIZE ${GROUP_ROWS})`);
    } catch (err) {
      writer.closeSync();
      instance.closeSync();
      throw new StoreFileError(file, `cannot be opened as a DuckDB database (${(err as Error).message.split("\n")[0]}); `
        + "it is damaged or not a bulkhead store. It is never reset automatically: move it aside to start an empty store, or choose another --data-dir");
    }
    await writer.run("USE store");
    const reader = await instance.connect();
    await reader.run("USE store");
    const store = new DuckDBFlowStore(file, instance, writer, reader, options, blockPool > 0);
    try {
      store.threads = Number((await store.rows("SELECT current_setting('threads') AS t"))[0]?.t);
      store.blockPool = String((await store.rows("SELECT current_setting('block_allocator_memory') AS b"))[0]?.b);
      await store.migrate();
      await store.load();
    } catch (err) {
      writer.closeSync();
      reader.closeSync();
      instance.closeSync();
      throw err;
    }
    return store;
  }

  private async rows(sql: string, params: (string | number | bigint)[] = []): Promise<Record<string, unknown>[]> {
    const result = await this.reader.runAndReadAll(sql, params);
    return result.getRowObjects() as Record<string, unknown>[];
  }

  private async migrate(): Promise<void> {
    const tables = (await this.rows("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'store' AND table_schema = 'main'"))
      .map((r) => String(r.table_name));
    if (tables.length === 0) {
      await this.writer.run("BEGIN");
      for (const sql of [...SCHEMA_V1, ...SCHEMA_V3_TABLES]) await this.writer.run(sql);
      await this.writer.run("INSERT INTO bulkhead_schema (version, product) VALUES (?, 'bulkhead flow store')", [SCHEMA_VERSION]);
      await this.writer.run("COMMIT");
      return;
    }
    if (!tables.includes("bulkhead_schema")) {
      throw new StoreFileError(this.file, `is a DuckDB database of something else (tables ${tables.slice(0, 5).join(", ")}${tables.length > 5 ? ", …" : ""}; `
        + "no bulkhead_schema): not a bulkhead flow store. It is never reset automatically: choose another --data-dir");
    }
    const version = Number((await this.rows("SELECT max(version) AS v FROM bulkhead_schema"))[0]?.v ?? 0);
    if (version > SCHEMA_VERSION) {
      throw new StoreFileError(this.file, `schema version ${version} was written by a newer bulkhead; this one reads up to version ${SCHEMA_VERSION}. `
        + "Run the newer bulkhead, or choose another --data-dir");
    }
    if (version < 1) throw new StoreFileError(this.file, `schema version ${version} is not a bulkhead store schema`);
    const days = tables.filter((t) => dayOfTable(t) !== undefined);
    if (version === 1) await this.migrateV1(days);
    if (version <= 2) await this.migrateV2(days);
  }

  /**
   * Schema 2 → 3, in one transaction (a crash leaves the file at version 2, whole): the
   * namespace dictionary is filled from the endpoints', and each day table is rewritten
   * in its order with `cluster` added (`clusterOf`, the same value in SQL). Its closed days
   * are put in `cluster` order afterwards, by `compactClosedDays`, like any other.
   */
  private async migrateV2(days: readonly string[]): Promise<void> {
    const w = this.writer;
    const v2 = FLOW_COLUMNS_V2.map(([n]) => `f.${n}`).join(", ");
    const ns = (end: string) => `coalesce(${end}.ns, 0)`;
    await w.run("BEGIN");
    try {
      for (const sql of SCHEMA_V3_TABLES) await w.run(sql);
      await w.run(`INSERT INTO namespaces SELECT row_number() OVER (ORDER BY namespace), namespace
        FROM (SELECT DISTINCT namespace FROM endpoints WHERE namespace <> '')`);
      const endpointNamespaces = `(SELECT e.id, least(n.id, ${NAMESPACE_MANY}) AS ns FROM endpoints e JOIN namespaces n ON n.s = e.namespace)`;
      for (const t of days) {
        await this.rewriteTable(t, FLOW_COLUMNS, `SELECT ${v2},
          CAST((f.marks & 255) * ${2 ** 24} + least(${ns("s")}, ${ns("d")}) * ${2 ** 12} + greatest(${ns("s")}, ${ns("d")}) AS UINTEGER)
          FROM ${t} f LEFT JOIN ${endpointNamespaces} s ON s.id = f.src_ep LEFT JOIN ${endpointNamespaces} d ON d.id = f.dst_ep
          ORDER BY f.end_time, f.rowid`);
      }
      await w.run("INSERT INTO bulkhead_schema (version, product) VALUES (3, 'bulkhead flow store')");
      await w.run("COMMIT");
    } catch (err) {
      await w.run("ROLLBACK").catch(() => undefined);
      throw new StoreFileError(this.file, `schema 2 could not be migrated to 3, the file is left at 2: ${(err as Error).message.split("\n")[0]}`);
    }
    await w.run("CHECKPOINT");
  }

  /** Replaces day table `t` by the rows of `select` (which reads `t`), inside the caller's transaction. */
  private async rewriteTable(t: string, columns: readonly [string, DuckDBType][], select: string): Promise<void> {
    await this.writer.run(`CREATE TABLE ${t}_new (${columnsDdl(columns)})`);
    await this.writer.run(`INSERT INTO ${t}_new ${select}`);
    await this.writer.run(`DROP TABLE ${t}`);
    await this.writer.run(`ALTER TABLE ${t}_new RENAME TO ${t}`);
  }

  /**
   * Schema 1 → 2, in one transaction (a crash leaves the file at version 1, whole): each
   * day table is rewritten in its order (end time, then rowid, so ties keep their order)
   * with times as ns and the small fields packed. A schema 1 value wider than its packed
   * field stops the migration with an error naming it, and the file stays at version 1.
   */
  private async migrateV1(days: readonly string[]): Promise<void> {
    const w = this.writer;
    const ns = (s: string, n: string) => `CAST(${s} AS BIGINT) * 1000000000 + ${n}`;
    const fit = (field: PackedField, column: string) => {
      const [, shift, bits] = PACK[field];
      return `(CASE WHEN ${column} BETWEEN 0 AND ${2 ** bits - 1} THEN CAST(${column} AS BIGINT) << ${shift}
        ELSE error('a schema 1 row has ${field} ' || ${column} || ', wider than schema 2 keeps (${bits} bits)') END)`;
    };
    const packed = (fields: [PackedField, string][]) => `CAST(${fields.map(([f, c]) => fit(f, c)).join(" | ")} AS UINTEGER)`;
    await w.run("BEGIN");
    try {
      for (const t of days) {
        await this.rewriteTable(t, FLOW_COLUMNS_V2, `SELECT ${ns("end_s", "end_ns")}, ${ns("start_s", "start_ns")}, node, iface, ifindex, ip_src, ip_dst, proto_name,
          ${packed([["sport", "sport"], ["dport", "dport"]])},
          ${packed([["proto", "proto"], ["tcp_flags", "tcp_flags"], ["icmp_type", "icmp_type"], ["icmp_code", "icmp_code"]])},
          ${packed([["verdict", "verdict"], ["reason", "reason"], ["point", "point"], ["reporter", "reporter"], ["ip_version", "ip_version"], ["present", "present"]])},
          packets, bytes, sequence, src_ep, dst_ep, attribution FROM ${t} ORDER BY end_s, end_ns, rowid`);
      }
      await w.run("INSERT INTO bulkhead_schema (version, product) VALUES (2, 'bulkhead flow store')");
      await w.run("COMMIT");
    } catch (err) {
      await w.run("ROLLBACK").catch(() => undefined);
      if (err instanceof StoreFileError) throw err;
      throw new StoreFileError(this.file, `schema 1 could not be migrated to 2, the file is left at 1: ${(err as Error).message.split("\n")[0]}`);
    }
    await w.run("CHECKPOINT");
  }

  private async load(): Promise<void> {
    for (const r of await this.rows("SELECT id, s FROM strings")) this.strings.load(Number(r.id), String(r.s));
    for (const r of await this.rows("SELECT id, s FROM namespaces")) this.namespaces.load(Number(r.id), String(r.s));
    for (const r of await this.rows("SELECT day, rows FROM compacted")) this.compacted.set(Number(r.day), BigInt(r.rows as bigint));
    for (const r of await this.rows("SELECT * FROM endpoints")) {
      this.endpoints.load(Number(r.id), {
        ip: String(r.ip), namespace: String(r.namespace), podName: String(r.pod_name), podUid: String(r.pod_uid),
        labels: JSON.parse(String(r.labels)) as Record<string, string>, workloadKind: String(r.workload_kind),
        workloadName: String(r.workload_name), node: String(r.node), service: String(r.service), world: r.world === true,
      });
    }
    for (const r of await this.rows("SELECT id, json FROM attributions")) this.attributions.load(Number(r.id), attributionOf(String(r.json)));
    for (const r of await this.rows("SELECT name, value FROM counters")) {
      if (r.name === "retention_dropped_records") this.droppedRecords = BigInt(r.value as bigint);
      if (r.name === "retention_dropped_partitions") this.droppedPartitions = BigInt(r.value as bigint);
    }
    const tables = (await this.rows("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'store' AND table_schema = 'main'"))
      .map((r) => String(r.table_name));
    for (const t of tables) {
      const day = dayOfTable(t);
      if (day === undefined) continue;
      const n = (await this.rows(`SELECT count(*) AS n FROM ${t}`))[0]?.n as bigint;
      this.days.set(day, n);
    }
    await this.measure();
  }

  /** Reads the file's used bytes (blocks in use plus WAL) for status and the size retention. */
  private async measure(): Promise<void> {
    this.measuredAtMs = Date.now();
    const r = (await this.rows("SELECT used_blocks * block_size AS used FROM pragma_database_size() WHERE database_name = 'store'"))[0];
    let wal = 0;
    try { wal = fs.statSync(`${this.file}.wal`).size; } catch { /* no WAL: all checkpointed */ }
    this.bytesOnDisk = BigInt((r?.used as bigint | undefined) ?? 0n) + BigInt(wal);
  }

  status(): StoreStatus {
    let records = 0n;
    for (const n of this.days.values()) records += n;
    return {
      kind: "duckdb", location: this.file, records, bytes: this.bytesOnDisk,
      retentionDroppedRecords: this.droppedRecords, retentionDroppedPartitions: this.droppedPartitions, error: this.lastError,
    };
  }

  async lastBatchId(instanceId: string): Promise<bigint | undefined> {
    if (this.committed.has(instanceId)) return this.committed.get(instanceId);
    const r = (await this.rows("SELECT last_batch_id FROM instances WHERE instance = ?", [instanceId]))[0];
    const id = r === undefined ? undefined : BigInt(r.last_batch_id as bigint);
    // A transaction may have stored a batch of it meanwhile; that value is newer.
    if (!this.committed.has(instanceId)) this.committed.set(instanceId, id);
    return this.committed.get(instanceId);
  }

  /**
   * Stores the batches (each all or nothing) and resolves once they are committed: for
   * each batch, true when stored now, false when it was stored before (a re-send).
   */
  append(batches: readonly StoredBatch[]): Promise<boolean[]> {
    if (this.closed) return Promise.reject(new Error(`flow store ${this.file} is closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ batches, resolve, reject });
      for (const b of batches) this.queuedRows += batchRows(b);
      if (this.queuedRows >= GROUP_ROWS) {
        if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
        void this.drain();
      } else {
        this.timer ??= setTimeout(() => { this.timer = undefined; void this.drain(); }, this.options.commitDelayMs ?? 5);
      }
    });
  }

  /** Runs queued appends as transactions, one at a time, until the queue is empty. */
  private async drain(): Promise<void> {
    if (this.writing) return;
    const run = async () => {
      while (this.queue.length > 0) {
        const group = this.queue;
        this.queue = [];
        this.queuedRows = 0;
        await this.serially(() => this.commit(group));
      }
    };
    this.writing = run().finally(() => { this.writing = undefined; });
    await this.writing;
  }

  private async commit(group: PendingAppend[]): Promise<void> {
    // Which batches to store: each instance's must follow its last stored id.
    const next = new Map<string, bigint | undefined>();
    const accepted: { pending: PendingAppend; stored: boolean[] }[] = [];
    const toStore: StoredBatch[] = [];
    for (const pending of group) {
      const stored: boolean[] = [];
      const mine: StoredBatch[] = [];
      const claims = new Map<string, bigint>();
      let refused: string | undefined;
      for (const b of pending.batches) {
        if (!next.has(b.instanceId)) next.set(b.instanceId, await this.lastBatchId(b.instanceId));
        const last = claims.get(b.instanceId) ?? next.get(b.instanceId);
        if (last !== undefined && b.batchId <= last) { stored.push(false); continue; }
        if (last !== undefined && b.batchId !== last + 1n) {
          refused = `batch ${b.batchId} of agent instance ${b.instanceId} does not follow batch ${last}, the last stored (an earlier batch failed); not stored`;
          break;
        }
        claims.set(b.instanceId, b.batchId);
        stored.push(true);
        mine.push(b);
      }
      if (refused !== undefined) {
        pending.reject(new Error(refused));
        continue;
      }
      for (const [instance, id] of claims) next.set(instance, id);
      accepted.push({ pending, stored });
      toStore.push(...mine);
    }
    if (accepted.length === 0) return;
    try {
      if (toStore.length > 0) await this.write(toStore);
      for (const b of toStore) this.committed.set(b.instanceId, b.batchId);
      this.lastError = "";
      // Status shows the size at most a few seconds old (retention measures it itself).
      if (Date.now() - this.measuredAtMs > 5000) await this.measure().catch(() => undefined);
      for (const a of accepted) a.pending.resolve(a.stored);
    } catch (err) {
      this.lastError = `write failed: ${(err as Error).message}`;
      const error = new Error(`flow store ${this.file}: ${this.lastError}`);
      for (const a of accepted) a.pending.reject(error);
    }
  }

  private async write(batches: readonly StoredBatch[]): Promise<void> {
    const writers = new Map<number, ChunkWriter>();
    const writerOf = (day: number) => {
      let w = writers.get(day);
      if (w === undefined) { w = new ChunkWriter(this.chunkPool); writers.set(day, w); }
      return w;
    };
    for (const b of batches) {
      if (b.records === undefined) {
        if (b.columns !== undefined) this.rowsOfColumns(b.columns, writerOf);
        continue;
      }
      for (const r of b.records) {
        const end = r.endTime ?? r.startTime;
        this.row(writerOf(dayOf(end === undefined ? 0 : Number(end.seconds))), r);
      }
    }
    for (const day of writers.keys()) {
      if (!this.days.has(day)) {
        await this.writer.run(`CREATE TABLE IF NOT EXISTS ${tableOf(day)} (${columnsDdl(FLOW_COLUMNS)})`);
        this.days.set(day, 0n);
      }
    }
    const w = this.writer;
    await w.run("BEGIN");
    try {
      await this.writeDictionaries();
      for (const [day, chunks] of writers) {
        const appender = await w.createAppender(tableOf(day));
        for (const chunk of chunks.finish()) appender.appendDataChunk(chunk);
        appender.flushSync();
        appender.closeSync();
      }
      const last = new Map<string, StoredBatch>();
      for (const b of batches) last.set(b.instanceId, b);
      const nowS = (this.options.now ?? Date.now)() / 1000;
      for (const b of last.values()) {
        await w.run(`INSERT INTO instances VALUES (?, ?, ?, ?) ON CONFLICT (instance) DO UPDATE
          SET last_batch_id = excluded.last_batch_id, node = excluded.node, updated_s = excluded.updated_s`,
        [b.instanceId, b.node, b.batchId, nowS]);
      }
      await w.run("COMMIT");
    } catch (err) {
      await w.run("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      for (const chunks of writers.values()) {
        for (const chunk of chunks.full.splice(0)) if (this.chunkPool.length < CHUNK_POOL) this.chunkPool.push(chunk);
      }
    }
    for (const d of [this.strings, this.endpoints, this.attributions, this.namespaces]) d.unsaved = [];
    for (const [day, w] of writers) this.days.set(day, (this.days.get(day) ?? 0n) + BigInt(w.total));
  }

  /**
   * New dictionary entries, through appenders: one INSERT statement per entry cost ~1 ms,
   * and a first batch names ~2,000 new addresses and ends (2 s, half of the CPU of
   * ingesting 1M records).
   */
  private async writeDictionaries(): Promise<void> {
    const append = async (table: string, ids: readonly number[], row: (a: DuckDBAppender, id: number) => void) => {
      if (ids.length === 0) return;
      const appender = await this.writer.createAppender(table);
      for (const id of ids) {
        appender.appendInteger(id);
        row(appender, id);
        appender.endRow();
      }
      appender.flushSync();
      appender.closeSync();
    };
    await append("strings", this.strings.unsaved, (a, id) => a.appendVarchar(this.strings.values[id]!));
    await append("endpoints", this.endpoints.unsaved, (a, id) => {
      const e = this.endpoints.values[id]!;
      const labels: Record<string, string> = {};
      for (const k of Object.keys(e.labels).sort()) labels[k] = e.labels[k]!;
      for (const v of [e.ip, e.namespace, e.podName, e.podUid, JSON.stringify(labels), e.workloadKind, e.workloadName, e.node, e.service]) a.appendVarchar(v);
      a.appendBoolean(e.world);
    });
    await append("namespaces", this.namespaces.unsaved, (a, id) => a.appendVarchar(this.namespaces.values[id]!));
    await append("attributions", this.attributions.unsaved, (a, id) => a.appendVarchar(attributionJson(this.attributions.values[id]!)));
  }

  private row(w: ChunkWriter, r: FlowRecord): void {
    const start = r.startTime ?? r.endTime;
    const end = r.endTime ?? r.startTime;
    const ip = r.ip, l4 = r.l4, flags = l4?.tcpFlags;
    const v = w.columns, i = w.rows;
    (v[C.end_time!] as BigInt64Array)[i] = end === undefined ? 0n : nsOfRecordTime(end, "end_time");
    (v[C.start_time!] as BigInt64Array)[i] = start === undefined ? 0n : nsOfRecordTime(start, "start_time");
    putI32(v[C.node!] as Int32Array, i, this.strings.idOf(r.node), "node");
    putI32(v[C.iface!] as Int32Array, i, this.strings.idOf(r.interface), "iface");
    putU32(v[C.ifindex!] as Uint32Array, i, r.ifindex, "ifindex");
    putI32(v[C.ip_src!] as Int32Array, i, ip === undefined ? 0 : this.strings.idOf(ip.source), "ip_src");
    putI32(v[C.ip_dst!] as Int32Array, i, ip === undefined ? 0 : this.strings.idOf(ip.destination), "ip_dst");
    putI32(v[C.proto_name!] as Int32Array, i, l4 === undefined ? 0 : this.strings.idOf(l4.protocolName), "proto_name");
    const n = this.recordNumbers;
    n.point = r.point; n.reporter = r.reporter; n.ipVersion = ip?.version ?? 0;
    n.protocol = l4?.protocol ?? 0; n.sourcePort = l4?.sourcePort ?? 0; n.destinationPort = l4?.destinationPort ?? 0;
    n.icmpType = l4?.icmpType ?? 0; n.icmpCode = l4?.icmpCode ?? 0; n.tcpFlags = flags === undefined ? -1 : tcpFlagsByte(flags);
    n.verdict = r.verdict; n.verdictReason = r.verdictReason;
    putPacked(w, n, (r.startTime !== undefined ? HAS_START : 0) | (r.endTime !== undefined ? HAS_END : 0)
      | (ip !== undefined ? HAS_IP : 0) | (l4 !== undefined ? HAS_L4 : 0));
    putU64(v[C.packets!] as BigUint64Array, i, r.packets, "packets");
    putU64(v[C.bytes!] as BigUint64Array, i, r.bytes, "bytes");
    putU64(v[C.sequence!] as BigUint64Array, i, r.sequence, "sequence");
    putI32(v[C.src_ep!] as Int32Array, i, this.endpoints.idOf(r.source), "src_ep");
    putI32(v[C.dst_ep!] as Int32Array, i, this.endpoints.idOf(r.destination), "dst_ep");
    putI32(v[C.attribution!] as Int32Array, i, this.attributions.idOf(r.attribution), "attribution");
    (v[C.cluster!] as Uint32Array)[i] = clusterOf(r.verdict, this.namespaceOf((v[C.src_ep!] as Int32Array)[i]!), this.namespaceOf((v[C.dst_ep!] as Int32Array)[i]!));
    w.endRow();
  }

  /**
   * The namespace id `cluster` holds for an endpoint's end (0: none, world or no endpoint).
   * Ids are given as endpoints are written, so every stored endpoint's namespace has one.
   */
  private namespaceOf(endpoint: number): number {
    let ns = this.endpointNamespaces[endpoint];
    if (ns === undefined) {
      const name = this.endpoints.values[endpoint]?.namespace ?? "";
      ns = name === "" ? 0 : Math.min(this.namespaces.idOf(name), NAMESPACE_MANY);
      this.endpointNamespaces[endpoint] = ns;
    }
    return ns;
  }

  /**
   * `namespaceOf` for a query: gives no new id (a query writes nothing). A namespace
   * without one is on no stored row, so any bound is right; the widest is safe.
   */
  private storedNamespaceOf(endpoint: number): number {
    const known = this.endpointNamespaces[endpoint];
    if (known !== undefined) return known;
    const name = this.endpoints.values[endpoint]?.namespace ?? "";
    return name === "" ? 0 : Math.min(this.namespaces.idIfKnown(name) ?? NAMESPACE_MANY, NAMESPACE_MANY);
  }

  /**
   * The admitted rows of an enriched columnar batch, as `row()` stores `recordOfRow` of
   * each: each row's numbers from the shared reader (`readRowNumbers`, the home of the
   * column-to-record rules), packed as `row()` packs them, and the enriched parts as
   * `readRow` reads them. 64-bit values are copied as 32-bit halves and times put
   * together from numbers, so no BigInt is made per row, and a dictionary id is looked up
   * once per distinct value of the batch (interfaces by their index, ends, addresses and
   * attributions by the shared object or string).
   */
  private rowsOfColumns(b: EnrichedColumns, writerOf: (day: number) => ChunkWriter): void {
    const c = b.columns;
    const node = this.strings.idOf(b.node);
    // Ids by protocol number and by interface index (-1: not looked up yet).
    const protoNames = new Int32Array(256).fill(-1);
    const ifaces = new Int32Array(c.interfaceNames.length).fill(-1);
    const strings = new Map<string, number>();
    const stringId = (x: string) => {
      let id = strings.get(x);
      if (id === undefined) { id = this.strings.idOf(x); strings.set(x, id); }
      return id;
    };
    const objects = new Map<object | undefined, number>([[undefined, 0]]);
    const endpointId = (e: Endpoint | undefined) => {
      let id = objects.get(e);
      if (id === undefined) { id = this.endpoints.idOf(e); objects.set(e, id); }
      return id;
    };
    const attributionId = (a: PolicyAttribution | undefined) => {
      let id = objects.get(a);
      if (id === undefined) { id = this.attributions.idOf(a); objects.set(a, id); }
      return id;
    };
    const packets = new Uint32Array(c.packets.buffer, c.packets.byteOffset, c.rows * 2);
    const bytes = new Uint32Array(c.bytes.buffer, c.bytes.byteOffset, c.rows * 2);
    const firstLo = Number(c.firstSequence & 0xffffffffn), firstHi = Number(c.firstSequence >> 32n);
    if (c.firstSequence + BigInt(c.rows) >= 1n << 64n) throw new Error(`sequence ${c.firstSequence + BigInt(c.rows)} out of uint64 range`);
    const n = this.batchNumbers;
    let day = NaN;
    let w: ChunkWriter | undefined;
    for (let k = 0; k < b.rows.length; k++) {
      const i = b.rows[k]!;
      const endS = b.endSeconds[i]!, startS = b.startSeconds[i]!;
      const d = dayOf(endS);
      if (d !== day || w === undefined) { day = d; w = writerOf(d); }
      const v = w.columns, h = w.halves, j = w.rows;
      if (!(endS >= 0 && endS < 2 ** 33 && startS >= 0 && startS < 2 ** 33)) {
        throw new Error(`row ${i}: time ${startS}–${endS} s is outside the store's range (1970 to 2242)`);
      }
      putNsHalves(h[C.end_time!]!, j, endS, b.endNanos[i]!);
      putNsHalves(h[C.start_time!]!, j, startS, b.startNanos[i]!);
      readRowNumbers(c, i, n);
      let protoName = protoNames[n.protocol]!;
      if (protoName < 0) protoName = protoNames[n.protocol] = this.strings.idOf(PROTOCOL_NAME_OF[n.protocol]!);
      const f = n.interfaceIndex;
      let iface = ifaces[f]!;
      if (iface < 0) iface = ifaces[f] = this.strings.idOf(c.interfaceNames[f] ?? "");
      (v[C.node!] as Int32Array)[j] = node;
      (v[C.iface!] as Int32Array)[j] = iface;
      (v[C.ifindex!] as Uint32Array)[j] = n.ifindex;
      (v[C.ip_src!] as Int32Array)[j] = stringId(b.sourceIps[i]!);
      (v[C.ip_dst!] as Int32Array)[j] = stringId(b.destinationIps[i]!);
      (v[C.proto_name!] as Int32Array)[j] = protoName;
      putPacked(w, n, BATCH_ROW_PRESENT);
      const hp = h[C.packets!]!, hb = h[C.bytes!]!, hs = h[C.sequence!]!;
      hp[2 * j] = packets[2 * i]!; hp[2 * j + 1] = packets[2 * i + 1]!;
      hb[2 * j] = bytes[2 * i]!; hb[2 * j + 1] = bytes[2 * i + 1]!;
      const lo = firstLo + i;
      hs[2 * j] = lo % TWO_32; hs[2 * j + 1] = firstHi + (lo >= TWO_32 ? 1 : 0);
      const src = endpointId(b.sources[i]), dst = endpointId(b.destinations[i]);
      (v[C.src_ep!] as Int32Array)[j] = src;
      (v[C.dst_ep!] as Int32Array)[j] = dst;
      (v[C.attribution!] as Int32Array)[j] = attributionId(b.attributions[i]);
      (v[C.cluster!] as Uint32Array)[j] = clusterOf(n.verdict, this.namespaceOf(src), this.namespaceOf(dst));
      w.endRow();
    }
  }

  /** Row `i` of a result chunk's columns (`viewOf` each) as the FlowRecord that was stored. */
  private record(v: readonly ColumnArray[], i: number): FlowRecord {
    const strings = this.strings.values;
    const marks = (v[C.marks!] as Uint32Array)[i]!, l4 = (v[C.l4!] as Uint32Array)[i]!, ports = (v[C.ports!] as Uint32Array)[i]!;
    const present = unpack(F.present, marks);
    const tcp = unpack(F.tcp_flags, l4);
    return {
      startTime: (present & HAS_START) !== 0 ? timestampOfNs((v[C.start_time!] as BigInt64Array)[i]!) : undefined,
      endTime: (present & HAS_END) !== 0 ? timestampOfNs((v[C.end_time!] as BigInt64Array)[i]!) : undefined,
      node: strings[(v[C.node!] as Int32Array)[i]!] ?? "",
      point: unpack(F.point, marks),
      reporter: unpack(F.reporter, marks),
      interface: strings[(v[C.iface!] as Int32Array)[i]!] ?? "",
      ifindex: (v[C.ifindex!] as Uint32Array)[i]!,
      ip: (present & HAS_IP) !== 0
        ? {
          source: strings[(v[C.ip_src!] as Int32Array)[i]!] ?? "", destination: strings[(v[C.ip_dst!] as Int32Array)[i]!] ?? "",
          version: unpack(F.ip_version, marks),
        }
        : undefined,
      l4: (present & HAS_L4) !== 0
        ? {
          protocol: unpack(F.proto, l4), protocolName: strings[(v[C.proto_name!] as Int32Array)[i]!] ?? "",
          sourcePort: unpack(F.sport, ports), destinationPort: unpack(F.dport, ports),
          tcpFlags: (present & HAS_TCP_FLAGS) !== 0 ? tcpFlagsFromByte(tcp) : undefined,
          icmpType: unpack(F.icmp_type, l4), icmpCode: unpack(F.icmp_code, l4),
        }
        : undefined,
      packets: (v[C.packets!] as BigUint64Array)[i]!,
      bytes: (v[C.bytes!] as BigUint64Array)[i]!,
      source: this.endpoints.values[(v[C.src_ep!] as Int32Array)[i]!],
      destination: this.endpoints.values[(v[C.dst_ep!] as Int32Array)[i]!],
      verdict: unpack(F.verdict, marks),
      verdictReason: unpack(F.reason, marks),
      attribution: this.attributions.values[(v[C.attribution!] as Int32Array)[i]!],
      sequence: (v[C.sequence!] as BigUint64Array)[i]!,
    };
  }

  /**
   * The result chunks of one statement, in its order, each as views of its columns
   * (`viewOf`; with `rowids`, the statement selects `rowid` after the flow columns and its
   * view comes too). Views are valid until the next chunk is asked for.
   */
  private async *chunks(sql: string, params: SqlParam[], rowids: boolean, on?: DuckDBConnection):
    AsyncGenerator<{ vectors: ColumnArray[]; rows: number; rowids: BigInt64Array | undefined }> {
    // A connection streams one result at a time: another query on it ends this stream
    // early, silently (the web UI asks for a past map and its flows at once). Each stream
    // reads on a connection of its own, or on the caller's (`on`), who reads one at a time.
    const connection = on ?? await this.instance.connect();
    try {
      if (on === undefined) await connection.run("USE store");
      const result = await connection.stream(sql, params);
      for (;;) {
        const chunk = await result.fetchChunk();
        if (chunk === null || chunk.rowCount === 0) return;
        const rows = chunk.rowCount;
        let ids: BigInt64Array | undefined;
        if (rowids) {
          const data = duckdb.vector_get_data(duckdb.data_chunk_get_vector(chunk.chunk, FLOW_COLUMNS.length), rows * 8);
          ids = new BigInt64Array(data.buffer, data.byteOffset, rows);
        }
        yield { vectors: FLOW_COLUMNS.map((_, c) => viewOf(chunk, c, rows)), rows, rowids: ids };
      }
    } finally {
      if (on === undefined) connection.closeSync();
    }
  }

  /** The matching rows of one statement, in its order, built and tested chunk by chunk. */
  private async *select(sql: string, params: SqlParam[], query: StoreQuery, on?: DuckDBConnection): AsyncGenerator<FlowRecord[]> {
    for await (const { vectors, rows } of this.chunks(sql, params, false, on)) {
      const out: FlowRecord[] = [];
      for (let i = 0; i < rows; i++) {
        const r = this.record(vectors, i);
        if (this.exact(r, query)) out.push(r);
      }
      if (out.length > 0) yield out;
    }
  }

  /**
   * The request's predicate. The time bounds need no test here: the WHERE clause compares
   * them exactly, as ns, with the row's stored start and end (each the other when absent).
   */
  private exact(r: FlowRecord, q: StoreQuery): boolean {
    return q.predicate(r);
  }

  async *query(q: StoreQuery): AsyncGenerator<readonly FlowRecord[]> {
    const where = whereClause(q.allow, {
      ...(q.since !== undefined ? { sinceNs: nsOfTimestamp(q.since) } : {}),
      ...(q.until !== undefined ? { untilNs: nsOfTimestamp(q.until) } : {}),
      ...(q.endNotAfter !== undefined ? { endNotAfterNs: nsOfTimestamp(q.endNotAfter) } : {}),
    }, {
      endpointIds: (match) => this.endpoints.idsWhere(match),
      stringIds: (values) => values.flatMap((v) => this.strings.idsWhere((s) => s === v)),
      namespaceOf: (id) => this.storedNamespaceOf(id),
    }, packedSql);
    // Rows sit in the table of their end day; a record lasts well under a day.
    const days = [...this.days.keys()].sort((a, b) => a - b).filter((d) =>
      (q.since === undefined || d >= dayOf(Number(q.since.seconds)))
      && (q.until === undefined || d <= dayOf(Number(q.until.seconds)) + 1)
      && (q.endNotAfter === undefined || d <= dayOf(Number(q.endNotAfter.seconds))));
    const last = q.last ?? 0;
    if (last === 0) {
      for (const day of days) {
        yield* this.select(`SELECT ${COLUMN_LIST} FROM ${tableOf(day)} WHERE ${where.sql} ORDER BY end_time, rowid`, where.params, q);
      }
      return;
    }
    yield* this.newest(last, days, where, q);
  }

  /**
   * The `last` newest matching rows, oldest first, streamed with memory bounded by a page
   * (never `last` rows at once), from one snapshot: pass 1 (`nthNewest`) finds the key of
   * the `last`-th newest match; pass 2 streams from that key forward, oldest first. Both
   * passes run in one read transaction, so a commit between them cannot shift the answer.
   */
  private async *newest(last: number, days: readonly number[], where: SqlCondition, q: StoreQuery): AsyncGenerator<FlowRecord[]> {
    const connection = await this.instance.connect();
    try {
      await connection.run("USE store");
      await connection.run("BEGIN TRANSACTION");
      const from = await this.nthNewest(last, days, where, q, connection);
      // Pass 2: from the N-th newest match (or, with fewer, from the oldest day) onwards.
      for (const day of days) {
        if (from !== undefined && day < from.day) continue;
        const keyset = from !== undefined && day === from.day ? ` AND ${keyAtOrAfter(from.key)}` : "";
        yield* this.select(`SELECT ${COLUMN_LIST} FROM ${tableOf(day)} WHERE (${where.sql})${keyset} ORDER BY end_time, rowid`,
          where.params, q, connection);
      }
      await connection.run("COMMIT");
    } finally {
      connection.closeSync();
    }
  }

  /**
   * Pass 1 of `newest`: reads newest first, day by day, in keyset pages (a top-N of one
   * page in the engine), testing each row as the answer will and counting the matches; it
   * keeps the count, the key where its page ended, and (once found) the key of the
   * `last`-th match: nothing per row, whatever the number of matches. Undefined: fewer
   * than `last` match.
   */
  private async nthNewest(last: number, days: readonly number[], where: SqlCondition, q: StoreQuery,
    connection: DuckDBConnection): Promise<{ day: number; key: RowKey } | undefined> {
    const cap = this.options.newestPageRows ?? NEWEST_PAGE_ROWS;
    const page = Math.min(Math.max(last * 2, 1024), cap);
    let counted = 0;
    for (const day of [...days].reverse()) {
      let before: RowKey | undefined;
      for (;;) {
        const keyset = before === undefined ? "" : ` AND ${keyBefore(before)}`;
        const sql = `SELECT ${COLUMN_LIST}, rowid FROM ${tableOf(day)} WHERE (${where.sql})${keyset}
          ORDER BY end_time DESC, rowid DESC LIMIT ${page}`;
        let read = 0;
        for await (const { vectors, rows, rowids } of this.chunks(sql, where.params, true, connection)) {
          read += rows;
          for (let i = 0; i < rows; i++) {
            if (!this.exact(this.record(vectors, i), q)) continue;
            if (++counted === last) return { day, key: keyAt(vectors, rowids!, i) };
          }
          before = keyAt(vectors, rowids!, rows - 1);
        }
        if (read < page) break;
      }
    }
    return undefined;
  }

  /**
   * The store's upkeep, run every minute by the control plane: retention, then the
   * rewrite of closed days in `cluster` order (`compactClosedDays`).
   */
  enforceRetention(): Promise<{ records: bigint; partitions: bigint }> {
    return this.serially(async () => {
      const nowS = (this.options.now ?? Date.now)() / 1000;
      const dropped = await this.retain(nowS);
      await this.compactClosedDays(nowS);
      return dropped;
    });
  }

  /** Runs `f` once every write transaction queued before it (appends, upkeep) has ended. */
  private serially<T>(f: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(f);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  /**
   * Rewrites each closed day (ended COMPACT_AFTER_S ago by the clock) in `cluster` order,
   * once, and again when rows that came late reach a tenth of it. Then a query for a
   * verdict (and a namespace) reads only the row groups whose min/max `cluster` can hold
   * its rows (duckdb-filter.ts `clusterRange`) instead of the whole day. Late rows are
   * appended after the ordered ones: found all the same, only read by every such query.
   */
  private async compactClosedDays(nowS: number): Promise<void> {
    let rewritten = false;
    for (const day of [...this.days.keys()].sort((a, b) => a - b)) {
      const rows = this.days.get(day) ?? 0n, done = this.compacted.get(day);
      if ((day + 1) * DAY_S + COMPACT_AFTER_S > nowS || rows === 0n) continue;
      if (done !== undefined && rows * 10n < done * 11n) continue;
      await this.compactDay(day, rows);
      rewritten = true;
    }
    // The old tables' blocks are free for reuse only after a checkpoint.
    if (rewritten) {
      await this.writer.run("CHECKPOINT");
      await this.measure();
    }
  }

  /**
   * One day's table rewritten in `cluster` order, in one transaction (a crash leaves the old
   * one whole). Ordered by verdict and lo only (what `clusterRange` bounds), then by time:
   * long runs in time order keep the time columns narrow (37.1 against 37.9 bytes a row
   * with hi in the key, on 2M records of bench/history-store).
   */
  private async compactDay(day: number, rows: bigint): Promise<void> {
    const w = this.writer, t = tableOf(day);
    await w.run("BEGIN");
    try {
      await this.rewriteTable(t, FLOW_COLUMNS, `SELECT ${COLUMN_LIST} FROM ${t} ORDER BY cluster >> 12, end_time, rowid`);
      await w.run("INSERT OR REPLACE INTO compacted VALUES (?, ?)", [day, rows]);
      await w.run("COMMIT");
    } catch (err) {
      await w.run("ROLLBACK").catch(() => undefined);
      throw err;
    }
    this.compacted.set(day, rows);
  }

  private async retain(nowS: number): Promise<{ records: bigint; partitions: bigint }> {
    let records = 0n, partitions = 0n;
    const drop = async (day: number) => {
      const n = this.days.get(day) ?? 0n;
      await this.writer.run(`DROP TABLE IF EXISTS ${tableOf(day)}`);
      await this.writer.run("DELETE FROM compacted WHERE day = ?", [day]);
      this.days.delete(day);
      this.compacted.delete(day);
      records += n;
      partitions++;
    };
    const { retentionMs, retentionBytes } = this.options;
    if (retentionMs !== undefined) {
      // A day goes once its newest possible record is older than the retention.
      for (const day of [...this.days.keys()].sort((a, b) => a - b)) {
        if ((day + 1) * DAY_S <= nowS - retentionMs / 1000) await drop(day);
      }
    }
    if (partitions > 0) await this.writer.run("CHECKPOINT");
    await this.measure();
    if (retentionBytes !== undefined) {
      // Oldest first while too large; the newest day stays (it is being written).
      while (this.bytesOnDisk > retentionBytes && this.days.size > 1) {
        await drop(Math.min(...this.days.keys()));
        await this.writer.run("CHECKPOINT");
        await this.measure();
      }
    }
    if (partitions > 0) {
      this.droppedRecords += records;
      this.droppedPartitions += partitions;
      await this.writer.run("UPDATE counters SET value = ? WHERE name = 'retention_dropped_records'", [this.droppedRecords]);
      await this.writer.run("UPDATE counters SET value = ? WHERE name = 'retention_dropped_partitions'", [this.droppedPartitions]);
    }
    return { records, partitions };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined; }
    await this.drain();
    await this.exclusive; // an upkeep under way
    this.writer.closeSync();
    this.reader.closeSync();
    this.instance.closeSync();
    if (this.pooled) pooledStores--;
  }
}

/** A string literal for the one statement that cannot take a parameter (ATTACH's path). */
function sqlString(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

