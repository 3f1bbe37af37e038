// What the details pane shows for a map node or edge: the NetworkPolicies that select it
// (through the policy model's own selectors) and the policies that decided its flows in
// the window (from each record's attribution, as the datapath judged it).
import type { ClusterState } from "../cluster/state.js";
import type { Pod } from "../metadata/objects.js";
import type { PolicyModel } from "../policy/model.js";
import { compileFilter, type FlowPredicate } from "../store/filter.js";
import { edgeOfRecord, type EdgeKey } from "../store/flowmap.js";
import { VerdictReason, type FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter } from "../../proto/gen/bulkhead/v1/observer.js";
import { ApiError, badParameter } from "./params.js";

export type Direction = "ingress" | "egress";

export interface SelectingPolicy {
  namespace: string;
  name: string;
  direction: Direction;
  mode: string;
  /** The map node whose pods it selects. */
  selects: string;
}

export interface DecidingPolicy {
  /** "" for a ClusterNetworkPolicy (cluster-scoped). */
  namespace: string;
  name: string;
  /** The tier that decided: a ClusterNetworkPolicy's (Admin, Baseline) or NetworkPolicy. */
  tier: "Admin" | "NetworkPolicy" | "Baseline";
  /** The ClusterNetworkPolicy rule that decided ("" for NetworkPolicy: records name the policy, not its rule). */
  rule: string;
  /** ClusterNetworkPolicy rules whose Pass handed the flows on to this one, as "<tier> <policy> <rule>". */
  passedBy: string[];
  direction: Direction;
  mode: string;
  /** allowed: a rule of it allowed the flows; denied: it isolated that side and no policy allowed them.
   * Only records the datapath judged by policy count (not ESTABLISHED ones). */
  decision: "allowed" | "denied";
  /** Flow records it decided in the window. */
  records: number;
}

/** A map node id taken apart: "workload:<ns>/<Kind>/<name>", "service:<ns>/<name>", "world:<ip>", "host:<node>", "unknown:<ip>". */
export type ParsedNode =
  | { kind: "workload"; id: string; namespace: string; workloadKind: string; name: string }
  | { kind: "service"; id: string; namespace: string; name: string }
  | { kind: "world" | "unknown"; id: string; ip: string }
  | { kind: "host"; id: string; node: string };

export function parseNodeId(parameter: string, id: string): ParsedNode {
  const colon = id.indexOf(":");
  const kind = colon === -1 ? "" : id.slice(0, colon);
  const rest = id.slice(colon + 1);
  const parts = rest.split("/");
  const bad = (problem: string) => badParameter(parameter, id, problem);
  switch (kind) {
    case "workload":
      if (parts.length !== 3 || parts.some((p) => p === "")) throw bad(`is not a map node id: expected workload:<namespace>/<Kind>/<name>`);
      return { kind, id, namespace: parts[0]!, workloadKind: parts[1]!, name: parts[2]! };
    case "service":
      if (parts.length !== 2 || parts.some((p) => p === "")) throw bad(`is not a map node id: expected service:<namespace>/<name>`);
      return { kind, id, namespace: parts[0]!, name: parts[1]! };
    case "world":
    case "unknown":
      if (rest === "") throw bad(`is not a map node id: expected ${kind}:<address>`);
      return { kind, id, ip: rest };
    case "host":
      if (rest === "") throw bad("is not a map node id: expected host:<node>");
      return { kind, id, node: rest };
    default:
      throw bad("is not a map node id (workload:, service:, world:, host: or unknown:)");
  }
}

/** "<source>,<destination>,<protocol>,<port>", as map-json's edgeId writes it. */
export function parseEdgeId(parameter: string, text: string): { key: EdgeKey; source: ParsedNode; destination: ParsedNode } {
  const parts = text.split(",");
  if (parts.length !== 4) throw badParameter(parameter, text, "is not an edge: expected <source>,<destination>,<protocol>,<port>");
  const [source, destination, protocol, port] = parts as [string, string, string, string];
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) throw badParameter(parameter, text, `has port ${JSON.stringify(port)}, not a number 0-65535`);
  return {
    key: { source, destination, protocol, port: Number(port) },
    source: parseNodeId(parameter, source),
    destination: parseNodeId(parameter, destination),
  };
}

