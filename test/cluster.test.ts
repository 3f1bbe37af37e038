// The cluster model and flow enrichment: who an address belonged to at a given time
// (pod leases across IP reuse, Service ClusterIPs, nodes, world), which workload owns a
// pod, and records named from the agent's podUid or by address.
import { describe, expect, it } from "vitest";
import { Enricher } from "../controlplane/cluster/enrich.js";
import { ClusterState } from "../controlplane/cluster/state.js";
import { parseKubeObject, type KubeObject, type Pod } from "../controlplane/metadata/objects.js";
import type { ObjectEvent } from "../controlplane/metadata/source.js";
import { ObservationPoint, VerdictReason, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";

const SECOND = 1_000_000_000n;
/** 2024-05-01T12:00:00Z in ns. */
const T0 = BigInt(Date.UTC(2024, 4, 1, 12)) * 1_000_000n;
const at = (seconds: number) => T0 + BigInt(seconds) * SECOND;
const rfc3339 = (ns: bigint) => new Date(Number(ns / 1_000_000n)).toISOString();

function object(doc: Record<string, unknown>): KubeObject {
  const parsed = parseKubeObject(doc);
  if (!parsed) throw new Error(`not a kind the control plane keeps: ${JSON.stringify(doc)}`);
  return parsed;
}

interface PodOptions {
  name: string;
  namespace?: string;
  uid?: string;
  ips?: string[];
  node?: string;
  labels?: Record<string, string>;
  owner?: { kind: string; name: string; controller?: boolean };
  createdNs?: bigint;
  deletionNs?: bigint;
  phase?: string;
  hostNetwork?: boolean;
}

function pod(o: PodOptions): Pod {
  const metadata: Record<string, unknown> = {
    name: o.name,
    namespace: o.namespace ?? "shop",
    uid: o.uid ?? `uid-${o.name}`,
    labels: o.labels ?? {},
    creationTimestamp: rfc3339(o.createdNs ?? at(0)),
  };
  if (o.owner) metadata.ownerReferences = [{ apiVersion: "apps/v1", uid: `uid-${o.owner.name}`, controller: o.owner.controller ?? true, kind: o.owner.kind, name: o.owner.name }];
  if (o.deletionNs !== undefined) metadata.deletionTimestamp = rfc3339(o.deletionNs);
  const ips = o.ips ?? [];
  const status: Record<string, unknown> = { phase: o.phase ?? "Running", podIPs: ips.map((ip) => ({ ip })) };
  if (ips[0] !== undefined) status.podIP = ips[0];
  const parsed = object({
    apiVersion: "v1",
    kind: "Pod",
    metadata,
    spec: { nodeName: o.node ?? "node-1", hostNetwork: o.hostNetwork ?? false, containers: [{ name: "main" }] },
    status,
  });
  if (parsed.kind !== "Pod") throw new Error("expected a Pod");
  return parsed;
}

function workload(kind: string, name: string, owner?: { kind: string; name: string }, apiVersion = "apps/v1"): KubeObject {
  const metadata: Record<string, unknown> = { name, namespace: "shop", uid: `uid-${name}` };
  if (owner) metadata.ownerReferences = [{ apiVersion, kind: owner.kind, name: owner.name, uid: `uid-${owner.name}`, controller: true }];
  return object({ apiVersion, kind, metadata });
}

const upsert = (...objects: KubeObject[]): ObjectEvent[] => objects.map((o) => ({ type: "upsert", object: o }));
const remove = (...objects: KubeObject[]): ObjectEvent[] => objects.map((o) => ({ type: "delete", object: o }));

const service = object({
  apiVersion: "v1", kind: "Service", metadata: { name: "cart", namespace: "shop" },
  spec: { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10", "fd00:96::a"], selector: { app: "cart" }, ports: [{ port: 80, targetPort: 8080 }] },
});
const node1 = object({
  apiVersion: "v1", kind: "Node", metadata: { name: "node-1" },
  status: { addresses: [{ type: "InternalIP", address: "10.0.0.11" }, { type: "Hostname", address: "node-1" }] },
});

function record(source: string, destination: string, startNs: bigint, local?: Partial<Endpoint>): FlowRecord {
  const empty: Endpoint = { ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false };
  return {
    startTime: { seconds: startNs / SECOND, nanos: Number(startNs % SECOND) },
    endTime: { seconds: startNs / SECOND + 1n, nanos: 0 },
    node: "node-1",
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD,
    reporter: 1,
    interface: "veth1",
    ifindex: 7,
    ip: { source, destination, version: 1 },
    l4: undefined,
    packets: 1n,
    bytes: 60n,
    source: local ? { ...empty, ...local } : undefined,
    destination: undefined,
    verdict: 1,
    verdictReason: 0,
    attribution: undefined,
    sequence: 1n,
  };
}

describe("ClusterState.resolve", () => {
  const cart = pod({ name: "cart-7d9f8b6c5d-x2x4z", ips: ["10.244.1.5", "fd00:10:244:1::5"], labels: { app: "cart", "pod-template-hash": "7d9f8b6c5d" }, owner: { kind: "ReplicaSet", name: "cart-7d9f8b6c5d" } });

  function cluster(): ClusterState {
    const state = new ClusterState();
    state.apply(upsert(node1, service, cart), at(10));
    return state;
  }

  it("names a pod address with namespace, labels, workload and node, for IPv4 and IPv6", () => {
    const state = cluster();
    const expected = {
      namespace: "shop", podName: "cart-7d9f8b6c5d-x2x4z", podUid: "uid-cart-7d9f8b6c5d-x2x4z",
      labels: { app: "cart", "pod-template-hash": "7d9f8b6c5d" }, workloadKind: "Deployment", workloadName: "cart",
      node: "node-1", service: "", world: false,
    };
    expect(state.resolve("10.244.1.5", at(20))).toEqual({ ip: "10.244.1.5", ...expected });
    expect(state.resolve("fd00:10:244:1::5", at(20))).toEqual({ ip: "fd00:10:244:1::5", ...expected });
    // Before the pod existed, its address was nobody's.
    expect(state.resolve("10.244.1.5", at(-5)).world).toBe(true);
  });

  it("names a Service ClusterIP, a node address, and the world", () => {
    const state = cluster();
    expect(state.resolve("10.96.0.10", at(20))).toMatchObject({ ip: "10.96.0.10", namespace: "shop", service: "shop/cart", podName: "", world: false });
    expect(state.resolve("fd00:96::a", at(20)).service).toBe("shop/cart");
    expect(state.resolve("10.0.0.11", at(20))).toMatchObject({ ip: "10.0.0.11", node: "node-1", namespace: "", world: false });
    expect(state.resolve("93.184.216.34", at(20))).toMatchObject({ ip: "93.184.216.34", world: true, namespace: "", podName: "" });
  });

  it("gives a hostNetwork pod's address to its node, not to the pod", () => {
    const state = cluster();
    state.apply(upsert(pod({ name: "kube-proxy-abcde", ips: ["10.0.0.11"], hostNetwork: true, owner: { kind: "DaemonSet", name: "kube-proxy" } })), at(11));
    expect(state.resolve("10.0.0.11", at(20))).toMatchObject({ node: "node-1", podName: "" });
  });

  it("ends a lease when the pod finishes, and forgets leases after the retention", () => {
    const state = new ClusterState({ leaseRetentionNs: 100n * SECOND });
    const job = pod({ name: "batch-1", ips: ["10.244.1.9"] });
    state.apply(upsert(job), at(1));
    state.apply(upsert(pod({ name: "batch-1", ips: ["10.244.1.9"], phase: "Succeeded" })), at(30));
    expect(state.resolve("10.244.1.9", at(29)).podName).toBe("batch-1");
    expect(state.resolve("10.244.1.9", at(30)).world).toBe(true);
    expect(state.leases("10.244.1.9")).toHaveLength(1);

    state.apply([], at(200));
    expect(state.leases("10.244.1.9")).toHaveLength(0);
    expect(state.resolve("10.244.1.9", at(29)).world).toBe(true);
  });
});

describe("ClusterState.workloadOf", () => {
  const state = new ClusterState();
  state.apply(upsert(
    workload("Deployment", "cart"),
    workload("ReplicaSet", "cart-7d9f8b6c5d", { kind: "Deployment", name: "cart" }),
    workload("CronJob", "nightly", undefined, "batch/v1"),
    workload("Job", "nightly-28590720", { kind: "CronJob", name: "nightly" }, "batch/v1"),
  ), at(0));

  it("finds the Deployment through the ReplicaSet object", () => {
    expect(state.workloadOf(pod({ name: "cart-7d9f8b6c5d-x2x4z", labels: { "pod-template-hash": "7d9f8b6c5d" }, owner: { kind: "ReplicaSet", name: "cart-7d9f8b6c5d" } })))
      .toEqual({ kind: "Deployment", name: "cart" });
  });

  it("infers the Deployment from pod-template-hash when the ReplicaSet is unknown", () => {
    expect(state.workloadOf(pod({ name: "web-5c9b7d8f4-abcde", labels: { "pod-template-hash": "5c9b7d8f4" }, owner: { kind: "ReplicaSet", name: "web-5c9b7d8f4" } })))
      .toEqual({ kind: "Deployment", name: "web" });
    // Without the label there is nothing to strip: the ReplicaSet is the workload.
    expect(state.workloadOf(pod({ name: "rs-only-abcde", owner: { kind: "ReplicaSet", name: "rs-only" } })))
      .toEqual({ kind: "ReplicaSet", name: "rs-only" });
  });

  it("names StatefulSet, DaemonSet, CronJob (through its Job), Job and bare pods", () => {
    expect(state.workloadOf(pod({ name: "db-0", owner: { kind: "StatefulSet", name: "db" } }))).toEqual({ kind: "StatefulSet", name: "db" });
    expect(state.workloadOf(pod({ name: "agent-x7k2p", owner: { kind: "DaemonSet", name: "agent" } }))).toEqual({ kind: "DaemonSet", name: "agent" });
    expect(state.workloadOf(pod({ name: "nightly-28590720-q8w2z", owner: { kind: "Job", name: "nightly-28590720" } }))).toEqual({ kind: "CronJob", name: "nightly" });
    expect(state.workloadOf(pod({ name: "migrate-q8w2z", owner: { kind: "Job", name: "migrate" } }))).toEqual({ kind: "Job", name: "migrate" });
    expect(state.workloadOf(pod({ name: "debug" }))).toEqual({ kind: "Pod", name: "debug" });
  });

  it("uses the first workload owner when no reference is marked controller (hand-written manifests)", () => {
    expect(state.workloadOf(pod({ name: "db-1", owner: { kind: "StatefulSet", name: "db", controller: false } }))).toEqual({ kind: "StatefulSet", name: "db" });
  });

  it("renames a running pod's workload when its ReplicaSet object arrives later", () => {
    const s = new ClusterState();
    const p = pod({ name: "api-abc12-zzzzz", ips: ["10.244.1.20"], owner: { kind: "ReplicaSet", name: "api-abc12" } });
    s.apply(upsert(p), at(0));
    expect(s.resolve("10.244.1.20", at(5))).toMatchObject({ workloadKind: "ReplicaSet", workloadName: "api-abc12" });
    s.apply(upsert(workload("ReplicaSet", "api-abc12", { kind: "Deployment", name: "api" })), at(6));
    expect(s.resolve("10.244.1.20", at(7))).toMatchObject({ workloadKind: "Deployment", workloadName: "api" });
  });
});

describe("IP reuse", () => {
  const ip = "10.244.1.5";
  const t1 = at(100);
  const t2 = at(200);
  const t3 = at(260);
  const podA = pod({ name: "cart-a", uid: "uid-a", ips: [ip], createdNs: t1, labels: { app: "cart" } });
  const podB = pod({ name: "search-b", uid: "uid-b", ips: [ip], createdNs: t3, labels: { app: "search" } });

  function reused(): ClusterState {
    const state = new ClusterState();
    state.apply(upsert(podA), t1 + 3n * SECOND);
    state.apply(remove(podA), t2);
    state.apply(upsert(podB), t3 + 2n * SECOND);
    return state;
  }

  it("resolves each time to the pod that held the address then", () => {
    const state = reused();
    expect(state.resolve(ip, t1).podUid).toBe("uid-a");
    expect(state.resolve(ip, t2 - 1n).podUid).toBe("uid-a");
    expect(state.resolve(ip, t2).world).toBe(true);
    expect(state.resolve(ip, t3 - 1n).world).toBe(true);
    expect(state.resolve(ip, t3).podUid).toBe("uid-b");
    expect(state.resolve(ip, at(10_000)).podUid).toBe("uid-b");
    expect(state.leases(ip).map((l) => [l.podUid, l.fromNs, l.toNs])).toEqual([["uid-a", t1, t2], ["uid-b", t3, undefined]]);
  });

  it("enriches records by their start time, also when the cache held the other pod", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(podA), t1 + 3n * SECOND);
    // Warm the cache with pod A before the address is reused.
    expect(enricher.enrich(record("10.244.2.2", ip, t1 + 5n * SECOND)).destination?.podName).toBe("cart-a");
    state.apply(remove(podA), t2);
    state.apply(upsert(podB), t3 + 2n * SECOND);

    const names = [t1 + 1n, t2 - 1n, t2 + 1n, t3, t3 + 1000n * SECOND, t1 + 7n * SECOND].map((t) => {
      const r = enricher.enrich(record("10.244.2.2", ip, t));
      return r.destination?.world ? "world" : r.destination?.podName;
    });
    expect(names).toEqual(["cart-a", "cart-a", "world", "search-b", "search-b", "cart-a"]);
  });

  it("prefers the newer pod when the old pod's deletion is seen late", () => {
    const state = new ClusterState();
    state.apply(upsert(podA), t1);
    // B shows up with the address while A still looks alive; A's delete arrives later.
    state.apply(upsert(podB), t3 + SECOND);
    state.apply(remove(podA), t3 + 30n * SECOND);
    expect(state.resolve(ip, t3 - 1n).podUid).toBe("uid-a");
    expect(state.resolve(ip, t3).podUid).toBe("uid-b");
    expect(state.resolve(ip, t3 + 10n * SECOND).podUid).toBe("uid-b");
  });

  it("ends a deleted pod's lease at its deletionTimestamp when that is earlier than the observed delete", () => {
    const state = new ClusterState();
    state.apply(upsert(podA), t1);
    const terminating = pod({ name: "cart-a", uid: "uid-a", ips: [ip], createdNs: t1, deletionNs: t2 });
    state.apply(remove(terminating), t2 + 20n * SECOND);
    expect(state.resolve(ip, t2 - 1n).podUid).toBe("uid-a");
    expect(state.resolve(ip, t2).world).toBe(true);
  });

  it("does not give a replacement the address before its predecessor was seen gone", () => {
    // B was created (t1 + 50 s) while A was still terminating; A's delete was seen at t2,
    // and only afterwards did B show up with A's address.
    const replacement = pod({ name: "search-b", uid: "uid-b", ips: [ip], createdNs: t1 + 50n * SECOND });
    const state = new ClusterState();
    state.apply(upsert(podA), t1);
    state.apply(remove(podA), t2);
    state.apply(upsert(replacement), t3);
    expect(state.resolve(ip, t1 + 60n * SECOND).podUid).toBe("uid-a");
    expect(state.resolve(ip, t2).podUid).toBe("uid-b");
  });
});

