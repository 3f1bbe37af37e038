// The Kubernetes objects the control plane needs, parsed from unknown JSON (the output of
// the `yaml` package, or a Kubernetes API response). Only the fields the control plane
// uses are kept; those are validated as the API server would (shapes, ranges, label
// syntax), with Kubernetes' defaults applied (protocol TCP, targetPort = port, ...), so
// the rest of the control plane never sees a half-valid object. Addresses are canonical
// (see addresses.ts); timestamps are wall-clock nanoseconds.
import type { ParsedCidr } from "../../addresses/ip.js";
import { cidrContains } from "../../addresses/prefix.js";
import { describeValue, fieldPath, FieldError, FieldReader } from "../../fields/reader.js";
import { isNamespaceName } from "../../kubernetes/names.js";

/** Objects from the API server or manifests: unknown fields ignored, null as absent. */
const KUBERNETES = { nullIsAbsent: true } as const;

export type Protocol = "TCP" | "UDP" | "SCTP";
export const PROTOCOLS: readonly Protocol[] = ["TCP", "UDP", "SCTP"];

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  /** True for the managing controller; at most one reference has it. */
  controller: boolean;
}

export interface ObjectMeta {
  name: string;
  /** "" for cluster-scoped kinds (Namespace, Node); "default" when a manifest omits it. */
  namespace: string;
  /** "" when a hand-written manifest has none. */
  uid: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  ownerReferences: OwnerReference[];
  creationTimestampNs?: bigint;
  /** When graceful deletion must be complete (request time + grace period). */
  deletionTimestampNs?: bigint;
}

interface ObjectBase<K extends string> {
  kind: K;
  apiVersion: string;
  metadata: ObjectMeta;
}

export type Namespace = ObjectBase<"Namespace">;

export interface ContainerPort {
  /** "" for an unnamed port. */
  name: string;
  containerPort: number;
  protocol: Protocol;
}

export interface Container {
  name: string;
  ports: ContainerPort[];
}

export type PodPhase = "Pending" | "Running" | "Succeeded" | "Failed" | "Unknown";
export const POD_PHASES: readonly PodPhase[] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];

export interface Pod extends ObjectBase<"Pod"> {
  spec: {
    /** "" until scheduled. */
    nodeName: string;
    /** The pod shares its node's network namespace and addresses. */
    hostNetwork: boolean;
    containers: Container[];
  };
  status: {
    /** "Pending" when the manifest has no status. */
    phase: PodPhase;
    /** The primary address; "" until one is assigned. */
    podIP: string;
    /** Every address, primary first (status.podIPs, or [status.podIP] when only that is set). */
    podIPs: string[];
    hostIP: string;
  };
}

export type ServiceType = "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName";

export interface ServicePort {
  name: string;
  port: number;
  /** A container port number, or the name of a container port; defaults to `port`. */
  targetPort: number | string;
  protocol: Protocol;
  nodePort?: number;
}

export interface Service extends ObjectBase<"Service"> {
  spec: {
    type: ServiceType;
    /** The primary ClusterIP; "" when headless or not allocated. */
    clusterIP: string;
    /** Every ClusterIP (dual stack), primary first; empty when headless. */
    clusterIPs: string[];
    /** clusterIP: None. */
    headless: boolean;
    /** Empty: the Service selects no pods (its endpoints are managed by hand). */
    selector: Record<string, string>;
    ports: ServicePort[];
  };
}

export type EndpointAddressType = "IPv4" | "IPv6" | "FQDN";

export interface ObjectReference {
  kind: string;
  namespace: string;
  name: string;
  uid: string;
}

export interface SliceEndpoint {
  /** Canonical IPs for IPv4/IPv6 slices, names for FQDN slices. */
  addresses: string[];
  conditions: {
    /** An absent condition means unknown, which consumers treat as ready (API docs). */
    ready: boolean;
    serving: boolean;
    terminating: boolean;
  };
  targetRef?: ObjectReference;
  nodeName: string;
}

export interface EndpointPort {
  name: string;
  /** Absent: every port. */
  port?: number;
  protocol: Protocol;
  appProtocol?: string;
}

export interface EndpointSlice extends ObjectBase<"EndpointSlice"> {
  /** The kubernetes.io/service-name label; "" when missing. */
  serviceName: string;
  addressType: EndpointAddressType;
  endpoints: SliceEndpoint[];
  ports: EndpointPort[];
}

