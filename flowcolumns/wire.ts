// FlowColumns (proto/bulkhead/v1/agent.proto) on the wire, without an object per row: the
// agent writes each typed array as one packed field (fixed-width packed fields are
// little-endian arrays, so a column is copied as it is), and the control plane reads them
// back into typed arrays, checking every column before anything uses it: a bad batch is
// refused naming the batch and the column (ColumnsError), never half applied.
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import { ObservationPoint, Verdict, VerdictReason } from "../proto/gen/bulkhead/v1/flow.js";
import { Timestamp } from "../proto/gen/google/protobuf/timestamp.js";
import { ADDRESS_WIDTH, type FlowColumns } from "./columns.js";

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("flow columns: this host is big-endian; packed fixed-width columns are copied as little-endian arrays");
}

/** FlowColumns field numbers, by the column names errors use (as in agent.proto). */
export const FIELD = {
  batch_id: 1, sent_at: 2, rows: 3, first_sequence: 4,
  start_time_ns: 5, end_time_ns: 6, packets: 7, bytes: 8,
  source_addresses: 9, destination_addresses: 10, source_ports: 11, destination_ports: 12, ifindexes: 13,
  interfaces: 14, interface_names: 15, protocols: 16, ip_versions: 17, points: 18, verdicts: 19,
  verdict_reasons: 20, tcp_flags: 21, local_endpoints: 22, local_endpoint_names: 23,
} as const;
export type ColumnName = keyof typeof FIELD;
/** ConnectRequest.columns. */
export const CONNECT_COLUMNS_FIELD = 4;

const LEN = 2, VARINT = 0;
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * The dictionary entries `indexes` use, in order of first use, and the indexes renumbered
 * to them (1-based when `oneBased`: 0 stays "none"), so that a batch carries only its own.
 */
function compact<T>(indexes: Uint32Array, dictionary: readonly T[], oneBased: boolean): { indexes: Uint32Array; entries: T[] } {
  const map = new Int32Array(dictionary.length + 1).fill(-1);
  const entries: T[] = [];
  const out = new Uint32Array(indexes.length);
  const base = oneBased ? 1 : 0;
  for (let i = 0; i < indexes.length; i++) {
    const k = indexes[i] ?? 0;
    if (oneBased && k === 0) continue;
    let m = map[k] ?? -1;
    if (m < 0) { m = entries.push(dictionary[k - base] as T) - 1 + base; map[k] = m; }
    out[i] = m;
  }
  return { indexes: out, entries };
}

/** FlowColumns fields 3 and on (everything but batch_id and sent_at, which each send sets). */
export function encodeColumnsBody(c: FlowColumns): Uint8Array {
  const w = new BinaryWriter();
  const col = (f: number, a: ArrayBufferView) => { if (a.byteLength > 0) w.uint32((f << 3) | LEN).bytes(bytesOf(a)); };
  w.uint32((FIELD.rows << 3) | VARINT).uint32(c.rows);
  if (c.firstSequence !== 0n) w.uint32((FIELD.first_sequence << 3) | VARINT).uint64(c.firstSequence);
  col(FIELD.start_time_ns, c.startNs); col(FIELD.end_time_ns, c.endNs);
  col(FIELD.packets, c.packets); col(FIELD.bytes, c.bytes);
  col(FIELD.source_addresses, c.sourceAddresses); col(FIELD.destination_addresses, c.destinationAddresses);
  col(FIELD.source_ports, c.sourcePorts); col(FIELD.destination_ports, c.destinationPorts); col(FIELD.ifindexes, c.ifindexes);
  const ifaces = compact(c.interfaces, c.interfaceNames, false);
  col(FIELD.interfaces, ifaces.indexes);
  for (const name of ifaces.entries) w.uint32((FIELD.interface_names << 3) | LEN).string(name);
  col(FIELD.protocols, c.protocols); col(FIELD.ip_versions, c.ipVersions); col(FIELD.points, c.points);
  col(FIELD.verdicts, c.verdicts); col(FIELD.verdict_reasons, c.verdictReasons); col(FIELD.tcp_flags, c.tcpFlags);
  const ends = compact(c.localEndpoints, c.localEndpointNames, true);
  col(FIELD.local_endpoints, ends.indexes);
  for (const e of ends.entries) LocalEndpoint.encode(e, w.uint32((FIELD.local_endpoint_names << 3) | LEN).fork()).join();
  return w.finish();
}

/** A ConnectRequest carrying FlowColumns { batch_id, sent_at, …body }. */
export function encodeColumnsRequest(batchId: bigint, body: Uint8Array, sentAt: Timestamp): Uint8Array {
  const w = new BinaryWriter().uint32((CONNECT_COLUMNS_FIELD << 3) | LEN).fork();
  w.uint32((FIELD.batch_id << 3) | VARINT).uint64(batchId);
  Timestamp.encode(sentAt, w.uint32((FIELD.sent_at << 3) | LEN).fork()).join();
  w.raw(body);
  return w.join().finish();
}

