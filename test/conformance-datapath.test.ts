// NetworkPolicy conformance on the real datapath: every case of the shared conformance file
// run by the conformance runner against the lab (agents, control plane, eBPF), audit mode
// that drops nothing and marks exactly the would-be denials, and an allowed connection that
// survives policy churn. Before those, on the same lab while it observes, the engine's own
// plumbing: probers on every protocol (and that they do see a drop), policy files, labels;
// and, with no lab, the wait for enforcement against a stand-in control plane and the match
// of drop records to probes. On the enforcing lab, a denied probe is judged from the
// datapath's DROPPED record of its own 5-tuple, not from its timeout.
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { parse as parseYaml } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  describeCase, MODEL_NAMESPACES, MODEL_PODS, ModelCluster, parseConformanceCases, runConformance,
  type ConformanceCase, type ConformanceModel, type ModelPlacement,
} from "../lab/conformance/cases.js";
import type { Protocol } from "../controlplane/metadata/objects.js";
import { cliMain, repoRoot } from "../config/install.js";
import { DatapathEngine, MODE_ANNOTATION, retryTimeout, type LabModelPod, type ProbeOutcome } from "../lab/conformance/datapath.js";
import { DropMatcher, type ProbeTuple } from "../lab/conformance/drops.js";
import { DEFAULT_UI_ADDRESS } from "../lab/controlplane.js";
import { EnforcementWatch } from "../lab/enforcement.js";
import { cnpFileName, policyFileName, policyFiles } from "../lab/netpol-files.js";
import { parseRequest, sctpInitPacket, sctpInitToken } from "../lab/prober.js";
import { type FlowRecord, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import {
  FlowFilter, GetFlowsRequest, ObserverServiceService,
  type GetFlowsResponse, type GetStatusResponse, type NodeStatus, type ObserverServiceServer,
} from "../proto/gen/bulkhead/v1/observer.js";
import { testPinDir } from "./harness/testbed.js";
// Agents pin their datapath under it (bpffs); lab down removes it.
const PIN_DIR = testPinDir("bh-conformance-datapath");

/** Distinct from the other suites' lab control planes. */
const OBSERVER = "127.0.0.1:22460";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

// ---- no lab: the prober's wire and packets, the enforcement wait -----------------------------

describe("prober wire and SCTP packets", () => {
  it("carries the token in an SCTP INIT's initiate tag and initial TSN, with a valid header", () => {
    const packet = sctpInitPacket(20001, 80, "0123456789abcdef");
    expect(packet.readUInt16BE(0)).toBe(20001);
    expect(packet.readUInt16BE(2)).toBe(80);
    expect(packet.readUInt8(12)).toBe(1);
    expect(packet.readUInt16BE(14)).toBe(20);
    expect(sctpInitToken(packet)).toBe("0123456789abcdef");
    expect(sctpInitToken(Buffer.concat([packet.subarray(0, 12), Buffer.from([0, 3, 0, 20])]))).toBeUndefined();
  });

  it("refuses requests it cannot run, naming the field", () => {
    expect(parseRequest('{"id":1,"op":"probe","to":"10.96.0.10","port":80,"protocol":"TCP","sport":20001,"token":"0123456789abcdef","timeoutMs":500}').request)
      .toMatchObject({ op: "probe", sport: 20001 });
    expect(() => parseRequest('{"id":1,"op":"probe","to":"nowhere","port":80,"protocol":"TCP","sport":20001,"token":"0123456789abcdef","timeoutMs":500}')).toThrow(/to: expected an IP address/);
    // The engine picks the source port (it must know the probe's 5-tuple), from its own range.
    expect(() => parseRequest('{"id":1,"op":"probe","to":"10.96.0.10","port":80,"protocol":"TCP","token":"0123456789abcdef","timeoutMs":500}')).toThrow(/sport: expected a source port 20000-32000, got undefined/);
    expect(() => parseRequest('{"id":1,"op":"probe","to":"10.96.0.10","port":80,"protocol":"TCP","sport":40000,"token":"0123456789abcdef","timeoutMs":500}')).toThrow(/sport: expected a source port 20000-32000, got 40000/);
    expect(() => parseRequest('{"id":2,"op":"received","token":"xyz","waitMs":5}')).toThrow(/token: expected 16 lowercase hex digits/);
    expect(() => parseRequest('{"id":3,"op":"dance"}')).toThrow(/op: expected "probe" or "received"/);
  });
});

describe("probe timeouts", () => {
  const outcome = (cause: ProbeOutcome["cause"]): ProbeOutcome => ({ ok: cause === "reply", cause, detail: cause, sport: 20001 });
  async function judge(causes: ProbeOutcome["cause"][]): Promise<{ result: ProbeOutcome; scales: number[]; retries: number }> {
    const scales: number[] = [];
    let retries = 0;
    const result = await retryTimeout(async (scale) => { scales.push(scale); return outcome(causes[scales.length - 1]!); }, () => retries++);
    return { result, scales, retries };
  }

  it("probes a timed-out pair once more with five times the timeout, since a loaded machine can take over 1 s for a handshake", async () => {
    expect(await judge(["timeout", "reply"])).toEqual({ result: outcome("reply"), scales: [1, 5], retries: 1 });
  });

  it("still judges a pair denied when the second probe times out too, and a drop record denied at once", async () => {
    expect(await judge(["timeout", "timeout"])).toEqual({ result: outcome("timeout"), scales: [1, 5], retries: 1 });
    expect(await judge(["drop-record"])).toEqual({ result: outcome("drop-record"), scales: [1], retries: 0 });
    expect(await judge(["reply"])).toEqual({ result: outcome("reply"), scales: [1], retries: 0 });
  });
});

/** A flow record of `protocol` src:sport > dst:dport with `verdict`, as the control plane streams it. */
function record(protocol: number, src: string, sport: number, dst: string, dport: number, verdict = Verdict.VERDICT_DROPPED): FlowRecord {
  return {
    node: "node2", point: 2, reporter: 2, interface: "lxc0", ifindex: 7, packets: 1n, bytes: 60n, verdict, sequence: 1n, verdictReason: 1,
    ip: { source: src, destination: dst, version: 1 },
    l4: { protocol, protocolName: String(protocol), sourcePort: sport, destinationPort: dport, icmpType: 0, icmpCode: 0 },
  };
}

describe("drop records to probes (no lab)", () => {
  // x/a (10.244.1.2) probes x/b's Service 10.96.0.11, whose backend is 10.244.2.2, from port 20001.
  const tuple: ProbeTuple = { protocol: "TCP", source: "10.244.1.2", sport: 20001, destinations: ["10.244.2.2", "10.96.0.11"], dport: 80 };

  it("settles a probe with a DROPPED record of exactly its 5-tuple, after DNAT or before", async () => {
    for (const dst of ["10.244.2.2", "10.96.0.11"]) {
      const matcher = new DropMatcher();
      const { dropped } = matcher.expect(tuple);
      const drop = record(6, "10.244.1.2", 20001, dst, 80);
      expect(matcher.onRecord(drop)).toBe(true);
      expect(await dropped).toBe(drop);
      expect(matcher.pending).toBe(0);
    }
  });

  it("takes no drop of another 5-tuple, nor a record that is not a drop, for the probe", async () => {
    const matcher = new DropMatcher();
    const { dropped, cancel } = matcher.expect(tuple);
    let settled = false;
    void dropped.then(() => { settled = true; });
    const others = [
      record(6, "10.244.1.2", 20002, "10.244.2.2", 80), // another source port (another probe)
      record(6, "10.244.1.3", 20001, "10.244.2.2", 80), // another source pod
      record(6, "10.244.1.2", 20001, "10.244.2.3", 80), // another peer
      record(6, "10.244.1.2", 20001, "10.244.2.2", 81), // another port
      record(17, "10.244.1.2", 20001, "10.244.2.2", 80), // another protocol
      record(6, "10.244.2.2", 80, "10.244.1.2", 20001), // the reply direction
      record(6, "10.244.1.2", 20001, "10.244.2.2", 80, Verdict.VERDICT_AUDIT), // audit: forwarded
      record(6, "10.244.1.2", 20001, "10.244.2.2", 80, Verdict.VERDICT_FORWARDED),
    ];
    for (const r of others) expect(matcher.onRecord(r), JSON.stringify(r.l4)).toBe(false);
    await sleep(10);
    expect(settled).toBe(false);
    expect(matcher.pending).toBe(1);
    cancel();
    expect(matcher.pending).toBe(0);
    // Once the probe is decided, a late record of its 5-tuple settles nothing.
    expect(matcher.onRecord(record(6, "10.244.1.2", 20001, "10.244.2.2", 80))).toBe(false);
  });
});

/** A stand-in control plane whose GetNodes answers whatever `nodes` holds at the time. */
async function fakeObserver(nodes: () => NodeStatus[]): Promise<{ address: string; close: () => void }> {
  const server = new grpc.Server();
  const unimplemented = (_call: unknown, cb: (err: grpc.ServiceError) => void) => cb({ code: grpc.status.UNIMPLEMENTED } as grpc.ServiceError);
  const impl: ObserverServiceServer = {
    getNodes: (_call, cb) => cb(null, { nodes: nodes() }),
    getStatus: unimplemented,
    getFlowMap: unimplemented,
    policyWhatIf: unimplemented,
    suggestPolicies: unimplemented,
    getFlows: (call) => call.end(),
  };
  server.addService(ObserverServiceService, impl);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(),
    (err, p) => (err ? reject(err) : resolve(p))));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

