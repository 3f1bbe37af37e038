// The control plane over real gRPC: a ControlPlane in this process on a unix socket, fed by
// raw AgentService streams and by the agent's own ControlPlaneSink, queried through the
// ObserverService, health checking and server reflection. Every refusal must end only the
// offending stream: the other agent's next batch is still acknowledged and stored.
import fs from "node:fs";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ControlPlane, type ControlPlaneOptions } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import { bind, createGrpcServer, MAX_MESSAGE_BYTES } from "../controlplane/grpc.js";
import { ControlPlaneSink } from "../agent/export/controlplane.js";
import { costOf, encodeRecords } from "../agent/export/record-buffer.js";
import { ControlPlaneConnection } from "../agent/controlplane/connection.js";
import { LogCapture } from "./harness/log-capture.js";
import { DuckDBFlowStore } from "../controlplane/store/duckdb.js";
import { openClickHouseStore } from "../controlplane/store/clickhouse/store.js";
import { parseClickHouseLocation } from "../controlplane/store/clickhouse/location.js";
import { useClickHouse } from "./harness/clickhouse.js";
import type { FlowStore, StoredBatch } from "../controlplane/store/durable.js";
import { sleep, waitFor } from "./harness/wait.js";
import { timestampOfMs } from "../config/time.js";
import {
  AgentServiceClient, ConnectRequest, ConnectResponse, type AgentHello, type FlowColumns,
} from "../proto/gen/bulkhead/v1/agent.js";
import { columnsFromRecords } from "../flowcolumns/columns.js";
import { compileRequest } from "../controlplane/store/filter.js";
import { encodeColumnsBody, encodeColumnsRequest } from "../flowcolumns/wire.js";
import {
  FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict,
} from "../proto/gen/bulkhead/v1/flow.js";
import {
  FlowFilter, ObserverServiceClient, type GetFlowMapRequest, type GetFlowMapResponse, type GetFlowsRequest, type GetStatusResponse,
} from "../proto/gen/bulkhead/v1/observer.js";

const require = createRequire(import.meta.url);

// A full collection before a heap reading, so that it counts what is held, not garbage.
v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

// ---------------------------------------------------------------------------------------
// The cluster: namespace shop, nodes node1 and node2, web-1 on node1 and db-0 on node2.

const WEB_IP = "10.0.1.5";
const DB_IP = "10.0.2.7";

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: shop }
---
apiVersion: v1
kind: Node
metadata: { name: node1 }
status: { addresses: [{ type: InternalIP, address: 192.168.0.11 }] }
---
apiVersion: v1
kind: Node
metadata: { name: node2 }
status: { addresses: [{ type: InternalIP, address: 192.168.0.12 }] }
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  uid: uid-web-1
  labels: { app: web }
  creationTimestamp: "2024-01-01T00:00:00Z"
spec: { nodeName: node1 }
status: { phase: Running, podIP: ${WEB_IP} }
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  uid: uid-db-0
  labels: { app: db }
  creationTimestamp: "2024-01-01T00:00:00Z"
spec: { nodeName: node2 }
status: { phase: Running, podIP: ${DB_IP} }
`;

// ---------------------------------------------------------------------------------------
// Records, logs, the control plane

let sequence = 0n;

/**
 * A valid record as node's agent would send it, seen leaving its node's pod: web-1 →
 * db-0:5432 over TCP on node1, db-0 → web-1:5432 on node2 (an agent may name only its own
 * node's pods).
 */
function record(node: string, overrides: Partial<FlowRecord> = {}): FlowRecord {
  const [from, to] = node === "node2" ? [DB_IP, WEB_IP] : [WEB_IP, DB_IP];
  const nowMs = Date.now();
  return FlowRecord.fromPartial({
    startTime: timestampOfMs(nowMs - 500), endTime: timestampOfMs(nowMs), node,
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: "lxc-web-1", ifindex: 7,
    ip: { source: from, destination: to, version: IpVersion.IP_VERSION_IPV4 },
    l4: {
      protocol: 6, protocolName: "TCP", sourcePort: 40_000, destinationPort: 5432,
      tcpFlags: { fin: false, syn: true, rst: false, psh: false, ack: true, urg: false, ece: false, cwr: false },
      icmpType: 0, icmpCode: 0,
    },
    packets: 3n, bytes: 180n, source: undefined, destination: undefined,
    verdict: Verdict.VERDICT_FORWARDED, sequence: ++sequence,
    ...overrides,
  });
}

/** The FlowColumns message (as ts-proto decodes it) of the agent's encoding of `batch`, to forge from. */
function columnsMessage(batchId: bigint, batch: FlowRecord[]): FlowColumns {
  const m = ConnectRequest.decode(encodeColumnsRequest(batchId, encodeColumnsBody(columnsFromRecords(batch)), { seconds: 1n, nanos: 0 }));
  if (m.kind?.$case !== "columns") throw new Error("not a columns request");
  return m.kind.value;
}

function records(node: string, n: number): FlowRecord[] {
  return Array.from({ length: n }, () => record(node));
}

let tmp: string;
let manifests: string;
let address: string;

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-cp-stream-"));
  manifests = path.join(tmp, "manifests");
  fs.mkdirSync(manifests);
  fs.writeFileSync(path.join(manifests, "cluster.yaml"), MANIFESTS);
  address = `unix://${path.join(tmp, "cp.sock")}`;
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function startControlPlane(logs = new LogCapture(), options: Partial<ControlPlaneOptions> = {}, listen = address): Promise<{ cp: ControlPlane; logs: LogCapture }> {
  const cp = new ControlPlane({
    source: new FolderSource({ dir: manifests }), storeCapacity: 100_000, log: logs.log,
    // Access control has its own test (access.test.ts); these clients carry no token.
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
    ...options,
  });
  await cp.start([listen]);
  return { cp, logs };
}

/** Stops a control plane, failing (rather than hanging the suite) when stop() does not finish. */
async function stopControlPlane(cp: ControlPlane): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(
      "ControlPlane.stop() did not return within 5 s: with an agent connected, server.tryShutdown() waits for the agent "
      + "streams, which never end on their own, unless stop() ends them first (AgentRegistry.close())")), 5000);
  });
  try {
    await Promise.race([cp.stop(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}


// ---------------------------------------------------------------------------------------
// Clients

interface CallStatus { code: grpc.status; details: string }

/** Every raw stream a test opened, cancelled after the test so that the control plane can stop. */
const openAgents: RawAgent[] = [];

/** An agent's stream without the ControlPlaneSink's logic, to send exactly what a test needs. */
class RawAgent {
  readonly call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>;
  readonly responses: ConnectResponse[] = [];
  readonly status: Promise<CallStatus>;
  private final: CallStatus | undefined;

  /** `hello: null` opens the stream without one. */
  constructor(readonly client: AgentServiceClient, readonly node: string, hello: Partial<AgentHello> | null = {}, instanceId = `instance-${node}-${Math.random()}`) {
    this.call = client.connect();
    openAgents.push(this);
    this.call.on("data", (m: ConnectResponse) => this.responses.push(m));
    this.call.on("error", () => undefined); // the status below carries it
    this.status = new Promise((resolve) => this.call.on("status", (s: grpc.StatusObject) => {
      this.final = { code: s.code, details: s.details };
      resolve(this.final);
    }));
    if (hello !== null) {
      this.call.write({ kind: { $case: "hello", value: {
        node, version: "0.1.0-test", protocolVersion: 1, capabilities: ["tcx"], instanceId, ...hello,
      } } });
    }
  }

  /** `sentAtMs`: the agent's clock when it sends (FlowBatch.sent_at); none, as an older agent. */
  send(batchId: bigint, batch: FlowRecord[], sentAtMs?: number): void {
    const sentAt = sentAtMs === undefined ? undefined : { seconds: BigInt(Math.floor(sentAtMs / 1000)), nanos: (sentAtMs % 1000) * 1_000_000 };
    this.call.write({ kind: { $case: "flows", value: { batchId, records: batch, sentAt } } });
  }

  /** The records as a FlowColumns batch, encoded as the agent of protocol version 2 encodes them. */
  sendColumns(batchId: bigint, batch: FlowRecord[], sentAtMs = Date.now()): void {
    const body = encodeColumnsBody(columnsFromRecords(batch));
    // The agent's clock when it sends, to the millisecond: whole seconds would make the skew
    // up to 999 ms by themselves, and under load the delivery's delay took it past the
    // 1,000 ms tolerance (CI run 44: every time moved by a second).
    this.call.write(ConnectRequest.decode(encodeColumnsRequest(batchId, body, timestampOfMs(sentAtMs))));
  }

  acks(): bigint[] {
    return this.responses.flatMap((m) => (m.kind?.$case === "ack" ? [m.kind.value.batchId] : []));
  }

  async acked(batchId: bigint, timeoutMs = 10_000): Promise<void> {
    await waitFor(() => this.acks().includes(batchId) || this.final !== undefined, (v) => v, timeoutMs, `ack of batch ${batchId} on ${this.node}`);
    if (!this.acks().includes(batchId)) throw new Error(`${this.node}: stream ended (${JSON.stringify(this.final)}) before batch ${batchId} was acked`);
  }

  /** Sends a batch and waits for its ack. */
  async deliver(batchId: bigint, batch: FlowRecord[]): Promise<void> {
    this.send(batchId, batch);
    await this.acked(batchId);
  }

  close(): void {
    this.call.end();
  }
}

class Observer {
  readonly client: ObserverServiceClient;
  constructor(address: string) {
    this.client = new ObserverServiceClient(address, grpc.credentials.createInsecure());
  }

  status(): Promise<GetStatusResponse> {
    return new Promise((resolve, reject) => this.client.getStatus({}, (err, res) => (err ? reject(err) : resolve(res))));
  }

  flows(req: Partial<GetFlowsRequest> = {}): Promise<FlowRecord[]> {
    return new Promise((resolve, reject) => {
      const out: FlowRecord[] = [];
      const call = this.client.getFlows({ allow: [], deny: [], last: 0n, follow: false, ...req });
      call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) out.push(m.flow); });
      call.on("error", reject);
      call.on("end", () => resolve(out));
    });
  }

  flowMap(req: Partial<GetFlowMapRequest>): Promise<GetFlowMapResponse> {
    return new Promise((resolve, reject) => this.client.getFlowMap({ namespace: "", ...req }, (err, res) => (err ? reject(err) : resolve(res))));
  }

  close(): void {
    this.client.close();
  }
}

