// Flow filters (observer.proto FlowFilter) compiled once into predicates over FlowRecords.
//
// A filter matches when every non-empty field matches (AND); a field matches when any of
// its values matches (OR). Fields without source_/destination_ match when either end
// matches; each such field picks its end independently, so {namespace: [a], pod: [x]}
// also matches a flow from a pod x in namespace b to namespace a (as Hubble does).
//
// Per field:
//   namespace  the end's namespace (a Service address has its Service's namespace).
//   pod        "ns/name" or "name"; a trailing "*" matches a name prefix ("ns/*" = any pod
//              of ns). Only pod ends match.
//   label      a kubectl label selector over the end's pod labels. Only pod ends match, so
//              "!canary" means "a pod without the canary label", never the world.
//   workload   "ns/name", "name", "Kind/name" or "ns/Kind/name". The part before "/" is a
//              Kind when it starts with an upper-case letter (namespaces never do); Kinds
//              compare case-insensitively. A pod without an owner is workload Pod/<pod>.
//   service    "ns/name" or "name": the Service ClusterIP end (seen at the client's
//              FROM_POD, before DNAT); backend pods do not carry their Service.
//   ip         an address or CIDR, IPv4 or IPv6, against the packet's address (Layer3),
//              or the endpoint's address when the record has no Layer3.
//   port       the L4 port at that end (0..65535).
//   protocol   TCP, UDP, SCTP, ICMP / ICMPv4, ICMPv6 (any case), or an IANA number.
//   verdict    the record's verdict.
//   node       the node whose agent observed the record.
//   direction  INGRESS = observed at TO_POD, EGRESS = observed at FROM_POD.
//
// A request matches when it matches any allow filter (or there is none) and no deny filter.
// Empty strings and out-of-range numbers are rejected rather than silently matching nothing.