export interface NodeAddress {
  /** InternalIP, ExternalIP, Hostname, InternalDNS, ExternalDNS. */
  type: string;
  /** Canonical for InternalIP and ExternalIP; a name for the DNS types. */
  address: string;
}

export interface Node extends ObjectBase<"Node"> {
  spec: { podCIDRs: string[] };
  status: { addresses: NodeAddress[] };
}

export type SelectorOperator = "In" | "NotIn" | "Exists" | "DoesNotExist";

export interface LabelSelectorRequirement {
  key: string;
  operator: SelectorOperator;
  values: string[];
}

/** Empty (no labels, no expressions) selects everything. */
export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: LabelSelectorRequirement[];
}

export interface IPBlock {
  cidr: string;
  except: string[];
}

/** Exactly one of: ipBlock, or podSelector and/or namespaceSelector. */
export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IPBlock;
}

export interface NetworkPolicyPort {
  protocol: Protocol;
  /** Absent: every port. A string is a named container port. */
  port?: number | string;
  /** Last port of a range starting at `port` (then a number). */
  endPort?: number;
}

/** An empty peer or port list matches everything, as in the Kubernetes API. */
export interface NetworkPolicyIngressRule {
  from: NetworkPolicyPeer[];
  ports: NetworkPolicyPort[];
}

export interface NetworkPolicyEgressRule {
  to: NetworkPolicyPeer[];
  ports: NetworkPolicyPort[];
}

export type PolicyType = "Ingress" | "Egress";

export interface NetworkPolicy extends ObjectBase<"NetworkPolicy"> {
  spec: {
    podSelector: LabelSelector;
    /** Defaulted as the API server does: Ingress, plus Egress when egress rules exist. */
    policyTypes: PolicyType[];
    ingress: NetworkPolicyIngressRule[];
    egress: NetworkPolicyEgressRule[];
  };
}

export type WorkloadKind = "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "CronJob";
export const WORKLOAD_KINDS: readonly WorkloadKind[] = ["ReplicaSet", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"];

/** Controllers that own pods; only their metadata (owner chain) matters here. */
export type WorkloadObject = ObjectBase<WorkloadKind>;

/**
 * A ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, cluster-scoped). Its spec is
 * kept as written: the policy engine validates it as the CRD does (controlplane/policy/cnp.ts)
 * and names what is wrong in status, keeping the previous valid version.
 */
export interface ClusterNetworkPolicyObject extends ObjectBase<"ClusterNetworkPolicy"> {
  spec: Record<string, unknown>;
}

export type KubeObject = Namespace | Pod | Service | EndpointSlice | Node | NetworkPolicy | ClusterNetworkPolicyObject | WorkloadObject;
export type KubeKind = KubeObject["kind"];

/** The API group/version each kind must come from; a kind from another group is someone else's. */
const KIND_API: Record<KubeKind, { group: string; versions: readonly string[] }> = {
  Namespace: { group: "", versions: ["v1"] },
  Pod: { group: "", versions: ["v1"] },
  Service: { group: "", versions: ["v1"] },
  Node: { group: "", versions: ["v1"] },
  EndpointSlice: { group: "discovery.k8s.io", versions: ["v1"] },
  NetworkPolicy: { group: "networking.k8s.io", versions: ["v1"] },
  ClusterNetworkPolicy: { group: "policy.networking.k8s.io", versions: ["v1alpha2"] },
  ReplicaSet: { group: "apps", versions: ["v1"] },
  Deployment: { group: "apps", versions: ["v1"] },
  StatefulSet: { group: "apps", versions: ["v1"] },
  DaemonSet: { group: "apps", versions: ["v1"] },
  Job: { group: "batch", versions: ["v1"] },
  CronJob: { group: "batch", versions: ["v1"] },
};

const CLUSTER_SCOPED: ReadonlySet<KubeKind> = new Set(["Namespace", "Node", "ClusterNetworkPolicy"]);


/**
 * The order in which a batch applies upserts: what others refer to first (namespaces,
 * nodes, owners); deletes go in reverse. Every source sorts its batches by it.
 */
export const KIND_APPLY_ORDER: Readonly<Record<KubeKind, number>> = {
  Namespace: 0, Node: 1, CronJob: 2, Job: 3, Deployment: 4, ReplicaSet: 5, StatefulSet: 6, DaemonSet: 7,
  Pod: 8, Service: 9, EndpointSlice: 10, NetworkPolicy: 11, ClusterNetworkPolicy: 12,
};

/** Identity of an object: kind, namespace ("" when cluster-scoped) and name. */
export function objectKey(object: KubeObject): string {
  return `${object.kind}/${object.metadata.namespace}/${object.metadata.name}`;
}

/** "Pod shop/cart-7d9f", "Node node-1": how errors and logs name an object. */
export function objectName(object: KubeObject): string {
  const { namespace, name } = object.metadata;
  return namespace === "" ? `${object.kind} ${name}` : `${object.kind} ${namespace}/${name}`;
}

/** Equal for equal parsed objects, so that edits to fields the control plane ignores emit nothing. */
export function objectFingerprint(object: KubeObject): string {
  return JSON.stringify(object, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));
}

