// Reads the agents' JSON-lines exports in a lab and sums what they saw, so tests can
// compare flow records with the packets they sent.
import fs from "node:fs";
import path from "node:path";
import { FlowRecord, ObservationPoint } from "../../proto/gen/bulkhead/v1/flow.js";

export function readExport(file: string): FlowRecord[] {
  if (!fs.existsSync(file)) return [];
  return fs.readFileSync(file, "utf8").split("\n").filter((l) => l.trim())
    .map((l) => FlowRecord.fromJSON(JSON.parse(l)));
}

export function readExports(dir: string): FlowRecord[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f.endsWith(".jsonl")).flatMap((f) => readExport(path.join(dir, f)));
}

export interface Observation { node: string; point: "from-pod" | "to-pod"; packets: bigint; bytes: bigint; tcpFlags: Set<string>; records: number }

/** Sums matching records per (node, point). */
export function observations(records: FlowRecord[], match: (r: FlowRecord) => boolean): Map<string, Observation> {
  const out = new Map<string, Observation>();
  for (const r of records) {
    if (!match(r)) continue;
    const point = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? "from-pod" : "to-pod";
    const key = `${r.node}/${point}`;
    const o = out.get(key) ?? { node: r.node, point, packets: 0n, bytes: 0n, tcpFlags: new Set<string>(), records: 0 };
    o.packets += r.packets;
    o.bytes += r.bytes;
    o.records++;
    for (const [flag, on] of Object.entries(r.l4?.tcpFlags ?? {})) if (on) o.tcpFlags.add(flag.toUpperCase());
    out.set(key, o);
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The drain interval the lab tests give their agents (`up({ drainIntervalMs })`): a packet's
 * record reaches the export file, and is on its way to the control plane, within about this
 * long (the agent's default, 1 s, made every such wait ten times longer).
 */
export const LAB_DRAIN_MS = 100;

/**
 * How long a test waits, once a count it expects is reached, for anything more to arrive
 * (which would make the count wrong): two drains (one may have been under way when the count
 * was read) and 300 ms for the export file's write or the stream to the control plane.
 */
export const NOTHING_MORE_MS = 2 * LAB_DRAIN_MS + 300;

/** Polls until `done` holds or `timeoutMs` passes; returns the last value either way. */
export async function waitFor<T>(read: () => T, done: (v: T) => boolean, timeoutMs: number, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = read();
  while (!done(v) && Date.now() < deadline) {
    await sleep(everyMs);
    v = read();
  }
  return v;
}
