// The lab's supervisor: one detached process per lab (`bulkhead lab supervise --state-dir
// DIR`, started by `up`) that runs the control plane (each replica, and with `--store
// clickhouse` the ClickHouse server they share; the replicas' first start waits until it
// answers) and one agent per node (whose first start waits until the first control plane
// accepts on its agent socket; each such wait at most FIRST_START_WAIT_MS, then the child
// starts anyway, its log saying why), and starts each again when it exits, as a Deployment,
// a StatefulSet and a DaemonSet would on a real cluster. It reads the
// command lines `up` wrote into state.json once, and writes what it runs (pid, restarts, how
// the last run ended) to supervisor.json, which `lab status` and `lab restart` read.
//
// Restarts: at once after a run of at least STABLE_RUN_MS; after shorter runs (a crash loop)
// with a delay doubling from FIRST_BACKOFF_MS to MAX_BACKOFF_MS. Every exit and restart is a
// line in <stateDir>/logs/supervisor.log and in the child's own log.
//
// On SIGTERM it stops restarting, stops its children (SIGTERM, SIGKILL after CHILD_STOP_MS;
// it reaps them, so none is left a zombie) and exits: `lab down` stops it first, so nothing
// restarts during teardown, and then stops whatever else runs in the lab's netns and the
// control plane by its pid file, as it always has. If the supervisor is killed, the children
// run on unsupervised and `down` (or the next `up`) still removes them.
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, closeSync, openSync } from "node:fs";
import net from "node:net";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { running } from "./netns.js";
import { clickHouseAnswers } from "./clickhouse.js";
import { controlPlanes, LOGS_DIR, readSupervision, requireState, writeSupervision, type LabClickHouse, type SupervisedProcess, type Supervision } from "./state.js";

export const STABLE_RUN_MS = 10_000;
export const FIRST_BACKOFF_MS = 250;
export const MAX_BACKOFF_MS = 30_000;
export const SUPERVISOR_LOG = "supervisor.log";
/** Agents get this long to stop on SIGTERM (as datapath.ts's STOP_GRACE_MS) before SIGKILL. */
export const CHILD_STOP_MS = 5000;
/** stopSupervisor's wait before SIGKILL: the supervisor's own stop of its children, and a margin. */
const STOP_GRACE_MS = CHILD_STOP_MS + 3000;
/** How long a child's first start waits at most for the one it needs (`after`) to serve. `up`
 * gives the store 30 s and a control plane 20 s to serve before it fails, so past this the
 * wait is over: the child starts anyway (an agent retries its control plane with a backoff, a
 * replica that finds no store exits and is started again), and its log names what it waited for. */
export const FIRST_START_WAIT_MS = 60_000;

export const CONTROLPLANE_PROCESS = "controlplane";
export const CLICKHOUSE_PROCESS = "clickhouse";
export const agentProcess = (node: string): string => `agent/${node}`;
/** Where the supervisor writes a server's pid at each start (control-plane replicas, ClickHouse), for `down`. */
export const pidFileOf = (stateDir: string, name: string): string => path.join(stateDir, `${name}.pid`);

/** Whether the lab's ClickHouse server answers an authenticated query (its credentials file is USER:PASSWORD). */
export async function storeReady(store: Pick<LabClickHouse, "httpUrl" | "credentials">): Promise<boolean> {
  const text = (await readFile(store.credentials, "utf8").catch(() => "")).trim();
  const colon = text.indexOf(":");
  if (colon <= 0) return false;
  return (await clickHouseAnswers(store.httpUrl, text.slice(0, colon), text.slice(colon + 1))).ok;
}

/** The delay before the next start, given how many runs in a row were short (0: the last was stable). */
export function restartDelay(shortRunsBefore: number): number {
  if (shortRunsBefore <= 0) return 0;
  return Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (shortRunsBefore - 1));
}

/** The supervisor's command line for a state dir; stopSupervisor finds stale ones by it. */
export function supervisorArgv(repoRoot: string, stateDir: string): string[] {
  return [process.execPath, path.join(repoRoot, "dist", "cli", "main.js"), "lab", "supervise", "--state-dir", stateDir];
}

/** Starts the supervisor detached, logging to <stateDir>/logs/supervisor.log. */
export async function startSupervisor(stateDir: string, repoRoot: string): Promise<{ pid: number; log: string }> {
  const logs = path.join(stateDir, LOGS_DIR);
  await mkdir(logs, { recursive: true });
  const log = path.join(logs, SUPERVISOR_LOG);
  const [cmd, ...args] = supervisorArgv(repoRoot, stateDir);
  const fd = openSync(log, "a");
  try {
    const child = spawn(cmd ?? process.execPath, args, { detached: true, stdio: ["ignore", fd, fd] });
    child.unref();
    if (child.pid === undefined) throw new Error(`lab supervisor did not start (${[cmd, ...args].join(" ")}); see ${log}`);
    return { pid: child.pid, log };
  } finally {
    closeSync(fd);
  }
}

