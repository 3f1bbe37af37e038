// What-if against the conformance cases (issue 14, proof "differential"), model side: each
// step of each shared and random case is a draft over the step before; records of every
// probe between every pair of pods are replayed, and what-if must report exactly the
// (pair, protocol, port) whose verdict the step changes, with the case's expected verdict
// after (the reachability conformance-datapath.test.ts proves the real datapath gives).
// This checks the replay's shortcuts — one evaluation per class of pods that no selector
// label or ipBlock tells apart, records grouped by distinct tuple — against the plain model.
import { existsSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { repoRoot } from "../config/install.js";
import { generatePlacement, loadConformanceCases, ModelCluster, modelPairs, type ConformanceCase } from "../lab/conformance/cases.js";
import { FlowReplay } from "../controlplane/policy/whatif.js";
import { PROTOCOL_NUMBERS } from "../controlplane/policy/model.js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { randomCases } from "./harness/random-policy.js";
import { flow, podEnd } from "./harness/flow-records.js";

const casesFile = path.join(repoRoot, "..", "shared", "conformance", "netpol-cases.json");

function check(cases: ConformanceCase[]): { judged: number; changes: number; wrong: string[] } {
  let judged = 0, changes = 0;
  const wrong: string[] = [];
  for (const c of cases) {
    const cluster = new ModelCluster(c.model, generatePlacement(c.model));
    let before = cluster.objects();
    for (const [s, step] of c.steps.entries()) {
      for (const action of step.actions) cluster.apply(action);
      const after = cluster.objects();
      // Records as the enricher names them now (labels of this step: the identity of the time).
      const ends = new Map(after.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`,
        podEnd(p.metadata.namespace, p.metadata.name, p.status.podIPs[0] ?? "", p.metadata.labels, p.metadata.name)]));
      const records: FlowRecord[] = [];
      const expected = new Map<string, boolean>();
      const previous = new Map<string, boolean>();
      for (const probe of step.probes) {
        for (const pair of modelPairs(c.model)) {
          const src = ends.get(`${pair.src.namespace}/${pair.src.name}`)!, dst = ends.get(`${pair.dst.namespace}/${pair.dst.name}`)!;
          records.push(flow(src, dst, { point: "to", port: probe.port, protocol: PROTOCOL_NUMBERS[probe.protocol] }));
          expected.set(`${pair.src.namespace}/${pair.src.name}>${pair.dst.namespace}/${pair.dst.name} ${probe.protocol}/${probe.port}`, !probe.denied.has(pair.name));
        }
      }
      const replay = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, [...before.policies, ...after.policies]);
      replay.addAll(records);
      judged += records.length;
      // Before: the same pods (labels of now) under the previous step's policies, judged by the plain model.
      const report = replay.report({ before: before.policies, after: after.policies }, { mode: "enforce" });
      const reported = new Map(report.edges.map((e) => [`${e.source.replace(/^workload:([^/]+)\/Deployment\//, "$1/")}>${e.destination.replace(/^workload:([^/]+)\/Deployment\//, "$1/")} ${e.protocol}/${e.port}`, e]));
      const baseline = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, before.policies);
      baseline.addAll(records);
      // Everything DROPPED under `before` shows as a change against no policies at all: what was allowed before.
      for (const e of baseline.report({ before: [], after: before.policies }, { mode: "enforce" }).edges) {
        previous.set(`${e.source.replace(/^workload:([^/]+)\/Deployment\//, "$1/")}>${e.destination.replace(/^workload:([^/]+)\/Deployment\//, "$1/")} ${e.protocol}/${e.port}`, false);
      }
      for (const [key, allowedAfter] of expected) {
        const allowedBefore = previous.get(key) ?? true;
        const edge = reported.get(key);
        if (allowedBefore !== allowedAfter) {
          changes++;
          if (edge === undefined) wrong.push(`${c.id} step ${s} ${key}: changes (${allowedBefore} → ${allowedAfter}), what-if does not report it`);
          else if (edge.allowedAfter !== allowedAfter || edge.after !== (allowedAfter ? "FORWARDED" : "DROPPED")) wrong.push(`${c.id} step ${s} ${key}: expected allowed=${allowedAfter}, what-if says ${edge.after}`);
        } else if (edge !== undefined) {
          wrong.push(`${c.id} step ${s} ${key}: unchanged, what-if reports ${edge.before} → ${edge.after}`);
        }
      }
      before = after;
    }
  }
  return { judged, changes, wrong };
}

describe("what-if on the conformance cases", () => {
  it("reports exactly the verdicts each step changes, as the cases expect, on the shared cases", async () => {
    if (!existsSync(casesFile)) throw new Error(`conformance cases not found at ${casesFile}: the shared/ folder must sit beside the repository`);
    const result = check(await loadConformanceCases(casesFile));
    expect(result.wrong.slice(0, 10)).toEqual([]);
    expect(result.changes).toBeGreaterThan(100);
  });

  it("and on 200 random cases (seed 14)", async () => {
    const result = check(await randomCases(14, 200));
    expect(result.wrong.slice(0, 10)).toEqual([]);
    expect(result.changes).toBeGreaterThan(100);
  });
});
