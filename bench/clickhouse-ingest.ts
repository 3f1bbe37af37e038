// ClickHouse store ingest: records/s into one clickhouse-server with 1 and 2 writers
// (control-plane replicas), side by side with the in-memory FlowHistory append in the same
// run. Run after `npm run build:ts` as `node dist/bench/clickhouse-ingest.js [RECORDS]
// [--agents K] [--per-append N]` (default 400,000 records per phase, 10 agents, 1 batch per
// append). Starts its own clickhouse-server (lab/clickhouse.ts: HTTP
// on 127.0.0.1, state in a temp dir) and stops it at the end or on error.
//
// Method: a pool of 20 batches x 1,000 enriched records (20 namespaces, 500 pods, 10
// nodes; pod->pod at both observation points, pod->Service, world<->pod; fresh strings and
// timestamps, as decoded agent records are) is built once and not timed. Each phase sends
// RECORDS records as batches of 1,000 with unique (instance, batch id). A writer is a
// child process with its own ClickHouseFlowStore (its own replica id and HTTP
// connections), as a replica would be, fed by K agents (--agents) that each append N
// batches (--per-append) and await it before the next, as an agent awaits its ack; the
// store groups the appends that arrive while a write is in flight into one write (one
// INSERT of rows, one of markers). The 2-writer phase runs two children at once, each
// sending half, into the same database. The rate is records over
// the wall time from the first append to the last one resolving; each writer's own CPU
// time is reported too. The phase's rows are then counted in the store (winning
// markers' records, and raw rows): both must equal what was sent. FlowHistory gets the
// same batches, in the parent, timed around append() alone.
import { fork } from "node:child_process";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { IpVersion, ObservationPoint, ReporterSide, Verdict, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowHistory } from "../controlplane/store/history.js";
import { parseClickHouseLocation } from "../controlplane/store/clickhouse/location.js";
import { openClickHouseStore } from "../controlplane/store/clickhouse/store.js";
import type { StoredBatch } from "../controlplane/store/durable.js";
import { startClickHouse } from "../lab/clickhouse.js";
import { seededRandom } from "../test/harness/seeded-random.js";

