// What the datapath benchmarks share: a one-node topology of network namespaces built the
// way a CNI leaves a node (pods on veths, host ends in the node's namespace), the flood
// generator (bench/flood.c), the agent as a subprocess inside the node's namespace, and a
// teardown that runs on success, failure, Ctrl-C and SIGTERM alike.
//
// Containment: every namespace is named bhbench-*, every address is in 10.194.0.0/16, and
// nothing is routed to or from the root namespace. Other namespaces are never touched.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, openSync, closeSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { cliMain, repoRoot } from "../config/install.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";
import { metric, parseMetrics, type Metrics } from "../lab/prometheus.js";
import { ipBatch, netnsEnterArgv, netnsExecArgv, run, type RunResult } from "../lab/netns.js";
import type { BpfObject } from "../native/index.js";
import { BH_CT_REPLIED, bh_ct_key, bh_ct_value } from "../native/gen/abi.js";

export const NETNS_PREFIX = "bhbench-";
/** Pods of a node get 10.194.1.2, .3, …; every host-side veth carries the gateway. */
const POD_SUBNET = "10.194.1";
export const GATEWAY = `${POD_SUBNET}.1`;
/** Routed to a blackhole in the node: traffic that only the sender's veth sees. */
export const BLACKHOLE_CIDR = "10.194.200.0/24";
export const BLACKHOLE_IP = "10.194.200.1";

const FLOOD_SOURCE = path.join(repoRoot, "bench", "flood.c");

// ---------------------------------------------------------------------------------------
// Teardown

const cleanups: Array<{ what: string; fn: () => void }> = [];
let handlersInstalled = false;

/** Registers a synchronous teardown step; steps run last-registered first, exactly once. */
export function onCleanup(what: string, fn: () => void): void {
  installHandlers();
  cleanups.push({ what, fn });
}

