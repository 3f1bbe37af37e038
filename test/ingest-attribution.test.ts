// The policy attribution ingest gives each record (ControlPlane.attributeColumns and its
// record-path twin): the policies deciding the record's connection, from its client to
// its server port. A reply (ESTABLISHED, from the server) is attributed as the connection
// its client opened, not as a new connection to the client's ephemeral port; its cache
// key is the connection's, so replies over many ephemeral ports share one entry. Checked
// on random records of known connections against the policy model evaluated afresh (no
// cache), through both ingest paths, on a pair whose two directions a key that mixed
// them would confuse, and on two addresses whose policy identities swap (the column path
// keeps each address's identity until the next compile).
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { AccessControl } from "../controlplane/access/control.js";
import { parseKubeObject, type KubeObject } from "../controlplane/metadata/objects.js";
import type { MetadataSource } from "../controlplane/metadata/source.js";
import { allocColumns, recordAt, writeAddress, type FlowColumns } from "../flowcolumns/columns.js";
import { ObservationPoint, Verdict, VerdictReason, type FlowRecord, type PolicyAttribution } from "../proto/gen/bulkhead/v1/flow.js";
import { seededRandom } from "./harness/seeded-random.js";

const SECOND = 1_000_000_000n;
const T0 = BigInt(Date.UTC(2024, 4, 1, 12)) * 1_000_000n;
const T0_MS = Number(T0 / 1_000_000n);
const FROM = ObservationPoint.OBSERVATION_POINT_FROM_POD;
const TO = ObservationPoint.OBSERVATION_POINT_TO_POD;
const { VERDICT_REASON_POLICY: POLICY, VERDICT_REASON_ESTABLISHED: ESTABLISHED } = VerdictReason;

function object(doc: Record<string, unknown>): KubeObject {
  const parsed = parseKubeObject(doc);
  if (!parsed) throw new Error(`not a kind the control plane keeps: ${JSON.stringify(doc)}`);
  return parsed;
}

function pod(name: string, ip: string, node: string, app: string): KubeObject {
  return object({
    apiVersion: "v1", kind: "Pod",
    metadata: { name, namespace: "shop", uid: `uid-${name}`, labels: { app }, creationTimestamp: "2024-01-01T00:00:00Z" },
    spec: { nodeName: node, containers: [{ name: "main" }] },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] },
  });
}

function policy(name: string, spec: Record<string, unknown>): KubeObject {
  return object({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace: "shop" }, spec });
}

const WEB = "10.244.1.5", API = "10.244.1.6", CART = "10.244.2.7", WORLD = "203.0.113.9", NODE = "10.0.0.11", SERVICE = "10.96.0.10";
/** node-1's pods: the local ends its agent may send. */
const LOCAL = [WEB, API];
const REMOTE = [WEB, API, CART, WORLD, NODE, SERVICE];

/** Policies that decide each direction of a pair differently, on some ports only. */
const OBJECTS: KubeObject[] = [
  object({ apiVersion: "v1", kind: "Node", metadata: { name: "node-1" }, status: { addresses: [{ type: "InternalIP", address: NODE }] } }),
  object({
    apiVersion: "v1", kind: "Service", metadata: { name: "cart", namespace: "shop" },
    spec: { clusterIP: SERVICE, clusterIPs: [SERVICE], selector: { app: "cart" }, ports: [{ port: 80, targetPort: 8080 }] },
  }),
  pod("web-1", WEB, "node-1", "web"), pod("api-1", API, "node-1", "api"), pod("cart-1", CART, "node-2", "cart"),
  policy("web-ingress", {
    podSelector: { matchLabels: { app: "web" } }, policyTypes: ["Ingress"],
    ingress: [{ from: [{ podSelector: { matchLabels: { app: "api" } } }], ports: [{ protocol: "TCP", port: 8080 }] }],
  }),
  policy("api-egress", {
    podSelector: { matchLabels: { app: "api" } }, policyTypes: ["Egress"],
    egress: [
      { to: [{ podSelector: { matchLabels: { app: "web" } } }], ports: [{ protocol: "TCP", port: 8080 }] },
      { to: [{ ipBlock: { cidr: "203.0.113.0/24" } }], ports: [{ protocol: "TCP", port: 443 }, { protocol: "UDP", port: 53 }] },
    ],
  }),
  policy("cart-ingress", {
    podSelector: { matchLabels: { app: "cart" } }, policyTypes: ["Ingress"],
    ingress: [{ from: [{ podSelector: {} }], ports: [{ protocol: "TCP", port: 8080 }] }],
  }),
];

