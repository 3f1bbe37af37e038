// The lab topology: which nodes, namespaces, pods, workloads and Services to build. Read
// from a YAML or JSON file (JSON is YAML) and checked field by field; cross references
// (a pod's namespace and node, a Service's named targetPort) are checked here too, so a
// topology that parses can be built.
import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { SERVICE_CIDR } from "./addressing.js";
import { FieldReader, fieldPath } from "../fields/reader.js";
import { expandTopology } from "./workloads.js";
import { readTrafficSpec, type TrafficSpec } from "./traffic.js";
import { parseKubeObject, type NetworkPolicy } from "../controlplane/metadata/objects.js";
import { policyFileName } from "./netpol-files.js";

export const PROTOCOLS = ["TCP", "UDP", "SCTP"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const WORKLOAD_KINDS = ["Deployment", "StatefulSet", "DaemonSet"] as const;
export type WorkloadKind = (typeof WORKLOAD_KINDS)[number];

export const MAX_NODES = 100;
export const MAX_REPLICAS = 100;

export interface ContainerPort {
  name?: string;
  port: number;
  protocol: Protocol;
}

export interface NamespaceSpec {
  name: string;
  labels: Record<string, string>;
  /** e.g. `bulkhead.io/mode: enforce`; absent when there are none. */
  annotations?: Record<string, string>;
}

export interface PodSpec {
  namespace: string;
  name: string;
  /** Absent: the lab places the pod round-robin over the nodes. */
  node?: string;
  labels: Record<string, string>;
  ports: ContainerPort[];
}

export interface WorkloadSpec {
  namespace: string;
  name: string;
  kind: WorkloadKind;
  /** DaemonSets run one pod per node and ignore this. */
  replicas: number;
  /** Selector and pod template labels at once. */
  labels: Record<string, string>;
  ports: ContainerPort[];
  /** Pin every replica to one node (not for DaemonSets). */
  node?: string;
}

export interface ServicePort {
  name?: string;
  port: number;
  /** A number, or the name of a container port resolved per backend pod. */
  targetPort: number | string;
  protocol: Protocol;
}

export interface ServiceSpec {
  namespace: string;
  name: string;
  selector: Record<string, string>;
  ports: ServicePort[];
  /** Absent: allocated from 10.96.0.0/16. */
  clusterIP?: string;
}

/** The lab's outside host: the pod application serves these ports there (TCP and UDP). */
export interface OutsideSpec {
  ports: ContainerPort[];
}

export interface Topology {
  nodes: string[];
  namespaces: NamespaceSpec[];
  pods: PodSpec[];
  workloads: WorkloadSpec[];
  services: ServiceSpec[];
  /** What the outside host (198.51.100.10, the world to the cluster) serves; absent: nothing. */
  outside?: OutsideSpec;
  /** Who talks to which Service, for `lab traffic` (and the demo). */
  traffic: TrafficSpec[];
  /** NetworkPolicies `up` writes into the manifests folder (netpol-files.ts). */
  policies: NetworkPolicy[];
}

/** Seven pods in two namespaces over two nodes; Services with numeric and named targetPorts. */
export const DEFAULT_TOPOLOGY = `# bulkhead lab default topology
nodes: 2
namespaces:
  - name: shop
    labels: {team: shop, env: lab}
  - name: monitoring
    labels: {team: platform}
workloads:
  - {namespace: shop, name: frontend, kind: Deployment, replicas: 2, labels: {app: frontend, tier: web}, ports: [{name: http, port: 8080}]}
  - {namespace: shop, name: cart, kind: Deployment, replicas: 1, labels: {app: cart, tier: backend}, ports: [{name: http, port: 8080}]}
  - {namespace: shop, name: catalog, kind: Deployment, replicas: 2, labels: {app: catalog, tier: backend}, ports: [{name: grpc, port: 9000}]}
  - {namespace: shop, name: redis, kind: StatefulSet, replicas: 1, labels: {app: redis, tier: data}, ports: [{name: redis, port: 6379}]}
  - {namespace: monitoring, name: prometheus, kind: StatefulSet, replicas: 1, labels: {app: prometheus}, ports: [{name: web, port: 9090}]}
services:
  - {namespace: shop, name: frontend, selector: {app: frontend}, ports: [{name: http, port: 80, targetPort: http}]}
  - {namespace: shop, name: cart, selector: {app: cart}, ports: [{name: http, port: 8080, targetPort: 8080}]}
  - {namespace: shop, name: catalog, selector: {app: catalog}, ports: [{name: grpc, port: 9000, targetPort: grpc}]}
  - {namespace: shop, name: redis, selector: {app: redis}, ports: [{name: redis, port: 6379, targetPort: 6379}]}
  - {namespace: monitoring, name: prometheus, selector: {app: prometheus}, ports: [{name: web, port: 9090, targetPort: web}]}
traffic:
  - {from: {namespace: shop, labels: {app: frontend}}, to: shop/cart, everyMs: 1000, size: 200}
  - {from: {namespace: shop, labels: {app: frontend}}, to: shop/catalog, everyMs: 700, size: 120}
  - {from: {namespace: shop, labels: {app: cart}}, to: shop/redis, everyMs: 500, size: 64}
  - {from: {namespace: shop, labels: {app: catalog}}, to: shop/redis, everyMs: 2000, size: 64}
  - {from: {namespace: monitoring, labels: {app: prometheus}}, to: shop/frontend, everyMs: 5000, size: 32}
  - {from: {namespace: monitoring, labels: {app: prometheus}}, to: shop/cart, everyMs: 5000, size: 32}
  - {from: {namespace: monitoring, labels: {app: prometheus}}, to: shop/catalog, everyMs: 5000, size: 32}
`;

export interface ParseOptions {
  /** Replaces the topology's `nodes` with node1..nodeN (the CLI's --nodes). */
  nodes?: number;
}

export async function loadTopology(file: string, opts: ParseOptions = {}): Promise<Topology> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new Error(`topology ${file}: cannot read: ${(err as Error).message}`);
  }
  return parseTopology(text, file, opts);
}

