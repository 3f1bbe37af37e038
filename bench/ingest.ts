// Control plane ingest over the real agent stream: records/s enriched and stored, records
// per control-plane CPU-second, and the control plane's RSS with 1M records stored.
// Run after `npm run build:ts` as `node dist/bench/ingest.js` (`--runs N`, `--window-ms N`,
// `--clients 1,2,4`, `--protocols 2,1` change the defaults). Method and last results: bench/README.md, "Control plane".
//
// Method: one control plane and N agent clients, each its own process (forked from this
// script), on a unix socket; /proc/<pid>/stat and /proc/<pid>/status give each process's
// CPU and RSS on their own. The control plane is the real one (FolderSource over a
// 5,000-pod cluster: 50 namespaces, 500 Deployments with ReplicaSets, 500 Services, 20
// nodes; ClusterState, Enricher, FlowHistory of 1M, FlowMapStore, AgentRegistry, the
// production gRPC server options). Client i streams as node-<i>: batches of 2,000
// records, at most 8 unacknowledged (the agent's defaults). Records are an agent's: the
// local pod named by the agent (as agent/endpoints.ts does), the remote end a pod of one
// of the deployment's three peer deployments (50 %), a Service (20 %, a quarter of it
// DNS over UDP), the node (5 %) or one of 2,000 outside addresses (25 %); 75 % of records
// repeat one of the node's 10,000 long-lived connections, 25 % are one-off connections.
// Throughput clients cycle a pool of 25 pre-encoded batches, so that they spend almost
// nothing on protobuf. Clients speak protocol 2 (FlowColumns, as agents of this release
// send: the control plane ingests from the columns) or protocol 1 (FlowBatch of
// FlowRecords, the path the control plane keeps for agents not yet upgraded); both are
// measured in the same run against the same control plane. The control plane's store is first filled to its 1M capacity, so
// that every window measures the steady state (each record stored evicts one). Each
// window: N fresh client processes, a 2 s warm-up, then GetStatus.recordsTotal and the
// control plane's utime+stime (all its threads, GC included) at the start and end of 8 s;
// runs are interleaved (run 1: 1, 2, 4 clients, each with protocol 2 against control plane
// then reference, then protocol 1 against both; run 2: ...). Whatever else the machine ran
// meanwhile is printed as "other work". Reference: the same clients against an
// AgentService in the same gRPC server that only decodes each message (protocol 2: the
// control plane's own deserializer and checked column decoder; protocol 1: the generated
// ConnectRequest decoder) and acknowledges it, so its cost is the gRPC + decoding share.
// Memory: a fresh control plane (store capacity 1M) is fed exactly 1,000,000 records by 2
// protocol-2 clients on a simulated clock (10,000 records/s per node, so the records span
// 50 s as real ones would); VmRSS is read then and after a full GC. `--heap-snapshot FILE`
// then writes the control plane's heap snapshot there (bench/heap-summary.ts sums it).
//
// `--against OTHER/dist` compares two builds on this judged line: OTHER's control plane
// (its own bench/ingest.js in the controlplane role) takes the reference's place, both
// stores are filled, and each window of this build is paired with one of OTHER's right
// after or before it (the order alternating by run), so that the host's swings, which
// move runs minutes apart by ±30 %, fall on both alike. Prints each pair's ratio and
// `SUMMARY ingest this/against, records per control-plane CPU-second: ...`.
//
// `--ingest-workers N` starts this build's control plane (and the memory one) with N ingest
// worker threads (ControlPlaneOptions.ingestWorkers); with `--against dist` the same build
// without them is the other side, so the pairs compare 1 and 2 cores' worth of ingest.
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { bind, createGrpcServer, MAX_MESSAGE_BYTES } from "../controlplane/grpc.js";
import {
  AgentServiceService, ConnectRequest, ConnectResponse,
} from "../proto/gen/bulkhead/v1/agent.js";
import {
  FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason, type Endpoint,
} from "../proto/gen/bulkhead/v1/flow.js";
import {
  GetFlowsRequest, ObserverServiceClient, type GetStatusResponse, type ObserverServiceServer,
} from "../proto/gen/bulkhead/v1/observer.js";
import { seededRandom } from "../test/harness/seeded-random.js";
import { columnsFromRecords } from "../flowcolumns/columns.js";
import { decodeColumns, encodeColumnsBody, encodeColumnsRequest } from "../flowcolumns/wire.js";
import type { AgentRequest, AgentServer } from "../controlplane/agent-columns.js";

// ---------------------------------------------------------------------------------------
// The synthetic cluster, the same in every process (deterministic)

const NODES = 20;
const NAMESPACES = 50;
const DEPLOYMENTS = 500;
const PODS = 5_000;
const SERVICES = 500;
const WORLD_ADDRESSES = 2_000;
export const BATCH_RECORDS = 2_000;
const POOL_BATCHES = 25;
const MAX_IN_FLIGHT = 8;
export const STORE_CAPACITY = 1_000_000;
/** The simulated rate of one node when filling the store (the agent's buffer is sized for 10k/s). */
const NODE_RECORDS_PER_SECOND = 10_000;
/** Long-lived connections per node; a quarter of records are on one-off connections instead. */
const CONNECTIONS_PER_NODE = 10_000;

const random = seededRandom;

interface PlanPod { name: string; namespace: string; uid: string; ip: string; node: string; deployment: number }
interface ClusterPlan { pods: PlanPod[]; podIps: string[]; serviceIps: string[]; nodeIps: string[]; worldIps: string[] }

