// The NetworkPolicy model: which connections networking.k8s.io/v1 NetworkPolicy allows,
// evaluated pod by pod, straight from the policies. It is the reference the compiled
// snapshot (compile.ts) is proved against, the "model engine" of the conformance runner,
// and the source of flow attribution (which policies isolate and allow each side).
//
// Semantics, as Kubernetes defines them:
// - A policy selects pods of its own namespace (podSelector; {} = all). A pod selected by
//   some policy whose policyTypes include Ingress (Egress) is isolated for ingress
//   (egress); then only what some rule of those policies allows may enter (leave).
//   policyTypes defaults to Ingress, plus Egress when egress rules exist.
// - A connection is allowed only if the source's egress AND the destination's ingress
//   allow it; policies are a union (no order, no deny rules).
// - A rule's peers: podSelector alone = pods of the policy's namespace; namespaceSelector
//   alone = every pod of matching namespaces; both = matching pods of matching
//   namespaces; ipBlock = addresses in cidr but in no except (pod addresses too, judged
//   after Service DNAT). No peers = every peer, inside or outside the cluster. No rules =
//   nothing allowed.
// - A rule's ports: none = every port and protocol; else each entry is a protocol (TCP by
//   default) with all ports, one port, a range port..endPort, or a named port, resolved on
//   the destination pod's container ports (the selected pod for ingress, the peer pod for
//   egress); a named port never matches a destination that is not a pod.
// - Exemptions Kubernetes states: a pod cannot block traffic to itself, and traffic
//   between a pod and its node is always allowed. Identities do not carry a node, so the
//   second is widened to every node address (hostExempt, on by default; see README).
// - Invalid policies are reported by errors() and ignored; when a policy becomes invalid,
//   the last valid version of it seen by the same PolicySet stays in force (as when the
//   API server rejects an update).
import { canonicalIp } from "../../addresses/ip.js";
import { ipWords, parseIpPrefix, prefixContains, type IpPrefix, type IpWords } from "../../addresses/prefix.js";
import type {
  IPBlock,
  LabelSelector,
  Namespace,
  NetworkPolicy,
  NetworkPolicyPeer,
  NetworkPolicyPort,
  Node,
  Pod,
  Protocol,
  Service,
} from "../metadata/objects.js";
import { PROTOCOLS } from "../metadata/objects.js";
import { describeValue, fieldPath } from "../../fields/reader.js";
import type { ClusterState } from "../cluster/state.js";
import { compileLabelSelector, labelSelectorProblems, type Labels, type SelectorMatcher } from "./selector.js";
import { isPortName } from "../../kubernetes/names.js";
import { cnpRuleName, cnpSubjectMatches, CnpSet, type ClusterNetworkPolicy, type CnpAction, type CnpTier, type NormalizedCnp, type NormalizedCnpRule } from "./cnp.js";

export type { Labels } from "./selector.js";

export const NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name";
export const MODE_ANNOTATION = "bulkhead.io/mode";

export type PolicyModeName = "observe" | "audit" | "enforce";
export const POLICY_MODES: readonly PolicyModeName[] = ["observe", "audit", "enforce"];

export const PROTOCOL_NUMBERS: Readonly<Record<Protocol, number>> = { TCP: 6, UDP: 17, SCTP: 132 };

/** "TCP" | "UDP" | "SCTP" from a name or an IANA number; undefined for any other protocol. */
export function protocolOf(protocol: Protocol | number): Protocol | undefined {
  if (typeof protocol === "string") return protocol;
  return protocol === 6 ? "TCP" : protocol === 17 ? "UDP" : protocol === 132 ? "SCTP" : undefined;
}

/** An ipBlock: addresses in `cidr` but in none of `except`. */
export class IpBlockRange {
  /** Canonical text; equal for equal blocks written differently. */
  readonly key: string;

  constructor(readonly cidr: IpPrefix, readonly except: readonly IpPrefix[]) {
    const texts = [...new Set(except.map((e) => e.text))].sort();
    this.key = texts.length === 0 ? cidr.text : `${cidr.text} except ${texts.join(",")}`;
  }

  contains(address: IpWords): boolean {
    if (!prefixContains(this.cidr, address)) return false;
    for (const e of this.except) if (prefixContains(e, address)) return false;
    return true;
  }
}

// ---- normalized policies ---------------------------------------------------------------

export type NormalizedPeer =
  | {
      kind: "pods";
      podSelector: SelectorMatcher;
      /** Undefined: only pods of the policy's own namespace. */
      namespaceSelector: SelectorMatcher | undefined;
    }
  | { kind: "ipBlock"; block: IpBlockRange };

export type NormalizedPort =
  | { kind: "all"; protocol: Protocol }
  | { kind: "range"; protocol: Protocol; from: number; to: number }
  | { kind: "named"; protocol: Protocol; name: string };

export interface NormalizedRule {
  /** Undefined: every peer (the rule has no from/to). */
  peers: readonly NormalizedPeer[] | undefined;
  /** Undefined: every port of every protocol (the rule has no ports). */
  ports: readonly NormalizedPort[] | undefined;
}

