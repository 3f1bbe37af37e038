// The control plane's in-memory model of the cluster, fed by metadata sources: current
// objects with the indices enrichment and policy need, plus a history of which pod held
// each pod IP when (leases), so that a flow is named after the pod that had the address
// at the time of the flow, even after the IP was reused.
//
// Lease rules (all times wall-clock ns since the Unix epoch):
// - A lease starts when a pod first has an address: at its creationTimestamp (right when
//   the control plane starts late, or a new pod reuses an IP), or at the observed time
//   when the pod has no creationTimestamp or already had another address before (an IP
//   change). It never starts before the end of a lease on the same address that was closed
//   in an earlier apply(): the previous holder was known to be gone before this pod was
//   seen with the address, and a replacement pod is often created while the old one is
//   still terminating and serving from that address.
// - A lease ends when the pod is deleted (at the observed time, or its deletionTimestamp
//   if earlier), when it reaches Succeeded or Failed (its sandbox and address are
//   released), or when it no longer lists the address.
// - Leases may overlap when an old pod's deletion is seen late; the one that started
//   latest at or before the asked time wins.
// - Closed leases, and deleted pods' metadata, are forgotten `leaseRetentionNs` after
//   they ended (measured against the latest observed time, not the local clock).
// hostNetwork pods hold no lease: their address is their node's.
import type { LocalEndpoint } from "../../proto/gen/bulkhead/v1/agent.js";
import type { Endpoint } from "../../proto/gen/bulkhead/v1/flow.js";
import { canonicalIp } from "../../addresses/ip.js";
import {
  WORKLOAD_KINDS,
  type EndpointSlice,
  type KubeObject,
  type Namespace,
  type ClusterNetworkPolicyObject,
  type NetworkPolicy,
  type Node,
  type OwnerReference,
  type Pod,
  type Service,
  type WorkloadKind,
  type WorkloadObject,
} from "../metadata/objects.js";
import type { MetadataSink, ObjectEvent } from "../metadata/source.js";
import { addTo, removeFrom } from "../index-sets.js";

export interface ClusterStateOptions {
  /** How long closed leases and deleted pods are kept; default 1 h. */
  leaseRetentionNs?: bigint;
}

/** The controller a pod belongs to, as users name it: Deployment "cart", or Pod "debug". */
export interface Workload {
  kind: string;
  name: string;
}

export interface IpLease {
  readonly ip: string;
  readonly podUid: string;
  readonly namespace: string;
  readonly name: string;
  readonly fromNs: bigint;
  /** Undefined while the pod still holds the address. */
  readonly toNs: bigint | undefined;
}

/** A change counter: it moves whenever an answer it stands for may have changed. */
export interface ChangeCounter {
  readonly version: number;
}

/** podClaim()'s answer: "ok", or what is wrong with an agent's naming of a pod. */
export type PodClaim = "ok" | "unknown_pod" | "foreign_pod" | "foreign_address";

/**
 * An answer of resolveSpan(): `endpoint` holds for every time in [fromNs, toNs) until
 * `address.version` moves (or, when `address` is undefined because the address has no
 * lease history, until ClusterState.unknownAddresses.version moves).
 */
export interface ResolvedSpan {
  endpoint: Endpoint;
  /** Undefined: since forever. */
  fromNs: bigint | undefined;
  /** Undefined: for all later times. */
  toNs: bigint | undefined;
  address: ChangeCounter | undefined;
}

const DEFAULT_RETENTION_NS = 3_600_000_000_000n;
/** Per-pod cache of Endpoints by address; more than this means odd traffic, not more IPs. */
const MAX_ENDPOINTS_PER_POD = 8;

class PodRecord {
  deletedAtNs: bigint | undefined;
  /** Whether the pod has had an address before (a new one then is an IP change). */
  hadAddress = false;
  readonly openLeases = new Map<string, Lease>();
  /** Every address the pod ever leased: their answers change when the pod's metadata does. */
  readonly leasedAddresses = new Set<string>();
  private endpoints = new Map<string, Endpoint>();

