// What-if against the datapath, on the records the lab recorded (issue 14, proof
// "differential"): a ConformanceEngine that wraps the lab's DatapathEngine while the random
// conformance cases run on it. For each step k ≥ 1 of a case, before the step is applied:
//
//  1. the control plane holds the records of step k−1's probes (real records from the
//     agents, each end with the labels it had then). Two what-if calls with drafts that
//     change every verdict (an Admin-tier ClusterNetworkPolicy accepting everything, one
//     denying everything, each with the deletion of every ClusterNetworkPolicy in force)
//     list every replayed (pair, protocol, port) with its verdict under the policies in
//     force and its records: the wait for step k−1's records ends when every probe sent has
//     its tuple there (so the check cannot pass on an empty history), and what-if's
//     "before" must equal what the datapath did at step k−1;
//  2. the draft: the manifests step k creates or replaces (the same YAML the lab writes into
//     its manifests folder) and deletions (`bulkhead.io/draft: delete`) of those it removes,
//     through PolicyWhatIf, over the same time range. Its "after" for a tuple is the edge's
//     `after` when listed, else the tuple's "before";
//  3. that "after" must equal the model (controlplane/policy/model.ts) with step k's policies
//     over the identities of step k−1 (what the records carry);
//  4. step k is applied, every (protocol, port) replayed is probed (the runner's own probes
//     of step k reuse these answers, the lab being in the same state), and what-if's "after"
//     must equal the datapath's verdict for every tuple whose ends keep their labels.
//
// A step's label changes are not policy and cannot be drafted: what-if judges a record by
// its ends' labels of the time (and today's namespace labels, which are still step k−1's
// when it is asked), the datapath after the step by the new ones. A pair with an end whose
// pod or namespace labels the step changes is checked against the model over the recorded
// identities (3), and not against the datapath (4); every other pair's verdict depends on
// nothing the step changed but policies.
//
// The reset between two cases (and after the last one) is checked the same way, as a draft
// deleting every NetworkPolicy and ClusterNetworkPolicy in force: the random cases delete
// little themselves, and a what-if that ignored deletions must not pass. Its label resets
// are not taken as relabellings: with no policy in force no label decides a verdict.
//
// The calls go through the Observer API's PolicyWhatIf RPC, which `bulkhead policy what-if`
// calls (a CLI process per call would cost ~0.6 s, and a step makes 3 calls or more).
import { stringify } from "yaml";
import { timestampOfMs } from "../../config/time.js";
import {
  modelPairs, type ConformanceCase, type ConformanceEngine, type ConformanceModel, type ModelPlacement, type ResolvedAction,
} from "../../lab/conformance/cases.js";
import { cnpDocument, policyDocument } from "../../lab/netpol-files.js";
import { PolicyModel, type PolicyCluster } from "../../controlplane/policy/model.js";
import { DRAFT_ANNOTATION } from "../../controlplane/policy/draft.js";
import { CNP_API_VERSION, CNP_KIND } from "../../controlplane/policy/cnp.js";
import type { Protocol } from "../../controlplane/metadata/objects.js";
import { Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import type { DraftFile, ObserverServiceClient, PolicyWhatIfResponse } from "../../proto/gen/bulkhead/v1/observer.js";
import { sleep } from "./wait.js";

interface Combo { port: number; protocol: Protocol }
const comboKey = (c: Combo) => `${c.protocol}/${c.port}`;
type Outcome = "FORWARDED" | "DROPPED";

/** One replayed (pair, protocol, port): what-if's verdicts, the model's, and whether the step relabels an end. */
interface Judged {
  pair: string;
  combo: Combo;
  before: Outcome;
  after: Outcome;
  records: number;
  modelAllowed: boolean;
  relabelled: boolean;
}

interface Prediction {
  /** "step 3", "the reset after step 2". */
  label: string;
  tuples: Map<string, Judged>;
  combos: Combo[];
}

export interface DifferentialStats {
  /** Changes (steps and resets) whose predecessor's records were replayed against their draft. */
  steps: number;
  /** Of those, the resets between cases (and after the last): drafts deleting every policy in force. */
  resets: number;
  /** Of those, steps with a draft (the others change labels only: "after" is "before"). */
  drafts: number;
  /** Deletions in those drafts (NetworkPolicies and ClusterNetworkPolicies). */
  deletions: number;
  /** Probes whose records were replayed (pairs × (protocol, port) probed), and the records replayed for them. */
  probes: number;
  records: number;
  /** Replayed tuples judged (each against the model), of which the draft changed, and compared with the datapath. */
  tuples: number;
  changed: number;
  againstDatapath: number;
  /** Tuples with an end the step relabels: against the model only. */
  relabelled: number;
  /** Replayed tuples no probe of the step before sent (a late retransmission of an older probe). */
  unprobed: number;
  /** Time spent waiting for records and asking what-if, and probing after the changes: rounds of 72 probes, those the step itself would not probe. */
  whatIfMs: number;
  probeMs: number;
  probeRounds: number;
  extraProbes: number;
}

export interface DifferentialOptions {
  seed: number;
  /**
   * How long to wait for a step's records to reach the control plane: the lab's agents
   * drain every 100 ms and stream at once, so a record missing after this is lost, not late.
   */
  recordWaitMs?: number;
  log?: (line: string) => void;
}

const REVEAL = "bulkhead-whatif-reveal";

/** The conformance engine wrapped: every step of every case also checks what-if (see the top). */
export class WhatIfDifferential implements ConformanceEngine {
  readonly name: string;
  /** Every disagreement, one line each, naming case, step, pair, protocol and port. */
  readonly findings: string[] = [];
  readonly stats: DifferentialStats = {
    steps: 0, resets: 0, drafts: 0, deletions: 0, probes: 0, records: 0, tuples: 0, changed: 0, againstDatapath: 0, relabelled: 0, unprobed: 0,
    whatIfMs: 0, probeMs: 0, probeRounds: 0, extraProbes: 0,
  };
  private caseIndex = -1;
  /** From 0; the runner's steps in messages count from 1. */
  private step = -1;
  /** The cluster as the last step left it. */
  private previous: PolicyCluster | undefined;
  private windowStartMs = 0;
  /** The (protocol, port)s probed since the last change, and the pairs each denied. */
  private results = new Map<string, { combo: Combo; denied: Set<string> }>();
  private pairs: string[] = [];
  private client: ObserverServiceClient | undefined;

  constructor(
    private readonly inner: ConformanceEngine & { observerClient(): ObserverServiceClient },
    private readonly cases: readonly ConformanceCase[],
    private readonly opts: DifferentialOptions,
  ) {
    this.name = inner.name;
  }

  async prepare(models: readonly ConformanceModel[]): Promise<void> {
    await this.inner.prepare?.(models);
  }

  /** The next case; the reset before it (no policies) is checked as a draft deleting every policy of the case before. */
  async setup(model: ConformanceModel): Promise<ModelPlacement> {
    let placement: ModelPlacement | undefined;
    await this.resetChecked(async () => { placement = await this.inner.setup(model); });
    this.caseIndex++;
    this.step = -1;
    this.previous = undefined;
    this.results = new Map();
    this.pairs = modelPairs(model).map((p) => p.name);
    // A new client each case: setup may have built a fresh lab (another CA).
    this.client?.close();
    this.client = this.inner.observerClient();
    if (placement === undefined) throw new Error("unreachable: setup gave no placement");
    return placement;
  }

  async apply(actions: readonly ResolvedAction[], cluster: PolicyCluster): Promise<void> {
    this.step++;
    await this.transition(cluster, `step ${this.step + 1}`, () => this.inner.apply(actions, cluster),
      new Set((this.cases[this.caseIndex]?.steps[this.step]?.probes ?? []).map(comboKey)));
  }

  async probe(port: number, protocol: Protocol): Promise<Set<string>> {
    const key = comboKey({ port, protocol });
    const done = this.results.get(key);
    if (done !== undefined) return new Set(done.denied);
    const denied = await this.inner.probe(port, protocol);
    this.results.set(key, { combo: { port, protocol }, denied: new Set(denied) });
    return denied;
  }

  /** The last case's last step is checked against a reset too (its policies deleted), then the lab goes. */
  async teardown(): Promise<void> {
    try {
      const last = this.previous;
      if (last !== undefined) await this.resetChecked(() => this.inner.apply([], withoutPolicies(last)));
    } catch (err) {
      this.findings.push(`${this.caseId}: the reset after its last step failed: ${(err as Error).message}`);
    } finally {
      this.client?.close();
      this.client = undefined;
      await this.inner.teardown();
    }
  }

  /**
   * `reset` (setup's or teardown's) checked as a step whose draft deletes every policy in
   * force. Its label resets are not relabellings here: with no policy in force no label
   * decides a verdict, so every pair is compared with the datapath.
   */
  private async resetChecked(reset: () => Promise<void>): Promise<void> {
    const last = this.previous;
    if (last === undefined || this.results.size === 0) {
      await reset();
      return;
    }
    this.stats.resets++;
    await this.transition(withoutPolicies(last), `the reset after step ${this.step + 1}`, reset, new Set());
    this.previous = undefined;
  }

  /**
   * One change of the lab (`change`, to `after`), checked: what-if over the records since the
   * last change, the change, then every replayed (protocol, port) probed and compared (`own`:
   * those the runner probes next anyway, which get these answers; the others are extra).
   */
  private async transition(after: PolicyCluster, label: string, change: () => Promise<void>, own: ReadonlySet<string>): Promise<void> {
    const asked = Date.now();
    const prediction = this.previous !== undefined && this.results.size > 0 ? await this.predict(this.previous, after, label) : undefined;
    this.stats.whatIfMs += Date.now() - asked;
    await change();
    this.previous = after;
    this.results = new Map();
    // Records from here on are this state's (see predict's `since`).
    this.windowStartMs = Date.now();
    if (prediction === undefined) return;
    // All at once (each a round of 72 probes, on source ports of its own): their waits for replies and drop records overlap.
    const probing = Date.now();
    await Promise.all(prediction.combos.map((combo) => this.probe(combo.port, combo.protocol)));
    this.stats.probeMs += Date.now() - probing;
    this.stats.probeRounds += prediction.combos.length;
    this.stats.extraProbes += prediction.combos.filter((combo) => !own.has(comboKey(combo))).length;
    this.compare(prediction);
  }

  private get caseId(): string {
    return this.cases[this.caseIndex]?.id ?? `case ${this.caseIndex}`;
  }

  private finding(label: string, what: string): void {
    this.findings.push(`${this.caseId} ${label}: ${what}`);
  }

  private whatIf(drafts: DraftFile[], sinceMs: number, untilMs: number): Promise<PolicyWhatIfResponse> {
    const client = this.client;
    if (client === undefined) throw new Error("what-if differential: no Observer client (setup first)");
    return new Promise((resolve, reject) => client.policyWhatIf(
      { drafts, since: timestampOfMs(sinceMs), until: timestampOfMs(untilMs), namespace: "", mode: "" },
      (err, res) => (err || !res ? reject(err ?? new Error("PolicyWhatIf: no response")) : resolve(res)),
    ));
  }

  /**
   * Every tuple replayed over [since, until] with its verdict under the policies in force
   * (`cnps`: the ClusterNetworkPolicies in force, deleted by the reveal drafts so that the
   * reveal's own Admin policy decides alone), from two drafts that change every verdict.
   */
  private async reveal(cnps: readonly string[], sinceMs: number, untilMs: number): Promise<{ tuples: Map<string, { before: Outcome; records: number }>; replayed: number; odd: string[] }> {
    const deletions = cnps.map((name) => stringify({ apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name, annotations: { [DRAFT_ANNOTATION]: "delete" } } }));
    const everything = (action: "Accept" | "Deny") => stringify({
      apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name: REVEAL },
      spec: {
        tier: "Admin", priority: 0, subject: { namespaces: {} },
        ingress: [{ name: "all", action, from: [{ namespaces: {} }] }],
        egress: [{ name: "all", action, to: [{ namespaces: {} }] }],
      },
    });
    const draft = (action: "Accept" | "Deny"): DraftFile[] => [{ name: `reveal-${action.toLowerCase()}.yaml`, content: [everything(action), ...deletions].join("---\n") }];
    const [accept, deny] = await Promise.all([this.whatIf(draft("Accept"), sinceMs, untilMs), this.whatIf(draft("Deny"), sinceMs, untilMs)]);
    const tuples = new Map<string, { before: Outcome; records: number }>();
    const odd: string[] = [];
    // Accepting everything lists what is dropped now; denying everything, what is forwarded now.
    for (const [response, expected] of [[accept, "DROPPED"], [deny, "FORWARDED"]] as const) {
      for (const e of response.edges) {
        const key = tupleKey(e.source, e.destination, e.protocol, e.port);
        const before = outcome(e.before);
        if (key === undefined || before !== expected) {
          odd.push(`reveal edge ${e.source} → ${e.destination} ${e.protocol}/${e.port} ${Verdict[e.before]} → ${Verdict[e.after]}`);
          continue;
        }
        if (tuples.has(key)) odd.push(`${key} listed by both reveals (FORWARDED and DROPPED under the same policies)`);
        tuples.set(key, { before, records: Number(e.records) });
      }
    }
    return { tuples, replayed: Math.min(Number(accept.replayed), Number(deny.replayed)), odd };
  }

  /** Steps 1–3 of the top: what what-if says the change to `after` does to the records since the last change, checked against that state's datapath and the model. */
  private async predict(before: PolicyCluster, after: PolicyCluster, label: string): Promise<Prediction> {
    const was = this.step < 0 ? "the case's start" : `step ${this.step + (label.startsWith("step") ? 0 : 1)}`;
    const probed = [...this.results.values()];
    const expected = probed.flatMap(({ combo }) => this.pairs.map((pair) => `${pair} ${comboKey(combo)}`));
    const sinceMs = this.windowStartMs;
    const cnps = (before.clusterNetworkPolicies ?? []).map((p) => p.metadata.name);
    const waitMs = this.opts.recordWaitMs ?? 5000;
    // The draft: what the change writes into the manifests folder, and deletions of what it removes.
    const docs = draftDocuments(before, after);
    const draft: DraftFile[] = [{ name: `${this.caseId} ${label}.yaml`, content: docs.documents.join("---\n") }];
    const deadline = Date.now() + waitMs;
    let seen: Awaited<ReturnType<WhatIfDifferential["reveal"]>>;
    let drafted: PolicyWhatIfResponse | undefined;
    // Waits until every probe of the state before has its record at the control plane; the
    // draft is asked beside each try, over the same range (the answer of the last try is used).
    for (;;) {
      const untilMs = Date.now();
      [seen, drafted] = await Promise.all([this.reveal(cnps, sinceMs, untilMs), docs.documents.length > 0 ? this.whatIf(draft, sinceMs, untilMs) : undefined]);
      const missing = expected.filter((t) => !seen.tuples.has(t));
      if (missing.length === 0) break;
      if (Date.now() > deadline) {
        this.finding(label, `${missing.length} of ${expected.length} probes of ${was} have no record replayed by what-if after ${waitMs} ms: ${missing.slice(0, 8).join(", ")}`);
        break;
      }
      await sleep(30);
    }
    for (const o of seen.odd) this.finding(label, o);
    this.stats.steps++;
    this.stats.probes += expected.length;
    for (const t of expected) this.stats.records += seen.tuples.get(t)?.records ?? 0;
    if (seen.replayed < expected.length) this.finding(label, `what-if replayed ${seen.replayed} records for ${expected.length} probes`);

    const changed = new Map<string, { before: Outcome; after: Outcome }>();
    if (drafted !== undefined) {
      this.stats.drafts++;
      this.stats.deletions += docs.deletions;
      for (const e of drafted.edges) {
        const key = tupleKey(e.source, e.destination, e.protocol, e.port);
        const b = outcome(e.before), a = outcome(e.after);
        if (key === undefined || b === undefined || a === undefined) {
          this.finding(label, `draft edge ${e.source} → ${e.destination} ${e.protocol}/${e.port} ${Verdict[e.before]} → ${Verdict[e.after]} is not a model pair's FORWARDED/DROPPED`);
          continue;
        }
        changed.set(key, { before: b, after: a });
      }
    }

    // The model with the new policies over the identities of the records' time.
    const model = new PolicyModel({ ...before, policies: after.policies, clusterNetworkPolicies: after.clusterNetworkPolicies ?? [] }, { defaultMode: "enforce", hostExempt: true });
    const relabelled = relabelledEnds(before, after);
    const tuples = new Map<string, Judged>();
    const combos = new Map<string, Combo>();
    for (const [key, { before: b, records }] of seen.tuples) {
      const [pair = "", comboText = ""] = key.split(" ");
      const [protocol = "", port = ""] = comboText.split("/");
      const combo = { protocol: protocol as Protocol, port: Number(port) };
      combos.set(comboText, combo);
      const [src = "", dst = ""] = pair.split(">");
      const c = changed.get(key);
      if (c !== undefined && c.before !== b) this.finding(label, `${key}: the draft's what-if says before ${c.before}, the reveal ${b}`);
      const a = c?.after ?? b;
      const modelAllowed = model.evaluate({ src: { pod: podRef(src) }, dst: { pod: podRef(dst) }, protocol: combo.protocol, port: combo.port }).allowed;
      const datapathBefore = this.results.get(comboText);
      if (datapathBefore === undefined) this.stats.unprobed++;
      else if ((b === "FORWARDED") === datapathBefore.denied.has(pair)) {
        this.finding(label, `${key}: what-if's before is ${b}, the datapath ${datapathBefore.denied.has(pair) ? "DROPPED" : "FORWARDED"} it at ${was}`);
      }
      if (c !== undefined) this.stats.changed++;
      tuples.set(key, { pair, combo, before: b, after: a, records, modelAllowed, relabelled: relabelled.has(src) || relabelled.has(dst) });
    }
    for (const key of changed.keys()) if (!tuples.has(key)) this.finding(label, `${key}: the draft's what-if lists it, the reveals do not`);
    this.stats.tuples += tuples.size;
    return { label, tuples, combos: [...combos.values()] };
  }

  /**
   * Step 4: what-if's "after" against the datapath once the change is applied, and against
   * the model (step 3); one line per tuple that disagrees with either.
   */
  private compare(p: Prediction): void {
    for (const [key, t] of p.tuples) {
      const model: Outcome = t.modelAllowed ? "FORWARDED" : "DROPPED";
      let datapath: string;
      if (t.relabelled) {
        this.stats.relabelled++;
        datapath = "not compared (the change relabels an end)";
      } else {
        const result = this.results.get(comboKey(t.combo));
        if (result === undefined) { this.finding(p.label, `${key}: not probed after the change`); continue; }
        this.stats.againstDatapath++;
        datapath = result.denied.has(t.pair) ? "DROPPED" : "FORWARDED";
      }
      if (t.after !== model || (!t.relabelled && t.after !== datapath)) {
        this.finding(p.label, `${key}: what-if says ${t.before} → ${t.after} (${t.records} records); once applied the datapath ${datapath}, the model ${model}`);
      }
    }
  }

  /** The findings as a failure message naming the seed. */
  report(): string {
    const s = this.stats;
    return [
      `what-if disagrees ${this.findings.length} times (seed ${this.opts.seed}; rerun with CONFORMANCE_RANDOM_SEED=${this.opts.seed}):`,
      ...this.findings.slice(0, 40).map((f) => `  ${f}`),
      ...(this.findings.length > 40 ? [`  … and ${this.findings.length - 40} more`] : []),
      `  (${summary(s)})`,
    ].join("\n");
  }
}

