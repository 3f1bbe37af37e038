// Map streams against ingest (issue 13, proof 1): 2,000 map streams opened with one token
// while agents stream 100k records/s. Does ingest keep ≥ 90 % of its rate without them, is
// event-loop lag p99 ≤ 100 ms, and how much memory do the streams cost?
// Run after `npm run build:ts` as `node dist/bench/map-streams.js` (`--rate N` records/s in
// all, `--phase-ms N`, `--runs N`, `--streams N` change the defaults). Method and last
// results: bench/README.md, "map-streams".
//
// Method: the real control plane (ControlPlane with its web UI, one FolderSource cluster of
// 5,000 pods from bench/ingest.ts, two tokens: `bench-admin` for /metrics and `team` for the
// streams) in its own process; two agent clients of bench/ingest.ts (protocol 2, paced to
// half the rate each); the stream readers in a third process (plain HTTP clients reading
// every byte as a browser's EventSource would). Phases, interleaved `--runs` times:
//   - none: ingest only, the reference;
//   - one token: 2,000 map streams requested with the `team` token over 50 namespaces; the
//     control plane keeps what its caps allow (16 per token) and refuses the rest with 429;
//   - cap: the most streams the control plane holds at once (256 in all, 16 tokens of 16),
//     the heaviest load it admits, for the cost of the streams themselves.
// Each phase: the streams open, 2 s to settle, then GetStatus.recordsTotal and the control
// plane's CPU over `--phase-ms` (default 21 s, so that at least one complete 10 s window of
// the control plane's own event-loop lag gauge falls inside it, read from /metrics at the
// end); RSS from /proc at the end. The readers count events and bytes received, so a stream
// that stalls shows.
import { fork, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import {
  cpuSeconds, endChild, forkRole, getStatus, machineBusySeconds, median, memoryMiB, sleep, waitMessage, writeManifests,
} from "./ingest.js";

const NAMESPACES = 50;
const STREAM_TOKENS = 16;
const ADMIN_TOKEN = "bench-admin-token";
const teamToken = (t: number) => `team-token-${t}`;

type Message =
  | { ready: true; ui: string }
  | { opened: number; refused: number; failed: number; reasons: string[] }
  | { received: { events: number; snapshots: number; bytes: number; open: number } };

interface Child extends ChildProcess { messages: Message[] }

const thisFile = fileURLToPath(import.meta.url);

function forkSelf(role: string, args: string[]): Child {
  const child = fork(thisFile, [role, ...args], { stdio: ["ignore", "inherit", "inherit", "ipc"] }) as Child;
  child.messages = [];
  child.on("message", (m) => child.messages.push(m as Message));
  return child;
}

// ---------------------------------------------------------------------------------------
// Roles

async function controlPlaneRole(dir: string, socket: string): Promise<void> {
  const { ControlPlane } = await import("../controlplane/controlplane.js");
  const { FolderSource } = await import("../controlplane/metadata/folder.js");
  const { AccessControl } = await import("../controlplane/access/control.js");
  const { tokenDigest } = await import("../controlplane/access/tokens.js");
  const { pino } = await import("pino");
  const namespaces = new Set(Array.from({ length: NAMESPACES }, (_, n) => `ns-${n}`));
  const cp = new ControlPlane({
    source: new FolderSource({ dir }), storeCapacity: 1_000_000, log: pino({ level: "error" }),
    // Agents over the unix socket carry no token (as bench/ingest.ts); readers do.
    access: new AccessControl({
      allowUnauthenticated: true,
      tokens: [
        { name: "bench-admin", digest: tokenDigest(ADMIN_TOKEN), grant: { kind: "cluster" } },
        ...Array.from({ length: STREAM_TOKENS }, (_, t) => ({ name: `team-${t}`, digest: tokenDigest(teamToken(t)), grant: { kind: "namespaces" as const, namespaces } })),
      ],
    }),
    uiListen: { host: "127.0.0.1", port: 0 },
  });
  await cp.start([`unix://${socket}`]);
  process.on("message", (m) => { if (m === "exit") process.exit(0); });
  process.send?.({ ready: true, ui: cp.ui!.url.replace(/\/$/, "") });
}

/** Opens `count` map streams, token i % tokens; reports how they were answered, then counts what arrives. */
async function readersRole(ui: string, count: number, tokens: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  let events = 0, snapshots = 0, bytes = 0, open = 0;
  // At most 64 requests in flight, as tabs open over time rather than in one instant: 2,000
  // connects at once overflow the listen backlog and get resets from the kernel, not answers.
  const open1 = (i: number) => new Promise<{ status: number; reason: string }>((resolve) => {
    const url = `${ui}/api/v1/map/stream?namespace=ns-${i % NAMESPACES}&window=5m`;
    const request = http.get(url, { agent, headers: { authorization: `Bearer ${teamToken(i % tokens)}`, accept: "text/event-stream" } }, (response) => {
      if (response.statusCode !== 200) {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (c: string) => { body += c; });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, reason: body.slice(0, 200) }));
        return;
      }
      open++;
      response.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        for (let k = chunk.indexOf("\n\n"); k !== -1; k = chunk.indexOf("\n\n", k + 2)) events++;
        // A snapshot is written whole, so its name is not split between chunks.
        for (let k = chunk.indexOf("event: snapshot"); k !== -1; k = chunk.indexOf("event: snapshot", k + 15)) snapshots++;
      });
      response.on("close", () => { open--; });
      resolve({ status: 200, reason: "" });
    });
    request.on("error", (err) => resolve({ status: 0, reason: err.message }));
  });
  const answers: { status: number; reason: string }[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(64, count) }, async () => {
    while (next < count) answers.push(await open1(next++));
  }));
  const refused = answers.filter((a) => a.status === 429);
  const failed = answers.filter((a) => a.status !== 200 && a.status !== 429);
  process.send?.({
    opened: answers.length - refused.length - failed.length, refused: refused.length, failed: failed.length,
    reasons: [...new Set([...refused, ...failed].map((a) => `${a.status} ${a.reason}`))].slice(0, 3),
  });
  process.on("message", (m) => {
    if (m === "exit") process.exit(0);
    if (m === "count") process.send?.({ received: { events, snapshots, bytes, open } });
  });
}

