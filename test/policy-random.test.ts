// Random NetworkPolicy and ClusterNetworkPolicy states over the 3×3 model, judged three ways
// that must agree:
//   1. PolicyModel.evaluate (controlplane/policy/model.ts),
//   2. a second evaluator written here straight from the NetworkPolicy API text and the
//      ClusterNetworkPolicy tiers (README of shared/conformance): it reads the policy
//      documents as written (no normalization, no caching, no identities),
//   3. the compiled PolicySnapshot judged by snapshotAllows, as the kernel will.
// The model and the literal evaluator also agree on who decided each side: the tier (Admin,
// NetworkPolicy, Baseline, none) and the ClusterNetworkPolicy rules that matched first on
// the way, a Pass included (what attribution, observe and the UI report).
// 1,000 sequences × 10 steps = 10,000 states; each step changes a policy or some labels,
// and one PolicyCompiler and one PolicySet follow each sequence, so the incremental paths
// are what is checked; now and then the compiler is sent back to an earlier state (the
// same objects) and compared with a fresh compile. Every state is checked by all three.
// A failure prints the seed: rerun with POLICY_RANDOM_SEED=<seed> to get the same states
// (POLICY_RANDOM_SEQUENCES=<n> runs fewer sequences).
import { describe, expect, it } from "vitest";
import { parseIp } from "../addresses/ip.js";
import { parseKubeObject, type Namespace, type NetworkPolicy, type Node, type Pod } from "../controlplane/metadata/objects.js";
import { PolicyCompiler } from "../controlplane/policy/compile.js";
import { snapshotAllows } from "../controlplane/policy/kernel-view.js";
import { PolicyModel, PolicySet, type Peer, type SideVerdict } from "../controlplane/policy/model.js";
import { CnpSet, type ClusterNetworkPolicy } from "../controlplane/policy/cnp.js";
import { seededRandom } from "./harness/seeded-random.js";

const SEED = Number(process.env.POLICY_RANDOM_SEED ?? 20240501);
/** 1,000 by default; fewer with POLICY_RANDOM_SEQUENCES for a quick run. */
const SEQUENCES = Number(process.env.POLICY_RANDOM_SEQUENCES ?? 1_000);
const STEPS = 10;

const random = seededRandom;

type Json = Record<string, unknown>;

// ---- the world --------------------------------------------------------------------------------

const NAMESPACES = ["x", "y", "z"];
const POD_NAMES = ["a", "b", "c"];
const NODE_IPS = ["172.18.0.2", "172.18.0.3"];
const WORLD_IPS = ["8.8.8.8", "192.168.1.1", "10.244.1.200", "10.244.3.3", "10.255.0.1", "fd00::99", "2001:db8::1"];

interface SimplePod {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  ips: string[];
  ports: { name: string; port: number; protocol: string }[];
}

interface World {
  nsLabels: Map<string, Record<string, string>>;
  pods: SimplePod[];
  /** Policy documents as written: what the second evaluator reads. */
  policies: Map<string, { namespace: string; name: string; spec: Json }>;
  /** ClusterNetworkPolicy specs as written, by name. */
  cnps: Map<string, Json>;
}

function initialWorld(rand: () => number): World {
  const pods: SimplePod[] = [];
  let i = 0;
  for (const namespace of NAMESPACES) {
    for (const name of POD_NAMES) {
      const ips = [`10.244.${(i % 2) + 1}.${10 + i}`];
      if (rand() < 0.3) ips.push(`fd00::${(10 + i).toString(16)}`);
      const ports = [
        { name: "serve-80-tcp", port: 80, protocol: "TCP" },
        { name: "serve-81-tcp", port: 81, protocol: "TCP" },
        { name: "serve-80-udp", port: 80, protocol: "UDP" },
        { name: "serve-80-sctp", port: 80, protocol: "SCTP" },
      ];
      if (rand() < 0.6) ports.push({ name: "http", port: rand() < 0.5 ? 80 : 81, protocol: "TCP" });
      if (rand() < 0.4) ports.push({ name: "metrics", port: 82, protocol: rand() < 0.5 ? "TCP" : "UDP" });
      pods.push({ namespace, name, labels: { pod: name }, ips, ports });
      i++;
    }
  }
  return {
    nsLabels: new Map(NAMESPACES.map((n) => [n, { "kubernetes.io/metadata.name": n, ns: n }])),
    pods,
    policies: new Map(),
    cnps: new Map(),
  };
}

