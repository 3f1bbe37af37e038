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
  /** The namespace id an endpoint's rows carry in `cluster` (duckdb.ts `clusterOf`). */
  namespaceOf(endpointId: number): number;
}

/**
 * `cluster` (schema 3, duckdb.ts): verdict << 24 | lo << 12 | hi, lo ≤ hi the namespace
 * ids of the row's two ends, each at most NAMESPACE_MANY (which stands for that id and all
 * above it).
 */
export const NAMESPACE_MANY = 4095;
const VERDICT_MUL = 2 ** 24, LO_MUL = 2 ** 12;

/** A row's `cluster`, from its verdict (< 256) and its ends' namespace ids. */
export function clusterOf(verdict: number, namespaceA: number, namespaceB: number): number {
  return verdict * VERDICT_MUL + Math.min(namespaceA, namespaceB) * LO_MUL + Math.max(namespaceA, namespaceB);
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

/** One test of a filter on the row's ends: one of `columns` is an endpoint that `match` accepts. */
interface EndTest { match: (e: Endpoint) => boolean; columns: readonly string[] }

/** A filter's tests on the row's ends (namespaces, pods), each with the columns it reads. */
function endTests(f: Partial<FlowFilter>): EndTest[] {
  const inNamespaces = (values: readonly string[]) => (e: Endpoint) => values.includes(e.namespace);
  const inPods = (values: readonly string[]) => {
    const matchers = values.map(podMatcher);
    return (e: Endpoint) => matchers.some((m) => m(e));
  };
  const tests: EndTest[] = [];
  if (f.namespace?.length) tests.push({ match: inNamespaces(f.namespace), columns: ["src_ep", "dst_ep"] });
  if (f.sourceNamespace?.length) tests.push({ match: inNamespaces(f.sourceNamespace), columns: ["src_ep"] });
  if (f.destinationNamespace?.length) tests.push({ match: inNamespaces(f.destinationNamespace), columns: ["dst_ep"] });
  if (f.pod?.length) tests.push({ match: inPods(f.pod), columns: ["src_ep", "dst_ep"] });
  if (f.sourcePod?.length) tests.push({ match: inPods(f.sourcePod), columns: ["src_ep"] });
  if (f.destinationPod?.length) tests.push({ match: inPods(f.destinationPod), columns: ["dst_ep"] });
  return tests;
}

/** One allow filter as an AND of the fields this file can express; undefined when it narrows nothing. */
function filterCondition(f: Partial<FlowFilter>, d: Dictionaries, packed: PackedFields, params: SqlParam[]): string | undefined {
  const parts: string[] = [];
  for (const { match, columns } of endTests(f)) {
    const ids = d.endpointIds(match);
    const tests = columns.map((c) => idsIn(c, ids, params));
    parts.push(tests.length === 1 ? tests[0]! : `(${tests.join(" OR ")})`);
  }
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

/**
 * One range of `cluster` holding every row the allow filters can match, for the engine's
 * min/max zone maps on a closed day (rewritten in `cluster` order): a filter's verdicts
 * bound it, and each end test bounds lo by the largest namespace id of the endpoints it
 * accepts (a row with an end in namespace x has lo ≤ x). One BETWEEN, because the engine
 * skips row groups for a range but not for an OR of ranges. Undefined when some filter
 * names no verdict (the range would be everything).
 */
export function clusterRange(allow: readonly Partial<FlowFilter>[], d: Dictionaries): [number, number] | undefined {
  if (allow.length === 0) return undefined;
  let low = Infinity, high = -Infinity;
  for (const f of allow) {
    if (!f.verdict?.length) return undefined;
    let loMax = NAMESPACE_MANY;
    for (const { match } of endTests(f)) {
      let most = -1; // no endpoint accepted: the filter matches no row
      for (const id of d.endpointIds(match)) most = Math.max(most, d.namespaceOf(id));
      loMax = Math.min(loMax, most);
    }
    if (loMax < 0) continue;
    for (const v of f.verdict) {
      if (!(Number.isInteger(v) && v >= 0 && v < 256)) continue; // no row holds it
      low = Math.min(low, clusterOf(v, 0, 0));
      high = Math.max(high, v * VERDICT_MUL + loMax * LO_MUL + NAMESPACE_MANY);
    }
  }
  return low <= high ? [low, high] : [1, 0];
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
  const cluster = clusterRange(allow, dictionaries);
  // Typed as the column: a number parameter binds as BIGINT, and `CAST(cluster AS BIGINT)
  // BETWEEN` is an expression the scan evaluates on every row, where a comparison of the
  // column itself is checked against each row group's min/max and skips it (bench/README.md).
  if (cluster !== undefined) { parts.push("cluster BETWEEN CAST(? AS UINTEGER) AND CAST(? AS UINTEGER)"); params.push(...cluster); }
  return { sql: parts.length === 0 ? "TRUE" : parts.join(" AND "), params };
}