function isKnownKind(kind: string): kind is KubeKind {
  return Object.prototype.hasOwnProperty.call(KIND_API, kind);
}

/**
 * The objects in one document: none for a kind this control plane does not use, the items
 * of a `kind: List`, or the one object. Throws FieldError naming the object and field.
 */
export function parseDocument(doc: unknown): KubeObject[] {
  const r = new FieldReader("document", KUBERNETES);
  const top = r.map(doc, "");
  const kind = r.nonEmptyString(top.kind, "kind");
  r.nonEmptyString(top.apiVersion, "apiVersion");
  if (kind !== "List") {
    const object = parseKubeObject(doc);
    return object ? [object] : [];
  }
  const out: KubeObject[] = [];
  r.optionalList(top.items, "items").forEach((item, i) => {
    let object: KubeObject | undefined;
    try {
      const ir = new FieldReader(`List item ${i}`, KUBERNETES);
      const itemKind = ir.nonEmptyString(ir.map(item, "").kind, "kind");
      if (itemKind === "List") ir.fail("kind", "a List cannot contain a List");
      object = parseKubeObject(item);
    } catch (err) {
      if (err instanceof FieldError) throw new FieldError(`items[${i}]: ${err.source}`, err.field, err.detail);
      throw err;
    }
    if (object) out.push(object);
  });
  return out;
}

/** One object, or undefined for a kind (or API group) this control plane does not use. */
export function parseKubeObject(doc: unknown): KubeObject | undefined {
  const r = new FieldReader("document", KUBERNETES);
  const top = r.map(doc, "");
  const kind = r.nonEmptyString(top.kind, "kind");
  const apiVersion = r.nonEmptyString(top.apiVersion, "apiVersion");
  if (!isKnownKind(kind)) return undefined;
  const slash = apiVersion.lastIndexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = apiVersion.slice(slash + 1);
  const api = KIND_API[kind];
  if (group !== api.group) return undefined;

  const metaMap = r.optionalMap(top.metadata, "metadata") ?? {};
  const name = r.nonEmptyString(metaMap.name, "metadata.name");
  if (name.includes("/") || name.length > 253) r.fail("metadata.name", `invalid name ${describeValue(name)}`);
  r.source = `${kind} ${name}`;
  const clusterScoped = CLUSTER_SCOPED.has(kind);
  let namespace = "";
  if (!clusterScoped) {
    namespace = r.optionalString(metaMap.namespace, "metadata.namespace") ?? "default";
    if (namespace === "") namespace = "default";
    if (!isNamespaceName(namespace)) {
      r.fail("metadata.namespace", `invalid namespace name ${describeValue(namespace)}`);
    }
    r.source = `${kind} ${namespace}/${name}`;
  }
  if (!api.versions.includes(version)) {
    r.fail("apiVersion", `${apiVersion} is not supported for ${kind} (expected ${api.versions.map((v) => api.group === "" ? v : `${api.group}/${v}`).join(" or ")})`);
  }
  const metadata = readMetadata(r, metaMap, name, namespace);
  switch (kind) {
    case "Namespace":
      return { kind, apiVersion, metadata };
    case "Pod":
      return readPod(r, top, apiVersion, metadata);
    case "Service":
      return readService(r, top, apiVersion, metadata);
    case "EndpointSlice":
      return readEndpointSlice(r, top, apiVersion, metadata);
    case "Node":
      return readNode(r, top, apiVersion, metadata);
    case "NetworkPolicy":
      return readNetworkPolicy(r, top, apiVersion, metadata);
    case "ClusterNetworkPolicy":
      return { kind, apiVersion, metadata, spec: r.optionalMap(top.spec, "spec") ?? {} };
    case "ReplicaSet":
    case "Deployment":
    case "StatefulSet":
    case "DaemonSet":
    case "Job":
    case "CronJob":
      return { kind, apiVersion, metadata };
  }
}