function parsed<T>(doc: Json): T {
  const object = parseKubeObject(doc);
  if (!object) throw new Error(`not kept: ${JSON.stringify(doc)}`);
  return object as T;
}

/** The world as Kubernetes objects, for the engine under test. */
function objects(world: World): { namespaces: Namespace[]; pods: Pod[]; nodes: Node[]; policies: NetworkPolicy[]; clusterNetworkPolicies: ClusterNetworkPolicy[] } {
  return {
    namespaces: [...world.nsLabels].map(([name, labels]) => parsed<Namespace>({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels } })),
    pods: world.pods.map((p, i) => parsed<Pod>({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: p.name, namespace: p.namespace, labels: p.labels },
      spec: { nodeName: `node-${(i % 2) + 1}`, containers: [{ name: "c", ports: p.ports.map((q) => ({ name: q.name, containerPort: q.port, protocol: q.protocol })) }] },
      status: { phase: "Running", podIP: p.ips[0], podIPs: p.ips.map((ip) => ({ ip })) },
    })),
    nodes: NODE_IPS.map((ip, i) => parsed<Node>({ apiVersion: "v1", kind: "Node", metadata: { name: `node-${i + 1}` }, status: { addresses: [{ type: "InternalIP", address: ip }] } })),
    policies: [...world.policies.values()].map((p) => parsed<NetworkPolicy>({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: p.name, namespace: p.namespace }, spec: p.spec })),
    clusterNetworkPolicies: [...world.cnps].map(([name, spec]) => parsed<ClusterNetworkPolicy>({ apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name }, spec })),
  };
}

// ---- random policies --------------------------------------------------------------------------------

const POD_VOCAB: Record<string, string[]> = { pod: ["a", "b", "c"], app: ["web", "db"], tier: ["1", "2"] };
const NS_VOCAB: Record<string, string[]> = { ns: ["x", "y", "z"], team: ["red", "blue"], "kubernetes.io/metadata.name": ["x", "y", "z"] };

function pick<T>(rand: () => number, list: readonly T[]): T {
  return list[Math.floor(rand() * list.length)] as T;
}

function selector(rand: () => number, vocab: Record<string, string[]>): Json {
  const out: Json = {};
  const keys = Object.keys(vocab);
  const r = rand();
  if (r < 0.2) return out; // {}
  if (rand() < 0.6) {
    const labels: Record<string, string> = {};
    const n = 1 + Math.floor(rand() * 2);
    for (let i = 0; i < n; i++) {
      const k = pick(rand, keys);
      labels[k] = pick(rand, vocab[k] ?? []);
    }
    out.matchLabels = labels;
  }
  if (rand() < 0.5 || out.matchLabels === undefined) {
    const n = 1 + Math.floor(rand() * 2);
    out.matchExpressions = Array.from({ length: n }, () => {
      const key = pick(rand, keys);
      const operator = pick(rand, ["In", "NotIn", "Exists", "DoesNotExist"]);
      const values = vocab[key] ?? [];
      if (operator === "Exists" || operator === "DoesNotExist") return { key, operator };
      return { key, operator, values: values.filter(() => rand() < 0.5).concat(pick(rand, values)) };
    });
  }
  return out;
}

const CIDRS: { cidr: string; excepts: string[] }[] = [
  { cidr: "10.244.0.0/16", excepts: ["10.244.1.0/24", "10.244.2.0/24", "10.244.1.0/28", "10.244.2.16/28"] },
  { cidr: "10.244.1.0/24", excepts: ["10.244.1.0/28", "10.244.1.8/29", "10.244.1.200/32"] },
  { cidr: "10.244.2.0/24", excepts: ["10.244.2.16/28"] },
  { cidr: "0.0.0.0/0", excepts: ["10.0.0.0/8", "10.244.0.0/16", "192.168.0.0/16"] },
  { cidr: "8.8.0.0/16", excepts: ["8.8.8.8/32"] },
  { cidr: "192.168.0.0/16", excepts: [] },
  { cidr: "172.18.0.0/24", excepts: ["172.18.0.3/32"] },
  { cidr: "fd00::/64", excepts: ["fd00::10/124"] },
  { cidr: "::/0", excepts: ["fd00::/64"] },
];