/** The node's namespace ("" for peers outside every namespace). */
export function nodeNamespace(node: ParsedNode): string {
  return node.kind === "workload" || node.kind === "service" ? node.namespace : "";
}

/** Live pods behind a node: a workload's pods, or the pods a Service selects. */
function podsOf(state: ClusterState, node: ParsedNode): Pod[] {
  if (node.kind === "workload") {
    return state.pods().filter((p) => {
      if (p.metadata.namespace !== node.namespace) return false;
      const w = state.workloadOf(p);
      return w.kind === node.workloadKind && w.name === node.name;
    });
  }
  if (node.kind === "service") {
    const service = state.service(node.namespace, node.name);
    return service === undefined ? [] : state.podsSelectedBy(node.namespace, service.spec.selector);
  }
  return [];
}

/** Policies whose podSelector selects a pod of the node, for the given directions (policyTypes). */
export function selectingPolicies(state: ClusterState, model: PolicyModel, node: ParsedNode, directions: readonly Direction[]): SelectingPolicy[] {
  const pods = podsOf(state, node);
  if (pods.length === 0) return [];
  const out: SelectingPolicy[] = [];
  for (const policy of model.policies()) {
    if (policy.namespace !== nodeNamespace(node)) continue;
    if (!pods.some((p) => policy.podSelector.matches(p.metadata.labels))) continue;
    for (const direction of directions) {
      if (policy[direction] === undefined) continue;
      out.push({ namespace: policy.namespace, name: policy.name, direction, mode: model.modeOf(policy.namespace), selects: node.id });
    }
  }
  return out;
}

/** A cheap filter the store runs over its columns before the exact edge test. */
function prefilter(node: ParsedNode): FlowPredicate {
  switch (node.kind) {
    case "workload": return compileFilter(FlowFilter.fromPartial({ workload: [`${node.namespace}/${node.workloadKind}/${node.name}`] }));
    case "service": return compileFilter(FlowFilter.fromPartial({ service: [`${node.namespace}/${node.name}`] }));
    // A host end is named by its Endpoint's node; pods of that node pass too, and the exact edge test sorts them out.
    case "host": return (r) => r.source?.node === node.node || r.destination?.node === node.node;
    // "world:other" (the flow map's overflow, store/flowmap.ts rule 6) is no address: no record names it.
    default: return node.ip === "other" ? () => false : compileFilter(FlowFilter.fromPartial({ ip: [node.ip] }));
  }
}

const POLICY_KEY = /^([^/]+)\/(.+)$/;

/** What decidingPolicies found, and how much of the window it looked at. */
export interface Decisions {
  decidedBy: DecidingPolicy[];
  /** Records of the node or edge among those examined. */
  records: number;
  /** Records examined (those passing the cheap filter, newest first), at most the limit. */
  examined: number;
  /** The limit was reached: older records of the window were not examined, so the counts cover only the newest. */
  truncated: boolean;
}

/** Which records a node's or an edge's details examine: a cheap test the stores run before decidingPolicies' exact one. */
export function detailCandidates(target: DetailTarget): FlowPredicate {
  return prefilter("node" in target ? target.node : target.source);
}

export type DetailTarget = { node: ParsedNode } | { edge: EdgeKey; source: ParsedNode; destination: ParsedNode };

/**
 * Records of the node (an end of their edge) or of the edge among `candidates` (the newest
 * passing detailCandidates, oldest first, one more than `maxRecords` if there were more),
 * the policies that decided them, and how many there were. At most `maxRecords` of the
 * newest are examined, so that one request's work is bounded however busy the node.
 */
