// A hash table from three unsigned 32-bit numbers to a non-negative integer, in typed
// arrays: ingest's per-row caches (attribution by address ids and service, flow-map edge
// by identity serials and port) look up one row in one probe, with no Map per level and
// no object per entry for the garbage collector to trace.

const EMPTY = 0;

export class TripleKeyTable {
  private keys: Uint32Array;
  /** value + 1 per slot; EMPTY: a free slot. */
  private values: Uint32Array;
  private mask: number;
  private count = 0;

  constructor(initialSlots = 1024) {
    let slots = 16;
    while (slots < initialSlots) slots *= 2;
    this.keys = new Uint32Array(slots * 3);
    this.values = new Uint32Array(slots);
    this.mask = slots - 1;
  }

  get size(): number { return this.count; }

  /** The value stored under (a, b, c), or -1. */
  get(a: number, b: number, c: number): number {
    const keys = this.keys, values = this.values, mask = this.mask;
    for (let slot = hashTriple(a, b, c) & mask; ; slot = (slot + 1) & mask) {
      const v = values[slot]!;
      if (v === EMPTY) return -1;
      const k = slot * 3;
      if (keys[k] === a && keys[k + 1] === b && keys[k + 2] === c) return v - 1;
    }
  }

  /** Stores `value` (an integer 0 ≤ value < 2^32 - 1) under (a, b, c), replacing any. */
  set(a: number, b: number, c: number, value: number): void {
    if (2 * (this.count + 1) > this.values.length) this.grow();
    const keys = this.keys, values = this.values, mask = this.mask;
    for (let slot = hashTriple(a, b, c) & mask; ; slot = (slot + 1) & mask) {
      const k = slot * 3;
      if (values[slot] === EMPTY) {
        keys[k] = a; keys[k + 1] = b; keys[k + 2] = c;
        values[slot] = value + 1;
        this.count++;
        return;
      }
      if (keys[k] === a && keys[k + 1] === b && keys[k + 2] === c) { values[slot] = value + 1; return; }
    }
  }

  /** Forgets every entry (keeps the room it grew to). */
  clear(): void {
    if (this.count === 0) return; // cheap when called again before anything was added
    this.values.fill(EMPTY);
    this.count = 0;
  }

  private grow(): void {
    const oldKeys = this.keys, oldValues = this.values;
    const slots = oldValues.length * 2;
    this.keys = new Uint32Array(slots * 3);
    this.values = new Uint32Array(slots);
    this.mask = slots - 1;
    this.count = 0;
    for (let slot = 0; slot < oldValues.length; slot++) {
      const v = oldValues[slot]!;
      if (v !== EMPTY) this.set(oldKeys[slot * 3]!, oldKeys[slot * 3 + 1]!, oldKeys[slot * 3 + 2]!, v - 1);
    }
  }
}

/**
 * Mixes three 32-bit words (murmur3's finalizer over a running FNV-style combination).
 * Shared with policy/tuple-table.ts, whose own layout (tuple index per slot, keys per
 * tuple) measured faster for the replays than keying its tuples through this table.
 */
export function hashTriple(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b);
  h = Math.imul(h ^ b ^ (h >>> 15), 0xc2b2ae35);
  h = Math.imul(h ^ c ^ (h >>> 13), 0x85ebca6b);
  return h ^ (h >>> 16); // an int32: callers mask it
}
