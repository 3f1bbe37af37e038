// The web UI's HTTP server over real HTTP: a ControlPlane in this process (manifests in a
// temp folder, records fed through ingest, a clock the test moves) with its UI server on
// 127.0.0.1:0. Proves the JSON API (map, stream, flows, details, namespaces), parameter
// validation, the access-scope hook, static files, and that a closed stream leaves nothing behind.
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { EventLoopLag } from "../controlplane/metrics.js";
import { decidingPolicies, detailCandidates, parseNodeId } from "../controlplane/ui/details.js";
import { waitFor } from "./harness/wait.js";
import { FlushQueue, MapDeltas } from "../controlplane/ui/map-stream.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl, parseTokenFile } from "../controlplane/access/index.js";
import { flowFilterOf, FilterNameError } from "../controlplane/store/filter-names.js";
import { buildRequest, DEFAULT_LAST } from "../cli/observe.js";
import { FlowRecord, ObservationPoint, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import { GetFlowsRequest, ObserverServiceClient, type GetFlowsResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { agentRecord } from "./harness/flow-records.js";

const OTHER_TOKEN = "other-team-token-7f3a9c2e5b1d4f60";
const TOKENS = `
tokens:
  - name: other-team
    token: ${OTHER_TOKEN}
    namespaces: [other]
`;

const WEB_IP = "10.0.1.5", DB_IP = "10.0.2.7", X_IP = "10.0.9.1", DB_SERVICE_IP = "10.96.0.20";
const WEB = "workload:shop/Pod/web-1";
const DB = "workload:shop/StatefulSet/db";
const X = "workload:other/Pod/x-1";

const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, annotations: { bulkhead.io/mode: audit } }
---
apiVersion: v1
kind: Namespace
metadata: { name: other }
---
apiVersion: v1
kind: Node
metadata: { name: node1 }
status: { addresses: [{ type: InternalIP, address: 192.168.0.11 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: shop, uid: uid-web-1, labels: { app: web }, creationTimestamp: "2024-01-01T00:00:00Z" }
spec: { nodeName: node1 }
status: { phase: Running, podIP: ${WEB_IP} }
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: db, namespace: shop, uid: uid-sts-db }
spec: { selector: { matchLabels: { app: db } } }
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  uid: uid-db-0
  labels: { app: db }
  creationTimestamp: "2024-01-01T00:00:00Z"
  ownerReferences: [{ apiVersion: apps/v1, kind: StatefulSet, name: db, uid: uid-sts-db, controller: true }]
spec: { nodeName: node1 }
status: { phase: Running, podIP: ${DB_IP} }
---
apiVersion: v1
kind: Pod
metadata: { name: x-1, namespace: other, uid: uid-x-1, labels: { app: x }, creationTimestamp: "2024-01-01T00:00:00Z" }
spec: { nodeName: node1 }
status: { phase: Running, podIP: ${X_IP} }
---
apiVersion: v1
kind: Service
metadata: { name: db, namespace: shop }
spec: { clusterIP: ${DB_SERVICE_IP}, selector: { app: db }, ports: [{ protocol: TCP, port: 5432, targetPort: 5432 }] }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-ingress, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  policyTypes: [Ingress]
  ingress:
  - from: [{ podSelector: { matchLabels: { app: web } } }]
    ports: [{ protocol: TCP, port: 5432 }]
`;

const clock = { now: Date.now() };
/** A record as an agent sends it, at the test's clock. */
const record = (src: string, dst: string, dport: number, verdict = Verdict.VERDICT_FORWARDED, point = ObservationPoint.OBSERVATION_POINT_FROM_POD): FlowRecord =>
  agentRecord(src, dst, dport, { verdict, point: point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? "from" : "to", endMs: clock.now });

let tmp: string;
let cp: ControlPlane;
let access: AccessControl;
let base: string;
let grpcAddress: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-ui-api-"));
  const manifests = path.join(tmp, "manifests");
  fs.mkdirSync(manifests);
  fs.writeFileSync(path.join(manifests, "cluster.yaml"), MANIFESTS);
  const staticDir = path.join(tmp, "ui");
  fs.mkdirSync(path.join(staticDir, "assets"), { recursive: true });
  fs.writeFileSync(path.join(staticDir, "index.html"), "<!doctype html><title>bulkhead</title>");
  fs.writeFileSync(path.join(staticDir, "assets", "app-1234.js"), "console.log('app');");
  fs.writeFileSync(path.join(tmp, "secret.txt"), "SECRET-OUTSIDE-THE-UI");
  grpcAddress = `unix://${path.join(tmp, "cp.sock")}`;
  // Requests without a token see everything (as in the lab); OTHER_TOKEN sees namespace "other" only.
  access = new AccessControl({ tokens: parseTokenFile(TOKENS, "tokens.yaml"), allowUnauthenticated: true });
  cp = new ControlPlane({
    source: new FolderSource({ dir: manifests }), storeCapacity: 100_000, log: pino({ level: "silent" }), access,
    now: () => clock.now, uiListen: { host: "127.0.0.1", port: 0 },
    ui: { staticDir, stream: { coalesceMs: 50, expiryCheckMs: 50, heartbeatMs: 60_000 }, maxStreams: 6, maxStreamsPerToken: 4, maxDetailRecords: 50 },
  });
  await cp.start([grpcAddress]);
  base = cp.ui!.url.replace(/\/$/, "");
  cp.ingest("node1", [
    record(WEB_IP, DB_IP, 5432),
    record(WEB_IP, DB_IP, 6379, Verdict.VERDICT_AUDIT),
    record(X_IP, WEB_IP, 8080),
  ]);
});