const node = (name: string, version: number, latest: number, connected = true): NodeStatus => ({
  name, connected, version: "", records: 0n, capabilities: [], policyVersion: BigInt(version), policyVersionLatest: BigInt(latest),
});

describe("waiting for enforcement (stand-in control plane)", () => {
  it("returns once every node enforces a version newer than the one before the change, and not before", async () => {
    // The stand-in moves on by the GetNodes calls it answered, not by the clock (a busy
    // machine must not skip a stage): the first 5 see version 3 everywhere (before the
    // change), the next 8 see node2 still on 3 while 4 is the latest, then both enforce 4.
    const answered: string[] = [];
    const fake = await fakeObserver(() => {
      const stage = answered.length < 5 ? "before" : answered.length < 13 ? "node2 lags" : "both on 4";
      answered.push(stage);
      if (stage === "before") return [node("node1", 3, 3), node("node2", 3, 3)];
      if (stage === "node2 lags") return [node("node1", 4, 4), node("node2", 3, 4)];
      return [node("node1", 4, 4), node("node2", 4, 4), node("elsewhere", 1, 4, false)];
    });
    const watch = new EnforcementWatch(fake.address, ["node1", "node2"]);
    try {
      expect(await watch.latest()).toBe(3n);
      const version = await watch.waitEnforced({ after: 3n, timeoutMs: 5000, settleMs: 100 });
      expect(version).toBe(4n);
      // It read through every stage and returned only after both nodes enforced 4.
      expect(new Set(answered)).toEqual(new Set(["before", "node2 lags", "both on 4"]));
      expect(answered.at(-1)).toBe("both on 4");
    } finally {
      watch.close();
      fake.close();
    }
  });

  it("names the node that lags and the one that is not connected", async () => {
    const fake = await fakeObserver(() => [node("node1", 5, 5), node("node2", 4, 5), node("node3", 5, 5, false)]);
    const watch = new EnforcementWatch(fake.address, ["node1", "node2", "node3", "node4"]);
    try {
      await expect(watch.waitEnforced({ after: 4n, timeoutMs: 300 })).rejects.toThrow(
        /node2: enforces version 4, latest is 5; node3: agent not connected; node4: unknown to the control plane/);
    } finally {
      watch.close();
      fake.close();
    }
  });

  it("says so when the control plane never compiled the change", async () => {
    const fake = await fakeObserver(() => [node("node1", 7, 7), node("node2", 7, 7)]);
    const watch = new EnforcementWatch(fake.address, ["node1", "node2"]);
    try {
      await expect(watch.waitEnforced({ after: 7n, timeoutMs: 300 })).rejects.toThrow(/newest policy version is still 7/);
      expect(await watch.waitEnforced({ timeoutMs: 1000, settleMs: 0 })).toBe(7n);
    } finally {
      watch.close();
      fake.close();
    }
  });
});

