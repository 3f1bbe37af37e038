// Random NetworkPolicy conformance cases over the 3×3 model, in the shared case format
// (/work/shared/conformance/README.md), with every probe's expected `denied` set computed by
// the ModelEngine: a case says what the model says, so running it on another engine (the
// compiled snapshot, the real datapath) checks that engine against the model.
//
// Independent of test/policy-random.test.ts (whose world has extra ports, IPv6 and outside
// addresses that the lab's model pods do not have): everything here is expressible in a
// case file — pod/namespace selectors over a small vocabulary, ipBlocks over pod addresses
// through the `<podIP:ns/pod>` and `<slash4-net-of-podIP:ns/pod>` placeholders, ports by
// number, name (`serve-80-tcp` …) and range, and label changes that never touch a pod's
// `pod` label (the per-pod Services select `pod=<name>`). With `cnpEvery`, some cases also
// write ClusterNetworkPolicies (the cnp-cases.json actions), so the datapath is checked on
// both kinds mixed; the model these expectations come from is itself checked against a
// literal reading of both APIs by test/policy-random.test.ts.
import {
  MODEL_NAMESPACES, MODEL_PODS, ModelCluster, ModelEngine, parseConformanceCases,
  type ConformanceCase, type ResolvedAction,
} from "../../lab/conformance/cases.js";
import type { Protocol } from "../../controlplane/metadata/objects.js";
import { seededRandom } from "./seeded-random.js";

type Json = Record<string, unknown>;
type Rand = () => number;

export interface RandomCaseOptions {
  /** Case ids are `<prefix>-<seed>-<index>`; default "rnd". */
  idPrefix?: string;
  /** Every how many cases one also serves SCTP (at index every-1, 2·every-1, …); default 7. */
  sctpEvery?: number;
  /** Steps per case, 1..maxSteps; default 3. */
  maxSteps?: number;
  /**
   * Redraw (from the same stream, so still deterministic) a case whose every probe is
   * all-allowed or all-denied, up to this many times; default 5.
   */
  redrawDull?: number;
  /**
   * Every how many cases one also writes ClusterNetworkPolicies (at index 0, every, 2·every, …;
   * 0: none, the default): its first action creates one, and later actions create, update and
   * delete them (Admin and Baseline, Accept/Deny/Pass, namespaces/pods/networks peers,
   * port numbers, ranges and named ports) beside the NetworkPolicy and label changes.
   */
  cnpEvery?: number;
}

/** mulberry32 (./seeded-random.ts): the same numbers everywhere for a seed. */
export const random: (seed: number) => Rand = seededRandom;

function pick<T>(rand: Rand, list: readonly T[]): T {
  if (list.length === 0) throw new Error("pick from an empty list");
  return list[Math.floor(rand() * list.length)] as T;
}

function some<T>(rand: Rand, list: readonly T[], min: number, max: number): T[] {
  const n = min + Math.floor(rand() * (max - min + 1));
  const pool = [...list];
  const out: T[] = [];
  while (out.length < n && pool.length > 0) out.push(pool.splice(Math.floor(rand() * pool.length), 1)[0] as T);
  return out;
}

const PORTS = [80, 81] as const;
const POD_VOCAB: Record<string, readonly string[]> = { pod: MODEL_PODS, app: ["web", "db"], tier: ["1", "2"] };
const NS_VOCAB: Record<string, readonly string[]> = { ns: MODEL_NAMESPACES, team: ["red", "blue"], "kubernetes.io/metadata.name": MODEL_NAMESPACES };
/** Labels a step may add to a pod: never `pod`. */
const POD_EXTRA: Record<string, readonly string[]> = { app: ["web", "db"], tier: ["1", "2"] };
const NS_SETTABLE: Record<string, readonly string[]> = { ns: MODEL_NAMESPACES, team: ["red", "blue"] };
const POD_REFS = MODEL_NAMESPACES.flatMap((ns) => MODEL_PODS.map((pod) => `${ns}/${pod}`));

function selector(rand: Rand, vocab: Record<string, readonly string[]>): Json {
  if (rand() < 0.2) return {};
  const out: Json = {};
  const keys = Object.keys(vocab);
  if (rand() < 0.65) {
    const labels: Record<string, string> = {};
    for (const k of some(rand, keys, 1, 2)) labels[k] = pick(rand, vocab[k] ?? []);
    out.matchLabels = labels;
  }
  if (out.matchLabels === undefined || rand() < 0.35) {
    out.matchExpressions = some(rand, keys, 1, 2).map((key) => {
      const operator = pick(rand, ["In", "In", "NotIn", "Exists", "DoesNotExist"]);
      if (operator === "Exists" || operator === "DoesNotExist") return { key, operator };
      return { key, operator, values: some(rand, vocab[key] ?? [], 1, 2) };
    });
  }
  return out;
}

