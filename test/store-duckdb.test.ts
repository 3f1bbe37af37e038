// The embedded durable store (controlplane/store/duckdb.ts): what goes in comes out
// exactly, a batch is stored once across re-sends and reopenings, a gap is refused,
// retention drops the oldest days and counts them, filters reach the engine only as
// parameters, and files that are not a store of this version are refused by name.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import zlib from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import { DuckDBInstance } from "@duckdb/node-api";
import {
  IpVersion, ObservationPoint, ReporterSide, Verdict, type Endpoint, type FlowRecord,
} from "../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter } from "../proto/gen/bulkhead/v1/observer.js";
import { DuckDBFlowStore, SCHEMA_VERSION, packedSql } from "../controlplane/store/duckdb.js";
import { whereClause } from "../controlplane/store/duckdb-filter.js";
import { expectNanosecondBounds } from "./harness/store-bounds.js";
import type { StoreQuery, StoredBatch } from "../controlplane/store/durable.js";
import { compileRequest } from "../controlplane/store/filter.js";
import { enrichedFromRecords, recordsOf } from "../controlplane/store/enriched-columns.js";
import { FlowHistory } from "../controlplane/store/history.js";
import { seededRandom } from "./harness/seeded-random.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { compareTimestamps } from "../config/time.js";
import { v1Records, V1_T0 } from "./fixtures/store-v1/records.js";
import { v2Records, V2_T0 } from "./fixtures/store-v2/records.js";

const DAY_MS = 86_400_000;
const T0 = Date.UTC(2026, 11, 2, 12, 0, 0);

function endpoint(fields: Partial<Endpoint>): Endpoint {
  return { ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false, ...fields };
}

const PODS = [
  endpoint({ ip: "10.0.1.5", namespace: "shop", podName: "web-1", podUid: "u1", labels: { app: "web" }, workloadKind: "Deployment", workloadName: "web", node: "node-a" }),
  endpoint({ ip: "10.0.2.7", namespace: "shop", podName: "cart-1", podUid: "u2", labels: { app: "cart" }, workloadKind: "Deployment", workloadName: "cart", node: "node-b" }),
  endpoint({ ip: "10.0.3.9", namespace: "db", podName: "postgres-0", podUid: "u3", labels: { app: "pg" }, workloadKind: "StatefulSet", workloadName: "postgres", node: "node-b" }),
  // A namespace and pod name as an attacker would like them stored and matched.
  endpoint({ ip: "10.0.4.1", namespace: "o'hara", podName: "x'); DROP TABLE strings; --", podUid: "u4", labels: { "a'b": "c\"d" }, node: "node-c" }),
];
const OUTSIDE = endpoint({ ip: "203.0.113.9", world: true });

function record(i: number, endMs: number, rand: () => number): FlowRecord {
  const src = PODS[Math.floor(rand() * PODS.length)]!;
  const dst = rand() < 0.2 ? OUTSIDE : PODS[Math.floor(rand() * PODS.length)]!;
  const tcp = rand() < 0.7;
  const end = { seconds: BigInt(Math.floor(endMs / 1000)), nanos: (endMs % 1000) * 1_000_000 + (i % 1000) };
  return {
    startTime: { seconds: end.seconds - 1n, nanos: end.nanos }, endTime: end,
    node: src.node || "node-a", point: rand() < 0.5 ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD,
    reporter: ReporterSide.REPORTER_SIDE_SOURCE, interface: `lxc${i % 7}`, ifindex: 100 + (i % 7),
    ip: { source: src.ip, destination: dst.ip, version: IpVersion.IP_VERSION_IPV4 },
    l4: {
      protocol: tcp ? 6 : 17, protocolName: tcp ? "TCP" : "UDP", sourcePort: 40000 + (i % 1000), destinationPort: tcp ? 8080 : 53,
      tcpFlags: tcp ? { fin: false, syn: i % 3 === 0, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: i % 5 === 0 } : undefined,
      icmpType: 0, icmpCode: 0,
    },
    packets: BigInt(1 + i % 50), bytes: BigInt(100 + i), source: src, destination: dst,
    verdict: [Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT][i % 3]!,
    verdictReason: i % 4, sequence: BigInt(i),
    attribution: i % 2 === 0 ? undefined : {
      policyVersion: 7n, egressIsolated: true, egressAllowedBy: ["shop/allow-web"], egressIsolatedBy: [],
      ingressIsolated: false, ingressAllowedBy: [], ingressIsolatedBy: ["db/deny"],
      egressDecidedBy: "Admin", ingressDecidedBy: "NetworkPolicy", egressTierRules: ["Admin guard to-db: Accept"], ingressTierRules: ["Admin guard from-web: Pass"],
    },
  };
}

function records(n: number, startMs: number, stepMs: number, seed = 1): FlowRecord[] {
  const rand = seededRandom(seed);
  return Array.from({ length: n }, (_, i) => record(i, startMs + i * stepMs, rand));
}