// ---- driving the engine outside the runner -----------------------------------------------------

/** Case actions through the runner's own parser and model cluster, as runConformance applies them. */
class Scenario {
  private cluster: ModelCluster | undefined;
  readonly model: ConformanceModel;

  constructor(readonly engine: DatapathEngine, ports: number[], protocols: Protocol[]) {
    this.model = { namespaces: MODEL_NAMESPACES, pods: MODEL_PODS, ports, protocols };
  }

  async setup(): Promise<ModelPlacement> {
    const placement = await this.engine.setup(this.model);
    this.cluster = new ModelCluster(this.model, placement);
    return placement;
  }

  async do(actions: unknown[]): Promise<void> {
    const cluster = this.cluster;
    if (!cluster) throw new Error("setup() first");
    const [parsed] = parseConformanceCases([{ id: "scenario", model: { ports: this.model.ports, protocols: this.model.protocols }, steps: [{ do: actions, probes: [] }] }]);
    const resolved = (parsed?.steps[0]?.actions ?? []).map((a) => cluster.apply(a));
    await this.engine.apply(resolved, cluster.objects());
  }
}

function pod(engine: DatapathEngine, key: string): LabModelPod {
  const found = engine.modelPods.find((p) => p.key === key);
  if (!found) throw new Error(`no model pod ${key}`);
  return found;
}