function ipBlockPeer(rand: Rand): Json {
  if (rand() < 0.45) return { ipBlock: { cidr: `<podIP:${pick(rand, POD_REFS)}>/32` } };
  // The /4 around the pod addresses: every model pod, but for the excepted ones.
  const cidr = rand() < 0.5 ? `<slash4-net-of-podIP:${pick(rand, POD_REFS)}>` : `<slash4-net-of-podIP:${pick(rand, POD_REFS)}>/4`;
  const except = some(rand, POD_REFS, 0, 3).map((ref) => `<podIP:${ref}>/32`);
  return { ipBlock: except.length > 0 ? { cidr, except } : { cidr } };
}

function peer(rand: Rand): Json {
  const r = rand();
  if (r < 0.25) return ipBlockPeer(rand);
  if (r < 0.5) return { podSelector: selector(rand, POD_VOCAB) };
  if (r < 0.75) return { namespaceSelector: selector(rand, NS_VOCAB) };
  return { namespaceSelector: selector(rand, NS_VOCAB), podSelector: selector(rand, POD_VOCAB) };
}

function portEntry(rand: Rand, protocols: readonly Protocol[]): Json {
  const out: Json = {};
  // Mostly a protocol the pods serve; now and then one they do not (or none: TCP).
  const p = rand();
  const protocol: Protocol = p < 0.75 ? pick(rand, protocols) : p < 0.9 ? pick(rand, ["TCP", "UDP", "SCTP"] as const) : "TCP";
  if (p < 0.9) out.protocol = protocol;
  const kind = rand();
  if (kind < 0.4) {
    out.port = pick(rand, [80, 81, 82]);
    if (rand() < 0.35) out.endPort = (out.port as number) + Math.floor(rand() * 3);
  } else if (kind < 0.8) {
    // A named port: usually of the rule's protocol; sometimes of another, which names nothing for it.
    const named = rand() < 0.8 ? protocol : pick(rand, ["TCP", "UDP", "SCTP"] as const);
    out.port = `serve-${pick(rand, PORTS)}-${named.toLowerCase()}`;
  } else if (kind < 0.9) {
    out.port = 80;
    out.endPort = 81;
  }
  return out;
}

function rules(rand: Rand, peerKey: "from" | "to", protocols: readonly Protocol[]): Json[] | undefined {
  const r = rand();
  if (r < 0.15) return undefined;
  if (r < 0.3) return [];
  return Array.from({ length: 1 + Math.floor(rand() * 2) }, () => {
    const rule: Json = {};
    const p = rand();
    if (p < 0.1) rule[peerKey] = [];
    else if (p < 0.85) rule[peerKey] = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => peer(rand));
    const q = rand();
    if (q < 0.1) rule.ports = [];
    else if (q < 0.6) rule.ports = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => portEntry(rand, protocols));
    return rule;
  });
}

function policy(rand: Rand, namespace: string, name: string, protocols: readonly Protocol[]): Json {
  const out: Json = { name, namespace, podSelector: selector(rand, POD_VOCAB) };
  const t = rand();
  let types: string[] | undefined;
  if (t < 0.35) types = ["Ingress"];
  else if (t < 0.6) types = ["Egress"];
  else if (t < 0.85) types = ["Ingress", "Egress"];
  if (types !== undefined) out.policyTypes = types;
  // Rules only for a direction the policy is about (or may be, when policyTypes is left out).
  const ingress = types === undefined || types.includes("Ingress") ? rules(rand, "from", protocols) : undefined;
  const egress = types === undefined || types.includes("Egress") ? rules(rand, "to", protocols) : undefined;
  if (ingress !== undefined) out.ingress = ingress;
  if (egress !== undefined) out.egress = egress;
  return out;
}

function cnpPeer(rand: Rand, direction: "ingress" | "egress"): Json {
  const r = rand();
  if (direction === "egress" && r < 0.2) {
    // networks match pod addresses after DNAT: one pod, or the /4 of them all.
    return { networks: rand() < 0.6 ? some(rand, POD_REFS, 1, 2).map((ref) => `<podIP:${ref}>/32`) : [`<slash4-net-of-podIP:${pick(rand, POD_REFS)}>`] };
  }
  if (r < 0.55) return { namespaces: selector(rand, NS_VOCAB) };
  const pods: Json = { podSelector: selector(rand, POD_VOCAB) };
  if (rand() < 0.7) pods.namespaceSelector = selector(rand, NS_VOCAB);
  return { pods };
}

