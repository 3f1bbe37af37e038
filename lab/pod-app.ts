// The stand-in application every lab pod runs for `lab traffic` and the demo: one process
// per pod that serves the pod's container ports and sends the pod's planned requests, so a
// busy lab costs one process per pod. Everything is real traffic on real sockets:
//   serving  TCP: a request that starts like HTTP/1.x gets an HTTP answer from node:http
//            (`/metrics` in the Prometheus text format, anything else a small JSON
//            document); any other bytes are echoed (a Redis- or Postgres-like
//            request/response). UDP: every datagram is echoed (a DNS-like exchange).
//   talking  per plan entry, on a timer: an HTTP GET of `http` (status 200 expected), or a
//            TCP request whose echo is read back, or a UDP datagram whose echo is awaited.
// Counters of requests sent, answered and failed per entry feed `/metrics` and the summary
// printed on exit.
import dgram from "node:dgram";
import http from "node:http";
import net from "node:net";
import type { Protocol } from "./topology.js";

export interface ListenPort {
  port: number;
  protocol: Protocol;
}

/** One conversation: where to, how, how often. `to` is an IP (a ClusterIP or a pod's). */
export interface TalkPlanEntry {
  to: string;
  port: number;
  protocol: Protocol;
  everyMs: number;
  /** Request payload bytes (TCP and UDP requests; ignored for HTTP). */
  size: number;
  /** An HTTP GET of this path instead of a raw request (TCP only). */
  http?: string;
}

/** A request gets this long before it counts as failed (a dropped SYN never answers). */
export const REQUEST_TIMEOUT_MS = 2000;
const HTTP_REQUEST_LINE = /^[A-Z]{3,7} \S+ HTTP\/1\.[01]\r?\n/;

interface Counters { sent: number; answered: number; failed: number }

export interface PodApp {
  /** Per plan entry, in plan order. */
  counters(): Counters[];
  served(): { http: number; tcp: number; udp: number };
  close(): Promise<void>;
}

/** `name`: how the app introduces itself in HTTP answers, e.g. "shop/cart-7d9f8b6c5d-x2x4z". */
/**
 * `talkAfter`: requests start only once it resolves (a readiness gate: lab traffic starts
 * when every pod serves, as a Service sends only to ready pods); absent: at once.
 */
export async function startPodApp(name: string, listen: readonly ListenPort[], plan: readonly TalkPlanEntry[],
  talkAfter: Promise<void> = Promise.resolve()): Promise<PodApp> {
  const served = { http: 0, tcp: 0, udp: 0 };
  const talked: Counters[] = plan.map(() => ({ sent: 0, answered: 0, failed: 0 }));
  const closers: (() => Promise<void>)[] = [];

  const web = http.createServer((req, res) => {
    served.http++;
    if (req.url === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(metricsText(name, served, talked));
    } else {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(`${JSON.stringify({ pod: name, method: req.method, path: req.url })}\n`);
    }
  });
  web.keepAliveTimeout = 1000;

  for (const { port, protocol } of listen) {
    if (protocol === "TCP") {
      const server = net.createServer({ allowHalfOpen: true }, (conn) => {
        conn.on("error", () => conn.destroy());
        conn.once("data", (first: Buffer) => {
          if (HTTP_REQUEST_LINE.test(first.subarray(0, 128).toString("latin1"))) {
            // node:http parses the connection from here, including the bytes already read.
            conn.pause();
            conn.unshift(first);
            web.emit("connection", conn);
            conn.resume();
            return;
          }
          served.tcp++;
          conn.write(first);
          conn.on("data", (d) => conn.write(d));
          conn.on("end", () => conn.end());
        });
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", (err) => reject(new Error(`pod app ${name}: listening on ${port}/TCP: ${err.message}`)));
        server.listen({ port, host: "::", ipv6Only: false }, () => resolve());
      });
      closers.push(() => new Promise((resolve) => { server.close(() => resolve()); }));
    } else if (protocol === "UDP") {
      const sock = dgram.createSocket({ type: "udp6", ipv6Only: false });
      sock.on("message", (msg, rinfo) => {
        served.udp++;
        sock.send(msg, rinfo.port, rinfo.address);
      });
      await new Promise<void>((resolve, reject) => {
        sock.once("error", (err) => reject(new Error(`pod app ${name}: listening on ${port}/UDP: ${err.message}`)));
        sock.bind(port, "::", () => resolve());
      });
      closers.push(() => new Promise((resolve) => { sock.close(() => resolve()); }));
    }
    // SCTP: the lab kernel has no SCTP sockets (the conformance prober handles SCTP).
  }

  const timers: NodeJS.Timeout[] = [];
  let closed = false;
  void talkAfter.then(() => { if (!closed) talk(); });
  const talk = () => plan.forEach((entry, i) => {
    const counters = talked[i] as Counters;
    const once = () => {
      counters.sent++;
      void request(entry).then((ok) => { if (ok) counters.answered++; else counters.failed++; });
    };
    // Spread the first requests so that many pods do not talk in step.
    timers.push(setTimeout(() => {
      once();
      timers.push(setInterval(once, entry.everyMs));
    }, Math.random() * entry.everyMs));
  });

  return {
    counters: () => talked.map((c) => ({ ...c })),
    served: () => ({ ...served }),
    async close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      web.closeAllConnections();
      await Promise.all(closers.map((close) => close()));
    },
  };
}