export function summary(s: DifferentialStats): string {
  return `${s.steps} changes replayed (${s.resets} of them resets; ${s.drafts} with a draft, ${s.deletions} deletions), ${s.probes} probes with ${s.records} records, `
    + `${s.tuples} tuples judged, ${s.changed} changed by their draft, ${s.againstDatapath} against the datapath, ${s.relabelled} relabelled (model only), ${s.unprobed} unprobed; `
    + `${(s.whatIfMs / 1000).toFixed(1)} s waiting for records and asking what-if, ${(s.probeMs / 1000).toFixed(1)} s probing ${s.probeRounds} rounds after the changes (${s.extraProbes} of them not the steps' own)`;
}

/** The cluster with no NetworkPolicy and no ClusterNetworkPolicy (labels as they are). */
function withoutPolicies(cluster: PolicyCluster): PolicyCluster {
  return { ...cluster, policies: [], clusterNetworkPolicies: [] };
}

/** "xa>yb TCP/80" from an edge between two model pods ("workload:x/Pod/a"); undefined for any other end. */
function tupleKey(source: string, destination: string, protocol: string, port: number): string | undefined {
  const pod = (id: string) => /^workload:([a-z0-9-]+)\/Pod\/([a-z0-9-]+)$/.exec(id);
  const s = pod(source), d = pod(destination);
  if (!s || !d) return undefined;
  return `${s[1]}${s[2]}>${d[1]}${d[2]} ${protocol}/${port}`;
}

