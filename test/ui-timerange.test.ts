// ui/src/timerange.ts, pure: the page's time view from its URL and from the picker's inputs,
// back to URL parameters, and the reason a range is refused.
//   npx vitest run test/ui-timerange.test.ts
import { describe, expect, it } from "vitest";
import { checkRange, describeView, localInputValue, rangeOfInputs, viewFromUrl, viewOfSelect, viewParams } from "../ui/src/timerange.js";

const NOW = Date.UTC(2026, 11, 2, 12, 0, 0);
const HOUR = 3_600_000;

describe("the UI's time view", () => {
  it("reads live and past windows and from/to ranges from the URL, and writes the same parameters back", () => {
    expect(viewFromUrl(new URLSearchParams("window=1h"), NOW)).toEqual({ view: { kind: "live", window: "1h" } });
    expect(viewFromUrl(new URLSearchParams("window=7d"), NOW)).toEqual({ view: { kind: "history", window: "7d" } });
    expect(viewFromUrl(new URLSearchParams(""), NOW)).toEqual({ view: { kind: "live", window: "5m" } });
    const q = new URLSearchParams("from=2026-12-02T09:00:00.000Z&to=2026-12-02T10:30:00.000Z");
    const { view } = viewFromUrl(q, NOW);
    expect(view).toEqual({ kind: "range", from: NOW - 3 * HOUR, to: NOW - 1.5 * HOUR });
    expect(viewParams(view)).toEqual([...q]);
    expect(viewFromUrl(new URLSearchParams(`from=${NOW - HOUR}&to=${NOW}`), NOW).view).toEqual({ kind: "range", from: NOW - HOUR, to: NOW });
    expect(describeView(view)).toBe("2026-12-02T09:00:00Z → 2026-12-02T10:30:00Z");
    expect(viewOfSelect("range")).toBeUndefined();
  });

  it("a bad link gives the live default and says what was wrong", () => {
    const problem = (qs: string) => viewFromUrl(new URLSearchParams(qs), NOW).problem;
    expect(problem("window=2m")).toBe('window "2m" is not one of 1m, 5m, 1h, 6h, 24h, 7d; showing the last 5 minutes live');
    expect(problem("to=2026-12-02T10:00:00Z")).toBe("the link gives to without from: a range needs both; showing the last 5 minutes live");
    expect(problem("from=yesterday&to=2026-12-02T10:00:00Z")).toBe('from "yesterday" is not a date and time; showing the last 5 minutes live');
    expect(problem("from=2026-12-02T10:00:00Z&to=2026-12-02T09:00:00Z"))
      .toBe("From (2026-12-02T10:00:00Z) is not before To (2026-12-02T09:00:00Z); showing the last 5 minutes live");
    expect(viewFromUrl(new URLSearchParams("window=2m"), NOW).view).toEqual({ kind: "live", window: "5m" });
  });

  it("takes the picker's local date-times, and refuses an empty, reversed, future or over-long range", () => {
    const from = localInputValue(NOW - 2 * HOUR), to = localInputValue(NOW - HOUR);
    expect(rangeOfInputs(from, to, NOW)).toEqual({ kind: "range", from: NOW - 2 * HOUR, to: NOW - HOUR });
    expect(() => rangeOfInputs("", to, NOW)).toThrow("From: enter a date and time");
    expect(() => rangeOfInputs(from, "", NOW)).toThrow("To: enter a date and time");
    expect(() => rangeOfInputs(to, from, NOW)).toThrow(/^From \(\S+\) is not before To \(\S+\)$/);
    expect(() => checkRange(NOW - HOUR, NOW + 2 * 60_000, NOW)).toThrow("To (2026-12-02T12:02:00Z) is in the future");
    expect(() => checkRange(NOW - 367 * 24 * HOUR, NOW, NOW)).toThrow(/is longer than 366 days, the most a map covers$/);
  });
});
