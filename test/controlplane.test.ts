// Issue "Control plane": on the lab, the agents' records reach the control plane over
// gRPC and come out of `bulkhead observe` mapped onto pods, workloads, Services and nodes,
// with exact counts — across pod IP reuse, bad manifests and a control-plane outage.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { up, type Lab, type PodStatus } from "../lab/lab.js";
import { EnforcementWatch } from "../lab/enforcement.js";
import { FlowRecord, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";
import { LAB_DRAIN_MS, NOTHING_MORE_MS, sleep } from "./harness/flows.js";
import { cliMain } from "../config/install.js";
import { testPinDir } from "./harness/testbed.js";
// Agents pin their datapath under it (bpffs); lab down removes it.
const PIN_DIR = testPinDir("bh-controlplane");

const run = promisify(execFile);
const OBSERVER = "127.0.0.1:22450";
const TOPOLOGY = `
nodes: 2
namespaces:
  - name: web
    labels: { team: web }
workloads:
  - { namespace: web, name: frontend, kind: Deployment, replicas: 1, node: node1, labels: { app: frontend }, ports: [ { name: http, port: 8080 } ] }
  - { namespace: web, name: api, kind: Deployment, replicas: 1, node: node2, labels: { app: api }, ports: [ { name: dgram, port: 5000, protocol: UDP } ] }
  - { namespace: web, name: db, kind: StatefulSet, replicas: 1, node: node2, labels: { app: db }, ports: [ { name: dgram, port: 5000, protocol: UDP } ] }
services:
  - { namespace: web, name: api, selector: { app: api }, ports: [ { name: dgram, port: 53, targetPort: dgram, protocol: UDP } ] }
`;

let dir: string;
let lab: Lab;
/** The lab's CA: its control plane serves mutual TLS by default. */
let ca: string;
const cli = (args: string[]) => run(process.execPath, [cliMain, ...args, "--server", OBSERVER, "--tls-ca", ca],
  { maxBuffer: 64 * 1024 * 1024 });
const probe = (args: string[]) => [process.execPath, cliMain, "probe", ...args];

async function observe(args: string[]): Promise<FlowRecord[]> {
  const { stdout } = await cli(["observe", "-o", "json", "--all", ...args]);
  return stdout.split("\n").filter((l) => l.trim()).map((l) => FlowRecord.fromJSON(JSON.parse(l)));
}

const sum = (records: FlowRecord[], point: ObservationPoint) =>
  records.filter((r) => r.point === point).reduce((n, r) => n + r.packets, 0n);

async function pods(): Promise<PodStatus[]> {
  return (await lab.status()).pods;
}

async function podOf(workload: string): Promise<PodStatus> {
  const p = (await pods()).find((x) => x.name.startsWith(`${workload}-`));
  if (!p) throw new Error(`no pod of ${workload}`);
  return p;
}

/**
 * Adds or deletes a pod and waits until every node enforces the policy version compiled
 * from the manifests that followed: the control plane then knows the change, since it
 * applies the manifests to its cluster state and compiles in the same step
 * (controlplane/controlplane.ts), and a pod's address and labels are in the snapshot.
 */
async function podChange(change: () => Promise<unknown>): Promise<void> {
  const watch = new EnforcementWatch(OBSERVER, ["node1", "node2"], ca);
  try {
    const before = await watch.latest();
    await change();
    await watch.waitEnforced({ after: before });
  } finally {
    watch.close();
  }
}

/**
 * What the control plane holds for `args` whatever the ends are named, per point, node and
 * source: on a shortfall, whether records are missing or named otherwise (CI run 3 of
 * e23df39 counted 0 to_pod packets while node2 had delivered 268 records after the restart).
 */
async function shortfall(args: string[], restartedMs: number): Promise<string> {
  const groups = new Map<string, { records: number; packets: bigint; firstEndMs: number; lastEndMs: number }>();
  for (const r of await observe(args)) {
    const source = r.source?.podName ? `${r.source.namespace}/${r.source.podName}` : `address ${r.ip?.source ?? "?"}`;
    const key = `${ObservationPoint[r.point]} on ${r.node} from ${source}`;
    const endMs = Number(r.endTime?.seconds ?? 0n) * 1000 + Math.floor((r.endTime?.nanos ?? 0) / 1e6);
    const g = groups.get(key) ?? { records: 0, packets: 0n, firstEndMs: endMs, lastEndMs: endMs };
    g.records++;
    g.packets += r.packets;
    g.firstEndMs = Math.min(g.firstEndMs, endMs);
    g.lastEndMs = Math.max(g.lastEndMs, endMs);
    groups.set(key, g);
  }
  const lines = [...groups].map(([key, g]) => `${key}: ${g.records} records, ${g.packets} packets, ending ${g.firstEndMs - restartedMs} to ${g.lastEndMs - restartedMs} ms after the restart`);
  return `held for ${args.join(" ")} whatever the names: ${lines.length > 0 ? lines.join("; ") : "nothing"}`;
}

/** Waits until the control plane holds `want` packets at both points for `args`, then for anything more to arrive. */
async function settled(args: string[], want: bigint): Promise<FlowRecord[]> {
  let records: FlowRecord[] = [];
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    records = await observe(args);
    if (sum(records, ObservationPoint.OBSERVATION_POINT_FROM_POD) >= want
      && sum(records, ObservationPoint.OBSERVATION_POINT_TO_POD) >= want) break;
    await sleep(300);
  }
  await sleep(NOTHING_MORE_MS);
  return observe(args);
}

