// A node with pods, for tests that run the agent on the real kernel: one "node" network
// namespace and N "pod" namespaces, each joined to the node by a veth the way a
// point-to-point CNI leaves it (host end `veth<hex>` in the node, pod end eth0, /32
// routes). Everything lives in namespaces named `bhagt-<pid>-…`, addresses in
// 10.195.0.0/16, IPv4 only, no route out of 10.195.0.0/16. Agents pin their datapath under
// /sys/fs/bpf/bhagt-<pid>-<n> (one folder per node). `teardown()` stops every process
// started here, deletes the namespaces, then the pins.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import path from "node:path";
import { cliMain } from "../../config/install.js";
import { ipBatch, netnsEnterArgv, netnsExecArgv, run, setSysctls, type RunResult } from "../../lab/netns.js";
import { PinDir } from "../../agent/pins.js";
import { parseMetrics, type Metrics } from "../../lab/prometheus.js";

export const NETNS_PREFIX = "bhagt-";
export const BPFFS = "/sys/fs/bpf";
/** The node's own address (on lo); pod i gets 10.195.0.(i + 1). */
export const NODE_IP = "10.195.0.1";
export const METRICS_PORT = 19964;

const IPV4_ONLY = { "net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1 };

export interface Pod {
  /** Network namespace of the pod. */
  netns: string;
  ip: string;
  /** Host end of the veth, in the node namespace. */
  hostIf: string;
  /** Its ifindex in the node namespace. */
  ifindex: number;
  /** Date.now() just before the veth was created. */
  createdAt: number;
}

let nodes = 0;

export class TestNode {
  readonly netns: string;
  readonly pods: Pod[] = [];
  private podCount = 0;
  private readonly children = new Set<ChildProcess>();

  /** The agents' --bpf-dir on this node. */
  readonly bpfDir: string;

  private constructor(readonly id: string) {
    this.netns = `${id}-node`;
    this.bpfDir = path.join(BPFFS, id);
  }

  /** A node namespace with `pods` pods. */
  static async create(pods = 0): Promise<TestNode> {
    await removeStaleNamespaces();
    const node = new TestNode(`${NETNS_PREFIX}${process.pid}-${++nodes}`);
    try {
      await run(["ip", "netns", "add", node.netns]);
      await setSysctls(node.netns, { ...IPV4_ONLY, "net.ipv4.ip_forward": 1 });
      await ipBatch(node.netns, ["link set lo up", `addr add ${NODE_IP}/32 dev lo`]);
      for (let i = 0; i < pods; i++) await node.addPod();
    } catch (err) {
      await node.teardown();
      throw err;
    }
    return node;
  }

  get netnsPath(): string {
    return `/run/netns/${this.netns}`;
  }

  async addPod(): Promise<Pod> {
    const n = ++this.podCount;
    if (n > 250) throw new Error(`${this.netns}: at most 250 pods`);
    const netns = `${this.id}-p${n}`;
    const ip = `10.195.0.${n + 1}`;
    const hostIf = `veth${randomBytes(4).toString("hex")}`;
    await run(["ip", "netns", "add", netns]);
    await setSysctls(netns, IPV4_ONLY);
    const createdAt = Date.now();
    await ipBatch(this.netns, [`link add ${hostIf} type veth peer name eth0 netns ${netns}`, `link set ${hostIf} up`,
      `route add ${ip}/32 dev ${hostIf} scope link`]);
    await ipBatch(netns, ["link set lo up", "link set eth0 up", `addr add ${ip}/32 dev eth0`,
      `route add ${NODE_IP}/32 dev eth0 scope link`, `route add 10.195.0.0/16 via ${NODE_IP} dev eth0`]);
    const pod = { netns, ip, hostIf, ifindex: await this.ifindex(hostIf), createdAt };
    this.pods.push(pod);
    return pod;
  }

  /** What a CNI DEL does: delete the host veth (its peer goes with it), then the netns. */
  async removePod(pod: Pod): Promise<void> {
    await ipBatch(this.netns, [`link del ${pod.hostIf}`]);
    await run(["ip", "netns", "del", pod.netns]);
    this.pods.splice(this.pods.indexOf(pod), 1);
  }

  async ifindex(name: string): Promise<number> {
    const out = (await run(["ip", "-n", this.netns, "-o", "link", "show", "dev", name])).stdout;
    const m = /^(\d+):/.exec(out);
    if (!m?.[1]) throw new Error(`${this.netns}: no ifindex for ${name} in: ${out}`);
    return Number(m[1]);
  }

  /** Runs argv inside `netns` (default: the node) to completion. */
  exec(argv: readonly string[], netns = this.netns, opts: { allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
    return run(netnsExecArgv(netns, argv), { timeoutMs: 30_000, ...opts });
  }

  /** Starts argv inside `netns`; teardown() kills it if it still runs. */
  spawn(argv: readonly string[], netns = this.netns): Spawned {
    return this.spawnArgv(netnsExecArgv(netns, argv), `${argv.join(" ")} in ${netns}`);
  }

  private spawnArgv(full: readonly string[], what: string): Spawned {
    const [cmd, ...args] = full;
    const child = spawn(cmd ?? "false", args, { stdio: ["ignore", "pipe", "pipe"] });
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
    return new Spawned(child, what);
  }

  /** `bulkhead probe udp-serve` in `netns`: a listener, so datagrams draw no ICMP errors. */
  async udpServer(port: number, netns = this.netns): Promise<Spawned> {
    const server = this.spawn([process.execPath, cliMain, "probe", "udp-serve", "--port", String(port)], netns);
    await server.waitForLine((l) => l.includes('"listening":true'), 10_000);
    return server;
  }

  /** `bulkhead agent --node test --metrics-addr 127.0.0.1:19964 --bpf-dir <node's> …args`
   * in the node namespace. */
  startAgent(args: readonly string[]): AgentProcess {
    if (!existsSync(cliMain)) throw new Error(`${cliMain} is missing: run "npx tsc -p ." first`);
    const argv = [process.execPath, cliMain, "agent", "--node", "test", "--metrics-addr", `127.0.0.1:${METRICS_PORT}`,
      ...(args.includes("--bpf-dir") ? [] : ["--bpf-dir", this.bpfDir]), ...args];
    return new AgentProcess(this, this.spawnArgv(netnsEnterArgv(this.netns, argv), `agent in ${this.netns}`));
  }

  /** GET http://127.0.0.1:19964{urlPath} from inside the node namespace. */
  async http(urlPath: string): Promise<{ status: number; body: string }> {
    const r = await this.exec(["curl", "-s", "-m", "5", "-w", "\n%{http_code}", `http://127.0.0.1:${METRICS_PORT}${urlPath}`],
      this.netns, { allowFail: true });
    const cut = r.stdout.lastIndexOf("\n");
    return { status: Number(r.stdout.slice(cut + 1)) || 0, body: r.stdout.slice(0, Math.max(cut, 0)) };
  }

  async metrics(): Promise<Metrics> {
    const r = await this.http("/metrics");
    if (r.status !== 200) throw new Error(`${this.netns}: GET /metrics: status ${r.status}: ${r.body}`);
    return parseMetrics(r.body);
  }

  /** Stops every process started here that still runs (SIGTERM, SIGKILL after 3 s), then
   * deletes the namespaces and the agents' pins (which a stopped agent leaves in place). */
  async teardown(): Promise<void> {
    await Promise.all([...this.children].reverse().map((c) => stopChild(c, 3000)));
    const all = [...this.pods.map((p) => p.netns), this.netns];
    for (let n = 1; n <= this.podCount; n++) all.push(`${this.id}-p${n}`);
    for (const ns of new Set(all)) await run(["ip", "netns", "del", ns], { allowFail: true });
    this.pods.length = 0;
    new PinDir(this.bpfDir).uninstall();
  }
}

/** A child process with its stdout split into lines. */
export class Spawned {
  readonly lines: string[] = [];
  stderr = "";
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private partial = "";
  private readonly waiters = new Set<() => void>();

  constructor(readonly child: ChildProcess, readonly what: string) {
    child.stdout?.on("data", (b: Buffer) => {
      const parts = (this.partial + b.toString("utf8")).split("\n");
      this.partial = parts.pop() ?? "";
      this.lines.push(...parts);
      for (const w of this.waiters) w();
    });
    child.stderr?.on("data", (b: Buffer) => { this.stderr += b.toString("utf8"); });
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => {
      if (this.partial) this.lines.push(this.partial);
      this.partial = "";
      resolve({ code, signal });
      for (const w of this.waiters) w();
    }));
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitForLine(match: (line: string) => boolean, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.lines.find(match);
        if (hit !== undefined) done(() => resolve(hit));
        else if (!this.running) done(() => reject(new Error(`${this.what} exited before the expected line: ${this.output()}`)));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`${this.what}: no expected line within ${timeoutMs} ms: ${this.output()}`))), timeoutMs);
      const done = (f: () => void) => { clearTimeout(timer); this.waiters.delete(check); f(); };
      this.waiters.add(check);
      check();
    });
  }

  /** SIGTERM, then the exit code (SIGKILL after `graceMs`, reported as an error). */
  async stop(graceMs = 10_000): Promise<number | null> {
    const killed = await stopChild(this.child, graceMs);
    if (killed) throw new Error(`${this.what} ignored SIGTERM for ${graceMs} ms and was killed: ${this.output()}`);
    return (await this.exited).code;
  }

  output(): string {
    return `stdout: ${this.lines.join("\n")}${this.partial} stderr: ${this.stderr}`.slice(-4000);
  }
}

