// A fleet into one control plane (issue 11's end-to-end proof): 20 agent streams at 25,000
// records/s each for 60 s. Run after `npx tsc -p .` as
// `node dist/bench/fleet-ingest.js [--agents 20] [--rate 25000] [--seconds 60] [--profile DIR]`.
// Method and latest results: bench/README.md, "fleet-ingest".
//
// Method: the real control plane of bench/ingest.ts (5,000 pods, 20 nodes, store capacity
// 1M) in its own process; one process per agent, node-0 … node-<agents-1>, each speaking
// the agents' protocol 2 (FlowColumns) with their batch size (2,000) and in-flight limit
// (8), paced to `rate` records/s from its first config, for `rate × seconds` records. The
// agent processes send pre-encoded batches (bench/ingest.ts's pool) rather than a real
// datapath's drains, so that 20 of them fit beside the control plane on this machine:
// what is measured is the control plane. When the control plane falls behind, the agents'
// in-flight limit holds them back (as real agents' buffers would fill), so the run lasts
// longer than `seconds` and the rate achieved says so.
//
// Checked (exit 1 otherwise): every agent's records acknowledged; the control plane
// received exactly what was sent (GetStatus.recordsTotal); records held plus records
// evicted by capacity equal what was sent (nothing lost in between); every loss and
// refusal counter 0. Reported: the rate achieved, the control plane's CPU (cores, records
// per CPU-second) and RSS (at the end, and its peak).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import {
  BATCH_RECORDS, cpuSeconds, endChild, forkRole, getStatus, machineBusySeconds, memoryMiB, STORE_CAPACITY, waitMessage, writeManifests,
} from "./ingest.js";

const { values } = parseArgs({ options: { agents: { type: "string" }, rate: { type: "string" }, seconds: { type: "string" }, profile: { type: "string" } } });

function positiveInteger(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`fleet-ingest: --${flag} must be a positive integer, got "${text}"`);
  return n;
}

const AGENTS = positiveInteger("agents", values.agents ?? "20");
const RATE = positiveInteger("rate", values.rate ?? "25000");
const SECONDS = positiveInteger("seconds", values.seconds ?? "60");
if (AGENTS > 20) throw new Error(`fleet-ingest: --agents is at most 20 (the bench cluster has 20 nodes), got ${AGENTS}`);
const PER_AGENT = Math.ceil((RATE * SECONDS) / BATCH_RECORDS) * BATCH_RECORDS;
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-bench-fleet-"));
  const dir = path.join(tmp, "manifests");
  const socket = path.join(tmp, "cp.sock");
  writeManifests(dir);
  console.log(`fleet-ingest: ${AGENTS} agents x ${fmt(RATE)} records/s x ${SECONDS} s = ${fmt(AGENTS * PER_AGENT)} records `
    + `(${fmt(PER_AGENT)} each, batches of ${BATCH_RECORDS}); ${os.cpus().length} CPUs, node ${process.version}, load average ${os.loadavg()[0]!.toFixed(2)}`);
  // --profile DIR: the control plane writes a CPU profile there when it exits.
  const server = forkRole("controlplane", [dir, socket, String(STORE_CAPACITY)], values.profile === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${path.resolve(values.profile)}`]);
  const agents: ReturnType<typeof forkRole>[] = [];
  const observer = new ObserverServiceClient(`unix://${socket}`, grpc.credentials.createInsecure());
  const cleanUp = async () => {
    observer.close();
    await Promise.all([...agents, server].map(endChild));
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  // Interrupted (Ctrl-C, a timeout's SIGTERM): the children and the temp dir go too.
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => { void cleanUp().finally(() => process.exit(130)); });
  try {
    await waitMessage(server, (m) => "ready" in m);
    const pid = server.pid!;
    let cpu0 = 0, busy0 = 0;
    // The run starts when the first agent has a batch acknowledged (agents first build
    // their pool of batches, which the control plane does not see).
    let t0: bigint | undefined;
    for (let i = 0; i < AGENTS; i++) {
      const agent = forkRole("client", [socket, String(i), String(PER_AGENT), "0", "2", String(RATE), "pooled"]);
      agent.on("message", (m) => { 
        if (t0 !== undefined || typeof m !== "object" || m === null || !("streaming" in m)) return;
        t0 = process.hrtime.bigint();
        cpu0 = cpuSeconds(pid);
        busy0 = machineBusySeconds();
      });
      agents.push(agent);
    }
    // Every agent reports once all its batches are acknowledged; at the target rate that
    // is `seconds` after it started, later when the control plane holds it back.
    const done = await Promise.all(agents.map((a) => waitMessage(a, (m) => "done" in m, (SECONDS + 600) * 1000))) as { records: number }[];
    const wall = Number(process.hrtime.bigint() - t0!) / 1e9;
    const cpu = cpuSeconds(pid) - cpu0, busy = machineBusySeconds() - busy0;
    const memory = memoryMiB(pid);
    const status = await getStatus(observer);
    const sent = done.reduce((sum, d) => sum + d.records, 0);
    const received = Number(status.recordsTotal);
    const held = Number(status.flowsStored) + Number(status.store?.retentionDroppedRecords ?? 0n);
    const losses = status.losses.filter((l) => l.count > 0n).map((l) => `${l.node}/${l.cause} ${l.count} ${l.unit}`);
    const refused = status.refused.filter((r) => r.records > 0n).map((r) => `${r.node}/${r.cause} ${r.records}`);
    const exact = received === sent && held === sent && losses.length === 0 && refused.length === 0;
    const achieved = sent / wall;
    console.log(`sent ${fmt(sent)} records in ${wall.toFixed(1)} s: ${fmt(achieved)} records/s (${(100 * achieved / (AGENTS * RATE)).toFixed(1)} % of the ${fmt(AGENTS * RATE)} offered)`);
    console.log(`control plane: received ${fmt(received)}, held ${fmt(Number(status.flowsStored))} + evicted by capacity ${fmt(Number(status.store?.retentionDroppedRecords ?? 0n))} = ${fmt(held)}; `
      + `losses ${losses.length === 0 ? "none" : losses.join(", ")}; refused ${refused.length === 0 ? "none" : refused.join(", ")}`);
    console.log(`control plane CPU ${cpu.toFixed(1)} s = ${(cpu / wall).toFixed(2)} cores, ${fmt(sent / cpu)} records/CPU-s; `
      + `RSS ${memory.rss.toFixed(0)} MiB (peak ${memory.hwm.toFixed(0)}); whole machine busy ${(busy / wall).toFixed(2)} of ${os.cpus().length} cores`);
    console.log(`SUMMARY fleet-ingest: ${AGENTS} agents x ${fmt(RATE)} records/s for ${SECONDS} s: sent ${fmt(sent)}, received ${fmt(received)}, held ${fmt(held)}, `
      + `losses ${losses.length}, refused ${refused.length}: ${exact ? "exact" : "MISMATCH"}; achieved ${fmt(achieved)} records/s `
      + `(${(100 * achieved / (AGENTS * RATE)).toFixed(1)} % of offered); control plane ${(cpu / wall).toFixed(2)} cores, RSS ${memory.rss.toFixed(0)} MiB (peak ${memory.hwm.toFixed(0)})`);
    if (!exact) process.exitCode = 1;
  } finally {
    await cleanUp();
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
