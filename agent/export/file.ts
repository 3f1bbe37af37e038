// Exports flow records as JSON lines in the proto3 JSON mapping (one FlowRecord a line),
// e.g. for a SIEM, written straight from the drained columns (flowcolumns/json.ts): no
// record object is built. Drains wait as columns in a queue bounded in bytes
// (--export-buffer-bytes; past it the oldest records drop, counted as export_queue_full).
// A write failure drops that chunk (counted by the caller) and the file is reopened on the
// next one, so a fixed disk or path resumes the export.
import fs from "node:fs/promises";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { jsonLines } from "../../flowcolumns/json.js";
import type { FlowColumns } from "../../flowcolumns/columns.js";
import { RecordBuffer } from "./record-buffer.js";
import type { RecordSink } from "./sink.js";

/** Rows written per chunk (and per `write` call: ~300 bytes a line). */
const WRITE_ROWS = 4096;

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
  private pumping: Promise<void> | undefined;

  constructor(readonly path: string, private readonly node: string, capacityBytes: number, private readonly events: FileSinkEvents) {
    this.queue = new RecordBuffer(capacityBytes, WRITE_ROWS, (n) => events.lost("export_queue_full", n));
  }

  get pending(): number {
    return this.queue.length;
  }

  /** Bytes of columns waiting to be written (at most --export-buffer-bytes). */
  get heldBytes(): number {
    return this.queue.bytes;
  }

  push(columns: FlowColumns): void {
    if (columns.rows === 0) return;
    this.queue.pushAll(columns, 0);
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      for (let chunk = this.queue.takeColumns(); chunk; chunk = this.queue.takeColumns()) {
        try {
          await this.write(chunk);
          this.events.written(chunk.rows);
        } catch (err) {
          this.events.lost("export_error", chunk.rows);
          this.events.failed(err as Error, chunk.rows);
        }
      }
    })().finally(() => { this.pumping = undefined; });
  }

  async write(columns: FlowColumns): Promise<void> {
    try {
      this.handle ??= await fs.open(this.path, "a");
      const parts: string[] = [];
      jsonLines(columns, this.node, (part) => parts.push(part));
      for (const part of parts) await this.handle.write(part);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      await this.handle?.close().catch(() => undefined);
      this.handle = undefined;
      throw new Error(`export file ${this.path}: ${e.code ?? ""} ${e.message}`.trim());
    }
  }

  async close(): Promise<number> {
    while (this.pumping) await this.pumping;
    await this.handle?.close();
    this.handle = undefined;
    return this.pending;
  }
}