/** A unix-socket proxy that delays every byte from client to server by `delayMs`, in order. */
async function delayingProxy(target: string, listenPath: string, delayMs: number): Promise<{ path: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    sockets.add(client).add(upstream);
    client.on("data", (chunk) => setTimeout(() => upstream.write(chunk), delayMs));
    upstream.pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(listenPath, resolve));
  return {
    path: listenPath,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

async function rejection(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("expected the call to fail");
}

const statusName = (code: grpc.status) => grpc.status[code];

// ---------------------------------------------------------------------------------------

describe("control plane over gRPC, one control plane per test", () => {
  let cp: ControlPlane;
  let logs: LogCapture;
  let agents: AgentServiceClient;
  let observer: Observer;

  beforeEach(async () => {
    ({ cp, logs } = await startControlPlane());
    agents = new AgentServiceClient(address, grpc.credentials.createInsecure());
    observer = new Observer(address);
  });

  afterEach(async () => {
    // Streams first: ControlPlane.stop() waits for them (see the restart tests below).
    for (const a of openAgents.splice(0)) a.call.cancel();
    agents.close();
    observer.close();
    await stopControlPlane(cp);
  });

  it("a query's verdict filter is checked on the history's verdict column: the request's predicate runs on those rows only", async () => {
    const agent = new RawAgent(agents, "node1");
    const dropped = { verdict: Verdict.VERDICT_DROPPED };
    await agent.deliver(1n, [record("node1"), record("node1", dropped), record("node1"), record("node1", dropped), record("node1")]);
    const allow = [FlowFilter.fromPartial({ verdict: [Verdict.VERDICT_DROPPED], namespace: ["shop"] })];
    const requested = compileRequest(allow, []);
    const seen: Verdict[] = [];
    const predicate = (r: FlowRecord) => { seen.push(r.verdict); return requested(r); };
    expect([...cp.flows({ predicate, allow, deny: [], last: 0 }).hot].map((f) => f.verdict)).toEqual([Verdict.VERDICT_DROPPED, Verdict.VERDICT_DROPPED]);
    expect(seen).toEqual([Verdict.VERDICT_DROPPED, Verdict.VERDICT_DROPPED]);
    seen.length = 0;
    let read = 0;
    const replay = cp.flowsToScan({ predicate, allow, deny: [] });
    replay.history.scan(replay.hot, () => { read++; });
    expect([read, seen.length]).toEqual([2, 2]);
    // The gRPC answer is the same records.
    expect((await observer.flows({ allow })).map((f) => f.verdict)).toEqual([Verdict.VERDICT_DROPPED, Verdict.VERDICT_DROPPED]);
  });

  it("refuses and counts records in which an agent names another node's pod; the victim's flows stay unchanged, the rest is stored", async () => {
    const liar = new RawAgent(agents, "node1");
    const honest = new RawAgent(agents, "node2");
    await honest.deliver(1n, records("node2", 2));
    const dbEnd = { ip: DB_IP, namespace: "shop", podName: "db-0", podUid: "uid-db-0", labels: { app: "db" }, workloadKind: "", workloadName: "", node: "node2", service: "", world: false };
    await liar.deliver(1n, [
      record("node1"),
      // db-0 runs on node2: leaving it by name, by address, and entering it, all seen on node1.
      record("node1", { ip: { source: DB_IP, destination: WEB_IP, version: IpVersion.IP_VERSION_IPV4 }, source: dbEnd }),
      record("node1", { ip: { source: DB_IP, destination: "10.0.1.99", version: IpVersion.IP_VERSION_IPV4 } }),
      record("node1", { point: ObservationPoint.OBSERVATION_POINT_TO_POD, ip: { source: WEB_IP, destination: DB_IP, version: IpVersion.IP_VERSION_IPV4 }, destination: dbEnd }),
      // web-1 under an address it never had; and a pod the control plane does not know (kept, named from its address).
      record("node1", { ip: { source: "10.0.1.66", destination: DB_IP, version: IpVersion.IP_VERSION_IPV4 }, source: { ...dbEnd, ip: "10.0.1.66", podUid: "uid-web-1" } }),
      record("node1", { ip: { source: "10.0.1.67", destination: DB_IP, version: IpVersion.IP_VERSION_IPV4 }, source: { ...dbEnd, ip: "10.0.1.67", podUid: "uid-gone", namespace: "payments" } }),
    ]);
    await liar.deliver(2n, records("node1", 1));

    const flows = await observer.flows();
    expect(flows.filter((f) => f.node === "node1").map((f) => `${f.source?.podName || f.source?.ip}>${f.destination?.podName}`).sort())
      .toEqual(["10.0.1.67>db-0", "web-1>db-0", "web-1>db-0"]);
    expect(flows.filter((f) => f.source?.namespace === "payments")).toEqual([]);
    // db-0's own flows are the two node2 sent.
    expect(flows.filter((f) => f.source?.podName === "db-0" || (f.destination?.podName === "db-0" && f.point === ObservationPoint.OBSERVATION_POINT_TO_POD))
      .map((f) => f.node)).toEqual(["node2", "node2"]);
    const status = await observer.status();
    expect(status.refused.map((r) => `${r.node} ${r.cause} ${r.records}`).sort())
      .toEqual(["node1 foreign_address 2", "node1 foreign_pod 2", "node1 unknown_pod 1"]);
    expect(status.recordsTotal).toBe(9n);
    expect(status.flowsStored).toBe(5n);
  });

  it("moves the times of nodes whose clocks are 2 h ahead and behind by their skew, and reports each node's skew", async () => {
    const HOURS_2 = 2 * 3600 * 1000;
    const now = Date.now();
    const ahead = new RawAgent(agents, "node1");
    const behind = new RawAgent(agents, "node2");
    ahead.send(1n, [record("node1", { startTime: timestampOfMs(now + HOURS_2 - 500), endTime: timestampOfMs(now + HOURS_2) })], now + HOURS_2);
    behind.send(1n, [record("node2", { startTime: timestampOfMs(now - HOURS_2 - 500), endTime: timestampOfMs(now - HOURS_2) })], now - HOURS_2);
    await ahead.acked(1n);
    await behind.acked(1n);
    const flows = await observer.flows();
    expect(flows).toHaveLength(2);
    for (const f of flows) {
      const end = Number(f.endTime?.seconds ?? 0n) * 1000;
      // Within the network delay and this test's own pace of the control plane's clock.
      expect(Math.abs(end - now), `${f.node}'s record end, ms from now`).toBeLessThan(5000);
    }
    const clocks = (await observer.status()).clocks;
    const skew = (node: string) => Number(clocks.find((c) => c.node === node)?.skewMs ?? 0n);
    expect(Math.abs(skew("node1") - HOURS_2)).toBeLessThan(5000);
    expect(Math.abs(skew("node2") + HOURS_2)).toBeLessThan(5000);
    expect(clocks.map((c) => c.recordsCorrected)).toEqual([1n, 1n]);
    // A batch without sent_at (an older agent) is taken as dated.
    await ahead.deliver(2n, [record("node1")]);
    expect((await observer.status()).clocks.find((c) => c.node === "node1")?.recordsCorrected).toBe(1n);
  });

  it("keeps the times of a batch that was 3 s on its way: a hold-up is not a clock behind (records and columns)", async () => {
    // Both agents' clocks are right. Their first batches come at once; the second of each was
    // sent 3 s ago (as one that waited behind a stall of the control plane): its sample of
    // the skew is -3 s, and taken alone it moved the records 3 s later than they were.
    const now = Date.now();
    const dated = (node: string, endMs: number) => record(node, { startTime: timestampOfMs(endMs - 500), endTime: timestampOfMs(endMs) });
    const node1 = new RawAgent(agents, "node1");
    const node2 = new RawAgent(agents, "node2", { protocolVersion: 2 });
    node1.send(1n, [dated("node1", now - 100)], now);
    node2.sendColumns(1n, [dated("node2", now - 100)], now);
    await node1.acked(1n);
    await node2.acked(1n);
    node1.send(2n, [dated("node1", now - 3100)], now - 3000);
    node2.sendColumns(2n, [dated("node2", now - 3100)], now - 3000);
    await node1.acked(2n);
    await node2.acked(2n);
    const ends = (await observer.flows()).map((f) => `${f.node} ${Number(f.endTime!.seconds) * 1000 + f.endTime!.nanos / 1e6 - now}`);
    expect(ends.sort()).toEqual(["node1 -100", "node1 -3100", "node2 -100", "node2 -3100"]);
    const clocks = (await observer.status()).clocks;
    expect(clocks.map((c) => c.recordsCorrected)).toEqual([0n, 0n]);
    for (const c of clocks) expect(Math.abs(Number(c.skewMs)), `${c.node}'s skew`).toBeLessThan(1000);
  });

  it("reports the control plane's own losses in GetStatus: a record older than the map's retention counts as late", async () => {
    const agent = new RawAgent(agents, "node1");
    const old = Date.now() - 2 * 3600 * 1000;
    await agent.deliver(1n, [record("node1", { startTime: timestampOfMs(old - 500), endTime: timestampOfMs(old) }), record("node1")]);
    const own = (await observer.status()).losses.filter((l) => l.node === "controlplane").map((l) => `${l.cause} ${l.unit} ${l.count}`);
    expect(own).toEqual(["late_records records 1", "untracked_flows flows 0", "ui_streams_cut streams 0", "flow_streams_cut streams 0"]);
  });

  it("forgets an agent's session an hour after it disconnected, at the next hello, and keeps a recent one", async () => {
    const gone = new RawAgent(agents, "node2");
    await gone.deliver(1n, records("node2", 1));
    const recent = new RawAgent(agents, "node1", {}, "instance-recent");
    await recent.deliver(1n, records("node1", 1));
    gone.close();
    recent.close();
    await waitFor(() => cp.agents.connected, (n) => n === 0, 5000, "both streams to end");
    cp.agents.sessions.get("node2")!.lastSeenMs -= 2 * 3600 * 1000; // as if it left two hours ago
    const next = new RawAgent(agents, "node1");
    await next.deliver(1n, records("node1", 1));
    expect([...cp.agents.sessions.keys()]).toEqual(["node1"]);
    expect((await observer.status()).agentsKnown).toBe(1);
  });

  it("ends a follow stream once its until has passed (plus the grace for late records), with what started by then", async () => {
    const agent = new RawAgent(agents, "node1");
    const now = Date.now();
    await agent.deliver(1n, [record("node1", { startTime: timestampOfMs(now - 1000) }), record("node1", { startTime: timestampOfMs(now + 60_000), endTime: timestampOfMs(now + 61_000) })]);
    // Both resolve only when the control plane ends the stream: the test times out otherwise.
    const past = await observer.flows({ follow: true, until: timestampOfMs(now - 10_000) });
    expect(past).toEqual([]);
    const soon = await observer.flows({ follow: true, until: timestampOfMs(now + 200) });
    expect(soon.map((f) => f.startTime)).toEqual([timestampOfMs(now - 1000)]);
  }, 20_000);

  it("enriches, stores and counts a well-behaved agent's batches, and sends it its configuration", async () => {
    const agent = new RawAgent(agents, "node1");
    await agent.deliver(1n, records("node1", 3));
    await agent.deliver(2n, records("node1", 2));

    const config = agent.responses.find((m) => m.kind?.$case === "config");
    // The drain interval is the agent's own flag: the control plane sends none (0).
    expect(config?.kind).toEqual({ $case: "config", value: { node: "node1", drainIntervalMs: 0 } });
    const endpoints = agent.responses.find((m) => m.kind?.$case === "endpoints");
    expect(endpoints?.kind?.$case === "endpoints" && endpoints.kind.value.endpoints.map((e) => `${e.namespace}/${e.podName} ${e.ips.join(",")}`))
      .toEqual([`shop/web-1 ${WEB_IP}`]);

    const flows = await observer.flows();
    expect(flows).toHaveLength(5);
    for (const f of flows) {
      expect(f.node).toBe("node1");
      expect(f.source).toMatchObject({ ip: WEB_IP, namespace: "shop", podName: "web-1", podUid: "uid-web-1", node: "node1", labels: { app: "web" } });
      expect(f.destination).toMatchObject({ ip: DB_IP, namespace: "shop", podName: "db-0", node: "node2", labels: { app: "db" } });
    }
    const byLabel = await observer.flows({ allow: [FlowFilter.fromPartial({ sourceLabel: ["app=web"], destinationPort: [5432] })] });
    expect(byLabel).toHaveLength(5);

    const status = await observer.status();
    expect(status.agentsConnected).toBe(1);
    expect(status.recordsTotal).toBe(5n);
    expect(status.flowsStored).toBe(5n);
    agent.close();
    expect(await agent.status).toEqual({ code: grpc.status.OK, details: "OK" });
    await waitFor(() => observer.status(), (s) => s.agentsConnected === 0, 5000, "the closed agent to count as disconnected");
  });

  it("refuses an unknown protocol version with FAILED_PRECONDITION naming both versions, logs the node, and keeps the other agent streaming", async () => {
    const good = new RawAgent(agents, "node1");
    await good.deliver(1n, records("node1", 10));

    const bad = new RawAgent(agents, "node2", { protocolVersion: 3 });
    const status = await bad.status;
    expect(statusName(status.code)).toBe("FAILED_PRECONDITION");
    expect(status.details).toMatch(/version 3\b.*version 2\b/);

    const refused = logs.find((l) => l.msg === "agent stream refused");
    expect(refused, "a log line for the refused stream").toBeDefined();
    // A refused hello has no session yet: the node must come from the hello itself.
    expect(refused, "the \"agent stream refused\" line names the refused node").toMatchObject({ node: "node2", code: "FAILED_PRECONDITION" });

    await good.deliver(2n, records("node1", 10));
    const s = await observer.status();
    expect(s.recordsTotal).toBe(20n);
    expect(s.agentsConnected).toBe(1);
    expect(await observer.flows()).toHaveLength(20);
  });

  it("takes a protocol-2 agent's FlowColumns batches as the records they carry (the agent's own encoding)", async () => {
    const agent = new RawAgent(agents, "node1", { protocolVersion: 2 });
    const sent = records("node1", 4);
    agent.sendColumns(1n, sent);
    await agent.acked(1n);
    const flows = await observer.flows();
    expect(flows.map((f) => f.sequence)).toEqual(sent.map((r) => r.sequence));
    expect(flows[0]).toMatchObject({ node: "node1", ip: sent[0]!.ip, l4: sent[0]!.l4, packets: sent[0]!.packets, startTime: sent[0]!.startTime });
    expect((await observer.status()).recordsTotal).toBe(4n);
  });

  it("refuses a forged FlowColumns batch with INVALID_ARGUMENT naming the batch and the column; the agent's next batch and another agent go on", async () => {
    const other = new RawAgent(agents, "node2", { protocolVersion: 2 });
    other.sendColumns(1n, records("node2", 2));
    await other.acked(1n);
    const instance = "forger";
    const forger = new RawAgent(agents, "node1", { protocolVersion: 2 }, instance);
    forger.sendColumns(1n, records("node1", 3));
    await forger.acked(1n);
    // Batch 2: its destination ports column one value short of the rows.
    const bad = columnsMessage(2n, records("node1", 3));
    forger.call.write({ kind: { $case: "columns", value: { ...bad, destinationPorts: bad.destinationPorts.slice(1) } } });
    const status = await forger.status;
    expect(statusName(status.code)).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe("flow batch 2: column destination_ports: 2 values, but the batch has 3 rows");
    const refused = forger.responses.find((m) => m.kind?.$case === "refused");
    expect(refused?.kind).toEqual({ $case: "refused", value: { batchId: 2n, nextBatchId: 3n, reason: status.details } });
    // The same agent reconnects and goes on with batch 3; the other agent never noticed.
    const again = new RawAgent(agents, "node1", { protocolVersion: 2 }, instance);
    again.sendColumns(3n, records("node1", 2));
    await again.acked(3n);
    other.sendColumns(2n, records("node2", 2));
    await other.acked(2n);
    const s = await observer.status();
    expect(s.recordsTotal).toBe(3n + 2n + 2n + 2n);
    expect(s.refused.map((r) => `${r.node} ${r.cause} ${r.records}`)).toEqual(["node1 invalid_record 3"]);
  });

  it("refuses FlowColumns with IPv4 addresses 4 bytes wide, naming the column", async () => {
    const agent = new RawAgent(agents, "node1", { protocolVersion: 2 });
    const c = columnsMessage(1n, records("node1", 2));
    const narrow = Buffer.alloc(8);
    narrow.set(c.sourceAddresses.subarray(12, 16), 0);
    narrow.set(c.sourceAddresses.subarray(28, 32), 4);
    agent.call.write({ kind: { $case: "columns", value: { ...c, sourceAddresses: narrow } } });
    const status = await agent.status;
    expect(statusName(status.code)).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe("flow batch 1: column source_addresses: addresses of 4 bytes, want 16 (IPv6, IPv4 as ::ffff:a.b.c.d)");
    expect((await observer.status()).recordsTotal).toBe(0n);
  });

  it("refuses a FlowColumns batch of no rows, naming the batch, and lists no refused records for it", async () => {
    const agent = new RawAgent(agents, "node1", { protocolVersion: 2 });
    agent.call.write({ kind: { $case: "columns", value: { ...columnsMessage(1n, records("node1", 2)), rows: 0 } } });
    const status = await agent.status;
    expect(statusName(status.code)).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe("flow batch 1: column rows: the batch has no rows; an empty batch is never sent");
    expect(agent.responses.find((m) => m.kind?.$case === "refused")?.kind).toEqual({ $case: "refused", value: { batchId: 1n, nextBatchId: 2n, reason: status.details } });
    const s = await observer.status();
    expect(s.recordsTotal).toBe(0n);
    // GetStatus.refused counts records; a batch that claims none adds no line of 0.
    expect(s.refused).toEqual([]);
  });

  it("refuses a protocol-1 FlowBatch on a protocol-2 stream, naming the version", async () => {
    const agent = new RawAgent(agents, "node1", { protocolVersion: 2 });
    agent.send(1n, records("node1", 1));
    const status = await agent.status;
    expect(statusName(status.code)).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe("batch 1: protocol version 2 sends flows as FlowColumns, not FlowBatch");
  });

  it("refuses a stream whose first message is not a hello with FAILED_PRECONDITION", async () => {
    const agent = new RawAgent(agents, "node1", null);
    agent.send(1n, records("node1", 1));
    const status = await agent.status;
    expect(statusName(status.code)).toBe("FAILED_PRECONDITION");
    expect(status.details).toContain("the first message must be a hello, got flows");
    expect((await observer.status()).recordsTotal).toBe(0n);
  });

  it("processes nothing a refused stream sends after the refusal", async () => {
    const agent = new RawAgent(agents, "node1", null);
    // All in one write burst: a batch before the hello (refused), then a hello and a good batch.
    agent.send(1n, records("node1", 1));
    agent.call.write({ kind: { $case: "hello", value: { node: "node1", version: "0.1.0-test", protocolVersion: 1, capabilities: [], instanceId: "late-hello" } } });
    agent.send(1n, records("node1", 3));
    const status = await agent.status;
    expect(statusName(status.code)).toBe("FAILED_PRECONDITION");
    await sleep(200);
    const s = await observer.status();
    expect({ recordsTotal: s.recordsTotal, agentsConnected: s.agentsConnected, agentsKnown: s.agentsKnown })
      .toEqual({ recordsTotal: 0n, agentsConnected: 0, agentsKnown: 0 });
  });

  it("refuses a batch with a record for another node with INVALID_ARGUMENT naming batch and record, stores none of it, and keeps the other agent streaming", async () => {
    const good = new RawAgent(agents, "node2");
    const bad = new RawAgent(agents, "node1");
    await bad.deliver(1n, records("node1", 4));
    await good.deliver(1n, records("node2", 4));

    bad.send(2n, [record("node1"), record("node1"), record("node2"), record("node1")]);
    const status = await bad.status;
    expect(statusName(status.code)).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe('batch 2 record 2: record for node "node2" on the stream of node "node1"');
    expect(logs.find((l) => l.msg === "agent stream refused")).toMatchObject({ node: "node1", code: "INVALID_ARGUMENT" });

    await good.deliver(2n, records("node2", 4));
    const s = await observer.status();
    expect(s.recordsTotal).toBe(12n);
    expect(s.agentsConnected).toBe(1);
    const flows = await observer.flows();
    expect(flows.filter((f) => f.node === "node1")).toHaveLength(4);
    expect(flows.filter((f) => f.node === "node2")).toHaveLength(8);
  });

  it("ends a stream that sends bytes that are not a ConnectRequest with an error status, and keeps the other agent streaming", async () => {
    const good = new RawAgent(agents, "node2");
    await good.deliver(1n, records("node2", 4));

    // The same method, with the request serializer replaced so that raw bytes go on the wire.
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    const call = raw.makeBidiStreamRequest<Buffer, ConnectResponse>(
      "/bulkhead.v1.AgentService/Connect", (b: Buffer) => b, (b: Buffer) => ConnectResponse.decode(b));
    const received: ConnectResponse[] = [];
    call.on("data", (m: ConnectResponse) => received.push(m));
    call.on("error", () => undefined);
    const status = new Promise<CallStatus>((resolve) => call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details })));
    call.write(Buffer.from(ConnectRequest.encode({ kind: { $case: "hello", value: {
      node: "node1", version: "0.1.0-test", protocolVersion: 1, capabilities: [], instanceId: "garbage-sender",
    } } }).finish()));
    await waitFor(() => received.length, (n) => n >= 2, 5000, "config and endpoints for the raw stream");
    // Field 2 (flows), length-delimited, claims 100 bytes and carries 3.
    call.write(Buffer.from([0x12, 0x64, 0x08, 0x01, 0x12]));
    const final = await status;
    raw.close();
    expect(final.code, `status ${statusName(final.code)} "${final.details}"`).not.toBe(grpc.status.OK);
    // grpc-js decodes requests before our handler sees them and ends the call itself.
    expect(statusName(final.code)).toBe("INTERNAL");
    expect(final.details).toContain("Error deserializing request");

    await good.deliver(2n, records("node2", 4));
    expect((await observer.status()).recordsTotal).toBe(8n);
    expect(await observer.flows()).toHaveLength(8);

    // grpc-js ends the call before our handler sees a message; the handler hears only that
    // the call went away, so the log names the node but not the cause.
    const gone = await waitFor(() => logs.find((l) => l.msg === "agent disconnected" && l.node === "node1"), (l) => l !== undefined, 5000, "a log line for node1's stream");
    expect(gone).toMatchObject({ node: "node1", reason: "cancelled" });
    expect((await observer.status()).agentsConnected).toBe(1);
  });

  it("ends a stream that sends a message over 16 MiB with RESOURCE_EXHAUSTED, keeps the other agent streaming and keeps serving GetStatus", async () => {
    const good = new RawAgent(agents, "node2");
    await good.deliver(1n, records("node2", 4));

    // The client's own limit is left at grpc-js's default (unlimited send), so the server decides.
    const big = new RawAgent(agents, "node1");
    await big.deliver(1n, records("node1", 1));
    big.send(2n, [record("node1", { interface: "x".repeat(MAX_MESSAGE_BYTES + 1024) })]);
    const status = await big.status;
    expect(statusName(status.code), status.details).toBe("RESOURCE_EXHAUSTED");

    await good.deliver(2n, records("node2", 4));
    const s = await observer.status();
    expect(s.recordsTotal).toBe(9n);
    expect(await observer.flows()).toHaveLength(9);
    const gone = await waitFor(() => logs.find((l) => l.msg === "agent disconnected" && l.node === "node1"), (l) => l !== undefined, 5000, "a log line for node1's stream");
    expect(gone).toMatchObject({ node: "node1", reason: "cancelled" });
    expect((await observer.status()).agentsConnected).toBe(1);
  });

  it("acknowledges a batch re-sent after a reconnect again but applies it once", async () => {
    const first = new RawAgent(agents, "node1", {}, "instance-a");
    await first.deliver(1n, records("node1", 5));
    const batch2 = records("node1", 5);
    await first.deliver(2n, batch2);
    first.close();
    await first.status;
    await waitFor(() => observer.status(), (s) => s.agentsConnected === 0, 5000, "the first stream to end");

    const again = new RawAgent(agents, "node1", {}, "instance-a");
    await again.deliver(2n, batch2);
    expect(again.acks()).toEqual([2n]);
    let s = await observer.status();
    expect(s.recordsTotal).toBe(10n);
    expect(s.agentsConnected).toBe(1);
    expect(await observer.flows()).toHaveLength(10);

    await again.deliver(3n, records("node1", 5));
    s = await observer.status();
    expect(s.recordsTotal).toBe(15n);
    expect(await observer.flows()).toHaveLength(15);

    // A new agent process (new instance id) counts from 1 again and is applied.
    again.close();
    await again.status;
    const restarted = new RawAgent(agents, "node1", {}, "instance-b");
    await restarted.deliver(1n, records("node1", 5));
    expect((await observer.status()).recordsTotal).toBe(20n);
  });

  it("drops what a replaced stream still delivers, so a batch re-sent on the replacement is applied once", async () => {
    // The agent's first stream looks dead to the agent (say, a keepalive timeout on a slow
    // path), so it reconnects and re-sends its unacknowledged batch 2, while the old
    // stream's copy of batch 2 is still on its way: the old path delays agent → control
    // plane bytes by 300 ms.
    const proxy = await delayingProxy(address.slice("unix://".length), path.join(tmp, "slow.sock"), 300);
    const slow = new AgentServiceClient(`unix://${proxy.path}`, grpc.credentials.createInsecure());
    try {
      const old = new RawAgent(slow, "node1", {}, "instance-r");
      await old.deliver(1n, records("node1", 5));
      const batch2 = records("node1", 5);
      old.send(2n, batch2);
      const replacement = new RawAgent(agents, "node1", {}, "instance-r");
      await replacement.deliver(2n, batch2);
      await sleep(600); // the old copy arrives meanwhile
      await replacement.deliver(3n, records("node1", 5));
      const s = await observer.status();
      expect(s.recordsTotal, "a batch that reached a replaced stream after the reconnect was applied through the old "
        + "stream's AgentSession, whose lastBatchId the replacement does not see, and then again on the replacement "
        + "(controlplane/agents.ts serve()/hello())").toBe(15n);
      expect(await observer.flows()).toHaveLength(15);
    } finally {
      slow.close();
      await proxy.close();
    }
  });

  it("rejects bad filters and flow-map requests with INVALID_ARGUMENT naming the field", async () => {
    const cidr = await rejection(observer.flows({ allow: [FlowFilter.fromPartial({ ip: ["10.0.0.0/33"] })] }));
    expect(statusName(cidr.code)).toBe("INVALID_ARGUMENT");
    expect(cidr.details).toContain('ip "10.0.0.0/33"');
    expect(cidr.details).toContain("allow[0]");

    const label = await rejection(observer.flows({ deny: [FlowFilter.fromPartial({ sourceLabel: ["app in (web"] })] }));
    expect(statusName(label.code)).toBe("INVALID_ARGUMENT");
    expect(label.details).toMatch(/source_?label/i);
    expect(label.details).toContain("app in (web");

    const ns = await rejection(observer.flowMap({ namespace: "Not_Valid" }));
    expect(statusName(ns.code)).toBe("INVALID_ARGUMENT");
    expect(ns.details).toContain('namespace "Not_Valid"');

    const window = await rejection(observer.flowMap({ window: { seconds: 7200n, nanos: 0 } }));
    expect(statusName(window.code)).toBe("INVALID_ARGUMENT");
    expect(window.details).toContain("window");

    // And the good ones pass.
    await expect(observer.flowMap({ namespace: "shop", window: { seconds: 3600n, nanos: 0 } })).resolves.toMatchObject({ edges: [] });
  });

  it("answers the standard health check with SERVING and lists bulkhead.v1.ObserverService through server reflection", async () => {
    const client = new grpc.Client(address, grpc.credentials.createInsecure());
    try {
      const check = healthService.Check!;
      for (const service of ["", "bulkhead.v1.ObserverService", "bulkhead.v1.AgentService"]) {
        const res = await new Promise<{ status: string }>((resolve, reject) => {
          client.makeUnaryRequest(check.path, check.requestSerialize, check.responseDeserialize as (b: Buffer) => { status: string },
            { service }, (err, value) => (err || !value ? reject(err) : resolve(value)));
        });
        expect(res.status, `health of "${service}"`).toBe("SERVING");
      }
      const unknown = await new Promise<grpc.ServiceError | null>((resolve) => {
        client.makeUnaryRequest(check.path, check.requestSerialize, check.responseDeserialize, { service: "no.such.Service" }, (err) => resolve(err));
      });
      expect(unknown?.code).toBe(grpc.status.NOT_FOUND);

      const reflectionProto = path.join(path.dirname(require.resolve("@grpc/reflection/package.json")), "build/proto/grpc/reflection/v1/reflection.proto");
      const definition = protoLoader.loadSync(reflectionProto, { oneofs: true });
      const method = (definition["grpc.reflection.v1.ServerReflection"] as protoLoader.ServiceDefinition).ServerReflectionInfo!;
      const call = client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize as (b: Buffer) => ReflectionResponse);
      const response = new Promise<ReflectionResponse>((resolve, reject) => {
        call.on("data", (m: ReflectionResponse) => resolve(m));
        call.on("error", reject);
      });
      call.write({ listServices: "" });
      const services = (await response).listServicesResponse?.service.map((s) => s.name) ?? [];
      call.end();
      expect(services).toEqual(expect.arrayContaining(["bulkhead.v1.ObserverService", "bulkhead.v1.AgentService"]));
    } finally {
      client.close();
    }
  });
});