const dirs: string[] = [];
const open: DuckDBFlowStore[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-duck-"));
  dirs.push(d);
  return d;
}
async function openStore(dir: string, options: Parameters<typeof DuckDBFlowStore.open>[1] = {}): Promise<DuckDBFlowStore> {
  const s = await DuckDBFlowStore.open(dir, { commitDelayMs: 1, ...options });
  open.push(s);
  return s;
}
async function all(store: DuckDBFlowStore, q: Partial<StoreQuery> = {}): Promise<FlowRecord[]> {
  const out: FlowRecord[] = [];
  for await (const chunk of store.query({ allow: [], deny: [], predicate: () => true, ...q })) out.push(...chunk);
  return out;
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe("DuckDB flow store", () => {
  it("returns every record exactly as appended, in end-time order, after a reopen", async () => {
    const dir = tempDir();
    const input = records(3000, T0, 7);
    const store = await openStore(dir);
    expect(await store.append([{ node: "node-a", instanceId: "i1", batchId: 1n, records: input.slice(0, 1000) }])).toEqual([true]);
    expect(await store.append([{ node: "node-a", instanceId: "i1", batchId: 2n, records: input.slice(1000) }])).toEqual([true]);
    expect(await all(store)).toEqual(input);
    await store.close();
    open.pop();
    const again = await openStore(dir);
    expect(again.status()).toMatchObject({ kind: "duckdb", location: path.join(dir, "flows.duckdb"), records: 3000n, error: "" });
    expect(await all(again)).toEqual(input);
  });

  it("two queries read at once each get every record (a stream is not cut short by the other)", async () => {
    const store = await openStore(tempDir());
    const input = records(6000, T0, 10);
    expect(await store.append([{ node: "node-a", instanceId: "i1", batchId: 1n, records: input }])).toEqual([true]);
    const q = { allow: [], deny: [], predicate: () => true };
    const a = store.query(q)[Symbol.asyncIterator](), b = store.query(q)[Symbol.asyncIterator]();
    // Interleaved, as the web UI's map and flow requests are: a's first chunk, then b's, then the rest.
    const counts = [0, 0];
    for (let done = [false, false]; !done[0] || !done[1];) {
      for (const [i, it] of [a, b].entries()) {
        if (done[i]) continue;
        const next = await it.next();
        if (next.done) done[i] = true; else counts[i]! += next.value.length;
      }
    }
    expect(counts).toEqual([6000, 6000]);
  });

  it("gives DuckDB as many worker threads as the CPUs the process may use, or as asked; refuses a count below 1 by name", async () => {
    // A process held to one CPU (taskset, as the ingest benchmark runs) gets one worker.
    const built = path.resolve("dist/controlplane/store/duckdb.js");
    if (!fs.existsSync(built)) throw new Error("dist/ is missing: run npx tsc -p . first");
    const res = spawnSync("taskset", ["-c", "0", process.execPath, "--input-type=module", "-e",
      `const { DuckDBFlowStore } = await import(${JSON.stringify(built)});
       const s = await DuckDBFlowStore.open(${JSON.stringify(tempDir())}); console.log(s.threads); await s.close();`], { encoding: "utf8" });
    expect(res.error).toBeUndefined();
    expect(res.stderr).toBe("");
    expect(res.stdout.trim()).toBe("1");
    // DuckDB alone would take the machine's CPUs, ignoring the affinity (taskset, cpuset).
    expect((await openStore(tempDir())).threads).toBe(os.availableParallelism());
    expect((await openStore(tempDir(), { threads: 1 })).threads).toBe(1);
    expect((await openStore(tempDir(), { threads: 3 })).threads).toBe(3);
    await expect(DuckDBFlowStore.open(tempDir(), { threads: 0 })).rejects.toThrow(/threads 0 is not a whole number of threads ≥ 1/);
  });

  it("keeps 1 GiB of DuckDB's freed blocks for reuse, or as asked, in one store per process; refuses a bad size by name", async () => {
    // With a pool, DuckDB 1.5 maps 80 % of the machine's (or the cgroup's) memory at open;
    // its pages are touched only as blocks are handed out.
    // While one is open, others get none: three such mappings side by side were merged by the
    // kernel into one larger than the machine's memory, and the process could not fork.
    const [first, second, third] = [await openStore(tempDir()), await openStore(tempDir(), { blockPoolBytes: 256 * 2 ** 20 }), await openStore(tempDir())];
    const fork = spawnSync("true");
    expect(fork.error?.message).toBeUndefined();
    expect(fork.status).toBe(0);
    expect([first.blockPool, second.blockPool, third.blockPool]).toEqual(["1.0 GiB", "0 bytes", "0 bytes"]);
    await first.close();
    open.splice(open.indexOf(first), 1);
    // Opened at once, the pool goes to one of them only.
    const together = await Promise.all([openStore(tempDir()), openStore(tempDir()), openStore(tempDir())]);
    expect(together.map((s) => s.blockPool).sort()).toEqual(["0 bytes", "0 bytes", "1.0 GiB"]);
    for (const s of together) { await s.close(); open.splice(open.indexOf(s), 1); }
    // An open that fails gives its pool back.
    const damaged = tempDir();
    fs.writeFileSync(path.join(damaged, "flows.duckdb"), "not a database");
    await expect(DuckDBFlowStore.open(damaged)).rejects.toThrow(/cannot be opened as a DuckDB database/);
    expect((await openStore(tempDir(), { blockPoolBytes: 256 * 2 ** 20 })).blockPool).toBe("256.0 MiB");
    expect((await openStore(tempDir(), { blockPoolBytes: 0 })).blockPool).toBe("0 bytes");
    await expect(DuckDBFlowStore.open(tempDir(), { blockPoolBytes: -1 })).rejects.toThrow(/block pool -1 is not a whole number of bytes ≥ 0/);
    await expect(DuckDBFlowStore.open(tempDir(), { blockPoolBytes: 0.5 })).rejects.toThrow(/block pool 0.5 is not a whole number of bytes ≥ 0/);
  });

  it("stores a re-sent batch once, across a reopen, and refuses a batch after a gap", async () => {
    const dir = tempDir();
    const store = await openStore(dir);
    const batch = (id: bigint, n = 10) => ({ node: "node-a", instanceId: "agent-1", batchId: id, records: records(n, T0 + Number(id) * 1000, 1) });
    expect(await store.lastBatchId("agent-1")).toBeUndefined();
    // Two appends in one group commit, then the second again while it may be in flight.
    const [a, b, c] = await Promise.all([store.append([batch(1n)]), store.append([batch(2n)]), store.append([batch(2n)])]);
    expect([a, b, c]).toEqual([[true], [true], [false]]);
    expect(await store.lastBatchId("agent-1")).toBe(2n);
    await expect(store.append([batch(4n)])).rejects.toThrow(/batch 4 of agent instance agent-1 does not follow batch 2/);
    expect(store.status().records).toBe(20n);
    await store.close();
    open.pop();
    const again = await openStore(dir);
    expect(await again.lastBatchId("agent-1")).toBe(2n);
    expect(await again.append([batch(2n)])).toEqual([false]);
    expect(await again.append([batch(3n)])).toEqual([true]);
    expect((await all(again)).length).toBe(30);
  });

  it("rejects a batch it cannot write, stores none of its rows, says why in status, and takes the batch again after", async () => {
    const store = await openStore(tempDir());
    const good = records(100, T0, 10);
    // A value no column can hold (ifindex is a uint32 on the wire) fails the write halfway through the rows.
    const bad = good.map((r, i) => (i === 50 ? { ...r, ifindex: 2 ** 33 } : r));
    await expect(store.append([{ node: "n", instanceId: "i", batchId: 1n, records: bad }])).rejects.toThrow(/flow store .*flows\.duckdb: write failed: .*range/);
    expect(store.status()).toMatchObject({ records: 0n, error: expect.stringMatching(/^write failed: .*range/) as unknown });
    expect(await store.lastBatchId("i")).toBeUndefined();
    expect(await store.append([{ node: "n", instanceId: "i", batchId: 1n, records: good }])).toEqual([true]);
    expect(store.status()).toMatchObject({ records: 100n, error: "" });
    expect(await all(store)).toEqual(good);
  });

  it("drops whole days beyond the retention age, oldest first, and counts them across a reopen", async () => {
    const dir = tempDir();
    let now = T0;
    const store = await openStore(dir, { retentionMs: 2 * DAY_MS, now: () => now });
    for (let d = 0; d < 4; d++) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(d + 1), records: records(100 + d, T0 - (3 - d) * DAY_MS, 1000) }]);
    }
    expect(store.status().records).toBe(100n + 101n + 102n + 103n);
    // Now is noon: only the day of T0-3d has ended more than 2 days ago; the day of
    // T0-2d still holds a record younger than that (its evening).
    expect(await store.enforceRetention()).toEqual({ records: 100n, partitions: 1n });
    expect(store.status()).toMatchObject({ records: 306n, retentionDroppedRecords: 100n, retentionDroppedPartitions: 1n });
    expect((await all(store)).every((r) => Number(r.endTime!.seconds) * 1000 >= T0 - 2.5 * DAY_MS)).toBe(true);
    now += DAY_MS;
    expect(await store.enforceRetention()).toEqual({ records: 101n, partitions: 1n });
    await store.close();
    open.pop();
    const again = await openStore(dir);
    expect(again.status()).toMatchObject({ records: 205n, retentionDroppedRecords: 201n, retentionDroppedPartitions: 2n });
  });

  it("drops the oldest days while the store is larger than the retention size, never the newest", async () => {
    const dir = tempDir();
    const store = await openStore(dir, { retentionBytes: 1n });
    for (let d = 0; d < 3; d++) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(d + 1), records: records(5000, T0 - (2 - d) * DAY_MS, 10, d) }]);
    }
    expect(await store.enforceRetention()).toEqual({ records: 10_000n, partitions: 2n });
    const left = await all(store);
    expect(left.length).toBe(5000);
    expect(Math.min(...left.map((r) => Number(r.endTime!.seconds)))).toBeGreaterThanOrEqual(Math.floor(T0 / 1000) - 1);
  });

  it("answers filtered and `last` queries exactly as the in-memory history does", async () => {
    const input = records(20_000, T0 - DAY_MS / 2, 3);
    const store = await openStore(tempDir());
    for (let i = 0; i < input.length; i += 1000) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(i / 1000 + 1), records: input.slice(i, i + 1000) }]);
    }
    const history = new FlowHistory({ capacity: input.length });
    history.append(input);
    const cases: { allow: Partial<FlowFilter>[]; deny?: Partial<FlowFilter>[]; last?: number; sinceMs?: number; untilMs?: number }[] = [
      { allow: [{ namespace: ["shop"], verdict: [Verdict.VERDICT_DROPPED] }] },
      { allow: [{ sourcePod: ["shop/web-*"] }, { destinationNamespace: ["db"], protocol: ["udp"] }] },
      { allow: [{ pod: ["postgres-0"], port: [8080] }], deny: [{ verdict: [Verdict.VERDICT_AUDIT] }] },
      { allow: [{ node: ["node-b"], direction: [1] }], last: 50 },
      { allow: [{ label: ["app=web"] }], last: 7, sinceMs: T0 - DAY_MS / 2 + 20_000, untilMs: T0 - DAY_MS / 2 + 40_000 },
      { allow: [], last: 100 },
      { allow: [{ sourceIp: ["203.0.113.0/24"] }, { destinationIp: ["203.0.113.9"] }], sinceMs: T0 - DAY_MS / 2 + 30_000 },
    ];
    for (const c of cases) {
      const allow = c.allow.map((f) => FlowFilter.fromPartial(f));
      const deny = (c.deny ?? []).map((f) => FlowFilter.fromPartial(f));
      const predicate = compileRequest(allow, deny);
      const ts = (ms: number | undefined) => ms === undefined ? undefined : { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
      const expected = history.query({ predicate, last: c.last ?? 0, since: ts(c.sinceMs), until: ts(c.untilMs) });
      const got = await all(store, { allow, deny, predicate, ...(c.last ? { last: c.last } : {}),
        ...(c.sinceMs !== undefined ? { since: ts(c.sinceMs) } : {}), ...(c.untilMs !== undefined ? { until: ts(c.untilMs) } : {}) });
      expect(got.length, JSON.stringify(c.allow)).toBeGreaterThan(0);
      expect(got, JSON.stringify(c)).toEqual(expected);
    }
  });

  it("rewrites each ended day in cluster order in its upkeep, again after many late rows, and answers every query as the in-memory history does", async () => {
    const dir = tempDir();
    // 2.3 days up to T0 - 0.2 d: the days of T0 - 2 d and T0 - 1 d have ended at T0, T0's has not.
    const input = records(20_000, T0 - 2.5 * DAY_MS, 10_000);
    const store = await openStore(dir, { now: () => T0 });
    for (let i = 0; i < input.length; i += 1000) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(i / 1000 + 1), records: input.slice(i, i + 1000) }]);
    }
    const history = new FlowHistory({ capacity: 30_000 });
    history.append(input);
    const { DROPPED, AUDIT, FORWARDED } = { DROPPED: Verdict.VERDICT_DROPPED, AUDIT: Verdict.VERDICT_AUDIT, FORWARDED: Verdict.VERDICT_FORWARDED };
    const cases: { allow: Partial<FlowFilter>[]; last?: number }[] = [
      { allow: [{ namespace: ["shop"], verdict: [DROPPED] }] },
      { allow: [{ namespace: ["db"], verdict: [DROPPED, AUDIT] }, { sourcePod: ["shop/web-*"], verdict: [FORWARDED] }] },
      { allow: [{ destinationNamespace: ["o'hara"], sourceNamespace: ["shop"], verdict: [AUDIT] }] },
      { allow: [{ verdict: [DROPPED] }], last: 30 },
      { allow: [{ namespace: ["shop"] }], last: 40 },
      { allow: [{ namespace: ["nowhere"], verdict: [DROPPED] }] },
    ];
    const check = async (when: string) => {
      for (const c of cases) {
        const allow = c.allow.map((f) => FlowFilter.fromPartial(f));
        const predicate = compileRequest(allow, []);
        const got = await all(store, { allow, predicate, ...(c.last ? { last: c.last } : {}) });
        expect(got, `${when}: ${JSON.stringify(c)}`).toEqual(history.query({ predicate, last: c.last ?? 0 }));
      }
    };
    /** Whether each day table's rows are in cluster order (verdict, lo: `cluster >> 12`), and the rows each day had when rewritten. */
    const layout = async () => {
      const db = await DuckDBInstance.create(":memory:");
      const c = await db.connect();
      await c.run(`ATTACH '${path.join(dir, "flows.duckdb")}' AS s (READ_ONLY)`);
      const tables = (await c.runAndReadAll("SELECT table_name AS t FROM information_schema.tables WHERE table_catalog = 's' AND table_name LIKE 'flows_%' ORDER BY 1"))
        .getRowObjects().map((r) => String(r.t));
      const ordered: Record<string, boolean> = {};
      for (const t of tables) {
        const out = (await c.runAndReadAll(`SELECT count(*) AS n FROM (SELECT cluster >> 12 < lag(cluster >> 12) OVER (ORDER BY rowid) AS back FROM s.${t}) WHERE back`)).getRowObjects();
        ordered[t] = out[0]!.n === 0n;
      }
      const compacted = (await c.runAndReadAll("SELECT day, rows FROM s.compacted ORDER BY day")).getRowObjects().map((r) => [Number(r.day), Number(r.rows)]);
      c.closeSync();
      db.closeSync();
      return { ordered, compacted };
    };
    await check("as appended");
    await store.enforceRetention();
    await check("in cluster order");
    const day = (ms: number) => Math.floor(ms / DAY_MS);
    const rowsOf = (d: number) => input.filter((r) => day(Number(r.endTime!.seconds) * 1000) === d).length;
    const [d1, d2] = [day(T0) - 2, day(T0) - 1];
    // A few late rows for an ended day: appended after the ordered ones, found all the same; not worth a rewrite.
    const late = records(100, T0 - 1.5 * DAY_MS + 7, 60_000, 9);
    await store.append([{ node: "n", instanceId: "i", batchId: 21n, records: late }]);
    history.append(late);
    await store.enforceRetention();
    await check("with late rows");
    await store.close();
    open.pop();
    expect(await layout()).toEqual({
      ordered: { flows_20261130: true, flows_20261201: false, flows_20261202: false },
      compacted: [[d1, rowsOf(d1)], [d2, rowsOf(d2)]],
    });
    // Many late rows (a tenth of the day or more): rewritten again at the next upkeep, after a reopen.
    const again = await openStore(dir, { now: () => T0 });
    open.pop();
    const more = records(1000, T0 - 1.5 * DAY_MS + 11, 60, 10);
    await again.append([{ node: "n", instanceId: "i", batchId: 22n, records: more }]);
    await again.enforceRetention();
    await again.close();
    expect(await layout()).toEqual({
      ordered: { flows_20261130: true, flows_20261201: true, flows_20261202: false },
      compacted: [[d1, rowsOf(d1)], [d2, rowsOf(d2) + 1100]],
    });
  });

  it("hands the engine a verdict query's cluster range as a comparison of the column itself, which a row group's min/max can skip", async () => {
    const dir = tempDir();
    const store = await openStore(dir);
    await store.append([{ node: "n", instanceId: "i", batchId: 1n, records: records(100, T0, 10) }]);
    await store.close();
    open.pop();
    // Stand-in dictionaries: the statement's shape does not depend on which ids match.
    const where = whereClause([FlowFilter.fromPartial({ namespace: ["shop"], verdict: [Verdict.VERDICT_DROPPED] })], {},
      { endpointIds: () => [1, 2], stringIds: () => [], namespaceOf: (id) => id }, packedSql);
    const db = await DuckDBInstance.create(":memory:");
    const c = await db.connect();
    await c.run(`ATTACH '${path.join(dir, "flows.duckdb")}' AS s (READ_ONLY)`);
    const plan = (await c.runAndReadAll(`EXPLAIN SELECT * FROM s.flows_20261202 WHERE ${where.sql}`, where.params)).getRows().map((r) => String(r[1])).join("\n");
    c.closeSync();
    db.closeSync();
    // The scan's own filter, as DuckDB prints one it checks against zone maps; a cast of the
    // column (what a BIGINT parameter made) is an expression tested on every row instead.
    expect(plan.replace(/[│\s]+/g, " ")).toMatch(/Filters: cluster>=\d+ AND cluster<=\d+/);
    expect(plan).not.toContain("CAST(cluster");
  });

  it("stores a record's times exactly at their edges: epoch, ms, hour and day boundaries, the 32-bit halves, the last nanosecond it holds; refuses one beyond, naming the column", async () => {
    const store = await openStore(tempDir());
    const at = (seconds: number, nanos: number) => ({ seconds: BigInt(seconds), nanos });
    const H = 3600, D = 86_400, day = Math.floor(T0 / 1000 / D) * D;
    const times = [
      at(0, 0), at(0, 1), at(1, 999_999_999), at(day - 1, 999_999_999), at(day, 0), at(day + H - 1, 999_999_999), at(day + H, 0),
      at(day + 5 * H, 123_000_000), at(day + 5 * H, 999_000_000), at(day + 5 * H + 7, 1_000_001), at(2 ** 32 - 1, 999_999_999), at(2 ** 32, 0),
      at(2 ** 32 + 65_535, 999_999_999), at(2 ** 33 - 1, 999_999_999), at(2 ** 33, 0), at(9_223_372_036, 854_775_807),
    ];
    const base = records(times.length, T0, 1);
    const input = base.map((r, i) => ({ ...r, endTime: times[i]!, startTime: times[Math.max(0, i - 1)]! }));
    await store.append([{ node: "n", instanceId: "i", batchId: 1n, records: input }]);
    expect(await all(store)).toEqual(input);
    // Each refused batch is stored not at all, so the next try is batch 2 again.
    for (const [column, t] of [["end_time", at(9_223_372_036, 854_775_808)], ["end_time", at(-1, 999_999_999)], ["start_time", at(day, 1e9)], ["start_time", at(day, -1)], ["end_time", at(day, 0.5)]] as const) {
      const bad = { ...base[0]!, endTime: column === "end_time" ? t : at(day, 0), startTime: column === "start_time" ? t : at(day, 0) };
      await expect(store.append([{ node: "n", instanceId: "i", batchId: 2n, records: [bad] }]), `${column} ${t.seconds} ${t.nanos}`)
        .rejects.toThrow(`${column} ${t.seconds} s ${t.nanos} ns is outside the store's range`);
    }
    expect(await all(store)).toEqual(input);
  });

  it("compares every time bound exactly to the nanosecond: a record at since, until or endNotAfter is kept, one a nanosecond beyond is not", async () => {
    // Ends 1 ns apart around a bound inside a second (a float of ms cannot tell them apart).
    const base = { seconds: BigInt(T0 / 1000), nanos: 123_456_789 };
    const at = (dn: number) => ({ seconds: base.seconds, nanos: base.nanos + dn });
    const input = records(5, T0, 0).map((r, i) => ({ ...r, startTime: at(i - 2), endTime: at(i - 2), sequence: BigInt(i) }));
    const store = await openStore(tempDir());
    await store.append([{ node: "n", instanceId: "i", batchId: 1n, records: input }]);
    const seqs = async (q: Partial<StoreQuery>) => (await all(store, q)).map((r) => Number(r.sequence));
    await expectNanosecondBounds(seqs, base, at);
  });

  it("streams `last N` in chunks from one snapshot: pages far smaller than N, days crossed, commits meanwhile not seen", async () => {
    const input = records(9000, T0 - 2 * DAY_MS, 25_000, 3);
    const store = await openStore(tempDir(), { newestPageRows: 64 });
    for (let i = 0; i < input.length; i += 1000) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(i / 1000 + 1), records: input.slice(i, i + 1000) }]);
    }
    const history = new FlowHistory({ capacity: input.length });
    history.append(input);
    const allow = [FlowFilter.fromPartial({ namespace: ["shop"] })];
    const deny = [FlowFilter.fromPartial({ verdict: [Verdict.VERDICT_AUDIT] })];
    const predicate = compileRequest(allow, deny);
    for (const last of [1, 63, 64, 65, 1500, 5000, 9000]) {
      const chunks: number[] = [];
      const got: FlowRecord[] = [];
      for await (const chunk of store.query({ allow, deny, predicate, last })) { chunks.push(chunk.length); got.push(...chunk); }
      expect(got, `last ${last}`).toEqual(history.query({ predicate, last }));
      // Streamed as read (a chunk per engine vector at most), never N records at once.
      expect(Math.max(...chunks)).toBeLessThanOrEqual(2048);
    }
    // A commit between the first chunk and the rest changes nothing in this answer.
    const expected = history.query({ predicate, last: 5000 });
    const got: FlowRecord[] = [];
    let appended = false;
    for await (const chunk of store.query({ allow, deny, predicate, last: 5000 })) {
      got.push(...chunk);
      if (!appended) {
        appended = true;
        const newer = records(500, T0 + DAY_MS, 10, 4).map((r, k) => ({ ...r, sequence: BigInt(9000 + k) }));
        await store.append([{ node: "n", instanceId: "i", batchId: 10n, records: newer }]);
      }
    }
    expect(got).toEqual(expected);
    expect((await all(store, { allow, deny, predicate, last: 5000 })).slice(-1)[0]!.sequence).toBeGreaterThanOrEqual(9000n);
  });

  it("finds the N-th newest match wherever it falls: at a vector's or a page's edge, with every row or every other row matching, or past the oldest", async () => {
    // Pass 1 keeps one key, not one per match: the answers must stay exact when the N-th
    // match is the first or last row of a 2,048-row vector or of a page (3,000 rows here).
    const input = records(12_000, T0 - DAY_MS / 4, 7, 6);
    const store = await openStore(tempDir(), { newestPageRows: 3000 });
    for (let i = 0; i < input.length; i += 3000) {
      await store.append([{ node: "n", instanceId: "i", batchId: BigInt(i / 3000 + 1), records: input.slice(i, i + 3000) }]);
    }
    const history = new FlowHistory({ capacity: input.length });
    history.append(input);
    const odd = (r: FlowRecord) => r.sequence % 2n === 1n;
    const cases: [(r: FlowRecord) => boolean, number[]][] = [
      [() => true, [1, 2047, 2048, 2049, 3000, 3001, 6000, 11_999, 12_000, 12_001]],
      [odd, [1024, 1500, 1501, 3000, 5999, 6000, 6001]],
    ];
    for (const [predicate, lasts] of cases) {
      for (const last of lasts) {
        const got = await all(store, { predicate, last });
        const expected = history.query({ predicate, last });
        expect(got.length, `last ${last}`).toBe(expected.length);
        expect(got[0]?.sequence, `last ${last}`).toBe(expected[0]?.sequence);
        expect(got.at(-1)?.sequence, `last ${last}`).toBe(expected.at(-1)?.sequence);
      }
    }
  });

  it("stores an enriched columnar batch exactly as the records built from it (the control plane's path vs the record path)", async () => {
    // Three days, ICMP and IPv6 rows, refused rows left out of `rows`, several batches.
    const input = records(12_000, T0 - 2 * DAY_MS, 17_000, 5);
    const viaColumns = await openStore(tempDir());
    const viaRecords = await openStore(tempDir());
    for (let from = 0, id = 1n; from < input.length; from += 3000, id++) {
      const b = enrichedFromRecords("node-a", input.slice(from, from + 3000));
      const c = b.columns;
      for (let i = 0; i < c.rows; i += 11) { c.protocols[i] = i % 2 === 0 ? 1 : 58; c.sourcePorts[i] = 3; c.destinationPorts[i] = 1; }
      for (let i = 5; i < c.rows; i += 13) { c.ipVersions[i] = 6; b.sourceIps[i] = "fd00::1"; }
      for (let i = 0; i < c.rows; i += 29) c.interfaces[i] = c.interfaceNames.length; // a name the batch lacks: ""
      b.rows = b.rows.filter((i) => i % 9 !== 4);
      expect(await viaColumns.append([{ node: "node-a", instanceId: "i", batchId: id, columns: b }])).toEqual([true]);
      expect(await viaRecords.append([{ node: "node-a", instanceId: "i", batchId: id, records: recordsOf(b) }])).toEqual([true]);
    }
    expect(viaColumns.status().records).toBe(viaRecords.status().records);
    const expected = await all(viaRecords);
    expect(expected.length).toBe(12_000 - 4 * 333);
    expect(await all(viaColumns)).toEqual(expected);
    const allow = [FlowFilter.fromPartial({ namespace: ["shop"], verdict: [Verdict.VERDICT_DROPPED] })];
    const predicate = compileRequest(allow, []);
    for (const q of [{ allow, predicate }, { allow, predicate, last: 40 }, { last: 700 }]) {
      expect(await all(viaColumns, q)).toEqual(await all(viaRecords, q));
    }
  });

  it("refuses a batch with a value its packed field cannot hold, naming the field, by either way in (records, columns), and stores none of it", async () => {
    const store = await openStore(tempDir());
    const columnsWith = (change: (b: ReturnType<typeof enrichedFromRecords>) => void) => {
      const b = enrichedFromRecords("node-a", records(10, T0, 1));
      change(b);
      return b;
    };
    const cases: [string, StoredBatch, RegExp][] = [
      ["a record's source port", { node: "n", instanceId: "r", batchId: 1n, records: records(10, T0, 1).map((r, i) => (i === 3 ? { ...r, l4: { ...r.l4!, sourcePort: 70000 } } : r)) },
        /sport 70000 does not fit the store's 16-bit field \(0–65535\)/],
      ["a record's point", { node: "n", instanceId: "r", batchId: 1n, records: records(10, T0, 1).map((r, i) => (i === 3 ? { ...r, point: 16 as ObservationPoint } : r)) },
        /point 16 does not fit the store's 4-bit field/],
      ["a row's port", { node: "n", instanceId: "c", batchId: 1n, columns: columnsWith((b) => { b.columns.protocols[2] = 6; b.columns.destinationPorts[2] = 65536; }) },
        /dport 65536 does not fit the store's 16-bit field/],
      ["an ICMP row's type (its source port column)", { node: "n", instanceId: "c", batchId: 1n, columns: columnsWith((b) => { b.columns.protocols[2] = 1; b.columns.sourcePorts[2] = 300; }) },
        /icmp_type 300 does not fit the store's 8-bit field \(0–255\)/],
      ["an ICMPv6 row's code (its destination port column)", { node: "n", instanceId: "c", batchId: 1n, columns: columnsWith((b) => { b.columns.protocols[2] = 58; b.columns.sourcePorts[2] = 3; b.columns.destinationPorts[2] = 256; }) },
        /icmp_code 256 does not fit the store's 8-bit field/],
      ["a row's point", { node: "n", instanceId: "c", batchId: 1n, columns: columnsWith((b) => { b.columns.points[2] = 16; }) },
        /point 16 does not fit the store's 4-bit field/],
    ];
    for (const [what, batch, error] of cases) await expect(store.append([batch]), what).rejects.toThrow(error);
    expect(store.status().records).toBe(0n);
    await store.close();
  });

  it("takes filter values only as parameters: quotes and SQL in values match literally and change nothing", async () => {
    const input = records(2000, T0, 5);
    const store = await openStore(tempDir());
    await store.append([{ node: "n", instanceId: "i", batchId: 1n, records: input }]);
    const attacks = ["o'hara", "' OR 1=1 --", "x'); DROP TABLE strings; --", "shop' OR namespace <> '", "%", "*", "\\", "\u0000"];
    for (const value of attacks) {
      for (const filter of [{ namespace: [value] }, { pod: [value] }, { sourcePod: [`${value}/*`] }, { node: [value] }]) {
        const allow = [FlowFilter.fromPartial(filter)];
        const predicate = compileRequest(allow, []);
        const got = await all(store, { allow, predicate });
        expect(got, `${JSON.stringify(filter)}`).toEqual(input.filter(predicate));
      }
    }
    // The hostile names themselves round-trip and are found by an exact filter.
    const hostile = [FlowFilter.fromPartial({ pod: ["o'hara/x'); DROP TABLE strings; --"] })];
    const found = await all(store, { allow: hostile, predicate: compileRequest(hostile, []) });
    expect(found.length).toBeGreaterThan(0);
    expect(found.length).toBe(input.filter(compileRequest(hostile, [])).length);
    expect(store.status().records).toBe(2000n);
  });

  it("opens a store written by schema version 1 (test/fixtures/store-v1) and keeps all its data: records, batch ids, days, then takes new batches", async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, "flows.duckdb"), zlib.gunzipSync(fs.readFileSync(path.join(import.meta.dirname, "fixtures/store-v1/flows.duckdb.gz"))));
    const stored = [...v1Records(1), ...v1Records(2), ...v1Records(3), ...recordsOf(enrichedFromRecords("node-b", v1Records(4)))];
    const byEnd = (a: FlowRecord, b: FlowRecord) => compareTimestamps(a.endTime!, b.endTime!);
    const expected = [...stored].sort(byEnd);
    const store = await openStore(dir);
    expect(store.status()).toMatchObject({ records: 1200n, error: "" });
    expect(await all(store)).toEqual(expected);
    expect(await store.lastBatchId("v1-a")).toBe(3n);
    expect(await store.lastBatchId("v1-b")).toBe(1n);
    // Filters and bounds still narrow the migrated rows exactly.
    const allow = [FlowFilter.fromPartial({ namespace: ["db"], verdict: [Verdict.VERDICT_DROPPED] })];
    const predicate = compileRequest(allow, []);
    const bound = expected[700]!.endTime!;
    expect(await all(store, { allow, predicate, endNotAfter: bound }))
      .toEqual(expected.filter((r) => predicate(r) && compareTimestamps(r.endTime!, bound) <= 0));
    expect(await all(store, { last: 5 })).toEqual(expected.slice(-5));
    // A re-send of a migrated batch is a duplicate; the next one is stored; all survives a reopen.
    const next = records(10, V1_T0 + 1000, 1);
    expect(await store.append([{ node: "node-a", instanceId: "v1-a", batchId: 3n, records: v1Records(3) }])).toEqual([false]);
    expect(await store.append([{ node: "node-a", instanceId: "v1-a", batchId: 4n, records: next }])).toEqual([true]);
    await store.close();
    open.pop();
    const again = await openStore(dir);
    expect(again.status().records).toBe(1210n);
    expect(await all(again)).toEqual([...expected, ...next]);
  });

  it("refuses to migrate a schema version 1 row that a packed field cannot hold, naming it, and leaves the file at version 1 whole", async () => {
    const dir = tempDir();
    const file = path.join(dir, "flows.duckdb");
    fs.writeFileSync(file, zlib.gunzipSync(fs.readFileSync(path.join(import.meta.dirname, "fixtures/store-v1/flows.duckdb.gz"))));
    const db = await DuckDBInstance.create(file);
    const c = await db.connect();
    const table = String((await c.runAndReadAll("SELECT min(table_name) AS t FROM information_schema.tables WHERE table_name LIKE 'flows_%'")).getRowObjects()[0]!.t);
    await c.run(`UPDATE ${table} SET sport = 70000 WHERE rowid = 5`);
    c.closeSync();
    db.closeSync();
    await expect(DuckDBFlowStore.open(dir)).rejects.toThrow(
      new RegExp(`flow store ${file}: schema 1 could not be migrated to 2, the file is left at 1: .*a schema 1 row has sport 70000, wider than schema 2 keeps \\(16 bits\\)`));
    const after = await DuckDBInstance.create(file);
    const a = await after.connect();
    const version = (await a.runAndReadAll("SELECT max(version) AS v FROM bulkhead_schema")).getRowObjects()[0]!.v;
    const columns = (await a.runAndReadAll(`SELECT count(*) AS n FROM information_schema.columns WHERE table_name = '${table}'`)).getRowObjects()[0]!.n;
    const tables = (await a.runAndReadAll("SELECT count(*) AS n FROM information_schema.tables WHERE table_name LIKE 'flows_%'")).getRowObjects()[0]!.n;
    a.closeSync();
    after.closeSync();
    expect({ version, columns, tables }).toEqual({ version: 1, columns: 28n, tables: 2n });
  });

  it("opens a store written by schema version 2 (test/fixtures/store-v2), migrates it to 3 and keeps all its data: records, batch ids, days, filtered answers, a reopen", async () => {
    const dir = tempDir();
    const file = path.join(dir, "flows.duckdb");
    fs.writeFileSync(file, zlib.gunzipSync(fs.readFileSync(path.join(import.meta.dirname, "fixtures/store-v2/flows.duckdb.gz"))));
    const stored = [...v2Records(1), ...v2Records(2), ...recordsOf(enrichedFromRecords("node-b", v2Records(3)))];
    const expected = [...stored].sort((a, b) => compareTimestamps(a.endTime!, b.endTime!));
    // An hour into the fixture's second day: its first has ended, so the upkeep rewrites it in cluster order.
    const now = () => V2_T0 + 3_600_000;
    const store = await openStore(dir, { now });
    expect(store.status()).toMatchObject({ records: 360n, error: "" });
    expect(await all(store)).toEqual(expected);
    expect(await store.lastBatchId("v2-a")).toBe(2n);
    expect(await store.lastBatchId("v2-b")).toBe(1n);
    // Filters on verdict and namespace are narrowed by the migrated `cluster` column: each must still find exactly its rows.
    const { DROPPED, AUDIT, FORWARDED } = { DROPPED: Verdict.VERDICT_DROPPED, AUDIT: Verdict.VERDICT_AUDIT, FORWARDED: Verdict.VERDICT_FORWARDED };
    const cases: { allow: Partial<FlowFilter>[]; last?: number }[] = [
      { allow: [{ namespace: ["db"], verdict: [DROPPED] }] },
      { allow: [{ namespace: ["kube-system"] }, { sourceNamespace: ["payments"], verdict: [AUDIT] }] },
      { allow: [{ destinationNamespace: ["shop"], verdict: [FORWARDED, AUDIT] }] },
      { allow: [{ verdict: [DROPPED] }], last: 7 },
      { allow: [{ namespace: ["nowhere"] }] },
    ];
    const check = async (s: DuckDBFlowStore, when: string, rows: readonly FlowRecord[]) => {
      for (const c of cases) {
        const allow = c.allow.map((f) => FlowFilter.fromPartial(f));
        const predicate = compileRequest(allow, []);
        const want = rows.filter(predicate);
        expect(await all(s, { allow, predicate, ...(c.last ? { last: c.last } : {}) }), `${when}: ${JSON.stringify(c)}`)
          .toEqual(c.last ? want.slice(-c.last) : want);
      }
    };
    await check(store, "migrated", expected);
    await store.enforceRetention();
    await check(store, "ended day in cluster order", expected);
    expect(await all(store)).toEqual(expected);
    // A re-send of a migrated batch is a duplicate; the next one is stored; all survives a reopen.
    const next = records(10, V2_T0 + 1000, 1);
    expect(await store.append([{ node: "node-a", instanceId: "v2-a", batchId: 2n, records: v2Records(2) }])).toEqual([false]);
    expect(await store.append([{ node: "node-a", instanceId: "v2-a", batchId: 3n, records: next }])).toEqual([true]);
    await store.close();
    open.pop();
    const db = await DuckDBInstance.create(file);
    const c = await db.connect();
    const version = (await c.runAndReadAll("SELECT max(version) AS v FROM bulkhead_schema")).getRowObjects()[0]!.v;
    const withCluster = (await c.runAndReadAll("SELECT table_name AS t FROM information_schema.columns WHERE column_name = 'cluster' AND table_name LIKE 'flows_%' ORDER BY 1"))
      .getRowObjects().map((r) => String(r.t));
    c.closeSync();
    db.closeSync();
    expect({ version, withCluster }).toEqual({ version: 3, withCluster: ["flows_20261202", "flows_20261203"] });
    const again = await openStore(dir, { now });
    expect(again.status().records).toBe(370n);
    const after = [...expected, ...next].sort((a, b) => compareTimestamps(a.endTime!, b.endTime!));
    expect(await all(again)).toEqual(after);
    await check(again, "reopened", after);
  });

  it("refuses a damaged file by name and leaves it as it was", async () => {
    const dir = tempDir();
    const file = path.join(dir, "flows.duckdb");
    const garbage = Buffer.alloc(64 * 1024, 0x5a);
    fs.writeFileSync(file, garbage);
    await expect(DuckDBFlowStore.open(dir)).rejects.toThrow(new RegExp(`flow store ${file}: cannot be opened as a DuckDB database .*never reset automatically`));
    expect(fs.readFileSync(file).equals(garbage)).toBe(true);
  });

  it("refuses a DuckDB file of something else by name", async () => {
    const dir = tempDir();
    const file = path.join(dir, "flows.duckdb");
    const foreign = await DuckDBInstance.create(file);
    const c = await foreign.connect();
    await c.run("CREATE TABLE users (name VARCHAR)");
    c.closeSync();
    foreign.closeSync();
    await expect(DuckDBFlowStore.open(dir)).rejects.toThrow(new RegExp(`flow store ${file}: is a DuckDB database of something else \\(tables users; no bulkhead_schema\\)`));
  });

  it("refuses a schema from a newer version, naming both versions", async () => {
    const dir = tempDir();
    const store = await openStore(dir);
    await store.close();
    open.pop();
    const file = path.join(dir, "flows.duckdb");
    const db = await DuckDBInstance.create(file);
    const c = await db.connect();
    await c.run("INSERT INTO bulkhead_schema (version, product) VALUES (?, 'bulkhead flow store')", [SCHEMA_VERSION + 1]);
    c.closeSync();
    db.closeSync();
    await expect(DuckDBFlowStore.open(dir)).rejects.toThrow(
      `flow store ${file}: schema version ${SCHEMA_VERSION + 1} was written by a newer bulkhead; this one reads up to version ${SCHEMA_VERSION}`);
  });
});

describe("store flags of bulkhead controlplane", () => {
  const args = (...extra: string[]) => parseControlPlaneArgs(["--manifests", "/m", "--allow-unauthenticated", ...extra], {});

  it("keeps the history in DIR/flows.duckdb with --data-dir, in memory only without", () => {
    expect(args().store).toEqual({ kind: "memory" });
    expect(args("--data-dir", "/var/lib/bulkhead").store).toEqual({ kind: "duckdb", dataDir: "/var/lib/bulkhead" });
    expect(args("--data-dir", "/d", "--retention", "7d", "--retention-size", "20GiB").store)
      .toEqual({ kind: "duckdb", dataDir: "/d", retentionMs: 7 * DAY_MS, retentionBytes: 20n * 1024n ** 3n });
    expect(args("--data-dir", "/d", "--retention-size", "500MB").store).toMatchObject({ retentionBytes: 500_000_000n });
  });

  it("refuses contradictions and values it cannot honour, naming the flag", () => {
    expect(() => args("--store", "memory", "--data-dir", "/d")).toThrow("--data-dir: not used by --store memory");
    expect(() => args("--store", "duckdb")).toThrow("--store duckdb: needs --data-dir DIR");
    expect(() => args("--store", "sqlite", "--data-dir", "/d")).toThrow('--store: "sqlite" is not duckdb, memory or clickhouse://HOST:PORT/DB');
    expect(() => args("--data-dir", "/d", "--retention", "12h")).toThrow('--retention: "12h" is under a day');
    expect(() => args("--data-dir", "/d", "--retention-size", "20 gigs")).toThrow('--retention-size: "20 gigs" is not a size');
    expect(() => args("--retention", "7d")).toThrow("--retention: not used by --store memory");
    expect(() => args("--data-dir", "/d", "--store-credentials", "/c")).toThrow("--store-credentials: only for --store clickhouse://HOST:PORT/DB");
    // Not a store flag, but a flag the control plane once took and ignored: refused, saying where it belongs.
    expect(() => args("--drain-interval", "500")).toThrow("--drain-interval: set it on the agents (bulkhead agent --drain-interval MS)");
  });

  it("takes a ClickHouse store by URL with credentials from a file, never with --data-dir", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bhflags-"));
    try {
      const credentials = path.join(dir, "credentials");
      fs.writeFileSync(credentials, "bulkhead:pa:ss\n");
      expect(args("--store", "clickhouse://127.0.0.1:8123/flows", "--store-credentials", credentials, "--retention", "7d").store).toMatchObject({
        kind: "clickhouse", retentionMs: 7 * DAY_MS,
        location: { httpUrl: "http://127.0.0.1:8123", database: "flows", username: "bulkhead", password: "pa:ss" },
      });
      expect(() => args("--store", "clickhouse://127.0.0.1:8123/flows", "--data-dir", "/d")).toThrow("--data-dir: not used with a ClickHouse store");
      expect(() => args("--store", "clickhouse://u:p@127.0.0.1:8123/flows")).toThrow("the URL holds credentials");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