export function cleanupNow(): void {
  for (let step = cleanups.pop(); step; step = cleanups.pop()) {
    try {
      step.fn();
    } catch (err) {
      process.stderr.write(`cleanup (${step.what}) failed: ${(err as Error).message}\n`);
    }
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", cleanupNow);
  const signals: Array<[NodeJS.Signals, number]> = [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]];
  for (const [sig, n] of signals) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: tearing down the bench namespaces\n`);
      cleanupNow();
      process.exit(128 + n);
    });
  }
}

/** A temp dir removed at teardown. */
export function tempDir(tag: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), `bhbench-${tag}-`));
  onCleanup(`rm ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Kills `child` at teardown if it is still running. */
export function track(child: ChildProcess, what: string): void {
  onCleanup(`kill ${what}`, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
}

// ---------------------------------------------------------------------------------------
// Topology

export interface Pod {
  name: string;
  netns: string;
  /** Host-side veth, in the node's namespace: where the agent attaches. */
  hostVeth: string;
  ip: string;
  /** Date.now() just before its veth was made. */
  createdAt?: number;
}

/** One node namespace with pods on veths (IPv4 only: IPv6 is disabled everywhere so that
 * no neighbour discovery or MLD adds packets; neighbours are permanent, so no ARP either). */
export class Node {
  /** Pod i gets address .i+2 and MACs ending in i+2 (at most 250 pods over a run). */
  private nextPod = 0;

  private constructor(readonly name: string, readonly netns: string, readonly pods: Pod[]) {}

  static async create(name: string, podNames: readonly string[]): Promise<Node> {
    const netns = `${NETNS_PREFIX}${name}`;
    const node = new Node(name, netns, []);
    removeNamespaces([netns, ...podNames.map((p) => `${netns}-${p}`)]); // a crashed earlier run's
    onCleanup(`remove netns ${netns} and its pods`, () => node.destroy());

    await run(["ip", "netns", "add", netns]);
    await sysctl(netns, [...NO_IPV6, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
      "net.ipv4.conf.default.rp_filter=0"]);
    const nodeLines = ["link set lo up", `route add blackhole ${BLACKHOLE_CIDR}`];
    for (const p of podNames) nodeLines.push(...await node.podLinks(p));
    await ipBatch(netns, nodeLines);
    return node;
  }

  /** A pod added to the running node (its host veth appears as a CNI ADD makes it); its
   * addresses are the next free ones. */
  async addPod(name: string): Promise<Pod> {
    removeNamespaces([`${this.netns}-${name}`]);
    await ipBatch(this.netns, await this.podLinks(name));
    return this.pod(name);
  }

  /** What a CNI DEL does: the host veth goes (its peer with it), then the pod's namespace. */
  async removePod(pod: Pod): Promise<void> {
    await run(["ip", "-n", this.netns, "link", "del", pod.hostVeth]);
    removeNamespaces([pod.netns]);
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  /** Makes pod `name`'s namespace and veth and returns the node's `ip` lines for its host end. */
  private async podLinks(name: string): Promise<string[]> {
    const i = this.nextPod++;
    if (i >= 250) throw new Error(`node ${this.name}: at most 250 pods over a run`);
    const pod: Pod = { name, netns: `${this.netns}-${name}`, hostVeth: `bhb${this.name}-${name}`.slice(0, 15), ip: `${POD_SUBNET}.${i + 2}` };
    const hostMac = `02:bb:00:00:01:${(i + 2).toString(16).padStart(2, "0")}`;
    const podMac = `02:aa:00:00:01:${(i + 2).toString(16).padStart(2, "0")}`;
    this.pods.push(pod);
    await run(["ip", "netns", "add", pod.netns]);
    await sysctl(pod.netns, NO_IPV6);
    pod.createdAt = Date.now();
    await run(["ip", "link", "add", pod.hostVeth, "netns", this.netns, "address", hostMac, "type", "veth",
      "peer", "name", "eth0", "netns", pod.netns, "address", podMac]);
    await ipBatch(pod.netns, ["link set lo up", "link set eth0 up", `addr add ${pod.ip}/32 dev eth0`,
      `route add ${GATEWAY}/32 dev eth0`, `route add default via ${GATEWAY} dev eth0`,
      `neigh replace ${GATEWAY} lladdr ${hostMac} dev eth0 nud permanent`]);
    return [`link set ${pod.hostVeth} up`, `addr add ${GATEWAY}/32 dev ${pod.hostVeth}`,
      `route add ${pod.ip}/32 dev ${pod.hostVeth}`,
      `neigh replace ${pod.ip} lladdr ${podMac} dev ${pod.hostVeth} nud permanent`];
  }

  pod(name: string): Pod {
    const pod = this.pods.find((p) => p.name === name);
    if (!pod) throw new Error(`node ${this.name} has no pod ${name}`);
    return pod;
  }

  /** /run/netns path of the node, for attachTc({ netns }). */
  get netnsPath(): string {
    return `/run/netns/${this.netns}`;
  }

  /** Runs argv inside `netns` (the node's or a pod's). */
  exec(netns: string, argv: readonly string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return run(netnsExecArgv(netns, argv), opts);
  }

  /** Starts argv inside `netns`; killed at teardown if still running. */
  spawn(netns: string, argv: readonly string[], what: string, stdio: "pipe" | number = "pipe", mounts: "netns" | "host" = "netns"): ChildProcess {
    // "host": this mount namespace, with /sys/fs/bpf: what an agent that pins its datapath needs.
    const [cmd, ...args] = mounts === "host" ? netnsEnterArgv(netns, argv) : netnsExecArgv(netns, argv);
    const child = spawn(cmd ?? "false", args,
      { stdio: ["ignore", stdio, stdio === "pipe" ? "pipe" : stdio] });
    track(child, what);
    return child;
  }

  /** Interface counters (rx/tx packets and drops) of a device in `netns`. */
  async linkStats(netns: string, dev: string): Promise<{ rxPackets: number; txPackets: number; rxDropped: number; txDropped: number }> {
    const out = await run(["ip", "-n", netns, "-j", "-s", "link", "show", "dev", dev]);
    const parsed = JSON.parse(out.stdout) as Array<{ stats64?: { rx?: Record<string, number>; tx?: Record<string, number> } }>;
    const s = parsed[0]?.stats64;
    if (!s?.rx || !s.tx) throw new Error(`ip -n ${netns} -s link show ${dev}: no stats64 in the output`);
    return { rxPackets: s.rx.packets ?? 0, txPackets: s.tx.packets ?? 0, rxDropped: s.rx.dropped ?? 0, txDropped: s.tx.dropped ?? 0 };
  }

  /** Synchronous, so that it can run from an exit or signal handler. */
  destroy(): void {
    removeNamespaces([...this.pods.map((p) => p.netns), this.netns]);
  }
}

const NO_IPV6 = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"];

async function sysctl(netns: string, settings: readonly string[]): Promise<void> {
  await run(netnsExecArgv(netns, ["sysctl", "-q", "-w", ...settings]));
}

/** Deletes our own namespaces (bhbench-* only), killing what still runs inside them. */
function removeNamespaces(names: readonly string[]): void {
  for (const name of names) {
    if (!name.startsWith(NETNS_PREFIX)) throw new Error(`refusing to remove netns ${name}: not a bench namespace`);
    const pids = spawnSync("ip", ["netns", "pids", name], { encoding: "utf8" });
    if (pids.status !== 0) continue; // no such netns
    for (const pid of pids.stdout.split(/\s+/).filter(Boolean).map(Number)) {
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
    spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  }
}

// ---------------------------------------------------------------------------------------
// Flood generator

export interface FloodOptions {
  src: string;
  dst: string;
  dport: number;
  sportBase?: number;
  flows?: number;
  count?: number;
  durationS?: number;
  rate?: number;
  size?: number;
  threads?: number;
}

export interface FloodResult { sent: number; seconds: number; pps: number; enobufs: number }

/** Compiles bench/flood.c into `dir`; returns the binary's path. */
export function buildFlood(dir: string): string {
  const bin = path.join(dir, "flood");
  const cc = spawnSync("cc", ["-O2", "-Wall", "-pthread", "-o", bin, FLOOD_SOURCE], { encoding: "utf8" });
  if (cc.status !== 0) throw new Error(`cc ${FLOOD_SOURCE}: exit ${cc.status}: ${cc.stderr || cc.error?.message}`);
  return bin;
}

export function floodArgs(o: FloodOptions): string[] {
  const a = ["send", "--src", o.src, "--dst", o.dst, "--dport", String(o.dport)];
  if (o.sportBase !== undefined) a.push("--sport-base", String(o.sportBase));
  if (o.flows !== undefined) a.push("--flows", String(o.flows));
  if (o.count !== undefined) a.push("--count", String(o.count));
  if (o.durationS !== undefined) a.push("--duration", String(o.durationS));
  if (o.rate !== undefined) a.push("--rate", String(o.rate));
  if (o.size !== undefined) a.push("--size", String(o.size));
  if (o.threads !== undefined) a.push("--threads", String(o.threads));
  return a;
}

/** Runs the flood inside `netns` to completion and returns what it sent. */
export async function flood(node: Node, netns: string, bin: string, o: FloodOptions): Promise<FloodResult> {
  const child = node.spawn(netns, [bin, ...floodArgs(o)], "flood");
  const out = await collect(child);
  if (out.code !== 0) throw new Error(`flood in ${netns}: exit ${out.code}: ${out.stderr.trim() || out.stdout.trim()}`);
  return parseFloodResult(out.stdout, netns);
}

export function parseFloodResult(stdout: string, netns: string): FloodResult {
  const line = stdout.trim().split("\n").pop() ?? "";
  let v: unknown;
  try { v = JSON.parse(line); } catch { throw new Error(`flood in ${netns}: unreadable result "${line}"`); }
  const r = v as Partial<FloodResult>;
  if (typeof r.sent !== "number" || typeof r.seconds !== "number") throw new Error(`flood in ${netns}: unreadable result "${line}"`);
  return { sent: r.sent, seconds: r.seconds, pps: r.pps ?? 0, enobufs: r.enobufs ?? 0 };
}

/** Binds UDP `port` in `netns` without reading it: datagrams die at the socket, no ICMP. */
export async function startSink(node: Node, netns: string, bin: string, port: number): Promise<ChildProcess> {
  const child = node.spawn(netns, [bin, "sink", "--port", String(port)], `sink ${netns}:${port}`);
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`sink in ${netns} exited (${code}) before listening`)));
  });
  return child;
}

