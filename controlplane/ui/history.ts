// The UI's history view: a past range (`window` longer than the live maps keep, or
// `from`/`to`) parsed at the edge, and the map and flows of that range built from the
// recorded flows (the durable store and the hot window: ControlPlane.flows), answered once
// rather than streamed. Live windows (up to MAX_LIVE_MAP_WINDOW_MS) stay with the live map.
import { durationMs, rfc3339Ms, timestampOfMs } from "../../config/time.js";
import { MAX_LIVE_MAP_WINDOW_MS, MAX_STORED_MAP_WINDOW_MS } from "../../config/wire.js";
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter, type GetFlowMapResponse } from "../../proto/gen/bulkhead/v1/observer.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";
import type { FlowPredicate } from "../store/filter.js";
import { FlowMapStore } from "../store/flowmap.js";
import { ApiError, badParameter, type Query, WINDOWS } from "./params.js";

/** Where the recorded flows of a range come from (ControlPlane satisfies it). */
export interface RecordedFlows {
  now(): number;
  /** Undefined without a durable store: then only the hot hour is kept. */
  readonly store: unknown;
  flows(q: { predicate: FlowPredicate; allow: readonly FlowFilter[]; deny: readonly FlowFilter[]; since?: Timestamp; until?: Timestamp; last: number }):
    { hot: Iterable<FlowRecord>; stored: AsyncIterable<readonly FlowRecord[]> | undefined };
}

/** A past range: [sinceMs, untilMs]; `name` is how the answer names it ("24h", or the from/to). */
export interface HistoryRange {
  name: string;
  sinceMs: number;
  untilMs: number;
}

/** A `to` this far past the control plane's clock is still "now" (clocks of browsers drift). */
const FUTURE_SLACK_MS = 60_000;

/** RFC 3339 ("2026-12-01T10:00:00Z", offset or Z required) or Unix milliseconds. */
function instantMs(name: string, text: string): number {
  const ms = /^[0-9]{1,15}$/.test(text) ? Number(text) : rfc3339Ms(text);
  if (ms === undefined) throw badParameter(name, text, "is not a time: give RFC 3339 with a zone (2026-12-01T10:00:00Z) or Unix milliseconds");
  return ms;
}

function spanText(ms: number): string {
  return ms % 86_400_000 === 0 ? `${ms / 86_400_000}d` : ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : `${Math.round(ms / 60_000)}m`;
}

/**
 * The range a map or flows request asks for: undefined for a live window (the live map's
 * 1m/5m/1h, left to Query.window()), else a history range. Refuses, naming the parameter:
 * from without to (or the reverse), from/to with window, a bad time, from not before to,
 * a span over 366 d, a range that ends in the future, and, without a durable store, anything
 * reaching before the hot hour.
 */
export function historyRange(query: Query, source: RecordedFlows): HistoryRange | undefined {
  const window = query.get("window"), from = query.get("from"), to = query.get("to");
  const now = source.now();
  const durable = source.store !== undefined;
  const reach = durable ? MAX_STORED_MAP_WINDOW_MS : MAX_LIVE_MAP_WINDOW_MS;
  const noStore = "this control plane keeps no durable history (--store memory): it reaches back 1h";
  if (from === undefined && to === undefined) {
    if (window === undefined || WINDOWS[window] !== undefined) return undefined;
    const ms = durationMs(window);
    // Shorter spans are the live windows' job (streamed); a past window reaches beyond them.
    if (ms === undefined || ms <= MAX_LIVE_MAP_WINDOW_MS) {
      throw badParameter("window", window, `is not one of ${Object.keys(WINDOWS).join(", ")} (live), nor a past window longer than 1h (6h, 24h, 7d, …; or from and to)`);
    }
    if (ms > reach) throw badParameter("window", window, durable ? "is longer than 366d, the most a map covers" : `reaches past the hot hour: ${noStore}`);
    return { name: window, sinceMs: now - ms, untilMs: now };
  }
  if (window !== undefined) throw new ApiError(400, "give either window or from and to, not both");
  if (from === undefined) throw new ApiError(400, "parameter to: given without from (a range needs both)");
  if (to === undefined) throw new ApiError(400, "parameter from: given without to (a range needs both)");
  const sinceMs = instantMs("from", from), untilMs = instantMs("to", to);
  if (sinceMs >= untilMs) throw badParameter("from", from, `is not before to (${new Date(untilMs).toISOString()})`);
  if (untilMs > now + FUTURE_SLACK_MS) throw badParameter("to", to, `is in the future (the control plane's clock says ${new Date(now).toISOString()})`);
  if (untilMs - sinceMs > MAX_STORED_MAP_WINDOW_MS) throw badParameter("from", from, `makes a range of ${spanText(untilMs - sinceMs)}, longer than 366d, the most a map covers`);
  if (!durable && sinceMs < now - MAX_LIVE_MAP_WINDOW_MS) throw badParameter("from", from, `is more than 1h ago: ${noStore}`);
  return { name: `${new Date(sinceMs).toISOString()}/${new Date(untilMs).toISOString()}`, sinceMs, untilMs };
}

/** The recorded flows of the range (store first, then the hot window), the newest `last` when given. */
export async function rangeFlows(source: RecordedFlows, range: HistoryRange, predicate: FlowPredicate, last = 0): Promise<FlowRecord[]> {
  const { hot, stored } = source.flows({ predicate, allow: [], deny: [], since: timestampOfMs(range.sinceMs), until: timestampOfMs(range.untilMs), last });
  const out: FlowRecord[] = [];
  if (stored !== undefined) for await (const chunk of stored) out.push(...chunk);
  out.push(...hot);
  return last > 0 ? out.slice(-last) : out;
}

/**
 * The flow map of exactly the records of the range (the same ones /flows lists), in one
 * FlowMapStore whose clock stands at the range's end; since/until are the range's.
 */
export async function rangeFlowMap(source: RecordedFlows, range: HistoryRange, namespace: string): Promise<GetFlowMapResponse> {
  const spanMs = range.untilMs - range.sinceMs;
  const bucketMs = Math.max(60_000, Math.ceil(spanMs / 240 / 60_000) * 60_000);
  // Two buckets of margin: the records are cut to the range already, none may fall out by bucket alignment.
  const windowMs = spanMs + 2 * bucketMs;
  const map = new FlowMapStore({ now: () => range.untilMs, fineBucketMs: bucketMs, fineWindowMs: bucketMs, coarseBucketMs: bucketMs, retentionMs: windowMs + bucketMs });
  const inNamespace: FlowPredicate = namespace === "" ? () => true
    : (r) => r.source?.namespace === namespace || r.destination?.namespace === namespace;
  const { hot, stored } = source.flows({
    predicate: inNamespace, allow: namespace === "" ? [] : [FlowFilter.fromPartial({ namespace: [namespace] })], deny: [],
    since: timestampOfMs(range.sinceMs), until: timestampOfMs(range.untilMs), last: 0,
  });
  if (stored !== undefined) for await (const chunk of stored) map.add([...chunk]);
  const batch: FlowRecord[] = [];
  for (const r of hot) {
    batch.push(r);
    if (batch.length === 4096) map.add(batch.splice(0));
  }
  map.add(batch);
  const result = map.getMap({ ...(namespace !== "" ? { namespace } : {}), windowMs });
  return { ...result, since: timestampOfMs(range.sinceMs), until: timestampOfMs(range.untilMs) };
}
