// Who may see what: one access scope per request, computed in one place (requestScope) and
// honoured by every endpoint of the UI server. Today every request sees every namespace;
// namespace-scoped bearer tokens will plug in here.
import type { IncomingMessage } from "node:http";

export interface AccessScope {
  /** Every namespace, and peers outside any namespace. */
  readonly all: boolean;
  /** When not `all`: the namespaces this request may see. */
  readonly namespaces: ReadonlySet<string>;
}

export const EVERYTHING: AccessScope = Object.freeze({ all: true, namespaces: new Set<string>() });

/** The namespaces one request may see. The single place that decides it. */
export function requestScope(_request: IncomingMessage): AccessScope {
  return EVERYTHING;
}

export function scopeAllows(scope: AccessScope, namespace: string): boolean {
  return scope.all || scope.namespaces.has(namespace);
}

/** Flows, edges and details are visible when either end is in a visible namespace. */
export function scopeAllowsEnds(scope: AccessScope, sourceNamespace: string, destinationNamespace: string): boolean {
  return scope.all || scope.namespaces.has(sourceNamespace) || scope.namespaces.has(destinationNamespace);
}
