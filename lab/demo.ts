// The demo cluster (topologies/demo.yaml) as an API for scripts/demo and tests: where the
// topology is, how to bring it up with traffic, which edges its flow map should show with
// which verdict, and one legitimate edge a test can deny and allow again.
import path from "node:path";
import { rm } from "node:fs/promises";
import { OUTSIDE } from "./addressing.js";
import { repoRoot } from "../config/install.js";
import { up, type Lab, type UpOptions } from "./lab.js";
import { manifestsDir } from "./manifests.js";
import { policyFileName, writePolicy } from "./netpol-files.js";
import { loadTopology } from "./topology.js";

export const DEMO_TOPOLOGY_FILE = path.join(repoRoot, "lab", "topologies", "demo.yaml");

/**
 * What the flow map shows on an edge once traffic has run: its packets forwarded, dropped,
 * or marked AUDIT; "sent" for requests to a Service whose verdict the backend gives (on the
 * client → backend edge), so they leave the client unjudged.
 */
export type EdgeVerdict = "forwarded" | "dropped" | "audit" | "sent";

/** A flow-map edge by the map's ids (controlplane/store/flowmap.ts): client → server, server port. */
export interface DemoEdge {
  source: string;
  destination: string;
  protocol: "TCP" | "UDP";
  port: number;
  verdict: EdgeVerdict;
  /** Why the topology makes it so. */
  why: string;
}

const workload = (ns: string, kind: string, name: string) => `workload:${ns}/${kind}/${name}`;
const service = (ns: string, name: string) => `service:${ns}/${name}`;
/** The lab's outside host as the map names it: any address outside the cluster is world. */
export const DEMO_OUTSIDE = `world:${OUTSIDE.ip}`;

export const DEMO_WORKLOADS = {
  loadgen: workload("loadgen", "Deployment", "loadgen"),
  frontend: workload("shop", "Deployment", "frontend"),
  catalog: workload("shop", "Deployment", "catalog"),
  cart: workload("shop", "Deployment", "cart"),
  payments: workload("shop", "Deployment", "payments"),
  datastore: workload("shop", "StatefulSet", "datastore"),
  debug: workload("shop", "Pod", "debug"),
  coredns: workload("kube-system", "Deployment", "coredns"),
  prometheus: workload("monitoring", "StatefulSet", "prometheus"),
} as const;

const W = DEMO_WORKLOADS;

/**
 * Service requests count on client → service (Service port), their replies on client →
 * backend workload (target port); a request dropped at the backend marks client → backend.
 */
function viaService(client: string, ns: string, svc: string, backend: string, protocol: "TCP" | "UDP", port: number, targetPort: number, why: string): DemoEdge[] {
  return [
    { source: client, destination: service(ns, svc), protocol, port, verdict: "forwarded", why },
    { source: client, destination: backend, protocol, port: targetPort, verdict: "forwarded", why },
  ];
}

/** Every edge the demo's traffic makes, with the verdict its policies give it. */
export const DEMO_EDGES: readonly DemoEdge[] = [
  ...viaService(W.loadgen, "shop", "frontend", W.frontend, "TCP", 80, 8080, "HTTP; shop/frontend-from-loadgen allows it"),
  ...viaService(W.frontend, "shop", "catalog", W.catalog, "TCP", 80, 8080, "HTTP; shop/catalog-from-frontend allows it"),
  ...viaService(W.frontend, "shop", "cart", W.cart, "TCP", 80, 8080, "HTTP; shop/cart-from-frontend allows it"),
  ...viaService(W.frontend, "shop", "payments", W.payments, "TCP", 80, 8080, "HTTP; shop/payments-from-frontend allows it"),
  ...viaService(W.cart, "shop", "datastore", W.datastore, "TCP", 6379, 6379, "TCP request/echo; shop/datastore-from-backends allows it"),
  ...viaService(W.catalog, "shop", "datastore", W.datastore, "TCP", 6379, 6379, "TCP request/echo; shop/datastore-from-backends allows it"),
  ...[W.frontend, W.catalog, W.cart, W.payments, W.datastore, W.debug].flatMap((client) =>
    viaService(client, "kube-system", "kube-dns", W.coredns, "UDP", 53, 53, "UDP via the ClusterIP; kube-system/kube-dns-from-cluster allows it")),
  ...[W.frontend, W.catalog, W.cart, W.payments, W.datastore].map((target): DemoEdge => ({
    source: W.prometheus, destination: target, protocol: "TCP", port: 9102, verdict: "forwarded",
    why: "HTTP GET /metrics by pod IP; shop/metrics-from-prometheus allows it",
  })),
  { source: W.prometheus, destination: W.coredns, protocol: "TCP", port: 9153, verdict: "audit",
    why: "kube-system audits, and kube-system/kube-dns-from-cluster allows only 53/UDP" },
  { source: W.debug, destination: service("shop", "datastore"), protocol: "TCP", port: 6379, verdict: "sent",
    why: "debug's SYNs to the ClusterIP; the datastore's veth drops them" },
  { source: W.debug, destination: W.datastore, protocol: "TCP", port: 6379, verdict: "dropped",
    why: "shop enforces default-deny-ingress; no policy lets debug reach the datastore" },
  { source: W.debug, destination: service("shop", "payments"), protocol: "TCP", port: 80, verdict: "sent",
    why: "debug's SYNs to the ClusterIP; payments' veth drops them" },
  { source: W.debug, destination: W.payments, protocol: "TCP", port: 8080, verdict: "dropped",
    why: "shop enforces default-deny-ingress; no policy lets debug reach payments" },
  { source: W.payments, destination: DEMO_OUTSIDE, protocol: "TCP", port: 443, verdict: "forwarded",
    why: "TCP request/echo to the payment provider (the lab's outside host); shop isolates ingress only" },
];

/**
 * A legitimate edge that one policy alone allows: without `policy` it is dropped while shop
 * enforces, and AUDIT while shop audits (`lab.setNamespaceAnnotations("shop",
 * { "bulkhead.io/mode": "audit" })`). The requests go to `service`; the verdict marks `edge`.
 */
export const DEMO_DENIABLE_EDGE = {
  policy: { namespace: "shop", name: "catalog-from-frontend" },
  service: { source: W.frontend, destination: service("shop", "catalog"), protocol: "TCP", port: 80 },
  edge: { source: W.frontend, destination: W.catalog, protocol: "TCP", port: 8080 },
} as const;

/** The demo lab: topologies/demo.yaml with its traffic running; `opts` may override anything. */
export function upDemo(opts: UpOptions = {}): Promise<Lab> {
  return up({ topology: DEMO_TOPOLOGY_FILE, traffic: true, ...opts });
}

/** Removes the policy that allows DEMO_DENIABLE_EDGE (its manifest file; the control plane recompiles). */
export async function denyDemoEdge(lab: Lab): Promise<void> {
  const { namespace, name } = DEMO_DENIABLE_EDGE.policy;
  await rm(path.join(manifestsDir(lab.stateDir), policyFileName(namespace, name)), { force: true });
}

/** Writes the policy back, as the demo topology has it. */
export async function allowDemoEdge(lab: Lab): Promise<void> {
  const { namespace, name } = DEMO_DENIABLE_EDGE.policy;
  const policy = (await loadTopology(DEMO_TOPOLOGY_FILE)).policies.find((p) => p.metadata.namespace === namespace && p.metadata.name === name);
  if (!policy) throw new Error(`${DEMO_TOPOLOGY_FILE}: no policy ${namespace}/${name}`);
  await writePolicy(manifestsDir(lab.stateDir), policy);
}
