// The agent under load: 50,000 active UDP flows at >= 200,000 packets/s for 20 s from pod
// a to pod b on one node (so each flow is one entry at from_pod and one at to_pod: 100,000
// map entries per drain interval), with --flow-map-size 131072. Measures the agent
// process's RSS (max) and CPU (utime + stime over the flood), and the packets it counted
// against the packets sent, with every loss counter.
//
// Run as root after `npx tsc -p .`:
//   node dist/bench/agent-load.js [--threads N] [--variant all|no-export|export] [--node-options FLAGS]
// (sender threads, default 2; the variants to run, default both; the agent's Node flags,
// default the DaemonSet's, agent/node-flags.ts: `--node-options ""` runs it with V8's defaults)
import path from "node:path";
import { parseArgs } from "node:util";
import {
  AgentProcess, Node, buildFlood, cleanupNow, cpuTimes, flood, fmt, requireRoot, rssKiB, sleep,
  startSink, tempDir,
} from "./testbed.js";
import { metric, metricSum, type Metrics } from "../lab/prometheus.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";

const FLOWS = 50_000;
const RATE = 200_000;
const SECONDS = 20;
const FLOW_MAP_SIZE = 131_072;
const DPORT = 9000;
// Issue 11's targets: the SUMMARY's verdict is the first variant's (its first row); the export
// variant has a row of its own (RSS <= 96 MiB, CPU <= 25 %), printed per run, not in the verdict.
const TARGET_RSS_MIB = 80;
const TARGET_CPU_PCT = 10;

interface Variant { name: string; flags: (dir: string) => string[]; judged: boolean; rssMiB: number; cpuPct: number }

const VARIANTS: Variant[] = [
  { name: "no export (the agent's defaults)", flags: () => [], judged: true, rssMiB: TARGET_RSS_MIB, cpuPct: TARGET_CPU_PCT },
  // /dev/null: the agent's cost of encoding and writing, without filling a disk.
  { name: "JSON-lines export (--export-file /dev/null)", flags: () => ["--export-file", "/dev/null"], judged: false, rssMiB: 96, cpuPct: 25 },
];

/** A series' growth between two reads; without labels, the whole family's. */
const delta = (m0: Metrics, m1: Metrics, name: string, labels?: Record<string, string>) =>
  labels ? metric(m1, name, labels) - metric(m0, name, labels) : metricSum(m1, name) - metricSum(m0, name);

