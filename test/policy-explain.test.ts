// `bulkhead policy explain` (issue 18, item 4). Its verdict for every pair of every shared
// conformance case, step by step, equals the case's expected reachability — which
// conformance-datapath.test.ts proves the real datapath produces (100 % of the cases), so
// explain agrees with the datapath's verdicts on the conformance pods. Its rule
// attribution and outcome per mode are checked on a cluster of our own, and the CLI end to
// end on a manifests folder, bad input included.
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { cliMain, repoRoot } from "../config/install.js";
import { generatePlacement, loadConformanceCases, ModelCluster, modelPairs, type ConformanceCase } from "../lab/conformance/cases.js";
import { explain, formatExplanation, type Explanation } from "../controlplane/policy/explain.js";
import { PolicyModel, PolicySet, type PolicyCluster } from "../controlplane/policy/model.js";
import { parseKubeObject } from "../controlplane/metadata/objects.js";
import { pino } from "pino";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import { Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { agentRecord } from "./harness/flow-records.js";

const casesFile = path.join(repoRoot, "..", "shared", "conformance", "netpol-cases.json");

describe("policy explain agrees with the conformance cases", () => {
  let cases: ConformanceCase[] = [];
  beforeAll(async () => {
    if (!existsSync(casesFile)) throw new Error(`conformance cases not found at ${casesFile}: the shared/ folder must sit beside the repository`);
    cases = await loadConformanceCases(casesFile);
  });

  it("on every pair of every step of every case: allowed exactly when not denied, DROPPED in enforce", () => {
    let judged = 0;
    const wrong: string[] = [];
    for (const c of cases) {
      const cluster = new ModelCluster(c.model, generatePlacement(c.model));
      const policySet = new PolicySet();
      for (const [s, step] of c.steps.entries()) {
        for (const action of step.actions) cluster.apply(action);
        const model = new PolicyModel(cluster.objects(), { defaultMode: "enforce", policySet });
        for (const probe of step.probes) {
          for (const pair of modelPairs(c.model)) {
            const e = explain(model, { from: { pod: `${pair.src.namespace}/${pair.src.name}` }, to: { pod: `${pair.dst.namespace}/${pair.dst.name}` },
              protocol: probe.protocol, port: probe.port });
            judged++;
            const denied = probe.denied.has(pair.name);
            if (e.allowed === denied || e.outcome !== (denied ? "DROPPED" : "FORWARDED")) {
              wrong.push(`${c.id} step ${s} ${probe.port}/${probe.protocol} ${pair.name}: expected ${denied ? "denied" : "allowed"}, explain says ${e.outcome}`);
            }
            // An allowed isolated side names the rule that allows it.
            for (const side of [e.egress, e.ingress]) {
              if (side.isolated && side.allowed && side.exemption === undefined && side.allowingRules.length === 0) {
                wrong.push(`${c.id} step ${s} ${pair.name}: isolated and allowed with no rule named`);
              }
            }
          }
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(judged).toBeGreaterThan(1000);
  });
});

// A small cluster of our own: shop (enforce) with db, api (audit) with a server, web
// (observe) with front; db admits api on port pg only.
function objects(): Record<string, unknown>[] {
  const ns = (name: string, mode: string) => ({ apiVersion: "v1", kind: "Namespace",
    metadata: { name, labels: { team: name }, annotations: { "bulkhead.io/mode": mode } } });
  const pod = (namespace: string, name: string, ip: string, ports: object[] = []) => ({ apiVersion: "v1", kind: "Pod",
    metadata: { name, namespace, uid: `uid-${name}`, labels: { app: name }, creationTimestamp: "2024-01-01T00:00:00Z" },
    spec: { nodeName: "n1", containers: [{ name: "c", ports }] },
    status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } });
  return [
    ns("shop", "enforce"), ns("api", "audit"), ns("web", "observe"),
    pod("shop", "db", "10.0.0.2", [{ name: "pg", containerPort: 5432 }]), pod("api", "server", "10.0.0.3"), pod("web", "front", "10.0.0.4"),
    { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "db-from-api", namespace: "shop" },
        spec: { podSelector: { matchLabels: { app: "db" } }, ingress: [
          { from: [{ namespaceSelector: { matchLabels: { team: "web" } } }], ports: [{ port: 80 }] },
          { from: [{ namespaceSelector: { matchLabels: { team: "api" } } }], ports: [{ port: "pg" }] },
        ] } },
    { apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "server-egress", namespace: "api" },
        spec: { podSelector: {}, policyTypes: ["Egress"], egress: [{ to: [{ podSelector: { matchLabels: { app: "nothing" } } }] }] } },
  ];
}

/** The objects parsed as the control plane parses manifests. */
function cluster(): PolicyCluster {
  const parsed = objects().map((o) => parseKubeObject(o));
  const of = <K extends string>(kind: K) => parsed.filter((o) => o?.kind === kind) as Extract<NonNullable<(typeof parsed)[number]>, { kind: K }>[];
  return { namespaces: of("Namespace"), pods: of("Pod"), nodes: [], policies: of("NetworkPolicy") };
}

describe("policy explain on a cluster of its own", () => {
  const model = () => new PolicyModel(cluster(), { defaultMode: "observe" });

  it("names the policies that isolate each side and the rule that allows", () => {
    const e = explain(model(), { from: { pod: "web/front" }, to: { pod: "shop/db" }, protocol: "TCP", port: 80 });
    expect(e).toMatchObject({
      allowed: true, outcome: "FORWARDED",
      egress: { subject: "web/front", mode: "observe", isolated: false },
      ingress: { subject: "shop/db", mode: "enforce", isolatedBy: ["shop/db-from-api"], allowingRules: ["shop/db-from-api ingress[0]"] },
    });
  });

  it("names the ClusterNetworkPolicy tier and rule that decided, and a Pass followed by the NetworkPolicy that decided", () => {
    const cnp = (name: string, spec: Record<string, unknown>) => ({ apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name }, spec });
    const c = { ...cluster(), clusterNetworkPolicies: [
      cnp("guard", { tier: "Admin", priority: 3, subject: { namespaces: { matchLabels: { team: "shop" } } },
        ingress: [{ name: "web-to-np", action: "Pass", from: [{ namespaces: { matchLabels: { team: "web" } } }] }] }),
      cnp("web-default", { tier: "Baseline", priority: 1, subject: { namespaces: { matchLabels: { team: "web" } } },
        egress: [{ name: "no-api", action: "Deny", to: [{ namespaces: { matchLabels: { team: "api" } } }] }] }),
    ] };
    const passed = formatExplanation(explain(new PolicyModel(c), { from: { pod: "web/front" }, to: { pod: "shop/db" }, protocol: "TCP", port: 80 }));
    expect(passed).toContain("  Admin tier: ClusterNetworkPolicy guard (priority 3), rule web-to-np: Pass (skips the rest of the Admin tier)\n  isolated by shop/db-from-api\n  allowed by shop/db-from-api ingress[0]");
    const baseline = explain(new PolicyModel(c), { from: { pod: "web/front" }, to: { pod: "api/server" }, protocol: "TCP", port: 80 });
    expect(baseline).toMatchObject({ allowed: false, egress: { decidedBy: "Baseline", baseline: { policy: "web-default", rule: "no-api", action: "Deny" } } });
    expect(formatExplanation(baseline)).toContain("  not isolated: no NetworkPolicy selects it for this direction\n  Baseline tier: ClusterNetworkPolicy web-default (priority 1), rule no-api: Deny (final)");
  });

  it("applies each denying side's namespace mode: the strongest wins, and says what each mode would do", () => {
    // api's egress (audit) denies everything; shop's ingress (enforce) admits api on pg.
    const onPg: Explanation = explain(model(), { from: { pod: "api/server" }, to: { pod: "shop/db" }, protocol: "TCP", port: 5432 });
    expect(onPg).toMatchObject({ allowed: false, outcome: "AUDIT", egress: { allowed: false, isolatedBy: ["api/server-egress"] },
      ingress: { allowed: true, allowingRules: ["shop/db-from-api ingress[1]"] } });
    expect(onPg.perMode).toEqual({ observe: "FORWARDED", audit: "AUDIT", enforce: "DROPPED" });
    // web → db on 5432: web's egress open, shop's ingress (enforce) denies.
    const denied = explain(model(), { from: { pod: "web/front" }, to: { pod: "shop/db" }, protocol: "TCP", port: 5432 });
    expect(denied).toMatchObject({ allowed: false, outcome: "DROPPED", ingress: { allowingRules: [] } });
  });

  it("takes addresses: a pod's own, and one outside the cluster (no policy on that end)", () => {
    const e = explain(model(), { from: { ip: "192.0.2.1" }, to: { ip: "10.0.0.2" }, protocol: "TCP", port: 5432 });
    expect(e).toMatchObject({ from: "192.0.2.1 (outside the cluster)", to: "shop/db (10.0.0.2)", allowed: false, outcome: "DROPPED",
      egress: { subject: "", mode: undefined } });
    expect(() => explain(model(), { from: { pod: "web/nope" }, to: { pod: "shop/db" }, protocol: "TCP", port: 80 })).toThrow(/unknown pod web\/nope/);
  });
});

