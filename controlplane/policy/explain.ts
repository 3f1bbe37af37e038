// `bulkhead policy explain`: why one connection is allowed or denied, answered by the policy
// model (model.ts) — the evaluator the compiled snapshot is proved against and the
// conformance suite runs on the real datapath — so the answer is the datapath's.
//
// A connection is judged on both ends: the source pod's egress and the destination pod's
// ingress, each under its own namespace's mode. A denied side drops the packet when its
// namespace enforces, marks it AUDIT when it audits, and only observes otherwise; the
// outcome is the strongest of the two (DROPPED > AUDIT > FORWARDED).
import type { Protocol } from "../metadata/objects.js";
import type { Peer, PolicyModeName, ResolvedPeer, SideVerdict, TierRuleMatch, Verdict } from "./model.js";
import type { PolicyModel } from "./model.js";

export type Outcome = "FORWARDED" | "AUDIT" | "DROPPED";

export interface ExplainQuery {
  from: Peer;
  to: Peer;
  /** A name, or an IANA number (what-if replays ICMP and others: only rules without ports match them). */
  protocol: Protocol | number;
  port: number;
}

export interface SideExplanation extends SideVerdict {
  /** The pod this side's policies select ("namespace/name"), or "" for a host or world end. */
  subject: string;
  /** Its namespace's mode; undefined for a host or world end (never judged). */
  mode: PolicyModeName | undefined;
}

export interface Explanation {
  from: string;
  to: string;
  protocol: Protocol | number;
  port: number;
  egress: SideExplanation;
  ingress: SideExplanation;
  /** Both sides allow it. */
  allowed: boolean;
  /** What the datapath does with the namespaces' modes as they are. */
  outcome: Outcome;
  /** What it would do if both namespaces were in each mode. */
  perMode: Record<PolicyModeName, Outcome>;
}

const RANK: Record<Outcome, number> = { FORWARDED: 0, AUDIT: 1, DROPPED: 2 };
const OF_MODE: Record<PolicyModeName, Outcome> = { observe: "FORWARDED", audit: "AUDIT", enforce: "DROPPED" };

function describe(end: ResolvedPeer): string {
  switch (end.kind) {
    case "pod": return `${end.pod.namespace}/${end.pod.name}${end.ip === undefined ? "" : ` (${end.ip})`}`;
    case "host": return `node ${end.node}${end.ip === undefined ? "" : ` (${end.ip})`}`;
    case "world": return `${end.ip} (outside the cluster)`;
  }
}

/**
 * What the datapath does with a verdict: each denied side drops in enforce, marks AUDIT in
 * audit, passes in observe, under its pod's namespace mode (`mode` for every namespace
 * when given); host and outside ends are never judged. The strongest side wins.
 */
export function outcomeOf(model: PolicyModel, verdict: Verdict, mode?: PolicyModeName): Outcome {
  return outcomeOfSides(model, verdict.egress.allowed, verdict.src, verdict.ingress.allowed, verdict.dst, mode);
}

/** The same from each side's allowed bit (class-verdicts.ts gives only those). */
export function outcomeOfSides(model: PolicyModel, egressAllowed: boolean, src: ResolvedPeer, ingressAllowed: boolean, dst: ResolvedPeer, mode?: PolicyModeName): Outcome {
  let outcome: Outcome = "FORWARDED";
  for (const [allowed, end] of [[egressAllowed, src], [ingressAllowed, dst]] as const) {
    if (allowed || end.kind !== "pod") continue;
    const o = OF_MODE[mode ?? model.modeOf(end.pod.namespace)];
    if (RANK[o] > RANK[outcome]) outcome = o;
  }
  return outcome;
}

/** Throws, naming the end, when a pod is unknown or an address is not one. */
export function explain(model: PolicyModel, query: ExplainQuery): Explanation {
  const verdict = model.evaluate({ src: query.from, dst: query.to, protocol: query.protocol, port: query.port });
  const side = (v: SideVerdict, end: ResolvedPeer): SideExplanation => end.kind === "pod"
    ? { ...v, subject: `${end.pod.namespace}/${end.pod.name}`, mode: model.modeOf(end.pod.namespace) }
    : { ...v, subject: "", mode: undefined };
  const egress = side(verdict.egress, verdict.src);
  const ingress = side(verdict.ingress, verdict.dst);
  const outcomeWith = (modeOf: (s: SideExplanation) => PolicyModeName | undefined): Outcome => {
    let outcome: Outcome = "FORWARDED";
    for (const s of [egress, ingress]) {
      const mode = modeOf(s);
      if (!s.allowed && mode !== undefined && RANK[OF_MODE[mode]] > RANK[outcome]) outcome = OF_MODE[mode];
    }
    return outcome;
  };
  return {
    from: describe(verdict.src),
    to: describe(verdict.dst),
    protocol: query.protocol,
    port: query.port,
    egress,
    ingress,
    allowed: verdict.allowed,
    outcome: outcomeWith((s) => s.mode),
    perMode: {
      observe: outcomeWith((s) => (s.mode === undefined ? undefined : "observe")),
      audit: outcomeWith((s) => (s.mode === undefined ? undefined : "audit")),
      enforce: outcomeWith((s) => (s.mode === undefined ? undefined : "enforce")),
    },
  };
}

/** The explanation for people: one block per side, then the outcome. */
export function formatExplanation(e: Explanation): string {
  const lines = [`${e.from} → ${e.to} ${e.port}/${e.protocol}`];
  for (const [name, s] of [["egress of the source", e.egress], ["ingress of the destination", e.ingress]] as const) {
    lines.push("", `${name}${s.subject === "" ? "" : ` ${s.subject} (namespace mode ${s.mode})`}:`);
    const tier = (m: TierRuleMatch) => `  ${m.tier} tier: ClusterNetworkPolicy ${m.policy} (priority ${m.priority}), rule ${m.rule}: ${m.action}`
      + (m.action === "Pass" ? (m.tier === "Admin" ? " (skips the rest of the Admin tier)" : " (ends evaluation)") : " (final)");
    if (s.subject === "") lines.push("  not a pod: no policy applies");
    else {
      if (s.admin) lines.push(tier(s.admin));
      if (s.decidedBy === "Admin") {
        // The Admin tier decided: NetworkPolicy and Baseline were not consulted.
      } else if (!s.isolated) {
        lines.push(s.baseline ? "  not isolated: no NetworkPolicy selects it for this direction"
          : "  not isolated: no NetworkPolicy selects it for this direction, so everything is allowed");
        if (s.baseline) lines.push(tier(s.baseline));
      } else {
        lines.push(`  isolated by ${s.isolatedBy.join(", ")}`);
        lines.push(s.allowingRules.length > 0 ? `  allowed by ${s.allowingRules.join(", ")}` : "  no rule of those policies allows it");
      }
    }
    if (s.exemption !== undefined) lines.push(`  allowed whatever the policies say: ${s.exemption === "self" ? "traffic of a pod to itself" : "traffic between a pod and a node"}`);
  }
  lines.push("", `verdict: ${e.allowed ? "allowed" : "denied"}; the datapath: ${e.outcome}`
    + ` (if both namespaces were observe: ${e.perMode.observe}, audit: ${e.perMode.audit}, enforce: ${e.perMode.enforce})`);
  return `${lines.join("\n")}\n`;
}
