// Flow records as columns: row i of every typed array is record i. The agent fills them
// straight from the drained kernel map (agent/records.ts), holds them while the control
// plane is away, writes JSON lines and the wire batch (proto FlowColumns, ./wire.ts) from
// them; no object per record on that path. `recordAt` builds the Hubble-like FlowRecord of
// one row, for readers that ask for records (follow streams and durable stores in the control plane, tools).
import type { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import {
  IpVersion, ObservationPoint, ReporterSide, type Endpoint, type FlowRecord, type TcpFlags,
} from "../proto/gen/bulkhead/v1/flow.js";
import { formatIPv6Groups } from "../addresses/ip.js";

/** Bytes of one address in the address columns: IPv6, IPv4 as ::ffff:a.b.c.d. */
export const ADDRESS_WIDTH = 16;

export interface FlowColumns {
  rows: number;
  /** Row i is record number firstSequence + i of its agent. */
  firstSequence: bigint;
  /** Wall clock, ns since the Unix epoch. */
  startNs: BigUint64Array;
  endNs: BigUint64Array;
  packets: BigUint64Array;
  bytes: BigUint64Array;
  /** ADDRESS_WIDTH bytes per row. */
  sourceAddresses: Uint8Array;
  destinationAddresses: Uint8Array;
  /** ICMP: type and code. */
  sourcePorts: Uint32Array;
  destinationPorts: Uint32Array;
  ifindexes: Uint32Array;
  /** Index into interfaceNames. */
  interfaces: Uint32Array;
  interfaceNames: string[];
  protocols: Uint8Array;
  /** 4 or 6. */
  ipVersions: Uint8Array;
  /** ObservationPoint, Verdict, VerdictReason values. */
  points: Uint8Array;
  verdicts: Uint8Array;
  verdictReasons: Uint8Array;
  tcpFlags: Uint8Array;
  /** 0: no local end named; k: localEndpointNames[k-1] (its one address in `ips`). */
  localEndpoints: Uint32Array;
  localEndpointNames: LocalEndpoint[];
}

export function allocColumns(rows: number): FlowColumns {
  return {
    rows, firstSequence: 0n,
    startNs: new BigUint64Array(rows), endNs: new BigUint64Array(rows),
    packets: new BigUint64Array(rows), bytes: new BigUint64Array(rows),
    sourceAddresses: new Uint8Array(rows * ADDRESS_WIDTH), destinationAddresses: new Uint8Array(rows * ADDRESS_WIDTH),
    sourcePorts: new Uint32Array(rows), destinationPorts: new Uint32Array(rows), ifindexes: new Uint32Array(rows),
    interfaces: new Uint32Array(rows), interfaceNames: [],
    protocols: new Uint8Array(rows), ipVersions: new Uint8Array(rows), points: new Uint8Array(rows),
    verdicts: new Uint8Array(rows), verdictReasons: new Uint8Array(rows), tcpFlags: new Uint8Array(rows),
    localEndpoints: new Uint32Array(rows), localEndpointNames: [],
  };
}

/** The first `rows` rows of `storage` as columns (views, no copy) with dictionaries of
 * their own: what a drain decodes into when the agent reuses one storage drain after
 * drain. Valid until the storage is written again. */
export function viewColumns(storage: FlowColumns, rows: number): FlowColumns {
  if (rows > storage.rows) throw new Error(`viewColumns: ${rows} rows asked of a storage of ${storage.rows}`);
  const a = ADDRESS_WIDTH, s = storage;
  return {
    rows, firstSequence: 0n,
    startNs: s.startNs.subarray(0, rows), endNs: s.endNs.subarray(0, rows),
    packets: s.packets.subarray(0, rows), bytes: s.bytes.subarray(0, rows),
    sourceAddresses: s.sourceAddresses.subarray(0, rows * a), destinationAddresses: s.destinationAddresses.subarray(0, rows * a),
    sourcePorts: s.sourcePorts.subarray(0, rows), destinationPorts: s.destinationPorts.subarray(0, rows),
    ifindexes: s.ifindexes.subarray(0, rows), interfaces: s.interfaces.subarray(0, rows), interfaceNames: [],
    protocols: s.protocols.subarray(0, rows), ipVersions: s.ipVersions.subarray(0, rows), points: s.points.subarray(0, rows),
    verdicts: s.verdicts.subarray(0, rows), verdictReasons: s.verdictReasons.subarray(0, rows), tcpFlags: s.tcpFlags.subarray(0, rows),
    localEndpoints: s.localEndpoints.subarray(0, rows), localEndpointNames: [],
  };
}

/** Rows [from, to) as columns of their own (copied, so that the rest can be freed); dictionaries are shared. */
export function sliceColumns(c: FlowColumns, from: number, to: number): FlowColumns {
  const a = ADDRESS_WIDTH;
  return {
    rows: to - from, firstSequence: c.firstSequence + BigInt(from),
    startNs: c.startNs.slice(from, to), endNs: c.endNs.slice(from, to),
    packets: c.packets.slice(from, to), bytes: c.bytes.slice(from, to),
    sourceAddresses: c.sourceAddresses.slice(from * a, to * a), destinationAddresses: c.destinationAddresses.slice(from * a, to * a),
    sourcePorts: c.sourcePorts.slice(from, to), destinationPorts: c.destinationPorts.slice(from, to),
    ifindexes: c.ifindexes.slice(from, to), interfaces: c.interfaces.slice(from, to), interfaceNames: c.interfaceNames,
    protocols: c.protocols.slice(from, to), ipVersions: c.ipVersions.slice(from, to), points: c.points.slice(from, to),
    verdicts: c.verdicts.slice(from, to), verdictReasons: c.verdictReasons.slice(from, to), tcpFlags: c.tcpFlags.slice(from, to),
    localEndpoints: c.localEndpoints.slice(from, to), localEndpointNames: c.localEndpointNames,
  };
}

/** Copies rows [from, to) of `c` into `storage` from its row 0 and returns them as a view
 * of it (viewColumns); dictionaries are shared. For owners that recycle storages instead
 * of making new arrays per copy. */
export function copyColumnsInto(c: FlowColumns, from: number, to: number, storage: FlowColumns): FlowColumns {
  const a = ADDRESS_WIDTH, n = to - from;
  const v = viewColumns(storage, n);
  v.firstSequence = c.firstSequence + BigInt(from);
  v.startNs.set(c.startNs.subarray(from, to)); v.endNs.set(c.endNs.subarray(from, to));
  v.packets.set(c.packets.subarray(from, to)); v.bytes.set(c.bytes.subarray(from, to));
  v.sourceAddresses.set(c.sourceAddresses.subarray(from * a, to * a));
  v.destinationAddresses.set(c.destinationAddresses.subarray(from * a, to * a));
  v.sourcePorts.set(c.sourcePorts.subarray(from, to)); v.destinationPorts.set(c.destinationPorts.subarray(from, to));
  v.ifindexes.set(c.ifindexes.subarray(from, to)); v.interfaces.set(c.interfaces.subarray(from, to));
  v.protocols.set(c.protocols.subarray(from, to)); v.ipVersions.set(c.ipVersions.subarray(from, to));
  v.points.set(c.points.subarray(from, to)); v.verdicts.set(c.verdicts.subarray(from, to));
  v.verdictReasons.set(c.verdictReasons.subarray(from, to)); v.tcpFlags.set(c.tcpFlags.subarray(from, to));
  v.localEndpoints.set(c.localEndpoints.subarray(from, to));
  v.interfaceNames = c.interfaceNames;
  v.localEndpointNames = c.localEndpointNames;
  return v;
}

/** Bytes of column data per row (the typed arrays above). */
export const ROW_BYTES = 4 * 8 + 2 * ADDRESS_WIDTH + 5 * 4 + 6;

/** What the columns' rows hold in their typed arrays; dictionaries are counted by `dictionaryBytes`. */
export function columnBytes(c: FlowColumns): number {
  return c.rows * ROW_BYTES;
}

/** A bound on what the dictionaries take (strings as UTF-16 plus ~64 bytes an entry). */
export function dictionaryBytes(c: FlowColumns): number {
  let n = 0;
  for (const s of c.interfaceNames) n += 64 + 2 * s.length;
  for (const e of c.localEndpointNames) n += 4 * 64 + 2 * (e.namespace.length + e.podName.length + e.podUid.length + (e.ips[0]?.length ?? 0));
  return n;
}

/** The sum of a u64 column, read in 32-bit halves (no BigInt per row). */
export function sumColumn(col: BigUint64Array): bigint {
  const h = new Uint32Array(col.buffer, col.byteOffset, col.length * 2);
  let lo = 0, hi = 0;
  for (let i = 0; i < h.length; i += 2) {
    lo += h[i] ?? 0;
    hi += h[i + 1] ?? 0;
    if (lo >= 2 ** 52) { hi += Math.floor(lo / 2 ** 32); lo %= 2 ** 32; }
  }
  return BigInt(hi) * 2n ** 32n + BigInt(lo);
}

export const PROTOCOL_NAMES: Readonly<Record<number, string>> = {
  1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP",
};

export function tcpFlagsFromByte(b: number): TcpFlags {
  return {
    fin: (b & 0x01) !== 0, syn: (b & 0x02) !== 0, rst: (b & 0x04) !== 0, psh: (b & 0x08) !== 0,
    ack: (b & 0x10) !== 0, urg: (b & 0x20) !== 0, ece: (b & 0x40) !== 0, cwr: (b & 0x80) !== 0,
  };
}

/** The flags byte of a record's TCP flags (tcpFlagsFromByte's inverse). */
export function tcpFlagsByte(f: TcpFlags): number {
  return (+f.fin) | (+f.syn << 1) | (+f.rst << 2) | (+f.psh << 3) | (+f.ack << 4) | (+f.urg << 5) | (+f.ece << 6) | (+f.cwr << 7);
}

/** The text form of the address at row `i` of an address column (IPv4 from its mapped form when `version` is 4). */
export function formatAddress(col: Uint8Array, i: number, version: number): string {
  const o = i * ADDRESS_WIDTH;
  if (version === 4) return `${col[o + 12]}.${col[o + 13]}.${col[o + 14]}.${col[o + 15]}`;
  const groups: number[] = [];
  for (let g = 0; g < 8; g++) groups.push(((col[o + 2 * g] ?? 0) << 8) | (col[o + 2 * g + 1] ?? 0));
  return formatIPv6Groups(groups);
}

/** Writes an address given as text into row `i` of an address column (IPv4 mapped); false if it is none. */
export function writeAddress(col: Uint8Array, i: number, text: string): 4 | 6 | undefined {
  const o = i * ADDRESS_WIDTH;
  const v4 = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    col.fill(0, o, o + 10);
    col[o + 10] = 0xff; col[o + 11] = 0xff;
    for (let b = 0; b < 4; b++) col[o + 12 + b] = Number(v4[b + 1]);
    return 4;
  }
  if (!text.includes(":")) return undefined;
  const [head = "", tail] = text.split("::");
  const parse = (s: string) => (s === "" ? [] : s.split(":").map((g) => parseInt(g, 16)));
  const h = parse(head), t = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  if (groups.length !== 8 || groups.some((g) => !(g >= 0 && g <= 0xffff))) return undefined;
  for (let g = 0; g < 8; g++) { col[o + 2 * g] = (groups[g] ?? 0) >> 8; col[o + 2 * g + 1] = (groups[g] ?? 0) & 0xff; }
  return 6;
}

