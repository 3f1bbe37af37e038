// Enrichment throughput: 1M synthetic flow records over a 5,000-pod cluster, median of 5
// runs. Run after `npm run build:ts` as `node dist/bench/enrich.js`.
//
// Method: the cluster (50 namespaces, 20 nodes, Deployments with ReplicaSets, 500
// Services; 5 % of pod IPs reused from a deleted pod) is built through the same parser
// and ClusterState the control plane uses. Records are half FROM_POD (local source
// carries the agent's podUid), half TO_POD (local destination does); the remote end is
// a pod (50 %), a Service ClusterIP (20 %), a node (5 %) or one of 20,000 world addresses
// (25 %); 2 % of records start inside a reused address's previous lease. Every 100,000
// records one pod's labels change (as a metadata stream would), invalidating caches.
// A pool of 100,000 records is cycled; each record's ends are reset to what the agent
// sent before every enrich (two stores, inside the timed loop).
import { Enricher } from "../controlplane/cluster/enrich.js";
import { ClusterState } from "../controlplane/cluster/state.js";
import { parseKubeObject, type KubeObject } from "../controlplane/metadata/objects.js";
import type { ObjectEvent } from "../controlplane/metadata/source.js";
import { ObservationPoint, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { seededRandom } from "../test/harness/seeded-random.js";

const PODS = 5_000;
const NAMESPACES = 50;
const NODES = 20;
const SERVICES = 500;
const WORLD_ADDRESSES = 20_000;
const RECORDS_PER_RUN = 1_000_000;
const POOL = 100_000;
const RUNS = 5;
const CHURN_EVERY = 100_000;
const SECOND = 1_000_000_000n;

const random = seededRandom;

function parse(doc: Record<string, unknown>): KubeObject {
  const object = parseKubeObject(doc);
  if (!object) throw new Error(`bench: not a kept kind: ${JSON.stringify(doc)}`);
  return object;
}

interface SyntheticPod {
  uid: string;
  ip: string;
  node: string;
  doc: Record<string, unknown>;
}

const now = BigInt(Date.now()) * 1_000_000n;
const created = now - 3_600n * SECOND;
const reusedAt = now - 600n * SECOND;
const iso = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();

function buildCluster(rand: () => number): { state: ClusterState; pods: SyntheticPod[]; serviceIps: string[]; nodeIps: string[]; reusedIps: string[] } {
  const state = new ClusterState();
  const objects: KubeObject[] = [];
  const nodeIps: string[] = [];
  for (let n = 0; n < NODES; n++) {
    nodeIps.push(`10.0.0.${n + 10}`);
    objects.push(parse({ apiVersion: "v1", kind: "Node", metadata: { name: `node-${n}` }, status: { addresses: [{ type: "InternalIP", address: `10.0.0.${n + 10}` }] } }));
  }
  for (let ns = 0; ns < NAMESPACES; ns++) objects.push(parse({ apiVersion: "v1", kind: "Namespace", metadata: { name: `ns-${ns}` } }));
  const deployments = PODS / 10;
  for (let d = 0; d < deployments; d++) {
    const namespace = `ns-${d % NAMESPACES}`;
    objects.push(parse({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: `app-${d}`, namespace } }));
    objects.push(parse({
      apiVersion: "apps/v1", kind: "ReplicaSet",
      metadata: { name: `app-${d}-5c9b7d8f4`, namespace, ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: `app-${d}`, uid: `d-${d}`, controller: true }] },
    }));
  }
  const pods: SyntheticPod[] = [];
  for (let p = 0; p < PODS; p++) {
    const d = Math.floor(p / 10);
    const node = p % NODES;
    const ip = `10.244.${node}.${Math.floor(p / NODES) + 2}`;
    const doc = {
      apiVersion: "v1", kind: "Pod",
      metadata: {
        name: `app-${d}-5c9b7d8f4-p${p}`, namespace: `ns-${d % NAMESPACES}`, uid: `pod-${p}`, creationTimestamp: iso(created),
        labels: { app: `app-${d}`, tier: rand() < 0.5 ? "web" : "backend", "pod-template-hash": "5c9b7d8f4" },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: `app-${d}-5c9b7d8f4`, uid: `rs-${d}`, controller: true }],
      },
      spec: { nodeName: `node-${node}`, containers: [{ name: "main", ports: [{ name: "http", containerPort: 8080 }] }] },
      status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
    };
    pods.push({ uid: `pod-${p}`, ip, node: `node-${node}`, doc });
  }
  const serviceIps: string[] = [];
  for (let s = 0; s < SERVICES; s++) {
    const ip = `10.96.${Math.floor(s / 250)}.${(s % 250) + 1}`;
    serviceIps.push(ip);
    objects.push(parse({
      apiVersion: "v1", kind: "Service", metadata: { name: `app-${s}`, namespace: `ns-${s % NAMESPACES}` },
      spec: { clusterIP: ip, selector: { app: `app-${s}` }, ports: [{ name: "http", port: 80, targetPort: "http" }] },
    }));
  }
  // The first 5 % of pod addresses belonged to a pod deleted before the current one started.
  const reusedIps: string[] = [];
  const previous: KubeObject[] = [];
  for (let p = 0; p < PODS / 20; p++) {
    const ip = pods[p]!.ip;
    reusedIps.push(ip);
    previous.push(parse({
      apiVersion: "v1", kind: "Pod",
      metadata: { name: `old-${p}`, namespace: "ns-0", uid: `old-${p}`, creationTimestamp: iso(now - 7_200n * SECOND), labels: { app: "old" } },
      spec: { nodeName: pods[p]!.node }, status: { phase: "Running", podIP: ip },
    }));
  }
  const upserts = (list: KubeObject[]): ObjectEvent[] => list.map((object) => ({ type: "upsert", object }));
  state.apply(upserts([...objects, ...previous]), now - 7_000n * SECOND);
  state.apply(previous.map((object) => ({ type: "delete", object })), reusedAt - SECOND);
  for (const p of pods.slice(0, PODS / 20)) (p.doc.metadata as { creationTimestamp: string }).creationTimestamp = iso(reusedAt);
  state.apply(upserts(pods.map((p) => parse(p.doc))), now - 500n * SECOND);
  return { state, pods, serviceIps, nodeIps, reusedIps };
}

