// One FlowRecord as one row of the `flows` table, in ClickHouse's RowBinary format (the
// fastest input 18.16 takes over HTTP), and back. FLOW_COLUMNS is the one list of columns:
// the schema's CREATE TABLE, the INSERT and the SELECT are all written from it, and
// encodeRecord / decodeRecord walk it in the same order (test/store-clickhouse.test.ts
// round-trips every field).
//
// 18.16 has no IPv6 type and no DateTime64: addresses are FixedString(16) (IPv4 as
// ::ffff:a.b.c.d) so CIDR filters become byte ranges, times are UInt64 nanoseconds, and
// `end_time` (DateTime, seconds) exists for the day partitions and the sort key. An
// address whose text is not the canonical form bulkhead writes everywhere (addresses/ip.ts)
// is kept as text instead, so every record reads back exactly as it was appended.
import type { Endpoint, FlowRecord, PolicyAttribution } from "../../../proto/gen/bulkhead/v1/flow.js";
import type { Timestamp } from "../../../proto/gen/google/protobuf/timestamp.js";
import { formatIPv6Groups, parseIp } from "../../../addresses/ip.js";

export type ColumnType = "UInt8" | "UInt32" | "Int32" | "UInt64" | "DateTime('UTC')" | "String" | "FixedString(16)" | "Array(String)";

const endpointColumns = (p: "src" | "dst"): [string, ColumnType][] => [
  [`${p}_ip`, "FixedString(16)"], [`${p}_ip_text`, "String"], [`${p}_namespace`, "String"], [`${p}_pod`, "String"],
  [`${p}_pod_uid`, "String"], [`${p}_label_keys`, "Array(String)"], [`${p}_label_values`, "Array(String)"],
  [`${p}_workload_kind`, "String"], [`${p}_workload_name`, "String"], [`${p}_node`, "String"], [`${p}_service`, "String"],
  [`${p}_world`, "UInt8"],
];

/** The `flows` table's columns, in RowBinary order. */
export const FLOW_COLUMNS: readonly [string, ColumnType][] = [
  ["end_time", "DateTime('UTC')"], ["start_ns", "UInt64"], ["end_ns", "UInt64"], ["present", "UInt8"], ["addr_flags", "UInt8"],
  ["node", "String"], ["point", "Int32"], ["reporter", "Int32"], ["interface", "String"], ["ifindex", "UInt32"],
  ["ip_version", "Int32"], ["ip_src", "FixedString(16)"], ["ip_src_text", "String"], ["ip_dst", "FixedString(16)"], ["ip_dst_text", "String"],
  ["protocol", "UInt32"], ["protocol_name", "String"], ["sport", "UInt32"], ["dport", "UInt32"], ["tcp_flags", "UInt8"],
  ["icmp_type", "UInt32"], ["icmp_code", "UInt32"],
  ["packets", "UInt64"], ["bytes", "UInt64"], ["verdict", "Int32"], ["sequence", "UInt64"], ["verdict_reason", "Int32"],
  ...endpointColumns("src"), ...endpointColumns("dst"),
  ["policy_version", "UInt64"], ["egress_isolated", "UInt8"], ["egress_allowed_by", "Array(String)"], ["egress_isolated_by", "Array(String)"],
  ["ingress_isolated", "UInt8"], ["ingress_allowed_by", "Array(String)"], ["ingress_isolated_by", "Array(String)"],
  // Schema version 2: which tier decided each side, and the ClusterNetworkPolicy rules that matched.
  ["egress_decided_by", "String"], ["ingress_decided_by", "String"], ["egress_tier_rules", "Array(String)"], ["ingress_tier_rules", "Array(String)"],
  // Which batch, and which write of it (see store.ts: a batch written twice is read once).
  ["instance_id", "String"], ["batch_id", "UInt64"], ["row_index", "UInt32"], ["write_id", "UInt64"],
];

/** Bits of `present`: which optional messages the record had. */
export const PRESENT = { start: 1, end: 2, ip: 4, l4: 8, tcpFlags: 16, source: 32, destination: 64, attribution: 128 } as const;
/** Bits of `addr_flags`, per address (0 ip.source, 1 ip.destination, 2 source.ip, 3 destination.ip): kept as text; IPv6. */
const RAW_BIT = (i: number) => 1 << i;
const V6_BIT = (i: number) => 1 << (i + 4);

const TCP_FLAGS = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"] as const;
const NANOS = 1_000_000_000n;
const U64_MAX = 2n ** 64n - 1n;