describe("Enricher", () => {
  const cart = pod({ name: "cart-7d9f8b6c5d-x2x4z", uid: "uid-cart", ips: ["10.244.1.5"], labels: { app: "cart", "pod-template-hash": "7d9f8b6c5d" }, owner: { kind: "ReplicaSet", name: "cart-7d9f8b6c5d" } });
  const db = pod({ name: "db-0", uid: "uid-db", ips: ["10.244.2.7"], node: "node-2", labels: { app: "db" }, owner: { kind: "StatefulSet", name: "db" } });

  it("completes a local end that carries only a podUid from the pod, even after the pod was deleted", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(node1, service, cart, db), at(0));
    state.apply(remove(cart), at(50));

    const r = enricher.enrich(record("10.244.1.5", "10.244.2.7", at(40), { podUid: "uid-cart" }));
    expect(r.source).toMatchObject({
      ip: "10.244.1.5", namespace: "shop", podName: "cart-7d9f8b6c5d-x2x4z", podUid: "uid-cart",
      labels: { app: "cart", "pod-template-hash": "7d9f8b6c5d" }, workloadKind: "Deployment", workloadName: "cart", node: "node-1",
    });
    expect(r.destination).toMatchObject({ ip: "10.244.2.7", podName: "db-0", workloadKind: "StatefulSet", workloadName: "db", node: "node-2" });
  });

  it("names a SPOOFED record's source after the sending pod the agent named, never after the forged address's owner", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(node1, service, cart, db), at(0));
    // cart forges db's address; the agent named the sender by its veth (cart, own address).
    const named = record("10.244.2.7", "10.244.1.9", at(5), { podUid: "uid-cart", ip: "10.244.1.5" });
    named.verdictReason = VerdictReason.VERDICT_REASON_SPOOFED;
    enricher.enrich(named);
    expect(named.source).toMatchObject({ ip: "10.244.1.5", podName: "cart-7d9f8b6c5d-x2x4z", namespace: "shop" });
    expect(named.ip?.source, "the forged address stays in the record").toBe("10.244.2.7");
    // Not named (the agent did not know the pod): left unresolved rather than db's.
    const unnamed = record("10.244.2.7", "10.244.1.9", at(5));
    unnamed.verdictReason = VerdictReason.VERDICT_REASON_SPOOFED;
    expect(enricher.enrich(unnamed).source).toBeUndefined();
    // The same record without SPOOFED is db's, as before.
    expect(enricher.enrich(record("10.244.2.7", "10.244.1.9", at(5))).source).toMatchObject({ podName: "db-0" });
  });

  it("completes the destination for records observed entering the pod, and names Service, node and world ends", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(node1, service, cart, db), at(0));
    const toPod = record("10.0.0.11", "10.244.2.7", at(5));
    toPod.point = ObservationPoint.OBSERVATION_POINT_TO_POD;
    toPod.destination = { ip: "", namespace: "", podName: "", podUid: "uid-db", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false };
    enricher.enrich(toPod);
    expect(toPod.destination).toMatchObject({ ip: "10.244.2.7", podName: "db-0", labels: { app: "db" } });
    expect(toPod.source).toMatchObject({ ip: "10.0.0.11", node: "node-1", world: false });

    expect(enricher.enrich(record("10.244.1.5", "10.96.0.10", at(5))).destination).toMatchObject({ service: "shop/cart", namespace: "shop" });
    expect(enricher.enrich(record("10.244.1.5", "1.1.1.1", at(5))).destination).toMatchObject({ ip: "1.1.1.1", world: true });
  });

  it("stops answering from its cache when an address it knew as world becomes a pod or Service, or a pod's workload changes", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(db), at(0));
    const dst = (ip: string, t: bigint) => enricher.enrich(record("10.244.2.7", ip, t)).destination;
    expect(dst("10.244.1.30", at(10))?.world).toBe(true);

    state.apply(upsert(pod({ name: "web-abc12-zzzzz", uid: "uid-web", ips: ["10.244.1.30"], createdNs: at(5), owner: { kind: "ReplicaSet", name: "web-abc12" } })), at(11));
    expect(dst("10.244.1.30", at(10))).toMatchObject({ podName: "web-abc12-zzzzz", workloadKind: "ReplicaSet", workloadName: "web-abc12" });
    expect(dst("10.96.0.10", at(10))?.world).toBe(true);
    state.apply(upsert(service), at(12));
    expect(dst("10.96.0.10", at(10))?.service).toBe("shop/cart");

    state.apply(upsert(workload("ReplicaSet", "web-abc12", { kind: "Deployment", name: "web" })), at(13));
    expect(dst("10.244.1.30", at(10))).toMatchObject({ workloadKind: "Deployment", workloadName: "web" });
  });

  it("names a pod the control plane does not know from its address, never after the agent's naming", () => {
    const enricher = new Enricher(new ClusterState());
    const r = record("10.244.3.3", "1.1.1.1", at(5), { podUid: "uid-new", namespace: "payments", podName: "new-0" });
    expect(enricher.localEndProblem(r)).toBe("unknown_pod");
    expect(enricher.enrich(r).source).toMatchObject({ ip: "10.244.3.3", podUid: "", namespace: "", podName: "" });
  });

  describe("an agent is trusted only for pods of its own node", () => {
    function enricher(): Enricher {
      const state = new ClusterState();
      state.apply(upsert(node1, service, cart, db,
        pod({ name: "new-0", uid: "uid-new", labels: { app: "new" } })), at(0));
      return new Enricher(state);
    }

    it("accepts node-1's agent naming cart (node-1) under its address, and a new pod with no address yet", () => {
      const e = enricher();
      expect(e.localEndProblem(record("10.244.1.5", "10.244.2.7", at(5), { podUid: "uid-cart" }))).toBeUndefined();
      expect(e.localEndProblem(record("10.244.1.5", "10.244.2.7", at(5)))).toBeUndefined();
      const fresh = record("10.244.1.77", "10.244.2.7", at(5), { podUid: "uid-new" });
      expect(e.localEndProblem(fresh)).toBeUndefined();
      expect(e.enrich(fresh).source).toMatchObject({ ip: "10.244.1.77", podName: "new-0", labels: { app: "new" } });
    });

    it("refuses node-1's agent naming db (node-2) as the sender, by uid or by its address", () => {
      const e = enricher();
      const byUid = record("10.244.2.7", "10.244.1.5", at(5), { podUid: "uid-db", namespace: "shop", podName: "db-0" });
      expect(e.localEndProblem(byUid)).toBe("foreign_pod");
      expect(e.localEndProblem(record("10.244.2.7", "10.244.1.5", at(5)))).toBe("foreign_address");
      const toPod = record("10.244.1.5", "10.244.2.7", at(5));
      toPod.point = ObservationPoint.OBSERVATION_POINT_TO_POD;
      expect(e.localEndProblem(toPod), "entering db's veth on node-1").toBe("foreign_address");
    });

    it("refuses node-1's agent naming cart under an address cart never had", () => {
      const r = record("10.244.2.7", "10.244.1.9", at(5), { podUid: "uid-cart" });
      expect(enricher().localEndProblem(r)).toBe("foreign_address");
    });

    it("names the far end from its address whatever the agent wrote there", () => {
      const e = enricher();
      const r = record("10.244.1.5", "1.1.1.1", at(5), { podUid: "uid-cart" });
      r.destination = { ip: "1.1.1.1", namespace: "shop", podName: "db-0", podUid: "uid-db", labels: { app: "db" }, workloadKind: "", workloadName: "", node: "node-2", service: "", world: false };
      expect(e.localEndProblem(r)).toBeUndefined();
      expect(e.enrich(r).destination).toMatchObject({ ip: "1.1.1.1", world: true, podUid: "", namespace: "" });
    });
  });

  it("shares one frozen Endpoint per pod and address, and replaces it when the pod's labels change", () => {
    const state = new ClusterState();
    const enricher = new Enricher(state);
    state.apply(upsert(cart, db), at(0));
    const a = enricher.enrich(record("10.244.2.7", "10.244.1.5", at(5))).destination;
    const b = enricher.enrich(record("10.244.2.7", "10.244.1.5", at(6))).destination;
    expect(a).toBe(b);
    expect(Object.isFrozen(a)).toBe(true);

    state.apply(upsert(pod({ name: "cart-7d9f8b6c5d-x2x4z", uid: "uid-cart", ips: ["10.244.1.5"], labels: { app: "cart", tier: "web" }, owner: { kind: "ReplicaSet", name: "cart-7d9f8b6c5d" } })), at(7));
    const c = enricher.enrich(record("10.244.2.7", "10.244.1.5", at(8))).destination;
    expect(c?.labels).toEqual({ app: "cart", tier: "web" });
    expect(a?.labels).toEqual({ app: "cart", "pod-template-hash": "7d9f8b6c5d" });
  });
});

