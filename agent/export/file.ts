// Exports flow records as JSON lines in the proto3 JSON mapping (one FlowRecord a line),
// e.g. for a SIEM, streamed straight from the drained columns: each chunk's text is
// written into one reused buffer (flowcolumns/json.ts, JsonLineWriter) and from it to the
// file, a buffer at a time: no record object, no string per record. Drains wait as columns
// in a queue bounded in bytes (--export-buffer-bytes); when the file's reader is slower
// than the drains, the oldest records drop, counted as export_queue_full: never buffered
// without bound, never lost uncounted. Between pieces the drain waits (room()) while more
// than one chunk waits behind the one being written, so the writes overlap the drain and
// the queue holds a few chunks, not all of a drain's (~18 MB at 100k records a drain).
// A write failure drops the rest of that chunk (counted by the caller) and the file is
// reopened on the next one, so a fixed disk or path resumes the export.
import fs from "node:fs/promises";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { JsonLineWriter } from "../../flowcolumns/json.js";
import { ROW_BYTES, allocColumns, copyColumnsInto, type FlowColumns } from "../../flowcolumns/columns.js";
import { CHUNK_OVERHEAD_BYTES } from "./record-buffer.js";
import type { RecordSink } from "./sink.js";

/** Rows per chunk of the queue at most (a chunk's text takes about four writes of the 1 MiB buffer: ~300 bytes a line). */
const WRITE_ROWS = 4096;

/**
 * The export queue: chunks of columns in storages allocated up to the byte bound and then
 * recycled (a copy per drain into new arrays left ~60 MB of dead ArrayBuffers to V8's
 * collector at 100k records/s). A chunk holds rows of one push (one drain piece: its
 * dictionaries). Past the bound the oldest queued chunk drops, counted.
 */
class ChunkQueue {
  readonly chunkRows: number;
  private readonly maxChunks: number;
  private readonly free: FlowColumns[] = [];
  /** Each chunk with the storage it is a view of. */
  private queued: { chunk: FlowColumns; storage: FlowColumns }[] = [];
  private allocated = 0;
  /** Rows queued. */
  length = 0;

  constructor(capacityBytes: number, private readonly onDrop: (n: number) => void) {
    // At least 4 chunks fit (one being written, the rest queued), each at most WRITE_ROWS.
    this.chunkRows = Math.max(1, Math.min(WRITE_ROWS, Math.floor((capacityBytes / 4 - CHUNK_OVERHEAD_BYTES) / ROW_BYTES)));
    this.maxChunks = Math.max(2, Math.floor(capacityBytes / this.chunkBytes));
  }

  get chunkBytes(): number {
    return this.chunkRows * ROW_BYTES + CHUNK_OVERHEAD_BYTES;
  }

  /** Bytes of the storages allocated (queued, being written, or free for reuse). */
  get bytes(): number {
    return this.allocated * this.chunkBytes;
  }

  push(c: FlowColumns): void {
    let dropped = 0;
    for (let i = 0; i < c.rows; i += this.chunkRows) {
      let storage = this.free.pop();
      if (!storage && this.allocated < this.maxChunks) {
        storage = allocColumns(this.chunkRows);
        this.allocated++;
      }
      if (!storage) {
        // Full: the oldest queued chunk goes (the one being written is not in the queue).
        const oldest = this.queued.shift();
        if (!oldest) throw new Error("export queue: no chunk to reuse"); // maxChunks >= 2: never
        dropped += oldest.chunk.rows;
        this.length -= oldest.chunk.rows;
        storage = oldest.storage;
      }
      const chunk = copyColumnsInto(c, i, Math.min(c.rows, i + this.chunkRows), storage);
      this.queued.push({ chunk, storage });
      this.length += chunk.rows;
    }
    if (dropped > 0) this.onDrop(dropped);
  }

  take(): { chunk: FlowColumns; storage: FlowColumns } | undefined {
    const c = this.queued.shift();
    if (c) this.length -= c.chunk.rows;
    return c;
  }

  /** A taken chunk's storage, once written: it serves again. */
  recycle(storage: FlowColumns): void {
    this.free.push(storage);
  }

  clear(): void {
    this.free.push(...this.queued.map((q) => q.storage));
    this.queued = [];
    this.length = 0;
  }
}
/** The one text buffer, reused write after write. */
const TEXT_BYTES = 1 << 20;

export interface FileSinkEvents {
  written(n: number): void;
  lost(cause: "export_queue_full" | "export_error", n: number): void;
  failed(err: Error, records: number): void;
}

