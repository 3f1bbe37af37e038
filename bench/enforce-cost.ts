// Per-packet cost of observe + enforce in from_pod against the reference program
// (reference.bpf.o: the same parser plus one hash-map update), side by side: both are
// attached with TCX on the same host-side veth ingress, so both run on every packet of the
// same flood in the same round; kernel.bpf_stats_enabled gives each one's run_time_ns /
// run_cnt before and after every round. endpoint.bpf.o is loaded through the agent's
// Datapath (policy maps and all), the flooding pod's veth gets its endpoint entry, and the
// policy is a PolicySnapshot applied with PolicyApplier.apply, as the agent applies one.
//
// Phases, 5 rounds each: observe (endpoint known, no policy), enforce with every packet
// of an established connection (conntrack hit), enforce with every packet a new connection
// (conntrack miss: identity and policy lookups, conntrack insert, and a new flow), and two
// diagnostics: established but unanswered connections (the flood's target never answers:
// such a connection stays in the unconfirmed table, found by a second lookup), and new
// connections whose flows are already counted (the judging alone). In the steady phases
// the warmed-up connections are moved to the confirmed table as their peer's first reply
// would move them (lib/conntrack.h), since a connection carrying traffic both ways is
// confirmed.
// Every flood is allowed by the policy; the flow records prove which path was taken.
//
// Run as root after `npx tsc -p .`:  node dist/bench/enforce-cost.js
//   [--object FILE]   another endpoint.bpf.o (e.g. an older build, for a before/after pair)
//   [--reference FILE] another reference.bpf.o (program `reference`, map `ref_flows`), to
//                     see how the ratios move with what the baseline does
//   [--phases a,b,c]  only these phases (by letter: a b b' c c'), for experiments
//   [--rounds N]      rounds per phase (default 5)
//   [--events]        load it with new-flow events on (what the agent did before it counted
//                     new flows instead; use it with --object for an older build)
import { loadavg } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { bpfObjectDir, native, type BpfProgram, type Link } from "../native/index.js";
import { Datapath } from "../agent/datapath.js";
import { decodeKey } from "../agent/records.js";
import { BH_POINT_FROM_POD, bh_flow_key, bh_flow_value } from "../native/gen/abi.js";
import {
  PolicyDirection, PolicyMode, type Identity, type IpIdentity, type PolicyRule, type PolicySnapshot,
} from "../proto/gen/bulkhead/v1/policy.js";
import { Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import {
  BLACKHOLE_CIDR, BLACKHOLE_IP, GATEWAY, Node, buildFlood, cleanupNow, confirmConnections, enableBpfStats, flood, fmt, median,
  onCleanup, progStats, requireRoot, tempDir, type FloodOptions, type Pod,
} from "./testbed.js";

const args = parseArgs({ options: {
  object: { type: "string" }, reference: { type: "string" }, phases: { type: "string" }, rounds: { type: "string", default: "5" },
  events: { type: "boolean", default: false },
} }).values;
const ROUNDS = Number(args.rounds);
const FLOWS = 50_000;
const STEADY_PACKETS = 1_000_000;
const DPORT = 9;
const UDP = 17, TCP = 6;

/** Identities of the snapshot: reserved ones, the flooding pod, the flood's target range,
 * and the unrelated ones that make the tries realistic. */
const ID = { host: 1, world: 2, pod: 100, target: 200, otherPods: 1000, ranges: 2000, excepts: 2100 } as const;
const OTHER_PODS = 300;
const RANGES = 40;

// ---------------------------------------------------------------------------------------
// The policy

function identity(id: number, mode: PolicyMode, o: Partial<Identity> = {}): Identity {
  return { id, namespace: "", labels: {}, mode, ingressIsolated: false, egressIsolated: false, endpoint: false,
    service: false, ...o };
}

function rule(subject: number, direction: "ingress" | "egress", peer: number, protocol: number, port = 0, endPort = 0): PolicyRule {
  return { subject, peer, protocol, port, endPort, deny: false,
    direction: direction === "ingress" ? PolicyDirection.POLICY_DIRECTION_INGRESS : PolicyDirection.POLICY_DIRECTION_EGRESS };
}

/** Pod `pod` in enforce mode, isolated both ways, allowed UDP DPORT to the flood target's
 * range (an ipBlock-like identity, judged at from_pod); 300 other pods (two addresses
 * each), 40 address ranges with an except each, and ~850 rules among them. */
function enforceSnapshot(pod: Pod): PolicySnapshot {
  const modes = [PolicyMode.POLICY_MODE_ENFORCE, PolicyMode.POLICY_MODE_AUDIT, PolicyMode.POLICY_MODE_OBSERVE];
  const identities: Identity[] = [
    identity(ID.host, PolicyMode.POLICY_MODE_OBSERVE),
    identity(ID.world, PolicyMode.POLICY_MODE_OBSERVE),
    identity(ID.pod, PolicyMode.POLICY_MODE_ENFORCE, { namespace: "bench", labels: { app: "flood" },
      ingressIsolated: true, egressIsolated: true, endpoint: true }),
    identity(ID.target, PolicyMode.POLICY_MODE_OBSERVE),
  ];
  const ipIdentities: IpIdentity[] = [
    { cidr: "0.0.0.0/0", identity: ID.world }, { cidr: "::/0", identity: ID.world },
    { cidr: `${GATEWAY}/32`, identity: ID.host },
    { cidr: `${pod.ip}/32`, identity: ID.pod },
    { cidr: BLACKHOLE_CIDR, identity: ID.target },
  ];
  const rules: PolicyRule[] = [rule(ID.pod, "egress", ID.target, UDP, DPORT)];

  for (let i = 0; i < OTHER_PODS; i++) {
    const id = ID.otherPods + i;
    identities.push(identity(id, modes[i % 3]!, { namespace: `ns-${i % 30}`, labels: { app: `app-${i}` },
      ingressIsolated: i % 2 === 0, egressIsolated: i % 4 === 0, endpoint: true }));
    for (const k of [2 * i, 2 * i + 1]) ipIdentities.push({ cidr: `10.194.${16 + (k >> 8)}.${k & 255}/32`, identity: id });
    rules.push(rule(id, "ingress", ID.otherPods + ((i + 1) % OTHER_PODS), TCP, 8080));
    rules.push(rule(id, "egress", ID.otherPods + ((i + 7) % OTHER_PODS), TCP, 5432));
    if (i % 3 === 0) rules.push(rule(id, "ingress", 0, TCP, 9090));
    if (i % 5 === 0) rules.push(rule(id, "egress", ID.ranges + (i % RANGES), TCP, 443));
    if (i % 10 === 0) rules.push(rule(id, "egress", 0, TCP, 30000, 32767));
    if (i % 7 === 0) rules.push(rule(id, "egress", 0, UDP, 53));
  }
  for (let j = 0; j < RANGES; j++) {
    identities.push(identity(ID.ranges + j, PolicyMode.POLICY_MODE_OBSERVE));
    identities.push(identity(ID.excepts + j, PolicyMode.POLICY_MODE_OBSERVE));
    ipIdentities.push({ cidr: `10.194.${64 + j}.0/24`, identity: ID.ranges + j });
    ipIdentities.push({ cidr: `10.194.${64 + j}.16/28`, identity: ID.excepts + j });
  }
  // The flooding pod's own neighbours in the tries: other egress and ingress rules.
  for (let j = 0; j < 10; j++) rules.push(rule(ID.pod, "egress", ID.ranges + j, TCP, 443));
  for (let j = 0; j < 5; j++) rules.push(rule(ID.pod, "ingress", ID.otherPods + j, TCP, 8080));
  rules.push(rule(ID.pod, "egress", 0, UDP, 53), rule(ID.pod, "egress", ID.otherPods + 1, TCP, 0));
  return { version: 1n, identities, ipIdentities, rules };
}

// ---------------------------------------------------------------------------------------
// Phases

interface Phase {
  /** How the README and --phases name it: a, b, b', c, c'. */
  letter: string;
  name: string;
  /** The issue's target for from_pod/reference; none for a diagnostic. */
  target?: number;
  policy: "none" | "enforce";
  /** Emptied before every round: nothing (a warm-up pass fills every map first), the
   * conntrack only (flow entries stay), or conntrack, flow maps and the reference map. */
  fresh: "nothing" | "conntrack" | "all";
  /** After the warm-up, the connections are moved to the confirmed table, as the peer's
   * first reply would; otherwise they stay unconfirmed (nobody answers the flood). */
  answered?: boolean;
  count: number;
  /** The flow-record label (verdict/reason) every measured packet must carry. */
  expect: string;
  note: string;
}

const n = (x: number) => x.toLocaleString("en-US");
const PHASES: Phase[] = [
  { letter: "a", name: "observe", target: 1.5, policy: "none", fresh: "nothing", count: STEADY_PACKETS, expect: "FORWARDED/NONE", answered: true,
    note: `endpoint known, no policy (observe); ${n(FLOWS)} flows already in the flow map and (confirmed) in conntrack, ${n(STEADY_PACKETS)} packets cycling over them` },
  { letter: "b", name: "enforce, established", target: 2, policy: "enforce", fresh: "nothing", count: STEADY_PACKETS, expect: "FORWARDED/ESTABLISHED",
    answered: true,
    note: `enforce; ${n(FLOWS)} allowed connections already confirmed in conntrack (and their flows in the flow map), ${n(STEADY_PACKETS)} packets cycling over them` },
  { letter: "b'", name: "enforce, established, unanswered", policy: "enforce", fresh: "nothing", count: STEADY_PACKETS,
    expect: "FORWARDED/ESTABLISHED",
    note: `diagnostic, not judged: as the previous phase, but the ${n(FLOWS)} connections stay unconfirmed (one-way UDP): a confirmed-table miss, then the hit` },
  { letter: "c", name: "enforce, new connections", target: 2, policy: "enforce", fresh: "all", count: FLOWS, expect: "FORWARDED/POLICY",
    note: `enforce; conntrack, flow maps and reference map emptied before each round; ${n(FLOWS)} packets, each the first of its connection and of its flow` },
  { letter: "c'", name: "enforce, new connections, flows counted", policy: "enforce", fresh: "conntrack", count: FLOWS, expect: "FORWARDED/POLICY",
    note: "diagnostic, not judged: conntrack emptied before each round, flow entries kept, i.e. the judging without the flow insert" },
];

interface Round { endpointNs: number; referenceNs: number; ratio: number; sent: number; pps: number; order: string }

const VERDICT_NAME: Partial<Record<Verdict, string>> = {
  [Verdict.VERDICT_FORWARDED]: "FORWARDED", [Verdict.VERDICT_DROPPED]: "DROPPED", [Verdict.VERDICT_AUDIT]: "AUDIT",
};
const REASON_NAME: Partial<Record<VerdictReason, string>> = {
  [VerdictReason.VERDICT_REASON_UNSPECIFIED]: "NONE", [VerdictReason.VERDICT_REASON_POLICY]: "POLICY",
  [VerdictReason.VERDICT_REASON_ESTABLISHED]: "ESTABLISHED", [VerdictReason.VERDICT_REASON_SPOOFED]: "SPOOFED",
};

/** Packets per verdict/reason in the flow entries since the previous drain (from_pod only). */
function tally(datapath: Datapath, into: Map<string, number>): void {
  const d = datapath.drain();
  for (let i = 0; i < d.count; i++) {
    const k = decodeKey(d.keys, i * bh_flow_key.size);
    if (k.point !== BH_POINT_FROM_POD) continue;
    const label = `${VERDICT_NAME[k.verdict] ?? k.verdict}/${REASON_NAME[k.reason] ?? k.reason}`;
    const packets = Number(d.values.readBigUInt64LE(i * bh_flow_value.size + bh_flow_value.packets));
    into.set(label, (into.get(label) ?? 0) + packets);
  }
}

const sameTally = (a: Map<string, number>, b: Map<string, number>) =>
  a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
const tallyText = (t: Map<string, number>) => [...t].map(([k, v]) => `${k} ${n(v)}`).join(", ") || "nothing";

async function main(): Promise<number> {
  requireRoot("enforce-cost");
  const dir = tempDir("enforce-cost");
  const bin = buildFlood(dir);
  const node = await Node.create("ec", ["a"]);
  const pod = node.pod("a");
  enableBpfStats();

  const addon = native();
  // As the agent loads it: 65536 entries per flow map, no new-flow events (--events: on).
  const datapath = new Datapath({ objectPath: args.object ?? path.join(bpfObjectDir, "endpoint.bpf.o"), flowMapSize: 65536,
    emitNewFlowEvents: args.events });
  onCleanup("close endpoint.bpf.o", () => datapath.close());
  const reference = addon.openObject(args.reference ?? path.join(bpfObjectDir, "reference.bpf.o"));
  onCleanup("close reference.bpf.o", () => reference.close());
  // Consume new-flow events (if on) as the agent does (woken past a fill level, read at every drain).
  let events = 0;
  const ring = addon.ringBuffer(datapath.object.map("events"), (_records, count) => { events += count; });
  onCleanup("close ring buffer", () => ring.close());
  const consumer = setInterval(() => ring.consume(), 1000);
  onCleanup("stop the event consumer", () => clearInterval(consumer));

  const veth = addon.listLinks(node.netnsPath).find((l) => l.name === pod.hostVeth);
  if (!veth) throw new Error(`${pod.hostVeth} not found in ${node.netns}`);
  datapath.policy.setEndpoint(veth.ifindex, { identity: ID.pod, ip4: pod.ip });

  const fromPod = datapath.object.program("from_pod");
  const ref = reference.program("reference");
  let links: Link[] = [];
  const detach = () => { for (const l of links) l.detach(); links = []; };
  const attach = (order: BpfProgram[]) => {
    detach();
    links = order.map((p) => p.attachTc({ iface: pod.hostVeth, direction: "ingress", netns: node.netnsPath, mode: "tcx" }));
  };
  onCleanup("detach", detach);
  const emptyConntrack = () => { datapath.object.map("conntrack").drain(); datapath.object.map("conntrack_new").drain(); };
  const emptyReference = () => { reference.map("ref_flows").drain(); };
  const confirmAll = () => confirmConnections(datapath.object);

  console.log(`new-flow events ${args.events ? "on" : "off"} (the agent: off)`);
  console.log(`enforce-cost: from_pod (prog id ${fromPod.id}) vs reference (prog id ${ref.id}), both TCX ingress on ${pod.hostVeth} (ifindex ${veth.ifindex})`);
  console.log(`endpoint: ifindex ${veth.ifindex} → identity ${ID.pod}, ${pod.ip}`);
  console.log(`flood: raw-socket UDP ${pod.ip} -> ${BLACKHOLE_IP}:${DPORT} (blackholed in the node), 18-byte payload, sendmmsg x64, 1 thread, source ports over ${n(FLOWS)} flows`);
  console.log(`${ROUNDS} rounds per phase; the attach order alternates between rounds (TCX runs programs in order); load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}\n`);

  const snapshot = enforceSnapshot(pod);
  const results: Array<{ phase: Phase; rounds: Round[]; pathOk: boolean }> = [];
  let policyApplied = false;
  const only = args.phases?.split(",");
  for (const phase of PHASES.filter((p) => !only || only.includes(p.letter))) {
    if (phase.policy === "enforce" && !policyApplied) {
      const t0 = process.hrtime.bigint();
      const r = datapath.policy.apply(snapshot);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      console.log(`policy version ${r.version} applied in ${fmt(ms, 0)} ms: ${n(r.identities)} identities, ${n(r.ipIdentities)} `
        + `address prefixes, ${n(r.policyEntries)} policy entries (from ${n(snapshot.rules.length)} rules); identity ${ID.pod} `
        + `enforce, egress-isolated, allowed UDP ${DPORT} to identity ${ID.target} (${BLACKHOLE_CIDR})\n`);
      policyApplied = true;
    }
    const opts: FloodOptions = { src: pod.ip, dst: BLACKHOLE_IP, dport: DPORT, flows: FLOWS, count: phase.count };
    const got = new Map<string, number>();
    const want = new Map<string, number>();
    const add = (label: string, packets: number) => want.set(label, (want.get(label) ?? 0) + packets);
    tally(datapath, new Map()); // the phase's flow records start here
    if (phase.fresh !== "all") {
      // One packet per flow: every map the rounds will find warm. Conntrack starts empty:
      // connections tracked in observe mode would stay unjudged after the switch (by design).
      detach();
      emptyConntrack();
      emptyReference();
      attach([fromPod, ref]);
      const first = await flood(node, pod.netns, bin, { ...opts, count: FLOWS });
      add(phase.policy === "enforce" ? "FORWARDED/POLICY" : "FORWARDED/NONE", first.sent);
      if (phase.fresh === "nothing") {
        // The flow key holds the reason: the first packets' flows (POLICY) are not the ones
        // the rounds update (ESTABLISHED), and both sets would not fit in the flow map.
        tally(datapath, got);
        const second = await flood(node, pod.netns, bin, { ...opts, count: FLOWS });
        add(phase.expect, second.sent);
      }
      if (phase.answered) {
        const moved = confirmAll();
        if (moved !== FLOWS) console.log(`note: ${moved} connections confirmed, ${FLOWS} expected`);
      }
    }
    console.log(`== ${phase.name}: ${phase.note}`);
    console.log("round  order              sent        pps   from_pod ns/pkt  reference ns/pkt  ratio");
    const rounds: Round[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? [fromPod, ref] : [ref, fromPod];
      if (phase.fresh !== "nothing") {
        detach();
        emptyConntrack();
        if (phase.fresh === "all") {
          tally(datapath, got);
          emptyReference();
        }
      }
      attach(order);
      const e0 = progStats(fromPod.id), f0 = progStats(ref.id);
      const sent = await flood(node, pod.netns, bin, opts);
      const e1 = progStats(fromPod.id), f1 = progStats(ref.id);
      const eRuns = e1.runCnt - e0.runCnt, fRuns = f1.runCnt - f0.runCnt;
      const endpointNs = (e1.runTimeNs - e0.runTimeNs) / eRuns;
      const referenceNs = (f1.runTimeNs - f0.runTimeNs) / fRuns;
      add(phase.expect, sent.sent);
      const round: Round = { endpointNs, referenceNs, ratio: endpointNs / referenceNs, sent: sent.sent, pps: sent.pps,
        order: order.map((p) => p.name).join(",") };
      rounds.push(round);
      console.log(`${String(r + 1).padStart(5)}  ${round.order.padEnd(18)} ${String(sent.sent).padStart(8)} ${fmt(sent.pps / 1000, 0).padStart(8)}k`
        + ` ${fmt(endpointNs).padStart(16)} ${fmt(referenceNs).padStart(17)} ${fmt(round.ratio, 2).padStart(6)}`);
      if (eRuns !== sent.sent || fRuns !== sent.sent) {
        console.log(`       note: the programs ran ${eRuns} and ${fRuns} times for ${sent.sent} packets sent`);
      }
    }
    tally(datapath, got);
    const pathOk = sameTally(got, want);
    const m = { e: median(rounds.map((x) => x.endpointNs)), f: median(rounds.map((x) => x.referenceNs)), r: median(rounds.map((x) => x.ratio)) };
    const verdict = phase.target === undefined ? "(diagnostic)" : `${m.r <= phase.target ? "meets" : "MISSES"} target <= ${phase.target}`;
    console.log(`median ${" ".repeat(37)} ${fmt(m.e).padStart(16)} ${fmt(m.f).padStart(17)} ${fmt(m.r, 2).padStart(6)}  ${verdict}`);
    console.log(`flow records (warm-up included): ${tallyText(got)} — ${pathOk ? "the path intended" : `UNEXPECTED, wanted ${tallyText(want)}`}; `
      + `load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}\n`);
    results.push({ phase, rounds, pathOk });
  }
  detach();
  ring.consume();
  const c = datapath.counters();
  console.log(`endpoint counters: packets ${c.packets}, map_full packets ${c.mapFullPackets}, ct_full ${c.ctFull}, `
    + `ct_created ${c.ctCreated}, ct_lost ${c.ctLost}, ring_full events ${c.ringFull}; new-flow events read ${n(events)}`);

  const judged = results.filter(({ phase }) => phase.target !== undefined);
  const ratioOf = (rounds: Round[]) => median(rounds.map((x) => x.ratio));
  const summary = judged.map(({ phase, rounds }) =>
    `${phase.name} ${fmt(median(rounds.map((x) => x.endpointNs)))}/${fmt(median(rounds.map((x) => x.referenceNs)))} ns`
    + ` = ${fmt(ratioOf(rounds), 2)}x (<= ${phase.target}: ${ratioOf(rounds) <= (phase.target ?? 0) ? "met" : "MISSED"})`).join("; ");
  const allMet = judged.every(({ phase, rounds }) => ratioOf(rounds) <= (phase.target ?? 0));
  const pathsOk = results.every((x) => x.pathOk);
  console.log(`SUMMARY enforce-cost: from_pod/reference ns per packet (medians of ${ROUNDS}): ${summary}; `
    + `targets: ${allMet ? "met" : "MISSED"}${pathsOk ? "" : "; PATH CHECK FAILED (see flow records)"}`);
  // A count, not a time: the figures describe another path than the phase names.
  return pathsOk ? 0 : 1;
}

main().then((code) => { cleanupNow(); process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`enforce-cost: ${(err as Error).stack ?? String(err)}\n`);
  cleanupNow();
  process.exitCode = 1;
});
