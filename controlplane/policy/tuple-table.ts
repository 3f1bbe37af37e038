// Recorded flows summed per (source end, destination end, protocol << 16 | port), for the
// replays (suggest.ts): an open-addressing hash table in typed arrays, so that a record
// costs one or two cache lines instead of the half-dozen scattered objects a Map of Maps
// touches (a million records over 100,000s of tuples is bound by memory, not by work).
// Ends and ports are small non-negative integers given by the caller.

const EMPTY = -1;
/**
 * Per tuple, one 64-byte line of doubles: its key (source, destination, port) and its sums
 * and bounds (records, packets, first and last time), so that a record touches two lines
 * (its slot and its tuple) where a column per field touched eight.
 */
const STRIDE = 8;
const SRC = 0, DST = 1, PORT = 2, RECORDS = 3, PACKETS = 4, FIRST = 5, LAST = 6;

export class TupleTable {
  /** Per slot: tuple index, or EMPTY. */
  private slots: Int32Array;
  private tuples: Float64Array;
  private capacity: number;
  size = 0;

  constructor(capacity = 1024) {
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.slots = new Int32Array(slots).fill(EMPTY);
    this.capacity = capacity;
    this.tuples = new Float64Array(capacity * STRIDE);
  }

  /** Adds one record to its tuple; returns the tuple's index, and whether the tuple is new (as `~index`, negative). */
  add(src: number, dst: number, port: number, packets: number, firstMs: number, lastMs: number): number {
    const mask = this.slots.length - 1;
    const tuples = this.tuples;
    let slot = hash(src, dst, port) & mask;
    for (;;) {
      const t = this.slots[slot]!;
      if (t === EMPTY) break;
      const k = t * STRIDE;
      if (tuples[k + SRC] === src && tuples[k + DST] === dst && tuples[k + PORT] === port) {
        tuples[k + RECORDS]! += 1;
        tuples[k + PACKETS]! += packets;
        if (firstMs < tuples[k + FIRST]!) tuples[k + FIRST] = firstMs;
        if (lastMs > tuples[k + LAST]!) tuples[k + LAST] = lastMs;
        return t;
      }
      slot = (slot + 1) & mask;
    }
    if (this.size === this.capacity) {
      this.grow();
      return this.add(src, dst, port, packets, firstMs, lastMs);
    }
    const t = this.size++;
    this.slots[slot] = t;
    const k = t * STRIDE;
    tuples[k + SRC] = src;
    tuples[k + DST] = dst;
    tuples[k + PORT] = port;
    tuples[k + RECORDS] = 1;
    tuples[k + PACKETS] = packets;
    tuples[k + FIRST] = firstMs;
    tuples[k + LAST] = lastMs;
    return ~t;
  }

  /** The tuple's index, or `~index` (negative) when it is new; sums are left as they are (a table of keys only). */
  intern(src: number, dst: number, port: number): number {
    const mask = this.slots.length - 1;
    const tuples = this.tuples;
    let slot = hash(src, dst, port) & mask;
    for (;;) {
      const t = this.slots[slot]!;
      if (t === EMPTY) break;
      const k = t * STRIDE;
      if (tuples[k + SRC] === src && tuples[k + DST] === dst && tuples[k + PORT] === port) return t;
      slot = (slot + 1) & mask;
    }
    const t = ~this.add(src, dst, port, 0, 0, 0);
    this.tuples[t * STRIDE + RECORDS] = 0;
    return ~t;
  }

  /**
   * Adds `records` records already summed (their packets, first and last times); returns as
   * add() does. Kept apart from add(), the per-record path, which a seventh argument slowed.
   */
  addSummed(src: number, dst: number, port: number, records: number, packets: number, firstMs: number, lastMs: number): number {
    const r = this.add(src, dst, port, packets, firstMs, lastMs);
    this.tuples[(r < 0 ? ~r : r) * STRIDE + RECORDS]! += records - 1;
    return r;
  }

  srcOf(t: number): number { return this.tuples[t * STRIDE + SRC]!; }
  dstOf(t: number): number { return this.tuples[t * STRIDE + DST]!; }
  portOf(t: number): number { return this.tuples[t * STRIDE + PORT]!; }
  recordsOf(t: number): number { return this.tuples[t * STRIDE + RECORDS]!; }
  packetsOf(t: number): number { return this.tuples[t * STRIDE + PACKETS]!; }
  firstMsOf(t: number): number { return this.tuples[t * STRIDE + FIRST]!; }
  lastMsOf(t: number): number { return this.tuples[t * STRIDE + LAST]!; }

  private grow(): void {
    this.capacity *= 2;
    const tuples = new Float64Array(this.capacity * STRIDE);
    tuples.set(this.tuples);
    this.tuples = tuples;
    this.slots = new Int32Array(this.capacity * 2).fill(EMPTY);
    const mask = this.slots.length - 1;
    for (let t = 0; t < this.size; t++) {
      const k = t * STRIDE;
      let slot = hash(tuples[k + SRC]!, tuples[k + DST]!, tuples[k + PORT]!) & mask;
      while (this.slots[slot] !== EMPTY) slot = (slot + 1) & mask;
      this.slots[slot] = t;
    }
  }
}

function hash(a: number, b: number, c: number): number {
  let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b, 0x85ebca77) ^ Math.imul(c, 0xc2b2ae3d);
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) ^ (h >>> 13);
}
