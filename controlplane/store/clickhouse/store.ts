// The ClickHouse FlowStore (durable.ts): history shared by several control-plane replicas.
//
// Exactly once, across replicas and crashes. ClickHouse 18.16's MergeTree has no
// transactions, no insert deduplication (that needs ReplicatedMergeTree and ZooKeeper) and
// splits a large INSERT into several blocks, so an INSERT alone is neither atomic nor
// idempotent. A batch is therefore written in two steps: its rows into `flows`, each row
// carrying (instance, batch id, write id), then one marker row into `batches` naming the
// same write. Only rows of a marked write are ever read: a replica killed between the two
// steps leaves rows nobody reads (retention removes them), and the batch, never
// acknowledged, is sent again. If two replicas write the same batch (a replica dies with
// its INSERT in flight while the agent is already re-sending to another), both writes are
// marked, and every read takes the one with the lowest write id: the batch is read once.
// lastBatchId(instance) = max(batch_id) over the markers, exact at any moment.
//
// Cross-replica live view (`tail`): each marker also carries the writing replica's id and
// a per-replica sequence, and the server's time of the write. A replica polls the markers
// of the other replicas written since its last poll (with an overlap, so a marker that
// became visible late is still seen; seen markers are remembered), reads their rows and
// hands them over, each batch once, never one this replica wrote itself.
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from "@clickhouse/client";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import type { FlowRecord } from "../../../proto/gen/bulkhead/v1/flow.js";
import type { Timestamp } from "../../../proto/gen/google/protobuf/timestamp.js";
import { batchRecords, batchRows, type FlowStore, type StoreOptions, type StoredBatch, type StoreQuery, type StoreStatus } from "../durable.js";
import type { ClickHouseLocation } from "./location.js";
import { requestCondition } from "./pushdown.js";
import { decodeRecord, FLOW_COLUMNS, FlowRowEncoder, Incomplete, RowReader, RowWriter, type RowOrigin } from "./rows.js";
import { migrate, StoreSchemaError } from "./schema.js";
import { sqlString, sqlUInt } from "./sql.js";

export interface ClickHouseStoreOptions extends StoreOptions {
  location: ClickHouseLocation;
  /** Names this replica's writes; default: random per process. */
  replicaId?: string;
  /** How often `tail` polls for other replicas' writes (default 500 ms) and status is refreshed (10×). */
  pollIntervalMs?: number;
}

/** Records handed over by `tail`, a batch at a time, in the order the batches were written. */
export type TailListener = (records: readonly FlowRecord[]) => void;

/** Markers re-read by each tail poll, before the previous poll's server time. */
const TAIL_OVERLAP_S = 30;
/** Records per grouped write (append): bounds its memory and latency. */
const MAX_GROUP_RECORDS = 200_000;
/** Records per chunk handed to a query's reader. */
const CHUNK = 2048;
const COLUMN_LIST = FLOW_COLUMNS.map(([name]) => name).join(", ");

/** Decodes a RowBinary stream of flows rows, a chunk at a time. */
async function* decodeRows(stream: AsyncIterable<Buffer>): AsyncGenerator<{ record: FlowRecord; origin: RowOrigin }[]> {
  let pending: Buffer | undefined;
  for await (const chunk of stream) {
    const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
    const reader = new RowReader(buf);
    const rows: { record: FlowRecord; origin: RowOrigin }[] = [];
    let rowStart = 0;
    pending = undefined;
    try {
      while (reader.at < buf.length) {
        rowStart = reader.at;
        rows.push(decodeRecord(reader));
      }
    } catch (error) {
      if (!(error instanceof Incomplete)) throw error;
      pending = buf.subarray(rowStart);
    }
    if (rows.length > 0) yield rows;
  }
  if (pending !== undefined && pending.length > 0) throw new Error(`the server's answer ended inside a row (${pending.length} bytes left)`);
}

/** Nanoseconds since the epoch of a query bound, exact (the rows' UInt64 ns columns); undefined before the epoch. */
const nsOf = (t: Timestamp): bigint | undefined => {
  const ns = t.seconds * 1_000_000_000n + BigInt(t.nanos);
  return ns < 0n ? undefined : ns;
};