/** The embedded store, with a switch that makes appends fail as a full disk would, and one that holds them. */
class FailingStore implements FlowStore {
  failing = false;
  /** While set, appends wait for it (then fail or not as `failing` says). */
  held: Promise<void> | undefined;
  /** Appends called, held or not. */
  appends = 0;
  private failure = "";
  constructor(readonly inner: DuckDBFlowStore) {}
  status() { return { ...this.inner.status(), ...(this.failure ? { error: this.failure } : {}) }; }
  lastBatchId(instanceId: string) { return this.inner.lastBatchId(instanceId); }
  async append(batches: readonly StoredBatch[]): Promise<boolean[]> {
    this.appends++;
    if (this.held) await this.held;
    if (this.failing) {
      this.failure = "write failed: No space left on device (injected)";
      throw new Error(`flow store ${this.inner.file}: ${this.failure}`);
    }
    this.failure = "";
    return await this.inner.append(batches);
  }
  query(q: Parameters<FlowStore["query"]>[0]) { return this.inner.query(q); }
  enforceRetention() { return this.inner.enforceRetention(); }
  close() { return this.inner.close(); }
}

describe("control plane over gRPC with the durable store", () => {
  let agents: AgentServiceClient;
  let observer: Observer;
  let dataDir: string;
  const running: ControlPlane[] = [];
  const stores: FlowStore[] = [];

  async function start(store: FlowStore, options: Partial<ControlPlaneOptions> = {}): Promise<ControlPlane> {
    stores.push(store);
    const { cp } = await startControlPlane(new LogCapture(), { store, ...options });
    running.push(cp);
    return cp;
  }

  beforeEach(() => {
    dataDir = fs.mkdtempSync(path.join(tmp, "store-"));
    agents = new AgentServiceClient(address, grpc.credentials.createInsecure());
    observer = new Observer(address);
  });

  afterEach(async () => {
    for (const a of openAgents.splice(0)) a.call.cancel();
    agents.close();
    observer.close();
    for (const cp of running.splice(0)) await stopControlPlane(cp);
    for (const s of stores.splice(0)) await s.close().catch(() => undefined);
  });

  it("acknowledges nothing while the store cannot write, names store and error in GetStatus, and stores a re-send once after", async () => {
    const store = new FailingStore(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }));
    await start(store);
    const agent = new RawAgent(agents, "node1", {}, "instance-f");
    await agent.deliver(1n, records("node1", 5));

    store.failing = true;
    const batch2 = records("node1", 5);
    agent.send(2n, batch2);
    const ended = await agent.status;
    expect(ended.code).toBe(grpc.status.UNAVAILABLE);
    expect(ended.details).toMatch(/^flow store .*flows\.duckdb: write failed: No space left on device \(injected\); batch 2 not acknowledged, re-send it$/);
    expect(agent.acks()).toEqual([1n]);
    const failing = await observer.status();
    expect(failing.store).toMatchObject({ kind: "duckdb", location: path.join(dataDir, "flows.duckdb"), records: 5n,
      error: "write failed: No space left on device (injected)" });

    store.failing = false;
    const again = new RawAgent(agents, "node1", {}, "instance-f");
    await again.deliver(2n, batch2);
    await again.deliver(3n, records("node1", 5));
    expect(again.acks()).toEqual([2n, 3n]);
    const s = await observer.status();
    expect(s.store).toMatchObject({ records: 15n, error: "" });
    expect(await observer.flows()).toHaveLength(15);
  });

  it("stores an agent instance's first batch re-sent after the store refused it: the store knows no batch of it, and the refused one is not taken for applied", async () => {
    const store = new FailingStore(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }));
    await start(store);
    store.failing = true;
    const agent = new RawAgent(agents, "node1", {}, "instance-first");
    const batch1 = records("node1", 5);
    agent.send(1n, batch1);
    expect((await agent.status).details).toMatch(/batch 1 not acknowledged, re-send it$/);
    expect(agent.acks()).toEqual([]);

    store.failing = false;
    const again = new RawAgent(agents, "node1", {}, "instance-first");
    await again.deliver(1n, batch1);
    await again.deliver(2n, records("node1", 5));
    expect(again.acks()).toEqual([1n, 2n]);
    expect((await observer.status()).store).toMatchObject({ records: 10n, error: "" });
    expect(await observer.flows()).toHaveLength(10);
    // Acknowledged and stored once: a third stream re-sending both is acknowledged, nothing added.
    const third = new RawAgent(agents, "node1", {}, "instance-first");
    await third.deliver(1n, batch1);
    expect((await observer.status()).store).toMatchObject({ records: 10n });
  });

  it("does not acknowledge a batch re-sent on a new stream while the old stream's copy is still being stored and then fails", async () => {
    const store = new FailingStore(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }));
    await start(store);
    let release!: () => void;
    store.held = new Promise((resolve) => { release = resolve; });
    const old = new RawAgent(agents, "node1", {}, "instance-race");
    const batch1 = records("node1", 5);
    old.send(1n, batch1);
    await waitFor(() => store.appends, (n) => n === 1, 5000, "the old stream's batch 1 to reach the store");
    // The agent reconnects (as after a network blip) and re-sends batch 1 while the old copy is held.
    const renewed = new RawAgent(agents, "node1", {}, "instance-race");
    renewed.send(1n, batch1);
    await old.status; // replaced: the new stream's hello has been handled
    store.failing = true;
    release();
    store.held = undefined;
    // However the re-send and the failure interleave, batch 1 is not acknowledged while not
    // stored: the stream ends instead (acked() returns at an ack or at the stream's end).
    await renewed.acked(1n).catch(() => undefined);
    expect(renewed.acks()).toEqual([]);
    const ended = await renewed.status;
    expect(ended.code).toBe(grpc.status.UNAVAILABLE);
    expect(ended.details).toMatch(/batch 1 (was not stored; re-send it|not acknowledged, re-send it)$/);

    store.failing = false;
    const third = new RawAgent(agents, "node1", {}, "instance-race");
    await third.deliver(1n, batch1);
    expect((await observer.status()).store).toMatchObject({ records: 5n, error: "" });
  });

  it("after a restart on the same file, takes the agent's last batch from the store: a re-sent batch is acknowledged and stored once", async () => {
    const first = await start(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }));
    const agent = new RawAgent(agents, "node1", {}, "instance-k");
    await agent.deliver(1n, records("node1", 5));
    const batch2 = records("node1", 5);
    await agent.deliver(2n, batch2);
    agent.call.cancel();
    await stopControlPlane(first);
    running.splice(running.indexOf(first), 1);
    await stores.pop()!.close();

    // The agent never saw ack 2 (say): it re-sends 2, then goes on with 3.
    await start(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }));
    const again = new RawAgent(agents, "node1", {}, "instance-k");
    again.send(2n, batch2);
    await again.deliver(3n, records("node1", 5));
    expect(again.acks()).toEqual([2n, 3n]);
    expect((await observer.status()).store).toMatchObject({ kind: "duckdb", records: 15n, error: "" });
    // The whole history: batches 1 and 2 from the file, batch 3 from both (served once).
    const all = await observer.flows();
    expect(all).toHaveLength(15);
    expect(await observer.flows({ last: 12n })).toEqual(all.slice(-12));
    // A map over 24 h is built from the store: every batch's packets on the one edge.
    const day = await observer.flowMap({ namespace: "shop", window: { seconds: 86_400n, nanos: 0 } });
    expect(day.edges.map((e) => e.packets)).toEqual([all.reduce((n, r) => n + r.packets, 0n)]);
  });
  it("answers `last N` above the in-memory history's capacity from the store; without a store it refuses, naming the capacity", async () => {
    const cp = await start(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }), { storeCapacity: 10 });
    const agent = new RawAgent(agents, "node1", {}, "instance-n");
    // Fewer records than the capacity: the request, not the data, is above it (what the cap refused).
    for (let b = 1n; b <= 2n; b++) await agent.deliver(b, records("node1", 4));
    const all = await observer.flows();
    expect(all).toHaveLength(8);
    expect(await observer.flows({ last: 11n })).toEqual(all);
    expect(await observer.flows({ last: 1000n })).toEqual(all);
    agent.call.cancel();
    await stopControlPlane(cp);
    running.splice(running.indexOf(cp), 1);

    const memoryOnly = await startControlPlane(new LogCapture(), { storeCapacity: 10 });
    running.push(memoryOnly.cp);
    await expect(observer.flows({ last: 11n })).rejects.toThrow(/last 11 exceeds the store capacity 10 \(the in-memory history; with --data-dir/);
    expect(await observer.flows({ last: 10n })).toEqual([]);
  });

  it("serves every record once where the store's part of a range meets the hot window's, records ending exactly at the boundary included", async () => {
    await start(await DuckDBFlowStore.open(dataDir, { commitDelayMs: 1 }), { storeCapacity: 10 });
    const agent = new RawAgent(agents, "node1", {}, "instance-b");
    // Every record of batches 1 and 2 ends at the same nanosecond, 5 s ahead (within the
    // agent's send time, so no clock correction): batch 2 evicts batch 1, and the hot
    // window then starts at that very instant. Batch 3 ends 1 ns later.
    const endMs = Date.now() + 5_000;
    const end = { seconds: BigInt(Math.floor(endMs / 1000)), nanos: (endMs % 1000) * 1_000_000 + 123_457 };
    const later = { seconds: end.seconds, nanos: end.nanos + 1 };
    const at = (t: typeof end) => Array.from({ length: 10 }, () => record("node1", { startTime: end, endTime: t }));
    const sent = [...at(end), ...at(end)];
    await agent.deliver(1n, sent.slice(0, 10));
    await agent.deliver(2n, sent.slice(10));
    const sequences = (rs: FlowRecord[]) => rs.map((r) => r.sequence);
    expect(sequences(await observer.flows())).toEqual(sequences(sent));
    expect(sequences(await observer.flows({ last: 15n }))).toEqual(sequences(sent.slice(5)));

    const third = at(later).slice(0, 4);
    await agent.deliver(3n, third);
    expect(sequences(await observer.flows())).toEqual(sequences([...sent, ...third]));
    expect(sequences(await observer.flows({ last: 6n }))).toEqual(sequences([...sent, ...third].slice(-6)));
  });
});

