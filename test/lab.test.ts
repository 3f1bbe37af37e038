// The lab on the real kernel: namespaces, veths, routes, nftables Service DNAT, manifests.
// Runs without agents (startAgents: false) except for one stand-in agent that proves the
// start/health/stop path. Every lab is taken down in afterAll, also when a test fails.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChildProcess } from "node:child_process";
import { isLabNetns } from "../lab/addressing.js";
import { runLab } from "../lab/cli.js";
import { down, type Lab, up, type LabStatus, type PodStatus } from "../lab/lab.js";
import { netnsExecArgv, running } from "../lab/netns.js";
import { parseTopology } from "../lab/topology.js";
import { expandTopology } from "../lab/workloads.js";

const root = mkdtempSync(path.join(tmpdir(), "bh-lab-test-"));
const stateDir = path.join(root, "state");
const outsider = `bhlabkeep-${process.pid}`; // "bh" but not "bh-": the lab must not touch it
let lab: Lab;
let st: LabStatus;
const children: ChildProcess[] = [];

function labNetns(): string[] {
  const dir = "/run/netns";
  return existsSync(dir) ? readdirSync(dir).filter((n) => isLabNetns(n, ["node1", "node2", "node3"])) : [];
}

async function must(target: string, argv: string[]): Promise<string> {
  const r = await lab.exec(target, argv);
  if (r.code !== 0) throw new Error(`${target}: ${argv.join(" ")}: exit ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

const ref = (p: PodStatus) => `${p.namespace}/${p.name}`;
const podsOf = (status: LabStatus, ns: string, app: string) => status.pods.filter((p) => p.namespace === ns && p.labels.app === app);

const SERVER_JS = `const net = require("net");
const [name, port] = process.argv.slice(1);
net.createServer((s) => s.end(name + "\\n")).listen(Number(port), () => console.log("listening"));`;

const CLIENT_JS = `const net = require("net");
const [host, port, n] = process.argv.slice(1);
(async () => {
  const out = [];
  for (let i = 0; i < Number(n); i++) {
    out.push(await new Promise((resolve) => {
      const s = net.connect({ host, port: Number(port), timeout: 3000 });
      let d = "";
      s.on("data", (b) => (d += b));
      s.on("end", () => resolve(d.trim()));
      s.on("timeout", () => { s.destroy(); resolve("timeout"); });
      s.on("error", (e) => resolve("error:" + e.code));
    }));
  }
  console.log(JSON.stringify(out));
})();`;

/** Starts a TCP server in a pod that answers every connection with the pod's name. */
async function serve(pod: PodStatus, port: number): Promise<void> {
  const child = await lab.spawn(ref(pod), [process.execPath, "-e", SERVER_JS, pod.name, String(port)], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    let err = "";
    child.stdout?.on("data", (b: Buffer) => { if (b.toString().includes("listening")) resolve(); });
    child.stderr?.on("data", (b: Buffer) => { err += b.toString(); });
    child.on("exit", (code) => reject(new Error(`server in ${ref(pod)} exited ${code}: ${err}`)));
  });
}

async function connect(from: PodStatus, host: string, port: number, times: number): Promise<string[]> {
  const out = await must(ref(from), [process.execPath, "-e", CLIENT_JS, host, String(port), String(times)]);
  return JSON.parse(out) as string[];
}

beforeAll(async () => {
  execFileSync("ip", ["netns", "add", outsider]);
  // What a crashed run leaves behind: `up` must remove it.
  execFileSync("ip", ["netns", "add", "bh-pod-leftover-x"]);
  lab = await up({ stateDir, startAgents: false });
  st = await lab.status();
});

afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await down(stateDir);
  execFileSync("ip", ["netns", "del", outsider], { stdio: "ignore" });
  rmSync(root, { recursive: true, force: true });
});

describe("lab up (default topology)", () => {
  it("reports nodes, pods with IPv4 and IPv6 addresses, and services", () => {
    expect(st.nodes.map((n) => [n.name, n.ip])).toEqual([["node1", "172.30.0.11"], ["node2", "172.30.0.12"]]);
    expect(st.pods.length).toBeGreaterThanOrEqual(6);
    for (const pod of st.pods) {
      expect(Object.keys(pod)).toEqual(expect.arrayContaining(["namespace", "name", "ip", "ipv6", "node", "labels"]));
      const i = pod.node === "node1" ? 1 : 2;
      expect(pod.ip).toMatch(new RegExp(`^10\\.244\\.${i}\\.\\d+$`));
      expect(pod.ipv6).toMatch(new RegExp(`^fd00:244:0:${i}::[0-9a-f]+$`));
    }
    expect(new Set(st.pods.map((p) => p.node))).toEqual(new Set(["node1", "node2"]));
    expect(new Set(st.pods.map((p) => p.namespace))).toEqual(new Set(["shop", "monitoring"]));
    const frontend = podsOf(st, "shop", "frontend");
    expect(frontend.map((p) => p.name)).toEqual(frontend.map(() => expect.stringMatching(/^frontend-[0-9a-f]{10}-[a-z0-9]{5}$/)));
    expect(new Set(frontend.map((p) => p.node)).size).toBe(2);
    for (const svc of st.services) {
      expect(svc.clusterIP).toMatch(/^10\.96\.\d+\.\d+$/);
      for (const port of svc.ports) expect(Object.keys(port)).toEqual(expect.arrayContaining(["port", "protocol", "targetPort"]));
    }
    expect(st.problems).toEqual([]);
  });

  it("removed the leftover of a crashed run and left other suites' netns alone", () => {
    expect(labNetns()).not.toContain("bh-pod-leftover-x");
    expect(readdirSync("/run/netns")).toContain(outsider);
  });

  it("routes pod to pod across nodes over IPv4 and IPv6", async () => {
    const a = st.pods.find((p) => p.node === "node1");
    const b = st.pods.find((p) => p.node === "node2");
    if (!a || !b) throw new Error("expected pods on both nodes");
    await must(ref(a), ["ping", "-c", "1", "-W", "2", b.ip]);
    await must(ref(a), ["ping", "-6", "-c", "1", "-W", "2", b.ipv6]);
    await must(ref(b), ["ping", "-c", "1", "-W", "2", a.ip]);
  });

  it("DNATs a Service ClusterIP to its backends, from another node, the backend itself and a node", async () => {
    const cart = st.services.find((s) => s.namespace === "shop" && s.name === "cart");
    const backend = podsOf(st, "shop", "cart")[0];
    if (!cart || !backend) throw new Error("expected shop/cart");
    await serve(backend, 8080);
    const client = st.pods.find((p) => p.node !== backend.node);
    if (!client) throw new Error("expected a pod on another node");
    expect(await connect(client, cart.clusterIP, 8080, 2)).toEqual([backend.name, backend.name]);
    // Hairpin: the backend reaches itself through its own Service (masqueraded).
    expect(await connect(backend, cart.clusterIP, 8080, 1)).toEqual([backend.name]);
    const fromNode = await lab.nodeExec("node1", [process.execPath, "-e", CLIENT_JS, cart.clusterIP, "8080", "1"]);
    expect(JSON.parse(fromNode.stdout)).toEqual([backend.name]);
  });

  it("balances a named targetPort over every backend", async () => {
    const frontend = st.services.find((s) => s.namespace === "shop" && s.name === "frontend");
    const backends = podsOf(st, "shop", "frontend");
    if (!frontend) throw new Error("expected shop/frontend");
    expect(frontend.ports[0]).toMatchObject({ port: 80, targetPort: "http" });
    for (const b of backends) await serve(b, 8080);
    const client = st.pods.find((p) => p.labels.app === "prometheus");
    if (!client) throw new Error("expected prometheus");
    const answers = await connect(client, frontend.clusterIP, 80, 30);
    expect(new Set(answers)).toEqual(new Set(backends.map((b) => b.name)));
  });

  it("rejects a Service port without endpoints at once", async () => {
    const svc = await lab.addService({ namespace: "shop", name: "nobody", selector: { app: "nobody" }, ports: [{ port: 80 }] });
    const client = st.pods[0];
    if (!client) throw new Error("no pods");
    expect(await connect(client, svc.clusterIP, 80, 1)).toEqual(["error:ECONNREFUSED"]);
    await lab.deleteService("shop", "nobody");
  });

  it("writes Kubernetes YAML with pods, owners, services and endpoint slices", async () => {
    const dir = path.join(stateDir, "manifests");
    expect(readdirSync(dir).sort()).toEqual(expect.arrayContaining(["nodes.yaml", "ns-monitoring.yaml", "ns-shop.yaml"]));
    const text = readFileSync(path.join(dir, "ns-shop.yaml"), "utf8");
    const docs = parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
    const byKind = (kind: string) => docs.filter((d) => d.kind === kind);
    expect(byKind("Namespace")[0]?.metadata.labels["kubernetes.io/metadata.name"]).toBe("shop");
    for (const pod of st.pods.filter((p) => p.namespace === "shop")) {
      const doc = byKind("Pod").find((d) => d.metadata.name === pod.name);
      expect(doc?.spec.nodeName).toBe(pod.node);
      expect(doc?.status.podIP).toBe(pod.ip);
      expect(doc?.status.podIPs).toEqual([{ ip: pod.ip }, { ip: pod.ipv6 }]);
      expect(doc?.status.phase).toBe("Running");
      expect(doc?.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    }
    const fe = byKind("Pod").find((d) => d.metadata.labels.app === "frontend");
    const rs = byKind("ReplicaSet").find((d) => d.metadata.name === fe?.metadata.ownerReferences[0].name);
    expect(fe?.metadata.ownerReferences[0]).toMatchObject({ kind: "ReplicaSet", uid: rs?.metadata.uid, controller: true });
    expect(rs?.metadata.ownerReferences[0]).toMatchObject({ kind: "Deployment", name: "frontend" });
    expect(fe?.spec.containers[0].ports).toEqual([{ name: "http", containerPort: 8080, protocol: "TCP" }]);
    const svc = byKind("Service").find((d) => d.metadata.name === "frontend");
    expect(svc?.spec.ports).toEqual([{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }]);
    const slice = byKind("EndpointSlice").find((d) => d.metadata.labels["kubernetes.io/service-name"] === "frontend");
    expect(slice?.ports).toEqual([{ name: "http", port: 8080, protocol: "TCP" }]);
    expect(slice?.endpoints.map((e: any) => e.addresses[0]).sort()).toEqual(podsOf(st, "shop", "frontend").map((p) => p.ip).sort());
    const nodes = parseAllDocuments(readFileSync(path.join(dir, "nodes.yaml"), "utf8")).map((d) => d.toJS() as Record<string, any>);
    expect(nodes[0]?.status.addresses[0]).toEqual({ type: "InternalIP", address: "172.30.0.11" });
    expect(text).not.toMatch(/[&*]a\d/); // no YAML anchors or aliases
  });

  it("adds and deletes pods, reusing the lowest free IP", async () => {
    const p1 = await lab.addPod({ namespace: "shop", name: "churn-a", node: "node1", labels: { app: "cart" }, ports: [{ name: "http", port: 8080 }] });
    const p2 = await lab.addPod({ namespace: "shop", name: "churn-b", node: "node1" });
    const p3 = await lab.addPod({ namespace: "shop", name: "churn-c", node: "node1" });
    expect([p1.ip, p2.ip, p3.ip].map((ip) => Number(ip.split(".")[3]))).toEqual([6, 7, 8]);
    const remote = st.pods.find((p) => p.node === "node2");
    if (!remote) throw new Error("expected a pod on node2");
    await must(ref(remote), ["ping", "-c", "1", "-W", "2", p2.ip]);
    // A new pod matching a Service's selector becomes a backend.
    const cart = (await lab.status()).services.find((s) => s.name === "cart");
    expect(cart?.endpoints[0]).toContain(`${p1.ip}:8080`);

    await lab.deletePod("shop", "churn-b");
    expect(labNetns()).not.toContain(p2.netns);
    const p4 = await lab.addPod({ namespace: "shop", name: "churn-d", node: "node1" });
    expect(p4.ip).toBe(p2.ip);
    expect(p4.ipv6).toBe(p2.ipv6);
    await must(ref(remote), ["ping", "-c", "1", "-W", "2", p4.ip]);

    await lab.deletePod("shop", "churn-a");
    const after = await lab.status();
    expect(after.services.find((s) => s.name === "cart")?.endpoints[0]).not.toContain(`${p1.ip}:8080`);
    const doc = readFileSync(path.join(stateDir, "manifests", "ns-shop.yaml"), "utf8");
    expect(doc).not.toContain("churn-a");
    expect(doc).toContain("churn-d");
    for (const name of ["churn-c", "churn-d"]) await lab.deletePod("shop", name);
  });

  it("survives pod churn: 20 pods added concurrently, then deleted", async () => {
    const names = Array.from({ length: 20 }, (_, i) => `burst-${i}`);
    const added = await Promise.all(names.map((name) => lab.addPod({ namespace: "monitoring", name })));
    expect(new Set(added.map((p) => p.ip)).size).toBe(20);
    expect(new Set(added.map((p) => p.node))).toEqual(new Set(["node1", "node2"]));
    const last = added[19];
    if (!last) throw new Error("no pods");
    await must(ref(added[0] ?? last), ["ping", "-c", "1", "-W", "2", last.ip]);
    await Promise.all(names.map((name) => lab.deletePod("monitoring", name)));
    const status = await lab.status();
    expect(status.pods.filter((p) => p.name.startsWith("burst-"))).toEqual([]);
    expect(labNetns().filter((n) => n.includes("burst-"))).toEqual([]);
    expect(status.pods.length).toBe(st.pods.length);
  });

  it("keeps pods and nodes contained: no route out, no link to the root namespace", async () => {
    for (const pod of st.pods) {
      const links = await must(ref(pod), ["ip", "-o", "link", "show"]);
      expect(links.trim().split("\n").map((l) => l.split(": ")[1]?.split("@")[0])).toEqual(["lo", "eth0"]);
      const routes = (await must(ref(pod), ["ip", "route", "show"])).trim();
      expect(routes).toBe("default via 169.254.1.1 dev eth0 onlink");
    }
    for (const node of ["node1", "node2"]) {
      for (const family of ["-4", "-6"]) {
        const r = await lab.nodeExec(node, ["ip", family, "route", "show", "default"]);
        expect(r.code).toBe(0);
        expect(r.stdout.trim()).toBe("");
      }
    }
    const underlay = execFileSync("ip", ["-n", "bh-underlay", "route", "show"], { encoding: "utf8" });
    expect(underlay.trim()).toBe("");
    // No link in the root namespace has its peer in a lab namespace.
    expect(execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" })).not.toMatch(/link-netns bh-/);
  });

  it("serves the CLI from another invocation", async () => {
    let out = "";
    const io = { stdout: { write: (t: string) => { out += t; } }, stderr: { write: (t: string) => { out += t; } } };
    expect(await runLab(["status", "-o", "json", "--state-dir", stateDir], io)).toBe(0);
    const parsed = JSON.parse(out) as LabStatus;
    expect(parsed.pods.map((p) => p.name)).toEqual(st.pods.map((p) => p.name));
    out = "";
    expect(await runLab(["up", "--nodes", "zero", "--state-dir", stateDir], io)).toBe(2);
    expect(out).toContain("--nodes");
    out = "";
    expect(await runLab(["pod", "add", "shop/x", "--colour", "red", "--state-dir", stateDir], io)).toBe(2);
    expect(out).toContain("--colour");
  });

  it("down removes every lab netns and empties the state dir", async () => {
    await down(stateDir);
    expect(labNetns()).toEqual([]);
    expect(!existsSync(stateDir) || readdirSync(stateDir).length === 0).toBe(true);
    expect(readdirSync("/run/netns")).toContain(outsider);
    await down(stateDir); // idempotent
  });
});

describe("topology files", () => {
  it("names the file and the field of a bad value", async () => {
    const file = path.join(root, "bad.yaml");
    writeFileSync(file, "nodes: 2\nnamespaces: [{name: shop}]\npods:\n  - {namespace: shop, name: a, ports: [{port: http}]}\n");
    await expect(up({ stateDir, topology: file, startAgents: false })).rejects.toThrow(`${file}: pods[0].ports[0].port: expected an integer 1-65535, got "http"`);
    expect(labNetns()).toEqual([]);
  });

  it("rejects unknown fields, undeclared namespaces and unknown nodes", () => {
    expect(() => parseTopology("pods: [{namespace: default, name: a, lables: {}}]", "t.yaml")).toThrow("t.yaml: pods[0].lables: unknown field");
    expect(() => parseTopology("pods: [{namespace: shop, name: a}]", "t.yaml")).toThrow("t.yaml: pods[0].namespace: namespace \"shop\" is not in namespaces");
    expect(() => parseTopology("nodes: 2\npods: [{namespace: default, name: a, node: node3}]", "t.yaml")).toThrow("t.yaml: pods[0].node");
    expect(() => parseTopology("services: [{namespace: default, name: s, selector: {a: b}, ports: [{port: 1}, {port: 2}]}]", "t.yaml"))
      .toThrow("t.yaml: services[0].ports[0].name: every port of a multi-port Service needs a name");
  });

  it("expands workloads into Kubernetes-style pod names", () => {
    const t = parseTopology(`nodes: 3
workloads:
  - {namespace: default, name: web, kind: Deployment, replicas: 2, labels: {app: web}}
  - {namespace: default, name: db, kind: StatefulSet, replicas: 2, labels: {app: db}}
  - {namespace: default, name: logs, kind: DaemonSet, labels: {app: logs}}`, "t.yaml");
    expect(t.nodes).toEqual(["node1", "node2", "node3"]);
    const { pods, workloads } = expandTopology(t, () => "uid", "now");
    const names = pods.map((p) => p.name);
    const rs = workloads[0]?.replicaSet?.name ?? "";
    expect(rs).toMatch(/^web-[0-9a-f]{10}$/);
    expect(names.slice(0, 2)).toEqual([expect.stringMatching(new RegExp(`^${rs}-[a-z0-9]{5}$`)), expect.stringMatching(new RegExp(`^${rs}-[a-z0-9]{5}$`))]);
    expect(names.slice(2, 4)).toEqual(["db-0", "db-1"]);
    expect(names.slice(4).map((n) => n.replace(/-[a-z0-9]{5}$/, ""))).toEqual(["logs", "logs", "logs"]);
    expect(pods.slice(4).map((p) => p.node)).toEqual(["node1", "node2", "node3"]);
    expect(pods[0]?.owner).toMatchObject({ kind: "ReplicaSet", name: rs });
    expect(pods[2]?.owner).toMatchObject({ kind: "StatefulSet", name: "db" });
    // Same topology, same names: tests and docs can refer to them.
    expect(expandTopology(t, () => "uid", "now").pods.map((p) => p.name)).toEqual(names);
    expect(() => parseTopology("pods: [{namespace: default, name: db-0}]\nworkloads: [{namespace: default, name: db, kind: StatefulSet, labels: {a: b}}]", "t.yaml"))
      .toThrow("t.yaml: workloads[0]: creates pod default/db-0, which pods[0] also names");
  });
});

describe("agents", () => {
  const agentDir = path.join(root, "agent-state");
  // A stand-in for the bulkhead agent: serves /healthz on the metrics port in the node netns.
  const FAKE_AGENT = `require("http").createServer((q, s) => { s.end(q.url === "/healthz" ? "ok" : "?"); })
    .listen(9387, "0.0.0.0", () => console.log("fake agent for " + process.argv[1]));`;

  afterAll(async () => {
    await down(agentDir);
  });

  it("starts one agent per node, waits for /healthz, and down stops them", async () => {
    const l = await up({
      stateDir: agentDir,
      pinDir: path.join(root, "pins"),
      nodes: 2,
      topology: { nodes: [], namespaces: [], pods: [{ namespace: "default", name: "a", labels: {}, ports: [] }], workloads: [], services: [] },
      agentCommand: (ctx) => netnsExecArgv(ctx.netns, [process.execPath, "-e", FAKE_AGENT, ctx.node]),
      controlplane: { ui: false }, // no web UI: nothing here reads it, and the lab's fixed UI port may be taken
    });
    const s = await l.status();
    expect(s.agents.map((a) => [a.node, a.running])).toEqual([["node1", true], ["node2", true]]);
    expect(readFileSync(s.agents[0]?.log ?? "", "utf8")).toContain("fake agent for node1");
    const pids = s.agents.map((a) => a.pid);
    mkdirSync(path.join(root, "pins", "node1"), { recursive: true }); // as an agent would pin
    const report = await down(agentDir);
    expect(existsSync(path.join(root, "pins"))).toBe(false);
    expect(report.stoppedPids).toEqual(expect.arrayContaining(pids));
    for (const pid of pids) expect(await running(pid)).toBe(false);
  });

  it("backs off an agent in a crash loop, logs each restart, and runs it again once it can start", async () => {
    const trigger = path.join(root, "crash");
    // Serves /healthz like FAKE_AGENT, but exits at once while the trigger file exists.
    const crashy = `if (require("fs").existsSync(process.argv[2])) { console.error("crashing on purpose"); process.exit(1); }
      require("http").createServer((q, s) => { s.end("ok"); }).listen(9387, "0.0.0.0");`;
    const l = await up({
      stateDir: agentDir,
      pinDir: path.join(root, "pins"),
      nodes: 1,
      controlplane: false,
      agentCommand: (ctx) => netnsExecArgv(ctx.netns, [process.execPath, "-e", crashy, ctx.node, trigger]),
    });
    const first = (await l.status()).agents[0];
    writeFileSync(trigger, "");
    process.kill(first?.pid ?? 0, "SIGKILL");
    // Four starts after the kill: delays 250, 500, 1000 ms (runs < 10 s are a crash loop), ≈ 2 s.
    const log = path.join(agentDir, "logs", "supervisor.log");
    await expect.poll(async () => (await l.status()).agents[0]?.restarts, { timeout: 15_000, interval: 100 }).toBeGreaterThanOrEqual(4);
    rmSync(trigger);
    const text = readFileSync(log, "utf8");
    expect(text).toMatch(/agent\/node1 \(pid \d+\) killed by SIGKILL after [\d.]+ s; starting it again in 250 ms/);
    expect(text).toMatch(/exited with code 1 after [\d.]+ s; starting it again in 500 ms[\s\S]*exited with code 1 after [\d.]+ s; starting it again in 1000 ms/);
    expect(readFileSync(first?.log ?? "", "utf8")).toContain("crashing on purpose");
    // The next start (after ≤ 2 s, then 4 s) finds no trigger and stays up.
    await expect.poll(async () => {
      const a = (await l.status()).agents[0];
      return a?.running === true && (await l.nodeExec("node1", ["curl", "-sf", "http://127.0.0.1:9387/healthz"])).code === 0;
    }, { timeout: 15_000, interval: 200 }).toBe(true);
    await down(agentDir);
    expect(labNetns()).toEqual([]);
  });

  it("refuses a drain interval the agent would refuse, or one for a lab without agents, before building anything", async () => {
    for (const bad of [0, 1.5, 3_600_001]) {
      await expect(up({ stateDir: agentDir, drainIntervalMs: bad })).rejects.toThrow(`drainIntervalMs: expected an integer 1-3600000 (milliseconds), got ${bad}`);
    }
    await expect(up({ stateDir: agentDir, startAgents: false, drainIntervalMs: 100 })).rejects.toThrow("drainIntervalMs: this lab runs no agents");
    let err = "";
    const io = { stdout: { write: () => true }, stderr: { write: (t: string) => { err += t; return true; } } };
    expect(await runLab(["up", "--drain-interval", "soon", "--state-dir", agentDir], io)).toBe(2);
    expect(err).toContain('--drain-interval: expected milliseconds, an integer 1-3600000, got "soon"');
    expect(await runLab(["up", "--drain-interval", "100", "--no-agents", "--state-dir", agentDir], io)).toBe(2);
    expect(err).toContain("--drain-interval: the agents drain, and --no-agents leaves them out");
    expect(labNetns()).toEqual([]);
  });

  it("fails with the node's name and log tail when an agent dies, leaving nothing behind", async () => {
    await expect(up({
      stateDir: agentDir,
      pinDir: path.join(root, "pins"),
      nodes: 1,
      agentCommand: (ctx) => netnsExecArgv(ctx.netns, [process.execPath, "-e", "console.error('no BPF for you'); process.exit(3)"]),
    })).rejects.toThrow(/agent on node node1 exited with code 3[\s\S]*no BPF for you/);
    expect(labNetns()).toEqual([]);
  });
});