/** A FlowColumns batch refused as invalid: `batchId` 0 when even that could not be read. */
export class ColumnsError extends Error {
  /** The rows the batch claimed, once read (for the count of refused records). */
  rows = 0;
  constructor(readonly batchId: bigint, readonly column: ColumnName | "batch", what: string) {
    super(`flow batch ${batchId}: ${column === "batch" ? "" : `column ${column}: `}${what}`);
  }
}

export interface DecodedColumns {
  batchId: bigint;
  sentAt: Timestamp | undefined;
  columns: FlowColumns;
}

/** A fresh, aligned copy (Buffer.slice would share the pool's memory). */
function copyOf(b: Uint8Array): Uint8Array<ArrayBuffer> {
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return copy;
}

const NAME_OF = new Map<number, ColumnName>(Object.entries(FIELD).map(([k, v]) => [v, k as ColumnName]));
const MAX_VERDICT = Verdict.VERDICT_AUDIT;
const MAX_REASON = VerdictReason.VERDICT_REASON_SPOOFED;
const IPV4_MAPPED_WORD = 0xffff0000;
const words = (a: ArrayBufferView) => new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4);
/** Whether the 16-byte address at word `o` is IPv4-mapped (::ffff:a.b.c.d): words 0 and 1 zero, word 2 0xffff0000 (little-endian). */
const ipv4Mapped = (w: Uint32Array, o: number) => w[o] === 0 && w[o + 1] === 0 && w[o + 2] === IPV4_MAPPED_WORD;

/**
 * Reads a FlowColumns message (the bytes of ConnectRequest.columns) into typed arrays and
 * checks it whole: every column present with exactly `rows` values of its width (a cut
 * column, or one longer or shorter than the others, is refused), addresses 16 bytes wide
 * (IPv4 rows IPv4-mapped), dictionary indexes in range, enums known, at least one row.
 * Throws ColumnsError naming the batch and the column.
 */
export function decodeColumns(buf: Uint8Array): DecodedColumns {
  let batchId = 0n;
  let sentAt: Timestamp | undefined;
  let rows: number | undefined;
  let firstSequence = 0n;
  const raw = new Map<ColumnName, Uint8Array>();
  const interfaceNames: string[] = [];
  const localEndpointNames: LocalEndpoint[] = [];
  const reader = new BinaryReader(buf);
  let reading: ColumnName | "batch" = "batch";
  let after: ColumnName | undefined;
  try {
    while (reader.pos < reader.len) {
      if (reading !== "batch") after = reading;
      reading = "batch";
      const [no, type] = reader.tag();
      const name = NAME_OF.get(no);
      reading = name ?? "batch";
      const expected = no === FIELD.batch_id || no === FIELD.rows || no === FIELD.first_sequence ? VARINT : LEN;
      if (name !== undefined && type !== expected) {
        throw new ColumnsError(batchId, name, `wire type ${type}, want ${expected === LEN ? "a packed or length-delimited field (2)" : "a varint (0)"}`);
      }
      if (no === FIELD.batch_id) batchId = BigInt(reader.uint64());
      else if (no === FIELD.rows) rows = reader.uint32();
      else if (no === FIELD.first_sequence) firstSequence = BigInt(reader.uint64());
      else if (no === FIELD.sent_at) sentAt = Timestamp.decode(reader.bytes());
      else if (no === FIELD.interface_names) interfaceNames.push(reader.string());
      else if (no === FIELD.local_endpoint_names) localEndpointNames.push(LocalEndpoint.decode(reader.bytes()));
      else if (name !== undefined) {
        if (raw.has(name)) throw new ColumnsError(batchId, name, "appears twice: a column is one packed field");
        raw.set(name, reader.bytes());
      } else reader.skip(type, no);
    }
  } catch (err) {
    if (err instanceof ColumnsError) throw err;
    throw new ColumnsError(batchId, reading, `${reading === "batch" && after ? `the field after column ${after}: ` : ""}cut short or malformed (${(err as Error).message})`);
  }
  if (!rows) throw new ColumnsError(batchId, "rows", "the batch has no rows; an empty batch is never sent");
  const n = rows;
  try {
    return { batchId, sentAt, columns: checkedColumns(batchId, n, firstSequence, raw, interfaceNames, localEndpointNames) };
  } catch (err) {
    if (err instanceof ColumnsError) err.rows = n;
    throw err;
  }
}