function readMetadata(r: FieldReader, m: Record<string, unknown>, name: string, namespace: string): ObjectMeta {
  const meta: ObjectMeta = {
    name,
    namespace,
    uid: r.optionalString(m.uid, "metadata.uid") ?? "",
    labels: r.labels(m.labels, "metadata.labels"),
    annotations: r.annotations(m.annotations, "metadata.annotations"),
    ownerReferences: r.optionalList(m.ownerReferences, "metadata.ownerReferences").map((v, i) => {
      const f = fieldPath("metadata.ownerReferences", i);
      const o = r.map(v, f);
      return {
        apiVersion: r.string(o.apiVersion, fieldPath(f, "apiVersion")),
        kind: r.nonEmptyString(o.kind, fieldPath(f, "kind")),
        name: r.nonEmptyString(o.name, fieldPath(f, "name")),
        uid: r.optionalString(o.uid, fieldPath(f, "uid")) ?? "",
        controller: r.boolean(o.controller, fieldPath(f, "controller"), false),
      };
    }),
  };
  if (meta.ownerReferences.filter((o) => o.controller).length > 1) {
    r.fail("metadata.ownerReferences", "more than one reference has controller: true");
  }
  const created = r.optionalTimestamp(m.creationTimestamp, "metadata.creationTimestamp");
  if (created !== undefined) meta.creationTimestampNs = created;
  const deleting = r.optionalTimestamp(m.deletionTimestamp, "metadata.deletionTimestamp");
  if (deleting !== undefined) meta.deletionTimestampNs = deleting;
  return meta;
}

function readPod(r: FieldReader, top: Record<string, unknown>, apiVersion: string, metadata: ObjectMeta): Pod {
  const spec = r.optionalMap(top.spec, "spec") ?? {};
  const status = r.optionalMap(top.status, "status") ?? {};
  const containers = r.optionalList(spec.containers, "spec.containers").map((v, i): Container => {
    const f = fieldPath("spec.containers", i);
    const c = r.map(v, f);
    return {
      name: r.optionalString(c.name, fieldPath(f, "name")) ?? "",
      ports: r.optionalList(c.ports, fieldPath(f, "ports")).map((pv, j): ContainerPort => {
        const pf = fieldPath(fieldPath(f, "ports"), j);
        const p = r.map(pv, pf);
        const name = r.optionalString(p.name, fieldPath(pf, "name")) ?? "";
        if (name !== "") r.intOrPortName(name, fieldPath(pf, "name"));
        return {
          name,
          containerPort: r.port(p.containerPort, fieldPath(pf, "containerPort")),
          protocol: r.oneOf(p.protocol, fieldPath(pf, "protocol"), PROTOCOLS, "TCP"),
        };
      }),
    };
  });
  const podIP = status.podIP === undefined || status.podIP === null || status.podIP === ""
    ? "" : r.ip(status.podIP, "status.podIP");
  const podIPs = r.optionalList(status.podIPs, "status.podIPs").map((v, i) => {
    const f = fieldPath("status.podIPs", i);
    return r.ip(r.map(v, f).ip, fieldPath(f, "ip"));
  });
  if (podIPs.length === 0 && podIP !== "") podIPs.push(podIP);
  if (podIP !== "" && podIPs[0] !== podIP) {
    r.fail("status.podIPs", `the first entry must equal status.podIP ${podIP}, got ${describeValue(podIPs[0])}`);
  }
  const hostIP = status.hostIP === undefined || status.hostIP === null || status.hostIP === ""
    ? "" : r.ip(status.hostIP, "status.hostIP");
  return {
    kind: "Pod",
    apiVersion,
    metadata,
    spec: {
      nodeName: r.optionalString(spec.nodeName, "spec.nodeName") ?? "",
      hostNetwork: r.boolean(spec.hostNetwork, "spec.hostNetwork", false),
      containers,
    },
    status: {
      phase: r.oneOf(status.phase, "status.phase", POD_PHASES, "Pending"),
      podIP: podIPs[0] ?? "",
      podIPs,
      hostIP,
    },
  };
}

const SERVICE_TYPES: readonly ServiceType[] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

