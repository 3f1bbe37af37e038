// Two builds of the control plane's ingest against each other in one process: the same
// agent batches into a ControlPlane of each build, batch by batch, so that a change of the
// machine's speed (this guest's host swings 4x within minutes: bench/README, control plane)
// falls on both alike. A run of ingest-profile.ts per build, even alternated, measures the
// host as much as the code.
//
// Run after `npm run build:ts`, with the other build's `dist` (e.g. from a worktree of the
// base commit) as A: `node dist/bench/ingest-ab.js --a ../base/dist [--b dist] [--nodes 2]
// [--epochs 8] [--epoch-batches 60]`. B defaults to the build this script is in.
//
// Method: both control planes load the same 5,000-pod cluster (ingest.ts's manifests) and
// take bench/ingest.ts's agent batches (`agentBodiesForProfile`, `--nodes` agents), each
// decoded from its bytes by the side's own build's checked decoder and passed to
// `ControlPlane.ingestColumns`, untimed until both histories are full (1M). Then `--epochs`
// epochs of `--epoch-batches` batches each: every epoch starts from freshly built batches
// stamped with the current time, as each window of ingest.ts starts new clients, so the
// flow map's bucket lists grow as they do there. Each batch goes to A then B, the next to B
// then A (ABBA, so neither always runs with the other's data fresh in the caches); each
// decode and ingest is timed alone (wall clock of a synchronous call: this thread's work,
// plus any time the host took the CPU away, which lands on either side alike). Prints rows
// per second of each and B/A, the whole run's and per epoch (their median), with each
// side's edge count as a check that both built the same map. A build against itself gives
// 1.00 ± 0.03 per epoch.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { agentBodiesForProfile, median, STORE_CAPACITY, writeManifests } from "./ingest.js";
import type { FlowColumns } from "../flowcolumns/columns.js";
// Types only: each side's modules are loaded from its own build's folder.
import type * as ControlPlaneTypes from "../controlplane/controlplane.js";
import type * as FolderTypes from "../controlplane/metadata/folder.js";
import type * as AccessTypes from "../controlplane/access/control.js";
import type * as WireTypes from "../flowcolumns/wire.js";

type ControlPlaneModule = typeof ControlPlaneTypes;
type FolderModule = typeof FolderTypes;
type AccessModule = typeof AccessTypes;
type WireModule = typeof WireTypes;

const POOL_BATCHES = 25;

interface Side {
  name: string;
  dist: string;
  cp: InstanceType<ControlPlaneModule["ControlPlane"]>;
  /** Batch bytes decoded by this build, as its AgentServer would. */
  decode: (bytes: Uint8Array) => FlowColumns;
  tmp: string;
  ns: bigint;
  rows: number;
}

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

function positiveFlag(name: string, fallback: number, max = Infinity): number {
  const raw = flagValue(name);
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isSafeInteger(value) || value < 1 || value > max) throw new Error(`bench: ${name} takes an integer from 1 to ${max}, got ${raw}`);
  return value;
}

/** A build's dist folder: it must hold the control plane's compiled module. */
function buildDir(flag: string, fallback: string | undefined): string {
  const raw = flagValue(flag) ?? fallback;
  if (raw === undefined) throw new Error(`bench: ${flag} DIR is required: the dist folder of the build to compare (e.g. a worktree's, after npm run build:ts)`);
  const dir = path.resolve(raw);
  if (!fs.existsSync(path.join(dir, "controlplane", "controlplane.js"))) {
    throw new Error(`bench: ${flag} ${raw}: no controlplane/controlplane.js there; give a build's dist folder`);
  }
  return dir;
}