function peer(rand: () => number, world: World): Json {
  const r = rand();
  if (r < 0.3) {
    const p = rand();
    if (p < 0.4) {
      const pod = pick(rand, world.pods);
      const ip = pick(rand, pod.ips);
      return { ipBlock: { cidr: `${ip}/${ip.includes(":") ? 128 : 32}` } };
    }
    const c = pick(rand, CIDRS);
    const except = c.excepts.filter(() => rand() < 0.4);
    return { ipBlock: except.length > 0 ? { cidr: c.cidr, except } : { cidr: c.cidr } };
  }
  if (r < 0.55) return { podSelector: selector(rand, POD_VOCAB) };
  if (r < 0.8) return { namespaceSelector: selector(rand, NS_VOCAB) };
  return { namespaceSelector: selector(rand, NS_VOCAB), podSelector: selector(rand, POD_VOCAB) };
}

function port(rand: () => number): Json {
  const out: Json = {};
  const proto = rand();
  if (proto < 0.5) out.protocol = "TCP";
  else if (proto < 0.65) out.protocol = "UDP";
  else if (proto < 0.75) out.protocol = "SCTP";
  const kind = rand();
  if (kind < 0.45) {
    out.port = pick(rand, [80, 81, 82]);
    if (rand() < 0.3) out.endPort = (out.port as number) + Math.floor(rand() * 3);
  } else if (kind < 0.8) {
    out.port = pick(rand, ["serve-80-tcp", "serve-81-tcp", "serve-80-udp", "serve-80-sctp", "http", "metrics", "nope"]);
  }
  return out;
}

function rules(rand: () => number, world: World, peerKey: "from" | "to"): Json[] | undefined {
  const r = rand();
  if (r < 0.15) return undefined;
  if (r < 0.3) return [];
  return Array.from({ length: 1 + Math.floor(rand() * 2) }, () => {
    const rule: Json = {};
    const p = rand();
    if (p < 0.2) rule[peerKey] = [];
    else if (p < 0.85) rule[peerKey] = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => peer(rand, world));
    const q = rand();
    if (q < 0.15) rule.ports = [];
    else if (q < 0.65) rule.ports = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => port(rand));
    return rule;
  });
}

function policySpec(rand: () => number, world: World): Json {
  const spec: Json = { podSelector: selector(rand, POD_VOCAB) };
  const ingress = rules(rand, world, "from");
  const egress = rules(rand, world, "to");
  if (ingress !== undefined) spec.ingress = ingress;
  if (egress !== undefined) spec.egress = egress;
  const t = rand();
  if (t < 0.3) spec.policyTypes = ["Ingress"];
  else if (t < 0.55) spec.policyTypes = ["Egress"];
  else if (t < 0.8) spec.policyTypes = ["Ingress", "Egress"];
  else if (t < 0.9) spec.policyTypes = [];
  return spec;
}

function cnpPeer(rand: () => number, world: World, direction: "ingress" | "egress"): Json {
  const r = rand();
  if (direction === "egress" && r < 0.25) {
    const cidrs = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => {
      if (rand() < 0.5) {
        const ip = pick(rand, pick(rand, world.pods).ips);
        return `${ip}/${ip.includes(":") ? 128 : 32}`;
      }
      return pick(rand, CIDRS).cidr;
    });
    return { networks: cidrs };
  }
  if (r < 0.6) return { namespaces: selector(rand, NS_VOCAB) };
  const pods: Json = { podSelector: selector(rand, POD_VOCAB) };
  if (rand() < 0.7) pods.namespaceSelector = selector(rand, NS_VOCAB);
  return { pods };
}

function cnpProtocol(rand: () => number): Json {
  const r = rand();
  if (r < 0.25) return { destinationNamedPort: pick(rand, ["serve-80-tcp", "serve-81-tcp", "serve-80-udp", "http", "metrics", "nope"]) };
  const proto = pick(rand, ["tcp", "tcp", "udp", "sctp"]);
  const k = rand();
  if (k < 0.3) return { [proto]: {} };
  if (k < 0.7) return { [proto]: { destinationPort: { number: pick(rand, [80, 81, 82]) } } };
  const start = pick(rand, [80, 81]);
  return { [proto]: { destinationPort: { range: { start, end: start + 1 + Math.floor(rand() * 2) } } } };
}

