// Issue "Datapath": on a real two-node lab with one agent per node, every flow record
// must equal the packets that crossed the pod veths, at every point that saw them.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync, type ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { up, type Lab, type LabStatus, type PodStatus } from "../lab/lab.js";
import { native } from "../native/index.js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { LAB_DRAIN_MS, NOTHING_MORE_MS, observations, readExports, sleep, waitFor } from "./harness/flows.js";
import { cliMain } from "../config/install.js";
import { holdCensusLockForFile } from "./harness/census.js";
import { testPinDir } from "./harness/testbed.js";

// The BPF census lock for the whole file (harness/census.ts): the file compares the machine's BPF
// program and link counts with those before its lab.
holdCensusLockForFile();
// Agents pin their datapath under it (bpffs); lab down removes it.
const PIN_DIR = testPinDir("bh-capture");

const TOPOLOGY = `
nodes: 2
namespaces:
  - name: cap
pods:
  - { namespace: cap, name: client, node: node1, labels: { app: client } }
  - { namespace: cap, name: server, node: node2, labels: { app: server }, ports: [ { name: udp, port: 5000, protocol: UDP }, { name: tcp, port: 8080, protocol: TCP } ] }
  - { namespace: cap, name: neighbour, node: node1, labels: { app: neighbour } }
`;

let dir: string;
let exportDir: string;
let lab: Lab;
let status: LabStatus;
let client: PodStatus;
let server: PodStatus;
let baseline: { programs: number; links: number };
const probe = (args: string[]) => [process.execPath, cliMain, "probe", ...args];

function pod(name: string): PodStatus {
  const p = status.pods.find((x) => x.name === name);
  if (!p) throw new Error(`lab has no pod ${name}`);
  return p;
}

/**
 * Waits for a `bulkhead probe` server's `"listening":true` line: it prints it once its socket
 * is bound and listening, so a client started afterwards is not refused (a fixed 500 ms
 * sleep here was not enough at load average 24).
 */
function listening(server: ChildProcess, what: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = "";
    const done = (err?: Error) => {
      clearTimeout(timer);
      server.stdout?.off("data", onData);
      server.off("exit", onExit);
      if (err) reject(err); else resolve();
    };
    const onData = (d: Buffer) => { out += d.toString(); if (out.includes('"listening":true')) done(); };
    const onExit = (code: number | null) => done(new Error(`${what} exited (${code}) before listening: ${out}`));
    const timer = setTimeout(() => done(new Error(`${what}: not listening within ${timeoutMs} ms: ${out}`)), timeoutMs);
    server.stdout?.on("data", onData);
    server.once("exit", onExit);
  });
}

/** Waits until the summed observations stop changing and have reached `want` packets at `points` places. */
async function settled(match: (r: FlowRecord) => boolean, wantPackets: bigint, points: number) {
  const [only] = await settledAll([{ match, wantPackets, points }]);
  if (!only) throw new Error("unreachable");
  return only;
}

/** settled() for several flows at once: one wait for all, then one more drain for all. */
async function settledAll(specs: readonly { match: (r: FlowRecord) => boolean; wantPackets: bigint; points: number }[]) {
  const read = () => {
    const records = readExports(exportDir);
    return specs.map((s) => observations(records, s.match));
  };
  await waitFor(read, (all) => all.every((o, i) => o.size >= (specs[i]?.points ?? 0)
    && [...o.values()].every((x) => x.packets >= (specs[i]?.wantPackets ?? 0n))), 6000);
  await sleep(NOTHING_MORE_MS); // the next drains: nothing more may arrive
  return read();
}