async function start(name: string, dist: string): Promise<Side> {
  const { ControlPlane } = await import(path.join(dist, "controlplane", "controlplane.js")) as ControlPlaneModule;
  const { FolderSource } = await import(path.join(dist, "controlplane", "metadata", "folder.js")) as FolderModule;
  const { AccessControl } = await import(path.join(dist, "controlplane", "access", "control.js")) as AccessModule;
  const wire = await import(path.join(dist, "flowcolumns", "wire.js")) as WireModule;
  const decode = (bytes: Uint8Array): FlowColumns => wire.decodeColumns(bytes).columns;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `bulkhead-bench-ingest-ab-${name}-`));
  const dir = path.join(tmp, "manifests");
  writeManifests(dir);
  const cp = new ControlPlane({
    source: new FolderSource({ dir }), storeCapacity: STORE_CAPACITY, log: pino({ level: "warn" }),
    access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
  });
  await cp.start([`unix://${path.join(tmp, "cp.sock")}`]);
  return { name, dist, cp, decode, tmp, ns: 0n, rows: 0 };
}

function rate(rows: number, ns: bigint): number {
  return Math.round(rows / (Number(ns) / 1e9));
}

async function main(): Promise<void> {
  const here = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
  const distA = buildDir("--a", undefined), distB = buildDir("--b", here);
  const nodes = positiveFlag("--nodes", 2, 20);
  const epochs = positiveFlag("--epochs", 8);
  const epochBatches = positiveFlag("--epoch-batches", 60);
  console.log(`ingest A/B: A ${distA}, B ${distB}; ${nodes} agents, ${epochs} epochs x ${epochBatches} batches after filling 1M; `
    + `${os.cpus().length} CPUs, node ${process.version}`);
  const sides: Side[] = [];
  try {
    sides.push(await start("a", distA), await start("b", distB));
    const [a, b] = sides as [Side, Side];
    let pool: Uint8Array[][] = [];
    let next = 0;
    const fresh = () => { pool = Array.from({ length: nodes }, (_, n) => agentBodiesForProfile(`node-${n}`, POOL_BATCHES)); };
    const take = (): [number, Uint8Array] => {
      const node = next % nodes;
      const bytes = pool[node]![Math.floor(next / nodes) % POOL_BATCHES]!;
      next++;
      return [node, bytes];
    };
    const ingest = (side: Side, node: number, bytes: Uint8Array): number => {
      const batch = side.decode(bytes);
      side.cp.ingestColumns(`node-${node}`, batch);
      return batch.rows;
    };
    fresh();
    for (let rows = 0; rows < STORE_CAPACITY;) {
      const [node, bytes] = take();
      ingest(a, node, bytes);
      rows += ingest(b, node, bytes);
    }
    const ratios: number[] = [];
    for (let e = 0; e < epochs; e++) {
      fresh();
      const before = { a: a.ns, b: b.ns };
      for (let k = 0; k < epochBatches; k++) {
        const [node, bytes] = take();
        for (const side of k % 2 === 0 ? [a, b] : [b, a]) {
          const t0 = process.hrtime.bigint();
          const rows = ingest(side, node, bytes);
          side.ns += process.hrtime.bigint() - t0;
          side.rows += rows;
        }
      }
      ratios.push(Number(a.ns - before.a) / Number(b.ns - before.b));
      console.log(`  epoch ${e + 1}: B/A ${ratios[e]!.toFixed(3)}`);
    }
    const sorted = [...ratios].sort((x, y) => x - y);
    const rateA = rate(a.rows, a.ns), rateB = rate(b.rows, b.ns);
    console.log(`edges: A ${a.cp.flowMap.stats.edges}, B ${b.cp.flowMap.stats.edges}; history: A ${a.cp.history.size}, B ${b.cp.history.size}`);
    console.log(`SUMMARY ingest B/A, interleaved: ${(rateB / rateA).toFixed(3)} (epoch median ${median(ratios).toFixed(3)}, range ${sorted[0]!.toFixed(3)}-${sorted[sorted.length - 1]!.toFixed(3)}); `
      + `A ${rateA.toLocaleString("en-US")} rows/s, B ${rateB.toLocaleString("en-US")} rows/s`);
  } finally {
    for (const side of sides) {
      await side.cp.stop();
      fs.rmSync(side.tmp, { recursive: true, force: true });
    }
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
