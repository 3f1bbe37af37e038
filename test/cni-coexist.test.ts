// CNI coexistence on the real kernel (issue 18): bulkhead's endpoint programs on pod veths
// that already carry a CNI's own tc programs, stood in for by test/fixtures/cni_standin.bpf.c
// and attached before bulkhead's, as a CNI sets up a veth before any agent sees it:
//   pass      ends the chain (TCX_PASS), as Calico's and Cilium's programs do;
//   redirect  sends a pod's packets straight to the destination pod's veth (Cilium);
//   drop      drops them (IPv4; ARP passes).
// In each case bulkhead counts every packet exactly and enforces, in tcx and clsact mode;
// what a CNI's program does after bulkhead's has judged a packet is outside its sight
// (a drop there is not reported), which the drop case pins down.
//
// Topology: the harness's node (test/harness/netns.ts) with pods p1, p2, p3 (10.195.0.2-4);
// a UDP echo server on p2:5353; datagrams only between those namespaces.
import os from "node:os";
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { bpfObjectDir, native, type BpfObject, type Link } from "../native/index.js";
import { repoRoot } from "../config/install.js";
import { Datapath } from "../agent/datapath.js";
import { run } from "../lab/netns.js";
import { PolicyMode } from "../proto/gen/bulkhead/v1/policy.js";
import { drainRecords, type Rec } from "./harness/drained.js";
import { ECHO_SERVER_JS } from "./harness/echo-server.js";
import { podsSnapshot, rule } from "./harness/snapshot.js";
import { NODE_IP, TestNode, type Pod } from "./harness/netns.js";
import type { Spawned } from "./harness/process.js";
import { holdCensusLockForFile } from "./harness/census.js";

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

// kernel-own (vitest.config.ts): beside the kernel project, so the file holds the BPF census
// lock (harness/census.ts) while its programs and links exist, which is all along.
holdCensusLockForFile();

const OBJECT = path.join(bpfObjectDir, "endpoint.bpf.o");
const CNI_SOURCE = path.join(repoRoot, "test", "fixtures", "cni_standin.bpf.c");
const PORT = 5353;
const UDP = 17;
const FROM_POD = 1;
const TO_POD = 2;
const SEEN = { pass: 0, redirect: 1, drop: 2, redirectPeer: 3 } as const;

// Sends o.count datagrams to o.to:o.port from one socket, then waits for their echoes:
// until all came back, or 1 s after the last send (an echo between two veths takes well
// under a millisecond; a dropped datagram never comes back). Prints {answered}.
const CLIENT_JS = `const dgram = require("dgram");
const o = JSON.parse(process.argv[1]);
const s = dgram.createSocket("udp4");
let answered = 0;
const done = () => { console.log(JSON.stringify({ answered })); s.close(); };
let timer;
s.on("message", () => { if (++answered === o.count) { clearTimeout(timer); done(); } });
s.bind(0, () => {
  let sent = 0;
  const next = () => {
    if (sent === o.count) { timer = setTimeout(done, 1000); return; }
    sent++;
    s.send(Buffer.alloc(64, 0x61), o.port, o.to, next);
  };
  next();
});`;

let workDir = "";
let cniObject = "";

beforeAll(async () => {
  workDir = mkdtempSync(path.join(os.tmpdir(), "bhcni-"));
  cniObject = path.join(workDir, "cni_standin.bpf.o");
  await run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-I/usr/include/x86_64-linux-gnu", "-c", CNI_SOURCE, "-o", cniObject]);
});
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

