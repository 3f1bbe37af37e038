// The flow store: label selectors, flow filters, the recent-flows history and the live
// flow map, over synthetic enriched FlowRecords.
import { describe, expect, it, vi } from "vitest";
import { seededRandom } from "./harness/seeded-random.js";
import {
  IpVersion, ObservationPoint, PolicyAttribution, ReporterSide, Verdict, type Endpoint, type FlowRecord,
} from "../proto/gen/bulkhead/v1/flow.js";
import { MapNodeKind, TrafficDirection, type FlowFilter, type MapEdge } from "../proto/gen/bulkhead/v1/observer.js";
import { LabelSelectorError, parseLabelSelector } from "../controlplane/store/selector.js";
import { FlowFilterError, columnsRequired, compileFilter, compileRequest } from "../controlplane/store/filter.js";
import { FlowHistory } from "../controlplane/store/history.js";
import { WideningColumn } from "../controlplane/store/widening-column.js";
import { FlowMapStore, edgeOfRecord, mapNodeOf } from "../controlplane/store/flowmap.js";
import { enrichedFromRecords } from "../controlplane/store/enriched-columns.js";

// ---------------------------------------------------------------------------------------
// Synthetic enriched endpoints and records

function pod(namespace: string, podName: string, ip: string, node: string, labels: Record<string, string>,
  workloadKind = "Deployment", workloadName = podName.replace(/-[0-9]+$/, "")): Endpoint {
  return { ip, namespace, podName, podUid: `uid-${namespace}-${podName}`, labels, workloadKind, workloadName, node, service: "", world: false };
}
function service(namespace: string, name: string, ip: string): Endpoint {
  return { ip, namespace, podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: `${namespace}/${name}`, world: false };
}
function world(ip: string): Endpoint {
  return { ip, namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: true };
}
function host(node: string, ip: string): Endpoint {
  return { ip, namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node, service: "", world: false };
}

const web1 = pod("shop", "web-1", "10.0.1.5", "node-a", { app: "web", tier: "front" });
const web2 = pod("shop", "web-2", "10.0.1.6", "node-a", { app: "web", tier: "front", canary: "true" });
const cart1 = pod("shop", "cart-1", "10.0.2.7", "node-b", { app: "cart" });
const db1 = pod("db", "postgres-0", "10.0.3.9", "node-b", { app: "postgres" }, "StatefulSet", "postgres");
const debug = pod("shop", "debug", "10.0.1.99", "node-a", { run: "debug" }, "", "");
const other1 = pod("other", "x-1", "10.0.9.1", "node-c", { app: "x" });
const other2 = pod("other", "y-1", "10.0.9.2", "node-c", { app: "y" });
const cartSvc = service("shop", "cart", "10.96.0.10");
const internet = world("203.0.113.9");
const nodeA = host("node-a", "192.168.0.10");
const v6a = pod("shop", "v6-1", "fd00::5", "node-a", { app: "v6" });
const v6b = pod("db", "v6db-1", "fd00:0:0:1::7", "node-b", { app: "v6db" });

const T0 = 1_700_000_070_000; // ms; 30 s into a minute
const FROM = ObservationPoint.OBSERVATION_POINT_FROM_POD;
const TO = ObservationPoint.OBSERVATION_POINT_TO_POD;

interface RecordSpec {
  src: Endpoint;
  dst: Endpoint;
  point: ObservationPoint;
  node?: string;
  sport?: number;
  dport?: number;
  proto?: number;
  packets?: number;
  bytes?: number;
  verdict?: Verdict;
  /** Milliseconds; start defaults to end - 500. */
  endMs?: number;
  startMs?: number;
  sequence?: number;
  flags?: { syn?: boolean; ack?: boolean };
  icmpType?: number;
}