function timestamp(ns: bigint) {
  return { seconds: ns / 1_000_000_000n, nanos: Number(ns % 1_000_000_000n) };
}

/** The local end the agent named for row `i`, as an Endpoint. */
export function localEndAt(c: FlowColumns, i: number): Endpoint | undefined {
  const k = c.localEndpoints[i] ?? 0;
  const ep = k === 0 ? undefined : c.localEndpointNames[k - 1];
  if (!ep) return undefined;
  return { ip: ep.ips[0] ?? "", namespace: ep.namespace, podName: ep.podName, podUid: ep.podUid, labels: {},
    workloadKind: "", workloadName: "", node: "", service: "", world: false };
}

/**
 * Row `i`'s numbers as its FlowRecord holds them, flat: no object and no BigInt made, so a
 * reader that stores rows (the control plane's durable store) pays nothing for the record.
 * The one home of the rules that turn a row into a record: the reporter follows the point,
 * ICMP carries its type and code in the port columns (its ports are 0), the IP version's
 * enum, TCP flags only for TCP (`tcpFlags` -1: none). Strings and 64-bit counts are in
 * RowValues; times, addresses and the local end are left to the caller, who may hold
 * them in another form (`recordAt`, controlplane/store/enriched-columns.ts).
 */
export interface RowNumbers {
  point: number;
  reporter: ReporterSide;
  /** Index into the columns' interfaceNames. */
  interfaceIndex: number;
  ifindex: number;
  ipVersion: IpVersion;
  protocol: number;
  sourcePort: number;
  destinationPort: number;
  icmpType: number;
  icmpCode: number;
  /** The flags byte for TCP; -1 for every other protocol (the record has no tcpFlags). */
  tcpFlags: number;
  verdict: number;
  verdictReason: number;
}