export function defaultTopology(opts: ParseOptions = {}): Topology {
  return parseTopology(DEFAULT_TOPOLOGY, "default topology", opts);
}

export function parseTopology(text: string, source: string, opts: ParseOptions = {}): Topology {
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true });
  } catch (err) {
    throw new Error(`${source}: not valid YAML or JSON: ${(err as Error).message}`);
  }
  const r = new FieldReader(source);
  const top = r.map(doc ?? {}, "", ["nodes", "namespaces", "pods", "workloads", "services", "outside", "traffic", "policies"]);

  const nodes = opts.nodes !== undefined ? nodeNames(r.int(opts.nodes, "--nodes", 1, MAX_NODES))
    : top.nodes === undefined ? nodeNames(2) : readNodes(r, top.nodes);

  const namespaces = r.optionalList(top.namespaces, "namespaces")
    .map((v, i) => readNamespaceSpec(r, v, fieldPath("namespaces", i)));
  unique(r, namespaces, "namespaces", (ns) => ns.name, "namespace");
  if (!namespaces.some((ns) => ns.name === "default")) namespaces.unshift({ name: "default", labels: {} });

  const pods = r.optionalList(top.pods, "pods").map((v, i) => readPodSpec(r, v, fieldPath("pods", i)));
  const workloads = r.optionalList(top.workloads, "workloads")
    .map((v, i) => readWorkloadSpec(r, v, fieldPath("workloads", i)));
  const services = r.optionalList(top.services, "services")
    .map((v, i) => readServiceSpec(r, v, fieldPath("services", i)));

  const nsNames = new Set(namespaces.map((ns) => ns.name));
  const checkRefs = (kind: string, items: { namespace: string; node?: string }[]) => items.forEach((item, i) => {
    if (!nsNames.has(item.namespace)) {
      r.fail(fieldPath(fieldPath(kind, i), "namespace"), `namespace "${item.namespace}" is not in namespaces (declared: ${[...nsNames].join(", ")})`);
    }
    if (item.node !== undefined && !nodes.includes(item.node)) {
      r.fail(fieldPath(fieldPath(kind, i), "node"), `node "${item.node}" is not in nodes (${nodes.join(", ")})`);
    }
  });
  checkRefs("pods", pods);
  checkRefs("workloads", workloads);
  checkRefs("services", services);
  unique(r, pods, "pods", (p) => `${p.namespace}/${p.name}`, "pod");
  unique(r, workloads, "workloads", (w) => `${w.namespace}/${w.name}`, "workload");
  unique(r, services, "services", (s) => `${s.namespace}/${s.name}`, "service");
  unique(r, services, "services", (s) => s.clusterIP, "clusterIP");
  const outside = top.outside === undefined ? undefined : readOutside(r, top.outside, "outside");
  const traffic = r.optionalList(top.traffic, "traffic").map((v, i) => readTrafficSpec(r, v, fieldPath("traffic", i)));
  traffic.forEach((t, i) => {
    if (t.to.kind !== "outside") return;
    const ports = outside?.ports ?? [];
    if (ports.length === 0) r.fail(fieldPath(fieldPath("traffic", i), "to"), "the outside host serves no ports: give them in outside.ports");
    if (t.port !== undefined && !ports.some((p) => p.port === t.port)) {
      r.fail(fieldPath(fieldPath("traffic", i), "port"), `the outside host serves no port ${t.port} (outside.ports: ${ports.map((p) => `${p.port}/${p.protocol}`).join(", ")})`);
    }
  });
  const policies = r.optionalList(top.policies, "policies").map((v, i) => readPolicy(r, v, fieldPath("policies", i)));
  checkRefs("policies", policies.map((p) => ({ namespace: p.metadata.namespace })));
  unique(r, policies, "policies", (p) => `${p.metadata.namespace}/${p.metadata.name}`, "policy");
  const topology: Topology = { nodes, namespaces, pods, workloads, services, traffic, policies };
  if (outside !== undefined) topology.outside = outside;
  expandTopology(topology, () => "", "", source); // generated pod names must not collide
  return topology;
}

