// Where drained records go. Each sink buffers on its own, so a slow or absent consumer
// (a full disk, a restarting control plane) never holds up the drain loop or the others.
import type { FlowColumns } from "../../flowcolumns/columns.js";

export interface RecordSink {
  readonly name: string;
  /** One drain's records as columns, valid during the call only: the agent decodes the next
   * drain into the same arrays, so a sink copies what it keeps (and never changes them). */
  push(columns: FlowColumns): void;
  /** Records accepted but not yet written or acknowledged. */
  readonly pending: number;
  /** Flushes what it can within `timeoutMs`, then releases everything; resolves to the records it gave up (never delivered). */
  close(timeoutMs: number): Promise<number>;
}