/** A valid policy, ready to evaluate. */
export interface NormalizedPolicy {
  /** "namespace/name", as attribution names it. */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  /** Equal for policies with equal namespace, name and spec. */
  readonly contentKey: string;
  readonly podSelector: SelectorMatcher;
  /** Undefined when policyTypes has no Ingress; an empty list denies all ingress. */
  readonly ingress: readonly NormalizedRule[] | undefined;
  readonly egress: readonly NormalizedRule[] | undefined;
  readonly source: NetworkPolicy;
}

/** A problem with an object the policy engine reads: an invalid policy, or a bad mode annotation. */
export interface PolicyProblem {
  /** "NetworkPolicy x/deny-all" or "Namespace x". */
  object: string;
  /** The policy key ("x/deny-all"), or "" for a namespace problem. */
  policy: string;
  field: string;
  message: string;
  /** For a policy: an earlier valid version of it stays in force. */
  keptPrevious: boolean;
  /** For a policy with no valid version: it fails closed, isolating the pods it selects with nothing admitted. */
  isolating?: boolean;
  /** One line naming object, field and problem. */
  text: string;
}

function problem(object: string, policy: string, field: string, message: string, keptPrevious = false): PolicyProblem {
  const where = field === "" ? object : `${object}: ${field}`;
  return { object, policy, field, message, keptPrevious, text: `${where}: ${message}${keptPrevious ? " (its previous valid version stays in force)" : " (ignored)"}` };
}


function isPort(value: unknown): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 1 && value <= 65535;
}

/** Validates and normalizes one policy; the problems name each bad field. */
/**
 * A policy as the engines read it, or what is wrong with it and, for a policy that names
 * its namespace and name, the `lockdown` that stands in for it (PolicySet).
 */
