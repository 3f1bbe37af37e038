// Every case of shared/conformance/netpol-cases.json and cnp-cases.json (ClusterNetworkPolicy,
// mixed with NetworkPolicy) passes on the policy model and on the compiled snapshot judged as
// the kernel will, and the two engines agree pair by pair.
import { existsSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import {
  loadConformanceCases,
  ModelEngine,
  runConformance,
  SnapshotEngine,
  type ConformanceCase,
  type ConformanceReport,
} from "../lab/conformance/cases.js";
import { runConformanceCli } from "../lab/conformance/cli.js";
import { repoRoot } from "../config/install.js";

const SHARED = path.join(repoRoot, "..", "shared", "conformance");
/** NetworkPolicy cases, and ClusterNetworkPolicy cases (which mix both kinds). */
const CASE_FILES = ["netpol-cases.json", "cnp-cases.json"] as const;
const casesFile = path.join(SHARED, "netpol-cases.json");
const loaded = new Map<string, ConformanceCase[]>();

beforeAll(async () => {
  for (const name of CASE_FILES) {
    const file = path.join(SHARED, name);
    if (!existsSync(file)) {
      throw new Error(`conformance cases not found at ${file}: the shared/ folder must sit beside the repository (shared/conformance/${name})`);
    }
    loaded.set(name, await loadConformanceCases(file));
  }
});

function failures(report: ConformanceReport): string {
  return report.cases.filter((c) => !c.passed).map((c) => JSON.stringify(c, null, 1)).join("\n");
}

for (const name of CASE_FILES) {
  describe(`conformance cases of ${name}`, () => {
    const cases = () => loaded.get(name) ?? [];

    it("the file has cases", () => {
      expect(cases().length).toBeGreaterThan(0);
    });

    it("every case passes on the model engine", async () => {
      const report = await runConformance(cases(), new ModelEngine());
      expect(failures(report)).toBe("");
      expect(report.passed).toBe(cases().length);
    });

    it("every case passes on the snapshot engine (compiled policy, kernel semantics)", async () => {
      const report = await runConformance(cases(), new SnapshotEngine());
      expect(failures(report)).toBe("");
      expect(report.passed).toBe(cases().length);
    });

    it("the CLI runs a single case on the snapshot engine and ends with the summary line", async () => {
      let out = "";
      let err = "";
      const code = await runConformanceCli(["--cases", path.join(SHARED, name), "--engine", "snapshot", "--case", cases()[0]?.id ?? ""], {
        stdout: { write: (t: string) => (out += t) },
        stderr: { write: (t: string) => (err += t) },
      });
      expect(err).toBe("");
      expect(code).toBe(0);
      expect(out.trimEnd().split("\n").at(-1)).toBe("1 passed, 0 failed");
    });
  });
}


// ---- the runner, the case format and the CLI ------------------------------------------------

import {
  parseConformanceCases,
  substitute,
  type ConformanceEngine,
  type ConformanceModel,
} from "../lab/conformance/cases.js";
import { loadDatapathEngine } from "../lab/conformance/cli.js";
import { FieldError } from "../fields/reader.js";
import type { Protocol } from "../controlplane/metadata/objects.js";

const denyIntoX = [
  "xa>xb", "xa>xc", "xb>xa", "xb>xc", "xc>xa", "xc>xb",
  ...["ya", "yb", "yc", "za", "zb", "zc"].flatMap((s) => ["xa", "xb", "xc"].map((d) => `${s}>${d}`)),
];

function oneCase(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: "t-1", name: "deny into x", source: "derived",
    model: { ports: [80], protocols: ["TCP"] },
    steps: [{ do: [{ create: { name: "deny", namespace: "x", podSelector: {}, policyTypes: ["Ingress"] } }], probes: [{ port: 80, protocol: "TCP", denied: denyIntoX }] }],
    ...overrides,
  };
}