function clusterPlan(): ClusterPlan {
  const pods: PlanPod[] = [];
  for (let p = 0; p < PODS; p++) {
    const d = Math.floor(p / (PODS / DEPLOYMENTS));
    const node = p % NODES;
    pods.push({
      name: `app-${d}-5c9b7d8f4-${p.toString(36).padStart(5, "x")}`, namespace: `ns-${d % NAMESPACES}`,
      uid: `00000000-0000-4000-8000-${p.toString(16).padStart(12, "0")}`,
      ip: `10.244.${node}.${Math.floor(p / NODES) + 2}`, node: `node-${node}`, deployment: d,
    });
  }
  return {
    pods,
    podIps: pods.map((p) => p.ip),
    serviceIps: Array.from({ length: SERVICES }, (_, s) => `10.96.${Math.floor(s / 250)}.${(s % 250) + 1}`),
    nodeIps: Array.from({ length: NODES }, (_, n) => `10.0.0.${n + 10}`),
    worldIps: Array.from({ length: WORLD_ADDRESSES }, (_, i) => `${11 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}.${1 + (i % 200)}`),
  };
}

/** The cluster as one `kind: List` JSON manifest, as FolderSource reads it. */
export function writeManifests(dir: string): void {
  const plan = clusterPlan();
  const created = new Date(Date.now() - 3_600_000).toISOString();
  const items: unknown[] = [];
  for (let n = 0; n < NODES; n++) {
    items.push({ apiVersion: "v1", kind: "Node", metadata: { name: `node-${n}` }, status: { addresses: [{ type: "InternalIP", address: plan.nodeIps[n] }] } });
  }
  for (let ns = 0; ns < NAMESPACES; ns++) items.push({ apiVersion: "v1", kind: "Namespace", metadata: { name: `ns-${ns}` } });
  for (let d = 0; d < DEPLOYMENTS; d++) {
    const namespace = `ns-${d % NAMESPACES}`;
    items.push({ apiVersion: "apps/v1", kind: "Deployment", metadata: { name: `app-${d}`, namespace, uid: `d-${d}` } });
    items.push({
      apiVersion: "apps/v1", kind: "ReplicaSet",
      metadata: { name: `app-${d}-5c9b7d8f4`, namespace, uid: `rs-${d}`, ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: `app-${d}`, uid: `d-${d}`, controller: true }] },
    });
  }
  for (const p of plan.pods) {
    items.push({
      apiVersion: "v1", kind: "Pod",
      metadata: {
        name: p.name, namespace: p.namespace, uid: p.uid, creationTimestamp: created,
        labels: { app: `app-${p.deployment}`, tier: p.deployment % 2 ? "web" : "backend", "pod-template-hash": "5c9b7d8f4" },
        ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: `app-${p.deployment}-5c9b7d8f4`, uid: `rs-${p.deployment}`, controller: true }],
      },
      spec: { nodeName: p.node, containers: [{ name: "main", ports: [{ name: "http", containerPort: 8080 }] }] },
      status: { phase: "Running", podIP: p.ip, podIPs: [{ ip: p.ip }] },
    });
  }
  plan.serviceIps.forEach((ip, s) => items.push({
    apiVersion: "v1", kind: "Service", metadata: { name: `app-${s}`, namespace: `ns-${s % NAMESPACES}` },
    spec: { clusterIP: ip, selector: { app: `app-${s}` }, ports: [{ name: "http", port: 80, targetPort: "http" }] },
  }));
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "cluster.json"), JSON.stringify({ apiVersion: "v1", kind: "List", items }));
}

/** One connection of a local pod: the 5-tuple its records repeat. */
interface Connection {
  pod: PlanPod;
  /** Index of the pod's veth among the node's pods. */
  veth: number;
  remote: string;
  tcp: boolean;
  localIsClient: boolean;
  ephemeral: number;
  serverPort: number;
}

/** The deployments a deployment calls: three fixed peers, so the mesh has structure. */
function peers(deployment: number): number[] {
  return [(deployment * 7 + 1) % DEPLOYMENTS, (deployment * 13 + 5) % DEPLOYMENTS, (deployment * 31 + 11) % DEPLOYMENTS];
}

/**
 * A connection of one of the node's pods. Pod to pod (50 %): with one of its deployment's
 * three peers, either way round, TCP 8080. Service (20 %): a peer's Service on TCP 80, or
 * DNS (Service 0, UDP 53) for a quarter of them. Node (5 %): the host probing the pod on
 * 8080. World (25 %): one of 2,000 outside addresses on TCP 443.
 */
function connection(rand: () => number, plan: ClusterPlan, local: PlanPod[]): Connection {
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)]!;
  const veth = Math.floor(rand() * local.length);
  const pod = local[veth]!;
  const peer = pick(peers(pod.deployment));
  const roll = rand();
  const ephemeral = 32_768 + Math.floor(rand() * 28_000);
  if (roll < 0.5) {
    const podsPerDeployment = PODS / DEPLOYMENTS;
    const remote = plan.pods[peer * podsPerDeployment + Math.floor(rand() * podsPerDeployment)]!;
    return { pod, veth, remote: remote.ip, tcp: true, localIsClient: rand() < 0.5, ephemeral, serverPort: 8080 };
  }
  if (roll < 0.7) {
    const dns = rand() < 0.25;
    return { pod, veth, remote: plan.serviceIps[dns ? 0 : peer % SERVICES]!, tcp: !dns, localIsClient: true, ephemeral, serverPort: dns ? 53 : 80 };
  }
  if (roll < 0.75) return { pod, veth, remote: pick(plan.nodeIps), tcp: true, localIsClient: false, ephemeral, serverPort: 8080 };
  return { pod, veth, remote: pick(plan.worldIps), tcp: true, localIsClient: true, ephemeral, serverPort: 443 };
}