/** Pids of `lab supervise` processes for this state dir (also those of a crashed run whose state is gone). */
export async function supervisorPids(stateDir: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    const at = argv.indexOf("supervise");
    if (at > 0 && argv[at - 1] === "lab" && argv[at + 1] === "--state-dir" && argv[at + 2] === stateDir && (await running(Number(entry)))) {
      found.push(Number(entry));
    }
  }
  return found;
}

/**
 * Stops every supervisor of this state dir and so its children (SIGTERM, SIGKILL after 8 s);
 * returns the supervisors' pids and those of the children that ran.
 */
export async function stopSupervisor(stateDir: string): Promise<number[]> {
  const pids = await supervisorPids(stateDir);
  const supervision = pids.length > 0 ? await readSupervision(stateDir).catch(() => undefined) : undefined;
  const children = (await Promise.all((supervision?.processes ?? []).map(async (p) => (p.pid > 0 && (await running(p.pid)) ? p.pid : 0))))
    .filter((pid) => pid > 0);
  for (const pid of pids) signal(pid, "SIGTERM");
  const deadline = Date.now() + STOP_GRACE_MS;
  let left = pids;
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = (await Promise.all(left.map(async (pid) => ((await running(pid)) ? pid : 0)))).filter((pid) => pid > 0);
  }
  const still = new Set(await supervisorPids(stateDir));
  for (const pid of left) if (still.has(pid)) signal(pid, "SIGKILL");
  return [...pids, ...children];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone meanwhile
  }
}

interface Child {
  name: string;
  argv: string[];
  log: string;
  /** A server's pid goes to <name>.pid too, which `down` reads without state. */
  pidFile?: string;
  /** Whether it serves; only asked of a child another one waits for (`after`). */
  ready?: () => Promise<boolean>;
  /** What `ready` checks, for the log: "accept on unix:///…". */
  serves?: string;
  /** Its first start waits until this one is ready (the control planes wait for their store: they exit if it is
   * unreachable; the agents for the first control plane). */
  after?: Child;
  status: SupervisedProcess;
  /** The running process, until its exit event (then reaped). */
  process?: ChildProcess;
  /** A restart waiting out its backoff. */
  timer?: NodeJS.Timeout;
  shortRuns: number;
  startedAtMs: number;
}

export interface SuperviseOptions {
  /** FIRST_START_WAIT_MS unless given. */
  firstStartWaitMs?: number;
  /** Stops it as SIGTERM does (a supervisor run inside another process: the tests). */
  signal?: AbortSignal;
}

