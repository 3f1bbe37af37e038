// Workloads expand into pods named as Kubernetes names them, so that the control plane's
// owner resolution (pod → ReplicaSet → Deployment) sees what it would see in a cluster:
//   Deployment  <name>-<10 hex>-<5 chars>, owned by ReplicaSet <name>-<10 hex>
//   StatefulSet <name>-0, <name>-1, ...
//   DaemonSet   <name>-<5 chars>, one per node
// Names are derived from hashes, not random, so the same topology gives the same names.
import { digest } from "./addressing.js";
import { FieldError } from "../fields/reader.js";
import type { LabWorkload, OwnerRef } from "./state.js";
import type { PodSpec, Topology, WorkloadSpec } from "./topology.js";

/** The alphabet of Kubernetes' random name suffixes (no vowels, no look-alikes). */
const SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";

export interface PlannedPod extends PodSpec {
  container: string;
  owner?: OwnerRef;
}

export interface ExpandedTopology {
  workloads: LabWorkload[];
  /** Topology pods first, then workload pods in workload order. */
  pods: PlannedPod[];
}

/** `source` names the topology in errors (a generated pod name that another pod already has). */
export function expandTopology(topology: Topology, newUid: () => string, now: string, source = "topology"): ExpandedTopology {
  const pods: PlannedPod[] = topology.pods.map((p) => ({ ...p, container: p.name }));
  const where = new Map(topology.pods.map((p, i) => [`${p.namespace}/${p.name}`, `pods[${i}]`]));
  const workloads: LabWorkload[] = [];
  topology.workloads.forEach((spec, i) => {
    const workload = workloadObject(spec, newUid(), now);
    if (workload.replicaSet) workload.replicaSet.uid = newUid();
    workloads.push(workload);
    for (const pod of workloadPods(spec, workload, topology.nodes)) {
      const key = `${pod.namespace}/${pod.name}`;
      const other = where.get(key);
      if (other !== undefined) throw new FieldError(source, `workloads[${i}]`, `creates pod ${key}, which ${other} also names`);
      where.set(key, `workloads[${i}]`);
      pods.push(pod);
    }
  });
  return { workloads, pods };
}

function workloadObject(spec: WorkloadSpec, uid: string, now: string): LabWorkload {
  const templateHash = digest(JSON.stringify([spec.kind, spec.namespace, spec.name, spec.labels, spec.ports])).slice(0, 10);
  const workload: LabWorkload = {
    kind: spec.kind,
    namespace: spec.namespace,
    name: spec.name,
    uid,
    labels: spec.labels,
    replicas: spec.replicas,
    ports: spec.ports,
    templateHash,
    creationTimestamp: now,
  };
  if (spec.kind === "Deployment") workload.replicaSet = { name: `${spec.name}-${templateHash}`, uid: "" };
  return workload;
}

function workloadPods(spec: WorkloadSpec, workload: LabWorkload, nodes: readonly string[]): PlannedPod[] {
  const base = { namespace: spec.namespace, ports: spec.ports, container: spec.name };
  const hash = workload.templateHash;
  switch (spec.kind) {
    case "Deployment": {
      const rs = workload.replicaSet;
      if (!rs) throw new Error(`Deployment ${spec.namespace}/${spec.name} without a ReplicaSet`);
      const owner: OwnerRef = { apiVersion: "apps/v1", kind: "ReplicaSet", name: rs.name, uid: rs.uid };
      return range(spec.replicas).map((i) => withNode({
        ...base,
        name: `${rs.name}-${nameSuffix(`${spec.namespace}/${spec.name}/${i}`)}`,
        labels: { ...spec.labels, "pod-template-hash": hash },
        owner,
      }, spec.node));
    }
    case "StatefulSet": {
      const owner: OwnerRef = { apiVersion: "apps/v1", kind: "StatefulSet", name: spec.name, uid: workload.uid };
      return range(spec.replicas).map((i) => withNode({
        ...base,
        name: `${spec.name}-${i}`,
        labels: {
          ...spec.labels,
          "apps.kubernetes.io/pod-index": String(i),
          "controller-revision-hash": `${spec.name}-${hash}`,
          "statefulset.kubernetes.io/pod-name": `${spec.name}-${i}`,
        },
        owner,
      }, spec.node));
    }
    case "DaemonSet": {
      const owner: OwnerRef = { apiVersion: "apps/v1", kind: "DaemonSet", name: spec.name, uid: workload.uid };
      return nodes.map((node) => ({
        ...base,
        name: `${spec.name}-${nameSuffix(`${spec.namespace}/${spec.name}/${node}`)}`,
        node,
        labels: { ...spec.labels, "controller-revision-hash": hash, "pod-template-generation": "1" },
        owner,
      }));
    }
  }
}

function withNode(pod: PlannedPod, node: string | undefined): PlannedPod {
  return node === undefined ? pod : { ...pod, node };
}

/** Five characters from Kubernetes' suffix alphabet, derived from `seed`. */
export function nameSuffix(seed: string): string {
  const bytes = Buffer.from(digest(seed), "hex");
  let out = "";
  for (let i = 0; i < 5; i++) out += SUFFIX_ALPHABET[(bytes[i] ?? 0) % SUFFIX_ALPHABET.length];
  return out;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}