  constructor(
    /** The uid, or "namespace/name" for a manifest without one. */
    readonly id: string,
    public pod: Pod,
    public workload: Workload,
  ) {}

  /**
   * The pod's Endpoint for one of its addresses. Frozen and shared by every flow record
   * that names this pod with this address until the pod's labels, node or workload change:
   * enrichment then allocates nothing per record.
   */
  endpointFor(ip: string): Endpoint {
    const cached = this.endpoints.get(ip);
    if (cached !== undefined) return cached;
    const { metadata, spec } = this.pod;
    const endpoint: Endpoint = Object.freeze({
      ip,
      namespace: metadata.namespace,
      podName: metadata.name,
      podUid: metadata.uid,
      labels: Object.freeze({ ...metadata.labels }),
      workloadKind: this.workload.kind,
      workloadName: this.workload.name,
      node: spec.nodeName,
      service: "",
      world: false,
    });
    if (this.endpoints.size < MAX_ENDPOINTS_PER_POD) this.endpoints.set(ip, endpoint);
    return endpoint;
  }

  /** Drops cached Endpoints after a change to what they show. */
  forgetEndpoints(): void {
    this.endpoints = new Map();
  }
}

class Lease implements IpLease {
  toNs: bigint | undefined;
  /** apply() call that closed the lease; see the start rule at the top of the file. */
  closedInApply = -1;

  constructor(
    readonly ip: string,
    readonly record: PodRecord,
    readonly fromNs: bigint,
  ) {}

  get podUid(): string { return this.record.pod.metadata.uid; }
  get namespace(): string { return this.record.pod.metadata.namespace; }
  get name(): string { return this.record.pod.metadata.name; }
}

/** The lease history of one pod IP, with a counter that moves on every change to its answers. */
class AddressHistory implements ChangeCounter {
  leases: Lease[] = [];
  version = 0;
}

function frozenEndpoint(fields: Partial<Endpoint> & { ip: string }): Endpoint {
  // Every field in the same order as pod Endpoints, so that readers see one object shape.
  return Object.freeze({
    ip: fields.ip,
    namespace: fields.namespace ?? "",
    podName: "",
    podUid: "",
    labels: Object.freeze({}),
    workloadKind: "",
    workloadName: "",
    node: fields.node ?? "",
    service: fields.service ?? "",
    world: fields.world ?? false,
  });
}

function nsName(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}



function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => a[k] === b[k]);
}

const WORKLOAD_KIND_SET: ReadonlySet<string> = new Set(WORKLOAD_KINDS);

/**
 * The reference to an object's managing controller. Manifests written by hand (and the
 * lab's) often omit `controller: true`; then the first reference to a workload kind is it.
 */
export function controllerOf(refs: readonly OwnerReference[]): OwnerReference | undefined {
  return refs.find((r) => r.controller) ?? refs.find((r) => WORKLOAD_KIND_SET.has(r.kind));
}

function isWorkloadObject(object: KubeObject): object is WorkloadObject {
  return WORKLOAD_KIND_SET.has(object.kind);
}

/** Pods whose address is theirs: not hostNetwork, not finished, not deleted. */
function holdsAddresses(pod: Pod): boolean {
  return !pod.spec.hostNetwork && pod.status.phase !== "Succeeded" && pod.status.phase !== "Failed";
}

export class ClusterState implements MetadataSink {
  /**
   * Moves on every change to the model: every apply() with events, and a prune() that forgot
   * anything. Every ChangeCounter moves only inside those, so a cache that saw its counter
   * current at one generation may trust it until the generation moves (the Enricher's
   * address entries; its pod-claim answers compare it too).
   */
  generation = 0;
  private readonly unknown = { version: 0 };