function readOutside(r: FieldReader, value: unknown, field: string): OutsideSpec {
  const m = r.map(value, field, ["ports"]);
  const ports = readContainerPorts(r, m.ports ?? [], fieldPath(field, "ports"));
  ports.forEach((p, i) => {
    if (p.protocol === "SCTP") r.fail(fieldPath(fieldPath(fieldPath(field, "ports"), i), "protocol"), "the outside host's application serves TCP and UDP");
  });
  return { ports };
}

/** A NetworkPolicy as `kubectl apply` takes it (apiVersion, kind, metadata, spec). */
function readPolicy(r: FieldReader, value: unknown, field: string): NetworkPolicy {
  let parsed;
  try {
    parsed = parseKubeObject(value);
  } catch (err) {
    return r.fail(field, (err as Error).message);
  }
  if (parsed?.kind !== "NetworkPolicy") r.fail(field, "expected a NetworkPolicy (apiVersion: networking.k8s.io/v1, kind: NetworkPolicy)");
  try {
    policyFileName(parsed.metadata.namespace, parsed.metadata.name);
  } catch (err) {
    r.fail(fieldPath(field, "metadata"), (err as Error).message);
  }
  return parsed;
}

export function nodeNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `node${i + 1}`);
}

function readNodes(r: FieldReader, value: unknown): string[] {
  if (typeof value === "number") return nodeNames(r.int(value, "nodes", 1, MAX_NODES));
  const list = r.list(value, "nodes");
  if (list.length < 1 || list.length > MAX_NODES) r.fail("nodes", `expected 1-${MAX_NODES} node names, got ${list.length}`);
  const names = list.map((v, i) => readNodeName(r, v, fieldPath("nodes", i)));
  unique(r, names.map((name) => ({ name })), "nodes", (n) => n.name, "node");
  return names;
}