export function normalizePolicy(policy: NetworkPolicy, selectors?: Map<string, SelectorMatcher>, parts?: NormalizedParts, content?: string): NormalizeResult {
  const namespace = policy.metadata?.namespace ?? "";
  const name = policy.metadata?.name ?? "";
  const key = `${namespace}/${name}`;
  const object = `NetworkPolicy ${key}`;
  const problems: PolicyProblem[] = [];
  const fail = (field: string, message: string) => problems.push(problem(object, key, field, message));
  if (typeof namespace !== "string" || namespace === "") fail("metadata.namespace", "missing");
  if (typeof name !== "string" || name === "") fail("metadata.name", "missing");
  const spec: Partial<NetworkPolicy["spec"]> = policy.spec ?? {};

  const selector = (value: LabelSelector | undefined, field: string): SelectorMatcher | undefined => {
    if (value === undefined) return undefined;
    const content = selectors === undefined ? undefined : selectorContent(value);
    const known = content === undefined ? undefined : selectors?.get(content);
    if (known !== undefined) return known;
    const found = labelSelectorProblems(value, field);
    for (const p of found) fail(p.field, p.message);
    if (found.length > 0) return undefined;
    const matcher = compileLabelSelector(value, field);
    if (content !== undefined) selectors?.set(content, matcher);
    return matcher;
  };

  const podSelector = spec.podSelector === undefined
    ? (fail("spec.podSelector", "missing; use {} to select every pod in the namespace"), undefined)
    : selector(spec.podSelector, "spec.podSelector");

  const list = <T>(value: readonly T[] | undefined, field: string): readonly T[] => {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) {
      fail(field, `expected a list, got ${describeValue(value)}`);
      return [];
    }
    return value;
  };

  const readPeer = (peer: NetworkPolicyPeer, field: string): NormalizedPeer | undefined => {
    if (typeof peer !== "object" || peer === null) {
      fail(field, `expected a peer map, got ${describeValue(peer)}`);
      return undefined;
    }
    const block: IPBlock | undefined = peer.ipBlock ?? undefined;
    const hasSelectors = (peer.podSelector ?? undefined) !== undefined || (peer.namespaceSelector ?? undefined) !== undefined;
    if (block !== undefined) {
      if (hasSelectors) {
        fail(field, "ipBlock cannot be combined with podSelector or namespaceSelector");
        return undefined;
      }
      const bf = fieldPath(field, "ipBlock");
      const cidr = typeof block.cidr === "string" ? parseIpPrefix(block.cidr) : undefined;
      if (!cidr) {
        fail(fieldPath(bf, "cidr"), `expected a CIDR such as 10.0.0.0/8 or fd00::/8, got ${describeValue(block.cidr)}`);
        return undefined;
      }
      const except: IpPrefix[] = [];
      list(block.except, fieldPath(bf, "except")).forEach((text, i) => {
        const ef = fieldPath(fieldPath(bf, "except"), i);
        const e = typeof text === "string" ? parseIpPrefix(text) : undefined;
        if (!e) fail(ef, `expected a CIDR, got ${describeValue(text)}`);
        else if (e.family !== cidr.family || e.length <= cidr.length || !prefixContains(cidr, e)) {
          fail(ef, `${e.text} must be a strict subset of cidr ${cidr.text}`);
        } else except.push(e);
      });
      return { kind: "ipBlock", block: new IpBlockRange(cidr, except) };
    }
    if (!hasSelectors) {
      fail(field, "expected podSelector, namespaceSelector or ipBlock");
      return undefined;
    }
    const pods = selector(peer.podSelector ?? { matchLabels: {}, matchExpressions: [] }, fieldPath(field, "podSelector"));
    const namespaces = peer.namespaceSelector === undefined || peer.namespaceSelector === null
      ? undefined : selector(peer.namespaceSelector, fieldPath(field, "namespaceSelector"));
    if (!pods || (peer.namespaceSelector && !namespaces)) return undefined;
    return { kind: "pods", podSelector: pods, namespaceSelector: namespaces };
  };

  const readPort = (port: NetworkPolicyPort, field: string): NormalizedPort | undefined => {
    if (typeof port !== "object" || port === null) {
      fail(field, `expected a port map, got ${describeValue(port)}`);
      return undefined;
    }
    const protocol = port.protocol ?? "TCP";
    if (!(PROTOCOLS as readonly string[]).includes(protocol)) {
      fail(fieldPath(field, "protocol"), `expected one of ${PROTOCOLS.join(", ")}, got ${describeValue(protocol)}`);
      return undefined;
    }
    const value = port.port ?? undefined;
    const endPort = port.endPort ?? undefined;
    if (typeof value === "string") {
      if (!isPortName(value)) {
        fail(fieldPath(field, "port"), `invalid port name ${describeValue(value)}: lowercase letters, digits and "-", at most 15, at least one letter`);
        return undefined;
      }
      if (endPort !== undefined) {
        fail(fieldPath(field, "endPort"), `cannot be used with the named port ${JSON.stringify(value)}: a range needs a numeric port`);
        return undefined;
      }
      return { kind: "named", protocol, name: value };
    }
    if (value === undefined) {
      if (endPort !== undefined) {
        fail(fieldPath(field, "endPort"), "needs port: a range starts at a numeric port");
        return undefined;
      }
      return { kind: "all", protocol };
    }
    if (!isPort(value)) {
      fail(fieldPath(field, "port"), `expected a port number 1-65535 or a port name, got ${describeValue(value)}`);
      return undefined;
    }
    if (endPort !== undefined) {
      if (!isPort(endPort)) {
        fail(fieldPath(field, "endPort"), `expected an integer 1-65535, got ${describeValue(endPort)}`);
        return undefined;
      }
      if (endPort < value) {
        fail(fieldPath(field, "endPort"), `must be at least port ${value}, got ${endPort}`);
        return undefined;
      }
    }
    return { kind: "range", protocol, from: value, to: endPort ?? value };
  };

  const readRules = (rules: readonly { from?: NetworkPolicyPeer[]; to?: NetworkPolicyPeer[]; ports?: NetworkPolicyPort[] }[], field: string, peerField: "from" | "to"): NormalizedRule[] =>
    rules.map((rule, i) => {
      const f = fieldPath(field, i);
      if (typeof rule !== "object" || rule === null) {
        fail(f, `expected a rule map, got ${describeValue(rule)}`);
        return { peers: [], ports: [] };
      }
      const peerList = list(rule[peerField], fieldPath(f, peerField));
      const portList = list(rule.ports, fieldPath(f, "ports"));
      const peers: NormalizedPeer[] = [], ports: NormalizedPort[] = [];
      // A part object met before (generated policies share them) and valid then is valid now:
      // read once, with its field path built only when it is read.
      peerList.forEach((p, j) => {
        let peer = parts !== undefined && typeof p === "object" && p !== null ? parts.peers.get(p) : undefined;
        if (peer === undefined) {
          const before = problems.length;
          peer = readPeer(p, fieldPath(fieldPath(f, peerField), j));
          if (peer !== undefined && problems.length === before && typeof p === "object" && p !== null) parts?.peers.set(p, peer);
        }
        if (peer !== undefined) peers.push(peer);
      });
      portList.forEach((p, j) => {
        let port = parts !== undefined && typeof p === "object" && p !== null ? parts.ports.get(p) : undefined;
        if (port === undefined) {
          const before = problems.length;
          port = readPort(p, fieldPath(fieldPath(f, "ports"), j));
          if (port !== undefined && problems.length === before && typeof p === "object" && p !== null) parts?.ports.set(p, port);
        }
        if (port !== undefined) ports.push(port);
      });
      return { peers: peerList.length === 0 ? undefined : peers, ports: portList.length === 0 ? undefined : ports };
    });

  const ingressRules = readRules(list(spec.ingress, "spec.ingress"), "spec.ingress", "from");
  const egressRules = readRules(list(spec.egress, "spec.egress"), "spec.egress", "to");
  let types = list(spec.policyTypes, "spec.policyTypes");
  types.forEach((t, i) => {
    if (t !== "Ingress" && t !== "Egress") fail(fieldPath("spec.policyTypes", i), `expected Ingress or Egress, got ${describeValue(t)}`);
  });
  if (new Set(types).size !== types.length) fail("spec.policyTypes", "lists a type twice");
  // The API server's defaulting: Ingress always; Egress when the spec has egress rules.
  if (types.length === 0) types = egressRules.length > 0 ? ["Ingress", "Egress"] : ["Ingress"];

  if (problems.length > 0 || !podSelector) {
    if (typeof namespace !== "string" || namespace === "" || typeof name !== "string" || name === "") return { problems };
    // Fail closed: what the author meant to isolate stays isolated, with nothing admitted
    // (the pods its selector picks, or all of its namespace when that is what is invalid;
    // the directions it names, or both).
    const directions = types.every((t) => t === "Ingress" || t === "Egress") ? types : ["Ingress", "Egress"];
    const lockdown: NormalizedPolicy = {
      key, namespace, name,
      contentKey: JSON.stringify(["invalid", namespace, name, spec]),
      podSelector: podSelector ?? compileLabelSelector({ matchLabels: {}, matchExpressions: [] }, "spec.podSelector"),
      ingress: directions.includes("Ingress") ? [] : undefined,
      egress: directions.includes("Egress") ? [] : undefined,
      source: policy,
    };
    return { problems, lockdown };
  }
  return {
    policy: {
      key,
      namespace,
      name,
      contentKey: content ?? JSON.stringify([namespace, name, spec]),
      podSelector,
      ingress: types.includes("Ingress") ? ingressRules : undefined,
      egress: types.includes("Egress") ? egressRules : undefined,
      source: policy,
    },
  };
}