export interface LogLine { level: number; msg: string; [field: string]: unknown }

/** The agent subprocess: its pino log, health, metrics and kernel links. */
export class AgentProcess {
  constructor(readonly node: TestNode, readonly proc: Spawned) {}

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.running;
  }

  /** Resolves once /healthz answers 200. */
  async ready(timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.node.exec(["curl", "-sf", "-m", "2", `http://127.0.0.1:${METRICS_PORT}/healthz`], this.node.netns, { allowFail: true });
      if (r.code === 0) return;
      if (!this.running) throw new Error(`agent exited before /healthz answered: ${this.proc.output()}`);
      if (Date.now() > end) throw new Error(`agent /healthz not 200 within ${timeoutMs} ms: ${this.proc.output()}`);
      await sleep(100);
    }
  }

  logs(): LogLine[] {
    const out: LogLine[] = [];
    for (const line of this.proc.lines) {
      try {
        const v = JSON.parse(line) as unknown;
        if (v && typeof v === "object" && "msg" in v) out.push(v as LogLine);
      } catch { /* not a log line */ }
    }
    return out;
  }

  /** Ids of the tcx links this agent holds, from its fds (/proc/PID/fdinfo). */
  links(): { id: number; ifindex: number; direction: string }[] {
    const out = [];
    const dir = `/proc/${this.pid}/fd`;
    for (const fd of readdirSync(dir)) {
      try {
        if (!readlinkSync(`${dir}/${fd}`).includes("bpf_link")) continue;
        const info = readFileSync(`/proc/${this.pid}/fdinfo/${fd}`, "utf8");
        const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, "m").exec(info)?.[1] ?? "";
        out.push({ id: Number(field("link_id")), ifindex: Number(field("ifindex")), direction: /\((\w+)\)/.exec(field("attach_type"))?.[1] ?? "" });
      } catch { /* closed while we looked */ }
    }
    return out;
  }

  /** SIGSTOP: the programs keep counting and queueing ring-buffer events, but no drain
   * runs and no event is read until resume(). */
  pause(): void {
    this.proc.child.kill("SIGSTOP");
  }

  resume(): void {
    this.proc.child.kill("SIGCONT");
  }

  /** SIGTERM (the agent detaches, drains once more and flushes) and its exit code. */
  stop(): Promise<number | null> {
    return this.proc.stop();
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value `done` accepts; returns that value and when. */
export async function poll<T>(probe: () => Promise<T>, done: (v: T) => boolean, timeoutMs: number, what: string): Promise<{ value: T; at: number }> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    const at = Date.now();
    if (done(value)) return { value, at };
    if (at > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(value)}`);
    await sleep(25);
  }
}

/** One SIGTERM (a second one would meet Node's default handler), SIGKILL after `graceMs`;
 * true when it had to SIGKILL. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return false;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  child.kill("SIGCONT"); // a paused process acts on SIGTERM only once continued
  const timer = sleep(graceMs).then(() => "timeout" as const);
  if ((await Promise.race([exited, timer])) !== "timeout") return false;
  child.kill("SIGKILL");
  await exited;
  return true;
}

/** Deletes the namespaces `<prefix>-<pid>-…` of this process (a retried set-up) or of a
 * process that is gone (a crashed run skips its teardown). */
export async function removeStaleNetns(prefix: string): Promise<void> {
  const names = existsSync("/run/netns") ? readdirSync("/run/netns") : [];
  for (const name of names) {
    const m = new RegExp(`^${prefix}-(\\d+)-`).exec(name);
    if (m?.[1] && (Number(m[1]) === process.pid || !existsSync(`/proc/${m[1]}`))) {
      await run(["ip", "netns", "del", name], { allowFail: true });
    }
  }
}

// Namespaces and pins of an earlier run whose process is gone (a crash skips teardown).
async function removeStaleNamespaces(): Promise<void> {
  const names = existsSync("/run/netns") ? readdirSync("/run/netns") : [];
  for (const name of names) {
    const m = /^bhagt-(\d+)-/.exec(name);
    if (m?.[1] && Number(m[1]) !== process.pid && !existsSync(`/proc/${m[1]}`)) {
      await run(["ip", "netns", "del", name], { allowFail: true });
    }
  }
  for (const name of existsSync(BPFFS) ? readdirSync(BPFFS) : []) {
    const m = /^bhagt-(\d+)-/.exec(name);
    if (m?.[1] && Number(m[1]) !== process.pid && !existsSync(`/proc/${m[1]}`)) {
      rmSync(path.join(BPFFS, name), { recursive: true, force: true });
    }
  }
}
