// Request filters (FlowFilter allow lists) and time bounds as a DuckDB WHERE clause over a
// day table of `duckdb.ts`, for the engine to read less. The clause is a superset of the
// exact answer: fields it cannot express (labels, workloads, Services, addresses) and deny
// filters are left to the exact predicate the store applies to every row it returns.
//
// No value a caller sent reaches the engine: names (namespaces, pods, nodes) become the
// dictionary ids that match them, and those and the numbers travel as prepared-statement
// parameters (`?`); the SQL text is built only from this file's literals.

import type { Endpoint, Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { TrafficDirection, type FlowFilter } from "../../proto/gen/bulkhead/v1/observer.js";
import { protocolNumber } from "./filter.js";

/** A value of a `?` parameter: ns bounds are bigints (beyond a double's exact integers). */
export type SqlParam = string | number | bigint;

export interface SqlCondition {
  sql: string;
  params: SqlParam[];
}

/** The SQL of a field the row stores packed with others (schema 2, `PACK` in duckdb.ts). */
export type PackedFields = (field: "sport" | "dport" | "proto" | "verdict" | "point") => string;

/**
 * The store's dictionaries, held whole in memory: filter values on endpoints and strings
 * become the ids that match them, so the engine compares integers (a list of ids is ~10x
 * faster in DuckDB than a subquery on the dictionary table) and never sees a value.
 */
export interface Dictionaries {
  /** Ids of the endpoints for which `match` holds. */
  endpointIds(match: (e: Endpoint) => boolean): number[];
  /** Ids of these strings. */
  stringIds(values: readonly string[]): number[];
}

function idsIn(column: string, ids: readonly number[], params: SqlParam[]): string {
  if (ids.length === 0) return "FALSE";
  params.push(...ids);
  return `${column} IN (${ids.map(() => "?").join(", ")})`;
}

/** A pod value ("ns/name", "name", "ns/*", "prefix*") as a test on an endpoint. */
function podMatcher(value: string): (e: Endpoint) => boolean {
  const slash = value.indexOf("/");
  const namespace = slash >= 0 ? value.slice(0, slash) : undefined;
  const name = slash >= 0 ? value.slice(slash + 1) : value;
  const prefix = name.endsWith("*") ? name.slice(0, -1) : undefined;
  return (e) => e.podName !== "" && (namespace === undefined || e.namespace === namespace)
    && (prefix !== undefined ? e.podName.startsWith(prefix) : e.podName === name);
}

/** One allow filter as an AND of the fields this file can express; undefined when it narrows nothing. */
function filterCondition(f: Partial<FlowFilter>, d: Dictionaries, packed: PackedFields, params: SqlParam[]): string | undefined {
  const parts: string[] = [];
  const ends = (match: (e: Endpoint) => boolean, columns: readonly string[]) => {
    const ids = d.endpointIds(match);
    const tests = columns.map((c) => idsIn(c, ids, params));
    return tests.length === 1 ? tests[0]! : `(${tests.join(" OR ")})`;
  };
  const inNamespaces = (values: readonly string[]) => (e: Endpoint) => values.includes(e.namespace);
  const inPods = (values: readonly string[]) => {
    const matchers = values.map(podMatcher);
    return (e: Endpoint) => matchers.some((m) => m(e));
  };
  if (f.namespace?.length) parts.push(ends(inNamespaces(f.namespace), ["src_ep", "dst_ep"]));
  if (f.sourceNamespace?.length) parts.push(ends(inNamespaces(f.sourceNamespace), ["src_ep"]));
  if (f.destinationNamespace?.length) parts.push(ends(inNamespaces(f.destinationNamespace), ["dst_ep"]));
  if (f.pod?.length) parts.push(ends(inPods(f.pod), ["src_ep", "dst_ep"]));
  if (f.sourcePod?.length) parts.push(ends(inPods(f.sourcePod), ["src_ep"]));
  if (f.destinationPod?.length) parts.push(ends(inPods(f.destinationPod), ["dst_ep"]));
  if (f.port?.length) parts.push(`(${idsIn(packed("sport"), f.port, params)} OR ${idsIn(packed("dport"), f.port, params)})`);
  if (f.sourcePort?.length) parts.push(idsIn(packed("sport"), f.sourcePort, params));
  if (f.destinationPort?.length) parts.push(idsIn(packed("dport"), f.destinationPort, params));
  if (f.protocol?.length) parts.push(idsIn(packed("proto"), f.protocol.map((p) => protocolNumber("protocol", p)), params));
  if (f.verdict?.length) parts.push(idsIn(packed("verdict"), f.verdict.map((v: Verdict) => v), params));
  if (f.node?.length) parts.push(idsIn("node", d.stringIds(f.node), params));
  if (f.direction?.length) {
    // INGRESS = observed entering the pod (TO_POD = 2), EGRESS = leaving it (FROM_POD = 1).
    parts.push(idsIn(packed("point"), f.direction.map((dir) => dir === TrafficDirection.TRAFFIC_DIRECTION_INGRESS ? 2
      : dir === TrafficDirection.TRAFFIC_DIRECTION_EGRESS ? 1 : -1), params));
  }
  return parts.length === 0 ? undefined : parts.join(" AND ");
}

/** Bounds in ns since the epoch, compared exactly with the rows' `start_time` and `end_time`. */
export interface TimeBounds {
  /** Records ending at or after this. */
  sinceNs?: bigint;
  /** Records starting at or before this. */
  untilNs?: bigint;
  /** Records ending at or before this. */
  endNotAfterNs?: bigint;
}

/**
 * The WHERE clause (without the keyword; "TRUE" when nothing narrows) for the allow
 * filters and time bounds. The time bounds are exact; the filters a superset.
 */
export function whereClause(allow: readonly Partial<FlowFilter>[], time: TimeBounds, dictionaries: Dictionaries, packed: PackedFields): SqlCondition {
  const params: SqlParam[] = [];
  const parts: string[] = [];
  if (time.sinceNs !== undefined) { parts.push("end_time >= ?"); params.push(time.sinceNs); }
  if (time.untilNs !== undefined) { parts.push("start_time <= ?"); params.push(time.untilNs); }
  if (time.endNotAfterNs !== undefined) { parts.push("end_time <= ?"); params.push(time.endNotAfterNs); }
  if (allow.length > 0) {
    // An allow filter that narrows nothing lets every row through: then the OR is TRUE.
    const alternatives: SqlCondition[] = [];
    for (const f of allow) {
      const own: SqlParam[] = [];
      const c = filterCondition(f, dictionaries, packed, own);
      if (c === undefined) break;
      alternatives.push({ sql: `(${c})`, params: own });
    }
    if (alternatives.length === allow.length) {
      parts.push(`(${alternatives.map((a) => a.sql).join(" OR ")})`);
      for (const a of alternatives) params.push(...a.params);
    }
  }
  return { sql: parts.length === 0 ? "TRUE" : parts.join(" AND "), params };
}
