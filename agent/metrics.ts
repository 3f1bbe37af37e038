// A small Prometheus text-format registry and the /metrics + /healthz server.
import http from "node:http";

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

export interface HealthSource { healthy(): { ok: boolean; detail: string } }

export function serveMetrics(
  registry: Registry, health: HealthSource, addr: { host: string; port: number },
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== "GET") {
      res.writeHead(405, { allow: "GET" }).end("only GET\n");
    } else if (req.url === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(registry.render());
    } else if (req.url === "/healthz") {
      const h = health.healthy();
      res.writeHead(h.ok ? 200 : 503, { "content-type": "text/plain" }).end(h.detail + "\n");
    } else {
      res.writeHead(404).end("not found: try /metrics or /healthz\n");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", (err) => reject(new Error(`metrics server on ${addr.host}:${addr.port}: ${err.message}`)));
    server.listen(addr.port, addr.host, () => resolve(server));
  });
}