const connectionsByNode = new Map<string, { local: PlanPod[]; connections: Connection[] }>();

/** A node's long-lived connections (deterministic per node). */
function nodeConnections(node: string, plan: ClusterPlan): { local: PlanPod[]; connections: Connection[] } {
  const known = connectionsByNode.get(node);
  if (known) return known;
  const local = plan.pods.filter((p) => p.node === node);
  if (local.length === 0) throw new Error(`bench: no pods on ${node}`);
  const rand = random(7 + Number(node.replace(/\D/g, "")));
  const made = { local, connections: Array.from({ length: CONNECTIONS_PER_NODE }, () => connection(rand, plan, local)) };
  connectionsByNode.set(node, made);
  return made;
}

/**
 * A node's records, as its agent would send them: the local end named by the agent (as
 * agent/endpoints.ts does), 75 % on the node's long-lived connections and 25 % on one-off
 * connections (a fresh 5-tuple each), either observation point, verdicts 90 % FORWARDED,
 * 7 % DROPPED, 3 % AUDIT, reasons as the datapath gives them (`reason`). Records end within
 * `spreadMs` before `endMs` and cover up to one drain interval (1 s).
 */
function agentRecords(node: string, plan: ClusterPlan, count: number, seed: number, endMs: number, spreadMs: number, firstSequence: number): FlowRecord[] {
  const rand = random(seed);
  const { local, connections } = nodeConnections(node, plan);
  const out: FlowRecord[] = [];
  for (let i = 0; i < count; i++) {
    const c = rand() < 0.75 ? connections[Math.floor(rand() * connections.length)]! : connection(rand, plan, local);
    const fromPod = rand() < 0.5;
    const localEnd: Endpoint = {
      ip: c.pod.ip, namespace: c.pod.namespace, podName: c.pod.name, podUid: c.pod.uid, labels: {},
      workloadKind: "", workloadName: "", node: "", service: "", world: false,
    };
    // The local pod sends from its own port when it is the client, and receives on it.
    const localPort = c.localIsClient ? c.ephemeral : c.serverPort;
    const remotePort = c.localIsClient ? c.serverPort : c.ephemeral;
    const end = endMs - rand() * spreadMs;
    const start = end - rand() * 1000;
    const packets = 1 + Math.floor(rand() * 100);
    const v = rand();
    out.push(FlowRecord.fromPartial({
      startTime: timestamp(start), endTime: timestamp(end),
      node,
      point: fromPod ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD,
      reporter: fromPod ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
      interface: `lxc${c.pod.uid.slice(-8)}`, ifindex: 10 + c.veth,
      ip: { source: fromPod ? c.pod.ip : c.remote, destination: fromPod ? c.remote : c.pod.ip, version: IpVersion.IP_VERSION_IPV4 },
      l4: {
        protocol: c.tcp ? 6 : 17, protocolName: c.tcp ? "TCP" : "UDP",
        sourcePort: fromPod ? localPort : remotePort, destinationPort: fromPod ? remotePort : localPort,
        tcpFlags: c.tcp ? { fin: rand() < 0.1, syn: rand() < 0.1, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false } : undefined,
        icmpType: 0, icmpCode: 0,
      },
      packets: BigInt(packets), bytes: BigInt(packets * (60 + Math.floor(rand() * 1400))),
      source: fromPod ? localEnd : undefined, destination: fromPod ? undefined : localEnd,
      verdict: v < 0.9 ? Verdict.VERDICT_FORWARDED : v < 0.97 ? Verdict.VERDICT_DROPPED : Verdict.VERDICT_AUDIT,
      verdictReason: reason(fromPod !== c.localIsClient, v),
      sequence: BigInt(firstSequence + i),
    }));
  }
  return out;
}

/**
 * A record's reason, as the datapath gives it: a reply (from the connection's server) is
 * conntrack's (ESTABLISHED), unless a policy change denied its connection (DROPPED, POLICY);
 * a request's first packets are judged by policy (POLICY), later ones are ESTABLISHED.
 */
function reason(reply: boolean, v: number): VerdictReason {
  if (reply) return v >= 0.9 && v < 0.97 ? VerdictReason.VERDICT_REASON_POLICY : VerdictReason.VERDICT_REASON_ESTABLISHED;
  return v < 0.5 ? VerdictReason.VERDICT_REASON_ESTABLISHED : VerdictReason.VERDICT_REASON_POLICY;
}

function timestamp(ms: number): { seconds: bigint; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.floor((ms - seconds * 1000) * 1e6) };
}

function varint(value: bigint | number): number[] {
  let v = BigInt(value);
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}

/** `repeated FlowRecord records = 2` of a FlowBatch, encoded once. */
function encodeRecords(records: FlowRecord[]): Buffer {
  return Buffer.concat(records.map((r) => {
    const bytes = FlowRecord.encode(r).finish();
    return Buffer.concat([Buffer.from([0x12, ...varint(bytes.length)]), bytes]);
  }));
}

/** ConnectRequest{flows: FlowBatch{batch_id, records}} from pre-encoded records. */
function batchFrame(batchId: bigint, records: Buffer): Buffer {
  const head = [0x08, ...varint(batchId)];
  const inner = head.length + records.length;
  return Buffer.concat([Buffer.from([0x12, ...varint(inner), ...head]), records]);
}