  private readonly retentionNs: bigint;
  private applyCount = 0;
  private latestObservedNs = 0n;
  private lastPruneNs = 0n;

  private readonly namespaceByName = new Map<string, Namespace>();
  private readonly podsByKey = new Map<string, PodRecord>();
  private readonly podsById = new Map<string, PodRecord>();
  private readonly podsByNode = new Map<string, Set<PodRecord>>();
  private readonly podsByNamespace = new Map<string, Set<PodRecord>>();
  /** Live pods by "namespace/Kind/name" of their controller reference. */
  private readonly podsByController = new Map<string, Set<PodRecord>>();
  private deletedPods: PodRecord[] = [];
  private readonly addresses = new Map<string, AddressHistory>();
  private closedLeases: Lease[] = [];

  private readonly servicesByKey = new Map<string, Service>();
  private readonly servicesByIp = new Map<string, Service>();
  private readonly slicesByKey = new Map<string, EndpointSlice>();
  private readonly slicesByService = new Map<string, Set<EndpointSlice>>();
  private readonly nodesByName = new Map<string, Node>();
  private readonly nodesByIp = new Map<string, Node>();
  private readonly policiesByKey = new Map<string, NetworkPolicy>();
  private readonly clusterPoliciesByName = new Map<string, ClusterNetworkPolicyObject>();
  private readonly workloadsByKey = new Map<string, WorkloadObject>();
  /** Endpoints of Service and node addresses; cleared when either changes. */
  private addressEndpoints = new Map<string, Endpoint>();

  constructor(options: ClusterStateOptions = {}) {
    this.retentionNs = options.leaseRetentionNs ?? DEFAULT_RETENTION_NS;
  }

  /**
   * Moves whenever the answer for an address without lease history may change: such an
   * address gets one, or a Service or node address changes. Per-address caches of those
   * answers compare it; answers for leased addresses compare ResolvedSpan.address.
   */
  get unknownAddresses(): ChangeCounter {
    return this.unknown;
  }

  apply(events: ObjectEvent[], observedAtNs: bigint): void {
    this.applyCount++;
    if (observedAtNs > this.latestObservedNs) this.latestObservedNs = observedAtNs;
    for (const event of events) {
      if (event.type === "upsert") this.upsert(event.object, observedAtNs);
      else this.remove(event.object, observedAtNs);
    }
    if (events.length > 0) this.generation++;
    this.prune();
  }

  // ---- queries ---------------------------------------------------------------------------

  namespace(name: string): Namespace | undefined {
    return this.namespaceByName.get(name);
  }

  namespaces(): Namespace[] {
    return [...this.namespaceByName.values()];
  }

  pod(namespace: string, name: string): Pod | undefined {
    return this.podsByKey.get(nsName(namespace, name))?.pod;
  }

  /** A live pod, or a deleted one within the lease retention. */
  podByUid(uid: string): Pod | undefined {
    return uid === "" ? undefined : this.podsById.get(uid)?.pod;
  }

  /** Live pods. */
  pods(): Pod[] {
    return [...this.podsByKey.values()].map((r) => r.pod);
  }

  podsOnNode(node: string): Pod[] {
    return [...(this.podsByNode.get(node) ?? [])].map((r) => r.pod);
  }

  service(namespace: string, name: string): Service | undefined {
    return this.servicesByKey.get(nsName(namespace, name));
  }

  services(): Service[] {
    return [...this.servicesByKey.values()];
  }

  serviceByClusterIP(ip: string): Service | undefined {
    return this.servicesByIp.get(ip);
  }

  endpointSlicesOf(namespace: string, service: string): EndpointSlice[] {
    return [...(this.slicesByService.get(nsName(namespace, service)) ?? [])];
  }

  node(name: string): Node | undefined {
    return this.nodesByName.get(name);
  }

  nodes(): Node[] {
    return [...this.nodesByName.values()];
  }

  nodeByAddress(ip: string): Node | undefined {
    return this.nodesByIp.get(ip);
  }