/** "xa" → "x/a" (model namespaces and pods are one letter). */
function podRef(key: string): string {
  return `${key.slice(0, 1)}/${key.slice(1)}`;
}

function outcome(v: Verdict): Outcome | undefined {
  return v === Verdict.VERDICT_FORWARDED ? "FORWARDED" : v === Verdict.VERDICT_DROPPED ? "DROPPED" : undefined;
}

/** The pods ("xa") whose labels, or whose namespace's labels, differ between the two states. */
function relabelledEnds(before: PolicyCluster, after: PolicyCluster): Set<string> {
  const same = (a: Record<string, string> | undefined, b: Record<string, string> | undefined) => JSON.stringify(Object.entries(a ?? {}).sort()) === JSON.stringify(Object.entries(b ?? {}).sort());
  const nsBefore = new Map(before.namespaces.map((n) => [n.metadata.name, n.metadata.labels]));
  const podsBefore = new Map(before.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p.metadata.labels]));
  const changedNs = new Set(after.namespaces.filter((n) => !same(nsBefore.get(n.metadata.name), n.metadata.labels)).map((n) => n.metadata.name));
  return new Set(after.pods.filter((p) => changedNs.has(p.metadata.namespace) || !same(podsBefore.get(`${p.metadata.namespace}/${p.metadata.name}`), p.metadata.labels))
    .map((p) => `${p.metadata.namespace}${p.metadata.name}`));
}