// ---------------------------------------------------------------------------------------
// Measuring

interface Sample {
  phase: string;
  recordsPerSecond: number;
  /** Records ingested per control-plane CPU-second: what the streams take from ingest, whatever else the machine runs. */
  perCpuSecond: number;
  serverCores: number;
  lagP99Ms: number;
  lagMaxMs: number;
  rssMiB: number;
  opened: number;
  refused: number;
  /** Events read since the streams opened, and how many of them were snapshots (the first of each stream, then resyncs). */
  events: number;
  snapshots: number;
  otherCores: number;
}

function metrics(ui: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(`${ui}/metrics`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => { body += c; });
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`bench: /metrics answered ${res.statusCode}: ${body}`))));
    }).on("error", reject);
  });
}

function gauge(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  if (line === undefined) throw new Error(`bench: /metrics has no ${name}{${labels}}`);
  return Number(line.slice(line.lastIndexOf(" ") + 1));
}

async function phase(name: string, cp: { pid: number; ui: string; socket: string }, streams: number, tokens: number, phaseMs: number): Promise<Sample> {
  const readers = streams > 0 ? forkSelf("readers", [cp.ui, String(streams), String(tokens)]) : undefined;
  const observer = new ObserverServiceClient(`unix://${cp.socket}`, grpc.credentials.createInsecure());
  try {
    const answered = readers ? await waitMessage<Message, Extract<Message, { opened: number }>>(readers, (m) => "opened" in m) : { opened: 0, refused: 0, failed: 0, reasons: [] };
    if (answered.failed > 0) throw new Error(`bench: ${answered.failed} stream requests failed otherwise than 429: ${answered.reasons.join("; ")}`);
    await sleep(2000);
    const t0 = process.hrtime.bigint();
    const r0 = (await getStatus(observer)).recordsTotal;
    const c0 = cpuSeconds(cp.pid), m0 = machineBusySeconds();
    await sleep(phaseMs);
    const r1 = (await getStatus(observer)).recordsTotal;
    const c1 = cpuSeconds(cp.pid), m1 = machineBusySeconds();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const text = await metrics(cp.ui);
    let events = 0, snapshots = 0;
    if (readers) {
      readers.messages.length = 0;
      readers.send("count");
      const { received } = await waitMessage<Message, Extract<Message, { received: unknown }>>(readers, (m) => "received" in m);
      if (received.open !== answered.opened) throw new Error(`bench: ${answered.opened - received.open} of ${answered.opened} streams closed during the phase`);
      events = received.events;
      snapshots = received.snapshots;
    }
    return {
      phase: name, recordsPerSecond: Number(r1 - r0) / seconds, perCpuSecond: Number(r1 - r0) / (c1 - c0), serverCores: (c1 - c0) / seconds,
      lagP99Ms: 1000 * gauge(text, "bulkhead_controlplane_event_loop_lag_seconds", 'quantile="0.99"'),
      lagMaxMs: 1000 * gauge(text, "bulkhead_controlplane_event_loop_lag_seconds", 'quantile="1"'),
      rssMiB: memoryMiB(cp.pid).rss, opened: answered.opened, refused: answered.refused, events, snapshots,
      otherCores: Math.max(0, (m1 - m0 - (c1 - c0)) / seconds),
    };
  } finally {
    observer.close();
    if (readers) await endChild(readers);
  }
}

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

function positive(name: string, fallback: number): number {
  const text = flagValue(name);
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`bench: ${name} takes a positive integer, got "${text}"`);
  return n;
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

