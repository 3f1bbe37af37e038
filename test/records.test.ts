// Decoding of drained flow map entries (into columns, and the FlowRecord of a row), their
// JSON export form, and their columns in the control-plane sink's outage buffer and on the wire.
import { afterEach, describe, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FlowRecord as FlowRecordMessage, IpVersion, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";
import { columnsFromRecords, type FlowColumns as Columns } from "../flowcolumns/columns.js";
import { waitFor } from "./harness/wait.js";
import { clockNow, decodeDrain, decodeFlowRecord, formatIPv6, type Clock } from "../agent/records.js";
import { bh_flow_key, bh_flow_value } from "../native/gen/abi.js";
import { FileSink, toJsonLine } from "../agent/export/file.js";
import { CHUNK_OVERHEAD_BYTES, RecordBuffer, costOf, encodeRecords } from "../agent/export/record-buffer.js";
import { ConnectRequest, FlowColumns } from "../proto/gen/bulkhead/v1/agent.js";
import { ROW_BYTES, allocColumns, recordAt } from "../flowcolumns/columns.js";
import { decodeColumns, encodeColumnsBody, encodeColumnsRequest } from "../flowcolumns/wire.js";
import { decodeAgentRequest } from "../controlplane/agent-columns.js";
import { parseByteSize } from "../config/flags.js";
import { drainKept } from "../agent/datapath.js";

const fixedClock: Clock = { monoToWallNs: (mono) => mono + 1_700_000_000_000_000_000n };

function entry(opts: { family: 4 | 6; src: number[]; dst: number[]; sport: number; dport: number; proto: number;
  point: number; packets: bigint; bytes: bigint; flags?: number }): { key: Buffer; value: Buffer } {
  const key = Buffer.alloc(bh_flow_key.size);
  Buffer.from(opts.src).copy(key, bh_flow_key.src);
  Buffer.from(opts.dst).copy(key, bh_flow_key.dst);
  key.writeUInt16LE(opts.sport, bh_flow_key.sport);
  key.writeUInt16LE(opts.dport, bh_flow_key.dport);
  key.writeUInt32LE(7, bh_flow_key.ifindex);
  key[bh_flow_key.proto] = opts.proto;
  key[bh_flow_key.family] = opts.family;
  key[bh_flow_key.point] = opts.point;
  const value = Buffer.alloc(bh_flow_value.size);
  value.writeBigUInt64LE(opts.packets, bh_flow_value.packets);
  value.writeBigUInt64LE(opts.bytes, bh_flow_value.bytes);
  value.writeBigUInt64LE(1_000_000_123n, bh_flow_value.first_seen_ns);
  value.writeBigUInt64LE(2_000_000_456n, bh_flow_value.last_seen_ns);
  value.writeUInt32LE(opts.flags ?? 0, bh_flow_value.tcp_flags);
  return { key, value };
}

const ctx = () => {
  let seq = 0n;
  return { node: "node1", interfaceName: (i: number) => (i === 7 ? "lxc0123456789a" : ""), clock: fixedClock, nextSequence: () => ++seq };
};

describe("flow records", () => {
  it("decode an IPv4 TCP entry with its flags, point and exact counters", () => {
    const { key, value } = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80,
      proto: 6, point: 1, packets: 2n ** 60n, bytes: 123n, flags: 0x13 });
    const r = decodeFlowRecord(key, value, 0, ctx());
    expect(r.ip).toEqual({ source: "10.244.1.5", destination: "10.96.0.10", version: 1 });
    expect(r.l4?.sourcePort).toBe(43210);
    expect(r.l4?.tcpFlags).toMatchObject({ syn: true, ack: true, fin: true, rst: false, psh: false });
    expect(r.packets).toBe(2n ** 60n);
    expect(r.interface).toBe("lxc0123456789a");
    expect(r.startTime).toEqual({ seconds: 1_700_000_001n, nanos: 123 });
    const json = JSON.parse(toJsonLine(r)) as Record<string, unknown>;
    // proto3 JSON mapping: 64-bit integers are strings, enums are names.
    expect(json.packets).toBe("1152921504606846976");
    expect(json.point).toBe("OBSERVATION_POINT_FROM_POD");
    expect(json.reporter).toBe("REPORTER_SIDE_SOURCE");
    expect(json.startTime).toBe("2023-11-14T22:13:21.000Z");
  });

  it("decode ICMPv6 type and code from the port slots, not as ports", () => {
    const v6 = (last: number) => [0xfd, 0, 0, 0, 0x2, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, last];
    const { key, value } = entry({ family: 6, src: v6(5), dst: v6(6), sport: 128, dport: 0, proto: 58,
      point: 2, packets: 3n, bytes: 312n });
    const r = decodeFlowRecord(key, value, 0, ctx());
    expect(r.ip?.source).toBe("fd00:0:244:1::5");
    expect(r.l4).toMatchObject({ protocolName: "ICMPv6", icmpType: 128, icmpCode: 0, sourcePort: 0, destinationPort: 0 });
    expect(r.l4?.tcpFlags).toBeUndefined();
    expect(r.reporter).toBe(2);
  });

  it("format IPv6 per RFC 5952", () => {
    const b = (groups: number[]) => { const x = Buffer.alloc(16); groups.forEach((g, i) => x.writeUInt16BE(g, 2 * i)); return x; };
    expect(formatIPv6(b([0xfe80, 0, 0, 0, 0, 0, 0, 1]), 0)).toBe("fe80::1");
    expect(formatIPv6(b([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]), 0)).toBe("2001:db8::1:0:0:1");
    expect(formatIPv6(b([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]), 0)).toBe("2001:db8:0:1:1:1:1:1");
    expect(formatIPv6(b([0, 0, 0, 0, 0, 0, 0, 0]), 0)).toBe("::");
  });

  it("make kernel times wall clock with the drain's one offset, carries between the 32-bit halves included", () => {
    const n = 64;
    const keys = Buffer.alloc(n * bh_flow_key.size), values = Buffer.alloc(n * bh_flow_value.size);
    const offset = 1_764_676_800_123_456_789n - 5_000_000_000n;
    const mono: bigint[] = [];
    for (let i = 0; i < n; i++) {
      keys[i * bh_flow_key.size + bh_flow_key.family] = 4;
      // Low halves near 2^32, so that adding the offset's low half carries.
      const m = (BigInt(i) << 32n) + 0xffffffffn - BigInt(i * 7919) + 5_000_000_000n;
      mono.push(m);
      values.writeBigUInt64LE(m, i * bh_flow_value.size + bh_flow_value.first_seen_ns);
      values.writeBigUInt64LE(m + 1n, i * bh_flow_value.size + bh_flow_value.last_seen_ns);
    }
    const c = decodeDrain(keys, values, n, { interfaceName: () => "", clockOffsetNs: offset, firstSequence: 1n });
    expect([...c.startNs]).toEqual(mono.map((m) => m + offset));
    expect([...c.endNs]).toEqual(mono.map((m) => m + 1n + offset));
  });

  it("take a kernel time to the wall clock to the microsecond: a time read after Date.now() never converts to before it", () => {
    // CLOCK_MONOTONIC, as bpf_ktime_get_ns(), read after a Date.now(); the offset read up to
    // 0.9 ms later, as a drain reads it after its packets. Built from Date.now()'s whole
    // milliseconds, the offset was up to 1 ms short, and about every other time here came
    // out before the Date.now() that preceded it (the what-if differential's window start).
    for (let i = 0; i < 300; i++) {
      const before = Date.now();
      const mono = process.hrtime.bigint();
      const until = mono + BigInt((i * 7_919) % 900_000);
      while (process.hrtime.bigint() < until) { /* the drain comes later */ }
      const wall = clockNow().monoToWallNs(mono);
      const after = Date.now();
      // 20 µs for the two clocks' readings in C and Date.now()'s own.
      expect({ i, early: wall < BigInt(before) * 1_000_000n - 20_000n, late: wall > BigInt(after + 1) * 1_000_000n }).toEqual({ i, early: false, late: false });
    }
  });

  it("decoded into a reused storage, are views of it and equal a fresh decode, nothing left from the drain before (IPv4 after IPv6, no local end)", () => {
    const v6 = entry({ family: 6, src: Array.from({ length: 16 }, (_, i) => 0xf0 + i), dst: Array.from({ length: 16 }, (_, i) => 0xe0 + i),
      sport: 1, dport: 2, proto: 17, point: 2, packets: 5n, bytes: 500n });
    const v4 = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80, proto: 6, point: 1, packets: 2n, bytes: 123n, flags: 0x12 });
    const drain = (e: { key: Buffer; value: Buffer }, n: number) => ({
      keys: Buffer.concat(Array.from({ length: n }, () => e.key)), values: Buffer.concat(Array.from({ length: n }, () => e.value)) });
    const dctx = (first: bigint) => ({ interfaceName: (i: number) => `if${i}`, clockOffsetNs: 1_000n, firstSequence: first });
    const storage = allocColumns(8);
    storage.localEndpoints.fill(3);
    const first = drain(v6, 8);
    const a = decodeDrain(first.keys, first.values, 8, dctx(1n), storage);
    expect(a.sourceAddresses.buffer).toBe(storage.sourceAddresses.buffer);
    const second = drain(v4, 5);
    const b = decodeDrain(second.keys, second.values, 5, dctx(9n), storage);
    expect(b.rows).toBe(5);
    expect(b.packets.buffer).toBe(storage.packets.buffer);
    const fresh = decodeDrain(second.keys, second.values, 5, dctx(9n));
    expect(Array.from({ length: 5 }, (_, i) => recordAt(b, i, "n"))).toEqual(Array.from({ length: 5 }, (_, i) => recordAt(fresh, i, "n")));
    expect([...b.sourceAddresses]).toEqual([...fresh.sourceAddresses]);
    expect([...b.localEndpoints]).toEqual([0, 0, 0, 0, 0]);
    expect(() => decodeDrain(first.keys, first.values, 9, dctx(1n), storage)).toThrow("viewColumns: 9 rows asked of a storage of 8");
  });

  it("decode the same from buffers that do not start on a 4-byte boundary (read as words, copied first)", () => {
    const e = entry({ family: 6, src: Array.from({ length: 16 }, (_, i) => 0xf0 + i), dst: Array.from({ length: 16 }, (_, i) => i),
      sport: 43210, dport: 443, proto: 6, point: 2, packets: 2n ** 40n + 3n, bytes: 2n ** 33n, flags: 0x12 });
    const shifted = (b: Buffer) => { const x = Buffer.alloc(b.length + 1); b.copy(x, 1); return x.subarray(1); };
    const dctx = { interfaceName: (i: number) => `if${i}`, clockOffsetNs: 7_000_000_000n, firstSequence: 1n };
    const keys = shifted(e.key), values = shifted(e.value);
    expect(keys.byteOffset % 4).not.toBe(0);
    expect(recordAt(decodeDrain(keys, values, 1, dctx), 0, "n")).toEqual(recordAt(decodeDrain(e.key, e.value, 1, dctx), 0, "n"));
  });

  it("kept as columns for the control plane, encode to a FlowColumns that any protobuf reader decodes to the same values, and the checked decoder to the same records", () => {
    const c = ctx();
    const v4 = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80, proto: 6, point: 1, packets: 2n ** 60n, bytes: 123n, flags: 0x13 });
    // Over 127 and 16383 bytes, so that the length prefixes take more than one byte.
    const records = Array.from({ length: 200 }, () => decodeFlowRecord(v4.key, v4.value, 0, c));
    records[3]!.interface = "x".repeat(300);
    const columns = encodeRecords(records);
    const sentAt = { seconds: 1_700_000_000n, nanos: 5 };
    const request = encodeColumnsRequest(2n ** 40n, encodeColumnsBody(columns), sentAt);
    const viaTsProto = ConnectRequest.decode(request);
    expect(viaTsProto.kind?.$case).toBe("columns");
    if (viaTsProto.kind?.$case !== "columns") return;
    const m = viaTsProto.kind.value;
    expect({ batchId: m.batchId, rows: m.rows, firstSequence: m.firstSequence, sentAt: m.sentAt }).toEqual({ batchId: 2n ** 40n, rows: 200, firstSequence: 1n, sentAt });
    expect(m.packets).toEqual(records.map((r) => r.packets));
    expect(m.interfaceNames).toEqual(["lxc0123456789a", "x".repeat(300)]);
    expect(m.interfaces.slice(0, 5)).toEqual([0, 0, 0, 1, 0]);
    expect([...m.sourceAddresses.subarray(0, 16)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 244, 1, 5]);
    // The control plane's path (the bytes as the stream's deserializer keeps them), and ts-proto's re-encoding.
    const raw = decodeAgentRequest(Buffer.from(request));
    expect(raw.kind?.$case).toBe("columnBytes");
    for (const bytes of [raw.kind?.$case === "columnBytes" ? raw.kind.value : new Uint8Array(0), FlowColumns.encode(m).finish()]) {
      const decoded = decodeColumns(bytes);
      expect(decoded.batchId).toBe(2n ** 40n);
      expect(Array.from({ length: 200 }, (_, i) => recordAt(decoded.columns, i, "node1"))).toEqual(records);
    }
  });

  it("in a buffer, are a copy: the drain's columns written again afterwards change nothing held", () => {
    const c = ctx();
    const v4 = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80, proto: 6, point: 1, packets: 7n, bytes: 70n });
    const columns = encodeRecords(Array.from({ length: 3 }, () => decodeFlowRecord(v4.key, v4.value, 0, c)));
    const expected = Array.from({ length: 3 }, (_, i) => recordAt(columns, i, "node1"));
    const buffer = new RecordBuffer(1 << 20, 10, () => undefined);
    buffer.pushAll(columns, 0);
    columns.packets.fill(0n);
    columns.sourceAddresses.fill(0);
    const held = buffer.takeColumns()!;
    expect(Array.from({ length: 3 }, (_, i) => recordAt(held, i, "node1"))).toEqual(expected);
  });

  it("in the outage buffer, past its byte bound drop the fewest oldest records, counted, and leave the rest in order", () => {
    const c = ctx();
    const v4 = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80, proto: 6, point: 1, packets: 1n, bytes: 60n });
    const make = (n: number) => encodeRecords(Array.from({ length: n }, () => decodeFlowRecord(v4.key, v4.value, 0, c)));
    const one = costOf(make(1)) - CHUNK_OVERHEAD_BYTES; // a record's columns
    expect(one).toBe(ROW_BYTES);
    const dropped: number[] = [];
    // Room for one chunk of 10 and 4 more records, beside 1,000 bytes held elsewhere (in flight).
    const buffer = new RecordBuffer(1000 + CHUNK_OVERHEAD_BYTES * 2 + one * 14, 10, (n) => dropped.push(n));
    buffer.pushAll(make(10), 1000);
    buffer.pushAll(make(10), 1000);
    expect(dropped).toEqual([6]);
    expect(buffer.length).toBe(14);
    expect(buffer.bytes + 1000).toBeLessThanOrEqual(buffer.capacityBytes);
    // Whole chunks, oldest first, one batch each: the 4 left of the first push (sequences
    // 8..11; 1 went to `one`, 2..7 were dropped), then the second push (12..21).
    const batches = [buffer.take(), buffer.take()];
    expect(buffer.take()).toBeUndefined();
    expect(batches.map((b) => b?.records)).toEqual([4, 10]);
    const seqs = batches.map((b) => decodeColumns(FlowColumns.encode(FlowColumns.decode(b!.bytes)).finish()).columns)
      .flatMap((cols) => Array.from({ length: cols.rows }, (_, i) => Number(cols.firstSequence) + i));
    expect(seqs).toEqual(Array.from({ length: 14 }, (_, i) => 8 + i));
    expect(buffer.bytes).toBe(0);
  });

  it("sizes in flags take Kubernetes' binary suffixes and refuse anything else, naming the flag", () => {
    expect(parseByteSize("buffer-bytes", "256Mi", 1, 2 ** 40)).toBe(256 * 2 ** 20);
    expect(parseByteSize("buffer-bytes", "1048576", 1, 2 ** 40)).toBe(2 ** 20);
    expect(parseByteSize("buffer-bytes", "256MB", 1, 2 ** 40)).toBe(256e6);
    expect(() => parseByteSize("buffer-bytes", "256 megs", 1, 2 ** 40)).toThrow(/--buffer-bytes: "256 megs" is not a size/);
    expect(() => parseByteSize("buffer-bytes", "1Ki", 2 ** 20, 2 ** 40)).toThrow(/out of range/);
  });

  it("a drain that fails midway keeps the entries the kernel already gave up, and says that it failed", () => {
    const taken = entry({ family: 4, src: [10, 244, 1, 5], dst: [10, 96, 0, 10], sport: 43210, dport: 80, proto: 6, point: 1, packets: 3n, bytes: 180n });
    const partial = { keys: taken.key, values: taken.value, count: 1 };
    const err = Object.assign(new Error("map_lookup_batch flows_0: Bad address (errno 14)"),
      { op: "map_lookup_batch", object: "flows_0", errno: 14, code: "EFAULT", partial });
    const failures: Error[] = [];
    const got = drainKept({ drain: () => { throw err; } }, failures);
    expect(got.count).toBe(1);
    expect(decodeFlowRecord(got.keys, got.values, 0, ctx()).packets).toBe(3n);
    expect(failures).toEqual([err]);
    // Nothing taken, nothing to keep: the error is thrown as before.
    expect(() => drainKept({ drain: () => { throw new Error("map flows_0 is gone"); } }, [])).toThrow("map flows_0 is gone");
  });
});