const source: MetadataSource = {
  name: "test", stop: async () => {}, errors: () => [],
  start: async (sink) => { sink.apply(OBJECTS.map((o) => ({ type: "upsert", object: o })), T0); },
};

const started: ControlPlane[] = [];
afterEach(async () => { await Promise.all(started.splice(0).map((cp) => cp.stop())); });

async function controlPlane(from: MetadataSource = source): Promise<ControlPlane> {
  const cp = new ControlPlane({
    source: from, storeCapacity: 10_000, log: pino({ level: "silent" }), now: () => T0_MS + 60_000,
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  started.push(cp);
  await cp.start([]);
  return cp;
}

/** One record of a known connection, and what it must be attributed. */
interface Case {
  src: string; dst: string; proto: number; sport: number; dport: number; point: number;
  verdict: Verdict; reason: VerdictReason; flags: number;
  /** The connection (client, server, server port) whose attribution the record carries; undefined: none. */
  expected: { from: string; to: string; port: number } | undefined;
}

/**
 * Random records of node-1's agent on connections whose client and server the test
 * knows: a request or a reply, at the local end's veth, with any reason. Clients use
 * ephemeral ports (32768 and up), servers well-known ones; ICMP is an echo and its reply.
 */
function randomCases(n: number, seed: number): Case[] {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const cases: Case[] = [];
  while (cases.length < n) {
    const local = pick(LOCAL), remote = pick(REMOTE);
    if (remote === local) continue;
    // A Service address is only ever a server, and its replies reach the client already translated back.
    const localIsClient = remote === SERVICE || rnd() < 0.5;
    const client = localIsClient ? local : remote, server = localIsClient ? remote : local;
    const proto = pick([6, 6, 17, 1]);
    const serverPort = proto === 1 ? 0 : pick(proto === 6 ? [8080, 443, 80, 5432] : [53, 8080]);
    const clientPort = proto === 1 ? 0 : 32_768 + Math.floor(rnd() * 28_000);
    const reply = rnd() < 0.5;
    const src = reply ? server : client, dst = reply ? client : server;
    const reason = pick([POLICY, ESTABLISHED, ESTABLISHED, VerdictReason.VERDICT_REASON_UNSPECIFIED]);
    const verdict = pick([Verdict.VERDICT_FORWARDED, Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT]);
    const point = src === local ? FROM : TO;
    let expected: Case["expected"];
    if (reason === VerdictReason.VERDICT_REASON_UNSPECIFIED && verdict === Verdict.VERDICT_FORWARDED) expected = undefined;
    else if (reason === ESTABLISHED) expected = server === SERVICE ? undefined : { from: client, to: server, port: serverPort };
    // Judged as they travel: a connection's opening packets (or one a policy change denied).
    else expected = point === FROM && dst === SERVICE ? undefined : { from: src, to: dst, port: reply ? clientPort : serverPort };
    cases.push({
      src, dst, proto, point, verdict, reason, expected,
      sport: proto === 1 ? (reply ? 0 : 8) : reply ? serverPort : clientPort,
      dport: proto === 1 ? 0 : reply ? clientPort : serverPort,
      flags: proto !== 6 ? 0 : reply ? pick([0x12, 0x10, 0x11]) : pick([0x02, 0x10, 0x18]),
    });
  }
  return cases;
}

function columnsOf(cases: readonly Case[], firstSequence: bigint): FlowColumns {
  const c = allocColumns(cases.length);
  c.firstSequence = firstSequence;
  c.interfaceNames = ["veth"];
  cases.forEach((k, i) => {
    c.startNs[i] = T0 + 10n * SECOND;
    c.endNs[i] = T0 + 11n * SECOND;
    c.packets[i] = 2n;
    c.bytes[i] = 200n;
    c.ipVersions[i] = writeAddress(c.sourceAddresses, i, k.src) ?? 0;
    writeAddress(c.destinationAddresses, i, k.dst);
    c.protocols[i] = k.proto;
    c.sourcePorts[i] = k.sport;
    c.destinationPorts[i] = k.dport;
    c.tcpFlags[i] = k.flags;
    c.points[i] = k.point;
    c.verdicts[i] = k.verdict;
    c.verdictReasons[i] = k.reason;
  });
  return c;
}

/** The attribution's fields that name policies, from the model evaluated afresh (the compiler's attribution() without its cache). */
function fromModel(cp: ControlPlane, from: string, to: string, proto: number, port: number): Partial<PolicyAttribution> {
  const v = cp.policy.model().evaluate({ src: { ip: from }, dst: { ip: to }, protocol: proto, port });
  return {
    egressIsolated: v.egress.isolated, egressAllowedBy: v.egress.allowedBy, egressIsolatedBy: v.egress.isolatedBy,
    ingressIsolated: v.ingress.isolated, ingressAllowedBy: v.ingress.allowedBy, ingressIsolatedBy: v.ingress.isolatedBy,
    egressDecidedBy: v.src.kind === "pod" ? v.egress.decidedBy ?? "" : "",
    ingressDecidedBy: v.dst.kind === "pod" ? v.ingress.decidedBy ?? "" : "",
  };
}

function namingFields(a: PolicyAttribution | undefined): Partial<PolicyAttribution> | undefined {
  if (a === undefined) return undefined;
  const { egressIsolated, egressAllowedBy, egressIsolatedBy, ingressIsolated, ingressAllowedBy, ingressIsolatedBy, egressDecidedBy, ingressDecidedBy } = a;
  return { egressIsolated, egressAllowedBy, egressIsolatedBy, ingressIsolated, ingressAllowedBy, ingressIsolatedBy, egressDecidedBy, ingressDecidedBy };
}

/** Each stored record's attribution against its case's expectation, by sequence. */
function expectAttributed(cp: ControlPlane, cases: readonly Case[]): void {
  const stored = new Map<bigint, FlowRecord>(cp.history.query().map((r) => [r.sequence, r]));
  expect(stored.size).toBe(cases.length);
  cases.forEach((k, i) => {
    const e = k.expected;
    const want = e === undefined ? undefined : fromModel(cp, e.from, e.to, k.proto, e.port);
    expect(namingFields(stored.get(BigInt(i + 1))?.attribution), `case ${i}: ${JSON.stringify(k)}`).toEqual(want);
  });
}

describe("attribution at ingest", () => {
  it("attributes a reply as the connection its client opened, equal to the model evaluated afresh, on random records through both ingest paths", async () => {
    const cases = randomCases(2_000, 11);
    // The policies must tell the two directions apart, and some replies must be judged by them, for this to prove anything.
    const differs = cases.filter((k) => k.reason === ESTABLISHED && k.expected !== undefined && k.src === k.expected.to);
    expect(differs.length).toBeGreaterThan(300);
    const byColumns = await controlPlane(), byRecords = await controlPlane();
    expect(differs.some((k) => JSON.stringify(fromModel(byColumns, k.src, k.dst, k.proto, k.dport))
      !== JSON.stringify(fromModel(byColumns, k.dst, k.src, k.proto, k.sport)))).toBe(true);
    for (let batch = 0; batch < 4; batch++) {
      const part = cases.slice(batch * 500, (batch + 1) * 500);
      const c = columnsOf(part, BigInt(batch * 500 + 1));
      byColumns.ingestColumns("node-1", c);
      byRecords.ingest("node-1", Array.from({ length: c.rows }, (_, i) => recordAt(c, i, "node-1")));
    }
    expectAttributed(byColumns, cases);
    expectAttributed(byRecords, cases);
    expect(byColumns.status().refused).toEqual([]);
  });

  it("looks addresses up again after a compile: when api and cart swap labels, each address is attributed under its new policies, not the identity it had", async () => {
    let sink: Parameters<MetadataSource["start"]>[0] | undefined;
    const cp = await controlPlane({ ...source, start: async (s) => { sink = s; await source.start(s); } });
    const request = (src: string, point: number): Case => ({
      src, dst: WEB, proto: 6, sport: 41_000, dport: 8080, point, verdict: Verdict.VERDICT_FORWARDED, reason: POLICY, flags: 0x02,
      expected: { from: src, to: WEB, port: 8080 },
    });
    const attributed = (sequence: bigint) => namingFields(cp.history.query().find((r) => r.sequence === sequence)?.attribution);
    cp.ingestColumns("node-1", columnsOf([request(API, FROM)], 1n));
    expect(attributed(1n)).toMatchObject({ egressAllowedBy: ["shop/api-egress"] });
    sink!.apply([{ type: "upsert", object: pod("api-1", API, "node-1", "cart") }, { type: "upsert", object: pod("cart-1", CART, "node-2", "api") }], T0 + 20n * SECOND);
    // Cart's address first: its new identity (api's) enters the compiler's cache before api's address, looked up again, misses it.
    cp.ingestColumns("node-1", columnsOf([request(CART, TO), request(API, FROM)], 2n));
    expect(attributed(2n)).toEqual(fromModel(cp, CART, WEB, 6, 8080));
    expect(attributed(2n)).toMatchObject({ egressAllowedBy: ["shop/api-egress"] });
    expect(attributed(3n)).toEqual(fromModel(cp, API, WEB, 6, 8080));
    expect(attributed(3n)).toMatchObject({ egressIsolated: false, egressAllowedBy: [] });
  });

  it("keys a reply by its connection's direction: the reply of api -> web:8080 and a connection web -> api:8080 keep their own attributions, in either order", async () => {
    const reply: Case = {
      src: WEB, dst: API, proto: 6, sport: 8080, dport: 41_000, point: FROM, verdict: Verdict.VERDICT_FORWARDED, reason: ESTABLISHED,
      flags: 0x10, expected: { from: API, to: WEB, port: 8080 },
    };
    const opposite: Case = {
      src: WEB, dst: API, proto: 6, sport: 41_000, dport: 8080, point: FROM, verdict: Verdict.VERDICT_FORWARDED, reason: POLICY,
      flags: 0x02, expected: { from: WEB, to: API, port: 8080 },
    };
    for (const order of [[reply, opposite], [opposite, reply]]) {
      const cp = await controlPlane();
      // The two directions are decided by different policies: web admits api on 8080, api's egress allows web on 8080.
      expect(fromModel(cp, API, WEB, 6, 8080)).toMatchObject({ egressAllowedBy: ["shop/api-egress"], ingressAllowedBy: ["shop/web-ingress"] });
      expect(fromModel(cp, WEB, API, 6, 8080)).toMatchObject({ egressIsolated: false, ingressIsolated: false, egressAllowedBy: [], ingressAllowedBy: [] });
      // One batch each, so the second row meets the first one's cache entry.
      cp.ingestColumns("node-1", columnsOf([order[0]!], 1n));
      cp.ingestColumns("node-1", columnsOf([order[1]!], 2n));
      expectAttributed(cp, order);
    }
  });
});
