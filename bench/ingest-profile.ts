// The control plane's own ingest work in-process, without gRPC: the bench's agent batches
// (bench/ingest.ts, `agentBodiesForProfile`) each decoded from its bytes by the checked
// decoder, as the control plane's AgentServer does, then
// `ControlPlane.ingestColumns`, `--rows` rows (default 2M) into its 1M history, after a first
// pass that fills the history (so that the timed part evicts as the steady state does).
// (Batches decoded once and reused, as this bench did until 2026-12-05, read columns hot in
// the cache and skipped the decoder: ~40 % faster than the gRPC path's own work.) Prints rows per
// CPU-second of this process (GC threads included) and the memory held after a full GC.
// For a profile: `node --cpu-prof --cpu-prof-dir=/tmp/prof dist/bench/ingest-profile.js`.
// Run with `--expose-gc` for the memory line's GC'd figures. Also prints how many hidden
// classes (V8 maps) the enricher's address entries and their endpoints have: one each keeps
// the per-row reads monomorphic; one per object (as an object spread once gave them) made
// every read a megamorphic lookup and halved this figure (bench/README, control plane).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import { pino } from "pino";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import type { FlowColumns } from "../flowcolumns/columns.js";
import { decodeColumns } from "../flowcolumns/wire.js";
import { agentBodiesForProfile, STORE_CAPACITY, writeManifests } from "./ingest.js";

const POOL_BATCHES = 25;

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

async function main(): Promise<void> {
  const rows = Number(flagValue("--rows") ?? 2_000_000);
  if (!Number.isSafeInteger(rows) || rows <= 0) throw new Error(`bench: --rows takes a positive integer, got ${flagValue("--rows")}`);
  const nodes = Number(flagValue("--nodes") ?? 2);
  if (!Number.isSafeInteger(nodes) || nodes < 1 || nodes > 20) throw new Error(`bench: --nodes takes 1 to 20 (the bench cluster's nodes), got ${flagValue("--nodes")}`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-bench-ingest-profile-"));
  const dir = path.join(tmp, "manifests");
  writeManifests(dir);
  const cp = new ControlPlane({
    source: new FolderSource({ dir }), storeCapacity: STORE_CAPACITY, log: pino({ level: "warn" }),
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  try {
    await cp.start([`unix://${path.join(tmp, "cp.sock")}`]);
    const pool = Array.from({ length: nodes }, (_, n) => agentBodiesForProfile(`node-${n}`, POOL_BATCHES));
    let next = 0;
    const ingest = (count: number) => {
      for (let done = 0; done < count; next++) {
        const node = next % nodes;
        const batch = decodeColumns(pool[node]![Math.floor(next / nodes) % POOL_BATCHES]!).columns;
        cp.ingestColumns(`node-${node}`, batch);
        done += batch.rows;
      }
    };
    ingest(STORE_CAPACITY);
    const cpu0 = process.cpuUsage(), t0 = process.hrtime.bigint();
    ingest(rows);
    const cpu = process.cpuUsage(cpu0), seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    console.log(`ingestColumns: ${rows.toLocaleString("en-US")} rows in ${seconds.toFixed(2)} s, ${cpuSeconds.toFixed(2)} CPU-s: `
      + `${Math.round(rows / cpuSeconds).toLocaleString("en-US")} rows/CPU-s (load average ${os.loadavg()[0]!.toFixed(1)})`);
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage(), mib = (b: number) => (b / 1048576).toFixed(0);
    console.log(`memory: RSS ${mib(m.rss)} MiB, heap used ${mib(m.heapUsed)} of ${mib(m.heapTotal)} MiB, array buffers ${mib(m.arrayBuffers)} MiB`
      + ` (history ${cp.history.size.toLocaleString("en-US")} rows, flow map ${cp.flowMap.stats.edges} edges)`);
    console.log(`hidden classes: ${hiddenClassCensus(cp, decodeColumns(pool[0]![0]!).columns)}`);
    // Where the heap's committed but unused part is (RSS counts it): per V8 space, size / used.
    const spaces = v8.getHeapSpaceStatistics().filter((s) => s.space_size > 1048576)
      .map((s) => `${s.space_name} ${mib(s.space_size)}/${mib(s.space_used_size)}`);
    console.log(`heap spaces (MiB committed/used): ${spaces.join(", ")}; history columns ${mib(cp.history.columnBytes)} MiB`);
  } finally {
    await cp.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Hidden classes of the address entries and endpoints one batch reads (its rows admitted
 * again), told apart with V8's %HaveSameMap (natives syntax, allowed for this process only
 * from here on); up to MAX_CLASSES apart.
 */
function hiddenClassCensus(cp: ControlPlane, batch: FlowColumns): string {
  const MAX_CLASSES = 64;
  v8.setFlagsFromString("--allow-natives-syntax");
  // %HaveSameMap is V8 natives syntax, which only a function compiled after the flag can use.
  const sameMap = new Function("a", "b", "return %HaveSameMap(a, b)") as (a: object, b: object) => boolean;
  const classes = (objects: object[]): string => {
    const distinct = [...new Set(objects)];
    const seen: object[] = [];
    for (const o of distinct) {
      if (seen.some((s) => sameMap(s, o))) continue;
      if (seen.length === MAX_CLASSES) return `more than ${MAX_CLASSES} for ${distinct.length.toLocaleString("en-US")}`;
      seen.push(o);
    }
    return `${seen.length} for ${distinct.length.toLocaleString("en-US")}`;
  };
  const admitted = cp.enricher.admitColumns("node-0", batch, 0);
  const entries = [...admitted.sourceEntries, ...admitted.destinationEntries].filter((e) => e !== undefined);
  return `address entries ${classes(entries)}, their endpoints ${classes(entries.map((e) => e.endpoint))}`;
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
