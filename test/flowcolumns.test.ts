// Flow columns (flowcolumns/): the JSON lines written from them equal the FlowRecord's
// proto3 JSON, and the control plane's checked decoder refuses bad batches naming the
// batch and the column: each kind of damage by hand, then random mutations of valid
// batches (a fuzz, pure TypeScript, no kernel).
import { describe, expect, it } from "vitest";
import {
  Endpoint, FlowRecord, IpVersion, Layer3, Layer4, ObservationPoint, PolicyAttribution, ReporterSide, TcpFlags, Verdict, VerdictReason,
} from "../proto/gen/bulkhead/v1/flow.js";
import { ADDRESS_WIDTH, columnsFromRecords, recordAt, sliceColumns, type FlowColumns } from "../flowcolumns/columns.js";
import { JsonLineWriter, jsonLines } from "../flowcolumns/json.js";
import { ColumnsError, FIELD, decodeColumns, encodeColumnsBody, encodeColumnsRequest } from "../flowcolumns/wire.js";
import { decodeAgentRequest } from "../controlplane/agent-columns.js";
import { toJsonLine } from "../agent/export/file.js";
import { parseAgentArgs } from "../agent/config.js";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { seededRandom } from "./harness/seeded-random.js";

/** `n` varied records: IPv4 and IPv6, TCP, UDP, ICMP, both points, with and without a named local end. */
function variedRecords(n: number, seed = 1): FlowRecord[] {
  const r = seededRandom(seed);
  const int = (m: number) => Math.floor(r() * m);
  return Array.from({ length: n }, (_, i) => {
    const v6 = int(3) === 0;
    const proto = [6, 17, v6 ? 58 : 1, 132][int(4)]!;
    const isIcmp = proto === 1 || proto === 58;
    const fromPod = int(2) === 0;
    const src = v6 ? `fd00::${(int(65535) + 1).toString(16)}` : `10.${int(256)}.${int(256)}.${int(256)}`;
    const dst = v6 ? `2001:db8:0:1::${(int(65535) + 1).toString(16)}` : `10.96.0.${int(256)}`;
    const ms = 1_700_000_000_000 + int(10_000_000);
    const ts = (t: number, ns: number) => ({ seconds: BigInt(Math.floor(t / 1000)), nanos: (t % 1000) * 1_000_000 + ns });
    const local = int(3) === 0 ? undefined : { ip: fromPod ? src : dst, namespace: `ns${int(3)}`, podName: `pod-${int(5)}`, podUid: `uid-${int(5)}`,
      labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false };
    return FlowRecord.fromPartial({
      startTime: ts(ms, int(999_999)), endTime: ts(ms + int(1000), int(999_999)), node: "node-7",
      point: fromPod ? ObservationPoint.OBSERVATION_POINT_FROM_POD : ObservationPoint.OBSERVATION_POINT_TO_POD,
      reporter: fromPod ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
      interface: `lxc${int(4)}`, ifindex: 3 + int(4),
      ip: { source: src, destination: dst, version: v6 ? IpVersion.IP_VERSION_IPV6 : IpVersion.IP_VERSION_IPV4 },
      l4: {
        protocol: proto, protocolName: { 1: "ICMPv4", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP" }[proto] ?? "",
        sourcePort: isIcmp ? 0 : int(65536), destinationPort: isIcmp ? 0 : int(65536),
        tcpFlags: proto === 6 ? { fin: r() < 0.5, syn: r() < 0.5, rst: r() < 0.1, psh: r() < 0.5, ack: true, urg: r() < 0.1, ece: r() < 0.1, cwr: r() < 0.1 } : undefined,
        icmpType: isIcmp ? int(256) : 0, icmpCode: isIcmp ? int(16) : 0,
      },
      packets: BigInt(int(2 ** 31)) * BigInt(1 + int(2 ** 20)), bytes: BigInt(int(2 ** 31)),
      source: fromPod ? local : undefined, destination: fromPod ? undefined : local,
      verdict: [Verdict.VERDICT_FORWARDED, Verdict.VERDICT_DROPPED, Verdict.VERDICT_AUDIT][int(3)]!,
      verdictReason: [VerdictReason.VERDICT_REASON_UNSPECIFIED, VerdictReason.VERDICT_REASON_POLICY, VerdictReason.VERDICT_REASON_ESTABLISHED][int(3)]!,
      sequence: 1000n + BigInt(i),
    });
  });
}

/** The fields of FlowRecord's message fields, by their own types (a new message field must be added here). */
const MESSAGE_FIELDS: Record<string, () => object> = {
  startTime: () => ({}), endTime: () => ({}), // written as one RFC 3339 string each
  ip: () => Layer3.fromPartial({}), l4: () => Layer4.fromPartial({}), "l4.tcpFlags": () => TcpFlags.fromPartial({}),
  source: () => Endpoint.fromPartial({}), destination: () => Endpoint.fromPartial({}), attribution: () => PolicyAttribution.fromPartial({}),
};

/** Every JSON path of a FlowRecord ("l4.tcpFlags.syn"), from ts-proto's own defaults. */
function flowRecordPaths(): string[] {
  const paths: string[] = [];
  const walk = (fields: object, prefix: string) => {
    for (const [name, value] of Object.entries(fields)) {
      const path = prefix + name;
      const nested = MESSAGE_FIELDS[path];
      if (nested === undefined && value === undefined) throw new Error(`FlowRecord field ${path} is a message: add its type to MESSAGE_FIELDS`);
      const inner = nested?.();
      if (inner === undefined || Object.keys(inner).length === 0) paths.push(path);
      else walk(inner, path + ".");
    }
  };
  walk(FlowRecord.fromPartial({}), "");
  return paths.sort();
}

/** The JSON paths a record's proto3 JSON sets (defaults are left out of it). */
function setPaths(json: unknown, prefix = "", into = new Set<string>()): Set<string> {
  for (const [name, value] of Object.entries(json as object)) {
    if (typeof value === "object" && value !== null && !Array.isArray(value) && prefix + name !== "source.labels" && prefix + name !== "destination.labels") {
      setPaths(value, prefix + name + ".", into);
    } else into.add(prefix + name);
  }
  return into;
}

/** What the control plane adds to a record and the agent's columns do not carry. */
const CONTROL_PLANE_ONLY = ["attribution", ...["source", "destination"].flatMap((end) =>
  ["labels", "workloadKind", "workloadName", "node", "service", "world"].map((f) => `${end}.${f}`))];

/** The FlowColumns bytes the agent sends (what ConnectRequest.columns holds). */
function batchBytes(c: FlowColumns, batchId = 9n): Uint8Array {
  const m = decodeAgentRequest(Buffer.from(encodeColumnsRequest(batchId, encodeColumnsBody(c), { seconds: 1n, nanos: 0 })));
  if (m.kind?.$case !== "columnBytes") throw new Error("not columns");
  return m.kind.value;
}

/** The batch with field `field` replaced by `value` (bytes of a length-delimited field, or a varint), every other field as it was. */
function withField(bytes: Uint8Array, field: number, value: Uint8Array | number | undefined): Uint8Array {
  const r = new BinaryReader(bytes);
  const w = new BinaryWriter();
  try {
    while (r.pos < r.len) {
      const start = r.pos;
      const [no, type] = r.tag();
      r.skip(type, no);
      if (no !== field) w.raw(bytes.subarray(start, r.pos));
    }
  } catch {
    return bytes; // already damaged past parsing: left as it is
  }
  if (typeof value === "number") w.uint32((field << 3) | 0).uint32(value);
  else if (value) w.uint32((field << 3) | 2).bytes(value);
  return w.finish();
}

/** The raw bytes of field `field` of a batch. */
function fieldOf(bytes: Uint8Array, field: number): Uint8Array {
  const r = new BinaryReader(bytes);
  try {
    while (r.pos < r.len) {
      const [no, type] = r.tag();
      if (no === field && type === 2) return r.bytes();
      r.skip(type, no);
    }
  } catch {
    // damaged past parsing
  }
  return new Uint8Array(0);
}

const refusal = (bytes: Uint8Array) => {
  try {
    decodeColumns(bytes);
  } catch (err) {
    if (err instanceof ColumnsError) return err.message;
    throw err;
  }
  return "accepted";
};

describe("flow columns", () => {
  const records = variedRecords(500);
  const columns = columnsFromRecords(records);

  it("give back every record (IPv4, IPv6, ICMP, TCP flags, local ends) through the wire and the checked decoder", () => {
    const decoded = decodeColumns(batchBytes(columns));
    expect(decoded.batchId).toBe(9n);
    expect(Array.from({ length: records.length }, (_, i) => recordAt(decoded.columns, i, "node-7"))).toEqual(records);
  });

  it("are tested with records that set every field the agent's columns carry, so the JSON writer is held to each", () => {
    // flowcolumns/json.ts writes each field by hand next to ts-proto's toJSON; a field added
    // to FlowRecord fails here until these records set it (or it is named control-plane only).
    const seen = new Set<string>();
    for (const r of records) setPaths(FlowRecord.toJSON(r), "", seen);
    const carried = flowRecordPaths().filter((p) => !CONTROL_PLANE_ONLY.some((c) => p === c || p.startsWith(c + ".")));
    expect([...seen].sort()).toEqual(carried);
  });

  it("write JSON lines equal to each record's proto3 JSON, without building the records", () => {
    const parts: string[] = [];
    jsonLines(columns, "node-7", (p) => parts.push(p), 64);
    expect(parts).toHaveLength(Math.ceil(500 / 64));
    expect(parts.join("")).toBe(records.map((r) => toJsonLine(r) + "\n").join(""));
    // A slice (as the buffers hold them) writes its own rows, sequences included.
    const tail: string[] = [];
    jsonLines(sliceColumns(columns, 490, 500), "node-7", (p) => tail.push(p));
    expect(tail.join("")).toBe(records.slice(490).map((r) => toJsonLine(r) + "\n").join(""));
  });

  it("write JSON lines into a reused buffer, a row at most once, for edge values (zero and > 2^53 counts, day ends, sequence 0)", () => {
    const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
    const edge = [
      { packets: 0n, bytes: 0n, ms: Date.UTC(2026, 11, 31, 23, 59, 59, 999), sequence: 0n },
      { packets: 2n ** 63n + 5n, bytes: 2n ** 53n + 1n, ms: Date.UTC(2027, 0, 1), sequence: 1n },
      { packets: 0n, bytes: 7n, ms: Date.UTC(2024, 1, 29, 12, 0, 0, 5), sequence: 2n },
      { packets: 1n, bytes: 0n, ms: 0, sequence: 3n },
    ].map((e, i) => FlowRecord.fromPartial({ ...records[i], packets: e.packets, bytes: e.bytes, startTime: ts(e.ms),
      endTime: ts(e.ms + 1), sequence: e.sequence }));
    const all = [...edge, ...records.map((r, i) => ({ ...r, sequence: 4n + BigInt(i) }))];
    const c = columnsFromRecords(all);
    // A buffer that holds a few rows: the writer stops before a row that would not fit.
    const w = new JsonLineWriter("node-7", 1);
    const out: string[] = [];
    const buffers = new Set<ArrayBufferLike>();
    for (let i = 0; i < c.rows;) {
      const r = w.encode(c, i);
      expect(r.rows).toBeGreaterThan(0);
      buffers.add(w.buffer.buffer);
      out.push(w.buffer.toString("utf8", 0, r.bytes));
      i += r.rows;
    }
    expect(out.length).toBeGreaterThan(1);
    expect(buffers.size).toBe(1);
    expect(out.join("")).toBe(all.map((r) => toJsonLine(r) + "\n").join(""));
  });

  it("carry only the dictionary entries a batch uses", () => {
    const one = sliceColumns(columns, 0, 1);
    const m = decodeColumns(batchBytes(one)).columns;
    expect(m.interfaceNames).toEqual([records[0]!.interface]);
    expect(m.localEndpointNames.length).toBe(records[0]!.source || records[0]!.destination ? 1 : 0);
  });

  describe("refuse a bad batch naming it and the column", () => {
    const good = batchBytes(sliceColumns(columns, 0, 10), 42n);

    it("a column cut short", () => {
      const ports = fieldOf(good, FIELD.destination_ports);
      expect(refusal(withField(good, FIELD.destination_ports, ports.subarray(0, ports.length - 1))))
        .toBe("flow batch 42: column destination_ports: 39 bytes is not a whole number of 4-byte values: cut short");
      const start = fieldOf(good, FIELD.start_time_ns);
      expect(refusal(withField(good, FIELD.start_time_ns, start.subarray(0, 75))))
        .toBe("flow batch 42: column start_time_ns: 75 bytes is not a whole number of 8-byte values: cut short");
    });

    it("the message cut in the middle of a column", () => {
      expect(refusal(good.subarray(0, good.length - 30))).toMatch(/^flow batch 42: column local_endpoint_names: cut short or malformed/);
      const cut = good.subarray(0, good.indexOf(0xff) + 3);
      expect(refusal(cut)).toMatch(/^flow batch 42: column source_addresses: cut short or malformed/);
    });

    it("columns of different lengths", () => {
      const packets = fieldOf(good, FIELD.packets);
      expect(refusal(withField(good, FIELD.packets, packets.subarray(8))))
        .toBe("flow batch 42: column packets: 9 values, but the batch has 10 rows");
      expect(refusal(withField(good, FIELD.rows, 11))).toBe("flow batch 42: column start_time_ns: 10 values, but the batch has 11 rows");
      expect(refusal(withField(good, FIELD.protocols, undefined))).toBe("flow batch 42: column protocols: 0 values, but the batch has 10 rows");
    });

    it("a dictionary index out of range", () => {
      const ifaces = new Uint32Array(10).fill(0);
      ifaces[7] = 5;
      expect(refusal(withField(good, FIELD.interfaces, new Uint8Array(ifaces.buffer))))
        .toMatch(/^flow batch 42: column interfaces: row 7: index 5 is out of range: interface_names has \d$/);
      const ends = new Uint32Array(10).fill(0);
      ends[2] = 99;
      expect(refusal(withField(good, FIELD.local_endpoints, new Uint8Array(ends.buffer))))
        .toMatch(/^flow batch 42: column local_endpoints: row 2: index 99 is out of range: local_endpoint_names has \d+$/);
    });

    it("addresses of the wrong width", () => {
      const src = fieldOf(good, FIELD.source_addresses);
      const narrow = new Uint8Array(40);
      for (let i = 0; i < 10; i++) narrow.set(src.subarray(i * ADDRESS_WIDTH + 12, (i + 1) * ADDRESS_WIDTH), i * 4);
      expect(refusal(withField(good, FIELD.source_addresses, narrow)))
        .toBe("flow batch 42: column source_addresses: addresses of 4 bytes, want 16 (IPv6, IPv4 as ::ffff:a.b.c.d)");
      expect(refusal(withField(good, FIELD.destination_addresses, new Uint8Array(163))))
        .toBe("flow batch 42: column destination_addresses: 163 bytes for 10 rows: addresses are 16 bytes each");
    });

    it("a batch of zero rows", () => {
      expect(refusal(withField(good, FIELD.rows, undefined))).toBe("flow batch 42: column rows: the batch has no rows; an empty batch is never sent");
      expect(refusal(withField(good, FIELD.rows, 0))).toBe("flow batch 42: column rows: the batch has no rows; an empty batch is never sent");
    });

    it("values no agent writes: an IP version, an observation point, an IPv4 row not IPv4-mapped", () => {
      const versions = new Uint8Array(fieldOf(good, FIELD.ip_versions));
      versions[3] = 5;
      expect(refusal(withField(good, FIELD.ip_versions, versions))).toBe("flow batch 42: column ip_versions: row 3: 5 is not 4 or 6");
      const points = new Uint8Array(fieldOf(good, FIELD.points));
      points[0] = 0;
      expect(refusal(withField(good, FIELD.points, points))).toBe("flow batch 42: column points: row 0: observation point 0 is not FROM_POD (1) or TO_POD (2)");
      const v4row = records.slice(0, 10).findIndex((r) => r.ip?.version === IpVersion.IP_VERSION_IPV4);
      const dst = new Uint8Array(fieldOf(good, FIELD.destination_addresses));
      dst[v4row * ADDRESS_WIDTH + 10] = 0;
      expect(refusal(withField(good, FIELD.destination_addresses, dst)))
        .toBe(`flow batch 42: column destination_addresses: row ${v4row}: an IPv4 row's address is not IPv4-mapped (::ffff:a.b.c.d)`);
      const src = new Uint8Array(fieldOf(good, FIELD.source_addresses));
      src[v4row * ADDRESS_WIDTH + 3] = 1;
      expect(refusal(withField(good, FIELD.source_addresses, src)))
        .toBe(`flow batch 42: column source_addresses: row ${v4row}: an IPv4 row's address is not IPv4-mapped (::ffff:a.b.c.d)`);
    });

    it("a row without a time: a start or end of 0 ns (either 32-bit half set is a time)", () => {
      for (const [field, name] of [[FIELD.start_time_ns, "start_time_ns"], [FIELD.end_time_ns, "end_time_ns"]] as const) {
        const times = new BigUint64Array(new Uint8Array(fieldOf(good, field)).buffer);
        times[6] = 0n;
        expect(refusal(withField(good, field, new Uint8Array(times.buffer)))).toBe(`flow batch 42: column ${name}: row 6: no time`);
        times[6] = 1n << 32n; // only the high half set
        expect(refusal(withField(good, field, new Uint8Array(times.buffer)))).toBe("accepted");
      }
    });
  });

  it("fuzz: random mutations of valid batches are refused with a ColumnsError naming the batch, or decode to records within every bound", () => {
    const r = seededRandom(20261202);
    const int = (m: number) => Math.floor(r() * m);
    const base = [1, 2, 7, 64].map((n, k) => batchBytes(columnsFromRecords(variedRecords(n, 100 + k)), BigInt(k + 1)));
    const outcomes = { refused: 0, accepted: 0 };
    const columnsNamed = new Set<string>();
    for (let round = 0; round < 4000; round++) {
      const k = int(base.length);
      let bytes: Uint8Array = new Uint8Array(base[k]!); // a copy (the base is a Buffer, whose slice would share it)
      const mutations = 1 + int(3);
      for (let m = 0; m < mutations; m++) {
        const kind = int(7);
        if (kind === 6) { // a value changed inside a column no check bounds: the batch stays valid
          const field = [FIELD.packets, FIELD.bytes, FIELD.source_ports, FIELD.destination_ports, FIELD.ifindexes, FIELD.tcp_flags][int(6)]!;
          const col = new Uint8Array(fieldOf(bytes, field));
          if (col.length > 0) col[int(col.length)] = int(256);
          bytes = withField(bytes, field, col.length > 0 ? col : undefined);
        } else if (kind === 0 && bytes.length > 0) bytes[int(bytes.length)] = int(256); // flip a byte
        else if (kind === 1) bytes = bytes.subarray(0, int(bytes.length + 1)); // truncate
        else if (kind === 2) { // drop or shorten a field
          const field = 3 + int(21);
          const old = fieldOf(bytes, field);
          bytes = withField(bytes, field, int(2) === 0 || old.length === 0 ? undefined : old.subarray(int(old.length)));
        } else if (kind === 3) { // lengthen a column
          const field = 5 + int(18);
          const old = fieldOf(bytes, field);
          const longer = new Uint8Array(old.length + 1 + int(20));
          longer.set(old);
          bytes = withField(bytes, field, longer);
        } else if (kind === 4) bytes = withField(bytes, FIELD.rows, int(70)); // claim another row count
        else { // random bytes spliced in
          const at = int(bytes.length + 1);
          const junk = Uint8Array.from({ length: 1 + int(8) }, () => int(256));
          const out = new Uint8Array(bytes.length + junk.length);
          out.set(bytes.subarray(0, at)); out.set(junk, at); out.set(bytes.subarray(at), at + junk.length);
          bytes = out;
        }
      }
      let decoded;
      try {
        decoded = decodeColumns(bytes);
      } catch (err) {
        expect(err, `round ${round}: only ColumnsError`).toBeInstanceOf(ColumnsError);
        expect((err as Error).message).toMatch(/^flow batch \d+: /);
        const col = (err as ColumnsError).column;
        columnsNamed.add(col);
        outcomes.refused++;
        continue;
      }
      // Accepted: every column holds exactly `rows` values, and every row makes a record.
      const c = decoded.columns;
      expect(c.rows).toBeGreaterThan(0);
      for (const a of [c.startNs, c.endNs, c.packets, c.bytes, c.sourcePorts, c.destinationPorts, c.ifindexes, c.interfaces,
        c.protocols, c.ipVersions, c.points, c.verdicts, c.verdictReasons, c.tcpFlags, c.localEndpoints]) expect(a.length).toBe(c.rows);
      expect(c.sourceAddresses.length).toBe(c.rows * ADDRESS_WIDTH);
      for (let i = 0; i < c.rows; i++) {
        const rec = recordAt(c, i, "n");
        expect(rec.interface).toBe(c.interfaceNames[c.interfaces[i]!]);
        expect([IpVersion.IP_VERSION_IPV4, IpVersion.IP_VERSION_IPV6]).toContain(rec.ip?.version);
      }
      outcomes.accepted++;
    }
    // The mutations reach both outcomes and many columns.
    expect(outcomes.refused).toBeGreaterThan(1000);
    expect(outcomes.accepted).toBeGreaterThan(50);
    expect(columnsNamed.size).toBeGreaterThan(10);
  });
});

describe("the agent's export flags", () => {
  it("refuse the removed --export-queue, naming what replaces it", () => {
    expect(() => parseAgentArgs(["--export-queue", "600000"])).toThrow(
      "--export-queue: removed; the export file's queue is bounded in bytes now: --export-buffer-bytes SIZE (e.g. 64Mi, the default; a record takes ~90 bytes, so --export-queue 600000 is about --export-buffer-bytes 52Mi)");
    expect(parseAgentArgs(["--export-buffer-bytes", "16Mi"]).exportBufferBytes).toBe(16 * 2 ** 20);
    expect(parseAgentArgs([]).exportBufferBytes).toBe(64 * 2 ** 20);
  });
});
