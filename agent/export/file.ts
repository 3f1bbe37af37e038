// Exports flow records as JSON lines in the proto3 JSON mapping (one FlowRecord a line),
// e.g. for a SIEM, streamed straight from the drained columns: each chunk's text is
// written into one reused buffer (flowcolumns/json.ts, JsonLineWriter) and from it to the
// file, a buffer at a time: no record object, no string per record. Drains wait as columns
// in a queue bounded in bytes (--export-buffer-bytes); when the file's reader is slower
// than the drains, the oldest records drop, counted as export_queue_full: never buffered
// without bound, never lost uncounted. A write failure drops the rest of that chunk
// (counted by the caller) and the file is reopened on the next one, so a fixed disk or
// path resumes the export.
import fs from "node:fs/promises";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { JsonLineWriter } from "../../flowcolumns/json.js";
import type { FlowColumns } from "../../flowcolumns/columns.js";
import { RecordBuffer } from "./record-buffer.js";
import type { RecordSink } from "./sink.js";

/** Rows per chunk of the queue (a chunk's text takes about four writes of the 1 MiB buffer: ~300 bytes a line). */
const WRITE_ROWS = 4096;
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
  private readonly queue: RecordBuffer;
  private readonly text: JsonLineWriter;
  private pumping: Promise<void> | undefined;
  /** Rows of the chunk being written, not yet counted as written or lost. */
  private inFlight = 0;
  /** Set when close() gave up waiting: what was still unwritten is counted there, and nothing more is written. */
  private abandoned = false;

  constructor(readonly path: string, node: string, capacityBytes: number, private readonly events: FileSinkEvents) {
    this.queue = new RecordBuffer(capacityBytes, WRITE_ROWS, (n) => events.lost("export_queue_full", n));
    this.text = new JsonLineWriter(node, TEXT_BYTES);
  }

  /** Records accepted and not yet written: queued, and the unwritten rest of the chunk being written. */
  get pending(): number {
    return this.queue.length + this.inFlight;
  }

  /** Bytes of columns waiting to be written (at most --export-buffer-bytes). */
  get heldBytes(): number {
    return this.queue.bytes;
  }

  push(columns: FlowColumns): void {
    if (columns.rows === 0 || this.abandoned) return;
    this.queue.pushAll(columns, 0);
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      for (let chunk = this.queue.takeColumns(); chunk && !this.abandoned; chunk = this.queue.takeColumns()) {
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
        } catch (err) {
          if (this.abandoned) return;
          const e = err as NodeJS.ErrnoException;
          await this.handle?.close().catch(() => undefined);
          this.handle = undefined;
          const lost = chunk.rows - done;
          this.inFlight = 0;
          this.events.lost("export_error", lost);
          this.events.failed(new Error(`export file ${this.path}: ${e.code ?? ""} ${e.message}`.trim()), lost);
        }
      }
    })().finally(() => { this.pumping = undefined; });
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