describe("GetFlows clients that do not keep up", () => {
  let cp: ControlPlane | undefined;
  let agents: AgentServiceClient | undefined;
  let observer: Observer | undefined;

  afterEach(async () => {
    for (const a of openAgents.splice(0)) a.call.cancel();
    agents?.close();
    observer?.close();
    if (cp) await stopControlPlane(cp);
    cp = undefined; agents = undefined; observer = undefined;
  });

  const ownLoss = async (cause: string) => (await observer!.status()).losses.find((l) => l.node === "controlplane" && l.cause === cause)?.count;

  it("a follow client that reads nothing while 100,000 records arrive costs a bounded heap, is cut RESOURCE_EXHAUSTED and counted", async () => {
    // A small store, so that the heap grows only by what is held for the client.
    ({ cp } = await startControlPlane(new LogCapture(), { storeCapacity: 1000, flowStreamLimits: { maxQueuedRecords: 5000, maxStallMs: 60_000 } }));
    agents = new AgentServiceClient(address, grpc.credentials.createInsecure());
    observer = new Observer(address);
    const agent = new RawAgent(agents, "node1");
    await agent.deliver(1n, records("node1", 1000));

    let received = 0;
    let status: grpc.StatusObject | undefined;
    const call = observer.client.getFlows({ allow: [], deny: [], last: 0n, follow: true });
    call.on("data", () => { received++; });
    call.on("error", () => undefined); // the status below carries it
    call.on("status", (s: grpc.StatusObject) => { status = s; });
    // The history comes after the subscription: once it is read, live records follow.
    await waitFor(() => received, (n) => n === 1000, 10_000, "the 1,000 records of the history");
    call.pause();

    // The V8 heap, where grpc-js would keep the unsent messages (array buffers, which other streams' Buffers share, are left out).
    const heap = () => { gc(); return process.memoryUsage().heapUsed; };
    const before = heap();
    for (let b = 2n; b < 102n; b++) await agent.deliver(b, records("node1", 1000));
    const grown = heap() - before;
    // 100,000 records as grpc-js would buffer them are ~60 MiB; at most 5,000 wait here, and none once cut.
    expect(grown, `heap grew ${(grown / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(16 * 2 ** 20);
    expect(await ownLoss("flow_streams_cut")).toBe(1n);

    // Reading again, the client gets what it had been sent, then the reason it was cut.
    call.resume();
    await waitFor(() => status, (s) => s !== undefined, 10_000, "the cut stream's status");
    expect(grpc.status[status!.code]).toBe("RESOURCE_EXHAUSTED");
    expect(status!.details).toMatch(/read too slowly and was cut off \(\d+ live records waiting, over the bound of 5000\)/);
    expect(received).toBeLessThan(1000 + 7000);
  });

  it("a history client that reads nothing is cut after the stall bound, and one that reads gets every record once", async () => {
    ({ cp } = await startControlPlane(new LogCapture(), { flowStreamLimits: { maxQueuedRecords: 5000, maxStallMs: 1000 } }));
    agents = new AgentServiceClient(address, grpc.credentials.createInsecure());
    observer = new Observer(address);
    const agent = new RawAgent(agents, "node1");
    for (let b = 1n; b <= 20n; b++) await agent.deliver(b, records("node1", 1000));

    const reader = await observer.flows();
    expect(new Set(reader.map((f) => f.sequence)).size).toBe(20_000);

    let status: grpc.StatusObject | undefined;
    const call = observer.client.getFlows({ allow: [], deny: [], last: 0n, follow: false });
    // A paused grpc-js call reads on regardless until it has a data listener.
    call.on("data", () => undefined);
    call.on("error", () => undefined);
    call.on("status", (s: grpc.StatusObject) => { status = s; });
    call.pause();
    await waitFor(() => ownLoss("flow_streams_cut"), (n) => n === 1n, 10_000, "the stalled history client to be cut");
    call.resume();
    await waitFor(() => status, (s) => s !== undefined, 10_000, "its status");
    expect(status!.details).toMatch(/no progress for 1000 ms/);
  });
});

describe("control-plane replicas sharing a ClickHouse store", () => {
  const clickhouse = useClickHouse();
  interface Replica { address: string; cp: ControlPlane; store: FlowStore; agents: AgentServiceClient; observer: Observer }
  const replicas: Replica[] = [];

  /** A replica on its own socket over database `db` of the test's server; its tail polls every 100 ms. */
  async function replica(name: string, db: string): Promise<Replica> {
    const server = clickhouse();
    const store = await openClickHouseStore({ location: parseClickHouseLocation(server.storeUrl(db), server.credentialsFile), pollIntervalMs: 100 });
    const at = `unix://${path.join(tmp, `replica-${name}.sock`)}`;
    const { cp } = await startControlPlane(new LogCapture(), { store }, at);
    const r = { address: at, cp, store, agents: new AgentServiceClient(at, grpc.credentials.createInsecure()), observer: new Observer(at) };
    replicas.push(r);
    return r;
  }

  async function stopReplica(r: Replica): Promise<void> {
    replicas.splice(replicas.indexOf(r), 1);
    r.agents.close();
    r.observer.close();
    await stopControlPlane(r.cp);
    await r.store.close();
  }

  afterEach(async () => {
    for (const a of openAgents.splice(0)) a.call.cancel();
    for (const r of [...replicas]) await stopReplica(r);
  });

  it("an agent moves to the other replica when its replica goes: every record stored once, followed live and served by either", async () => {
    const a = await replica("a", "twins");
    const b = await replica("b", "twins");
    const followed: FlowRecord[] = [];
    const follow = b.observer.client.getFlows({ allow: [], deny: [], last: 0n, follow: true });
    follow.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) followed.push(m.flow); });
    follow.on("error", () => undefined);

    const agent = new RawAgent(a.agents, "node1", {}, "instance-move");
    const sent = [records("node1", 5), records("node1", 5), records("node1", 5), records("node1", 5)];
    await agent.deliver(1n, sent[0]!);
    await agent.deliver(2n, sent[1]!);
    // Replica a stores batch 3, but its ack never reaches the agent: a goes away.
    agent.send(3n, sent[2]!);
    await agent.acked(3n);
    agent.call.cancel();
    await stopReplica(a);

    // The agent re-sends what it holds unacknowledged (say 2 and 3) to b, then goes on.
    const moved = new RawAgent(b.agents, "node1", {}, "instance-move");
    moved.send(2n, sent[1]!);
    moved.send(3n, sent[2]!);
    await moved.deliver(4n, sent[3]!);
    expect(moved.acks()).toEqual([2n, 3n, 4n]);

    const sequences = (rs: FlowRecord[]) => rs.map((r) => r.sequence).sort((x, y) => (x < y ? -1 : 1));
    const want = sequences(sent.flat());
    // b's follow stream saw a's records through the store's tail, and its own, each once.
    await waitFor(() => followed.length, (n) => n >= 20, 10_000, "replica b's follow stream to show all 20 records (a's come through the tail, polled every 100 ms)");
    expect(sequences(followed)).toEqual(want);
    follow.cancel();
    expect(sequences(await b.observer.flows())).toEqual(want);
    // A replica started afterwards serves the same history, from the store.
    const c = await replica("c", "twins");
    expect(sequences(await c.observer.flows())).toEqual(want);
    expect((await c.observer.status()).store).toMatchObject({ kind: "clickhouse", records: 20n, error: "" });
  });

  it("a replica that starts while another stores records serves those ending after its hot window's start too", async () => {
    const a = await replica("a", "starting");
    const agent = new RawAgent(a.agents, "node1", {}, "instance-starting");
    // Records that end after the next replica's hot window starts (its start + 1 s), as an
    // agent's do when it streams to one replica while another starts: that replica's store
    // queries stop at its hot window's start, so they can only come through its tail.
    const nowMs = Date.now();
    const late = Array.from({ length: 5 }, (_, i) => record("node1", { startTime: timestampOfMs(nowMs + 4_000), endTime: timestampOfMs(nowMs + 5_000 + i), sequence: BigInt(i + 1) }));
    await agent.deliver(1n, late);
    agent.call.cancel();
    const c = await replica("c", "starting");
    // Its tail's first poll (every 100 ms) hands over what others stored that ends after that start.
    const served = await waitFor(async () => (await c.observer.flows()).map((f) => f.sequence), (q) => q.length >= 5, 10_000,
      "replica c to serve the 5 records another replica stored before c started");
    expect(served).toEqual([1n, 2n, 3n, 4n, 5n]);
    // And only once, whichever part serves them.
    await sleep(500);
    expect((await c.observer.flows()).map((f) => f.sequence)).toEqual([1n, 2n, 3n, 4n, 5n]);
  });

  it("the agent's own connection, given both replicas' addresses, moves to the other when its replica goes: every record stored once", async () => {
    const a = await replica("a", "failover");
    const b = await replica("b", "failover");
    const connection = new ControlPlaneConnection({ addresses: [a.address, b.address], node: "node1", capabilities: ["tcx"], log: new LogCapture().log });
    const drops: number[] = [];
    const sink = new ControlPlaneSink(connection, { bufferBytes: 16 * 2 ** 20, batchRecords: 100, onBufferDrop: (n) => drops.push(n), onRefused: (n) => drops.push(n) });
    const numbered = (from: number, n: number) => Array.from({ length: n }, (_, i) => record("node1", { sequence: BigInt(from + i) }));
    try {
      connection.start();
      await waitFor(() => connection.connected, (c) => c, 10_000, "the agent to connect to one of the replicas");
      const [first, other] = connection.address === a.address ? [a, b] : [b, a];
      sink.push(numbered(0, 500));
      await waitFor(() => sink.pending, (n) => n === 0, 10_000, "the first 500 records acknowledged by the first replica");
      await stopReplica(first);
      sink.push(numbered(500, 500));
      await waitFor(() => sink.pending, (n) => n === 0, 20_000, "the next 500 records acknowledged, which only the other replica can do");
      expect(connection.address).toBe(other.address);
      expect(drops).toEqual([]);
      const stored = (await other.observer.flows()).map((f) => f.sequence).sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
      expect(stored).toEqual(Array.from({ length: 1000 }, (_, i) => BigInt(i)));
    } finally {
      await sink.close(1000);
      connection.close();
    }
  });
});