afterAll(async () => {
  await cp?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function get(pathAndQuery: string, init: RequestInit = {}): Promise<{ status: number; body: any; type: string; text: string }> {
  const res = await fetch(`${base}${pathAndQuery}`, init);
  const text = await res.text();
  let body: unknown;
  try { body = JSON.parse(text); } catch { body = undefined; }
  return { status: res.status, body, type: res.headers.get("content-type") ?? "", text };
}

/** A GET with the path sent exactly as written (fetch would normalize "..") */
function rawGet(rawPath: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL(base);
    const req = http.request({ host: url.hostname, port: url.port, path: rawPath, method: "GET" }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** Reads server-sent events from a fetch body. */
class EventReader {
  private readonly events: { event: string; data: any }[] = [];
  private buffer = "";
  private readonly done: Promise<void>;
  private waiters: (() => void)[] = [];
  readonly abort = new AbortController();

  constructor(readonly response: Response) {
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    this.done = (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.buffer += decoder.decode(value, { stream: true });
          for (let end = this.buffer.indexOf("\n\n"); end !== -1; end = this.buffer.indexOf("\n\n")) {
            const block = this.buffer.slice(0, end);
            this.buffer = this.buffer.slice(end + 2);
            const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
            const data = /^data: (.*)$/m.exec(block)?.[1];
            this.events.push({ event, data: data === undefined ? undefined : JSON.parse(data) });
            for (const w of this.waiters.splice(0)) w();
          }
        }
      } catch { /* aborted */ }
    })();
  }

  static async open(query: string, controller = new AbortController(), headers: Record<string, string> = {}): Promise<EventReader> {
    const res = await fetch(`${base}/api/v1/map/stream?${query}`, { signal: controller.signal, headers });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = new EventReader(res);
    (reader as { abort: AbortController }).abort = controller;
    return reader;
  }

  /** The next event (other than heartbeats), waiting up to 5 s. */
  async next(): Promise<{ event: string; data: any }> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const i = this.events.findIndex((e) => e.event !== "heartbeat");
      if (i !== -1) return this.events.splice(0, i + 1).pop()!;
      if (Date.now() > deadline) throw new Error("no event within 5 s");
      await new Promise<void>((resolve) => { this.waiters.push(resolve); setTimeout(resolve, 100); });
    }
  }

  close(): void {
    this.abort.abort();
  }
}

const edgeIdOf = (source: string, destination: string, port: number) => `${source},${destination},TCP,${port}`;

