// Conntrack and the verdicts it carries, on the real kernel: ICMP errors that follow their
// connection (path-MTU discovery through isolated pods), a SYN flood that must not evict
// another pod's established connection, a denied cross-node connection whose peer must
// not get "replies" through, and connections judged again when the policy or a mode
// changes. endpoint.bpf.o is loaded in this process (agent/datapath.ts) once per node
// namespace and fed hand-written PolicySnapshots through agent/policy.ts, as in
// test/enforce.test.ts.
//
// Topology (namespaces bhct-<pid>-…, 10.196.0.0/16 and fd00:196::/64 only, no route out):
//   n1     10.196.0.1 on lo, forwarding; veth-a/-b/-c to pods a, b, c with /32 and /128
//          host routes; n1n2 10.196.254.1/24 to n2, 10.196.2.0/24 via n2
//   n2     10.196.0.2 on lo, forwarding; veth-d to pod d; 10.196.1.0/24 via n1
//   pods   a 10.196.1.1, b .1.2, c .1.3 (fd00:196::1:1..3) on n1, d 10.196.2.1 on n2;
//          eth0 with routes to 10.196.0.0/16 via their node, fd00:196::/64 via fe80::1
// Every namespace is deleted in afterAll, also on failure; namespaces of a crashed earlier
// run (its pid gone) are deleted before the topology is built.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { HOST_ID, podsSnapshot, rule, WORLD_ID } from "./harness/snapshot.js";
import { drainRecords, peekRecords, type Rec } from "./harness/drained.js";
import { ECHO_SERVER_JS } from "./harness/echo-server.js";
import { bpfObjectDir, native, type Link } from "../native/index.js";
import { repoRoot } from "../config/install.js";
import { Datapath, type Counters } from "../agent/datapath.js";
import {
  PolicyMode, type PolicyRule, type PolicySnapshot,
} from "../proto/gen/bulkhead/v1/policy.js";
import { ipBatch, netnsExecArgv, run } from "../lab/netns.js";
import { sleep } from "./harness/netns.js";
import { waitFor } from "./harness/wait.js";
import type { Spawned } from "./harness/process.js";
import { Testbed, type BedPod } from "./harness/testbed.js";
import { holdCensusLockForFile } from "./harness/census.js";

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

// kernel-own (vitest.config.ts): beside the kernel project, so the file holds the BPF census
// lock (harness/census.ts) while its programs and links exist, which is all along.
holdCensusLockForFile();

const OBJECT = path.join(bpfObjectDir, "endpoint.bpf.o");
const PREFIX = `bhct-${process.pid}`;
const TCP = 6, UDP = 17, ICMP = 1, ICMPV6 = 58;

const ID = { host: HOST_ID, world: WORLD_ID, a: 10, b: 11, c: 12, d: 13 } as const;

interface NodeNs { name: "n1" | "n2"; netns: string; ip: string; datapath?: Datapath; links: Link[] }
const N1: NodeNs = { name: "n1", netns: `${PREFIX}-n1`, ip: "10.196.0.1", links: [] };
const N2: NodeNs = { name: "n2", netns: `${PREFIX}-n2`, ip: "10.196.0.2", links: [] };

interface Pod extends BedPod { name: "a" | "b" | "c" | "d"; node: NodeNs; ip6: string; id: number }
const pod = (name: Pod["name"], node: NodeNs, ip: string, ip6: string): Pod =>
  ({ name, node, netns: `${PREFIX}-${name}`, ip, ip6, hostIf: `veth-${name}`, ifindex: 0, id: ID[name] });
const A = pod("a", N1, "10.196.1.1", "fd00:196::1:1");
const B = pod("b", N1, "10.196.1.2", "fd00:196::1:2");
const C = pod("c", N1, "10.196.1.3", "fd00:196::1:3");
const D = pod("d", N2, "10.196.2.1", "fd00:196::2:1");
const pods = [A, B, C, D];
const podsOf = (n: NodeNs) => pods.filter((p) => p.node === n);

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "bhct-test-"));

// ---- topology ----------------------------------------------------------------------


let bed: Testbed<Pod> | undefined;