const protocolNames: Record<number, string> = { 1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP" };

function ts(ms: number) {
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}

function record(spec: RecordSpec): FlowRecord {
  const proto = spec.proto ?? 6;
  const endMs = spec.endMs ?? T0;
  const observed = spec.point === FROM ? spec.src : spec.dst;
  const icmp = proto === 1 || proto === 58;
  return {
    startTime: ts(spec.startMs ?? endMs - 500),
    endTime: ts(endMs),
    node: spec.node ?? observed.node,
    point: spec.point,
    reporter: spec.point === FROM ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
    interface: `veth-${observed.podName}`,
    ifindex: 7,
    ip: {
      source: spec.src.ip, destination: spec.dst.ip,
      version: spec.src.ip.includes(":") ? IpVersion.IP_VERSION_IPV6 : IpVersion.IP_VERSION_IPV4,
    },
    l4: {
      protocol: proto,
      protocolName: protocolNames[proto] ?? String(proto),
      sourcePort: icmp ? 0 : spec.sport ?? 40000,
      destinationPort: icmp ? 0 : spec.dport ?? 8080,
      tcpFlags: proto === 6
        ? { fin: false, syn: spec.flags?.syn ?? false, rst: false, psh: true, ack: spec.flags?.ack ?? true, urg: false, ece: false, cwr: false }
        : undefined,
      icmpType: spec.icmpType ?? 0,
      icmpCode: 0,
    },
    packets: BigInt(spec.packets ?? 10),
    bytes: BigInt(spec.bytes ?? 1000),
    source: spec.src,
    destination: spec.dst,
    verdict: spec.verdict ?? Verdict.VERDICT_FORWARDED,
    verdictReason: 0,
    attribution: undefined,
    sequence: BigInt(spec.sequence ?? 0),
  };
}

const emptyFilter = (): FlowFilter => ({
  namespace: [], sourceNamespace: [], destinationNamespace: [], pod: [], sourcePod: [], destinationPod: [],
  label: [], sourceLabel: [], destinationLabel: [], workload: [], sourceWorkload: [], destinationWorkload: [],
  service: [], sourceService: [], destinationService: [], ip: [], sourceIp: [], destinationIp: [],
  port: [], sourcePort: [], destinationPort: [], protocol: [], verdict: [], node: [], direction: [],
});
const filter = (fields: Partial<FlowFilter>): FlowFilter => ({ ...emptyFilter(), ...fields });
const matches = (fields: Partial<FlowFilter>, r: FlowRecord) => compileFilter(filter(fields))(r);

// ---------------------------------------------------------------------------------------

describe("label selectors", () => {
  const sel = (s: string) => parseLabelSelector(s);

  it("= and == require the label with that value", () => {
    for (const s of ["app=web", "app==web", " app = web "]) {
      expect(sel(s).matches({ app: "web" })).toBe(true);
      expect(sel(s).matches({ app: "api" })).toBe(false);
      expect(sel(s).matches({})).toBe(false);
    }
  });

  it("!= matches another value or a missing label", () => {
    const s = sel("tier!=db");
    expect(s.matches({ tier: "front" })).toBe(true);
    expect(s.matches({})).toBe(true);
    expect(s.matches({ tier: "db" })).toBe(false);
  });

  it("in requires one of the values; notin allows none of them or a missing label", () => {
    const inSel = sel("env in (prod, staging)");
    expect(inSel.matches({ env: "prod" })).toBe(true);
    expect(inSel.matches({ env: "staging" })).toBe(true);
    expect(inSel.matches({ env: "dev" })).toBe(false);
    expect(inSel.matches({})).toBe(false);
    const notin = sel("env notin (dev)");
    expect(notin.matches({ env: "prod" })).toBe(true);
    expect(notin.matches({})).toBe(true);
    expect(notin.matches({ env: "dev" })).toBe(false);
  });

  it("a bare key requires the label, !key its absence, whatever the value", () => {
    expect(sel("canary").matches({ canary: "" })).toBe(true);
    expect(sel("canary").matches({ app: "web" })).toBe(false);
    expect(sel("!canary").matches({ app: "web" })).toBe(true);
    expect(sel("!canary").matches({ canary: "false" })).toBe(false);
  });

  it("all requirements must hold, and the canonical form is kubectl syntax", () => {
    const s = sel("app=web, tier!=db,env in (a,b),!canary,app.kubernetes.io/name");
    expect(s.toString()).toBe("app=web,tier!=db,env in (a,b),!canary,app.kubernetes.io/name");
    expect(s.requirements.map((r) => r.operator)).toEqual(["=", "!=", "in", "!exists", "exists"]);
    const labels = { app: "web", tier: "front", env: "b", "app.kubernetes.io/name": "shop" };
    expect(s.matches(labels)).toBe(true);
    expect(s.matches({ ...labels, canary: "x" })).toBe(false);
    expect(s.matches({ ...labels, env: "c" })).toBe(false);
  });

  it("an empty value is a value, and the empty selector matches everything", () => {
    expect(sel("k=").matches({ k: "" })).toBe(true);
    expect(sel("k=").matches({ k: "v" })).toBe(false);
    expect(sel("").matches({})).toBe(true);
    expect(sel("   ").requirements).toEqual([]);
  });

  it("does not mistake inherited object properties for labels", () => {
    expect(sel("constructor").matches({})).toBe(false);
    expect(sel("toString!=x").matches({})).toBe(true);
  });

  it.each([
    ["app=web,", /empty requirement after ","/],
    [",app=web", /empty requirement before ","/],
    ["tier!", /expected an operator .* after key "tier", found "!"/],
    ["env in (a", /missing "\)" to close the set of values for "env in"/],
    ["env in ()", /the set of values for "env in" is empty/],
    ["env in a", /expected "\(" after "in" for key "env", found "a"/],
    ["env notin (a b)", /expected "," or "\)" in the set for "env notin", found "b"/],
    ["=web", /expected a label key, found "="/],
    ["app web", /expected an operator .* after key "app", found "web"/],
    ["app=web tier=db", /expected "," between requirements, found "tier"/],
    ["x>1", /operator ">" is not supported/],
    ["-app=x", /key "-app" is not a valid label name/],
    ["app=-x", /value "-x" of key "app" is not a valid label value/],
    ["Example.com/app=x", /key "Example.com\/app" has an invalid prefix "Example.com"/],
    [`app=${"v".repeat(64)}`, /is not a valid label value/],
  ])("rejects %j naming the bad part", (text, message) => {
    let error: unknown;
    try { parseLabelSelector(text); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(LabelSelectorError);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).toContain(`label selector "${text}"`);
  });

  it("reports where the bad part is", () => {
    try {
      parseLabelSelector("app=web,tier!");
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(LabelSelectorError);
      expect((e as LabelSelectorError).position).toBe(12);
    }
  });
});

describe("flow filters", () => {
  const webToCart = record({ src: web1, dst: cart1, point: FROM, sport: 40001, dport: 8080 });
  const webToDb = record({ src: web1, dst: db1, point: TO, sport: 40002, dport: 5432, verdict: Verdict.VERDICT_DROPPED });
  const webToSvc = record({ src: web1, dst: cartSvc, point: FROM, sport: 40003, dport: 80 });
  const worldToWeb2 = record({ src: internet, dst: web2, point: TO, sport: 51000, dport: 443 });
  const v6 = record({ src: v6a, dst: v6b, point: FROM, proto: 17, sport: 5353, dport: 53 });
  const ping = record({ src: debug, dst: nodeA, point: FROM, proto: 1, icmpType: 8 });

  it("an empty filter matches everything", () => {
    for (const r of [webToCart, webToDb, worldToWeb2, v6, ping]) expect(matches({}, r)).toBe(true);
  });

  it("namespace matches either end; source_/destination_ only their end", () => {
    expect(matches({ namespace: ["db"] }, webToDb)).toBe(true);
    expect(matches({ namespace: ["shop"] }, webToDb)).toBe(true);
    expect(matches({ namespace: ["other"] }, webToDb)).toBe(false);
    expect(matches({ sourceNamespace: ["db"] }, webToDb)).toBe(false);
    expect(matches({ destinationNamespace: ["db"] }, webToDb)).toBe(true);
    expect(matches({ sourceNamespace: ["shop"], destinationNamespace: ["shop"] }, webToDb)).toBe(false);
    // A Service address belongs to its Service's namespace.
    expect(matches({ destinationNamespace: ["shop"] }, webToSvc)).toBe(true);
  });

  it("values of a field are ORed; fields are ANDed", () => {
    expect(matches({ namespace: ["other", "db"] }, webToDb)).toBe(true);
    expect(matches({ namespace: ["db"], verdict: [Verdict.VERDICT_FORWARDED] }, webToDb)).toBe(false);
    expect(matches({ namespace: ["db"], verdict: [Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED] }, webToDb)).toBe(true);
  });

  it("pod: ns/name, name, and a trailing * for a prefix; only pod ends match", () => {
    expect(matches({ pod: ["shop/web-1"] }, webToCart)).toBe(true);
    expect(matches({ pod: ["cart-1"] }, webToCart)).toBe(true);
    expect(matches({ pod: ["web"] }, webToCart)).toBe(false);
    expect(matches({ pod: ["web*"] }, webToCart)).toBe(true);
    expect(matches({ sourcePod: ["shop/we*"] }, webToCart)).toBe(true);
    expect(matches({ destinationPod: ["shop/we*"] }, webToCart)).toBe(false);
    expect(matches({ pod: ["other/web-1"] }, webToCart)).toBe(false);
    expect(matches({ pod: ["db/*"] }, webToDb)).toBe(true);
    expect(matches({ destinationPod: ["*"] }, webToSvc)).toBe(false);
  });

  it("label: a selector over pod labels; ends that are not pods never match", () => {
    expect(matches({ label: ["app=cart"] }, webToCart)).toBe(true);
    expect(matches({ sourceLabel: ["app=cart"] }, webToCart)).toBe(false);
    expect(matches({ sourceLabel: ["app=web,tier in (front)"] }, webToCart)).toBe(true);
    expect(matches({ label: ["!canary"] }, worldToWeb2)).toBe(false);
    expect(matches({ label: ["!canary"] }, webToCart)).toBe(true);
    expect(matches({ destinationLabel: ["canary"] }, worldToWeb2)).toBe(true);
  });

  it("workload: ns/name, name, Kind/name, ns/Kind/name; an ownerless pod is Pod/<name>", () => {
    expect(matches({ workload: ["shop/web"] }, webToCart)).toBe(true);
    expect(matches({ workload: ["web"] }, webToCart)).toBe(true);
    expect(matches({ workload: ["Deployment/web"] }, webToCart)).toBe(true);
    expect(matches({ workload: ["DEPLOYMENT/web"] }, webToCart)).toBe(true);
    expect(matches({ workload: ["StatefulSet/web"] }, webToCart)).toBe(false);
    expect(matches({ destinationWorkload: ["db/StatefulSet/postgres"] }, webToDb)).toBe(true);
    expect(matches({ sourceWorkload: ["db/StatefulSet/postgres"] }, webToDb)).toBe(false);
    // Lower-case first part is a namespace, and there is no namespace "deployment".
    expect(matches({ workload: ["deployment/web"] }, webToCart)).toBe(false);
    expect(matches({ workload: ["Pod/debug"] }, ping)).toBe(true);
  });

  it("service: ns/name or name, on the ClusterIP end", () => {
    expect(matches({ service: ["shop/cart"] }, webToSvc)).toBe(true);
    expect(matches({ destinationService: ["cart"] }, webToSvc)).toBe(true);
    expect(matches({ sourceService: ["cart"] }, webToSvc)).toBe(false);
    expect(matches({ service: ["other/cart"] }, webToSvc)).toBe(false);
    expect(matches({ service: ["cart"] }, webToCart)).toBe(false);
  });

  it("ip: addresses and CIDRs, IPv4 and IPv6", () => {
    expect(matches({ ip: ["10.0.2.7"] }, webToCart)).toBe(true);
    expect(matches({ ip: ["10.0.2.8"] }, webToCart)).toBe(false);
    expect(matches({ sourceIp: ["10.0.1.0/24"] }, webToCart)).toBe(true);
    expect(matches({ destinationIp: ["10.0.1.0/24"] }, webToCart)).toBe(false);
    expect(matches({ ip: ["0.0.0.0/0"] }, webToCart)).toBe(true);
    expect(matches({ ip: ["10.0.2.4/31"] }, webToCart)).toBe(false);
    expect(matches({ ip: ["10.0.2.6/31"] }, webToCart)).toBe(true);
    expect(matches({ ip: ["10.0.2.6/32"] }, webToCart)).toBe(false);
    expect(matches({ ip: ["10.0.2.4/30"] }, webToCart)).toBe(true);
    expect(matches({ ip: ["10.0.2.5/30"] }, webToCart)).toBe(true); // host bits are ignored
    expect(matches({ sourceIp: ["fd00::/64"] }, v6)).toBe(true);
    expect(matches({ destinationIp: ["fd00::/64"] }, v6)).toBe(false);
    expect(matches({ destinationIp: ["fd00:0:0:1::/64"] }, v6)).toBe(true);
    expect(matches({ sourceIp: ["fd00:0:0:0:0:0:0:5"] }, v6)).toBe(true);
    expect(matches({ ip: ["::/0"] }, webToCart)).toBe(false);
    expect(matches({ ip: ["0.0.0.0/0"] }, v6)).toBe(false);
    expect(matches({ ip: ["::ffff:10.0.2.7"] }, webToCart)).toBe(false);
  });

  it("port, protocol (any case or a number), verdict, node and direction", () => {
    expect(matches({ port: [8080] }, webToCart)).toBe(true);
    expect(matches({ port: [40001] }, webToCart)).toBe(true);
    expect(matches({ sourcePort: [8080] }, webToCart)).toBe(false);
    expect(matches({ destinationPort: [8080, 9090] }, webToCart)).toBe(true);
    expect(matches({ protocol: ["tcp"] }, webToCart)).toBe(true);
    expect(matches({ protocol: ["UDP"] }, webToCart)).toBe(false);
    expect(matches({ protocol: ["udp"] }, v6)).toBe(true);
    expect(matches({ protocol: ["icmpv4"] }, ping)).toBe(true);
    expect(matches({ protocol: ["ICMPv6"] }, ping)).toBe(false);
    expect(matches({ protocol: ["6"] }, webToCart)).toBe(true);
    expect(matches({ verdict: [Verdict.VERDICT_DROPPED] }, webToDb)).toBe(true);
    expect(matches({ verdict: [Verdict.VERDICT_DROPPED] }, webToCart)).toBe(false);
    expect(matches({ node: ["node-a"] }, webToCart)).toBe(true);
    expect(matches({ node: ["node-b"] }, webToCart)).toBe(false);
    expect(matches({ direction: [TrafficDirection.TRAFFIC_DIRECTION_EGRESS] }, webToCart)).toBe(true);
    expect(matches({ direction: [TrafficDirection.TRAFFIC_DIRECTION_INGRESS] }, webToCart)).toBe(false);
    expect(matches({ direction: [TrafficDirection.TRAFFIC_DIRECTION_INGRESS] }, webToDb)).toBe(true);
  });

  it("works on records without Layer4", () => {
    const bare: FlowRecord = { ...webToCart, l4: undefined };
    expect(matches({ port: [8080] }, bare)).toBe(false);
    expect(matches({ protocol: ["tcp"] }, bare)).toBe(false);
    expect(matches({ namespace: ["shop"] }, bare)).toBe(true);
  });

  it("a request passes records matching any allow filter and no deny filter", () => {
    const all = [webToCart, webToDb, webToSvc, worldToWeb2, v6, ping];
    const pass = (allow: Partial<FlowFilter>[], deny: Partial<FlowFilter>[]) =>
      all.filter(compileRequest(allow.map(filter), deny.map(filter)));
    expect(pass([], [])).toEqual(all);
    expect(pass([{ namespace: ["db"] }, { protocol: ["icmpv4"] }], [])).toEqual([webToDb, v6, ping]);
    expect(pass([], [{ verdict: [Verdict.VERDICT_FORWARDED] }])).toEqual([webToDb]);
    expect(pass([{ namespace: ["shop"] }], [{ destinationNamespace: ["db"] }, { destinationService: ["cart"] }]))
      .toEqual([webToCart, worldToWeb2, ping]);
    expect(pass([], [{}])).toEqual([]);
  });

  it("columnsRequired: the verdicts, points and namespaces every allow filter names (their union); left out when one names none", () => {
    const D = Verdict.VERDICT_DROPPED, A = Verdict.VERDICT_AUDIT;
    const IN = TrafficDirection.TRAFFIC_DIRECTION_INGRESS, OUT = TrafficDirection.TRAFFIC_DIRECTION_EGRESS;
    const sets = (allow: Partial<FlowFilter>[]) => {
      const r = columnsRequired(allow.map(filter));
      return { verdicts: r.verdicts && [...r.verdicts].sort(), points: r.points && [...r.points].sort() };
    };
    const namespaces = (allow: Partial<FlowFilter>[]) => {
      const r = columnsRequired(allow.map(filter)).namespaces;
      return r && [...r].sort();
    };
    expect(sets([])).toEqual({ verdicts: undefined, points: undefined });
    expect(sets([{ namespace: ["shop"] }])).toEqual({ verdicts: undefined, points: undefined });
    expect(namespaces([])).toBeUndefined();
    expect(namespaces([{ namespace: ["shop"] }])).toEqual(["shop"]);
    expect(namespaces([{ sourceNamespace: ["db"] }, { namespace: ["shop"], destinationNamespace: ["other"] }])).toEqual(["db", "other", "shop"]);
    expect(namespaces([{ namespace: ["shop"] }, { verdict: [D] }])).toBeUndefined();
    expect(sets([{ verdict: [D] }])).toEqual({ verdicts: [D], points: undefined });
    expect(sets([{ verdict: [D], direction: [IN] }, { verdict: [A], direction: [OUT, IN] }])).toEqual({ verdicts: [D, A], points: [FROM, TO].sort() });
    expect(sets([{ verdict: [D], direction: [IN] }, { namespace: ["shop"] }])).toEqual({ verdicts: undefined, points: undefined });
    expect(sets([{ verdict: [D] }, { direction: [IN] }])).toEqual({ verdicts: undefined, points: undefined });
    // Every record a request passes has them (deny filters only take records away).
    const all = [webToCart, webToDb, webToSvc, worldToWeb2, v6, ping];
    const allows: Partial<FlowFilter>[][] = [[{ verdict: [D] }], [{ direction: [IN] }, { direction: [OUT], verdict: [D] }], [{ verdict: [D, A], direction: [OUT] }],
      [{ namespace: ["shop"] }], [{ sourceNamespace: ["shop"] }, { destinationNamespace: ["db"], verdict: [D] }]];
    let checked = 0;
    for (const allow of allows) {
      const required = columnsRequired(allow.map(filter));
      for (const r of all.filter(compileRequest(allow.map(filter), [filter({ namespace: ["other"] })]))) {
        checked++;
        expect(required.verdicts?.has(r.verdict) ?? true).toBe(true);
        expect(required.points?.has(r.point) ?? true).toBe(true);
        expect(required.namespaces === undefined || required.namespaces.has(r.source?.namespace ?? "") || required.namespaces.has(r.destination?.namespace ?? "")).toBe(true);
      }
    }
    expect(checked).toBeGreaterThan(5);
  });

  it.each<[string, Partial<FlowFilter>, RegExp]>([
    ["a CIDR prefix beyond 32", { sourceIp: ["10.0.0.0/33"] }, /source_ip "10.0.0.0\/33": prefix length "33" must be a number from 0 to 32/],
    ["a CIDR prefix beyond 128", { ip: ["fd00::/129"] }, /ip "fd00::\/129": prefix length "129" must be a number from 0 to 128/],
    ["an empty prefix length", { destinationIp: ["10.0.0.0/"] }, /destination_ip "10.0.0.0\/"/],
    ["an address out of range", { ip: ["10.0.0.256"] }, /ip "10.0.0.256": "10.0.0.256" is not an IPv4 or IPv6 address/],
    ["a malformed IPv6 address", { ip: ["fd00:::1"] }, /ip "fd00:::1"/],
    ["a bad label selector", { destinationLabel: ["app in (web"] }, /destination_label "app in \(web": label selector .*missing "\)"/],
    ["a pod with two slashes", { pod: ["a/b/c"] }, /pod "a\/b\/c": expected "namespace\/name" or "name"/],
    ["a * inside a pod name", { sourcePod: ["we*b"] }, /source_pod "we\*b": "\*" is only allowed at the end/],
    ["a workload whose middle part is no Kind", { workload: ["ns/deployment/web"] }, /workload "ns\/deployment\/web": the middle part "deployment" must be a Kind/],
    ["a service with an empty name", { service: ["shop/"] }, /service "shop\/"/],
    ["an unknown protocol", { protocol: ["tcpx"] }, /protocol "tcpx": unknown protocol/],
    ["a port beyond 65535", { destinationPort: [70000] }, /destination_port "70000": a port must be an integer from 0 to 65535/],
    ["an unknown verdict", { verdict: [9 as Verdict] }, /verdict "9"/],
    ["an unspecified direction", { direction: [TrafficDirection.TRAFFIC_DIRECTION_UNSPECIFIED] }, /direction "0"/],
    ["an empty namespace", { namespace: [""] }, /namespace "": an empty value matches nothing/],
  ])("rejects %s, naming the field and value", (_what, fields, message) => {
    let error: unknown;
    try { compileFilter(filter(fields)); } catch (e) { error = e; }
    expect(error).toBeInstanceOf(FlowFilterError);
    expect((error as Error).message).toMatch(message);
  });

  it("locates a bad filter within a request", () => {
    try {
      compileRequest([filter({}), filter({ sourceIp: ["10.0.0.0/33"] })], []);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(FlowFilterError);
      const error = e as FlowFilterError;
      expect(error.message).toMatch(/^invalid flow filter allow\[1\]: source_ip "10.0.0.0\/33": /);
      expect([error.field, error.value, error.where]).toEqual(["source_ip", "10.0.0.0/33", "allow[1]"]);
    }
    expect(() => compileRequest([], [filter({ port: [-1] })])).toThrow(/deny\[0\]: port "-1"/);
  });
});

describe("flow history", () => {
  const numbered = (n: number, endMs = T0 + n * 1000, spec: Partial<RecordSpec> = {}) =>
    record({ src: web1, dst: cart1, point: FROM, sequence: n, endMs, ...spec });
  const sequences = (records: FlowRecord[]) => records.map((r) => Number(r.sequence));

  it("evicts the oldest records beyond its capacity and counts them", () => {
    const history = new FlowHistory({ capacity: 3 });
    history.append([1, 2].map((n) => numbered(n)));
    expect([history.size, history.evicted, history.capacity]).toEqual([2, 0, 3]);
    history.append([3, 4, 5].map((n) => numbered(n)));
    expect([history.size, history.evicted, history.appended]).toEqual([3, 2, 5]);
    expect(sequences(history.query())).toEqual([3, 4, 5]);
    history.append([numbered(6)]);
    expect(sequences(history.query())).toEqual([4, 5, 6]);
  });

  it("gives back records equal to those appended, sharing their Endpoint objects", () => {
    const history = new FlowHistory({ capacity: 10 });
    const tcp = numbered(1);
    const udp6 = record({ src: v6a, dst: v6b, point: TO, proto: 17, sport: 5353, dport: 53, sequence: 2, endMs: T0 + 2000, packets: 3, bytes: 2 ** 40, verdict: Verdict.VERDICT_AUDIT });
    const bare: FlowRecord = { ...numbered(3), startTime: undefined, ip: undefined, l4: undefined, source: undefined };
    const odd: FlowRecord = { ...numbered(4), verdict: Verdict.UNRECOGNIZED, point: 7 as ObservationPoint, packets: 2n ** 63n };
    // Addresses other than their ends' (a spoofed source, a Service's backend), through both paths.
    const elsewhere: FlowRecord = { ...numbered(5), ip: { ...numbered(5).ip!, source: "10.9.9.9", destination: cart1.ip }, destination: cartSvc };
    history.append([tcp, udp6, bare, odd, elsewhere]);
    history.appendColumns(enrichedFromRecords("node-a", [{ ...elsewhere, sequence: 6n, endTime: ts(T0 + 6000) }]));
    const out = history.query();
    expect(out).toEqual([tcp, udp6, bare, odd, elsewhere, expect.objectContaining({ ip: elsewhere.ip, destination: cartSvc, sequence: 6n })]);
    expect(out[0]!.source).toBe(web1);
    expect(out[1]!.destination).toBe(v6b);
  });

  it("shares one frozen TCP flags object per flags value: a reader cannot change another record's flags", () => {
    const history = new FlowHistory({ capacity: 10 });
    history.append([numbered(1), numbered(2)]);
    const [a, b] = history.query();
    expect(a!.l4!.tcpFlags).toBe(b!.l4!.tcpFlags);
    expect(() => { a!.l4!.tcpFlags!.syn = true; }).toThrow(TypeError);
    expect(history.query()[1]!.l4!.tcpFlags).toEqual(numbered(2).l4!.tcpFlags);
  });

  it("gives back each held record's own names after values of evicted records were let go and their ids reused", () => {
    const history = new FlowHistory({ capacity: 3 });
    const appended: FlowRecord[] = [];
    const attributions = new Map<number, PolicyAttribution>();
    for (let n = 1; n <= 12; n++) {
      // Every value is new except every third record's, which repeats the one three back (the one it evicts).
      const k = n % 3 === 0 ? n - 3 : n;
      const src = pod("shop", `p-${k}`, `10.1.0.${k}`, `node-${k}`, { app: `a${k}` });
      const dst = world(`198.51.100.${k}`);
      const r: FlowRecord = {
        ...record({ src, dst, point: FROM, sequence: n, endMs: T0 + n * 1000, proto: n % 2 === 0 ? 6 : 17 }),
        interface: `veth-${k}`,
        attribution: n % 4 === 0 ? undefined : attributions.get(k) ?? attributions.set(k, PolicyAttribution.fromPartial({ egressAllowedBy: [`policy-${k}`] })).get(k),
      };
      appended.push(r);
      history.append([r]);
      expect(history.query()).toEqual(appended.slice(-3));
    }
  });

  it("shares one Endpoint per non-pod address even when records bring copies", () => {
    const history = new FlowHistory({ capacity: 10 });
    history.append([
      record({ src: { ...internet }, dst: web1, point: TO, sequence: 1 }),
      record({ src: { ...internet }, dst: web1, point: TO, sequence: 2 }),
    ]);
    const [a, b] = history.query();
    expect(a!.source).toEqual(internet);
    expect(a!.source).toBe(b!.source);
  });

  it("returns records in time order although they arrived out of order", () => {
    const history = new FlowHistory({ capacity: 10 });
    history.append([10, 30, 20, 40, 25].map((s) => numbered(s, T0 + s * 1000)));
    expect(sequences(history.query())).toEqual([10, 20, 25, 30, 40]);
  });

  it("scan() gives query()'s order after every append and eviction, rows in time order or not, appended as records or as columns (seed 1409)", () => {
    // scan() walks the ring in append order when its rows are in time order: a count of
    // neighbours out of order, kept by every append and eviction, says so.
    const rand = seededRandom(1409);
    const held = { inOrder: 0, outOfOrder: 0 };
    for (let h = 0; h < 80; h++) {
      const history = new FlowHistory({ capacity: 1 + Math.floor(rand() * 6) });
      let n = 0;
      for (let step = 0; step < 25; step++) {
        // Mostly rising end times; some late by up to 3 s, some equal to the second with other milliseconds, some exact ties.
        const batch = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => {
          n++;
          const k = rand();
          return numbered(n, T0 + n * 1000 - (k < 0.2 ? Math.floor(rand() * 3000) : k < 0.3 ? 1000 - Math.floor(rand() * 3) : 0));
        });
        if (rand() < 0.5) history.append(batch);
        else history.appendColumns(enrichedFromRecords("node-a", batch));
        const scanned: number[] = [];
        history.scan({}, (row) => { scanned.push(Number(row.sequence)); });
        const queried = sequences(history.query());
        expect(scanned).toEqual(queried);
        if (queried.every((q, i) => i === 0 || q > queried[i - 1]!)) held.inOrder++;
        else held.outOfOrder++;
      }
    }
    // Both ways of scanning were taken, often.
    expect(held.inOrder).toBeGreaterThan(300);
    expect(held.outOfOrder).toBeGreaterThan(300);
  });

  it("last N returns the N newest matching records, in time order", () => {
    const history = new FlowHistory({ capacity: 100 });
    history.append([10, 30, 20, 40, 25, 5].map((s) => numbered(s, T0 + s * 1000)));
    expect(sequences(history.query({ last: 2 }))).toEqual([30, 40]);
    expect(sequences(history.query({ last: 3 }))).toEqual([25, 30, 40]);
    expect(sequences(history.query({ last: 10 }))).toEqual([5, 10, 20, 25, 30, 40]);
    const odd = (r: FlowRecord) => r.sequence % 2n === 1n;
    history.append([numbered(7, T0 + 7000), numbered(9, T0 + 9000), numbered(50, T0 + 50_000)]);
    expect(sequences(history.query({ last: 2, predicate: odd }))).toEqual([9, 25]);
  });

  it("since/until select records whose time span overlaps the range", () => {
    const history = new FlowHistory({ capacity: 10 });
    // Record n spans [T0 + n s - 500 ms, T0 + n s].
    history.append([1, 2, 3, 4].map((n) => numbered(n)));
    expect(sequences(history.query({ since: ts(T0 + 2000) }))).toEqual([2, 3, 4]);
    expect(sequences(history.query({ since: ts(T0 + 2001) }))).toEqual([3, 4]);
    expect(sequences(history.query({ until: ts(T0 + 2500) }))).toEqual([1, 2, 3]);
    expect(sequences(history.query({ until: ts(T0 + 2499) }))).toEqual([1, 2]);
    expect(sequences(history.query({ until: ts(T0 + 2400) }))).toEqual([1, 2]);
    expect(sequences(history.query({ until: ts(T0 + 1499) }))).toEqual([1]);
    expect(sequences(history.query({ since: ts(T0 + 1800), until: ts(T0 + 2600), last: 1 }))).toEqual([3]);
  });

  it("runs predicates over stored records", () => {
    const history = new FlowHistory({ capacity: 10 });
    history.append([
      numbered(1),
      record({ src: web1, dst: db1, point: TO, sequence: 2, verdict: Verdict.VERDICT_DROPPED }),
      record({ src: other1, dst: other2, point: FROM, sequence: 3, verdict: Verdict.VERDICT_DROPPED }),
    ]);
    const predicate = compileRequest([filter({ namespace: ["shop"], verdict: [Verdict.VERDICT_DROPPED] })], []);
    expect(sequences(history.query({ predicate }))).toEqual([2]);
    expect(sequences(history.query({ predicate: compileFilter(filter({ sourceIp: ["10.0.9.0/24"], destinationPort: [8080] })) }))).toEqual([3]);
  });

  it("a query's since, endAfter and last give what a filter over every held record gives, rows late or not, across evictions (seed 2026)", () => {
    // The reference is the whole history in time order (no bound: every block read), filtered here.
    const rand = seededRandom(2026);
    const endMs = (r: FlowRecord) => Number(r.endTime!.seconds) * 1000 + r.endTime!.nanos / 1e6;
    let compared = 0, lateRows = 0;
    for (let h = 0; h < 60; h++) {
      const capacity = 1 + Math.floor(rand() * 300);
      const history = new FlowHistory({ capacity });
      let n = 0;
      for (let step = 0; step < 30; step++) {
        // Mostly rising end times; now and then a batch up to 120 s late (an agent's buffer), some exact ties.
        const late = rand() < 0.15 ? 1000 + Math.floor(rand() * 120_000) : 0;
        const batch = Array.from({ length: 1 + Math.floor(rand() * 40) }, () => {
          n++;
          if (late > 0) lateRows++;
          return numbered(n, T0 + n * 100 - late - (rand() < 0.2 ? Math.floor(rand() * 300) : 0),
            { verdict: rand() < 0.3 ? Verdict.VERDICT_DROPPED : Verdict.VERDICT_FORWARDED });
        });
        if (rand() < 0.5) history.append(batch);
        else history.appendColumns(enrichedFromRecords("node-a", batch));
        const everything = history.query();
        const dropped = (r: { verdict: Verdict }) => r.verdict === Verdict.VERDICT_DROPPED;
        // Bounds on an end time some rows have, on whole milliseconds, or on none.
        const at = () => (rand() < 0.5 ? endMs(everything[Math.floor(rand() * everything.length)]!) : T0 + Math.floor(rand() * n * 100));
        const sinceMs = rand() < 0.4 ? at() : undefined, afterMs = rand() < 0.3 ? at() : undefined;
        const since = sinceMs === undefined ? undefined : ts(sinceMs), endAfter = afterMs === undefined ? undefined : ts(afterMs);
        for (const predicate of [undefined, dropped]) {
          const expected = sequences(everything.filter((r) => (predicate === undefined || predicate(r))
            && (sinceMs === undefined || endMs(r) >= sinceMs) && (afterMs === undefined || endMs(r) > afterMs)));
          const q = { predicate, since, endAfter };
          expect(sequences(history.query(q)), `capacity ${capacity}`).toEqual(expected);
          const scanned: number[] = [];
          history.scan(q, (row) => { scanned.push(Number(row.sequence)); });
          expect(scanned, `capacity ${capacity}`).toEqual(expected);
          for (const last of [1, 2, 7, 1 + Math.floor(rand() * 60)]) {
            expect(sequences(history.query({ ...q, last })), `capacity ${capacity}, last ${last}`).toEqual(expected.slice(-last));
            compared++;
          }
        }
      }
    }
    expect(compared).toBe(60 * 30 * 8);
    expect(lateRows).toBeGreaterThan(1000);
  });

  it("a query's verdicts, points and namespaces give what its predicate alone gives, and the predicate runs only on rows that have them (seed 77)", () => {
    const rand = seededRandom(77);
    const verdicts = [Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT];
    const subsets = [[Verdict.VERDICT_DROPPED], [Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT], [Verdict.VERDICT_FORWARDED]];
    const ends = [web1, cart1, db1, other1, cartSvc, internet, nodeA];
    const namespaceSets = [["shop"], ["db", "other"], ["nowhere"]];
    let compared = 0;
    for (let h = 0; h < 20; h++) {
      const capacity = 1 + Math.floor(rand() * 200);
      const history = new FlowHistory({ capacity });
      let n = 0;
      for (let step = 0; step < 20; step++) {
        const batch = Array.from({ length: 1 + Math.floor(rand() * 30) }, () => {
          n++;
          return numbered(n, T0 + n * 100 - (rand() < 0.1 ? 5000 : 0),
            { verdict: verdicts[Math.floor(rand() * 3)]!, point: rand() < 0.5 ? FROM : TO, src: ends[Math.floor(rand() * ends.length)]!, dst: ends[Math.floor(rand() * ends.length)]! });
        });
        if (rand() < 0.5) history.append(batch);
        else history.appendColumns(enrichedFromRecords("node-a", batch));
        const everything = history.query();
        const v = rand() < 0.2 ? undefined : new Set<number>(subsets[Math.floor(rand() * subsets.length)]);
        const p = rand() < 0.5 ? undefined : new Set<number>([rand() < 0.5 ? FROM : TO]);
        const ns = rand() < 0.4 ? undefined : new Set<string>(namespaceSets[Math.floor(rand() * namespaceSets.length)]);
        const has = (r: FlowRecord) => (v === undefined || v.has(r.verdict)) && (p === undefined || p.has(r.point))
          && (ns === undefined || ns.has(r.source?.namespace ?? "-") || ns.has(r.destination?.namespace ?? "-"));
        const odd = (r: { sequence: bigint }) => r.sequence % 2n === 1n;
        const expected = sequences(everything.filter((r) => has(r) && odd(r)));
        let calls = 0, wrong = 0;
        const predicate = (r: FlowRecord) => { calls++; if (!has(r)) wrong++; return has(r) && odd(r); };
        const q = { predicate, ...(v !== undefined ? { verdicts: v } : {}), ...(p !== undefined ? { points: p } : {}), ...(ns !== undefined ? { namespaces: ns } : {}) };
        expect(sequences(history.query(q)), `capacity ${capacity}`).toEqual(expected);
        expect(calls).toBe(everything.filter(has).length);
        const scanned: number[] = [];
        history.scan(q, (row) => { scanned.push(Number(row.sequence)); });
        expect(scanned).toEqual(expected);
        const last = 1 + Math.floor(rand() * 20);
        expect(sequences(history.query({ ...q, last }))).toEqual(expected.slice(-last));
        expect(wrong, "the predicate ran on a row without the query's verdicts, points or namespaces").toBe(0);
        compared++;
      }
    }
    expect(compared).toBe(400);
  });

  it("last N after a batch that came 120 s late, and a query bound by time, read the newest blocks of rows only", () => {
    // An agent replays its buffer after an outage: one batch far behind the others. The
    // predicate counts the rows a query reads.
    const capacity = 4096; // blocks of 64 rows
    const history = new FlowHistory({ capacity });
    let n = 0;
    const batchOf = (count: number, lateMs = 0) => Array.from({ length: count }, () => { n++; return numbered(n, T0 + n * 10 - lateMs); });
    history.appendColumns(enrichedFromRecords("node-a", batchOf(4000)));
    const readBy = (last: number): { read: number; got: number[] } => {
      let read = 0;
      const got = sequences(history.query({ last, predicate: () => { read++; return true; } }));
      return { read, got };
    };
    expect(readBy(1).read).toBeLessThanOrEqual(128);
    history.appendColumns(enrichedFromRecords("node-a", batchOf(50, 120_000)));
    const lateSequences = Array.from({ length: 50 }, (_, k) => n - 49 + k);
    history.appendColumns(enrichedFromRecords("node-a", batchOf(500)));
    // Held, the late rows are the oldest by end time: asked for every row, they come first.
    expect(readBy(4096).got.slice(0, 50)).toEqual(lateSequences);
    // Long after they were evicted, every row held is within 120 s of the newest.
    for (let k = 0; k < 9; k++) history.appendColumns(enrichedFromRecords("node-a", batchOf(500)));
    const one = readBy(1);
    expect(one.got).toEqual([n]);
    expect(one.read).toBeLessThanOrEqual(128);
    const hundred = readBy(100);
    expect(hundred.got).toEqual(Array.from({ length: 100 }, (_, k) => n - 99 + k));
    expect(hundred.read).toBeLessThanOrEqual(256);
    // A time bound leaves out the blocks that end before it, with or without last N (here
    // more than match, so the heap never fills). The bound is checked before the predicate,
    // so the column reads are counted: reading every row of the ring takes 4,096 or more
    // (4,196 and 7,850 when measured without the block bounds); two blocks, 128 rows, a few
    // hundred, and last N's heap ~3,600 more for its 100 rows either way.
    const reads = vi.spyOn(WideningColumn.prototype, "get");
    try {
      for (const [last, most] of [[0, 600], [1000, 5000]] as const) {
        reads.mockClear();
        const got: number[] = [];
        history.scan({ last, since: ts(T0 + (n - 99) * 10) }, (row) => { got.push(Number(row.sequence)); });
        const read = reads.mock.calls.length;
        expect(got).toEqual(Array.from({ length: 100 }, (_, k) => n - 99 + k));
        expect(read, `last ${last}`).toBeLessThanOrEqual(most);
      }
    } finally {
      reads.mockRestore();
    }
  });

  it("iterate() skips records evicted before they are reached", () => {
    const history = new FlowHistory({ capacity: 4 });
    history.append([1, 2, 3, 4].map((n) => numbered(n)));
    const it = history.iterate();
    expect(Number(it.next().value?.sequence)).toBe(1);
    history.append([numbered(5), numbered(6)]);
    expect([...it].map((r) => Number(r.sequence))).toEqual([3, 4]);
  });

  it("subscribers get new matching records until they unsubscribe", () => {
    const history = new FlowHistory({ capacity: 10 });
    history.append([numbered(1, T0, { verdict: Verdict.VERDICT_DROPPED })]);
    const got: number[][] = [];
    const unsubscribe = history.subscribe((r) => r.verdict === Verdict.VERDICT_DROPPED, (rs) => got.push(sequences(rs)));
    history.append([numbered(2), numbered(3, T0, { verdict: Verdict.VERDICT_DROPPED }), numbered(4, T0, { verdict: Verdict.VERDICT_DROPPED })]);
    history.append([numbered(5)]);
    unsubscribe();
    history.append([numbered(6, T0, { verdict: Verdict.VERDICT_DROPPED })]);
    expect(got).toEqual([[3, 4]]);
  });

  it("a throwing subscriber is removed and reported; the others still get records", () => {
    const errors: unknown[] = [];
    const history = new FlowHistory({ capacity: 10, onSubscriberError: (e) => errors.push(e) });
    let calls = 0;
    history.subscribe(() => true, () => { calls++; throw new Error("client went away"); });
    const got: number[] = [];
    history.subscribe(() => true, (rs) => got.push(...sequences(rs)));
    history.append([numbered(1)]);
    history.append([numbered(2)]);
    expect([calls, got, errors.map((e) => (e as Error).message)]).toEqual([1, [1, 2], ["client went away"]]);
  });

  // Without ends, the addresses are what the hints find (an address equal to its end's is
  // not held in the address dictionary at all); with them, the Endpoints.
  it.each([["address text", true], ["ends", false]] as const)(
    "stores each row's own %s when their addresses share a hint slot, or an id is freed and reused", (_, withoutEnds) => {
      const history = new FlowHistory({ capacity: 3 });
      const input = (records: FlowRecord[]) => (withoutEnds ? records.map((r) => ({ ...r, source: undefined, destination: undefined })) : records);
      const seen = (records: FlowRecord[]) => records.map((r) => [r.ip!.source, r.ip!.destination, r.source, r.destination]);
      const collide = (records: FlowRecord[]) => {
        const b = enrichedFromRecords("node-a", records);
        b.sourceHints.fill(7); // every address in one hint slot, as a collision would put them
        b.destinationHints.fill(7);
        return b;
      };
      const first = input([numbered(1), numbered(2, undefined, { src: other1, dst: other2 }), numbered(3, undefined, { src: internet, dst: web1 })]);
      history.appendColumns(collide(first));
      expect(seen(history.query())).toEqual(seen(first));
      // Evicts rows 1 and 2: what they held is freed, its ids reused for values the hints never saw.
      const second = input([numbered(4, undefined, { src: nodeA, dst: cartSvc }), numbered(5, undefined, { src: db1, dst: debug })]);
      history.appendColumns(collide(second));
      expect(seen(history.query())).toEqual(seen([first[2]!, ...second]));
    });

  it("keeps every value exactly when it does not fit its column's width: the column widens, earlier rows unchanged", () => {
    const history = new FlowHistory({ capacity: 400 });
    const small = [numbered(1), numbered(2)];
    history.append(small);
    const narrow = history.columnBytes;
    const wide: FlowRecord = {
      ...numbered(3),
      startTime: { seconds: -5n, nanos: 999_999_999 },
      endTime: { seconds: 2n ** 40n, nanos: 1 },
      point: -1 as ObservationPoint,
      verdict: 300 as Verdict,
      verdictReason: 2 ** 31 - 1,
      ifindex: 2 ** 32 - 1,
      l4: { ...numbered(3).l4!, protocol: 2 ** 32 - 1, sourcePort: 70_000, destinationPort: 65_535, icmpType: 256, icmpCode: 2 ** 20 },
      packets: 2n ** 64n - 1n,
      bytes: 2n ** 32n,
      sequence: 2n ** 53n + 1n,
    };
    history.append([wide]);
    expect(history.columnBytes).toBeGreaterThan(narrow);
    // 300 distinct nodes, interfaces and protocol names: their id columns outgrow one byte.
    const many = Array.from({ length: 300 }, (_, k) => ({
      ...numbered(10 + k), node: `node-${k}`, interface: `veth-${k}`, l4: { ...numbered(10 + k).l4!, protocolName: `proto-${k}` },
    }));
    history.append(many);
    expect(history.query()).toEqual([...small, ...many, wide]);
  });

  it("a column's slotsIn picks the slots whose value its table marks, at every width (no cells, 1, 2, 4, 8 bytes)", () => {
    const rand = seededRandom(5);
    for (const [width, largest] of [[0, 0], [1, 255], [2, 65_535], [4, 2 ** 32 - 1], [8, 2 ** 40]] as const) {
      const column = new WideningColumn(500, 0);
      // No cells: every value 0. Otherwise small values and the width's largest mixed.
      const values = Array.from({ length: 500 }, () => (width === 0 ? 0 : rand() < 0.5 ? Math.floor(rand() * 4) : largest));
      values.forEach((v, slot) => column.set(slot, v));
      expect(column.width).toBe(width);
      for (const marked of [[0], [2, 3], [1], []]) {
        const table = new Uint8Array(4);
        for (const m of marked) table[m] = 1;
        const out = new Uint32Array(500);
        const from = Math.floor(rand() * 100), to = 400 + Math.floor(rand() * 100);
        const n = column.slotsIn(from, to, table, out);
        const expected = [];
        for (let slot = from; slot < to; slot++) if (marked.includes(column.get(slot))) expected.push(slot);
        expect([...out.subarray(0, n)], `width ${width}, marked ${marked.join(",")}`).toEqual(expected);
      }
    }
  });

  it("stores a columnar batch's kept rows as the record path stores them: across the ring's wrap, widening, rows left out", () => {
    // The column path copies most columns a run of slots at a time: one run up to the
    // ring's end and one from its start, consecutive rows natively, others row by row.
    const wideAt = (n: number): FlowRecord => ({
      ...numbered(n),
      startTime: { seconds: 2n ** 33n, nanos: 1 },
      endTime: { seconds: 2n ** 33n + BigInt(n), nanos: 999_999_999 },
      ifindex: 2 ** 32 - 1,
      point: TO,
      reporter: ReporterSide.REPORTER_SIDE_DESTINATION,
      verdict: 200 as Verdict,
    });
    for (const capacity of [1, 2, 5, 7]) {
      const columns = new FlowHistory({ capacity }), records = new FlowHistory({ capacity });
      const narrow = [1, 2, 3].map((n) => numbered(n));
      columns.appendColumns(enrichedFromRecords("node-a", narrow));
      records.append(narrow);
      // Out of time order too (6 ends before 5), so that the order kept per row is checked.
      const batch = [4, 5, 6, 7, 8, 9, 10].map((n) => (n >= 8 ? wideAt(n) : numbered(n, n === 6 ? T0 : T0 + n * 1000)));
      const kept = [0, 2, 3, 4, 6];
      columns.appendColumns({ ...enrichedFromRecords("node-a", batch), rows: Uint32Array.from(kept) });
      records.append(kept.map((k) => batch[k]!));
      const tail = [11, 12, 13].map((n) => numbered(n));
      columns.appendColumns(enrichedFromRecords("node-a", tail));
      records.append(tail);
      expect(columns.query(), `capacity ${capacity}`).toEqual(records.query());
      expect(columns.query({ last: 2 }), `capacity ${capacity}`).toEqual(records.query({ last: 2 }));
      expect(columns.columnBytes).toBe(records.columnBytes);
      let scanned = 0;
      columns.scan({}, () => { scanned++; });
      expect(scanned).toBe(Math.min(capacity, 11));
    }
  });

  it("refuses a batch with a count outside an unsigned 64-bit integer, naming record and field, and stores none of it", () => {
    const history = new FlowHistory({ capacity: 2 });
    history.append([numbered(1), numbered(2)]);
    expect(() => history.append([numbered(3), { ...numbered(4), packets: 2n ** 64n }]))
      .toThrow("record 1 of the batch: packets 18446744073709551616 is outside an unsigned 64-bit integer");
    expect(() => history.append([{ ...numbered(5), bytes: -1n }])).toThrow("record 0 of the batch: bytes -1 is outside");
    expect([history.appended, sequences(history.query())]).toEqual([2, [1, 2]]);
  });

  it("refuses a capacity that is not a positive integer", () => {
    expect(() => new FlowHistory({ capacity: 0 })).toThrow(/capacity must be a positive integer, got 0/);
    expect(() => new FlowHistory({ capacity: 1.5 })).toThrow(/got 1.5/);
  });
});

