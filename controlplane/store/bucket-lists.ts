// The flow map's time buckets, every edge's in one typed array: a list per edge and tier,
// oldest bucket first, linked through the slots. A number[] per tier cost each edge two
// array objects and their elements (with the room push reserves), ~480 bytes an edge at 1M
// stored, and gave the collector ~200k arrays to trace; here a bucket is 80 bytes and the
// only objects are three typed arrays.

/** Fields of a bucket; the first nine are what an edge's window sums. */
export const B_BUCKET = 0, B_PACKETS = 1, B_BYTES = 2, B_DROP_COUNTED = 3, B_AUDIT_COUNTED = 4,
  B_DROP_OTHER = 5, B_AUDIT_OTHER = 6, B_FIRST_MS = 7, B_LAST_MS = 8;
/** The next (newer) bucket's slot in the same list; -1: none. On the free list: the next free slot. */
const B_NEXT = 9;
const STRIDE = 10;
const NONE = -1;

export class BucketLists {
  /** STRIDE doubles per slot: the fields above. */
  private data: Float64Array;
  /** Per list: the slot of its oldest and of its newest bucket (NONE: empty). */
  private heads: Int32Array;
  private tails: Int32Array;
  /** Slots ever handed out: those from here up are free and on no list. */
  private used = 0;
  /** Freed slots, linked through B_NEXT. */
  private free = NONE;
  /** Buckets held. */
  size = 0;

  constructor(lists = 64, slots = 1024) {
    this.data = new Float64Array(slots * STRIDE);
    this.heads = new Int32Array(lists).fill(NONE);
    this.tails = new Int32Array(lists).fill(NONE);
  }

  /** Bytes of the typed arrays, for the memory report. */
  get bytes(): number { return this.data.byteLength + this.heads.byteLength + this.tails.byteLength; }

  /**
   * Adds to the bucket numbered `bucket` of list `list`, making it (in order) when absent:
   * packets and bytes add, `drop` and `audit` add to the fields `dropField` and `auditField`,
   * first and last times widen to the record's.
   */
  add(list: number, bucket: number, packets: number, bytes: number,
    dropField: number, drop: number, auditField: number, audit: number, firstMs: number, lastMs: number): void {
    if (list >= this.heads.length) this.growLists(list + 1);
    const tail = this.tails[list]!;
    let slot: number;
    if (tail !== NONE && this.data[tail * STRIDE + B_BUCKET] === bucket) slot = tail;
    else if (tail === NONE || this.data[tail * STRIDE + B_BUCKET]! < bucket) slot = this.append(list, bucket, firstMs, lastMs);
    else slot = this.insertLate(list, bucket, firstMs, lastMs);
    const d = this.data, k = slot * STRIDE;
    d[k + B_PACKETS]! += packets;
    d[k + B_BYTES]! += bytes;
    d[k + dropField]! += drop;
    d[k + auditField]! += audit;
    if (firstMs < d[k + B_FIRST_MS]!) d[k + B_FIRST_MS] = firstMs;
    if (lastMs > d[k + B_LAST_MS]!) d[k + B_LAST_MS] = lastMs;
  }

  /** Drops the buckets of `list` numbered below `firstBucket`; returns whether any remain. */
  expire(list: number, firstBucket: number): boolean {
    if (list >= this.heads.length) return false;
    const d = this.data;
    let slot = this.heads[list]!;
    while (slot !== NONE && d[slot * STRIDE + B_BUCKET]! < firstBucket) {
      const next = d[slot * STRIDE + B_NEXT]!;
      this.release(slot);
      slot = next;
    }
    this.heads[list] = slot;
    if (slot === NONE) this.tails[list] = NONE;
    return slot !== NONE;
  }

  /** Empties `list`. */
  clear(list: number): void {
    this.expire(list, Infinity);
  }

  /** The slot of the oldest bucket of `list`; -1 when it is empty. */
  first(list: number): number {
    return list < this.heads.length ? this.heads[list]! : NONE;
  }

  /** The slot of the bucket after `slot` in its list; -1 after the newest. */
  next(slot: number): number {
    return this.data[slot * STRIDE + B_NEXT]!;
  }

  /** A field (B_BUCKET ... B_LAST_MS) of the bucket in `slot`. */
  get(slot: number, field: number): number {
    return this.data[slot * STRIDE + field]!;
  }

  /** A new newest bucket for `list`. */
  private append(list: number, bucket: number, firstMs: number, lastMs: number): number {
    const slot = this.take(bucket, firstMs, lastMs);
    const tail = this.tails[list]!;
    if (tail === NONE) this.heads[list] = slot; else this.data[tail * STRIDE + B_NEXT] = slot;
    this.tails[list] = slot;
    return slot;
  }

  /** The bucket for a record older than the list's newest (a late record: rare), found or made in order. */
  private insertLate(list: number, bucket: number, firstMs: number, lastMs: number): number {
    const d = this.data;
    let before = NONE;
    let slot = this.heads[list]!;
    while (slot !== NONE && d[slot * STRIDE + B_BUCKET]! < bucket) { before = slot; slot = d[slot * STRIDE + B_NEXT]!; }
    if (slot !== NONE && d[slot * STRIDE + B_BUCKET] === bucket) return slot;
    const fresh = this.take(bucket, firstMs, lastMs);
    this.data[fresh * STRIDE + B_NEXT] = slot; // `take` may have grown the data: index this.data, not d
    if (before === NONE) this.heads[list] = fresh; else this.data[before * STRIDE + B_NEXT] = fresh;
    return fresh;
  }

  /** A free slot holding an empty bucket numbered `bucket`, linked to nothing. */
  private take(bucket: number, firstMs: number, lastMs: number): number {
    let slot = this.free;
    if (slot !== NONE) this.free = this.data[slot * STRIDE + B_NEXT]!;
    else {
      if (this.used * STRIDE === this.data.length) {
        const data = new Float64Array(this.data.length * 2);
        data.set(this.data);
        this.data = data;
      }
      slot = this.used++;
    }
    const d = this.data, k = slot * STRIDE;
    d.fill(0, k, k + STRIDE);
    d[k + B_BUCKET] = bucket;
    d[k + B_FIRST_MS] = firstMs;
    d[k + B_LAST_MS] = lastMs;
    d[k + B_NEXT] = NONE;
    this.size++;
    return slot;
  }

  private release(slot: number): void {
    this.data[slot * STRIDE + B_NEXT] = this.free;
    this.free = slot;
    this.size--;
  }

  private growLists(lists: number): void {
    let n = this.heads.length;
    while (n < lists) n *= 2;
    const heads = new Int32Array(n).fill(NONE), tails = new Int32Array(n).fill(NONE);
    heads.set(this.heads);
    tails.set(this.tails);
    this.heads = heads;
    this.tails = tails;
  }
}
