// The Observer API's policy requests, PolicyWhatIf and SuggestPolicies, over the control
// plane's recorded flows (hot window and durable store) and its cluster state; observer.ts
// authenticates and maps PolicyRequestError to gRPC statuses.
//
// Scope: a namespace-scoped token replays and learns only from flows with an end in its
// namespaces, may name only those namespaces, and may draft only their policies.
import { msOfTimestamp, timestampOfMs } from "../config/time.js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import type {
  PolicyWhatIfRequest, PolicyWhatIfResponse, SuggestPoliciesRequest, SuggestPoliciesResponse, WhatIfSide,
} from "../proto/gen/bulkhead/v1/observer.js";
import type { Timestamp } from "../proto/gen/google/protobuf/timestamp.js";
import { type AccessError, flowInScope, requireCluster, requireNamespace, type Scope } from "./access/scope.js";
import type { ControlPlane } from "./controlplane.js";
import { applyClusterDraft, applyDraft, DraftError, draftIsClusterWide, draftNamespaces, parseDrafts } from "./policy/draft.js";
import { POLICY_MODES, type PolicyModeName } from "./policy/model.js";
import { FlowReplay, type DecidingSide, type Outcome } from "./policy/whatif.js";
import { PolicySuggester, policyManifest } from "./policy/suggest.js";
import { isNamespaceName } from "../kubernetes/names.js";

/** A request refused: `invalid` (INVALID_ARGUMENT) or `denied` (PERMISSION_DENIED). */
export class PolicyRequestError extends Error {
  constructor(readonly kind: "invalid" | "denied", message: string) {
    super(message);
    this.name = "PolicyRequestError";
  }
}

export const DEFAULT_RANGE_MS = 24 * 3600_000;

const VERDICT_OF: Record<Outcome, Verdict> = {
  FORWARDED: Verdict.VERDICT_FORWARDED, AUDIT: Verdict.VERDICT_AUDIT, DROPPED: Verdict.VERDICT_DROPPED,
};

function denied(err: AccessError | undefined): void {
  if (err) throw new PolicyRequestError("denied", err.message);
}

/** The range asked for, defaulting to the last 24 h. */
function rangeOf(cp: ControlPlane, since: Timestamp | undefined, until: Timestamp | undefined): { sinceMs: number; untilMs: number } {
  const untilMs = msOfTimestamp(until) ?? cp.now();
  const sinceMs = msOfTimestamp(since) ?? untilMs - DEFAULT_RANGE_MS;
  if (sinceMs > untilMs) throw new PolicyRequestError("invalid", "since is after until");
  return { sinceMs, untilMs };
}

/** The recorded flows in range that the scope (and the namespace asked about, if any) may see. */
function flowQuery(scope: Scope, namespace: string, sinceMs: number, untilMs: number) {
  const only: Scope | undefined = namespace === "" ? undefined : { kind: "namespaces", subject: "", namespaces: new Set([namespace]) };
  const predicate = (r: FlowRecord) => flowInScope(scope, r) && (only === undefined || flowInScope(only, r));
  return { predicate, allow: [], deny: [], since: timestampOfMs(sinceMs), until: timestampOfMs(untilMs) };
}

function checkNamespace(scope: Scope, namespace: string, required: boolean): void {
  if (namespace === "") {
    if (required) throw new PolicyRequestError("invalid", "namespace: required");
    return;
  }
  if (!isNamespaceName(namespace)) throw new PolicyRequestError("invalid", `namespace "${namespace}" is not a valid namespace name`);
  denied(requireNamespace(scope, namespace));
}

function side(s: DecidingSide): WhatIfSide {
  return { allowed: s.allowed, allowedBy: s.allowedBy, isolatedBy: s.isolatedBy, exemption: s.exemption ?? "" };
}

