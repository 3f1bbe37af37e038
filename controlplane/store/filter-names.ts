// The filter names of `bulkhead observe` (its long flags) and of the web UI's `flows` query
// parameters, mapped to one FlowFilter: both callers use this one table, so a name means
// the same thing on the command line and in a URL.
//
// Values are checked here only as far as the name alone decides (a port is a number, a
// verdict is one of three); compileFilter() checks the rest (CIDRs, selectors, pod names).
import { Verdict, verdictFromJSON } from "../../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter, TrafficDirection } from "../../proto/gen/bulkhead/v1/observer.js";

/** A filter value the name alone rules out; callers say "--name" or "parameter name". */
export class FilterNameError extends Error {
  constructor(readonly parameter: string, readonly value: string, readonly problem: string) {
    super(`${parameter}: "${value}" ${problem}`);
    this.name = "FilterNameError";
  }
}

type StringField =
  | "namespace" | "pod" | "sourcePod" | "destinationPod" | "label" | "sourceLabel" | "destinationLabel"
  | "workload" | "sourceWorkload" | "destinationWorkload" | "service" | "sourceService" | "destinationService"
  | "ip" | "sourceIp" | "destinationIp" | "node";
type PortField = "port" | "sourcePort" | "destinationPort";

type Mapping =
  | { kind: "string"; field: StringField; scoped?: boolean }
  | { kind: "port"; field: PortField }
  | { kind: "protocol" }
  | { kind: "verdict" }
  | { kind: "direction" };

/** Every filter name, in the order `bulkhead observe --help` lists them. */
const MAPPINGS: ReadonlyMap<string, Mapping> = new Map<string, Mapping>([
  ["namespace", { kind: "string", field: "namespace" }],
  ["pod", { kind: "string", field: "pod", scoped: true }],
  ["from-pod", { kind: "string", field: "sourcePod", scoped: true }],
  ["to-pod", { kind: "string", field: "destinationPod", scoped: true }],
  ["label", { kind: "string", field: "label" }],
  ["from-label", { kind: "string", field: "sourceLabel" }],
  ["to-label", { kind: "string", field: "destinationLabel" }],
  ["workload", { kind: "string", field: "workload", scoped: true }],
  ["from-workload", { kind: "string", field: "sourceWorkload", scoped: true }],
  ["to-workload", { kind: "string", field: "destinationWorkload", scoped: true }],
  ["service", { kind: "string", field: "service", scoped: true }],
  ["from-service", { kind: "string", field: "sourceService", scoped: true }],
  ["to-service", { kind: "string", field: "destinationService", scoped: true }],
  ["ip", { kind: "string", field: "ip" }],
  ["from-ip", { kind: "string", field: "sourceIp" }],
  ["to-ip", { kind: "string", field: "destinationIp" }],
  ["verdict", { kind: "verdict" }],
  ["protocol", { kind: "protocol" }],
  ["port", { kind: "port", field: "port" }],
  ["from-port", { kind: "port", field: "sourcePort" }],
  ["to-port", { kind: "port", field: "destinationPort" }],
  ["node", { kind: "string", field: "node" }],
  ["direction", { kind: "direction" }],
]);

/** The filter names: observe's long flags (each takes a value and may repeat) and the flows endpoint's parameters. */
export const FILTER_NAMES: readonly string[] = [...MAPPINGS.keys()];

export function isFilterName(name: string): boolean {
  return MAPPINGS.has(name);
}

const PROTOCOLS = ["TCP", "UDP", "SCTP", "ICMPV4", "ICMPV6", "ICMP"];

/**
 * One FlowFilter from (name, value) pairs; a name given twice matches either value.
 * A bare pod, workload or service name with exactly one namespace names an object in it.
 * Throws FilterNameError for an unknown name or a value the name rules out.
 */
export function flowFilterOf(pairs: Iterable<readonly [string, string]>): FlowFilter {
  const filter = FlowFilter.fromPartial({});
  const scopedValues: { field: StringField; value: string }[] = [];
  for (const [name, value] of pairs) {
    const mapping = MAPPINGS.get(name);
    if (mapping === undefined) throw new FilterNameError(name, value, `is not a filter (known: ${FILTER_NAMES.join(", ")})`);
    switch (mapping.kind) {
      case "string":
        if (mapping.scoped) scopedValues.push({ field: mapping.field, value });
        else filter[mapping.field].push(value);
        break;
      case "port":
        if (!/^[0-9]+$/.test(value) || Number(value) > 65535) throw new FilterNameError(name, value, "is not a port number");
        filter[mapping.field].push(Number(value));
        break;
      case "verdict": {
        const verdict = verdictFromJSON(`VERDICT_${value.toUpperCase()}`);
        if (verdict === Verdict.UNRECOGNIZED || verdict === Verdict.VERDICT_UNSPECIFIED) {
          throw new FilterNameError(name, value, "is not FORWARDED, DROPPED or AUDIT");
        }
        filter.verdict.push(verdict);
        break;
      }
      case "protocol":
        if (!PROTOCOLS.includes(value.toUpperCase())) throw new FilterNameError(name, value, "is not one of TCP, UDP, SCTP, ICMPv4, ICMPv6");
        filter.protocol.push(value.toUpperCase() === "ICMP" ? "ICMPv4" : value);
        break;
      case "direction":
        if (value.toLowerCase() === "ingress") filter.direction.push(TrafficDirection.TRAFFIC_DIRECTION_INGRESS);
        else if (value.toLowerCase() === "egress") filter.direction.push(TrafficDirection.TRAFFIC_DIRECTION_EGRESS);
        else throw new FilterNameError(name, value, "is not ingress or egress");
        break;
    }
  }
  const only = filter.namespace.length === 1 ? filter.namespace[0] : undefined;
  for (const { field, value } of scopedValues) {
    filter[field].push(value.includes("/") || only === undefined ? value : `${only}/${value}`);
  }
  return filter;
}

/** Whether a filter has no field set (matches every flow). */
export function isEmptyFilter(filter: FlowFilter): boolean {
  return JSON.stringify(FlowFilter.toJSON(filter)) === "{}";
}
