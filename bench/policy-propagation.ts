// Policy propagation: the time from a NetworkPolicy change (its file written into the
// manifests folder) to its enforcement on every lab node, as packets see it.
// Run after `npm run build:ts` as `node dist/bench/policy-propagation.js` (`--changes N`,
// `--nodes N`, `--interval-ms N`, `--state-dir DIR`, `--observer ADDR` change the defaults).
// It brings up (and removes) the conformance lab: do not run it beside another lab test.
// Method and last results: bench/README-policy-propagation.md.
//
// Method: the conformance lab (lab/conformance/datapath.ts) in enforce mode, pods serving 80/TCP. One
// pair that crosses nodes is probed through the destination's Service. Each change either
// writes a default-deny-ingress policy for the destination pod or removes it, so the probe
// flips allowed → denied → allowed …. From the moment the file is renamed into place, a
// new probe (a fresh connection on a fresh source port, timeout --probe-timeout-ms) starts
// every --interval-ms; the flip time is the start of the first probe of the final run of
// probes with the new outcome (20 in a row end it). A probe with the old outcome after the
// first with the new one is counted as a flap (a non-atomic update would show as flaps).
// Beside it, GetNodes is polled for the moment every node reports the new version enforced.
import { rm } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { parseKubeObject, type NetworkPolicy } from "../controlplane/metadata/objects.js";
import { MODEL_NAMESPACES, MODEL_PODS } from "../lab/conformance/cases.js";
import { createDatapathEngine, type DatapathEngine, type LabModelPod } from "../lab/conformance/datapath.js";
import { policyFileName, writePolicy } from "../lab/netpol-files.js";

const RUN_TO_END = 20;
const CHANGE_TIMEOUT_MS = 15_000;

interface Sample {
  change: number;
  direction: "deny" | "allow";
  flipMs: number;
  enforcedMs: number;
  flaps: number;
}

interface Probe {
  start: number;
  ok?: boolean;
}

function int(raw: string | undefined, name: string, fallback: number, min: number): number {
  if (raw === undefined) return fallback;
  if (!/^[0-9]+$/.test(raw) || Number(raw) < min) throw new Error(`--${name}: expected a whole number >= ${min}, got "${raw}"`);
  return Number(raw);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Index of the first probe of the final run with outcome `want` among completed probes, once that run is long enough. */
function flipIndex(probes: readonly Probe[], want: boolean, minRun: number): number | undefined {
  let done = 0;
  while (done < probes.length && probes[done]?.ok !== undefined) done++;
  let lastOld = -1;
  for (let i = 0; i < done; i++) if (probes[i]?.ok !== want) lastOld = i;
  return done - (lastOld + 1) >= minRun ? lastOld + 1 : undefined;
}

async function measureFlip(engine: DatapathEngine, from: LabModelPod, to: LabModelPod, want: boolean, t0: number,
  intervalMs: number, timeoutMs: number): Promise<{ flipMs: number; flaps: number }> {
  const probes: Probe[] = [];
  const inFlight: Promise<void>[] = [];
  while (flipIndex(probes, want, RUN_TO_END) === undefined) {
    if (performance.now() - t0 > CHANGE_TIMEOUT_MS) {
      throw new Error(`${from.key}>${to.key} did not become ${want ? "allowed" : "denied"} within ${CHANGE_TIMEOUT_MS} ms of the change`);
    }
    const probe: Probe = { start: performance.now() };
    probes.push(probe);
    inFlight.push(engine.probePair(from.key, to.key, 80, "TCP", timeoutMs).then((r) => { probe.ok = r.ok; }));
    await sleep(intervalMs);
  }
  await Promise.all(inFlight);
  const first = flipIndex(probes, want, 1) ?? probes.length - 1;
  const firstNew = probes.findIndex((p) => p.ok === want);
  const flaps = probes.slice(firstNew).filter((p) => p.ok !== want).length;
  return { flipMs: (probes[first]?.start ?? t0) - t0, flaps };
}

/** A default-deny-ingress policy for the pods with `labels`, parsed as the control plane parses it. */
function denyIngress(namespace: string, name: string, labels: Record<string, string>): NetworkPolicy {
  const policy = parseKubeObject({
    apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace },
    spec: { podSelector: { matchLabels: labels }, policyTypes: ["Ingress"], ingress: [] },
  });
  if (policy?.kind !== "NetworkPolicy") throw new Error("the bench's policy did not parse as a NetworkPolicy");
  return policy;
}

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}

