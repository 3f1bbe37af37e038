// ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, sig-network's network-policy-api):
// the manifest as bulkhead reads it, validated as the CRD does, and normalized for the
// model (model.ts) and the compiler (compile.ts).
//
// A policy: `tier` Admin | Baseline, `priority` 0–1000 (lower first), `subject`
// (`namespaces` selector, or `pods` {namespaceSelector, podSelector}; a missing
// namespaceSelector is every namespace), `ingress` / `egress` rules in written order, each
// with `action` Accept | Deny | Pass, peers `from` / `to` (`namespaces`, `pods`; egress
// also `networks`: CIDRs) and optional `protocols` (`tcp` / `udp` / `sctp` with an optional
// `destinationPort` {number} or {range: {start, end}}, or `destinationNamedPort`).
//
// Refused (a named problem, the policy ignored or its previous valid version kept):
// - `nodes` peers: bulkhead exempts every node address from policy (hostExempt; identities
//   carry no node), so a rule about nodes could not be enforced as written;
// - `domainNames` peers: the datapath judges addresses, and bulkhead has no DNS-aware
//   address tracking to turn names into addresses.
import { parseIpPrefix } from "../../addresses/prefix.js";
import { describeValue, fieldPath } from "../../fields/reader.js";
import { isDnsSubdomain, isPortName } from "../../kubernetes/names.js";
import type { LabelSelector, Protocol } from "../metadata/objects.js";
import { IpBlockRange, type NormalizedPeer, type NormalizedPort, type PolicyProblem } from "./model.js";
import { compileLabelSelector, labelSelectorProblems, type SelectorMatcher } from "./selector.js";

export const CNP_API_VERSION = "policy.networking.k8s.io/v1alpha2";
export const CNP_KIND = "ClusterNetworkPolicy";

export type CnpTier = "Admin" | "Baseline";
export type CnpAction = "Accept" | "Deny" | "Pass";
export const CNP_TIERS: readonly CnpTier[] = ["Admin", "Baseline"];
export const CNP_ACTIONS: readonly CnpAction[] = ["Accept", "Deny", "Pass"];
export const CNP_MAX_PRIORITY = 1000;
/** The CRD's limits. */
const MAX_RULES = 100;
const MAX_PEERS = 100;
const MAX_NETWORKS = 25;
const MAX_RULE_NAME = 100;

/** A ClusterNetworkPolicy manifest (cluster-scoped); the spec is read, not trusted. */
export interface ClusterNetworkPolicy {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string };
  spec: unknown;
}

export interface NormalizedCnpRule {
  /** The rule's `name`, or "" when it has none. */
  name: string;
  /** "ingress[2]" or "egress[0]". */
  index: string;
  action: CnpAction;
  /** Never empty: the CRD requires at least one peer. */
  peers: readonly NormalizedPeer[];
  /** Undefined: every port of every protocol. */
  ports: readonly NormalizedPort[] | undefined;
}

export interface NormalizedCnp {
  readonly name: string;
  readonly tier: CnpTier;
  readonly priority: number;
  /** Equal for policies with equal name and spec. */
  readonly contentKey: string;
  /** Undefined: every namespace. */
  readonly subjectNamespaces: SelectorMatcher | undefined;
  /** Undefined: every pod of those namespaces. */
  readonly subjectPods: SelectorMatcher | undefined;
  readonly ingress: readonly NormalizedCnpRule[];
  readonly egress: readonly NormalizedCnpRule[];
}

/** "rule-name" (or "ingress[i]" for a rule without a name), as attribution names a rule. */
export function cnpRuleName(rule: NormalizedCnpRule): string {
  return rule.name === "" ? rule.index : rule.name;
}