export function decidingPolicies(candidates: readonly FlowRecord[], model: PolicyModel, target: DetailTarget, maxRecords: number): Decisions {
  const matches = "node" in target
    ? (r: FlowRecord) => { const e = edgeOfRecord(r); return e.source === target.node.id || e.destination === target.node.id; }
    : (r: FlowRecord) => {
      const e = edgeOfRecord(r);
      return e.source === target.edge.source && e.destination === target.edge.destination
        && e.protocol === target.edge.protocol && e.port === target.edge.port;
    };
  const counts = new Map<string, DecidingPolicy>();
  const count = (key: string, direction: Direction, decision: DecidingPolicy["decision"], tier: DecidingPolicy["tier"], rule: string, passedBy: string[]) => {
    const id = `${tier}|${key}|${rule}|${passedBy.join(",")}|${direction}|${decision}`;
    const known = counts.get(id);
    if (known) { known.records++; return; }
    const m = tier === "NetworkPolicy" ? POLICY_KEY.exec(key) : null;
    const namespace = m?.[1] ?? "", name = m?.[2] ?? key;
    counts.set(id, { namespace, name, tier, rule, passedBy, direction, mode: model.modeOf(namespace), decision, records: 1 });
  };
  let records = 0;
  const truncated = candidates.length > maxRecords;
  const examined = truncated ? candidates.slice(1) : candidates;
  for (const r of examined) {
    if (!matches(r)) continue;
    records++;
    // Only packets a policy judged were decided by one. An ESTABLISHED record (a reply, or a
    // later packet of a connection already allowed) carries its connection's attribution,
    // but conntrack let it through, not a policy: counting it would count the connection's
    // deciding policies again for every later record.
    if (r.verdictReason !== VerdictReason.VERDICT_REASON_POLICY) continue;
    const a = r.attribution;
    if (a === undefined) continue;
    for (const [direction, isolated, allowedBy, isolatedBy, decidedBy, tierRules] of [
      ["egress", a.egressIsolated, a.egressAllowedBy, a.egressIsolatedBy, a.egressDecidedBy, a.egressTierRules],
      ["ingress", a.ingressIsolated, a.ingressAllowedBy, a.ingressIsolatedBy, a.ingressDecidedBy, a.ingressTierRules],
    ] as const) {
      // tierRules: "<tier> <policy> <rule>: <action>", the Admin tier's first match then the Baseline's.
      const matches = tierRules.map(parseTierRule).filter((t) => t !== undefined);
      const passedBy = matches.filter((t) => t.action === "Pass").map((t) => `${t.tier} ${t.policy} ${t.rule}`);
      const tierRule = decidedBy === "Admin" || decidedBy === "Baseline" ? matches.find((t) => t.tier === decidedBy && t.action !== "Pass") : undefined;
      if (tierRule !== undefined) {
        count(tierRule.policy, direction, tierRule.action === "Accept" ? "allowed" : "denied", tierRule.tier, tierRule.rule, passedBy);
      } else if (allowedBy.length > 0) for (const key of allowedBy) count(key, direction, "allowed", "NetworkPolicy", "", passedBy);
      else if (isolated) for (const key of isolatedBy) count(key, direction, "denied", "NetworkPolicy", "", passedBy);
    }
  }
  const decidedBy = [...counts.values()].sort((x, y) =>
    `${x.namespace}/${x.name}/${x.direction}/${x.decision}`.localeCompare(`${y.namespace}/${y.name}/${y.direction}/${y.decision}`));
  return { decidedBy, records, examined: examined.length, truncated };
}

/** "<tier> <policy> <rule>: <action>" (PolicyAttribution.*_tier_rules) taken apart; undefined for anything else. */
function parseTierRule(text: string): { tier: "Admin" | "Baseline"; policy: string; rule: string; action: string } | undefined {
  const m = /^(Admin|Baseline) (\S+) (.+): (Accept|Deny|Pass)$/.exec(text);
  if (!m) return undefined;
  return { tier: m[1] as "Admin" | "Baseline", policy: m[2] ?? "", rule: m[3] ?? "", action: m[4] ?? "" };
}

export function notFound(what: string, id: string, window: string): ApiError {
  return new ApiError(404, `${what} ${JSON.stringify(id)} is not on the map (no traffic in the last ${window})`);
}
