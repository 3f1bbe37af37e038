// Decodes the kernel's flow map entries (native/bpf/endpoint.h) into flow columns
// (flowcolumns/columns.ts), one typed array per field. Offsets and enum values come from native/gen/abi.ts,
// generated from the compiled object's BTF; this file only names them for the agent.
import { type FlowRecord, ObservationPoint, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import type { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import { ADDRESS_WIDTH, allocColumns, recordAt, viewColumns, type FlowColumns } from "../flowcolumns/columns.js";
import { formatIPv6Groups } from "../addresses/ip.js";
import { native } from "../native/index.js";
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

export { PROTOCOL_NAMES, tcpFlagsFromByte } from "../flowcolumns/columns.js";

export function formatIPv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

export function formatIPv6(buf: Buffer, off: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(off + 2 * i));
  return formatIPv6Groups(groups);
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
  const offset = clockOffsetNow();
  return { monoToWallNs: (mono) => mono + offset };
}

export interface RecordContext {
  node: string;
  interfaceName(ifindex: number): string;
  clock: Clock;
  nextSequence(): bigint;
}

/** The pods behind this node's veths, for the column of local ends (endpoints.ts). */
export interface LocalEndNames {
  /** 1 + the index into `names` (0 for none) of the pod whose address is at `off` of `addr16`, an IPv4-mapped or IPv6 address. */
  lookup(addr16: Uint8Array, off: number): number;
  /** The same by address text (a pod's own address, for SPOOFED records). */
  lookupText(ip: string): number;
  readonly names: LocalEndpoint[];
}

export interface DrainContext {
  interfaceName(ifindex: number): string;
  /** Wall-clock ns minus CLOCK_MONOTONIC ns, read once for the drain. */
  clockOffsetNs: bigint;
  firstSequence: bigint;
  localEnds?: LocalEndNames;
  /** An address of the pod behind an interface, for records whose source is forged (SPOOFED). */
  podAddress?(ifindex: number): string | undefined;
}

/** The offset between the clocks now: one reading serves a whole drain. */
export function clockOffsetNow(): bigint {
  // Both clocks read in C: from Date.now() (whole milliseconds) against process.hrtime, the
  // offset came out up to 1 ms short, and a record could end before the instant its packet
  // was known to have been sent after (the what-if differential's window start).
  return native().clockOffsetNs();
}

const VERDICT_OF = new Uint8Array(256).fill(Verdict.VERDICT_UNSPECIFIED);
VERDICT_OF[BH_VERDICT_FORWARDED] = Verdict.VERDICT_FORWARDED;
VERDICT_OF[BH_VERDICT_DROPPED] = Verdict.VERDICT_DROPPED;
VERDICT_OF[BH_VERDICT_AUDIT] = Verdict.VERDICT_AUDIT;
const REASON_OF = new Uint8Array(256).fill(VerdictReason.VERDICT_REASON_UNSPECIFIED);
REASON_OF[BH_REASON_POLICY] = VerdictReason.VERDICT_REASON_POLICY;
REASON_OF[BH_REASON_ESTABLISHED] = VerdictReason.VERDICT_REASON_ESTABLISHED;
REASON_OF[BH_REASON_SPOOFED] = VerdictReason.VERDICT_REASON_SPOOFED;
const POINT_OF = new Uint8Array(256).fill(ObservationPoint.OBSERVATION_POINT_UNSPECIFIED);
POINT_OF[BH_POINT_FROM_POD] = ObservationPoint.OBSERVATION_POINT_FROM_POD;
POINT_OF[BH_POINT_TO_POD] = ObservationPoint.OBSERVATION_POINT_TO_POD;

const TWO_32 = 2 ** 32;

/** `buf` as 32-bit words (a view; a copy only when it does not start on a 4-byte boundary). */
function words(buf: Uint8Array, count: number): Uint32Array {
  const aligned = buf.byteOffset % 4 === 0 ? buf : new Uint8Array(buf.subarray(0, count * 4));
  return new Uint32Array(aligned.buffer, aligned.byteOffset, count);
}

// The key and value structs are read as 32-bit words: their sizes and the offsets read
// below are multiples of 4 (checked at load, so a layout change fails loudly, not a decode).
const K = bh_flow_key, V = bh_flow_value;
for (const [name, off] of Object.entries({ size: K.size, src: K.src, dst: K.dst, sport: K.sport, ifindex: K.ifindex,
  vsize: V.size, packets: V.packets, bytes: V.bytes, first: V.first_seen_ns, last: V.last_seen_ns })) {
  if (off % 4 !== 0) throw new Error(`bh_flow_key/value ${name} at ${off}: records.ts reads these as 32-bit words`);
}
if (K.dport !== K.sport + 2) throw new Error("bh_flow_key: dport must follow sport (read as one word)");
const KW = K.size / 4, VW = V.size / 4;
/** The word of IPv4-mapped addresses' bytes 8..11 (0, 0, 0xff, 0xff), as the platform reads it. */
const MAPPED_WORD = new Uint32Array(new Uint8Array([0, 0, 0xff, 0xff]).buffer)[0] ?? 0;
/** Byte order of the platform's words (the kernel's structs are in it too). */
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decodes `count` drained entries (keys and values as the kernel laid them out) straight
 * into columns: no object per entry. Keys, values and addresses are moved as 32-bit words
 * (a Buffer.copy per address made a typed array each: a third of the decode's CPU). Times
 * become wall clock with the drain's one clock offset, added in 32-bit halves so that no
 * BigInt is made per entry. With `storage` (at least `count` rows) the columns are views
 * of it, valid until it is written again: the agent decodes every drain into one storage
 * instead of ~9 MB of new arrays per drain.
 */
export function decodeDrain(keys: Buffer, values: Buffer, count: number, ctx: DrainContext, storage?: FlowColumns): FlowColumns {
  if (ctx.clockOffsetNs < 0n) throw new Error(`clock offset ${ctx.clockOffsetNs} ns: the wall clock is before the monotonic one`);
  const c = storage ? viewColumns(storage, count) : allocColumns(count);
  c.firstSequence = ctx.firstSequence;
  if (storage && !ctx.localEnds) c.localEndpoints.fill(0);
  const offLo = Number(ctx.clockOffsetNs & 0xffffffffn), offHi = Number(ctx.clockOffsetNs >> 32n);
  const halves = (col: BigUint64Array) => new Uint32Array(col.buffer, col.byteOffset, 2 * count);
  const start32 = halves(c.startNs), end32 = halves(c.endNs);
  const packets32 = halves(c.packets), bytes32 = halves(c.bytes);
  const kw = words(keys, count * KW), vw = words(values, count * VW);
  const src = c.sourceAddresses, dst = c.destinationAddresses;
  const src32 = words(src, count * 4), dst32 = words(dst, count * 4);
  const ifaceIndex = new Map<number, number>();
  let lastIfindex = -1, lastIface = 0;
  const ends = ctx.localEnds;
  for (let i = 0; i < count; i++) {
    const k = i * KW, v = i * VW, a = i * 4, kb = i * K.size;
    const family = keys[kb + K.family] === 6 ? 6 : 4;
    if (family === 6) {
      for (let w = 0; w < 4; w++) {
        src32[a + w] = kw[k + K.src / 4 + w] ?? 0;
        dst32[a + w] = kw[k + K.dst / 4 + w] ?? 0;
      }
    } else {
      src32[a] = 0; src32[a + 1] = 0; src32[a + 2] = MAPPED_WORD; src32[a + 3] = kw[k + K.src / 4] ?? 0;
      dst32[a] = 0; dst32[a + 1] = 0; dst32[a + 2] = MAPPED_WORD; dst32[a + 3] = kw[k + K.dst / 4] ?? 0;
    }
    c.ipVersions[i] = family;
    const ports = kw[k + K.sport / 4] ?? 0;
    c.sourcePorts[i] = LITTLE ? ports & 0xffff : ports >>> 16;
    c.destinationPorts[i] = LITTLE ? ports >>> 16 : ports & 0xffff;
    const ifindex = kw[k + K.ifindex / 4] ?? 0;
    c.ifindexes[i] = ifindex;
    if (ifindex !== lastIfindex) {
      let iface = ifaceIndex.get(ifindex);
      if (iface === undefined) {
        iface = c.interfaceNames.push(ctx.interfaceName(ifindex)) - 1;
        ifaceIndex.set(ifindex, iface);
      }
      lastIfindex = ifindex;
      lastIface = iface;
    }
    c.interfaces[i] = lastIface;
    const proto = keys[kb + K.proto] ?? 0;
    c.protocols[i] = proto;
    const point = POINT_OF[keys[kb + K.point] ?? 0] ?? 0;
    c.points[i] = point;
    c.verdicts[i] = VERDICT_OF[keys[kb + K.verdict] ?? 0] ?? 0;
    const reason = REASON_OF[keys[kb + K.reason] ?? 0] ?? 0;
    c.verdictReasons[i] = reason;
    c.tcpFlags[i] = proto === 6 ? values[i * V.size + V.tcp_flags] ?? 0 : 0;
    packets32[2 * i] = vw[v + V.packets / 4] ?? 0;
    packets32[2 * i + 1] = vw[v + V.packets / 4 + 1] ?? 0;
    bytes32[2 * i] = vw[v + V.bytes / 4] ?? 0;
    bytes32[2 * i + 1] = vw[v + V.bytes / 4 + 1] ?? 0;
    let lo = (vw[v + V.first_seen_ns / 4] ?? 0) + offLo;
    let hi = (vw[v + V.first_seen_ns / 4 + 1] ?? 0) + offHi;
    if (lo >= TWO_32) { lo -= TWO_32; hi++; }
    start32[2 * i] = lo;
    start32[2 * i + 1] = hi;
    lo = (vw[v + V.last_seen_ns / 4] ?? 0) + offLo;
    hi = (vw[v + V.last_seen_ns / 4 + 1] ?? 0) + offHi;
    if (lo >= TWO_32) { lo -= TWO_32; hi++; }
    end32[2 * i] = lo;
    end32[2 * i + 1] = hi;
    if (ends) {
      const fromPod = point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
      if (fromPod && reason === VerdictReason.VERDICT_REASON_SPOOFED) {
        const own = ctx.podAddress?.(ifindex);
        c.localEndpoints[i] = own === undefined ? 0 : ends.lookupText(own);
      } else {
        c.localEndpoints[i] = ends.lookup(fromPod ? src : dst, i * ADDRESS_WIDTH);
      }
    }
  }
  if (ctx.localEnds) c.localEndpointNames = ctx.localEnds.names;
  return c;
}

/** The FlowRecord of entry `i` of a drained batch (tools and tests; the agent keeps columns). */
export function decodeFlowRecord(keys: Buffer, values: Buffer, i: number, ctx: RecordContext): FlowRecord {
  const c = decodeDrain(keys.subarray(i * bh_flow_key.size, (i + 1) * bh_flow_key.size),
    values.subarray(i * bh_flow_value.size, (i + 1) * bh_flow_value.size), 1, {
      interfaceName: (ifindex) => ctx.interfaceName(ifindex),
      clockOffsetNs: ctx.clock.monoToWallNs(0n),
      firstSequence: ctx.nextSequence(),
    });
  return recordAt(c, 0, ctx.node);
}
