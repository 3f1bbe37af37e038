// Recorded flows summed per (source end, destination end, protocol << 16 | port), for the
// replays (suggest.ts): an open-addressing hash table in typed arrays, so that a record
// costs one or two cache lines instead of the half-dozen scattered objects a Map of Maps
// touches (a million records over 100,000s of tuples is bound by memory, not by work).
// Ends and ports are small non-negative integers given by the caller. Not keyed through
// TripleKeyTable (values by slot, keys by slot): with its tuple index per slot and keys per
// tuple this table summed the what-if bench's 643,464 judged records into 59,687 tuples
// in about 1.6x less CPU (side by side, same hash); the hash is the one they share.
import { hashTriple as hash } from "../triple-key-table.js";

const EMPTY = -1;

/** Rows a batch holds before TupleTable.addBatch sums them (its arrays stay in the first-level cache). */
export const BATCH_ROWS = 256;

/**
 * Rows waiting to be summed by TupleTable.addBatch, filled by the caller: `length` rows of
 * the same arguments as add() takes.
 */
export class TupleBatch {
  readonly src = new Int32Array(BATCH_ROWS);
  readonly dst = new Int32Array(BATCH_ROWS);
  readonly port = new Int32Array(BATCH_ROWS);
  readonly packets = new Float64Array(BATCH_ROWS);
  readonly firstMs = new Float64Array(BATCH_ROWS);
  readonly lastMs = new Float64Array(BATCH_ROWS);
  /** addBatch's working space: each row's home slot, then the tuple found there. */
  readonly slot = new Int32Array(BATCH_ROWS);
  readonly tuple = new Int32Array(BATCH_ROWS);
  length = 0;

  /** Appends a row; returns whether the batch is full (the caller then sums it). */
  push(src: number, dst: number, port: number, packets: number, firstMs: number, lastMs: number): boolean {
    const i = this.length++;
    this.src[i] = src;
    this.dst[i] = dst;
    this.port[i] = port;
    this.packets[i] = packets;
    this.firstMs[i] = firstMs;
    this.lastMs[i] = lastMs;
    return this.length === BATCH_ROWS;
  }
}

export class TupleTable {
  /** Per slot: tuple index, or EMPTY. */
  private slots: Int32Array;
  /** Per tuple: its key. */
  private src: Int32Array;
  private dst: Int32Array;
  private port: Int32Array;
  /** Per tuple: sums and bounds. */
  records: Float64Array;
  packets: Float64Array;
  firstMs: Float64Array;
  lastMs: Float64Array;
  size = 0;

  constructor(capacity = 1024) {
    let slots = 16;
    while (slots < capacity * 2) slots *= 2;
    this.slots = new Int32Array(slots).fill(EMPTY);
    this.src = new Int32Array(capacity);
    this.dst = new Int32Array(capacity);
    this.port = new Int32Array(capacity);
    this.records = new Float64Array(capacity);
    this.packets = new Float64Array(capacity);
    this.firstMs = new Float64Array(capacity);
    this.lastMs = new Float64Array(capacity);
  }

  /** Adds one record to its tuple; returns the tuple's index, and whether the tuple is new (as `~index`, negative). */
  add(src: number, dst: number, port: number, packets: number, firstMs: number, lastMs: number): number {
    const mask = this.slots.length - 1;
    let slot = hash(src, dst, port) & mask;
    for (;;) {
      const t = this.slots[slot]!;
      if (t === EMPTY) break;
      if (this.src[t] === src && this.dst[t] === dst && this.port[t] === port) {
        this.records[t]! += 1;
        this.packets[t]! += packets;
        if (firstMs < this.firstMs[t]!) this.firstMs[t] = firstMs;
        if (lastMs > this.lastMs[t]!) this.lastMs[t] = lastMs;
        return t;
      }
      slot = (slot + 1) & mask;
    }
    if (this.size === this.src.length) {
      this.grow();
      return this.add(src, dst, port, packets, firstMs, lastMs);
    }
    const t = this.size++;
    this.slots[slot] = t;
    this.src[t] = src;
    this.dst[t] = dst;
    this.port[t] = port;
    this.records[t] = 1;
    this.packets[t] = packets;
    this.firstMs[t] = firstMs;
    this.lastMs[t] = lastMs;
    return ~t;
  }