export class ClickHouseFlowStore implements FlowStore {
  readonly replicaId: string;
  private readonly client: ClickHouseClient;
  private readonly db: string;
  private readonly encoder = new FlowRowEncoder();
  private readonly location: string;
  private schema: Promise<void> | undefined;
  private fatal: Error | undefined;
  private seq = 0n;
  /** Batches this replica stored or a tail handed over, while a tail runs: a tail hands each over once. */
  private readonly written = new Map<string, number>();
  private tails = 0;
  private readonly waiting: { batches: readonly StoredBatch[]; resolve: () => void; reject: (error: unknown) => void }[] = [];
  private flushing: Promise<void> | undefined;
  private writeCount = 0;
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private current: StoreStatus;

  constructor(private readonly options: ClickHouseStoreOptions) {
    const { location } = options;
    this.replicaId = options.replicaId ?? randomBytes(6).toString("hex");
    this.db = location.database;
    this.location = location.location;
    this.client = createClient({
      url: location.httpUrl, username: location.username, password: location.password,
      // 18.16 answers uncompressed; the rows compress on the server.
      compression: { request: false, response: false },
      request_timeout: 60_000,
      // Failures surface as this store's errors (with the URL), not as the client's log lines.
      log: { level: ClickHouseLogLevel.OFF },
    });
    this.current = {
      kind: "clickhouse", location: this.location, records: 0n, bytes: 0n,
      retentionDroppedRecords: 0n, retentionDroppedPartitions: 0n, error: "",
    };
  }

  readonly status = (): StoreStatus => ({ ...this.current });

  private fail(what: string, error: unknown): Error {
    const message = `ClickHouse store ${this.location}: ${what}: ${(error as Error).message ?? String(error)}`;
    this.current.error = message;
    return new Error(message, { cause: error });
  }

  private async command(sql: string): Promise<void> {
    await this.client.command({ query: sql });
  }

  private async rows<T>(sql: string): Promise<T[]> {
    const result = await this.client.query({ query: sql, format: "JSONEachRow" });
    return result.json<T>();
  }

  private async insert(sql: string, body: Buffer): Promise<void> {
    const result = await this.client.exec({ query: sql, values: Readable.from([body]) });
    for await (const _ of result.stream) { /* an INSERT answers nothing; drain it so the socket is reused */ }
  }

  /** Creates or migrates the schema once; a failure other than a newer schema is retried on the next call. */
  ready(): Promise<void> {
    if (this.fatal) return Promise.reject(this.fatal);
    this.schema ??= migrate({
      command: (sql) => this.command(sql),
      queryNumber: async (sql) => Number(Object.values((await this.rows<Record<string, unknown>>(sql))[0] ?? {})[0] ?? 0),
    }, this.db, this.location, this.replicaId).then(() => { this.startStatusRefresh(); }, (error: unknown) => {
      this.schema = undefined;
      if (error instanceof StoreSchemaError) {
        this.fatal = error;
        this.current.error = error.message;
        throw error;
      }
      throw this.fail("cannot prepare the schema", error);
    });
    return this.schema;
  }

  async lastBatchId(instanceId: string): Promise<bigint | undefined> {
    await this.ready();
    try {
      const [row] = await this.rows<{ last: string; n: string }>(
        `SELECT toString(max(batch_id)) AS last, toString(count()) AS n FROM ${this.db}.batches WHERE instance_id = ${sqlString(instanceId)}`);
      return row === undefined || row.n === "0" ? undefined : BigInt(row.last);
    } catch (error) {
      throw this.fail(`cannot read the last batch of instance ${instanceId}`, error);
    }
  }

  /**
   * Group commit: every INSERT writes a new part of ~95 columns, so the server's cost is
   * per INSERT far more than per row (bench/README.md, clickhouse-ingest). While one
   * write is in flight, the appends that arrive (other agents' streams) wait and go
   * together in the next, up to MAX_GROUP_RECORDS; each resolves, or rejects, with its group.
   */
  async append(batches: readonly StoredBatch[]): Promise<boolean[]> {
    if (batches.length === 0) return [];
    await new Promise<void>((resolve, reject) => {
      this.waiting.push({ batches, resolve, reject });
      this.flushing ??= this.flush();
    });
    // A re-send is written again and read once (above), so every batch counts as stored
    // now; one the control plane already published may then show twice in its hot window
    // (never in the store's answers) until it is evicted.
    return batches.map(() => true);
  }

