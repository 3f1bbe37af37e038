// The conformance prober: one long-lived process per lab pod (`bulkhead probe prober`),
// started inside the pod's netns. It serves every conformance port (TCP and UDP echo; SCTP
// through a raw listener that records each packet's token) and runs probes on request from
// the conformance engine, which talks to it over a unix socket in the lab's state dir (a
// socket file is reachable from every netns). Wire: newline-delimited JSON, one reply per
// request, matched by `id`:
//   {id, op: "probe", to, port, protocol, sport, token, timeoutMs}  from source port `sport` (the
//        engine's choice, so it knows the probe's 5-tuple before it is sent); TCP: connect, send the token, read
//        its echo; UDP: a datagram with the token and its echo; SCTP: one INIT packet whose
//        initiate tag and initial TSN are the token (sent: delivery is judged by "received")
//   {id, op: "received", token, waitMs}  whether an SCTP packet with that token reached a
//        served port here, waiting up to waitMs for it
// Every probe uses a new socket on a source port of its own, which the engine picks (ports
// rotate through SOURCE_PORTS, SourcePorts), so no conntrack entry of an earlier probe can
// decide a later one, and a flow record of that 5-tuple is about this probe alone. A port
// still held here (a TIME_WAIT after wrapping) fails the probe with EADDRINUSE; the engine
// then tries the next one.
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import { rmSync } from "node:fs";
import net from "node:net";
import { native, type RawPacket, type RawSocket } from "../native/index.js";
import { crc32c } from "./probe.js";
import type { Protocol } from "./topology.js";

const SCTP = 132;
/** Below the kernel's ephemeral range (32768-60999), so no other socket of the pod holds them. */
export const SOURCE_PORTS = { first: 20000, last: 32000 };
/** 8 random bytes: an SCTP INIT carries them as its initiate tag and initial TSN. */
export const TOKEN_PATTERN = /^[0-9a-f]{16}$/;
const MAX_TIMEOUT_MS = 30_000;
const MAX_REMEMBERED = 20_000;

export interface ProbeRequest {
  op: "probe";
  to: string;
  port: number;
  protocol: Protocol;
  /** The source port to send from (SOURCE_PORTS). */
  sport: number;
  token: string;
  timeoutMs: number;
}

export interface ReceivedRequest {
  op: "received";
  token: string;
  waitMs: number;
}

export type ProberRequest = ProbeRequest | ReceivedRequest;

export interface ProbeResult {
  /** TCP/UDP: the echo came back; SCTP: the packet was sent. */
  ok: boolean;
  /** Why not ("timeout", "ECONNREFUSED", ...), or "sent"/"echoed". */
  detail: string;
  sport: number;
}

export interface ReceivedResult {
  received: boolean;
  /** Source address and destination port of the packet that carried the token. */
  from?: string;
  port?: number;
}

// ---- parsing (both ends parse what they read) --------------------------------------------------

function fail(what: string, detail: string): never {
  throw new Error(`prober: ${what}: ${detail}`);
}

function field(obj: Record<string, unknown>, key: string, what: string, check: (v: unknown) => boolean, expected: string): unknown {
  const v = obj[key];
  if (!check(v)) fail(what, `${key}: expected ${expected}, got ${JSON.stringify(v)}`);
  return v;
}

