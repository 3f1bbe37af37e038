// Decodes the kernel's flow map entries (native/bpf/endpoint.h) into FlowRecords
// (proto/bulkhead/v1/flow.proto). Offsets and enum values come from native/gen/abi.ts,
// generated from the compiled object's BTF; this file only names them for the agent.
import {
  type FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason, type TcpFlags,
} from "../proto/gen/bulkhead/v1/flow.js";
import { formatIPv6Groups } from "../addresses/ip.js";
import {
  BH_C_CT_CONFIRMED, BH_C_CT_CREATED, BH_C_CT_FULL, BH_C_CT_LOST, BH_C_CT_REJUDGED, BH_C_ICMP_RELATED, BH_C_MAP_FULL_BYTES,
  BH_C_MAP_FULL_PACKETS, BH_C_MAX, BH_C_NEW_FLOWS, BH_C_NOT_IP, BH_C_PACKETS, BH_C_RING_FULL, BH_C_UNJUDGED, BH_POINT_FROM_POD, BH_POINT_TO_POD,
  BH_REASON_ESTABLISHED, BH_REASON_NONE, BH_REASON_POLICY, BH_REASON_SPOOFED, BH_U_ETHERTYPE, BH_U_FRAGMENT, BH_U_IPV4,
  BH_U_IPV6, BH_U_IPV6_EXT, BH_U_L2, BH_U_L4, BH_U_MAX, BH_U_VLAN, BH_VERDICT_AUDIT, BH_VERDICT_DROPPED,
  BH_VERDICT_FORWARDED, bh_flow_key, bh_flow_value,
} from "../native/gen/abi.js";

/** The per-CPU `counters` the agent reports (enum bh_counter), by report name. */
export const COUNTER = {
  packets: BH_C_PACKETS, notIp: BH_C_NOT_IP, newFlows: BH_C_NEW_FLOWS, mapFullPackets: BH_C_MAP_FULL_PACKETS, mapFullBytes: BH_C_MAP_FULL_BYTES,
  ringFull: BH_C_RING_FULL, ctFull: BH_C_CT_FULL, ctCreated: BH_C_CT_CREATED, ctConfirmed: BH_C_CT_CONFIRMED,
  ctLost: BH_C_CT_LOST, ctRejudged: BH_C_CT_REJUDGED, icmpRelated: BH_C_ICMP_RELATED,
} as const;

/** Why a frame could not be judged (enum bh_unjudged): the `cause` label, in enum order. */
const UNJUDGED_CAUSE = {
  l2: BH_U_L2, vlan: BH_U_VLAN, ethertype: BH_U_ETHERTYPE, ipv4: BH_U_IPV4, ipv6: BH_U_IPV6, ipv6_ext: BH_U_IPV6_EXT,
  l4: BH_U_L4, fragment: BH_U_FRAGMENT,
} as const;
export type UnjudgedCause = keyof typeof UNJUDGED_CAUSE;
export const UNJUDGED_CAUSES = Object.keys(UNJUDGED_CAUSE) as readonly UnjudgedCause[];
/** What an unjudged frame got (enum bh_verdict): the `verdict` label. */
const UNJUDGED_VERDICT = { forwarded: BH_VERDICT_FORWARDED, dropped: BH_VERDICT_DROPPED, audit: BH_VERDICT_AUDIT } as const;
export type UnjudgedVerdict = keyof typeof UNJUDGED_VERDICT;
export const UNJUDGED_VERDICTS = Object.keys(UNJUDGED_VERDICT) as readonly UnjudgedVerdict[];

/** The counter index of unjudged frames with this verdict and cause (BH_C_UNJUDGED +
 * verdict * BH_U_MAX + cause, as endpoint.h lays them out). */
export function unjudgedCounter(verdict: UnjudgedVerdict, cause: UnjudgedCause): number {
  return BH_C_UNJUDGED + UNJUDGED_VERDICT[verdict] * BH_U_MAX + UNJUDGED_CAUSE[cause];
}

/** Entries of the `counters` array. */
export const COUNTER_COUNT = BH_C_MAX;

export const PROTOCOL_NAMES: Readonly<Record<number, string>> = {
  1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP",
};

export function formatIPv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

export function formatIPv6(buf: Buffer, off: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(off + 2 * i));
  return formatIPv6Groups(groups);
}

export function tcpFlagsFromByte(b: number): TcpFlags {
  return {
    fin: (b & 0x01) !== 0, syn: (b & 0x02) !== 0, rst: (b & 0x04) !== 0, psh: (b & 0x08) !== 0,
    ack: (b & 0x10) !== 0, urg: (b & 0x20) !== 0, ece: (b & 0x40) !== 0, cwr: (b & 0x80) !== 0,
  };
}