/** A RowNumbers to read rows into (reused: one per reader, not one per row). */
export function newRowNumbers(): RowNumbers {
  return {
    point: 0, reporter: ReporterSide.REPORTER_SIDE_UNSPECIFIED, interfaceIndex: 0, ifindex: 0,
    ipVersion: IpVersion.IP_VERSION_UNSPECIFIED, protocol: 0, sourcePort: 0, destinationPort: 0, icmpType: 0, icmpCode: 0,
    tcpFlags: -1, verdict: 0, verdictReason: 0,
  };
}

/** The side that reports a row, from its observation point: the pod's own side. */
export function reporterOf(point: number): ReporterSide {
  return point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION;
}

/** Reads row `i` of `c` into `into` (see RowNumbers) and returns it. */
export function readRowNumbers(c: FlowColumns, i: number, into: RowNumbers): RowNumbers {
  const proto = c.protocols[i] ?? 0;
  const version = c.ipVersions[i] ?? 0;
  const isIcmp = proto === 1 || proto === 58;
  const point = c.points[i] ?? 0;
  const sport = c.sourcePorts[i] ?? 0, dport = c.destinationPorts[i] ?? 0;
  into.point = point;
  into.reporter = reporterOf(point);
  into.interfaceIndex = c.interfaces[i] ?? 0;
  into.ifindex = c.ifindexes[i] ?? 0;
  into.ipVersion = version === 6 ? IpVersion.IP_VERSION_IPV6 : version === 4 ? IpVersion.IP_VERSION_IPV4 : IpVersion.IP_VERSION_UNSPECIFIED;
  into.protocol = proto;
  into.sourcePort = isIcmp ? 0 : sport;
  into.destinationPort = isIcmp ? 0 : dport;
  into.icmpType = isIcmp ? sport : 0;
  into.icmpCode = isIcmp ? dport : 0;
  into.tcpFlags = proto === 6 ? c.tcpFlags[i] ?? 0 : -1;
  into.verdict = c.verdicts[i] ?? 0;
  into.verdictReason = c.verdictReasons[i] ?? 0;
  return into;
}

