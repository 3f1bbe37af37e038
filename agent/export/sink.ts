// Where drained records go. Each sink buffers on its own, so a slow or absent consumer
// (a full disk, a restarting control plane) never holds up the drain loop or the others.
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";

export interface RecordSink {
  readonly name: string;
  push(records: readonly FlowRecord[]): void;
  /** Records accepted but not yet written or acknowledged. */
  readonly pending: number;
  /** Flushes what it can within `timeoutMs`, then releases everything; resolves to the records it gave up (never delivered). */
  close(timeoutMs: number): Promise<number>;
}