const isInt = (min: number, max: number) => (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
const isToken = (v: unknown) => typeof v === "string" && TOKEN_PATTERN.test(v);

export function parseRequest(line: string): { id: number; request: ProberRequest } {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch (err) {
    fail("request", `not JSON (${(err as Error).message})`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) fail("request", "expected a JSON object");
  const o = doc as Record<string, unknown>;
  const id = field(o, "id", "request", isInt(0, Number.MAX_SAFE_INTEGER), "a whole number") as number;
  const what = `request ${id}`;
  if (o.op === "probe") {
    return {
      id,
      request: {
        op: "probe",
        to: field(o, "to", what, (v) => typeof v === "string" && net.isIP(v) !== 0, "an IP address") as string,
        port: field(o, "port", what, isInt(1, 65535), "a port 1-65535") as number,
        protocol: field(o, "protocol", what, (v) => v === "TCP" || v === "UDP" || v === "SCTP", "TCP, UDP or SCTP") as Protocol,
        sport: field(o, "sport", what, isInt(SOURCE_PORTS.first, SOURCE_PORTS.last),
          `a source port ${SOURCE_PORTS.first}-${SOURCE_PORTS.last}`) as number,
        token: field(o, "token", what, isToken, "16 lowercase hex digits") as string,
        timeoutMs: field(o, "timeoutMs", what, isInt(1, MAX_TIMEOUT_MS), `1-${MAX_TIMEOUT_MS} ms`) as number,
      },
    };
  }
  if (o.op === "received") {
    return {
      id,
      request: {
        op: "received",
        token: field(o, "token", what, isToken, "16 lowercase hex digits") as string,
        waitMs: field(o, "waitMs", what, isInt(0, MAX_TIMEOUT_MS), `0-${MAX_TIMEOUT_MS} ms`) as number,
      },
    };
  }
  return fail(what, `op: expected "probe" or "received", got ${JSON.stringify(o.op)}`);
}

function parseReply(line: string): { id: number; result: Record<string, unknown> } {
  let doc: unknown;
  try {
    doc = JSON.parse(line);
  } catch (err) {
    fail("reply", `not JSON (${(err as Error).message}): ${line.slice(0, 200)}`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) fail("reply", `expected a JSON object: ${line.slice(0, 200)}`);
  const o = doc as Record<string, unknown>;
  return { id: field(o, "id", "reply", isInt(0, Number.MAX_SAFE_INTEGER), "a whole number") as number, result: o };
}

// ---- SCTP -----------------------------------------------------------------------------------

/**
 * An SCTP common header and one INIT chunk. A lone DATA chunk (sctpPacket) is "invalid" to
 * conntrack, so kube-proxy-style DNAT never rewrites it and it cannot reach a Service; an
 * INIT starts a conntrack entry like a TCP SYN does.
 */
export function sctpInitPacket(sport: number, dport: number, token: string): Buffer {
  const buf = Buffer.alloc(32);
  buf.writeUInt16BE(sport, 0);
  buf.writeUInt16BE(dport, 2);
  buf.writeUInt32BE(0, 4); // an INIT's verification tag is zero
  buf.writeUInt8(1, 12); // INIT
  buf.writeUInt16BE(20, 14);
  const t = Buffer.from(token, "hex");
  t.copy(buf, 16, 0, 4); // initiate tag
  buf.writeUInt32BE(65536, 20); // a_rwnd
  buf.writeUInt16BE(1, 24); // outbound streams
  buf.writeUInt16BE(1, 26); // inbound streams
  t.copy(buf, 28, 4, 8); // initial TSN
  buf.writeUInt32LE(crc32c(buf), 8);
  return buf;
}

/** The token of an SCTP INIT (see sctpInitPacket), or undefined for anything else. */
export function sctpInitToken(l4: Buffer): string | undefined {
  if (l4.length < 32 || l4.readUInt8(12) !== 1) return undefined;
  return l4.subarray(16, 20).toString("hex") + l4.subarray(28, 32).toString("hex");
}

// ---- the prober process -----------------------------------------------------------------------

export interface ListenSpec {
  port: number;
  protocol: Protocol;
}

export function parseListen(spec: string): ListenSpec {
  const m = /^([0-9]{1,5})\/(TCP|UDP|SCTP)$/i.exec(spec);
  const port = Number(m?.[1]);
  if (!m || port < 1 || port > 65535) throw new Error(`prober: --listen "${spec}" is not PORT/TCP, PORT/UDP or PORT/SCTP`);
  return { port, protocol: (m[2] ?? "").toUpperCase() as Protocol };
}

/** SCTP tokens that reached a served port, and who waits for which. */
class SctpArrivals {
  private readonly seen = new Map<string, ReceivedResult>();
  private readonly waiters = new Map<string, ((r: ReceivedResult) => void)[]>();

  constructor(private readonly ports: ReadonlySet<number>) {}

  onPackets(packets: RawPacket[]): void {
    for (const p of packets) {
      if (p.payload.length < 12) continue;
      const port = p.payload.readUInt16BE(2);
      const token = this.ports.has(port) ? sctpInitToken(p.payload) : undefined;
      if (token === undefined) continue;
      const result: ReceivedResult = { received: true, from: p.src, port };
      this.seen.set(token, result);
      if (this.seen.size > MAX_REMEMBERED) this.seen.delete(this.seen.keys().next().value ?? "");
      for (const wake of this.waiters.get(token) ?? []) wake(result);
      this.waiters.delete(token);
    }
  }

  wait(token: string, waitMs: number): Promise<ReceivedResult> {
    const known = this.seen.get(token);
    if (known || waitMs === 0) return Promise.resolve(known ?? { received: false });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const list = (this.waiters.get(token) ?? []).filter((w) => w !== wake);
        if (list.length > 0) this.waiters.set(token, list); else this.waiters.delete(token);
        resolve({ received: false });
      }, waitMs);
      const wake = (r: ReceivedResult) => { clearTimeout(timer); resolve(r); };
      this.waiters.set(token, [...(this.waiters.get(token) ?? []), wake]);
    });
  }
}