/**
 * A node's pooled batches as the bytes of FlowColumns bodies, stamped now, as its agent sends
 * them (for in-process profiles of ingest, which decode each batch as the control plane does).
 */
export function agentBodiesForProfile(node: string, count: number): Uint8Array[] {
  const plan = clusterPlan();
  const index = Number(node.replace(/\D/g, ""));
  const startMs = Date.now();
  return Array.from({ length: count }, (_, b) =>
    encodeColumns(agentRecords(node, plan, BATCH_RECORDS, 1000 * index + b + 1, startMs, 10_000, b * BATCH_RECORDS + 1)));
}

/** FlowColumns fields 3 and on of records (the body every send of the batch reuses). */
function encodeColumns(records: FlowRecord[]): Buffer {
  return Buffer.from(encodeColumnsBody(columnsFromRecords(records)));
}

/** ConnectRequest{columns: FlowColumns{batch_id, sent_at, ...body}}, sent now. */
function columnsFrame(batchId: bigint, body: Buffer): Buffer {
  const ms = Date.now();
  return Buffer.from(encodeColumnsRequest(batchId, body, { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 }));
}

/** The agent protocols a client can speak: 2 (FlowColumns, this release's agents), 1 (FlowBatch of FlowRecords). */
export type Protocol = 1 | 2;

// ---------------------------------------------------------------------------------------
// Child processes

type Role = "controlplane" | "reference" | "client";

type ChildMessage =
  | { ready: true; pods: number }
  | { streaming: true }
  | { done: true; records: number }
  | { memory: NodeJS.MemoryUsage }
  | { heapSnapshot: string };

const thisFile = fileURLToPath(import.meta.url);

/** A role of this script in its own process; resolves once it reports ready. */
export function forkRole(role: Role, args: string[], execArgv: string[] = [], script = thisFile): ChildProcess & { messages: ChildMessage[] } {
  const child = fork(script, [role, ...args], { execArgv, stdio: ["ignore", "inherit", "inherit", "ipc"] }) as ChildProcess & { messages: ChildMessage[] };
  child.messages = [];
  child.on("message", (m) => child.messages.push(m as ChildMessage));
  return child;
}

/** The first message of `child` that `match` takes (T: what it narrows to), within the timeout. */
export async function waitMessage<M = ChildMessage, T extends M = M>(child: ChildProcess & { messages: M[] }, match: (m: M) => boolean, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = child.messages.find(match);
    if (found) return found as T;
    if (child.exitCode !== null) throw new Error(`bench: child ${child.pid} exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error(`bench: child ${child.pid} did not report in ${timeoutMs} ms`);
    await sleep(20);
  }
}

/** Asks a child to exit (so that --cpu-prof and the like can write), then kills it after 2 s. */
export async function endChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  if (child.connected) child.send("exit");
  const timer = setTimeout(() => child.kill("SIGKILL"), 2000);
  await exited;
  clearTimeout(timer);
}

async function controlPlaneRole(dir: string, socket: string, capacity: number, ingestWorkers: number): Promise<void> {
  // Loaded here only, so that client processes stay small.
  const { ControlPlane } = await import("../controlplane/controlplane.js");
  const { FolderSource } = await import("../controlplane/metadata/folder.js");
  const { AccessControl } = await import("../controlplane/access/control.js");
  const { pino } = await import("pino");
  const cp = new ControlPlane({
    source: new FolderSource({ dir }), storeCapacity: capacity, log: pino({ level: "warn" }), ingestWorkers,
    // The benchmark's own clients carry no token.
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  await cp.start([`unix://${socket}`]);
  process.on("message", (m) => {
    if (m === "exit") process.exit(0);
    if (m === "gc") {
      (globalThis as { gc?: () => void }).gc?.();
      process.send?.({ memory: process.memoryUsage() });
    }
    if (typeof m === "object" && m !== null && "heapSnapshot" in m) {
      process.send?.({ heapSnapshot: v8.writeHeapSnapshot(String(m.heapSnapshot)) });
    }
  });
  process.send?.({ ready: true, pods: cp.state.pods().length });
}

/** Decodes and acknowledges, nothing else: the gRPC + decoding share of ingest (both protocols). */
async function referenceRole(socket: string): Promise<void> {
  let records = 0n;
  let connected = 0;
  const agent: AgentServer = {
    connect(stream) {
      stream.on("data", (m: AgentRequest) => {
        const kind = m.kind;
        if (kind?.$case === "hello") {
          connected++;
          stream.write({ kind: { $case: "config", value: { node: kind.value.node, drainIntervalMs: 1000 } } });
        } else if (kind?.$case === "flows") {
          records += BigInt(kind.value.records.length);
          stream.write({ kind: { $case: "ack", value: { batchId: kind.value.batchId } } });
        } else if (kind?.$case === "columnBytes") {
          const batch = decodeColumns(kind.value);
          records += BigInt(batch.columns.rows);
          stream.write({ kind: { $case: "ack", value: { batchId: batch.batchId } } });
        }
      });
      stream.on("end", () => stream.end());
      stream.on("error", () => undefined);
    },
  };
  const unimplemented = (_call: unknown, callback: grpc.sendUnaryData<never>) =>
    callback({ code: grpc.status.UNIMPLEMENTED, details: "reference server" } as grpc.ServiceError, null);
  const observer: ObserverServiceServer = {
    getFlows(call) { call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "reference server" }); },
    getFlowMap: unimplemented,
    getNodes: unimplemented,
    policyWhatIf: unimplemented,
    suggestPolicies: unimplemented,
    getStatus(_call, callback) {
      callback(null, {
        agentsConnected: connected, agentsKnown: connected, recordsTotal: records, recordsPerSecond: 0,
        flowsStored: 0n, storeCapacity: 0n, losses: [], unjudged: [], refused: [], clocks: [], metadataErrors: [], policyWarnings: [],
      });
    },
  };
  // createGrpcServer gives AgentService the control plane's deserializer: FlowColumns stay bytes for the checked decoder.
  const server = createGrpcServer({ agent, observer });
  await bind(server, `unix://${socket}`);
  process.on("message", (m) => { if (m === "exit") process.exit(0); });
  process.send?.({ ready: true, pods: 0 });
}

