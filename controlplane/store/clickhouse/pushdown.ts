// A GetFlows request's filters (filter.ts semantics) as a ClickHouse WHERE condition over
// the `flows` columns (rows.ts), so the server reads only what may match. The condition
// is exact for namespace, pod, service, node, verdict, direction, protocol and port; for
// workload and ip it is a superset (name only; address ranges that also admit rows kept as
// text); labels are not pushed down. The store applies the exact predicate to every row
// it returns, so a superset only costs reading. A deny filter is pushed down only when
// its condition is exact (NOT of a superset would drop matching rows).
//
// Values reach SQL only through sql.ts's literal functions. compileRequest has validated
// the request already; a value this file cannot express is left to the predicate.
import { ObservationPoint } from "../../../proto/gen/bulkhead/v1/flow.js";
import { TrafficDirection, type FlowFilter } from "../../../proto/gen/bulkhead/v1/observer.js";
import { parseIp } from "../../../addresses/ip.js";
import { protocolNumber } from "../filter.js";
import { addressBytes, PRESENT } from "./rows.js";
import { sqlIn, sqlInt32, sqlString, sqlUInt } from "./sql.js";

interface Condition { sql: string; exact: boolean }

type Side = "src" | "dst";
const SIDES: readonly { key: string; sides: readonly Side[] }[] = [
  { key: "", sides: ["src", "dst"] }, { key: "source", sides: ["src"] }, { key: "destination", sides: ["dst"] },
];

const HAS_L4 = `bitAnd(present, ${PRESENT.l4}) != 0`;

function values<T>(filter: Partial<FlowFilter>, key: string): T[] {
  const v: unknown = (filter as Record<string, unknown>)[key];
  return Array.isArray(v) ? (v as T[]) : [];
}

const keyOf = (prefix: string, base: string) => prefix === "" ? base : `${prefix}${base.charAt(0).toUpperCase()}${base.slice(1)}`;
const either = (parts: string[]) => parts.length === 1 ? parts[0]! : `(${parts.join(" OR ")})`;

function podSql(side: Side, value: string): string {
  const slash = value.indexOf("/");
  const namespace = slash < 0 ? undefined : value.slice(0, slash);
  const name = slash < 0 ? value : value.slice(slash + 1);
  const ns = namespace === undefined ? "" : ` AND ${side}_namespace = ${sqlString(namespace)}`;
  if (name.endsWith("*")) return `(${side}_pod != '' AND startsWith(${side}_pod, ${sqlString(name.slice(0, -1))})${ns})`;
  return `(${side}_pod = ${sqlString(name)}${ns})`;
}

function serviceSql(side: Side, value: string): string {
  return value.includes("/") ? `${side}_service = ${sqlString(value)}` : `endsWith(${side}_service, ${sqlString(`/${value}`)})`;
}

/** Workload by its name alone (a pod without owner is its own workload): a superset. */
function workloadSql(side: Side, value: string): string {
  const name = value.slice(value.lastIndexOf("/") + 1);
  return `(${side}_workload_name = ${sqlString(name)} OR (${side}_workload_name = '' AND ${side}_pod = ${sqlString(name)}))`;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/** Rows whose address at `side` may fall in the CIDR: the packet's address or the endpoint's, or one kept as text. */
function ipSql(side: Side, value: string): string | undefined {
  const slash = value.indexOf("/");
  const ip = parseIp(slash < 0 ? value : value.slice(0, slash));
  if (ip === undefined) return undefined;
  const stored = addressBytes(ip.text);
  if (stored === undefined) return undefined;
  const bits = (slash < 0 ? ip.bytes.length * 8 : Number(value.slice(slash + 1))) + (ip.family === 4 ? 96 : 0);
  const lo = new Uint8Array(16);
  const hi = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - 8 * i));
    const mask = (0xff << (8 - keep)) & 0xff;
    lo[i] = stored.bytes[i]! & mask;
    hi[i] = lo[i]! | (~mask & 0xff);
  }
  const [packet, endpoint, rawBits] = side === "src" ? ["ip_src", "src_ip", 0b0101] : ["ip_dst", "dst_ip", 0b1010];
  const inRange = (column: string) => `(${column} >= unhex('${hex(lo)}') AND ${column} <= unhex('${hex(hi)}'))`;
  return `(${inRange(packet)} OR ${inRange(endpoint)} OR bitAnd(addr_flags, ${rawBits}) != 0)`;
}