function cnpProtocol(rand: Rand, protocols: readonly Protocol[]): Json {
  const protocol = (rand() < 0.85 ? pick(rand, protocols) : pick(rand, ["TCP", "UDP", "SCTP"] as const)).toLowerCase();
  const k = rand();
  if (k < 0.25) return { destinationNamedPort: `serve-${pick(rand, PORTS)}-${protocol}` };
  if (k < 0.4) return { [protocol]: {} };
  if (k < 0.75) return { [protocol]: { destinationPort: { number: pick(rand, [80, 81, 82]) } } };
  return { [protocol]: { destinationPort: { range: { start: 80, end: pick(rand, [81, 82]) } } } };
}

function clusterPolicy(rand: Rand, name: string, protocols: readonly Protocol[]): Json {
  const out: Json = {
    name,
    tier: rand() < 0.6 ? "Admin" : "Baseline",
    // Few priorities, so ties happen (taken in name order by the model and the compiler alike).
    priority: pick(rand, [0, 5, 5, 10, 1000]),
    subject: rand() < 0.5 ? { namespaces: selector(rand, NS_VOCAB) }
      : { pods: rand() < 0.7 ? { namespaceSelector: selector(rand, NS_VOCAB), podSelector: selector(rand, POD_VOCAB) } : { podSelector: selector(rand, POD_VOCAB) } },
  };
  const directions = pick(rand, [["ingress"], ["egress"], ["ingress", "egress"]] as const);
  for (const direction of directions) {
    out[direction] = Array.from({ length: 1 + Math.floor(rand() * 3) }, (_, i) => {
      const rule: Json = {
        action: pick(rand, ["Accept", "Deny", "Deny", "Pass"]),
        [direction === "ingress" ? "from" : "to"]: Array.from({ length: 1 + Math.floor(rand() * 2) }, () => cnpPeer(rand, direction)),
      };
      if (rand() < 0.6) rule.name = `r${i}`;
      if (rand() < 0.6) rule.protocols = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => cnpProtocol(rand, protocols));
      return rule;
    });
  }
  return out;
}

interface Draft {
  policies: { namespace: string; name: string }[];
  next: number;
  /** Undefined: the case writes no ClusterNetworkPolicies. */
  cnps: string[] | undefined;
}

/** A ClusterNetworkPolicy action (create, update, delete one, delete all). */
function cnpAction(rand: Rand, draft: Draft, cnps: string[], protocols: readonly Protocol[], first: boolean): Json {
  const r = first ? 0 : rand();
  if (r < 0.45 || cnps.length === 0) {
    const name = `cnp${draft.next++}`;
    cnps.push(name);
    return { create_cnp: clusterPolicy(rand, name, protocols) };
  }
  if (r < 0.8) return { update_cnp: clusterPolicy(rand, pick(rand, cnps), protocols) };
  if (r < 0.95) {
    const name = pick(rand, cnps);
    cnps.splice(cnps.indexOf(name), 1);
    return { delete_cnp: { name } };
  }
  cnps.length = 0;
  return { delete_all_cnps: true };
}

function action(rand: Rand, draft: Draft, protocols: readonly Protocol[], first: boolean): Json {
  if (draft.cnps !== undefined && (first || rand() < 0.4)) return cnpAction(rand, draft, draft.cnps, protocols, first);
  const r = first ? 0 : rand();
  if (r < 0.45 || (r < 0.6 && draft.policies.length === 0)) {
    const namespace = pick(rand, MODEL_NAMESPACES);
    const name = `p${draft.next++}`;
    draft.policies.push({ namespace, name });
    return { create: policy(rand, namespace, name, protocols) };
  }
  if (r < 0.6) {
    const { namespace, name } = pick(rand, draft.policies);
    return { update: policy(rand, namespace, name, protocols) };
  }
  if (r < 0.67) {
    draft.policies = [];
    return { delete_all_policies: true };
  }
  if (r < 0.83) {
    const pod = pick(rand, POD_REFS);
    const labels: Record<string, string> = {};
    for (const k of some(rand, Object.keys(POD_EXTRA), rand() < 0.3 ? 0 : 1, 2)) labels[k] = pick(rand, POD_EXTRA[k] ?? []);
    if (rand() < 0.5 && Object.keys(labels).length > 0) return { add_pod_labels: { pod, labels } };
    // set replaces: the pod keeps its own pod=<name>.
    return { set_pod_labels: { pod, labels: { pod: pod.split("/")[1] ?? "", ...labels } } };
  }
  const ns = pick(rand, MODEL_NAMESPACES);
  const labels: Record<string, string> = {};
  for (const k of some(rand, Object.keys(NS_SETTABLE), rand() < 0.5 ? 0 : 1, 2)) labels[k] = pick(rand, NS_SETTABLE[k] ?? []);
  if (rand() < 0.5 && Object.keys(labels).length > 0) return { add_ns_labels: { ns, labels } };
  return { set_ns_labels: { ns, labels } };
}

