// Ingest's per-row cache table (controlplane/triple-key-table.ts) against a Map over the
// same operations: every key found with its last value, absent keys -1, across growths
// and clears (seeded).
import { describe, expect, it } from "vitest";
import { TripleKeyTable } from "../controlplane/triple-key-table.js";
import { seededRandom } from "./harness/seeded-random.js";

describe("TripleKeyTable", () => {
  it("answers like a Map keyed by the three numbers over 50,000 random sets, gets, growths and clears", () => {
    const rand = seededRandom(11);
    const table = new TripleKeyTable(16);
    let reference = new Map<string, number>();
    // Small ranges so that keys repeat and differ in one word only; the top of the u32 range too.
    const word = () => (rand() < 0.1 ? 0xffff_ffff - Math.floor(rand() * 4) : Math.floor(rand() * 40));
    for (let step = 0; step < 50_000; step++) {
      const a = word(), b = word(), c = word();
      const roll = rand();
      if (roll < 0.45) {
        const value = Math.floor(rand() * 1_000_000);
        table.set(a, b, c, value);
        reference.set(`${a}/${b}/${c}`, value);
      } else if (roll < 0.9995) {
        expect(table.get(a, b, c)).toBe(reference.get(`${a}/${b}/${c}`) ?? -1);
      } else {
        table.clear();
        reference = new Map();
      }
      expect(table.size).toBe(reference.size);
    }
    for (const [key, value] of reference) {
      const [a, b, c] = key.split("/").map(Number) as [number, number, number];
      expect(table.get(a, b, c)).toBe(value);
    }
  });

  it("answers like a Map over 50,000 random sets, deletes and gets in a table kept full (long probe runs)", () => {
    const rand = seededRandom(12);
    const table = new TripleKeyTable(16);
    const reference = new Map<string, number>();
    // ~300 live keys out of 1,000 possible: the table stays near its half-full limit, so
    // deletes land inside probe runs that wrap around its end, where a hole left in the
    // wrong place hides the keys behind it.
    const word = () => Math.floor(rand() * 10);
    for (let step = 0; step < 50_000; step++) {
      const a = word(), b = word(), c = word();
      const key = `${a}/${b}/${c}`;
      const roll = rand();
      if (roll < 0.3) {
        const value = Math.floor(rand() * 1_000_000);
        table.set(a, b, c, value);
        reference.set(key, value);
      } else if (roll < 0.6) {
        expect(table.delete(a, b, c)).toBe(reference.delete(key));
      } else {
        expect(table.get(a, b, c)).toBe(reference.get(key) ?? -1);
      }
      expect(table.size).toBe(reference.size);
    }
    for (let a = 0; a < 10; a++) for (let b = 0; b < 10; b++) for (let c = 0; c < 10; c++) {
      expect(table.get(a, b, c)).toBe(reference.get(`${a}/${b}/${c}`) ?? -1);
    }
  });

  it("finds nothing after a clear, and takes new keys after it", () => {
    const table = new TripleKeyTable();
    for (let i = 0; i < 5_000; i++) table.set(i, i + 1, i + 2, i);
    table.clear();
    expect(table.size).toBe(0);
    expect(table.get(7, 8, 9)).toBe(-1);
    table.set(7, 8, 9, 3);
    expect(table.get(7, 8, 9)).toBe(3);
  });
});
