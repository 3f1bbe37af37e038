// The flow map's bucket lists (controlplane/store/bucket-lists.ts) against plain sorted
// arrays over the same operations: every list whole and in order after late inserts,
// expiry, clears and folds into a coarser list, freed slots reused (seeded).
import { describe, expect, it } from "vitest";
import {
  B_AUDIT_COUNTED, B_AUDIT_OTHER, B_BUCKET, B_BYTES, B_DROP_COUNTED, B_DROP_OTHER, B_FIRST_MS, B_LAST_MS, B_PACKETS, BucketLists,
} from "../controlplane/store/bucket-lists.js";
import { seededRandom } from "./harness/seeded-random.js";

interface Bucket { bucket: number; packets: number; bytes: number; drop: number; audit: number; firstMs: number; lastMs: number }

function read(lists: BucketLists, list: number): Bucket[] {
  const out: Bucket[] = [];
  for (let k = lists.first(list); k !== -1; k = lists.next(k)) {
    out.push({
      bucket: lists.get(k, B_BUCKET), packets: lists.get(k, B_PACKETS), bytes: lists.get(k, B_BYTES),
      drop: lists.get(k, B_DROP_COUNTED), audit: lists.get(k, B_AUDIT_OTHER), firstMs: lists.get(k, B_FIRST_MS), lastMs: lists.get(k, B_LAST_MS),
    });
  }
  return out;
}

