// The Kubernetes API source against a local fake API server (test/harness/kube-apiserver.ts:
// HTTPS, bearer token, list with limit/continue, chunked watch streams, 410 on expired
// resourceVersions, dropped connections, injected error statuses). No real API server can
// run here. Every test compares the source's ClusterState with the API's objects by content.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { parseAllDocuments } from "yaml";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ClusterState } from "../controlplane/cluster/state.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { backoffDelay, KubernetesSource } from "../controlplane/metadata/kubernetes.js";
import { loadKubeConfig } from "../controlplane/metadata/kubernetes-client.js";
import { WATCHED_RESOURCES } from "../controlplane/metadata/kubernetes-resources.js";
import { parseKubeObject, type KubeObject } from "../controlplane/metadata/objects.js";
import type { MetadataSink, ObjectEvent } from "../controlplane/metadata/source.js";
import { FakeKubeApiServer } from "./harness/kube-apiserver.js";
import { cliMain } from "../config/install.js";

const run = promisify(execFile);
type Json = Record<string, unknown>;

const T0 = "2024-05-01T12:00:00Z";
const CLUSTER_YAML = `
apiVersion: v1
kind: Namespace
metadata: { name: shop, uid: ns-shop, creationTimestamp: "${T0}", labels: { team: shop } }
---
apiVersion: v1
kind: Node
metadata: { name: node1, uid: node-1, creationTimestamp: "${T0}" }
spec: { podCIDRs: [10.0.1.0/24] }
status: { addresses: [{ type: InternalIP, address: 192.168.0.11 }] }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: shop, uid: dep-web, creationTimestamp: "${T0}" }
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web-7d9f
  namespace: shop
  uid: rs-web
  creationTimestamp: "${T0}"
  ownerReferences: [{ apiVersion: apps/v1, kind: Deployment, name: web, uid: dep-web, controller: true }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: db, namespace: shop, uid: sts-db, creationTimestamp: "${T0}" }
---
apiVersion: v1
kind: Pod
metadata:
  name: web-7d9f-a
  namespace: shop
  uid: pod-web-a
  labels: { app: web }
  creationTimestamp: "${T0}"
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f, uid: rs-web, controller: true }]
spec: { nodeName: node1, containers: [{ name: web, ports: [{ name: http, containerPort: 8080 }] }] }
status: { phase: Running, podIP: 10.0.1.5 }
---
apiVersion: v1
kind: Pod
metadata:
  name: db-0
  namespace: shop
  uid: pod-db-0
  labels: { app: db }
  creationTimestamp: "${T0}"
  ownerReferences: [{ apiVersion: apps/v1, kind: StatefulSet, name: db, uid: sts-db, controller: true }]
spec: { nodeName: node1, containers: [{ name: db, ports: [{ containerPort: 5432 }] }] }
status: { phase: Running, podIP: 10.0.1.7 }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop, uid: svc-web, creationTimestamp: "${T0}" }
spec: { clusterIP: 10.96.0.10, selector: { app: web }, ports: [{ name: http, port: 80, targetPort: http }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: shop
  uid: eps-web
  creationTimestamp: "${T0}"
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
endpoints: [{ addresses: [10.0.1.5], nodeName: node1, targetRef: { kind: Pod, namespace: shop, name: web-7d9f-a, uid: pod-web-a } }]
ports: [{ name: http, port: 8080, protocol: TCP }]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: shop, uid: np-db, creationTimestamp: "${T0}" }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }], ports: [{ port: 5432 }] }]
`;

function clusterDocuments(): Json[] {
  return parseAllDocuments(CLUSTER_YAML).map((d) => d.toJS() as Json);
}

function pod(name: string, ip: string, extra: Json = {}): Json {
  return {
    apiVersion: "v1", kind: "Pod",
    metadata: { name, namespace: "shop", labels: { app: "web" }, creationTimestamp: T0 },
    spec: { nodeName: "node1", containers: [{ name: "web", ports: [{ containerPort: 8080 }] }] },
    status: { phase: "Running", podIP: ip },
    ...extra,
  };
}