/** Node netns are `bh-<node>`, so names that would collide with the lab's own netns are refused. */
export function readNodeName(r: FieldReader, value: unknown, field: string): string {
  const name = r.dnsLabel(value, field, 40);
  if (name === "underlay" || name.startsWith("pod-")) {
    r.fail(field, `node name "${name}" is reserved (the lab's netns are bh-underlay and bh-pod-*)`);
  }
  return name;
}

export function readNamespaceSpec(r: FieldReader, value: unknown, field: string): NamespaceSpec {
  const m = r.map(value, field, ["name", "labels", "annotations"]);
  const spec: NamespaceSpec = { name: r.dnsLabel(m.name, fieldPath(field, "name")), labels: r.labels(m.labels, fieldPath(field, "labels")) };
  if (m.annotations !== undefined) spec.annotations = readAnnotations(r, m.annotations, fieldPath(field, "annotations"));
  return spec;
}

/** Kubernetes annotations: keys as label keys, any string values. */
export function readAnnotations(r: FieldReader, value: unknown, field: string): Record<string, string> {
  const m = r.map(value, field);
  const out: Record<string, string> = {};
  for (const [key, raw] of Object.entries(m)) {
    r.labelKey(key, fieldPath(field, key));
    out[key] = r.string(raw, fieldPath(field, key));
  }
  return out;
}

export function readPodSpec(r: FieldReader, value: unknown, field: string): PodSpec {
  const m = r.map(value, field, ["namespace", "name", "node", "labels", "ports"]);
  const spec: PodSpec = {
    namespace: r.dnsLabel(m.namespace, fieldPath(field, "namespace")),
    name: r.dnsLabel(m.name, fieldPath(field, "name")),
    labels: r.labels(m.labels, fieldPath(field, "labels")),
    ports: readContainerPorts(r, m.ports, fieldPath(field, "ports")),
  };
  if (m.node !== undefined) spec.node = readNodeName(r, m.node, fieldPath(field, "node"));
  return spec;
}

function readWorkloadSpec(r: FieldReader, value: unknown, field: string): WorkloadSpec {
  const m = r.map(value, field, ["namespace", "name", "kind", "replicas", "labels", "ports", "node"]);
  const kind = r.oneOf(m.kind, fieldPath(field, "kind"), WORKLOAD_KINDS);
  // Generated pod names must stay DNS labels: Deployment pods add 17 characters, StatefulSet
  // pods up to 3, DaemonSet pods 6.
  const maxName = kind === "Deployment" ? 46 : kind === "StatefulSet" ? 60 : 57;
  const spec: WorkloadSpec = {
    namespace: r.dnsLabel(m.namespace, fieldPath(field, "namespace")),
    name: r.dnsLabel(m.name, fieldPath(field, "name"), maxName),
    kind,
    replicas: 1,
    labels: r.labels(m.labels, fieldPath(field, "labels")),
    ports: readContainerPorts(r, m.ports, fieldPath(field, "ports")),
  };
  if (Object.keys(spec.labels).length === 0) r.fail(fieldPath(field, "labels"), "a workload needs at least one label (it is its selector)");
  if (kind === "DaemonSet") {
    if (m.replicas !== undefined) r.fail(fieldPath(field, "replicas"), "a DaemonSet runs one pod per node; remove replicas");
    if (m.node !== undefined) r.fail(fieldPath(field, "node"), "a DaemonSet runs on every node; remove node");
  } else if (m.replicas !== undefined) {
    spec.replicas = r.int(m.replicas, fieldPath(field, "replicas"), 0, MAX_REPLICAS);
  }
  if (m.node !== undefined) spec.node = readNodeName(r, m.node, fieldPath(field, "node"));
  return spec;
}

