// The control plane's column path (issue 11, step 4): a FlowColumns batch is admitted,
// enriched, attributed and stored from its columns (Enricher.admitColumns,
// FlowHistory.appendColumns, FlowMapStore.addColumns). Proven against the record path it
// replaces: the same rows through both give the same history, flow map and refusals; and
// on its own for what its caches must not get wrong: a reused pod IP, a pod's metadata
// changing between batches, the agent's claims checked per row.
import { once } from "node:events";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { AccessControl } from "../controlplane/access/control.js";
import { parseKubeObject, type KubeObject } from "../controlplane/metadata/objects.js";
import type { MetadataSink, MetadataSource, ObjectEvent } from "../controlplane/metadata/source.js";
import { splitNanoseconds } from "../controlplane/store/enriched-columns.js";
import { DuckDBFlowStore } from "../controlplane/store/duckdb.js";
import type { FlowStore } from "../controlplane/store/durable.js";
import { Enricher } from "../controlplane/cluster/enrich.js";
import { ClusterState } from "../controlplane/cluster/state.js";
import { PolicyCompiler } from "../controlplane/policy/compile.js";
import { clusterOf } from "../controlplane/policy/model.js";
import { ColumnAttribution } from "../controlplane/ingest/attribution.js";
import { MAX_IDS, Mirror, WireIds } from "../controlplane/ingest/wire.js";
import { allocColumns, recordAt, writeAddress, type FlowColumns } from "../flowcolumns/columns.js";
import { ObservationPoint, Verdict, VerdictReason, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { seededRandom } from "./harness/seeded-random.js";

const SECOND = 1_000_000_000n;
/** 2024-05-01T12:00:00Z in ns and ms. */
const T0 = BigInt(Date.UTC(2024, 4, 1, 12)) * 1_000_000n;
const T0_MS = Number(T0 / 1_000_000n);
const at = (seconds: number) => T0 + BigInt(seconds) * SECOND;
const rfc3339 = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();
const FROM = ObservationPoint.OBSERVATION_POINT_FROM_POD;
const TO = ObservationPoint.OBSERVATION_POINT_TO_POD;

function object(doc: Record<string, unknown>): KubeObject {
  const parsed = parseKubeObject(doc);
  if (!parsed) throw new Error(`not a kind the control plane keeps: ${JSON.stringify(doc)}`);
  return parsed;
}

function pod(name: string, uid: string, ips: string[], node: string, labels: Record<string, string>, createdNs = at(0)): KubeObject {
  return object({
    apiVersion: "v1", kind: "Pod",
    metadata: { name, namespace: "shop", uid, labels, creationTimestamp: rfc3339(createdNs) },
    spec: { nodeName: node, containers: [{ name: "main" }] },
    status: { phase: "Running", podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) },
  });
}

const upsert = (...objects: KubeObject[]): ObjectEvent[] => objects.map((o) => ({ type: "upsert", object: o }));
const remove = (...objects: KubeObject[]): ObjectEvent[] => objects.map((o) => ({ type: "delete", object: o }));

