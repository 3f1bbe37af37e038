// Per-packet cost of the capture program (endpoint.bpf.o from_pod) against the reference
// (reference.bpf.o: the same parser plus one hash-map update), side by side: both are
// attached with TCX on the same host-side veth ingress, so both run on every packet of the
// same flood in the same round. The kernel's own accounting (kernel.bpf_stats_enabled)
// gives run_time_ns / run_cnt of each program before and after every round. The judged
// path is the agent's: the object loaded by its Datapath (no new-flow events) and the pod's
// veth given the endpoint entry the agent writes for every pod before any policy (identity
// 0: observe), so a new flow also opens its conntrack entry. Phases: every packet a new flow
// (insert path), and the steady state with the flows already in the maps (50,000 flows, and
// 1 flow); diagnostics: new flows on a veth without an endpoint entry (no conntrack), with
// and without the new-flow event (what this bench judged until 2026-12-04).
//
// Run as root after `npx tsc -p .`:  node dist/bench/capture-cost.js
import path from "node:path";
import { bpfObjectDir, native, type BpfObject, type BpfProgram, type Link } from "../native/index.js";
import { Datapath } from "../agent/datapath.js";
import { COUNTER } from "../agent/records.js";
import {
  BLACKHOLE_IP, Node, buildFlood, cleanupNow, confirmConnections, enableBpfStats, flood, fmt, median, onCleanup,
  progStats, requireRoot, tempDir, type FloodOptions,
} from "./testbed.js";

const ROUNDS = 5;
const FLOWS = 50_000;
const WARM_PACKETS = 1_000_000;
const TARGET_RATIO = 1.5;
const DPORT = 9;

interface Phase {
  name: string;
  /** What the flow maps (and conntrack) hold when a round starts. */
  maps: "empty" | "warm";
  flood: Omit<FloodOptions, "src" | "dst" | "dport">;
  note: string;
  /** The object whose from_pod runs: the agent's (its Datapath, the veth's endpoint entry
   * written), or a diagnostic one on a veth without an endpoint entry, without or with the
   * new-flow event. Diagnostics are not judged against the target. */
  object: "agent" | "no endpoint" | "no endpoint, events";
}

const PHASES: Phase[] = [
  { name: "new flows", maps: "empty", flood: { flows: FLOWS, count: FLOWS }, object: "agent",
    note: `conntrack and maps emptied before each round; ${FLOWS.toLocaleString("en-US")} packets, each the first of its flow and connection (insert path)` },
  { name: "new flows, no endpoint", maps: "empty", flood: { flows: FLOWS, count: FLOWS }, object: "no endpoint",
    note: "diagnostic, not judged: as above on a veth the agent has no endpoint entry for (no conntrack), events off" },
  { name: "new flows, no endpoint, events on", maps: "empty", flood: { flows: FLOWS, count: FLOWS }, object: "no endpoint, events",
    note: "diagnostic, not judged: as above with a ring-buffer event per new flow (the phase judged until 2026-12-04)" },
  { name: `warm, ${FLOWS / 1000}k flows`, maps: "warm", flood: { flows: FLOWS, count: WARM_PACKETS }, object: "agent",
    note: `the ${FLOWS.toLocaleString("en-US")} flows already in both maps; ${WARM_PACKETS.toLocaleString("en-US")} packets cycling over them (steady state)` },
  { name: "warm, 1 flow", maps: "warm", flood: { flows: 1, count: WARM_PACKETS }, object: "agent",
    note: `one flow already in both maps; ${WARM_PACKETS.toLocaleString("en-US")} packets (steady state, hot cache)` },
];

interface Round { endpointNs: number; referenceNs: number; ratio: number; sent: number; pps: number; runs: [number, number]; order: string }

function emptyMap(obj: BpfObject, name: string): void {
  obj.map(name).drain();
}

