// The JSON form of flow maps for the browser: counts as numbers (safe far beyond what a
// window holds), times as Unix milliseconds, kinds and verdict states as lower-case words.
// Edge ids are "<source>,<destination>,<protocol>,<port>" (map node ids hold no comma),
// the same form `details?edge=` takes.
import type { EdgeKey } from "../store/flowmap.js";
import { MapNodeKind, type GetFlowMapResponse, type MapEdge, type MapNode } from "../../proto/gen/bulkhead/v1/observer.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";
import { namespaceReadable, restrictFlowMap, type Scope } from "../access/index.js";
import type { ClusterState } from "../cluster/state.js";

export type NodeKindName = "workload" | "service" | "world" | "host" | "unknown";
/** dropped: some packets were dropped; audit: none dropped, some would have been; else forwarded. */
export type VerdictState = "forwarded" | "dropped" | "audit";

export interface MapNodeJson {
  id: string;
  kind: NodeKindName;
  namespace: string;
  name: string;
  workloadKind: string;
  pods: number;
  /** Services only, when the scope reads the Service's namespace: the workloads its selector's
   * live pods belong to (map node ids, sorted), so the UI draws client → Service → backend. */
  backends?: string[];
}

export interface MapEdgeJson {
  id: string;
  source: string;
  destination: string;
  protocol: string;
  port: number;
  flows: number;
  packets: number;
  bytes: number;
  forwarded: number;
  dropped: number;
  audit: number;
  verdict: VerdictState;
  firstSeen: number;
  lastSeen: number;
}

export interface MapJson {
  version: number;
  namespace: string;
  window: string;
  since: number;
  until: number;
  nodes: MapNodeJson[];
  edges: MapEdgeJson[];
}

export interface MapDeltaJson {
  version: number;
  /** New or changed edges, with their totals over the window. */
  edges: MapEdgeJson[];
  /** Both ends of every edge in `edges`. */
  nodes: MapNodeJson[];
  /** Ids of edges gone from the window (idle longer than it, or expired from the store). */
  removed: string[];
}

const KIND_NAMES: Readonly<Record<number, NodeKindName>> = {
  [MapNodeKind.MAP_NODE_KIND_WORKLOAD]: "workload",
  [MapNodeKind.MAP_NODE_KIND_SERVICE]: "service",
  [MapNodeKind.MAP_NODE_KIND_WORLD]: "world",
  [MapNodeKind.MAP_NODE_KIND_HOST]: "host",
};

export function msOf(t: Timestamp | undefined): number {
  return t === undefined ? 0 : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
}

export function edgeId(key: EdgeKey): string {
  return `${key.source},${key.destination},${key.protocol},${key.port}`;
}

/** A Service's backends as map node ids (see MapNodeJson.backends). */
export type BackendsOf = (namespace: string, service: string) => string[];

/** Backends from the cluster state: the workloads of the pods the Service's selector picks now. */
export function backendsFromState(state: ClusterState): BackendsOf {
  return (namespace, name) => {
    const service = state.service(namespace, name);
    if (service === undefined) return [];
    const ids = state.podsSelectedBy(namespace, service.spec.selector).map((pod) => {
      const w = state.workloadOf(pod);
      return `workload:${namespace}/${w.kind}/${w.name}`;
    });
    return [...new Set(ids)].sort();
  };
}

export function nodeJson(node: MapNode, backendsOf?: BackendsOf, scope?: Scope): MapNodeJson {
  const json: MapNodeJson = {
    id: node.id, kind: KIND_NAMES[node.kind] ?? "unknown", namespace: node.namespace, name: node.name,
    workloadKind: node.workloadKind, pods: node.pods,
  };
  if (json.kind === "service" && backendsOf && (scope === undefined || namespaceReadable(scope, node.namespace))) {
    json.backends = backendsOf(node.namespace, node.name);
  }
  return json;
}

export function verdictState(edge: { dropped: bigint | number; audit: bigint | number }): VerdictState {
  if (Number(edge.dropped) > 0) return "dropped";
  if (Number(edge.audit) > 0) return "audit";
  return "forwarded";
}

export function edgeJson(edge: MapEdge): MapEdgeJson {
  return {
    id: edgeId(edge), source: edge.source, destination: edge.destination, protocol: edge.protocol, port: edge.port,
    flows: Number(edge.flows), packets: Number(edge.packets), bytes: Number(edge.bytes),
    forwarded: Number(edge.forwarded), dropped: Number(edge.dropped), audit: Number(edge.audit),
    verdict: verdictState(edge), firstSeen: msOf(edge.firstSeen), lastSeen: msOf(edge.lastSeen),
  };
}

/** The map as the scope may see it (restrictFlowMap: edges with an end in a readable namespace, and their ends). */
export function mapJson(map: GetFlowMapResponse, version: number, namespace: string, window: string, scope: Scope, backendsOf?: BackendsOf): MapJson {
  const visible = restrictFlowMap(scope, map);
  return {
    version, namespace, window, since: msOf(map.since), until: msOf(map.until),
    nodes: visible.nodes.map((n) => nodeJson(n, backendsOf, scope)), edges: visible.edges.map(edgeJson),
  };
}
