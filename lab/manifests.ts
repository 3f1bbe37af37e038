// Cluster state as ordinary Kubernetes YAML in `<stateDir>/manifests/`, the folder the
// control plane watches in place of the API server:
//   nodes.yaml        Node objects
//   ns-<name>.yaml    the Namespace, its workloads (Deployment, ReplicaSet, StatefulSet,
//                     DaemonSet), Pods, Services and EndpointSlices
// Only files whose content changed are rewritten, each via a temp file and a rename, so a
// watcher never reads half a file. Other files in the folder (e.g. NetworkPolicies written by
// a test) are left alone.
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { stringify } from "yaml";
import { digest } from "./addressing.js";
import { resolveTargetPort, selectedPods } from "./endpoints.js";
import { MANIFESTS_DIR, writeFileAtomic, type LabNode, type LabPod, type LabService, type LabState, type LabWorkload, type OwnerRef } from "./state.js";
import type { ContainerPort } from "./topology.js";
import { nameSuffix } from "./workloads.js";

type Doc = Record<string, unknown>;

const ANNOTATION_NETNS = "lab.bulkhead.io/netns";
const ANNOTATION_HOST_IFACE = "lab.bulkhead.io/host-iface";

export function manifestsDir(stateDir: string): string {
  return path.join(stateDir, MANIFESTS_DIR);
}

/** File name → content, for every file the lab owns. */
export function renderManifests(state: LabState): Map<string, string> {
  const files = new Map<string, string>();
  files.set("nodes.yaml", toYaml(state.nodes.map(nodeDoc)));
  for (const ns of state.namespaces) {
    const docs: Doc[] = [{
      apiVersion: "v1",
      kind: "Namespace",
      metadata: {
        name: ns.name,
        uid: ns.uid,
        creationTimestamp: ns.creationTimestamp,
        labels: { ...ns.labels, "kubernetes.io/metadata.name": ns.name },
        ...(ns.annotations && Object.keys(ns.annotations).length > 0 ? { annotations: ns.annotations } : {}),
      },
      spec: { finalizers: ["kubernetes"] },
      status: { phase: "Active" },
    }];
    const inNs = <T extends { namespace: string }>(items: readonly T[]) => items.filter((i) => i.namespace === ns.name);
    for (const w of inNs(state.workloads)) docs.push(...workloadDocs(w, state));
    for (const pod of inNs(state.pods)) docs.push(podDoc(pod, state));
    for (const svc of inNs(state.services)) docs.push(serviceDoc(svc));
    for (const svc of inNs(state.services)) docs.push(...endpointSliceDocs(svc, state.pods));
    files.set(`ns-${ns.name}.yaml`, toYaml(docs));
  }
  return files;
}

/** Writes what changed; removes `ns-*.yaml` of namespaces that no longer exist. */
export async function writeManifests(state: LabState): Promise<string[]> {
  const dir = manifestsDir(state.stateDir);
  await mkdir(dir, { recursive: true });
  const files = renderManifests(state);
  const written: string[] = [];
  for (const [name, content] of files) {
    const file = path.join(dir, name);
    const current = await readFile(file, "utf8").catch(() => undefined);
    if (current === content) continue;
    await writeFileAtomic(file, content);
    written.push(name);
  }
  for (const name of await readdir(dir)) {
    if (/^ns-.*\.yaml$/.test(name) && !files.has(name)) await rm(path.join(dir, name), { force: true });
  }
  return written;
}

function toYaml(docs: readonly Doc[]): string {
  return docs.map((d) => stringify(d, { lineWidth: 0, aliasDuplicateObjects: false })).join("---\n");
}