describe("BucketLists", () => {
  it("holds each list like a sorted array over 20,000 random adds (late ones too), expiries and clears", () => {
    const rand = seededRandom(5);
    const LISTS = 40;
    const lists = new BucketLists(4, 4); // both grow many times
    const reference: Bucket[][] = Array.from({ length: LISTS }, () => []);
    let now = 100;
    for (let step = 0; step < 20_000; step++) {
      const list = Math.floor(rand() * LISTS);
      const roll = rand();
      if (roll < 0.8) {
        // Mostly the newest bucket or the next; a fifth of them late, into the middle or before the oldest.
        const bucket = rand() < 0.8 ? now - Math.floor(rand() * 2) : now - Math.floor(rand() * 30);
        const packets = Math.floor(rand() * 10), bytes = packets * 100, drop = rand() < 0.3 ? packets : 0, audit = rand() < 0.2 ? packets : 0;
        const lastMs = bucket * 1000 + Math.floor(rand() * 1000), firstMs = lastMs - Math.floor(rand() * 5000);
        lists.add(list, bucket, packets, bytes, B_DROP_COUNTED, drop, B_AUDIT_OTHER, audit, firstMs, lastMs);
        const ref = reference[list]!;
        let i = ref.findIndex((b) => b.bucket >= bucket);
        if (i === -1) i = ref.length;
        if (ref[i]?.bucket !== bucket) ref.splice(i, 0, { bucket, packets: 0, bytes: 0, drop: 0, audit: 0, firstMs, lastMs });
        const b = ref[i]!;
        b.packets += packets; b.bytes += bytes; b.drop += drop; b.audit += audit;
        b.firstMs = Math.min(b.firstMs, firstMs); b.lastMs = Math.max(b.lastMs, lastMs);
      } else if (roll < 0.95) {
        const first = now - Math.floor(rand() * 40);
        reference[list] = reference[list]!.filter((b) => b.bucket >= first);
        expect(lists.expire(list, first)).toBe(reference[list]!.length > 0);
      } else if (roll < 0.96) {
        lists.clear(list);
        reference[list] = [];
      } else {
        now++;
      }
      if (step % 500 === 0) for (let l = 0; l < LISTS; l++) expect(read(lists, l)).toEqual(reference[l]);
      expect(lists.size).toBe(reference.reduce((n, r) => n + r.length, 0));
    }
    for (let l = 0; l < LISTS; l++) expect(read(lists, l)).toEqual(reference[l]);
    expect(read(lists, 10_000)).toEqual([]); // a list never used
  });

  it("folds the buckets before a given one into a coarser list: every field moved into its coarse bucket, in order, the slots freed", () => {
    const rand = seededRandom(11);
    const FINE = 10, PER = 12; // lists 0-9 fold into lists 10-19, 12 fine buckets a coarse one
    const lists = new BucketLists(4, 4);
    const FIELDS = [B_PACKETS, B_BYTES, B_DROP_COUNTED, B_AUDIT_COUNTED, B_DROP_OTHER, B_AUDIT_OTHER] as const;
    type Full = { bucket: number; fields: number[]; firstMs: number; lastMs: number };
    const reference: Full[][] = Array.from({ length: 2 * FINE }, () => []);
    const readFull = (list: number): Full[] => {
      const out: Full[] = [];
      for (let k = lists.first(list); k !== -1; k = lists.next(k)) {
        out.push({ bucket: lists.get(k, B_BUCKET), fields: FIELDS.map((f) => lists.get(k, f)), firstMs: lists.get(k, B_FIRST_MS), lastMs: lists.get(k, B_LAST_MS) });
      }
      return out;
    };
    const into = (ref: Full[], bucket: number, fields: number[], firstMs: number, lastMs: number) => {
      let i = ref.findIndex((b) => b.bucket >= bucket);
      if (i === -1) i = ref.length;
      if (ref[i]?.bucket !== bucket) ref.splice(i, 0, { bucket, fields: FIELDS.map(() => 0), firstMs, lastMs });
      const b = ref[i]!;
      fields.forEach((v, f) => { b.fields[f]! += v; });
      b.firstMs = Math.min(b.firstMs, firstMs);
      b.lastMs = Math.max(b.lastMs, lastMs);
    };
    let now = 1000;
    const folded = new Array<number>(FINE).fill(0); // per fine list: buckets below this were folded
    for (let step = 0; step < 20_000; step++) {
      const list = Math.floor(rand() * FINE);
      const roll = rand();
      if (roll < 0.85) {
        // A record into a fine bucket not folded yet, or (older) straight into the coarse list.
        const late = rand() < 0.1;
        const fine = late ? folded[list]! - 1 - Math.floor(rand() * 30) : Math.max(folded[list]!, now - Math.floor(rand() * 4));
        const packets = Math.floor(rand() * 10), drop = rand() < 0.3 ? packets : 0, audit = rand() < 0.2 ? packets : 0;
        const counted = rand() < 0.5;
        const lastMs = fine * 1000 + Math.floor(rand() * 1000), firstMs = lastMs - Math.floor(rand() * 5000);
        const [target, bucket] = late ? [FINE + list, Math.floor(fine / PER)] : [list, fine];
        lists.add(target, bucket, packets, packets * 100, counted ? B_DROP_COUNTED : B_DROP_OTHER, drop, counted ? B_AUDIT_COUNTED : B_AUDIT_OTHER, audit, firstMs, lastMs);
        into(reference[target]!, bucket, [packets, packets * 100, counted ? drop : 0, counted ? audit : 0, counted ? 0 : drop, counted ? 0 : audit], firstMs, lastMs);
      } else if (roll < 0.97) {
        const first = Math.max(folded[list]!, now - Math.floor(rand() * 8));
        folded[list] = first;
        const moving = reference[list]!.filter((b) => b.bucket < first);
        reference[list] = reference[list]!.filter((b) => b.bucket >= first);
        for (const b of moving) into(reference[FINE + list]!, Math.floor(b.bucket / PER), b.fields, b.firstMs, b.lastMs);
        expect(lists.fold(list, first, FINE + list, PER)).toBe(reference[list]!.length > 0);
      } else {
        now++;
      }
      if (step % 500 === 0) for (let l = 0; l < 2 * FINE; l++) expect(readFull(l)).toEqual(reference[l]);
      expect(lists.size).toBe(reference.reduce((n, r) => n + r.length, 0));
    }
    for (let l = 0; l < 2 * FINE; l++) expect(readFull(l)).toEqual(reference[l]);
    expect(lists.fold(10_000, now, 0, PER)).toBe(false); // a list never used
  });

  it("holds 200,000 buckets across its pages (65,536 a page), each list whole after expiring half and adding again", () => {
    const lists = new BucketLists();
    const LISTS = 1000, PER = 200;
    // Lists interleaved, so that each list's buckets lie in every page.
    for (let b = 0; b < PER; b++) for (let l = 0; l < LISTS; l++) lists.add(l, b, l + b, 1, B_DROP_COUNTED, 0, B_AUDIT_OTHER, 0, b, b);
    expect(lists.size).toBe(LISTS * PER);
    expect(lists.bytes).toBeGreaterThan(3 * 65_536 * 80);
    for (let l = 0; l < LISTS; l += 3) expect(read(lists, l).map((b) => b.packets)).toEqual(Array.from({ length: PER }, (_, b) => l + b));
    for (let l = 0; l < LISTS; l++) lists.expire(l, PER / 2);
    for (let b = PER; b < PER + PER / 2; b++) for (let l = 0; l < LISTS; l++) lists.add(l, b, l + b, 1, B_DROP_COUNTED, 0, B_AUDIT_OTHER, 0, b, b);
    expect(lists.size).toBe(LISTS * PER);
    for (let l = 0; l < LISTS; l += 3) expect(read(lists, l).map((b) => b.packets)).toEqual(Array.from({ length: PER }, (_, b) => l + b + PER / 2));
  });

  it("reuses freed slots: filling, emptying and filling again takes no more room", () => {
    const lists = new BucketLists(4, 4);
    const fill = () => { for (let l = 0; l < 100; l++) for (let b = 0; b < 10; b++) lists.add(l, b, 1, 1, B_DROP_COUNTED, 0, B_AUDIT_OTHER, 0, b, b); };
    fill();
    const bytes = lists.bytes;
    for (let l = 0; l < 100; l++) expect(lists.expire(l, 10)).toBe(false);
    expect(lists.size).toBe(0);
    fill();
    expect(lists.size).toBe(1000);
    expect(lists.bytes).toBe(bytes);
  });
});
