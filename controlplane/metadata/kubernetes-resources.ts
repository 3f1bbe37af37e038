// The Kubernetes resources the control plane reads: the Kubernetes API source watches
// exactly these, and deploy/'s ClusterRole grants list and watch on exactly these (a test
// compares the two). One entry per kind that metadata/objects.ts parses.
import type { KubeKind } from "./objects.js";

export interface WatchedResource {
  kind: KubeKind;
  /** API group; "" is the core group. */
  group: string;
  version: string;
  /** Plural resource name, as in the URL path and in RBAC rules. */
  resource: string;
  namespaced: boolean;
  /**
   * Served by a CustomResourceDefinition that may not be installed: a 404 means "none of
   * them", not an error (the source counts it as listed and looks again with backoff).
   */
  optionalCrd?: boolean;
}

export const WATCHED_RESOURCES: readonly WatchedResource[] = [
  { kind: "Namespace", group: "", version: "v1", resource: "namespaces", namespaced: false },
  { kind: "Node", group: "", version: "v1", resource: "nodes", namespaced: false },
  { kind: "Pod", group: "", version: "v1", resource: "pods", namespaced: true },
  { kind: "Service", group: "", version: "v1", resource: "services", namespaced: true },
  { kind: "EndpointSlice", group: "discovery.k8s.io", version: "v1", resource: "endpointslices", namespaced: true },
  { kind: "NetworkPolicy", group: "networking.k8s.io", version: "v1", resource: "networkpolicies", namespaced: true },
  // sig-network's network-policy-api CRD (deploy/README.md); absent in many clusters.
  { kind: "ClusterNetworkPolicy", group: "policy.networking.k8s.io", version: "v1alpha2", resource: "clusternetworkpolicies", namespaced: false, optionalCrd: true },
  // Owners, to name a pod's workload (Pod → ReplicaSet → Deployment, Pod → Job → CronJob).
  { kind: "ReplicaSet", group: "apps", version: "v1", resource: "replicasets", namespaced: true },
  { kind: "Deployment", group: "apps", version: "v1", resource: "deployments", namespaced: true },
  { kind: "StatefulSet", group: "apps", version: "v1", resource: "statefulsets", namespaced: true },
  { kind: "DaemonSet", group: "apps", version: "v1", resource: "daemonsets", namespaced: true },
  { kind: "Job", group: "batch", version: "v1", resource: "jobs", namespaced: true },
  { kind: "CronJob", group: "batch", version: "v1", resource: "cronjobs", namespaced: true },
];

/** The verbs the source uses on every watched resource (informers list, then watch; never get). */
export const WATCH_VERBS: readonly string[] = ["list", "watch"];
