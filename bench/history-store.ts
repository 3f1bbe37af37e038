// Flow history: the embedded DuckDB store side by side with the in-memory window, in one
// run. Run after `npm run build:ts` as
//   taskset -c 0 node dist/bench/history-store.js [RECORDS] [--span 7d] [--dir DIR] [--end-hour H]
// (--end-hour H: the span ends at H:00 UTC today instead of now, so how much of the newest,
// still open day the queries read is chosen, not left to the hour the run starts.)
// (taskset: "on one core"; RECORDS default 2,000,000).
//
// Method: records from bench/synthetic-flows.ts (the mix of bench/store.ts), end times
// spread evenly over the span ending now, in batches of 1,000. A pool of 200 batches is
// built first and re-sent with fresh timestamps (as decoding makes them), so generation
// is not timed. Ingest: every batch is appended as one agent batch, up to 8 appends in
// flight per agent (the agent's default), 8 agents (--agents), group commit as in the control plane; the rate is records over the
// wall time until the last append resolved (committed), and over the CPU time the whole
// process (every thread) spent meanwhile: on a shared machine the second is what one free
// core would give. The load average is printed with the figures. The in-memory side appends the
// same batches to a FlowHistory of the default 1M capacity (it keeps the newest 1M).
// Queries, medians of 5 (3 for the whole range): namespace ns-3 + verdict DROPPED over
// the whole range, every match built as a FlowRecord; the newest 100 records; the flow
// map of ns-3 over the last hour (memory: a FlowMapStore fed the last hour's records as
// they arrived; store: built from the store's records, controlplane/store/stored-map.ts).
// Upkeep: the store's periodic upkeep once after ingest (every day but the newest has
// ended, so each is rewritten in `cluster` order), its CPU apart and with ingest's.
// Disk: the store's used blocks plus WAL after the upkeep. Restart: close the store, open it
// again and answer `last 100`. Each query's line gives its CPU (the whole process's) beside
// the wall time: on a shared machine the wall time is mostly waiting for the core.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Verdict, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter } from "../proto/gen/bulkhead/v1/observer.js";
import { DuckDBFlowStore } from "../controlplane/store/duckdb.js";
import { flowMapFromStore } from "../controlplane/store/stored-map.js";
import { compileRequest } from "../controlplane/store/filter.js";
import { FlowHistory } from "../controlplane/store/history.js";
import { FlowMapStore } from "../controlplane/store/flowmap.js";
import { enrichedFromRecords, type EnrichedColumns } from "../controlplane/store/enriched-columns.js";
import { parseDurationMs } from "../config/time.js";
import { SyntheticFlows } from "./synthetic-flows.js";

const { values, positionals } = parseArgs({ allowPositionals: true, options: {
  span: { type: "string" }, dir: { type: "string" }, agents: { type: "string" }, "end-hour": { type: "string" }, records: { type: "boolean" },
} });
/** Feed the store FlowRecords (the path of protocol-1 agents and ClickHouse) instead of the control plane's enriched columns. */
const AS_RECORDS = values.records === true;
const RECORDS = Number(positionals[0] ?? 2_000_000);
const SPAN_MS = parseDurationMs("--span", values.span ?? "7d");
const BATCH = 1000;
const POOL = 200;
/** Agents sending at once, each with the agent's default 8 batches in flight. */
const AGENTS = Number(values.agents ?? 8);
const IN_FLIGHT = 8 * AGENTS;
const HOUR_MS = 3_600_000;