/**
 * Streams as node-<index>. With limit 0, until told to stop, cycling a pool of pre-encoded
 * batches (timestamps within 10 s of the client's start); with `pooled`, the same pool up
 * to the limit. Otherwise, with limit > 0, exactly that
 * many records (whole batches), each batch built afresh on a simulated clock of
 * NODE_RECORDS_PER_SECOND that ends now minus `lateMs`, so that the store holds records
 * spread over time as a real node's would be.
 */
async function clientRole(socket: string, index: number, limit: number, lateMs: number, protocol: Protocol, recordsPerSecond: number, pooled: boolean): Promise<void> {
  const plan = clusterPlan();
  const node = `node-${index}`;
  const batches = limit > 0 ? Math.ceil(limit / BATCH_RECORDS) : Infinity;
  const pool: Buffer[] = [];
  const startMs = Date.now();
  const encode = protocol === 2 ? encodeColumns : encodeRecords;
  const frame = protocol === 2 ? columnsFrame : batchFrame;
  const fromPool = limit === 0 || pooled;
  if (fromPool) {
    for (let b = 0; b < POOL_BATCHES; b++) pool.push(encode(agentRecords(node, plan, BATCH_RECORDS, 1000 * index + b + 1, startMs, 10_000, b * BATCH_RECORDS + 1)));
  }
  const msPerBatch = (1000 * BATCH_RECORDS) / NODE_RECORDS_PER_SECOND;
  const batchRecords = (id: bigint): Buffer => {
    // Pooled batches repeat sequences; the control plane does not check them (ids are what it de-duplicates by).
    if (fromPool) return pool[Number(id % BigInt(POOL_BATCHES))]!;
    const endMs = startMs - lateMs - (batches - Number(id)) * msPerBatch;
    return encode(agentRecords(node, plan, BATCH_RECORDS, 1000 * index + Number(id), endMs, msPerBatch + 1000, (Number(id) - 1) * BATCH_RECORDS + 1));
  };

  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": MAX_MESSAGE_BYTES, "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  });
  const call = client.makeBidiStreamRequest<Buffer, ConnectResponse>(
    AgentServiceService.connect.path, (b: Buffer) => b, (b: Buffer) => ConnectResponse.decode(b));
  let nextId = 1n;
  let inFlight = 0;
  let acked = 0;
  let configured = false;
  // Paced (recordsPerSecond > 0): no batch before its time on a steady schedule from the first config.
  let pacedFrom = 0;
  let pacer: NodeJS.Timeout | undefined;
  const due = () => recordsPerSecond <= 0 || Number(nextId) <= 1 + ((Date.now() - pacedFrom) * recordsPerSecond) / 1000 / BATCH_RECORDS;
  const send = () => {
    while (configured && inFlight < MAX_IN_FLIGHT && Number(nextId) <= batches && due()) {
      call.write(frame(nextId, batchRecords(nextId)));
      nextId++;
      inFlight++;
    }
  };
  call.on("data", (m: ConnectResponse) => {
    const kind = m.kind;
    if (kind?.$case === "config") {
      configured = true;
      pacedFrom = Date.now();
      if (recordsPerSecond > 0) pacer = setInterval(send, 5);
      send();
    } else if (kind?.$case === "ack") {
      inFlight--;
      acked++;
      if (acked === 1) process.send?.({ streaming: true });
      if (acked === batches) process.send?.({ done: true, records: acked * BATCH_RECORDS });
      send();
    }
  });
  call.on("status", (s: grpc.StatusObject) => {
    if (s.code !== grpc.status.OK && s.code !== grpc.status.CANCELLED) {
      process.stderr.write(`bench client ${node}: stream ended: ${grpc.status[s.code]} ${s.details}\n`);
      process.exit(1);
    }
  });
  call.on("error", () => undefined);
  process.on("message", (m) => {
    if (m === "exit") {
      clearInterval(pacer);
      process.exit(0);
    }
  });
  call.write(Buffer.from(ConnectRequest.encode({ kind: { $case: "hello", value: {
    node, version: "bench", protocolVersion: protocol, capabilities: [], instanceId: `bench-${process.pid}`,
  } } }).finish()));
}

// ---------------------------------------------------------------------------------------
// Measuring

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** User + system CPU seconds of a process, all threads. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** CPU seconds the whole machine spent busy (all CPUs), to see what else ran meanwhile. */
export function machineBusySeconds(): number {
  const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // guest time is already in user
  return (total - v[3]! - v[4]!) / CLK_TCK;
}

