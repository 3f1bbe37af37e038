// The enricher's IPv4 cache table (controlplane/uint32-key-table.ts) against a Map over the
// same operations: every key found with its value, absent keys undefined, across growths
// and clears (seeded).
import { describe, expect, it } from "vitest";
import { Uint32KeyTable } from "../controlplane/uint32-key-table.js";
import { seededRandom } from "./harness/seeded-random.js";

describe("Uint32KeyTable", () => {
  it("answers like a Map over 50,000 random adds and gets, across growths and two clears, 0 and 2^32 - 1 among the keys", () => {
    const rand = seededRandom(13);
    const table = new Uint32KeyTable<string>(16);
    let reference = new Map<number, string>();
    // Keys of one /24 (they differ in their low bits only, as a subnet's addresses do), and both ends of the range.
    const key = () => {
      const roll = rand();
      return roll < 0.05 ? 0 : roll < 0.1 ? 0xffff_ffff : (0x0a00_0100 + Math.floor(rand() * 3_000)) >>> 0;
    };
    for (let step = 0; step < 50_000; step++) {
      if (step === 20_000 || step === 30_000) {
        table.clear();
        reference = new Map();
      }
      const k = key();
      if (rand() < 0.4) {
        if (!reference.has(k)) {
          table.add(k, `v${step}`);
          reference.set(k, `v${step}`);
        }
      } else {
        expect(table.get(k)).toBe(reference.get(k));
      }
      expect(table.size).toBe(reference.size);
    }
    expect(reference.size).toBeGreaterThan(1_000); // grew well past its 16 slots
    for (const [k, value] of reference) expect(table.get(k)).toBe(value);
  });
});