describe("UI JSON API", () => {
  it("GET /healthz answers 200; unknown paths 404; other methods 405", async () => {
    const health = await get("/healthz");
    expect(health.status).toBe(200);
    const missing = await get("/api/v1/nothing");
    expect(missing.status).toBe(404);
    expect(missing.body.error).toMatch(/\/api\/v1\/nothing/);
    expect((await get("/api/v2/map")).status).toBe(404);
    const post = await get("/api/v1/map", { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.body.error).toMatch(/POST/);
    expect((await get("/healthz", { method: "DELETE" })).status).toBe(405);
  });

  it("GET /metrics gives event-loop lag by quantile, memory and the control plane's own losses, to cluster-wide readers only", async () => {
    const { status, text, type } = await get("/metrics");
    expect(status).toBe(200);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
    const value = (series: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    for (const q of ["0.5", "0.99", "1"]) expect(value(`bulkhead_controlplane_event_loop_lag_seconds{quantile="${q}"}`)).toBeGreaterThanOrEqual(0);
    expect(value("bulkhead_controlplane_resident_memory_bytes")).toBeGreaterThan(10 * 2 ** 20);
    expect(value('bulkhead_controlplane_lost_total{cause="flow_streams_cut",unit="streams"}')).toBe(0);
    expect(value("bulkhead_controlplane_records_total")).toBe(Number((await cp.status()).recordsTotal));
    const scoped = await get("/metrics", { headers: { authorization: `Bearer ${OTHER_TOKEN}` } });
    expect(scoped.status).toBe(403);
  });

  it("the event-loop lag shows a 150 ms block in its max, and a later window without one does not", async () => {
    const lag = new EventLoopLag(300);
    lag.start();
    try {
      await new Promise((r) => setTimeout(r, 50)); // its sampling timer runs from the next loop iteration on
      const until = Date.now() + 150;
      while (Date.now() < until) { /* the block */ }
      const blocked = await waitFor(() => lag.quantiles(), (q) => q.max > 0.12, 3000, "the block in the lag's max");
      // One long iteration among hundreds need not move the p99; the quantiles are ordered all the same.
      expect(blocked.max).toBeGreaterThanOrEqual(blocked.p99);
      expect(blocked.p99).toBeGreaterThanOrEqual(blocked.p50);
      await waitFor(() => lag.quantiles(), (q) => q.max < 0.1, 3000, "a window without the block");
    } finally {
      lag.stop();
    }
  });

  it("namespaces lists cluster namespaces with their policy mode", async () => {
    const { status, body } = await get("/api/v1/namespaces");
    expect(status).toBe(200);
    expect(body.namespaces).toEqual([
      { name: "other", mode: "observe", inCluster: true, onMap: true },
      { name: "shop", mode: "audit", inCluster: true, onMap: true },
    ]);
  });

  it("map gives a namespace's nodes and edges with totals, verdict state and version", async () => {
    const { status, body } = await get("/api/v1/map?namespace=shop&window=5m");
    expect(status).toBe(200);
    expect(body.version).toBe(cp.flowMap.version);
    expect(body.window).toBe("5m");
    expect(body.nodes.map((n: any) => [n.id, n.kind, n.pods]).sort()).toEqual([[X, "workload", 1], [WEB, "workload", 1], [DB, "workload", 1]]);
    const byId = new Map(body.edges.map((e: any) => [e.id, e]));
    expect(byId.get(edgeIdOf(WEB, DB, 5432))).toMatchObject({ source: WEB, destination: DB, protocol: "TCP", port: 5432, packets: 4, bytes: 400, flows: 1, verdict: "forwarded" });
    expect(byId.get(edgeIdOf(WEB, DB, 6379))).toMatchObject({ audit: 4, verdict: "audit" });
    expect(byId.get(edgeIdOf(X, WEB, 8080))).toMatchObject({ verdict: "forwarded" });
    const other = await get("/api/v1/map?namespace=other&window=1h");
    expect(other.body.edges.map((e: any) => e.id)).toEqual([edgeIdOf(X, WEB, 8080)]);
  });

  it("the stream sends a snapshot, then a delta holding only the edge that changed", async () => {
    const stream = await EventReader.open("namespace=shop&window=5m");
    try {
      const snapshot = await stream.next();
      expect(snapshot.event).toBe("snapshot");
      expect(snapshot.data.edges).toHaveLength(3);
      cp.ingest("node1", [record(WEB_IP, DB_IP, 5432, Verdict.VERDICT_DROPPED)]);
      const delta = await stream.next();
      expect(delta.event).toBe("delta");
      expect(delta.data.edges.map((e: any) => e.id)).toEqual([edgeIdOf(WEB, DB, 5432)]);
      expect(delta.data.edges[0]).toMatchObject({ packets: 8, dropped: 4, verdict: "dropped" });
      expect(delta.data.nodes.map((n: any) => n.id).sort()).toEqual([WEB, DB]);
      expect(delta.data.removed).toEqual([]);
      expect(delta.data.version).toBe(cp.flowMap.version);
    } finally {
      stream.close();
    }
  });

  it("an edge idle for longer than the window leaves the stream (delta.removed) and the map", async () => {
    const stream = await EventReader.open("namespace=other&window=1m");
    const saved = clock.now;
    try {
      expect((await stream.next()).data.edges.map((e: any) => e.id)).toEqual([edgeIdOf(X, WEB, 8080)]);
      clock.now += 2 * 60_000; // the records are now two minutes old
      const delta = await stream.next();
      expect(delta.event).toBe("delta");
      expect(delta.data.removed).toEqual([edgeIdOf(X, WEB, 8080)]);
      expect((await get("/api/v1/map?namespace=other&window=1m")).body.edges).toEqual([]);
      expect((await get("/api/v1/map?namespace=other&window=5m")).body.edges).toHaveLength(1);
    } finally {
      stream.close();
      clock.now = saved;
    }
  });

  async function settled(subscribers: number, streams: number): Promise<void> {
    const deadline = Date.now() + 5000;
    while ((cp.flowMap.subscribers !== subscribers || cp.ui!.streamCount !== streams) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  }

  it("closing a stream removes its flow map listener and session", async () => {
    await settled(0, 0); // earlier tests' streams
    const baseline = cp.flowMap.subscribers;
    expect(baseline).toBe(0);
    const streams = await Promise.all([EventReader.open("window=1m"), EventReader.open("namespace=shop")]);
    for (const s of streams) await s.next();
    expect(cp.flowMap.subscribers).toBe(baseline + 2);
    expect(cp.ui!.streamCount).toBe(2);
    for (const s of streams) s.close();
    await settled(baseline, 0);
    expect(cp.flowMap.subscribers).toBe(baseline);
    expect(cp.ui!.streamCount).toBe(0);
  });

  it("caps map streams per token and in total: 429 naming the cap reached, and room again once a stream closes", async () => {
    await settled(0, 0); // earlier tests' streams
    const other = { authorization: `Bearer ${OTHER_TOKEN}` };
    // A refused stream answers at once; an accepted one would never end, hence the timeout.
    const refusal = (query: string, headers: Record<string, string> = {}) => get(`/api/v1/map/stream?${query}`, { headers, signal: AbortSignal.timeout(3000) });
    const open = await Promise.all([1, 2, 3, 4].map(() => EventReader.open("window=1m")));
    try {
      const fifth = await refusal("window=1m");
      expect(fifth.status).toBe(429);
      expect(fifth.body.error).toMatch(/^this token \(unauthenticated\) already has 4 map streams open, the most one token may hold; close another/);
      // Another token still may, up to the total of 6.
      open.push(...await Promise.all([1, 2].map(() => EventReader.open("namespace=other&window=1m", undefined, other))));
      const seventh = await refusal("namespace=other&window=1m", other);
      expect(seventh.status).toBe(429);
      expect(seventh.body.error).toMatch(/^the control plane already serves 6 map streams, the most it holds at once/);
      expect(cp.ui!.streamsRefused).toBe(2);
      open.shift()!.close();
      await settled(5, 5);
      open.push(await EventReader.open("window=1m"));
      expect(cp.ui!.streamCount).toBe(6);
    } finally {
      for (const s of open) s.close();
      await settled(0, 0);
    }
  });

  it("flows returns the same flows as GetFlows for the same observe filter", async () => {
    const client = new ObserverServiceClient(grpcAddress, grpc.credentials.createInsecure());
    try {
      const argv = ["-n", "shop", "--from-pod", "web-1", "--verdict", "forwarded", "--verdict", "audit"];
      const { request } = buildRequest(argv);
      const viaGrpc = await new Promise<FlowRecord[]>((resolve, reject) => {
        const out: FlowRecord[] = [];
        const call = client.getFlows(GetFlowsRequest.fromPartial(request));
        call.on("data", (r: GetFlowsResponse) => { if (r.flow) out.push(r.flow); });
        call.on("error", reject);
        call.on("end", () => resolve(out));
      });
      const { status, body } = await get("/api/v1/flows?namespace=shop&from-pod=web-1&verdict=forwarded&verdict=audit&window=1h");
      expect(status).toBe(200);
      expect(viaGrpc.length).toBe(2);
      expect(body.flows).toEqual(viaGrpc.map((f) => FlowRecord.toJSON(f)));
      const limited = await get("/api/v1/flows?limit=1&window=1h");
      expect(limited.body.flows).toHaveLength(1);
    } finally {
      client.close();
    }
  });

  it("details: the policies selecting a workload and those that decided its flows", async () => {
    const node = await get(`/api/v1/details?node=${encodeURIComponent(DB)}&window=1h`);
    expect(node.status).toBe(200);
    expect(node.body.selectedBy).toEqual([{ namespace: "shop", name: "db-ingress", direction: "ingress", mode: "audit", selects: DB }]);
    expect(node.body.decidedBy).toEqual([
      { namespace: "shop", name: "db-ingress", tier: "NetworkPolicy", rule: "", passedBy: [], direction: "ingress", mode: "audit", decision: "allowed", records: 2 },
      { namespace: "shop", name: "db-ingress", tier: "NetworkPolicy", rule: "", passedBy: [], direction: "ingress", mode: "audit", decision: "denied", records: 1 },
    ]);
    const web = await get(`/api/v1/details?node=${encodeURIComponent(WEB)}`);
    expect(web.body.selectedBy).toEqual([]);

    const edge = await get(`/api/v1/details?edge=${encodeURIComponent(edgeIdOf(WEB, DB, 6379))}&window=1h`);
    expect(edge.status).toBe(200);
    expect(edge.body.edge).toMatchObject({ id: edgeIdOf(WEB, DB, 6379), verdict: "audit" });
    expect(edge.body.selectedBy).toEqual([{ namespace: "shop", name: "db-ingress", direction: "ingress", mode: "audit", selects: DB }]);
    expect(edge.body.decidedBy).toEqual([{ namespace: "shop", name: "db-ingress", tier: "NetworkPolicy", rule: "", passedBy: [], direction: "ingress", mode: "audit", decision: "denied", records: 1 }]);
  });

  it("details: replies forwarded as ESTABLISHED are not counted as decided (a reply's own attribution would name db's isolating policy as denying it)", async () => {
    // db connected to web:8080; web's reply to db's ephemeral port, seen leaving web and entering db.
    const reply = (point: ObservationPoint) => {
      const r = record(WEB_IP, DB_IP, 41_000, Verdict.VERDICT_FORWARDED, point);
      r.l4!.sourcePort = 8080;
      r.verdictReason = VerdictReason.VERDICT_REASON_ESTABLISHED;
      return r;
    };
    cp.ingest("node1", [reply(ObservationPoint.OBSERVATION_POINT_FROM_POD), reply(ObservationPoint.OBSERVATION_POINT_TO_POD)]);
    const edge = await get(`/api/v1/details?edge=${encodeURIComponent(`${DB},${WEB},TCP,8080`)}&window=1h`);
    expect(edge.status).toBe(200);
    expect(edge.body.records).toBe(2);
    expect(edge.body.decidedBy).toEqual([]);
  });

  it("details: a busy host's examine only its newest maxDetailRecords candidates, and say so", async () => {
    // The kubelet on node1's own address probing web-1, 60 times.
    cp.ingest("node1", Array.from({ length: 60 }, () => record("192.168.0.11", WEB_IP, 10250, Verdict.VERDICT_FORWARDED, ObservationPoint.OBSERVATION_POINT_TO_POD)));
    const host = await get(`/api/v1/details?node=${encodeURIComponent("host:node1")}&window=1h`);
    expect(host.status).toBe(200);
    expect(host.body).toMatchObject({ edges: 1, records: 50, examined: 50, truncated: true });
    const db = await get(`/api/v1/details?node=${encodeURIComponent(DB)}&window=1h`);
    expect(db.body).toMatchObject({ truncated: false });
    expect(db.body.examined).toBeLessThan(50);
  });

  it("details: the flow map's overflow node (world:other) counts no record and does not fail", () => {
    const target = { node: parseNodeId("node", "world:other") };
    const candidates = [...cp.history.iterate({ predicate: detailCandidates(target), last: 101 })];
    const other = decidingPolicies(candidates, cp.policy.model(), target, 100);
    expect(other).toMatchObject({ records: 0, examined: 0, truncated: false, decidedBy: [] });
  });

  it("bad parameters get 400 naming the parameter and value; unknown nodes 404", async () => {
    const cases: [string, RegExp][] = [
      ["/api/v1/namespaces?color=red", /unknown parameter "color"/],
      ["/api/v1/map?window=2m", /parameter window: "2m" is not one of 1m, 5m, 1h/],
      ["/api/v1/map?namespace=Bad_NS", /parameter namespace: "Bad_NS"/],
      ["/api/v1/map?namespace=", /parameter namespace: ""/],
      ["/api/v1/map?namespace=a&namespace=b", /parameter namespace: "b" is given more than once/],
      ["/api/v1/map?nmespace=shop", /unknown parameter "nmespace"/],
      ["/api/v1/map/stream?window=10s", /parameter window: "10s"/],
      ["/api/v1/map/stream?foo=1", /unknown parameter "foo"/],
      ["/api/v1/flows?limit=0", /parameter limit: "0"/],
      ["/api/v1/flows?limit=ten", /parameter limit: "ten"/],
      ["/api/v1/flows?port=http", /parameter port: "http" is not a port number/],
      ["/api/v1/flows?verdict=maybe", /parameter verdict: "maybe"/],
      ["/api/v1/flows?from-ip=300.1.1.1", /parameter from-ip: "300.1.1.1"/],
      ["/api/v1/flows?label=a%3D%3D%3Db", /parameter label: "a===b"/],
      ["/api/v1/flows?pods=web", /unknown parameter "pods"/],
      ["/api/v1/flows?namespace=NO", /parameter namespace: "NO"/],
      ["/api/v1/details?node=bogus", /parameter node: "bogus" is not a map node id/],
      ["/api/v1/details?edge=a,b", /parameter edge: "a,b" is not an edge/],
      ["/api/v1/details?edge=workload:shop/Pod/web-1,workload:shop/StatefulSet/db,TCP,99999", /parameter edge: .* port "99999"/],
      ["/api/v1/details", /exactly one of the parameters node and edge/],
      [`/api/v1/details?node=${encodeURIComponent(WEB)}&edge=x`, /exactly one/],
      [`/api/v1/details?node=${encodeURIComponent(WEB)}&window=1d`, /parameter window: "1d"/],
      // Past ranges (ui/history.ts); this control plane keeps no durable store.
      ["/api/v1/map?window=24h", /^parameter window: "24h" reaches past the hot hour: this control plane keeps no durable history \(--store memory\)/],
      ["/api/v1/map?window=90s", /^parameter window: "90s" is not one of 1m, 5m, 1h \(live\), nor a past window longer than 1h/],
      // The CLI's duration grammar (config/time.ts): a compound window is a past window too.
      ["/api/v1/map?window=1h30m", /^parameter window: "1h30m" reaches past the hot hour/],
      ["/api/v1/map?from=2026-01-01T00:00:00&to=2026-01-01T01:00:00Z", /^parameter from: "2026-01-01T00:00:00" is not a time: give RFC 3339 with a zone/],
      ["/api/v1/map?from=2026-01-01T00:00:00Z", /^parameter from: given without to \(a range needs both\)$/],
      ["/api/v1/flows?to=2026-01-01T00:00:00Z", /^parameter to: given without from/],
      ["/api/v1/map?window=5m&from=1&to=2", /^give either window or from and to, not both$/],
      ["/api/v1/map?from=yesterday&to=2026-01-01T00:00:00Z", /^parameter from: "yesterday" is not a time: give RFC 3339 with a zone/],
      ["/api/v1/map?from=2026-01-01T10:00:00&to=2026-01-01T11:00:00Z", /^parameter from: "2026-01-01T10:00:00" is not a time/],
      [`/api/v1/map?from=${clock.now - 60_000}&to=${clock.now - 120_000}`, /^parameter from: "\d+" is not before to \(/],
      [`/api/v1/flows?from=${clock.now - 60_000}&to=${clock.now + 3_600_000}`, /^parameter to: "\d+" is in the future/],
      [`/api/v1/map?from=${clock.now - 2 * 3_600_000}&to=${clock.now - 3_600_000}`, /^parameter from: "\d+" is more than 1h ago: this control plane keeps no durable history/],
      ["/api/v1/map/stream?window=6h", /^parameter window: "6h" reaches past the hot hour/],
      ["/api/v1/policy/suggest?window=5m", /^parameter namespace: required \(suggestions are for one namespace\)$/],
      ["/api/v1/policy/suggest?namespace=shop&window=2h", /^parameter window: "2h" reaches past the hot hour/],
    ];
    for (const [url, message] of cases) {
      const { status, body } = await get(url);
      expect([url, status]).toEqual([url, 400]);
      expect(body.error, url).toMatch(message);
    }
    const gone = await get(`/api/v1/details?node=${encodeURIComponent("workload:shop/Deployment/nothing")}`);
    expect(gone.status).toBe(404);
    expect(gone.body.error).toMatch(/workload:shop\/Deployment\/nothing/);
    const noEdge = await get(`/api/v1/details?edge=${encodeURIComponent(edgeIdOf(WEB, DB, 1))}`);
    expect(noEdge.status).toBe(404);
    // Other clients are undisturbed: the map still answers.
    expect((await get("/api/v1/map")).status).toBe(200);
  });

  it("a past range within the hot hour gives the live map's edges; policy/what-if takes a POSTed draft and names a bad one", async () => {
    const YAML = { "content-type": "application/yaml" };
    const live = await get("/api/v1/map?namespace=shop&window=1h");
    const range = await get(`/api/v1/map?namespace=shop&from=${clock.now - 3_000_000}&to=${clock.now}`);
    expect(range.status).toBe(200);
    expect(range.body.version).toBe(0);
    const totals = (b: { edges: { id: string; packets: number }[] }) => b.edges.map((e) => [e.id, e.packets]).sort();
    expect(totals(range.body)).toEqual(totals(live.body));
    expect(totals(range.body).length).toBeGreaterThan(0);
    // Details over the same range: the same records, and the policies that decided them.
    for (const selected of [`node=${encodeURIComponent(DB)}`, `edge=${encodeURIComponent(edgeIdOf(WEB, DB, 6379))}`]) {
      const liveDetails = await get(`/api/v1/details?${selected}&window=1h`);
      const rangeDetails = await get(`/api/v1/details?${selected}&from=${clock.now - 3_000_000}&to=${clock.now}`);
      expect(rangeDetails.status, JSON.stringify(rangeDetails.body)).toBe(200);
      // (web's newest candidates are the busy-host test's kubelet probes, so only db's node has decisions left to compare.)
      if (selected.startsWith("node=")) expect(rangeDetails.body.decidedBy.length, selected).toBeGreaterThan(0);
      for (const field of ["records", "decidedBy", "selectedBy", "packets", "edges"]) expect(rangeDetails.body[field], field).toEqual(liveDetails.body[field]);
      expect(rangeDetails.body.window).toMatch(/^\d{4}-.*Z\/\d{4}-.*Z$/);
    }

    const bad = await get("/api/v1/policy/what-if?window=1h", { method: "POST", headers: YAML, body: "kind: NetworkPolicy\nspec: [\n" });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/^bad draft, nothing replayed:\ndraft\.yaml: document 0: not valid YAML: /);
    const empty = await get("/api/v1/policy/what-if", { method: "POST", headers: YAML, body: "  \n" });
    expect([empty.status, empty.body.error]).toEqual([400, "the draft is empty: paste or upload NetworkPolicy or ClusterNetworkPolicy YAML"]);
    // A body typed as a cross-site form or simple request could send it is refused, not replayed.
    for (const type of ["text/plain; charset=utf-8", "application/x-www-form-urlencoded", undefined]) {
      const crossSite = await get("/api/v1/policy/what-if?namespace=shop&window=1h", { method: "POST", body: "kind: NetworkPolicy\n",
        ...(type === undefined ? {} : { headers: { "content-type": type } }) });
      expect([crossSite.status, crossSite.body.error]).toEqual([415, expect.stringMatching(/^POST the draft with content-type application\/yaml/)]);
    }
    const asGet = await fetch(`${base}/api/v1/policy/what-if`);
    expect([asGet.status, asGet.headers.get("allow")]).toEqual([405, "POST"]);
    const ok = await get("/api/v1/policy/what-if?namespace=shop&window=1h", { method: "POST", headers: YAML,
      body: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: deny-all, namespace: shop }\nspec: { podSelector: {}, policyTypes: [Ingress] }\n" });
    expect(ok.status).toBe(200);
    expect(ok.body.window).toBe("1h");
    expect(ok.body.records).toBeGreaterThan(0);
  });

  it("serves the built UI with content types, falls back to index.html, and refuses to leave its folder", async () => {
    const index = await get("/");
    expect(index.status).toBe(200);
    expect(index.type).toMatch(/^text\/html/);
    const asset = await get("/assets/app-1234.js");
    expect(asset.type).toMatch(/^text\/javascript/);
    expect(asset.text).toBe("console.log('app');");
    const route = await get("/namespaces/shop");
    expect(route.text).toMatch(/<title>bulkhead/);
    expect((await get("/assets/missing.js")).status).toBe(404);
    for (const raw of ["/..%2fsecret.txt", "/assets/..%2F..%2Fsecret.txt", "/%2e%2e/secret.txt", "/../secret.txt", "/assets/../../secret.txt"]) {
      const r = await rawGet(raw);
      expect(r.text, raw).not.toMatch(/SECRET/);
      expect([403, 404, 200]).toContain(r.status);
    }
    expect((await rawGet("/..%2fsecret.txt")).status).toBe(403);
    expect((await rawGet("/%E0%A4%A")).status).toBe(400);
  });
});

describe("access scope (bearer tokens, the same as the Observer API's)", () => {
  const sget = async (p: string, token = OTHER_TOKEN) => {
    const res = await fetch(`${base}${p}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: res.status, body: await res.json() as any };
  };

  it("an unknown token is refused with 401 on every endpoint, even though requests without one are allowed", async () => {
    for (const p of ["/api/v1/namespaces", "/api/v1/map", "/api/v1/map/stream", "/api/v1/flows", `/api/v1/details?node=${encodeURIComponent(DB)}`]) {
      const r = await sget(p, "not-a-known-token-0123456789");
      expect([p, r.status]).toEqual([p, 401]);
      expect(typeof r.body.error).toBe("string");
    }
  });

  it("every endpoint honours the scope: 403 outside it, and only flows with an end inside", async () => {
    expect((await sget("/api/v1/namespaces")).body.namespaces.map((n: any) => n.name)).toEqual(["other"]);
    for (const p of ["/api/v1/map?namespace=shop", "/api/v1/map/stream?namespace=shop", "/api/v1/flows?namespace=shop",
      `/api/v1/details?node=${encodeURIComponent(DB)}`, `/api/v1/details?edge=${encodeURIComponent(edgeIdOf(WEB, DB, 5432))}`]) {
      const r = await sget(p);
      expect([p, r.status]).toEqual([p, 403]);
      expect(r.body.error).toMatch(/access scope/);
    }
    const all = await sget("/api/v1/map?window=1h");
    expect(all.body.edges.map((e: any) => e.id)).toEqual([edgeIdOf(X, WEB, 8080)]);
    expect(all.body.nodes.map((n: any) => n.id).sort()).toEqual([X, WEB]);
    const flows = await sget("/api/v1/flows?window=1h");
    expect(flows.body.flows.length).toBeGreaterThan(0);
    for (const f of flows.body.flows) expect([f.source?.namespace, f.destination?.namespace]).toContain("other");
  });

  it("a token revoked by a reload of the token file ends its open map stream at once", async () => {
    const waitFor = async (streams: number) => {
      const deadline = Date.now() + 5000;
      while (cp.ui!.streamCount !== streams && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return cp.ui!.streamCount;
    };
    expect(await waitFor(0)).toBe(0);
    const stream = await EventReader.open("window=1h", new AbortController(), { authorization: `Bearer ${OTHER_TOKEN}` });
    expect((await stream.next()).event).toBe("snapshot");
    expect(cp.ui!.streamCount).toBe(1);
    try {
      access.replaceTokens([]);
      expect(await waitFor(0)).toBe(0);
    } finally {
      access.replaceTokens(parseTokenFile(TOKENS, "tokens.yaml"));
      stream.close();
    }
  });

  it("a node outside every namespace (world) shows only edges the token may read: none here, so 404", async () => {
    const WORLD = "world:198.51.100.7";
    cp.ingest("node1", [record(WEB_IP, "198.51.100.7", 443)]);
    const path = `/api/v1/details?node=${encodeURIComponent(WORLD)}&window=1h`;
    const open = await (await fetch(`${base}${path}`)).json() as any;
    expect([open.node?.id, open.edges]).toEqual([WORLD, 1]);
    const scoped = await sget(path);
    expect([scoped.status, scoped.body.edges, scoped.body.packets]).toEqual([404, undefined, undefined]);
  });
});

// Last: its records add Service edges that the tests above do not expect.
describe("Service nodes name their backends, so the UI draws client → Service → backend", () => {
  it("map and stream give a Service node the workloads its selector picks; a scope that cannot read the Service's namespace gets none", async () => {
    const stream = await EventReader.open("namespace=shop&window=5m");
    // The same map (every namespace, 5m) for two scopes: streams share a delta only when they
    // may read the same namespaces, so the other team's stream must not get the open one's.
    const everything = await EventReader.open("window=5m");
    const othersView = await EventReader.open("window=5m", undefined, { authorization: `Bearer ${OTHER_TOKEN}` });
    try {
      for (const s of [stream, everything, othersView]) expect((await s.next()).event).toBe("snapshot");
      cp.ingest("node1", [record(WEB_IP, DB_SERVICE_IP, 5432), record(X_IP, DB_SERVICE_IP, 5432)]);
      const delta = await stream.next();
      expect(delta.data.nodes.find((n: any) => n.id === "service:shop/db")).toMatchObject({ kind: "service", backends: [DB] });
      // Workloads carry no backends.
      expect(delta.data.nodes.filter((n: any) => n.kind !== "service" && "backends" in n)).toEqual([]);
      const open = await everything.next(), scoped = await othersView.next();
      expect([open.event, scoped.event]).toEqual(["delta", "delta"]);
      expect(open.data.edges.map((e: any) => e.source).sort()).toEqual([X, WEB].sort());
      expect(scoped.data.edges.map((e: any) => e.source)).toEqual([X]);
      expect(scoped.data.nodes.find((n: any) => n.id === "service:shop/db").backends).toBeUndefined();
    } finally {
      for (const s of [stream, everything, othersView]) s.close();
    }
    const map = await get("/api/v1/map?namespace=shop&window=5m");
    expect(map.body.nodes.find((n: any) => n.id === "service:shop/db")).toMatchObject({ backends: [DB] });
    // The other team sees its own call to the Service, but not who backs it in shop.
    const other = await fetch(`${base}/api/v1/map?window=5m`, { headers: { authorization: `Bearer ${OTHER_TOKEN}` } }).then((r) => r.json() as Promise<any>);
    const service = other.nodes.find((n: any) => n.id === "service:shop/db");
    expect(service).toMatchObject({ kind: "service" });
    expect(service.backends).toBeUndefined();
  });
});

describe("one filter mapping for observe flags and flows parameters", () => {
  it("the same names give the same FlowFilter, and the same values are refused", () => {
    const fromCli = buildRequest(["-n", "shop", "--from-pod", "web-1", "--to-port", "5432", "--verdict", "dropped",
      "--protocol", "icmp", "--direction", "ingress", "-l", "app=web", "--to-workload", "db"]).request.allow[0];
    const fromUrl = flowFilterOf(new URLSearchParams(
      "namespace=shop&from-pod=web-1&to-port=5432&verdict=dropped&protocol=icmp&direction=ingress&label=app%3Dweb&to-workload=db"));
    expect(fromUrl).toEqual(fromCli);
    expect(fromUrl.sourcePod).toEqual(["shop/web-1"]);
    expect(fromUrl.protocol).toEqual(["ICMPv4"]);
    for (const [flag, value] of [["port", "x"], ["verdict", "maybe"], ["protocol", "GRE"], ["direction", "up"]] as const) {
      expect(() => buildRequest([`--${flag}`, value])).toThrow(`--${flag}: "${value}"`);
      expect(() => flowFilterOf([[flag, value]])).toThrow(FilterNameError);
    }
    expect(() => flowFilterOf([["colour", "red"]])).toThrow(/colour: "red" is not a filter/);
  });
});

describe("observe's defaults follow hubble's habits", () => {
  const ms = (t: { seconds: bigint; nanos: number } | undefined) => (t === undefined ? undefined : Number(t.seconds) * 1000 + t.nanos / 1e6);

  it("the newest 20 without a count or a range; -f alone starts now; --last, a range or --all say otherwise", () => {
    expect(buildRequest([]).request).toMatchObject({ last: DEFAULT_LAST, since: undefined, follow: false });
    const before = Date.now();
    const follow = buildRequest(["-f"]).request;
    expect(follow).toMatchObject({ last: 0n, follow: true });
    expect(ms(follow.since)).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(ms(follow.since)).toBeLessThanOrEqual(Date.now());
    expect(buildRequest(["--last", "5", "-f"]).request).toMatchObject({ last: 5n, since: undefined, follow: true });
    expect(buildRequest(["--all"]).request).toMatchObject({ last: 0n, since: undefined });
    expect(buildRequest(["--all", "-f"]).request).toMatchObject({ last: 0n, since: undefined, follow: true });
    const since = buildRequest(["--since", "1h"]).request;
    expect(since.last).toBe(0n);
    expect(ms(since.since)).toBeLessThan(Date.now() - 3_599_000);
    expect(() => buildRequest(["--all", "--last", "3"])).toThrow("--all: every matching flow, --last: the newest N; give one of them");
  });
});

// After the tests above: its records add to edges whose counts they check.
describe("map streams of one map share each delta; flushes run in slices", () => {
  it("streams of one map share one computed delta, and each gets exactly the edge the map shows", async () => {
    await waitFor(() => cp.ui!.streamCount, (n) => n === 0, 5000, "earlier tests' streams to close");
    const streams = await Promise.all([1, 2, 3].map(() => EventReader.open("namespace=shop&window=5m")));
    try {
      for (const s of streams) expect((await s.next()).event).toBe("snapshot");
      const computed = cp.ui!.mapDeltasComputed;
      cp.ingest("node1", [record(WEB_IP, DB_IP, 5432)]);
      const deltas = await Promise.all(streams.map((s) => s.next()));
      expect(cp.ui!.mapDeltasComputed - computed).toBe(1);
      for (const d of deltas) expect(d).toEqual(deltas[0]);
      const map = (await get("/api/v1/map?namespace=shop&window=5m")).body;
      expect(deltas[0]!.data).toEqual({
        version: map.version, edges: map.edges.filter((e: any) => e.id === edgeIdOf(WEB, DB, 5432)),
        nodes: map.nodes.filter((n: any) => n.id === WEB || n.id === DB), removed: [],
      });
    } finally {
      for (const s of streams) s.close();
    }
  });

  it("a stream that asks for its map's changes after an ingest batch takes the delta the others got, and its next one brings the rest", () => {
    const deltas = new MapDeltas(cp.flowMap);
    const scope = { kind: "cluster", subject: "test" } as const;
    const window = { name: "5m", ms: 5 * 60_000 } as const;
    const from = cp.flowMap.version;
    cp.ingest("node1", [record(WEB_IP, DB_IP, 5432)]);
    const first = deltas.since(from, "shop", window, scope)!;
    cp.ingest("node1", [record(WEB_IP, DB_IP, 6379, Verdict.VERDICT_AUDIT)]); // lands between two streams' flushes
    const second = deltas.since(from, "shop", window, scope)!;
    expect(second).toBe(first);
    expect(deltas.computed).toBe(1);
    expect(first.edges.map((e) => e.id)).toEqual([edgeIdOf(WEB, DB, 5432)]);
    expect(first.to).toBeLessThan(cp.flowMap.version);
    // What the later stream flushes next: from where the shared delta left it, up to now.
    const rest = deltas.since(first.to, "shop", window, scope)!;
    expect([rest.to, rest.edges.map((e) => e.id)]).toEqual([cp.flowMap.version, [edgeIdOf(WEB, DB, 6379)]]);
    expect(deltas.computed).toBe(2);
    // The bytes every stream of the map writes: a delta event whose data is the map's edges as GET /api/v1/map gives them.
    const text = rest.whole.toString("utf8");
    expect(text.startsWith("event: delta\ndata: ") && text.endsWith("\n\n")).toBe(true);
    expect(rest.head.equals(rest.whole.subarray(0, rest.head.length))).toBe(true);
    expect(JSON.parse(text.slice("event: delta\ndata: ".length)).removed).toEqual([]);
  });

  it("flushes due at once run in slices, with timers and I/O between them; the flushes of one map run in the same slice", async () => {
    const sliceMs = 2;
    const queue = new FlushQueue(sliceMs);
    const order: string[] = [];
    const busy = (name: string) => () => {
      order.push(name);
      const until = performance.now() + sliceMs + 0.5; // each flush outlasts a slice
      while (performance.now() < until) { /* a flush's work */ }
    };
    // Map m's two streams, map n's one, and map o's one, due in this order.
    queue.add("m", busy("m1"));
    queue.add("n", busy("n"));
    queue.add("m", busy("m2"));
    queue.add("o", busy("o"));
    setTimeout(() => order.push("timer"), 0);
    await waitFor(() => queue.pending, (n) => n === 0, 3000, "the queue to run every flush");
    await new Promise((r) => setTimeout(r, 5)); // the timer, whenever the loop gets to it
    // m's flushes together (no ingest between them: they end at one version), then one map per slice.
    expect(order.filter((x) => x !== "timer")).toEqual(["m1", "m2", "n", "o"]);
    // The timer runs between slices, before the last, not after every flush.
    expect(order.indexOf("timer")).toBeLessThan(order.indexOf("o"));
    expect(order.indexOf("timer")).toBeGreaterThan(order.indexOf("m2"));
  });
});