/** VmRSS and VmHWM in MiB. */
export function memoryMiB(pid: number): { rss: number; hwm: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function getStatus(client: ObserverServiceClient): Promise<GetStatusResponse> {
  return new Promise((resolve, reject) => client.getStatus({}, (err, res) => (err ? reject(err) : resolve(res))));
}

/** Fills a fresh control plane with exactly `records` records from `clients` streams. */
export async function filledControlPlane(dir: string, socket: string, records: number, clients: number, execArgv: string[] = [], ingestWorkers = 0) {
  const server = forkRole("controlplane", [dir, socket, String(STORE_CAPACITY), String(ingestWorkers)], execArgv);
  await waitMessage(server, (m) => "ready" in m);
  const perClient = records / clients;
  if (!Number.isInteger(perClient / BATCH_RECORDS)) throw new Error(`bench: ${records} records do not split into ${clients} clients of whole batches`);
  const started = process.hrtime.bigint();
  const feeders = Array.from({ length: clients }, (_, i) => forkRole("client", [socket, String(i), String(perClient)]));
  await Promise.all(feeders.map((c) => waitMessage(c, (m) => "done" in m, 600_000)));
  const fillSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  await Promise.all(feeders.map(endChild));
  return { server, fillSeconds };
}

interface Sample {
  recordsPerSecond: number;
  perCpuSecond: number;
  serverCores: number;
  clientCores: number;
  /** Cores busy with anything but this bench's processes (other work on the machine). */
  otherCores: number;
}

/** "against": another build's control plane (--against). */
interface Server { mode: "controlplane" | "reference" | "against"; socket: string; process: ChildProcess & { messages: ChildMessage[] } }

/** One window: `clients` fresh client processes stream to an already running server. */
async function measure(server: Server, protocol: Protocol, clients: number, warmupMs: number, windowMs: number): Promise<Sample> {
  const feeders = Array.from({ length: clients }, (_, i) => forkRole("client", [server.socket, String(i), "0", "0", String(protocol)]));
  const observer = new ObserverServiceClient(`unix://${server.socket}`, grpc.credentials.createInsecure());
  const pid = server.process.pid!;
  try {
    await Promise.all(feeders.map((c) => waitMessage(c, (m) => "streaming" in m)));
    await sleep(warmupMs);
    const clientCpu = () => feeders.reduce((sum, c) => sum + cpuSeconds(c.pid!), 0);
    const t0 = process.hrtime.bigint();
    const r0 = (await getStatus(observer)).recordsTotal;
    const c0 = cpuSeconds(pid), k0 = clientCpu(), m0 = machineBusySeconds(), o0 = process.cpuUsage();
    await sleep(windowMs);
    const r1 = (await getStatus(observer)).recordsTotal;
    const c1 = cpuSeconds(pid), k1 = clientCpu(), m1 = machineBusySeconds(), o1 = process.cpuUsage(o0);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (feeders.some((c) => c.exitCode !== null)) throw new Error("bench: a client exited during the window");
    if (server.mode !== "reference") await checkEnriched(observer);
    const records = Number(r1 - r0);
    const ours = (c1 - c0) + (k1 - k0) + (o1.user + o1.system) / 1e6;
    return {
      recordsPerSecond: records / seconds, perCpuSecond: records / (c1 - c0), serverCores: (c1 - c0) / seconds,
      clientCores: (k1 - k0) / seconds, otherCores: Math.max(0, (m1 - m0 - ours) / seconds),
    };
  } finally {
    observer.close();
    await Promise.all(feeders.map(endChild));
  }
}

/** Streams into the control plane until its store is full, so that windows measure the steady state (evicting). */
async function prefill(server: Server): Promise<number> {
  const started = process.hrtime.bigint();
  const feeders = [0, 1].map((i) => forkRole("client", [server.socket, String(i), "0"]));
  const observer = new ObserverServiceClient(`unix://${server.socket}`, grpc.credentials.createInsecure());
  try {
    for (;;) {
      if (feeders.some((c) => c.exitCode !== null)) throw new Error("bench: a client exited while filling the store");
      const status = await getStatus(observer);
      if (status.flowsStored >= status.storeCapacity && status.storeCapacity > 0n) break;
      await sleep(200);
    }
    return Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    observer.close();
    await Promise.all(feeders.map(endChild));
  }
}

/** Fails the bench when the control plane did not name the remote ends (a broken setup measures nothing). */
async function checkEnriched(observer: ObserverServiceClient): Promise<void> {
  const flows: FlowRecord[] = await new Promise((resolve, reject) => {
    const out: FlowRecord[] = [];
    const call = observer.getFlows(GetFlowsRequest.fromPartial({ last: 2000n }));
    call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) out.push(m.flow); });
    call.on("error", reject);
    call.on("end", () => resolve(out));
  });
  let pods = 0, services = 0, world = 0, labelled = 0;
  for (const f of flows) {
    const remote = f.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? f.destination : f.source;
    const local = f.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? f.source : f.destination;
    if (remote?.podName) pods++;
    if (remote?.service) services++;
    if (remote?.world) world++;
    if (local?.workloadName && Object.keys(local.labels).length > 0) labelled++;
  }
  if (flows.length === 0 || pods < flows.length * 0.4 || services < flows.length * 0.1 || labelled !== flows.length) {
    throw new Error(`bench: enrichment did not happen: of ${flows.length} records, remote pod ${pods}, service ${services}, world ${world}, local labelled ${labelled}`);
  }
}

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