function nodeDoc(node: LabNode): Doc {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: node.name,
      uid: node.uid,
      creationTimestamp: node.creationTimestamp,
      labels: {
        "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
      },
      annotations: { [ANNOTATION_NETNS]: node.netns },
    },
    spec: { podCIDR: node.podCIDR, podCIDRs: [node.podCIDR, node.podCIDRv6] },
    status: {
      addresses: [
        { type: "InternalIP", address: node.ip },
        { type: "InternalIP", address: node.ipv6 },
        { type: "Hostname", address: node.name },
      ],
      conditions: [{
        type: "Ready",
        status: "True",
        reason: "KubeletReady",
        message: `lab node in netns ${node.netns}`,
        lastTransitionTime: node.creationTimestamp,
      }],
    },
  };
}

function ownerReference(owner: OwnerRef): Doc {
  return { apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true };
}

function containerDoc(name: string, ports: readonly ContainerPort[]): Doc {
  const c: Doc = { name, image: `lab.bulkhead.local/${name}:1.0`, imagePullPolicy: "IfNotPresent" };
  if (ports.length > 0) {
    c.ports = ports.map((p) => (p.name !== undefined
      ? { name: p.name, containerPort: p.port, protocol: p.protocol }
      : { containerPort: p.port, protocol: p.protocol }));
  }
  return c;
}

function workloadDocs(w: LabWorkload, state: LabState): Doc[] {
  const pods = state.pods.filter((p) => p.owner?.uid === (w.replicaSet?.uid ?? w.uid));
  const meta = { name: w.name, namespace: w.namespace, uid: w.uid, creationTimestamp: w.creationTimestamp, labels: w.labels };
  const template = (labels: Record<string, string>) => ({
    metadata: { labels },
    spec: { containers: [containerDoc(w.name, w.ports)] },
  });
  const ready = { replicas: pods.length, readyReplicas: pods.length, availableReplicas: pods.length };
  switch (w.kind) {
    case "Deployment": {
      const rs = w.replicaSet;
      const docs: Doc[] = [{
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { ...meta, annotations: { "deployment.kubernetes.io/revision": "1" } },
        spec: { replicas: w.replicas, selector: { matchLabels: w.labels }, template: template(w.labels) },
        status: { ...ready, updatedReplicas: pods.length, observedGeneration: 1 },
      }];
      if (rs) {
        const labels = { ...w.labels, "pod-template-hash": w.templateHash };
        docs.push({
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          metadata: {
            name: rs.name,
            namespace: w.namespace,
            uid: rs.uid,
            creationTimestamp: w.creationTimestamp,
            labels,
            annotations: { "deployment.kubernetes.io/revision": "1" },
            ownerReferences: [ownerReference({ apiVersion: "apps/v1", kind: "Deployment", name: w.name, uid: w.uid })],
          },
          spec: { replicas: w.replicas, selector: { matchLabels: labels }, template: template(labels) },
          status: { ...ready, fullyLabeledReplicas: pods.length, observedGeneration: 1 },
        });
      }
      return docs;
    }
    case "StatefulSet":
      return [{
        apiVersion: "apps/v1",
        kind: "StatefulSet",
        metadata: meta,
        spec: { replicas: w.replicas, serviceName: w.name, selector: { matchLabels: w.labels }, template: template(w.labels) },
        status: { ...ready, currentRevision: `${w.name}-${w.templateHash}`, updateRevision: `${w.name}-${w.templateHash}` },
      }];
    case "DaemonSet":
      return [{
        apiVersion: "apps/v1",
        kind: "DaemonSet",
        metadata: meta,
        spec: { selector: { matchLabels: w.labels }, template: template(w.labels) },
        status: {
          desiredNumberScheduled: state.nodes.length,
          currentNumberScheduled: pods.length,
          numberReady: pods.length,
          numberAvailable: pods.length,
        },
      }];
  }
}

