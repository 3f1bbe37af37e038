// Fail closed (native/bpf/README.md, "Fail closed") and fragments, on the real kernel:
// endpoint.bpf.o loaded in this process (agent/datapath.ts) on the pod veths of a node
// namespace, fed hand-written PolicySnapshots, and judged by crafted frames (AF_PACKET,
// python3) and by real traffic the kernel fragments itself.
//
// Whether a frame passed a program is seen by nftables counters that the kernel runs after
// TC on the same device (netdev ingress), keyed by a source MAC per frame class: on the
// node's veth of pod a (after from_pod) and on pod b's eth0 (after b's to_pod). What a
// frame did end to end is seen by UDP servers in pod b and in the world namespace.
//
// Topology (namespaces bhfc-<pid>-…, 10.195.0.0/16, fd00:195::/64 and, for the world,
// 198.51.100.0/24 and 2001:db8::/64 only; no route out):
//   node   10.195.0.1 on lo, forwarding; veth-a/-b/-c to the pods (host routes); wld0 to world
//   pods   a 10.195.1.1, b 10.195.1.2, c 10.195.1.3 (fd00:195::1:1..3), default-free routes
//          to 10.195.0.0/16, 198.51.100.0/24, fd00:195::/64 and 2001:db8::/64 via the node
//   world  198.51.100.2/24, 2001:db8::2/64
// Every namespace and nft table goes with its namespace in afterAll, also on failure.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { HOST_ID, podsSnapshot, rule, WORLD_ID } from "./harness/snapshot.js";
import { drainRecords, type Rec } from "./harness/drained.js";
import { bpfObjectDir, native, type Link } from "../native/index.js";
import { Datapath } from "../agent/datapath.js";
import {
  clockNow, decodeFlowRecord, type FlowKey, type UnjudgedCause, type UnjudgedVerdict,
} from "../agent/records.js";
import { LocalEndpoints } from "../agent/endpoints.js";
import { Enricher } from "../controlplane/cluster/enrich.js";
import { ClusterState } from "../controlplane/cluster/state.js";
import { parseKubeObject } from "../controlplane/metadata/objects.js";
import { FlowMapStore } from "../controlplane/store/flowmap.js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { type PolicyApplier } from "../agent/policy.js";
import { VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import {
  PolicyMode, type PolicyRule, type PolicySnapshot,
} from "../proto/gen/bulkhead/v1/policy.js";
import { netnsExecArgv, run } from "../lab/netns.js";
import { poll, sleep } from "./harness/netns.js";
import type { Spawned } from "./harness/process.js";
import { Testbed, type BedPod, type TestbedSpec } from "./harness/testbed.js";
import { holdCensusLockForFile } from "./harness/census.js";

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

// kernel-own (vitest.config.ts): beside the kernel project, so the file holds the BPF census
// lock (harness/census.ts) while its programs and links exist, which is all along.
holdCensusLockForFile();

const OBJECT = path.join(bpfObjectDir, "endpoint.bpf.o");
const PREFIX = `bhfc-${process.pid}`;
const NODE_NS = `${PREFIX}-node`;
const WORLD_NS = `${PREFIX}-world`;
const NODE_IP = "10.195.0.1";
const WORLD_IP = "198.51.100.2";
const WORLD_IP6 = "2001:db8::2";
const UDP = 17;
const ID = { host: HOST_ID, world: WORLD_ID, a: 10, b: 11, c: 12 } as const;

interface Pod extends BedPod { name: "a" | "b" | "c"; ip6: string; id: number; mac: string; hostMac: string }

const pods: Pod[] = (["a", "b", "c"] as const).map((name, i) => ({
  name, netns: `${PREFIX}-${name}`, ip: `10.195.1.${i + 1}`, ip6: `fd00:195::1:${i + 1}`,
  hostIf: `veth-${name}`, ifindex: 0, id: ID[name], mac: "", hostMac: "",
}));
const [A, B] = pods as [Pod, Pod, Pod];

// ---- topology ----------------------------------------------------------------------

const bedSpec: TestbedSpec<Pod> = {
  prefix: PREFIX, ipv6: true, nodes: [{ name: "node", netns: NODE_NS, ip: NODE_IP }], pods,
  podRoutes: ["10.195.0.0/16", "198.51.100.0/24"], podRoutes6: ["fd00:195::/64", "2001:db8::/64"],
  nodeSysctls: { "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0 },
  outside: {
    netns: WORLD_NS, ip: WORLD_IP, gateway: "198.51.100.1", len: 24, routes: ["10.195.0.0/16"],
    ip6: WORLD_IP6, gateway6: "2001:db8::1", len6: 64, routes6: ["fd00:195::/64"],
  },
};
let bed: Testbed<Pod> | undefined;

async function buildTopology(): Promise<void> {
  bed = await Testbed.create(bedSpec);
}

async function teardownTopology(): Promise<void> {
  await bed?.teardown();
  bed = undefined;
}

function spawnIn(netns: string, argv: readonly string[]): Spawned {
  if (!bed) throw new Error("no topology");
  return bed.spawnIn(netns, argv);
}

// ---- traffic -----------------------------------------------------------------------

// UDP servers, dual stack: every datagram is reported ({udp, from, len}) and echoed,
// except on QUIET_PORT (a reply to a forged source would be traffic of its own).
const QUIET_PORT = 55;
const SERVER_JS = `const dgram = require("dgram");
const ports = JSON.parse(process.argv[1]);
let pending = ports.length;
for (const port of ports) {
  const s = dgram.createSocket({ type: "udp6", ipv6Only: false });
  s.on("message", (m, r) => {
    console.log(JSON.stringify({ udp: port, from: r.address.replace(/^::ffff:/, ""), len: m.length }));
    if (port !== ${QUIET_PORT}) s.send(m, r.port, r.address, () => {});
  });
  s.bind(port, "::", () => { if (--pending === 0) console.log(JSON.stringify({ ready: true })); });
}`;

// One datagram of o.size bytes; ok when an echo of the same size comes back in time.
const CLIENT_JS = `const dgram = require("dgram");
const o = JSON.parse(process.argv[1]);
const done = (r) => { process.stdout.write(JSON.stringify(r) + "\\n"); process.exit(0); };
setTimeout(() => done({ ok: false, error: "timeout" }), o.timeoutMs);
const s = dgram.createSocket(o.host.includes(":") ? "udp6" : "udp4");
s.on("message", (m) => { if (m.length === o.size) done({ ok: true }); });
s.on("error", (e) => done({ ok: false, error: e.code || e.message }));
s.send(Buffer.alloc(o.size, 0x61), o.port, o.host);`;

async function datagram(from: Pod, host: string, port: number, size: number, timeoutMs = 1000): Promise<boolean> {
  const spec = JSON.stringify({ host, port, size, timeoutMs });
  const r = await run(netnsExecArgv(from.netns, [process.execPath, "-e", CLIENT_JS, spec]), { timeoutMs: 15_000 });
  return (JSON.parse(r.stdout) as { ok: boolean }).ok;
}

/** Datagrams a server reported from `from` to `port`. */
function arrivals(server: Spawned, from: string, port: number): { len: number }[] {
  return server.lines.filter((l) => l.startsWith("{\"udp\"")).map((l) => JSON.parse(l) as { udp: number; from: string; len: number })
    .filter((x) => x.from === from && x.udp === port);
}

// ---- crafted frames ----------------------------------------------------------------

// Builds frames and sends them on an interface with AF_PACKET, one batch per process.
// Every class is an otherwise valid UDP datagram (IPv4 header checksum right, UDP checksum
// 0) made unjudgeable in one way, except "frags": fragments of one 3,000-byte UDP
// datagram in the order given. A frame the egress program drops fails with ENOBUFS.
const CRAFT_PY = String.raw`
import errno, json, socket, struct, sys
batch = json.loads(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((batch[0]["iface"], 0))
def frames_of(o):
    def mac(s): return bytes.fromhex(s.replace(":", ""))
    def csum(b):
        if len(b) % 2: b += b"\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16: s = (s & 0xffff) + (s >> 16)
        return (~s) & 0xffff
    def ip4(payload, proto=17, vihl=0x45, tot=None, frag=0, ident=1):
        tot = 20 + len(payload) if tot is None else tot
        h = struct.pack("!BBHHHBBH4s4s", vihl, 0, tot, ident, frag, 64, proto, 0,
                        socket.inet_aton(o["src4"]), socket.inet_aton(o["dst4"]))
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
    def ip6(nh, payload):
        return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64,
                           socket.inet_pton(socket.AF_INET6, o["src6"]), socket.inet_pton(socket.AF_INET6, o["dst6"])) + payload
    def udp(data, dport=None):
        return struct.pack("!HHHH", o["sport"], dport or o["dport"], 8 + len(data), 0) + data
    def eth(ethertype, body):
        return mac(o["dst_mac"]) + mac(o["src_mac"]) + struct.pack("!H", ethertype) + body
    data = b"x" * 32
    c = o["cls"]
    if c == "vlan":          # three priority tags (VLAN 0): the kernel strips them all and routes
        frames = [eth(0x8100, b"\x00\x00\x81\x00" + b"\x00\x00\x81\x00" + b"\x00\x00\x08\x00" + ip4(udp(data)))]
    elif c == "ethertype":   # IPv4 inside MPLS (label 16, bottom of stack)
        frames = [eth(0x8847, struct.pack("!I", (16 << 12) | (1 << 8) | 64) + ip4(udp(data)))]
    elif c == "l2":          # a second VLAN tag cut short
        frames = [eth(0x8100, b"\x00\x00\x81\x00\x00\x00")]
    elif c == "ipv4_ihl":    # IHL 4
        frames = [eth(0x0800, ip4(udp(data), vihl=0x44))]
    elif c == "ipv4_totlen": # total length shorter than the header
        frames = [eth(0x0800, ip4(udp(data), tot=16))]
    elif c == "ipv4_long":   # total length beyond the frame
        frames = [eth(0x0800, ip4(udp(data), tot=1400))]
    elif c == "ipv6":        # an IPv6 header cut short
        frames = [eth(0x86dd, ip6(17, udp(data))[:24])]
    elif c == "ipv6_ext":    # seven destination-options headers before UDP
        chain = b"".join(struct.pack("!BB", 60, 0) + b"\x01\x04\x00\x00\x00\x00" for _ in range(6)) + struct.pack("!BB", 17, 0) + b"\x01\x04\x00\x00\x00\x00"
        frames = [eth(0x86dd, ip6(60, chain + udp(data)))]
    elif c == "tcp_doff":    # TCP data offset 4
        tcp = struct.pack("!HHIIBBHHH", o["sport"], o["dport"], 1, 0, 0x40, 0x02, 1024, 0, 0)
        frames = [eth(0x0800, ip4(tcp, proto=6))]
    elif c == "udp_short":   # 4 bytes of UDP header
        frames = [eth(0x0800, ip4(udp(data)[:4]))]
    elif c == "udp":         # a valid datagram (for a forged source address)
        frames = [eth(0x0800, ip4(udp(data)))]
    elif c == "frags":       # fragments of one datagram, in the order asked
        d = udp(b"f" * 3000)
        parts = {1: (0, d[0:1480], 0x2000), 2: (185, d[1480:2960], 0x2000), 3: (370, d[2960:], 0)}
        frames = [eth(0x0800, ip4(parts[n][1], frag=parts[n][2] | parts[n][0], tot=20 + len(parts[n][1]), ident=o["id"])) for n in o["order"]]
    else:
        sys.exit("unknown class " + c)
    return frames
for o in batch:
    for _ in range(o.get("count", 1)):
        for f in frames_of(o):
            try:
                s.send(f)
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
`;

/** Every unjudgeable class, its cause, and (by index) the source MAC the nft witnesses
 * count it by. `routed`: frames of the class that the node forwards as they are, when a
 * program lets them through (the IP layer checks neither the extension chain nor the L4
 * header, and does not reassemble); the others it drops, or, for stacked priority tags,
 * forwards stripped of them: judgeable. */
const CLASSES: { cls: string; cause: UnjudgedCause; routed: number }[] = [
  { cls: "vlan", cause: "vlan", routed: 0 }, { cls: "ethertype", cause: "ethertype", routed: 0 }, { cls: "l2", cause: "l2", routed: 0 },
  { cls: "ipv4_ihl", cause: "ipv4", routed: 0 }, { cls: "ipv4_totlen", cause: "ipv4", routed: 0 },
  { cls: "ipv4_long", cause: "ipv4", routed: 0 }, { cls: "ipv6", cause: "ipv6", routed: 0 },
  { cls: "ipv6_ext", cause: "ipv6_ext", routed: 1 }, { cls: "tcp_doff", cause: "l4", routed: 1 },
  { cls: "udp_short", cause: "l4", routed: 1 }, { cls: "frags", cause: "fragment", routed: 2 },
];
const classMac = (i: number) => `02:fc:00:00:00:${(i + 1).toString(16).padStart(2, "0")}`;
const FRAG_MAC = "02:fc:00:00:01:00";

interface Craft { netns: string; iface: string; dstMac: string; srcMac: string; cls: string; src4: string; dst4: string;
  src6: string; dst6: string; sport: number; dport: number; count?: number; id?: number; order?: number[] }

/** Sends a batch of frames, all from the first one's namespace and interface. */
async function craft(...batch: Craft[]): Promise<void> {
  const spec = JSON.stringify(batch.map((c) => ({ iface: c.iface, dst_mac: c.dstMac, src_mac: c.srcMac, cls: c.cls, src4: c.src4,
    dst4: c.dst4, src6: c.src6, dst6: c.dst6, sport: c.sport, dport: c.dport, count: c.count ?? 1, id: c.id ?? 1,
    order: c.order ?? [1, 2, 3] })));
  await run(netnsExecArgv(batch[0]?.netns ?? "", ["python3", "-c", CRAFT_PY, spec]), { timeoutMs: 15_000 });
}

/** An nft netdev table counting, on `dev`'s ingress (after TC), frames by source MAC. */
async function addWitness(netns: string, dev: string, macs: readonly string[]): Promise<void> {
  const rules = macs.map((m) => `    ether saddr ${m} counter`).join("\n");
  await run(["ip", "netns", "exec", netns, "nft", "-f", "-"], {
    input: `table netdev bhfc_witness {\n  chain in_${dev} {\n    type filter hook ingress device ${dev} priority 0;\n${rules}\n  }\n}\n`,
  });
}

/** Frames each source MAC's rule has counted so far. */
async function witnessed(netns: string): Promise<Map<string, number>> {
  const out = JSON.parse((await run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "netdev", "bhfc_witness"])).stdout) as
    { nftables: { rule?: { expr: ({ match?: { right: string } } & { counter?: { packets: number } })[] } }[] };
  const counts = new Map<string, number>();
  for (const item of out.nftables) {
    const expr = item.rule?.expr ?? [];
    const mac = expr.find((e) => e.match)?.match?.right;
    const n = expr.find((e) => e.counter)?.counter?.packets;
    if (mac !== undefined && n !== undefined) counts.set(mac, n);
  }
  return counts;
}