function cnpSpec(rand: () => number, world: World): Json {
  const spec: Json = {
    tier: rand() < 0.6 ? "Admin" : "Baseline",
    // Few priorities: ties happen (evaluated in name order, as the model and compiler do).
    priority: pick(rand, [0, 5, 5, 10, 1000]),
    subject: rand() < 0.5 ? { namespaces: selector(rand, NS_VOCAB) }
      : { pods: rand() < 0.7 ? { namespaceSelector: selector(rand, NS_VOCAB), podSelector: selector(rand, POD_VOCAB) } : { podSelector: selector(rand, POD_VOCAB) } },
  };
  for (const direction of ["ingress", "egress"] as const) {
    if (rand() < 0.3) continue;
    spec[direction] = Array.from({ length: 1 + Math.floor(rand() * 3) }, (_, i) => {
      const rule: Json = { action: pick(rand, ["Accept", "Deny", "Pass"]), [direction === "ingress" ? "from" : "to"]: Array.from({ length: 1 + Math.floor(rand() * 2) }, () => cnpPeer(rand, world, direction)) };
      if (rand() < 0.5) rule.name = `r${i}`;
      if (rand() < 0.6) rule.protocols = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => cnpProtocol(rand));
      return rule;
    });
  }
  return spec;
}

function mutate(rand: () => number, world: World, step: number): string {
  if (rand() < 0.3) {
    const c = rand();
    if (c < 0.5 || world.cnps.size === 0) {
      const name = `c${step}`;
      world.cnps.set(name, cnpSpec(rand, world));
      return `create cnp ${name}`;
    }
    const name = pick(rand, [...world.cnps.keys()]);
    if (c < 0.85) {
      world.cnps.set(name, cnpSpec(rand, world));
      return `update cnp ${name}`;
    }
    world.cnps.delete(name);
    return `delete cnp ${name}`;
  }
  const r = rand();
  if (r < 0.35 || world.policies.size === 0) {
    const namespace = pick(rand, NAMESPACES);
    const name = `p${step}`;
    world.policies.set(`${namespace}/${name}`, { namespace, name, spec: policySpec(rand, world) });
    return `create ${namespace}/${name}`;
  }
  if (r < 0.55) {
    const key = pick(rand, [...world.policies.keys()]);
    const old = world.policies.get(key);
    if (old) world.policies.set(key, { ...old, spec: policySpec(rand, world) });
    return `update ${key}`;
  }
  if (r < 0.65) {
    const key = pick(rand, [...world.policies.keys()]);
    world.policies.delete(key);
    return `delete ${key}`;
  }
  if (r < 0.85) {
    const pod = pick(rand, world.pods);
    const key = pick(rand, Object.keys(POD_VOCAB));
    if (rand() < 0.3) delete pod.labels[key];
    else pod.labels = { ...pod.labels, [key]: pick(rand, POD_VOCAB[key] ?? []) };
    return `pod labels ${pod.namespace}/${pod.name} ${JSON.stringify(pod.labels)}`;
  }
  const ns = pick(rand, NAMESPACES);
  const labels = { ...world.nsLabels.get(ns) };
  if (rand() < 0.5) labels.team = pick(rand, NS_VOCAB.team ?? []);
  else delete labels.team;
  if (rand() < 0.2) labels.ns = pick(rand, NAMESPACES);
  world.nsLabels.set(ns, labels);
  return `namespace labels ${ns} ${JSON.stringify(labels)}`;
}

// ---- the second evaluator: the API text, read literally --------------------------------------------

function ipBits(ip: string): { family: number; value: bigint } {
  const parsed = parseIp(ip);
  if (!parsed) throw new Error(`bad ip ${ip}`);
  let value = 0n;
  for (const b of parsed.bytes) value = (value << 8n) | BigInt(b);
  return { family: parsed.family, value };
}

function inCidr(ip: string, cidr: string): boolean {
  const [addr, len] = cidr.split("/");
  const a = ipBits(ip);
  const c = ipBits(addr ?? "");
  if (a.family !== c.family) return false;
  const width = a.family === 4 ? 32 : 128;
  const shift = BigInt(width - Number(len));
  return a.value >> shift === c.value >> shift;
}

