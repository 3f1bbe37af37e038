// Reads an agent's /metrics (the Prometheus text format, agent/metrics.ts writes it) for the
// tests and benchmarks that count what the agent saw. Strict: a line that is neither a
// comment nor a sample is an error, not silently skipped, so a change in the exposition
// shows at once. Hand-written rather than a package: the agent's exposition is the small
// part of the format it needs (no timestamps, exemplars or histograms), and the one npm
// parser (parse-prometheus-text-format) ships no types and returns values as strings.

/** Value by series key, `name{label="value",…}` with the labels sorted. */
export type Metrics = Map<string, number>;

export function parseMetrics(text: string): Metrics {
  const out: Metrics = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$/.exec(line);
    if (!m?.[1] || !m[3]) throw new Error(`not a Prometheus sample line: ${line}`);
    out.set(seriesKey(m[1], parseLabels(m[2] ?? "")), Number(m[3]));
  }
  return out;
}

function parseLabels(raw: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const m of raw.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
    if (m[1]) labels[m[1]] = (m[2] ?? "").replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
  }
  return labels;
}

function seriesKey(name: string, labels: Record<string, string>): string {
  const parts = Object.keys(labels).sort().map((k) => `${k}="${labels[k]}"`);
  return parts.length ? `${name}{${parts.join(",")}}` : name;
}

/** The value of one series; 0 when absent (a counter never incremented is not rendered). */
export function metric(m: Metrics, name: string, labels: Record<string, string> = {}): number {
  return m.get(seriesKey(name, labels)) ?? 0;
}

/** The sum of every series of `name`, whatever its labels; 0 when there is none. */
export function metricSum(m: Metrics, name: string): number {
  let sum = 0;
  for (const [key, value] of m) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}