describe("the agent's ControlPlaneSink across control plane restarts", () => {
  const logs = new LogCapture();
  let cp: ControlPlane | undefined;
  let connection: ControlPlaneConnection | undefined;
  let sink: ControlPlaneSink | undefined;
  let observer: Observer | undefined;

  afterEach(async () => {
    await sink?.close(1000);
    connection?.close();
    observer?.close();
    if (cp) await stopControlPlane(cp);
    connection = undefined; sink = undefined; observer = undefined; cp = undefined;
  });

  /** The agent's stream (in `connection`) and its record sink, started. */
  const newSink = (bufferBytes: number, drops: number[], refused: number[] = []) => {
    connection = new ControlPlaneConnection({ addresses: [address], node: "node1", capabilities: ["tcx"], log: logs.log });
    const created = new ControlPlaneSink(connection, {
      bufferBytes, batchRecords: 100, onBufferDrop: (n) => drops.push(n), onRefused: (n) => refused.push(n),
    });
    connection.start();
    return created;
  };

  /**
   * Records numbered by sequence, so that loss and duplicates show. Their times are fixed
   * to a non-zero fraction of a second, so that all with a sequence of 128..16383 encode to
   * the same size and a byte bound holds a known number of them.
   */
  const at = { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 500_000_000 };
  const numbered = (from: number, n: number) => Array.from({ length: n }, (_, i) => record("node1", { sequence: BigInt(from + i), startTime: at, endTime: at }));
  /** What `n` such records take in the buffer, in chunks of 100 (the sink's batchRecords here). */
  const bytesOf = (n: number) => (n / 100) * costOf(encodeRecords(numbered(1000, 100)));
  const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => BigInt(from + i));
  const sequences = (flows: FlowRecord[]) => flows.map((f) => f.sequence).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  it("ControlPlane.stop() returns while an agent is connected, and the agent reconnects to its successor", async () => {
    ({ cp } = await startControlPlane(logs));
    const drops: number[] = [];
    sink = newSink(bytesOf(1000), drops);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");
    const plane = cp;
    cp = undefined;
    await stopControlPlane(plane).catch(async (err: Error) => {
      // Let a stuck stop() finish so that the socket is free for the next test.
      await sink?.close(0);
      connection?.close();
      sink = undefined; connection = undefined;
      throw err;
    });
    await waitFor(() => connection!.connected, (c) => !c, 10_000, "the sink to notice");
    ({ cp } = await startControlPlane(logs));
    await waitFor(() => connection!.connected, (c) => c, 15_000, "the sink to reconnect");
    expect(cp.agents.connected).toBe(1);
  });

  it("retries at most ~5 s apart through a 30 s outage (grpc's channel backoff capped as well as its own), and is back within 12 s of the return", async () => {
    ({ cp } = await startControlPlane(logs));
    connection = new ControlPlaneConnection({ addresses: [address], node: "node1", capabilities: ["tcx"], log: logs.log });
    connection.start();
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the agent to connect");
    const plane = cp;
    cp = undefined;
    await stopControlPlane(plane);
    await waitFor(() => connection!.connected, (c) => !c, 10_000, "the agent to notice");
    // Through the outage a listener that takes each connection and closes it at once: every
    // attempt of the agent's channel fails, and shows when it came. grpc's own backoff
    // (1 s, growing 1.6x up to 120 s) left 19-23 s between the control plane's return and
    // the agent's stream after a 30 s outage.
    const socket = address.slice("unix://".length);
    fs.rmSync(socket, { force: true });
    const attempts: number[] = [];
    const refuser = net.createServer((conn) => { attempts.push(Date.now()); conn.destroy(); });
    await new Promise<void>((resolve) => refuser.listen(socket, resolve));
    const from = Date.now();
    await sleep(30_000);
    const to = Date.now();
    await new Promise<void>((resolve) => refuser.close(() => resolve()));
    fs.rmSync(socket, { force: true });
    const gaps = [from, ...attempts, to].slice(1).map((t, i) => t - [from, ...attempts][i]!);
    // At most 5 s of backoff, +20 % jitter, and a little for the attempt itself; uncapped, a 10.5 s gap comes by 26 s.
    expect(Math.max(...gaps), `gaps between attempts (ms): ${gaps.join(", ")}`).toBeLessThan(7_000);
    ({ cp } = await startControlPlane(logs));
    const back = Date.now();
    // Enough: the channel tries again within 6 s, then the agent's own next attempt comes within 5 s.
    await waitFor(() => connection!.connected, (c) => c, 12_000, "the agent to reconnect within 12 s");
    expect(Date.now() - back).toBeLessThan(12_000);
  }, 60_000);

  it("delivers records pushed while the control plane is down exactly once when it is back, and reports exactly the overflow", async () => {
    const drops: number[] = [];
    ({ cp } = await startControlPlane(logs));
    observer = new Observer(address);
    sink = newSink(bytesOf(1000), drops);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");

    sink.push(numbered(0, 250));
    await waitFor(() => sink!.pending, (n) => n === 0, 10_000, "250 records acknowledged");
    expect(sequences(await observer.flows())).toEqual(range(0, 250));

    // Down: 600 records fit the buffer of 1,000 records' bytes.
    await stopControlPlane(cp);
    cp = undefined;
    await waitFor(() => connection!.connected, (c) => !c, 10_000, "the sink to notice");
    for (let i = 0; i < 3; i++) sink.push(numbered(250 + i * 200, 200));
    expect(sink.pending).toBe(600);
    expect(drops).toEqual([]);

    ({ cp } = await startControlPlane(logs));
    await waitFor(() => sink!.pending, (n) => n === 0, 20_000, "the buffer to drain into the new control plane");
    await sleep(300); // room for a duplicate to arrive, if any would
    expect(sequences(await observer.flows())).toEqual(range(250, 600));
    expect((await observer.status()).recordsTotal).toBe(600n);

    // Down again: 1,500 records into a buffer of 1,000 records' bytes drop exactly the 500 oldest.
    await stopControlPlane(cp);
    cp = undefined;
    await waitFor(() => connection!.connected, (c) => !c, 10_000, "the sink to notice");
    for (let i = 0; i < 3; i++) sink.push(numbered(850 + i * 500, 500));
    expect(drops).toEqual([500]);
    expect(sink.pending).toBe(1000);

    ({ cp } = await startControlPlane(logs));
    await waitFor(() => sink!.pending, (n) => n === 0, 20_000, "the buffer to drain into the third control plane");
    await sleep(300);
    expect(sequences(await observer.flows())).toEqual(range(1350, 1000));
    expect((await observer.status()).recordsTotal).toBe(1000n);
    expect(drops).toEqual([500]);
  });

  it("holds an outage within its byte bound: 100,000 records produced past 4 MiB are held in at most 4 MiB of bytes and none in the heap, the overflow is counted exactly, the newest arrive once", async () => {
    const BOUND = 4 * 2 ** 20;
    const drops: number[] = [];
    ({ cp } = await startControlPlane(logs));
    observer = new Observer(address);
    sink = newSink(BOUND, drops);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");
    await stopControlPlane(cp);
    cp = undefined;
    await waitFor(() => connection!.connected, (c) => !c, 10_000, "the sink to notice");

    // 100 drains of 1,000 records while the control plane is away (~23 MiB encoded, ~46 MiB as these objects).
    // The V8 heap: where the records would stay as objects. The encoded bytes live outside it,
    // in array buffers, which heldBytes counts exactly (grpc's own buffers come and go there too).
    const heap = () => { gc(); return process.memoryUsage().heapUsed; };
    const before = heap();
    for (let i = 0; i < 100; i++) sink.push(numbered(10_000 + i * 1000, 1000));
    const grown = heap() - before;
    const held = sink.pending;
    const dropped = drops.reduce((a, b) => a + b, 0);
    // The heap keeps no record (room for the chunks' small objects and the reconnect attempts).
    expect(grown, `heap grew ${(grown / 2 ** 20).toFixed(1)} MiB`).toBeLessThan(2 * 2 ** 20);
    expect(dropped + held).toBe(100_000);
    expect(sink.heldBytes).toBeLessThanOrEqual(BOUND);
    // It drops no more than it must: not even one more record would fit.
    expect(BOUND - sink.heldBytes).toBeLessThan(bytesOf(100) / 100);

    ({ cp } = await startControlPlane(logs));
    await waitFor(() => sink!.pending, (n) => n === 0, 20_000, "the buffer to drain into the new control plane");
    await sleep(300); // room for a duplicate to arrive, if any would
    expect(sequences(await observer.flows())).toEqual(range(110_000 - held, held));
    expect((await observer.status()).recordsTotal).toBe(BigInt(held));
    expect(sink.heldBytes).toBe(0);
  });

  it("receives a policy snapshot above grpc's default 4 MiB message limit, from the control plane's own server settings", async () => {
    // 400,000 address identities: 7.5 MB encoded, as a cluster of some 10k pods with rich policies gets.
    const snapshot = { version: 9n, identities: [], rules: [],
      ipIdentities: Array.from({ length: 400_000 }, (_, i) => ({ cidr: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, identity: 256 + (i % 5000) })) };
    const unimplemented = (_call: unknown, cb: (err: grpc.ServiceError) => void) => cb({ code: grpc.status.UNIMPLEMENTED } as grpc.ServiceError);
    const server = createGrpcServer({
      agent: {
        connect: (stream) => {
          stream.write({ kind: { $case: "config", value: { node: "node1", drainIntervalMs: 1000 } } });
          stream.write({ kind: { $case: "policy", value: snapshot } });
        },
      },
      observer: { getFlows: (call) => call.end(), getFlowMap: unimplemented, getStatus: unimplemented, getNodes: unimplemented,
        policyWhatIf: unimplemented, suggestPolicies: unimplemented },
    });
    await bind(server, address);
    const received: bigint[] = [];
    try {
      connection = new ControlPlaneConnection({ addresses: [address], node: "node1", capabilities: ["tcx"], log: logs.log });
      connection.on("policy", (p) => { received.push(p.version); expect(p.ipIdentities).toHaveLength(400_000); });
      connection.start();
      await waitFor(() => received.length, (n) => n > 0, 20_000, "the snapshot at the agent");
      expect(received).toEqual([9n]);
    } finally {
      connection?.close();
      connection = undefined;
      server.forceShutdown();
    }
  });

  it("says how many records it gives up when closed with the control plane away (none once they are acknowledged)", async () => {
    const drops: number[] = [];
    sink = newSink(bytesOf(10_000), drops);
    sink.push(numbered(0, 25));
    expect(await sink.close(100)).toBe(25);
    connection?.close();
    ({ cp } = await startControlPlane(logs));
    observer = new Observer(address);
    sink = newSink(bytesOf(10_000), drops);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");
    sink.push(numbered(100, 25));
    expect(await sink.close(10_000)).toBe(0);
    expect(sequences(await observer.flows())).toEqual(range(100, 25));
  });

  it("drops a batch the control plane refuses as invalid (counted exactly), delivers the good ones in flight around it, and goes on (no wedge)", async () => {
    const drops: number[] = [];
    const refused: number[] = [];
    ({ cp } = await startControlPlane(logs));
    observer = new Observer(address);
    sink = newSink(bytesOf(10_000), drops, refused);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");
    // Five batches of 100 on the wire at once; the second holds a record with no observation point.
    const records = numbered(0, 500);
    records[150] = record("node1", { sequence: 150n, point: ObservationPoint.OBSERVATION_POINT_UNSPECIFIED });
    sink.push(records);
    await waitFor(() => sink!.pending, (n) => n === 0, 10_000, "every batch acknowledged or refused");
    expect(refused).toEqual([100]);
    sink.push(numbered(1000, 30));
    await waitFor(() => sink!.pending, (n) => n === 0, 10_000, "the later records acknowledged");
    expect(sequences(await observer.flows())).toEqual([...range(0, 100), ...range(200, 300), ...range(1000, 30)]);
    const status = await observer.status();
    expect(status.refused.map((r) => `${r.node} ${r.cause} ${r.records}`)).toEqual(["node1 invalid_record 100"]);
    expect(drops).toEqual([]);
  });

  it("re-sends batches that were in flight when the control plane went away; the new control plane stores each record once", async () => {
    const drops: number[] = [];
    ({ cp } = await startControlPlane(logs));
    sink = newSink(bytesOf(100_000), drops);
    await waitFor(() => connection!.connected, (c) => c, 10_000, "the sink to connect");

    // Eight batches of 100 go on the wire at once (the rest wait in the buffer), and the
    // control plane ends the agent streams in the same tick, before it has acknowledged
    // any, as its stop() does.
    const first = cp;
    cp = undefined;
    sink.push(numbered(0, 2000));
    first.agents.close();
    await stopControlPlane(first);
    const storedByFirst = [...first.history.iterate({})].map((f) => f.sequence);
    expect(sink.pending + storedByFirst.length).toBeGreaterThanOrEqual(2000);

    const mark = logs.lines.length;
    ({ cp } = await startControlPlane(logs));
    observer = new Observer(address);
    await waitFor(() => sink!.pending, (n) => n === 0, 20_000, "everything acknowledged by the new control plane");
    const reconnect = logs.lines.slice(mark).find((l) => l.msg === "connected to control plane");
    expect(reconnect?.resend, "batches re-sent on reconnect").toBe(8);
    await sleep(300); // room for a duplicate to arrive, if any would
    const storedBySecond = sequences(await observer.flows());
    // A batch the first control plane applied but could not acknowledge is applied again by
    // the second (its store started empty); within one control plane, never twice.
    expect(new Set(storedBySecond).size).toBe(storedBySecond.length);
    expect(sequences([...storedByFirst, ...storedBySecond].filter((q, i, all) => all.indexOf(q) === i).map((sequence) => ({ sequence }) as FlowRecord)))
      .toEqual(range(0, 2000));
    expect(storedBySecond.length, `first stored ${storedByFirst.length}`).toBeGreaterThan(0);
    expect(drops).toEqual([]);
  });
});

interface ReflectionResponse { listServicesResponse?: { service: { name: string }[] } }