describe("flow map", () => {
  function store(startMs = T0) {
    const clock = { now: startMs };
    const map = new FlowMapStore({ now: () => clock.now });
    return { map, clock };
  }
  const edge = (e: MapEdge) => ({
    source: e.source, destination: e.destination, protocol: e.protocol, port: e.port,
    flows: Number(e.flows), packets: Number(e.packets), bytes: Number(e.bytes),
    forwarded: Number(e.forwarded), dropped: Number(e.dropped), audit: Number(e.audit),
  });
  const WEB = "workload:shop/Deployment/web";
  const CART = "workload:shop/Deployment/cart";
  const PG = "workload:db/StatefulSet/postgres";

  it("counts a flow observed at both points on one node once", () => {
    const { map } = store();
    const local = pod("shop", "cart-2", "10.0.1.8", "node-a", { app: "cart" }, "Deployment", "cart");
    map.add([
      record({ src: web1, dst: local, point: FROM, packets: 10, bytes: 1000 }),
      record({ src: web1, dst: local, point: TO, packets: 10, bytes: 1000 }),
    ]);
    expect(map.getMap({ windowMs: 60_000 }).edges.map(edge)).toEqual([
      { source: WEB, destination: CART, protocol: "TCP", port: 8080, flows: 1, packets: 10, bytes: 1000, forwarded: 10, dropped: 0, audit: 0 },
    ]);
    expect(map.stats).toMatchObject({ records: 2, counted: 1, duplicates: 1, verdictOnly: 0 });
  });

  it("counts a flow observed on two nodes once, whatever order the records arrive in", () => {
    for (const order of [[0, 1], [1, 0]]) {
      const { map } = store();
      const seen = [
        record({ src: web1, dst: cart1, point: FROM, node: "node-a", packets: 10, bytes: 1000 }),
        record({ src: web1, dst: cart1, point: TO, node: "node-b", packets: 10, bytes: 1000 }),
      ];
      map.add(order.map((i) => seen[i]!));
      const edges = map.getMap().edges.map(edge);
      expect(edges).toEqual([
        { source: WEB, destination: CART, protocol: "TCP", port: 8080, flows: 1, packets: 10, bytes: 1000, forwarded: 10, dropped: 0, audit: 0 },
      ]);
    }
  });

  it("puts replies on the request's edge: one edge, one flow, both directions' packets", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: cart1, point: FROM, sport: 40000, dport: 8080, packets: 10, bytes: 1000 }),
      record({ src: web1, dst: cart1, point: TO, sport: 40000, dport: 8080, packets: 10, bytes: 1000 }),
      record({ src: cart1, dst: web1, point: FROM, sport: 8080, dport: 40000, packets: 8, bytes: 9000 }),
      record({ src: cart1, dst: web1, point: TO, sport: 8080, dport: 40000, packets: 8, bytes: 9000 }),
      // A second connection on another client port.
      record({ src: web1, dst: cart1, point: FROM, sport: 40001, dport: 8080, packets: 2, bytes: 100 }),
    ]);
    expect(map.getMap().edges.map(edge)).toEqual([
      { source: WEB, destination: CART, protocol: "TCP", port: 8080, flows: 2, packets: 20, bytes: 10100, forwarded: 20, dropped: 0, audit: 0 },
    ]);
  });

  it("Service traffic: requests on client -> service, replies on client -> backend, counted once", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: cartSvc, point: FROM, sport: 40000, dport: 80, packets: 10, bytes: 1000 }),
      record({ src: web1, dst: cart1, point: TO, sport: 40000, dport: 8080, packets: 10, bytes: 1000 }),
      record({ src: cart1, dst: web1, point: FROM, sport: 8080, dport: 40000, packets: 8, bytes: 9000 }),
      record({ src: cartSvc, dst: web1, point: TO, sport: 80, dport: 40000, packets: 8, bytes: 9000 }),
    ]);
    const response = map.getMap();
    expect(response.edges.map(edge)).toEqual([
      { source: WEB, destination: "service:shop/cart", protocol: "TCP", port: 80, flows: 1, packets: 10, bytes: 1000, forwarded: 10, dropped: 0, audit: 0 },
      { source: WEB, destination: CART, protocol: "TCP", port: 8080, flows: 1, packets: 8, bytes: 9000, forwarded: 8, dropped: 0, audit: 0 },
    ]);
    expect(response.nodes.find((n) => n.id === "service:shop/cart")).toEqual({
      id: "service:shop/cart", kind: MapNodeKind.MAP_NODE_KIND_SERVICE, namespace: "shop", name: "cart", workloadKind: "", pods: 0,
    });
  });

  it("world and host peers are nodes of their own, counted at the pod they enter", () => {
    const { map } = store();
    map.add([
      record({ src: internet, dst: web1, point: TO, sport: 51000, dport: 443, packets: 5, bytes: 500 }),
      record({ src: web1, dst: internet, point: FROM, sport: 443, dport: 51000, packets: 4, bytes: 4000 }),
      record({ src: nodeA, dst: web1, point: TO, sport: 45000, dport: 8080, packets: 3, bytes: 300 }),
      record({ src: web1, dst: nodeA, point: FROM, sport: 8080, dport: 45000, packets: 3, bytes: 200 }),
    ]);
    const response = map.getMap();
    expect(response.edges.map(edge)).toEqual([
      { source: "host:node-a", destination: WEB, protocol: "TCP", port: 8080, flows: 1, packets: 6, bytes: 500, forwarded: 6, dropped: 0, audit: 0 },
      { source: "world:203.0.113.9", destination: WEB, protocol: "TCP", port: 443, flows: 1, packets: 9, bytes: 4500, forwarded: 9, dropped: 0, audit: 0 },
    ]);
    expect(response.nodes.map((n) => [n.id, n.kind, n.name])).toEqual([
      ["host:node-a", MapNodeKind.MAP_NODE_KIND_HOST, "node-a"],
      ["workload:shop/Deployment/web", MapNodeKind.MAP_NODE_KIND_WORKLOAD, "web"],
      ["world:203.0.113.9", MapNodeKind.MAP_NODE_KIND_WORLD, "203.0.113.9"],
    ]);
  });

  it("a DROPPED record at TO_POD marks the edge although FROM_POD saw the packets forwarded", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: db1, point: FROM, dport: 5432, packets: 10, bytes: 600 }),
      record({ src: web1, dst: db1, point: TO, dport: 5432, packets: 4, bytes: 240, verdict: Verdict.VERDICT_DROPPED }),
      record({ src: web1, dst: db1, point: TO, dport: 5432, packets: 6, bytes: 360 }),
    ]);
    expect(map.getMap().edges.map(edge)).toEqual([
      { source: WEB, destination: PG, protocol: "TCP", port: 5432, flows: 1, packets: 10, bytes: 600, forwarded: 6, dropped: 4, audit: 0 },
    ]);
    expect(map.stats).toMatchObject({ counted: 1, verdictOnly: 1, duplicates: 1 });
  });

  it("a verdict reported at both points counts once (the larger of the two)", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: db1, point: FROM, dport: 5432, packets: 10, verdict: Verdict.VERDICT_AUDIT }),
      record({ src: web1, dst: db1, point: TO, dport: 5432, packets: 6, verdict: Verdict.VERDICT_AUDIT }),
      record({ src: web1, dst: db1, point: TO, dport: 5432, packets: 4 }),
    ]);
    expect(map.getMap().edges.map(edge)[0]).toMatchObject({ packets: 10, forwarded: 0, dropped: 0, audit: 10 });
    map.add([
      record({ src: web1, dst: db1, point: FROM, sport: 40009, dport: 5432, packets: 10, verdict: Verdict.VERDICT_DROPPED }),
      record({ src: web1, dst: db1, point: TO, sport: 40009, dport: 5432, packets: 3, verdict: Verdict.VERDICT_DROPPED }),
    ]);
    expect(map.getMap().edges.map(edge)[0]).toMatchObject({ packets: 20, forwarded: 0, dropped: 10, audit: 10, flows: 2 });
  });

  it("orients by port when nothing else tells: the lower port is the server's", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: cart1, point: FROM, sport: 50051, dport: 40000, packets: 2 }),
      record({ src: cart1, dst: web1, point: FROM, sport: 40000, dport: 50051, packets: 3 }),
      // A lone SYN names the client whatever the ports.
      record({ src: db1, dst: web1, point: FROM, sport: 8080, dport: 9000, packets: 1, flags: { syn: true, ack: false } }),
    ]);
    expect(map.getMap().edges.map((e) => `${e.source}>${e.destination}:${e.port}=${Number(e.packets)}`)).toEqual([
      `${PG}>${WEB}:9000=1`,
      `${WEB}>${CART}:40000=5`,
    ]);
  });

  it("a Service request dropped at the backend shows on client -> backend, with no volume", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: cartSvc, point: FROM, dport: 80, packets: 3, bytes: 180, flags: { syn: true, ack: false } }),
      record({ src: web1, dst: cart1, point: TO, dport: 8080, packets: 3, bytes: 180, flags: { syn: true, ack: false }, verdict: Verdict.VERDICT_DROPPED }),
    ]);
    expect(map.getMap().edges.map(edge)).toEqual([
      { source: WEB, destination: "service:shop/cart", protocol: "TCP", port: 80, flows: 1, packets: 3, bytes: 180, forwarded: 3, dropped: 0, audit: 0 },
      { source: WEB, destination: CART, protocol: "TCP", port: 8080, flows: 0, packets: 0, bytes: 0, forwarded: 0, dropped: 3, audit: 0 },
    ]);
  });

  it("flows counts the distinct connections seen in the window", () => {
    const { map } = store();
    map.add([record({ src: web1, dst: cart1, point: FROM, sport: 40001, endMs: T0 - 3 * 60_000 })]);
    map.add([record({ src: web1, dst: cart1, point: FROM, sport: 40002, endMs: T0 - 1_000 })]);
    map.add([record({ src: web1, dst: cart1, point: FROM, sport: 40002, endMs: T0 - 2 * 60_000 })]);
    const flows = (windowMs: number) => map.getMap({ windowMs }).edges.map((e) => Number(e.flows));
    expect(flows(60_000)).toEqual([1]);
    expect(flows(5 * 60_000)).toEqual([2]);
  });

  it("flows counts an edge's many connections per window, forgets those past the retention, and their room under maxTrackedFlows serves new ones", () => {
    const clock = { now: T0 };
    const map = new FlowMapStore({ now: () => clock.now, maxTrackedFlows: 300 });
    const connection = (sport: number, endMs: number) => record({ src: web1, dst: cart1, point: FROM, sport, endMs });
    const flows = (windowMs: number) => map.getMap({ windowMs }).edges.map((e) => Number(e.flows));
    map.add(Array.from({ length: 200 }, (_, i) => connection(40_000 + i, T0 - 50 * 60_000)));
    map.add(Array.from({ length: 100 }, (_, i) => connection(50_000 + i, T0 - 1_000)));
    expect(flows(60 * 60_000)).toEqual([300]);
    expect(flows(5 * 60_000)).toEqual([100]);
    map.add([connection(40_000, T0 - 1_000)]); // an old connection seen again: not a new one
    expect(flows(60 * 60_000)).toEqual([300]);
    expect(flows(5 * 60_000)).toEqual([101]);
    map.add([connection(60_000, T0 - 1_000)]);
    expect(map.stats.untrackedFlows).toBe(1);
    clock.now = T0 + 11 * 60_000; // the other 199 old connections were last seen 61 min ago
    expect(flows(60 * 60_000)).toEqual([101]);
    map.add(Array.from({ length: 199 }, (_, i) => connection(61_000 + i, clock.now - 1_000)));
    expect(map.stats.untrackedFlows).toBe(1);
    expect(flows(60 * 60_000)).toEqual([300]);
    expect(flows(5 * 60_000)).toEqual([199]);
  });

  it("an edge made in a removed edge's slot starts with no flow of that edge's: the flow budget stays exact across sweeps", () => {
    const clock = { now: T0 };
    const map = new FlowMapStore({ now: () => clock.now, maxTrackedFlows: 2 });
    // Two flows, so that the edge has tracked flows both inline and in its table of further ones.
    map.add([40001, 40005].map((sport) => record({ src: web1, dst: cart1, point: FROM, sport, endMs: T0 - 1_000 })));
    clock.now = T0 + 61 * 60_000; // past the retention: web -> cart is removed, its slot free
    const later = (sport: number) => record({ src: web1, dst: db1, point: FROM, sport, dport: 5432, endMs: clock.now - 1_000 });
    map.add([later(40002), later(40003)]); // web -> db in the freed slot, at the budget of 2
    clock.now += 60_000; // the next minute's sweep forgets nothing: both are recent
    map.add([later(40004)]);
    expect(map.stats.untrackedFlows).toBe(1);
    expect(map.getMap().edges.map((e) => [e.destination, Number(e.flows)])).toEqual([["workload:db/StatefulSet/postgres", 2]]);
  });

  it("flows counts a connection once whether its records came as records or as columns (agents of either protocol)", () => {
    const { map } = store();
    // The request at the client's veth as a record, the reply at the server's as a columnar row: one 5-tuple.
    map.add([record({ src: web1, dst: cart1, point: FROM, sport: 40001, dport: 8080 })]);
    map.addColumns(enrichedFromRecords("node-b", [record({ src: cart1, dst: web1, point: FROM, sport: 8080, dport: 40001 })]));
    map.addColumns(enrichedFromRecords("node-b", [record({ src: cart1, dst: web1, point: FROM, sport: 8080, dport: 40002 })]));
    expect(map.getMap().edges.map((e) => [e.source, e.destination, Number(e.flows)])).toEqual([[WEB, CART, 2]]);
  });

  it("names each row's ends by their own Endpoints when their addresses share a hint slot", () => {
    const { map } = store();
    const rows = enrichedFromRecords("node-b", [
      record({ src: web1, dst: cart1, point: FROM, sport: 40001, dport: 8080 }),
      record({ src: db1, dst: other1, point: FROM, sport: 40002, dport: 5432 }),
      record({ src: web1, dst: db1, point: FROM, sport: 40003, dport: 5432 }),
    ].map((r, i) => ({ ...r, sequence: BigInt(i) })));
    rows.sourceHints.fill(7); // every end in one slot, as addresses whose hints collide would be
    rows.destinationHints.fill(7);
    map.addColumns(rows);
    map.addColumns(rows); // again, with the slot holding the last end of the first pass
    expect(map.getMap().edges.map((e) => [e.source, e.destination, Number(e.packets)])).toEqual([
      ["workload:db/StatefulSet/postgres", "workload:other/Deployment/x", 20],
      [WEB, "workload:db/StatefulSet/postgres", 20],
      [WEB, CART, 20],
    ]);
  });

  it("a reply from a Service address stays on client -> service whatever its ports", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: cartSvc, point: FROM, sport: 40000, dport: 50051, packets: 5 }),
      record({ src: cartSvc, dst: web1, point: TO, sport: 50051, dport: 40000, packets: 4, verdict: Verdict.VERDICT_AUDIT }),
    ]);
    expect(map.getMap().edges.map(edge)).toEqual([
      { source: WEB, destination: "service:shop/cart", protocol: "TCP", port: 50051, flows: 1, packets: 5, bytes: 1000, forwarded: 1, dropped: 0, audit: 4 },
    ]);
  });

  it("sums every window like a brute-force sum over the records, with late records, the clock moving and buckets expiring (seeded)", () => {
    // Insertions into either tier (late ones in the middle) and expiry of both must keep
    // each tier whole and in order.
    const rand = seededRandom(23);
    const { map, clock } = store();
    const added: { dst: number; endMs: number; packets: number }[] = [];
    const peers = [cart1, db1];
    for (let step = 0; step < 600; step++) {
      clock.now = T0 + step * 7_000; // 70 min in all: the first records leave the retention
      const batch: FlowRecord[] = [];
      for (let r = Math.floor(rand() * 4); r > 0; r--) {
        const dst = Math.floor(rand() * 2);
        // Mostly current, sometimes minutes late, now and then past the retention.
        const ago = rand() < 0.7 ? rand() * 10_000 : rand() < 0.9 ? rand() * 30 * 60_000 : 61 * 60_000 + rand() * 60_000;
        const endMs = Math.round(clock.now - ago);
        const packets = 1 + Math.floor(rand() * 20);
        batch.push(record({ src: web1, dst: peers[dst]!, point: FROM, dport: dst === 0 ? 8080 : 5432, endMs, packets }));
        added.push({ dst, endMs, packets });
      }
      map.add(batch);
      if (step % 37 !== 0) continue;
      for (const windowMs of [60_000, 5 * 60_000, 20 * 60_000, 60 * 60_000]) {
        const bucketMs = windowMs <= 5 * 60_000 ? 5_000 : 60_000;
        const first = Math.floor((clock.now - windowMs) / bucketMs);
        // A record counts in its coarse bucket if not late on arrival, in its fine one if within the fine window on arrival.
        const expected = [0, 0];
        for (const a of added) {
          if (Math.floor(a.endMs / bucketMs) >= first) expected[a.dst]! += a.packets;
        }
        const got = [0, 0];
        for (const e of map.getMap({ windowMs }).edges) got[e.destination === CART ? 0 : 1]! += Number(e.packets);
        expect({ windowMs, step, got }).toEqual({ windowMs, step, got: expected });
      }
      // What arrived too late to count anywhere is gone from the reference too.
      const oldestCoarse = Math.floor((clock.now - 60 * 60_000) / 60_000);
      for (let i = added.length - 1; i >= 0; i--) if (Math.floor(added[i]!.endMs / 60_000) < oldestCoarse) added.splice(i, 1);
    }
    expect(map.stats.late).toBeGreaterThan(0);
  });

  it("dropped and audit take rule 2's max per bucket of every window, across fine buckets folded into their minute (seeded)", () => {
    // Both observations of the same packets, DROPPED (or AUDIT) at either end, land in one
    // minute at different times: one may sit in a fine bucket folded into the minute's
    // coarse bucket, the other in a fine bucket not folded yet. The minute is one bucket.
    const rand = seededRandom(41);
    const { map, clock } = store();
    const added: { counted: boolean; verdict: Verdict; endMs: number; packets: number }[] = [];
    for (let step = 0; step < 400; step++) {
      clock.now = T0 + step * 7_000;
      const batch: FlowRecord[] = [];
      for (let r = Math.floor(rand() * 4); r > 0; r--) {
        const counted = rand() < 0.5;
        const verdict = rand() < 0.6 ? Verdict.VERDICT_DROPPED : Verdict.VERDICT_AUDIT;
        // Mostly current; some minutes late, into a minute whose early fine buckets were folded.
        const ago = rand() < 0.6 ? rand() * 10_000 : rand() * 20 * 60_000;
        const endMs = Math.round(clock.now - ago);
        const packets = 1 + Math.floor(rand() * 20);
        batch.push(record({ src: web1, dst: cart1, point: counted ? FROM : TO, endMs, packets, verdict }));
        added.push({ counted, verdict, endMs, packets });
      }
      map.add(batch);
      if (step % 23 !== 0) continue;
      for (const windowMs of [60_000, 5 * 60_000, 20 * 60_000, 60 * 60_000]) {
        const bucketMs = windowMs <= 5 * 60_000 ? 5_000 : 60_000;
        const first = Math.floor((clock.now - windowMs) / bucketMs);
        const perBucket = new Map<number, [number, number, number, number]>(); // drop counted, drop other, audit counted, audit other
        for (const a of added) {
          const bucket = Math.floor(a.endMs / bucketMs);
          if (bucket < first) continue;
          const sums = perBucket.get(bucket) ?? [0, 0, 0, 0];
          sums[(a.verdict === Verdict.VERDICT_DROPPED ? 0 : 2) + (a.counted ? 0 : 1)]! += a.packets;
          perBucket.set(bucket, sums);
        }
        let dropped = 0, audit = 0;
        for (const [dc, dother, ac, aother] of perBucket.values()) { dropped += Math.max(dc, dother); audit += Math.max(ac, aother); }
        const got = map.getMap({ windowMs }).edges.map((e) => [Number(e.dropped), Number(e.audit)]);
        expect({ step, windowMs, got }).toEqual({ step, windowMs, got: perBucket.size === 0 ? [] : [[dropped, audit]] });
      }
    }
  });

  it("edges of one pair and port differing in protocol expire and come back apart, each with its own totals (seeded)", () => {
    // Edges are found by (client node, server node, port) and then protocol: a removed
    // edge must leave the others with that key findable, and a freed edge's slot and
    // buckets must start empty when another edge takes it.
    const rand = seededRandom(31);
    const { map, clock } = store();
    const peers = [cart1, db1, other2];
    const protocols = [6, 17, 132];
    const added: { key: string; endMs: number; packets: number }[] = [];
    let present = new Set<string>(), expired = 0;
    for (let step = 0; step < 1500; step++) {
      clock.now = T0 + step * 20_000; // 8 h in all: edges expire and return many times
      const batch: FlowRecord[] = [];
      // Sparse: an edge gets a record about once an hour, so that it often expires (no
      // bucket left in the hour) before its next one, while others of its key live on.
      for (let r = rand() < 0.03 ? 1 + Math.floor(rand() * 2) : 0; r > 0; r--) {
        const dst = peers[Math.floor(rand() * peers.length)]!, proto = protocols[Math.floor(rand() * protocols.length)]!;
        const endMs = clock.now - Math.floor(rand() * 5_000), packets = 1 + Math.floor(rand() * 9);
        batch.push(record({ src: web1, dst, point: FROM, proto, dport: 8080, endMs, packets }));
        added.push({ key: `${mapNodeOf(dst, dst.ip)}/${protocolNames[proto]}`, endMs, packets });
      }
      map.add(batch);
      if (step % 3 !== 0) continue;
      for (const windowMs of [60_000, 60 * 60_000]) {
        const bucketMs = windowMs <= 5 * 60_000 ? 5_000 : 60_000;
        const first = Math.floor((clock.now - windowMs) / bucketMs);
        const expected = new Map<string, number>();
        for (const a of added) if (Math.floor(a.endMs / bucketMs) >= first) expected.set(a.key, (expected.get(a.key) ?? 0) + a.packets);
        const got = new Map(map.getMap({ windowMs }).edges.map((e) => [`${e.destination}/${e.protocol}`, Number(e.packets)]));
        expect({ step, windowMs, got: [...got].sort() }).toEqual({ step, windowMs, got: [...expected].sort() });
        if (windowMs === 60 * 60_000) {
          for (const key of present) if (!got.has(key)) expired++;
          present = new Set(got.keys());
        }
      }
    }
    expect(expired).toBeGreaterThan(10); // edges did expire and come back (the test's point)
  });

  it("windows leave out buckets older than the window; retention drops them", () => {
    const { map, clock } = store();
    map.add([record({ src: web1, dst: cart1, point: FROM, endMs: T0 - 2 * 60_000, packets: 7 })]);
    map.add([record({ src: web1, dst: db1, point: FROM, dport: 5432, endMs: T0 - 20 * 60_000, packets: 9 })]);
    map.add([record({ src: other1, dst: other2, point: FROM, endMs: T0 - 61 * 60_000 })]);
    expect(map.stats.late).toBe(1);
    const ids = (windowMs: number) => map.getMap({ windowMs }).edges.map((e) => `${e.destination}:${Number(e.packets)}`);
    expect(ids(60_000)).toEqual([]);
    expect(ids(5 * 60_000)).toEqual([`${CART}:7`]);
    expect(ids(60 * 60_000)).toEqual([`${PG}:9`, `${CART}:7`]);
    const five = map.getMap({ windowMs: 5 * 60_000 });
    // T0 is on a 5 s boundary, so the window starts exactly 5 min back.
    expect(five.since).toEqual(ts(T0 - 5 * 60_000));
    expect(five.until).toEqual(ts(T0));
    clock.now = T0 + 59 * 60_000; // the newest record is now 61 min old
    expect(ids(60 * 60_000)).toEqual([]);
    expect(map.stats.edges).toBe(0);
    expect(() => map.getMap({ windowMs: 61 * 60_000 })).toThrow(/window must be more than 0 and at most 3600000 ms/);
  });

  it("a namespace's map holds its workloads and Services and every peer that talks to them", () => {
    const { map } = store();
    map.add([
      record({ src: web1, dst: db1, point: FROM, dport: 5432 }),
      record({ src: other1, dst: other2, point: FROM }),
      record({ src: internet, dst: db1, point: TO, sport: 50000, dport: 5432 }),
    ]);
    const db = map.getMap({ namespace: "db" });
    expect(db.edges.map((e) => `${e.source}>${e.destination}`)).toEqual([`${WEB}>${PG}`, `world:203.0.113.9>${PG}`]);
    expect(db.nodes.map((n) => n.id)).toEqual([PG, WEB, "world:203.0.113.9"]);
    expect(map.getMap({ namespace: "other" }).edges.map((e) => e.source)).toEqual(["workload:other/Deployment/x"]);
    expect(map.getMap().edges.length).toBe(3);
  });

  it("counts the pods of a workload seen in the window", () => {
    const { map, clock } = store();
    map.add([record({ src: web2, dst: cart1, point: FROM, endMs: T0 - 3 * 60_000 })]);
    map.add([record({ src: web1, dst: cart1, point: FROM })]);
    const pods = (windowMs: number) => map.getMap({ windowMs }).nodes.find((n) => n.id === WEB)?.pods;
    expect(pods(5 * 60_000)).toBe(2);
    expect(pods(60_000)).toBe(1);
    clock.now = T0 + 10_000;
    expect(pods(60_000)).toBe(1);
  });

  it("versions and changesSince() report what changed for streaming clients", () => {
    const { map, clock } = store();
    const seen: number[] = [];
    map.onChange((v) => seen.push(v));
    map.add([record({ src: web1, dst: cart1, point: FROM })]);
    const v1 = map.version;
    map.add([record({ src: web1, dst: db1, point: FROM, dport: 5432 })]);
    const changes = map.changesSince(v1, { windowMs: 60 * 60_000 });
    expect(changes.resync).toBe(false);
    expect(changes.version).toBe(map.version);
    expect(changes.edges.map((e) => e.destination)).toEqual([PG]);
    expect(changes.nodes.map((n) => n.id)).toEqual([PG, WEB]);
    // Forwarded duplicates change nothing.
    map.add([record({ src: web1, dst: db1, point: TO, dport: 5432 })]);
    expect(map.changesSince(map.version).edges).toEqual([]);
    const before = map.version;
    clock.now = T0 + 62 * 60_000;
    const later = map.changesSince(before, { windowMs: 60 * 60_000 });
    expect(later.removed.map((k) => k.destination).sort()).toEqual([PG, CART]);
    expect(seen).toEqual([1, 2, 3]);
    expect(map.changesSince(999).resync).toBe(true);
  });

  it("counts onChange subscribers until they unsubscribe", () => {
    const { map } = store();
    const first = map.onChange(() => undefined);
    const second = map.onChange(() => undefined);
    expect(map.subscribers).toBe(2);
    first();
    first();
    expect(map.subscribers).toBe(1);
    second();
    expect(map.subscribers).toBe(0);
  });

  it("windowStart() is getMap's since: an edge is in the window exactly when its last_seen is not before it", () => {
    const { map, clock } = store();
    map.add([record({ src: web1, dst: cart1, point: FROM, endMs: T0 })]);
    for (const offset of [0, 30_000, 64_000, 66_000, 200_000]) {
      clock.now = T0 + offset;
      const response = map.getMap({ windowMs: 60_000 });
      const start = map.windowStart(60_000);
      expect(start).toBe(Number(response.since!.seconds) * 1000 + response.since!.nanos / 1e6);
      expect(response.edges.length === 1).toBe(T0 >= start);
    }
    expect(() => map.windowStart(0)).toThrow(/window/);
  });

  it("edgeOfRecord() names the edge add() puts the record on, replies and Service requests included", () => {
    const { map } = store();
    const specs: RecordSpec[] = [
      { src: web1, dst: cart1, point: FROM, sport: 40000, dport: 8080 },
      { src: cart1, dst: web1, point: TO, sport: 8080, dport: 40000 },
      { src: web1, dst: cartSvc, point: FROM, sport: 40001, dport: 80 },
      { src: internet, dst: web1, point: TO, sport: 51000, dport: 443 },
    ];
    for (const spec of specs) map.add([record(spec)]);
    const keys = map.getMap().edges.map((e) => `${e.source} ${e.destination} ${e.protocol} ${e.port}`).sort();
    const named = specs.map((spec) => edgeOfRecord(record(spec))).map((e) => `${e.source} ${e.destination} ${e.protocol} ${e.port}`);
    expect([...new Set(named)].sort()).toEqual(keys);
    expect(named[0]).toBe(named[1]);
  });
});