/** Everything the control plane reads from a ClusterState, in a stable order, as text. */
function content(state: ClusterState): string {
  const byName = <T extends KubeObject>(xs: T[]) =>
    [...xs].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  const workloads = WATCHED_RESOURCES.filter((r) => ["ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"].includes(r.kind));
  return JSON.stringify({
    namespaces: byName(state.namespaces()),
    nodes: byName(state.nodes()),
    pods: byName(state.pods()).map((p) => ({ pod: p, workload: state.workloadOf(p) })),
    services: byName(state.services()).map((s) => ({ service: s, slices: byName(state.endpointSlicesOf(s.metadata.namespace, s.metadata.name)) })),
    policies: byName(state.networkPolicies()),
    owners: workloads.map((w) => state.workloadObject(w.kind as "ReplicaSet", "shop", "web-7d9f") ?? null),
  }, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

/** The API server's objects now, through the same parser, as a ClusterState. */
function apiContent(server: FakeKubeApiServer): string {
  const state = new ClusterState();
  const events: ObjectEvent[] = [];
  for (const r of WATCHED_RESOURCES) {
    for (const raw of server.list(r.resource)) {
      try {
        const object = parseKubeObject(raw);
        if (object) events.push({ type: "upsert", object });
      } catch {
        // The source reports invalid objects and leaves them out; so does the expectation.
      }
    }
  }
  const order = WATCHED_RESOURCES.map((r) => r.kind);
  events.sort((a, b) => order.indexOf(a.object.kind) - order.indexOf(b.object.kind));
  state.apply(events, 1n);
  return content(state);
}

async function waitFor(condition: () => boolean, what: () => string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

class CountingSink implements MetadataSink {
  readonly state = new ClusterState();
  applies = 0;
  apply(events: ObjectEvent[], observedAtNs: bigint): void {
    this.applies++;
    this.state.apply(events, observedAtNs);
  }
}

const FAST = { initialMs: 20, maxMs: 200 };

let server: FakeKubeApiServer;
let sources: KubernetesSource[] = [];
let tmp: string[] = [];

function newSource(options: { listPageSize?: number } = {}): KubernetesSource {
  const source = new KubernetesSource({ kubeConfig: loadKubeConfig({ kind: "kubeconfig", path: server.kubeconfigPath }), backoff: FAST, ...options });
  sources.push(source);
  return source;
}

const lists = (plural: string) => server.requests.filter((r) => r.plural === plural && !r.watch);
const watches = (plural: string) => server.requests.filter((r) => r.plural === plural && r.watch);

beforeEach(async () => {
  server = await FakeKubeApiServer.start();
  for (const doc of clusterDocuments()) server.create(doc);
});

afterEach(async () => {
  for (const s of sources) await s.stop();
  sources = [];
  await server.close();
  for (const d of tmp) fs.rmSync(d, { recursive: true, force: true });
  tmp = [];
});

describe("KubernetesSource", () => {
  it("lists the same cluster as the same objects in a manifests folder (pods to workloads, Services, slices, policies)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-kube-folder-"));
    tmp.push(dir);
    fs.writeFileSync(path.join(dir, "cluster.yaml"), CLUSTER_YAML);
    const folder = new FolderSource({ dir });
    const fromFolder = new CountingSink();
    await folder.start(fromFolder);
    await folder.stop();

    // Pages of 1 make every resource with more objects take the continue path.
    const source = newSource({ listPageSize: 1 });
    const fromApi = new CountingSink();
    await source.start(fromApi);
    expect(source.errors()).toEqual([]);
    expect(content(fromApi.state)).toEqual(content(fromFolder.state));
    const web = fromApi.state.pod("shop", "web-7d9f-a");
    expect(web && fromApi.state.workloadOf(web)).toMatchObject({ kind: "Deployment", name: "web" });
    expect(fromApi.state.serviceByClusterIP("10.96.0.10")?.metadata.name).toBe("web");
    expect(fromApi.state.networkPolicies("shop").map((p) => p.metadata.name)).toEqual(["db-from-web"]);
    // Two pods took two pages; every watch continues from its list's resourceVersion, with bookmarks.
    await waitFor(() => server.openWatches() === WATCHED_RESOURCES.length, () => `${server.openWatches()} open watches`);
    expect(lists("pods").map((r) => r.query.limit)).toEqual(["1", "1"]);
    expect(lists("pods")[1]!.query.continue).toBeTruthy();
    for (const r of WATCHED_RESOURCES) {
      expect(watches(r.resource)).toEqual([expect.objectContaining({ query: expect.objectContaining({
        allowWatchBookmarks: "true", resourceVersion: String(server.resourceVersion) }) })]);
    }
  });

  it("a cluster without the ClusterNetworkPolicy CRD (404) syncs with none and no error; once it is installed, they arrive", async () => {
    server.fail("clusternetworkpolicies", 404);
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    expect(source.errors()).toEqual([]);
    expect(sink.state.clusterNetworkPolicies()).toEqual([]);
    server.heal("clusternetworkpolicies");
    server.create({ apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name: "guard" },
      spec: { tier: "Admin", priority: 1, subject: { namespaces: {} }, egress: [{ action: "Deny", to: [{ networks: ["169.254.169.254/32"] }] }] } });
    await waitFor(() => sink.state.clusterNetworkPolicies().length === 1, () => "the ClusterNetworkPolicy listed once the CRD answers");
    expect(sink.state.clusterNetworkPolicies()[0]?.spec).toMatchObject({ tier: "Admin", priority: 1 });
    expect(source.errors()).toEqual([]);
  });

  it("applies creates, updates and deletes that arrive through the watch", async () => {
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    await waitFor(() => server.openWatches() === WATCHED_RESOURCES.length, () => `${server.openWatches()} open watches`);
    server.create(pod("web-7d9f-b", "10.0.1.6"));
    const svc = server.list("services")[0]!;
    server.update({ ...svc, spec: { ...(svc.spec as Json), selector: { app: "web", tier: "front" } } });
    server.delete("networking.k8s.io/v1", "NetworkPolicy", "shop", "db-from-web");
    await waitFor(() => content(sink.state) === apiContent(server), () => "the source to match the API");
    expect(sink.state.pod("shop", "web-7d9f-b")?.status.podIP).toBe("10.0.1.6");
    expect(sink.state.networkPolicies("shop")).toEqual([]);
    for (const r of WATCHED_RESOURCES) expect(lists(r.resource).length).toBe(1);
    expect(source.errors()).toEqual([]);
  });

  it("relists after the watch expires (410) and deletes what was deleted while it was down", async () => {
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    await waitFor(() => server.openWatches("pods") === 1, () => "the pods watch");
    // An outage: the pods watch is cut and cannot come back while history moves on.
    server.fail("pods", 503);
    server.dropWatches("pods");
    server.delete("v1", "Pod", "shop", "db-0");
    server.create(pod("web-7d9f-c", "10.0.1.8"));
    const web = server.list("pods").find((p) => (p.metadata as Json).name === "web-7d9f-a")!;
    server.update({ ...web, status: { phase: "Running", podIP: "10.0.1.9" } });
    await waitFor(() => watches("pods").some((r) => r.status === 503), () => "a failed rewatch");
    server.compact();
    server.heal("pods");
    await waitFor(() => lists("pods").length === 2, () => "a relist of pods");
    await waitFor(() => content(sink.state) === apiContent(server), () => "the source to match the API");
    expect(sink.state.pod("shop", "db-0")).toBeUndefined();
    expect(sink.state.pod("shop", "web-7d9f-a")?.status.podIP).toBe("10.0.1.9");
    expect(sink.state.pod("shop", "web-7d9f-c")).toBeDefined();
    await waitFor(() => source.errors().length === 0, () => `errors to clear: ${JSON.stringify(source.errors())}`);
  });

  it("rewatches from the last resourceVersion after a dropped connection without losing events", async () => {
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    await waitFor(() => server.openWatches() === WATCHED_RESOURCES.length, () => "every watch");
    const lastSeen = server.resourceVersion;
    server.dropWatches();
    // Made while no watch is open: only the replay from resourceVersion can deliver them.
    server.create(pod("web-7d9f-d", "10.0.1.10"));
    server.delete("discovery.k8s.io/v1", "EndpointSlice", "shop", "web-abcde");
    await waitFor(() => content(sink.state) === apiContent(server), () => "the source to match the API");
    expect(sink.state.endpointSlicesOf("shop", "web")).toEqual([]);
    const rewatch = watches("pods").at(-1)!;
    expect(Number(rewatch.query.resourceVersion)).toBeLessThanOrEqual(lastSeen);
    for (const r of WATCHED_RESOURCES) expect(lists(r.resource).length).toBe(1);
  });

  it("follows bookmarks, so a rewatch after a quiet period does not need a relist", async () => {
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    await waitFor(() => server.openWatches("pods") === 1, () => "the pods watch");
    // Other resources move the global resourceVersion; pods stay quiet.
    for (let i = 0; i < 5; i++) server.create({ apiVersion: "v1", kind: "Service", metadata: { name: `s${i}`, namespace: "shop" }, spec: { clusterIP: `10.96.1.${i + 1}`, ports: [{ port: 80 }] } });
    server.bookmark("pods");
    const bookmarked = String(server.resourceVersion);
    await waitFor(() => source.resourceVersions().pods === bookmarked, () => `pods at ${source.resourceVersions().pods}, not ${bookmarked}`);
    server.compact();
    server.dropWatches("pods");
    await waitFor(() => watches("pods").length === 2 && server.openWatches("pods") === 1, () => "the pods rewatch");
    expect(watches("pods")[1]!.query.resourceVersion).toBe(bookmarked);
    expect(lists("pods").length).toBe(1);
    await waitFor(() => content(sink.state) === apiContent(server), () => "the source to match the API");
  });

  it("retries a failing resource with backoff, reports it with its status until it recovers", async () => {
    server.fail("networkpolicies", 500);
    const source = newSource();
    const sink = new CountingSink();
    const started = source.start(sink);
    await waitFor(() => source.errors().some((e) => e.message.includes("networkpolicies") && e.message.includes("500")),
      () => `an error for networkpolicies: ${JSON.stringify(source.errors())}`);
    await waitFor(() => lists("networkpolicies").length >= 4, () => "retries");
    expect(sink.applies).toBe(0); // nothing is served from a partial picture
    server.heal("networkpolicies");
    await started;
    expect(source.errors()).toEqual([]);
    expect(content(sink.state)).toEqual(apiContent(server));

    // Forbidden later (RBAC changed): the watch fails, the resource is named with 403.
    server.fail("services", 403);
    server.dropWatches("services");
    await waitFor(() => source.errors().some((e) => /services .*403.*forbidden/i.test(e.message)),
      () => `a 403 for services: ${JSON.stringify(source.errors())}`);
    server.heal("services");
    server.create({ apiVersion: "v1", kind: "Service", metadata: { name: "late", namespace: "shop" }, spec: { clusterIP: "10.96.2.1", ports: [{ port: 80 }] } });
    await waitFor(() => source.errors().length === 0 && content(sink.state) === apiContent(server), () => "recovery");
  });

  it("reports an unreachable API server by address", async () => {
    const kubeconfig = fs.readFileSync(server.kubeconfigPath, "utf8");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-kube-gone-"));
    tmp.push(dir);
    fs.copyFileSync(server.caFile, path.join(dir, "ca.crt"));
    fs.writeFileSync(path.join(dir, "kubeconfig"), kubeconfig.replace(server.caFile, path.join(dir, "ca.crt")));
    await server.close();
    const source = new KubernetesSource({ kubeConfig: loadKubeConfig({ kind: "kubeconfig", path: path.join(dir, "kubeconfig") }), backoff: FAST });
    const started = source.start(new CountingSink());
    started.catch(() => undefined);
    await waitFor(() => source.errors().some((e) => e.message.includes("cannot reach the API server") && e.message.includes("ECONNREFUSED")),
      () => JSON.stringify(source.errors()));
    await source.stop();
    await expect(started).rejects.toThrow(/stopped before every resource was listed/);
    server = await FakeKubeApiServer.start(); // for afterEach
  });

  it("reports an invalid object by kind, namespace, name and field, applies the rest, and keeps its last good version", async () => {
    server.create(pod("bad", "10.0.1.20", { spec: { containers: [{ name: "x", ports: [{ containerPort: "http" }] }] } }));
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    expect(source.errors().map((e) => e.message)).toEqual([expect.stringContaining("Pod shop/bad: spec.containers[0].ports[0].containerPort: expected an integer 1-65535, got \"http\"")]);
    expect(content(sink.state)).toEqual(apiContent(server));
    expect(sink.state.pod("shop", "web-7d9f-a")).toBeDefined();

    // A good pod turned bad keeps its last good version; fixed, it applies and the error clears.
    const db = server.list("pods").find((p) => (p.metadata as Json).name === "db-0")!;
    server.update({ ...db, status: { phase: "Running", podIP: "not-an-ip" } });
    await waitFor(() => source.errors().some((e) => e.message.includes("Pod shop/db-0: status.podIP")), () => JSON.stringify(source.errors()));
    expect(sink.state.pod("shop", "db-0")?.status.podIP).toBe("10.0.1.7");
    server.update({ ...db, status: { phase: "Running", podIP: "10.0.1.77" } });
    server.delete("v1", "Pod", "shop", "bad");
    await waitFor(() => source.errors().length === 0 && sink.state.pod("shop", "db-0")?.status.podIP === "10.0.1.77", () => JSON.stringify(source.errors()));
    expect(content(sink.state)).toEqual(apiContent(server));
  });

  it("stop() closes every connection and applies nothing afterwards", async () => {
    const source = newSource();
    const sink = new CountingSink();
    await source.start(sink);
    await waitFor(() => server.openWatches() === WATCHED_RESOURCES.length, () => "every watch");
    expect(server.openConnections()).toBeGreaterThan(0);
    await source.stop();
    await waitFor(() => server.openConnections() === 0, () => `${server.openConnections()} connections still open`);
    const applies = sink.applies;
    const requests = server.requests.length;
    server.create(pod("after-stop", "10.0.1.30"));
    await new Promise((r) => setTimeout(r, 200));
    expect(sink.applies).toBe(applies);
    expect(server.requests.length).toBe(requests);
  });

  it("backoff doubles from the initial delay, stays under the cap, and is jittered", () => {
    const b = { initialMs: 100, maxMs: 1000 };
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(b, a, 1))).toEqual([100, 200, 400, 800, 1000, 1000]);
    expect([0, 1, 2, 3, 4, 10].map((a) => backoffDelay(b, a, 0))).toEqual([50, 100, 200, 400, 500, 500]);
  });
});