function selects(sel: Json | undefined, labels: Record<string, string>): boolean {
  if (sel === undefined) return true;
  const matchLabels = (sel.matchLabels ?? {}) as Record<string, string>;
  for (const [k, v] of Object.entries(matchLabels)) if (!Object.hasOwn(labels, k) || labels[k] !== v) return false;
  for (const e of (sel.matchExpressions ?? []) as { key: string; operator: string; values?: string[] }[]) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    if (e.operator === "In" && !(has && (e.values ?? []).includes(value ?? ""))) return false;
    if (e.operator === "NotIn" && has && (e.values ?? []).includes(value ?? "")) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

interface End {
  pod: SimplePod | undefined;
  ip: string;
  node: boolean;
}

function end(world: World, p: Peer): End {
  if ("pod" in p) {
    const pod = world.pods.find((q) => `${q.namespace}/${q.name}` === p.pod);
    if (!pod) throw new Error(`no pod ${p.pod}`);
    return { pod, ip: p.ip ?? pod.ips[0] ?? "", node: false };
  }
  const pod = world.pods.find((q) => q.ips.includes(p.ip));
  return { pod, ip: p.ip, node: pod === undefined && NODE_IPS.includes(p.ip) };
}

interface SimpleSide {
  isolated: boolean;
  allowedBy: string[];
  isolatedBy: string[];
}

function literalSide(world: World, direction: "Ingress" | "Egress", subject: SimplePod, other: End, dst: End, protocol: string, portNumber: number): SimpleSide {
  const side: SimpleSide = { isolated: false, allowedBy: [], isolatedBy: [] };
  const keys = [...world.policies.keys()].sort();
  for (const key of keys) {
    const policy = world.policies.get(key);
    if (!policy || policy.namespace !== subject.namespace) continue;
    const spec = policy.spec;
    if (!selects(spec.podSelector as Json, subject.labels)) continue;
    const egressRules = (spec.egress ?? []) as Json[];
    let types = (spec.policyTypes ?? []) as string[];
    if (types.length === 0) types = egressRules.length > 0 ? ["Ingress", "Egress"] : ["Ingress"];
    if (!types.includes(direction)) continue;
    side.isolated = true;
    side.isolatedBy.push(key);
    const list = (direction === "Ingress" ? spec.ingress ?? [] : egressRules) as Json[];
    const ok = list.some((rule) => {
      const peers = (rule[direction === "Ingress" ? "from" : "to"] ?? []) as Json[];
      const ports = (rule.ports ?? []) as Json[];
      const peerOk = peers.length === 0 || peers.some((p) => {
        const block = p.ipBlock as { cidr: string; except?: string[] } | undefined;
        if (block) return inCidr(other.ip, block.cidr) && !(block.except ?? []).some((e) => inCidr(other.ip, e));
        if (!other.pod) return false;
        const nsLabels = { ...world.nsLabels.get(other.pod.namespace), "kubernetes.io/metadata.name": other.pod.namespace };
        const nsOk = p.namespaceSelector === undefined ? other.pod.namespace === policy.namespace : selects(p.namespaceSelector as Json, nsLabels);
        return nsOk && selects(p.podSelector as Json | undefined, other.pod.labels);
      });
      const portOk = ports.length === 0 || ports.some((q) => {
        const proto = (q.protocol ?? "TCP") as string;
        if (proto !== protocol) return false;
        if (q.port === undefined) return true;
        if (typeof q.port === "number") return q.endPort === undefined ? portNumber === q.port : portNumber >= q.port && portNumber <= (q.endPort as number);
        return dst.pod !== undefined && dst.pod.ports.some((c) => c.name === q.port && c.protocol === proto && c.port === portNumber);
      });
      return peerOk && portOk;
    });
    if (ok) side.allowedBy.push(key);
  }
  return side;
}

/** The first rule of a tier that matched: "<tier> <policy> <rule>: <action>" (the rule's name, else "<direction>[<index>]"). */
type TierMatch = string | undefined;

/**
 * The first matching rule of a tier, read from the ClusterNetworkPolicy documents: the
 * tier's policies whose subject holds the pod, by ascending priority (then name), rules in
 * written order. undefined when none matches.
 */
function literalTier(world: World, tier: string, direction: "ingress" | "egress", subject: SimplePod, other: End, dst: End, protocol: string, portNumber: number): TierMatch {
  const subjectNs = { ...world.nsLabels.get(subject.namespace), "kubernetes.io/metadata.name": subject.namespace };
  const policies = [...world.cnps].filter(([, spec]) => spec.tier === tier)
    .sort(([an, a], [bn, b]) => (a.priority as number) - (b.priority as number) || (an < bn ? -1 : an > bn ? 1 : 0));
  for (const [policyName, spec] of policies) {
    const subj = spec.subject as { namespaces?: Json; pods?: { namespaceSelector?: Json; podSelector: Json } };
    const holds = subj.namespaces !== undefined ? selects(subj.namespaces, subjectNs)
      : selects(subj.pods?.namespaceSelector, subjectNs) && selects(subj.pods?.podSelector, subject.labels);
    if (!holds) continue;
    for (const [index, rule] of ((spec[direction] ?? []) as Json[]).entries()) {
      const peers = rule[direction === "ingress" ? "from" : "to"] as Json[];
      const peerOk = peers.some((p) => {
        if (p.networks !== undefined) return (p.networks as string[]).some((c) => inCidr(other.ip, c));
        if (!other.pod) return false;
        const nsLabels = { ...world.nsLabels.get(other.pod.namespace), "kubernetes.io/metadata.name": other.pod.namespace };
        if (p.namespaces !== undefined) return selects(p.namespaces as Json, nsLabels);
        const pods = p.pods as { namespaceSelector?: Json; podSelector: Json };
        return selects(pods.namespaceSelector, nsLabels) && selects(pods.podSelector, other.pod.labels);
      });
      const protocols = rule.protocols as Json[] | undefined;
      const portOk = protocols === undefined || protocols.some((q) => {
        if (q.destinationNamedPort !== undefined) return dst.pod !== undefined && dst.pod.ports.some((c) => c.name === q.destinationNamedPort && c.protocol === protocol && c.port === portNumber);
        const [name, body] = Object.entries(q)[0] as [string, { destinationPort?: { number?: number; range?: { start: number; end: number } } }];
        if (name.toUpperCase() !== protocol) return false;
        const dp = body.destinationPort;
        if (dp === undefined) return true;
        if (dp.number !== undefined) return portNumber === dp.number;
        return dp.range !== undefined && portNumber >= dp.range.start && portNumber <= dp.range.end;
      });
      if (peerOk && portOk) return `${tier} ${policyName} ${(rule.name as string | undefined) ?? `${direction}[${index}]`}: ${rule.action as string}`;
    }
  }
  return undefined;
}

/** Who decided a side: the tier, and the tier rules that matched first on the way (a Pass among them). */
interface Decision {
  allowed: boolean;
  decidedBy: "Admin" | "NetworkPolicy" | "Baseline" | "none";
  tierRules: string[];
}

/** Admin (Accept/Deny final, Pass hands on), then NetworkPolicy when it isolates the pod, then Baseline, else allowed. */
function tiered(world: World, direction: "ingress" | "egress", subject: SimplePod, other: End, dst: End, protocol: string, portNumber: number, np: SimpleSide): Decision {
  const tierRules: string[] = [];
  const admin = literalTier(world, "Admin", direction, subject, other, dst, protocol, portNumber);
  if (admin !== undefined) {
    tierRules.push(admin);
    if (!admin.endsWith(": Pass")) return { allowed: admin.endsWith(": Accept"), decidedBy: "Admin", tierRules };
  }
  if (np.isolated) return { allowed: np.allowedBy.length > 0, decidedBy: "NetworkPolicy", tierRules };
  const baseline = literalTier(world, "Baseline", direction, subject, other, dst, protocol, portNumber);
  if (baseline !== undefined) {
    tierRules.push(baseline);
    if (!baseline.endsWith(": Pass")) return { allowed: baseline.endsWith(": Accept"), decidedBy: "Baseline", tierRules };
  }
  return { allowed: true, decidedBy: "none", tierRules };
}

function literal(world: World, src: Peer, dst: Peer, protocol: string, portNumber: number): { allowed: boolean; egress: SimpleSide; ingress: SimpleSide; decided: [Decision | undefined, Decision | undefined] } {
  const s = end(world, src);
  const d = end(world, dst);
  const none: SimpleSide = { isolated: false, allowedBy: [], isolatedBy: [] };
  const egress = s.pod ? literalSide(world, "Egress", s.pod, d, d, protocol, portNumber) : none;
  const ingress = d.pod ? literalSide(world, "Ingress", d.pod, s, d, protocol, portNumber) : none;
  const egressDecision = s.pod ? tiered(world, "egress", s.pod, d, d, protocol, portNumber, egress) : undefined;
  const ingressDecision = d.pod ? tiered(world, "ingress", d.pod, s, d, protocol, portNumber, ingress) : undefined;
  let egressOk = egressDecision?.allowed ?? true;
  let ingressOk = ingressDecision?.allowed ?? true;
  // "A pod cannot block access to itself"; traffic with the node is always allowed (any node, see README).
  if (s.pod !== undefined && s.pod === d.pod) egressOk = ingressOk = true;
  if (s.pod && d.node) egressOk = true;
  if (d.pod && s.node) ingressOk = true;
  return { allowed: egressOk && ingressOk, egress, ingress, decided: [egressDecision, ingressDecision] };
}

/** Both sides' deciding tier and tier rules, as one comparable line. */
function decidedText(egress: Omit<Decision, "allowed"> | undefined, ingress: Omit<Decision, "allowed"> | undefined): string {
  const side = (d: Omit<Decision, "allowed"> | undefined) => (d === undefined ? "-" : `${d.decidedBy} [${d.tierRules.join("; ")}]`);
  return `egress ${side(egress)} / ingress ${side(ingress)}`;
}

/** The model's attribution of a side in the same form (the rules the compiler's attribution() reports). */
function modelDecision(side: SideVerdict, isPod: boolean): Omit<Decision, "allowed"> | undefined {
  if (!isPod) return undefined;
  const tierRules = [side.admin, side.baseline].filter((m) => m !== undefined).map((m) => `${m.tier} ${m.policy} ${m.rule}: ${m.action}`);
  return { decidedBy: side.decidedBy ?? "none", tierRules };
}

/** The same deciding tier and tier rules (compared without building text: this runs for every query). */
function sameDecision(model: SideVerdict, isPod: boolean, l: Decision | undefined): boolean {
  if (!isPod || l === undefined) return !isPod && l === undefined;
  if ((model.decidedBy ?? "none") !== l.decidedBy) return false;
  const matches = [model.admin, model.baseline].filter((m) => m !== undefined);
  return matches.length === l.tierRules.length && matches.every((m, i) => l.tierRules[i] === `${m.tier} ${m.policy} ${m.rule}: ${m.action}`);
}

// ---- the run -------------------------------------------------------------------------------------------

const PROBES: [string, number][] = [["TCP", 80], ["TCP", 81], ["TCP", 82], ["TCP", 83], ["UDP", 80], ["UDP", 82], ["SCTP", 80]];

interface Query {
  src: Peer;
  dst: Peer;
  srcIp: string;
  dstIp: string;
  protocol: string;
  port: number;
}

function queries(rand: () => number, world: World): Query[] {
  const out: Query[] = [];
  const [p1, p2] = [pick(rand, PROBES), pick(rand, PROBES)];
  for (const s of world.pods) {
    for (const d of world.pods) {
      if (s === d) continue;
      for (const [protocol, port] of [p1, p2]) {
        out.push({ src: { pod: `${s.namespace}/${s.name}` }, dst: { pod: `${d.namespace}/${d.name}` }, srcIp: s.ips[0] ?? "", dstIp: d.ips[0] ?? "", protocol, port });
      }
    }
  }
  const addresses = [...WORLD_IPS, ...NODE_IPS, ...world.pods.flatMap((p) => p.ips)];
  for (let i = 0; i < 24; i++) {
    const srcIp = pick(rand, addresses);
    // A connection never mixes address families.
    const dstIp = pick(rand, addresses.filter((a) => a.includes(":") === srcIp.includes(":")));
    const [protocol, port] = rand() < 0.1 ? ["ICMP", 0] as [string, number] : pick(rand, PROBES);
    out.push({ src: { ip: srcIp }, dst: { ip: dstIp }, srcIp, dstIp, protocol, port });
  }
  return out;
}

function sideOf(side: SimpleSide): SimpleSide {
  return { isolated: side.isolated, allowedBy: side.allowedBy, isolatedBy: side.isolatedBy };
}

function sameSide(a: SimpleSide, b: SimpleSide): boolean {
  return a.isolated === b.isolated && a.allowedBy.join() === b.allowedBy.join() && a.isolatedBy.join() === b.isolatedBy.join();
}

function sameVerdict(a: { allowed: boolean; egress: SimpleSide; ingress: SimpleSide }, b: { allowed: boolean; egress: SimpleSide; ingress: SimpleSide }): boolean {
  return a.allowed === b.allowed && sameSide(a.egress, b.egress) && sameSide(a.ingress, b.ingress);
}

describe("random NetworkPolicies and ClusterNetworkPolicies: model = literal reading of the API = compiled snapshot", () => {
  it(`${SEQUENCES * STEPS} states agree (seed ${SEED})`, () => {
    let checked = 0;
    /** Queries where a Pass handed a side on: the attribution check must meet some. */
    let passes = 0;
    for (let sequence = 0; sequence < SEQUENCES; sequence++) {
      const seed = SEED + sequence;
      const rand = random(seed);
      const world = initialWorld(rand);
      const compiler = new PolicyCompiler({ defaultMode: "enforce" });
      const policySet = new PolicySet();
      const cnpSet = new CnpSet();
      const history: string[] = [];
      const earlier: ReturnType<typeof objects>[] = [];
      for (let step = 0; step < STEPS; step++) {
        history.push(mutate(rand, world, step));
        // Sometimes go back to an earlier state with its very objects (as a revert would),
        // and check the incremental compiler against a fresh one there.
        if (earlier.length > 0 && rand() < 0.15) {
          const back = pick(rand, earlier);
          const incremental = compiler.compile(back);
          const fresh = new PolicyCompiler({ defaultMode: "enforce" }).compile(back);
          for (const s of back.pods) {
            for (const d of back.pods) {
              const [src, dst] = [s.status.podIPs[0] ?? "", d.status.podIPs[0] ?? ""];
              if (snapshotAllows(incremental, src, dst, "TCP", 80) !== snapshotAllows(fresh, src, dst, "TCP", 80)) {
                expect.fail(`revert: incremental and fresh compiles differ for ${src} > ${dst}, seed ${seed} (POLICY_RANDOM_SEED=${seed}), step ${step}: ${history.join("; ")}`);
              }
            }
          }
        }
        const cluster = objects(world);
        earlier.push(cluster);
        const model = new PolicyModel(cluster, { defaultMode: "enforce", policySet, cnpSet });
        const snapshot = compiler.compile(cluster);
        const context = () => `seed ${seed} (rerun with POLICY_RANDOM_SEED=${seed}), step ${step}\nchanges: ${history.join("; ")}\npolicies: ${JSON.stringify([...world.policies.values()])}\ncnps: ${JSON.stringify([...world.cnps])}\nlabels: ${JSON.stringify(world.pods.map((p) => p.labels))} ${JSON.stringify([...world.nsLabels])}`;
        expect(model.errors(), context()).toEqual([]);
        for (const q of queries(rand, world)) {
          const protocol = q.protocol === "ICMP" ? 1 : (q.protocol as "TCP" | "UDP" | "SCTP");
          const m = model.evaluate({ src: q.src, dst: q.dst, protocol, port: q.port });
          const l = literal(world, q.src, q.dst, q.protocol, q.port);
          const what = () => `${JSON.stringify(q)}\n${context()}`;
          const modelSides = { allowed: m.allowed, egress: sideOf(m.egress), ingress: sideOf(m.ingress) };
          // Messages are built only on a mismatch: building them per query is most of the run time.
          if (!sameVerdict(modelSides, l)) expect(modelSides, `model vs literal: ${what()}`).toEqual({ allowed: l.allowed, egress: l.egress, ingress: l.ingress });
          // Attribution: the tier that decided each side and the tier rules on the way (a Pass, then who decided).
          if (!sameDecision(m.egress, m.src.kind === "pod", l.decided[0]) || !sameDecision(m.ingress, m.dst.kind === "pod", l.decided[1])) {
            const decided = decidedText(modelDecision(m.egress, m.src.kind === "pod"), modelDecision(m.ingress, m.dst.kind === "pod"));
            expect(decided, `model vs literal, who decided: ${what()}`).toBe(decidedText(...l.decided));
          }
          if (l.decided.some((d) => d?.tierRules.some((t) => t.endsWith(": Pass")))) passes++;
          const s = snapshotAllows(snapshot, q.srcIp, q.dstIp, protocol, q.port);
          if (s !== m.allowed) expect(s, `snapshot vs model: ${what()}`).toBe(m.allowed);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(SEQUENCES * STEPS * 150);
    expect(passes).toBeGreaterThan(checked / 1000);
  }, 600_000);
});