function printMedians(counts: number[], protocols: readonly Protocol[], samples: Map<string, Sample[]>): void {
  const m = (list: Sample[], key: keyof Sample) => median(list.map((s) => s[key]));
  const perCpu = (mode: string, protocol: Protocol) => median(counts.flatMap((n) => samples.get(`${mode}/${protocol}/${n}`)!).map((s) => s.perCpuSecond));
  for (const protocol of protocols) {
    const what = protocol === 2 ? "protocol 2, FlowColumns: ingest from the columns" : "protocol 1, FlowBatch: the record path (older agents)";
    console.log(`\nmedians, ${what} (control plane vs reference = decode + ack only)`);
    console.log("clients | control plane records/s | records/CPU-s | cores | reference records/s | records/CPU-s | cores | CPU-s per record, cp/ref");
    for (const n of counts) {
      const cp = samples.get(`controlplane/${protocol}/${n}`)!;
      const ref = samples.get(`reference/${protocol}/${n}`)!;
      const ratio = m(ref, "perCpuSecond") / m(cp, "perCpuSecond");
      console.log(`${n} | ${fmt(m(cp, "recordsPerSecond"))} | ${fmt(m(cp, "perCpuSecond"))} | ${m(cp, "serverCores").toFixed(2)} | `
        + `${fmt(m(ref, "recordsPerSecond"))} | ${fmt(m(ref, "perCpuSecond"))} | ${m(ref, "serverCores").toFixed(2)} | ${ratio.toFixed(2)}`);
    }
  }
  if (protocols.includes(1)) {
    console.log(`protocol 1 (record path): records per control-plane CPU-second, median: ${fmt(perCpu("controlplane", 1))}; reference ${fmt(perCpu("reference", 1))}`);
  }
  // The judged figure (the SUMMARY line): what this release's agents send.
  const judged = protocols.includes(2) ? 2 : 1;
  const cpPer = perCpu("controlplane", judged);
  const refPer = perCpu("reference", judged);
  console.log(`records per control-plane CPU-second, median over all runs: ${fmt(cpPer)} (target >= 500,000); `
    + `reference ${fmt(refPer)}; control plane / reference: ${(cpPer / refPer).toFixed(2)} (target >= 0.5); protocol ${judged}`);
}

/** --against's build: its bench script, which must exist (a build of this project). */
function againstFlag(): string | undefined {
  const dist = flagValue("--against");
  if (dist === undefined) return undefined;
  const script = path.resolve(dist, "bench", "ingest.js");
  if (!fs.existsSync(script)) throw new Error(`bench: --against takes another build's dist folder; ${script} does not exist`);
  return script;
}

/**
 * Each window pair's ratio (this build / the other, records per CPU-second), and their
 * median over all pairs and over the pairs in which neither control plane used more than
 * one core: with two full control planes taking turns, either at times spends 0.1-0.25 of a
 * core on its other threads through whole windows (never seen with the light reference),
 * which moves its ratio by as much.
 */
function printAgainst(counts: number[], protocols: readonly Protocol[], samples: Map<string, Sample[]>): void {
  const ratios: number[] = [], calm: number[] = [];
  const ours: number[] = [], theirs: number[] = [];
  const speeds: number[] = [], cores: number[] = [];
  for (const protocol of protocols) {
    for (const n of counts) {
      const a = samples.get(`controlplane/${protocol}/${n}`)!, b = samples.get(`against/${protocol}/${n}`)!;
      const pairs = a.map((s, i) => ({ ratio: s.perCpuSecond / b[i]!.perCpuSecond, calm: s.serverCores <= 1 && b[i]!.serverCores <= 1 }));
      console.log(`protocol ${protocol}, clients ${n}: this/against per pair ${pairs.map((p) => `${p.ratio.toFixed(2)}${p.calm ? "" : "*"}`).join(", ")} (*: a side above 1 core)`);
      ratios.push(...pairs.map((p) => p.ratio));
      calm.push(...pairs.filter((p) => p.calm).map((p) => p.ratio));
      ours.push(...a.map((s) => s.perCpuSecond));
      theirs.push(...b.map((s) => s.perCpuSecond));
      speeds.push(...a.map((s, i) => s.recordsPerSecond / b[i]!.recordsPerSecond));
      cores.push(...a.map((s) => s.serverCores));
    }
  }
  // What ingest workers change is records/s and the cores taken for them, beside records per CPU-second.
  console.log(`records/s this/against: median of ${speeds.length} window pairs ${median(speeds).toFixed(3)} `
    + `(range ${Math.min(...speeds).toFixed(2)}-${Math.max(...speeds).toFixed(2)}); this build's control plane ${median(cores).toFixed(2)} cores (median)`);
  console.log(`SUMMARY ingest this/against, records per control-plane CPU-second: median of ${ratios.length} window pairs ${median(ratios).toFixed(3)} `
    + `(range ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}); of the ${calm.length} with both at most 1 core `
    + `${calm.length > 0 ? median(calm).toFixed(3) : "-"}; this ${fmt(median(ours))}, against ${fmt(median(theirs))}`);
}

