// Metadata sources: Kubernetes objects parsed with errors that name object and field, and
// FolderSource following a folder of manifests (initial load, create/update/delete within
// a second, bad writes reported while the last good state stays in force).
import { mkdtemp, rename, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { canonicalIp, parseCidr } from "../addresses/ip.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { objectKey, parseDocument, parseKubeObject, type KubeObject, type Pod } from "../controlplane/metadata/objects.js";
import type { MetadataSink, ObjectEvent } from "../controlplane/metadata/source.js";

/** Keeps the objects the sink was told about, and every batch. */
class RecordingSink implements MetadataSink {
  readonly objects = new Map<string, KubeObject>();
  readonly batches: ObjectEvent[][] = [];

  apply(events: ObjectEvent[]): void {
    this.batches.push(events);
    for (const e of events) {
      if (e.type === "upsert") this.objects.set(objectKey(e.object), e.object);
      else this.objects.delete(objectKey(e.object));
    }
  }

  /** Milliseconds until `check` holds; fails after `timeoutMs`. */
  async until(check: () => boolean, timeoutMs = 3000): Promise<number> {
    const start = performance.now();
    while (!check()) {
      if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return performance.now() - start;
  }

  pod(namespace: string, name: string): Pod | undefined {
    const o = this.objects.get(`Pod/${namespace}/${name}`);
    return o?.kind === "Pod" ? o : undefined;
  }
}

const shopManifest = (cartLabel = "cart", containerPort: number | string = 8080) => `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  uid: ns-shop-uid
  labels: {team: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop, uid: dep-cart}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: cart-7d9f8b6c5d
  namespace: shop
  uid: rs-cart
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: cart, uid: dep-cart, controller: true}]
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-7d9f8b6c5d-x2x4z
  namespace: shop
  uid: pod-cart-1
  creationTimestamp: "2024-05-01T12:00:00Z"
  labels: {app: ${cartLabel}, pod-template-hash: 7d9f8b6c5d}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: cart-7d9f8b6c5d, uid: rs-cart, controller: true}]
spec:
  nodeName: node-1
  containers:
    - name: cart
      ports: [{name: http, containerPort: ${JSON.stringify(containerPort)}}]
status:
  phase: Running
  podIP: 10.244.1.5
  podIPs: [{ip: 10.244.1.5}, {ip: "fd00:10:244:1::5"}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop, uid: svc-cart}
spec:
  clusterIP: 10.96.0.10
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cart-abcde
  namespace: shop
  labels: {kubernetes.io/service-name: cart}
addressType: IPv4
endpoints:
  - addresses: [10.244.1.5]
    conditions: {ready: true}
    targetRef: {kind: Pod, namespace: shop, name: cart-7d9f8b6c5d-x2x4z, uid: pod-cart-1}
ports: [{name: http, port: 8080, protocol: TCP}]
`;

const nodesManifest = `
apiVersion: v1
kind: Node
metadata: {name: node-1, uid: node-1-uid, labels: {kubernetes.io/hostname: node-1}}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:10:244:1::/64"]}
status:
  addresses: [{type: InternalIP, address: 10.0.0.11}, {type: Hostname, address: node-1}]
---
apiVersion: v1
kind: Node
metadata: {name: node-2, uid: node-2-uid}
status:
  addresses: [{type: InternalIP, address: 10.0.0.12}]
---
# an unknown kind is not ours to judge
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {a: b}
`;

const podJson = (name: string, ip: string, app = "db") => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: "shop", uid: `uid-${name}`, labels: { app } },
  spec: { nodeName: "node-2", containers: [{ name: "db", ports: [{ containerPort: 5432 }] }] },
  status: { phase: "Running", podIP: ip },
});