describe("ClusterState queries", () => {
  const state = new ClusterState();
  state.apply(upsert(
    node1,
    pod({ name: "cart-1", ips: ["10.244.1.5", "fd00:10:244:1::5"], labels: { app: "cart" } }),
    pod({ name: "cart-2", node: "node-2", ips: ["10.244.2.5"], labels: { app: "cart" } }),
    pod({ name: "pending", labels: { app: "cart" } }),
    pod({ name: "done", ips: ["10.244.1.6"], phase: "Succeeded", labels: { app: "batch" } }),
    pod({ name: "proxy", ips: ["10.0.0.11"], hostNetwork: true }),
    pod({ name: "cart-1", namespace: "other", uid: "uid-other-cart-1", ips: ["10.244.1.7"], labels: { app: "cart" } }),
    service,
  ), at(0));

  it("lists a node's pods with their addresses for its agent", () => {
    expect(state.localEndpoints("node-1")).toEqual([
      { namespace: "other", podName: "cart-1", podUid: "uid-other-cart-1", ips: ["10.244.1.7"] },
      { namespace: "shop", podName: "cart-1", podUid: "uid-cart-1", ips: ["10.244.1.5", "fd00:10:244:1::5"] },
      { namespace: "shop", podName: "pending", podUid: "uid-pending", ips: [] },
    ]);
  });

  it("selects a Service's pods by label within its namespace", () => {
    expect(state.podsSelectedBy("shop", { app: "cart" }).map((p) => p.metadata.name)).toEqual(["cart-1", "cart-2", "pending"]);
    expect(state.podsSelectedBy("shop", {})).toEqual([]);
  });

  it("indexes Services by ClusterIP and nodes by address", () => {
    expect(state.serviceByClusterIP("10.96.0.10")?.metadata.name).toBe("cart");
    expect(state.nodeByAddress("10.0.0.11")?.metadata.name).toBe("node-1");
    state.apply(remove(service), at(1));
    expect(state.serviceByClusterIP("10.96.0.10")).toBeUndefined();
    expect(state.resolve("10.96.0.10", at(2)).world).toBe(true);
  });
});