/** Evaluation order within a tier: ascending priority, then name (two policies at one priority are implementation-defined upstream). */
export function compareCnps(a: NormalizedCnp, b: NormalizedCnp): number {
  return a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

export function cnpSubjectMatches(cnp: NormalizedCnp, namespaceLabels: Record<string, string>, podLabels: Record<string, string>): boolean {
  return (cnp.subjectNamespaces === undefined || cnp.subjectNamespaces.matches(namespaceLabels))
    && (cnp.subjectPods === undefined || cnp.subjectPods.matches(podLabels));
}

function isPlainMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const EVERYTHING: LabelSelector = { matchLabels: {}, matchExpressions: [] };

/** Validates one ClusterNetworkPolicy as the CRD does: the normalized policy, or the problems naming each bad field. */
export function normalizeCnp(object: ClusterNetworkPolicy): { policy: NormalizedCnp; problems?: undefined } | { policy?: undefined; problems: PolicyProblem[] } {
  const name: unknown = object.metadata?.name;
  const label = typeof name === "string" && name !== "" ? name : "(unnamed)";
  const where = `ClusterNetworkPolicy ${label}`;
  const problems: PolicyProblem[] = [];
  const fail = (field: string, message: string) => {
    problems.push({ object: where, policy: `cnp/${label}`, field, message, keptPrevious: false, text: `${where}: ${field}: ${message} (ignored)` });
  };
  if (typeof name !== "string" || name === "") fail("metadata.name", "missing");
  else if (!isDnsSubdomain(name)) fail("metadata.name", `${describeValue(name)} is not a DNS subdomain (lowercase letters, digits, "-" and ".", at most 253)`);
  if (object.apiVersion !== undefined && object.apiVersion !== CNP_API_VERSION) fail("apiVersion", `expected ${CNP_API_VERSION}, got ${describeValue(object.apiVersion)}`);
  const spec = object.spec;
  if (!isPlainMap(spec)) {
    fail("spec", `expected a map, got ${describeValue(spec)}`);
    return { problems };
  }
  for (const key of Object.keys(spec)) {
    if (!["tier", "priority", "subject", "ingress", "egress"].includes(key)) fail(fieldPath("spec", key), "unknown field (a spec has tier, priority, subject, ingress, egress)");
  }

  const tier = spec.tier;
  if (!(CNP_TIERS as readonly unknown[]).includes(tier)) fail("spec.tier", `expected Admin or Baseline, got ${describeValue(tier)}`);
  const priority = spec.priority;
  if (typeof priority !== "number" || !Number.isInteger(priority) || priority < 0 || priority > CNP_MAX_PRIORITY) {
    fail("spec.priority", `expected an integer 0-${CNP_MAX_PRIORITY}, got ${describeValue(priority)}`);
  }

  const selector = (value: unknown, field: string): SelectorMatcher | undefined => {
    if (value === undefined || value === null) return undefined;
    const found = labelSelectorProblems(value as LabelSelector, field);
    for (const p of found) fail(p.field, p.message);
    return found.length === 0 ? compileLabelSelector(value as LabelSelector, field) : undefined;
  };
  const exactlyOne = (value: Record<string, unknown>, field: string, allowed: readonly string[]): string | undefined => {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined && value[k] !== null);
    for (const k of keys) if (!allowed.includes(k)) fail(fieldPath(field, k), `unknown field (expected exactly one of ${allowed.join(", ")})`);
    const known = keys.filter((k) => allowed.includes(k));
    if (known.length !== 1) {
      fail(field, `expected exactly one of ${allowed.join(", ")}, got ${known.length === 0 ? "none" : known.join(" and ")}`);
      return undefined;
    }
    return known[0];
  };
  const podsSelector = (value: unknown, field: string): { namespaces: SelectorMatcher | undefined; pods: SelectorMatcher | undefined; ok: boolean } => {
    if (!isPlainMap(value)) {
      fail(field, `expected a map with namespaceSelector and podSelector, got ${describeValue(value)}`);
      return { namespaces: undefined, pods: undefined, ok: false };
    }
    for (const k of Object.keys(value)) if (k !== "namespaceSelector" && k !== "podSelector") fail(fieldPath(field, k), "unknown field (expected namespaceSelector, podSelector)");
    const before = problems.length;
    if (value.podSelector === undefined || value.podSelector === null) fail(fieldPath(field, "podSelector"), "missing; use {} for every pod");
    const pods = selector(value.podSelector, fieldPath(field, "podSelector"));
    const namespaces = selector(value.namespaceSelector, fieldPath(field, "namespaceSelector"));
    return { namespaces, pods, ok: problems.length === before };
  };

  // subject
  let subjectNamespaces: SelectorMatcher | undefined;
  let subjectPods: SelectorMatcher | undefined;
  if (!isPlainMap(spec.subject)) fail("spec.subject", `expected a map with namespaces or pods, got ${describeValue(spec.subject)}`);
  else {
    const kind = exactlyOne(spec.subject, "spec.subject", ["namespaces", "pods"]);
    if (kind === "namespaces") subjectNamespaces = selector(spec.subject.namespaces, "spec.subject.namespaces");
    else if (kind === "pods") {
      const s = podsSelector(spec.subject.pods, "spec.subject.pods");
      subjectNamespaces = s.namespaces;
      subjectPods = s.pods;
    }
  }

  const readPeer = (raw: unknown, field: string, direction: "ingress" | "egress"): NormalizedPeer[] => {
    if (!isPlainMap(raw)) {
      fail(field, `expected a peer map, got ${describeValue(raw)}`);
      return [];
    }
    const allowed = direction === "ingress" ? ["namespaces", "pods"] : ["namespaces", "pods", "networks", "nodes", "domainNames"];
    const kind = exactlyOne(raw, field, allowed);
    const f = kind === undefined ? field : fieldPath(field, kind);
    switch (kind) {
      case "namespaces": {
        const ns = selector(raw.namespaces, f);
        return ns ? [{ kind: "pods", namespaceSelector: ns, podSelector: compileLabelSelector(EVERYTHING, fieldPath(f, "podSelector")) }] : [];
      }
      case "pods": {
        const s = podsSelector(raw.pods, f);
        if (!s.ok || !s.pods) return [];
        return [{ kind: "pods", podSelector: s.pods, namespaceSelector: s.namespaces ?? compileLabelSelector(EVERYTHING, fieldPath(f, "namespaceSelector")) }];
      }
      case "networks": {
        const list = raw.networks;
        if (!Array.isArray(list) || list.length === 0 || list.length > MAX_NETWORKS) {
          fail(f, `expected a list of 1-${MAX_NETWORKS} CIDRs, got ${describeValue(list)}`);
          return [];
        }
        const out: NormalizedPeer[] = [];
        list.forEach((text, i) => {
          const prefix = typeof text === "string" ? parseIpPrefix(text) : undefined;
          if (!prefix) fail(fieldPath(f, i), `expected a CIDR such as 10.0.0.0/8 or fd00::/8, got ${describeValue(text)}`);
          else out.push({ kind: "ipBlock", block: new IpBlockRange(prefix, []) });
        });
        return out;
      }
      case "nodes":
        fail(f, "nodes peers are not supported: bulkhead exempts traffic between pods and every node address (hostExempt), so a rule about nodes could not be enforced as written");
        return [];
      case "domainNames":
        fail(f, "domainNames peers are not supported: the datapath judges addresses and bulkhead does not track which addresses a name resolved to");
        return [];
      default:
        return [];
    }
  };

  const readProtocol = (raw: unknown, field: string): NormalizedPort[] => {
    if (!isPlainMap(raw)) {
      fail(field, `expected a map with tcp, udp, sctp or destinationNamedPort, got ${describeValue(raw)}`);
      return [];
    }
    const kind = exactlyOne(raw, field, ["tcp", "udp", "sctp", "destinationNamedPort"]);
    if (kind === undefined) return [];
    const f = fieldPath(field, kind);
    if (kind === "destinationNamedPort") {
      const name = raw.destinationNamedPort;
      if (typeof name !== "string" || !isPortName(name)) {
        fail(f, `invalid port name ${describeValue(name)}: lowercase letters, digits and "-", at most 15, at least one letter`);
        return [];
      }
      // Any protocol: the container port of that name decides, and must be the connection's.
      return (["TCP", "UDP", "SCTP"] as const).map((protocol) => ({ kind: "named", protocol, name }));
    }
    const protocol = kind.toUpperCase() as Protocol;
    const body = raw[kind];
    if (!isPlainMap(body)) {
      fail(f, `expected a map (optionally with destinationPort), got ${describeValue(body)}`);
      return [];
    }
    for (const k of Object.keys(body)) if (k !== "destinationPort") fail(fieldPath(f, k), "unknown field (expected destinationPort)");
    const dp = body.destinationPort;
    if (dp === undefined || dp === null) return [{ kind: "all", protocol }];
    const df = fieldPath(f, "destinationPort");
    if (!isPlainMap(dp)) {
      fail(df, `expected {number: N} or {range: {start, end}}, got ${describeValue(dp)}`);
      return [];
    }
    const which = exactlyOne(dp, df, ["number", "range"]);
    const isPort = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;
    if (which === "number") {
      if (!isPort(dp.number)) {
        fail(fieldPath(df, "number"), `expected a port number 1-65535, got ${describeValue(dp.number)}`);
        return [];
      }
      return [{ kind: "range", protocol, from: dp.number, to: dp.number }];
    }
    if (which === "range") {
      const r = dp.range;
      const rf = fieldPath(df, "range");
      if (!isPlainMap(r)) {
        fail(rf, `expected {start, end}, got ${describeValue(r)}`);
        return [];
      }
      if (!isPort(r.start)) fail(fieldPath(rf, "start"), `expected a port number 1-65535, got ${describeValue(r.start)}`);
      if (!isPort(r.end)) fail(fieldPath(rf, "end"), `expected a port number 1-65535, got ${describeValue(r.end)}`);
      if (!isPort(r.start) || !isPort(r.end)) return [];
      if (r.start >= r.end) {
        fail(rf, `start (${r.start}) must be less than end (${r.end}); use number for one port`);
        return [];
      }
      return [{ kind: "range", protocol, from: r.start, to: r.end }];
    }
    return [];
  };

  const readRules = (direction: "ingress" | "egress"): NormalizedCnpRule[] => {
    const raw = spec[direction];
    if (raw === undefined || raw === null) return [];
    const field = `spec.${direction}`;
    if (!Array.isArray(raw)) {
      fail(field, `expected a list of rules, got ${describeValue(raw)}`);
      return [];
    }
    if (raw.length > MAX_RULES) fail(field, `at most ${MAX_RULES} rules, got ${raw.length}`);
    const peerField = direction === "ingress" ? "from" : "to";
    const names = new Set<string>();
    return raw.map((rule, i): NormalizedCnpRule => {
      const f = fieldPath(field, i);
      const index = `${direction}[${i}]`;
      if (!isPlainMap(rule)) {
        fail(f, `expected a rule map, got ${describeValue(rule)}`);
        return { name: "", index, action: "Deny", peers: [], ports: undefined };
      }
      for (const k of Object.keys(rule)) if (!["name", "action", peerField, "protocols"].includes(k)) fail(fieldPath(f, k), `unknown field (a rule has name, action, ${peerField}, protocols)`);
      let name = "";
      if (rule.name !== undefined) {
        if (typeof rule.name !== "string" || rule.name.length > MAX_RULE_NAME) fail(fieldPath(f, "name"), `expected a string of at most ${MAX_RULE_NAME} characters, got ${describeValue(rule.name)}`);
        else {
          name = rule.name;
          if (name !== "" && names.has(name)) fail(fieldPath(f, "name"), `another ${direction} rule is named ${JSON.stringify(name)}`);
          names.add(name);
        }
      }
      const action = rule.action;
      if (!(CNP_ACTIONS as readonly unknown[]).includes(action)) fail(fieldPath(f, "action"), `expected Accept, Deny or Pass, got ${describeValue(action)}`);
      const peersRaw = rule[peerField];
      const pf = fieldPath(f, peerField);
      const peers: NormalizedPeer[] = [];
      if (!Array.isArray(peersRaw) || peersRaw.length === 0 || peersRaw.length > MAX_PEERS) {
        fail(pf, `expected a list of 1-${MAX_PEERS} peers, got ${describeValue(peersRaw)}`);
      } else peersRaw.forEach((p, j) => peers.push(...readPeer(p, fieldPath(pf, j), direction)));
      let ports: NormalizedPort[] | undefined;
      if (rule.protocols !== undefined && rule.protocols !== null) {
        const lf = fieldPath(f, "protocols");
        if (!Array.isArray(rule.protocols) || rule.protocols.length === 0 || rule.protocols.length > MAX_PEERS) {
          fail(lf, `expected a list of 1-${MAX_PEERS} protocols, got ${describeValue(rule.protocols)}`);
        } else ports = rule.protocols.flatMap((p, j) => readProtocol(p, fieldPath(lf, j)));
      }
      return { name, index, action: action as CnpAction, peers, ports };
    });
  };
  const ingress = readRules("ingress");
  const egress = readRules("egress");
  if (problems.length > 0 || typeof name !== "string") return { problems };
  return {
    policy: {
      name, tier: tier as CnpTier, priority: priority as number,
      contentKey: JSON.stringify([name, spec]),
      subjectNamespaces, subjectPods, ingress, egress,
    },
  };
}

