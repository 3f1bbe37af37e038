// A node with pods, for tests that run the agent on the real kernel: one "node" network
// namespace and N "pod" namespaces, each joined to the node by a veth the way a
// point-to-point CNI leaves it (host end `veth<hex>` in the node, pod end eth0, /32
// routes). Everything lives in namespaces named `bhagt-<pid>-…`, addresses in
// 10.195.0.0/16, IPv4 only, no route out of 10.195.0.0/16. Agents pin their datapath under
// /sys/fs/bpf/bhagt-<pid>-<n> (one folder per node). `teardown()` stops every process
// started here, deletes the namespaces, then the pins. The namespaces and veths are a
// testbed.ts bed (IPv4 only, pods added and removed as the tests go).
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import path from "node:path";
import { cliMain } from "../../config/install.js";
import { netnsEnterArgv, netnsExecArgv, run, type RunResult } from "../../lab/netns.js";
import { PinDir } from "../../agent/pins.js";
import { parseMetrics, type Metrics } from "../../lab/prometheus.js";
import { BPFFS, Testbed, type BedPod } from "./testbed.js";

export { BPFFS };
import { Spawned, stopChild } from "./process.js";

export const NETNS_PREFIX = "bhagt-";
/** The node's own address (on lo); pod i gets 10.195.0.(i + 1). */
export const NODE_IP = "10.195.0.1";
export const METRICS_PORT = 19964;


export interface Pod extends BedPod {
  createdAt: number;
}

let nodes = 0;

export class TestNode {
  readonly netns: string;
  private podCount = 0;
  private readonly children = new Set<ChildProcess>();

  /** The agents' --bpf-dir on this node. */
  readonly bpfDir: string;

  private constructor(readonly id: string, private readonly bed: Testbed<Pod>) {
    this.netns = `${id}-node`;
    this.bpfDir = path.join(BPFFS, id);
  }

  /** A node namespace with `pods` pods. */
  static async create(pods = 0): Promise<TestNode> {
    const id = `${NETNS_PREFIX}${process.pid}-${++nodes}`;
    const bed = await Testbed.create<Pod>({ prefix: id, ipv6: false, nodes: [{ name: "node", netns: `${id}-node`, ip: NODE_IP }], pods: [],
      podRoutes: ["10.195.0.0/16"] });
    const node = new TestNode(id, bed);
    try {
      for (let i = 0; i < pods; i++) await node.addPod();
    } catch (err) {
      await node.teardown();
      throw err;
    }
    return node;
  }

  get pods(): Pod[] {
    return this.bed.pods;
  }

  get netnsPath(): string {
    return `/run/netns/${this.netns}`;
  }

  async addPod(): Promise<Pod> {
    const n = ++this.podCount;
    if (n > 250) throw new Error(`${this.netns}: at most 250 pods`);
    const pod: Pod = { name: `p${n}`, netns: `${this.id}-p${n}`, ip: `10.195.0.${n + 1}`, hostIf: `veth${randomBytes(4).toString("hex")}`,
      ifindex: 0, createdAt: Date.now() };
    await this.bed.addPod(pod);
    return pod;
  }

  /** What a CNI DEL does: delete the host veth (its peer goes with it), then the netns. */
  removePod(pod: Pod): Promise<void> {
    return this.bed.removePod(pod);
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
    await this.bed.teardown();
    new PinDir(this.bpfDir).uninstall();
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