async function main(): Promise<void> {
  const runs = Number(flagValue("--runs") ?? 3);
  const windowMs = Number(flagValue("--window-ms") ?? 8000);
  const warmupMs = Number(flagValue("--warmup-ms") ?? 2000);
  const counts = (flagValue("--clients") ?? "1,2,4").split(",").map(Number).filter((n) => n > 0);
  const protocols = (flagValue("--protocols") ?? "2,1").split(",").map((p) => {
    if (p !== "1" && p !== "2") throw new Error(`bench: --protocols takes 1 and/or 2 (agent protocol versions), got "${p}"`);
    return Number(p) as Protocol;
  });
  const ingestWorkers = Number(flagValue("--ingest-workers") ?? 0);
  if (!Number.isInteger(ingestWorkers) || ingestWorkers < 0) throw new Error(`bench: --ingest-workers takes a whole number of threads, got "${flagValue("--ingest-workers")}"`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-bench-ingest-"));
  const dir = path.join(tmp, "manifests");
  const socket = path.join(tmp, "memory.sock");
  writeManifests(dir);
  console.log(`ingest: ${PODS} pods, ${SERVICES} services, ${NODES} nodes; batches of ${BATCH_RECORDS} records, ${MAX_IN_FLIGHT} in flight; `
    + `${runs} runs x ${windowMs} ms after ${warmupMs} ms warm-up; ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? "?"}), node ${process.version}`
    + (ingestWorkers > 0 ? `; this build's control plane with ${ingestWorkers} ingest worker thread(s)` : ""));

  const samples = new Map<string, Sample[]>();
  const againstScript = againstFlag();
  if (counts.length > 0) {
    const servers: Server[] = [];
    const modes: Server["mode"][] = ["controlplane", againstScript === undefined ? "reference" : "against"];
    for (const mode of modes) {
      const serverSocket = path.join(tmp, `${mode}.sock`);
      const child = mode === "reference" ? forkRole(mode, [serverSocket])
        : mode === "against" ? forkRole("controlplane", [dir, serverSocket, String(STORE_CAPACITY)], [], againstScript)
          : forkRole("controlplane", [dir, serverSocket, String(STORE_CAPACITY), String(ingestWorkers)]);
      servers.push({ mode, socket: serverSocket, process: child });
      await waitMessage(child, (m) => "ready" in m);
    }
    try {
      for (const server of servers.filter((s) => s.mode !== "reference")) {
        const fillSeconds = await prefill(server);
        console.log(`  ${server.mode === "against" ? "the other build's" : "control plane"} store filled to ${fmt(STORE_CAPACITY)} records in ${fillSeconds.toFixed(1)} s (2 clients); every window below runs with it full`);
      }
      for (let run = 1; run <= runs; run++) {
        for (const n of counts) {
          for (const protocol of protocols) {
            // Against another build, each pair's order alternates by run: neither always runs first.
            for (const server of againstScript !== undefined && run % 2 === 0 ? [...servers].reverse() : servers) {
              const s = await measure(server, protocol, n, warmupMs, windowMs);
              const key = `${server.mode}/${protocol}/${n}`;
              samples.set(key, [...(samples.get(key) ?? []), s]);
              console.log(`  run ${run} ${server.mode.padEnd(12)} protocol ${protocol} clients ${n}: ${fmt(s.recordsPerSecond)} records/s, ${fmt(s.perCpuSecond)} records/CPU-s, `
                + `server ${s.serverCores.toFixed(2)} cores, clients ${s.clientCores.toFixed(2)} cores, other work on the machine ${s.otherCores.toFixed(2)} cores`);
            }
          }
        }
      }
    } finally {
      await Promise.all(servers.map((server) => endChild(server.process)));
    }
  }

  if (counts.length > 0 && againstScript !== undefined) printAgainst(counts, protocols, samples);
  else if (counts.length > 0) printMedians(counts, protocols, samples);

  // Memory with the store full.
  const { server, fillSeconds } = await filledControlPlane(dir, socket, STORE_CAPACITY, 2, ["--expose-gc"], ingestWorkers);
  try {
    const observer = new ObserverServiceClient(`unix://${socket}`, grpc.credentials.createInsecure());
    const status = await getStatus(observer);
    observer.close();
    if (status.flowsStored !== BigInt(STORE_CAPACITY)) throw new Error(`bench: ${status.flowsStored} stored, expected ${STORE_CAPACITY}`);
    const before = memoryMiB(server.pid!);
    server.send("gc");
    const usage = (await waitMessage(server, (m) => "memory" in m)) as { memory: NodeJS.MemoryUsage };
    const after = memoryMiB(server.pid!);
    const mib = (b: number) => (b / 1048576).toFixed(0);
    console.log(`\nmemory with ${fmt(Number(status.flowsStored))} records stored (filled in ${fillSeconds.toFixed(1)} s): `
      + `RSS ${before.rss.toFixed(0)} MiB, after a full GC ${after.rss.toFixed(0)} MiB (heap used ${mib(usage.memory.heapUsed)} of ${mib(usage.memory.heapTotal)} MiB, `
      + `array buffers ${mib(usage.memory.arrayBuffers)} MiB), peak ${after.hwm.toFixed(0)} MiB (target <= 300 MiB, issue 11)`);
    const snapshot = flagValue("--heap-snapshot");
    if (snapshot !== undefined) {
      server.send({ heapSnapshot: path.resolve(snapshot) });
      await waitMessage(server, (m) => "heapSnapshot" in m, 600_000);
      console.log(`heap snapshot of the control plane: ${path.resolve(snapshot)} (summary: node dist/bench/heap-summary.js FILE)`);
    }
  } finally {
    await endChild(server);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function cli(): Promise<void> {
  const [role, ...args] = process.argv.slice(2);
  if (role === "controlplane") await controlPlaneRole(args[0]!, args[1]!, Number(args[2]), Number(args[3] ?? 0));
  else if (role === "reference") await referenceRole(args[0]!);
  else if (role === "client") await clientRole(args[0]!, Number(args[1]), Number(args[2]), Number(args[3] ?? 0), args[4] === "1" ? 1 : 2, Number(args[5] ?? 0), args[6] === "pooled");
  else await main();
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === thisFile) {
  cli().catch((err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  });
}