function emptyEndpoint(): Endpoint {
  return { ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false };
}

interface PooledRecord {
  record: FlowRecord;
  source: Endpoint | undefined;
  destination: Endpoint | undefined;
}

function buildRecords(rand: () => number, cluster: ReturnType<typeof buildCluster>): PooledRecord[] {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;
  const worldIps = Array.from({ length: WORLD_ADDRESSES }, (_, i) => `${11 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`);
  const pool: PooledRecord[] = [];
  for (let i = 0; i < POOL; i++) {
    const local = pick(cluster.pods);
    const roll = rand();
    let remote: string;
    let startNs = now - BigInt(Math.floor(rand() * 10_000)) * 1_000_000n;
    if (roll < 0.02) {
      remote = pick(cluster.reusedIps);
      startNs = reusedAt - 60n * SECOND;
    } else if (roll < 0.5) remote = pick(cluster.pods).ip;
    else if (roll < 0.7) remote = pick(cluster.serviceIps);
    else if (roll < 0.75) remote = pick(cluster.nodeIps);
    else remote = pick(worldIps);
    const fromPod = rand() < 0.5;
    const agentLocal = { ...emptyEndpoint(), podUid: local.uid };
    const record: FlowRecord = {
      startTime: { seconds: startNs / SECOND, nanos: Number(startNs % SECOND) },
      endTime: { seconds: startNs / SECOND + 1n, nanos: 0 },
      node: local.node,
      point: fromPod ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD,
      reporter: fromPod ? 1 : 2,
      interface: `veth${i}`,
      ifindex: 10 + (i % 200),
      ip: { source: fromPod ? local.ip : remote, destination: fromPod ? remote : local.ip, version: 1 },
      l4: { protocol: 6, protocolName: "TCP", sourcePort: 40_000 + (i % 20_000), destinationPort: 8080, tcpFlags: undefined, icmpType: 0, icmpCode: 0 },
      packets: 10n,
      bytes: 4_000n,
      source: fromPod ? agentLocal : undefined,
      destination: fromPod ? undefined : agentLocal,
      verdict: 1,
      verdictReason: 0,
      attribution: undefined,
      sequence: BigInt(i),
    };
    pool.push({ record, source: record.source, destination: record.destination });
  }
  return pool;
}

function run(enricher: Enricher, state: ClusterState, pool: PooledRecord[], churn: Record<string, unknown>[]): number {
  let churnIndex = 0;
  let named = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < RECORDS_PER_RUN; i++) {
    const pooled = pool[i % POOL]!;
    const record = pooled.record;
    record.source = pooled.source;
    record.destination = pooled.destination;
    const out = enricher.enrich(record);
    if (out.destination !== undefined && out.destination.podName !== "") named++;
    if (i % CHURN_EVERY === CHURN_EVERY - 1) {
      const doc = churn[churnIndex++ % churn.length]!;
      state.apply([{ type: "upsert", object: parse(doc) }], now);
    }
  }
  const elapsedNs = process.hrtime.bigint() - start;
  if (named === 0) throw new Error("bench: no record was named; the synthetic cluster is wrong");
  return RECORDS_PER_RUN / (Number(elapsedNs) / 1e9);
}

function main(): void {
  const rand = random(42);
  const setupStart = process.hrtime.bigint();
  const cluster = buildCluster(rand);
  const pool = buildRecords(rand, cluster);
  const churn = cluster.pods.slice(0, 50).map((p, i) => {
    const doc = structuredClone(p.doc);
    (doc.metadata as { labels: Record<string, string> }).labels.revision = String(i);
    return doc;
  });
  const setupMs = Number(process.hrtime.bigint() - setupStart) / 1e6;
  const enricher = new Enricher(cluster.state);
  run(enricher, cluster.state, pool, churn); // warm-up: JIT and caches
  const rates: number[] = [];
  for (let r = 0; r < RUNS; r++) rates.push(run(enricher, cluster.state, pool, churn));
  const sorted = [...rates].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  console.log(`enrich: ${PODS} pods, ${SERVICES} services, ${NODES} nodes; ${RECORDS_PER_RUN.toLocaleString("en-US")} records per run; setup ${setupMs.toFixed(0)} ms`);
  console.log(`runs (records/s): ${rates.map(fmt).join(", ")}`);
  console.log(`median: ${fmt(median)} records/s`);
}

main();