  networkPolicies(namespace?: string): NetworkPolicy[] {
    const all = [...this.policiesByKey.values()];
    return namespace === undefined ? all : all.filter((p) => p.metadata.namespace === namespace);
  }

  /** ClusterNetworkPolicies as written (validated by the policy engine), by name. */
  clusterNetworkPolicies(): ClusterNetworkPolicyObject[] {
    return [...this.clusterPoliciesByName.values()].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  }

  workloadObject(kind: WorkloadKind, namespace: string, name: string): WorkloadObject | undefined {
    return this.workloadsByKey.get(`${kind}/${namespace}/${name}`);
  }

  /** Every lease of `ip` still remembered, oldest first. */
  leases(ip: string): IpLease[] {
    return [...(this.addresses.get(canonicalIp(ip) ?? ip)?.leases ?? [])].sort((a, b) => (a.fromNs < b.fromNs ? -1 : a.fromNs > b.fromNs ? 1 : 0));
  }

  /**
   * The owning controller of a pod: the Deployment through its ReplicaSet (inferred from
   * the pod-template-hash label when the ReplicaSet object is unknown), the CronJob through
   * its Job, a StatefulSet, DaemonSet or other controller directly; else the pod itself.
   */
  workloadOf(pod: Pod): Workload {
    const self = { kind: "Pod", name: pod.metadata.name };
    const ref = controllerOf(pod.metadata.ownerReferences);
    if (!ref) return self;
    const namespace = pod.metadata.namespace;
    switch (ref.kind) {
      case "ReplicaSet": {
        const rs = this.workloadsByKey.get(`ReplicaSet/${namespace}/${ref.name}`);
        if (rs) {
          const owner = controllerOf(rs.metadata.ownerReferences);
          return owner ? { kind: owner.kind, name: owner.name } : { kind: "ReplicaSet", name: ref.name };
        }
        // The Deployment controller names ReplicaSets "<deployment>-<pod-template-hash>".
        const hash = pod.metadata.labels["pod-template-hash"];
        if (hash !== undefined && hash !== "" && ref.name.length > hash.length + 1 && ref.name.endsWith(`-${hash}`)) {
          return { kind: "Deployment", name: ref.name.slice(0, ref.name.length - hash.length - 1) };
        }
        return { kind: "ReplicaSet", name: ref.name };
      }
      case "Job": {
        const job = this.workloadsByKey.get(`Job/${namespace}/${ref.name}`);
        const owner = job ? controllerOf(job.metadata.ownerReferences) : undefined;
        return owner ? { kind: owner.kind, name: owner.name } : { kind: "Job", name: ref.name };
      }
      case "Node":
        // The mirror pod of a static pod: the kubelet, not a controller, runs it.
        return self;
      default:
        return { kind: ref.kind, name: ref.name };
    }
  }