  /**
   * Sums the batch's rows as add() would one by one, in order, and empties it. Its steps
   * each walk the whole batch, so that the loads of one step (a row's home slot, then its
   * tuple's key, then its sums: each a random line of tables of megabytes) are independent
   * of each other and their cache misses overlap, instead of one row's misses after another's.
   * A row whose home slot does not hold its tuple (a collision, or a new tuple) takes add().
   * Returns, per row, what add() would have returned (the tuple's index, or `~index` when
   * the row made it): the batch's own array, valid until the batch is filled again.
   */
  addBatch(b: TupleBatch): Int32Array {
    const n = b.length, mask = this.slots.length - 1;
    const bsrc = b.src, bdst = b.dst, bport = b.port, slot = b.slot, tuple = b.tuple;
    for (let i = 0; i < n; i++) slot[i] = hash(bsrc[i]!, bdst[i]!, bport[i]!) & mask;
    const slots = this.slots;
    for (let i = 0; i < n; i++) tuple[i] = slots[slot[i]!]!;
    const src = this.src, dst = this.dst, port = this.port;
    for (let i = 0; i < n; i++) {
      const t = tuple[i]!;
      if (t !== EMPTY && (src[t] !== bsrc[i] || dst[t] !== bdst[i] || port[t] !== bport[i])) tuple[i] = EMPTY;
    }
    // A tuple found above keeps its index when add() below grows the table: only the arrays move.
    for (let i = 0; i < n; i++) {
      const t = tuple[i]!;
      if (t === EMPTY) {
        tuple[i] = this.add(bsrc[i]!, bdst[i]!, bport[i]!, b.packets[i]!, b.firstMs[i]!, b.lastMs[i]!);
        continue;
      }
      this.records[t]! += 1;
      this.packets[t]! += b.packets[i]!;
      if (b.firstMs[i]! < this.firstMs[t]!) this.firstMs[t] = b.firstMs[i]!;
      if (b.lastMs[i]! > this.lastMs[t]!) this.lastMs[t] = b.lastMs[i]!;
    }
    b.length = 0;
    return tuple;
  }

  /** The tuple's index, or `~index` (negative) when it is new; sums are left as they are (a table of keys only). */
  intern(src: number, dst: number, port: number): number {
    const mask = this.slots.length - 1;
    let slot = hash(src, dst, port) & mask;
    for (;;) {
      const t = this.slots[slot]!;
      if (t === EMPTY) break;
      if (this.src[t] === src && this.dst[t] === dst && this.port[t] === port) return t;
      slot = (slot + 1) & mask;
    }
    const t = ~this.add(src, dst, port, 0, 0, 0);
    this.records[t] = 0;
    return ~t;
  }

  /**
   * Adds `records` records already summed (their packets, first and last times); returns as
   * add() does. Kept apart from add(), the per-record path, which a seventh argument slowed.
   */
  addSummed(src: number, dst: number, port: number, records: number, packets: number, firstMs: number, lastMs: number): number {
    const r = this.add(src, dst, port, packets, firstMs, lastMs);
    this.records[r < 0 ? ~r : r]! += records - 1;
    return r;
  }

  srcOf(t: number): number { return this.src[t]!; }
  dstOf(t: number): number { return this.dst[t]!; }
  portOf(t: number): number { return this.port[t]!; }
  recordsOf(t: number): number { return this.records[t]!; }
  packetsOf(t: number): number { return this.packets[t]!; }
  firstMsOf(t: number): number { return this.firstMs[t]!; }
  lastMsOf(t: number): number { return this.lastMs[t]!; }

  private grow(): void {
    const capacity = this.src.length * 2;
    const copy = <T extends Int32Array | Float64Array>(from: T, to: T): T => { to.set(from); return to; };
    this.src = copy(this.src, new Int32Array(capacity));
    this.dst = copy(this.dst, new Int32Array(capacity));
    this.port = copy(this.port, new Int32Array(capacity));
    this.records = copy(this.records, new Float64Array(capacity));
    this.packets = copy(this.packets, new Float64Array(capacity));
    this.firstMs = copy(this.firstMs, new Float64Array(capacity));
    this.lastMs = copy(this.lastMs, new Float64Array(capacity));
    this.slots = new Int32Array(capacity * 2).fill(EMPTY);
    const mask = this.slots.length - 1;
    for (let t = 0; t < this.size; t++) {
      let slot = hash(this.src[t]!, this.dst[t]!, this.port[t]!) & mask;
      while (this.slots[slot] !== EMPTY) slot = (slot + 1) & mask;
      this.slots[slot] = t;
    }
  }
}
