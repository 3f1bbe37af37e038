// Exact loss accounting: every packet sent is either counted in an exported flow record
// or in a loss counter, also when the flow map is far too small. Known traffic (20,000
// UDP flows from pod a to pod b, IPv4 only, no ARP: neighbours are permanent) goes past
// the agent, which is then stopped with SIGTERM (final drain + flush). For each point
// (from_pod on a's veth, to_pod on b's) every packet must be in one place:
//
//   counted(from_pod) + counted(to_pod) + lost(map_full) == 2 x sent
//
// Ordering: the loss counters are cumulative and the agent reads them at every drain. After
// the flood ends, two drain intervals pass (so the drain that follows the last packet has
// read the counters), the metrics are read twice one interval apart (they must agree: no
// packet is still in flight), and only then is the agent stopped; its final drain can move
// the last flow entries into records, but it cannot add losses, since no packet arrives
// any more. The records are read from the export file after the agent has exited.
//
// Run as root after `npx tsc -p .`:  node dist/bench/loss-accounting.js   (exit 1 if unbalanced)
import { readFileSync } from "node:fs";
import path from "node:path";
import { FlowRecord, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";
import {
  AgentProcess, Node, buildFlood, cleanupNow, flood, requireRoot, sleep, startSink, tempDir, type Pod,
} from "./testbed.js";
import { metric, metricSum } from "../lab/prometheus.js";

const FLOWS = 20_000;
const PASSES = 10;
const RATE = 100_000;
const DPORT = 9000;
const SPORT_BASE = 20_000;
const DRAIN_MS = 1000;

interface Case { name: string; flowMapSize: number }

const CASES: Case[] = [
  { name: "flow map too small", flowMapSize: 1024 },
  { name: "flow map large enough", flowMapSize: 65536 },
];

interface Counted { fromPod: bigint; toPod: bigint; other: bigint; records: number }

/** Sums the packets of the exported records of our flows, by observation point. */
function countRecords(file: string, a: Pod, b: Pod): Counted {
  const out: Counted = { fromPod: 0n, toPod: 0n, other: 0n, records: 0 };
  let text = "";
  try { text = readFileSync(file, "utf8"); } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  for (const [i, line] of text.split("\n").entries()) {
    if (!line) continue;
    let r: FlowRecord;
    try { r = FlowRecord.fromJSON(JSON.parse(line)); } catch (err) {
      throw new Error(`${file}:${i + 1}: not a FlowRecord JSON line: ${(err as Error).message}`);
    }
    out.records++;
    const ours = r.ip?.source === a.ip && r.ip.destination === b.ip && r.l4?.protocol === 17
      && r.l4.destinationPort === DPORT && r.l4.sourcePort >= SPORT_BASE && r.l4.sourcePort < SPORT_BASE + FLOWS;
    if (!ours) out.other += r.packets;
    else if (r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD) out.fromPod += r.packets;
    else if (r.point === ObservationPoint.OBSERVATION_POINT_TO_POD) out.toPod += r.packets;
    else out.other += r.packets;
  }
  return out;
}

async function main(): Promise<number> {
  requireRoot("loss-accounting");
  const dir = tempDir("loss-accounting");
  const bin = buildFlood(dir);
  const node = await Node.create("la", ["a", "b"]);
  const a = node.pod("a"), b = node.pod("b");
  await startSink(node, b.netns, bin, DPORT);

  console.log(`loss-accounting: ${FLOWS.toLocaleString("en-US")} UDP flows x ${PASSES} packets ${a.ip} -> ${b.ip}:${DPORT}`
    + ` at ${RATE.toLocaleString("en-US")} packets/s, drain interval ${DRAIN_MS} ms; agent stopped with SIGTERM, records from its export file\n`);
  const verdicts: string[] = [];
  let balanced = true;
  for (const c of CASES) {
    const file = path.join(dir, `flows-${c.flowMapSize}.jsonl`);
    const agent = await AgentProcess.start(node, ["--flow-map-size", String(c.flowMapSize), "--export-file", file,
      "--drain-interval", String(DRAIN_MS)], path.join(dir, "agent.log"));
    let sent;
    try {
      const m0 = await agent.metrics();
      if (metric(m0, "bulkhead_agent_datapath_packets_total") !== 0) throw new Error("packets before the flood: the namespaces are not quiet");
      sent = await flood(node, a.netns, bin, { src: a.ip, dst: b.ip, dport: DPORT, sportBase: SPORT_BASE,
        flows: FLOWS, count: FLOWS * PASSES, rate: RATE });
    } catch (err) {
      await agent.stop();
      throw err;
    }
    await sleep(2 * DRAIN_MS + 500);
    const m1 = await agent.metrics();
    await sleep(DRAIN_MS + 200);
    const m2 = await agent.metrics();
    const code = await agent.stop();
    if (code !== 0) throw new Error(`agent exited ${code}; log ${agent.logPath}\n${agent.logTail()}`);

    const lost = metric(m2, "bulkhead_agent_lost_packets_total", { cause: "map_full" });
    const stable = lost === metric(m1, "bulkhead_agent_lost_packets_total", { cause: "map_full" })
      && metric(m2, "bulkhead_agent_datapath_packets_total") === metric(m1, "bulkhead_agent_datapath_packets_total");
    const seen = metric(m2, "bulkhead_agent_datapath_packets_total");
    const unparsed = metricSum(m2, "bulkhead_agent_unparsed_packets_total");
    const lostRecords = metricSum(m2, "bulkhead_agent_lost_records_total");
    const counted = countRecords(file, a, b);
    const expected = 2n * BigInt(sent.sent);
    const total = counted.fromPod + counted.toPod + BigInt(lost);
    const ok = total === expected && stable && counted.other === 0n && lostRecords === 0;
    balanced &&= ok;

    console.log(`== ${c.name}: --flow-map-size ${c.flowMapSize}`);
    console.log(`sent                     ${sent.sent} packets (${Math.round(sent.pps)} packets/s; veth refusals retried: ${sent.enobufs})`);
    console.log(`counted at from_pod      ${counted.fromPod}`);
    console.log(`counted at to_pod        ${counted.toPod}`);
    console.log(`lost (map_full)          ${lost}`);
    console.log(`counted + lost           ${total}   expected 2 x sent = ${expected}   ${total === expected ? "BALANCED" : `OFF BY ${total - expected}`}`);
    console.log(`checks                   datapath runs ${seen} (expected ${expected}), unparsed ${unparsed}, records ${counted.records},`
      + ` other packets ${counted.other}, records lost before export ${lostRecords}, counters stable after the flood: ${stable}`);
    console.log("");
    verdicts.push(`${c.name} (${c.flowMapSize}): sent ${sent.sent}, counted ${counted.fromPod + counted.toPod}, lost ${lost}`
      + ` -> ${ok ? "balanced" : "NOT balanced"}`);
  }
  console.log(`SUMMARY loss-accounting (2 points per packet): ${verdicts.join("; ")}: ${balanced ? "exact" : "MISMATCH"}`);
  return balanced ? 0 : 1;
}

main().then((code) => { cleanupNow(); process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`loss-accounting: ${(err as Error).stack ?? String(err)}\n`);
  cleanupNow();
  process.exitCode = 1;
});
