// Where drained records go. Each sink buffers on its own, so a slow or absent consumer
// (a full disk, a restarting control plane) never holds up the drain loop or the others.
import type { FlowColumns } from "../../flowcolumns/columns.js";

export interface RecordSink {
  readonly name: string;
  /** One drain's records as columns, valid during the call only: the agent decodes the next
   * drain into the same arrays, so a sink copies what it keeps (and never changes them). */
  push(columns: FlowColumns): void;
  /** Undefined while the sink keeps up; else a promise that resolves once it has caught up.
   * The drain waits on it (for a while) before its next piece, so that a sink that writes
   * as it goes overlaps the drain instead of queueing all its pieces. */
  room?(): Promise<void> | undefined;
  /** Records accepted but not yet written or acknowledged. */
  readonly pending: number;
  /** Flushes what it can within `timeoutMs`, then releases everything; resolves to the records it gave up (never delivered). */
  close(timeoutMs: number): Promise<number>;
}