export function toJsonLine(record: FlowRecord): string {
  return JSON.stringify(FlowRecord.toJSON(record));
}

export class FileSink implements RecordSink {
  readonly name = "file";
  private handle: fs.FileHandle | undefined;
  private readonly queue: ChunkQueue;
  private readonly text: JsonLineWriter;
  private pumping: Promise<void> | undefined;
  /** Rows of the chunk being written, not yet counted as written or lost. */
  private inFlight = 0;
  /** Set when close() gave up waiting: what was still unwritten is counted there, and nothing more is written. */
  private abandoned = false;
  /** Drains waiting for room (room()). */
  private waitingForRoom: (() => void)[] = [];

  constructor(readonly path: string, node: string, capacityBytes: number, private readonly events: FileSinkEvents) {
    this.queue = new ChunkQueue(capacityBytes, (n) => events.lost("export_queue_full", n));
    this.text = new JsonLineWriter(node, TEXT_BYTES);
  }

  /** Records accepted and not yet written: queued, and the unwritten rest of the chunk being written. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** Bytes of the queue's column storages (at most --export-buffer-bytes; the 1 MiB text buffer aside). */
  get heldBytes(): number {
    return this.queue.bytes;
  }

  push(columns: FlowColumns): void {
    if (columns.rows === 0 || this.abandoned) return;
    this.queue.push(columns);
    this.pump();
  }

  /** Undefined while at most one chunk waits behind the one being written; else resolves
   * once that is so again (or the sink stops writing). */
  room(): Promise<void> | undefined {
    if (this.hasRoom()) return undefined;
    return new Promise((resolve) => this.waitingForRoom.push(resolve));
  }

  private hasRoom(): boolean {
    return this.queue.length <= this.queue.chunkRows || this.abandoned || !this.pumping;
  }

  private wakeIfRoom(): void {
    if (this.waitingForRoom.length === 0 || !this.hasRoom()) return;
    const waiting = this.waitingForRoom;
    this.waitingForRoom = [];
    for (const resolve of waiting) resolve();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      for (let taken = this.queue.take(); taken && !this.abandoned; taken = this.queue.take()) {
        this.wakeIfRoom();
        const chunk = taken.chunk;
        this.inFlight = chunk.rows;
        let done = 0;
        try {
          this.handle ??= await this.open();
          while (done < chunk.rows) {
            const r = this.text.encode(chunk, done);
            await this.writeAll(this.handle, this.text.buffer, r.bytes);
            if (this.abandoned) return;
            done += r.rows;
            this.inFlight -= r.rows;
            this.events.written(r.rows);
          }
          this.queue.recycle(taken.storage);
        } catch (err) {
          if (this.abandoned) return;
          const e = err as NodeJS.ErrnoException;
          await this.handle?.close().catch(() => undefined);
          this.handle = undefined;
          const lost = chunk.rows - done;
          this.inFlight = 0;
          this.queue.recycle(taken.storage);
          this.events.lost("export_error", lost);
          this.events.failed(new Error(`export file ${this.path}: ${e.code ?? ""} ${e.message}`.trim()), lost);
        }
      }
    })().finally(() => {
      this.pumping = undefined;
      this.wakeIfRoom();
    });
  }

  private async open(): Promise<fs.FileHandle> {
    return fs.open(this.path, "a");
  }

  private async writeAll(handle: fs.FileHandle, buf: Buffer, bytes: number): Promise<void> {
    for (let off = 0; off < bytes;) {
      const { bytesWritten } = await handle.write(buf, off, bytes - off);
      off += bytesWritten;
    }
  }

  /** Writes what is queued within `timeoutMs`; resolves to the records given up (still
   * queued, or the unwritten rest of the chunk whose write had not returned). */
  async close(timeoutMs = 5000): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">((resolve) => { timer = setTimeout(() => resolve("timeout"), timeoutMs); });
    for (;;) {
      const p = this.pumping;
      if (!p) break;
      if (await Promise.race([p.then(() => "done" as const), timedOut]) === "timeout") {
        const givenUp = this.pending;
        this.abandoned = true;
        this.queue.clear();
        this.inFlight = 0;
        this.wakeIfRoom();
        // The write still pending ends when its reader reads or goes; the fd closes after it.
        void p.finally(() => this.handle?.close().catch(() => undefined));
        clearTimeout(timer);
        return givenUp;
      }
    }
    clearTimeout(timer);
    this.abandoned = true;
    await this.handle?.close();
    this.handle = undefined;
    return 0;
  }
}
