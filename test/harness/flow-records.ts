// Flow records and parsed cluster objects for the tests: enriched ones for the policy replay
// tests (what-if, suggest), with ends as the enricher names them; and agentRecord, a record
// as an agent sends it, for tests that feed a control plane.
import { IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason, type Endpoint, type FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { parseKubeObject, type Namespace, type NetworkPolicy, type Pod } from "../../controlplane/metadata/objects.js";

export function endpoint(fields: Partial<Endpoint>): Endpoint {
  return { ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false, ...fields };
}

export function podEnd(namespace: string, name: string, ip: string, labels: Record<string, string>, workload = name.replace(/-[0-9]+$/, "")): Endpoint {
  return endpoint({ ip, namespace, podName: name, podUid: `uid-${name}`, labels, workloadKind: "Deployment", workloadName: workload, node: "n1" });
}

let sequence = 0n;
export function flow(src: Endpoint, dst: Endpoint, opts: {
  point?: "from" | "to"; port?: number; sport?: number; protocol?: number; packets?: number; endMs?: number; reason?: VerdictReason; srcIp?: string; dstIp?: string;
  verdict?: Verdict;
} = {}): FlowRecord {
  const endMs = opts.endMs ?? 1_700_000_000_000;
  const point = opts.point === "from" ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD;
  const protocol = opts.protocol ?? 6;
  return {
    startTime: { seconds: BigInt(Math.floor(endMs / 1000) - 1), nanos: 0 },
    endTime: { seconds: BigInt(Math.floor(endMs / 1000)), nanos: 0 },
    node: "n1", point, reporter: opts.point === "from" ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
    interface: "veth", ifindex: 1,
    ip: { source: opts.srcIp ?? src.ip, destination: opts.dstIp ?? dst.ip, version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol, protocolName: protocol === 6 ? "TCP" : protocol === 17 ? "UDP" : "ICMPv4", sourcePort: opts.sport ?? 40000, destinationPort: opts.port ?? 80,
      tcpFlags: undefined, icmpType: 0, icmpCode: 0 },
    packets: BigInt(opts.packets ?? 10), bytes: 1000n, source: src, destination: dst,
    verdict: opts.verdict ?? Verdict.VERDICT_FORWARDED, verdictReason: opts.reason ?? VerdictReason.VERDICT_REASON_UNSPECIFIED, attribution: undefined, sequence: sequence++,
  };
}

let agentSequence = 0n;

/**
 * A record as an agent sends it: addresses only (the control plane names the ends), one TCP
 * (or UDP) connection's packets at one veth, judged by policy. Each call takes the next sequence
 * number; `sport: "vary"` gives each record its own source port (its own connection).
 */
export function agentRecord(src: string, dst: string, dport: number, opts: {
  verdict?: Verdict; point?: "from" | "to"; node?: string; packets?: number; bytes?: number; sport?: number | "vary"; protocol?: "TCP" | "UDP";
  endMs?: number; durationMs?: number; ifindex?: number; reason?: VerdictReason;
} = {}): FlowRecord {
  const endMs = opts.endMs ?? Date.now();
  const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
  const sequence = ++agentSequence;
  const from = (opts.point ?? "from") === "from";
  return {
    startTime: ts(endMs - (opts.durationMs ?? 500)), endTime: ts(endMs), node: opts.node ?? "node1",
    point: from ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD,
    reporter: from ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION, interface: "veth", ifindex: opts.ifindex ?? 7,
    ip: { source: src, destination: dst, version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: opts.protocol === "UDP" ? 17 : 6, protocolName: opts.protocol ?? "TCP", sourcePort: opts.sport === "vary" ? 40_000 + Number(sequence % 20_000n) : opts.sport ?? 40_000,
      destinationPort: dport, tcpFlags: undefined, icmpType: 0, icmpCode: 0 },
    packets: BigInt(opts.packets ?? 4), bytes: BigInt(opts.bytes ?? 100 * (opts.packets ?? 4)), source: undefined, destination: undefined,
    verdict: opts.verdict ?? Verdict.VERDICT_FORWARDED, verdictReason: opts.reason ?? VerdictReason.VERDICT_REASON_POLICY, attribution: undefined, sequence,
  };
}

export function ns(name: string, mode: string, labels: Record<string, string> = {}): Namespace {
  return parseKubeObject({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels, annotations: { "bulkhead.io/mode": mode } } }) as Namespace;
}

export function pod(namespace: string, name: string, ip: string, labels: Record<string, string>, ports: object[] = []): Pod {
  return parseKubeObject({ apiVersion: "v1", kind: "Pod", metadata: { name, namespace, uid: `uid-${name}`, labels },
    spec: { nodeName: "n1", containers: [{ name: "c", ports }] }, status: { phase: "Running", podIP: ip, podIPs: [{ ip }] } }) as Pod;
}

export function policy(namespace: string, name: string, spec: object): NetworkPolicy {
  return parseKubeObject({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace }, spec }) as NetworkPolicy;
}