function firstDocument(file: string): Record<string, unknown> {
  return parseYaml(fs.readFileSync(file, "utf8").split("\n---\n")[0] ?? "") as Record<string, unknown>;
}

// ---- reading the lab's records, a long-lived stream ------------------------------------------

/** "xa>xb" of a flow's two ends: pods, or the model Service s-<ns>-<pod> for a destination seen before DNAT. */
function pairOf(r: FlowRecord): string | undefined {
  const src = r.source;
  const dst = r.destination;
  if (!src?.podName || !dst) return undefined;
  let to = dst.podName ? `${dst.namespace}${dst.podName}` : undefined;
  const svc = /^([a-z0-9-]+)\/s-([a-z0-9]+)-([a-z0-9]+)$/.exec(dst.service);
  if (to === undefined && svc) to = `${svc[2]}${svc[3]}`;
  return to === undefined ? undefined : `${src.namespace}${src.podName}>${to}`;
}

function flows(engine: DatapathEngine, request: GetFlowsRequest): Promise<FlowRecord[]> {
  const client = engine.observerClient();
  return new Promise((resolve, reject) => {
    const out: FlowRecord[] = [];
    const call = client.getFlows(request);
    call.on("data", (res: GetFlowsResponse) => { if (res.flow) out.push(res.flow); });
    call.on("error", (err) => { client.close(); reject(err); });
    call.on("end", () => { client.close(); resolve(out); });
  });
}

/** Pairs with AUDIT flows to `port`/TCP since `since`, once `want` are all there (or 20 s passed) and one more drain. */
async function auditedPairs(engine: DatapathEngine, since: Date, port: number, want: readonly string[]): Promise<string[]> {
  const request = GetFlowsRequest.fromPartial({
    allow: [FlowFilter.fromPartial({ verdict: [Verdict.VERDICT_AUDIT], protocol: ["TCP"], destinationPort: [port] })],
    since: { seconds: BigInt(Math.floor(since.getTime() / 1000)), nanos: (since.getTime() % 1000) * 1e6 },
  });
  const pairs = async () => new Set((await flows(engine, request)).map(pairOf).filter((p): p is string => p !== undefined));
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const seen = await pairs();
    if (want.every((p) => seen.has(p))) break;
    await sleep(500);
  }
  await sleep(2500);
  return [...(await pairs())].sort();
}

const STREAM_CLIENT = `
const net = require("node:net");
const [host, port] = process.argv.slice(1);
const chunk = Buffer.alloc(1024, 0x61);
let sent = 0, echoed = 0;
const out = (o) => process.stdout.write(JSON.stringify(o) + "\\n");
const sock = net.connect({ host, port: Number(port) });
sock.on("connect", () => {
  out({ event: "connected", sport: sock.localPort });
  setInterval(() => { sock.write(chunk); sent += chunk.length; }, 5);
  setInterval(() => out({ sent, echoed }), 50);
});
sock.on("data", (d) => { echoed += d.length; });
sock.on("error", (e) => out({ event: "error", code: e.code || e.message }));
sock.on("close", () => { out({ event: "closed" }); process.exit(1); });
process.on("SIGTERM", () => { out({ event: "stopped", sent, echoed }); process.exit(0); });
`;

/** One TCP connection from a pod that writes 1 KiB every 5 ms and counts the echo. */
class Stream {
  sent = 0;
  echoed = 0;
  /** Everything but progress: "connected", then (we hope) only "stopped". */
  readonly events: string[] = [];
  private constructor(private readonly child: ChildProcess) {
    let buffered = "";
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
        const line = JSON.parse(buffered.slice(0, nl)) as { event?: string; code?: string; sent?: number; echoed?: number };
        buffered = buffered.slice(nl + 1);
        if (line.event !== undefined) this.events.push(line.code ? `${line.event} ${line.code}` : line.event);
        if (line.sent !== undefined) this.sent = line.sent;
        if (line.echoed !== undefined) this.echoed = line.echoed;
      }
    });
  }

  static async start(engine: DatapathEngine, from: string, host: string, port: number): Promise<Stream> {
    const child = await engine.lab.spawn(from, [process.execPath, "-e", STREAM_CLIENT, host, String(port)], { stdio: ["ignore", "pipe", "inherit"] });
    return new Stream(child);
  }

  async until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`${what} (sent ${this.sent} B, echoed ${this.echoed} B, events: ${this.events.join(", ")})`);
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGTERM");
    await exited;
  }
}

