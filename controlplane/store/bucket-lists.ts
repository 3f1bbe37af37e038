// The flow map's time buckets, every edge's in one typed array: a list per edge and tier,
// oldest bucket first, linked both ways through the slots. A number[] per tier cost each
// edge two array objects and their elements (with the room push reserves), ~480 bytes an
// edge at 1M stored, and gave the collector ~200k arrays to trace; here a bucket is 88
// bytes and the only objects are a few typed arrays.

/** Fields of a bucket; the first nine are what an edge's window sums. */
export const B_BUCKET = 0, B_PACKETS = 1, B_BYTES = 2, B_DROP_COUNTED = 3, B_AUDIT_COUNTED = 4,
  B_DROP_OTHER = 5, B_AUDIT_OTHER = 6, B_FIRST_MS = 7, B_LAST_MS = 8;
/** The next (newer) bucket's slot in the same list; -1: none. On the free list: the next free slot. */
const B_NEXT = 9;
/**
 * The previous (older) bucket's slot; -1: none. A late record's bucket is found from the
 * newest back: most are a bucket or two late, while a walk from the oldest crossed the
 * whole list (in bench/ingest's windows, 3.5 to 4.6 buckets for each late record).
 */
const B_PREV = 10;
const STRIDE = 11;
const NONE = -1;
/** Buckets a page holds (5.5 MiB): the room grows a page at a time, never copied, at most one page partly used. */
const PAGE_BITS = 16, PAGE_SLOTS = 1 << PAGE_BITS, PAGE_MASK = PAGE_SLOTS - 1;

export class BucketLists {
  /**
   * STRIDE doubles per slot (the fields above), in pages of PAGE_SLOTS slots: slot s is in
   * pages[s >>> PAGE_BITS]. The first page starts small and doubles up to PAGE_SLOTS (a
   * small map stays small); after that the room grows by whole pages, so a large map never
   * copies its buckets nor leaves the old copy to the collector, and never holds more than
   * one page of unused room beyond its freed slots.
   */
  private pages: Float64Array[];
  /** Per list: the slot of its oldest and of its newest bucket (NONE: empty). */
  private heads: Int32Array;
  private tails: Int32Array;
  /** Slots ever handed out: those from here up are free and on no list. */
  private used = 0;
  /** Slots the pages hold. */
  private room: number;
  /** Freed slots, linked through B_NEXT. */
  private free = NONE;
  /** Buckets held. */
  size = 0;

  constructor(lists = 64, slots = 1024) {
    this.room = Math.min(slots, PAGE_SLOTS);
    this.pages = [new Float64Array(this.room * STRIDE)];
    this.heads = new Int32Array(lists).fill(NONE);
    this.tails = new Int32Array(lists).fill(NONE);
  }

  /** Bytes of the typed arrays, for the memory report. */
  get bytes(): number {
    let bytes = this.heads.byteLength + this.tails.byteLength;
    for (const page of this.pages) bytes += page.byteLength;
    return bytes;
  }

  /**
   * Adds to the bucket numbered `bucket` of list `list`, making it (in order) when absent:
   * packets and bytes add, `drop` and `audit` add to the fields `dropField` and `auditField`,
   * first and last times widen to the record's.
   */
  add(list: number, bucket: number, packets: number, bytes: number,
    dropField: number, drop: number, auditField: number, audit: number, firstMs: number, lastMs: number): void {
    const slot = this.slotFor(list, bucket, firstMs, lastMs);
    const d = this.pages[slot >>> PAGE_BITS]!, k = (slot & PAGE_MASK) * STRIDE;
    d[k + B_PACKETS]! += packets;
    d[k + B_BYTES]! += bytes;
    d[k + dropField]! += drop;
    d[k + auditField]! += audit;
    if (firstMs < d[k + B_FIRST_MS]!) d[k + B_FIRST_MS] = firstMs;
    if (lastMs > d[k + B_LAST_MS]!) d[k + B_LAST_MS] = lastMs;
  }

  /**
   * Moves the buckets of list `from` numbered below `firstBucket` into list `to`, each added
   * to the bucket numbered floor(bucket / `per`) there (made in order when absent): every
   * field adds, first and last times widen. Returns whether any remain in `from`.
   */
  fold(from: number, firstBucket: number, to: number, per: number): boolean {
    if (from >= this.heads.length) return false;
    let slot = this.heads[from]!;
    for (let bucket: number; slot !== NONE && (bucket = this.get(slot, B_BUCKET)) < firstBucket;) {
      const into = this.slotFor(to, Math.floor(bucket / per), this.get(slot, B_FIRST_MS), this.get(slot, B_LAST_MS));
      // Pages read after slotFor(): making a bucket may have grown (replaced) the first page.
      const s = this.pages[slot >>> PAGE_BITS]!, j = (slot & PAGE_MASK) * STRIDE;
      const d = this.pages[into >>> PAGE_BITS]!, k = (into & PAGE_MASK) * STRIDE;
      for (let field = B_PACKETS; field <= B_AUDIT_OTHER; field++) d[k + field]! += s[j + field]!;
      if (s[j + B_FIRST_MS]! < d[k + B_FIRST_MS]!) d[k + B_FIRST_MS] = s[j + B_FIRST_MS]!;
      if (s[j + B_LAST_MS]! > d[k + B_LAST_MS]!) d[k + B_LAST_MS] = s[j + B_LAST_MS]!;
      const next = s[j + B_NEXT]!;
      this.release(slot);
      slot = next;
    }
    return this.cut(from, slot);
  }