async function buildTopology(): Promise<void> {
  bed = await Testbed.create({
    prefix: PREFIX, ipv6: true, nodes: [N1, N2], pods, podRoutes: ["10.196.0.0/16"], podRoutes6: ["fd00:196::/64"],
  });
  // The nodes' underlay: one link, each node's pod /24 and address routed across it.
  await ipBatch(N1.netns, [`link add n1n2 type veth peer name n2n1 netns ${N2.netns}`, "link set n1n2 up",
    "addr add 10.196.254.1/24 dev n1n2", "route add 10.196.2.0/24 via 10.196.254.2 dev n1n2",
    "route add 10.196.0.2/32 via 10.196.254.2 dev n1n2"]);
  await ipBatch(N2.netns, ["link set n2n1 up", "addr add 10.196.254.2/24 dev n2n1",
    "route add 10.196.1.0/24 via 10.196.254.1 dev n2n1", "route add 10.196.0.1/32 via 10.196.254.1 dev n2n1"]);
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

// A TCP server that keeps its connections and writes to all of them on a "push" line
// from stdin: traffic that starts at the server's side.
const PUSH_SERVER_JS = `const net = require("net"), rl = require("readline");
const socks = [];
net.createServer((s) => { socks.push(s); s.on("error", () => {}); s.on("data", (b) => s.write(b));
  console.log(JSON.stringify({ accepted: socks.length })); }).listen({ port: Number(process.argv[1]), host: "::" },
  () => console.log(JSON.stringify({ ready: true })));
rl.createInterface({ input: process.stdin }).on("line", (l) => { for (const s of socks) s.write(l); });`;

// One TCP connection held open: stdin lines are written to it, data read is printed.
const HOLD_JS = `const net = require("net"), rl = require("readline");
const o = JSON.parse(process.argv[1]);
const s = net.connect({ host: o.host, port: o.port });
s.on("connect", () => console.log(JSON.stringify({ connected: true, port: s.localPort })));
s.on("data", (b) => console.log(JSON.stringify({ data: String(b) })));
s.on("error", (e) => console.log(JSON.stringify({ error: e.code || e.message })));
rl.createInterface({ input: process.stdin }).on("line", (l) => s.write(l));`;

// A UDP socket on a fixed port: stdin lines "host port text" are sent from it, every
// datagram received is printed.
const UDP_PEER_JS = `const dgram = require("dgram"), rl = require("readline");
const s = dgram.createSocket("udp4");
s.on("message", (m, r) => console.log(JSON.stringify({ from: r.address, port: r.port, text: String(m) })));
s.bind(Number(process.argv[1]), () => console.log(JSON.stringify({ ready: true })));
rl.createInterface({ input: process.stdin }).on("line", (l) => { const [h, p, t] = l.split(" "); s.send(t, Number(p), h); });`;

// Writes `bytes` to host:port and reads them all back (an echo server): big writes, so
// full-size segments meet the lowered path MTU. One line: ok, bytes back, elapsed.
const TRANSFER_JS = `const net = require("net");
const o = JSON.parse(process.argv[1]);
const t0 = Date.now();
let got = 0;
const done = (ok, error) => { console.log(JSON.stringify({ ok, got, error, ms: Date.now() - t0 })); process.exit(0); };
setTimeout(() => done(false, "timeout"), o.timeoutMs);
const s = net.connect({ host: o.host, port: o.port });
s.on("connect", () => s.write(Buffer.alloc(o.bytes, 0x62)));
s.on("data", (b) => { got += b.length; if (got >= o.bytes) done(true); });
s.on("error", (e) => done(false, e.code || e.message));`;

/** The first line of `s` that contains `what` (its readiness line). */
async function started(s: Spawned, what: string): Promise<string> {
  return await s.waitForLine((l) => l.includes(what), 10_000);
}

function send(s: Spawned, line: string): void {
  s.child.stdin?.write(`${line}\n`);
}

// ---- snapshots and records ---------------------------------------------------------

type Isolation = Partial<Record<Pod["name"], { ingress?: boolean; egress?: boolean }>>;

/** Pods a–d in `mode`, world 0.0.0.0/0 and ::/0, host = the nodes' addresses. */
function snapshot(version: number, mode: PolicyMode, isolated: Isolation, rules: PolicyRule[]): PolicySnapshot {
  return podsSnapshot(version, mode, pods, isolated, [N1.ip, N2.ip], rules);
}

interface Match { at: Pod; point: "from_pod" | "to_pod"; src?: string; dst?: string; sport?: number; dport?: number; proto?: number }

function labels(recs: Rec[], m: Match): string[] {
  return [...new Set(recs.filter((r) => r.ifindex === m.at.ifindex && r.point === (m.point === "from_pod" ? 1 : 2)
    && (m.src === undefined || r.src === m.src) && (m.dst === undefined || r.dst === m.dst)
    && (m.sport === undefined || r.sport === m.sport) && (m.dport === undefined || r.dport === m.dport)
    && (m.proto === undefined || r.proto === m.proto)).map((r) => r.label))].sort();
}

/** ICMP errors recorded as ICMP flows of their own (types 3/11/12, ICMPv6 1–4). */
function icmpErrorFlows(recs: Rec[]): Rec[] {
  return recs.filter((r) => (r.proto === ICMP && [3, 11, 12].includes(r.sport))
    || (r.proto === ICMPV6 && r.sport >= 1 && r.sport <= 4));
}

// ---- the tests ---------------------------------------------------------------------

describe("conntrack on the real kernel", () => {
  let version = 0;

  /** Applies the snapshot on both nodes, refreshes their endpoints, and forgets every
   * tracked connection and flow so far unless `keep` (a policy change under live
   * connections). */
  function enact(make: (version: number) => PolicySnapshot, keep = false): void {
    const s = make(++version);
    for (const n of [N1, N2]) {
      const dp = n.datapath!;
      dp.policy.apply(s);
      dp.policy.reconcileEndpoints(podsOf(n).map((p) => p.ifindex), native().listRoutes(`/run/netns/${n.netns}`));
      if (!keep) {
        dp.object.map("conntrack").drain();
        dp.object.map("conntrack_new").drain();
        drainRecords(dp);
      }
    }
  }

  const delta = (before: Counters, after: Counters, k: keyof Counters) => after[k] - before[k];

  beforeAll(async () => {
    await buildTopology();
    for (const p of pods) {
      const s = spawnIn(p.netns, [process.execPath, "-e", ECHO_SERVER_JS, JSON.stringify({ tcp: [80, 8000, 8001], udp: [53] })]);
      await started(s, '"ready":true');
    }
    for (const n of [N1, N2]) {
      n.datapath = new Datapath({ objectPath: OBJECT, flowMapSize: 65536, emitNewFlowEvents: false });
      for (const p of podsOf(n)) n.links.push(...n.datapath.attach(p.ifindex, "tcx", `/run/netns/${n.netns}`, p.hostIf));
    }
  }, 60_000);

  afterAll(async () => {
    for (const n of [N1, N2]) {
      for (const l of n.links) l.detach();
      n.links = [];
      n.datapath?.close();
    }
    await teardownTopology();
    fs.rmSync(workDir, { recursive: true, force: true });
  }, 60_000);

  describe("ICMP errors follow the connection they quote", () => {
    // a may talk only to b on TCP 80 and take only c's TCP 80; b takes only a's TCP 80.
    // n1's route to b gets a smaller MTU, so n1 answers a's full-size segments with
    // fragmentation-needed / packet-too-big, which must reach a for the transfer to finish
    // (Linux TCP does no MTU probing by default: without the error it stalls for good).
    for (const [family, dst, mtu, route] of [
      ["IPv4", B.ip, 1000, `${B.ip}/32 dev veth-b scope link`],
      ["IPv6", B.ip6, 1280, `${B.ip6}/128 dev veth-b`],
    ] as const) {
      it(`path-MTU discovery through enforce pods with port rules (${family})`, async () => {
        enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { a: { ingress: true, egress: true }, b: { ingress: true } },
          [rule(ID.a, "egress", ID.b, TCP, 80), rule(ID.a, "ingress", ID.c, TCP, 80), rule(ID.b, "ingress", ID.a, TCP, 80)]));
        const dp = N1.datapath!;
        const before = dp.counters();
        await ipBatch(N1.netns, [`route change ${route} mtu ${mtu}`]);
        try {
          const r = await run(netnsExecArgv(A.netns, [process.execPath, "-e", TRANSFER_JS,
            JSON.stringify({ host: dst, port: 80, bytes: 400_000, timeoutMs: 10_000 })]), { timeoutMs: 20_000 });
          const out = JSON.parse(r.stdout) as { ok: boolean; got: number; error?: string };
          expect(out, "400 kB out and back through the lowered MTU").toMatchObject({ ok: true, got: 400_000 });
        } finally {
          await ipBatch(N1.netns, [`route change ${route}`]);
        }
        const recs = drainRecords(dp);
        expect(delta(before, dp.counters(), "icmpRelated"), "errors matched to the connection").toBeGreaterThan(0n);
        expect(icmpErrorFlows(recs), "no ICMP error recorded as a flow (an edge) of its own").toEqual([]);
        expect(recs.filter((x) => x.label.startsWith("DROPPED"))).toEqual([]);
        // The errors went into the connection's reply flow at a's to_pod.
        expect(labels(recs, { at: A, point: "to_pod", src: dst, sport: 80, proto: TCP })).toEqual(["FORWARDED/ESTABLISHED"]);
      });
    }
  });

  describe("a denied cross-node connection leaves nothing its peer can answer through", () => {
    it("d's to_pod on n2 denies a's datagram; d's datagrams back to a's port are dropped at n1", async () => {
      // a takes nothing from anyone; d takes a's UDP 53 only (its echo server answers).
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { a: { ingress: true }, d: { ingress: true } },
        [rule(ID.d, "ingress", ID.a, UDP, 53)]));
      const pa = spawnIn(A.netns, [process.execPath, "-e", UDP_PEER_JS, "40000"]);
      const pd = spawnIn(D.netns, [process.execPath, "-e", UDP_PEER_JS, "55"]);
      await Promise.all([started(pa, '"ready":true'), started(pd, '"ready":true')]);
      send(pa, `${D.ip} 53 allowed`);
      send(pa, `${D.ip} 55 refused`);
      // The allowed datagram's echo comes back: the first reply through a's deferred entry
      // is judged at n1 as d's to_pod judged it, and passes.
      await pa.waitForLine((l) => l.includes('"text":"allowed"'), 5_000);
      // n2 has had the refused datagram (it went out with the allowed one); d now answers
      // from port 55 to a's port 40000 as if it were a reply.
      send(pd, `${A.ip} 40000 attack`);
      send(pd, `${A.ip} 40000 attack`);
      // A datagram n1 forwards arrives within milliseconds; 1 s is ample for both.
      await sleep(1000);
      expect(pa.lines.filter((l) => l.includes("attack")), "d's datagrams that reached a").toEqual([]);
      expect(pd.lines.filter((l) => l.includes("refused")), "a's refused datagram at d").toEqual([]);
      const r1 = drainRecords(N1.datapath!);
      const r2 = drainRecords(N2.datapath!);
      expect(labels(r2, { at: D, point: "to_pod", src: A.ip, dport: 55 })).toEqual(["DROPPED/POLICY"]);
      expect(labels(r1, { at: A, point: "to_pod", src: D.ip, sport: 55 })).toEqual(["DROPPED/POLICY"]);
      expect(labels(r1, { at: A, point: "to_pod", src: D.ip, sport: 53 })).toEqual(["FORWARDED/ESTABLISHED"]);
      pa.child.kill("SIGKILL");
      pd.child.kill("SIGKILL");
    });
  });

  describe("a SYN flood churns only unconfirmed connections", () => {
    it("300k SYNs from a to c leave b's idle connection into isolated c working", async () => {
      const floodBin = path.join(workDir, "flood");
      const cc = spawnSync("cc", ["-O2", "-Wall", "-pthread", "-o", floodBin, path.join(repoRoot, "bench", "flood.c")], { encoding: "utf8" });
      if (cc.status !== 0) throw new Error(`cc bench/flood.c: ${cc.stderr}`);
      // b takes nothing (so a reply it does not recognise is dropped); c takes b's TCP 7000
      // and anyone's TCP 9990–9999, where nothing listens (c answers each SYN with a RST).
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { b: { ingress: true }, c: { ingress: true } },
        [rule(ID.c, "ingress", ID.b, TCP, 7000), rule(ID.c, "ingress", 0, TCP, 9990, 9999)]));
      const dp = N1.datapath!;
      const server = spawnIn(C.netns, [process.execPath, "-e", PUSH_SERVER_JS, "7000"]);
      await started(server, '"ready":true');
      const hold = spawnIn(B.netns, [process.execPath, "-e", HOLD_JS, JSON.stringify({ host: C.ip, port: 7000 })]);
      await started(hold, '"connected":true');
      send(hold, "hi");
      await hold.waitForLine((l) => l.includes('"data":"hi"'), 5_000);
      const before = dp.counters();

      // Waits for the sender to end after its 300k SYNs (2 entries each on n1: more than
      // conntrack_new holds four times over, and than the old single table's 262,144). Its
      // speed is no part of the proof (bench/README.md measures floods): ~6 s at load 7, the
      // bound only ends a hang, and leaves a loaded machine's sender ten times as long.
      const r = await run(netnsExecArgv(A.netns, [floodBin, "send", "--src", A.ip, "--dst", C.ip, "--dport", "9990",
        "--dports", "5", "--sport-base", "1024", "--flows", "60000", "--count", "300000", "--syn", "1"]), { timeoutMs: 100_000 });
      const sent = JSON.parse(r.stdout) as { sent: number; error: string };
      expect(sent).toMatchObject({ sent: 300_000, error: "" });
      const after = dp.counters();

      // The server speaks first: on the old single table its entry was evicted, and the
      // push was judged at b's to_pod as a new connection from c, which b does not take.
      send(server, "pushed");
      await hold.waitForLine((l) => l.includes('"data":"pushed"'), 5_000);
      expect(hold.lines.filter((l) => l.includes("error"))).toEqual([]);

      // Each SYN made an unconfirmed entry at a's from_pod and again at c's to_pod; none
      // was confirmed (c answered with RSTs); nothing established went missing.
      expect(delta(before, after, "ctCreated")).toBeGreaterThanOrEqual(300_000n);
      expect(delta(before, after, "ctConfirmed")).toBe(0n);
      expect(delta(before, after, "ctLost")).toBe(0n);
      expect(delta(before, after, "ctFull")).toBe(0n);
      const recs = drainRecords(dp);
      expect(labels(recs, { at: B, point: "to_pod", src: C.ip, sport: 7000 })).toEqual(["FORWARDED/ESTABLISHED"]);
      hold.child.kill("SIGKILL");
      server.child.kill("SIGKILL");
    }, 150_000);
  });

  describe("mode switches and policy changes judge tracked connections again", () => {
    // c takes only b's TCP 8000 and 8001. a's connections to c are denied by that policy.
    const cRules = [rule(ID.c, "ingress", ID.b, TCP, 8000), rule(ID.c, "ingress", ID.b, TCP, 8001)];

    /** Writes `text` on the held connection; true when the echo comes back. The echo of
     * an allowed write takes milliseconds on one node; 1.5 s also covers TCP's first
     * retransmission (RTO ≥ 200 ms), which a drop would drop again. */
    async function echoes(hold: Spawned, text: string): Promise<boolean> {
      send(hold, text);
      return hold.waitForLine((l) => l.includes(`"data":"${text}"`), 1_500).then(() => true, () => false);
    }

    for (const from of [PolicyMode.POLICY_MODE_AUDIT, PolicyMode.POLICY_MODE_OBSERVE]) {
      it(`${PolicyMode[from]} → enforce: a connection the policy denies is dropped at its next packet`, async () => {
        enact((v) => snapshot(v, from, { c: { ingress: true } }, cRules));
        const denied = spawnIn(A.netns, [process.execPath, "-e", HOLD_JS, JSON.stringify({ host: C.ip, port: 8000 })]);
        const allowed = spawnIn(B.netns, [process.execPath, "-e", HOLD_JS, JSON.stringify({ host: C.ip, port: 8000 })]);
        await Promise.all([started(denied, '"connected":true'), started(allowed, '"connected":true')]);
        expect(await echoes(denied, "one"), `a → c:8000 in ${PolicyMode[from]}`).toBe(true);
        expect(await echoes(allowed, "one")).toBe(true);

        enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, cRules), true);
        drainRecords(N1.datapath!);
        expect(await echoes(denied, "two"), "a → c:8000 after the switch to enforce").toBe(false);
        expect(await echoes(allowed, "two"), "b → c:8000, allowed, after the switch").toBe(true);
        const recs = drainRecords(N1.datapath!);
        // a's next packet met the shared entry first at a's from_pod: judged again, dropped.
        expect(labels(recs, { at: A, point: "from_pod", dst: C.ip, dport: 8000 })).toContain("DROPPED/POLICY");
        expect(labels(recs, { at: C, point: "to_pod", src: A.ip, dport: 8000 }).filter((l) => !l.startsWith("DROPPED"))).toEqual([]);
        expect(labels(recs, { at: C, point: "to_pod", src: B.ip, dport: 8000 })).toEqual(["FORWARDED/ESTABLISHED"]);
        denied.child.kill("SIGKILL");
        allowed.child.kill("SIGKILL");
      });
    }

    // a stays in observe: the policy change must make a's next packet judge the connection
    // again at a's from_pod. (The drain after the switch flips the flow maps, so "two"
    // finds no flow and no mark there: the observe shortcut's version check is proven by
    // the UDP case below, which does not drain in between.)
    it("c → enforce while a stays in observe: a's next packet is judged again at a's from_pod", async () => {
      const aObserves = (s: PolicySnapshot): PolicySnapshot => ({ ...s, identities: s.identities.map((i) =>
        i.id === ID.a ? { ...i, mode: PolicyMode.POLICY_MODE_OBSERVE } : i) });
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_OBSERVE, { c: { ingress: true } }, cRules));
      const denied = spawnIn(A.netns, [process.execPath, "-e", HOLD_JS, JSON.stringify({ host: C.ip, port: 8000 })]);
      const sport = (JSON.parse(await started(denied, '"connected":true')) as { port: number }).port;
      expect(await echoes(denied, "one"), "a → c:8000 in observe").toBe(true);
      // Only this connection's packets: an earlier test's connection from a to c:8000, its
      // process killed, may still send (the kernel retransmits an orphaned socket's data
      // and FIN), and a's from_pod need not judge a packet without a confirmed entry.
      const toC = (recs: Rec[]) => recs.filter((r) => r.ifindex === A.ifindex && r.point === 1 && r.dst === C.ip && r.dport === 8000 && r.sport === sport);
      // Before the switch, a's from_pod must have counted every packet a sent so far: SYN,
      // the handshake's ACK, "one", and the ACK of c's echo (it leaves a's kernel
      // asynchronously from the echo reaching the test).
      await waitFor(() => toC(peekRecords(N1.datapath!)).reduce((n, r) => n + r.packets, 0n), (n) => n >= 4n, 5_000,
        "a's from_pod to count SYN, ACK, \"one\" and the ACK of its echo");
      enact((v) => aObserves(snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, cRules)), true);
      drainRecords(N1.datapath!);
      expect(await echoes(denied, "two"), "a → c:8000 after c's switch to enforce").toBe(false);
      const recs = drainRecords(N1.datapath!);
      // Every packet of a since the switch (its first included, not only retransmissions).
      expect(labels(toC(recs), { at: A, point: "from_pod", dst: C.ip, dport: 8000 }),
        `a's from_pod to c:8000 since the switch: ${toC(recs).map((r) => `${r.label} x${r.packets}`).join(", ")}`).toEqual(["DROPPED/POLICY"]);
      // And whatever a sent to c:8000 (an earlier connection's too), c's to_pod forwarded none of it.
      expect(labels(recs, { at: C, point: "to_pod", src: A.ip, dport: 8000 }).filter((l) => !l.startsWith("DROPPED"))).toEqual([]);
      denied.child.kill("SIGKILL");
    });

    // The observe shortcut (lib/flow.h, bh_ct_mark): a packet of an observed pod whose flow
    // a confirmed, unjudged conntrack hit marked within ~1 s skips the conntrack lookup
    // while the mark's policy version is the active one. Here a stays in observe, so only
    // the version can end the shortcut when c switches to enforce; without that check a's
    // next datagram would pass a's from_pod as FORWARDED/NONE (and drop only at c's
    // to_pod). UDP, so that every packet is one datagram the test sent (no
    // retransmissions, no ACKs); no drain between "two" and "four", so "four" finds the
    // flow and the mark "two" left in the active flow map.
    it("the observe shortcut ends with the policy version: a's first datagram after c's switch is DROPPED at a's from_pod", async () => {
      const aObserves = (s: PolicySnapshot): PolicySnapshot => ({ ...s, identities: s.identities.map((i) =>
        i.id === ID.a ? { ...i, mode: PolicyMode.POLICY_MODE_OBSERVE } : i) });
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_OBSERVE, { c: { ingress: true } }, cRules));
      const dp = N1.datapath!;
      const pa = spawnIn(A.netns, [process.execPath, "-e", UDP_PEER_JS, "40001"]);
      await started(pa, '"ready":true');
      const fromA = (): Rec[] => peekRecords(dp).filter((r) => r.ifindex === A.ifindex && r.point === 1
        && r.dst === C.ip && r.sport === 40001 && r.dport === 53 && r.proto === UDP);
      const echoed = (text: string) => pa.waitForLine((l) => l.includes(`"text":"${text}"`), 5_000);
      // "one" opens the connection, c's echo confirms it; "two" then hits the confirmed,
      // unjudged entry at a's from_pod and marks its flow; "three" may take the shortcut.
      for (const text of ["one", "two", "three"]) {
        send(pa, `${C.ip} 53 ${text}`);
        await echoed(text);
      }
      const marked = fromA();
      expect(marked.map((r) => [r.label, r.packets])).toEqual([["FORWARDED/NONE", 3n]]);
      // The premise: a's flow carries a valid mark (0x8000) of the active version.
      expect(marked[0]!.ctMark & 0x8000, "a's flow marked by the conntrack hit of \"two\"").toBe(0x8000);
      expect(marked[0]!.ctMark >>> 16, "the mark's policy version").toBe(dp.policy.kernelVersion() & 0xffff);

      // c switches to enforce (c takes only b's TCP); a stays in observe. "four" leaves a
      // right after: "two"'s mark was made a few milliseconds earlier (an echo on one node,
      // a dump, and the policy write with its RCU grace period), well within its ~1 s.
      enact((v) => aObserves(snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, cRules)), true);
      send(pa, `${C.ip} 53 four`);
      // Waits until a's from_pod has counted "four" (a fourth packet on a's flows to c:53);
      // the datagram crosses the veth within milliseconds, so 5 s is ample.
      const after = await waitFor(fromA, (rs) => rs.reduce((n, r) => n + r.packets, 0n) === 4n, 5_000,
        "a's from_pod to count the datagram \"four\"");
      expect(after.map((r) => [r.label, r.packets]).sort(), "a's from_pod: one, two, three forwarded; four dropped")
        .toEqual([["DROPPED/POLICY", 1n], ["FORWARDED/NONE", 3n]]);
      expect(pa.lines.filter((l) => l.includes('"text":"four"')), "the echo of four").toEqual([]);
      drainRecords(dp);
      pa.child.kill("SIGKILL");
    });

    it("tightening: an established allowed connection whose rule is removed is dropped; other changes keep it", async () => {
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, cRules));
      const hold = spawnIn(B.netns, [process.execPath, "-e", HOLD_JS, JSON.stringify({ host: C.ip, port: 8001 })]);
      await started(hold, '"connected":true');
      expect(await echoes(hold, "one")).toBe(true);
      const dp = N1.datapath!;
      const before = dp.counters();
      // A new version with an unrelated rule added: judged again, still allowed.
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, [...cRules, rule(ID.c, "ingress", ID.a, UDP, 53)]), true);
      expect(await echoes(hold, "two"), "after an unrelated change").toBe(true);
      expect(delta(before, dp.counters(), "ctRejudged")).toBeGreaterThan(0n);
      // b's rule for 8001 removed.
      enact((v) => snapshot(v, PolicyMode.POLICY_MODE_ENFORCE, { c: { ingress: true } }, [cRules[0]!]), true);
      drainRecords(dp);
      expect(await echoes(hold, "three"), "after its rule was removed").toBe(false);
      // Dropped both ways from then on: the entry stays, marked DROPPED, so that neither end
      // can pick the connection up again as a new one (c's ACKs would be judged as a
      // connection from c, which b's policy allows).
      const recs = drainRecords(dp);
      expect(labels(recs, { at: B, point: "from_pod", dst: C.ip, dport: 8001 })).toEqual(["DROPPED/POLICY"]);
      expect(labels(recs, { at: C, point: "to_pod", src: B.ip, dport: 8001 })).toEqual([]);
      expect(labels(recs, { at: B, point: "to_pod", src: C.ip, sport: 8001 }).filter((l) => !l.startsWith("DROPPED"))).toEqual([]);
      hold.child.kill("SIGKILL");
    });
  });
});