describe("bulkhead policy explain (the CLI)", () => {
  let dir = "";
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "bhexplain-"));
    writeFileSync(path.join(dir, "cluster.yaml"), objects().map((o) => stringify(o)).join("---\n"));
    writeFileSync(path.join(dir, "broken.yaml"), "kind: [unclosed\n");
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const cli = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [cliMain, "policy", "explain", "--manifests", dir, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : -1, stdout, stderr });
    });
  });

  it("explains from a manifests folder, naming a file it could not read and judging the rest", async () => {
    const json = await cli("--from", "api/server", "--to", "shop/db", "--port", "5432/tcp", "-o", "json");
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ allowed: false, outcome: "AUDIT", ingress: { allowingRules: ["shop/db-from-api ingress[1]"] } });
    expect(json.stderr).toMatch(/broken\.yaml: not valid YAML/);
    const text = await cli("--from", "web/front", "--to", "shop/db", "--port", "5432");
    expect(text.stdout).toMatch(/isolated by shop\/db-from-api\n {2}no rule of those policies allows it/);
    expect(text.stdout).toMatch(/verdict: denied; the datapath: DROPPED/);
  });

  it("--flows adds what the control plane recorded for exactly this pair: packets by verdict at each end, the newest records", async () => {
    const cp = new ControlPlane({
      source: new FolderSource({ dir }), storeCapacity: 1000, log: pino({ level: "silent" }),
      access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
    });
    const socket = `unix://${path.join(dir, "cp.sock")}`;
    await cp.start([socket]);
    try {
      const server = "10.0.0.3", db = "10.0.0.2", front = "10.0.0.4";
      const endMs = Date.now() - 1000, on = { node: "n1", endMs };
      cp.ingest("n1", [
        // The pair: api/server → shop/db TCP 5432, audited leaving (api audits), dropped entering (shop enforces).
        agentRecord(server, db, 5432, { ...on, point: "from", packets: 3, verdict: Verdict.VERDICT_AUDIT }),
        agentRecord(server, db, 5432, { ...on, point: "to", packets: 3, verdict: Verdict.VERDICT_DROPPED }),
        agentRecord(server, db, 5432, { ...on, point: "from", packets: 2, verdict: Verdict.VERDICT_AUDIT, sport: 40001 }),
        // Not the pair: another port, another protocol, another source.
        agentRecord(server, db, 80, { ...on, point: "to", packets: 50 }),
        agentRecord(server, db, 5432, { ...on, point: "to", protocol: "UDP", packets: 60 }),
        agentRecord(front, db, 5432, { ...on, point: "to", packets: 70, verdict: Verdict.VERDICT_DROPPED }),
      ]);
      const json = await cli("--from", "api/server", "--to", "shop/db", "--port", "5432", "--flows", "--server", socket, "-o", "json");
      expect(json.stderr.replace(/.*broken\.yaml.*\n/, "")).toBe("");
      const parsed = JSON.parse(json.stdout);
      expect(parsed).toMatchObject({ outcome: "AUDIT", seen: { since: "1h", records: 3,
        egress: { forwarded: 0, dropped: 0, audit: 5 }, ingress: { forwarded: 0, dropped: 3, audit: 0 } } });
      expect(parsed.seen.newest).toHaveLength(3);
      const text = await cli("--from", "api/server", "--to", "shop/db", "--port", "5432", "--flows", "--since", "10m", "--server", socket);
      expect(text.stdout).toMatch(/seen since 10m: 3 records\n {2}leaving the source \(egress\): +0 forwarded, 0 dropped, 5 audit packets\n {2}entering the destination \(ingress\): 0 forwarded, 3 dropped, 0 audit packets/);
      // Without --flows, its flags are refused rather than ignored.
      const stray = await cli("--from", "api/server", "--to", "shop/db", "--port", "5432", "--since", "10m");
      expect(stray).toMatchObject({ code: 2 });
      expect(stray.stderr).toMatch(/--since: only with --flows/);
    } finally {
      await cp.stop();
    }
  });

  it("bad input: an unknown pod exits 1 naming it, a bad flag exits 2 naming the flag", async () => {
    const unknown = await cli("--from", "web/nope", "--to", "shop/db", "--port", "80");
    expect(unknown).toMatchObject({ code: 1 });
    expect(unknown.stderr).toMatch(/unknown pod web\/nope/);
    const port = await cli("--from", "web/front", "--to", "shop/db", "--port", "80/icmp");
    expect(port).toMatchObject({ code: 2 });
    expect(port.stderr).toMatch(/--port: protocol "icmp" is not TCP, UDP or SCTP/);
    const to = await cli("--from", "web/front", "--to", "db", "--port", "80");
    expect(to).toMatchObject({ code: 2 });
    expect(to.stderr).toMatch(/--to: "db" is neither NS\/POD nor an IP address/);
  });
});
