// Pure: the time the page shows. A live window (streamed), a past window ending now, or a
// from/to range (both fetched once from the durable history), as URL parameters (a link
// reproduces the view) and from the picker's inputs, with the reason when a range is bad.

/** Windows the live map streams (controlplane/ui/params.ts WINDOWS). */
export const LIVE_WINDOWS = ["1m", "5m", "1h"] as const;
/** Longer windows, built from the stored history. */
export const HISTORY_WINDOWS = ["6h", "24h", "7d"] as const;
/** The most a map covers (config/wire.ts MAX_STORED_MAP_WINDOW_MS). */
const MAX_SPAN_MS = 366 * 86_400_000;
/** A "to" this far past the browser's clock still counts as now. */
const FUTURE_SLACK_MS = 60_000;

export type TimeView =
  | { kind: "live"; window: string }
  | { kind: "history"; window: string }
  | { kind: "range"; from: number; to: number };

export const DEFAULT_VIEW: TimeView = { kind: "live", window: "5m" };

export function isLive(view: TimeView): boolean {
  return view.kind === "live";
}

/** The API's (and the page URL's) parameters for a view. */
export function viewParams(view: TimeView): [string, string][] {
  if (view.kind === "range") return [["from", new Date(view.from).toISOString()], ["to", new Date(view.to).toISOString()]];
  return [["window", view.window]];
}

/** The window select's value for a view ("range" for from/to). */
export function selectValue(view: TimeView): string {
  return view.kind === "range" ? "range" : view.window;
}

/** A view from the window select's value; undefined for "range" (the inputs say which). */
export function viewOfSelect(value: string): TimeView | undefined {
  if ((LIVE_WINDOWS as readonly string[]).includes(value)) return { kind: "live", window: value };
  if ((HISTORY_WINDOWS as readonly string[]).includes(value)) return { kind: "history", window: value };
  return undefined;
}

function instant(name: string, text: string): number {
  const ms = /^[0-9]{1,15}$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms)) throw new Error(`${name} "${text}" is not a date and time`);
  return ms;
}

/** Throws the reason a range is bad: from not before to, to in the future, longer than 366 days. */
export function checkRange(from: number, to: number, nowMs: number): void {
  if (from >= to) throw new Error(`From (${stamp(from)}) is not before To (${stamp(to)})`);
  if (to > nowMs + FUTURE_SLACK_MS) throw new Error(`To (${stamp(to)}) is in the future`);
  if (to - from > MAX_SPAN_MS) throw new Error(`the range ${stamp(from)} → ${stamp(to)} is longer than 366 days, the most a map covers`);
}

/**
 * The view a page URL asks for: `window=` (live or history), or `from=&to=` (RFC 3339 or
 * Unix ms). A bad one gives the default view and the reason.
 */
export function viewFromUrl(params: URLSearchParams, nowMs: number): { view: TimeView; problem?: string } {
  const from = params.get("from"), to = params.get("to"), window = params.get("window");
  try {
    if (from !== null || to !== null) {
      if (from === null || to === null) throw new Error(`the link gives ${from === null ? "to" : "from"} without ${from === null ? "from" : "to"}: a range needs both`);
      const view: TimeView = { kind: "range", from: instant("from", from), to: instant("to", to) };
      checkRange(view.from, view.to, nowMs);
      return { view };
    }
    if (window === null) return { view: DEFAULT_VIEW };
    const view = viewOfSelect(window);
    if (view === undefined) throw new Error(`window "${window}" is not one of ${[...LIVE_WINDOWS, ...HISTORY_WINDOWS].join(", ")}`);
    return { view };
  } catch (err) {
    return { view: DEFAULT_VIEW, problem: `${(err as Error).message}; showing the last 5 minutes live` };
  }
}

/** The picker's from/to (datetime-local values, the browser's local time) as a range view, or the reason it is bad. */
export function rangeOfInputs(fromText: string, toText: string, nowMs: number): TimeView {
  if (fromText === "") throw new Error("From: enter a date and time");
  if (toText === "") throw new Error("To: enter a date and time");
  // A datetime-local value has no zone: Date reads it as local time, as the user entered it.
  const from = new Date(fromText).getTime(), to = new Date(toText).getTime();
  if (!Number.isFinite(from)) throw new Error(`From "${fromText}" is not a date and time`);
  if (!Number.isFinite(to)) throw new Error(`To "${toText}" is not a date and time`);
  checkRange(from, to, nowMs);
  return { kind: "range", from, to };
}

/** A datetime-local value (local time, to the second) for an instant. */
export function localInputValue(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

/** "last 5m (live)", "last 24h", "2026-12-02T10:00:00Z → 2026-12-02T11:00:00Z". */
export function describeView(view: TimeView): string {
  if (view.kind === "live") return `last ${view.window}`;
  if (view.kind === "history") return `last ${view.window} (history)`;
  return `${stamp(view.from)} → ${stamp(view.to)}`;
}