async function main(): Promise<void> {
  const rate = positive("--rate", 100_000);
  const phaseMs = positive("--phase-ms", 21_000);
  const runs = positive("--runs", 2);
  const streams = positive("--streams", 2_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-bench-streams-"));
  const dir = path.join(tmp, "manifests");
  const socket = path.join(tmp, "cp.sock");
  writeManifests(dir);
  console.log(`map-streams: agents at ${fmt(rate)} records/s (2 clients, protocol 2); phases of ${phaseMs} ms after 2 s; ${runs} runs; `
    + `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? "?"}), node ${process.version}, load average ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
  const server = forkSelf("controlplane", [dir, socket]);
  const clients: ReturnType<typeof forkRole>[] = [];
  try {
    const { ui } = await waitMessage<Message, Extract<Message, { ready: true }>>(server, (m) => "ready" in m);
    const cp = { pid: server.pid!, ui, socket };
    for (let i = 0; i < 2; i++) clients.push(forkRole("client", [socket, String(i), "0", "0", "2", String(rate / 2)]));
    await Promise.all(clients.map((c) => waitMessage(c, (m) => "streaming" in m)));
    const samples: Sample[] = [];
    const plan = [
      { name: "none", streams: 0, tokens: 1 },
      { name: "one token", streams, tokens: 1 },
      { name: "cap", streams: 256, tokens: STREAM_TOKENS },
    ];
    for (let run = 1; run <= runs; run++) {
      for (const p of plan) {
        const s = await phase(p.name, cp, p.streams, p.tokens, phaseMs);
        samples.push(s);
        console.log(`  run ${run} ${p.name.padEnd(9)}: ${p.streams} requested, ${s.opened} open, ${s.refused} refused (429); ingest ${fmt(s.recordsPerSecond)} records/s (${fmt(s.perCpuSecond)} per CPU-s), `
          + `control plane ${s.serverCores.toFixed(2)} cores, event-loop lag p99 ${s.lagP99Ms.toFixed(0)} ms (max ${s.lagMaxMs.toFixed(0)} ms), RSS ${s.rssMiB.toFixed(0)} MiB, `
          + `${fmt(s.events)} events read (${fmt(s.snapshots)} snapshots); other work on the machine ${s.otherCores.toFixed(2)} cores`);
      }
    }
    const of = (name: string) => samples.filter((s) => s.phase === name);
    const m = (name: string, key: "recordsPerSecond" | "perCpuSecond" | "lagP99Ms" | "rssMiB" | "serverCores") => median(of(name).map((s) => s[key]));
    console.log("\nmedians: phase | streams open | ingest records/s | vs none | records per CPU-s | vs none | lag p99 ms | RSS MiB | control plane cores");
    for (const p of plan) {
      console.log(`${p.name} | ${of(p.name)[0]!.opened} | ${fmt(m(p.name, "recordsPerSecond"))} | ${(m(p.name, "recordsPerSecond") / m("none", "recordsPerSecond")).toFixed(3)} | `
        + `${fmt(m(p.name, "perCpuSecond"))} | ${(m(p.name, "perCpuSecond") / m("none", "perCpuSecond")).toFixed(3)} | `
        + `${m(p.name, "lagP99Ms").toFixed(0)} | ${m(p.name, "rssMiB").toFixed(0)} | ${m(p.name, "serverCores").toFixed(2)}`);
    }
    const ratio = m("one token", "recordsPerSecond") / m("none", "recordsPerSecond");
    console.log(`SUMMARY map-streams: ${streams} streams with one token at ${fmt(rate)} records/s offered: ingest ${fmt(m("one token", "recordsPerSecond"))} records/s = `
      + `${(100 * ratio).toFixed(1)} % of ${fmt(m("none", "recordsPerSecond"))} without streams (target >= 90 %); event-loop lag p99 ${m("one token", "lagP99Ms").toFixed(0)} ms `
      + `(target <= 100 ms); RSS ${m("one token", "rssMiB").toFixed(0)} MiB; at the 256-stream cap ${(100 * m("cap", "recordsPerSecond") / m("none", "recordsPerSecond")).toFixed(1)} %, `
      + `lag p99 ${m("cap", "lagP99Ms").toFixed(0)} ms, RSS ${m("cap", "rssMiB").toFixed(0)} MiB; `
      + `records per CPU-s vs none: one token ${(m("one token", "perCpuSecond") / m("none", "perCpuSecond")).toFixed(2)}, cap ${(m("cap", "perCpuSecond") / m("none", "perCpuSecond")).toFixed(2)}`);
  } finally {
    await Promise.all(clients.map((c) => endChild(c)));
    await endChild(server);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function cli(): Promise<void> {
  const [role, ...args] = process.argv.slice(2);
  if (role === "controlplane") await controlPlaneRole(args[0]!, args[1]!);
  else if (role === "readers") await readersRole(args[0]!, Number(args[1]), Number(args[2]));
  else await main();
}

if (process.argv[1] !== undefined && fs.realpathSync(process.argv[1]) === thisFile) {
  cli().catch((err: Error) => {
    console.error(err.stack ?? err.message);
    process.exit(1);
  });
}