describe("control plane on the lab", () => {
  beforeAll(async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-cp-"));
    fs.writeFileSync(path.join(dir, "topology.yaml"), TOPOLOGY);
    lab = await up({ stateDir: path.join(dir, "state"), topology: path.join(dir, "topology.yaml"),
      pinDir: PIN_DIR, controlplane: { observer: OBSERVER, ui: false }, drainIntervalMs: LAB_DRAIN_MS }); // no web UI: nothing here reads it
    ca = (await lab.status()).controlplane?.ca ?? "(the lab recorded no CA)";
  });

  afterAll(async () => {
    await lab?.down();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("runs mutual TLS by default: agents connect with their node certificates, a plaintext client gets nothing", async () => {
    const status = JSON.parse((await cli(["status", "-o", "json"])).stdout) as { status: { agentsConnected?: number } };
    expect(status.status.agentsConnected).toBe(2);
    const cp = (await lab.status()).controlplane;
    expect(cp?.ca).toBe(path.join(dir, "state", "tls", "ca.crt"));
    const log = fs.readFileSync(cp?.log ?? "", "utf8").split("\n").filter((l) => l.includes('"agent connected"'))
      .map((l) => JSON.parse(l) as { node: string; certificate?: string });
    expect(new Set(log.map((l) => `${l.node} ${l.certificate}`))).toEqual(new Set(["node1 CN=node1", "node2 CN=node2"]));
    // The supervisor started the agents once the control plane took connections: each got in
    // at its first attempt, with no retry (backing off up to 5 s) before.
    for (const agent of (await lab.status()).agents) {
      const lines = fs.readFileSync(agent.log, "utf8").split("\n");
      const first = lines.findIndex((l) => l.includes('"connected to control plane"'));
      expect(first, `${agent.node}: connected`).toBeGreaterThanOrEqual(0);
      expect(lines.slice(0, first).filter((l) => l.includes('"control plane stream lost; reconnecting"')), agent.node).toEqual([]);
    }
    const plain = await run(process.execPath, [cliMain, "status", "--server", OBSERVER],
      { env: { ...process.env, BULKHEAD_TLS_CA: "", BULKHEAD_LAB_STATE_DIR: path.join(dir, "no-lab") } })
      .then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(plain?.code).toBe(1);
    expect(plain?.stderr).toMatch(/cannot reach the control plane|UNAVAILABLE/);
  });

  it("maps a cross-node flow through a Service ClusterIP onto pods, workloads, the Service and nodes, with exact counts", async () => {
    const frontend = await podOf("frontend");
    const api = await podOf("api");
    const svc = (await lab.status()).services.find((s) => s.name === "api");
    if (!svc) throw new Error("no Service web/api");
    const K = 23n;
    await lab.exec(frontend, probe(["udp-send", "--to", svc.clusterIP, "--port", "53", "--sport", "43001",
      "--count", String(K), "--size", "80"]));
    const records = await settled(["-n", "web", "--from-pod", "frontend-*", "--port", "43001"], K);
    const client = records.filter((r) => r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD);
    const server = records.filter((r) => r.point === ObservationPoint.OBSERVATION_POINT_TO_POD);
    expect(sum(client, ObservationPoint.OBSERVATION_POINT_FROM_POD)).toBe(K);
    expect(sum(server, ObservationPoint.OBSERVATION_POINT_TO_POD)).toBe(K);
    for (const r of records) {
      expect(r.source).toMatchObject({ namespace: "web", podName: frontend.name, workloadKind: "Deployment",
        workloadName: "frontend", node: "node1", ip: frontend.ip });
    }
    // At the client's veth the destination is still the ClusterIP; at the backend's, the pod after DNAT.
    for (const r of client) {
      expect(r.node).toBe("node1");
      expect(r.destination).toMatchObject({ namespace: "web", service: "web/api", ip: svc.clusterIP });
    }
    for (const r of server) {
      expect(r.node).toBe("node2");
      expect(r.destination).toMatchObject({ namespace: "web", podName: api.name, workloadKind: "Deployment",
        workloadName: "api", node: "node2", ip: api.ip });
    }
    const map = JSON.parse((await cli(["map", "-n", "web", "-o", "json"])).stdout) as { edges?: { source: string; destination: string; packets: string }[] };
    const edge = map.edges?.find((e) => e.source === "workload:web/Deployment/frontend" && e.destination === "service:web/api");
    expect(edge?.packets).toBe(String(K));
  });

  it("maps a pod-to-pod flow to the StatefulSet on the other node", async () => {
    const frontend = await podOf("frontend");
    const db = await podOf("db");
    await lab.exec(frontend, probe(["udp-send", "--to", db.ip, "--port", "5000", "--sport", "43002", "--count", "9"]));
    const records = await settled(["--to-pod", `web/${db.name}`, "--port", "43002"], 9n);
    expect(records.length).toBeGreaterThanOrEqual(2);
    for (const r of records) {
      expect(r.destination).toMatchObject({ podName: db.name, workloadKind: "StatefulSet", workloadName: "db", node: "node2" });
      expect(r.source).toMatchObject({ podName: frontend.name, node: "node1" });
    }
  });

  // Nothing listens on the receivers' port 5000: their port-unreachable errors are recorded
  // on the datagrams' flow in the reverse direction (native/bpf/README.md, ICMP errors), so
  // these tests count the sender's direction only (--from-pod).
  it("keeps earlier flows on the old pod and maps later ones to the new pod that took its IP", async () => {
    const frontend = await podOf("frontend");
    await podChange(() => lab.addPod({ namespace: "web", name: "old", node: "node2", labels: { app: "old" } }));
    const old = (await pods()).find((p) => p.name === "old");
    if (!old) throw new Error("no pod old");
    await lab.exec(frontend, probe(["udp-send", "--to", old.ip, "--port", "5000", "--sport", "43003", "--count", "4"]));
    await settled(["--from-pod", `web/${frontend.name}`, "--ip", old.ip, "--port", "43003"], 4n);
    // One at a time: a version compiled from the deletion alone must not pass for the new pod's.
    await podChange(() => lab.deletePod("web", "old"));
    await podChange(() => lab.addPod({ namespace: "web", name: "new", node: "node2", labels: { app: "new" } }));
    const fresh = (await pods()).find((p) => p.name === "new");
    expect(fresh?.ip).toBe(old.ip);
    await lab.exec(frontend, probe(["udp-send", "--to", old.ip, "--port", "5000", "--sport", "43004", "--count", "6"]));
    await settled(["--from-pod", `web/${frontend.name}`, "--ip", old.ip, "--port", "43004"], 6n);
    const before = await observe(["--from-pod", `web/${frontend.name}`, "--ip", old.ip, "--port", "43003"]);
    const after = await observe(["--from-pod", `web/${frontend.name}`, "--ip", old.ip, "--port", "43004"]);
    expect(before.length).toBeGreaterThanOrEqual(2);
    expect(after.length).toBeGreaterThanOrEqual(2);
    for (const r of before) expect(r.destination?.podName).toBe("old");
    for (const r of after) expect(r.destination?.podName).toBe("new");
    expect(before[0]?.destination?.podUid).not.toBe(after[0]?.destination?.podUid);
  });

  it("reports a bad manifest by file and keeps the last good state", async () => {
    const manifests = (await lab.status()).manifestsDir;
    const bad = path.join(manifests, "zz-broken.yaml");
    fs.writeFileSync(bad, "apiVersion: v1\nkind: Pod\nmetadata: { name: broken, namespace: web }\nspec: [unclosed\n");
    try {
      let metadataErrors: string[] = [];
      const deadline = Date.now() + 3000;
      while (Date.now() < deadline && metadataErrors.length === 0) {
        metadataErrors = (JSON.parse((await cli(["status", "-o", "json"])).stdout) as { status: { metadataErrors?: string[] } }).status.metadataErrors ?? [];
        if (metadataErrors.length === 0) await sleep(200);
      }
      expect(metadataErrors.join("\n")).toContain("zz-broken.yaml");
      // The rest of the cluster still resolves.
      const frontend = await podOf("frontend");
      const db = await podOf("db");
      await lab.exec(frontend, probe(["udp-send", "--to", db.ip, "--port", "5000", "--sport", "43005", "--count", "3"]));
      const records = await settled(["--from-pod", `web/${frontend.name}`, "--port", "43005"], 3n);
      for (const r of records) expect(r.destination?.podName).toBe(db.name);
    } finally {
      fs.rmSync(bad, { force: true });
    }
    let cleared = false;
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && !cleared) {
      cleared = ((JSON.parse((await cli(["status", "-o", "json"])).stdout) as { status: { metadataErrors?: string[] } }).status.metadataErrors ?? []).length === 0;
      if (!cleared) await sleep(200);
    }
    expect(cleared).toBe(true);
  });

  it("loses nothing when the control plane is killed for 20 s under steady traffic and restarted", async () => {
    const frontend = await podOf("frontend");
    const db = await podOf("db");
    // The lab's supervisor would start it again at once: hold it down (scale to zero), then SIGKILL.
    await lab.stop({ kind: "controlplane" }, { kill: true });
    // Steady traffic for the whole outage and a while after: 50 datagrams a second.
    const steady = await lab.spawn(frontend, probe(["udp-send", "--to", db.ip, "--port", "5000", "--sport", "43006",
      "--count", "100000", "--rate", "50"]));
    let out = "";
    steady.stdout?.on("data", (d: Buffer) => { out += d.toString(); });
    await sleep(20_000);
    const restartedMs = Date.now();
    await lab.start({ kind: "controlplane" });
    await sleep(3000); // agents reconnect (backoff ≤ 5 s) and send what they buffered
    steady.kill("SIGTERM");
    await new Promise((r) => steady.once("exit", r));
    const sent = BigInt((JSON.parse(out) as { count: number }).count);
    expect(sent).toBeGreaterThan(1000n);
    const records = await settled(["--from-pod", `web/${frontend.name}`, "--port", "43006"], sent);
    // On a shortfall the message carries what the control plane holds for the port by point,
    // node and source name, and its status (agents, refusals, losses, store errors). CI runs
    // of 09cf2a8 and e23df39 counted 46 and 0 to_pod packets of ~1,200 here, node2's records
    // arriving only after the query: grpc's channel backoff (uncapped then, growing to 120 s)
    // could hold an agent back ~10-20 s after a 20 s outage, past the 3 + 15 s this test
    // waits; it is capped at the agent's 5 s now (controlplane-stream.test.ts).
    const counted = { fromPod: sum(records, ObservationPoint.OBSERVATION_POINT_FROM_POD), toPod: sum(records, ObservationPoint.OBSERVATION_POINT_TO_POD) };
    const statusText = counted.fromPod === sent && counted.toPod === sent ? ""
      : `${await shortfall(["--port", "43006"], restartedMs)}; status: ${(await cli(["status", "-o", "json"])).stdout}`;
    expect(counted.fromPod, `from_pod packets counted of ${sent} sent; status: ${statusText}`).toBe(sent);
    expect(counted.toPod, `to_pod packets counted of ${sent} sent; status: ${statusText}`).toBe(sent);
    const after = JSON.parse((await cli(["status", "-o", "json"])).stdout) as
      { status: { agentsConnected?: number; losses?: { node: string; cause: string; count?: string }[] } };
    expect(after.status.agentsConnected).toBe(2);
    // Every loss counter is reported (proto3 JSON leaves a zero count out) and none is above zero.
    const losses = after.status.losses ?? [];
    expect(losses.map((l) => l.cause)).toEqual(expect.arrayContaining(["map_full", "ring_full", "buffer_full"]));
    expect(losses.filter((l) => (l.count ?? "0") !== "0")).toEqual([]);
  });
});
