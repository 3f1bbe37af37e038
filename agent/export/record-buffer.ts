// The control-plane sink's outage buffer: flow records kept as their wire encoding (each
// one a `FlowBatch.records` entry, tag and length included) instead of as objects, and
// bounded in bytes. An object graph costs ~1.8 KB of RSS a record (1 GiB per ~600k, the
// DaemonSet's whole limit); the encoding 170-290 bytes (IPv4 unnamed, IPv4 with its pod
// named, IPv6 named; ~4 more for framing and offset), and its size is known
// exactly, so the bound is a count of bytes held rather than a guess per record. The
// bytes are what the wire carries anyway: a batch is sent (and re-sent after a reconnect)
// as they are, never decoded or encoded again.
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";

/** Field tags (number << 3 | wire type) of proto/bulkhead/v1/agent.proto, checked by test/records.test.ts. */
const FLOWS_TAG = (2 << 3) | 2; // ConnectRequest.flows
const BATCH_ID_TAG = (1 << 3) | 0; // FlowBatch.batch_id
const RECORDS_TAG = (2 << 3) | 2; // FlowBatch.records
const SENT_AT_TAG = (3 << 3) | 2; // FlowBatch.sent_at

/**
 * What one chunk or batch costs besides its bytes: the JS objects around them (the
 * chunk, two typed arrays, their ArrayBuffers, a slot in the queue). Measured at ~475
 * bytes on Node 20 (200,000 chunks of 1-byte arrays: heap after a full GC).
 */
export const CHUNK_OVERHEAD_BYTES = 512;

/** Records encoded together: `bytes` holds them one after another, `ends[i]` is where record i ends. */
export interface EncodedRecords {
  readonly bytes: Uint8Array;
  readonly ends: Uint32Array;
}

export function costOf(chunk: EncodedRecords): number {
  return chunk.bytes.byteLength + chunk.ends.byteLength + CHUNK_OVERHEAD_BYTES;
}

const writer = new BinaryWriter();

/** Encodes records as consecutive `FlowBatch.records` entries, in an array of their own exact size. */
export function encodeRecords(records: readonly FlowRecord[]): EncodedRecords {
  for (const r of records) FlowRecord.encode(r, writer.uint32(RECORDS_TAG).fork()).join();
  const bytes = writer.finish();
  const ends = new Uint32Array(records.length);
  // Walk the framing that was just written (a one-byte tag, a varint length) to find each end.
  let pos = 0;
  for (let i = 0; i < records.length; i++) {
    pos++;
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = bytes[pos++] ?? 0;
      len += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    pos += len;
    ends[i] = pos;
  }
  return { bytes, ends };
}

/** A `ConnectRequest` carrying `FlowBatch { batch_id, records, sent_at }`, its records already encoded. */
export function encodeBatchRequest(batchId: bigint, records: Uint8Array, sentAt: Timestamp): Uint8Array {
  const w = new BinaryWriter().uint32(FLOWS_TAG).fork();
  w.uint32(BATCH_ID_TAG).uint64(batchId).raw(records);
  Timestamp.encode(sentAt, w.uint32(SENT_AT_TAG).fork()).join();
  return w.join().finish();
}

/** The records after the first `n`, copied so that the dropped ones' memory is freed. */
function withoutFirst(chunk: EncodedRecords, n: number): EncodedRecords {
  const cut = chunk.ends[n - 1] ?? 0;
  return { bytes: chunk.bytes.slice(cut), ends: chunk.ends.slice(n).map((e) => e - cut) };
}

/**
 * A FIFO of encoded records that never holds more than `capacityBytes` together with
 * whatever else its owner holds (`otherBytes`, the batches in flight): past it the oldest
 * records go, counted by `onDrop`, so an outage costs old records, never memory, and never
 * silently.
 */
export class RecordBuffer {
  /** Slots before `head` are emptied at once, so that a dropped or taken chunk is freed before the next compaction. */
  private chunks: (EncodedRecords | undefined)[] = [];
  private head = 0;
  /** Records held. */
  length = 0;
  /** Bytes held, overhead included (costOf). */
  bytes = 0;

  constructor(
    readonly capacityBytes: number,
    /** Records per chunk: a batch is made of whole chunks, so this is also the most a batch holds. */
    private readonly chunkRecords: number,
    private readonly onDrop: (n: number) => void,
  ) {}

  /** Encodes and appends `records`, then drops the oldest until this and `otherBytes` fit the capacity. */
  pushAll(records: readonly FlowRecord[], otherBytes: number): void {
    for (let i = 0; i < records.length; i += this.chunkRecords) {
      const chunk = encodeRecords(records.slice(i, i + this.chunkRecords));
      this.chunks.push(chunk);
      this.length += chunk.ends.length;
      this.bytes += costOf(chunk);
    }
    this.trim(otherBytes);
  }

  /**
   * Takes whole chunks from the front, at most `maxRecords` records but at least one chunk,
   * as one run of `FlowBatch.records` entries.
   */
  take(maxRecords: number): { records: number; bytes: Uint8Array } | undefined {
    const taken: EncodedRecords[] = [];
    let records = 0;
    for (let c = this.chunks[this.head]; c && (taken.length === 0 || records + c.ends.length <= maxRecords); c = this.chunks[this.head]) {
      taken.push(c);
      records += c.ends.length;
      this.remove(c);
    }
    this.compact();
    if (taken.length === 0) return undefined;
    const bytes = taken.length === 1 ? taken[0]!.bytes : concat(taken.map((c) => c.bytes));
    return { records, bytes };
  }

  private trim(otherBytes: number): void {
    let dropped = 0;
    while (this.bytes + otherBytes > this.capacityBytes && this.head < this.chunks.length) {
      const c = this.chunks[this.head]!;
      const over = this.bytes + otherBytes - this.capacityBytes;
      // Only as many of the chunk's oldest records as the excess needs (the rest is copied).
      let n = 0;
      while (n < c.ends.length && (c.ends[n] ?? 0) + 4 * (n + 1) < over) n++;
      n++;
      if (n >= c.ends.length) {
        dropped += c.ends.length;
        this.remove(c);
      } else {
        const rest = withoutFirst(c, n);
        this.bytes += costOf(rest) - costOf(c);
        this.length -= n;
        this.chunks[this.head] = rest;
        dropped += n;
      }
    }
    this.compact();
    if (dropped > 0) this.onDrop(dropped);
  }

  private remove(c: EncodedRecords): void {
    this.chunks[this.head++] = undefined;
    this.length -= c.ends.length;
    this.bytes -= costOf(c);
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
