// Running iproute2 and friends against network namespaces, and finding the processes that
// live in them. Everything shells out with spawn/execFile (no shell), batches with
// `ip -batch -` where it can, and turns failures into errors that name the netns, the
// command and iproute2's message.
import { spawn } from "node:child_process";
import { readdir, readFile, readlink, stat } from "node:fs/promises";
import { isLabNetns, NETNS_PREFIX, UNDERLAY_NETNS } from "./addressing.js";

export const NETNS_DIR = "/run/netns";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends Error {
  constructor(readonly argv: readonly string[], readonly result: RunResult, what?: string) {
    const detail = result.stderr.trim() || result.stdout.trim() || "(no output)";
    super(`${what ?? argv.join(" ")}: exit ${result.code}: ${detail}`);
    this.name = "CommandError";
  }
}

/** Runs a command without a shell; rejects on a non-zero exit unless `allowFail`. */
export function run(argv: readonly string[], opts: { input?: string; allowFail?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error("run: empty command");
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    }
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.on("error", (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`${argv.join(" ")}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const result = {
        code: code ?? 128 + (signal ? signalNumber(signal) : 0),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      };
      if (result.code !== 0 && !opts.allowFail) reject(new CommandError(argv, result));
      else resolve(result);
    });
    child.stdin.on("error", () => { /* the child may exit before reading its input */ });
    child.stdin.end(opts.input ?? "");
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 0;
}

/**
 * `ip [-n NETNS] [-force] -batch -`: one process for many changes. On failure the error
 * names the netns and the batch line that failed.
 */
export async function ipBatch(netns: string | undefined, lines: readonly string[], opts: { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const argv = ["ip", ...(netns ? ["-n", netns] : []), ...(opts.force ? ["-force"] : []), "-batch", "-"];
  const result = await run(argv, { input: `${lines.join("\n")}\n`, allowFail: true });
  if (result.code === 0 || opts.force) return;
  const failed = /Command failed -:(\d+)/.exec(result.stderr);
  const line = failed ? lines[Number(failed[1]) - 1] : undefined;
  const where = netns ? `netns ${netns}` : "root netns";
  throw new CommandError(argv, result, line !== undefined ? `${where}: ip ${line}` : `${where}: ip -batch`);
}

/** `ip netns exec NETNS argv...` (a fresh mount namespace with the netns's own /sys). */
export function netnsExecArgv(netns: string, argv: readonly string[]): string[] {
  return ["ip", "netns", "exec", netns, ...argv];
}

/**
 * `nsenter --net=… argv...`: the network namespace only, in this mount namespace. An agent
 * must be started so: `ip netns exec` remounts /sys without /sys/fs/bpf, where it pins.
 */
export function netnsEnterArgv(netns: string, argv: readonly string[]): string[] {
  return ["nsenter", `--net=${NETNS_DIR}/${netns}`, "--", ...argv];
}

export async function setSysctls(netns: string, values: Record<string, string | number>): Promise<void> {
  const args = Object.entries(values).map(([k, v]) => `${k}=${v}`);
  await run(netnsExecArgv(netns, ["sysctl", "-q", "-w", ...args])).catch((err: Error) => {
    throw new Error(`netns ${netns}: setting sysctls: ${err.message}`);
  });
}

/** Names in /run/netns (what `ip netns list` shows), without spawning `ip`. */
export async function listNetns(): Promise<string[]> {
  try {
    return (await readdir(NETNS_DIR)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

export async function netnsExists(name: string): Promise<boolean> {
  return (await listNetns()).includes(name);
}

/**
 * `bh-*` netns attached to the underlay that `isLabNetns` does not already recognise (nodes
 * with custom names, after a crash lost state.json): their eth0 has its lower device in
 * bh-underlay, so they hold a netns id for it.
 */
export async function underlayPeers(knownNodes: readonly string[]): Promise<string[]> {
  const candidates = (await listNetns()).filter((n) => n.startsWith(NETNS_PREFIX) && !isLabNetns(n, knownNodes));
  const peers = await Promise.all(candidates.map(async (name) => {
    const ids = await run(["ip", "-n", name, "netns", "list-id"], { allowFail: true });
    return ids.stdout.includes(`iproute2 netns name: ${UNDERLAY_NETNS})`) ? name : undefined;
  }));
  return peers.filter((n): n is string => n !== undefined);
}

/**
 * Pids whose network namespace is one of `names`, by netns inode (as `ip netns pids`
 * does, but one /proc scan for all namespaces).
 */
export async function processesIn(names: readonly string[]): Promise<Map<string, number[]>> {
  const byInode = new Map<string, string>();
  for (const name of names) {
    try {
      byInode.set(`net:[${(await stat(`${NETNS_DIR}/${name}`)).ino}]`, name);
    } catch {
      // already gone
    }
  }
  const found = new Map<string, number[]>();
  if (byInode.size === 0) return found;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let link: string;
    try {
      link = await readlink(`/proc/${entry}/ns/net`);
    } catch {
      continue;
    }
    const name = byInode.get(link);
    if (name === undefined || !(await running(pid))) continue;
    const list = found.get(name) ?? [];
    list.push(pid);
    found.set(name, list);
  }
  return found;
}

/** Alive and not a zombie (a zombie keeps its pid but no longer holds its netns). */
export async function running(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/**
 * SIGTERM every process in the given netns, SIGKILL what is left after `graceMs`. Only
 * processes inside the lab's own namespaces are touched: the lab (or someone using
 * `lab exec`) started them.
 */
export async function stopProcessesIn(names: readonly string[], graceMs: number): Promise<number[]> {
  const pids = [...(await processesIn(names)).values()].flat();
  if (pids.length === 0) return [];
  signal(pids, "SIGTERM");
  const deadline = Date.now() + graceMs;
  let left = pids;
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    left = (await Promise.all(left.map(async (pid) => ((await running(pid)) ? pid : 0)))).filter((pid) => pid > 0);
  }
  if (left.length > 0) {
    // Only pids still inside our namespaces: a pid freed and reused meanwhile is left alone.
    const still = new Set([...(await processesIn(names)).values()].flat());
    signal(left.filter((pid) => still.has(pid)), "SIGKILL");
  }
  return pids;
}

function signal(pids: readonly number[], sig: NodeJS.Signals): void {
  for (const pid of pids) {
    try {
      process.kill(pid, sig);
    } catch {
      // exited meanwhile
    }
  }
}