  /** Drops the buckets of `list` numbered below `firstBucket`; returns whether any remain. */
  expire(list: number, firstBucket: number): boolean {
    if (list >= this.heads.length) return false;
    let slot = this.heads[list]!;
    while (slot !== NONE && this.get(slot, B_BUCKET) < firstBucket) {
      const next = this.get(slot, B_NEXT);
      this.release(slot);
      slot = next;
    }
    return this.cut(list, slot);
  }

  /** Makes `slot` (or none) the oldest bucket of `list`, the ones before it released; whether any remain. */
  private cut(list: number, slot: number): boolean {
    this.heads[list] = slot;
    if (slot === NONE) this.tails[list] = NONE;
    else this.set(slot, B_PREV, NONE);
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
    return this.get(slot, B_NEXT);
  }

  /** A field (B_BUCKET ... B_LAST_MS) of the bucket in `slot`. */
  get(slot: number, field: number): number {
    return this.pages[slot >>> PAGE_BITS]![(slot & PAGE_MASK) * STRIDE + field]!;
  }

  private set(slot: number, field: number, value: number): void {
    this.pages[slot >>> PAGE_BITS]![(slot & PAGE_MASK) * STRIDE + field] = value;
  }

  /** The slot of the bucket numbered `bucket` in `list`, made (in order, with these times) when absent. */
  private slotFor(list: number, bucket: number, firstMs: number, lastMs: number): number {
    if (list >= this.heads.length) this.growLists(list + 1);
    const tail = this.tails[list]!;
    if (tail === NONE) return this.append(list, bucket, firstMs, lastMs);
    const newest = this.get(tail, B_BUCKET);
    if (newest === bucket) return tail;
    return newest < bucket ? this.append(list, bucket, firstMs, lastMs) : this.insertLate(list, bucket, firstMs, lastMs);
  }

  /** A new newest bucket for `list`. */
  private append(list: number, bucket: number, firstMs: number, lastMs: number): number {
    const slot = this.take(bucket, firstMs, lastMs);
    const tail = this.tails[list]!;
    if (tail === NONE) this.heads[list] = slot; else this.set(tail, B_NEXT, slot);
    this.set(slot, B_PREV, tail);
    this.tails[list] = slot;
    return slot;
  }

  /** The bucket for a record older than the list's newest (a late record), found or made in order, from the newest back. */
  private insertLate(list: number, bucket: number, firstMs: number, lastMs: number): number {
    let after = NONE;
    let slot = this.tails[list]!;
    while (slot !== NONE && this.get(slot, B_BUCKET) > bucket) { after = slot; slot = this.get(slot, B_PREV); }
    if (slot !== NONE && this.get(slot, B_BUCKET) === bucket) return slot;
    // Between `slot` (older, or none) and `after` (newer: there is one, the list's newest being newer).
    const fresh = this.take(bucket, firstMs, lastMs);
    this.set(fresh, B_NEXT, after);
    this.set(fresh, B_PREV, slot);
    this.set(after, B_PREV, fresh);
    if (slot === NONE) this.heads[list] = fresh; else this.set(slot, B_NEXT, fresh);
    return fresh;
  }

  /** A free slot holding an empty bucket numbered `bucket`, linked to nothing. */
  private take(bucket: number, firstMs: number, lastMs: number): number {
    let slot = this.free;
    if (slot !== NONE) this.free = this.get(slot, B_NEXT);
    else {
      if (this.used === this.room) this.grow();
      slot = this.used++;
    }
    const d = this.pages[slot >>> PAGE_BITS]!, k = (slot & PAGE_MASK) * STRIDE;
    d.fill(0, k, k + STRIDE);
    d[k + B_BUCKET] = bucket;
    d[k + B_FIRST_MS] = firstMs;
    d[k + B_LAST_MS] = lastMs;
    d[k + B_NEXT] = NONE;
    this.size++;
    return slot;
  }

  private release(slot: number): void {
    this.set(slot, B_NEXT, this.free);
    this.free = slot;
    this.size--;
  }

  private grow(): void {
    if (this.room < PAGE_SLOTS) {
      const page = new Float64Array(Math.min(2 * this.room, PAGE_SLOTS) * STRIDE);
      page.set(this.pages[0]!);
      this.pages[0] = page;
      this.room = page.length / STRIDE;
    } else {
      this.pages.push(new Float64Array(PAGE_SLOTS * STRIDE));
      this.room += PAGE_SLOTS;
    }
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
