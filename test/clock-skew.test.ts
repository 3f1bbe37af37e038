// controlplane/clock-skew.ts, pure: an agent's clock skew from its batches' send times.
//   npx vitest run test/clock-skew.test.ts
import { describe, expect, it } from "vitest";
import { SKEW_WINDOW_MS, SkewEstimate } from "../controlplane/clock-skew.js";
import { seededRandom } from "./harness/seeded-random.js";

describe("an agent's clock skew from its batches' send times", () => {
  it("is the largest sample of the last 30 s: a batch held up on its way does not read as a clock behind", () => {
    const skew = new SkewEstimate();
    // A clock 5 s ahead; batches 10-40 ms on their way, then one that waited 3 s behind a stall.
    expect(skew.note(5000 - 20, 0)).toBe(4980);
    expect(skew.note(5000 - 10, 100)).toBe(4990);
    expect(skew.note(5000 - 40, 200)).toBe(4990);
    expect(skew.note(5000 - 3000, 3200)).toBe(4990);
    // A clock stepped ahead by 10 s shows at once; one stepped back once the window has passed.
    expect(skew.note(15_000 - 15, 4000)).toBe(14_985);
    expect(skew.note(1000 - 15, 4000 + SKEW_WINDOW_MS)).toBe(14_985);
    expect(skew.note(1000 - 25, 4001 + SKEW_WINDOW_MS)).toBe(985);
  });

  it("follows a clock drifting back 1 ms a batch: every sample of the window stays a candidate (thousands held)", () => {
    const skew = new SkewEstimate(20_000);
    for (let k = 0; k < 10_000; k++) {
      // Sample k, taken at 10k ms, is 5000 - k; the window's oldest is the largest.
      const oldest = Math.max(0, k - 2000);
      expect(skew.note(5000 - k, 10 * k), `sample ${k}`).toBe(5000 - oldest);
    }
  });

  it("equals the largest sample taken within the window, over long seeded series (seed 11)", () => {
    const rand = seededRandom(11);
    for (let series = 0; series < 20; series++) {
      const windowMs = 100 + Math.floor(rand() * 5000);
      const skew = new SkewEstimate(windowMs);
      const samples: { at: number; value: number }[] = [];
      let now = 0, clock = Math.floor(rand() * 20_000) - 10_000;
      for (let k = 0; k < 3000; k++) {
        now += rand() < 0.1 ? Math.floor(rand() * windowMs) : Math.floor(rand() * 20);
        if (rand() < 0.01) clock = Math.floor(rand() * 20_000) - 10_000; // a step either way
        const value = clock - Math.floor(rand() < 0.05 ? rand() * 4000 : rand() * 30);
        samples.push({ at: now, value });
        const expected = Math.max(...samples.filter((s) => s.at >= now - windowMs).map((s) => s.value));
        expect(skew.note(value, now), `series ${series}, sample ${k}`).toBe(expected);
      }
    }
  });
});
