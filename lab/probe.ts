// `bulkhead probe`: traffic a test or the demo runs inside a lab pod. Each subcommand
// does one exact thing (K datagrams of P bytes, one TCP connection, one SCTP packet) and
// prints one JSON line saying what it did, so a test can compare it with the flow records.
import dgram from "node:dgram";
import net from "node:net";
import { parseArgs } from "node:util";
import { native } from "../native/index.js";
import { ConfigError } from "../config/flags.js";
import { existsSync } from "node:fs";
import { parseListenPort, parsePlan, startPodApp } from "./pod-app.js";

const usage = `usage: bulkhead probe <kind> [flags]

  udp-send  --to IP --port N [--count K] [--size P] [--sport N] [--rate PPS]
                                                                  K datagrams of P payload bytes
  udp-serve --port N [--echo]                                     count (and echo) datagrams
  tcp-serve --port N                                              accept, echo, close
  tcp-connect --to IP --port N [--size P] [--timeout MS]           one connection: send, read echo, close
  sctp-send --to IP --port N [--sport N]                          one SCTP packet over a raw socket
  sctp-listen --port N                                            print SCTP packets for port N
  serve --listen PORT/PROTO … [--name NS/POD]                     serve every listed port: HTTP or echo on TCP, echo on UDP
  talk --plan JSON                                                requests on timers: [{to, port, protocol, everyMs, size, http?}]
  app --listen PORT/PROTO … --plan JSON [--name NS/POD] [--talk-after FILE]
                                                                  serve and talk in one process (lab/pod-app.ts);
                                                                  talk only once FILE exists
  prober --socket PATH --listen PORT/PROTO …                      the conformance prober (lab/prober.ts)
`;

const family = (ip: string): 4 | 6 => (net.isIPv6(ip) ? 6 : 4);

function intFlag(values: Record<string, unknown>, name: string, fallback?: number): number {
  const raw = values[name];
  if (raw === undefined) {
    if (fallback === undefined) throw new ConfigError(`probe: --${name} is required`);
    return fallback;
  }
  if (typeof raw !== "string" || !/^[0-9]+$/.test(raw)) throw new ConfigError(`probe: --${name} "${String(raw)}" is not a whole number`);
  return Number(raw);
}

function ipFlag(values: Record<string, unknown>): string {
  const to = values.to;
  if (typeof to !== "string" || !net.isIP(to)) throw new ConfigError(`probe: --to "${String(to)}" is not an IP address`);
  return to;
}

const out = (o: object) => process.stdout.write(JSON.stringify(o) + "\n");

async function udpSend(v: Record<string, unknown>): Promise<void> {
  const to = ipFlag(v), port = intFlag(v, "port"), count = intFlag(v, "count", 1), size = intFlag(v, "size", 64);
  const sock = dgram.createSocket(family(to) === 6 ? "udp6" : "udp4");
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(intFlag(v, "sport", 0), () => resolve());
  });
  const payload = Buffer.alloc(size, 0x61);
  const rate = intFlag(v, "rate", 0);
  const start = performance.now();
  let stop = false;
  process.once("SIGTERM", () => { stop = true; });
  let sent = 0;
  for (; sent < count && !stop; sent++) {
    if (rate > 0) {
      const due = start + (sent * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    }
    await new Promise<void>((resolve, reject) => sock.send(payload, port, to, (err) => (err ? reject(err) : resolve())));
  }
  out({ kind: "udp-send", to, port, sport: sock.address().port, count: sent, size });
  sock.close();
}