/**
 * The text of a selector made only of strings (as parsed objects are), for the cache of
 * compiled selectors; undefined for anything else (which is then validated and compiled
 * on its own, so an odd value never borrows a valid selector's matcher).
 */
function selectorContent(value: LabelSelector): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  let text = "";
  for (const k of Object.keys(value)) if (k !== "matchLabels" && k !== "matchExpressions") return undefined;
  const labels: unknown = value.matchLabels, expressions: unknown = value.matchExpressions;
  if (labels !== undefined) {
    if (typeof labels !== "object" || labels === null || Array.isArray(labels)) return undefined;
    for (const [k, v] of Object.entries(labels)) {
      if (typeof v !== "string") return undefined;
      text += `${JSON.stringify(k)}=${JSON.stringify(v)},`;
    }
  }
  text += ";";
  if (expressions !== undefined) {
    if (!Array.isArray(expressions)) return undefined;
    for (const e of expressions as unknown[]) {
      if (typeof e !== "object" || e === null) return undefined;
      const { key, operator, values, ...rest } = e as Record<string, unknown>;
      if (Object.keys(rest).length > 0 || typeof key !== "string" || typeof operator !== "string") return undefined;
      if (values !== undefined && (!Array.isArray(values) || values.some((v) => typeof v !== "string"))) return undefined;
      text += `${JSON.stringify([key, operator, values ?? null])},`;
    }
  }
  return text;
}

type NormalizeResult = { policy: NormalizedPolicy } | { problems: PolicyProblem[]; lockdown?: NormalizedPolicy };

/**
 * Peers and ports already normalized, by object, for normalizePolicy: only valid ones are
 * kept, and a valid part reads the same in any rule (generated policies share a few peer and
 * port objects across 10,000s of rules).
 */
export interface NormalizedParts {
  peers: WeakMap<object, NormalizedPeer>;
  ports: WeakMap<object, NormalizedPort>;
}

/**
 * The policies in force, kept across updates: each policy object is validated once
 * (cached by object and by content), and a policy that turns invalid keeps its last
 * valid version in force until it is deleted or fixed. One invalid from its first version
 * fails closed: until fixed, the pods it selects (all of its namespace when its selector is
 * what is invalid) are isolated in its directions (both when those are invalid) with
 * nothing admitted. Kubernetes validates policies at admission, so in a cluster this is a
 * policy bulkhead cannot read; with the folder source, any bad file.
 */
export class PolicySet {
  /**
   * `normalized`: a cache of normalizePolicy by policy object to share between sets that
   * see the same objects (a what-if's models before and after); each set keeps its own
   * last valid versions.
   */
  constructor(private readonly byObject = new WeakMap<NetworkPolicy, NormalizeResult>()) {}

  private byContent = new Map<string, NormalizeResult>();
  private lastValid = new Map<string, NormalizedPolicy>();
  private current: { inForce: NormalizedPolicy[]; problems: PolicyProblem[] } = { inForce: [], problems: [] };
  private lastInput: readonly NetworkPolicy[] = [];