/** `rows` UDP records numbered from `first` (the agent's sequence), as one drain's columns. */
function piece(first: number, rows: number): Columns {
  return columnsFromRecords(Array.from({ length: rows }, (_, i) => FlowRecordMessage.fromPartial({
    startTime: { seconds: 1_700_000_000n, nanos: 0 }, endTime: { seconds: 1_700_000_001n, nanos: 0 }, node: "node-1",
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD, interface: "lxc1", ifindex: 7,
    ip: { source: "10.0.0.1", destination: "10.0.0.2", version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 17, protocolName: "UDP", sourcePort: 1 + ((first + i) % 60000), destinationPort: 53 },
    packets: 1n, bytes: 60n, sequence: BigInt(first + i),
  })));
}

describe("the JSON-lines export, its reader slower than the drains", () => {
  const PIECES = 100, ROWS = 1000; // 100,000 records, ~30 MB of text, 9 MB of columns
  const CAPACITY = 256 * 1024; // ~2,800 records of columns
  let dir = "";
  let reader: ChildProcess | undefined;
  afterEach(() => {
    reader?.kill("SIGKILL");
    reader = undefined;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A FIFO whose reader (cat, into `read.jsonl`) has it open, and a sink writing to it. */
  async function slowReader(capacityBytes = CAPACITY) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-export-"));
    const fifo = path.join(dir, "export.fifo"), out = path.join(dir, "read.jsonl");
    execFileSync("mkfifo", [fifo]);
    const r = spawn("sh", ["-c", 'exec cat "$0" > "$1"', fifo, out], { stdio: "ignore" });
    reader = r;
    const counts = { written: 0, queueFull: 0, error: 0 };
    const sink = new FileSink(fifo, "node-1", capacityBytes, {
      written: (n) => { counts.written += n; },
      lost: (cause, n) => { if (cause === "export_queue_full") counts.queueFull += n; else counts.error += n; },
      failed: () => undefined,
    });
    sink.push(piece(1, 10));
    // The first lines written: the reader has the FIFO open (the sink's open waited for it).
    await waitFor(() => counts.written, (n) => n === 10, 15_000, "the first 10 records written to the FIFO");
    return { sink, counts, out, reader: r };
  }

  it("holds at most its byte bound, drops the oldest (counted), and writes the rest once, in order: written + dropped = drained", async () => {
    const { sink, counts, out, reader: r } = await slowReader();
    r.kill("SIGSTOP"); // the reader stops reading: the pipe fills, the write waits
    let maxHeld = 0;
    for (let p = 0; p < PIECES; p++) {
      sink.push(piece(11 + p * ROWS, ROWS));
      maxHeld = Math.max(maxHeld, sink.heldBytes);
    }
    expect(maxHeld).toBeLessThanOrEqual(CAPACITY);
    expect(counts.queueFull).toBeGreaterThan(PIECES * ROWS - 20_000);
    r.kill("SIGCONT");
    expect(await sink.close(30_000)).toBe(0);
    await new Promise((resolve) => (r.exitCode !== null ? resolve(null) : r.once("exit", resolve)));
    const total = 10 + PIECES * ROWS;
    expect(counts.written + counts.queueFull).toBe(total);
    expect(counts.error).toBe(0);
    const lines = fs.readFileSync(out, "utf8").split("\n").filter((l) => l !== "");
    expect(lines).toHaveLength(counts.written);
    const seqs = lines.map((l) => Number((JSON.parse(l) as { sequence: string }).sequence));
    for (let i = 1; i < seqs.length; i++) expect(seqs[i]).toBeGreaterThan(seqs[i - 1]!);
    // The oldest dropped, the newest kept.
    expect(seqs.at(-1)).toBe(total);
  });

  it("a reader that never reads again: close gives up after its timeout and counts what it gave up, none lost uncounted", async () => {
    const { sink, counts, reader: r } = await slowReader();
    r.kill("SIGSTOP");
    for (let p = 0; p < PIECES; p++) sink.push(piece(11 + p * ROWS, ROWS));
    const givenUp = await sink.close(300);
    expect(givenUp).toBeGreaterThan(0);
    expect(counts.written + counts.queueFull + givenUp).toBe(10 + PIECES * ROWS);
    // The reader goes: the write that waited fails, and is not counted a second time.
    r.kill("SIGKILL");
    await new Promise((resolve) => (r.exitCode !== null || r.signalCode !== null ? resolve(null) : r.once("exit", resolve)));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(counts.written + counts.queueFull + givenUp).toBe(10 + PIECES * ROWS);
    expect(counts.error).toBe(0);
  });

  it("asks the drain to wait while more than one piece queues behind the write, and lets it on once the reader has caught up: nothing dropped", async () => {
    const { sink, counts, out, reader: r } = await slowReader(64 * 2 ** 20);
    r.kill("SIGSTOP"); // the first piece's write waits in the full pipe
    const DRAIN_PIECE = 4000;
    sink.push(piece(11, DRAIN_PIECE));
    expect(sink.room()).toBeUndefined(); // being written, nothing queued
    sink.push(piece(11 + DRAIN_PIECE, DRAIN_PIECE));
    expect(sink.room()).toBeUndefined(); // one piece queued behind it
    sink.push(piece(11 + 2 * DRAIN_PIECE, DRAIN_PIECE));
    let roomMade = false;
    const room = sink.room();
    expect(room).toBeInstanceOf(Promise);
    void room?.then(() => { roomMade = true; });
    // The reader is stopped, so no write can end: the drain must still be waiting.
    await new Promise((resolve) => setImmediate(resolve));
    expect(roomMade).toBe(false);
    r.kill("SIGCONT");
    await room; // the first piece written, the second being written, the third queued alone
    expect(sink.pending).toBeLessThanOrEqual(2 * DRAIN_PIECE);
    expect(await sink.close(30_000)).toBe(0);
    await new Promise((resolve) => (r.exitCode !== null ? resolve(null) : r.once("exit", resolve)));
    expect(counts).toEqual({ written: 10 + 3 * DRAIN_PIECE, queueFull: 0, error: 0 });
    expect(fs.readFileSync(out, "utf8").split("\n").filter((l) => l !== "")).toHaveLength(10 + 3 * DRAIN_PIECE);
  });

  it("lets a waiting drain on when close gives up on a reader that never reads again", async () => {
    const { sink, counts, reader: r } = await slowReader(64 * 2 ** 20);
    r.kill("SIGSTOP");
    for (let p = 0; p < 3; p++) sink.push(piece(11 + p * 4000, 4000));
    const room = sink.room();
    expect(room).toBeInstanceOf(Promise);
    const givenUp = await sink.close(300);
    await room;
    expect(sink.room()).toBeUndefined();
    expect(counts.written + counts.queueFull + givenUp).toBe(10 + 3 * 4000);
  });
});
