// The agent's drain read of the flow map (issue 11): what one drain of N entries costs the
// agent's process in CPU, reading in pieces as the agent does, with each piece resuming at
// the kernel's batch position (`.next` → `into.from`, since d225f3a) against the old read
// where every piece restarted at bucket 0 (and walked every bucket already emptied again).
// Run as root under the kernel lock after `npx tsc -p .` and the addon's build:
//   flock /tmp/bulkhead-kernel.lock node dist/bench/flow-drain.js [--rounds N] [--entries 100000,60000]
//
// Method: endpoint.bpf.o loaded through the addon as the agent loads it (flows_0/flows_1 of
// 131,072 entries, agent-load's --flow-map-size; no program attached, no packet sent, no
// namespace made). Per round and size, flows_0 is filled with N synthetic entries (distinct
// keys, one update each, not timed), then drained in pieces of DRAIN_PIECE entries into
// one reused pair of Buffers (stopWhenFull) exactly as Datapath.drainPieces does, timed with
// process.cpuUsage() (user: addon and JS; system: the kernel's batch walk). Only the read
// is measured: decoding into columns is the same in both modes. The two modes alternate,
// their order flipping every round. Figures: CPU ms per drain of N entries (user + system),
// the same as CPU-s per million records, the medians over the rounds, the ratio of the
// medians (resume / restart) and the median of the per-round ratios. Each drain must
// return exactly N entries and leave the map empty, or the script exits 1.
import path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { native, type BpfMap, type DrainInto } from "../native/index.js";
import { bh_flow_key, bh_flow_value } from "../native/gen/abi.js";
import { drainKept } from "../agent/datapath.js";
import { DRAIN_PIECE } from "../agent/agent.js";
import { fmt, median, requireRoot } from "./testbed.js";

const FLOW_MAP_SIZE = 131_072;

type Mode = "resume" | "restart";

interface DrainCost { userMs: number; systemMs: number; pieces: number }

/** N distinct keys (an index spread over the source address and ports), one value each. */
function fill(map: BpfMap, entries: number): void {
  const key = Buffer.alloc(bh_flow_key.size), value = Buffer.alloc(bh_flow_value.size);
  for (let i = 0; i < entries; i++) {
    key.fill(0);
    key.writeUInt32LE(i, bh_flow_key.src);
    key.writeUInt32BE(0x0ac20000 + (i & 0xffff), bh_flow_key.dst);
    value.writeBigUInt64LE(BigInt(i + 1), bh_flow_value.packets);
    map.update(key, value);
  }
}

/** One drain in pieces, as Datapath.drainPieces reads the idle map; "restart" is the read
 * before d225f3a (no `from`: every piece starts at bucket 0, and only an empty read ends). */
function drain(map: BpfMap, scratch: DrainInto, mode: Mode): { count: number; pieces: number } {
  const failures: Error[] = [];
  let from: Buffer | undefined, count = 0, pieces = 0;
  for (;;) {
    const piece = drainKept(map, failures, from ? { ...scratch, from } : scratch);
    pieces++;
    count += piece.count;
    if (failures.length > 0) throw failures[0]!;
    if (mode === "restart") {
      if (piece.count === 0) break;
    } else {
      if (piece.next === undefined) break;
      from = piece.next;
    }
  }
  return { count, pieces };
}

function measure(map: BpfMap, scratch: DrainInto, mode: Mode, entries: number): DrainCost {
  fill(map, entries);
  const c0 = process.cpuUsage();
  const { count, pieces } = drain(map, scratch, mode);
  const c = process.cpuUsage(c0);
  const left = map.dump().count;
  if (count !== entries || left !== 0) {
    throw new Error(`${mode} drain of ${entries} entries returned ${count} and left ${left} in the map: the read is wrong`);
  }
  return { userMs: c.user / 1000, systemMs: c.system / 1000, pieces };
}

function main(): number {
  requireRoot("flow-drain");
  const args = parseArgs({ options: { rounds: { type: "string", default: "15" },
    entries: { type: "string", default: "100000,60000" } } }).values;
  const rounds = Number(args.rounds);
  const sizes = args.entries.split(",").map(Number);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds ${args.rounds}: expected an integer >= 1`);
  for (const n of sizes) {
    if (!Number.isInteger(n) || n < 1 || n > FLOW_MAP_SIZE) throw new Error(`--entries ${n}: expected integers 1..${FLOW_MAP_SIZE}`);
  }
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
  const object = native().openObject(path.join(root, "native/build/endpoint.bpf.o"), {
    maxEntries: { flows_0: FLOW_MAP_SIZE, flows_1: FLOW_MAP_SIZE },
  });
  const lines: string[] = [];
  try {
    const map = object.map("flows_0");
    const scratch: DrainInto = {
      keys: Buffer.allocUnsafeSlow(DRAIN_PIECE * bh_flow_key.size),
      values: Buffer.allocUnsafeSlow(DRAIN_PIECE * bh_flow_value.size),
      stopWhenFull: true,
    };
    console.log(`flow-drain: flows_0 of ${FLOW_MAP_SIZE.toLocaleString("en-US")} entries, pieces of ${DRAIN_PIECE} entries,`
      + ` ${rounds} rounds per size, modes alternating; CPU of this process (user + system) per drain`);
    for (const entries of sizes) {
      // One untimed drain of each: page faults of the scratch and the map's first fill.
      for (const mode of ["resume", "restart"] as const) measure(map, scratch, mode, entries);
      const costs: Record<Mode, DrainCost[]> = { resume: [], restart: [] };
      for (let r = 0; r < rounds; r++) {
        const order: Mode[] = r % 2 === 0 ? ["resume", "restart"] : ["restart", "resume"];
        for (const mode of order) costs[mode].push(measure(map, scratch, mode, entries));
      }
      const total = (c: DrainCost) => c.userMs + c.systemMs;
      const med = (mode: Mode, f: (c: DrainCost) => number) => median(costs[mode].map(f));
      const ratios = costs.resume.map((c, i) => total(c) / total(costs.restart[i]!));
      const ratio = med("resume", total) / med("restart", total);
      console.log(`\n== ${entries.toLocaleString("en-US")} entries`);
      for (const mode of ["restart", "resume"] as const) {
        const ms = med(mode, total);
        console.log(`${mode.padEnd(8)} ${fmt(ms)} CPU ms per drain (user ${fmt(med(mode, (c) => c.userMs))},`
          + ` system ${fmt(med(mode, (c) => c.systemMs))}) = ${fmt((ms / entries) * 1000, 3)} CPU-s per M records,`
          + ` ${med(mode, (c) => c.pieces)} reads`);
      }
      console.log(`ratio    resume / restart: ${fmt(ratio, 2)} (medians), per-round median ${fmt(median(ratios), 2)},`
        + ` span ${fmt(Math.min(...ratios), 2)}..${fmt(Math.max(...ratios), 2)}`);
      lines.push(`${entries / 1000}k entries: restart ${fmt(med("restart", total))} ms, resume ${fmt(med("resume", total))} ms,`
        + ` ratio ${fmt(ratio, 2)}`);
    }
  } finally {
    object.close();
  }
  console.log(`\nSUMMARY flow-drain (CPU ms per drain, median of ${rounds}): ${lines.join("; ")}`);
  return 0;
}

try {
  process.exitCode = main();
} catch (err) {
  process.stderr.write(`flow-drain: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
}