function checkedColumns(batchId: bigint, n: number, firstSequence: bigint, raw: Map<ColumnName, Uint8Array>,
  interfaceNames: string[], localEndpointNames: LocalEndpoint[]): FlowColumns {
  /** The column's bytes as a fresh, aligned array of `width`-byte values, exactly `n` of them. */
  const column = (name: ColumnName, width: number): ArrayBuffer => {
    const b = raw.get(name) ?? new Uint8Array(0);
    if (b.byteLength % width !== 0) {
      throw new ColumnsError(batchId, name, `${b.byteLength} bytes is not a whole number of ${width}-byte values: cut short`);
    }
    if (b.byteLength !== n * width) {
      throw new ColumnsError(batchId, name, `${b.byteLength / width} values, but the batch has ${n} rows`);
    }
    return copyOf(b).buffer;
  };
  const address = (name: "source_addresses" | "destination_addresses"): Uint8Array => {
    const b = raw.get(name) ?? new Uint8Array(0);
    if (b.byteLength !== n * ADDRESS_WIDTH) {
      const width = b.byteLength / n;
      throw new ColumnsError(batchId, name, Number.isInteger(width)
        ? `addresses of ${width} bytes, want ${ADDRESS_WIDTH} (IPv6, IPv4 as ::ffff:a.b.c.d)`
        : `${b.byteLength} bytes for ${n} rows: addresses are ${ADDRESS_WIDTH} bytes each`);
    }
    return copyOf(b);
  };
  const c: FlowColumns = {
    rows: n, firstSequence,
    startNs: new BigUint64Array(column("start_time_ns", 8)), endNs: new BigUint64Array(column("end_time_ns", 8)),
    packets: new BigUint64Array(column("packets", 8)), bytes: new BigUint64Array(column("bytes", 8)),
    sourceAddresses: address("source_addresses"), destinationAddresses: address("destination_addresses"),
    sourcePorts: new Uint32Array(column("source_ports", 4)), destinationPorts: new Uint32Array(column("destination_ports", 4)),
    ifindexes: new Uint32Array(column("ifindexes", 4)),
    interfaces: new Uint32Array(column("interfaces", 4)), interfaceNames,
    protocols: new Uint8Array(column("protocols", 1)), ipVersions: new Uint8Array(column("ip_versions", 1)),
    points: new Uint8Array(column("points", 1)), verdicts: new Uint8Array(column("verdicts", 1)),
    verdictReasons: new Uint8Array(column("verdict_reasons", 1)), tcpFlags: new Uint8Array(column("tcp_flags", 1)),
    localEndpoints: new Uint32Array(column("local_endpoints", 4)), localEndpointNames,
  };
  const rowFail = (name: ColumnName, i: number, what: string) => { throw new ColumnsError(batchId, name, `row ${i}: ${what}`); };
  // Addresses and times read as 32-bit words (the copies start aligned).
  const sourceWords = words(c.sourceAddresses), destinationWords = words(c.destinationAddresses);
  const startWords = words(c.startNs), endWords = words(c.endNs);
  for (let i = 0; i < n; i++) {
    const iface = c.interfaces[i]!;
    if (iface >= interfaceNames.length) rowFail("interfaces", i, `index ${iface} is out of range: interface_names has ${interfaceNames.length}`);
    const end = c.localEndpoints[i]!;
    if (end > localEndpointNames.length) rowFail("local_endpoints", i, `index ${end} is out of range: local_endpoint_names has ${localEndpointNames.length}`);
    const v = c.ipVersions[i];
    if (v !== 4 && v !== 6) rowFail("ip_versions", i, `${v} is not 4 or 6`);
    if (v === 4) {
      if (!ipv4Mapped(sourceWords, 4 * i)) rowFail("source_addresses", i, "an IPv4 row's address is not IPv4-mapped (::ffff:a.b.c.d)");
      if (!ipv4Mapped(destinationWords, 4 * i)) rowFail("destination_addresses", i, "an IPv4 row's address is not IPv4-mapped (::ffff:a.b.c.d)");
    }
    const p = c.points[i]!;
    if (p !== ObservationPoint.OBSERVATION_POINT_FROM_POD && p !== ObservationPoint.OBSERVATION_POINT_TO_POD) rowFail("points", i, `observation point ${p} is not FROM_POD (1) or TO_POD (2)`);
    if (c.verdicts[i]! > MAX_VERDICT) rowFail("verdicts", i, `verdict ${c.verdicts[i]} is unknown`);
    if (c.verdictReasons[i]! > MAX_REASON) rowFail("verdict_reasons", i, `verdict reason ${c.verdictReasons[i]} is unknown`);
    if ((startWords[2 * i]! | startWords[2 * i + 1]!) === 0) rowFail("start_time_ns", i, "no time");
    if ((endWords[2 * i]! | endWords[2 * i + 1]!) === 0) rowFail("end_time_ns", i, "no time");
  }
  localEndpointNames.forEach((e, k) => {
    if (e.ips.length !== 1) throw new ColumnsError(batchId, "local_endpoint_names", `entry ${k + 1}: ${e.ips.length} addresses, want the local end's one`);
  });
  return c;
}