  update(policies: readonly NetworkPolicy[]): { inForce: NormalizedPolicy[]; problems: PolicyProblem[] } {
    // The same objects as last time (a cluster where no policy changed): the same answer.
    if (policies.length === this.lastInput.length && policies.every((p, i) => p === this.lastInput[i])) return this.current;
    this.lastInput = [...policies];
    const byKey = new Map<string, NetworkPolicy>();
    for (const p of policies) byKey.set(`${p.metadata?.namespace ?? ""}/${p.metadata?.name ?? ""}`, p);
    const byContent = new Map<string, NormalizeResult>();
    const lastValid = new Map<string, NormalizedPolicy>();
    const inForce: NormalizedPolicy[] = [];
    const problems: PolicyProblem[] = [];
    // Compiled selectors by content, for this update: generated policies (suggest.ts) repeat a few peers in 10,000s of rules.
    const selectors = new Map<string, SelectorMatcher>();
    const parts: NormalizedParts = { peers: new WeakMap(), ports: new WeakMap() };
    for (const [key, object] of [...byKey].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      let result = this.byObject.get(object);
      if (result === undefined) {
        const content = JSON.stringify([object.metadata?.namespace, object.metadata?.name, object.spec]);
        result = this.byContent.get(content) ?? byContent.get(content) ?? normalizePolicy(object, selectors, parts, content);
        byContent.set(content, result);
        this.byObject.set(object, result);
      } else if ("policy" in result) {
        byContent.set(result.policy.contentKey, result);
      }
      if ("policy" in result) {
        inForce.push(result.policy);
        lastValid.set(key, result.policy);
        continue;
      }
      const previous = this.lastValid.get(key);
      if (previous) {
        inForce.push(previous);
        lastValid.set(key, previous);
      } else if (result.lockdown) {
        inForce.push(result.lockdown);
      }
      for (const p of result.problems) {
        problems.push(previous ? { ...p, keptPrevious: true, text: p.text.replace(/ \(ignored\)$/, " (its previous valid version stays in force)") }
          : result.lockdown ? { ...p, isolating: true, text: p.text.replace(/ \(ignored\)$/, " (until it is fixed, the pods it selects are isolated, admitting nothing)") } : p);
      }
    }
    this.byContent = byContent;
    this.lastValid = lastValid;
    this.current = { inForce, problems };
    return this.current;
  }

  /** The result of the last update(). */
  get inForce(): readonly NormalizedPolicy[] {
    return this.current.inForce;
  }

  get problems(): readonly PolicyProblem[] {
    return this.current.problems;
  }
}

// ---- the cluster as policy sees it -------------------------------------------------------

/** What the policy engine reads from the cluster. */
export interface PolicyCluster {
  namespaces: readonly Namespace[];
  pods: readonly Pod[];
  nodes: readonly Node[];
  policies: readonly NetworkPolicy[];
  /** ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2, cnp.ts); none when absent. */
  clusterNetworkPolicies?: readonly ClusterNetworkPolicy[];
  /**
   * Only their ClusterIPs matter, and only to the compiled snapshot: they get a service
   * identity so the datapath judges such traffic after DNAT. Policy itself never sees a
   * ClusterIP (it is judged on the backend's address).
   */
  services?: readonly Service[];
}

/** The cluster as policy reads it (without services: pass `services` to have the compiler map ClusterIPs). */
export function clusterOf(state: ClusterState): PolicyCluster {
  return { namespaces: state.namespaces(), pods: state.pods(), nodes: state.nodes(), policies: state.networkPolicies(), clusterNetworkPolicies: state.clusterNetworkPolicies() };
}

/** A namespace's labels as selectors see them: kubernetes.io/metadata.name is always set, as the API server does. */
export function namespaceLabels(name: string, namespace: Namespace | undefined): Labels {
  const labels = namespace?.metadata.labels ?? {};
  if (labels[NAMESPACE_NAME_LABEL] === name) return labels;
  return { ...labels, [NAMESPACE_NAME_LABEL]: name };
}

/** The namespace's mode from its bulkhead.io/mode annotation, or `fallback`; `problem` when the annotation is not a mode. */
export function namespaceMode(namespace: Namespace | undefined, fallback: PolicyModeName): { mode: PolicyModeName; problem?: PolicyProblem } {
  const value = namespace?.metadata.annotations[MODE_ANNOTATION];
  if (value === undefined || value === "") return { mode: fallback };
  if ((POLICY_MODES as readonly string[]).includes(value)) return { mode: value as PolicyModeName };
  const name = namespace?.metadata.name ?? "";
  return {
    mode: fallback,
    problem: {
      object: `Namespace ${name}`,
      policy: "",
      field: `metadata.annotations.${MODE_ANNOTATION}`,
      message: `expected one of ${POLICY_MODES.join(", ")}, got ${describeValue(value)}`,
      keptPrevious: false,
      text: `Namespace ${name}: metadata.annotations.${MODE_ANNOTATION}: expected one of ${POLICY_MODES.join(", ")}, got ${describeValue(value)} (using ${fallback})`,
    },
  };
}

export interface NamedPortTarget {
  protocol: Protocol;
  port: number;
}

/** Container ports by name (a name may appear in several containers). */
export function namedPortsOf(pod: Pod): Map<string, NamedPortTarget[]> {
  const out = new Map<string, NamedPortTarget[]>();
  for (const c of pod.spec.containers) {
    for (const p of c.ports) {
      if (p.name === "") continue;
      let list = out.get(p.name);
      if (!list) out.set(p.name, (list = []));
      if (!list.some((t) => t.protocol === p.protocol && t.port === p.containerPort)) list.push({ protocol: p.protocol, port: p.containerPort });
    }
  }
  return out;
}

/** Whether a pod takes part in pod-to-pod policy: it has its own addresses (not hostNetwork, not finished). */
export function isPolicyEndpoint(pod: Pod): boolean {
  return !pod.spec.hostNetwork && pod.status.phase !== "Succeeded" && pod.status.phase !== "Failed";
}

