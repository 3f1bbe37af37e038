// Request filters (FlowFilter allow lists) and time bounds as a DuckDB WHERE clause over a
// day table of `duckdb.ts`, for the engine to read less. The clause is a superset of the
// exact answer: fields it cannot express (labels, workloads, Services, addresses) and deny
// filters are left to the exact predicate the store applies to every row it returns.
//
// Every value a caller sent travels as a prepared-statement parameter (`?`); the SQL text
// is built only from this file's literals, so no filter value can change the statement.

import { type Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { TrafficDirection, type FlowFilter } from "../../proto/gen/bulkhead/v1/observer.js";
import { protocolNumber } from "./filter.js";

export interface SqlCondition {
  sql: string;
  params: (string | number)[];
}

/** The endpoint ids whose column `column` matches `where` (the endpoints dictionary). */
function endpointIn(column: string, where: string): string {
  return `${column} IN (SELECT id FROM endpoints WHERE ${where})`;
}

/** `column` is one of the dictionary strings `values`. */
function stringIn(column: string, values: readonly string[], params: (string | number)[]): string {
  params.push(...values);
  return `${column} IN (SELECT id FROM strings WHERE s IN (${values.map(() => "?").join(", ")}))`;
}

function numbersIn(column: string, values: readonly number[], params: (string | number)[]): string {
  params.push(...values);
  return `${column} IN (${values.map(() => "?").join(", ")})`;
}

/** Pod values ("ns/name", "name", "ns/*", "prefix*") as a condition on one end's endpoint id. */
function podsOf(column: string, values: readonly string[], params: (string | number)[]): string {
  const alternatives = values.map((value) => {
    const slash = value.indexOf("/");
    const namespace = slash >= 0 ? value.slice(0, slash) : undefined;
    const name = slash >= 0 ? value.slice(slash + 1) : value;
    const parts: string[] = ["pod_name <> ''"];
    if (namespace !== undefined) { parts.push("namespace = ?"); params.push(namespace); }
    if (name.endsWith("*")) { parts.push("starts_with(pod_name, ?)"); params.push(name.slice(0, -1)); }
    else { parts.push("pod_name = ?"); params.push(name); }
    return `(${parts.join(" AND ")})`;
  });
  return endpointIn(column, alternatives.join(" OR "));
}

function namespacesOf(column: string, values: readonly string[], params: (string | number)[]): string {
  params.push(...values);
  return endpointIn(column, `namespace IN (${values.map(() => "?").join(", ")})`);
}

/** One allow filter as an AND of the fields this file can express; undefined when it narrows nothing. */
function filterCondition(f: Partial<FlowFilter>, params: (string | number)[]): string | undefined {
  const parts: string[] = [];
  const either = (one: (column: string) => string) => `(${one("src_ep")} OR ${one("dst_ep")})`;
  if (f.namespace?.length) parts.push(either((c) => namespacesOf(c, f.namespace!, params)));
  if (f.sourceNamespace?.length) parts.push(namespacesOf("src_ep", f.sourceNamespace, params));
  if (f.destinationNamespace?.length) parts.push(namespacesOf("dst_ep", f.destinationNamespace, params));
  if (f.pod?.length) parts.push(either((c) => podsOf(c, f.pod!, params)));
  if (f.sourcePod?.length) parts.push(podsOf("src_ep", f.sourcePod, params));
  if (f.destinationPod?.length) parts.push(podsOf("dst_ep", f.destinationPod, params));
  if (f.port?.length) parts.push(`(${numbersIn("sport", f.port, params)} OR ${numbersIn("dport", f.port, params)})`);
  if (f.sourcePort?.length) parts.push(numbersIn("sport", f.sourcePort, params));
  if (f.destinationPort?.length) parts.push(numbersIn("dport", f.destinationPort, params));
  if (f.protocol?.length) parts.push(numbersIn("proto", f.protocol.map((p) => protocolNumber("protocol", p)), params));
  if (f.verdict?.length) parts.push(numbersIn("verdict", f.verdict.map((v: Verdict) => v), params));
  if (f.node?.length) parts.push(stringIn("node", f.node, params));
  if (f.direction?.length) {
    // INGRESS = observed entering the pod (TO_POD = 2), EGRESS = leaving it (FROM_POD = 1).
    parts.push(numbersIn("point", f.direction.map((d) => d === TrafficDirection.TRAFFIC_DIRECTION_INGRESS ? 2
      : d === TrafficDirection.TRAFFIC_DIRECTION_EGRESS ? 1 : -1), params));
  }
  return parts.length === 0 ? undefined : parts.join(" AND ");
}

export interface TimeBounds {
  /** Records ending at or after this (seconds since the epoch, fractional). */
  sinceS?: number;
  /** Records starting at or before this. */
  untilS?: number;
  /** Records ending before this. */
  endBeforeS?: number;
}

/**
 * The WHERE clause (without the keyword; "TRUE" when nothing narrows) for the allow
 * filters and time bounds. Time compares whole seconds, a superset of the exact bound.
 */
export function whereClause(allow: readonly Partial<FlowFilter>[], time: TimeBounds): SqlCondition {
  const params: (string | number)[] = [];
  const parts: string[] = [];
  if (time.sinceS !== undefined) { parts.push("end_s >= ?"); params.push(Math.floor(time.sinceS)); }
  if (time.untilS !== undefined) { parts.push("start_s <= ?"); params.push(Math.ceil(time.untilS)); }
  if (time.endBeforeS !== undefined) { parts.push("end_s <= ?"); params.push(Math.ceil(time.endBeforeS)); }
  if (allow.length > 0) {
    // An allow filter that narrows nothing lets every row through: then the OR is TRUE.
    const alternatives: SqlCondition[] = [];
    for (const f of allow) {
      const own: (string | number)[] = [];
      const c = filterCondition(f, own);
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