function readContainerPorts(r: FieldReader, value: unknown, field: string): ContainerPort[] {
  const ports = r.optionalList(value, field).map((v, i) => {
    const f = fieldPath(field, i);
    const m = r.map(v, f, ["name", "port", "containerPort", "protocol"]);
    if (m.port !== undefined && m.containerPort !== undefined) r.fail(f, "give port or containerPort, not both");
    const port: ContainerPort = {
      port: r.int(m.port ?? m.containerPort, fieldPath(f, m.port !== undefined ? "port" : "containerPort"), 1, 65535),
      protocol: m.protocol === undefined ? "TCP" : r.oneOf(m.protocol, fieldPath(f, "protocol"), PROTOCOLS),
    };
    if (m.name !== undefined) port.name = r.portName(m.name, fieldPath(f, "name"));
    return port;
  });
  unique(r, ports, field, (p) => p.name, "port name");
  unique(r, ports, field, (p) => `${p.port}/${p.protocol}`, "port");
  return ports;
}

export function readServiceSpec(r: FieldReader, value: unknown, field: string): ServiceSpec {
  const m = r.map(value, field, ["namespace", "name", "selector", "ports", "clusterIP"]);
  const spec: ServiceSpec = {
    namespace: r.dnsLabel(m.namespace, fieldPath(field, "namespace")),
    name: r.serviceName(m.name, fieldPath(field, "name")),
    selector: r.labels(m.selector, fieldPath(field, "selector")),
    ports: [],
  };
  if (Object.keys(spec.selector).length === 0) {
    r.fail(fieldPath(field, "selector"), "expected at least one label (a Service without a selector has no endpoints in the lab)");
  }
  const portsField = fieldPath(field, "ports");
  const list = r.list(m.ports, portsField);
  if (list.length === 0) r.fail(portsField, "a Service needs at least one port");
  spec.ports = list.map((v, i) => {
    const f = fieldPath(portsField, i);
    const pm = r.map(v, f, ["name", "port", "targetPort", "protocol"]);
    const port: ServicePort = {
      port: r.int(pm.port, fieldPath(f, "port"), 1, 65535),
      targetPort: 0,
      protocol: pm.protocol === undefined ? "TCP" : r.oneOf(pm.protocol, fieldPath(f, "protocol"), PROTOCOLS),
    };
    port.targetPort = pm.targetPort === undefined ? port.port
      : typeof pm.targetPort === "string" ? r.portName(pm.targetPort, fieldPath(f, "targetPort"))
      : r.int(pm.targetPort, fieldPath(f, "targetPort"), 1, 65535);
    if (pm.name !== undefined) port.name = r.portName(pm.name, fieldPath(f, "name"));
    else if (list.length > 1) r.fail(fieldPath(f, "name"), "every port of a multi-port Service needs a name");
    return port;
  });
  unique(r, spec.ports, portsField, (p) => `${p.port}/${p.protocol}`, "port");
  unique(r, spec.ports, portsField, (p) => p.name, "port name");
  if (m.clusterIP !== undefined) spec.clusterIP = readClusterIP(r, m.clusterIP, fieldPath(field, "clusterIP"));
  return spec;
}

function readClusterIP(r: FieldReader, value: unknown, field: string): string {
  const text = r.string(value, field);
  const m = /^10\.96\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const a = Number(m?.[1]);
  const b = Number(m?.[2]);
  if (!m || a > 255 || b > 255 || (a === 0 && b === 0) || (a === 255 && b === 255)) {
    r.fail(field, `expected an address in ${SERVICE_CIDR} (not its first or last), got ${JSON.stringify(text)}`);
  }
  return text;
}

/** `key` returning undefined leaves an item out (e.g. unnamed ports). */
function unique<T>(r: FieldReader, items: T[], field: string, key: (item: T) => string | undefined, what: string): void {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const k = key(item);
    if (k === undefined) return;
    const first = seen.get(k);
    if (first !== undefined) r.fail(fieldPath(field, i), `duplicate ${what} "${k}" (also at ${fieldPath(field, first)})`);
    seen.set(k, i);
  });
}
