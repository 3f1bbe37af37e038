// The agent's /metrics + /healthz server (metrics in the format of ../metrics/registry.ts).
import http from "node:http";
import type { Registry } from "../metrics/registry.js";

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