describe("bulkhead controlplane --source kubernetes", () => {

  it("rejects bad flag combinations with messages naming the flags", () => {
    const parse = (args: string[]) => () => parseControlPlaneArgs(args, {});
    expect(parse(["--source", "kubernetes", "--manifests", "/x"])).toThrow(/--manifests: not used by --source kubernetes.*\/x/);
    expect(parse(["--kubeconfig", "/k"])).toThrow(/--kubeconfig: only for --source kubernetes.*\/k/);
    expect(parse(["--source", "etcd"])).toThrow(/--source: "etcd" is not folder or kubernetes/);
    expect(parse([])).toThrow(/--manifests: required with --source folder/);
    expect(parseControlPlaneArgs(["--manifests", "/m", "--allow-unauthenticated"], {}).source).toEqual({ kind: "folder", manifests: "/m" });
    expect(parseControlPlaneArgs(["--source", "kubernetes", "--kubeconfig", "/k", "--allow-unauthenticated"], {}).source)
      .toEqual({ kind: "kubernetes", connection: { kind: "kubeconfig", path: "/k" } });
    expect(parseControlPlaneArgs(["--source", "kubernetes", "--allow-unauthenticated"], { KUBERNETES_SERVICE_HOST: "10.96.0.1" }).source)
      .toEqual({ kind: "kubernetes", connection: { kind: "in-cluster" } });
    expect(parseControlPlaneArgs(["--source", "kubernetes", "--allow-unauthenticated"], { KUBECONFIG: "/a:/b", HOME: "/h" }).source)
      .toEqual({ kind: "kubernetes", connection: { kind: "kubeconfig", path: "/a" } });
  });

  it("starts against the fake API server and reports no metadata errors; exits 2 on bad flags", async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
    const bad = await run(process.execPath, [cliMain, "controlplane", "--source", "kubernetes", "--manifests", "/tmp"]).catch((e: { code: number; stderr: string }) => e);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringContaining("--manifests: not used by --source kubernetes") });
    const missing = await run(process.execPath, [cliMain, "controlplane", "--source", "kubernetes", "--kubeconfig", "/nonexistent/kubeconfig", "--allow-unauthenticated"])
      .catch((e: { code: number; stderr: string }) => e);
    expect(missing).toMatchObject({ code: 2, stderr: expect.stringContaining("kubeconfig /nonexistent/kubeconfig: no such file") });

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-kube-cp-"));
    tmp.push(dir);
    const socket = `unix://${path.join(dir, "observer.sock")}`;
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, [cliMain, "controlplane", "--source", "kubernetes", "--kubeconfig", server.kubeconfigPath, "--listen", socket, "--allow-unauthenticated"],
      { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    child.stdout.on("data", (d: Buffer) => { log += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { log += d.toString(); });
    try {
      await waitFor(() => log.includes("control plane started"), () => `the control plane to start; log:\n${log}`);
      expect(log).toMatch(/"pods":2/);
      await waitFor(() => log.includes('"kubernetes":"v1.31.4"'), () => `the fake API server's version in the log:\n${log}`);
      const status = await run(process.execPath, [cliMain, "status", "--server", socket, "-o", "json"]);
      const parsed = JSON.parse(status.stdout) as { status: { metadataErrors?: string[] } };
      expect(parsed.status.metadataErrors ?? []).toEqual([]);
      // An invalid object shows up in status, named.
      server.create(pod("broken", "10.0.1.40", { status: { phase: "Running", podIP: "300.1.1.1" } }));
      await waitFor(() => log.includes("Pod shop/broken"), () => `the error in the log:\n${log}`);
      const after = JSON.parse((await run(process.execPath, [cliMain, "status", "--server", socket, "-o", "json"])).stdout) as { status: { metadataErrors?: string[] } };
      expect(after.status.metadataErrors).toEqual([expect.stringContaining("Pod shop/broken: status.podIP")]);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    await waitFor(() => server.openConnections() === 0, () => "the control plane's connections to close");
  });
});

