// Random NetworkPolicy conformance cases (test/harness/random-policy.ts: policies and label
// changes over the 3×3 model, expected verdicts computed by the ModelEngine; every other case
// also creates, updates and deletes ClusterNetworkPolicies, Admin and Baseline with
// Accept/Deny/Pass, so both kinds are judged together) run on the
// compiled snapshot and then on the real datapath (one lab, reset before each case): both must agree
// with the model on every pair of every probe. A failure names the seed; rerun the same
// cases with CONFORMANCE_RANDOM_SEED=<seed>, and the failed cases are written to a cases
// file for `bulkhead lab conformance --cases FILE`.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  describeCase, ModelEngine, parseConformanceCases, runConformance, SnapshotEngine, type ConformanceReport,
} from "../lab/conformance/cases.js";
import { cliMain } from "../config/install.js";
import { DatapathEngine } from "../lab/conformance/datapath.js";
import { randomCaseDocuments } from "./harness/random-policy.js";
import { summary, WhatIfDifferential } from "./harness/whatif-differential.js";
import { testPinDir } from "./harness/testbed.js";
// Agents pin their datapath under it (bpffs); lab down removes it.
const PIN_DIR = testPinDir("bh-conformance-random-datapath");

/** Distinct from the other suites' lab control planes. */
const OBSERVER = "127.0.0.1:22476"; // not demo.test's 22470: this file runs beside it (lab instance 2)
const SEED = Number(process.env.CONFORMANCE_RANDOM_SEED ?? 20250611);
/** At least 20. */
const COUNT = Math.max(20, Number(process.env.CONFORMANCE_RANDOM_CASES ?? 20));

/** Every CNP_EVERY-th case (0, 2, 4, …) mixes in ClusterNetworkPolicies. */
const CNP_EVERY = 2;
const documents = await randomCaseDocuments(SEED, COUNT, { cnpEvery: CNP_EVERY });
const CNP_ACTIONS = new Set(["create_cnp", "update_cnp", "delete_cnp", "delete_all_cnps"]);
type Doc = { id: string; steps: { do: Record<string, unknown>[]; probes: { denied: string[] }[] }[] };
const mixed = (documents as unknown as Doc[]).filter((d) => d.steps.some((s) => s.do.some((a) => Object.keys(a).some((k) => CNP_ACTIONS.has(k)))));
const cases = parseConformanceCases(documents);

/** The failed cases' reports and documents, and where the documents were written. */
function failureMessage(report: ConformanceReport, logs: Map<string, string[]>): string {
  const failed = report.cases.filter((c) => !c.passed);
  const file = path.join(os.tmpdir(), `bulkhead-random-conformance-${SEED}-${report.engine}.json`);
  const docs = documents.filter((d) => failed.some((c) => c.id === d.id));
  fs.writeFileSync(file, `${JSON.stringify(docs, null, 2)}\n`);
  const lines = [
    `${report.engine}: ${report.failed} of ${report.cases.length} random cases disagree with the model, seed ${SEED} (rerun with CONFORMANCE_RANDOM_SEED=${SEED}); `
      + `the failed cases are in ${file} (bulkhead lab conformance --cases ${file})`,
  ];
  for (const c of failed) {
    lines.push(...describeCase(c), `  case: ${JSON.stringify(documents.find((d) => d.id === c.id))}`);
    const log = logs.get(c.id);
    if (log && log.length > 0) lines.push("  engine log:", ...log.map((l) => `    ${l}`));
  }
  return lines.join("\n");
}