/** The model engine with one pair's answer flipped: what a wrong datapath looks like to the runner. */
class FlippingEngine implements ConformanceEngine {
  readonly name = "flipping";
  private readonly inner = new ModelEngine();
  constructor(private readonly pair: string) {}
  setup(model: ConformanceModel) { return this.inner.setup(model); }
  apply(...args: Parameters<ConformanceEngine["apply"]>) { return this.inner.apply(...args); }
  async probe(port: number, protocol: Protocol) {
    const denied = await this.inner.probe(port, protocol);
    if (denied.has(this.pair)) denied.delete(this.pair);
    else denied.add(this.pair);
    return denied;
  }
  teardown() { return this.inner.teardown(); }
}

describe("conformance runner", () => {
  it("reports the exact pairs an engine gets wrong, both ways, and counts the case failed", async () => {
    const cases = parseConformanceCases([oneCase()]);
    const lines: string[] = [];
    const wronglyAllowed = await runConformance(cases, new FlippingEngine("yb>xa"), { log: (l) => lines.push(l) });
    expect(wronglyAllowed).toMatchObject({ engine: "flipping", passed: 0, failed: 1 });
    expect(wronglyAllowed.cases[0]?.steps[0]?.probes[0]).toEqual({ port: 80, protocol: "TCP", passed: false, allowedButShouldBeDenied: ["yb>xa"], deniedButShouldBeAllowed: [] });
    expect(lines[0]).toBe("FAIL t-1  deny into x");
    expect(lines[1]).toContain("allowed but should be denied (1): yb>xa");
    const wronglyDenied = await runConformance(cases, new FlippingEngine("xa>yb"));
    expect(wronglyDenied.cases[0]?.steps[0]?.probes[0]).toMatchObject({ allowedButShouldBeDenied: [], deniedButShouldBeAllowed: ["xa>yb"] });
    expect((await runConformance(cases, new ModelEngine())).passed).toBe(1);
  });

  it("an engine that throws fails its case with the error, the run goes on (the next case set up anew) and tears down once", async () => {
    let teardowns = 0;
    let setups = 0;
    const engine: ConformanceEngine = {
      name: "broken",
      setup: (model) => { setups++; return new ModelEngine().setup(model); },
      apply: async () => { throw new Error("lab exploded"); },
      probe: async () => new Set(),
      teardown: async () => { teardowns++; },
    };
    const report = await runConformance(parseConformanceCases([oneCase(), oneCase({ id: "t-2" })]), engine);
    expect(report).toMatchObject({ passed: 0, failed: 2 });
    expect(report.cases[0]?.error).toBe("lab exploded");
    expect(setups).toBe(2);
    expect(teardowns).toBe(1);
  });

  it("prepares an engine once with every case's model; leaveUp leaves it set up for the caller", async () => {
    const calls: string[] = [];
    const model = new ModelEngine();
    const engine: ConformanceEngine = {
      name: "recording",
      prepare: async (models) => { calls.push(`prepare ${models.map((m) => m.ports.join("+")).join(",")}`); },
      setup: (m) => { calls.push("setup"); return model.setup(m); },
      apply: (actions, cluster) => model.apply(actions, cluster),
      probe: (port, protocol) => model.probe(port, protocol),
      teardown: async () => { calls.push("teardown"); },
    };
    const cases = parseConformanceCases([oneCase(), oneCase({ id: "t-2", model: { ports: [81], protocols: ["TCP"] }, steps: [{ do: [], probes: [{ port: 81, protocol: "TCP", denied: [] }] }] })]);
    expect(await runConformance(cases, engine, { leaveUp: true })).toMatchObject({ passed: 2, failed: 0 });
    expect(calls).toEqual(["prepare 80,81", "setup", "setup"]);
    await runConformance(cases, engine, { caseId: "t-2" });
    expect(calls.slice(3)).toEqual(["prepare 81", "setup", "teardown"]);
  });

  it("resolves CIDR placeholders against the engine's pod addresses", () => {
    const pods = new Map([["y/b", { ips: ["10.244.1.14", "fd00::14"] }], ["x/b", { ips: ["fd00:10::5"] }]]);
    expect(substitute({ cidr: "<podIP:y/b>/32" }, pods)).toEqual({ cidr: "10.244.1.14/32" });
    expect(substitute({ cidr: "<podIP:x/b>/32" }, pods)).toEqual({ cidr: "fd00:10::5/128" });
    expect(substitute({ cidr: "<slash4-net-of-podIP:y/b>" }, pods)).toEqual({ cidr: "0.0.0.0/4" });
    expect(substitute({ cidr: "<slash4-net-of-podIP:y/b>/4" }, pods)).toEqual({ cidr: "0.0.0.0/4" });
    expect(substitute({ except: ["<slash4-net-of-podIP:x/b>"] }, pods)).toEqual({ except: ["f000::/4"] });
  });

  it("runs a case whose ipBlock uses the /4 placeholder and an except of one pod", async () => {
    const c = oneCase({
      steps: [{
        do: [{ create: { name: "cidr", namespace: "x", podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Ingress"], ingress: [{ from: [{ ipBlock: { cidr: "<slash4-net-of-podIP:x/b>", except: ["<podIP:y/b>/32"] } }] }] } }],
        probes: [{ port: 80, protocol: "TCP", denied: ["yb>xa"] }],
      }],
    });
    for (const engine of [new ModelEngine(), new SnapshotEngine()]) {
      const report = await runConformance(parseConformanceCases([c]), engine);
      expect(report.failed, JSON.stringify(report)).toBe(0);
    }
  });

  it("labels change step by step; set_ns_labels keeps kubernetes.io/metadata.name", async () => {
    const c = oneCase({
      steps: [
        { do: [{ create: { name: "from-team", namespace: "x", podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "blue" } } }, { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "x" } } }] }] } }], probes: [{ port: 80, protocol: "TCP", denied: denyIntoX.filter((p) => !p.startsWith("x")) }] },
        { do: [{ set_ns_labels: { ns: "x", labels: {} } }, { add_ns_labels: { ns: "z", labels: { team: "blue" } } }], probes: [{ port: 80, protocol: "TCP", denied: denyIntoX.filter((p) => p.startsWith("y")) }] },
        { do: [{ set_pod_labels: { pod: "x/a", labels: { other: "1" } } }, { add_pod_labels: { pod: "x/b", labels: { pod: "z" } } }], probes: [{ port: 80, protocol: "TCP", denied: denyIntoX.filter((p) => p.startsWith("y")) }] },
        { do: [{ delete_all_policies: true }], probes: [{ port: 80, protocol: "TCP", denied: [] }] },
      ],
    });
    for (const engine of [new ModelEngine(), new SnapshotEngine()]) {
      const report = await runConformance(parseConformanceCases([c]), engine);
      expect(report.failed, JSON.stringify(report.cases[0])).toBe(0);
    }
  });

  const bad: [string, Record<string, unknown>, RegExp][] = [
    ["a pair that is not two model pods", oneCase({ steps: [{ do: [], probes: [{ port: 80, protocol: "TCP", denied: ["xa>xa"] }] }] }), /^t-1: steps\[0\]\.probes\[0\]\.denied\[0\]: "xa>xa" is not a pair/],
    ["an unknown action", oneCase({ steps: [{ do: [{ delete: {} }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]: expected a map with exactly one of create, update/],
    ["a bad policy field", oneCase({ steps: [{ do: [{ create: { name: "p", namespace: "x", podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 70 }] }] } }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]\.create: spec\.ingress\[0\]\.ports\[0\]\.endPort: must be at least port 80/],
    ["an unknown policy field", oneCase({ steps: [{ do: [{ create: { name: "p", namespace: "x", podSelecter: {} } }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]\.create\.podSelecter: unknown field/],
    ["a placeholder naming no pod", oneCase({ steps: [{ do: [{ create: { name: "p", namespace: "x", podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: "<podIP:q/b>/32" } }] }] } }], probes: [] }] }), /<podIP:q\/b> names no model pod/],
    ["a probe on a port no pod serves", oneCase({ steps: [{ do: [], probes: [{ port: 81, protocol: "TCP", denied: [] }] }] }), /^t-1: steps\[0\]\.probes\[0\]\.port: 81 is not one of model\.ports/],
    ["a pod reference that is not ns/pod", oneCase({ steps: [{ do: [{ add_pod_labels: { pod: "xb", labels: {} } }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]\.add_pod_labels\.pod: expected "<ns>\/<pod>"/],
    ["an SCTP port name longer than Kubernetes allows", oneCase({ model: { ports: [10000], protocols: ["SCTP"] } }), /^t-1: model\.ports: .*serve-10000-sctp/],
    ["a missing id", oneCase({ id: undefined }), /^case \[0\]: id: /],
    ["a ClusterNetworkPolicy with a bad priority", oneCase({ steps: [{ do: [{ create_cnp: { name: "c", tier: "Admin", priority: 1001, subject: { namespaces: {} } } }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]\.create_cnp: spec\.priority: expected an integer 0-1000, got 1001/],
    ["a ClusterNetworkPolicy with an unknown action", oneCase({ steps: [{ do: [{ create_cnp: { name: "c", tier: "Baseline", priority: 1, subject: { namespaces: {} }, ingress: [{ action: "Allow", from: [{ namespaces: {} }] }] } }], probes: [] }] }), /create_cnp: spec\.ingress\[0\]\.action: expected Accept, Deny or Pass/],
    ["delete_cnp without a name", oneCase({ steps: [{ do: [{ delete_cnp: {} }], probes: [] }] }), /^t-1: steps\[0\]\.do\[0\]\.delete_cnp\.name: /],
  ];
  for (const [what, doc, message] of bad) {
    it(`a cases file with ${what} is refused, naming case and field`, () => {
      let error: unknown;
      try {
        parseConformanceCases([doc]);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(FieldError);
      expect((error as Error).message).toMatch(message);
    });
  }

  it.each([["-o", "json"], ["--json"]])("the CLI prints the JSON report on stdout and the summary on stderr with %s", async (...flag) => {
    let out = "";
    let err = "";
    const code = await runConformanceCli(["--cases", casesFile, "--engine", "model", ...flag], {
      stdout: { write: (t: string) => (out += t) },
      stderr: { write: (t: string) => (err += t) },
    });
    expect(code).toBe(0);
    const report = JSON.parse(out) as { engine: string; passed: number; failed: number; cases: unknown[] };
    expect(report).toMatchObject({ engine: "model", passed: (loaded.get("netpol-cases.json") ?? []).length, failed: 0 });
    expect(err).toBe(`${(loaded.get("netpol-cases.json") ?? []).length} passed, 0 failed\n`);
  });

  it("the CLI refuses bad usage with exit code 2, naming the flag", async () => {
    const run = async (argv: string[]) => {
      let err = "";
      const code = await runConformanceCli(argv, { stdout: { write: () => true }, stderr: { write: (t: string) => (err += t) } });
      return { code, err };
    };
    expect(await run(["--engine", "model"])).toMatchObject({ code: 2, err: expect.stringContaining("--cases FILE is required") });
    expect(await run(["--cases", casesFile, "--engine", "kernel"])).toMatchObject({ code: 2, err: expect.stringContaining("--engine: expected one of model, snapshot, datapath") });
    expect(await run(["--cases", casesFile, "--engine", "model", "--case", "nope"])).toMatchObject({ code: 2, err: expect.stringContaining("--case: no case \"nope\"") });
    expect(await run(["--cases", casesFile, "--frobnicate"])).toMatchObject({ code: 2, err: expect.stringContaining("--frobnicate") });
    expect(await run(["--cases", casesFile, "--engine", "model", "-o", "yaml"])).toMatchObject({ code: 2, err: expect.stringContaining('-o/--output: "yaml" is not one of text, json') });
  });

  it("a missing datapath module is a clear error, not a crash", async () => {
    await expect(loadDatapathEngine(() => {}, "../../lab/no-such-conformance.js")).rejects.toThrow(/datapath engine is not available/);
  });
});