function row(label: string, values: readonly number[]): string {
  const f = (v: number) => `${v.toFixed(1)} ms`.padStart(10);
  return `${label.padEnd(34)}${f(percentile(values, 50))}${f(percentile(values, 99))}${f(Math.max(...values))}   n=${values.length}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      changes: { type: "string" }, nodes: { type: "string" }, "interval-ms": { type: "string" },
      "probe-timeout-ms": { type: "string" }, "state-dir": { type: "string" }, observer: { type: "string" },
    },
  });
  const changes = int(values.changes, "changes", 50, 2);
  const nodes = int(values.nodes, "nodes", 2, 2);
  const intervalMs = int(values["interval-ms"], "interval-ms", 5, 1);
  const probeTimeoutMs = int(values["probe-timeout-ms"], "probe-timeout-ms", 250, 10);
  const stateDir = path.resolve(values["state-dir"] ?? "/run/bulkhead/bench-propagation");
  const engine = await createDatapathEngine({
    stateDir, nodes, mode: "enforce", observer: values.observer ?? "127.0.0.1:22461", pinDir: path.join(stateDir, "..", "bench-propagation-pins"),
  });
  const samples: Sample[] = [];
  try {
    await engine.setup({ namespaces: MODEL_NAMESPACES, pods: MODEL_PODS, ports: [80], protocols: ["TCP"] });
    const pods = engine.modelPods;
    const to = pods.find((p) => p.key === "xa");
    const from = pods.find((p) => p.node !== to?.node);
    if (!to || !from) throw new Error("no pair of pods on different nodes in the model");
    process.stdout.write(`policy propagation: ${changes} changes on ${nodes} nodes; pair ${from.key}>${to.key} `
      + `(${from.node} → ${to.node}, via ${to.service} ${to.clusterIP}:80/TCP); a probe every ${intervalMs} ms\n`);
    const file = path.join(engine.manifests, policyFileName("x", "bench-deny-xa"));
    const denyXa = denyIngress("x", "bench-deny-xa", { pod: "a" });
    for (let change = 0; change < changes; change++) {
      const deny = change % 2 === 0;
      const before = await engine.watch.latest();
      const t0 = performance.now();
      if (deny) {
        await writePolicy(engine.manifests, denyXa);
      } else {
        await rm(file);
      }
      const enforced = engine.watch.waitEnforced({ after: before, settleMs: 0, timeoutMs: CHANGE_TIMEOUT_MS }).then(() => performance.now() - t0);
      const flip = await measureFlip(engine, from, to, !deny, t0, intervalMs, probeTimeoutMs);
      samples.push({ change, direction: deny ? "deny" : "allow", ...flip, enforcedMs: await enforced });
      // Let the datapath settle (and the last probes drain) before the next change.
      await sleep(100);
    }
  } finally {
    await engine.teardown();
  }
  const of = (d?: "deny" | "allow") => samples.filter((s) => d === undefined || s.direction === d);
  process.stdout.write(`${"".padEnd(34)}${"p50".padStart(10)}${"p99".padStart(10)}${"max".padStart(10)}\n`);
  process.stdout.write(`${row("probe flip, allowed → denied", of("deny").map((s) => s.flipMs))}\n`);
  process.stdout.write(`${row("probe flip, denied → allowed", of("allow").map((s) => s.flipMs))}\n`);
  process.stdout.write(`${row("probe flip, every change", of().map((s) => s.flipMs))}\n`);
  process.stdout.write(`${row("GetNodes: every node enforces", of().map((s) => s.enforcedMs))}\n`);
  const flaps = samples.reduce((n, s) => n + s.flaps, 0);
  process.stdout.write(`flaps (old outcome after the first new one): ${flaps}\n`);
  process.stdout.write(`${JSON.stringify({
    bench: "policy-propagation", changes, nodes, intervalMs, probeTimeoutMs,
    flipP50Ms: percentile(of().map((s) => s.flipMs), 50), flipP99Ms: percentile(of().map((s) => s.flipMs), 99),
    enforcedP50Ms: percentile(of().map((s) => s.enforcedMs), 50), enforcedP99Ms: percentile(of().map((s) => s.enforcedMs), 99), flaps,
  })}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`policy-propagation: ${err.message}\n`);
  process.exitCode = 1;
});