describe("flow map cardinality (rule 6)", () => {
  const WEB = "workload:shop/Deployment/web";
  const byId = (edges: MapEdge[]) => new Map(edges.map((e) => [`${e.destination} ${e.port}`, e]));
  const total = (edges: MapEdge[], field: "packets" | "bytes") => edges.reduce((n, e) => n + Number(e[field]), 0);

  it("20,000 distinct world peers of one pod: exact peers to half the namespace budget, then /24s, then one 'other' edge holding exactly the rest", () => {
    const map = new FlowMapStore({ now: () => T0, maxEdgesPerNamespace: 100 });
    // 198.0.0.0 upwards: 256 peers per /24, so 20,000 peers span 79 of them.
    const peer = (i: number) => world(`198.51.${i >> 8}.${i & 255}`);
    for (let i = 0; i < 20_000; i += 1000) {
      map.add(Array.from({ length: 1000 }, (_, k) => record({ src: web1, dst: peer(i + k), point: FROM, dport: 443, packets: 10, bytes: 1000 })));
    }
    const edges = map.getMap({ namespace: "shop", windowMs: 60_000 }).edges;
    // 50 exact peers (198.51.0.0-49), 50 /24s (198.51.0.0/24 ... 198.51.49.0/24), one edge to other.
    expect(edges.length).toBe(101);
    expect(edges.every((e) => e.source === WEB)).toBe(true);
    const dest = byId(edges);
    expect(dest.get("world:198.51.0.49 443")?.packets).toBe(10n);
    expect(dest.get("world:198.51.0.0/24 443")?.packets).toBe(10n * (256n - 50n));
    expect(dest.get("world:198.51.49.0/24 443")?.packets).toBe(10n * 256n);
    expect(dest.get("world:198.51.50.0/24 443")).toBeUndefined();
    expect(dest.get("world:other 0")).toMatchObject({ packets: 10n * (20_000n - 50n * 256n), bytes: 1000n * (20_000n - 50n * 256n) });
    // Every packet once, and the distinct connections still counted on their edges.
    expect(total(edges, "packets")).toBe(200_000);
    expect(total(edges, "bytes")).toBe(20_000_000);
    expect(edges.reduce((n, e) => n + Number(e.flows), 0)).toBe(20_000);
    expect(map.stats).toMatchObject({ edges: 101, prefixRecords: 50 * 256 - 50, otherRecords: 20_000 - 50 * 256 });
  });

  it("a port scan of one address takes the same way (per-port edges by prefix, then other with port 0), and the store's own budget holds for every namespace", () => {
    const map = new FlowMapStore({ now: () => T0, maxEdgesPerNamespace: 1000, maxEdges: 40 });
    const target = world("2001:db8:1:2::9");
    map.add(Array.from({ length: 500 }, (_, p) => record({ src: web1, dst: target, point: FROM, dport: 1 + p, packets: 1, bytes: 60 })));
    map.add(Array.from({ length: 500 }, (_, p) => record({ src: other1, dst: target, point: FROM, dport: 1 + p, packets: 1, bytes: 60 })));
    const edges = map.getMap({ windowMs: 60_000 }).edges;
    expect(edges.map((e) => e.destination).filter((d, i, all) => all.indexOf(d) === i).sort())
      .toEqual(["world:2001:db8:1:2::9", "world:2001:db8:1::/48", "world:other"]);
    // 20 exact, 20 by prefix (the store's 40), then one edge to other per client.
    expect(edges.length).toBe(42);
    expect(edges.filter((e) => e.destination === "world:other").map((e) => [e.source, e.port, Number(e.packets)]))
      .toEqual([["workload:other/Deployment/x", 0, 500], [WEB, 0, 460]]);
    expect(total(edges, "packets")).toBe(1000);
  });
});