/** Row `i`'s values as its FlowRecord holds them: its numbers (RowNumbers) with the names and 64-bit counts. */
export interface RowValues extends RowNumbers {
  interfaceName: string;
  protocolName: string;
  packets: bigint;
  bytes: bigint;
  sequence: bigint;
}

/** A RowValues to read rows into (reused: one per reader, not one per row). */
export function newRowValues(): RowValues {
  return { ...newRowNumbers(), interfaceName: "", protocolName: "", packets: 0n, bytes: 0n, sequence: 0n };
}

/** Every protocol number's name as records give it (one string each, built once). */
export const PROTOCOL_NAME_OF: readonly string[] = Array.from({ length: 256 }, (_, p) => PROTOCOL_NAMES[p] ?? String(p));

/** Reads row `i` of `c` into `into` (see RowValues) and returns it. */
export function readRowValues(c: FlowColumns, i: number, into: RowValues): RowValues {
  readRowNumbers(c, i, into);
  into.interfaceName = c.interfaceNames[into.interfaceIndex] ?? "";
  into.protocolName = PROTOCOL_NAME_OF[into.protocol]!;
  into.packets = c.packets[i] ?? 0n;
  into.bytes = c.bytes[i] ?? 0n;
  into.sequence = c.firstSequence + BigInt(i);
  return into;
}

/**
 * The FlowRecord of row values (a new object; `v` may be reused after), without what
 * RowValues leaves to the caller: times, address text, ends and attribution are set by it.
 */