  /** The pods on a node that have (or will have) an interface there, for its agent. */
  localEndpoints(node: string): LocalEndpoint[] {
    const out: LocalEndpoint[] = [];
    for (const record of this.podsByNode.get(node) ?? []) {
      const { pod } = record;
      if (!holdsAddresses(pod)) continue;
      out.push({ namespace: pod.metadata.namespace, podName: pod.metadata.name, podUid: pod.metadata.uid, ips: [...pod.status.podIPs] });
    }
    return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.podName.localeCompare(b.podName));
  }

  /**
   * Live pods of `namespace` whose labels include every pair of `selector` (a Service's
   * selector). An empty selector selects nothing, as for a Service without one.
   */
  podsSelectedBy(namespace: string, selector: Record<string, string>): Pod[] {
    const pairs = Object.entries(selector);
    if (pairs.length === 0) return [];
    const out: Pod[] = [];
    for (const record of this.podsByNamespace.get(namespace) ?? []) {
      const labels = record.pod.metadata.labels;
      if (pairs.every(([k, v]) => labels[k] === v)) out.push(record.pod);
    }
    return out.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  }

  /** Who held `ip` at `atNs`: a pod, else a Service ClusterIP, else a node, else the world. */
  resolve(ip: string, atNs: bigint): Endpoint {
    return this.resolveSpan(ip, atNs).endpoint;
  }

  /** resolve(), plus the time span around `atNs` over which the answer stays the same. */
  resolveSpan(ip: string, atNs: bigint): ResolvedSpan {
    const address = this.addresses.get(ip);
    if (address === undefined && !this.servicesByIp.has(ip) && !this.nodesByIp.has(ip)) {
      // Flow addresses are canonical already; anything else is tried once in canonical form.
      const canonical = canonicalIp(ip);
      if (canonical !== undefined && canonical !== ip) return this.resolveSpan(canonical, atNs);
    }
    let best: Lease | undefined;
    let fromNs: bigint | undefined;
    let toNs: bigint | undefined;
    for (const lease of address?.leases ?? []) {
      // The answer can only change where some lease starts or ends.
      for (const edge of [lease.fromNs, lease.toNs]) {
        if (edge === undefined) continue;
        if (edge <= atNs) {
          if (fromNs === undefined || edge > fromNs) fromNs = edge;
        } else if (toNs === undefined || edge < toNs) {
          toNs = edge;
        }
      }
      if (lease.fromNs <= atNs && (lease.toNs === undefined || atNs < lease.toNs)
        && (best === undefined || lease.fromNs >= best.fromNs)) {
        best = lease;
      }
    }
    const endpoint = best !== undefined ? best.record.endpointFor(ip) : this.addressEndpoint(ip);
    return { endpoint, fromNs, toNs, address };
  }

  /**
   * Whether the agent of `node` may name pod `uid` (live, or deleted within the retention)
   * under `ip`: the pod runs on that node and `ip` is an address it has leased. A pod with
   * no address yet is accepted: an agent may see a new pod's first packets before the
   * control plane sees its address. Not checked: that no other pod of the node held `ip` at
   * the record's time, since the control plane learns of deletions late and IPs are reused.
   */
  podClaim(uid: string, ip: string, node: string): PodClaim {
    const record = this.podsById.get(uid);
    if (record === undefined) return "unknown_pod";
    if (record.pod.spec.nodeName !== node) return "foreign_pod";
    if (ip === "" || record.leasedAddresses.size === 0) return "ok";
    // Leases are kept in canonical text, which ingest's addresses already are: parse only when not found as given.
    return record.leasedAddresses.has(ip) || record.leasedAddresses.has(canonicalIp(ip) ?? ip) ? "ok" : "foreign_address";
  }

  /** The Endpoint of a pod by uid (live, or deleted within the retention) for one address. */
  podEndpoint(uid: string, ip: string): Endpoint | undefined {
    return uid === "" ? undefined : this.podsById.get(uid)?.endpointFor(ip);
  }

  /** Sizes, for status and metrics. */
  stats(): { pods: number; deletedPods: number; leasedAddresses: number; services: number; nodes: number } {
    return {
      pods: this.podsByKey.size,
      deletedPods: this.podsById.size - this.podsByKey.size,
      leasedAddresses: this.addresses.size,
      services: this.servicesByKey.size,
      nodes: this.nodesByName.size,
    };
  }

  // ---- changes -----------------------------------------------------------------------------

  private upsert(object: KubeObject, observedAtNs: bigint): void {
    const { namespace, name } = object.metadata;
    switch (object.kind) {
      case "Namespace":
        this.namespaceByName.set(name, object);
        return;
      case "Pod":
        this.upsertPod(object, observedAtNs);
        return;
      case "Service":
        this.removeService(nsName(namespace, name));
        this.servicesByKey.set(nsName(namespace, name), object);
        for (const ip of object.spec.clusterIPs) this.servicesByIp.set(ip, object);
        this.fixedAddressesChanged(object.spec.clusterIPs);
        return;
      case "EndpointSlice":
        this.removeSlice(nsName(namespace, name));
        this.slicesByKey.set(nsName(namespace, name), object);
        addTo(this.slicesByService, nsName(namespace, object.serviceName), object);
        return;
      case "Node":
        this.removeNode(name);
        this.nodesByName.set(name, object);
        // InternalIP first so that it wins over another node's ExternalIP.
        for (const type of ["ExternalIP", "InternalIP"]) {
          for (const a of object.status.addresses) if (a.type === type) this.nodesByIp.set(a.address, object);
        }
        this.fixedAddressesChanged(object.status.addresses.map((a) => a.address));
        return;
      case "NetworkPolicy":
        this.policiesByKey.set(nsName(namespace, name), object);
        return;
      case "ClusterNetworkPolicy":
        this.clusterPoliciesByName.set(name, object);
        return;
      default:
        if (isWorkloadObject(object)) this.upsertWorkload(object);
    }
  }

  private remove(object: KubeObject, observedAtNs: bigint): void {
    const { namespace, name } = object.metadata;
    switch (object.kind) {
      case "Namespace":
        this.namespaceByName.delete(name);
        return;
      case "Pod":
        this.deletePod(object, observedAtNs);
        return;
      case "Service":
        this.removeService(nsName(namespace, name));
        return;
      case "EndpointSlice":
        this.removeSlice(nsName(namespace, name));
        return;
      case "Node":
        this.removeNode(name);
        return;
      case "NetworkPolicy":
        this.policiesByKey.delete(nsName(namespace, name));
        return;
      case "ClusterNetworkPolicy":
        this.clusterPoliciesByName.delete(name);
        return;
      default:
        if (isWorkloadObject(object)) {
          this.workloadsByKey.delete(`${object.kind}/${namespace}/${name}`);
          this.refreshWorkloadsOwnedBy(object);
        }
    }
  }

  private removeService(key: string): void {
    const old = this.servicesByKey.get(key);
    if (!old) return;
    this.servicesByKey.delete(key);
    for (const ip of old.spec.clusterIPs) if (this.servicesByIp.get(ip) === old) this.servicesByIp.delete(ip);
    this.fixedAddressesChanged(old.spec.clusterIPs);
  }

  private removeSlice(key: string): void {
    const old = this.slicesByKey.get(key);
    if (!old) return;
    this.slicesByKey.delete(key);
    removeFrom(this.slicesByService, nsName(old.metadata.namespace, old.serviceName), old);
  }

  private removeNode(name: string): void {
    const old = this.nodesByName.get(name);
    if (!old) return;
    this.nodesByName.delete(name);
    for (const a of old.status.addresses) if (this.nodesByIp.get(a.address) === old) this.nodesByIp.delete(a.address);
    this.fixedAddressesChanged(old.status.addresses.map((a) => a.address));
  }

  /** Service or node addresses changed: answers that fall back to them may differ now. */
  private fixedAddressesChanged(ips: readonly string[]): void {
    this.addressEndpoints = new Map();
    this.unknown.version++;
    for (const ip of ips) this.touchAddress(ip);
  }

  private touchAddress(ip: string): void {
    const address = this.addresses.get(ip);
    if (address !== undefined) address.version++;
  }

  /** What the pod's Endpoints show changed: drop them and invalidate answers naming it. */
  private podMetadataChanged(record: PodRecord): void {
    record.forgetEndpoints();
    for (const ip of record.leasedAddresses) this.touchAddress(ip);
  }

  private upsertWorkload(object: WorkloadObject): void {
    this.workloadsByKey.set(`${object.kind}/${object.metadata.namespace}/${object.metadata.name}`, object);
    this.refreshWorkloadsOwnedBy(object);
  }

  /** A ReplicaSet or Job that appears, changes owner or goes changes its pods' workload. */
  private refreshWorkloadsOwnedBy(object: WorkloadObject): void {
    if (object.kind !== "ReplicaSet" && object.kind !== "Job") return;
    const key = `${object.metadata.namespace}/${object.kind}/${object.metadata.name}`;
    for (const record of this.podsByController.get(key) ?? []) {
      const workload = this.workloadOf(record.pod);
      if (workload.kind === record.workload.kind && workload.name === record.workload.name) continue;
      record.workload = workload;
      this.podMetadataChanged(record);
    }
  }

  private upsertPod(pod: Pod, observedAtNs: bigint): void {
    const key = nsName(pod.metadata.namespace, pod.metadata.name);
    const id = pod.metadata.uid !== "" ? pod.metadata.uid : key;
    const current = this.podsByKey.get(key);
    // The same name with a new uid: the old pod is gone even if its delete was never seen.
    if (current !== undefined && current.id !== id) this.retirePod(current, observedAtNs, current.pod.metadata.deletionTimestampNs);
    let record = this.podsById.get(id);
    if (record === undefined) {
      record = new PodRecord(id, pod, this.workloadOf(pod));
      this.podsById.set(id, record);
    } else {
      if (record.deletedAtNs === undefined) this.unindexPod(record);
      record.deletedAtNs = undefined;
      const old = record.pod;
      const workload = this.workloadOf(pod);
      record.pod = pod;
      if (old.spec.nodeName !== pod.spec.nodeName || !sameLabels(old.metadata.labels, pod.metadata.labels)
        || workload.kind !== record.workload.kind || workload.name !== record.workload.name) {
        record.workload = workload;
        this.podMetadataChanged(record);
      }
    }
    this.indexPod(record);
    this.updateLeases(record, observedAtNs);
  }

  private deletePod(pod: Pod, observedAtNs: bigint): void {
    const key = nsName(pod.metadata.namespace, pod.metadata.name);
    const record = this.podsById.get(pod.metadata.uid !== "" ? pod.metadata.uid : key);
    if (record === undefined || record.deletedAtNs !== undefined) return;
    this.retirePod(record, observedAtNs, pod.metadata.deletionTimestampNs ?? record.pod.metadata.deletionTimestampNs);
  }

  private retirePod(record: PodRecord, observedAtNs: bigint, deletionTimestampNs: bigint | undefined): void {
    const endNs = deletionTimestampNs !== undefined && deletionTimestampNs < observedAtNs ? deletionTimestampNs : observedAtNs;
    for (const lease of [...record.openLeases.values()]) this.closeLease(lease, endNs);
    this.unindexPod(record);
    record.deletedAtNs = observedAtNs;
    this.deletedPods.push(record);
  }

  private indexPod(record: PodRecord): void {
    const { metadata, spec } = record.pod;
    this.podsByKey.set(nsName(metadata.namespace, metadata.name), record);
    if (spec.nodeName !== "") addTo(this.podsByNode, spec.nodeName, record);
    addTo(this.podsByNamespace, metadata.namespace, record);
    const ref = controllerOf(metadata.ownerReferences);
    if (ref) addTo(this.podsByController, `${metadata.namespace}/${ref.kind}/${ref.name}`, record);
  }

  private unindexPod(record: PodRecord): void {
    const { metadata, spec } = record.pod;
    const key = nsName(metadata.namespace, metadata.name);
    if (this.podsByKey.get(key) === record) this.podsByKey.delete(key);
    removeFrom(this.podsByNode, spec.nodeName, record);
    removeFrom(this.podsByNamespace, metadata.namespace, record);
    const ref = controllerOf(metadata.ownerReferences);
    if (ref) removeFrom(this.podsByController, `${metadata.namespace}/${ref.kind}/${ref.name}`, record);
  }

  private updateLeases(record: PodRecord, observedAtNs: bigint): void {
    const addresses = holdsAddresses(record.pod) ? record.pod.status.podIPs : [];
    for (const [ip, lease] of [...record.openLeases]) {
      if (!addresses.includes(ip)) this.closeLease(lease, observedAtNs);
    }
    for (const ip of addresses) {
      if (!record.openLeases.has(ip)) this.openLease(record, ip, observedAtNs);
    }
    if (addresses.length > 0) record.hadAddress = true;
  }

  private openLease(record: PodRecord, ip: string, observedAtNs: bigint): void {
    const created = record.pod.metadata.creationTimestampNs;
    let fromNs = !record.hadAddress && created !== undefined && created <= observedAtNs ? created : observedAtNs;
    let address = this.addresses.get(ip);
    if (address === undefined) {
      this.addresses.set(ip, (address = new AddressHistory()));
      this.unknown.version++;
    }
    for (const other of address.leases) {
      if (other.toNs !== undefined && other.closedInApply < this.applyCount && other.toNs > fromNs) fromNs = other.toNs;
    }
    if (fromNs > observedAtNs) fromNs = observedAtNs;
    const lease = new Lease(ip, record, fromNs);
    address.leases.push(lease);
    address.version++;
    record.openLeases.set(ip, lease);
    record.leasedAddresses.add(ip);
  }

  private closeLease(lease: Lease, endNs: bigint): void {
    lease.toNs = endNs > lease.fromNs ? endNs : lease.fromNs;
    lease.closedInApply = this.applyCount;
    lease.record.openLeases.delete(lease.ip);
    this.closedLeases.push(lease);
    this.touchAddress(lease.ip);
  }

  private addressEndpoint(ip: string): Endpoint {
    const cached = this.addressEndpoints.get(ip);
    if (cached !== undefined) return cached;
    const service = this.servicesByIp.get(ip);
    if (service !== undefined) {
      const { namespace, name } = service.metadata;
      const endpoint = frozenEndpoint({ ip, namespace, service: nsName(namespace, name) });
      this.addressEndpoints.set(ip, endpoint);
      return endpoint;
    }
    const node = this.nodesByIp.get(ip);
    if (node !== undefined) {
      const endpoint = frozenEndpoint({ ip, node: node.metadata.name });
      this.addressEndpoints.set(ip, endpoint);
      return endpoint;
    }
    // Not cached here: world addresses are unbounded; the Enricher's cache is bounded.
    return frozenEndpoint({ ip, world: true });
  }

  /** Forgets what ended more than the retention ago; runs at most 16 times per retention. */
  private prune(): void {
    if (this.latestObservedNs - this.lastPruneNs < this.retentionNs / 16n) return;
    this.lastPruneNs = this.latestObservedNs;
    const cutoff = this.latestObservedNs - this.retentionNs;
    const expired = new Set<Lease>();
    const kept: Lease[] = [];
    for (const lease of this.closedLeases) {
      if (lease.toNs !== undefined && lease.toNs < cutoff) expired.add(lease);
      else kept.push(lease);
    }
    this.closedLeases = kept;
    const touched = new Set<string>();
    for (const lease of expired) touched.add(lease.ip);
    for (const ip of touched) {
      const address = this.addresses.get(ip);
      if (address === undefined) continue;
      address.leases = address.leases.filter((l) => !expired.has(l));
      address.version++;
      if (address.leases.length === 0) {
        this.addresses.delete(ip);
        this.unknown.version++;
      }
    }
    const stillDeleted: PodRecord[] = [];
    let forgotten = false;
    for (const record of this.deletedPods) {
      if (record.deletedAtNs === undefined) continue; // came back
      if (record.deletedAtNs < cutoff) {
        if (this.podsById.get(record.id) === record) { this.podsById.delete(record.id); forgotten = true; }
      } else {
        stillDeleted.push(record);
      }
    }
    this.deletedPods = stillDeleted;
    if (expired.size > 0 || forgotten) this.generation++;
  }
}