export function collect(child: ChildProcess): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: Buffer[] = [], err: Buffer[] = [];
  child.stdout?.on("data", (b: Buffer) => out.push(b));
  child.stderr?.on("data", (b: Buffer) => err.push(b));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => resolve({
      code: code ?? (signal ? 128 : 1),
      stdout: Buffer.concat(out).toString("utf8"),
      stderr: Buffer.concat(err).toString("utf8"),
    }));
  });
}

// ---------------------------------------------------------------------------------------
// The agent, as a subprocess in the node's namespace

export class AgentProcess {
  static readonly METRICS = "127.0.0.1:9387";
  private static started = 0;

  private constructor(readonly child: ChildProcess, readonly node: Node, readonly logPath: string) {}

  /** Starts `bulkhead agent` in the node's namespace and waits until it has attached to
   * every pod veth of the node. Its log (pino JSON) goes to `logPath`. `bpfDir`: the pin
   * folder to use (an earlier agent's, to adopt its datapath), by default a fresh one.
   * `nodeFlags`: Node's own flags, by default the deployed agent's (agent/node-flags.ts). */
  static async start(node: Node, flags: readonly string[], logPath: string, bpfDir?: string,
    nodeFlags: readonly string[] = AGENT_NODE_FLAGS): Promise<AgentProcess> {
    const fd = openSync(logPath, "a");
    // The agent's datapath outlives it (pinned): one folder per agent unless told, removed
    // at teardown.
    if (bpfDir === undefined) {
      bpfDir = AgentProcess.pinDir();
    }
    const child = node.spawn(node.netns, [process.execPath, ...nodeFlags, cliMain, "agent", "--node", node.name,
      "--metrics-addr", AgentProcess.METRICS, "--bpf-dir", bpfDir, ...flags], "agent", fd, "host");
    closeSync(fd);
    const agent = new AgentProcess(child, node, logPath);
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`agent exited (${child.exitCode ?? child.signalCode}) while starting; log: ${logPath}\n${agent.logTail()}`);
      }
      const m = await agent.metrics().catch(() => undefined);
      if (m && metric(m, "bulkhead_agent_interfaces_watched") >= node.pods.length) return agent;
      if (Date.now() > deadline) throw new Error(`agent did not attach to ${node.pods.length} interfaces in 20 s; log: ${logPath}\n${agent.logTail()}`);
      await sleep(200);
    }
  }

  /** A fresh pin folder under /sys/fs/bpf, removed (with whatever is pinned in it) at teardown. */
  static pinDir(): string {
    const dir = `/sys/fs/bpf/bhbench-${process.pid}-${++AgentProcess.started}`;
    onCleanup(`rm ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error("agent has no pid");
    return this.child.pid;
  }

  async metrics(): Promise<Metrics> {
    const r = await this.node.exec(this.node.netns,
      ["curl", "-sS", "--max-time", "5", `http://${AgentProcess.METRICS}/metrics`]);
    return parseMetrics(r.stdout);
  }

  /** SIGTERM (the agent detaches, drains once more and flushes), then waits for the exit. */
  async stop(timeoutMs = 30_000): Promise<number> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number>((resolve) => this.child.once("exit", (code, sig) => resolve(code ?? (sig ? 128 : 1))));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  logTail(lines = 20): string {
    try { return readFileSync(this.logPath, "utf8").trimEnd().split("\n").slice(-lines).join("\n"); } catch { return ""; }
  }
}

