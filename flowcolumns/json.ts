// JSON lines straight from columns: each row's line is what
// JSON.stringify(FlowRecord.toJSON(record)) gives (the proto3 JSON mapping, checked by
// test/flowcolumns.test.ts), written as bytes into a caller's reused buffer: no record, no
// string per row (times, addresses, numbers are written digit by digit; what repeats,
// such as interfaces, local ends, enum names and TCP flags, is encoded once).
import {
  Endpoint, IpVersion, TcpFlags, ipVersionToJSON, observationPointToJSON, reporterSideToJSON, verdictReasonToJSON, verdictToJSON,
  ObservationPoint, ReporterSide,
} from "../proto/gen/bulkhead/v1/flow.js";
import type { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import { ADDRESS_WIDTH, PROTOCOL_NAMES, formatAddress, localEndAt, tcpFlagsFromByte, type FlowColumns } from "./columns.js";

const bytes = (s: string): Buffer => Buffer.from(s, "utf8");
const TCP_FLAGS_JSON = Array.from({ length: 256 }, (_, b) => bytes(`,"tcpFlags":${JSON.stringify(TcpFlags.toJSON(tcpFlagsFromByte(b)))}`));
const enumJson = (field: string, f: (v: number) => string) =>
  Array.from({ length: 256 }, (_, v) => bytes(`,"${field}":${JSON.stringify(f(v))}`));
const POINT_JSON = enumJson("point", observationPointToJSON);
const REPORTER_SOURCE = bytes(`,"reporter":${JSON.stringify(reporterSideToJSON(ReporterSide.REPORTER_SIDE_SOURCE))}`);
const REPORTER_DESTINATION = bytes(`,"reporter":${JSON.stringify(reporterSideToJSON(ReporterSide.REPORTER_SIDE_DESTINATION))}`);
const VERDICT_JSON = enumJson("verdict", verdictToJSON);
const REASON_JSON = enumJson("verdictReason", verdictReasonToJSON);
const VERSION4 = `","version":${JSON.stringify(ipVersionToJSON(IpVersion.IP_VERSION_IPV4))}},"l4":{`;
const VERSION6 = `","version":${JSON.stringify(ipVersionToJSON(IpVersion.IP_VERSION_IPV6))}},"l4":{`;
const VERSION_NONE = `"},"l4":{`;
/** The end of ip and the start of l4 (its protocol number, none for 0, and name), by version (4, 6, other) and protocol. */
const l4Heads = (version: string) => Array.from({ length: 256 }, (_, p) =>
  bytes(`${version}${p !== 0 ? `"protocol":${p},` : ""}"protocolName":${JSON.stringify(PROTOCOL_NAMES[p] ?? String(p))}`));
const L4_HEAD4 = l4Heads(VERSION4), L4_HEAD6 = l4Heads(VERSION6), L4_HEAD_NONE = l4Heads(VERSION_NONE);
const START = bytes(`{"startTime":"`);
const END = bytes(`","endTime":"`);
const IP = bytes(`,"ip":{"source":"`);
const DESTINATION = bytes(`","destination":"`);
const SOURCE_PORT = bytes(`,"sourcePort":`);
const DESTINATION_PORT = bytes(`,"destinationPort":`);
const ICMP_TYPE = bytes(`,"icmpType":`);
const ICMP_CODE = bytes(`,"icmpCode":`);
const PACKETS = bytes(`},"packets":"`);
const BYTES = bytes(`,"bytes":"`);
const SEQUENCE = bytes(`,"sequence":"`);
const SOURCE_END = bytes(`,"source":`);
const DESTINATION_END = bytes(`,"destination":`);
const QUOTE = 0x22, NEWLINE = 0x0a, CLOSE = 0x7d, ZERO = 0x30, DOT = 0x2e;

/** Bytes a row takes at most besides its dictionary entries (interface, local end, node). */
const ROW_MAX_FIXED = 1024;
const DAY_MS = 86_400_000;
const MAX_ISO_MS = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z: past it toISOString writes a 6-digit year

/** Local ends encoded once per dictionary (the agent's endpoints list is the same array drain after drain). */
const endCache = new WeakMap<readonly LocalEndpoint[], (Buffer | undefined)[]>();

/**
 * Writes JSON lines of rows into one buffer it owns and reuses (grown only for a row
 * larger than it): encode() fills it from a row onwards as far as it holds, the caller
 * writes `buffer.subarray(0, bytes)` and calls again from the next row.
 */
export class JsonLineWriter {
  private buf: Buffer;
  private pos = 0;
  private readonly node: Buffer;
  private day = -1;
  private readonly dayText = Buffer.alloc(11); // "YYYY-MM-DDT"
  /** The last second written and its text "YYYY-MM-DDTHH:MM:SS." (a drain's times share a few seconds). */
  private second = -1;
  private readonly secondText = Buffer.alloc(20);
  /** The last IPv4 address written per column (the local end repeats row after row) and its text. */
  private readonly lastV4 = [{ address: -1, text: Buffer.alloc(15), length: 0 }, { address: -1, text: Buffer.alloc(15), length: 0 }];

  constructor(node: string, capacity = 1 << 20) {
    this.node = node === "" ? Buffer.alloc(0) : bytes(`,"node":${JSON.stringify(node)}`);
    this.buf = Buffer.allocUnsafeSlow(Math.max(capacity, 4 * ROW_MAX_FIXED));
  }

  get buffer(): Buffer {
    return this.buf;
  }

  /** Encodes rows [from, to) of `c` as far as the buffer holds (at least one row); returns the rows and bytes written. */
  encode(c: FlowColumns, from = 0, to = c.rows): { rows: number; bytes: number } {
    this.pos = 0;
    const ifaces = c.interfaceNames.map((n) => (n === "" ? Buffer.alloc(0) : bytes(`,"interface":${JSON.stringify(n)}`)));
    // What a row writes from the end of endTime to its source address depends only on its
    // interface, ifindex and point: made once per (interface, ifindex, point) of the call.
    const heads: Map<number, Buffer>[] = [];
    let ends = endCache.get(c.localEndpointNames);
    if (!ends) { ends = []; endCache.set(c.localEndpointNames, ends); }
    const start32 = new Uint32Array(c.startNs.buffer, c.startNs.byteOffset, c.rows * 2);
    const end32 = new Uint32Array(c.endNs.buffer, c.endNs.byteOffset, c.rows * 2);
    const packets32 = new Uint32Array(c.packets.buffer, c.packets.byteOffset, c.rows * 2);
    const bytes32 = new Uint32Array(c.bytes.buffer, c.bytes.byteOffset, c.rows * 2);
    const seq0 = Number(c.firstSequence);
    const seqExact = Number.isSafeInteger(seq0 + c.rows);
    let i = from;
    for (; i < to; i++) {
      const iface = ifaces[c.interfaces[i] ?? 0];
      const k = c.localEndpoints[i] ?? 0;
      let end: Buffer | undefined;
      if (k !== 0) {
        end = ends[k];
        if (end === undefined) {
          const e = localEndAt(c, i);
          end = e ? bytes(JSON.stringify(Endpoint.toJSON(e))) : Buffer.alloc(0);
          ends[k] = end;
        }
      }
      const need = ROW_MAX_FIXED + this.node.length + (iface?.length ?? 0) + (end?.length ?? 0);
      if (this.pos + need > this.buf.length) {
        if (i > from) break;
        this.buf = Buffer.allocUnsafeSlow(2 * need);
      }
      this.row(c, i, this.head(heads, c, i, iface), end, start32, end32, packets32, bytes32, seqExact ? seq0 + i : -1);
    }
    return { rows: i - from, bytes: this.pos };
  }

  /** Row i's text from the quote closing endTime to the one opening its source address. */
  private head(heads: Map<number, Buffer>[], c: FlowColumns, i: number, iface: Buffer | undefined): Buffer {
    const ifaceIndex = c.interfaces[i] ?? 0, ifindex = c.ifindexes[i] ?? 0, point = c.points[i] ?? 0;
    const byIface = heads[ifaceIndex] ??= new Map<number, Buffer>();
    const key = ifindex * 256 + point;
    let head = byIface.get(key);
    if (head === undefined) {
      const fromPod = point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
      head = Buffer.concat([Buffer.from([QUOTE]), this.node, point !== 0 ? POINT_JSON[point]! : Buffer.alloc(0),
        fromPod ? REPORTER_SOURCE : REPORTER_DESTINATION, iface ?? Buffer.alloc(0),
        ifindex !== 0 ? bytes(`,"ifindex":${ifindex}`) : Buffer.alloc(0), IP]);
      byIface.set(key, head);
    }
    return head;
  }

  private row(c: FlowColumns, i: number, head: Buffer, end: Buffer | undefined, start32: Uint32Array,
    end32: Uint32Array, packets32: Uint32Array, bytes32: Uint32Array, seq: number): void {
    const proto = c.protocols[i] ?? 0, version = c.ipVersions[i] ?? 0;
    const point = c.points[i] ?? 0;
    const fromPod = point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const isIcmp = proto === 1 || proto === 58;
    const sport = c.sourcePorts[i] ?? 0, dport = c.destinationPorts[i] ?? 0;
    this.put(START);
    this.iso(start32, i);
    this.put(END);
    this.iso(end32, i);
    this.put(head);
    this.address(c.sourceAddresses, i, version, 0);
    this.put(DESTINATION);
    this.address(c.destinationAddresses, i, version, 1);
    this.put((version === 4 ? L4_HEAD4 : version === 6 ? L4_HEAD6 : L4_HEAD_NONE)[proto]!);
    if (!isIcmp && sport !== 0) { this.put(SOURCE_PORT); this.uint(sport); }
    if (!isIcmp && dport !== 0) { this.put(DESTINATION_PORT); this.uint(dport); }
    if (proto === 6) this.put(TCP_FLAGS_JSON[c.tcpFlags[i] ?? 0]!);
    if (isIcmp && sport !== 0) { this.put(ICMP_TYPE); this.uint(sport); }
    if (isIcmp && dport !== 0) { this.put(ICMP_CODE); this.uint(dport); }
    const pLo = packets32[2 * i] ?? 0, pHi = packets32[2 * i + 1] ?? 0;
    const bLo = bytes32[2 * i] ?? 0, bHi = bytes32[2 * i + 1] ?? 0;
    if (pLo !== 0 || pHi !== 0) {
      // PACKETS closes l4: write it even when the count is 0 is wrong, so l4 closes apart then.
      this.put(PACKETS);
      this.u64(c.packets, i, pLo, pHi);
      this.buf[this.pos++] = QUOTE;
    } else {
      this.buf[this.pos++] = CLOSE;
    }
    if (bLo !== 0 || bHi !== 0) {
      this.put(BYTES);
      this.u64(c.bytes, i, bLo, bHi);
      this.buf[this.pos++] = QUOTE;
    }
    if (end !== undefined && end.length !== 0) {
      this.put(fromPod ? SOURCE_END : DESTINATION_END);
      this.put(end);
    }
    const verdict = c.verdicts[i] ?? 0, reason = c.verdictReasons[i] ?? 0;
    if (verdict !== 0) this.put(VERDICT_JSON[verdict]!);
    if (seq !== 0) {
      this.put(SEQUENCE);
      if (seq > 0) this.uint(seq); else this.ascii(String(c.firstSequence + BigInt(i)));
      this.buf[this.pos++] = QUOTE;
    }
    if (reason !== 0) this.put(REASON_JSON[reason]!);
    this.buf[this.pos++] = CLOSE;
    this.buf[this.pos++] = NEWLINE;
  }

  private put(b: Buffer): void {
    const n = b.length;
    // A byte loop only for the shortest: from 8 bytes on, set() cost less (a micro-bench of
    // 100k-row drains: 1.8 -> 1.1 CPU-s per million rows with the cut at 24 -> 8).
    if (n < 8) {
      for (let j = 0; j < n; j++) this.buf[this.pos + j] = b[j]!;
    } else {
      this.buf.set(b, this.pos);
    }
    this.pos += n;
  }

  /** ASCII text (rare paths only: a string per call). */
  private ascii(s: string): void {
    this.pos += this.buf.write(s, this.pos, "latin1");
  }

  /** A non-negative safe integer in decimal. */
  private uint(n: number): void {
    if (n < 10) { this.buf[this.pos++] = ZERO + n; return; }
    let digits = 1;
    for (let p = 10; p <= n; p *= 10) digits++;
    let at = this.pos + digits;
    this.pos = at;
    while (n >= 10) {
      const q = Math.floor(n / 10);
      this.buf[--at] = ZERO + (n - q * 10);
      n = q;
    }
    this.buf[--at] = ZERO + n;
  }

  private u64(col: BigUint64Array, i: number, lo: number, hi: number): void {
    if (hi < 0x200000) this.uint(hi * 2 ** 32 + lo); // below 2^53: exact in a double
    else this.ascii(String(col[i] ?? 0n));
  }

  private two(n: number): void {
    const t = Math.floor(n / 10);
    this.buf[this.pos++] = ZERO + t;
    this.buf[this.pos++] = ZERO + (n - 10 * t);
  }

  /** Row i of a u64 ns column as Date.toISOString gives it (millisecond precision). */
  private iso(col32: Uint32Array, i: number): void {
    const lo = col32[2 * i] ?? 0, hi = col32[2 * i + 1] ?? 0;
    // hi·2^32 + lo = hi·(4294·10^6 + 967296) + lo: every term exact in a double.
    const ms = hi * 4294 + Math.floor((hi * 967296 + lo) / 1e6);
    if (ms > MAX_ISO_MS) { this.ascii(new Date(ms).toISOString()); return; }
    const second = Math.floor(ms / 1000);
    if (second !== this.second) this.writeSecond(second);
    this.put(this.secondText);
    const t = ms - second * 1000;
    const c = Math.floor(t / 100), rest = t - 100 * c;
    this.buf[this.pos++] = ZERO + c;
    this.two(rest);
    this.buf[this.pos++] = 0x5a; // Z
  }

  /** secondText := the text of `second` (s since the epoch) up to its milliseconds. */
  private writeSecond(second: number): void {
    this.second = second;
    const day = Math.floor(second / 86_400);
    if (day !== this.day) {
      this.day = day;
      this.dayText.write(new Date(day * DAY_MS).toISOString().slice(0, 11), 0, "latin1");
    }
    const buf = this.buf, pos = this.pos;
    // put() and two() write at this.buf: pointed at secondText meanwhile.
    this.buf = this.secondText;
    this.pos = 0;
    this.put(this.dayText);
    let t = second - day * 86_400;
    const h = Math.floor(t / 3600); t -= h * 3600;
    const m = Math.floor(t / 60); t -= m * 60;
    this.two(h); this.buf[this.pos++] = 0x3a;
    this.two(m); this.buf[this.pos++] = 0x3a;
    this.two(t); this.buf[this.pos++] = DOT;
    this.buf = buf;
    this.pos = pos;
  }

  /** `column`: 0 source, 1 destination (each remembers its last IPv4 address's text). */
  private address(col: Uint8Array, i: number, version: number, column: 0 | 1): void {
    if (version !== 4) { this.ascii(formatAddress(col, i, version)); return; }
    const o = i * ADDRESS_WIDTH + 12;
    const address = (col[o] ?? 0) * 2 ** 24 + ((col[o + 1] ?? 0) << 16) + ((col[o + 2] ?? 0) << 8) + (col[o + 3] ?? 0);
    const last = this.lastV4[column]!;
    if (address !== last.address) {
      const buf = this.buf, pos = this.pos; // as in writeSecond
      this.buf = last.text;
      this.pos = 0;
      for (let b = 0; b < 4; b++) {
        if (b > 0) this.buf[this.pos++] = DOT;
        this.uint(col[o + b] ?? 0);
      }
      last.address = address;
      last.length = this.pos;
      this.buf = buf;
      this.pos = pos;
    }
    for (let j = 0; j < last.length; j++) this.buf[this.pos++] = last.text[j]!;
  }
}

/** The JSON lines of every row, "\n"-terminated, in one string per call of `emit` (at most `rowsPerPart` rows each). */
export function jsonLines(c: FlowColumns, node: string, emit: (part: string) => void, rowsPerPart = 1024): void {
  const w = new JsonLineWriter(node);
  for (let i = 0; i < c.rows;) {
    const r = w.encode(c, i, Math.min(c.rows, i + rowsPerPart));
    emit(w.buffer.toString("utf8", 0, r.bytes));
    i += r.rows;
  }
}
