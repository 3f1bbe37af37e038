// The restart gap: packets that crossed a pod's veth while no bulkhead program was attached
// during agent restarts (issue 10; goal 0). The agent pins its programs, maps and tcx links
// under --bpf-dir, so a restart should leave no moment without a program: a same-layout
// agent swaps its programs into the pinned links (BPF_LINK_UPDATE), a changed layout keeps
// the old programs until the new ones take the links over, and packets counted while no
// agent ran stay in the pinned maps for the next agent.
//
// Method: one node namespace with pod a (bench/testbed.ts). A steady UDP flood from a to a
// blackholed address (only a's from_pod sees it) runs while the agent (standalone, pins in
// one folder for the whole run) is killed with SIGKILL and started again N times, then
// stopped with SIGTERM and started again, then upgraded to an object with another map
// layout (endpoint.layout-variant.bpf.o, as test/restart.test.ts does). Each new agent is
// ready (attached, or adopted, every veth) and runs for a while before the next stop. After
// the flood, the last agent drains twice, and then:
//   sent      flood.c's count (a datagram counts once sendmmsg accepted it; the veth's own
//             drops come back as ENOBUFS and are retried, so it is what reached the veth),
//             cross-checked against the host veth's rx counter
//   seen      the programs' packet counter (counters[BH_C_PACKETS], pinned, so cumulative
//             across adoptions, and carried over at the layout upgrade), as the last agent
//             exports it (bulkhead_agent_datapath_packets_total): nothing else crosses the
//             veth (no IPv6, permanent neighbours)
//   gap       sent - seen: packets no program ran on
//   recorded  packets in the flow records the agents exported (--export-file each); a
//             killed agent loses what it had drained but not yet written (a limit of the
//             export, not of the datapath), so recorded <= seen
//
// Run as root after `npm run build` (and `make -C native/bpf layout-variant`, done here):
//   node dist/bench/restart-gap.js [--kills N] [--rate PPS]
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { bpfObjectDir } from "../native/index.js";
import { repoRoot } from "../config/install.js";
import { metric } from "../lab/prometheus.js";
import {
  AgentProcess, BLACKHOLE_IP, Node, buildFlood, cleanupNow, collect, floodArgs, parseFloodResult, requireRoot, sleep,
  tempDir,
} from "./testbed.js";

const args = parseArgs({ options: {
  kills: { type: "string", default: "5" }, rate: { type: "string", default: "20000" },
} }).values;
const KILLS = Number(args.kills);
const RATE = Number(args.rate);
const DPORT = 9;
const FLOWS = 16;
/** How long each agent runs before the next stop: several drains (200 ms each). */
const RUN_MS = 1500;

const n = (x: number) => x.toLocaleString("en-US");

/** Packets of a's from_pod in an export file (JSON lines, proto3 JSON mapping). */
function recordedPackets(file: string): number {
  if (!existsSync(file)) return 0;
  let sum = 0;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as { point?: string; packets?: string | number };
    if (r.point === "OBSERVATION_POINT_FROM_POD") sum += Number(r.packets ?? 0);
  }
  return sum;
}