describe("Kubernetes objects", () => {
  it("names the object and field of an invalid value", () => {
    const doc = podJson("cart-7d9f", "10.244.1.9");
    doc.spec.containers[0]!.ports = [{ containerPort: 8080 }, { containerPort: "http" as unknown as number }];
    expect(() => parseKubeObject(doc)).toThrow('Pod shop/cart-7d9f: spec.containers[0].ports[1].containerPort: expected an integer 1-65535, got "http"');
  });

  it("applies Kubernetes defaults and canonical addresses", () => {
    const pod = parseKubeObject({ ...podJson("db-0", "10.244.2.7"), status: { phase: "Running", podIPs: [{ ip: "FD00:10:244:0002:0:0:0:7" }] } });
    expect(pod?.kind).toBe("Pod");
    if (pod?.kind !== "Pod") return;
    expect(pod.spec.containers[0]?.ports[0]).toEqual({ name: "", containerPort: 5432, protocol: "TCP" });
    expect(pod.status.podIPs).toEqual(["fd00:10:244:2::7"]);
    expect(pod.status.podIP).toBe("fd00:10:244:2::7");
    const svc = parseKubeObject({ apiVersion: "v1", kind: "Service", metadata: { name: "web" }, spec: { clusterIP: "10.96.0.1", ports: [{ port: 80 }] } });
    if (svc?.kind !== "Service") throw new Error("expected a Service");
    expect(svc.metadata.namespace).toBe("default");
    expect(svc.spec.clusterIPs).toEqual(["10.96.0.1"]);
    expect(svc.spec.ports[0]).toEqual({ name: "", port: 80, targetPort: 80, protocol: "TCP" });
  });

  it("reads timestamps to the nanosecond, with offsets", () => {
    const ns = parseKubeObject({ apiVersion: "v1", kind: "Namespace", metadata: { name: "a", creationTimestamp: "2024-05-01T14:00:00.000000123+02:00" } });
    expect(ns?.metadata.creationTimestampNs).toBe(BigInt(Date.UTC(2024, 4, 1, 12)) * 1_000_000n + 123n);
  });

  it("ignores unknown kinds and kinds from other API groups, rejects documents without apiVersion, kind or name", () => {
    expect(parseKubeObject({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x" } })).toBeUndefined();
    expect(parseKubeObject({ apiVersion: "example.com/v1", kind: "Service", metadata: { name: "x" } })).toBeUndefined();
    expect(() => parseKubeObject({ kind: "Pod", metadata: { name: "x" } })).toThrow("document: apiVersion: expected a string, got nothing");
    expect(() => parseKubeObject({ apiVersion: "v1", metadata: { name: "x" } })).toThrow("document: kind: expected a string, got nothing");
    expect(() => parseKubeObject({ apiVersion: "v1", kind: "Pod", metadata: {} })).toThrow("document: metadata.name: expected a string, got nothing");
    expect(() => parseKubeObject({ apiVersion: "discovery.k8s.io/v1beta1", kind: "EndpointSlice", metadata: { name: "x" }, addressType: "IPv4" }))
      .toThrow("EndpointSlice default/x: apiVersion: discovery.k8s.io/v1beta1 is not supported");
  });

  it("reads the items of a List and names a bad item", () => {
    const list = { apiVersion: "v1", kind: "List", items: [podJson("a", "10.244.2.1"), { apiVersion: "v1", kind: "Secret", metadata: { name: "s" } }, podJson("b", "10.244.2.2")] };
    expect(parseDocument(list).map(objectKey)).toEqual(["Pod/shop/a", "Pod/shop/b"]);
    const bad = { ...list, items: [podJson("a", "10.244.2.1"), { ...podJson("b", "not-an-ip") }] };
    expect(() => parseDocument(bad)).toThrow('items[1]: Pod shop/b: status.podIP: expected an IPv4 or IPv6 address, got "not-an-ip"');
  });

  it("validates NetworkPolicy selectors, ports and ipBlocks, and defaults policyTypes", () => {
    const policy = (spec: Record<string, unknown>) => ({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "p", namespace: "shop" }, spec });
    const ok = parseKubeObject(policy({
      podSelector: { matchLabels: { app: "cart" } },
      ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: "team", operator: "In", values: ["shop"] }] }, podSelector: {} }], ports: [{ port: "http" }, { port: 8000, endPort: 8100 }] }],
      egress: [{ to: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.96.0.0/12"] } }] }],
    }));
    if (ok?.kind !== "NetworkPolicy") throw new Error("expected a NetworkPolicy");
    expect(ok.spec.policyTypes).toEqual(["Ingress", "Egress"]);
    expect(ok.spec.ingress[0]?.ports).toEqual([{ protocol: "TCP", port: "http" }, { protocol: "TCP", port: 8000, endPort: 8100 }]);
    expect(ok.spec.egress[0]?.to[0]?.ipBlock).toEqual({ cidr: "10.0.0.0/8", except: ["10.96.0.0/12"] });

    expect(() => parseKubeObject(policy({ podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["192.168.0.0/16"] } }] }] })))
      .toThrow("NetworkPolicy shop/p: spec.egress[0].to[0].ipBlock.except[0]: 192.168.0.0/16 must be a strict subset of cidr 10.0.0.0/8");
    expect(() => parseKubeObject(policy({ podSelector: {}, ingress: [{ ports: [{ port: "http", endPort: 90 }] }] })))
      .toThrow("NetworkPolicy shop/p: spec.ingress[0].ports[0].endPort: needs a numeric port to start the range");
    expect(() => parseKubeObject(policy({ podSelector: { matchExpressions: [{ key: "a", operator: "Exists", values: ["x"] }] } })))
      .toThrow("NetworkPolicy shop/p: spec.podSelector.matchExpressions[0].values: operator Exists takes no values");
    expect(() => parseKubeObject(policy({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8" }, podSelector: {} }] }] })))
      .toThrow("NetworkPolicy shop/p: spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector");
    expect(() => parseKubeObject(policy({ ingress: [] }))).toThrow("NetworkPolicy shop/p: spec.podSelector: missing");
  });

  it("writes addresses the way the agent does", () => {
    expect(canonicalIp("2001:DB8:0:0:1:0:0:1")).toBe("2001:db8::1:0:0:1");
    expect(canonicalIp("::ffff:10.0.0.1")).toBe("::ffff:a00:1");
    expect(canonicalIp("010.001.0.1")).toBe("10.1.0.1");
    expect(canonicalIp("1::2::3")).toBeUndefined();
    expect(canonicalIp("256.0.0.1")).toBeUndefined();
    expect(parseCidr("fd00::/129")).toBeUndefined();
  });
});