const BATCH = 1_000;
const POOL = 20;
/** A whole-number flag `--name N` of the command line, or its default. */
function count(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  const value = at > 0 ? Number(process.argv[at + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name}: expected a whole number ≥ 1, got ${process.argv[at + 1]}`);
  return value;
}
/** Batches per append() call (`--per-append`, default 1: one call per agent batch, as the control plane makes). */
const PER_APPEND = count("per-append", 1);
/** Agents per writer appending concurrently (`--agents`, default 10): the store groups what arrives together. */
const AGENTS = count("agents", 10);

function endpoint(fields: Partial<Endpoint>): Endpoint {
  return { ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false, ...fields };
}

/** The pool of record batches every phase sends (same seed: the same records in parent and children). */
function recordPool(): FlowRecord[][] {
  const rand = seededRandom(42);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const pods: Endpoint[] = [];
  const services: Endpoint[] = [];
  for (let n = 0; n < 20; n++) {
    for (let w = 0; w < 5; w++) {
      services.push(endpoint({ ip: `10.96.${n}.${w + 1}`, namespace: `ns-${n}`, service: `ns-${n}/svc-${w}` }));
      for (let p = 0; p < 5; p++) {
        const i = pods.length;
        pods.push(endpoint({ ip: `10.${(i >> 8) + 1}.${i & 255}.${n + 1}`, namespace: `ns-${n}`, podName: `app-${w}-${p}`, podUid: `uid-${i}`,
          labels: { app: `app-${w}`, team: `t${n}` }, workloadKind: "Deployment", workloadName: `app-${w}`, node: `node-${i % 10}` }));
      }
    }
  }
  const worlds = Array.from({ length: 200 }, (_, i) => endpoint({ ip: `203.0.${i >> 8}.${i & 255}`, world: true }));
  const fresh = (s: string) => (" " + s).slice(1);
  const now = Date.now();
  let sequence = 0n;
  const record = (src: Endpoint, dst: Endpoint, point: ObservationPoint): FlowRecord => {
    const endMs = now - Math.floor(rand() * 600_000);
    const seconds = Math.floor(endMs / 1000);
    const nanos = (endMs % 1000) * 1_000_000;
    const observed = point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? src : dst;
    const tcp = rand() < 0.7;
    const v = rand();
    return {
      startTime: { seconds: BigInt(seconds - 1), nanos }, endTime: { seconds: BigInt(seconds), nanos },
      node: fresh(observed.node || "node-0"), point,
      reporter: point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
      interface: fresh(`lxc${observed.podUid}`), ifindex: 100 + Number(sequence % 500n),
      ip: { source: fresh(src.ip), destination: fresh(dst.ip), version: IpVersion.IP_VERSION_IPV4 },
      l4: { protocol: tcp ? 6 : 17, protocolName: fresh(tcp ? "TCP" : "UDP"), sourcePort: 32768 + Math.floor(rand() * 28000),
        destinationPort: tcp ? 8080 : 53, icmpType: 0, icmpCode: 0,
        tcpFlags: tcp ? { fin: false, syn: rand() < 0.1, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false } : undefined },
      packets: BigInt(1 + Math.floor(rand() * 100)), bytes: BigInt(100 + Math.floor(rand() * 100_000)),
      source: src, destination: dst,
      verdict: v < 0.9 ? Verdict.VERDICT_FORWARDED : v < 0.97 ? Verdict.VERDICT_DROPPED : Verdict.VERDICT_AUDIT,
      verdictReason: 0, attribution: undefined, sequence: sequence++,
    };
  };
  return Array.from({ length: POOL }, () => {
    const out: FlowRecord[] = [];
    while (out.length < BATCH) {
      const kind = rand();
      if (kind < 0.8) out.push(record(pick(pods), pick(pods), rand() < 0.5 ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD));
      else if (kind < 0.9) out.push(record(pick(pods), pick(services), ObservationPoint.OBSERVATION_POINT_FROM_POD));
      else if (kind < 0.95) out.push(record(pick(worlds), pick(pods), ObservationPoint.OBSERVATION_POINT_TO_POD));
      else out.push(record(pick(pods), pick(worlds), ObservationPoint.OBSERVATION_POINT_FROM_POD));
    }
    return out;
  });
}

interface WriterResult { records: number; startMs: number; endMs: number; cpuMs: number }

/** A child: appends `records` records as one replica, then reports when it started and ended. */
async function writer(url: string, credentials: string, records: number, instance: string): Promise<WriterResult & { writes: number }> {
  const pool = recordPool();
  const store = await openClickHouseStore({ location: parseClickHouseLocation(url, credentials) });
  const cpu = process.cpuUsage();
  const startMs = Date.now();
  let sent = 0;
  // AGENTS streams, each awaiting its append before the next, as an agent awaits its ack.
  await Promise.all(Array.from({ length: AGENTS }, async (_, agent) => {
    let batchId = 0n;
    while (sent < records) {
      const group: StoredBatch[] = [];
      for (let i = 0; i < PER_APPEND && sent < records; i++, sent += BATCH) {
        batchId++;
        group.push({ node: `node-${agent}`, instanceId: `${instance}-agent-${agent}`, batchId, records: pool[Number(batchId % BigInt(POOL))]! });
      }
      await store.append(group);
    }
  }));
  const endMs = Date.now();
  const used = process.cpuUsage(cpu);
  const writes = store.writes;
  await store.close();
  return { records, startMs, endMs, cpuMs: (used.user + used.system) / 1000, writes };
}

function runWriter(url: string, credentials: string, records: number, instance: string): Promise<WriterResult & { writes: number }> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ["--writer", url, credentials, String(records), instance, "--per-append", String(PER_APPEND), "--agents", String(AGENTS)], { stdio: "inherit" });
    child.once("message", (m) => resolve(m as WriterResult & { writes: number }));
    child.once("error", reject);
    child.once("exit", (code) => { if (code !== 0) reject(new Error(`writer ${instance} exited ${code}`)); });
  });
}

async function main(): Promise<void> {
  const first = process.argv[2];
  const records = Math.ceil(Number(first !== undefined && /^[0-9]+$/.test(first) ? first : 400_000) / (2 * BATCH)) * 2 * BATCH;
  const pool = recordPool();

  const history = new FlowHistory({ capacity: records });
  let historyNs = 0n;
  for (let sent = 0, i = 0; sent < records; sent += BATCH, i++) {
    const t = process.hrtime.bigint();
    history.append(pool[i % POOL]!);
    historyNs += process.hrtime.bigint() - t;
  }
  const memoryRate = records / (Number(historyNs) / 1e9);
  console.log(`memory (FlowHistory.append): ${records} records, ${(memoryRate / 1e3).toFixed(0)}k records/s`);

  const server = await startClickHouse();
  const lines: string[] = [];
  try {
    const version = await (await fetch(`${server.httpUrl}/?query=SELECT%20version()`, {
      headers: { Authorization: `Basic ${Buffer.from(`${server.username}:${server.password}`).toString("base64")}` },
    })).text();
    console.log(`clickhouse-server ${version.trim()} on ${server.httpUrl}`);
    for (const writers of [1, 2]) {
      const database = `bench_${writers}`;
      const url = server.storeUrl(database);
      // The schema first, so no writer's timing includes it.
      await (await openClickHouseStore({ location: parseClickHouseLocation(url, server.credentialsFile) })).close();
      const results = await Promise.all(Array.from({ length: writers }, (_, w) =>
        runWriter(url, server.credentialsFile, records / writers, `bench-${writers}-${w}`)));
      const start = Math.min(...results.map((r) => r.startMs));
      const end = Math.max(...results.map((r) => r.endMs));
      const rate = records / ((end - start) / 1000);
      const cpu = results.reduce((s, r) => s + r.cpuMs, 0);
      const writes = results.reduce((s, r) => s + r.writes, 0);
      const store = await openClickHouseStore({ location: parseClickHouseLocation(url, server.credentialsFile) });
      await store.refreshStatus();
      const status = store.status();
      let read = 0;
      for await (const chunk of store.query({ allow: [], deny: [], predicate: () => true })) read += chunk.length;
      await store.close();
      const exact = status.records === BigInt(records) && read === records;
      console.log(`clickhouse, ${writers} writer(s): ${records} records in ${end - start} ms = ${(rate / 1e3).toFixed(0)}k records/s `
        + `in ${writes} grouped writes (${(records / writes / 1e3).toFixed(1)}k rows each); `
        + `writers' CPU ${cpu.toFixed(0)} ms (${(records / (cpu / 1000) / 1e3).toFixed(0)}k records per writer CPU-second); `
        + `stored rows ${status.records}, read back ${read}: ${exact ? "exact" : "MISMATCH"}; ${(Number(status.bytes) / records).toFixed(1)} bytes/record on disk`);
      console.log(`  load average during the phase's end: ${os.loadavg().map((l) => l.toFixed(1)).join(", ")} (${os.cpus().length} CPUs)`);
      lines.push(`${writers} writer${writers > 1 ? "s" : ""} ${(rate / 1e3).toFixed(0)}k/s${exact ? "" : " (MISMATCH)"}`);
      if (!exact) process.exitCode = 1;
    }
  } finally {
    await server.stop();
  }
  console.log(`SUMMARY clickhouse-ingest (${records} records per phase, batches of ${BATCH}, ${AGENTS} agents per writer, ${PER_APPEND} batch(es) per append): `
    + `memory ${(memoryRate / 1e3).toFixed(0)}k/s; clickhouse ${lines.join(", ")}`);
}

if (process.argv[2] === "--writer") {
  const [, , , url, credentials, records, instance] = process.argv;
  writer(url!, credentials!, Number(records), instance!).then((r) => process.send?.(r, () => process.exit(0)), (error: unknown) => {
    console.error(error);
    process.exit(1);
  });
} else {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