async function udpServe(v: Record<string, unknown>): Promise<void> {
  const port = intFlag(v, "port");
  const sock = dgram.createSocket({ type: "udp6", ipv6Only: false });
  let received = 0;
  sock.on("message", (msg, rinfo) => {
    received++;
    if (v.echo) sock.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => sock.bind(port, "::", () => resolve()));
  out({ kind: "udp-serve", port, listening: true });
  await untilSignal();
  out({ kind: "udp-serve", port, received });
  sock.close();
}

async function tcpServe(v: Record<string, unknown>): Promise<void> {
  const port = intFlag(v, "port");
  let accepted = 0;
  const server = net.createServer({ allowHalfOpen: true }, (conn) => {
    accepted++;
    conn.on("data", (d) => conn.write(d));
    conn.on("end", () => conn.end());
    conn.on("error", () => conn.destroy());
  });
  await new Promise<void>((resolve) => server.listen({ port, host: "::", ipv6Only: false }, () => resolve()));
  out({ kind: "tcp-serve", port, listening: true });
  await untilSignal();
  out({ kind: "tcp-serve", port, accepted });
  server.close();
}

async function tcpConnect(v: Record<string, unknown>): Promise<void> {
  const to = ipFlag(v), port = intFlag(v, "port"), size = intFlag(v, "size", 16), timeout = intFlag(v, "timeout", 3000);
  const result = await new Promise<{ ok: boolean; echoed: number; sport: number; error?: string }>((resolve) => {
    const conn = net.connect({ host: to, port, allowHalfOpen: true });
    let echoed = 0, sport = 0;
    const timer = setTimeout(() => { conn.destroy(); resolve({ ok: false, echoed, sport, error: "timeout" }); }, timeout);
    conn.on("connect", () => {
      sport = conn.localPort ?? 0;
      conn.write(Buffer.alloc(size, 0x62));
    });
    conn.on("data", (d) => {
      echoed += d.length;
      if (echoed >= size) conn.end();
    });
    conn.on("close", () => { clearTimeout(timer); resolve({ ok: echoed >= size, echoed, sport }); });
    conn.on("error", (err) => { clearTimeout(timer); resolve({ ok: false, echoed, sport, error: err.message }); });
  });
  out({ kind: "tcp-connect", to, port, ...result });
  if (!result.ok) process.exitCode = 1;
}

/** An SCTP common header plus one DATA chunk; the checksum is CRC32c as RFC 9260 asks. */
export function sctpPacket(sport: number, dport: number, payload: Buffer): Buffer {
  const chunkLen = 16 + payload.length;
  const buf = Buffer.alloc(12 + Math.ceil(chunkLen / 4) * 4);
  buf.writeUInt16BE(sport, 0);
  buf.writeUInt16BE(dport, 2);
  buf.writeUInt32BE(0x0b1c0b1c, 4); // verification tag
  buf.writeUInt8(0, 12); // DATA
  buf.writeUInt8(0x03, 13); // B and E: a whole message
  buf.writeUInt16BE(chunkLen, 14);
  buf.writeUInt32BE(1, 16); // TSN
  payload.copy(buf, 28);
  buf.writeUInt32LE(crc32c(buf), 8);
  return buf;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32c(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = (CRC32C_TABLE[(c ^ b) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const SCTP = 132;

async function sctpSend(v: Record<string, unknown>): Promise<void> {
  const to = ipFlag(v), port = intFlag(v, "port"), sport = intFlag(v, "sport", 40000);
  const sock = native().rawSocket(family(to), SCTP);
  sock.send(to, sctpPacket(sport, port, Buffer.from("bulkhead probe")));
  sock.close();
  out({ kind: "sctp-send", to, port, sport });
}

async function sctpListen(v: Record<string, unknown>): Promise<void> {
  const port = intFlag(v, "port");
  let received = 0;
  const onPackets = (fam: 4 | 6) => (packets: { src: string; payload: Buffer }[]) => {
    for (const p of packets) {
      if (p.payload.length >= 12 && p.payload.readUInt16BE(2) === port) {
        received++;
        out({ kind: "sctp-listen", port, from: p.src, family: fam, sport: p.payload.readUInt16BE(0) });
      }
    }
  };
  const socks = [native().rawSocket(4, SCTP, onPackets(4)), native().rawSocket(6, SCTP, onPackets(6))];
  out({ kind: "sctp-listen", port, listening: true });
  await untilSignal();
  for (const s of socks) s.close();
  out({ kind: "sctp-listen", port, received });
}

/** `serve`, `talk` and `app`: the pod application of lab/pod-app.ts, serving, talking or both. */
async function podApp(v: Record<string, unknown>, serves: boolean, talks: boolean): Promise<void> {
  const listen = serves ? ((v.listen as string[] | undefined) ?? []) : [];
  if (!serves && v.listen !== undefined) throw new ConfigError("probe talk: --listen is for serve and app");
  if (!talks && v.plan !== undefined) throw new ConfigError("probe serve: --plan is for talk and app");
  if (talks && typeof v.plan !== "string") throw new ConfigError("probe: --plan JSON is required");
  let app;
  try {
    const gate = v["talk-after"];
    app = await startPodApp(typeof v.name === "string" ? v.name : "pod", listen.map(parseListenPort),
      talks ? parsePlan(v.plan as string) : [], typeof gate === "string" ? fileExists(gate) : undefined);
  } catch (err) {
    throw new ConfigError(`probe: ${(err as Error).message}`);
  }
  out({ kind: "app", listening: listen, talking: app.counters().length });
  await untilSignal();
  out({ kind: "app", served: app.served(), talked: app.counters() });
  await app.close();
}

/** Resolves once `file` exists (polled every 50 ms). */
function fileExists(file: string): Promise<void> {
  return new Promise((resolve) => {
    const check = () => (existsSync(file) ? resolve() : void setTimeout(check, 50));
    check();
  });
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once("SIGTERM", () => resolve());
    process.once("SIGINT", () => resolve());
  });
}

export async function runProbe(argv: string[]): Promise<number> {
  const [kind, ...rest] = argv;
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(usage);
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        to: { type: "string" }, port: { type: "string" }, sport: { type: "string" }, rate: { type: "string" },
        count: { type: "string" }, size: { type: "string" }, timeout: { type: "string" },
        echo: { type: "boolean" }, listen: { type: "string", multiple: true }, plan: { type: "string" },
        socket: { type: "string" }, name: { type: "string" }, "talk-after": { type: "string" },
      },
    });
  } catch (err) {
    throw new ConfigError(`probe: ${(err as Error).message}`);
  }
  const v = parsed.values as Record<string, unknown>;
  switch (kind) {
    case "udp-send": await udpSend(v); break;
    case "udp-serve": await udpServe(v); break;
    case "tcp-serve": await tcpServe(v); break;
    case "tcp-connect": await tcpConnect(v); break;
    case "sctp-send": await sctpSend(v); break;
    case "sctp-listen": await sctpListen(v); break;
    case "serve": await podApp(v, true, false); break;
    case "talk": await podApp(v, false, true); break;
    case "app": await podApp(v, true, true); break;
    case "prober": await (await import("./prober.js")).runProber(v.socket, v.listen); break;
    default:
      process.stderr.write(usage);
      return 2;
  }
  return typeof process.exitCode === "number" ? process.exitCode : 0;
}
