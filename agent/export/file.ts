// Exports flow records as JSON lines in the proto3 JSON mapping (one FlowRecord a line),
// e.g. for a SIEM. A write failure drops that batch (counted by the caller) and the
// file is reopened on the next batch, so a fixed disk or path resumes the export.
import fs from "node:fs/promises";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";

export interface Exporter {
  readonly name: string;
  /** Resolves when the batch is written; rejects with an Error naming what failed. */
  write(records: readonly FlowRecord[]): Promise<void>;
  close(): Promise<void>;
}

export function toJsonLine(record: FlowRecord): string {
  return JSON.stringify(FlowRecord.toJSON(record));
}

export class FileExporter implements Exporter {
  readonly name = "file";
  private handle: fs.FileHandle | undefined;

  constructor(readonly path: string) {}

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

  async close(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }
}