async function main(): Promise<number> {
  requireRoot("agent-load");
  const args = parseArgs({ options: { threads: { type: "string", default: "2" }, variant: { type: "string", default: "all" },
    "node-options": { type: "string", default: AGENT_NODE_FLAGS.join(" ") } } }).values;
  const nodeFlags = args["node-options"].split(" ").filter((f) => f !== "");
  const threads = Number(args.threads);
  const variants = args.variant === "all" ? VARIANTS : args.variant === "no-export" ? VARIANTS.slice(0, 1)
    : args.variant === "export" ? VARIANTS.slice(1) : undefined;
  if (!variants) throw new Error(`--variant ${args.variant}: expected all, no-export or export`);
  const dir = tempDir("agent-load");
  const bin = buildFlood(dir);
  const node = await Node.create("al", ["a", "b"]);
  const a = node.pod("a"), b = node.pod("b");
  await startSink(node, b.netns, bin, DPORT);

  console.log(`agent-load: ${FLOWS.toLocaleString("en-US")} UDP flows (source ports cycling) ${a.ip} -> ${b.ip}:${DPORT},`
    + ` paced at ${RATE.toLocaleString("en-US")} packets/s for ${SECONDS} s (${threads} sender thread(s), raw socket + sendmmsg);`
    + ` agent --flow-map-size ${FLOW_MAP_SIZE}, drain interval 1 s, Node flags: ${nodeFlags.join(" ") || "none (V8's defaults)"}`
    + `${args["node-options"] === AGENT_NODE_FLAGS.join(" ") ? " (as deployed)" : ""}`);
  console.log("each flow is counted at two points (from_pod on a's veth, to_pod on b's): expected counted = 2 x sent\n");

  let allMet = true;
  const lines: string[] = [];
  for (const variant of variants) {
    const agent = await AgentProcess.start(node, ["--flow-map-size", String(FLOW_MAP_SIZE), ...variant.flags(dir)],
      path.join(dir, "agent.log"), undefined, nodeFlags);
    let maxRss = rssKiB(agent.pid);
    const sampler = setInterval(() => { try { maxRss = Math.max(maxRss, rssKiB(agent.pid)); } catch { /* exiting */ } }, 200);
    try {
      await sleep(1500);
      const idleRss = rssKiB(agent.pid);
      const m0 = await agent.metrics();
      const cpu0 = cpuTimes(agent.pid), t0 = process.hrtime.bigint();
      const sent = await flood(node, a.netns, bin, { src: a.ip, dst: b.ip, dport: DPORT, flows: FLOWS, rate: RATE,
        durationS: SECONDS, threads });
      const cpu1 = cpuTimes(agent.pid), window = Number(process.hrtime.bigint() - t0) / 1e9;
      const userPct = (100 * (cpu1.user - cpu0.user)) / window, systemPct = (100 * (cpu1.system - cpu0.system)) / window;
      const cpuPct = userPct + systemPct;
      await sleep(2500); // two drains: every packet sent is now in a record or a loss counter
      const m1 = await agent.metrics();
      const cpu2 = cpuTimes(agent.pid);
      clearInterval(sampler);
      maxRss = Math.max(maxRss, rssKiB(agent.pid));

      const counted = delta(m0, m1, "bulkhead_agent_packets_total");
      const lostMapFull = delta(m0, m1, "bulkhead_agent_lost_packets_total", { cause: "map_full" });
      const ringFull = delta(m0, m1, "bulkhead_agent_lost_events_total", { cause: "ring_full" });
      const lostRecords = delta(m0, m1, "bulkhead_agent_lost_records_total");
      const seen = delta(m0, m1, "bulkhead_agent_datapath_packets_total");
      const records = delta(m0, m1, "bulkhead_agent_flow_records_total");
      const newFlowEvents = delta(m0, m1, "bulkhead_agent_new_flows_total");
      const exported = delta(m0, m1, "bulkhead_agent_exported_records_total");
      const drainS = metric(m1, "bulkhead_agent_drain_duration_seconds");
      // Per million records: a record's cost whatever rate the flood reached. Over the flood
      // and the two drains after it, so that the CPU of every record counted is in it.
      const perMRecords = (s: number) => (records > 0 ? (s * 1e6) / records : NaN);
      const userS = cpu2.user - cpu0.user, systemS = cpu2.system - cpu0.system;
      const rssMiB = maxRss / 1024;
      const rssOk = rssMiB <= variant.rssMiB, cpuOk = cpuPct <= variant.cpuPct, rateOk = sent.pps >= RATE * 0.99;
      if (variant.judged) allMet &&= rssOk && cpuOk && rateOk;

      console.log(`== ${variant.name}${variant.judged ? "" : " (its own targets; not in the SUMMARY's verdict)"}`);
      console.log(`sent                ${sent.sent.toLocaleString("en-US")} packets in ${fmt(sent.seconds, 2)} s = ${fmt(sent.pps / 1000)}k packets/s`
        + ` (veth refusals retried: ${sent.enobufs})`);
      console.log(`datapath saw        ${seen.toLocaleString("en-US")} packet runs (2 x sent = ${(2 * sent.sent).toLocaleString("en-US")})`);
      console.log(`counted in records  ${counted.toLocaleString("en-US")} packets = ${fmt((100 * counted) / (2 * sent.sent), 2)} % of 2 x sent,`
        + ` ${fmt(counted / 2 / sent.seconds / 1000)}k flow-packets/s per point`);
      console.log(`loss counters       map_full ${lostMapFull} packets, ring_full ${ringFull} events, records lost before export ${lostRecords}`);
      console.log(`records             ${records.toLocaleString("en-US")} (${fmt(records / sent.seconds / 1000)}k/s), new flows ${newFlowEvents.toLocaleString("en-US")},`
        + ` exported ${exported.toLocaleString("en-US")}, last drain ${fmt(drainS * 1000)} ms`);
      console.log(`agent RSS           max ${fmt(rssMiB)} MiB (idle before the flood ${fmt(idleRss / 1024)} MiB)   target <= ${variant.rssMiB} MiB: ${rssOk ? "met" : "MISSED"}`);
      console.log(`agent CPU           ${fmt(cpuPct)} % of one core over the flood (user ${fmt(userPct)} %, system ${fmt(systemPct)} %)`
        + `   target <= ${variant.cpuPct} %: ${cpuOk ? "met" : "MISSED"}`);
      console.log(`agent CPU / records ${fmt(perMRecords(userS + systemS), 2)} CPU-s per M records (user ${fmt(perMRecords(userS), 2)},`
        + ` system ${fmt(perMRecords(systemS), 2)})`);
      const mib = (kind: string) => fmt(metric(m1, "bulkhead_agent_memory_bytes", { kind }) / 2 ** 20);
      console.log(`agent memory        after the flood: rss ${mib("rss")}, V8 heap ${mib("heap_used")} used of ${mib("heap_total")},`
        + ` external ${mib("external")} (array buffers ${mib("array_buffers")}) MiB`);
      if (!rateOk) console.log(`rate                MISSED: ${fmt(sent.pps / 1000)}k packets/s < ${RATE / 1000}k`);
      console.log("");
      lines.push(`${variant.name}: RSS ${fmt(rssMiB)} MiB, CPU ${fmt(cpuPct)} %, ${fmt(sent.pps / 1000)}k pps sent,`
        + ` counted ${fmt((100 * counted) / (2 * sent.sent), 2)} % of 2x sent, map_full ${lostMapFull}`);
    } finally {
      clearInterval(sampler);
      const code = await agent.stop();
      if (code !== 0) console.log(`agent exited ${code}; log ${agent.logPath}`);
    }
  }
  console.log(`SUMMARY agent-load (${FLOWS / 1000}k flows, ${RATE / 1000}k pps target, ${SECONDS} s): ${lines.join("; ")};`
    + ` targets RSS <= ${TARGET_RSS_MIB} MiB, CPU <= ${TARGET_CPU_PCT} %, >= ${RATE / 1000}k pps: ${allMet ? "met" : "MISSED"}`);
  return 0;
}

main().then((code) => { cleanupNow(); process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`agent-load: ${(err as Error).stack ?? String(err)}\n`);
  cleanupNow();
  process.exitCode = 1;
});