export interface PodEndpoint {
  namespace: string;
  name: string;
  /** "namespace/name". */
  key: string;
  labels: Labels;
  namespaceLabels: Labels;
  ips: readonly string[];
  node: string;
  namedPorts: ReadonlyMap<string, readonly NamedPortTarget[]>;
}

/** An end of a connection: a pod (by "namespace/name", optionally which of its addresses) or an address. */
export type Peer = { pod: string; ip?: string } | { ip: string };

export type ResolvedPeer =
  | { kind: "pod"; pod: PodEndpoint; ip: string | undefined }
  | { kind: "host"; node: string; ip: string | undefined }
  | { kind: "world"; ip: string };

export interface EvaluateQuery {
  src: Peer;
  dst: Peer;
  /** A name, or an IANA protocol number (numbers other than 6, 17, 132 match only rules without ports). */
  protocol: Protocol | number;
  port: number;
}

/** The ClusterNetworkPolicy rule that matched first in a tier. */
export interface TierRuleMatch {
  tier: CnpTier;
  /** The ClusterNetworkPolicy's name. */
  policy: string;
  priority: number;
  /** The rule's name, or "ingress[i]" / "egress[i]" when it has none. */
  rule: string;
  action: CnpAction;
}

/** Which tier decided a side: a ClusterNetworkPolicy tier, NetworkPolicy, or nothing (allowed by default). */
export type DecidingTier = "Admin" | "NetworkPolicy" | "Baseline" | "none";

export interface SideVerdict {
  /** Some NetworkPolicy selects this end for this direction. */
  isolated: boolean;
  allowed: boolean;
  /** Policies ("namespace/name") with a rule that allows the connection. */
  allowedBy: string[];
  /** Those rules, as "namespace/name ingress[i]" (or egress[i]), i counting from 0. */
  allowingRules: string[];
  /** Policies that select this end for this direction. */
  isolatedBy: string[];
  /** Allowed whatever the policies say: traffic to itself, or between a pod and a node. */
  exemption?: "self" | "host";
  /** The tier that decided (absent for an end that is not a pod: nothing judges it). */
  decidedBy?: DecidingTier;
  /** The Admin rule that matched first (Accept or Deny decided; Pass handed on to NetworkPolicy). */
  admin?: TierRuleMatch;
  /** The Baseline rule that matched first, when evaluation reached the Baseline tier. */
  baseline?: TierRuleMatch;
}

export interface Verdict {
  allowed: boolean;
  /** The source's egress policies. */
  egress: SideVerdict;
  /** The destination's ingress policies. */
  ingress: SideVerdict;
  src: ResolvedPeer;
  dst: ResolvedPeer;
}

export interface PolicyModelOptions {
  /** Mode of namespaces without a bulkhead.io/mode annotation; default observe. */
  defaultMode?: PolicyModeName;
  /** Traffic between a pod and any node address is always allowed; default true. */
  hostExempt?: boolean;
  /** Share one PolicySet across builds so that a policy turning invalid keeps its last valid version. */
  policySet?: PolicySet;
  /** Likewise for ClusterNetworkPolicies. */
  cnpSet?: CnpSet;
}

const NOT_ISOLATED: Readonly<SideVerdict> = Object.freeze({ isolated: false, allowed: true, allowedBy: [], allowingRules: [], isolatedBy: [] });

/** The policy model of one cluster state; build a new one when the cluster changes. */
export class PolicyModel {
  readonly defaultMode: PolicyModeName;
  readonly hostExempt: boolean;
  private readonly namespaces = new Map<string, { labels: Labels; mode: PolicyModeName }>();
  private readonly pods = new Map<string, PodEndpoint>();
  private readonly hostNetworkPods = new Map<string, Pod>();
  private readonly podByIp = new Map<string, PodEndpoint>();
  private readonly nodeByIp = new Map<string, string>();
  private readonly policiesByNamespace = new Map<string, NormalizedPolicy[]>();
  private readonly problems: PolicyProblem[] = [];
  private readonly inForce: readonly NormalizedPolicy[];
  /** ClusterNetworkPolicies in force by tier, in evaluation order. */
  private readonly tiers: Record<CnpTier, readonly NormalizedCnp[]>;