/** A growing buffer of RowBinary values. */
export class RowWriter {
  private buf = Buffer.allocUnsafe(1 << 20);
  private at = 0;

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n));
    this.buf.copy(next, 0, 0, this.at);
    this.buf = next;
  }

  u8(v: number): void { this.room(1); this.buf[this.at++] = v; }
  u32(v: number): void { this.room(4); this.buf.writeUInt32LE(v >>> 0, this.at); this.at += 4; }
  i32(v: number): void { this.room(4); this.buf.writeInt32LE(v | 0, this.at); this.at += 4; }
  u64(v: bigint): void { this.room(8); this.buf.writeBigUInt64LE(v < 0n ? 0n : v > U64_MAX ? U64_MAX : v, this.at); this.at += 8; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.at); this.at += b.length; }

  private varint(n: number): void {
    this.room(10);
    while (n >= 0x80) { this.buf[this.at++] = (n & 0x7f) | 0x80; n = Math.floor(n / 128); }
    this.buf[this.at++] = n;
  }

  string(s: string): void {
    if (s.length === 0) { this.u8(0); return; }
    const n = Buffer.byteLength(s, "utf8");
    this.varint(n);
    this.room(n);
    this.at += this.buf.write(s, this.at, n, "utf8");
  }

  strings(values: readonly string[]): void {
    this.varint(values.length);
    for (const v of values) this.string(v);
  }

  get length(): number { return this.at; }
  /** The bytes written so far (a view; copy before writing more). */
  take(): Buffer { return this.buf.subarray(0, this.at); }
  reset(): void { this.at = 0; }
}

/** Thrown by RowReader when the buffer ends inside a row: read more and start the row again. */
export class Incomplete extends Error {}

export class RowReader {
  at = 0;
  constructor(readonly buf: Buffer) {}

  private need(n: number): void { if (this.at + n > this.buf.length) throw new Incomplete(); }
  u8(): number { this.need(1); return this.buf[this.at++]!; }
  u32(): number { this.need(4); const v = this.buf.readUInt32LE(this.at); this.at += 4; return v; }
  i32(): number { this.need(4); const v = this.buf.readInt32LE(this.at); this.at += 4; return v; }
  u64(): bigint { this.need(8); const v = this.buf.readBigUInt64LE(this.at); this.at += 8; return v; }
  fixed16(): Buffer { this.need(16); const v = this.buf.subarray(this.at, this.at + 16); this.at += 16; return v; }

  private varint(): number {
    let n = 0;
    let scale = 1;
    for (;;) {
      const b = this.u8();
      n += (b & 0x7f) * scale;
      if (b < 0x80) return n;
      scale *= 128;
    }
  }

  string(): string {
    const n = this.varint();
    this.need(n);
    const s = this.buf.toString("utf8", this.at, this.at + n);
    this.at += n;
    return s;
  }

  strings(): string[] {
    const n = this.varint();
    const out: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) out[i] = this.string();
    return out;
  }
}

// ---------------------------------------------------------------------------------------
// Addresses

const ZERO16 = new Uint8Array(16);

/** 16 bytes of an address in canonical text, or undefined (keep it as text). IPv4 as ::ffff:a.b.c.d. */
export function addressBytes(text: string): { bytes: Uint8Array; v6: boolean } | undefined {
  const ip = parseIp(text);
  if (ip === undefined || ip.text !== text) return undefined;
  if (ip.family === 6) return { bytes: ip.bytes, v6: true };
  const bytes = new Uint8Array(16);
  bytes[10] = 0xff;
  bytes[11] = 0xff;
  bytes.set(ip.bytes, 12);
  return { bytes, v6: false };
}