const WEB = pod("web-1", "uid-web", ["10.244.1.5", "fd00:10:244:1::5"], "node-1", { app: "web" });
const CART = pod("cart-1", "uid-cart", ["10.244.2.7", "fd00:10:244:2::7"], "node-2", { app: "cart" });
const API = pod("api-1", "uid-api", ["10.244.1.6"], "node-1", { app: "api" });
const SERVICE = object({
  apiVersion: "v1", kind: "Service", metadata: { name: "cart", namespace: "shop" },
  spec: { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"], selector: { app: "cart" }, ports: [{ port: 80, targetPort: 8080 }] },
});
const NODE1 = object({ apiVersion: "v1", kind: "Node", metadata: { name: "node-1" }, status: { addresses: [{ type: "InternalIP", address: "10.0.0.11" }] } });

/** A source with nothing in it: the tests apply metadata to ControlPlane.state themselves. */
const emptySource: MetadataSource = { name: "test", start: async () => {}, stop: async () => {}, errors: () => [] };

function controlPlane(nowMs: number): ControlPlane {
  const cp = new ControlPlane({
    source: emptySource, storeCapacity: 10_000, log: pino({ level: "silent" }), now: () => nowMs,
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  cp.state.apply(upsert(NODE1, SERVICE, WEB, CART, API), at(0));
  return cp;
}

interface Row {
  src: string; dst: string; point: number; startNs: bigint; proto?: number; sport?: number; dport?: number;
  packets?: bigint; local?: number; verdict?: number; reason?: number; flags?: number;
}

/** Columns of rows; local endpoint names: 1 web-1, 2 api-1, 3 cart-1 (node-2's), 4 a pod unknown to the control plane. */
function columnsOf(rows: Row[], firstSequence = 1n): FlowColumns {
  const c = allocColumns(rows.length);
  c.firstSequence = firstSequence;
  c.interfaceNames = ["veth-web", "veth-api"];
  c.localEndpointNames = [
    { namespace: "shop", podName: "web-1", podUid: "uid-web", ips: ["10.244.1.5"] },
    { namespace: "shop", podName: "api-1", podUid: "uid-api", ips: ["10.244.1.6"] },
    { namespace: "shop", podName: "cart-1", podUid: "uid-cart", ips: ["10.244.2.7"] },
    { namespace: "shop", podName: "gone-1", podUid: "uid-gone", ips: ["10.244.1.99"] },
  ];
  rows.forEach((r, i) => {
    c.startNs[i] = r.startNs;
    c.endNs[i] = r.startNs + 2n * SECOND + 17n;
    c.packets[i] = r.packets ?? 3n;
    c.bytes[i] = (r.packets ?? 3n) * 100n;
    const v = writeAddress(c.sourceAddresses, i, r.src);
    writeAddress(c.destinationAddresses, i, r.dst);
    c.ipVersions[i] = v ?? 0;
    c.protocols[i] = r.proto ?? 6;
    c.sourcePorts[i] = r.sport ?? 40_000;
    c.destinationPorts[i] = r.dport ?? 8080;
    c.tcpFlags[i] = r.flags ?? 0x10;
    c.points[i] = r.point;
    c.verdicts[i] = r.verdict ?? Verdict.VERDICT_FORWARDED;
    c.verdictReasons[i] = r.reason ?? 0;
    c.localEndpoints[i] = r.local ?? 0;
    c.interfaces[i] = (r.local ?? 1) === 2 ? 1 : 0;
    c.ifindexes[i] = 7;
  });
  return c;
}

const recordsOfColumns = (c: FlowColumns, node: string) => Array.from({ length: c.rows }, (_, i) => recordAt(c, i, node));

/** Random rows of node-1's agent: every kind of end, claim and verdict the record path handles. */
function randomRows(n: number, seed: number): Row[] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const rows: Row[] = [];
  for (let i = 0; i < n; i++) {
    const v6 = rnd() < 0.2;
    const local = v6 ? "fd00:10:244:1::5" : pick(["10.244.1.5", "10.244.1.6", "10.244.2.7", "10.244.1.99"]);
    const remote = v6 ? pick(["fd00:10:244:2::7", "2001:db8::1", "fd00:10:244:1::5"])
      : pick(["10.244.2.7", "10.96.0.10", "10.0.0.11", "203.0.113.9", "198.51.100.7", "10.244.1.6", "10.244.1.5"]);
    const point = rnd() < 0.6 ? FROM : TO;
    const proto = v6 ? pick([6, 17, 58]) : pick([6, 6, 17, 1]);
    const judged = rnd() < 0.3;
    rows.push({
      src: point === FROM ? local : remote, dst: point === FROM ? remote : local, point,
      startNs: at(1000 + Math.floor(rnd() * 200)) + BigInt(Math.floor(rnd() * 1e9)),
      proto, sport: proto === 1 || proto === 58 ? pick([0, 8, 128, 129]) : pick([40_001, 40_002, 80, 8080]),
      dport: proto === 1 || proto === 58 ? 0 : pick([80, 8080, 53, 45_000]),
      packets: BigInt(1 + Math.floor(rnd() * 50)),
      // Mostly the right local pod, sometimes none, another node's, an unknown one, or the wrong one.
      local: v6 ? pick([0, 1]) : pick([0, 0, ...(local === "10.244.1.5" ? [1, 1, 2] : local === "10.244.1.6" ? [2, 2, 1] : [1, 3, 4])]),
      verdict: judged ? pick([Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT, Verdict.VERDICT_FORWARDED]) : Verdict.VERDICT_FORWARDED,
      reason: judged ? pick([VerdictReason.VERDICT_REASON_SPOOFED, 1, 2]) : 0,
      flags: pick([0x02, 0x12, 0x10, 0x11]),
    });
  }
  return rows;
}

describe("ingest from columns", () => {
  it("stores, maps and refuses exactly what the record path does (IPv4, IPv6, ICMP, Services, spoofed, foreign and unknown pods, clock skew)", () => {
    const now = T0_MS + 1_300_000;
    for (const [seed, skewMs] of [[1, undefined], [2, 5_000], [3, -7_250]] as const) {
      const byRecords = controlPlane(now), byColumns = controlPlane(now);
      let sequence = 1n;
      for (let batch = 0; batch < 4; batch++) {
        const c = columnsOf(randomRows(500, seed * 10 + batch), sequence);
        sequence += BigInt(c.rows);
        byRecords.ingest("node-1", recordsOfColumns(c, "node-1"), skewMs);
        byColumns.ingestColumns("node-1", c, skewMs);
      }
      const stored = byColumns.history.query();
      expect(stored).toEqual(byRecords.history.query());
      expect(stored.length).toBeGreaterThan(1000); // most rows are kept ...
      const refused = byColumns.status().refused;
      expect(refused).toEqual(byRecords.status().refused);
      expect(refused.map((r) => r.cause).sort()).toEqual(["foreign_address", "foreign_pod", "unknown_pod"]); // ... and some are not
      expect(byColumns.flowMap.getMap()).toEqual(byRecords.flowMap.getMap());
      expect(byColumns.flowMap.stats).toEqual(byRecords.flowMap.stats);
      expect(byColumns.status().clocks).toEqual(byRecords.status().clocks);
      expect(byColumns.status().recordsTotal).toBe(2000n);
    }
  });

  it("hands follow streams records built only for the rows their filter takes, equal to what the history then answers", () => {
    const cp = controlPlane(T0_MS + 1_300_000);
    const followed: string[] = [];
    let calls = 0;
    const toCart = (r: { destination?: { podName: string } | undefined }) => r.destination?.podName === "cart-1";
    cp.history.subscribe(toCart, (records) => { calls++; followed.push(...records.map((r) => JSON.stringify(r, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v)))); });
    let sequence = 1n;
    for (let batch = 0; batch < 3; batch++) {
      const c = columnsOf(randomRows(300, 40 + batch), sequence);
      sequence += BigInt(c.rows);
      cp.ingestColumns("node-1", c);
    }
    const expected = cp.history.query({ predicate: toCart });
    expect(expected.length).toBeGreaterThan(0);
    expect(calls).toBe(3);
    // Follow order is arrival order; the history's is end time: compare as sets of whole records.
    expect(followed.sort()).toEqual(expected.map((r) => JSON.stringify(r, (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v))).sort());
  });

  it("names a reused pod IP after the pod that held it at each row's time, in one batch and across batches", () => {
    const ip = "10.244.1.40";
    const podA = pod("cart-a", "uid-a", [ip], "node-2", { app: "cart" }, at(100));
    const podB = pod("search-b", "uid-b", [ip], "node-2", { app: "search" }, at(260));
    const cp = controlPlane(T0_MS + 400_000);
    cp.state.apply(upsert(podA), at(103));
    const row = (s: number): Row => ({ src: "10.244.1.5", dst: ip, point: FROM, startNs: at(s), local: 1, packets: 5n });
    // The address's answer is cached with pod A first.
    cp.ingestColumns("node-1", columnsOf([row(150), row(151)]));
    cp.state.apply(remove(podA), at(200));
    cp.state.apply(upsert(podB), at(262));
    cp.ingestColumns("node-1", columnsOf([row(150), row(230), row(270), row(199), row(300)], 3n));
    const names = cp.history.query().map((r) => (r.destination?.world ? "world" : r.destination?.podName));
    // History is in end-time order: 150, 151, 150, 199, 230, 270, 300.
    expect(names).toEqual(["cart-a", "cart-a", "cart-a", "cart-a", "world", "search-b", "search-b"]);
    const edges = cp.flowMap.getMap({ windowMs: 3_600_000 }).edges;
    const packets = (id: string) => edges.filter((e) => e.destination === id).reduce((n, e) => n + e.packets, 0n);
    expect(packets("workload:shop/Pod/cart-a")).toBe(20n);
    expect(packets("world:10.244.1.40")).toBe(5n);
    expect(packets("workload:shop/Pod/search-b")).toBe(10n);
    expect(edges.reduce((n, e) => n + e.packets, 0n)).toBe(35n);
  });

  it("sees a pod's metadata change between two batches of the same address and time", () => {
    const cp = controlPlane(T0_MS + 400_000);
    const row: Row = { src: "10.244.1.5", dst: "10.244.2.7", point: FROM, startNs: at(300), local: 1 };
    cp.ingestColumns("node-1", columnsOf([row]));
    cp.state.apply(upsert(pod("cart-1", "uid-cart", ["10.244.2.7", "fd00:10:244:2::7"], "node-2", { app: "cart", version: "2" })), at(301));
    cp.ingestColumns("node-1", columnsOf([row], 2n));
    // The web pod's own labels change too: its claimed (local) end follows.
    cp.state.apply(upsert(pod("web-1", "uid-web", ["10.244.1.5", "fd00:10:244:1::5"], "node-1", { app: "web", version: "3" })), at(302));
    cp.ingestColumns("node-1", columnsOf([row], 3n));
    const [first, second, third] = cp.history.query();
    expect(first?.destination?.labels).toEqual({ app: "cart" });
    expect(second?.destination?.labels).toEqual({ app: "cart", version: "2" });
    expect(second?.source?.labels).toEqual({ app: "web" });
    expect(third?.source?.labels).toEqual({ app: "web", version: "3" });
    expect(cp.history.size).toBe(3);
  });

  it("checks the agent's claim per row: the same local address named as its pod, another node's pod, or a pod that does not hold it", () => {
    const cp = controlPlane(T0_MS + 400_000);
    const rows: Row[] = [
      { src: "10.244.1.5", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 1 }, // web-1: holds
      { src: "10.244.1.5", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 3 }, // cart-1: node-2's pod
      { src: "10.244.1.5", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 2 }, // api-1: not its address
      { src: "10.244.1.5", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 1 }, // web-1 again (claim cached)
      { src: "10.244.2.7", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 0 }, // node-2's pod's address, unnamed
      { src: "10.244.1.5", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 4 }, // a pod nobody knows: named by address
    ];
    cp.ingestColumns("node-1", columnsOf(rows));
    const kept = cp.history.query();
    expect(kept.map((r) => [Number(r.sequence), r.source?.podName])).toEqual([[1, "web-1"], [4, "web-1"], [6, "web-1"]]);
    const refused = Object.fromEntries(cp.status().refused.map((r) => [r.cause, r.records]));
    expect(refused).toEqual({ foreign_pod: 1n, foreign_address: 2n, unknown_pod: 1n });
  });

  it("checks a claim again in a later batch once the model changed: a pod without an address, deleted and forgotten, is unknown", () => {
    const cp = controlPlane(T0_MS + 400_000);
    // A pod that never got an address: any address the agent names it under passes the claim.
    const gone = pod("gone-1", "uid-gone", [], "node-1", { app: "gone" });
    cp.state.apply(upsert(gone), at(1));
    const row = (sequence: bigint): FlowColumns =>
      columnsOf([{ src: "10.244.1.99", dst: "203.0.113.9", point: FROM, startNs: at(300), local: 4 }], sequence);
    cp.ingestColumns("node-1", row(1n));
    cp.ingestColumns("node-1", row(2n)); // the claim as answered for the first batch
    cp.state.apply(remove(gone), at(310));
    cp.ingestColumns("node-1", row(3n)); // deleted, within the retention: still its pod
    // An apply past the retention forgets the pod (it held no lease, so no address history moves).
    cp.state.apply([], at(310 + 3_601));
    cp.ingestColumns("node-1", row(4n));
    expect(cp.history.query().map((r) => [Number(r.sequence), r.source?.podName ?? ""]))
      .toEqual([[1, "gone-1"], [2, "gone-1"], [3, "gone-1"], [4, ""]]);
    expect(Object.fromEntries(cp.status().refused.map((r) => [r.cause, r.records]))).toEqual({ unknown_pod: 1n });
  });
});

/** A source the test drives: every apply reaches the control plane's sink (and so its ingest workers). */
class ScriptedSource implements MetadataSource {
  readonly name = "test";
  private sink: MetadataSink | undefined;
  async start(sink: MetadataSink): Promise<void> { this.sink = sink; }
  async stop(): Promise<void> {}
  errors() { return []; }
  apply(events: ObjectEvent[], observedAtNs: bigint): void {
    if (this.sink === undefined) throw new Error("ScriptedSource: not started");
    this.sink.apply(events, observedAtNs);
  }
}

/** A control plane started on `source` with `ingestWorkers` threads (no listener), and `store` if given. */
async function startedControlPlane(source: MetadataSource, ingestWorkers: number, store?: FlowStore): Promise<ControlPlane> {
  const cp = new ControlPlane({
    source, storeCapacity: 10_000, log: pino({ level: "silent" }), now: () => T0_MS + 1_300_000, ingestWorkers, ...(store !== undefined ? { store } : {}),
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  await cp.start([]);
  return cp;
}

/**
 * Two control planes fed the same metadata and batches: `inline` without ingest workers,
 * `onWorkers` with `workers` of them; each with its durable store in `stores`, if given.
 */
async function twoControlPlanes(workers: number, stores: FlowStore[] = []) {
  const sources = [new ScriptedSource(), new ScriptedSource()];
  const inline = await startedControlPlane(sources[0]!, 0, stores[0]);
  const onWorkers = await startedControlPlane(sources[1]!, workers, stores[1]);
  return {
    inline, onWorkers,
    apply: (events: ObjectEvent[], atNs: bigint) => { for (const source of sources) source.apply(events, atNs); },
    /** The same batch to both (the worker side gets a copy: each keeps its own columns). */
    ingest: (node: string, batchId: bigint, columns: FlowColumns, skewMs?: number) => Promise.all([
      inline.ingestBatch({ node, instanceId: `${node}-1`, batchId, columns }, skewMs),
      onWorkers.ingestBatch({ node, instanceId: `${node}-1`, batchId, columns: structuredClone(columns) }, skewMs)]),
    stop: () => Promise.all([inline.stop(), onWorkers.stop()]),
  };
}

const ISOLATE_CART = object({
  apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "cart-from-web", namespace: "shop" },
  spec: { podSelector: { matchLabels: { app: "cart" } }, policyTypes: ["Ingress"], ingress: [{ from: [{ podSelector: { matchLabels: { app: "web" } } }] }] },
});

// Workers admit and attribute with a cluster model and compiler of their own, fed the
// same events: what they hand back must be what the control plane's thread makes itself.
describe("ingest from columns on worker threads", () => {
  it("stores, maps, attributes and refuses what the control plane's own thread does, across metadata changes and two agents", async () => {
    const { inline, onWorkers, apply, ingest, stop } = await twoControlPlanes(2);
    try {
      apply(upsert(NODE1, SERVICE, WEB, CART, API, ISOLATE_CART), at(0));
      const sequence = new Map<string, bigint>();
      const send = async (node: string, seed: number, skewMs?: number) => {
        const c = columnsOf(randomRows(400, seed), sequence.get(node) ?? 1n);
        sequence.set(node, (sequence.get(node) ?? 1n) + BigInt(c.rows));
        await ingest(node, BigInt(seed), c, skewMs);
      };
      await send("node-1", 1);
      await send("node-2", 2, 5_000);
      // Labels change (web-1 leaves the policy's peers), a pod goes and its address comes back as another's, the policy goes: later rows follow each.
      apply(upsert(pod("cart-1", "uid-cart", ["10.244.2.7", "fd00:10:244:2::7"], "node-2", { app: "cart", version: "2" }),
        pod("web-1", "uid-web", ["10.244.1.5", "fd00:10:244:1::5"], "node-1", { app: "storefront" })), at(1_050));
      await Promise.all([send("node-1", 3), send("node-2", 4)]);
      apply(remove(API), at(1_100));
      apply(upsert(pod("api-2", "uid-api-2", ["10.244.1.6"], "node-1", { app: "api" }, at(1_120))), at(1_121));
      apply(remove(ISOLATE_CART), at(1_130));
      await Promise.all([send("node-1", 5, -7_250), send("node-2", 6)]);

      const stored = onWorkers.history.query();
      expect(stored).toEqual(inline.history.query());
      expect(stored.length).toBeGreaterThan(1_000);
      expect(stored.some((r) => r.attribution?.ingressIsolatedBy.includes("shop/cart-from-web"))).toBe(true);
      expect(new Set(stored.map((r) => r.source?.podName ?? r.destination?.podName))).toContain("api-2");
      expect(onWorkers.status().refused).toEqual(inline.status().refused);
      expect(onWorkers.status().refused.length).toBeGreaterThan(0);
      expect(onWorkers.status().clocks).toEqual(inline.status().clocks);
      expect(onWorkers.flowMap.getMap()).toEqual(inline.flowMap.getMap());
      expect(onWorkers.flowMap.stats).toEqual(inline.flowMap.stats);
      expect(onWorkers.ingestWorkers?.running).toBe(2);
    } finally {
      await stop();
    }
  });

  it("writes to the durable store what the control plane's own thread writes", async () => {
    const dirs = [0, 1].map(() => fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-ingest-workers-")));
    const stores = await Promise.all(dirs.map((d) => DuckDBFlowStore.open(d, { commitDelayMs: 1 })));
    const { apply, ingest, stop } = await twoControlPlanes(1, stores);
    try {
      apply(upsert(NODE1, SERVICE, WEB, CART, API, ISOLATE_CART), at(0));
      for (let batch = 1; batch <= 3; batch++) await ingest("node-1", BigInt(batch), columnsOf(randomRows(300, 90 + batch), BigInt(1 + 300 * (batch - 1))));
      const stored = await Promise.all(stores.map(async (store) => {
        const out: FlowRecord[] = [];
        for await (const chunk of store.query({ allow: [], deny: [], predicate: () => true })) out.push(...chunk);
        return out;
      }));
      expect(stored[0]!.length).toBeGreaterThan(500);
      expect(stored[1]).toEqual(stored[0]);
      expect(stored[1]!.some((r) => r.attribution !== undefined && r.source?.podName === "web-1")).toBe(true);
    } finally {
      await stop();
      await Promise.all(stores.map((store) => store.close()));
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    }
  });

  it("admits the batches a stopped worker had in flight, and those after, on the control plane's thread: none lost, the model as it stands", async () => {
    const { inline, onWorkers: cp, apply, ingest, stop } = await twoControlPlanes(1);
    try {
      apply(upsert(NODE1, SERVICE, WEB, CART, API), at(0));
      const both = (k: number) => ingest("node-1", BigInt(k), columnsOf(randomRows(300, 7 + k), BigInt(1 + 300 * k)));
      await both(0);
      const thread = cp.ingestWorkers!.threads[0]!;
      // Waits for the thread's "exit" event: the control plane's own listener for it, which marks the worker stopped, ran before ours.
      const exited = once(thread, "exit");
      // Asked to stop first (the thread runs no more JavaScript from then on), then four batches are sent:
      // the control plane learns that it stopped only from "exit", so they are in flight when it does.
      const stopping = thread.terminate();
      const inFlight = [1, 2, 3, 4].map(both);
      await stopping;
      await exited;
      await Promise.all(inFlight); // none refused
      expect(cp.ingestWorkers!.running).toBe(0);
      expect(cp.ingestWorkers!.handedBack).toBeGreaterThan(0);
      // A change the stopped worker never saw: the control plane's own model has it.
      apply(upsert(pod("web-1", "uid-web", ["10.244.1.5", "fd00:10:244:1::5"], "node-1", { app: "web", version: "9" })), at(1_000));
      await both(5);
      expect(cp.status().recordsTotal).toBe(1_800n);
      const rows = cp.history.query();
      expect(rows).toEqual(inline.history.query());
      const webOf = (r: FlowRecord) => (r.source?.podName === "web-1" ? r.source : r.destination?.podName === "web-1" ? r.destination : undefined);
      const last = rows.filter((r) => r.sequence > 1_500n && webOf(r) !== undefined);
      expect(last.length).toBeGreaterThan(0);
      expect(last.every((r) => webOf(r)?.labels.version === "9")).toBe(true);
    } finally {
      await stop();
    }
  });
});

describe("ingest workers' answers: values sent once, ids per row", () => {
  it("give back every admitted row's ends, addresses, attribution and times, also when the id tables start again", () => {
    const state = new ClusterState();
    state.apply(upsert(NODE1, SERVICE, WEB, CART, API, ISOLATE_CART), at(0));
    const enricher = new Enricher(state);
    const policy = new PolicyCompiler({ defaultMode: "observe" });
    policy.compile(clusterOf(state));
    const attribution = new ColumnAttribution(policy);
    for (const maxIds of [MAX_IDS, 5]) {
      const ids = new WireIds(maxIds), mirror = new Mirror();
      let resets = 0;
      for (let batch = 0; batch < 4; batch++) {
        const c = columnsOf(randomRows(300, 70 + batch));
        const admitted = enricher.admitColumns("node-1", c, 0);
        attribution.attribute(admitted);
        const want = admitted.batch;
        // As it crosses to the control plane's thread (a copy; the worker moves the buffers instead).
        const answer = structuredClone(ids.answer(batch, admitted));
        if (answer.reset) resets++;
        const got = mirror.enriched("node-1", c, answer);
        expect([...got.rows]).toEqual([...want.rows]);
        for (const i of want.rows) {
          expect([got.sources[i], got.destinations[i], got.attributions[i]]).toEqual([want.sources[i], want.destinations[i], want.attributions[i]]);
          expect([got.sourceIps[i], got.destinationIps[i], got.startSeconds[i], got.endNanos[i], got.sourceHints[i]])
            .toEqual([want.sourceIps[i], want.destinationIps[i], want.startSeconds[i], want.endNanos[i], want.sourceHints[i]]);
        }
        expect(got.attributions.filter((a) => a !== undefined).length).toBeGreaterThan(0);
      }
      expect(resets > 0).toBe(maxIds === 5);
    }
  });
});

describe("Enricher's address cache of the column path", () => {
  /** Rows node-1's web pod sends to each address, all at `seconds`. */
  const toEach = (ips: string[], seconds: number) =>
    columnsOf(ips.map((dst) => ({ src: "10.244.1.5", dst, point: FROM, startNs: at(seconds), local: 1 })));

  it("gives each distinct address its own entry across table growths and clears (upper half, one byte apart, IPv4 beside IPv4-mapped IPv6)", () => {
    const state = new ClusterState();
    state.apply(upsert(NODE1, WEB), at(0));
    const enricher = new Enricher(state, { cacheSize: 300 });
    const rnd = seededRandom(7);
    const corners = ["0.0.0.0", "255.255.255.255", "128.0.0.0", "127.255.255.255", "10.244.1.5", "::ffff:10.244.1.5", "::10.244.1.5"];
    const ips = [...corners];
    for (let i = 0; i < 1_000; i++) {
      // Neighbours in one byte only, across the whole range, so that probes of the table run into each other.
      const hi = Math.floor(rnd() * 256);
      ips.push(`${hi}.${i % 7}.0.${Math.floor(rnd() * 256)}`);
    }
    const ipOfId = new Map<number, string>();
    for (let pass = 0; pass < 3; pass++) {
      const c = toEach(ips, 300);
      const { destinationEntries } = enricher.admitColumns("node-1", c, 0);
      // The entry is the row's address (as the record path writes it), whichever entries the cache emptied meanwhile (300 of 1,007 fit).
      expect(destinationEntries.map((e) => e.ip)).toEqual(recordsOfColumns(c, "node-1").map((r) => r.ip?.destination));
      // Never one entry for two addresses.
      for (const e of destinationEntries) {
        expect(ipOfId.get(e.id) ?? e.ip).toBe(e.ip);
        ipOfId.set(e.id, e.ip);
      }
    }
    // Without clears an address keeps its entry.
    const roomy = new Enricher(state);
    const first = roomy.admitColumns("node-1", toEach(ips, 300), 0).destinationEntries;
    const again = roomy.admitColumns("node-1", toEach([...ips].reverse(), 300), 0).destinationEntries.reverse();
    expect(again.every((e, k) => e === first[k])).toBe(true);
  });

  it("names a reused address after its new pod when the cache was emptied and refilled between the owners", () => {
    const ip = "10.244.1.40";
    const state = new ClusterState();
    state.apply(upsert(NODE1, WEB), at(0));
    const podA = pod("cart-a", "uid-a", [ip], "node-2", { app: "cart" }, at(100));
    const podB = pod("search-b", "uid-b", [ip], "node-2", { app: "search" }, at(260));
    state.apply(upsert(podA), at(103));
    const enricher = new Enricher(state, { cacheSize: 8 });
    const named = (seconds: number) => {
      const e = enricher.admitColumns("node-1", toEach([ip], seconds), 0).batch.destinations[0];
      return e?.world === true ? "world" : e?.podName;
    };
    expect(named(150)).toBe("cart-a");
    state.apply(remove(podA), at(200));
    state.apply(upsert(podB), at(262));
    // Still cached: the address's history changed, so its answer is computed again.
    expect(named(270)).toBe("search-b");
    expect(named(150)).toBe("cart-a");
    // Other addresses push it out; its new entry answers by time as well.
    enricher.admitColumns("node-1", toEach(Array.from({ length: 20 }, (_, k) => `203.0.113.${k}`), 300), 0);
    expect([named(300), named(199), named(230)]).toEqual(["search-b", "cart-a", "world"]);
  });
});

describe("splitNanoseconds", () => {
  it("splits ns since the epoch into exact seconds and nanoseconds, moved back by a skew", () => {
    const values = [1n, 999_999_999n, 1_000_000_000n, T0 + 123_456_789n, 18_446_744_073_709_551_615n, 4_294_967_296n * 1_000_000_007n];
    const col = new BigUint64Array(values);
    for (const shiftMs of [0, 1500, -2250, 7]) {
      const s = new Float64Array(values.length), n = new Uint32Array(values.length);
      splitNanoseconds(col, shiftMs, s, n);
      values.forEach((v, i) => {
        const shifted = v - BigInt(shiftMs) * 1_000_000n;
        const seconds = shifted >= 0n ? shifted / SECOND : (shifted - SECOND + 1n) / SECOND;
        expect([s[i], n[i]]).toEqual([Number(seconds), Number(shifted - seconds * SECOND)]);
      });
    }
  });
});