describe("FolderSource", () => {
  let dir: string;
  let source: FolderSource | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "bulkhead-metadata-"));
  });

  afterEach(async () => {
    await source?.stop();
    source = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function startSource(): Promise<RecordingSink> {
    const sink = new RecordingSink();
    source = new FolderSource({ dir });
    await source.start(sink);
    return sink;
  }

  it("loads every object of multi-document YAML and JSON files before start() resolves", async () => {
    await writeFile(path.join(dir, "ns-shop.yaml"), shopManifest());
    await writeFile(path.join(dir, "nodes.yaml"), nodesManifest);
    await writeFile(path.join(dir, "extra.json"), JSON.stringify({ apiVersion: "v1", kind: "List", items: [podJson("db-0", "10.244.2.7")] }));
    await writeFile(path.join(dir, "notes.txt"), "not a manifest");
    const sink = await startSource();
    expect([...sink.objects.keys()].sort()).toEqual([
      "Deployment/shop/cart", "EndpointSlice/shop/cart-abcde", "Namespace//shop", "Node//node-1", "Node//node-2",
      "Pod/shop/cart-7d9f8b6c5d-x2x4z", "Pod/shop/db-0", "ReplicaSet/shop/cart-7d9f8b6c5d", "Service/shop/cart",
    ]);
    expect(sink.batches).toHaveLength(1);
    expect(sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.status.podIPs).toEqual(["10.244.1.5", "fd00:10:244:1::5"]);
    expect(source?.errors()).toEqual([]);
  });

  it("picks up a created, updated and deleted file within a second, emitting only differences", async () => {
    await writeFile(path.join(dir, "nodes.yaml"), nodesManifest);
    const sink = await startSource();
    const batchesBefore = sink.batches.length;

    const file = path.join(dir, "ns-shop.yaml");
    await writeFile(file, shopManifest());
    const created = await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z") !== undefined);
    expect(created).toBeLessThanOrEqual(1500);
    // The nodes did not change, so they were not sent again.
    expect(sink.batches.slice(batchesBefore).flat().some((e) => e.object.kind === "Node")).toBe(false);

    const afterCreate = sink.batches.length;
    await writeFile(file, shopManifest("cart-v2"));
    const updated = await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.metadata.labels.app === "cart-v2");
    expect(updated).toBeLessThanOrEqual(1500);
    expect(sink.batches.slice(afterCreate).flat().map((e) => `${e.type} ${objectKey(e.object)}`)).toEqual(["upsert Pod/shop/cart-7d9f8b6c5d-x2x4z"]);

    await unlink(file);
    const deleted = await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z") === undefined);
    expect(deleted).toBeLessThanOrEqual(1500);
    expect(sink.objects.has("Service/shop/cart")).toBe(false);
    expect(sink.objects.has("Node//node-1")).toBe(true);
  });

  it("reports a YAML syntax error with file and document, keeps the file's last good objects, and clears the error when fixed", async () => {
    const file = path.join(dir, "ns-shop.yaml");
    await writeFile(file, shopManifest());
    const sink = await startSource();
    const batches = sink.batches.length;

    // Document 1 breaks; document 3 would relabel the pod if the file were applied.
    const broken = shopManifest("cart-broken").replace("metadata: {name: cart, namespace: shop, uid: dep-cart}", "metadata: {name: cart, namespace: shop");
    await writeFile(file, broken);
    await sink.until(() => (source?.errors().length ?? 0) > 0);
    const [error] = source?.errors() ?? [];
    expect(error).toMatchObject({ file: "ns-shop.yaml", document: 1 });
    expect(error?.message).toMatch(/^not valid YAML: .*line \d+, column \d+/);
    await source?.rescan();
    expect(sink.batches.length).toBe(batches);
    expect(sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.metadata.labels.app).toBe("cart");

    await writeFile(file, shopManifest("cart-fixed"));
    await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.metadata.labels.app === "cart-fixed");
    expect(source?.errors()).toEqual([]);
  });

  it("reports an invalid document (a string containerPort) by file, document and field, and keeps the last good objects", async () => {
    const file = path.join(dir, "ns-shop.yaml");
    await writeFile(file, shopManifest());
    const sink = await startSource();
    const batches = sink.batches.length;

    await writeFile(file, shopManifest("cart-v2", "http"));
    await sink.until(() => (source?.errors().length ?? 0) > 0);
    expect(source?.errors()).toEqual([{
      source: source?.name,
      file: "ns-shop.yaml",
      document: 3,
      message: 'Pod shop/cart-7d9f8b6c5d-x2x4z: spec.containers[0].ports[0].containerPort: expected an integer 1-65535, got "http"',
    }]);
    await source?.rescan();
    expect(sink.batches.length).toBe(batches);
    expect(sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.metadata.labels.app).toBe("cart");
    expect(sink.objects.has("Service/shop/cart")).toBe(true);

    await writeFile(file, shopManifest("cart-v2", 8081));
    await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.spec.containers[0]?.ports[0]?.containerPort === 8081);
    expect(source?.errors()).toEqual([]);
  });

  it("reads a file renamed into place, and never the temp file", async () => {
    const sink = await startSource();
    const tmp = path.join(dir, "ns-shop.yaml.tmp-1234");
    await writeFile(tmp, shopManifest());
    await source?.rescan();
    expect(sink.objects.size).toBe(0);

    await rename(tmp, path.join(dir, "ns-shop.yaml"));
    const ms = await sink.until(() => sink.objects.has("Pod/shop/cart-7d9f8b6c5d-x2x4z"));
    expect(ms).toBeLessThanOrEqual(1500);

    // A second atomic replace with different content is seen too (new inode, same name).
    await writeFile(tmp, shopManifest("cart-renamed"));
    await rename(tmp, path.join(dir, "ns-shop.yaml"));
    await sink.until(() => sink.pod("shop", "cart-7d9f8b6c5d-x2x4z")?.metadata.labels.app === "cart-renamed");
  });

  it("reports an object defined in two files and keeps the first holder's copy", async () => {
    await writeFile(path.join(dir, "a.yaml"), JSON.stringify(podJson("db-0", "10.244.2.7", "first")));
    const sink = await startSource();
    await writeFile(path.join(dir, "b.yaml"), JSON.stringify(podJson("db-0", "10.244.2.8", "second")));
    await sink.until(() => (source?.errors().length ?? 0) > 0);
    expect(source?.errors()[0]).toMatchObject({ file: "b.yaml", document: 0, message: "Pod shop/db-0 is also defined in a.yaml (document 0); this copy is ignored" });
    expect(sink.pod("shop", "db-0")?.metadata.labels.app).toBe("first");

    await unlink(path.join(dir, "a.yaml"));
    await sink.until(() => sink.pod("shop", "db-0")?.metadata.labels.app === "second");
    expect(source?.errors()).toEqual([]);
  });
});