  private async flush(): Promise<void> {
    while (this.waiting.length > 0) {
      let records = 0;
      let n = 0;
      while (n < this.waiting.length && (n === 0 || records < MAX_GROUP_RECORDS)) {
        records += this.waiting[n]!.batches.reduce((sum, b) => sum + batchRows(b), 0);
        n++;
      }
      const group = this.waiting.splice(0, n);
      try {
        await this.write(group.flatMap((g) => g.batches));
        for (const g of group) g.resolve();
      } catch (error) {
        for (const g of group) g.reject(error);
      }
    }
    this.flushing = undefined;
  }

  /** INSERTs issued by this store (rows and markers count as one write). */
  get writes(): number { return this.writeCount; }

  private async write(batches: readonly StoredBatch[]): Promise<void> {
    await this.ready();
    this.writeCount++;
    const rows = new RowWriter();
    const markers = new RowWriter();
    for (const batch of batches) {
      const writeId = randomBytes(8).readBigUInt64LE() >> 1n;
      let minStart: bigint | undefined;
      let maxEnd = 0n;
      const records = batchRecords(batch);
      records.forEach((record, row) => {
        this.encoder.record(rows, record, { instanceId: batch.instanceId, batchId: batch.batchId, row, writeId });
        const start = record.startTime ? record.startTime.seconds * 1_000_000_000n + BigInt(record.startTime.nanos) : 0n;
        const end = record.endTime ? record.endTime.seconds * 1_000_000_000n + BigInt(record.endTime.nanos) : 0n;
        if (minStart === undefined || start < minStart) minStart = start;
        if (end > maxEnd) maxEnd = end;
      });
      // (instance_id, batch_id, write_id, node, records, min_start_ns, max_end_ns, replica, replica_seq)
      markers.string(batch.instanceId);
      markers.u64(batch.batchId);
      markers.u64(writeId);
      markers.string(batch.node);
      markers.u32(records.length);
      markers.u64(minStart ?? 0n);
      markers.u64(maxEnd);
      markers.string(this.replicaId);
      markers.u64(++this.seq);
    }
    try {
      if (rows.length > 0) await this.insert(`INSERT INTO ${this.db}.flows (${COLUMN_LIST}) FORMAT RowBinary`, rows.take());
      await this.insert(`INSERT INTO ${this.db}.batches (instance_id, batch_id, write_id, node, records, min_start_ns, max_end_ns, replica, replica_seq) FORMAT RowBinary`,
        markers.take());
    } catch (error) {
      const named = batches.slice(0, 3).map((b) => `${b.instanceId}#${b.batchId}`).join(", ");
      throw this.fail(`cannot store ${batches.length} batch(es) (${named}${batches.length > 3 ? ", …" : ""})`, error);
    }
    this.current.error = "";
    if (this.tails > 0) {
      const now = Date.now();
      for (const b of batches) this.written.set(`${b.instanceId}/${b.batchId}`, now);
    }
  }

  /** The marked writes whose records may overlap [since, until]: one per batch, the lowest write id. */
  private committed(query: StoreQuery): string {
    const since = query.since && nsOf(query.since), until = query.until && nsOf(query.until);
    const bounds = [
      ...(since !== undefined ? [`max_end_ns >= ${sqlUInt(since)}`] : []),
      ...(query.until !== undefined ? [until === undefined ? "0" : `min_start_ns <= ${sqlUInt(until)}`] : []),
    ];
    return `(instance_id, batch_id, write_id) IN (SELECT instance_id, batch_id, min(write_id) FROM ${this.db}.batches`
      + `${bounds.length > 0 ? ` WHERE ${bounds.join(" AND ")}` : ""} GROUP BY instance_id, batch_id)`;
  }