/**
 * The ClusterNetworkPolicies in force: each valid one, and for an invalid one its last valid
 * version seen by this set (as when the API server rejects an update); one with no valid
 * version is ignored (a ClusterNetworkPolicy isolates nothing by itself).
 */
export class CnpSet {
  private lastValid = new Map<string, NormalizedCnp>();
  private byContent = new Map<string, ReturnType<typeof normalizeCnp>>();
  private current: { inForce: NormalizedCnp[]; problems: PolicyProblem[] } = { inForce: [], problems: [] };
  private lastInput: readonly ClusterNetworkPolicy[] | undefined;

  update(objects: readonly ClusterNetworkPolicy[]): { inForce: readonly NormalizedCnp[]; problems: readonly PolicyProblem[] } {
    if (objects === this.lastInput) return this.current;
    this.lastInput = objects;
    const inForce: NormalizedCnp[] = [];
    const problems: PolicyProblem[] = [];
    const lastValid = new Map<string, NormalizedCnp>();
    const byContent = new Map<string, ReturnType<typeof normalizeCnp>>();
    const seen = new Set<string>();
    for (const object of objects) {
      const name = typeof object.metadata?.name === "string" ? object.metadata.name : "";
      const content = JSON.stringify([name, object.spec, object.apiVersion]);
      const result = this.byContent.get(content) ?? byContent.get(content) ?? normalizeCnp(object);
      byContent.set(content, result);
      if (seen.has(name) && name !== "") {
        problems.push({ object: `ClusterNetworkPolicy ${name}`, policy: `cnp/${name}`, field: "metadata.name", message: "given twice", keptPrevious: false, text: `ClusterNetworkPolicy ${name}: metadata.name: given twice (the later one ignored)` });
        continue;
      }
      seen.add(name);
      if (result.policy) {
        inForce.push(result.policy);
        lastValid.set(name, result.policy);
        continue;
      }
      const previous = this.lastValid.get(name);
      if (previous) {
        inForce.push(previous);
        lastValid.set(name, previous);
      }
      for (const p of result.problems) {
        problems.push(previous ? { ...p, keptPrevious: true, text: p.text.replace(/ \(ignored\)$/, " (its previous valid version stays in force)") } : p);
      }
    }
    inForce.sort(compareCnps);
    this.lastValid = lastValid;
    this.byContent = byContent;
    this.current = { inForce, problems };
    return this.current;
  }
}

/** How status names two policies of one tier at the same priority that hold a common pod. */
export function overlapText(a: NormalizedCnp, b: NormalizedCnp, example: string): string {
  const [first, second] = a.name < b.name ? [a, b] : [b, a];
  return `ClusterNetworkPolicies ${first.name} and ${second.name}: both ${first.tier} priority ${first.priority} with subjects holding ${example}; their order is implementation-defined (bulkhead evaluates ${first.name} first, by name)`;
}