/** The manifests the step writes (created or changed) and deletions of those it removes, as draft documents. */
export function draftDocuments(before: PolicyCluster, after: PolicyCluster): { documents: string[]; deletions: number } {
  const documents: string[] = [];
  let deletions = 0;
  const npKey = (p: { metadata: { namespace: string; name: string } }) => `${p.metadata.namespace}/${p.metadata.name}`;
  const wasNp = new Map(before.policies.map((p) => [npKey(p), policyDocument(p)]));
  const nowNp = new Set(after.policies.map(npKey));
  for (const p of after.policies) {
    const doc = policyDocument(p);
    if (wasNp.get(npKey(p)) !== doc) documents.push(doc);
  }
  for (const p of before.policies) {
    if (nowNp.has(npKey(p))) continue;
    deletions++;
    documents.push(stringify({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
      metadata: { name: p.metadata.name, namespace: p.metadata.namespace, annotations: { [DRAFT_ANNOTATION]: "delete" } } }));
  }
  const wasCnp = new Map((before.clusterNetworkPolicies ?? []).map((p) => [p.metadata.name, cnpDocument(p)]));
  const nowCnp = new Set((after.clusterNetworkPolicies ?? []).map((p) => p.metadata.name));
  for (const p of after.clusterNetworkPolicies ?? []) {
    const doc = cnpDocument(p);
    if (wasCnp.get(p.metadata.name) !== doc) documents.push(doc);
  }
  for (const p of before.clusterNetworkPolicies ?? []) {
    if (nowCnp.has(p.metadata.name)) continue;
    deletions++;
    documents.push(stringify({ apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name: p.metadata.name, annotations: { [DRAFT_ANNOTATION]: "delete" } } }));
  }
  return { documents, deletions };
}
