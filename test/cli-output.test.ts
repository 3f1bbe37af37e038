// `bulkhead observe`'s compact and table lines say why a flow was dropped (or would be, in
// audit): a forged source, or the side whose isolating policies had no rule for it. Every
// command's -o is read the same way; yaml carries the json format's schema; people's times
// are local with the UTC offset.
import { afterEach, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { compact, denial, flowTable } from "../cli/observe.js";
import { localTime, outputFormat, yamlDocument } from "../cli/output.js";
import { ConfigError } from "../config/flags.js";
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

describe("-o/--output", () => {
  const tz = process.env.TZ;
  afterEach(() => {
    if (tz === undefined) delete process.env.TZ; else process.env.TZ = tz;
  });

  it("defaults to the first format and names the command and every choice for another", () => {
    expect(outputFormat("map", undefined, ["table", "json", "yaml", "dot"])).toBe("table");
    expect(outputFormat("map", "yaml", ["table", "json", "yaml", "dot"])).toBe("yaml");
    expect(() => outputFormat("map", "xml", ["table", "json", "yaml", "dot"])).toThrow(ConfigError);
    expect(() => outputFormat("map", "xml", ["table", "json", "yaml", "dot"])).toThrow('map: -o/--output: "xml" is not one of table, json, yaml, dot');
  });

  it("yaml: one document per value, each equal to the json format's", () => {
    const records = [record({ verdict: Verdict.VERDICT_FORWARDED }), record({ verdict: Verdict.VERDICT_DROPPED, node: "node: 2 # not a comment" })];
    const json = records.map((r) => FlowRecord.toJSON(r));
    const docs = parseAllDocuments(records.map((r) => yamlDocument(FlowRecord.toJSON(r))).join(""));
    expect(Array.isArray(docs) && docs.map((d) => d.toJS() as unknown)).toEqual(JSON.parse(JSON.stringify(json)));
  });

  it("people's time: local, to the millisecond, with the UTC offset", () => {
    const at = Date.UTC(2026, 11, 2, 15, 4, 5, 123);
    process.env.TZ = "UTC";
    expect(localTime(at)).toBe("2026-12-02 15:04:05.123 +00:00");
    process.env.TZ = "Europe/Berlin";
    expect(localTime(at)).toBe("2026-12-02 16:04:05.123 +01:00");
    process.env.TZ = "America/St_Johns";
    expect(localTime(at)).toBe("2026-12-02 11:34:05.123 -03:30");
  });

  it("observe -o wide adds interface, addresses, TCP flags and the allowing policies to the table's columns", () => {
    process.env.TZ = "UTC";
    const r = record({
      verdict: Verdict.VERDICT_FORWARDED, interface: "lxc1234", endTime: { seconds: 1_700_000_000n, nanos: 5_000_000 },
      l4: { protocol: 6, protocolName: "TCP", sourcePort: 40000, destinationPort: 6379, tcpFlags: { syn: true, ack: true, fin: false, rst: false, psh: false, urg: false, ece: false, cwr: false }, icmpType: 0, icmpCode: 0 },
      attribution: attribution({ ingressIsolated: true, ingressAllowedBy: ["shop/db"], egressAllowedBy: ["shop/egress", "shop/db"] }),
    });
    const [head, row] = flowTable([r], true).trimEnd().split("\n").map((line) => line.split(/ {2,}/));
    expect(head).toEqual(["TIME", "NODE", "POINT", "INTERFACE", "SOURCE", "SOURCE IP", "DESTINATION", "DESTINATION IP", "PROTO", "FLAGS",
      "VERDICT", "PACKETS", "BYTES", "ALLOWED BY", "DENIED"]);
    expect(row).toEqual(["2023-11-14 22:13:20.005 +00:00", "node1", "to-pod", "lxc1234", "shop/debug:40000", "10.0.1.5", "shop/datastore-0:6379", "10.0.2.7",
      "TCP", "SYN,ACK", "FORWARDED", "3", "180", "shop/egress,shop/db"]);
    const [narrowHead] = flowTable([r], false).split("\n");
    expect(narrowHead!.split(/ {2,}/)).toEqual(["TIME", "NODE", "POINT", "SOURCE", "DESTINATION", "PROTO", "VERDICT", "PACKETS", "BYTES", "DENIED"]);
  });
});