function readService(r: FieldReader, top: Record<string, unknown>, apiVersion: string, metadata: ObjectMeta): Service {
  const spec = r.optionalMap(top.spec, "spec") ?? {};
  const type = r.oneOf(spec.type, "spec.type", SERVICE_TYPES, "ClusterIP");
  const clusterIPText = r.optionalString(spec.clusterIP, "spec.clusterIP") ?? "";
  const headless = clusterIPText === "None";
  const clusterIP = headless || clusterIPText === "" ? "" : r.ip(clusterIPText, "spec.clusterIP");
  const listed = r.optionalList(spec.clusterIPs, "spec.clusterIPs").map((v, i) => r.string(v, fieldPath("spec.clusterIPs", i)));
  let clusterIPs: string[];
  if (headless) {
    if (listed.some((ip) => ip !== "None")) r.fail("spec.clusterIPs", "a headless Service (clusterIP: None) cannot have ClusterIPs");
    clusterIPs = [];
  } else {
    clusterIPs = listed.map((v, i) => r.ip(v, fieldPath("spec.clusterIPs", i)));
    if (clusterIPs.length === 0 && clusterIP !== "") clusterIPs = [clusterIP];
    if (clusterIP !== "" && clusterIPs[0] !== clusterIP) {
      r.fail("spec.clusterIPs", `the first entry must equal spec.clusterIP ${clusterIP}, got ${describeValue(clusterIPs[0])}`);
    }
  }
  const ports = r.optionalList(spec.ports, "spec.ports").map((v, i): ServicePort => {
    const f = fieldPath("spec.ports", i);
    const p = r.map(v, f);
    const port = r.port(p.port, fieldPath(f, "port"));
    const out: ServicePort = {
      name: r.optionalString(p.name, fieldPath(f, "name")) ?? "",
      port,
      targetPort: p.targetPort === undefined || p.targetPort === null ? port : r.intOrPortName(p.targetPort, fieldPath(f, "targetPort")),
      protocol: r.oneOf(p.protocol, fieldPath(f, "protocol"), PROTOCOLS, "TCP"),
    };
    const nodePort = r.optionalInt(p.nodePort, fieldPath(f, "nodePort"), 1, 65535);
    if (nodePort !== undefined) out.nodePort = nodePort;
    return out;
  });
  return {
    kind: "Service",
    apiVersion,
    metadata,
    spec: { type, clusterIP: clusterIPs[0] ?? "", clusterIPs, headless, selector: r.labels(spec.selector, "spec.selector"), ports },
  };
}

const ADDRESS_TYPES: readonly EndpointAddressType[] = ["IPv4", "IPv6", "FQDN"];

function readEndpointSlice(r: FieldReader, top: Record<string, unknown>, apiVersion: string, metadata: ObjectMeta): EndpointSlice {
  const addressType = r.oneOf(top.addressType, "addressType", ADDRESS_TYPES);
  const family = addressType === "IPv4" ? 4 : addressType === "IPv6" ? 6 : undefined;
  const endpoints = r.optionalList(top.endpoints, "endpoints").map((v, i): SliceEndpoint => {
    const f = fieldPath("endpoints", i);
    const e = r.map(v, f);
    const addresses = r.optionalList(e.addresses, fieldPath(f, "addresses")).map((a, j) => {
      const af = fieldPath(fieldPath(f, "addresses"), j);
      return family === undefined ? r.nonEmptyString(a, af) : r.ip(a, af, family);
    });
    if (addresses.length === 0) r.fail(fieldPath(f, "addresses"), "expected at least one address");
    const c = r.optionalMap(e.conditions, fieldPath(f, "conditions")) ?? {};
    const ready = r.boolean(c.ready, fieldPath(f, "conditions.ready"), true);
    const endpoint: SliceEndpoint = {
      addresses,
      conditions: {
        ready,
        serving: r.boolean(c.serving, fieldPath(f, "conditions.serving"), ready),
        terminating: r.boolean(c.terminating, fieldPath(f, "conditions.terminating"), false),
      },
      nodeName: r.optionalString(e.nodeName, fieldPath(f, "nodeName")) ?? "",
    };
    const t = r.optionalMap(e.targetRef, fieldPath(f, "targetRef"));
    if (t) {
      const tf = fieldPath(f, "targetRef");
      endpoint.targetRef = {
        kind: r.optionalString(t.kind, fieldPath(tf, "kind")) ?? "",
        namespace: r.optionalString(t.namespace, fieldPath(tf, "namespace")) ?? "",
        name: r.optionalString(t.name, fieldPath(tf, "name")) ?? "",
        uid: r.optionalString(t.uid, fieldPath(tf, "uid")) ?? "",
      };
    }
    return endpoint;
  });
  const ports = r.optionalList(top.ports, "ports").map((v, i): EndpointPort => {
    const f = fieldPath("ports", i);
    const p = r.map(v, f);
    const out: EndpointPort = {
      name: r.optionalString(p.name, fieldPath(f, "name")) ?? "",
      protocol: r.oneOf(p.protocol, fieldPath(f, "protocol"), PROTOCOLS, "TCP"),
    };
    const port = r.optionalInt(p.port, fieldPath(f, "port"), 1, 65535);
    if (port !== undefined) out.port = port;
    const appProtocol = r.optionalString(p.appProtocol, fieldPath(f, "appProtocol"));
    if (appProtocol !== undefined) out.appProtocol = appProtocol;
    return out;
  });
  return {
    kind: "EndpointSlice",
    apiVersion,
    metadata,
    serviceName: metadata.labels["kubernetes.io/service-name"] ?? "",
    addressType,
    endpoints,
    ports,
  };
}