/** One request of the entry; true when its answer came back whole. */
export function request(e: TalkPlanEntry): Promise<boolean> {
  if (e.http !== undefined) return httpGet(e.to, e.port, e.http);
  if (e.protocol === "TCP") return tcpRequest(e.to, e.port, e.size);
  if (e.protocol === "UDP") return udpRequest(e.to, e.port, e.size);
  return Promise.resolve(false);
}

function httpGet(to: string, port: number, path: string): Promise<boolean> {
  return new Promise((resolve) => {
    // A new connection per request (agent: false), as a scraper or a short-lived client makes.
    const req = http.get({ host: to, port, path, agent: false, timeout: REQUEST_TIMEOUT_MS, headers: { "user-agent": "bulkhead-lab" } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode === 200));
      res.on("error", () => resolve(false));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
  });
}

function tcpRequest(to: string, port: number, size: number): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect({ host: to, port });
    let echoed = 0;
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ok) conn.end(); else conn.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), REQUEST_TIMEOUT_MS);
    conn.on("connect", () => conn.write(Buffer.alloc(size, 0x63)));
    conn.on("data", (d: Buffer) => { echoed += d.length; if (echoed >= size) finish(true); });
    conn.on("error", () => finish(false));
    conn.on("close", () => finish(echoed >= size));
  });
}

function udpRequest(to: string, port: number, size: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(to) ? "udp6" : "udp4");
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), REQUEST_TIMEOUT_MS);
    sock.on("message", () => finish(true));
    sock.on("error", () => finish(false));
    sock.send(Buffer.alloc(size, 0x64), port, to, (err) => { if (err) finish(false); });
  });
}

function metricsText(name: string, served: { http: number; tcp: number; udp: number }, talked: readonly Counters[]): string {
  const pod = name.replace(/["\\\n]/g, "_");
  const sum = (k: keyof Counters) => talked.reduce((n, c) => n + c[k], 0);
  return [
    "# HELP lab_requests_served_total Requests this pod answered, by kind.",
    "# TYPE lab_requests_served_total counter",
    ...(["http", "tcp", "udp"] as const).map((k) => `lab_requests_served_total{pod="${pod}",kind="${k}"} ${served[k]}`),
    "# HELP lab_requests_sent_total Requests this pod sent, by outcome.",
    "# TYPE lab_requests_sent_total counter",
    `lab_requests_sent_total{pod="${pod}",outcome="answered"} ${sum("answered")}`,
    `lab_requests_sent_total{pod="${pod}",outcome="failed"} ${sum("failed")}`,
    "",
  ].join("\n");
}

/** `--listen PORT/PROTO` (TCP or UDP). */
export function parseListenPort(spec: string): ListenPort {
  const m = /^([0-9]{1,5})\/(TCP|UDP)$/i.exec(spec);
  const port = Number(m?.[1]);
  if (!m || port < 1 || port > 65535) throw new Error(`--listen "${spec}" is not PORT/TCP or PORT/UDP with a port 1-65535`);
  return { port, protocol: (m[2] ?? "").toUpperCase() as Protocol };
}

/** `--plan JSON`: a list of TalkPlanEntry, each field checked. */
export function parsePlan(raw: string): TalkPlanEntry[] {
  let plan: unknown;
  try {
    plan = JSON.parse(raw);
  } catch (err) {
    throw new Error(`--plan is not JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(plan)) throw new Error("--plan must be a JSON list");
  return plan.map((e: unknown, i): TalkPlanEntry => {
    const fail = (what: string): never => { throw new Error(`--plan[${i}]: ${what}, got ${JSON.stringify(e)}`); };
    if (typeof e !== "object" || e === null || Array.isArray(e)) return fail("expected an object");
    const x = e as Record<string, unknown>;
    if (typeof x.to !== "string" || !net.isIP(x.to)) fail("to must be an IP address");
    const int = (k: string, min: number, max: number): number => {
      const v = x[k];
      if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) fail(`${k} must be an integer ${min}-${max}`);
      return v as number;
    };
    if (x.protocol !== "TCP" && x.protocol !== "UDP") fail("protocol must be TCP or UDP");
    const entry: TalkPlanEntry = {
      to: x.to as string, port: int("port", 1, 65535), protocol: x.protocol as Protocol,
      everyMs: int("everyMs", 50, 3_600_000), size: int("size", 1, 60_000),
    };
    if (x.http !== undefined) {
      if (typeof x.http !== "string" || !x.http.startsWith("/")) fail("http must be a path starting with /");
      if (entry.protocol !== "TCP") fail("http needs protocol TCP");
      entry.http = x.http as string;
    }
    return entry;
  });
}