  private where(query: StoreQuery): string {
    const parts: string[] = [];
    // Every bound exactly, as ns (end_ns, start_ns); end_time (whole seconds) only prunes partitions.
    const since = query.since && nsOf(query.since), until = query.until && nsOf(query.until);
    if (since !== undefined) {
      parts.push(`end_time >= toDateTime(${sqlUInt(query.since!.seconds)}, 'UTC')`, `end_ns >= ${sqlUInt(since)}`);
    }
    if (query.until !== undefined) parts.push(until === undefined ? "0" : `start_ns <= ${sqlUInt(until)}`);
    if (query.endNotAfter !== undefined) {
      // The hot window serves what ends after this.
      const end = nsOf(query.endNotAfter);
      parts.push(end === undefined ? "0" : `end_time <= toDateTime(${sqlUInt(query.endNotAfter.seconds)}, 'UTC') AND end_ns <= ${sqlUInt(end)}`);
    }
    const condition = requestCondition(query.allow, query.deny);
    if (condition !== "1") parts.push(condition);
    parts.push(this.committed(query));
    return parts.join(" AND ");
  }

  private async *select(sql: string): AsyncGenerator<{ record: FlowRecord; origin: RowOrigin }[]> {
    const result = await this.client.exec({ query: `${sql} FORMAT RowBinary` });
    try {
      yield* decodeRows(result.stream as AsyncIterable<Buffer>);
    } finally {
      result.stream.destroy();
    }
  }

  async *query(query: StoreQuery): AsyncIterable<readonly FlowRecord[]> {
    await this.ready();
    const where = this.where(query);
    const order = ["end_ns", "instance_id", "batch_id", "row_index"];
    try {
      if (!query.last) {
        let out: FlowRecord[] = [];
        for await (const rows of this.select(`SELECT ${COLUMN_LIST} FROM ${this.db}.flows WHERE ${where} ORDER BY ${order.join(", ")}`)) {
          for (const { record } of rows) {
            if (!query.predicate(record)) continue;
            out.push(record);
            if (out.length >= CHUNK) { yield out; out = []; }
          }
        }
        if (out.length > 0) yield out;
        return;
      }
      // The N newest: pages newest first (keyset on the sort order, which is unique: one
      // write per batch), until N rows pass the predicate.
      const newest: FlowRecord[] = [];
      let after: { endNs: bigint; origin: RowOrigin } | undefined;
      let page = Math.max(query.last * 2, 256);
      for (;;) {
        const keyset = after === undefined ? "" : ` AND (end_ns < ${sqlUInt(after.endNs)} OR (end_ns = ${sqlUInt(after.endNs)} AND `
          + `(instance_id < ${sqlString(after.origin.instanceId)} OR (instance_id = ${sqlString(after.origin.instanceId)} AND `
          + `(batch_id < ${sqlUInt(after.origin.batchId)} OR (batch_id = ${sqlUInt(after.origin.batchId)} AND row_index < ${sqlUInt(after.origin.row)}))))))`;
        let seen = 0;
        for await (const rows of this.select(`SELECT ${COLUMN_LIST} FROM ${this.db}.flows WHERE ${where}${keyset} `
          + `ORDER BY ${order.map((c) => `${c} DESC`).join(", ")} LIMIT ${sqlUInt(page)}`)) {
          for (const { record, origin } of rows) {
            seen++;
            after = { endNs: record.endTime ? record.endTime.seconds * 1_000_000_000n + BigInt(record.endTime.nanos) : 0n, origin };
            if (newest.length < query.last && query.predicate(record)) newest.push(record);
          }
        }
        if (newest.length >= query.last || seen < page) break;
        page = Math.min(page * 4, 1_000_000);
      }
      newest.reverse();
      for (let i = 0; i < newest.length; i += CHUNK) yield newest.slice(i, i + CHUNK);
    } catch (error) {
      throw this.fail("query failed", error);
    }
  }