/** The supervisor's main loop (`bulkhead lab supervise`); resolves when SIGTERM, SIGINT or `options.signal` stops it. */
export async function supervise(stateDir: string, log: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
  options: SuperviseOptions = {}): Promise<void> {
  const firstStartWaitMs = options.firstStartWaitMs ?? FIRST_START_WAIT_MS;
  const state = await requireState(stateDir);
  const children: Child[] = [];
  const now = new Date().toISOString();
  let store: Child | undefined;
  if (state.store !== undefined) {
    const s = state.store;
    store = { name: CLICKHOUSE_PROCESS, argv: s.argv, log: s.log, pidFile: pidFileOf(stateDir, CLICKHOUSE_PROCESS),
      status: { name: CLICKHOUSE_PROCESS, pid: 0, restarts: 0, startedAt: now }, shortRuns: 0, startedAtMs: 0, ready: () => storeReady(s),
      serves: `answer an authenticated query on ${s.httpUrl}` };
    children.push(store);
  }
  let firstControlPlane: Child | undefined;
  for (const cp of controlPlanes(state)) {
    if (cp.argv === undefined) continue;
    const child: Child = { name: cp.name, argv: cp.argv, log: cp.log, pidFile: pidFileOf(stateDir, cp.name),
      status: { name: cp.name, pid: 0, restarts: 0, startedAt: now }, shortRuns: 0, startedAtMs: 0, ready: () => acceptsOn(cp.agents),
      serves: `accept on ${cp.agents}`,
      ...(store ? { after: store } : {}) };
    firstControlPlane ??= child;
    children.push(child);
  }
  for (const agent of state.agents) {
    if (agent.argv === undefined) continue;
    const name = agentProcess(agent.node);
    // An agent that found no control plane retries with a backoff growing to 5 s; one
    // started once the control plane takes connections is in at its first attempt.
    children.push({ name, argv: agent.argv, log: agent.log, status: { name, pid: 0, restarts: 0, startedAt: now }, shortRuns: 0, startedAtMs: 0,
      ...(firstControlPlane ? { after: firstControlPlane } : {}) });
  }
  if (children.length === 0) throw new Error(`lab supervise: the lab in ${stateDir} names no control plane or agent command to run`);
  // A supervisor started again after one was killed picks up the restart counts.
  const previous = await readSupervision(stateDir).catch(() => undefined);
  for (const c of children) c.status.restarts = previous?.processes.find((p) => p.name === c.name)?.restarts ?? 0;

  let stopping = false;
  let writes = Promise.resolve();
  const record = (): Promise<void> => {
    const snapshot: Supervision = { pid: process.pid, updatedAt: new Date().toISOString(), processes: children.map((c) => ({ ...c.status })) };
    writes = writes.then(() => writeSupervision(stateDir, snapshot)).catch((err: Error) => log(`lab supervise: writing supervision: ${err.message}`));
    return writes;
  };
  const note = (c: Child, line: string): void => {
    const stamped = `${new Date().toISOString()} lab supervise: ${line}`;
    log(stamped);
    try {
      appendFileSync(c.log, `${stamped}\n`);
    } catch {
      // the log folder went with `down`
    }
  };

  const start = (c: Child, restart: boolean): void => {
    if (stopping || c.status.held) return;
    const [cmd, ...args] = c.argv;
    let fd: number | undefined;
    try {
      fd = openSync(c.log, "a");
      // Detached: its own process group, so signals meant for the supervisor's group miss it.
      const child = spawn(cmd ?? "", args, { detached: true, stdio: ["ignore", fd, fd] });
      child.on("error", (err) => exited(c, `failed to start: ${err.message}`));
      child.on("exit", (code, sig) => {
        if (c.process === child) delete c.process;
        exited(c, sig ? `killed by ${sig}` : `exited with code ${code}`);
      });
      c.process = child;
      c.status = { ...c.status, pid: child.pid ?? 0, startedAt: new Date().toISOString(), ...(restart ? { restarts: c.status.restarts + 1 } : {}) };
      c.startedAtMs = Date.now();
      if (c.pidFile !== undefined && child.pid !== undefined) void writeFile(c.pidFile, `${child.pid}\n`).catch(() => {});
      if (restart) note(c, `${c.name} started again as pid ${c.status.pid} (restart ${c.status.restarts})`);
      else log(`${new Date().toISOString()} lab supervise: ${c.name} started as pid ${c.status.pid}`);
    } catch (err) {
      exited(c, `failed to start: ${(err as Error).message}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    void record();
  };

  const exited = (c: Child, how: string): void => {
    if (stopping) return;
    const ran = Date.now() - c.startedAtMs;
    if (c.status.held) {
      c.status = { ...c.status, lastExit: how };
      note(c, `${c.name} (pid ${c.status.pid}) ${how} after ${(ran / 1000).toFixed(1)} s; held, so not started again`);
      void record();
      return;
    }
    // After a stable run at once; a crash loop backs off.
    c.shortRuns = ran >= STABLE_RUN_MS ? 0 : c.shortRuns + 1;
    const delay = restartDelay(c.shortRuns);
    c.status = { ...c.status, lastExit: how };
    note(c, `${c.name} (pid ${c.status.pid}) ${how} after ${(ran / 1000).toFixed(1)} s; starting it again in ${delay} ms`);
    void record();
    c.timer = setTimeout(() => { delete c.timer; start(c, true); }, delay);
  };

  // `lab stop` and `lab start` (Lab.stop/start) change state.json's `held` and send SIGHUP:
  // a held process is not started again (scaled to zero); a released one starts now.
  const applyHolds = (held: ReadonlySet<string>): void => {
    for (const c of children) {
      if (held.has(c.name) && !c.status.held) {
        c.status = { ...c.status, held: true };
        if (c.timer) clearTimeout(c.timer);
        delete c.timer;
        note(c, `${c.name} held: not started again until \`lab start\``);
      } else if (!held.has(c.name) && c.status.held) {
        const { held: _held, ...rest } = c.status;
        c.status = rest;
        note(c, `${c.name} released`);
        if (!c.process && !c.timer) start(c, true);
      }
    }
    void record();
  };
  const reread = (): void => {
    void requireState(stateDir).then((s) => applyHolds(new Set(s.held ?? [])))
      .catch((err: Error) => log(`${new Date().toISOString()} lab supervise: SIGHUP: reading the state: ${err.message}`));
  };
  process.on("SIGHUP", reread);

  // Signal listeners hold no handle; this keeps the loop alive while no child or timer does.
  const keepAlive = setInterval(() => {}, 60_000);
  log(`${now} lab supervise: pid ${process.pid} supervising ${children.map((c) => c.name).join(", ")} (state ${stateDir})`);
  for (const c of children) if (state.held?.includes(c.name)) c.status.held = true;
  const afterReady = async (c: Child, dep: Child): Promise<void> => {
    const deadline = Date.now() + firstStartWaitMs;
    let waited = 0;
    while (!stopping && !(await (dep.ready?.() ?? Promise.resolve(true)))) {
      if (Date.now() >= deadline) {
        const how = dep.status.held ? "held by `lab stop`" : dep.status.lastExit !== undefined ? `its last run ${dep.status.lastExit}` : `pid ${dep.status.pid}`;
        note(c, `${c.name}: ${dep.name} did not ${dep.serves ?? "serve"} within ${firstStartWaitMs / 1000} s (${how}); starting ${c.name} without it`);
        break;
      }
      if (waited++ % 100 === 0) log(`${new Date().toISOString()} lab supervise: ${c.name} waits for ${dep.name} to ${dep.serves ?? "serve"}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    start(c, false);
  };
  for (const c of children) {
    if (c.after) void afterReady(c, c.after);
    else start(c, false);
  }
  await record();
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      for (const c of children) if (c.timer) clearTimeout(c.timer);
      process.off("SIGHUP", reread);
      log(`${new Date().toISOString()} lab supervise: ${sig}: no more restarts; stopping ${children.map((c) => `${c.name} pid ${c.status.pid}`).join(", ")}`);
      process.off("SIGTERM", onTerm);
      process.off("SIGINT", onInt);
      void stopChildren(children.flatMap((c) => (c.process ? [c.process] : []))).then(resolve);
    };
    const onTerm = () => stop("SIGTERM");
    const onInt = () => stop("SIGINT");
    process.once("SIGTERM", onTerm);
    process.once("SIGINT", onInt);
    if (options.signal?.aborted) stop("aborted");
    options.signal?.addEventListener("abort", () => stop("aborted"), { once: true });
  });
  clearInterval(keepAlive);
  await writes;
}

/** SIGTERM to each, SIGKILL to those left after CHILD_STOP_MS; resolves when all have exited (and were reaped). */
async function stopChildren(procs: readonly ChildProcess[]): Promise<void> {
  await Promise.all(procs.map((p) => new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) { resolve(); return; }
    const timer = setTimeout(() => p.kill("SIGKILL"), CHILD_STOP_MS);
    p.once("exit", () => { clearTimeout(timer); resolve(); });
    p.kill("SIGTERM");
  })));
}

/** Whether something accepts connections on the control plane's agent address (unix://PATH). */
function acceptsOn(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ path: address.replace(/^unix:\/\//, "") });
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}

export interface WaitStartedOptions {
  /** A pid that does not count (the one just stopped by `lab restart`). */
  notPid?: number;
  /** Whether the new process serves (healthz, GetStatus). */
  ready: () => Promise<boolean>;
  timeoutMs: number;
  /** "agent on node node1", for errors. */
  what: string;
  /** Fail at the first exit seen (`up`: nothing has exited before); otherwise wait through restarts until the deadline. */
  failOnExit?: boolean;
}

/** Waits until the supervisor runs `name` as a pid other than `notPid` and it is ready; returns that pid. */
export async function waitStarted(stateDir: string, name: string, opts: WaitStartedOptions): Promise<number> {
  const deadline = Date.now() + opts.timeoutMs;
  let last = "the supervisor has not reported it yet";
  for (;;) {
    const s = await readSupervision(stateDir);
    const p = s?.processes.find((x) => x.name === name);
    if (s !== undefined && !(await running(s.pid))) {
      throw new Error(`${opts.what}: the lab's supervisor (pid ${s.pid}) is not running; see its log in ${path.join(stateDir, LOGS_DIR, SUPERVISOR_LOG)}`);
    }
    if (p !== undefined) {
      if (opts.failOnExit && p.lastExit !== undefined) {
        throw new Error(`${opts.what} ${p.lastExit}`);
      }
      if (p.pid > 0 && p.pid !== opts.notPid && (await running(p.pid))) {
        if (await opts.ready()) return p.pid;
        last = `pid ${p.pid} runs but is not ready`;
      } else {
        last = p.lastExit !== undefined ? `its last run ${p.lastExit}` : `pid ${p.pid} is not running`;
      }
    }
    if (Date.now() > deadline) throw new Error(`${opts.what} not up after ${opts.timeoutMs / 1000} s: ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