export function recordOfValues(v: RowValues, node: string): FlowRecord & { ip: { source: string; destination: string } } {
  return {
    startTime: undefined,
    endTime: undefined,
    node,
    point: v.point,
    reporter: v.reporter,
    interface: v.interfaceName,
    ifindex: v.ifindex,
    ip: { source: "", destination: "", version: v.ipVersion },
    l4: {
      protocol: v.protocol,
      protocolName: v.protocolName,
      sourcePort: v.sourcePort,
      destinationPort: v.destinationPort,
      tcpFlags: v.tcpFlags >= 0 ? tcpFlagsFromByte(v.tcpFlags) : undefined,
      icmpType: v.icmpType,
      icmpCode: v.icmpCode,
    },
    packets: v.packets,
    bytes: v.bytes,
    source: undefined,
    destination: undefined,
    verdict: v.verdict,
    verdictReason: v.verdictReason,
    attribution: undefined,
    sequence: v.sequence,
  };
}

const scratch = newRowValues();

/** The FlowRecord of row `i`, as the agent of protocol version 1 sent it. */
export function recordAt(c: FlowColumns, i: number, node: string): FlowRecord {
  const r = recordOfValues(readRowValues(c, i, scratch), node);
  const version = c.ipVersions[i] ?? 0;
  r.startTime = timestamp(c.startNs[i] ?? 0n);
  r.endTime = timestamp(c.endNs[i] ?? 0n);
  r.ip.source = formatAddress(c.sourceAddresses, i, version);
  r.ip.destination = formatAddress(c.destinationAddresses, i, version);
  const end = localEndAt(c, i);
  if (scratch.reporter === ReporterSide.REPORTER_SIDE_SOURCE) r.source = end;
  else r.destination = end;
  return r;
}

/**
 * FlowRecords as columns: for producers that hold records (tools, tests, the agent's
 * version-1 callers). Sequences must be consecutive from the first; the node is the
 * stream's, not the record's.
 */
export function columnsFromRecords(records: readonly FlowRecord[]): FlowColumns {
  const c = allocColumns(records.length);
  c.firstSequence = records[0]?.sequence ?? 0n;
  const ifaces = new Map<string, number>();
  const ends = new Map<string, number>();
  const ns = (t: { seconds: bigint; nanos: number } | undefined) => (t ? t.seconds * 1_000_000_000n + BigInt(t.nanos) : 0n);
  records.forEach((r, i) => {
    if (r.sequence !== c.firstSequence + BigInt(i)) {
      throw new Error(`record ${i}: sequence ${r.sequence} does not follow ${c.firstSequence + BigInt(i - 1)}: columns number rows consecutively`);
    }
    c.startNs[i] = ns(r.startTime);
    c.endNs[i] = ns(r.endTime);
    c.packets[i] = r.packets;
    c.bytes[i] = r.bytes;
    const v = r.ip?.version === IpVersion.IP_VERSION_IPV6 ? 6 : r.ip?.version === IpVersion.IP_VERSION_IPV4 ? 4 : 0;
    c.ipVersions[i] = v;
    writeAddress(c.sourceAddresses, i, r.ip?.source ?? "");
    writeAddress(c.destinationAddresses, i, r.ip?.destination ?? "");
    const l4 = r.l4;
    const isIcmp = l4?.protocol === 1 || l4?.protocol === 58;
    c.protocols[i] = l4?.protocol ?? 0;
    c.sourcePorts[i] = (isIcmp ? l4?.icmpType : l4?.sourcePort) ?? 0;
    c.destinationPorts[i] = (isIcmp ? l4?.icmpCode : l4?.destinationPort) ?? 0;
    const f = l4?.tcpFlags;
    c.tcpFlags[i] = f ? tcpFlagsByte(f) : 0;
    c.ifindexes[i] = r.ifindex;
    let k = ifaces.get(r.interface);
    if (k === undefined) { k = c.interfaceNames.push(r.interface) - 1; ifaces.set(r.interface, k); }
    c.interfaces[i] = k;
    c.points[i] = r.point;
    c.verdicts[i] = r.verdict;
    c.verdictReasons[i] = r.verdictReason;
    const end = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? r.source : r.destination;
    if (end) {
      const key = `${end.ip}/${end.namespace}/${end.podName}/${end.podUid}`;
      let e = ends.get(key);
      if (e === undefined) {
        e = c.localEndpointNames.push({ namespace: end.namespace, podName: end.podName, podUid: end.podUid, ips: [end.ip] });
        ends.set(key, e);
      }
      c.localEndpoints[i] = e;
    }
  });
  return c;
}