function addressText(bytes: Uint8Array, v6: boolean): string {
  if (!v6) return `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  return formatIPv6Groups(groups);
}

/**
 * Addresses repeat across records (a pod's address in every flow of it): parsed once.
 * Bounded; when full it starts over.
 */
class AddressCache {
  private readonly known = new Map<string, { bytes: Uint8Array; v6: boolean } | null>();
  get(text: string): { bytes: Uint8Array; v6: boolean } | undefined {
    let hit = this.known.get(text);
    if (hit === undefined) {
      if (this.known.size >= 65_536) this.known.clear();
      hit = addressBytes(text) ?? null;
      this.known.set(text, hit);
    }
    return hit ?? undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Records

function nanosOf(t: Timestamp): bigint {
  return t.seconds * NANOS + BigInt(t.nanos);
}

function timestampOf(ns: bigint): Timestamp {
  return { seconds: ns / NANOS, nanos: Number(ns % NANOS) };
}

/** Where a record's batch row names it; written after the record's own columns. */
export interface RowOrigin {
  instanceId: string;
  batchId: bigint;
  row: number;
  writeId: bigint;
}

/** How an address was stored: as text (not canonical), and whether it is IPv6. */
interface AddressForm { raw: boolean; v6: boolean }

/** Encodes rows; one per store, since it caches what repeats across batches. */
export class FlowRowEncoder {
  private readonly addresses = new AddressCache();
  /**
   * The enricher shares one frozen Endpoint per pod (controlplane/cluster/state.ts): its
   * columns are encoded once and copied after. Only frozen ones, which cannot change.
   */
  private readonly endpoints = new WeakMap<Endpoint, { bytes: Buffer; form: AddressForm }>();

  private address(w: RowWriter, text: string | undefined): AddressForm & { text: string } {
    const parsed = text === undefined ? undefined : this.addresses.get(text);
    if (parsed === undefined) {
      w.bytes(ZERO16);
      return { raw: text !== undefined, v6: false, text: text ?? "" };
    }
    w.bytes(parsed.bytes);
    return { raw: false, v6: parsed.v6, text: "" };
  }

  private writeEndpoint(w: RowWriter, e: Endpoint | undefined): AddressForm {
    const ip = this.address(w, e?.ip);
    w.string(ip.text);
    w.string(e?.namespace ?? "");
    w.string(e?.podName ?? "");
    w.string(e?.podUid ?? "");
    const keys = e === undefined ? [] : Object.keys(e.labels);
    w.strings(keys);
    w.strings(keys.map((k) => e!.labels[k]!));
    w.string(e?.workloadKind ?? "");
    w.string(e?.workloadName ?? "");
    w.string(e?.node ?? "");
    w.string(e?.service ?? "");
    w.u8(e?.world === true ? 1 : 0);
    return ip;
  }

  private endpoint(w: RowWriter, e: Endpoint | undefined, index: number, flags: { value: number }): void {
    let form: AddressForm;
    if (e !== undefined && Object.isFrozen(e) && Object.isFrozen(e.labels)) {
      let hit = this.endpoints.get(e);
      if (hit === undefined) {
        const start = w.length;
        const written = this.writeEndpoint(w, e);
        hit = { bytes: Buffer.from(w.take().subarray(start)), form: written };
        this.endpoints.set(e, hit);
      } else {
        w.bytes(hit.bytes);
      }
      form = hit.form;
    } else {
      form = this.writeEndpoint(w, e);
    }
    if (form.raw) flags.value |= RAW_BIT(index);
    if (form.v6) flags.value |= V6_BIT(index);
  }

  private packetAddress(w: RowWriter, text: string | undefined, index: number, flags: { value: number }): void {
    const form = this.address(w, text);
    w.string(form.text);
    if (form.raw) flags.value |= RAW_BIT(index);
    if (form.v6) flags.value |= V6_BIT(index);
  }

  /** Appends one row: the record's columns in FLOW_COLUMNS order, then its origin. */
  record(w: RowWriter, r: FlowRecord, origin: RowOrigin): void {
    const endNs = r.endTime === undefined ? 0n : nanosOf(r.endTime);
    const endSeconds = r.endTime === undefined ? 0 : Number(r.endTime.seconds);
    w.u32(Math.min(Math.max(endSeconds, 0), 0xffffffff));
    w.u64(r.startTime === undefined ? 0n : nanosOf(r.startTime));
    w.u64(endNs);
    const tcpFlags = r.l4?.tcpFlags;
    w.u8((r.startTime ? PRESENT.start : 0) | (r.endTime ? PRESENT.end : 0) | (r.ip ? PRESENT.ip : 0) | (r.l4 ? PRESENT.l4 : 0)
      | (tcpFlags ? PRESENT.tcpFlags : 0) | (r.source ? PRESENT.source : 0) | (r.destination ? PRESENT.destination : 0)
      | (r.attribution ? PRESENT.attribution : 0));
    // The address flags are known only after the addresses are written: reserve the byte.
    const flagsAt = w.length;
    w.u8(0);
    const flags = { value: 0 };
    w.string(r.node);
    w.i32(r.point);
    w.i32(r.reporter);
    w.string(r.interface);
    w.u32(r.ifindex);
    w.i32(r.ip?.version ?? 0);
    this.packetAddress(w, r.ip?.source, 0, flags);
    this.packetAddress(w, r.ip?.destination, 1, flags);
    const l4 = r.l4;
    w.u32(l4?.protocol ?? 0);
    w.string(l4?.protocolName ?? "");
    w.u32(l4?.sourcePort ?? 0);
    w.u32(l4?.destinationPort ?? 0);
    let bits = 0;
    if (tcpFlags) for (let i = 0; i < TCP_FLAGS.length; i++) if (tcpFlags[TCP_FLAGS[i]!]) bits |= 1 << i;
    w.u8(bits);
    w.u32(l4?.icmpType ?? 0);
    w.u32(l4?.icmpCode ?? 0);
    w.u64(r.packets);
    w.u64(r.bytes);
    w.i32(r.verdict);
    w.u64(r.sequence);
    w.i32(r.verdictReason);
    this.endpoint(w, r.source, 2, flags);
    this.endpoint(w, r.destination, 3, flags);
    const a = r.attribution;
    w.u64(a?.policyVersion ?? 0n);
    w.u8(a?.egressIsolated === true ? 1 : 0);
    w.strings(a?.egressAllowedBy ?? []);
    w.strings(a?.egressIsolatedBy ?? []);
    w.u8(a?.ingressIsolated === true ? 1 : 0);
    w.strings(a?.ingressAllowedBy ?? []);
    w.strings(a?.ingressIsolatedBy ?? []);
    w.string(a?.egressDecidedBy ?? "");
    w.string(a?.ingressDecidedBy ?? "");
    w.strings(a?.egressTierRules ?? []);
    w.strings(a?.ingressTierRules ?? []);
    w.string(origin.instanceId);
    w.u64(origin.batchId);
    w.u32(origin.row);
    w.u64(origin.writeId);
    w.take()[flagsAt] = flags.value;
  }
}

function readAddress(r: RowReader, index: number, flags: number): { bytes: Buffer; text: string | undefined } {
  const bytes = r.fixed16();
  const text = r.string();
  return { bytes, text: (flags & RAW_BIT(index)) !== 0 ? text : undefined };
}

function addressOf(a: { bytes: Buffer; text: string | undefined }, index: number, flags: number): string {
  return a.text ?? addressText(a.bytes, (flags & V6_BIT(index)) !== 0);
}

function readEndpoint(r: RowReader, index: number, flags: number): Endpoint {
  const ip = readAddress(r, index, flags);
  const namespace = r.string();
  const podName = r.string();
  const podUid = r.string();
  const keys = r.strings();
  const values = r.strings();
  const labels: Record<string, string> = {};
  keys.forEach((k, i) => { labels[k] = values[i] ?? ""; });
  return {
    ip: addressOf(ip, index, flags), namespace, podName, podUid, labels,
    workloadKind: r.string(), workloadName: r.string(), node: r.string(), service: r.string(), world: r.u8() === 1,
  };
}

/** One row of FLOW_COLUMNS as a FlowRecord, and its origin. */
export function decodeRecord(r: RowReader): { record: FlowRecord; origin: RowOrigin } {
  r.u32(); // end_time: end_ns holds it exactly
  const startNs = r.u64();
  const endNs = r.u64();
  const present = r.u8();
  const flags = r.u8();
  const node = r.string();
  const point = r.i32();
  const reporter = r.i32();
  const iface = r.string();
  const ifindex = r.u32();
  const ipVersion = r.i32();
  const ipSource = readAddress(r, 0, flags);
  const ipDestination = readAddress(r, 1, flags);
  const protocol = r.u32();
  const protocolName = r.string();
  const sourcePort = r.u32();
  const destinationPort = r.u32();
  const tcpBits = r.u8();
  const icmpType = r.u32();
  const icmpCode = r.u32();
  const packets = r.u64();
  const bytes = r.u64();
  const verdict = r.i32();
  const sequence = r.u64();
  const verdictReason = r.i32();
  const source = readEndpoint(r, 2, flags);
  const destination = readEndpoint(r, 3, flags);
  const attribution: PolicyAttribution = {
    policyVersion: r.u64(), egressIsolated: r.u8() === 1, egressAllowedBy: r.strings(), egressIsolatedBy: r.strings(),
    ingressIsolated: r.u8() === 1, ingressAllowedBy: r.strings(), ingressIsolatedBy: r.strings(),
    egressDecidedBy: r.string(), ingressDecidedBy: r.string(), egressTierRules: r.strings(), ingressTierRules: r.strings(),
  };
  const origin: RowOrigin = { instanceId: r.string(), batchId: r.u64(), row: r.u32(), writeId: r.u64() };
  const tcpFlags = Object.fromEntries(TCP_FLAGS.map((f, i) => [f, (tcpBits & (1 << i)) !== 0])) as Record<(typeof TCP_FLAGS)[number], boolean>;
  const record: FlowRecord = {
    ...(present & PRESENT.start ? { startTime: timestampOf(startNs) } : {}),
    ...(present & PRESENT.end ? { endTime: timestampOf(endNs) } : {}),
    node, point, reporter, interface: iface, ifindex,
    ...(present & PRESENT.ip ? {
      ip: { source: addressOf(ipSource, 0, flags), destination: addressOf(ipDestination, 1, flags), version: ipVersion },
    } : {}),
    ...(present & PRESENT.l4 ? {
      l4: { protocol, protocolName, sourcePort, destinationPort, ...(present & PRESENT.tcpFlags ? { tcpFlags } : {}), icmpType, icmpCode },
    } : {}),
    packets, bytes,
    ...(present & PRESENT.source ? { source } : {}),
    ...(present & PRESENT.destination ? { destination } : {}),
    verdict, sequence, verdictReason,
    ...(present & PRESENT.attribution ? { attribution } : {}),
  };
  return { record, origin };
}