describe(`random NetworkPolicy and ClusterNetworkPolicy conformance, ${COUNT} cases (seed ${SEED})`, () => {
  it(`the generator wrote ${COUNT} cases of 1–3 steps with 1–2 probes each, some on SCTP (seed ${SEED})`, () => {
    expect(cases).toHaveLength(COUNT);
    for (const c of cases) {
      expect(c.steps.length).toBeGreaterThanOrEqual(1);
      expect(c.steps.length).toBeLessThanOrEqual(3);
      for (const step of c.steps) expect(step.probes.length === 1 || step.probes.length === 2, c.id).toBe(true);
    }
    expect(cases.filter((c) => c.model.protocols.includes("SCTP")).length).toBeGreaterThanOrEqual(2);
    // Not all trivial: some probes deny some pairs and allow others.
    expect(cases.flatMap((c) => c.steps.flatMap((s) => s.probes)).filter((p) => p.denied.size > 0 && p.denied.size < 72).length).toBeGreaterThan(COUNT);
  });

  it(`${Math.ceil(COUNT / CNP_EVERY)} cases mix in ClusterNetworkPolicies, and in some of them the tiers change what NetworkPolicy alone would allow (seed ${SEED})`, async () => {
    expect(mixed.map((d) => d.id)).toEqual(documents.filter((_, i) => i % CNP_EVERY === 0).map((d) => String(d.id)));
    // The same cases without their ClusterNetworkPolicy actions, run on the model against the
    // matrices written with them: a case that now fails is one where the tiers decided a pair.
    const withoutTiers = mixed.map((d) => ({ ...d, steps: d.steps.map((s) => ({ ...s, do: s.do.filter((a) => !Object.keys(a).some((k) => CNP_ACTIONS.has(k))) })) }));
    const report = await runConformance(parseConformanceCases(withoutTiers), new ModelEngine());
    expect(report.failed, `cases whose verdicts the ClusterNetworkPolicies changed, of ${mixed.length}`).toBeGreaterThanOrEqual(Math.ceil(mixed.length / 3));
  });

  it(`the compiled snapshot agrees with the model on every case (seed ${SEED})`, async () => {
    const report = await runConformance(cases, new SnapshotEngine());
    if (report.failed > 0) expect.fail(failureMessage(report, new Map()));
    expect(report.passed).toBe(COUNT);
  });

  describe("on the enforcing datapath", () => {
    let dir: string;
    let engine: DatapathEngine;
    let differential: WhatIfDifferential | undefined;
    let current: string[] = [];

    beforeAll(() => {
      if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npx tsc -p . first");
      dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-conf-random-"));
      // runConformance brings the lab up once for all cases (prepare) and removes it at the end.
      engine = new DatapathEngine({ stateDir: path.join(dir, "state"), pinDir: PIN_DIR, observer: OBSERVER, mode: "enforce", ui: false,
        log: (line) => current.push(line) });
    });

    afterAll(async () => {
      await engine?.teardown();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it(`the datapath agrees with the model on all ${COUNT} random cases (seed ${SEED})`, async () => {
      // The engine's log, per case: the runner logs a case's PASS/FAIL line when it is done.
      const logs = new Map<string, string[]>();
      const started = Date.now();
      let caseStarted = started;
      const times: string[] = [];
      // What-if rides along (harness/whatif-differential.ts): each step's records replayed against its draft before it is applied.
      differential = new WhatIfDifferential(engine, cases, { seed: SEED });
      const report = await runConformance(cases, differential, {
        log: (line) => {
          const done = /^(PASS|FAIL) (\S+)/.exec(line);
          if (!done?.[2]) return;
          logs.set(done[2], current);
          current = [];
          times.push(`${done[2]} ${done[1]} ${((Date.now() - caseStarted) / 1000).toFixed(1)} s`);
          caseStarted = Date.now();
        },
      });
      console.log(`random conformance (seed ${SEED}) on the datapath: ${report.passed} passed, ${report.failed} failed in ${((Date.now() - started) / 1000).toFixed(0)} s`
        + ` (probes: ${engine.probeCauses})\n  ${times.join("\n  ")}\n  what-if: ${summary(differential.stats)}`);
      // Built only on a failure: it writes the failed cases to a file.
      if (report.failed > 0) expect.fail(failureMessage(report, logs));
      expect(report.passed).toBe(COUNT);
    }, COUNT * 30_000);

    // Issue 14's differential proof on records the lab recorded: for every step after the
    // first, what-if's "after" for each of the step before's probes equals the model's and,
    // unless the step relabels an end, the datapath's once the step is applied.
    it(`what-if's "after" for every recorded probe equals the datapath once the draft is applied, and the model (seed ${SEED})`, () => {
      if (!differential) throw new Error("the datapath run above did not start");
      const s = differential.stats;
      if (differential.findings.length > 0) expect.fail(differential.report());
      // Not an empty proof: a reset after every case and more steps, every probe with its
      // records, drafts that changed verdicts and deleted policies, most tuples held to the datapath.
      expect(s.resets, summary(s)).toBe(COUNT);
      expect(s.steps, summary(s)).toBeGreaterThan(COUNT);
      expect(s.records, summary(s)).toBeGreaterThanOrEqual(s.probes);
      expect(s.changed, summary(s)).toBeGreaterThanOrEqual(100);
      expect(s.deletions, summary(s)).toBeGreaterThanOrEqual(COUNT);
      expect(s.againstDatapath, summary(s)).toBeGreaterThanOrEqual(s.tuples / 2);
    });
  });
});