  /**
   * Drops whole day partitions of `flows`: those entirely older than the retention, then
   * the oldest while the database is larger than the size bound (never the newest day).
   * Markers (`batches`) are dropped for days older than the oldest day kept. Each drop is
   * logged in `retention_log`, which status() sums over all replicas.
   */
  async enforceRetention(): Promise<{ records: bigint; partitions: bigint }> {
    await this.ready();
    let records = 0n;
    let partitions = 0n;
    try {
      const parts = await this.rows<{ partition: string; rows: string; bytes: string }>(
        `SELECT partition, toString(sum(rows)) AS rows, toString(sum(bytes_on_disk)) AS bytes FROM system.parts `
        + `WHERE active AND database = ${sqlString(this.db)} AND table = 'flows' GROUP BY partition ORDER BY partition`);
      const [other] = await this.rows<{ bytes: string }>(`SELECT toString(sum(bytes_on_disk)) AS bytes FROM system.parts `
        + `WHERE active AND database = ${sqlString(this.db)} AND table != 'flows'`);
      let total = parts.reduce((sum, p) => sum + BigInt(p.bytes), BigInt(other?.bytes ?? "0"));
      const cutoffDay = this.options.retentionMs === undefined ? undefined
        : new Date(Date.now() - this.options.retentionMs).toISOString().slice(0, 10);
      const drop: typeof parts = [];
      for (const [i, p] of parts.entries()) {
        const old = cutoffDay !== undefined && p.partition < cutoffDay;
        const big = this.options.retentionBytes !== undefined && total > this.options.retentionBytes && i < parts.length - 1;
        if (!old && !big) break;
        drop.push(p);
        total -= BigInt(p.bytes);
      }
      for (const p of drop) {
        await this.command(`ALTER TABLE ${this.db}.flows DROP PARTITION ${sqlString(p.partition)}`);
        await this.command(`INSERT INTO ${this.db}.retention_log (table_name, partition_id, records, bytes, replica) VALUES ('flows', `
          + `${sqlString(p.partition)}, ${sqlUInt(BigInt(p.rows))}, ${sqlUInt(BigInt(p.bytes))}, ${sqlString(this.replicaId)})`);
        records += BigInt(p.rows);
        partitions++;
      }
      const keptFrom = parts[drop.length]?.partition ?? cutoffDay;
      if (keptFrom !== undefined) {
        const markerDays = await this.rows<{ partition: string }>(`SELECT DISTINCT partition FROM system.parts WHERE active AND `
          + `database = ${sqlString(this.db)} AND table = 'batches' AND partition < ${sqlString(keptFrom)}`);
        for (const d of markerDays) await this.command(`ALTER TABLE ${this.db}.batches DROP PARTITION ${sqlString(d.partition)}`);
      }
    } catch (error) {
      throw this.fail("retention failed", error);
    }
    await this.refreshStatus().catch(() => undefined);
    return { records, partitions };
  }

  /**
   * Reads sizes and retention totals into status(); status() itself never waits. `records`
   * counts stored rows, so it includes the rare rows of a write that was never marked or
   * was marked twice, until retention drops them.
   */
  async refreshStatus(): Promise<void> {
    const [size] = await this.rows<{ records: string; bytes: string }>(`SELECT toString(sumIf(rows, table = 'flows')) AS records, `
      + `toString(sum(bytes_on_disk)) AS bytes FROM system.parts WHERE active AND database = ${sqlString(this.db)}`);
    // Two replicas may drop the same partition at once: each partition counts once.
    const [dropped] = await this.rows<{ records: string; partitions: string }>(`SELECT toString(sum(r)) AS records, `
      + `toString(count()) AS partitions FROM (SELECT max(records) AS r FROM ${this.db}.retention_log GROUP BY table_name, partition_id)`);
    this.current.records = BigInt(size?.records ?? "0");
    this.current.bytes = BigInt(size?.bytes ?? "0");
    this.current.retentionDroppedRecords = BigInt(dropped?.records ?? "0");
    this.current.retentionDroppedPartitions = BigInt(dropped?.partitions ?? "0");
  }

  /** Runs `run` now and every `ms`, never two at once. */
  private every(ms: number, run: () => Promise<void>): () => void {
    let busy = false;
    const tick = () => {
      if (busy || this.closed) return;
      busy = true;
      void run().finally(() => { busy = false; });
    };
    const timer = setInterval(tick, ms);
    tick();
    timer.unref();
    this.timers.add(timer);
    return () => { clearInterval(timer); this.timers.delete(timer); };
  }

  private startStatusRefresh(): void {
    this.every((this.options.pollIntervalMs ?? 500) * 10, () => this.refreshStatus().catch(() => undefined));
  }