describe.each(["tcx", "clsact"] as const)("%s: bulkhead on veths that carry a CNI's programs", (mode) => {
  let node: TestNode;
  let P1: Pod, P2: Pod, P3: Pod;
  let server: Spawned;
  let datapath: Datapath | undefined;
  let cni: BpfObject | undefined;
  let links: Link[] = [];
  let version = 0;

  beforeAll(async () => {
    node = await TestNode.create(3);
    [P1, P2, P3] = node.pods as [Pod, Pod, Pod];
    server = node.spawn([process.execPath, "-e", ECHO_SERVER_JS, JSON.stringify({ tcp: [], udp: [PORT] })], P2.netns);
    await server.waitForLine((l) => l.includes('"ready":true'), 10_000);
  });
  afterEach(() => {
    for (const l of links) l.detach();
    links = [];
    datapath?.close();
    datapath = undefined;
    cni?.close();
    cni = undefined;
  });
  afterAll(async () => { await node?.teardown(); });

  const pods = () => [P1, P2, P3].map((p, i) => ({ id: 10 + i, name: `p${i + 1}`, ip: p.ip, ip6: `fd00:195::${i + 1}` }));

  /** The stand-in CNI: `program` on the given (pod, direction) places, attached first. */
  function attachCni(program: "cni_pass" | "cni_redirect" | "cni_redirect_peer" | "cni_drop", places: [Pod, "ingress" | "egress"][],
    rodata: Record<string, Buffer> = {}): BpfObject {
    cni = native().openObject(cniObject, { rodata });
    for (const [pod, direction] of places) {
      links.push(cni.program(program).attachTc({ iface: pod.ifindex, direction, netns: node.netnsPath, mode, position: "last" }));
    }
    return cni;
  }

  /** bulkhead's datapath on every pod veth, with p2 isolated for ingress and admitting only
   * p1 on UDP 5353 when `enforce` (else everything observed). */
  function attachBulkhead(enforce: boolean): Datapath {
    const dp = new Datapath({ objectPath: OBJECT, flowMapSize: 65536, emitNewFlowEvents: false });
    datapath = dp;
    for (const p of [P1, P2, P3]) links.push(...dp.attach(p.ifindex, mode, node.netnsPath, p.hostIf));
    dp.policy.apply(podsSnapshot(++version, enforce ? PolicyMode.POLICY_MODE_ENFORCE : PolicyMode.POLICY_MODE_OBSERVE, pods(),
      enforce ? { p2: { ingress: true } } : {}, [NODE_IP], enforce ? [rule(11, "ingress", 10, UDP, PORT)] : []));
    dp.policy.reconcileEndpoints([P1, P2, P3].map((p) => p.ifindex), native().listRoutes(node.netnsPath));
    drainRecords(dp);
    return dp;
  }

  async function send(from: Pod, count: number): Promise<number> {
    const r = await node.exec([process.execPath, "-e", CLIENT_JS, JSON.stringify({ to: P2.ip, port: PORT, count })], from.netns);
    return (JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as { answered: number }).answered;
  }

  /** Request packets (to p2:5353) from `from`, per "point verdict/reason" at `at`'s veth. */
  function requests(recs: Rec[], from: Pod, at: Pod): Record<string, number> {
    const out: Record<string, number> = {};
    for (const r of recs) {
      if (r.src !== from.ip || r.dst !== P2.ip || r.dport !== PORT || r.ifindex !== at.ifindex) continue;
      const key = `${r.point === FROM_POD ? "from_pod" : r.point === TO_POD ? "to_pod" : r.point} ${r.label}`;
      out[key] = (out[key] ?? 0) + Number(r.packets);
    }
    return out;
  }

  /** Request packets from `from` dropped, wherever bulkhead dropped them (once each). */
  const dropped = (recs: Rec[], from: Pod) => [P1, P2, P3].flatMap((at) => Object.entries(requests(recs, from, at)))
    .filter(([k]) => k.includes("DROPPED")).reduce((n, [, v]) => n + v, 0);

  const seen = (obj: BpfObject, key: number) => Number(obj.map("seen").lookup(Buffer.from(new Uint32Array([key]).buffer))?.readBigUInt64LE(0) ?? 0n);

  it("a CNI program that ends the chain: every packet counted at both veths, and the CNI's program still runs", async () => {
    const obj = attachCni("cni_pass", [P1, P2, P3].flatMap((p) => [[p, "ingress"], [p, "egress"]] as [Pod, "ingress" | "egress"][]));
    const dp = attachBulkhead(false);
    expect(await send(P1, 50)).toBe(50);
    const recs = drainRecords(dp);
    expect(requests(recs, P1, P1)).toEqual({ "from_pod FORWARDED/NONE": 50 });
    expect(requests(recs, P1, P2)).toEqual({ "to_pod FORWARDED/NONE": 50 });
    // Requests and echoes, each at the sender's and the receiver's veth.
    expect(seen(obj, SEEN.pass)).toBe(200);
  });

  it("a CNI program that ends the chain: policy is still enforced (p1 admitted, p3 dropped)", async () => {
    attachCni("cni_pass", [P1, P2, P3].flatMap((p) => [[p, "ingress"], [p, "egress"]] as [Pod, "ingress" | "egress"][]));
    const dp = attachBulkhead(true);
    expect(await send(P1, 20)).toBe(20);
    expect(await send(P3, 20)).toBe(0);
    const recs = drainRecords(dp);
    // The first packet admitted by the rule, the others as its flow (conntrack).
    expect(requests(recs, P1, P2)).toEqual({ "to_pod FORWARDED/POLICY": 1, "to_pod FORWARDED/ESTABLISHED": 19 });
    expect(dropped(recs, P3)).toBe(20);
    expect(Object.keys(requests(recs, P3, P2)).filter((k) => k.startsWith("to_pod FORWARDED"))).toEqual([]);
  });

  /** rodata that points a redirect at p2: its host veth, its eth0's MAC. */
  async function toP2(): Promise<Record<string, Buffer>> {
    const out = (await run(["ip", "-n", P2.netns, "-j", "link", "show", "dev", "eth0"])).stdout;
    const mac = (JSON.parse(out) as { address: string }[])[0]?.address ?? "";
    return { redirect_ifindex: Buffer.from(new Uint32Array([P2.ifindex]).buffer), redirect_dmac: Buffer.from(mac.split(":").map((h) => parseInt(h, 16))) };
  }

  it("a CNI that redirects to the destination's veth: counted at both veths and enforced", async () => {
    const obj = attachCni("cni_redirect", [[P1, "ingress"], [P3, "ingress"]], await toP2());
    const dp = attachBulkhead(true);
    expect(await send(P1, 30)).toBe(30);
    expect(await send(P3, 30)).toBe(0);
    const recs = drainRecords(dp);
    expect(requests(recs, P1, P1)).toEqual({ "from_pod FORWARDED/NONE": 1, "from_pod FORWARDED/ESTABLISHED": 29 });
    expect(requests(recs, P1, P2)).toEqual({ "to_pod FORWARDED/POLICY": 1, "to_pod FORWARDED/ESTABLISHED": 29 });
    expect(dropped(recs, P3)).toBe(30);
    expect(Object.keys(requests(recs, P3, P2)).filter((k) => k.startsWith("to_pod FORWARDED"))).toEqual([]);
    expect(seen(obj, SEEN.redirect)).toBe(60);
  });

  // Cilium with BPF host routing delivers to a pod on the same node with bpf_redirect_peer:
  // the packet enters the pod's namespace without crossing its host veth, so bulkhead's
  // to_pod never runs. The flow still counts exactly (the control plane counts a pod's
  // traffic at its FROM_POD), but the receiving side cannot judge it: ingress policy of
  // same-node pods needs the CNI to deliver through the veth (deploy/COMPATIBILITY.md).
  it("a CNI that redirects into the peer's namespace: counted exactly at the sender's veth, unseen at the receiver's", async () => {
    const obj = attachCni("cni_redirect_peer", [[P1, "ingress"]], await toP2());
    const dp = attachBulkhead(false);
    expect(await send(P1, 30)).toBe(30);
    const recs = drainRecords(dp);
    expect(requests(recs, P1, P1)).toEqual({ "from_pod FORWARDED/NONE": 30 });
    expect(requests(recs, P1, P2)).toEqual({});
    expect(seen(obj, SEEN.redirectPeer)).toBe(30);
  });

  it("a CNI that drops after bulkhead forwarded: bulkhead reports FORWARDED at the sender's veth and nothing at the receiver's (a later program's drop is not visible to it)", async () => {
    const obj = attachCni("cni_drop", [[P1, "ingress"]]);
    const dp = attachBulkhead(false);
    expect(await send(P1, 10)).toBe(0);
    const recs = drainRecords(dp);
    expect(requests(recs, P1, P1)).toEqual({ "from_pod FORWARDED/NONE": 10 });
    expect(requests(recs, P1, P2)).toEqual({});
    expect(seen(obj, SEEN.drop)).toBe(10);
  });
});
