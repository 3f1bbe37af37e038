// Decodes the kernel's flow map entries (native/bpf/endpoint.h) into FlowRecords
// (proto/bulkhead/v1/flow.proto). The offsets below mirror endpoint.h;
// test/layout.test.ts checks them against the compiled object's BTF.
import {
  type FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason, type TcpFlags,
} from "../proto/gen/bulkhead/v1/flow.js";
import { formatIPv6Groups } from "../addresses/ip.js";

export const FLOW_KEY = {
  size: 48, src: 0, dst: 16, sport: 32, dport: 34, ifindex: 36, proto: 40, family: 41, point: 42, verdict: 43, reason: 44,
} as const;
export const FLOW_VALUE = {
  size: 40, packets: 0, bytes: 8, firstSeen: 16, lastSeen: 24, tcpFlags: 32,
} as const;
export const EVENT = { size: 64, type: 0, ts: 8, key: 16 } as const;
export const POINT = { fromPod: 1, toPod: 2 } as const;
export const EVENT_TYPE = { newFlow: 1 } as const;

/** Indices of the per-CPU `counters` array (enum bh_counter). */
export const COUNTER = {
  packets: 0, notIp: 1, newFlows: 2, mapFullPackets: 3, mapFullBytes: 4, ringFull: 5, ctFull: 6,
  ctCreated: 7, ctConfirmed: 8, ctLost: 9, ctRejudged: 10, icmpRelated: 11,
} as const;
/** BH_C_UNJUDGED: the first of the unjudged-frame counters (unjudgedCounter). */
export const UNJUDGED_BASE = 12;

/** Why a frame could not be judged (enum bh_unjudged, in order): the `cause` label. */
export const UNJUDGED_CAUSES = ["l2", "vlan", "ethertype", "ipv4", "ipv6", "ipv6_ext", "l4", "fragment"] as const;
export type UnjudgedCause = (typeof UNJUDGED_CAUSES)[number];
/** What an unjudged frame got, by enum bh_verdict value: the `verdict` label. */
export const UNJUDGED_VERDICTS = ["forwarded", "dropped", "audit"] as const;
export type UnjudgedVerdict = (typeof UNJUDGED_VERDICTS)[number];

/** The counter index of unjudged frames with this verdict and cause. */
export function unjudgedCounter(verdict: UnjudgedVerdict, cause: UnjudgedCause): number {
  return UNJUDGED_BASE + UNJUDGED_VERDICTS.indexOf(verdict) * UNJUDGED_CAUSES.length + UNJUDGED_CAUSES.indexOf(cause);
}

export const COUNTER_COUNT = UNJUDGED_BASE + UNJUDGED_VERDICTS.length * UNJUDGED_CAUSES.length;

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
const VERDICTS = [Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT] as const;
const REASONS = [VerdictReason.VERDICT_REASON_UNSPECIFIED, VerdictReason.VERDICT_REASON_POLICY,
  VerdictReason.VERDICT_REASON_ESTABLISHED, VerdictReason.VERDICT_REASON_SPOOFED] as const;

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
  const family = buf[off + FLOW_KEY.family] === 6 ? 6 : 4;
  const fmt = family === 6 ? formatIPv6 : formatIPv4;
  return {
    src: fmt(buf, off + FLOW_KEY.src),
    dst: fmt(buf, off + FLOW_KEY.dst),
    sport: buf.readUInt16LE(off + FLOW_KEY.sport),
    dport: buf.readUInt16LE(off + FLOW_KEY.dport),
    ifindex: buf.readUInt32LE(off + FLOW_KEY.ifindex),
    proto: buf[off + FLOW_KEY.proto] ?? 0,
    family,
    point: buf[off + FLOW_KEY.point] ?? 0,
    verdict: VERDICTS[buf[off + FLOW_KEY.verdict] ?? 0] ?? Verdict.UNRECOGNIZED,
    reason: REASONS[buf[off + FLOW_KEY.reason] ?? 0] ?? VerdictReason.UNRECOGNIZED,
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
  const k = decodeKey(keys, i * FLOW_KEY.size);
  const v = i * FLOW_VALUE.size;
  const isIcmp = k.proto === 1 || k.proto === 58;
  const fromPod = k.point === POINT.fromPod;
  return {
    startTime: timestamp(ctx.clock.monoToWallNs(values.readBigUInt64LE(v + FLOW_VALUE.firstSeen))),
    endTime: timestamp(ctx.clock.monoToWallNs(values.readBigUInt64LE(v + FLOW_VALUE.lastSeen))),
    node: ctx.node,
    point: fromPod ? ObservationPoint.OBSERVATION_POINT_FROM_POD
      : k.point === POINT.toPod ? ObservationPoint.OBSERVATION_POINT_TO_POD
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
      tcpFlags: k.proto === 6 ? tcpFlagsFromByte(values.readUInt32LE(v + FLOW_VALUE.tcpFlags)) : undefined,
      icmpType: isIcmp ? k.sport : 0,
      icmpCode: isIcmp ? k.dport : 0,
    },
    packets: values.readBigUInt64LE(v + FLOW_VALUE.packets),
    bytes: values.readBigUInt64LE(v + FLOW_VALUE.bytes),
    source: undefined,
    destination: undefined,
    verdict: k.verdict,
    verdictReason: k.reason,
    attribution: undefined,
    sequence: ctx.nextSequence(),
  };
}