async function main(): Promise<number> {
  requireRoot("capture-cost");
  const dir = tempDir("capture-cost");
  const bin = buildFlood(dir);
  const node = await Node.create("cc", ["a"]);
  const pod = node.pod("a");
  enableBpfStats();

  const addon = native();
  const objectFile = path.join(bpfObjectDir, "endpoint.bpf.o");
  // As the agent loads it: 65536 entries per flow map, no new-flow events.
  const datapath = new Datapath({ objectPath: objectFile, flowMapSize: 65536 });
  onCleanup("close endpoint.bpf.o (the agent's)", () => datapath.close());
  const veth = addon.listLinks(node.netnsPath).find((l) => l.name === pod.hostVeth);
  if (!veth) throw new Error(`${pod.hostVeth} not found in ${node.netns}`);
  // What the agent's interface scan writes for a pod while no policy names it (agent/policy.ts, reconcileEndpoints).
  datapath.policy.setEndpoint(veth.ifindex, { identity: 0, ip4: pod.ip });
  const open = (events: number) => addon.openObject(objectFile, {
    rodata: { emit_new_flow_events: Buffer.from(Uint32Array.of(events).buffer) },
    maxEntries: { flows_0: 65536, flows_1: 65536 },
  });
  const bare = open(0);
  onCleanup("close endpoint.bpf.o (no endpoint)", () => bare.close());
  const withEvents = open(1);
  onCleanup("close endpoint.bpf.o (no endpoint, events on)", () => withEvents.close());
  const reference = addon.openObject(path.join(bpfObjectDir, "reference.bpf.o"));
  onCleanup("close reference.bpf.o", () => reference.close());
  // Consume new-flow events as the agent did, so that the ring never fills.
  let events = 0;
  const ring = addon.ringBuffer(withEvents.map("events"), (_records, count) => { events += count; });
  onCleanup("close ring buffer", () => ring.close());

  const objects: Record<Phase["object"], BpfObject> = { "agent": datapath.object, "no endpoint": bare, "no endpoint, events": withEvents };
  const fromPods = new Map(Object.entries(objects).map(([k, o]) => [k, o.program("from_pod")]));
  const ref = reference.program("reference");
  // Conntrack's two tables and the flow map a round writes (flows_0: no drain flips the active map here).
  const empty = (obj: BpfObject) => { for (const name of ["flows_0", "conntrack", "conntrack_new"]) emptyMap(obj, name); };
  let links: Link[] = [];
  const detach = () => { for (const l of links) l.detach(); links = []; };
  const attach = (order: BpfProgram[]) => {
    detach();
    links = order.map((p) => p.attachTc({ iface: pod.hostVeth, direction: "ingress", netns: node.netnsPath, mode: "tcx" }));
  };
  onCleanup("detach", detach);

  console.log(`capture-cost: from_pod (prog id ${datapath.object.program("from_pod").id}, the agent's object; veth ifindex ${veth.ifindex} `
    + `with its endpoint entry, identity 0) vs reference (prog id ${ref.id}), both TCX ingress on ${pod.hostVeth}`);
  console.log(`flood: raw-socket UDP ${pod.ip} -> ${BLACKHOLE_IP}:${DPORT} (blackholed in the node), 18-byte payload, sendmmsg x64, 1 thread`);
  console.log(`${ROUNDS} rounds per phase; the attach order alternates between rounds (TCX runs programs in order)\n`);

  const counterSum = (obj: BpfObject, index: number) => {
    const perCpu = obj.map("counters").lookup(Buffer.from(Uint32Array.of(index).buffer));
    let sum = 0n;
    if (perCpu) for (let off = 0; off + 8 <= perCpu.length; off += 8) sum += perCpu.readBigUInt64LE(off);
    return sum;
  };
  const results: Array<{ phase: Phase; rounds: Round[] }> = [];
  for (const phase of PHASES) {
    const rounds: Round[] = [];
    const fromPod = fromPods.get(phase.object)!;
    const flowMaps = objects[phase.object];
    const opts: FloodOptions = { src: pod.ip, dst: BLACKHOLE_IP, dport: DPORT, ...phase.flood };
    if (phase.maps === "warm") {
      detach();
      empty(flowMaps);
      emptyMap(reference, "ref_flows");
      attach([fromPod, ref]);
      await flood(node, pod.netns, bin, { ...opts, count: opts.flows }); // one packet per flow
      // Established connections, as traffic both ways would leave them (testbed.ts).
      if (phase.object === "agent") console.log(`(${confirmConnections(flowMaps)} connections moved to the confirmed table)`);
    }
    console.log(`== ${phase.name}: ${phase.note}`);
    console.log("round  order              sent        pps   from_pod ns/pkt  reference ns/pkt  ratio");
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? [fromPod, ref] : [ref, fromPod];
      if (phase.maps === "empty") {
        detach();
        empty(flowMaps);
        emptyMap(reference, "ref_flows");
      }
      attach(order);
      const e0 = progStats(fromPod.id), f0 = progStats(ref.id), created0 = counterSum(flowMaps, COUNTER.ctCreated);
      const sent = await flood(node, pod.netns, bin, opts);
      const e1 = progStats(fromPod.id), f1 = progStats(ref.id), created = counterSum(flowMaps, COUNTER.ctCreated) - created0;
      const eRuns = e1.runCnt - e0.runCnt, fRuns = f1.runCnt - f0.runCnt;
      const endpointNs = (e1.runTimeNs - e0.runTimeNs) / eRuns;
      const referenceNs = (f1.runTimeNs - f0.runTimeNs) / fRuns;
      const round: Round = { endpointNs, referenceNs, ratio: endpointNs / referenceNs, sent: sent.sent, pps: sent.pps,
        runs: [eRuns, fRuns], order: order.map((p) => p.name).join(",") };
      rounds.push(round);
      console.log(`${String(r + 1).padStart(5)}  ${round.order.padEnd(18)} ${String(sent.sent).padStart(8)} ${fmt(sent.pps / 1000, 0).padStart(8)}k`
        + ` ${fmt(endpointNs).padStart(16)} ${fmt(referenceNs).padStart(17)} ${fmt(round.ratio, 2).padStart(6)}`);
      if (eRuns < sent.sent || fRuns < sent.sent) {
        console.log(`       note: a program ran fewer times (${eRuns}, ${fRuns}) than packets were sent (${sent.sent})`);
      }
      // The agent's path opens a connection per new flow, and none in the steady state.
      const expected = phase.object === "agent" && phase.maps === "empty" ? BigInt(sent.sent) : 0n;
      if (created !== expected) {
        console.log(`PATH CHECK FAILED: ${created} conntrack entries created in the round, expected ${expected}`);
        return 1;
      }
    }
    const m = { e: median(rounds.map((x) => x.endpointNs)), f: median(rounds.map((x) => x.referenceNs)), r: median(rounds.map((x) => x.ratio)) };
    const verdict = phase.object !== "agent" ? "(diagnostic)" : `${m.r <= TARGET_RATIO ? "meets" : "MISSES"} target <= ${TARGET_RATIO}`;
    console.log(`median ${" ".repeat(37)} ${fmt(m.e).padStart(16)} ${fmt(m.f).padStart(17)} ${fmt(m.r, 2).padStart(6)}  ${verdict}\n`);
    results.push({ phase, rounds });
  }
  for (const [name, obj] of Object.entries(objects)) {
    console.log(`endpoint counters (${name}): map_full packets ${counterSum(obj, COUNTER.mapFullPackets)}, ct_full ${counterSum(obj, COUNTER.ctFull)}, `
      + `new flows ${counterSum(obj, COUNTER.newFlows)}, conntrack entries created ${counterSum(obj, COUNTER.ctCreated)}, ring_full events ${counterSum(obj, COUNTER.ringFull)}`);
  }
  ring.consume(); // what arrived since the last wake-up
  console.log(`new-flow events read (no endpoint, events on): ${events}`);

  const summary = results.map(({ phase, rounds }) => {
    const r = median(rounds.map((x) => x.ratio));
    return `${phase.name} ${fmt(median(rounds.map((x) => x.endpointNs)))}/${fmt(median(rounds.map((x) => x.referenceNs)))} ns = ${fmt(r, 2)}x`;
  }).join("; ");
  const worst = Math.max(...results.filter(({ phase }) => phase.object === "agent").map(({ rounds }) => median(rounds.map((x) => x.ratio))));
  console.log(`SUMMARY capture-cost: from_pod/reference ns per packet (medians of ${ROUNDS}): ${summary}; `
    + `target <= ${TARGET_RATIO}: ${worst <= TARGET_RATIO ? "met" : "MISSED"}`);
  return 0;
}

main().then((code) => { cleanupNow(); process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`capture-cost: ${(err as Error).stack ?? String(err)}\n`);
  cleanupNow();
  process.exitCode = 1;
});