// ---------------------------------------------------------------------------------------
// Process and program accounting

export const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/** utime and stime of `pid`, in seconds. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
}

/** utime + stime of `pid`, in seconds. */
export function cpuSeconds(pid: number): number {
  const t = cpuTimes(pid);
  return t.user + t.system;
}

/** VmRSS of `pid`, in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`/proc/${pid}/status has no VmRSS`);
  return Number(m[1]);
}

export interface ProgStats { runTimeNs: number; runCnt: number }

/** run_time_ns and run_cnt of a loaded program (needs kernel.bpf_stats_enabled=1). */
export function progStats(id: number): ProgStats {
  const out = execFileSync("bpftool", ["-j", "prog", "show", "id", String(id)], { encoding: "utf8" });
  const info = JSON.parse(out) as { run_time_ns?: number; run_cnt?: number };
  return { runTimeNs: info.run_time_ns ?? 0, runCnt: info.run_cnt ?? 0 };
}

/** The BPF programs `pid` holds open (from its fds' fdinfo), with their names. */
export function programsOf(pid: number): Array<{ id: number; name: string }> {
  const out: Array<{ id: number; name: string }> = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = "";
    try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
    if (target !== "anon_inode:bpf-prog") continue;
    const m = /^prog_id:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8"));
    if (!m) continue;
    const id = Number(m[1]);
    const info = JSON.parse(execFileSync("bpftool", ["-j", "prog", "show", "id", String(id)], { encoding: "utf8" })) as { name?: string };
    if (!out.some((p) => p.id === id)) out.push({ id, name: info.name ?? "" });
  }
  return out;
}

/** Sets kernel.bpf_stats_enabled=1 until teardown, which restores the previous value. */
export function enableBpfStats(): void {
  const file = "/proc/sys/kernel/bpf_stats_enabled";
  const previous = readFileSync(file, "utf8").trim();
  onCleanup(`restore kernel.bpf_stats_enabled=${previous}`, () => writeFileSync(file, previous));
  writeFileSync(file, "1");
}

// ---------------------------------------------------------------------------------------
// Figures

/**
 * Moves every unconfirmed connection of an endpoint object to its confirmed table, marked
 * answered, as each peer's first reply would: the flood goes to a blackhole, but a real
 * established connection carries traffic both ways (lib/conntrack.h). Returns how many.
 */
export function confirmConnections(obj: BpfObject): number {
  const d = obj.map("conntrack_new").drain();
  const confirmed = obj.map("conntrack");
  for (let i = 0; i < d.count; i++) {
    const value = Buffer.from(d.values.subarray(i * bh_ct_value.size, (i + 1) * bh_ct_value.size));
    value[bh_ct_value.flags] = (value[bh_ct_value.flags] ?? 0) | BH_CT_REPLIED;
    confirmed.update(d.keys.subarray(i * bh_ct_key.size, (i + 1) * bh_ct_key.size), value);
  }
  return d.count;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function fmt(n: number, digits = 1): string {
  return n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** Rejects unless running as root (namespaces, veths, TCX and bpftool need it). */
export function requireRoot(bench: string): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`${bench}: needs root (network namespaces, TCX attach, bpftool)\n`);
    process.exit(2);
  }
}