function errorCode(err: Error): string {
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

/** Binds the request's source port and connects; echo of the token = success. */
function probeTcp(req: ProbeRequest): Promise<ProbeResult> {
  const sport = req.sport;
  return new Promise((resolve) => {
    const conn = net.connect({ host: req.to, port: req.port, localPort: sport });
    let echoed = "";
    let done = false;
    const finish = (ok: boolean, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      conn.destroy();
      resolve({ ok, detail, sport });
    };
    const timer = setTimeout(() => finish(false, "timeout"), req.timeoutMs);
    conn.on("connect", () => conn.write(req.token));
    conn.on("data", (d: Buffer) => {
      echoed += d.toString("latin1");
      if (echoed.includes(req.token)) finish(true, "echoed");
    });
    conn.on("error", (err) => finish(false, errorCode(err)));
    conn.on("close", () => finish(false, "closed before the echo"));
  });
}

/** One datagram with the token, resent every 250 ms (a lost datagram is not a denial) until its echo or the timeout. */
function probeUdp(req: ProbeRequest): Promise<ProbeResult> {
  const sport = req.sport;
  return new Promise((resolve) => {
    const sock = dgram.createSocket(net.isIPv6(req.to) ? "udp6" : "udp4");
    let done = false;
    let resend: NodeJS.Timeout | undefined;
    const finish = (ok: boolean, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(resend);
      sock.close();
      resolve({ ok, detail, sport });
    };
    const timer = setTimeout(() => finish(false, "timeout"), req.timeoutMs);
    const send = () => sock.send(req.token, req.port, req.to, (err) => { if (err) finish(false, errorCode(err)); });
    sock.on("message", (msg) => { if (msg.toString("latin1") === req.token) finish(true, "echoed"); });
    sock.on("error", (err) => finish(false, errorCode(err)));
    sock.bind(sport, () => {
      send();
      resend = setInterval(send, 250);
    });
  });
}

export interface ProberHandle {
  close(): Promise<void>;
}

/** Starts the listeners, then the control socket; resolves once everything accepts. */
export async function startProber(socketPath: string, listen: readonly ListenSpec[]): Promise<ProberHandle> {
  const closers: (() => void)[] = [];
  const sctpPorts = new Set(listen.filter((l) => l.protocol === "SCTP").map((l) => l.port));
  const arrivals = new SctpArrivals(sctpPorts);
  for (const { port, protocol } of listen) {
    if (protocol === "TCP") {
      const server = net.createServer({ allowHalfOpen: true }, (conn) => {
        conn.on("data", (d) => conn.write(d));
        conn.on("end", () => conn.end());
        conn.on("error", () => conn.destroy());
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", (err) => reject(new Error(`prober: listening on ${port}/TCP: ${err.message}`)));
        server.listen({ port, host: "::", ipv6Only: false }, () => resolve());
      });
      closers.push(() => server.close());
    } else if (protocol === "UDP") {
      const sock = dgram.createSocket({ type: "udp6", ipv6Only: false });
      sock.on("message", (msg, rinfo) => sock.send(msg, rinfo.port, rinfo.address));
      await new Promise<void>((resolve, reject) => {
        sock.once("error", (err) => reject(new Error(`prober: listening on ${port}/UDP: ${err.message}`)));
        sock.bind(port, "::", () => resolve());
      });
      closers.push(() => sock.close());
    }
  }
  if (sctpPorts.size > 0) {
    // The lab kernel has no SCTP sockets: one raw listener per family sees every SCTP packet.
    for (const family of [4, 6] as const) {
      const raw = native().rawSocket(family, SCTP, (packets) => arrivals.onPackets(packets));
      closers.push(() => raw.close());
    }
  }
  let sctpSender: RawSocket | undefined;

  const runProbe = async (req: ProbeRequest): Promise<ProbeResult> => {
    if (req.protocol === "SCTP") {
      sctpSender ??= native().rawSocket(4, SCTP);
      try {
        sctpSender.send(req.to, sctpInitPacket(req.sport, req.port, req.token));
        return { ok: true, detail: "sent", sport: req.sport };
      } catch (err) {
        return { ok: false, detail: (err as Error).message, sport: req.sport };
      }
    }
    return req.protocol === "TCP" ? probeTcp(req) : probeUdp(req);
  };

  const handle = async (line: string): Promise<object> => {
    let parsed: { id: number; request: ProberRequest };
    try {
      parsed = parseRequest(line);
    } catch (err) {
      const id = /"id"\s*:\s*([0-9]+)/.exec(line)?.[1];
      return { id: id === undefined ? -1 : Number(id), error: (err as Error).message };
    }
    const { id, request } = parsed;
    if (request.op === "probe") return { id, ...(await runProbe(request)) };
    return { id, ...(await arrivals.wait(request.token, request.waitMs)) };
  };

  rmSync(socketPath, { force: true });
  const control = net.createServer((conn) => {
    let buffered = "";
    conn.setEncoding("utf8");
    conn.on("data", (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.trim() === "") continue;
        void handle(line).then((reply) => { if (!conn.destroyed) conn.write(`${JSON.stringify(reply)}\n`); });
      }
    });
    conn.on("error", () => conn.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    control.once("error", (err) => reject(new Error(`prober: control socket ${socketPath}: ${err.message}`)));
    control.listen(socketPath, () => resolve());
  });
  closers.push(() => control.close());
  return {
    close: async () => {
      for (const close of closers) close();
      sctpSender?.close();
      rmSync(socketPath, { force: true });
    },
  };
}