/** Now, or H:00 UTC of today with `--end-hour H` (0–24; 24 closes today's day). */
function spanEndMs(endHour: string | undefined): number {
  if (endHour === undefined) return Date.now();
  const hour = Number(endHour);
  if (!Number.isInteger(hour) || hour < 0 || hour > 24) {
    throw new Error(`--end-hour ${JSON.stringify(endHour)}: expected a whole hour from 0 to 24 (UTC)`);
  }
  const now = Date.now();
  return now - (now % (24 * 3_600_000)) + hour * 3_600_000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Median wall and CPU (the whole process's) of `runs` calls: under load only the CPU means much. */
async function timed<T>(runs: number, f: () => Promise<T>): Promise<{ ms: number; cpuMs: number; result: T }> {
  const times: number[] = [];
  const cpus: number[] = [];
  let result: T | undefined;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    const c = process.cpuUsage();
    result = await f();
    const used = process.cpuUsage(c);
    times.push(performance.now() - t);
    cpus.push((used.user + used.system) / 1000);
  }
  return { ms: median(times), cpuMs: median(cpus), result: result! };
}

console.log(`load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}, ${os.cpus().length} CPUs`);
const endMs = spanEndMs(values["end-hour"]);
const synthetic = new SyntheticFlows({ records: POOL * BATCH, spanMs: SPAN_MS, endMs });
const pool = Array.from({ length: POOL }, () => synthetic.batch(BATCH).slice(0, BATCH));
// The same batches as the control plane hands them to the store from an agent's columnar
// batch (enriched-columns.ts); sequences renumbered per batch, as an agent's batch has them.
const columnPool = pool.map((batch) => enrichedFromRecords("node-0", batch.map((r, i) => ({ ...r, sequence: BigInt(i) }))));
let produced = 0;
/** The next batch: a pool batch with the next end times of the span. */
function nextBatch(): FlowRecord[] {
  const batch = pool[(produced / BATCH) % POOL]!;
  for (const r of batch) {
    const end = endMs - SPAN_MS + Math.floor((produced / RECORDS) * SPAN_MS);
    const seconds = Math.floor(end / 1000), nanos = (end % 1000) * 1_000_000;
    r.startTime = { seconds: BigInt(seconds - 1), nanos };
    r.endTime = { seconds: BigInt(seconds), nanos };
    produced++;
  }
  return batch;
}

/** The next batch as columns: the pool's columns with the next end times of the span. */
function nextColumns(): EnrichedColumns {
  const b = columnPool[(produced / BATCH) % POOL]!;
  for (let i = 0; i < BATCH; i++) {
    const end = endMs - SPAN_MS + Math.floor((produced / RECORDS) * SPAN_MS);
    const seconds = Math.floor(end / 1000), nanos = (end % 1000) * 1_000_000;
    b.startSeconds[i] = seconds - 1; b.startNanos[i] = nanos;
    b.endSeconds[i] = seconds; b.endNanos[i] = nanos;
    produced++;
  }
  return b;
}

const dir = values.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-history-store-"));
fs.rmSync(path.join(dir, "flows.duckdb"), { force: true });
fs.rmSync(path.join(dir, "flows.duckdb.wal"), { force: true });

// In memory: append only, timed alone; the live map gets the last hour as it arrives.
const history = new FlowHistory();
const liveMap = new FlowMapStore({ now: () => endMs });
let memoryNs = 0n;
produced = 0;
while (produced < RECORDS) {
  const batch = nextBatch();
  const t = process.hrtime.bigint();
  history.append(batch);
  memoryNs += process.hrtime.bigint() - t;
  // The map itself ignores (counts as late) what is older than its hour.
  if (Number(batch[batch.length - 1]!.endTime!.seconds) * 1000 >= endMs - HOUR_MS - 120_000) liveMap.add(batch);
}
const memoryRate = RECORDS / (Number(memoryNs) / 1e9);
console.log(`memory: ${history.size} records held of ${RECORDS}, append ${(memoryRate / 1e6).toFixed(2)} M records/s`);

// DuckDB: every batch committed before it counts.
let store = await DuckDBFlowStore.open(dir);
console.log(`duckdb: ${store.threads} worker thread(s), freed blocks kept for reuse up to ${store.blockPool}`);
produced = 0;
let batchId = 0n;
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const inFlight = new Set<Promise<unknown>>();
let nextReport = performance.now() + 10_000;
while (produced < RECORDS) {
  // A batch is read when its transaction is written (at most IN_FLIGHT batches ahead), well before the pool comes round.
  const p: Promise<unknown> = store.append([AS_RECORDS
    ? { node: "node-0", instanceId: "bench", batchId: ++batchId, records: nextBatch() }
    : { node: "node-0", instanceId: "bench", batchId: ++batchId, columns: nextColumns() }])
    .finally(() => inFlight.delete(p));
  inFlight.add(p);
  if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
  if (performance.now() > nextReport) {
    nextReport += 10_000;
    console.log(`  … ${produced} records, ${(produced / ((performance.now() - t0) / 1000) / 1000).toFixed(0)}k/s`);
  }
}
await Promise.all(inFlight);
const ingestS = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const ingestCpuS = (cpu.user + cpu.system) / 1e6;
const duckRate = RECORDS / ingestS;
// Per CPU second of the whole process (every thread): the rate one free core would give.
const duckCpuRate = RECORDS / ingestCpuS;
// The upkeep (no retention configured): measures the file and puts every closed day in
// `cluster` order, a second pass over each record, timed on its own.
const tUpkeep = performance.now();
const cpuUpkeep = process.cpuUsage();
await store.enforceRetention();
const upkeepCpu = process.cpuUsage(cpuUpkeep);
const upkeepCpuS = (upkeepCpu.user + upkeepCpu.system) / 1e6;
console.log(`upkeep (closed days rewritten in cluster order): ${((performance.now() - tUpkeep) / 1000).toFixed(1)} s wall, `
  + `${upkeepCpuS.toFixed(1)} s of CPU; ingest and upkeep together ${(RECORDS / (ingestCpuS + upkeepCpuS) / 1000).toFixed(0)}k records per CPU second`);
const status = store.status();
console.log(`duckdb (${AS_RECORDS ? "FlowRecords" : "enriched columns"}): ${status.records} records, ingest ${(duckRate / 1000).toFixed(0)}k records/s wall (${ingestS.toFixed(1)} s), `
  + `${(duckCpuRate / 1000).toFixed(0)}k records per CPU second (${ingestCpuS.toFixed(1)} s of CPU), `
  + `disk ${(Number(status.bytes) / 1048576).toFixed(1)} MiB (${(Number(status.bytes) / RECORDS).toFixed(1)} bytes/record)`);

const allow = [FlowFilter.fromPartial({ namespace: ["ns-3"], verdict: [Verdict.VERDICT_DROPPED] })];
const predicate = compileRequest(allow, []);
const everything = () => true;
async function collect(q: Parameters<DuckDBFlowStore["query"]>[0]): Promise<number> {
  let n = 0;
  for await (const chunk of store.query(q)) n += chunk.length;
  return n;
}

const memNsVerdict = await timed(3, () => Promise.resolve(history.query({ predicate }).length));
const duckNsVerdict = await timed(3, () => collect({ allow, deny: [], predicate }));
console.log(`ns-3 + DROPPED, whole range: memory ${memNsVerdict.result} matches (its 1M window) in ${memNsVerdict.ms.toFixed(0)} ms; `
  + `duckdb ${duckNsVerdict.result} matches in ${duckNsVerdict.ms.toFixed(0)} ms (${duckNsVerdict.cpuMs.toFixed(0)} ms CPU)`);

const memLast = await timed(5, () => Promise.resolve(history.query({ last: 100 }).length));
const duckLast = await timed(5, () => collect({ allow: [], deny: [], predicate: everything, last: 100 }));
console.log(`last 100: memory ${memLast.ms.toFixed(1)} ms; duckdb ${duckLast.ms.toFixed(1)} ms (${duckLast.cpuMs.toFixed(1)} ms CPU, ${duckLast.result} records)`);

const memMap = await timed(5, () => Promise.resolve(liveMap.getMap({ namespace: "ns-3", windowMs: HOUR_MS }).edges.length));
const duckMap = await timed(5, async () => (await flowMapFromStore(store, { namespace: "ns-3", windowMs: HOUR_MS, nowMs: endMs })).edges.length);
console.log(`map ns-3 over 1 h: memory ${memMap.result} edges in ${memMap.ms.toFixed(1)} ms; duckdb ${duckMap.result} edges in ${duckMap.ms.toFixed(0)} ms (${duckMap.cpuMs.toFixed(0)} ms CPU)`);

await store.close();
const tRestart = performance.now();
const cpuRestart = process.cpuUsage();
store = await DuckDBFlowStore.open(dir);
const served = await collect({ allow: [], deny: [], predicate: everything, last: 100 });
const restartMs = performance.now() - tRestart;
const restartCpu = process.cpuUsage(cpuRestart);
console.log(`restart to serving (open + last 100 = ${served}): ${restartMs.toFixed(0)} ms (${((restartCpu.user + restartCpu.system) / 1000).toFixed(0)} ms CPU)`);
await store.close();
if (values.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });

console.log(`SUMMARY history-store (${RECORDS / 1e6}M records over ${values.span ?? "7d"}): `
  + `ingest memory ${(memoryRate / 1e3).toFixed(0)}k/s, duckdb ${(duckRate / 1e3).toFixed(0)}k/s committed (${(duckCpuRate / 1e3).toFixed(0)}k per CPU second); `
  + `duckdb disk ${(Number(status.bytes) / 1048576).toFixed(0)} MiB (${(Number(status.bytes) / RECORDS).toFixed(1)} B/record); `
  + `ns+verdict whole range memory(1M) ${memNsVerdict.ms.toFixed(0)} ms, duckdb ${duckNsVerdict.ms.toFixed(0)} ms; `
  + `last 100 memory ${memLast.ms.toFixed(1)} ms, duckdb ${duckLast.ms.toFixed(1)} ms; `
  + `map ns 1h memory ${memMap.ms.toFixed(1)} ms, duckdb ${duckMap.ms.toFixed(0)} ms; restart to serving ${restartMs.toFixed(0)} ms`);