describe("the Kubernetes version, read from /version at start (issue 18: 1.21 needed)", () => {
  it("refuses a 1.20 server naming the version found and the one needed, before listing anything", async () => {
    server.version = { major: "1", minor: "20", gitVersion: "v1.20.15" };
    const source = newSource();
    await expect(source.start(new CountingSink())).rejects.toThrow(
      `the Kubernetes API server at ${server.url} runs v1.20.15 (1.20); bulkhead needs 1.21 or newer (EndpointSlice discovery.k8s.io/v1 and CronJob batch/v1 are GA from 1.21)`);
    expect(server.requests.map((r) => r.plural)).toEqual(["/version"]);
  });

  it("accepts 1.21 and newer, managed clusters' \"21+\" included, and says which it found", async () => {
    for (const [version, expected] of [
      [{ major: "1", minor: "21" }, { major: 1, minor: 21, gitVersion: "" }],
      [{ major: "1", minor: "29+", gitVersion: "v1.29.4-eks-036c24b" }, { major: 1, minor: 29, gitVersion: "v1.29.4-eks-036c24b" }],
      [{ major: "2", minor: "0", gitVersion: "v2.0.0" }, { major: 2, minor: 0, gitVersion: "v2.0.0" }],
    ] as const) {
      server.version = { ...version };
      const source = newSource();
      const sink = new CountingSink();
      await source.start(sink);
      expect(source.serverVersion).toEqual(expected);
      expect(sink.state.pods().length).toBeGreaterThan(0);
      await source.stop();
    }
  });

  it("refuses a /version answer that is not a version, naming the field", async () => {
    server.version = { major: "1", minor: "twenty-one" };
    await expect(newSource().start(new CountingSink())).rejects.toThrow(
      `GET ${server.url}/version: minor: expected a version number such as "1" or "21+", got "twenty-one"`);
    server.version = { major: 1, minor: "21" };
    await expect(newSource().start(new CountingSink())).rejects.toThrow(`GET ${server.url}/version: major: expected a string, got 1`);
    server.version = { status: 403 };
    await expect(newSource().start(new CountingSink())).rejects.toThrow(
      `cannot read the Kubernetes version from ${server.url}/version: HTTP 403 Forbidden: injected failure 403 for /version`);
  });

  it("retries /version while the server answers 503, reporting it, then starts", async () => {
    server.version = { status: 503 };
    const source = newSource();
    const started = source.start(new CountingSink());
    await waitFor(() => source.errors().length > 0, () => "the /version failure reported");
    expect(source.errors()[0]?.message).toMatch(/^GET \/version: HTTP 503 ServiceUnavailable: injected failure 503 for \/version; retrying with backoff/);
    server.version = { major: "1", minor: "30" };
    await started;
    expect(source.errors()).toEqual([]);
  });

  it("the control plane exits 1 at start against a 1.20 server, the reason on stderr", async () => {
    server.version = { major: "1", minor: "20", gitVersion: "v1.20.15" };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-kube-old-"));
    tmp.push(dir);
    const r = await run(process.execPath, [cliMain, "controlplane", "--source", "kubernetes", "--kubeconfig", server.kubeconfigPath,
      "--listen", `unix://${path.join(dir, "cp.sock")}`, "--allow-unauthenticated"]).then(() => ({ code: 0, stderr: "" }), (e: { code: number; stderr: string }) => e);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`bulkhead: the Kubernetes API server at ${server.url} runs v1.20.15 (1.20); bulkhead needs 1.21 or newer (EndpointSlice discovery.k8s.io/v1 and CronJob batch/v1 are GA from 1.21)\n`);
  });
});
