// Durations and times as users type them, one grammar for flags and the HTTP API alike:
// durations "30s", "5m", "1h30m", "1.5h", "7d" (units ms, s, m, h, d; summed), and times
// in RFC 3339 with a zone ("2026-12-01T10:00:00Z", "…+01:00"). Flags raise ConfigError;
// the API wraps the undefined answers in its own 400s.
import type { Timestamp } from "../proto/gen/google/protobuf/timestamp.js";
import { ConfigError } from "./flags.js";

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds of a duration; undefined when the text is not one. */
export function durationMs(text: string): number | undefined {
  const re = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/gy;
  let total = 0, consumed = 0, m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    consumed = re.lastIndex;
  }
  return consumed === text.length && text.length > 0 ? total : undefined;
}

/** Unix milliseconds of an RFC 3339 time with a zone; undefined when the text is not one. */
export function rfc3339Ms(text: string): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})$/.test(text)) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : undefined;
}

export function parseDurationMs(flag: string, raw: string): number {
  const ms = durationMs(raw);
  if (ms === undefined) throw new ConfigError(`${flag}: "${raw}" is not a duration like 30s, 5m or 1h30m`);
  return ms;
}

/** A duration back from now, or an absolute RFC 3339 time. */
export function parseSince(flag: string, raw: string, nowMs = Date.now()): Date {
  if (/^[0-9]{4}-/.test(raw)) {
    const ms = rfc3339Ms(raw);
    if (ms === undefined) throw new ConfigError(`${flag}: "${raw}" is not an RFC 3339 time with a zone, like 2026-12-01T10:00:00Z`);
    return new Date(ms);
  }
  return new Date(nowMs - parseDurationMs(flag, raw));
}

/** A protobuf Timestamp of Unix milliseconds (a fraction of a millisecond kept, to the nearest nanosecond). */
export function timestampOfMs(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.round((ms - seconds * 1000) * 1e6);
  // A fraction that rounds up to a whole second carries into the seconds.
  return nanos >= 1_000_000_000 ? { seconds: BigInt(seconds + 1), nanos: 0 } : { seconds: BigInt(seconds), nanos };
}

/** Unix milliseconds of a protobuf Timestamp (its fraction kept); undefined for none. */
export function msOfTimestamp(t: Timestamp): number;
export function msOfTimestamp(t: Timestamp | undefined): number | undefined;
export function msOfTimestamp(t: Timestamp | undefined): number | undefined {
  return t === undefined ? undefined : Number(t.seconds) * 1000 + t.nanos / 1e6;
}

/** Negative, zero or positive as `a` is before, at or after `b` (exact to the nanosecond). */
export function compareTimestamps(a: Timestamp, b: Timestamp): number {
  return a.seconds < b.seconds ? -1 : a.seconds > b.seconds ? 1 : a.nanos - b.nanos;
}