function readNode(r: FieldReader, top: Record<string, unknown>, apiVersion: string, metadata: ObjectMeta): Node {
  const spec = r.optionalMap(top.spec, "spec") ?? {};
  const status = r.optionalMap(top.status, "status") ?? {};
  const podCIDR = r.optionalString(spec.podCIDR, "spec.podCIDR");
  let podCIDRs = r.optionalList(spec.podCIDRs, "spec.podCIDRs").map((v, i) => r.cidr(v, fieldPath("spec.podCIDRs", i)).text);
  if (podCIDRs.length === 0 && podCIDR !== undefined && podCIDR !== "") podCIDRs = [r.cidr(podCIDR, "spec.podCIDR").text];
  const addresses = r.optionalList(status.addresses, "status.addresses").map((v, i): NodeAddress => {
    const f = fieldPath("status.addresses", i);
    const a = r.map(v, f);
    const type = r.nonEmptyString(a.type, fieldPath(f, "type"));
    const isIp = type === "InternalIP" || type === "ExternalIP";
    return { type, address: isIp ? r.ip(a.address, fieldPath(f, "address")) : r.nonEmptyString(a.address, fieldPath(f, "address")) };
  });
  return { kind: "Node", apiVersion, metadata, spec: { podCIDRs }, status: { addresses } };
}

const POLICY_TYPES: readonly PolicyType[] = ["Ingress", "Egress"];
const OPERATORS: readonly SelectorOperator[] = ["In", "NotIn", "Exists", "DoesNotExist"];

function readNetworkPolicy(r: FieldReader, top: Record<string, unknown>, apiVersion: string, metadata: ObjectMeta): NetworkPolicy {
  const spec = r.optionalMap(top.spec, "spec") ?? {};
  if (spec.podSelector === undefined || spec.podSelector === null) {
    r.fail("spec.podSelector", "missing; use {} to select every pod in the namespace");
  }
  const podSelector = readSelector(r, spec.podSelector, "spec.podSelector");
  const ingress = r.optionalList(spec.ingress, "spec.ingress").map((v, i): NetworkPolicyIngressRule => {
    const f = fieldPath("spec.ingress", i);
    const rule = r.optionalMap(v, f) ?? {};
    return {
      from: r.optionalList(rule.from, fieldPath(f, "from")).map((p, j) => readPeer(r, p, fieldPath(fieldPath(f, "from"), j))),
      ports: r.optionalList(rule.ports, fieldPath(f, "ports")).map((p, j) => readPolicyPort(r, p, fieldPath(fieldPath(f, "ports"), j))),
    };
  });
  const egress = r.optionalList(spec.egress, "spec.egress").map((v, i): NetworkPolicyEgressRule => {
    const f = fieldPath("spec.egress", i);
    const rule = r.optionalMap(v, f) ?? {};
    return {
      to: r.optionalList(rule.to, fieldPath(f, "to")).map((p, j) => readPeer(r, p, fieldPath(fieldPath(f, "to"), j))),
      ports: r.optionalList(rule.ports, fieldPath(f, "ports")).map((p, j) => readPolicyPort(r, p, fieldPath(fieldPath(f, "ports"), j))),
    };
  });
  let policyTypes = r.optionalList(spec.policyTypes, "spec.policyTypes").map((v, i) => r.oneOf(v, fieldPath("spec.policyTypes", i), POLICY_TYPES));
  if (new Set(policyTypes).size !== policyTypes.length) r.fail("spec.policyTypes", "lists a type twice");
  if (policyTypes.length === 0) policyTypes = egress.length > 0 ? ["Ingress", "Egress"] : ["Ingress"];
  return { kind: "NetworkPolicy", apiVersion, metadata, spec: { podSelector, policyTypes, ingress, egress } };
}