function filterCondition(filter: Partial<FlowFilter>): Condition {
  const parts: string[] = [];
  let exact = true;

  const verdicts = values<number>(filter, "verdict");
  if (verdicts.length > 0) parts.push(sqlIn("verdict", verdicts.map(sqlInt32)));

  const directions = values<number>(filter, "direction");
  if (directions.length > 0) {
    const points = directions.map((d) => d === TrafficDirection.TRAFFIC_DIRECTION_INGRESS ? ObservationPoint.OBSERVATION_POINT_TO_POD
      : d === TrafficDirection.TRAFFIC_DIRECTION_EGRESS ? ObservationPoint.OBSERVATION_POINT_FROM_POD : undefined);
    if (points.every((p) => p !== undefined)) parts.push(sqlIn("point", points.map((p) => sqlInt32(p!))));
    else exact = false;
  }

  const nodes = values<string>(filter, "node");
  if (nodes.length > 0) parts.push(sqlIn("node", nodes.map(sqlString)));

  const protocols = values<string>(filter, "protocol");
  if (protocols.length > 0) parts.push(`(${HAS_L4} AND ${sqlIn("protocol", protocols.map((p) => sqlUInt(protocolNumber("protocol", p))))})`);

  for (const { key, sides } of SIDES) {
    const ports = values<number>(filter, keyOf(key, "port"));
    if (ports.length > 0) {
      const literals = ports.map(sqlUInt);
      parts.push(`(${HAS_L4} AND ${either(sides.map((s) => sqlIn(s === "src" ? "sport" : "dport", literals)))})`);
    }
    const namespaces = values<string>(filter, keyOf(key, "namespace"));
    if (namespaces.length > 0) parts.push(either(sides.map((s) => sqlIn(`${s}_namespace`, namespaces.map(sqlString)))));
    const pods = values<string>(filter, keyOf(key, "pod"));
    if (pods.length > 0) parts.push(either(sides.flatMap((s) => pods.map((p) => podSql(s, p)))));
    const services = values<string>(filter, keyOf(key, "service"));
    if (services.length > 0) parts.push(either(sides.flatMap((s) => services.map((v) => serviceSql(s, v)))));
    const workloads = values<string>(filter, keyOf(key, "workload"));
    if (workloads.length > 0) {
      parts.push(either(sides.flatMap((s) => workloads.map((w) => workloadSql(s, w)))));
      exact = false;
    }
    const ips = values<string>(filter, keyOf(key, "ip"));
    if (ips.length > 0) {
      const conditions = sides.flatMap((s) => ips.map((v) => ipSql(s, v)));
      if (conditions.every((c) => c !== undefined)) parts.push(either(conditions as string[]));
      exact = false;
    }
    if (values<string>(filter, keyOf(key, "label")).length > 0) exact = false;
  }
  return { sql: parts.length === 0 ? "1" : parts.join(" AND "), exact };
}

/** The request's condition (any allow, no deny) as SQL, or "1" when nothing can be pushed down. */
export function requestCondition(allow: readonly Partial<FlowFilter>[], deny: readonly Partial<FlowFilter>[]): string {
  const parts: string[] = [];
  const allows = allow.map(filterCondition);
  if (allows.length > 0 && !allows.some((c) => c.sql === "1")) parts.push(either(allows.map((c) => `(${c.sql})`)));
  for (const d of deny.map(filterCondition)) if (d.exact) parts.push(`NOT (${d.sql})`);
  return parts.length === 0 ? "1" : parts.join(" AND ");
}
