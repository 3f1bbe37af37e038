// Metrics in the Prometheus text format (version 0.0.4): counters and gauges with labels,
// rendered for a /metrics endpoint. The agent serves one (agent/metrics.ts), and so does the
// control plane (controlplane/metrics.ts).

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const parts = Object.keys(labels).sort().map((k) => `${k}="${escapeLabel(labels[k] ?? "")}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

class Metric {
  private readonly series = new Map<string, number | bigint>();
  constructor(readonly name: string, readonly help: string, readonly type: "counter" | "gauge") {}

  inc(labels: Labels = {}, by: number | bigint = 1): void {
    const key = labelKey(labels);
    const cur = this.series.get(key) ?? 0;
    this.series.set(key, typeof cur === "bigint" || typeof by === "bigint"
      ? BigInt(cur) + BigInt(by) : cur + by);
  }

  set(labels: Labels, value: number | bigint): void {
    this.series.set(labelKey(labels), value);
  }

  get(labels: Labels = {}): number | bigint {
    return this.series.get(labelKey(labels)) ?? 0;
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    for (const [key, value] of this.series) lines.push(`${this.name}${key} ${value}`);
    return lines.join("\n");
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  counter(name: string, help: string): Metric {
    return this.add(new Metric(name, help, "counter"));
  }

  gauge(name: string, help: string): Metric {
    return this.add(new Metric(name, help, "gauge"));
  }

  private add(m: Metric): Metric {
    this.metrics.push(m);
    return m;
  }

  render(): string {
    return this.metrics.map((m) => m.render()).join("\n") + "\n";
  }
}

export type { Metric };
