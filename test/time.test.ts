// config/time.ts, pure: Timestamps of milliseconds and back, exactly where it matters (the
// hot window's boundary compares them to the nanosecond).
//   npx vitest run test/time.test.ts
import { describe, expect, it } from "vitest";
import { compareTimestamps, msOfTimestamp, timestampOfMs } from "../config/time.js";

describe("Timestamps of milliseconds", () => {
  it("keeps a fraction of a millisecond, and carries a fraction that rounds up to a whole second into the seconds", () => {
    expect(timestampOfMs(1_700_000_000_123.5)).toEqual({ seconds: 1_700_000_000n, nanos: 123_500_000 });
    expect(timestampOfMs(-1.5)).toEqual({ seconds: -1n, nanos: 998_500_000 });
    // 0.9999999996 s rounds to 1e9 ns: the next second, not nanos 0 of this one.
    expect(timestampOfMs(41_999.9999999996)).toEqual({ seconds: 42n, nanos: 0 });
    expect(msOfTimestamp(timestampOfMs(1_234.25))).toBe(1_234.25);
    expect(msOfTimestamp(undefined)).toBeUndefined();
  });

  it("orders Timestamps exactly to the nanosecond, beyond what milliseconds as floats tell apart", () => {
    const t = { seconds: 1_700_000_000n, nanos: 123_456_789 };
    expect(compareTimestamps(t, { ...t })).toBe(0);
    expect(compareTimestamps(t, { ...t, nanos: t.nanos + 1 })).toBeLessThan(0);
    expect(compareTimestamps({ seconds: t.seconds + 1n, nanos: 0 }, t)).toBeGreaterThan(0);
    expect(msOfTimestamp(t)).toBe(msOfTimestamp({ ...t, nanos: t.nanos + 1 }));
  });
});