/** enum bh_verdict → Verdict, enum bh_reason → VerdictReason. */
const VERDICTS = new Map<number, Verdict>([
  [BH_VERDICT_FORWARDED, Verdict.VERDICT_FORWARDED], [BH_VERDICT_DROPPED, Verdict.VERDICT_DROPPED],
  [BH_VERDICT_AUDIT, Verdict.VERDICT_AUDIT],
]);
const REASONS = new Map<number, VerdictReason>([
  [BH_REASON_NONE, VerdictReason.VERDICT_REASON_UNSPECIFIED], [BH_REASON_POLICY, VerdictReason.VERDICT_REASON_POLICY],
  [BH_REASON_ESTABLISHED, VerdictReason.VERDICT_REASON_ESTABLISHED], [BH_REASON_SPOOFED, VerdictReason.VERDICT_REASON_SPOOFED],
]);

export interface FlowKey {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ifindex: number;
  proto: number;
  family: 4 | 6;
  point: number;
  verdict: Verdict;
  reason: VerdictReason;
}

export function decodeKey(buf: Buffer, off: number): FlowKey {
  const family = buf[off + bh_flow_key.family] === 6 ? 6 : 4;
  const fmt = family === 6 ? formatIPv6 : formatIPv4;
  return {
    src: fmt(buf, off + bh_flow_key.src),
    dst: fmt(buf, off + bh_flow_key.dst),
    sport: buf.readUInt16LE(off + bh_flow_key.sport),
    dport: buf.readUInt16LE(off + bh_flow_key.dport),
    ifindex: buf.readUInt32LE(off + bh_flow_key.ifindex),
    proto: buf[off + bh_flow_key.proto] ?? 0,
    family,
    point: buf[off + bh_flow_key.point] ?? 0,
    verdict: VERDICTS.get(buf[off + bh_flow_key.verdict] ?? 0) ?? Verdict.UNRECOGNIZED,
    reason: REASONS.get(buf[off + bh_flow_key.reason] ?? 0) ?? VerdictReason.UNRECOGNIZED,
  };
}

/** Converts bpf_ktime_get_ns() (CLOCK_MONOTONIC) to wall-clock nanoseconds. */
export interface Clock { monoToWallNs(mono: bigint): bigint }

/** The offset between the clocks now; one reading serves a whole drain. */
export function clockNow(): Clock {
  // process.hrtime reads CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() uses.
  const offset = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  return { monoToWallNs: (mono) => mono + offset };
}

function timestamp(wallNs: bigint) {
  return { seconds: wallNs / 1_000_000_000n, nanos: Number(wallNs % 1_000_000_000n) };
}

export interface RecordContext {
  node: string;
  interfaceName(ifindex: number): string;
  clock: Clock;
  nextSequence(): bigint;
}

/** Builds the FlowRecord of entry `i` of a drained batch. */
export function decodeFlowRecord(keys: Buffer, values: Buffer, i: number, ctx: RecordContext): FlowRecord {
  const k = decodeKey(keys, i * bh_flow_key.size);
  const v = i * bh_flow_value.size;
  const isIcmp = k.proto === 1 || k.proto === 58;
  const fromPod = k.point === BH_POINT_FROM_POD;
  return {
    startTime: timestamp(ctx.clock.monoToWallNs(values.readBigUInt64LE(v + bh_flow_value.first_seen_ns))),
    endTime: timestamp(ctx.clock.monoToWallNs(values.readBigUInt64LE(v + bh_flow_value.last_seen_ns))),
    node: ctx.node,
    point: fromPod ? ObservationPoint.OBSERVATION_POINT_FROM_POD
      : k.point === BH_POINT_TO_POD ? ObservationPoint.OBSERVATION_POINT_TO_POD
      : ObservationPoint.OBSERVATION_POINT_UNSPECIFIED,
    reporter: fromPod ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
    interface: ctx.interfaceName(k.ifindex),
    ifindex: k.ifindex,
    ip: {
      source: k.src,
      destination: k.dst,
      version: k.family === 6 ? IpVersion.IP_VERSION_IPV6 : IpVersion.IP_VERSION_IPV4,
    },
    l4: {
      protocol: k.proto,
      protocolName: PROTOCOL_NAMES[k.proto] ?? String(k.proto),
      sourcePort: isIcmp ? 0 : k.sport,
      destinationPort: isIcmp ? 0 : k.dport,
      tcpFlags: k.proto === 6 ? tcpFlagsFromByte(values.readUInt32LE(v + bh_flow_value.tcp_flags)) : undefined,
      icmpType: isIcmp ? k.sport : 0,
      icmpCode: isIcmp ? k.dport : 0,
    },
    packets: values.readBigUInt64LE(v + bh_flow_value.packets),
    bytes: values.readBigUInt64LE(v + bh_flow_value.bytes),
    source: undefined,
    destination: undefined,
    verdict: k.verdict,
    verdictReason: k.reason,
    attribution: undefined,
    sequence: ctx.nextSequence(),
  };
}