  /**
   * Hands over, as they are written, the records other replicas store from now on (each
   * batch once; none this replica wrote), and on the first poll those they stored before
   * whose records end after `endingAfterMs` (FlowStore.tail). Poll errors go to `onError`
   * and polling goes on. Returns a function that stops it.
   */
  tail(onRecords: TailListener, onError: (error: Error) => void = () => undefined, endingAfterMs?: number): () => void {
    const seen = new Map<string, number>();
    let from: number | undefined;
    // Seconds, as the markers' `hi` (the batch's last end, rounded down): a batch ending in that second or later is handed over.
    const endingAfterS = endingAfterMs === undefined ? undefined : Math.floor(endingAfterMs / 1000);
    this.tails++;
    const poll = async () => {
      try {
        await this.ready();
        const [clock] = await this.rows<{ now: number }>("SELECT toUInt32(now()) AS now");
        const now = clock?.now ?? 0;
        // The first poll learns what was there before the tail began, and hands over of it only
        // the batches with records ending after `endingAfterMs` (none without it). A record is
        // written after it ends, so such batches were written since then.
        const priming = from === undefined;
        const since = priming && endingAfterS !== undefined ? Math.min(now, endingAfterS) : from ?? now;
        from ??= now;
        const markers = await this.rows<{ replica: string; seq: string; instance: string; batch: string; write: string; lo: string; hi: string; at: number }>(
          `SELECT replica, toString(replica_seq) AS seq, instance_id AS instance, toString(batch_id) AS batch, toString(write_id) AS write, `
          + `toString(intDiv(min_start_ns, 1000000000)) AS lo, toString(intDiv(max_end_ns, 1000000000)) AS hi, toUInt32(written) AS at `
          + `FROM ${this.db}.batches WHERE written >= toDateTime(${sqlUInt(Math.max(0, since - TAIL_OVERLAP_S))}, 'UTC') `
          + `AND replica != ${sqlString(this.replicaId)} ORDER BY written, replica, replica_seq`);
        const fresh = markers.filter((m) => !seen.has(`${m.replica}/${m.seq}`));
        for (const m of fresh) seen.set(`${m.replica}/${m.seq}`, m.at);
        const handed = priming ? fresh.filter((m) => endingAfterS !== undefined && Number(m.hi) >= endingAfterS) : fresh;
        const wanted = handed.filter((m) => {
          const key = `${m.instance}/${m.batch}`;
          if (this.written.has(key)) return false;
          this.written.set(key, Date.now());
          return true;
        });
        if (wanted.length > 0) {
          const lo = wanted.reduce((a, m) => Math.min(a, Number(m.lo)), Infinity);
          const hi = wanted.reduce((a, m) => Math.max(a, Number(m.hi)), 0);
          const writes = wanted.map((m) => `(${sqlString(m.instance)}, ${sqlUInt(BigInt(m.batch))}, ${sqlUInt(BigInt(m.write))})`);
          const byWrite = new Map<string, FlowRecord[]>(wanted.map((m) => [m.write, []]));
          for await (const rows of this.select(`SELECT ${COLUMN_LIST} FROM ${this.db}.flows WHERE end_time >= toDateTime(${sqlUInt(lo)}, 'UTC') `
            + `AND end_time <= toDateTime(${sqlUInt(hi)}, 'UTC') AND (instance_id, batch_id, write_id) IN (${writes.join(", ")}) `
            + `ORDER BY instance_id, batch_id, row_index`)) {
            for (const { record, origin } of rows) byWrite.get(String(origin.writeId))?.push(record);
          }
          for (const m of wanted) {
            const records = byWrite.get(m.write) ?? [];
            if (records.length > 0) onRecords(records);
          }
        }
        // Forget what the next polls cannot read again.
        for (const [key, at] of seen) if (at < now - 2 * TAIL_OVERLAP_S) seen.delete(key);
        const horizon = Date.now() - 4 * TAIL_OVERLAP_S * 1000;
        for (const [key, at] of this.written) if (at < horizon) this.written.delete(key);
        from = now;
      } catch (error) {
        onError(this.fail("tail poll failed", error));
      }
    };
    const stop = this.every(this.options.pollIntervalMs ?? 500, poll);
    let stopped = false;
    return () => {
      if (stopped) return;
      stopped = true;
      stop();
      if (--this.tails === 0) this.written.clear();
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    this.timers.clear();
    await this.client.close();
  }
}

/** Connects, creates or migrates the schema, and returns the store; rejects naming the URL. */
export async function openClickHouseStore(options: ClickHouseStoreOptions): Promise<ClickHouseFlowStore> {
  const store = new ClickHouseFlowStore(options);
  try {
    await store.ready();
  } catch (error) {
    await store.close();
    throw error;
  }
  return store;
}