export async function policyWhatIf(cp: ControlPlane, scope: Scope, req: PolicyWhatIfRequest): Promise<PolicyWhatIfResponse> {
  checkNamespace(scope, req.namespace, false);
  if (req.mode !== "" && !(POLICY_MODES as readonly string[]).includes(req.mode)) {
    throw new PolicyRequestError("invalid", `mode: expected one of ${POLICY_MODES.join(", ")}, got "${req.mode}"`);
  }
  const { sinceMs, untilMs } = rangeOf(cp, req.since, req.until);
  let draft, after, clusterAfter;
  const active = cp.state.networkPolicies();
  const clusterBefore = cp.state.clusterNetworkPolicies();
  try {
    draft = parseDrafts(req.drafts);
    after = applyDraft(active, draft);
    clusterAfter = applyClusterDraft(clusterBefore, draft);
  } catch (err) {
    if (err instanceof DraftError) throw new PolicyRequestError("invalid", `bad draft, nothing replayed:\n${err.message}`);
    throw err;
  }
  if (draftIsClusterWide(draft)) {
    const refused = requireCluster(scope, "ClusterNetworkPolicy");
    if (refused) throw new PolicyRequestError("denied", `the draft changes ClusterNetworkPolicies: ${refused.message}`);
  }
  for (const ns of [...draftNamespaces(draft)].sort()) {
    const refused = requireNamespace(scope, ns);
    if (refused) throw new PolicyRequestError("denied", `the draft changes policies of namespace ${ns}: ${refused.message}`);
  }
  const cluster = { namespaces: cp.state.namespaces(), pods: cp.state.pods() };
  const replay = new FlowReplay(cluster, [...active, ...after], [...clusterBefore, ...clusterAfter]);
  // The store's records one by one, then the hot window from the history's columns (no record built per match).
  const { history, hot, stored } = cp.flowsToScan(flowQuery(scope, req.namespace, sinceMs, untilMs));
  if (stored !== undefined) for await (const chunk of stored) for (const r of chunk) replay.add(r);
  replay.addStored(history, hot);
  const report = replay.report({ before: active, after, clusterBefore, clusterAfter }, {
    defaultMode: cp.defaultMode, ...(req.mode !== "" ? { mode: req.mode as PolicyModeName } : {}),
  });
  return {
    edges: report.edges.map((e) => ({
      source: e.source, destination: e.destination, protocol: e.protocol, port: e.port,
      before: VERDICT_OF[e.before], after: VERDICT_OF[e.after], allowedBefore: e.allowedBefore, allowedAfter: e.allowedAfter,
      records: BigInt(e.records), packets: BigInt(e.packets), firstSeen: timestampOfMs(e.firstSeenMs), lastSeen: timestampOfMs(e.lastSeenMs),
      egress: side(e.egress), ingress: side(e.ingress),
    })),
    records: BigInt(report.records), replayed: BigInt(report.replayed), evaluated: BigInt(report.evaluated),
    breaks: report.breaks, notes: report.notes, since: timestampOfMs(sinceMs), until: timestampOfMs(untilMs),
  };
}


export async function policySuggestions(cp: ControlPlane, scope: Scope, req: SuggestPoliciesRequest): Promise<SuggestPoliciesResponse> {
  checkNamespace(scope, req.namespace, true);
  const { sinceMs, untilMs } = rangeOf(cp, req.since, req.until);
  for (const [field, value, max] of [["min_prefix_v4", req.minPrefixV4, 32], ["min_prefix_v6", req.minPrefixV6, 128]] as const) {
    if (value > max) throw new PolicyRequestError("invalid", `${field}: ${value} is not a prefix length 0-${max}`);
  }
  const suggester = new PolicySuggester({
    namespace: req.namespace, cluster: { pods: cp.state.pods(), namespaces: cp.state.namespaces() },
    minPrefixV4: req.minPrefixV4 || 24, minPrefixV6: req.minPrefixV6 || 64,
  });
  // The store's records one by one, then the hot window from the history's columns (no record built per match).
  const { history, hot, stored } = cp.flowsToScan(flowQuery(scope, req.namespace, sinceMs, untilMs));
  let records = 0;
  if (stored !== undefined) for await (const chunk of stored) for (const r of chunk) { records++; suggester.add(r); }
  records += suggester.addStored(history, hot);
  const result = suggester.suggest();
  return {
    policies: result.policies.map((p) => JSON.stringify(policyManifest(p))), records: BigInt(records), notes: result.notes,
    since: timestampOfMs(sinceMs), until: timestampOfMs(untilMs),
  };
}
