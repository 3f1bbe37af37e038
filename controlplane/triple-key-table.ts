// A hash table from three unsigned 32-bit numbers to a non-negative integer, in typed
// arrays: ingest's per-row caches (attribution by address ids and service, flow-map edge
// by identity serials and port, the enricher's IPv4 entries by address) look up one row in
// one probe, with no Map per level and no object per entry for the garbage collector to
// trace.

const EMPTY = 0;
/** Words per slot: the three keys, then value + 1 (EMPTY: a free slot). */
const SLOT = 4;

export class TripleKeyTable {
  // Keys and value side by side in one array: a probe reads one 16-byte slot, one cache
  // line, where separate key and value arrays cost two misses per lookup in a large table.
  private slots: Uint32Array;
  private mask: number;
  private count = 0;

  constructor(initialSlots = 1024) {
    let slots = 16;
    while (slots < initialSlots) slots *= 2;
    this.slots = new Uint32Array(slots * SLOT);
    this.mask = slots - 1;
  }

  get size(): number { return this.count; }

  /** The value stored under (a, b, c), or -1. */
  get(a: number, b: number, c: number): number {
    const slots = this.slots, mask = this.mask;
    for (let slot = hashTriple(a, b, c) & mask; ; slot = (slot + 1) & mask) {
      const k = slot * SLOT;
      const v = slots[k + 3]!;
      if (v === EMPTY) return -1;
      if (slots[k] === a && slots[k + 1] === b && slots[k + 2] === c) return v - 1;
    }
  }

  /** Stores `value` (an integer 0 ≤ value < 2^32 - 1) under (a, b, c), replacing any. */
  set(a: number, b: number, c: number, value: number): void {
    if (2 * (this.count + 1) > this.mask + 1) this.grow();
    const slots = this.slots, mask = this.mask;
    for (let slot = hashTriple(a, b, c) & mask; ; slot = (slot + 1) & mask) {
      const k = slot * SLOT;
      if (slots[k + 3] === EMPTY) {
        slots[k] = a; slots[k + 1] = b; slots[k + 2] = c;
        slots[k + 3] = value + 1;
        this.count++;
        return;
      }
      if (slots[k] === a && slots[k + 1] === b && slots[k + 2] === c) { slots[k + 3] = value + 1; return; }
    }
  }

  /** Forgets the entry under (a, b, c); whether there was one. */
  delete(a: number, b: number, c: number): boolean {
    const slots = this.slots, mask = this.mask;
    let hole = hashTriple(a, b, c) & mask;
    for (; ; hole = (hole + 1) & mask) {
      const k = hole * SLOT;
      if (slots[k + 3] === EMPTY) return false;
      if (slots[k] === a && slots[k + 1] === b && slots[k + 2] === c) break;
    }
    // Backward shift instead of a tombstone: every entry after the hole in its probe run
    // that may sit in the hole (its home is not between the hole and itself) moves there,
    // so that get() can keep stopping at the first free slot.
    for (let slot = (hole + 1) & mask; ; slot = (slot + 1) & mask) {
      const k = slot * SLOT;
      if (slots[k + 3] === EMPTY) break;
      const home = hashTriple(slots[k]!, slots[k + 1]!, slots[k + 2]!) & mask;
      if (((slot - home) & mask) >= ((slot - hole) & mask)) {
        slots.copyWithin(hole * SLOT, k, k + SLOT);
        hole = slot;
      }
    }
    slots.fill(EMPTY, hole * SLOT, hole * SLOT + SLOT);
    this.count--;
    return true;
  }

  /** Forgets every entry (keeps the room it grew to). */
  clear(): void {
    if (this.count === 0) return; // cheap when called again before anything was added
    this.slots.fill(EMPTY);
    this.count = 0;
  }

  private grow(): void {
    const old = this.slots;
    const slots = (this.mask + 1) * 2;
    this.slots = new Uint32Array(slots * SLOT);
    this.mask = slots - 1;
    this.count = 0;
    for (let k = 0; k < old.length; k += SLOT) {
      const v = old[k + 3]!;
      if (v !== EMPTY) this.set(old[k]!, old[k + 1]!, old[k + 2]!, v - 1);
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