function podDoc(pod: LabPod, state: LabState): Doc {
  const node = state.nodes.find((n) => n.name === pod.node);
  const metadata: Doc = {
    name: pod.name,
    namespace: pod.namespace,
    uid: pod.uid,
    creationTimestamp: pod.creationTimestamp,
    labels: pod.labels,
    annotations: { [ANNOTATION_NETNS]: pod.netns, [ANNOTATION_HOST_IFACE]: pod.hostIface },
  };
  if (pod.owner) metadata.ownerReferences = [ownerReference(pod.owner)];
  const condition = (type: string) => ({ type, status: "True", lastTransitionTime: pod.creationTimestamp });
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata,
    spec: {
      nodeName: pod.node,
      containers: [containerDoc(pod.container, pod.ports)],
      restartPolicy: "Always",
    },
    status: {
      phase: "Running",
      conditions: ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map(condition),
      hostIP: node?.ip,
      hostIPs: node ? [{ ip: node.ip }, { ip: node.ipv6 }] : [],
      podIP: pod.ip,
      podIPs: [{ ip: pod.ip }, { ip: pod.ipv6 }],
      startTime: pod.creationTimestamp,
      containerStatuses: [{
        name: pod.container,
        ready: true,
        started: true,
        restartCount: 0,
        image: `lab.bulkhead.local/${pod.container}:1.0`,
        state: { running: { startedAt: pod.creationTimestamp } },
      }],
    },
  };
}

function serviceDoc(svc: LabService): Doc {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: svc.name, namespace: svc.namespace, uid: svc.uid, creationTimestamp: svc.creationTimestamp },
    spec: {
      type: "ClusterIP",
      clusterIP: svc.clusterIP,
      clusterIPs: [svc.clusterIP],
      ipFamilies: ["IPv4"],
      ipFamilyPolicy: "SingleStack",
      selector: svc.selector,
      ports: svc.ports.map((p) => (p.name !== undefined
        ? { name: p.name, port: p.port, targetPort: p.targetPort, protocol: p.protocol }
        : { port: p.port, targetPort: p.targetPort, protocol: p.protocol })),
      sessionAffinity: "None",
    },
    status: { loadBalancer: {} },
  };
}

/**
 * One EndpointSlice per distinct set of resolved ports, as the EndpointSlice controller
 * does when a named targetPort resolves to different numbers on different pods. A Service
 * that selects nothing gets one empty slice. Ports resolve exactly as for the nftables rules
 * (endpoints.ts).
 */
function endpointSliceDocs(svc: LabService, pods: readonly LabPod[]): Doc[] {
  interface Group { ports: Doc[]; pods: LabPod[] }
  const groups = new Map<string, Group>();
  for (const pod of selectedPods(svc, pods)) {
    const ports = svc.ports.flatMap((p) => {
      const port = resolveTargetPort(p, pod);
      return port === undefined ? [] : [{ name: p.name ?? "", port, protocol: p.protocol }];
    });
    if (ports.length === 0) continue;
    const key = JSON.stringify(ports);
    const group: Group = groups.get(key) ?? { ports, pods: [] };
    group.pods.push(pod);
    groups.set(key, group);
  }
  const list: [string, Group][] = groups.size > 0 ? [...groups.entries()] : [["", { ports: [], pods: [] }]];
  return list.map(([key, group]) => {
    const seed = digest(`${svc.uid}/${key}`);
    const doc: Doc = {
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        name: `${svc.name}-${nameSuffix(seed)}`,
        namespace: svc.namespace,
        uid: uuidFrom(seed),
        creationTimestamp: svc.creationTimestamp,
        labels: {
          "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
          "kubernetes.io/service-name": svc.name,
        },
        ownerReferences: [ownerReference({ apiVersion: "v1", kind: "Service", name: svc.name, uid: svc.uid })],
      },
      addressType: "IPv4",
      endpoints: group.pods.map((pod) => ({
        addresses: [pod.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: pod.node,
        targetRef: { kind: "Pod", namespace: pod.namespace, name: pod.name, uid: pod.uid },
      })),
    };
    if (group.ports.length > 0) doc.ports = group.ports;
    return doc;
  });
}

/** A stable, well-formed UUID from a hash, so re-rendering does not change the file. */
function uuidFrom(seed: string): string {
  const h = seed.slice(0, 32).split("");
  h[12] = "5";
  h[16] = ((parseInt(h[16] ?? "0", 16) & 0x3) | 0x8).toString(16);
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20, 32)}`;
}