/** `bulkhead probe prober --socket PATH --listen PORT/PROTO …`: runs until SIGTERM or SIGINT. */
export async function runProber(socketPath: unknown, listen: unknown): Promise<void> {
  if (typeof socketPath !== "string" || socketPath === "") throw new Error("probe prober: --socket PATH is required");
  const specs = (Array.isArray(listen) ? listen : []).map((s) => parseListen(String(s)));
  const prober = await startProber(socketPath, specs);
  process.stdout.write(`${JSON.stringify({ kind: "prober", socket: socketPath, listening: specs.map((s) => `${s.port}/${s.protocol}`) })}\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", () => resolve());
    process.once("SIGINT", () => resolve());
  });
  await prober.close();
}

// ---- the engine's side ------------------------------------------------------------------------

/** One pod's probe source ports: SOURCE_PORTS in turn from a random start, one per probe. */
export class SourcePorts {
  private next = randomInt(SOURCE_PORTS.first, SOURCE_PORTS.last + 1);

  take(): number {
    const port = this.next;
    this.next = port >= SOURCE_PORTS.last ? SOURCE_PORTS.first : port + 1;
    return port;
  }
}

/** One connection to one pod's prober; requests may overlap. */
export class ProberClient {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private buffered = "";
  private closedReason: string | undefined;

  private constructor(readonly name: string, private readonly conn: net.Socket) {
    conn.setEncoding("utf8");
    conn.on("data", (chunk: string) => this.onData(chunk));
    conn.on("error", (err) => this.failAll(`${err.message}`));
    conn.on("close", () => this.failAll("connection closed"));
  }

  /** Connects, retrying until `timeoutMs` (the prober may still be starting). */
  static async connect(name: string, socketPath: string, timeoutMs: number, alive: () => string | undefined): Promise<ProberClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const dead = alive();
      if (dead !== undefined) throw new Error(`prober of ${name} ${dead}`);
      try {
        const conn = await new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect(socketPath);
          c.once("connect", () => { c.removeListener("error", reject); resolve(c); });
          c.once("error", reject);
        });
        return new ProberClient(name, conn);
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`prober of ${name}: no answer on ${socketPath} after ${timeoutMs} ms: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async probe(req: Omit<ProbeRequest, "op">): Promise<ProbeResult> {
    const r = await this.request({ op: "probe", ...req });
    if (typeof r.ok !== "boolean" || typeof r.detail !== "string" || typeof r.sport !== "number") {
      throw new Error(`prober of ${this.name}: malformed probe reply ${JSON.stringify(r)}`);
    }
    return { ok: r.ok, detail: r.detail, sport: r.sport };
  }

  async received(token: string, waitMs: number): Promise<ReceivedResult> {
    const r = await this.request({ op: "received", token, waitMs });
    if (typeof r.received !== "boolean") throw new Error(`prober of ${this.name}: malformed received reply ${JSON.stringify(r)}`);
    const out: ReceivedResult = { received: r.received };
    if (typeof r.from === "string") out.from = r.from;
    if (typeof r.port === "number") out.port = r.port;
    return out;
  }

  close(): void {
    this.closedReason = "closed";
    this.conn.destroy();
  }

  private request(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.closedReason !== undefined) return Promise.reject(new Error(`prober of ${this.name}: ${this.closedReason}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.conn.write(`${JSON.stringify({ id, ...body })}\n`);
    });
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl: number;
    while ((nl = this.buffered.indexOf("\n")) >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      let reply: { id: number; result: Record<string, unknown> };
      try {
        reply = parseReply(line);
      } catch (err) {
        this.failAll((err as Error).message);
        return;
      }
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (!waiter) continue;
      if (typeof reply.result.error === "string") waiter.reject(new Error(`prober of ${this.name}: ${reply.result.error}`));
      else waiter.resolve(reply.result);
    }
  }

  private failAll(reason: string): void {
    this.closedReason ??= reason;
    for (const w of this.pending.values()) w.reject(new Error(`prober of ${this.name}: ${reason}`));
    this.pending.clear();
  }
}
