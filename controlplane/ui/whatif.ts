// The what-if overlay's API form: a draft POSTed by the browser becomes a PolicyWhatIfRequest
// over the view's range, and the answer a JSON the map can draw (edge ids as the map's,
// counts as numbers, each edge's change named). Suggestions likewise: each policy as the
// YAML the draft box takes, with the flows that justify each rule.
import { type Verdict, verdictToJSON } from "../../proto/gen/bulkhead/v1/flow.js";
import { stringify } from "yaml";
import type { PolicyWhatIfRequest, PolicyWhatIfResponse, SuggestPoliciesRequest, SuggestPoliciesResponse, WhatIfSide } from "../../proto/gen/bulkhead/v1/observer.js";
import { JUSTIFICATION_ANNOTATION, type RuleJustification } from "../policy/suggest.js";
import type { HistoryRange } from "./history.js";
import { ApiError } from "./params.js";
import { edgeId, msOf } from "./map-json.js";
import { timestampOfMs } from "../../config/time.js";

/** denied: the policies allowed it and the draft would not; allowed: the reverse; verdict: only what the datapath does changes (modes). */
export type WhatIfChange = "denied" | "allowed" | "verdict";

export interface WhatIfEdgeJson {
  /** The map's edge id: "<source>,<destination>,<protocol>,<port>". */
  id: string;
  source: string;
  destination: string;
  protocol: string;
  port: number;
  change: WhatIfChange;
  /** FORWARDED, AUDIT or DROPPED. */
  before: string;
  after: string;
  records: number;
  packets: number;
  firstSeen: number;
  lastSeen: number;
  /** What decides after the draft: rules that allow each side, or the policies that isolate it. */
  egress: WhatIfSideJson;
  ingress: WhatIfSideJson;
}

export interface WhatIfSideJson {
  allowed: boolean;
  allowedBy: string[];
  isolatedBy: string[];
  exemption: string;
}

export interface WhatIfJson {
  /** The range replayed: its name ("5m", "24h", or from/to) and bounds (Unix ms). */
  window: string;
  since: number;
  until: number;
  records: number;
  replayed: number;
  evaluated: number;
  breaks: boolean;
  notes: string[];
  edges: WhatIfEdgeJson[];
}

/** The draft text as one draft file; an empty one is refused here (parseDrafts names what is wrong in the rest). */
export function whatIfRequest(body: string, name: string, namespace: string, mode: string, range: HistoryRange): PolicyWhatIfRequest {
  if (body.trim() === "") throw new ApiError(400, "the draft is empty: paste or upload NetworkPolicy or ClusterNetworkPolicy YAML");
  return { drafts: [{ name, content: body }], namespace, mode, since: timestampOfMs(range.sinceMs), until: timestampOfMs(range.untilMs) };
}

function sideJson(s: WhatIfSide | undefined): WhatIfSideJson {
  return { allowed: s?.allowed ?? false, allowedBy: s?.allowedBy ?? [], isolatedBy: s?.isolatedBy ?? [], exemption: s?.exemption ?? "" };
}

const outcome = (v: Verdict) => verdictToJSON(v).replace("VERDICT_", "");

export function whatIfJson(r: PolicyWhatIfResponse, window: string): WhatIfJson {
  return {
    window, since: msOf(r.since), until: msOf(r.until), records: Number(r.records), replayed: Number(r.replayed), evaluated: Number(r.evaluated),
    breaks: r.breaks, notes: r.notes,
    edges: r.edges.map((e) => ({
      id: edgeId(e), source: e.source, destination: e.destination, protocol: e.protocol, port: e.port,
      change: e.allowedBefore && !e.allowedAfter ? "denied" : !e.allowedBefore && e.allowedAfter ? "allowed" : "verdict",
      before: outcome(e.before), after: outcome(e.after), records: Number(e.records), packets: Number(e.packets),
      firstSeen: msOf(e.firstSeen), lastSeen: msOf(e.lastSeen), egress: sideJson(e.egress), ingress: sideJson(e.ingress),
    })),
  };
}

export interface SuggestedPolicyJson {
  name: string;
  namespace: string;
  /** The manifest as YAML (one document), ready to load as a draft. */
  yaml: string;
  /** Per rule, the flows that justify it (its `bulkhead.io/justification` annotation). */
  justification: RuleJustification[];
}

export interface SuggestionsJson {
  namespace: string;
  window: string;
  since: number;
  until: number;
  records: number;
  notes: string[];
  policies: SuggestedPolicyJson[];
}

export function suggestRequest(namespace: string, range: HistoryRange): SuggestPoliciesRequest {
  if (namespace === "") throw new ApiError(400, "parameter namespace: required (suggestions are for one namespace)");
  return { namespace, since: timestampOfMs(range.sinceMs), until: timestampOfMs(range.untilMs), minPrefixV4: 0, minPrefixV6: 0 };
}

export function suggestionsJson(r: SuggestPoliciesResponse, namespace: string, window: string): SuggestionsJson {
  return {
    namespace, window, since: msOf(r.since), until: msOf(r.until), records: Number(r.records), notes: r.notes,
    policies: r.policies.map((text) => {
      const manifest = JSON.parse(text) as { metadata: { name: string; namespace: string; annotations?: Record<string, string> } };
      const justification = manifest.metadata.annotations?.[JUSTIFICATION_ANNOTATION];
      return {
        name: manifest.metadata.name, namespace: manifest.metadata.namespace, yaml: stringify(manifest),
        justification: justification === undefined ? [] : JSON.parse(justification) as RuleJustification[],
      };
    }),
  };
}