import type { Endpoint, FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { ObservationPoint, Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { TrafficDirection, type FlowFilter } from "../../proto/gen/bulkhead/v1/observer.js";
import { LabelSelectorError, parseLabelSelector, type LabelSelector } from "./selector.js";

/**
 * True when a record passes. The record may be a transient view of stored data (see
 * FlowHistory): a predicate must not keep a reference to it after returning.
 */
export type FlowPredicate = (record: FlowRecord) => boolean;

/** A filter value that cannot be compiled; the gRPC layer maps it to INVALID_ARGUMENT. */
export class FlowFilterError extends Error {
  constructor(readonly field: string, readonly value: string, readonly problem: string, readonly where = "") {
    super(`invalid flow filter${where === "" ? "" : ` ${where}`}: ${field} "${value}": ${problem}`);
    this.name = "FlowFilterError";
  }

  /** The same error, located in a request ("allow[1]"). */
  at(where: string): FlowFilterError {
    return new FlowFilterError(this.field, this.value, this.problem, where);
  }
}

// ---------------------------------------------------------------------------------------
// Addresses and CIDRs

/** A parsed address: IPv4 as one 32-bit word, IPv6 as four. */
type Address = { version: 4; word: number } | { version: 6; words: [number, number, number, number] };

/** Dotted-quad IPv4 to an unsigned 32-bit number, or -1. Leading zeros are refused (octal ambiguity). */
function parseIPv4(text: string): number {
  let value = 0;
  let part = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // a final "." closes the last part
    if (c === 46) {
      if (digits === 0 || part > 255) return -1;
      value = value * 256 + part;
      parts++;
      part = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1;
      part = part * 10 + (c - 48);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  return parts === 4 ? value : -1;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

function parseIPv6(text: string): [number, number, number, number] | undefined {
  if (text.includes("%")) return undefined; // zone indexes do not cross nodes
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? "";
      if (i === items.length - 1 && item.includes(".")) {
        const v4 = parseIPv4(item);
        if (v4 < 0) return undefined;
        out.push(Math.floor(v4 / 65536), v4 % 65536);
      } else if (HEX_GROUP.test(item)) {
        out.push(parseInt(item, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0] ?? "");
  const tail = halves.length === 2 ? groupsOf(halves[1] ?? "") : [];
  if (head === undefined || tail === undefined) return undefined;
  // An embedded IPv4 address may only end the address.
  if (halves.length === 2 && (halves[0] ?? "").includes(".")) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    groups = head;
  }
  const g = (i: number) => groups[i] ?? 0;
  return [g(0) * 65536 + g(1), g(2) * 65536 + g(3), g(4) * 65536 + g(5), g(6) * 65536 + g(7)];
}

function parseAddress(text: string): Address | undefined {
  if (text.includes(":")) {
    const words = parseIPv6(text);
    return words === undefined ? undefined : { version: 6, words };
  }
  const word = parseIPv4(text);
  return word < 0 ? undefined : { version: 4, word };
}

/** The bits of a 32-bit word kept by `bits` leading ones (0..32), as an unsigned number. */
function prefixMask(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
}

type AddressTest = (address: string) => boolean;

/** Compiles an address or CIDR filter value. */
function compileCidr(field: string, value: string): AddressTest {
  const slash = value.indexOf("/");
  const addressText = slash === -1 ? value : value.slice(0, slash);
  const address = parseAddress(addressText);
  if (address === undefined) {
    throw new FlowFilterError(field, value, `"${addressText}" is not an IPv4 or IPv6 address`);
  }
  const maxBits = address.version === 4 ? 32 : 128;
  let bits = maxBits;
  if (slash !== -1) {
    const bitsText = value.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(bitsText) || Number(bitsText) > maxBits) {
      throw new FlowFilterError(field, value,
        `prefix length "${bitsText}" must be a number from 0 to ${maxBits} for IPv${address.version}`);
    }
    bits = Number(bitsText);
  }
  if (address.version === 4) {
    // Host bits in the filter are ignored, as most CIDR parsers do.
    const mask = prefixMask(bits);
    const network = (address.word & mask) >>> 0;
    return (text) => {
      if (text.includes(":")) return false;
      const word = parseIPv4(text);
      return word >= 0 && ((word & mask) >>> 0) === network;
    };
  }
  const masks = [0, 1, 2, 3].map((i) => prefixMask(bits - 32 * i));
  const network = address.words.map((w, i) => (w & (masks[i] ?? 0)) >>> 0);
  return (text) => {
    if (!text.includes(":")) return false;
    const words = parseIPv6(text);
    if (words === undefined) return false;
    for (let i = 0; i < 4; i++) {
      if (((words[i]! & masks[i]!) >>> 0) !== network[i]) return false;
    }
    return true;
  };
}

// ---------------------------------------------------------------------------------------
// Endpoint matchers

type EndpointTest = (endpoint: Endpoint) => boolean;
type RecordTest = (record: FlowRecord) => boolean;

function anyOf<T>(tests: ((x: T) => boolean)[]): (x: T) => boolean {
  if (tests.length === 1) return tests[0]!;
  return (x) => {
    for (const test of tests) if (test(x)) return true;
    return false;
  };
}

function oneOfStrings(values: readonly string[], pick: (endpoint: Endpoint) => string): EndpointTest {
  if (values.length === 1) {
    const only = values[0]!;
    return (endpoint) => pick(endpoint) === only;
  }
  const set = new Set(values);
  return (endpoint) => set.has(pick(endpoint));
}

function requireText(field: string, value: string): void {
  if (value.trim() === "") throw new FlowFilterError(field, value, "an empty value matches nothing; leave the field out instead");
}

function podTest(field: string, value: string): EndpointTest {
  const parts = value.split("/");
  if (parts.length > 2) throw new FlowFilterError(field, value, `expected "namespace/name" or "name"`);
  const namespace = parts.length === 2 ? parts[0]! : undefined;
  let name = parts[parts.length - 1]!;
  if (namespace === "") throw new FlowFilterError(field, value, "the namespace before \"/\" is empty");
  const prefix = name.endsWith("*");
  if (prefix) name = name.slice(0, -1);
  if (name.includes("*")) throw new FlowFilterError(field, value, `"*" is only allowed at the end, as a prefix match`);
  if (name === "" && !prefix) throw new FlowFilterError(field, value, "the pod name is empty");
  return (endpoint) => {
    const pod = endpoint.podName;
    if (pod === "" || (namespace !== undefined && endpoint.namespace !== namespace)) return false;
    return prefix ? pod.startsWith(name) : pod === name;
  };
}

/** The workload an endpoint belongs to; a pod without an owner is its own workload. */
export function endpointWorkload(endpoint: Endpoint): { kind: string; name: string } | undefined {
  if (endpoint.workloadName !== "") return { kind: endpoint.workloadKind || "Pod", name: endpoint.workloadName };
  if (endpoint.podName !== "") return { kind: "Pod", name: endpoint.podName };
  return undefined;
}

function isKind(part: string): boolean {
  const first = part.charCodeAt(0);
  return first >= 65 && first <= 90; // Kinds are CamelCase; namespaces are lower-case DNS labels
}

function workloadTest(field: string, value: string): EndpointTest {
  const parts = value.split("/");
  if (parts.some((p) => p === "")) throw new FlowFilterError(field, value, `a part between "/" is empty`);
  let namespace: string | undefined;
  let kind: string | undefined;
  let name: string;
  if (parts.length === 1) {
    name = parts[0]!;
  } else if (parts.length === 2) {
    if (isKind(parts[0]!)) kind = parts[0]!.toLowerCase();
    else namespace = parts[0]!;
    name = parts[1]!;
  } else if (parts.length === 3) {
    namespace = parts[0]!;
    if (!isKind(parts[1]!)) {
      throw new FlowFilterError(field, value, `the middle part "${parts[1]}" must be a Kind such as Deployment`);
    }
    kind = parts[1]!.toLowerCase();
    name = parts[2]!;
  } else {
    throw new FlowFilterError(field, value, `expected "namespace/name", "name", "Kind/name" or "namespace/Kind/name"`);
  }
  // Same answer as endpointWorkload(), without an object per record.
  return (endpoint) => {
    const owned = endpoint.workloadName !== "";
    if ((owned ? endpoint.workloadName : endpoint.podName) !== name) return false;
    if (namespace !== undefined && endpoint.namespace !== namespace) return false;
    return kind === undefined || (owned && endpoint.workloadKind !== "" ? endpoint.workloadKind : "Pod").toLowerCase() === kind;
  };
}

function serviceTest(field: string, value: string): EndpointTest {
  const parts = value.split("/");
  if (parts.length > 2 || parts.some((p) => p === "")) {
    throw new FlowFilterError(field, value, `expected "namespace/name" or "name"`);
  }
  if (parts.length === 2) return (endpoint) => endpoint.service === value;
  const suffix = `/${value}`;
  return (endpoint) => endpoint.service.endsWith(suffix);
}

function labelTest(field: string, value: string): EndpointTest {
  let selector: LabelSelector;
  try {
    selector = parseLabelSelector(value);
  } catch (error) {
    if (error instanceof LabelSelectorError) throw new FlowFilterError(field, value, error.message);
    throw error;
  }
  return (endpoint) => endpoint.podName !== "" && selector.matches(endpoint.labels);
}

// ---------------------------------------------------------------------------------------
// Record-level fields

const PROTOCOLS: Readonly<Record<string, number>> = {
  tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv4: 1, icmpv6: 58,
};

/** The IANA number of a protocol filter value; throws FlowFilterError naming `field`. */
export function protocolNumber(field: string, value: string): number {
  const known = PROTOCOLS[value.toLowerCase()];
  if (known !== undefined) return known;
  if (/^[0-9]{1,3}$/.test(value) && Number(value) <= 255) return Number(value);
  throw new FlowFilterError(field, value, "unknown protocol; use TCP, UDP, SCTP, ICMPv4, ICMPv6 or a number 0-255");
}

function checkPort(field: string, port: unknown): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new FlowFilterError(field, String(port), "a port must be an integer from 0 to 65535");
  }
  return port;
}

const VERDICTS = new Set<number>([
  Verdict.VERDICT_UNSPECIFIED, Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT,
]);

type Side = "either" | "source" | "destination";

function endpointField(test: EndpointTest, side: Side): RecordTest {
  if (side === "source") return (r) => r.source !== undefined && test(r.source);
  if (side === "destination") return (r) => r.destination !== undefined && test(r.destination);
  return (r) => {
    const source = r.source;
    if (source !== undefined && test(source)) return true;
    const destination = r.destination;
    return destination !== undefined && test(destination);
  };
}

function addressField(test: AddressTest, side: Side): RecordTest {
  const sourceAddress = (r: FlowRecord) => r.ip?.source ?? r.source?.ip ?? "";
  const destinationAddress = (r: FlowRecord) => r.ip?.destination ?? r.destination?.ip ?? "";
  if (side === "source") return (r) => test(sourceAddress(r));
  if (side === "destination") return (r) => test(destinationAddress(r));
  return (r) => test(sourceAddress(r)) || test(destinationAddress(r));
}

function portField(ports: number[], side: Side): RecordTest {
  const set = new Set(ports);
  if (side === "source") return (r) => r.l4 !== undefined && set.has(r.l4.sourcePort);
  if (side === "destination") return (r) => r.l4 !== undefined && set.has(r.l4.destinationPort);
  return (r) => {
    const l4 = r.l4;
    return l4 !== undefined && (set.has(l4.sourcePort) || set.has(l4.destinationPort));
  };
}

type EndpointField = "namespace" | "pod" | "label" | "workload" | "service";

/** The filter keys and wire names of a field in its either-end, source and destination forms. */
function sides(base: string): { key: string; name: string; side: Side }[] {
  const upper = base.charAt(0).toUpperCase() + base.slice(1);
  return [
    { key: base, name: base, side: "either" },
    { key: `source${upper}`, name: `source_${base}`, side: "source" },
    { key: `destination${upper}`, name: `destination_${base}`, side: "destination" },
  ];
}

function strings(filter: Partial<FlowFilter>, key: string, name: string): string[] {
  const values: unknown = (filter as Record<string, unknown>)[key];
  if (values === undefined) return [];
  if (!Array.isArray(values)) throw new FlowFilterError(name, String(values), "expected a list of strings");
  return values.map((v: unknown) => {
    if (typeof v !== "string") throw new FlowFilterError(name, String(v), "expected a string");
    requireText(name, v);
    return v;
  });
}

const eachValue = (compile: (field: string, value: string) => EndpointTest) =>
  (field: string, values: string[]) => anyOf(values.map((v) => compile(field, v)));

const ENDPOINT_FIELDS: { base: EndpointField; cost: number; compile: (field: string, values: string[]) => EndpointTest }[] = [
  { base: "namespace", cost: 2, compile: (_field, values) => oneOfStrings(values, (e) => e.namespace) },
  { base: "service", cost: 3, compile: eachValue(serviceTest) },
  { base: "workload", cost: 3, compile: eachValue(workloadTest) },
  { base: "pod", cost: 3, compile: eachValue(podTest) },
  { base: "label", cost: 4, compile: eachValue(labelTest) },
];

function compileChecks(filter: Partial<FlowFilter>): { cost: number; test: RecordTest }[] {
  const checks: { cost: number; test: RecordTest }[] = [];

  const verdicts = filter.verdict ?? [];
  if (verdicts.length > 0) {
    for (const v of verdicts) {
      if (!VERDICTS.has(v)) throw new FlowFilterError("verdict", String(v), "not a known verdict (0-3)");
    }
    const set = new Set<number>(verdicts);
    checks.push({ cost: 0, test: (r) => set.has(r.verdict) });
  }

  const directions = filter.direction ?? [];
  if (directions.length > 0) {
    const points = pointsOf(directions);
    checks.push({ cost: 0, test: (r) => points.has(r.point) });
  }

  const protocols = strings(filter, "protocol", "protocol");
  if (protocols.length > 0) {
    const set = new Set(protocols.map((p) => protocolNumber("protocol", p)));
    checks.push({ cost: 1, test: (r) => r.l4 !== undefined && set.has(r.l4.protocol) });
  }

  for (const { key, name, side } of sides("port")) {
    const ports: unknown = (filter as Record<string, unknown>)[key];
    if (ports === undefined || (Array.isArray(ports) && ports.length === 0)) continue;
    if (!Array.isArray(ports)) throw new FlowFilterError(name, String(ports), "expected a list of ports");
    checks.push({ cost: 1, test: portField(ports.map((p: unknown) => checkPort(name, p)), side) });
  }

  const nodes = strings(filter, "node", "node");
  if (nodes.length > 0) {
    const set = new Set(nodes);
    checks.push({ cost: 1, test: (r) => set.has(r.node) });
  }

  for (const field of ENDPOINT_FIELDS) {
    for (const { key, name, side } of sides(field.base)) {
      const values = strings(filter, key, name);
      if (values.length === 0) continue;
      checks.push({ cost: field.cost, test: endpointField(field.compile(name, values), side) });
    }
  }

  for (const { key, name, side } of sides("ip")) {
    const values = strings(filter, key, name);
    if (values.length > 0) checks.push({ cost: 5, test: addressField(anyOf(values.map((v) => compileCidr(name, v))), side) });
  }

  return checks;
}

/** The observation points of traffic directions: INGRESS is seen at TO_POD, EGRESS at FROM_POD. */
function pointsOf(directions: readonly TrafficDirection[]): Set<number> {
  const points = new Set<number>();
  for (const d of directions) {
    if (d === TrafficDirection.TRAFFIC_DIRECTION_INGRESS) points.add(ObservationPoint.OBSERVATION_POINT_TO_POD);
    else if (d === TrafficDirection.TRAFFIC_DIRECTION_EGRESS) points.add(ObservationPoint.OBSERVATION_POINT_FROM_POD);
    else throw new FlowFilterError("direction", String(d), "use INGRESS (1) or EGRESS (2)");
  }
  return points;
}

/**
 * What every record passing `allow` has: when each allow filter names verdicts
 * (directions; namespaces, at either end or one), the union of them, the record's verdict
 * (point; the namespace of one of its ends) among them; otherwise the field is left out.
 * Deny filters only take records away, so they add nothing here. A store checks these on
 * its columns before it runs the request's predicate (FlowHistory's HistoryQuery).
 */
export function columnsRequired(allow: readonly Partial<FlowFilter>[]):
  { verdicts?: ReadonlySet<number>; points?: ReadonlySet<number>; namespaces?: ReadonlySet<string> } {
  const union = <T>(each: (f: Partial<FlowFilter>) => Iterable<T> | undefined): ReadonlySet<T> | undefined => {
    if (allow.length === 0) return undefined;
    const values = new Set<T>();
    for (const f of allow) {
      const named = each(f);
      if (named === undefined) return undefined;
      for (const v of named) values.add(v);
    }
    return values;
  };
  const verdicts = union((f) => (f.verdict ?? []).length > 0 ? f.verdict : undefined);
  const points = union((f) => (f.direction ?? []).length > 0 ? pointsOf(f.direction!) : undefined);
  // A namespace named at either end or at one of them: the record has an end in it.
  const namespaces = union((f) => {
    const named = [...(f.namespace ?? []), ...(f.sourceNamespace ?? []), ...(f.destinationNamespace ?? [])];
    return named.length > 0 ? named : undefined;
  });
  return { ...(verdicts !== undefined ? { verdicts } : {}), ...(points !== undefined ? { points } : {}), ...(namespaces !== undefined ? { namespaces } : {}) };
}

/** Compiles one filter; throws FlowFilterError naming the field and value. `where` (e.g. "allow[0]") locates it in a request. */
export function compileFilter(filter: Partial<FlowFilter>, where = ""): FlowPredicate {
  let checks: { cost: number; test: RecordTest }[];
  try {
    checks = compileChecks(filter);
  } catch (error) {
    if (error instanceof FlowFilterError && where !== "") throw error.at(where);
    throw error;
  }
  // Cheap checks first: most queries narrow by verdict, direction or namespace.
  checks.sort((a, b) => a.cost - b.cost);
  const tests = checks.map((c) => c.test);
  switch (tests.length) {
    case 0: return () => true;
    case 1: return tests[0]!;
    case 2: {
      const [a, b] = tests as [RecordTest, RecordTest];
      return (r) => a(r) && b(r);
    }
    default:
      return (r) => {
        for (const test of tests) if (!test(r)) return false;
        return true;
      };
  }
}

/** A GetFlows request's filters: any allow filter (or none) and no deny filter. */
export function compileRequest(allow: readonly Partial<FlowFilter>[], deny: readonly Partial<FlowFilter>[]): FlowPredicate {
  const allows = allow.map((f, i) => compileFilter(f, `allow[${i}]`));
  const denies = deny.map((f, i) => compileFilter(f, `deny[${i}]`));
  const allowed: FlowPredicate = allows.length === 0 ? () => true : anyOf(allows);
  if (denies.length === 0) return allowed;
  const denied = anyOf(denies);
  return (r) => allowed(r) && !denied(r);
}
