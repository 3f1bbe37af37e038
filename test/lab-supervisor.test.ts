// The lab supervisor's first start of an agent (lab/supervisor.ts): it waits until the first
// control plane accepts on its agent socket, but not without end: a control plane that never
// serves has the agent started after the bound, with a line in the agent's log and the
// supervisor's naming what it waited for. No kernel: the supervisor runs in this process on
// a state whose "control plane" and "agent" are `sleep`s, their socket in a temp folder.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CONTROLPLANE_NAME, readSupervision, writeState, type LabState } from "../lab/state.js";
import { agentProcess, supervise } from "../lab/supervisor.js";
import { waitFor } from "./harness/wait.js";

let dir = "";
let stopSupervisor = new AbortController();
let supervisor: Promise<void> = Promise.resolve();
let socketServer: net.Server | undefined;

afterEach(async () => {
  stopSupervisor.abort();
  await supervisor;
  await new Promise<void>((resolve) => (socketServer ? socketServer.close(() => resolve()) : resolve()));
  socketServer = undefined;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A lab state with a control plane and one agent, both `sleep 60`; the agents' socket is `dir`/agents.sock. */
async function writeSleepingLab(): Promise<{ socket: string; agentLog: string }> {
  dir = mkdtempSync(path.join(os.tmpdir(), "bulkhead-lab-supervisor-"));
  const socket = path.join(dir, "agents.sock");
  const agentLog = path.join(dir, "agent.log");
  const state: LabState = {
    version: 1, stateDir: dir, createdAt: new Date().toISOString(), nodes: [], namespaces: [], workloads: [], pods: [], services: [],
    agents: [{ node: "node1", pid: 0, log: agentLog, argv: ["sleep", "60"] }],
    agentsEnabled: true, pinDir: path.join(dir, "pins"), nextNode: 1, rulesDigest: "",
    controlplane: { name: CONTROLPLANE_NAME, pid: 0, observer: "127.0.0.1:1", agents: `unix://${socket}`, log: path.join(dir, "controlplane.log"),
      argv: ["sleep", "60"] },
  };
  await writeState(state);
  return { socket, agentLog };
}

/** The agent's pid once the supervisor reports it started (fails after `timeoutMs`). */
async function agentStarted(timeoutMs: number): Promise<number> {
  const pid = async () => (await readSupervision(dir))?.processes.find((p) => p.name === agentProcess("node1"))?.pid ?? 0;
  return waitFor(pid, (p) => p > 0, timeoutMs, "the supervisor to report the agent started");
}

describe("the supervisor's first start of an agent", () => {
  it("starts the agent after the bound when the control plane never accepts, naming the socket it waited for", async () => {
    const { socket, agentLog } = await writeSleepingLab();
    const lines: string[] = [];
    stopSupervisor = new AbortController();
    supervisor = supervise(dir, (l) => lines.push(l), { firstStartWaitMs: 500, signal: stopSupervisor.signal });
    await agentStarted(15_000);
    const why = `agent/node1: controlplane did not accept on unix://${socket} within 0.5 s`;
    expect(lines.join("\n")).toContain(why);
    expect(readFileSync(agentLog, "utf8")).toContain(why);
  });

  it("starts the agent once the control plane accepts, within the bound, without that line", async () => {
    const { socket, agentLog } = await writeSleepingLab();
    const lines: string[] = [];
    stopSupervisor = new AbortController();
    supervisor = supervise(dir, (l) => lines.push(l), { firstStartWaitMs: 60_000, signal: stopSupervisor.signal });
    await waitFor(() => lines.join("\n"), (t) => t.includes(`agent/node1 waits for controlplane to accept on unix://${socket}`), 15_000,
      "the supervisor to say the agent waits for the control plane's socket");
    expect((await readSupervision(dir))?.processes.find((p) => p.name === agentProcess("node1"))?.pid ?? 0, "the agent's pid before the socket accepts").toBe(0);
    const server = net.createServer((c) => c.destroy());
    socketServer = server;
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    await agentStarted(15_000);
    expect(lines.join("\n")).not.toContain("did not accept");
    expect(readFileSync(agentLog, "utf8")).not.toContain("did not accept");
  });
});