function draftCase(rand: Rand, id: string, sctp: boolean, maxSteps: number, cnps: boolean): Json {
  const protocols: Protocol[] = some(rand, ["TCP", "UDP"] as const, 1, 2);
  if (sctp) protocols.push("SCTP");
  const combos = PORTS.flatMap((port) => protocols.map((protocol) => ({ port, protocol })));
  const draft: Draft = { policies: [], next: 1, cnps: cnps ? [] : undefined };
  const steps = Array.from({ length: 1 + Math.floor(rand() * maxSteps) }, (_, si) => {
    const actions = Array.from({ length: 1 + Math.floor(rand() * 2) }, (_, ai) => action(rand, draft, protocols, si === 0 && ai === 0));
    // 1–2 (port, protocol) probes; an SCTP case probes SCTP at least once.
    const probes = some(rand, combos, 1, 2);
    if (sctp && si === 0 && !probes.some((p) => p.protocol === "SCTP")) probes[0] = pick(rand, combos.filter((c) => c.protocol === "SCTP"));
    return { do: actions, probes: probes.map((p) => ({ ...p, denied: [] as string[] })) };
  });
  return { id, name: `random case ${id}${cnps ? " (with ClusterNetworkPolicies)" : ""}`, source: cnps ? "cnp-derived" : "derived", model: { ports: [...PORTS], protocols }, steps };
}

/** Fills every probe's `denied` with what the ModelEngine says, as runConformance would run the case. */
async function judgeWithModel(doc: Json): Promise<void> {
  const [c] = parseConformanceCases([doc]);
  if (!c) throw new Error("unreachable");
  const engine = new ModelEngine();
  const cluster = new ModelCluster(c.model, await engine.setup(c.model));
  const docSteps = doc.steps as { probes: { denied: string[] }[] }[];
  for (const [si, step] of c.steps.entries()) {
    const resolved: ResolvedAction[] = step.actions.map((a) => {
      try {
        return cluster.apply(a);
      } catch (err) {
        throw new Error(`random case ${c.id}: the generator wrote an action the model rejects (${a.field}): ${(err as Error).message}`);
      }
    });
    await engine.apply(resolved, cluster.objects());
    for (const [pi, probe] of step.probes.entries()) {
      const target = docSteps[si]?.probes[pi];
      if (!target) throw new Error("unreachable");
      target.denied = [...(await engine.probe(probe.port, probe.protocol))].sort();
    }
  }
  await engine.teardown();
}

const PAIRS = MODEL_NAMESPACES.length * MODEL_PODS.length * (MODEL_NAMESPACES.length * MODEL_PODS.length - 1);

function dull(doc: Json): boolean {
  return (doc.steps as { probes: { denied: string[] }[] }[]).every((s) => s.probes.every((p) => p.denied.length === 0 || p.denied.length === PAIRS));
}

/**
 * `count` random cases as case-file documents (JSON, `denied` filled in by the model):
 * what `bulkhead lab conformance --cases FILE` reads. Case i is drawn from seed + i alone.
 */
export async function randomCaseDocuments(seed: number, count: number, opts: RandomCaseOptions = {}): Promise<Json[]> {
  const prefix = opts.idPrefix ?? "rnd";
  const sctpEvery = opts.sctpEvery ?? 7;
  const out: Json[] = [];
  for (let i = 0; i < count; i++) {
    const rand = random(seed + i);
    const id = `${prefix}-${seed}-${i}`;
    const sctp = sctpEvery > 0 && i % sctpEvery === sctpEvery - 1;
    const cnps = (opts.cnpEvery ?? 0) > 0 && i % (opts.cnpEvery ?? 0) === 0;
    let doc = draftCase(rand, id, sctp, opts.maxSteps ?? 3, cnps);
    await judgeWithModel(doc);
    for (let redraw = 0; redraw < (opts.redrawDull ?? 5) && dull(doc); redraw++) {
      doc = draftCase(rand, id, sctp, opts.maxSteps ?? 3, cnps);
      await judgeWithModel(doc);
    }
    out.push(doc);
  }
  return out;
}

/** `count` random cases, parsed; see randomCaseDocuments. */
export async function randomCases(seed: number, count: number, opts: RandomCaseOptions = {}): Promise<ConformanceCase[]> {
  return parseConformanceCases(await randomCaseDocuments(seed, count, opts));
}
