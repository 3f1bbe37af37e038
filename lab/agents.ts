// One bulkhead agent per lab node, run inside the node netns as a DaemonSet pod with
// hostNetwork would run on a real node, by the lab's supervisor (supervisor.ts), which
// starts it again when it exits. The command line comes from `agentCommand` alone, so it can
// change in one place; `lab up` and `lab restart` wait for each agent's /healthz.
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { repoRoot } from "../config/install.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";
import { netnsEnterArgv, netnsExecArgv, run } from "./netns.js";
import { LOGS_DIR, type LabAgent, type LabNode } from "./state.js";
import { agentProcess, waitStarted } from "./supervisor.js";
import { CA_CERT, nodeCertFile, nodeKeyFile } from "../tls/certs-command.js";

export const AGENT_METRICS_PORT = 9387;
export const AGENT_HEALTH_TIMEOUT_MS = 20_000;
/** The agent's own bounds for --drain-interval (agent/config.ts), checked by `up` before it builds anything. */
export const DRAIN_INTERVAL_RANGE_MS = { min: 1, max: 3_600_000 } as const;

export interface AgentCommandContext {
  node: string;
  netns: string;
  repoRoot: string;
  /** BPF pin folder that `lab down` removes (the agent's, if it takes one as a flag). */
  pinDir: string;
  exportFile?: string;
  /** The control plane's agent address (unix:///…), when the lab runs one. */
  controlplane?: string;
  /** The node's certificate, its key and the CA, when the control plane serves mutual TLS. */
  tls?: { cert: string; key: string; ca: string };
  /** --drain-interval: how often the agent drains its flow maps; the agent's default (1 s) when absent. */
  drainIntervalMs?: number;
}

export type AgentCommand = (ctx: AgentCommandContext) => string[];

/** The agent command line for one node (the one place to change it). */
export const agentCommand: AgentCommand = (ctx) => netnsEnterArgv(ctx.netns, [
  process.execPath,
  ...AGENT_NODE_FLAGS,
  path.join(ctx.repoRoot, "dist", "cli", "main.js"),
  "agent",
  "--node", ctx.node,
  "--metrics-addr", `0.0.0.0:${AGENT_METRICS_PORT}`,
  "--bpf-dir", path.join(ctx.pinDir, ctx.node),
  ...(ctx.exportFile !== undefined ? ["--export-file", ctx.exportFile] : []),
  ...(ctx.controlplane !== undefined ? ["--controlplane", ctx.controlplane] : []),
  ...(ctx.tls !== undefined ? ["--tls-cert", ctx.tls.cert, "--tls-key", ctx.tls.key, "--tls-ca", ctx.tls.ca] : []),
  ...(ctx.drainIntervalMs !== undefined ? ["--drain-interval", String(ctx.drainIntervalMs)] : []),
]);

export interface AgentSpecOptions {
  stateDir: string;
  pinDir: string;
  exportDir?: string;
  controlplane?: string;
  /** Folder of `bulkhead certs` output: agents then use mutual TLS with their node's certificate. */
  tlsDir?: string;
  drainIntervalMs?: number;
  command?: AgentCommand;
}

/**
 * Every node's agent as the supervisor runs it (command line from `command`, default
 * agentCommand; log `<stateDir>/logs/agent-<node>.log`); pid 0 until it has started.
 */
export async function agentSpecs(nodes: readonly LabNode[], opts: AgentSpecOptions): Promise<LabAgent[]> {
  const logs = path.join(opts.stateDir, LOGS_DIR);
  await mkdir(logs, { recursive: true });
  if (opts.exportDir !== undefined) await mkdir(opts.exportDir, { recursive: true });
  const command = opts.command ?? agentCommand;
  return nodes.map((node) => {
    const agent: LabAgent = { node: node.name, pid: 0, log: path.join(logs, `agent-${node.name}.log`) };
    if (opts.exportDir !== undefined) agent.exportFile = path.join(opts.exportDir, `${node.name}.jsonl`);
    const ctx: AgentCommandContext = { node: node.name, netns: node.netns, repoRoot, pinDir: opts.pinDir };
    if (agent.exportFile !== undefined) ctx.exportFile = agent.exportFile;
    if (opts.controlplane !== undefined) ctx.controlplane = opts.controlplane;
    if (opts.drainIntervalMs !== undefined) ctx.drainIntervalMs = opts.drainIntervalMs;
    if (opts.tlsDir !== undefined) {
      ctx.tls = { cert: path.join(opts.tlsDir, nodeCertFile(node.name)), key: path.join(opts.tlsDir, nodeKeyFile(node.name)),
        ca: path.join(opts.tlsDir, CA_CERT) };
    }
    const argv = command(ctx);
    if (argv.length === 0) throw new Error(`agent command for node ${node.name} is empty`);
    agent.argv = argv;
    return agent;
  });
}

/**
 * Waits until the supervisor runs the node's agent (a pid other than `notPid`) and its
 * /healthz answers; returns the pid. `failOnExit`: an exit is a failure (`up`).
 */
export async function waitAgentHealthy(stateDir: string, node: LabNode, agent: LabAgent,
  opts: { notPid?: number; failOnExit?: boolean; timeoutMs?: number } = {}): Promise<number> {
  const timeoutMs = opts.timeoutMs ?? AGENT_HEALTH_TIMEOUT_MS;
  try {
    return await waitStarted(stateDir, agentProcess(node.name), {
      ...(opts.notPid !== undefined ? { notPid: opts.notPid } : {}),
      ...(opts.failOnExit !== undefined ? { failOnExit: opts.failOnExit } : {}),
      what: `agent on node ${node.name}`, timeoutMs, ready: () => healthy(node),
    });
  } catch (err) {
    throw new Error(`${(err as Error).message} (http://127.0.0.1:${AGENT_METRICS_PORT}/healthz in netns ${node.netns}; `
      + `command: ${(agent.argv ?? []).join(" ")})${await logTail(agent.log)}`);
  }
}

export async function healthy(node: LabNode): Promise<boolean> {
  const url = `http://127.0.0.1:${AGENT_METRICS_PORT}/healthz`;
  const result = await run(netnsExecArgv(node.netns, ["curl", "-sf", "--max-time", "1", url]), { allowFail: true });
  return result.code === 0;
}

async function logTail(file: string, lines = 20): Promise<string> {
  const text = await readFile(file, "utf8").catch(() => "");
  const tail = text.trimEnd().split("\n").slice(-lines).join("\n");
  return tail ? `\n--- last lines of ${file} ---\n${tail}` : `\n(${file} is empty)`;
}
