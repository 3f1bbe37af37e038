// Issue 12 on the real kernel, scaled out: `lab up --store clickhouse --controlplanes 2`
// runs a clickhouse-server (started by the lab's supervisor, loopback only, its files in the
// state dir) and two control-plane replicas that share it; every agent is given both
// replicas. While a pod sends a known number of UDP datagrams to a pod on the other node,
// the replica both agents stream to is killed with SIGKILL. The agents move to the other
// replica and re-send what was not acknowledged; the store keeps each batch once, whichever
// replica wrote it. Afterwards the surviving replica serves exactly the datagrams sent, at
// FROM_POD and at TO_POD, and so does the killed one once the supervisor has started it again.
// Needs the kernel lock:  flock /tmp/bulkhead-kernel.lock npx vitest run test/lab-store-clickhouse.test.ts
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { runLab } from "../lab/cli.js";
import { controlPlaneReady, controlPlaneStatus } from "../lab/controlplane.js";
import { EnforcementWatch } from "../lab/enforcement.js";
import { down, type Lab, type LabStatus, up } from "../lab/lab.js";
import { listNetns, running } from "../lab/netns.js";
import { metric, parseMetrics } from "../lab/prometheus.js";
import { supervisorPids } from "../lab/supervisor.js";
import { AGENT_METRICS_PORT } from "../lab/agents.js";
import { FlowFilter } from "../proto/gen/bulkhead/v1/observer.js";
import { ObservationPoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { sleep } from "./harness/flows.js";
import { labFlows, pacedUdpSender, packetsAt } from "./harness/lab-flows.js";

vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const root = mkdtempSync(path.join(tmpdir(), "bh-lab-ch-"));
const stateDir = path.join(root, "state");
/** Replica 0's Observer API; replica 1's is this port + 2. */
const OBSERVER = "127.0.0.1:22590";
const CA = path.join(stateDir, "tls", "ca.crt");
const PORT = 9999;
const DATAGRAMS = 3000;
// An agent starts at replica sha256(node) % 2 (agent/controlplane/connection.ts) if that
// one answers: node2 and node3 both pick replica 0, so usually the agents share one replica
// from the start (the test checks what the replicas report, and joins them if not).
const NODES = ["node2", "node3"];
const TOPOLOGY = `nodes: [${NODES.join(", ")}]
pods:
  - {namespace: default, name: sender, node: ${NODES[0]}}
  - {namespace: default, name: receiver, node: ${NODES[1]}}
`;
// 10 datagrams every 20 ms: 6 s for 3000.
const SEND_JS = pacedUdpSender(PORT);

let lab: Lab | undefined;

interface Replica { observer: string; ca: string }


const toReceiver = [FlowFilter.fromPartial({ destinationPod: ["default/receiver"], destinationPort: [PORT], protocol: ["UDP"] })];
const FROM = ObservationPoint.OBSERVATION_POINT_FROM_POD;
const TO = ObservationPoint.OBSERVATION_POINT_TO_POD;
/** One line per record, so two replicas' answers compare as lists (the order is the store's). */
const lines = (records: FlowRecord[]) => records.map((r) => JSON.stringify(r, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))).sort();

async function nodesOn(cp: Replica): Promise<string[]> {
  const watch = new EnforcementWatch(cp.observer, [], cp.ca);
  try {
    return (await watch.nodeStatus()).filter((n) => n.connected).map((n) => n.name).sort();
  } finally {
    watch.close();
  }
}

/** An agent's bytes held for the control plane (buffered, or sent and not yet acknowledged) and whether its stream is up. */
async function agentBacklog(node: string): Promise<{ held: number; connected: number }> {
  const r = await lab!.nodeExec(node, ["curl", "-sf", "--max-time", "2", `http://127.0.0.1:${AGENT_METRICS_PORT}/metrics`]);
  if (r.code !== 0) return { held: -1, connected: 0 };
  const m = parseMetrics(r.stdout);
  return { held: metric(m, "bulkhead_agent_controlplane_buffer_bytes"), connected: metric(m, "bulkhead_agent_controlplane_connected") };
}

const topologyFile = path.join(root, "topology.yaml");
writeFileSync(topologyFile, TOPOLOGY);
const upOptions = { stateDir, topology: topologyFile, store: "clickhouse", controlplanes: 2, controlplane: { observer: OBSERVER, ui: false },
  removeLeftoverPins: true } as const;

afterAll(async () => {
  // Also after a failure: processes, ClickHouse's files, netns and pins.
  await down(stateDir, { removePins: true });
  rmSync(root, { recursive: true, force: true });
});

