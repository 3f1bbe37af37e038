// Issue "UI" (demo part): the demo cluster (lab/topologies/demo.yaml) comes up with agents,
// the control plane, its traffic and a UI address; every edge its traffic makes appears on
// the flow map with the verdict its policies give (HTTP and TCP through Services, UDP
// through the DNS Service, Prometheus scraping pod IPs, a debug pod dropped, a scrape the
// audit mode marks); a legitimate edge turns dropped when its policy goes and AUDIT when
// the namespace audits; `lab down` leaves nothing. Needs the lab lock:
//   flock /tmp/bulkhead-lab.lock npx vitest run test/demo.test.ts
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type Lab } from "../lab/lab.js";
import { runLab } from "../lab/cli.js";
import { uiUrl } from "../lab/controlplane.js";
import { allowDemoEdge, DEMO_DENIABLE_EDGE, DEMO_EDGES, DEMO_TOPOLOGY_FILE, denyDemoEdge, upDemo, type DemoEdge } from "../lab/demo.js";
import { EnforcementWatch } from "../lab/enforcement.js";
import { listNetns } from "../lab/netns.js";
import { processAlive } from "../lab/state.js";
import { parseListenPort, parsePlan } from "../lab/pod-app.js";
import { parseTopology } from "../lab/topology.js";
import { FlowRecord, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { GetFlowMapResponse, type MapEdge } from "../proto/gen/bulkhead/v1/observer.js";
import { LAB_DRAIN_MS, sleep } from "./harness/flows.js";
import { waitFor } from "./harness/wait.js";
import { cliMain } from "../config/install.js";
import { testPinDir } from "./harness/testbed.js";
// Agents pin their datapath under it (bpffs); lab down removes it.
const PIN_DIR = testPinDir("bh-demo");

vi.setConfig({ testTimeout: 90_000, hookTimeout: 120_000 });

const run = promisify(execFile);
const OBSERVER = "127.0.0.1:22470";
const UI = "127.0.0.1:22471";

function capture(): { io: { stdout: { write(t: string): boolean }; stderr: { write(t: string): boolean } }; out: () => string; err: () => string } {
  let out = "", err = "";
  return {
    io: { stdout: { write: (t: string) => { out += t; return true; } }, stderr: { write: (t: string) => { err += t; return true; } } },
    out: () => out,
    err: () => err,
  };
}

describe("the UI address", () => {
  it("turns HOST:PORT into the URL a browser opens", () => {
    expect(uiUrl("127.0.0.1:4388")).toBe("http://127.0.0.1:4388/");
    expect(uiUrl("[::1]:8080")).toBe("http://[::1]:8080/");
    expect(uiUrl("localhost:80")).toBe("http://localhost:80/");
  });

  it.each([
    ["127.0.0.1", "no port"],
    ["127.0.0.1:0", "port 0: the URL would be unknown"],
    ["127.0.0.1:70000", "port out of range"],
    ["example.com:80", "a name other than localhost"],
    ["::1:80", "IPv6 without brackets"],
    ["300.1.1.1:80", "not an IPv4 address"],
  ])("`lab up --ui %s` is refused (%s), naming the flag and the value, before anything is built", async (bad) => {
    const before = (await listNetns()).filter((n) => n.startsWith("bh-"));
    const c = capture();
    const code = await runLab(["up", "--ui", bad, "--state-dir", path.join(os.tmpdir(), "bh-demo-never")], c.io);
    expect(code).toBe(2);
    expect(c.err()).toContain("--ui: expected HOST:PORT");
    expect(c.err()).toContain(JSON.stringify(bad));
    expect((await listNetns()).filter((n) => n.startsWith("bh-"))).toEqual(before);
  });

  it("refuses --ui with --no-ui, and with --no-agents (no control plane to serve it)", async () => {
    const a = capture();
    expect(await runLab(["up", "--ui", UI, "--no-ui"], a.io)).toBe(2);
    expect(a.err()).toContain("--ui and --no-ui");
    const b = capture();
    expect(await runLab(["up", "--ui", UI, "--no-agents"], b.io)).toBe(2);
    expect(b.err()).toContain("--ui: the UI is the control plane's");
  });
});

describe("the pod application's flags", () => {
  it("reads a plan and refuses a bad entry, naming the index, the field and the entry", () => {
    expect(parsePlan('[{"to":"10.96.0.11","port":80,"protocol":"TCP","everyMs":1000,"size":64,"http":"/products"}]'))
      .toEqual([{ to: "10.96.0.11", port: 80, protocol: "TCP", everyMs: 1000, size: 64, http: "/products" }]);
    expect(() => parsePlan('[{"to":"cart","port":80,"protocol":"TCP","everyMs":1000,"size":64}]')).toThrow('--plan[0]: to must be an IP address, got {"to":"cart"');
    expect(() => parsePlan('[{"to":"10.0.0.1","port":53,"protocol":"UDP","everyMs":1000,"size":64,"http":"/"}]')).toThrow("--plan[0]: http needs protocol TCP");
    expect(() => parsePlan('[{"to":"10.0.0.1","port":53,"protocol":"UDP","everyMs":10,"size":64}]')).toThrow("--plan[0]: everyMs must be an integer 50-3600000");
    expect(() => parsePlan("{")).toThrow("--plan is not JSON");
    expect(parseListenPort("53/udp")).toEqual({ port: 53, protocol: "UDP" });
    expect(() => parseListenPort("9/SCTP")).toThrow('--listen "9/SCTP" is not PORT/TCP or PORT/UDP');
  });
});

describe("the demo topology file", () => {
  const text = fs.readFileSync(DEMO_TOPOLOGY_FILE, "utf8");

  it("parses, with its policies and traffic", () => {
    const t = parseTopology(text, DEMO_TOPOLOGY_FILE);
    expect(t.policies.map((p) => `${p.metadata.namespace}/${p.metadata.name}`)).toContain("shop/catalog-from-frontend");
    expect(t.traffic.some((s) => s.to.kind === "pods" && s.port === "metrics" && s.http === "/metrics")).toBe(true);
  });

  it("refuses a policy in an unknown namespace and traffic to pods without a port, naming the field", () => {
    const policy = "\npolicies:\n  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: nowhere}, spec: {podSelector: {}}}\n";
    expect(() => parseTopology(`namespaces: [{name: shop}]${policy}`, "t.yaml")).toThrow('t.yaml: policies[0].namespace: namespace "nowhere" is not in namespaces');
    expect(() => parseTopology("namespaces: [{name: shop}]\npolicies: [{apiVersion: v1, kind: Pod, metadata: {name: x}}]\n", "t.yaml"))
      .toThrow("t.yaml: policies[0]: expected a NetworkPolicy");
    expect(() => parseTopology("namespaces: [{name: shop}]\ntraffic: [{from: {namespace: shop}, toPods: {}}]\n", "t.yaml"))
      .toThrow("t.yaml: traffic[0].port: toPods needs the container port");
    expect(() => parseTopology("namespaces: [{name: shop}]\ntraffic: [{from: {namespace: shop}, to: shop/a, http: 'no slash'}]\n", "t.yaml"))
      .toThrow('t.yaml: traffic[0].http: expected a URL path starting with / (no spaces), got "no slash"');
  });
});

describe("the demo lab", () => {
  let dir: string;
  let stateDir: string;
  let lab: Lab | undefined;
  // The CLI finds this lab's control plane CA (mutual TLS by default) through its state dir.
  const cli = async (args: string[]) => (await run(process.execPath, [cliMain, ...args],
    { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, BULKHEAD_LAB_STATE_DIR: stateDir } })).stdout;

  async function mapEdges(): Promise<MapEdge[]> {
    return GetFlowMapResponse.fromJSON(JSON.parse(await cli(["map", "-A", "-o", "json", "--server", OBSERVER]))).edges;
  }

  const find = (edges: MapEdge[], e: Pick<DemoEdge, "source" | "destination" | "protocol" | "port">) =>
    edges.find((x) => x.source === e.source && x.destination === e.destination && x.protocol === e.protocol && x.port === e.port);

  /** Whether the map edge shows the verdict (see EdgeVerdict). */
  function shows(edge: MapEdge | undefined, verdict: DemoEdge["verdict"]): boolean {
    if (!edge) return false;
    switch (verdict) {
      case "forwarded": return edge.forwarded > 0n && edge.dropped === 0n && edge.audit === 0n;
      case "sent": return edge.packets > 0n && edge.audit === 0n;
      case "dropped": return edge.dropped > 0n && edge.forwarded === 0n;
      case "audit": return edge.audit > 0n && edge.dropped === 0n;
    }
  }

  beforeAll(async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-demo-"));
    stateDir = path.join(dir, "state");
    lab = await upDemo({ stateDir, pinDir: PIN_DIR, controlplane: { observer: OBSERVER, ui: UI }, drainIntervalMs: LAB_DRAIN_MS });
  });

  afterAll(async () => {
    await lab?.down();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("gives the UI's URL in `lab status -o json` and the text status", async () => {
    const status = JSON.parse(await cli(["lab", "status", "-o", "json", "--state-dir", stateDir])) as { ui?: unknown; controlplane?: { ui?: unknown } };
    expect(status.ui).toBe(`http://${UI}/`);
    expect(status.controlplane?.ui).toBe(`http://${UI}/`);
    // ... and the control plane serves the UI there: the page, and the shop's live map.
    const page = await fetch(`http://${UI}/`);
    expect([page.status, await page.text()]).toEqual([200, expect.stringContaining("<title>bulkhead")]);
    // The shop's first edge appears once its traffic (the frontend calls every second) has
    // been drained by an agent and streamed: a second or more after `up`, which on a loaded
    // machine may not have passed yet; 30 s bounds it.
    const readMap = async () => (await (await fetch(`http://${UI}/api/v1/map?namespace=shop&window=1m`)).json()) as { edges: { source: string }[] };
    await waitFor(readMap, (m) => m.edges.some((e) => e.source === "workload:shop/Deployment/frontend"), 30_000,
      "an edge from shop's frontend in the UI's map");
    expect(await cli(["lab", "status", "--state-dir", stateDir])).toContain(`ui: http://${UI}/`);
    // The control plane was told to serve it there.
    const cp = (await lab?.status())?.controlplane;
    expect(fs.readFileSync(`/proc/${cp?.pid}/cmdline`, "utf8").split("\0")).toEqual(expect.arrayContaining(["--ui-listen", UI]));
  });

  it("shows every edge of the demo's traffic with its verdict, and no other edge between workloads and Services", async () => {
    let edges: MapEdge[] = [];
    const deadline = Date.now() + 40_000;
    while (Date.now() < deadline) {
      edges = await mapEdges();
      if (DEMO_EDGES.every((e) => shows(find(edges, e), e.verdict))) break;
      await sleep(1000);
    }
    const wrong = DEMO_EDGES.filter((e) => !shows(find(edges, e), e.verdict)).map((e) => {
      const got = find(edges, e);
      return `${e.source} -> ${e.destination} ${e.protocol}/${e.port}: want ${e.verdict} (${e.why}), got `
        + (got ? `forwarded ${got.forwarded}, dropped ${got.dropped}, audit ${got.audit}` : "no edge");
    });
    expect(wrong).toEqual([]);
    const named = (id: string) => id.startsWith("workload:") || id.startsWith("service:");
    const extra = edges.filter((x) => named(x.source) && named(x.destination) && !DEMO_EDGES.some((e) => find([x], e)))
      .map((x) => `${x.source} -> ${x.destination} ${x.protocol}/${x.port}`);
    expect(extra).toEqual([]);
  });

  it("serves real HTTP: JSON from a backend through its Service, Prometheus text from a pod's metrics port", async () => {
    if (!lab) throw new Error("no lab");
    const status = await lab.status();
    const frontend = status.pods.find((p) => p.name.startsWith("frontend-"));
    const catalog = status.services.find((s) => s.namespace === "shop" && s.name === "catalog");
    const cart = status.pods.find((p) => p.name.startsWith("cart-"));
    const prometheus = status.pods.find((p) => p.name.startsWith("prometheus-"));
    if (!frontend || !catalog || !cart || !prometheus) throw new Error("demo pods or Services missing");
    const api = await lab.exec(frontend, ["curl", "-sS", "--max-time", "3", `http://${catalog.clusterIP}/products`]);
    expect(api.code).toBe(0);
    expect(JSON.parse(api.stdout)).toMatchObject({ method: "GET", path: "/products", pod: expect.stringMatching(/^shop\/catalog-/) as unknown });
    const metrics = await lab.exec(prometheus, ["curl", "-sS", "--max-time", "3", `http://${cart.ip}:9102/metrics`]);
    expect(metrics.code).toBe(0);
    expect(metrics.stdout).toMatch(new RegExp(`^lab_requests_served_total\\{pod="shop/${cart.name}",kind="http"\\} [1-9]`, "m"));
  });

  it("keeps enforcing while every agent is killed (-9) and held down, and the agents started again carry on", async () => {
    if (!lab) throw new Error("no lab");
    const status = await lab.status();
    const debug = status.pods.find((p) => p.namespace === "shop" && p.name.startsWith("debug"));
    const cart = status.pods.find((p) => p.namespace === "shop" && p.name.startsWith("cart-"));
    const datastore = status.services.find((s) => s.namespace === "shop" && s.name === "datastore");
    if (!debug || !cart || !datastore) throw new Error("demo pods or Services missing");
    // A TCP connect to the datastore's ClusterIP; a dropped SYN shows as the timeout. Allowed
    // connects get 10 s (3 s, shell start included, failed once at load average 8); denied
    // ones 3 s, as their SYNs never pass however long one waits.
    const connects = async (pod: typeof debug) =>
      (await lab!.exec(pod, ["timeout", pod === cart ? "10" : "3", "bash", "-c", `exec 3<>/dev/tcp/${datastore.clusterIP}/6379`])).code === 0;
    expect(await connects(debug)).toBe(false);
    const nodes = [...new Set(status.pods.map((p) => p.node))];
    for (const node of nodes) await lab.stop({ kind: "agent", node }, { kill: true });
    try {
      // No bulkhead agent runs on any node now: only the pinned datapath judges. Three
      // connections from debug (three source ports) and one from cart, at the same time.
      const [allowed, ...denied] = await Promise.all([connects(cart), connects(debug), connects(debug), connects(debug)]);
      expect(denied, "debug → datastore with no agent, 3 attempts").toEqual([false, false, false]);
      expect(allowed, "cart → datastore with no agent").toBe(true);
    } finally {
      for (const node of nodes) await lab.start({ kind: "agent", node });
    }
    expect(await Promise.all([connects(debug), connects(cart)])).toEqual([false, true]);
  });

  it("turns the deniable edge dropped when its policy goes, back when it returns, and AUDIT when shop audits", async () => {
    if (!lab) throw new Error("no lab");
    const watch = new EnforcementWatch(OBSERVER, ["node1", "node2"], path.join(stateDir, "tls", "ca.crt"));
    const { source, destination } = DEMO_DENIABLE_EDGE.edge;
    const workloadOf = (id: string) => { const [ns, , name] = id.slice("workload:".length).split("/"); return `${ns}/${name}`; };
    const verdicts = async (since: string): Promise<Set<Verdict>> => {
      const out = await cli(["observe", "-o", "json", "--server", OBSERVER, "--from-workload", workloadOf(source),
        "--to-workload", workloadOf(destination), "--to-port", String(DEMO_DENIABLE_EDGE.edge.port), "--since", since]);
      return new Set(out.split("\n").filter((l) => l.trim()).map((l) => FlowRecord.fromJSON(JSON.parse(l)).verdict));
    };
    const until = async (want: Verdict): Promise<Set<Verdict>> => {
      let seen = new Set<Verdict>();
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && !seen.has(want)) {
        await sleep(500);
        seen = await verdicts("4s");
      }
      return seen;
    };
    try {
      let before = await watch.latest();
      await denyDemoEdge(lab);
      await watch.waitEnforced({ after: before });
      expect(await until(Verdict.VERDICT_DROPPED)).toContain(Verdict.VERDICT_DROPPED);

      before = await watch.latest();
      await lab.setNamespaceAnnotations("shop", { "bulkhead.io/mode": "audit" });
      await watch.waitEnforced({ after: before });
      expect(await until(Verdict.VERDICT_AUDIT)).toContain(Verdict.VERDICT_AUDIT);

      before = await watch.latest();
      await allowDemoEdge(lab);
      await lab.setNamespaceAnnotations("shop", { "bulkhead.io/mode": "enforce" });
      const enforced = await watch.waitEnforced({ after: before });
      // Every node has enforced the change for the settle time (300 ms) already; records with
      // packets from before it are drained within a drain interval (100 ms) of it: 1 s more
      // leaves them all before `since`.
      await sleep(1000);
      const since = new Date().toISOString();
      // The frontend calls the catalog every second, a new connection each time: the records
      // of three such calls since then, every one of them forwarded.
      const observed = async () => (await cli(["observe", "-o", "json", "--server", OBSERVER, "--from-workload", workloadOf(source),
        "--to-workload", workloadOf(destination), "--since", since])).split("\n").filter((l) => l.trim()).map((l) => FlowRecord.fromJSON(JSON.parse(l)));
      const connections = (rs: FlowRecord[]) => new Set(rs.map((r) => r.l4?.sourcePort)).size;
      let records: FlowRecord[] = [];
      const deadline = Date.now() + 20_000;
      while (connections(records) < 3 && Date.now() < deadline) {
        await sleep(500);
        records = await observed();
      }
      expect(connections(records), "connections of the restored edge since the change").toBeGreaterThanOrEqual(3);
      const wrong = records.filter((r) => r.verdict !== Verdict.VERDICT_FORWARDED);
      // Said only on a failure: when each such record ended against `since`, the version
      // enforced then, and the control plane's status (each node's clock skew among it).
      const context = wrong.length === 0 ? "" : `since ${since}, enforced version ${enforced}; ends after since: ${wrong.map((r) =>
        `${r.node} ${(Number(r.endTime?.seconds ?? 0n) * 1000 + (r.endTime?.nanos ?? 0) / 1e6 - Date.parse(since)).toFixed(0)} ms`).join(", ")}; status:\n`
        + await cli(["status", "--server", OBSERVER]).catch((err: Error) => `(status failed: ${err.message})`);
      expect(wrong, context).toEqual([]);
    } finally {
      watch.close();
    }
  });

  it("`lab down` leaves no netns, process, BPF link or state behind", async () => {
    if (!lab) throw new Error("no lab");
    const status = await lab.status();
    const state = JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as { traffic?: { pids: number[] } };
    const pids = [...status.agents.map((a) => a.pid), status.controlplane?.pid ?? 0, status.supervisor?.pid ?? 0,
      status.outside?.app?.pid ?? 0, ...(state.traffic?.pids ?? [])];
    expect(state.traffic?.pids.length).toBe(10);
    expect(pids.every((pid) => pid > 0 && processAlive(pid))).toBe(true);
    // The agents' TCX links are owned by their file descriptors; fdinfo names each link's id.
    const agentLinks = status.agents.flatMap((a) => fs.readdirSync(`/proc/${a.pid}/fdinfo`).flatMap((fd) => {
      const m = /^link_id:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${a.pid}/fdinfo/${fd}`, "utf8"));
      return m ? [Number(m[1])] : [];
    }));
    const links = () => JSON.parse(execFileSync("bpftool", ["-j", "link", "show"], { encoding: "utf8" })) as { id: number }[];
    expect(agentLinks.length).toBeGreaterThanOrEqual(20); // from_pod and to_pod on each of the 10 pods' veths
    expect(links().filter((l) => agentLinks.includes(l.id)).length).toBe(agentLinks.length);
    // The lab's namespaces by inode: a process left behind keeps its namespace after `netns
    // del`. Agents and probes of the kernel-own files beside (vitest.config.ts) run the same
    // CLI, in namespaces of their own.
    const labNets = new Set((await listNetns()).filter((n) => n.startsWith("bh-")).map((n) => `net:[${fs.statSync(`/run/netns/${n}`).ino}]`));
    const netOf = (pid: string) => { try { return fs.readlinkSync(`/proc/${pid}/ns/net`); } catch { return ""; } };
    await lab.down();
    lab = undefined;
    expect((await listNetns()).filter((n) => n.startsWith("bh-"))).toEqual([]);
    expect(pids.filter((pid) => processAlive(pid))).toEqual([]);
    const apps = execFileSync("ps", ["-eo", "pid=,args="], { encoding: "utf8" }).split("\n")
      .filter((l) => l.includes(`${cliMain} probe`) || l.includes(`${cliMain} agent`) || l.includes(`${cliMain} lab supervise`))
      .filter((l) => l.includes(`--state-dir ${stateDir}`) || labNets.has(netOf(l.trim().split(" ")[0] ?? "")));
    expect(apps).toEqual([]);
    const left = new Set(links().map((l) => l.id));
    expect(agentLinks.filter((id) => left.has(id))).toEqual([]);
    expect(fs.existsSync(path.join(stateDir, "state.json"))).toBe(false);
    expect(fs.existsSync(path.join(stateDir, "tls")), "the lab's certificates and CA key").toBe(false);
  });
});
