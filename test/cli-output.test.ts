// `bulkhead observe`'s compact and table lines say why a flow was dropped (or would be, in
// audit): a forged source, or the side whose isolating policies had no rule for it.
import { describe, expect, it } from "vitest";
import { compact, denial } from "../cli/observe.js";
import { FlowRecord, ObservationPoint, PolicyAttribution, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";

const attribution = (over: Partial<PolicyAttribution>) => PolicyAttribution.fromPartial({ policyVersion: 4n, ...over });
const record = (over: Partial<FlowRecord>) => FlowRecord.fromPartial({
  node: "node1", point: ObservationPoint.OBSERVATION_POINT_TO_POD, packets: 3n, bytes: 180n,
  startTime: { seconds: 1_700_000_000n, nanos: 0 },
  ip: { source: "10.0.1.5", destination: "10.0.2.7" },
  l4: { protocol: 6, protocolName: "TCP", sourcePort: 40000, destinationPort: 6379 },
  source: { ip: "10.0.1.5", namespace: "shop", podName: "debug" },
  destination: { ip: "10.0.2.7", namespace: "shop", podName: "datastore-0" },
  verdictReason: VerdictReason.VERDICT_REASON_POLICY,
  ...over,
});

describe("observe's reason for a drop", () => {
  it("says nothing more for a forwarded flow", () => {
    const r = record({ verdict: Verdict.VERDICT_FORWARDED, attribution: attribution({ ingressIsolated: true, ingressAllowedBy: ["shop/db"], ingressIsolatedBy: [], egressIsolated: false, egressAllowedBy: [], egressIsolatedBy: [] }) });
    expect(denial(r)).toBe("");
    expect(compact(r)).toMatch(/ -> shop\/datastore-0:6379 TCP FORWARDED 3 pkts 180 B$/);
  });

  it("names the side and the isolating policies of a policy drop", () => {
    const r = record({ verdict: Verdict.VERDICT_DROPPED, attribution: attribution({ ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db-allow", "shop/default-deny"], egressIsolated: false, egressAllowedBy: [], egressIsolatedBy: [] }) });
    expect(compact(r)).toMatch(/ DROPPED \(policy denied: ingress isolated by shop\/db-allow, shop\/default-deny, no rule allows\) 3 pkts 180 B$/);
  });

  it("names both sides when neither allowed it, and says 'would' through AUDIT", () => {
    const r = record({ verdict: Verdict.VERDICT_AUDIT, attribution: attribution({ ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db"], egressIsolated: true, egressAllowedBy: [], egressIsolatedBy: ["shop/debug-egress"] }) });
    expect(compact(r)).toContain(" AUDIT (policy denied: egress isolated by shop/debug-egress, no rule allows; ingress isolated by shop/db, no rule allows) ");
  });

  it("leaves out a side whose policies allowed it", () => {
    const r = record({ verdict: Verdict.VERDICT_DROPPED, attribution: attribution({ ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db"], egressIsolated: true, egressAllowedBy: ["shop/debug-egress"], egressIsolatedBy: [] }) });
    expect(denial(r)).toBe("policy denied: ingress isolated by shop/db, no rule allows");
  });

  it("tells a packet of a denied connection and a forged source apart", () => {
    const denied = attribution({ ingressIsolated: true, ingressIsolatedBy: ["shop/db"] });
    expect(denial(record({ verdict: Verdict.VERDICT_DROPPED, verdictReason: VerdictReason.VERDICT_REASON_ESTABLISHED, attribution: denied })))
      .toBe("connection denied by policy: ingress isolated by shop/db, no rule allows");
    expect(denial(record({ verdict: Verdict.VERDICT_DROPPED, verdictReason: VerdictReason.VERDICT_REASON_SPOOFED, attribution: denied })))
      .toBe("spoofed source address");
  });

  it("names the ClusterNetworkPolicy rule that denied it, also over a NetworkPolicy that would allow", () => {
    const r = record({ verdict: Verdict.VERDICT_DROPPED, attribution: attribution({
      ingressIsolated: true, ingressAllowedBy: ["shop/db"], ingressDecidedBy: "Admin", ingressTierRules: ["Admin deny-debug from-debug: Deny"],
      egressDecidedBy: "Baseline", egressTierRules: ["Admin platform defer: Pass", "Baseline zero-trust deny-all: Deny"],
    }) });
    expect(denial(r)).toBe("policy denied: egress denied by Baseline zero-trust deny-all; ingress denied by Admin deny-debug from-debug");
    const passed = record({ verdict: Verdict.VERDICT_DROPPED, attribution: attribution({
      ingressIsolated: true, ingressIsolatedBy: ["shop/db"], ingressDecidedBy: "NetworkPolicy", ingressTierRules: ["Admin platform defer: Pass"],
    }) });
    expect(denial(passed)).toBe("policy denied: ingress isolated by shop/db, no rule allows");
  });
});
