// Exports flow records as JSON lines in the proto3 JSON mapping (one FlowRecord a line),
// e.g. for a SIEM. A write failure drops that batch (counted by the caller) and the
// file is reopened on the next batch, so a fixed disk or path resumes the export.
import fs from "node:fs/promises";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { BoundedQueue } from "../queue.js";
import type { RecordSink } from "./sink.js";

const WRITE_BATCH = 4096;

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
  private readonly queue: BoundedQueue<FlowRecord>;
  private pumping: Promise<void> | undefined;

  constructor(readonly path: string, capacity: number, private readonly events: FileSinkEvents) {
    this.queue = new BoundedQueue<FlowRecord>(capacity, (n) => events.lost("export_queue_full", n));
  }

  get pending(): number {
    return this.queue.length;
  }

  push(records: readonly FlowRecord[]): void {
    this.queue.pushAll(records);
    this.pump();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = (async () => {
      while (this.queue.length > 0) {
        const batch = this.queue.take(WRITE_BATCH);
        try {
          await this.write(batch);
          this.events.written(batch.length);
        } catch (err) {
          this.events.lost("export_error", batch.length);
          this.events.failed(err as Error, batch.length);
        }
      }
    })().finally(() => { this.pumping = undefined; });
  }

  async write(records: readonly FlowRecord[]): Promise<void> {
    if (records.length === 0) return;
    try {
      this.handle ??= await fs.open(this.path, "a");
      await this.handle.write(records.map(toJsonLine).join("\n") + "\n");
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