describe("flow capture on a two-node lab", () => {
  beforeAll(async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
    baseline = native().kernelObjectCounts();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-capture-"));
    exportDir = path.join(dir, "flows");
    fs.writeFileSync(path.join(dir, "topology.yaml"), TOPOLOGY);
    // No web UI: nothing here reads it, and the lab's fixed UI port may be taken.
    lab = await up({ stateDir: path.join(dir, "state"), exportDir, topology: path.join(dir, "topology.yaml"),
      pinDir: PIN_DIR, controlplane: { ui: false }, drainIntervalMs: LAB_DRAIN_MS });
    status = await lab.status();
    client = pod("client");
    server = pod("server");
    expect(client.node).not.toBe(server.node);
  });

  afterAll(async () => {
    await lab?.down();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("runs every agent with the drain interval `up` was given", () => {
    for (const agent of status.agents) {
      const argv = fs.readFileSync(`/proc/${agent.pid}/cmdline`, "utf8").split("\0");
      expect(argv.slice(argv.indexOf("--drain-interval"), argv.indexOf("--drain-interval") + 2), agent.node).toEqual(["--drain-interval", String(LAB_DRAIN_MS)]);
    }
  });

  it("counts K UDP datagrams of P bytes exactly at both points on both nodes (IPv4: P + 8 + 20 bytes each)", async () => {
    const K = 137n, P = 333n;
    await lab.exec(client, probe(["udp-send", "--to", server.ip, "--port", "5000", "--sport", "41001",
      "--count", String(K), "--size", String(P)]));
    const obs = await settled((r) => r.l4?.sourcePort === 41001 && r.ip?.destination === server.ip, K, 2);
    expect([...obs.keys()].sort()).toEqual([`${client.node}/from-pod`, `${server.node}/to-pod`]);
    for (const o of obs.values()) {
      expect(o.packets).toBe(K);
      expect(o.bytes).toBe(K * (P + 8n + 20n));
    }
  });

  it("counts the same over IPv6 with its 40-byte header", async () => {
    const K = 61n, P = 1000n;
    await lab.exec(client, probe(["udp-send", "--to", server.ipv6, "--port", "5000", "--sport", "41002",
      "--count", String(K), "--size", String(P)]));
    const obs = await settled((r) => r.l4?.sourcePort === 41002 && r.ip?.destination === server.ipv6, K, 2);
    expect([...obs.keys()].sort()).toEqual([`${client.node}/from-pod`, `${server.node}/to-pod`]);
    for (const o of obs.values()) {
      expect(o.packets).toBe(K);
      expect(o.bytes).toBe(K * (P + 8n + 40n));
    }
  });

  it("records both directions of a TCP connection with SYN, ACK and FIN", async () => {
    const srv = await lab.spawn(server, probe(["tcp-serve", "--port", "8080"]));
    try {
      await listening(srv, "tcp-serve on the server pod");
      const res = await lab.exec(client, probe(["tcp-connect", "--to", server.ip, "--port", "8080", "--size", "5000"]));
      const conn = JSON.parse(res.stdout) as { ok: boolean; sport: number };
      expect(conn.ok).toBe(true);
      const forward = await settled((r) => r.l4?.protocol === 6 && r.l4.sourcePort === conn.sport
        && r.ip?.source === client.ip, 3n, 2);
      const reverse = await settled((r) => r.l4?.protocol === 6 && r.l4.destinationPort === conn.sport
        && r.ip?.destination === client.ip, 3n, 2);
      for (const obs of [forward, reverse]) {
        expect(obs.size).toBe(2);
        for (const o of obs.values()) expect([...o.tcpFlags]).toEqual(expect.arrayContaining(["SYN", "ACK", "FIN"]));
      }
      // The same packets at both ends of the underlay: equal counts on both nodes.
      const [a, b] = [...forward.values()];
      expect(a?.packets).toBe(b?.packets);
      expect(a?.bytes).toBe(b?.bytes);
    } finally {
      srv.kill("SIGTERM");
    }
  });

  it("captures ICMP echo (v4 and v6) with its protocol, type and code", async () => {
    await lab.exec(client, ["ping", "-c", "3", "-i", "0.2", "-W", "2", server.ip]);
    await lab.exec(client, ["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", server.ipv6]);
    const echo = await settled((r) => r.l4?.protocol === 1 && r.l4.icmpType === 8 && r.ip?.source === client.ip, 3n, 2);
    const reply = await settled((r) => r.l4?.protocol === 1 && r.l4.icmpType === 0 && r.ip?.destination === client.ip, 3n, 2);
    const echo6 = await settled((r) => r.l4?.protocol === 58 && r.l4.icmpType === 128 && r.ip?.source === client.ipv6, 2n, 2);
    for (const o of echo.values()) expect(o.packets).toBe(3n);
    for (const o of reply.values()) expect(o.packets).toBe(3n);
    for (const o of echo6.values()) expect(o.packets).toBe(2n);
    const names = readExports(exportDir).filter((r) => r.ip?.source === client.ip && r.l4?.protocol === 1);
    expect(names.every((r) => r.l4?.protocolName === "ICMPv4" && r.l4.icmpCode === 0)).toBe(true);
  });

  it("captures an SCTP packet sent over a raw socket, with its ports, and the listener receives it", async () => {
    const listener = await lab.spawn(server, probe(["sctp-listen", "--port", "7000"]));
    let heard = "";
    listener.stdout?.on("data", (d: Buffer) => { heard += d.toString(); });
    try {
      await listening(listener, "sctp-listen on the server pod");
      await lab.exec(client, probe(["sctp-send", "--to", server.ip, "--port", "7000", "--sport", "7001"]));
      const obs = await settled((r) => r.l4?.protocol === 132 && r.ip?.source === client.ip, 1n, 2);
      expect(obs.size).toBe(2);
      const rec = readExports(exportDir).find((r) => r.l4?.protocol === 132 && r.ip?.source === client.ip);
      expect(rec?.l4).toMatchObject({ protocolName: "SCTP", sourcePort: 7001, destinationPort: 7000 });
      for (const o of obs.values()) expect(o.packets).toBe(1n);
      expect(heard).toContain(`"from":"${client.ip}"`);
    } finally {
      listener.kill("SIGTERM");
    }
  });

  it("sees every new pod's traffic while 20 pods come and go under steady traffic, and leaks no program or link", async () => {
    const during = native().kernelObjectCounts();
    const steady = await lab.spawn(client, probe(["udp-send", "--to", server.ip, "--port", "5000", "--sport", "41003",
      "--count", "100000", "--rate", "200"]));
    let steadyOut = "";
    steady.stdout?.on("data", (d: Buffer) => { steadyOut += d.toString(); });
    const churned: { ip: string; node: string; sport: number }[] = [];
    try {
      for (let wave = 0; wave < 4; wave++) {
        const pods = await Promise.all([0, 1, 2, 3, 4].map((i) => lab.addPod({
          namespace: "cap", name: `churn-${wave}-${i}`, node: i % 2 ? "node1" : "node2", labels: { app: "churn" },
        })));
        await sleep(1000); // the agent must notice a new interface within 1 s
        await Promise.all(pods.map((p, i) => lab.exec(p, probe(["udp-send", "--to", server.ip, "--port", "5000",
          "--sport", String(42000 + wave * 10 + i), "--count", "5", "--size", "64"]))));
        churned.push(...pods.map((p, i) => ({ ip: p.ip, node: p.node, sport: 42000 + wave * 10 + i })));
        await Promise.all(pods.map((p) => lab.deletePod("cap", p.name)));
      }
    } finally {
      steady.kill("SIGTERM");
      await new Promise((r) => steady.once("exit", r));
    }
    const sent = BigInt((JSON.parse(steadyOut) as { count: number }).count);
    // Pod IPs are reused wave after wave, so each pod's traffic is told apart by its source port.
    const churnedObs = await settledAll(churned.map((c) => ({
      match: (r: FlowRecord) => r.ip?.source === c.ip && r.l4?.protocol === 17 && r.l4.sourcePort === c.sport, wantPackets: 5n, points: 2,
    })));
    for (const [i, c] of churned.entries()) {
      const obs = churnedObs[i];
      expect(obs?.get(`${c.node}/from-pod`)?.packets, `from-pod packets of churned pod ${c.ip}`).toBe(5n);
      expect(obs?.get(`${server.node}/to-pod`)?.packets, `to-pod packets from churned pod ${c.ip}`).toBe(5n);
    }
    const steadyObs = await settled((r) => r.l4?.sourcePort === 41003 && r.ip?.source === client.ip, sent, 2);
    for (const o of steadyObs.values()) expect(o.packets).toBe(sent);
    // Deleted pods' links are gone: the agents hold exactly what they held before the churn.
    const after = await waitFor(() => native().kernelObjectCounts(), (n) => n.links === during.links, 3000);
    expect(after.links).toBe(during.links);
    expect(after.programs).toBe(during.programs);
    // 16 s on a quiet machine (ci-12); 20 lab pods made and deleted one after another took
    // over 60 s at load average 12-20, so this test gets 180 s. Nothing in it is timed.
  }, 180_000);

  it("lab down leaves no namespace, link, program, pin or agent behind", async () => {
    await lab.down();
    const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" });
    expect(netns).not.toMatch(/^bh-/m);
    const counts = await waitFor(() => native().kernelObjectCounts(),
      (n) => n.links === baseline.links && n.programs === baseline.programs, 5000);
    expect(counts.links).toBe(baseline.links);
    expect(counts.programs).toBe(baseline.programs);
    expect(fs.existsSync(PIN_DIR)).toBe(false);
    expect(execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })).not.toContain(`--export-file ${exportDir}`);
  });
});
