// Durations and times as users type them: "30s", "5m", "1h30m", or an RFC 3339 time.
import { ConfigError } from "../config/flags.js";

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDurationMs(flag: string, raw: string): number {
  const re = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/gy;
  let total = 0, consumed = 0, m: RegExpExecArray | null;
  while ((m = re.exec(raw)) !== null) {
    total += Number(m[1]) * (UNITS[m[2] ?? "s"] ?? 0);
    consumed = re.lastIndex;
  }
  if (consumed !== raw.length || raw.length === 0) {
    throw new ConfigError(`${flag}: "${raw}" is not a duration like 30s, 5m or 1h30m`);
  }
  return total;
}

/** A duration back from now, or an absolute RFC 3339 time. */
export function parseSince(flag: string, raw: string, nowMs = Date.now()): Date {
  if (/^[0-9]{4}-/.test(raw)) {
    const t = Date.parse(raw);
    if (Number.isNaN(t)) throw new ConfigError(`${flag}: "${raw}" is not an RFC 3339 time`);
    return new Date(t);
  }
  return new Date(nowMs - parseDurationMs(flag, raw));
}
