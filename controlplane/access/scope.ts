// What one caller may see, and the one rule every surface (gRPC Observer API, HTTP JSON
// API, web UI) applies with it: a namespace-scoped caller sees a flow, or a flow-map edge,
// only when at least one of its ends is in one of its namespaces; cluster-wide data
// (status, nodes, agents) needs a cluster-wide scope.
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import type { FlowFilter, MapEdge, MapNode } from "../../proto/gen/bulkhead/v1/observer.js";
import { namespaceOfMapNodeId, type EdgeKey } from "../store/flowmap.js";

export type Scope =
  | { readonly kind: "cluster"; readonly subject: string }
  | { readonly kind: "namespaces"; readonly subject: string; readonly namespaces: ReadonlySet<string> };

/** Subject of requests without a token where the operator allowed them. */
export const UNAUTHENTICATED_SUBJECT = "unauthenticated";

/** A refused request: 401 = no usable credentials (missing, malformed, unknown token); 403 = outside the scope. */
export class AccessError extends Error {
  constructor(readonly status: 401 | 403, message: string) {
    super(message);
    this.name = "AccessError";
  }
}

/** "every namespace" or "namespaces a, b": for messages and logs. */
export function describeScope(scope: Scope): string {
  if (scope.kind === "cluster") return "every namespace";
  const list = [...scope.namespaces].sort();
  return `${list.length === 1 ? "namespace" : "namespaces"} ${list.join(", ")}`;
}

export function namespaceReadable(scope: Scope, namespace: string): boolean {
  return scope.kind === "cluster" || scope.namespaces.has(namespace);
}

/** Undefined when the scope reads the namespace; else the 403 that names it. */
export function requireNamespace(scope: Scope, namespace: string): AccessError | undefined {
  if (namespaceReadable(scope, namespace)) return undefined;
  return new AccessError(403, `the token's scope does not include namespace ${namespace} (it reads ${describeScope(scope)})`);
}

/** Undefined for a cluster-wide scope; else the 403 that says what needs one. `what`: "cluster status", "the node list". */
export function requireCluster(scope: Scope, what: string): AccessError | undefined {
  if (scope.kind === "cluster") return undefined;
  return new AccessError(403, `the token's scope (${describeScope(scope)}) does not include ${what}, which is cluster-wide; it needs a token with namespaces ["*"]`);
}

/**
 * Undefined when the allow filters ask only for what the scope may read; else the 403
 * naming the first namespace outside it. `namespace` ("an end in X") must name scoped
 * namespaces only: asking for another namespace's flows is refused rather than answered
 * in part. A source_namespace outside the scope is fine when the same filter pins the
 * destination to scoped namespaces (flows from other into shop), and the reverse.
 * Deny filters only take flows away, so they may name any namespace. Other fields (pods,
 * workloads, addresses) need no check: the scope still applies to every flow.
 */
export function requireFlowFilters(scope: Scope, allow: readonly FlowFilter[]): AccessError | undefined {
  if (scope.kind === "cluster") return undefined;
  const allReadable = (list: readonly string[]) => list.length > 0 && list.every((ns) => scope.namespaces.has(ns));
  for (const f of allow) {
    const named = [
      ...f.namespace,
      ...(allReadable(f.destinationNamespace) ? [] : f.sourceNamespace),
      ...(allReadable(f.sourceNamespace) ? [] : f.destinationNamespace),
    ];
    for (const ns of named) {
      const refused = requireNamespace(scope, ns);
      if (refused) return refused;
    }
  }
  return undefined;
}

/** True when an end of the enriched record is in the scope (a Service address counts in its Service's namespace). */
export function flowInScope(scope: Scope, flow: FlowRecord): boolean {
  if (scope.kind === "cluster") return true; // without reading the ends: a stored row's are lookups
  return endsInScope(scope, flow.source?.namespace ?? "", flow.destination?.namespace ?? "");
}

/** The one rule: visible when either end's namespace ("" for none: outside, host) is readable. */
export function endsInScope(scope: Scope, sourceNamespace: string, destinationNamespace: string): boolean {
  if (scope.kind === "cluster") return true;
  return (sourceNamespace !== "" && scope.namespaces.has(sourceNamespace))
    || (destinationNamespace !== "" && scope.namespaces.has(destinationNamespace));
}

function edgeInScope(scope: Scope, source: string, destination: string): boolean {
  return endsInScope(scope, namespaceOfMapNodeId(source), namespaceOfMapNodeId(destination));
}

/**
 * A flow map (GetFlowMapResponse, or FlowMapChanges) cut to the scope: the edges with an
 * end in a scoped namespace, the nodes those edges join, and (for changes) only the
 * removals of such edges. Other fields are kept. Returns the same object for a cluster-wide scope.
 */
export function restrictFlowMap<M extends { nodes: MapNode[]; edges: MapEdge[]; removed?: EdgeKey[] }>(scope: Scope, map: M): M {
  if (scope.kind === "cluster") return map;
  const edges = map.edges.filter((e) => edgeInScope(scope, e.source, e.destination));
  const ends = new Set(edges.flatMap((e) => [e.source, e.destination]));
  const restricted: M = { ...map, edges, nodes: map.nodes.filter((n) => ends.has(n.id)) };
  if (map.removed !== undefined) restricted.removed = map.removed.filter((k) => edgeInScope(scope, k.source, k.destination));
  return restricted;
}
