// The control-plane sink's outage buffer: flow records kept as columns (typed arrays,
// flowcolumns/columns.ts; ~90 bytes a record) instead of as objects (~1.8 KB of RSS a
// record, 1 GiB per ~600k, the DaemonSet's whole limit), and bounded in bytes: the size
// of the columns is known exactly, so the bound is a count of bytes held rather than a
// guess per record. A chunk becomes one wire batch (FlowColumns, flowcolumns/wire.ts),
// encoded once when it is taken and re-sent as it is.
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { ROW_BYTES, columnBytes, columnsFromRecords, sliceColumns, type FlowColumns } from "../../flowcolumns/columns.js";
import { encodeColumnsBody } from "../../flowcolumns/wire.js";

/**
 * What one chunk or batch costs besides its rows: the JS objects around them (the
 * columns object, its 16 typed arrays and their ArrayBuffers, a slot in the queue),
 * ~150 bytes an array on Node 20. Dictionaries (interface names, the node's local
 * endpoints) are shared by every chunk of a drain and held by the agent anyway.
 */
export const CHUNK_OVERHEAD_BYTES = 2560;

export function costOf(chunk: FlowColumns): number {
  return columnBytes(chunk) + CHUNK_OVERHEAD_BYTES;
}

/** Records as one buffer chunk of columns, for callers that hold FlowRecords (tools, tests). */
export function encodeRecords(records: readonly FlowRecord[]): FlowColumns {
  return columnsFromRecords(records);
}

/**
 * A FIFO of record columns that never holds more than `capacityBytes` together with
 * whatever else its owner holds (`otherBytes`, the batches in flight): past it the oldest
 * records go, counted by `onDrop`, so an outage costs old records, never memory, and never
 * silently.
 */
export class RecordBuffer {
  /** Slots before `head` are emptied at once, so that a dropped or taken chunk is freed before the next compaction. */
  private chunks: (FlowColumns | undefined)[] = [];
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

  /** Appends a copy of `columns` (in chunks of at most chunkRecords rows; the agent decodes
   * the next drain into the same arrays), then drops the oldest until this and `otherBytes`
   * fit the capacity. */
  pushAll(columns: FlowColumns, otherBytes: number): void {
    for (let i = 0; i < columns.rows; i += this.chunkRecords) {
      const chunk = sliceColumns(columns, i, Math.min(columns.rows, i + this.chunkRecords));
      this.chunks.push(chunk);
      this.length += chunk.rows;
      this.bytes += costOf(chunk);
    }
    this.trim(otherBytes);
  }

  /** Takes the oldest chunk (at most chunkRecords rows), encoded as the body of one FlowColumns batch. */
  take(): { records: number; bytes: Uint8Array } | undefined {
    const c = this.takeColumns();
    return c && { records: c.rows, bytes: encodeColumnsBody(c) };
  }

  /** Takes the oldest chunk (at most chunkRecords rows) as it is. */
  takeColumns(): FlowColumns | undefined {
    const c = this.chunks[this.head];
    if (!c) return undefined;
    this.remove(c);
    this.compact();
    return c;
  }

  private trim(otherBytes: number): void {
    let dropped = 0;
    while (this.bytes + otherBytes > this.capacityBytes && this.head < this.chunks.length) {
      const c = this.chunks[this.head]!;
      const over = this.bytes + otherBytes - this.capacityBytes;
      // Only as many of the chunk's oldest records as the excess needs (the rest is copied).
      const n = Math.ceil(over / ROW_BYTES);
      if (n >= c.rows) {
        dropped += c.rows;
        this.remove(c);
      } else {
        const rest = sliceColumns(c, n, c.rows);
        this.bytes += costOf(rest) - costOf(c);
        this.length -= n;
        this.chunks[this.head] = rest;
        dropped += n;
      }
    }
    this.compact();
    if (dropped > 0) this.onDrop(dropped);
  }

  private remove(c: FlowColumns): void {
    this.chunks[this.head++] = undefined;
    this.length -= c.rows;
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