  constructor(cluster: PolicyCluster, options: PolicyModelOptions = {}) {
    this.defaultMode = options.defaultMode ?? "observe";
    this.hostExempt = options.hostExempt ?? true;
    for (const ns of cluster.namespaces) {
      const { mode, problem: bad } = namespaceMode(ns, this.defaultMode);
      if (bad) this.problems.push(bad);
      this.namespaces.set(ns.metadata.name, { labels: namespaceLabels(ns.metadata.name, ns), mode });
    }
    const sorted = [...cluster.pods].sort((a, b) => compareKeys(podKey(a), podKey(b)));
    for (const pod of sorted) {
      const key = podKey(pod);
      if (!isPolicyEndpoint(pod)) {
        if (pod.spec.hostNetwork) this.hostNetworkPods.set(key, pod);
        continue;
      }
      const endpoint: PodEndpoint = {
        namespace: pod.metadata.namespace,
        name: pod.metadata.name,
        key,
        labels: pod.metadata.labels,
        namespaceLabels: this.namespaceLabelsOf(pod.metadata.namespace),
        ips: pod.status.podIPs,
        node: pod.spec.nodeName,
        namedPorts: namedPortsOf(pod),
      };
      this.pods.set(key, endpoint);
      for (const ip of pod.status.podIPs) if (!this.podByIp.has(ip)) this.podByIp.set(ip, endpoint);
    }
    for (const node of cluster.nodes) {
      for (const a of node.status.addresses) {
        if ((a.type === "InternalIP" || a.type === "ExternalIP") && !this.nodeByIp.has(a.address)) this.nodeByIp.set(a.address, node.metadata.name);
      }
    }
    const set = options.policySet ?? new PolicySet();
    const { inForce, problems } = set.update(cluster.policies);
    this.inForce = inForce;
    this.problems.push(...problems);
    const cnps = (options.cnpSet ?? new CnpSet()).update(cluster.clusterNetworkPolicies ?? []);
    this.problems.push(...cnps.problems);
    this.tiers = { Admin: cnps.inForce.filter((c) => c.tier === "Admin"), Baseline: cnps.inForce.filter((c) => c.tier === "Baseline") };
    for (const p of inForce) {
      let list = this.policiesByNamespace.get(p.namespace);
      if (!list) this.policiesByNamespace.set(p.namespace, (list = []));
      list.push(p);
    }
  }

  /** Invalid policies (ignored, or replaced by their last valid version) and bad mode annotations. */
  errors(): PolicyProblem[] {
    return [...this.problems];
  }

  /** The valid policies in force, sorted by key. */
  policies(): readonly NormalizedPolicy[] {
    return this.inForce;
  }

  /** The ClusterNetworkPolicies in force, Admin then Baseline, each in evaluation order. */
  clusterPolicies(): readonly NormalizedCnp[] {
    return [...this.tiers.Admin, ...this.tiers.Baseline];
  }

  modeOf(namespace: string): PolicyModeName {
    return this.namespaces.get(namespace)?.mode ?? this.defaultMode;
  }

  namespaceLabelsOf(namespace: string): Labels {
    return this.namespaces.get(namespace)?.labels ?? { [NAMESPACE_NAME_LABEL]: namespace };
  }

  pod(key: string): PodEndpoint | undefined {
    return this.pods.get(key);
  }

  /** What an end of a connection is: a pod, a node address (host), or any other address (world). */
  resolve(peer: Peer): ResolvedPeer {
    if ("pod" in peer) {
      const pod = this.pods.get(peer.pod);
      if (pod) {
        const ip = peer.ip === undefined ? pod.ips[0] : canonicalIp(peer.ip) ?? peer.ip;
        if (ip !== undefined && !pod.ips.includes(ip)) throw new Error(`pod ${peer.pod} does not have the address ${ip} (it has ${pod.ips.join(", ") || "none"})`);
        return { kind: "pod", pod, ip };
      }
      const hostPod = this.hostNetworkPods.get(peer.pod);
      if (hostPod) return { kind: "host", node: hostPod.spec.nodeName, ip: peer.ip ?? (hostPod.status.podIP || undefined) };
      throw new Error(`unknown pod ${peer.pod} (or it has finished)`);
    }
    const ip = canonicalIp(peer.ip);
    if (ip === undefined) throw new Error(`not an IP address: ${JSON.stringify(peer.ip)}`);
    const pod = this.podByIp.get(ip);
    if (pod) return { kind: "pod", pod, ip };
    const node = this.nodeByIp.get(ip);
    if (node !== undefined) return { kind: "host", node, ip };
    return { kind: "world", ip };
  }

  evaluate(query: EvaluateQuery): Verdict {
    const src = this.resolve(query.src);
    const dst = this.resolve(query.dst);
    const protocol = protocolOf(query.protocol);
    const dstPod = dst.kind === "pod" ? dst.pod : undefined;
    const egress = src.kind === "pod" ? this.side("egress", src.pod, dst, protocol, query.port, dstPod) : NOT_ISOLATED;
    const ingress = dst.kind === "pod" ? this.side("ingress", dst.pod, src, protocol, query.port, dstPod) : NOT_ISOLATED;
    const verdict: Verdict = { allowed: false, egress: { ...egress }, ingress: { ...ingress }, src, dst };
    if (src.kind === "pod" && dst.kind === "pod" && src.pod === dst.pod) {
      for (const side of [verdict.egress, verdict.ingress]) if (!side.allowed) Object.assign(side, { allowed: true, exemption: "self" });
    }
    if (this.hostExempt) {
      if (src.kind === "pod" && dst.kind === "host" && !verdict.egress.allowed) Object.assign(verdict.egress, { allowed: true, exemption: "host" });
      if (dst.kind === "pod" && src.kind === "host" && !verdict.ingress.allowed) Object.assign(verdict.ingress, { allowed: true, exemption: "host" });
    }
    verdict.allowed = verdict.egress.allowed && verdict.ingress.allowed;
    return verdict;
  }

