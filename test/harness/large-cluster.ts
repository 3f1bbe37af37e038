// A large synthetic cluster for policy compile benchmarks and scale tests: N namespaces of
// 5 Deployments × 2 pods (labels app, tier, pod-template-hash, version; container ports
// http 8080, metrics 9090, and grpc 9000 on api pods) on M nodes, and two policies per
// namespace: one isolating every pod for ingress (same namespace, the monitoring namespace
// on the named port "metrics", the ingress namespace on "http"; every 10th namespace also
// admits its team's /24 except one /28 by ipBlock), and one for the api tier with egress
// to the db tier, to the team's namespaces, and to the world on 443 except private ranges.
// Every object goes through the parser the control plane uses; `documents` keeps them as
// the manifests a folder or an API server would hold.
import { parseKubeObject, type KubeObject, type Namespace, type NetworkPolicy, type Node, type Pod } from "../../controlplane/metadata/objects.js";
import type { PolicyCluster } from "../../controlplane/policy/model.js";

const TIERS = ["web", "api", "db", "cache", "worker"];

export interface LargeClusterShape {
  namespaces: number;
  /** Pods per namespace: Deployments of two pods each (at most 10: five tiers). */
  podsPerNamespace: number;
  nodes: number;
}

export interface LargeCluster extends PolicyCluster {
  pods: Pod[];
  policies: NetworkPolicy[];
  /** Every object as its manifest (the input of parseKubeObject). */
  documents: Record<string, unknown>[];
}

export function namespaceName(i: number): string {
  return i === 0 ? "monitoring" : i === 1 ? "ingress" : `team-${i}`;
}

/** The manifest of `doc` parsed as the control plane parses it (a kept kind, or an error). */
function parse<T extends KubeObject>(doc: Record<string, unknown>, documents?: Record<string, unknown>[]): T {
  const object = parseKubeObject(doc);
  if (!object) throw new Error(`large cluster: not a kept kind: ${JSON.stringify(doc)}`);
  documents?.push(doc);
  return object as T;
}

export function largeCluster(shape: LargeClusterShape): LargeCluster {
  const documents: Record<string, unknown>[] = [];
  const namespaces: Namespace[] = [];
  const pods: Pod[] = [];
  const policies: NetworkPolicy[] = [];
  const nodes: Node[] = Array.from({ length: shape.nodes }, (_, n) => parse<Node>({
    apiVersion: "v1", kind: "Node", metadata: { name: `node-${n}` }, status: { addresses: [{ type: "InternalIP", address: `172.18.${n >> 8}.${(n & 255) + 2}` }] },
  }, documents));
  let podIndex = 0;
  for (let i = 0; i < shape.namespaces; i++) {
    const ns = namespaceName(i);
    const team = `t${i % 25}`;
    const role = i === 0 ? "monitoring" : i === 1 ? "ingress" : "app";
    namespaces.push(parse<Namespace>({
      apiVersion: "v1", kind: "Namespace",
      metadata: { name: ns, labels: { "kubernetes.io/metadata.name": ns, team, role, env: ["prod", "dev", "staging"][i % 3] } },
    }, documents));
    for (let p = 0; p < shape.podsPerNamespace; p++) {
      const deployment = Math.floor(p / 2);
      const tier = TIERS[deployment] ?? "web";
      const ports = [{ name: "http", containerPort: 8080 }, { name: "metrics", containerPort: 9090 }];
      if (tier === "api") ports.push({ name: "grpc", containerPort: 9000 });
      const ip = `10.244.${podIndex >> 8}.${podIndex & 255}`;
      pods.push(parse<Pod>({
        apiVersion: "v1", kind: "Pod",
        metadata: { name: `app-${deployment}-${p}`, namespace: ns, labels: { app: `app-${deployment}`, tier, "pod-template-hash": `h${i}x${deployment}`, version: "v1" } },
        spec: { nodeName: `node-${podIndex % shape.nodes}`, containers: [{ name: "main", ports }] },
        status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
      }, documents));
      podIndex++;
    }
    policies.push(namespacePolicy(i, ns, undefined, documents));
    policies.push(apiPolicy(ns, team, 5432, documents));
  }
  return { namespaces, pods, nodes, policies, documents };
}

/** Namespace `i`'s ingress isolation; `extraBlock` adds one more ipBlock peer. */
export function namespacePolicy(i: number, ns: string, extraBlock?: string, documents?: Record<string, unknown>[]): NetworkPolicy {
  const ingress: unknown[] = [
    { from: [{ podSelector: {} }] },
    { from: [{ namespaceSelector: { matchLabels: { role: "monitoring" } } }], ports: [{ port: "metrics" }] },
    { from: [{ namespaceSelector: { matchLabels: { role: "ingress" } } }], ports: [{ port: "http" }] },
  ];
  if (i % 10 === 0) {
    const net = (i * 7) % 20;
    ingress.push({ from: [{ ipBlock: { cidr: `10.244.${net}.0/24`, except: [`10.244.${net}.0/28`] } }], ports: [{ port: 8080 }] });
  }
  if (extraBlock !== undefined) ingress.push({ from: [{ ipBlock: { cidr: extraBlock } }] });
  return parse<NetworkPolicy>({
    apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
    metadata: { name: "default", namespace: ns },
    spec: { podSelector: {}, policyTypes: ["Ingress"], ingress },
  }, documents);
}

/** The api tier's policy of namespace `ns` (team `team`), its egress to the db tier on `dbPort`. */
export function apiPolicy(ns: string, team: string, dbPort: number, documents?: Record<string, unknown>[]): NetworkPolicy {
  return parse<NetworkPolicy>({
    apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
    metadata: { name: "api", namespace: ns },
    spec: {
      podSelector: { matchLabels: { tier: "api" } },
      policyTypes: ["Ingress", "Egress"],
      ingress: [{ from: [{ podSelector: { matchLabels: { tier: "web" } } }], ports: [{ port: "http" }, { port: "grpc" }] }],
      egress: [
        { to: [{ podSelector: { matchLabels: { tier: "db" } } }], ports: [{ port: dbPort }] },
        { to: [{ namespaceSelector: { matchLabels: { team } }, podSelector: { matchExpressions: [{ key: "tier", operator: "In", values: ["api", "cache"] }] } }] },
        { to: [{ ipBlock: { cidr: "0.0.0.0/0", except: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] } }], ports: [{ port: 443 }] },
      ],
    },
  }, documents);
}
