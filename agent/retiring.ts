// The datapath an earlier agent pinned, while a new agent with a changed map layout
// prepares its own: its programs keep enforcing on their own maps until the new agent
// swaps its programs into the links. Meanwhile the new agent drains the old flow maps
// (same protocol: flip flow_state[ACTIVE_MAP], wait out the old programs, drain the idle
// half); at the swap it drains both halves one last time, keeps the old counters' totals
// and copies the old connections into its own conntrack, so that nothing counted is lost
// and no established connection is judged anew.
import path from "node:path";
import { isBpfError, native, type BpfMap, type DrainResult, type PinnedMap } from "../native/index.js";
import { COUNTER } from "./records.js";
import { BH_STATE_ACTIVE_MAP, bh_flow_key, bh_flow_value } from "../native/gen/abi.js";
import type { PinDir } from "./pins.js";

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
const BPF_NOEXIST = 1;

export type CounterTotals = Record<keyof typeof COUNTER, bigint>;

export function sumCounters(lookup: (key: Buffer) => Buffer | null): CounterTotals {
  const out = {} as CounterTotals;
  for (const [name, index] of Object.entries(COUNTER) as [keyof typeof COUNTER, number][]) {
    const perCpu = lookup(u32(index));
    let sum = 0n;
    if (perCpu) for (let off = 0; off + 8 <= perCpu.length; off += 8) sum += perCpu.readBigUInt64LE(off);
    out[name] = sum;
  }
  return out;
}

export function concatDrains(parts: readonly DrainResult[]): DrainResult {
  if (parts.length === 1 && parts[0]) return parts[0];
  return {
    keys: Buffer.concat(parts.map((p) => p.keys)),
    values: Buffer.concat(parts.map((p) => p.values)),
    count: parts.reduce((n, p) => n + p.count, 0),
  };
}

export class RetiringDatapath {
  private readonly maps = new Map<string, PinnedMap>();
  private readonly innerPin: string;
  /** Whether the old flow maps hold records this agent can decode. */
  readonly flowsReadable: boolean;

  constructor(pins: PinDir) {
    this.innerPin = path.join(pins.maps, "sync_inner");
    for (const name of pins.pinnedMaps()) {
      try {
        this.maps.set(name, native().openPinnedMap(path.join(pins.maps, name)));
      } catch (err) {
        if (!isBpfError(err) || err.code !== "ENOENT") throw err;
      }
    }
    const f0 = this.maps.get("flows_0"), f1 = this.maps.get("flows_1");
    this.flowsReadable = !!f0 && !!f1 && this.maps.has("flow_state") && this.maps.has("sync_outer")
      && [f0, f1].every((m) => m.keySize === bh_flow_key.size && m.valueSize === bh_flow_value.size);
  }

  /** Entries of the old flow maps since the last call: the same exact drain protocol as
   * Datapath.drain(), on the old maps. Empty when they cannot be decoded. */
  drain(): DrainResult {
    if (!this.flowsReadable) return { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 };
    const state = this.maps.get("flow_state")!;
    const active = state.lookup(u32(BH_STATE_ACTIVE_MAP))?.readUInt32LE(0) ? 1 : 0;
    state.update(u32(BH_STATE_ACTIVE_MAP), u32(1 - active));
    this.maps.get("sync_outer")!.synchronize(this.innerPin);
    return this.maps.get(`flows_${active}`)!.drain();
  }

  /** Waits until no old program runs any more (call after the links run the new ones). */
  synchronize(): void {
    this.maps.get("sync_outer")?.synchronize(this.innerPin);
  }

  /** Both old flow halves, whole (after synchronize(): nothing writes them any more);
   * `unreadable` counts entries left undecoded because their layout changed. */
  drainAll(): { flows: DrainResult; unreadable: number } {
    if (this.flowsReadable) {
      return { flows: concatDrains([this.maps.get("flows_0")!.drain(), this.maps.get("flows_1")!.drain()]), unreadable: 0 };
    }
    let unreadable = 0;
    for (const name of ["flows_0", "flows_1"]) unreadable += this.maps.get(name)?.dump().count ?? 0;
    return { flows: { keys: Buffer.alloc(0), values: Buffer.alloc(0), count: 0 }, unreadable };
  }

  /** The old counters' totals (zeros when the counter layout changed). */
  counters(): CounterTotals {
    const m = this.maps.get("counters");
    const ok = m && m.keySize === 4 && m.valueSize === 8;
    return sumCounters((key) => (ok ? m.lookup(key) : null));
  }

  /** Copies the old connections that `into` does not hold yet (its own entries, made by
   * the new programs, win). Only when key and value sizes are equal: a changed entry
   * layout cannot be translated here. Returns how many were copied. */
  copyConntrack(into: BpfMap): number {
    const old = this.maps.get("conntrack");
    if (!old || old.keySize !== into.keySize || old.valueSize !== into.valueSize) return 0;
    const d = old.dump();
    let copied = 0;
    for (let i = 0; i < d.count; i++) {
      try {
        into.update(d.keys.subarray(i * old.keySize, (i + 1) * old.keySize),
          d.values.subarray(i * old.valueSize, (i + 1) * old.valueSize), BPF_NOEXIST);
        copied++;
      } catch (err) {
        if (!isBpfError(err) || err.code !== "EEXIST") throw err;
      }
    }
    return copied;
  }

  close(): void {
    for (const m of this.maps.values()) m.close();
    this.maps.clear();
  }
}