// ---- snapshots and records ---------------------------------------------------------

type Isolation = Partial<Record<"a" | "b" | "c", { ingress?: boolean; egress?: boolean }>>;

function snapshot(version: number, mode: PolicyMode, isolated: Isolation, rules: PolicyRule[]): PolicySnapshot {
  return podsSnapshot(version, mode, pods, isolated, [NODE_IP], rules);
}

/** Packets per verdict/reason label of the records at a pod's veth that match. */
function packetsBy(recs: Rec[], at: Pod, point: 1 | 2, m: Partial<FlowKey>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of recs) {
    if (r.ifindex !== at.ifindex || r.point !== point) continue;
    if (Object.entries(m).some(([k, v]) => r[k as keyof FlowKey] !== v)) continue;
    out[r.label] = (out[r.label] ?? 0) + Number(r.packets);
  }
  return out;
}

// ---- the tests ---------------------------------------------------------------------

describe("fail closed and fragments on the real kernel", () => {
  let datapath: Datapath;
  let policy: PolicyApplier;
  let links: Link[] = [];
  let version = 0;
  let serverB: Spawned;
  let serverWorld: Spawned;

  function enact(mode: PolicyMode, isolated: Isolation, rules: PolicyRule[]): void {
    policy.apply(snapshot(++version, mode, isolated, rules));
    policy.reconcileEndpoints(pods.map((p) => p.ifindex), native().listRoutes(`/run/netns/${NODE_NS}`));
    datapath.object.map("conntrack").drain();
    datapath.object.map("fragments").drain();
    drainRecords(datapath);
  }

  const unjudged = (verdict: UnjudgedVerdict, cause: UnjudgedCause) =>
    datapath.unjudged().find((u) => u.verdict === verdict && u.cause === cause)?.packets ?? 0n;
  const unjudgedAll = () => new Map(datapath.unjudged().map((u) => [`${u.verdict}/${u.cause}`, u.packets]));
  const delta = (before: Map<string, bigint>, after: Map<string, bigint>) => {
    const out: Record<string, number> = {};
    for (const [k, v] of after) if (v !== (before.get(k) ?? 0n)) out[k] = Number(v - (before.get(k) ?? 0n));
    return out;
  };

  beforeAll(async () => {
    await buildTopology();
    serverB = spawnIn(B.netns, [process.execPath, "-e", SERVER_JS, JSON.stringify([53, 54, QUIET_PORT])]);
    serverWorld = spawnIn(WORLD_NS, [process.execPath, "-e", SERVER_JS, JSON.stringify([53, 54, QUIET_PORT])]);
    await serverB.waitForLine((l) => l.includes('"ready":true'), 10_000);
    await serverWorld.waitForLine((l) => l.includes('"ready":true'), 10_000);
    const macs = [...CLASSES.map((_, i) => classMac(i)), FRAG_MAC];
    await addWitness(NODE_NS, A.hostIf, macs);
    await addWitness(B.netns, "eth0", macs);
    datapath = new Datapath({ objectPath: OBJECT, flowMapSize: 65536, emitNewFlowEvents: false });
    policy = datapath.policy;
    for (const p of pods) links.push(...datapath.attach(p.ifindex, "tcx", `/run/netns/${NODE_NS}`, p.hostIf));
  }, 60_000);

  afterAll(async () => {
    for (const l of links) l.detach();
    links = [];
    datapath?.close();
    await teardownTopology();
  }, 60_000);

  /** Sends every class once to each of `dsts` and returns what the witness behind the
   * program counted per class, and the unjudged counters' change. */
  async function sendEveryClass(dir: "from_pod" | "to_pod", dsts: { v4: string; v6: string }[]) {
    const witnessNs = dir === "from_pod" ? NODE_NS : B.netns;
    const seenBefore = await witnessed(witnessNs);
    const before = unjudgedAll();
    await craft(...CLASSES.flatMap((c, i) => dsts.map((dst, j) => ({
      ...(dir === "from_pod"
        ? { netns: A.netns, iface: "eth0", dstMac: A.hostMac, src4: A.ip, src6: A.ip6 }
        : { netns: NODE_NS, iface: B.hostIf, dstMac: B.mac, src4: WORLD_IP, src6: WORLD_IP6 }),
      srcMac: classMac(i), cls: c.cls, dst4: dst.v4, dst6: dst.v6, sport: 40000 + i, dport: 53,
      id: 1000 + 10 * i + j, order: [2, 3],
    }))));
    const expected: Record<string, number> = {};
    for (const c of CLASSES) expected[c.cause] = (expected[c.cause] ?? 0) + dsts.length * (c.cls === "frags" ? 2 : 1);
    const total = Object.values(expected).reduce((a, b) => a + b, 0);
    // Waits until the program has counted every frame: each is counted before its verdict
    // takes effect, so the witness (which runs after the program) has seen all it will.
    await poll(async () => [...unjudgedAll()].reduce((n, [k, v]) => n + Number(v - (before.get(k) ?? 0n)), 0),
      (n) => n >= total, 5_000, `${total} unjudged frames counted`);
    const seenAfter = await witnessed(witnessNs);
    const passed: Record<string, number> = {};
    for (const [i, c] of CLASSES.entries()) passed[c.cls] = (seenAfter.get(classMac(i)) ?? 0) - (seenBefore.get(classMac(i)) ?? 0);
    return { passed, counted: delta(before, unjudgedAll()), expected };
  }

  const perVerdict = (verdict: UnjudgedVerdict, expected: Record<string, number>) =>
    Object.fromEntries(Object.entries(expected).map(([cause, n]) => [`${verdict}/${cause}`, n]));
  const each = (n: number) => Object.fromEntries(CLASSES.map((c) => [c.cls, c.cls === "frags" ? 2 * n : n]));

  const toPodAndWorld = [{ v4: B.ip, v6: B.ip6 }, { v4: WORLD_IP, v6: WORLD_IP6 }];

  describe("frames the programs cannot judge", () => {
    it("leaving a pod in enforce, towards a pod and towards the world: dropped at from_pod, counted by cause, no flow", async () => {
      enact(PolicyMode.POLICY_MODE_ENFORCE, {}, []);
      const r = await sendEveryClass("from_pod", toPodAndWorld);
      expect(r.passed, "frames that got past a's from_pod").toEqual(each(0));
      expect(r.counted).toEqual(perVerdict("dropped", r.expected));
      const recs = drainRecords(datapath);
      expect(recs.filter((x) => x.sport >= 40000 && x.sport < 40100), "flow records of crafted frames").toEqual([]);
    });

    it("leaving a pod in observe: passed and counted by cause", async () => {
      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      const r = await sendEveryClass("from_pod", toPodAndWorld);
      expect(r.passed).toEqual(each(2));
      // What the node forwards to b as it is, b's to_pod cannot judge either: counted again.
      const atB: Record<string, number> = {};
      for (const c of CLASSES) atB[c.cause] = (atB[c.cause] ?? 0) + c.routed;
      expect(r.counted).toEqual(Object.fromEntries(Object.entries(r.expected)
        .map(([cause, n]) => [`forwarded/${cause}`, n + (atB[cause] ?? 0)])));
    });

    it("leaving a pod in audit: passed and counted as audit", async () => {
      enact(PolicyMode.POLICY_MODE_AUDIT, {}, []);
      const r = await sendEveryClass("from_pod", [{ v4: WORLD_IP, v6: WORLD_IP6 }]);
      expect(r.passed).toEqual(each(1));
      expect(r.counted).toEqual(perVerdict("audit", r.expected));
    });

    it("entering a pod in enforce: dropped at its to_pod; in observe: passed; counted by cause either way", async () => {
      enact(PolicyMode.POLICY_MODE_ENFORCE, {}, []);
      let r = await sendEveryClass("to_pod", [{ v4: B.ip, v6: B.ip6 }]);
      expect(r.passed, "frames that reached b's eth0").toEqual(each(0));
      expect(r.counted).toEqual(perVerdict("dropped", r.expected));
      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      r = await sendEveryClass("to_pod", [{ v4: B.ip, v6: B.ip6 }]);
      expect(r.passed).toEqual(each(1));
      expect(r.counted).toEqual(perVerdict("forwarded", r.expected));
    });

    it("stacked priority tags do not carry a denied datagram to the world (the kernel strips them and routes it)", async () => {
      // a may send nothing to the world; the same datagram with three VLAN-0 tags used to pass.
      enact(PolicyMode.POLICY_MODE_ENFORCE, { a: { egress: true } }, []);
      const before = arrivals(serverWorld, A.ip, 53).length;
      expect(await datagram(A, WORLD_IP, 53, 100, 500), "plain datagram, denied").toBe(false);
      const counted = unjudged("dropped", "vlan");
      await craft({ netns: A.netns, iface: "eth0", dstMac: A.hostMac, srcMac: classMac(0), cls: "vlan", src4: A.ip, src6: A.ip6,
        dst4: WORLD_IP, dst6: WORLD_IP6, sport: 40000, dport: 53, count: 3 });
      // A frame the program lets through is routed to the world in the same softirq, before
      // python's send() returns; 500 ms covers the world server printing it.
      await sleep(500);
      expect(arrivals(serverWorld, A.ip, 53).length - before, "datagrams from a at the world").toBe(0);
      expect(unjudged("dropped", "vlan") - counted, "tagged frames dropped").toBe(3n);

      // The same frames in observe reach the world: the kernel does route them.
      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      await craft({ netns: A.netns, iface: "eth0", dstMac: A.hostMac, srcMac: classMac(0), cls: "vlan", src4: A.ip, src6: A.ip6,
        dst4: WORLD_IP, dst6: WORLD_IP6, sport: 40000, dport: 53, count: 3 });
      await poll(async () => arrivals(serverWorld, A.ip, 53).length - before, (n) => n >= 3, 5_000, "3 tagged datagrams at the world");
    });
  });

  describe("fragments", () => {
    const allowB53 = () => enact(PolicyMode.POLICY_MODE_ENFORCE, { b: { ingress: true } }, [rule(ID.b, "ingress", 0, UDP, 53)]);

    for (const family of [4, 6] as const) {
      it(`a 3,000-byte UDP datagram over IPv${family}: whole to an allowed port, nothing to a denied one; records carry its ports`, async () => {
        allowB53();
        const dst = family === 4 ? B.ip : B.ip6;
        const src = family === 4 ? A.ip : A.ip6;
        const before53 = arrivals(serverB, src, 53).length;
        const before54 = arrivals(serverB, src, 54).length;
        expect(await datagram(A, dst, 53, 3000), "3,000 bytes to b:53 and their echo back").toBe(true);
        expect(arrivals(serverB, src, 53).slice(before53).map((x) => x.len)).toEqual([3000]);
        expect(await datagram(A, dst, 54, 3000, 500), "3,000 bytes to b:54").toBe(false);
        expect(arrivals(serverB, src, 54).length - before54).toBe(0);

        // veth MTU 1500: three fragments each way (IPv4 1480+1480+48, IPv6 1448+1448+112
        // bytes of UDP datagram), all under the datagram's ports.
        const recs = drainRecords(datapath);
        const q = { proto: UDP, src, dst };
        expect(packetsBy(recs, A, 1, { ...q, dport: 53 })).toEqual({ "FORWARDED/NONE": 3 });
        expect(packetsBy(recs, B, 2, { ...q, dport: 53 })).toEqual({ "FORWARDED/POLICY": 3 });
        expect(packetsBy(recs, B, 1, { proto: UDP, src: dst, dst: src, sport: 53 })).toEqual({ "FORWARDED/ESTABLISHED": 3 });
        expect(packetsBy(recs, A, 2, { proto: UDP, src: dst, dst: src, sport: 53 })).toEqual({ "FORWARDED/ESTABLISHED": 3 });
        expect(packetsBy(recs, B, 2, { ...q, dport: 54 })).toEqual({ "DROPPED/POLICY": 3 });
        expect(recs.filter((r) => r.proto === UDP && r.dport === 0 && r.sport === 0), "records without ports").toEqual([]);
      });
    }

    it("out of order (a later fragment before the first): dropped in enforce, so the datagram never completes; whole in observe", async () => {
      allowB53();
      const before = arrivals(serverB, A.ip, 53).length;
      const counted = unjudged("dropped", "fragment");
      const send = (id: number) => craft({ netns: A.netns, iface: "eth0", dstMac: A.hostMac, srcMac: FRAG_MAC, cls: "frags",
        src4: A.ip, src6: A.ip6, dst4: B.ip, dst6: B.ip6, sport: 41000, dport: 53, id, order: [2, 1, 3] });
      await send(7001);
      await poll(async () => unjudged("dropped", "fragment") - counted, (n) => n >= 1n, 5_000, "the early fragment dropped");
      // The other two passed at once (same softirq); b would reassemble within ms.
      await sleep(300);
      expect(arrivals(serverB, A.ip, 53).length - before, "datagrams b reassembled").toBe(0);
      expect(unjudged("dropped", "fragment") - counted).toBe(1n);
      const recs = drainRecords(datapath);
      expect(packetsBy(recs, A, 1, { proto: UDP, sport: 41000, dport: 53 })).toEqual({ "FORWARDED/NONE": 2 });
      expect(packetsBy(recs, B, 2, { proto: UDP, sport: 41000, dport: 53 })).toEqual({ "FORWARDED/POLICY": 2 });

      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      const forwarded = unjudged("forwarded", "fragment");
      await send(7002);
      await poll(async () => arrivals(serverB, A.ip, 53).length - before, (n) => n >= 1, 5_000, "the datagram at b");
      expect(arrivals(serverB, A.ip, 53).slice(before).map((x) => x.len)).toEqual([3000]);
      expect(unjudged("forwarded", "fragment") - forwarded, "the early fragment, passed unjudged at a's from_pod and b's to_pod")
        .toBe(2n);
    });

    it("fragments whose first was never seen: dropped and counted in enforce, passed and counted in observe", async () => {
      allowB53();
      const send = (id: number) => craft({ netns: A.netns, iface: "eth0", dstMac: A.hostMac, srcMac: FRAG_MAC, cls: "frags",
        src4: A.ip, src6: A.ip6, dst4: B.ip, dst6: B.ip6, sport: 41001, dport: 53, id, order: [2, 3] });
      let seen = (await witnessed(NODE_NS)).get(FRAG_MAC) ?? 0;
      let counted = unjudged("dropped", "fragment");
      await send(7101);
      await poll(async () => unjudged("dropped", "fragment") - counted, (n) => n >= 2n, 5_000, "2 fragments dropped");
      expect((await witnessed(NODE_NS)).get(FRAG_MAC) ?? 0).toBe(seen);

      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      seen = (await witnessed(NODE_NS)).get(FRAG_MAC) ?? 0;
      counted = unjudged("forwarded", "fragment");
      await send(7102);
      await poll(async () => unjudged("forwarded", "fragment") - counted, (n) => n >= 2n, 5_000, "2 fragments passed");
      expect(((await witnessed(NODE_NS)).get(FRAG_MAC) ?? 0) - seen).toBe(2);
      expect(drainRecords(datapath).filter((r) => r.ifindex === A.ifindex && r.dport === 53 && r.proto === UDP), "no flow").toEqual([]);
    });
  });

  describe("spoofed packets", () => {
    /** Pods a and b in namespace shop, c in namespace other, all on node-1, as the control plane knows them. */
    function cluster(): ClusterState {
      const state = new ClusterState();
      const nowNs = BigInt(Date.now()) * 1_000_000n;
      const created = new Date(Date.now() - 60_000).toISOString();
      state.apply(pods.map((p) => {
        const object = parseKubeObject({
          apiVersion: "v1", kind: "Pod",
          metadata: { name: p.name, namespace: p === pods[2] ? "other" : "shop", uid: `uid-${p.name}`, labels: {}, creationTimestamp: created },
          spec: { nodeName: "node-1", containers: [{ name: "main" }] },
          status: { phase: "Running", podIP: p.ip, podIPs: [{ ip: p.ip }, { ip: p.ip6 }] },
        });
        if (!object) throw new Error(`pod ${p.name} did not parse`);
        return { type: "upsert" as const, object };
      }), nowNs - 30n * 1_000_000_000n);
      return state;
    }

    it("in observe mode, a pod forging another namespace's pod address plants no edge on that namespace's map", async () => {
      const C = pods[2] as Pod;
      enact(PolicyMode.POLICY_MODE_OBSERVE, {}, []);
      await craft({ netns: A.netns, iface: "eth0", dstMac: A.hostMac, srcMac: A.mac, cls: "udp", src4: C.ip, src6: A.ip6,
        dst4: B.ip, dst6: B.ip6, sport: 42000, dport: QUIET_PORT, count: 3 });
      await poll(async () => arrivals(serverB, C.ip, QUIET_PORT).length, (n) => n >= 3, 5_000, "3 forged datagrams at b (observe)");

      // The agent's path (agent/agent.ts drainOnce) and the control plane's (enrich, flow map).
      const state = cluster();
      const locals = new LocalEndpoints();
      locals.replace(state.localEndpoints("node-1"));
      const enricher = new Enricher(state);
      let seq = 0n;
      const ctx = { node: "node-1", interfaceName: (i: number) => `if${i}`, clock: clockNow(), nextSequence: () => ++seq };
      const podAddress = (ifindex: number) => policy.endpoints().get(ifindex)?.ip4;
      const d = datapath.drain();
      const records: FlowRecord[] = [];
      for (let i = 0; i < d.count; i++) {
        const r = decodeFlowRecord(d.keys, d.values, i, ctx);
        locals.nameLocalEnd(r, podAddress);
        records.push(enricher.enrich(r));
      }
      const forged = records.filter((r) => r.ip?.source === C.ip && r.l4?.sourcePort === 42000);
      const sent = forged.find((r) => r.ifindex === A.ifindex);
      expect(sent?.verdictReason, "the record at a's from_pod").toBe(VerdictReason.VERDICT_REASON_SPOOFED);
      expect(sent?.packets).toBe(3n);
      expect({ pod: sent?.source?.podName, namespace: sent?.source?.namespace }, "named after the sender").toEqual({ pod: "a", namespace: "shop" });
      expect(sent?.source?.ip, "under a's own address; the forged one stays in ip.source").toBe(A.ip);

      const maps = new FlowMapStore();
      maps.add(records);
      const edgesOf = (namespace: string) => maps.getMap({ namespace }).edges
        .filter((e) => e.port === QUIET_PORT && e.protocol === "UDP").map((e) => `${e.source} -> ${e.destination}`);
      expect(edgesOf("other"), "edges on c's namespace map").toEqual([]);
      expect(edgesOf("shop")).toEqual(["workload:shop/Pod/a -> workload:shop/Pod/b"]);
    });
  });
});
