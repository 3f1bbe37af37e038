// `bulkhead observe`'s compact and table lines say why a flow was dropped (or would be, in
// audit): a forged source, or the side whose isolating policies had no rule for it.
import { describe, expect, it } from "vitest";
import { compact, denial } from "../cli/observe.js";
import { FlowRecord, ObservationPoint, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";

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
    const r = record({ verdict: Verdict.VERDICT_FORWARDED, attribution: { policyVersion: 1n, ingressIsolated: true, ingressAllowedBy: ["shop/db"], ingressIsolatedBy: [], egressIsolated: false, egressAllowedBy: [], egressIsolatedBy: [] } });
    expect(denial(r)).toBe("");
    expect(compact(r)).toMatch(/ -> shop\/datastore-0:6379 TCP FORWARDED 3 pkts 180 B$/);
  });

  it("names the side and the isolating policies of a policy drop", () => {
    const r = record({ verdict: Verdict.VERDICT_DROPPED, attribution: { policyVersion: 4n, ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db-allow", "shop/default-deny"], egressIsolated: false, egressAllowedBy: [], egressIsolatedBy: [] } });
    expect(compact(r)).toMatch(/ DROPPED \(policy denied: ingress isolated by shop\/db-allow, shop\/default-deny, no rule allows\) 3 pkts 180 B$/);
  });

  it("names both sides when neither allowed it, and says 'would' through AUDIT", () => {
    const r = record({ verdict: Verdict.VERDICT_AUDIT, attribution: { policyVersion: 4n, ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db"], egressIsolated: true, egressAllowedBy: [], egressIsolatedBy: ["shop/debug-egress"] } });
    expect(compact(r)).toContain(" AUDIT (policy denied: egress isolated by shop/debug-egress; ingress isolated by shop/db, no rule allows) ");
  });

  it("leaves out a side whose policies allowed it", () => {
    const r = record({ verdict: Verdict.VERDICT_DROPPED, attribution: { policyVersion: 4n, ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db"], egressIsolated: true, egressAllowedBy: ["shop/debug-egress"], egressIsolatedBy: [] } });
    expect(denial(r)).toBe("policy denied: ingress isolated by shop/db, no rule allows");
  });

  it("tells a packet of a denied connection and a forged source apart", () => {
    const attribution = { policyVersion: 4n, ingressIsolated: true, ingressAllowedBy: [], ingressIsolatedBy: ["shop/db"], egressIsolated: false, egressAllowedBy: [], egressIsolatedBy: [] };
    expect(denial(record({ verdict: Verdict.VERDICT_DROPPED, verdictReason: VerdictReason.VERDICT_REASON_ESTABLISHED, attribution })))
      .toBe("connection denied by policy: ingress isolated by shop/db, no rule allows");
    expect(denial(record({ verdict: Verdict.VERDICT_DROPPED, verdictReason: VerdictReason.VERDICT_REASON_SPOOFED, attribution })))
      .toBe("spoofed source address");
  });
});