async function main(): Promise<number> {
  requireRoot("restart-gap");
  execFileSync("make", ["-s", "-C", path.join(repoRoot, "native", "bpf"), "layout-variant"], { stdio: "pipe" });
  const object = path.join(bpfObjectDir, "endpoint.bpf.o");
  const variant = path.join(bpfObjectDir, "endpoint.layout-variant.bpf.o");
  const dir = tempDir("restart-gap");
  const bin = buildFlood(dir);
  const node = await Node.create("rg", ["a"]);
  const pod = node.pod("a");
  const bpfDir = AgentProcess.pinDir();
  const exports: string[] = [];
  const start = async (obj: string) => {
    const file = path.join(dir, `agent-${exports.length + 1}.jsonl`);
    const log = path.join(dir, `agent-${exports.length + 1}.log`);
    exports.push(file);
    const t0 = Date.now();
    const agent = await AgentProcess.start(node, ["--bpf-object", obj, "--drain-interval", "200", "--export-file", file],
      log, bpfDir);
    return { agent, readyMs: Date.now() - t0 };
  };

  const steps: Array<{ how: string; object: string }> = [
    ...Array.from({ length: KILLS }, () => ({ how: "SIGKILL", object })),
    { how: "SIGTERM", object },
    { how: "SIGTERM, upgrade to another map layout", object: variant },
  ];
  console.log(`restart-gap: pod ${pod.ip} floods ${BLACKHOLE_IP}:${DPORT} (blackholed in the node) at ${n(RATE)} packets/s over ${FLOWS} flows;`
    + ` the agent (standalone, drain 200 ms, pins in ${bpfDir}) is restarted ${steps.length} times: ${KILLS} x SIGKILL, 1 x SIGTERM,`
    + ` 1 x SIGTERM + upgrade to ${path.basename(variant)}\n`);

  let { agent } = await start(object);
  const rx0 = (await node.linkStats(node.netns, pod.hostVeth)).rxPackets;
  // Runs until SIGTERM (below), then prints its count.
  const floodChild = node.spawn(pod.netns, [bin, ...floodArgs({ src: pod.ip, dst: BLACKHOLE_IP, dport: DPORT, flows: FLOWS,
    rate: RATE, durationS: 3600 })], "flood");
  const floodDone = collect(floodChild);
  await sleep(RUN_MS);

  console.log("restart  how                                      agent down → next ready  start mode");
  for (const [i, step] of steps.entries()) {
    const t0 = Date.now();
    if (step.how === "SIGKILL") {
      const exited = new Promise((resolve) => agent.child.once("exit", resolve));
      agent.child.kill("SIGKILL");
      await exited;
    } else {
      await agent.stop();
    }
    const next = await start(step.object);
    agent = next.agent;
    const mode = /adopted the pinned datapath/.test(agent.logTail(200)) ? "adopted"
      : /map layout changed/.test(agent.logTail(200)) ? "replaced (map layout changed)" : "other (see its log)";
    console.log(`${String(i + 1).padStart(7)}  ${step.how.padEnd(40)} ${n(Date.now() - t0).padStart(10)} ms          ${mode}`);
    await sleep(RUN_MS);
  }

  floodChild.kill("SIGTERM");
  const out = await floodDone;
  if (out.code !== 0) throw new Error(`flood: exit ${out.code}: ${out.stderr.trim()}`);
  const sent = parseFloodResult(out.stdout, pod.netns);
  const rx = (await node.linkStats(node.netns, pod.hostVeth)).rxPackets - rx0;
  // Two drain intervals and more: the last packets are in the counters the agent read.
  await sleep(1000);
  const m = await agent.metrics();
  const seen = metric(m, "bulkhead_agent_datapath_packets_total");
  const mapFull = metric(m, "bulkhead_agent_lost_packets_total", { cause: "map_full" });
  // SIGTERM: the last agent drains once more and flushes its export.
  await agent.stop();
  const recorded = exports.reduce((sum, f) => sum + recordedPackets(f), 0);
  const gap = sent.sent - seen;

  console.log(`\nsent ${n(sent.sent)} in ${sent.seconds.toFixed(1)} s (${n(Math.round(sent.pps))}/s); host veth rx ${n(rx)}`);
  console.log(`seen by the programs ${n(seen)} (the last agent's bulkhead_agent_datapath_packets_total); map_full ${n(mapFull)}`);
  console.log(`recorded in the agents' exports ${n(recorded)}: ${n(seen - recorded - mapFull)} lost with killed agents' memory (drained, not yet written)`);
  const summary = `SUMMARY restart-gap: ${steps.length} restarts (${KILLS} x SIGKILL, 1 x SIGTERM, 1 x layout upgrade) under a `
    + `${n(RATE)} packets/s flood: sent ${n(sent.sent)}, seen by the programs ${n(seen)}, gap = sent - seen = ${n(gap)} (goal 0: `
    + `${gap === 0 ? "met" : "MISSED"}); recorded ${n(recorded)} (${n(seen - recorded - mapFull)} lost with killed agents' memory)`;
  console.log(summary);
  return gap === 0 && rx === sent.sent ? 0 : 1;
}

main().then((code) => { cleanupNow(); process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`restart-gap: ${(err as Error).stack ?? String(err)}\n`);
  cleanupNow();
  process.exitCode = 1;
});