describe("lab up --store clickhouse when the server cannot start", () => {
  it("fails naming the server and its output, and leaves no process, netns or file behind", async () => {
    // A clickhouse-server first on PATH that exits at once; the supervisor inherits PATH.
    const bin = path.join(root, "bin");
    mkdirSync(bin);
    writeFileSync(path.join(bin, "clickhouse-server"), "#!/bin/sh\necho 'stand-in clickhouse-server: refusing to start' >&2\nexit 3\n", { mode: 0o755 });
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath ?? ""}`;
    try {
      await expect(up(upOptions)).rejects.toThrow(/ClickHouse server exited with code 3[\s\S]*stand-in clickhouse-server: refusing to start/);
    } finally {
      process.env.PATH = savedPath;
    }
    expect((await listNetns()).filter((n) => n.startsWith("bh-"))).toEqual([]);
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
    expect(await supervisorPids(stateDir)).toEqual([]);
  });
});

describe("lab up --store clickhouse --controlplanes 2", () => {
  let status: LabStatus;

  beforeAll(async () => {
    lab = await up(upOptions);
  });

  it("refuses bad --store and --controlplanes values, naming the flag, before touching the lab", async () => {
    let err = "";
    const io = { stdout: { write: () => {} }, stderr: { write: (t: string) => { err += t; } } };
    for (const [args, message] of [
      [["--controlplanes", "2"], /--controlplanes 2: replicas need a store they share; add --store clickhouse/],
      [["--controlplanes", "0"], /--controlplanes: expected an integer 1-8, got "0"/],
      [["--controlplanes", "two", "--store", "clickhouse"], /--controlplanes: expected an integer 1-8, got "two"/],
      [["--store", "postgres"], /--store: expected embedded or clickhouse, got "postgres"/],
      [["--store", "clickhouse", "--no-agents"], /--store clickhouse: the store is the control plane's, which --no-agents leaves out/],
    ] as const) {
      err = "";
      expect(await runLab(["up", ...args, "--state-dir", stateDir], io), args.join(" ")).toBe(2);
      expect(err).toMatch(message);
    }
    await expect(up({ stateDir, controlplanes: 2 })).rejects.toThrow(/controlplanes: 2 replicas need a store they share/);
    await expect(up({ stateDir, store: "clickhouse", controlplanes: 1.5 })).rejects.toThrow(/controlplanes: expected an integer 1-8, got 1\.5/);
    // The lab that is up was left alone.
    expect((await lab!.status()).problems).toEqual([]);
  });

  it("runs a ClickHouse server and two replicas on it, each listed by `lab status -o json` with pid, running and restarts", async () => {
    let out = "";
    const io = { stdout: { write: (t: string) => { out += t; } }, stderr: { write: (t: string) => { out += t; } } };
    expect(await runLab(["status", "-o", "json", "--state-dir", stateDir], io), out).toBe(0);
    status = JSON.parse(out) as LabStatus;
    expect(status.controlplanes?.map((c) => [c.index, c.name, c.observer, c.running, c.restarts])).toEqual([
      [0, "controlplane-0", OBSERVER, true, 0], [1, "controlplane-1", "127.0.0.1:22592", true, 0]]);
    expect(status.controlplane?.name).toBe("controlplane-0");
    expect(status.store).toMatchObject({ kind: "clickhouse", running: true, restarts: 0, dir: path.join(stateDir, "clickhouse") });
    expect(status.store?.kind === "clickhouse" ? status.store.url : "").toMatch(/^clickhouse:\/\/127\.0\.0\.1:\d+\/bulkhead$/);
    for (const cp of status.controlplanes ?? []) {
      expect((await controlPlaneStatus({ observer: cp.observer, ca: CA }, 5000)).store).toMatchObject({ kind: "clickhouse", error: "" });
    }
    // A replica named that does not exist is refused, naming those that do.
    expect(await runLab(["restart", "controlplane", "7", "--state-dir", stateDir], io)).toBe(1);
    expect(out).toMatch(/no replica "7"; the lab runs 0 \(controlplane-0\), 1 \(controlplane-1\)/);
  });

  it("counts exactly the datagrams sent, each once, across a kill -9 of the replica the agents stream to, on either replica", async () => {
    const replicas = (status.controlplanes ?? []).map((c) => ({ observer: c.observer, ca: CA }));
    // Both agents on one replica, so that one kill takes every agent's replica and the other
    // survives to serve. Where an agent starts depends also on which replica answered first
    // during `up`; a split is joined the way it would be in a cluster: restarting the other
    // replica sends its agents on to the next one, the victim.
    let on = await Promise.all(replicas.map(nodesOn));
    const victim = on[1]!.length > on[0]!.length ? 1 : 0;
    const survivor = 1 - victim;
    if (on[survivor]!.length > 0) {
      await lab!.restart({ kind: "controlplane", replica: survivor });
      const joinBy = Date.now() + 30_000;
      while ((on = await Promise.all(replicas.map(nodesOn)))[victim]!.length < NODES.length && Date.now() < joinBy) await sleep(100);
    }
    expect(on, "agents per replica").toEqual(victim === 0 ? [[...NODES].sort(), []] : [[], [...NODES].sort()]);
    const survivorBefore = (await lab!.status()).controlplanes![survivor]!;
    const receiver = (await lab!.status()).pods.find((p) => p.name === "receiver")!;
    const since = { seconds: BigInt(Math.floor(Date.now() / 1000) - 5), nanos: 0 };
    const startedMs = Date.now();
    const sending = lab!.exec("default/sender", [process.execPath, "-e", SEND_JS, receiver.ip, String(DATAGRAMS)]);

    // The kill falls mid-stream: the victim has stored some of the datagrams, not all.
    let before = 0n;
    while (before === 0n && Date.now() - startedMs < 20_000) {
      before = packetsAt(await labFlows(replicas[victim]!, { allow: toReceiver, since }), FROM);
      if (before === 0n) await sleep(100);
    }
    expect(before, "from_pod packets the victim stored before the kill").toBeGreaterThan(0n);
    expect(before, "the kill came after the traffic ended").toBeLessThan(BigInt(DATAGRAMS));
    const old = (await lab!.status()).controlplanes![victim]!.pid;
    process.kill(old, "SIGKILL");

    const sent = await sending;
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout.trim(), "datagrams the sender failed to send").toBe("0");

    // Waits until the survivor counts every datagram at both points AND no agent holds a
    // byte for the control plane (nothing buffered, nothing sent but unacknowledged) on a
    // stream that is up. Then no batch is left that could still arrive or be re-sent, so the
    // counts read after that are final: a duplicate would already be in them.
    const deadline = Date.now() + 60_000;
    let records: FlowRecord[] = [];
    let waitingFor = "";
    for (;;) {
      records = await labFlows(replicas[survivor]!, { allow: toReceiver, since }).catch(() => []);
      const backlog = await Promise.all(NODES.map(agentBacklog));
      const counted = packetsAt(records, FROM) >= BigInt(DATAGRAMS) && packetsAt(records, TO) >= BigInt(DATAGRAMS);
      if (counted && backlog.every((b) => b.held === 0 && b.connected === 1)) break;
      waitingFor = `from_pod ${packetsAt(records, FROM)}, to_pod ${packetsAt(records, TO)} of ${DATAGRAMS}; agents ${JSON.stringify(backlog)}`;
      if (Date.now() > deadline) throw new Error(`not settled after 60 s: ${waitingFor}`);
      await sleep(250);
    }
    records = await labFlows(replicas[survivor]!, { allow: toReceiver, since });
    expect(packetsAt(records, FROM), "sender's from_pod packets via the survivor").toBe(BigInt(DATAGRAMS));
    expect(packetsAt(records, TO), "receiver's to_pod packets via the survivor").toBe(BigInt(DATAGRAMS));
    // The agents moved to the survivor.
    expect(await nodesOn(replicas[survivor]!)).toEqual([...NODES].sort());

    // The supervisor started the killed replica again; it serves the same history.
    let after = await lab!.status();
    while (!(after.controlplanes![victim]!.pid !== old && after.controlplanes![victim]!.running && await controlPlaneReady(replicas[victim]!))) {
      if (Date.now() > deadline) throw new Error(`replica ${victim} not back: ${JSON.stringify(after.controlplanes![victim])}`);
      await sleep(100);
      after = await lab!.status();
    }
    expect(after.controlplanes![victim]).toMatchObject({ running: true, restarts: 1 });
    expect(after.controlplanes![survivor]).toMatchObject({ running: true, restarts: survivorBefore.restarts, pid: survivorBefore.pid });
    const again = await labFlows(replicas[victim]!, { allow: toReceiver, since });
    expect(packetsAt(again, FROM), "from_pod packets via the restarted replica").toBe(BigInt(DATAGRAMS));
    expect(packetsAt(again, TO), "to_pod packets via the restarted replica").toBe(BigInt(DATAGRAMS));
    expect(lines(again)).toEqual(lines(records));
  });

  it("`lab down` after the supervisor was killed stops the ClickHouse server and both replicas and removes the netns and the state dir's contents", async () => {
    const s = await lab!.status();
    const servers = [s.store?.kind === "clickhouse" ? s.store.pid : 0, ...(s.controlplanes ?? []).map((c) => c.pid)];
    const pids = [...servers, s.supervisor?.pid ?? 0];
    expect(pids.every((p) => p > 0)).toBe(true);
    // A failure down cannot count on: nothing supervises the servers any more (they run in
    // the machine's namespace, not the lab's netns); down finds them by their pid files.
    process.kill(s.supervisor!.pid, "SIGKILL");
    while (await running(s.supervisor!.pid)) await sleep(20);
    for (const pid of servers) expect(await running(pid), `server pid ${pid} runs on unsupervised`).toBe(true);
    await down(stateDir, { removePins: true });
    for (const pid of pids) expect(await running(pid), `pid ${pid}`).toBe(false);
    expect((await listNetns()).filter((n) => n.startsWith("bh-"))).toEqual([]);
    expect(existsSync(stateDir) ? readdirSync(stateDir) : []).toEqual([]);
  });
});