/** Listens on `address` unless something else already does (then it is taken all the same). */
async function holdPort(address: string): Promise<{ release: () => Promise<void> }> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  const server = net.createServer((socket) => socket.destroy());
  const listening = await new Promise<boolean>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => (err.code === "EADDRINUSE" ? resolve(false) : reject(err)));
    server.listen({ host, port }, () => resolve(true));
  });
  return { release: () => (listening ? new Promise((resolve) => server.close(() => resolve())) : Promise.resolve()) };
}

// ---- one lab for the plumbing, then conformance, audit and churn --------------------------------

/** NetworkPolicy cases, then ClusterNetworkPolicy cases (which mix both kinds). */
const CASE_FILES = ["netpol-cases.json", "cnp-cases.json"];

function loadCases(): ConformanceCase[] {
  return CASE_FILES.flatMap((name) => {
    const file = path.join(repoRoot, "..", "shared", "conformance", name);
    if (!fs.existsSync(file)) {
      throw new Error(`the conformance cases file ${file} is missing (it is shared/conformance/${name} beside the repository)`);
    }
    return parseConformanceCases(JSON.parse(fs.readFileSync(file, "utf8")));
  });
}

// Bringing a lab up and down costs 10-30 s on this machine, so both blocks share one:
// it comes up in observe mode, its pods serving every case's ports (and the plumbing's 80,
// 81 on TCP, UDP and SCTP), for the plumbing; the enforcing block then switches the model
// namespaces to enforce, and each case's setup() resets it to no policies and default labels.
describe("on one conformance lab", () => {
  const cases = loadCases();
  let dir: string;
  let engine: DatapathEngine;
  const log: string[] = [];

  beforeAll(async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npx tsc -p . first");
    dir = tempDir("bh-conf-");
    // ui: false, and the lab's default UI port taken while it comes up: a web UI it does not
    // need must not stop it (another lab, or anything else, may hold 127.0.0.1:4388).
    engine = new DatapathEngine({ stateDir: path.join(dir, "state"), pinDir: PIN_DIR, observer: OBSERVER, mode: "observe", ui: false,
      log: (line) => log.push(line) });
    const port = await holdPort(DEFAULT_UI_ADDRESS);
    try {
      await engine.prepare(cases.map((c) => c.model));
    } finally {
      await port.release();
    }
  });

  afterAll(async () => {
    // How denials were judged (drop records, or timeouts when none came): where this file's time goes.
    if (engine) console.log(`conformance-datapath probes: ${engine.probeCauses}`);
    await engine?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  // ---- the engine's plumbing on the observe-mode lab ----------------------------------------------

  describe("conformance engine plumbing (observe mode: nothing is denied)", () => {
    let scenario: Scenario;
    let placement: ModelPlacement;

    beforeAll(async () => {
      expect(engine.mode).toBe("observe");
      scenario = new Scenario(engine, [80, 81], ["TCP", "UDP", "SCTP"]);
      placement = await scenario.setup();
    });

    it("came up with no web UI (ui: false) while the lab's default UI port was taken", async () => {
      expect((await engine.lab.status()).controlplane?.ui).toBeUndefined();
    });

    it("places 9 pods over both nodes, each with its own Service, and says where", () => {
      expect(placement.pods.map((p) => `${p.namespace}${p.name}`)).toEqual(["xa", "xb", "xc", "ya", "yb", "yc", "za", "zb", "zc"]);
      expect(new Set(placement.pods.map((p) => p.node))).toEqual(new Set(["node1", "node2"]));
      expect(placement.nodes.map((n) => n.name)).toEqual(["node1", "node2"]);
      for (const p of placement.pods) expect(p.ips[0]).toMatch(/^10\.244\.[12]\.\d+$/);
      expect(new Set(engine.modelPods.map((p) => p.clusterIP)).size).toBe(9);
    });

    it("connects every pair through the destination's Service on every port and protocol", async () => {
      for (const protocol of ["TCP", "UDP", "SCTP"] as const) {
        for (const port of [80, 81]) expect([...(await engine.probe(port, protocol))]).toEqual([]);
      }
    });

    it("sees a drop on the way as a failed probe of exactly that pair, on TCP, UDP and SCTP", async () => {
      // A drop inside pod x/b's own netns (a lab namespace), for packets from x/a only.
      const table = `table inet bh_conformance_test {\n chain input {\n  type filter hook input priority 0; policy accept;\n  ip saddr ${pod(engine, "xa").ip} drop\n }\n}\n`;
      const added = await engine.lab.exec("x/b", ["nft", "-f", "-"], { input: table });
      expect(added.code, added.stderr).toBe(0);
      try {
        for (const protocol of ["TCP", "UDP", "SCTP"] as const) expect([...(await engine.probe(80, protocol))]).toEqual(["xa>xb"]);
        // Not the datapath's drop: no record of it, so the probe is judged by its timeout.
        expect(await engine.probePair("xa", "xb", 80, "TCP", 1000)).toMatchObject({ ok: false, cause: "timeout" });
      } finally {
        await engine.lab.exec("x/b", ["nft", "delete", "table", "inet", "bh_conformance_test"]);
      }
      expect([...(await engine.probe(80, "TCP"))]).toEqual([]);
    });

    it("writes each policy as a NetworkPolicy file the control plane reads, with the lab's pod addresses for the placeholders", async () => {
      await scenario.do([{ create: {
        name: "cidrs", namespace: "x", podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Egress"],
        egress: [{ to: [{ ipBlock: { cidr: "<podIP:y/b>/32" } }, { ipBlock: { cidr: "<slash4-net-of-podIP:x/b>/4", except: ["<podIP:z/c>/32"] } }] }],
      } }]);
      const file = path.join(engine.manifests, policyFileName("x", "cidrs"));
      const doc = firstDocument(file) as { apiVersion: string; kind: string; metadata: unknown; spec: { egress: { to: unknown[] }[] } };
      expect(doc.apiVersion).toBe("networking.k8s.io/v1");
      expect(doc.kind).toBe("NetworkPolicy");
      expect(doc.metadata).toEqual({ name: "cidrs", namespace: "x" });
      expect(doc.spec.egress[0]?.to).toEqual([
        { ipBlock: { cidr: `${pod(engine, "yb").ip}/32`, except: [] } },
        { ipBlock: { cidr: "0.0.0.0/4", except: [`${pod(engine, "zc").ip}/32`] } },
      ]);
      await scenario.do([{ update: { name: "cidrs", namespace: "x", podSelector: {}, policyTypes: ["Ingress"], ingress: [] } }]);
      expect((firstDocument(file).spec as { ingress: unknown[]; egress: unknown[] })).toMatchObject({ policyTypes: ["Ingress"], ingress: [], egress: [] });
      await scenario.do([{ create: { name: "second", namespace: "z", podSelector: {}, policyTypes: ["Egress"], egress: [] } }]);
      expect(await policyFiles(engine.manifests)).toEqual([policyFileName("x", "cidrs"), policyFileName("z", "second")]);
      await sleep(1200); // the control plane rescans its folder every 500 ms
      const status = await new Promise<GetStatusResponse>((resolve, reject) => {
        const client = engine.observerClient();
        client.getStatus({}, (err, res) => { client.close(); if (err || !res) reject(err ?? new Error("no status")); else resolve(res); });
      });
      expect(status.metadataErrors).toEqual([]);
      await scenario.do([{ delete_all_policies: true }]);
      expect(await policyFiles(engine.manifests)).toEqual([]);
    });

    it("writes each ClusterNetworkPolicy as a file the control plane reads; an invalid one is named in status", async () => {
      await scenario.do([{ create_cnp: {
        name: "guard", tier: "Admin", priority: 5, subject: { namespaces: { matchLabels: { ns: "x" } } },
        egress: [{ name: "no-yb", action: "Deny", to: [{ networks: ["<podIP:y/b>/32"] }] }],
      } }]);
      const file = path.join(engine.manifests, cnpFileName("guard"));
      const doc = firstDocument(file) as { apiVersion: string; kind: string; metadata: unknown; spec: { egress: { to: unknown[] }[] } };
      expect(doc).toMatchObject({ apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name: "guard" } });
      expect(doc.spec.egress[0]?.to).toEqual([{ networks: [`${pod(engine, "yb").ip}/32`] }]);
      // Written by hand, as a user would: the CRD would refuse priority 5000.
      fs.writeFileSync(path.join(engine.manifests, "cnp-broken.yaml"), "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: broken}\nspec: {tier: Admin, priority: 5000, subject: {namespaces: {}}}\n");
      await sleep(1200); // the control plane rescans its folder every 500 ms
      const status = await new Promise<GetStatusResponse>((resolve, reject) => {
        const client = engine.observerClient();
        client.getStatus({}, (err, res) => { client.close(); if (err || !res) reject(err ?? new Error("no status")); else resolve(res); });
      });
      expect(status.metadataErrors).toEqual(["ClusterNetworkPolicy broken: spec.priority: expected an integer 0-1000, got 5000 (ignored)"]);
      await scenario.do([{ delete_all_cnps: true }]);
      expect(fs.readdirSync(engine.manifests).filter((n) => n.startsWith("cnp-"))).toEqual([]);
    });

    it("changes labels through the lab (kubernetes.io/metadata.name stays), and setup() restores the defaults", async () => {
      await scenario.do([
        { add_ns_labels: { ns: "y", labels: { team: "blue" } } },
        { set_ns_labels: { ns: "z", labels: { other: "1" } } },
        { add_pod_labels: { pod: "x/b", labels: { pod2: "updated" } } },
        { set_pod_labels: { pod: "y/c", labels: { pod: "c", only: "this" } } },
        { create: { name: "left-over", namespace: "y", podSelector: {}, policyTypes: ["Ingress"], ingress: [] } },
      ]);
      let status = await engine.lab.status();
      const nsLabels = (ns: string) => status.namespaces.find((n) => n.name === ns)?.labels;
      const podLabels = (ns: string, name: string) => status.pods.find((p) => p.namespace === ns && p.name === name)?.labels;
      expect(nsLabels("y")).toEqual({ ns: "y", team: "blue", "kubernetes.io/metadata.name": "y" });
      expect(nsLabels("z")).toEqual({ other: "1", "kubernetes.io/metadata.name": "z" });
      expect(podLabels("x", "b")).toEqual({ pod: "b", pod2: "updated" });
      expect(podLabels("y", "c")).toEqual({ pod: "c", only: "this" });
      expect((firstDocument(path.join(engine.manifests, "ns-z.yaml")).metadata as { labels: unknown }).labels)
        .toEqual({ other: "1", "kubernetes.io/metadata.name": "z" });

      await scenario.setup(); // same model: the lab's pods are kept, reset to a case's start
      status = await engine.lab.status();
      for (const ns of ["x", "y", "z"]) expect(nsLabels(ns)).toEqual({ ns, "kubernetes.io/metadata.name": ns });
      for (const p of engine.modelPods) expect(podLabels(p.namespace, p.name)).toEqual({ pod: p.name });
      expect(await policyFiles(engine.manifests)).toEqual([]);
    });

    it("annotates the model namespaces with their bulkhead.io/mode, and setMode changes it", async () => {
      const annotations = () => (firstDocument(path.join(engine.manifests, "ns-x.yaml")).metadata as { annotations?: unknown }).annotations;
      expect(annotations()).toEqual({ [MODE_ANNOTATION]: "observe" });
      await engine.setMode("audit");
      expect(annotations()).toEqual({ [MODE_ANNOTATION]: "audit" });
      await engine.setMode("observe");
      expect(annotations()).toEqual({ [MODE_ANNOTATION]: "observe" });
    });
  });

  // ---- conformance, audit and churn on the enforcing datapath --------------------------------------

  describe("NetworkPolicy and ClusterNetworkPolicy on the enforcing datapath", () => {
    // The plumbing's lab, its model namespaces now enforcing (waited for on every node).
    beforeAll(async () => {
      await engine.setMode("enforce");
    });

    for (const c of cases) {
      it(`conformance ${c.id}: ${c.name}`, async () => {
        log.length = 0;
        const report = await runConformance([c], engine, { leaveUp: true });
        const result = report.cases[0];
        expect(result?.passed, [...(result ? describeCase(result) : []), "engine log:", ...log].join("\n")).toBe(true);
      }, 120_000);
    }

    it("judges a denied probe from the datapath's DROPPED record of its own 5-tuple, an allowed one from its reply", async () => {
      const scenario = new Scenario(engine, [80], ["TCP", "UDP", "SCTP"]);
      await scenario.setup();
      // x/b admits nothing: every probe to it is dropped at its node's to_pod, after DNAT.
      await scenario.do([{ create: { name: "deny-xb", namespace: "x", podSelector: { matchLabels: { pod: "b" } }, policyTypes: ["Ingress"], ingress: [] } }]);
      const xa = pod(engine, "xa");
      const xb = pod(engine, "xb");
      for (const protocol of ["TCP", "UDP", "SCTP"] as const) {
        // Both at once from x/a, so records of x/a's other probe are about in the same drains.
        const [denied, allowed] = await Promise.all([engine.probePair("xa", "xb", 80, protocol, 5000), engine.probePair("xa", "xc", 80, protocol, 5000)]);
        expect(denied, protocol).toMatchObject({ ok: false, cause: "drop-record" });
        expect(denied.detail, protocol).toContain(`DROPPED ${protocol} ${xa.ip}:${denied.sport} > ${xb.ip}:80`);
        expect(allowed, protocol).toMatchObject({ ok: true, cause: "reply" });
        expect(allowed.sport).not.toBe(denied.sport);
      }
      expect([...(await engine.probe(80, "UDP"))].sort()).toEqual(["xa>xb", "xc>xb", "ya>xb", "yb>xb", "yc>xb", "za>xb", "zb>xb", "zc>xb"]);
    }, 120_000);

    it("audit mode drops nothing and marks exactly the pairs enforce mode denies as AUDIT (e2e-01)", async () => {
      const c = cases.find((x) => x.id === "e2e-01");
      const step = c?.steps[0];
      const probe = step?.probes[0];
      if (!c || !step || !probe) throw new Error("the cases file has no case e2e-01 with a step and a probe");
      await engine.setMode("audit");
      try {
        const since = new Date();
        const placement = await engine.setup(c.model);
        const cluster = new ModelCluster(c.model, placement);
        await engine.apply(step.actions.map((a) => cluster.apply(a)), cluster.objects());
        expect([...(await engine.probe(probe.port, probe.protocol))]).toEqual([]);
        const expected = [...probe.denied].sort();
        expect(expected.length).toBeGreaterThan(0);
        expect(await auditedPairs(engine, since, probe.port, expected)).toEqual(expected);
      } finally {
        await engine.setMode("enforce");
      }
    }, 120_000);

    it("an allowed long-lived TCP connection keeps streaming, unreset, through 20 policy updates", async () => {
      const scenario = new Scenario(engine, [80], ["TCP"]);
      let stream: Stream | undefined;
      try {
        await scenario.setup();
        // x/a admits namespace y on 80/TCP only; the stream is y/a → s-x-a.
        await scenario.do([{ create: { name: "allow-y-to-xa", namespace: "x", podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Ingress"],
          ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }], ports: [{ port: 80, protocol: "TCP" }] }] } }]);
        stream = await Stream.start(engine, "y/a", pod(engine, "xa").clusterIP, 80);
        const s = stream;
        await s.until("the stream did not start", () => s.echoed > 0);
        // Each update changes the policy of one end of the stream (or of a bystander), never its verdict.
        const churn = (i: number): Record<string, unknown> => {
          const verb = i < 3 ? "create" : "update";
          if (i % 3 === 0) {
            return { [verb]: { name: "churn-in", namespace: "x", podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Ingress"],
              ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "z" } } }], ports: [{ port: 1000 + i, protocol: "TCP" }] }] } };
          }
          if (i % 3 === 1) {
            return { [verb]: { name: "churn-out", namespace: "y", podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Egress"],
              egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: "x" } } }], ports: [{ port: 80, protocol: "TCP" }] },
                { to: [{ namespaceSelector: { matchLabels: { ns: "z" } } }], ports: [{ port: 2000 + i, protocol: "TCP" }] }] } };
          }
          return { [verb]: { name: "churn-z", namespace: "z", podSelector: { matchLabels: { pod: "c" } }, policyTypes: ["Ingress"],
            ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }], ports: [{ port: 3000 + i, protocol: "TCP" }] }] } };
        };
        for (let i = 0; i < 20; i++) {
          await scenario.do([churn(i)]);
          const mark = s.echoed;
          await s.until(`data stopped flowing after policy update ${i + 1}`, () => s.echoed >= mark + 16 * 1024);
        }
        expect(s.events).toEqual(["connected"]);
        // The policies were in force meanwhile: new connections get exactly their verdicts.
        expect([...(await engine.probe(80, "TCP"))].sort()).toEqual([
          "xa>zc", "xb>xa", "xb>zc", "xc>xa", "xc>zc", "ya>yb", "ya>yc", "ya>za", "ya>zb", "ya>zc",
          "yb>zc", "yc>zc", "za>xa", "za>zc", "zb>xa", "zb>zc", "zc>xa",
        ]);
        await stream.stop();
        expect(s.events).toEqual(["connected", "stopped"]);
        expect(s.sent - s.echoed).toBeLessThan(64 * 1024);
      } finally {
        await stream?.stop();
      }
    }, 120_000);
  });
});