function readSelector(r: FieldReader, value: unknown, field: string): LabelSelector {
  const m = r.optionalMap(value, field) ?? {};
  return {
    matchLabels: r.labels(m.matchLabels, fieldPath(field, "matchLabels")),
    matchExpressions: r.optionalList(m.matchExpressions, fieldPath(field, "matchExpressions")).map((v, i) => {
      const f = fieldPath(fieldPath(field, "matchExpressions"), i);
      const e = r.map(v, f);
      const key = r.nonEmptyString(e.key, fieldPath(f, "key"));
      r.labelKey(key, fieldPath(f, "key"));
      const operator = r.oneOf(e.operator, fieldPath(f, "operator"), OPERATORS);
      const values = r.optionalList(e.values, fieldPath(f, "values")).map((s, j) => r.string(s, fieldPath(fieldPath(f, "values"), j)));
      if ((operator === "In" || operator === "NotIn") && values.length === 0) {
        r.fail(fieldPath(f, "values"), `operator ${operator} needs at least one value`);
      }
      if ((operator === "Exists" || operator === "DoesNotExist") && values.length > 0) {
        r.fail(fieldPath(f, "values"), `operator ${operator} takes no values`);
      }
      return { key, operator, values };
    }),
  };
}

function readPeer(r: FieldReader, value: unknown, field: string): NetworkPolicyPeer {
  const m = r.map(value, field);
  const peer: NetworkPolicyPeer = {};
  if (m.podSelector !== undefined && m.podSelector !== null) peer.podSelector = readSelector(r, m.podSelector, fieldPath(field, "podSelector"));
  if (m.namespaceSelector !== undefined && m.namespaceSelector !== null) {
    peer.namespaceSelector = readSelector(r, m.namespaceSelector, fieldPath(field, "namespaceSelector"));
  }
  const block = r.optionalMap(m.ipBlock, fieldPath(field, "ipBlock"));
  if (block) {
    if (peer.podSelector || peer.namespaceSelector) r.fail(field, "ipBlock cannot be combined with podSelector or namespaceSelector");
    const bf = fieldPath(field, "ipBlock");
    const cidr = r.cidr(block.cidr, fieldPath(bf, "cidr"));
    const except = r.optionalList(block.except, fieldPath(bf, "except")).map((v, i) => {
      const ef = fieldPath(fieldPath(bf, "except"), i);
      const inner: ParsedCidr = r.cidr(v, ef);
      if (!cidrContains(cidr, inner) || inner.prefix === cidr.prefix) {
        r.fail(ef, `${inner.text} must be a strict subset of cidr ${cidr.text}`);
      }
      return inner.text;
    });
    peer.ipBlock = { cidr: cidr.text, except };
  }
  if (!peer.podSelector && !peer.namespaceSelector && !peer.ipBlock) {
    r.fail(field, "expected podSelector, namespaceSelector or ipBlock");
  }
  return peer;
}

function readPolicyPort(r: FieldReader, value: unknown, field: string): NetworkPolicyPort {
  const m = r.map(value, field);
  const out: NetworkPolicyPort = { protocol: r.oneOf(m.protocol, fieldPath(field, "protocol"), PROTOCOLS, "TCP") };
  if (m.port !== undefined && m.port !== null) out.port = r.intOrPortName(m.port, fieldPath(field, "port"));
  const endPort = r.optionalInt(m.endPort, fieldPath(field, "endPort"), 1, 65535);
  if (endPort !== undefined) {
    if (typeof out.port !== "number") r.fail(fieldPath(field, "endPort"), "needs a numeric port to start the range");
    if (endPort < out.port) r.fail(fieldPath(field, "endPort"), `must be at least port ${out.port}, got ${endPort}`);
    out.endPort = endPort;
  }
  return out;
}