  /**
   * One side, tier by tier: the Admin tier's first matching rule (Accept / Deny final, Pass
   * skips the rest of the tier), then NetworkPolicy when it isolates the pod in this
   * direction, then the Baseline tier likewise, else allowed.
   */
  private side(direction: "ingress" | "egress", subject: PodEndpoint, peer: ResolvedPeer, protocol: Protocol | undefined, port: number, dstPod: PodEndpoint | undefined): SideVerdict {
    const np = this.networkPolicySide(direction, subject, peer, protocol, port, dstPod);
    if (this.tiers.Admin.length === 0 && this.tiers.Baseline.length === 0) return np.isolated ? { ...np, decidedBy: "NetworkPolicy" } : { ...np, decidedBy: "none" };
    let peerWords: IpWords | undefined | null = null;
    const peerAddress = (): IpWords | undefined => {
      if (peerWords === null) peerWords = peer.ip === undefined ? undefined : ipWords(peer.ip);
      return peerWords;
    };
    const firstMatch = (tier: CnpTier): TierRuleMatch | undefined => {
      for (const cnp of this.tiers[tier]) {
        if (!cnpSubjectMatches(cnp, subject.namespaceLabels, subject.labels)) continue;
        for (const rule of cnp[direction]) {
          if (cnpRuleMatches(rule, peer, protocol, port, dstPod, peerAddress)) {
            return { tier, policy: cnp.name, priority: cnp.priority, rule: cnpRuleName(rule), action: rule.action };
          }
        }
      }
      return undefined;
    };
    const out: SideVerdict = { ...np };
    const admin = firstMatch("Admin");
    if (admin) out.admin = admin;
    if (admin && admin.action !== "Pass") return { ...out, allowed: admin.action === "Accept", decidedBy: "Admin" };
    if (np.isolated) return { ...out, decidedBy: "NetworkPolicy" };
    const baseline = firstMatch("Baseline");
    if (baseline) out.baseline = baseline;
    if (baseline && baseline.action !== "Pass") return { ...out, allowed: baseline.action === "Accept", decidedBy: "Baseline" };
    return { ...out, allowed: true, decidedBy: "none" };
  }

  private networkPolicySide(direction: "ingress" | "egress", subject: PodEndpoint, peer: ResolvedPeer, protocol: Protocol | undefined, port: number, dstPod: PodEndpoint | undefined): SideVerdict {
    const isolatedBy: string[] = [];
    const allowedBy: string[] = [];
    const allowingRules: string[] = [];
    let peerWords: IpWords | undefined | null = null;
    const peerAddress = (): IpWords | undefined => {
      if (peerWords === null) peerWords = peer.ip === undefined ? undefined : ipWords(peer.ip);
      return peerWords;
    };
    for (const policy of this.policiesByNamespace.get(subject.namespace) ?? []) {
      const rules = policy[direction];
      if (rules === undefined || !policy.podSelector.matches(subject.labels)) continue;
      isolatedBy.push(policy.key);
      let allows = false;
      for (const [i, rule] of rules.entries()) {
        if ((rule.peers === undefined || rule.peers.some((p) => peerMatches(p, peer, policy.namespace, peerAddress)))
          && (rule.ports === undefined || rule.ports.some((p) => portMatches(p, protocol, port, dstPod)))) {
          allows = true;
          allowingRules.push(`${policy.key} ${direction}[${i}]`);
        }
      }
      if (allows) allowedBy.push(policy.key);
    }
    if (isolatedBy.length === 0) return NOT_ISOLATED;
    return { isolated: true, allowed: allowedBy.length > 0, allowedBy, allowingRules, isolatedBy };
  }
}

/** Whether a rule's peer admits the end; shared by the model and replay-verdicts.ts (one definition of matching). */
export function peerMatches(spec: NormalizedPeer, peer: ResolvedPeer, policyNamespace: string, address: () => IpWords | undefined): boolean {
  if (spec.kind === "ipBlock") {
    const words = address();
    return words !== undefined && spec.block.contains(words);
  }
  if (peer.kind !== "pod") return false;
  const pod = peer.pod;
  if (spec.namespaceSelector === undefined ? pod.namespace !== policyNamespace : !spec.namespaceSelector.matches(pod.namespaceLabels)) return false;
  return spec.podSelector.matches(pod.labels);
}

function cnpRuleMatches(rule: NormalizedCnpRule, peer: ResolvedPeer, protocol: Protocol | undefined, port: number, dstPod: PodEndpoint | undefined, address: () => IpWords | undefined): boolean {
  // CNP pod peers always carry a namespaceSelector, so the policy namespace is never read.
  return rule.peers.some((p) => peerMatches(p, peer, "", address))
    && (rule.ports === undefined || rule.ports.some((p) => portMatches(p, protocol, port, dstPod)));
}

/** Whether a rule's port admits the connection (named ports resolved on the destination pod). */
export function portMatches(spec: NormalizedPort, protocol: Protocol | undefined, port: number, dstPod: PodEndpoint | undefined): boolean {
  if (protocol === undefined || spec.protocol !== protocol) return false;
  switch (spec.kind) {
    case "all":
      return true;
    case "range":
      return port >= spec.from && port <= spec.to;
    case "named":
      return dstPod?.namedPorts.get(spec.name)?.some((t) => t.protocol === protocol && t.port === port) ?? false;
  }
}

export function podKey(pod: Pod): string {
  return `${pod.metadata.namespace}/${pod.metadata.name}`;
}

export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
