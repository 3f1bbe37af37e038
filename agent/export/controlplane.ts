// Streams flow records to the control plane on the agent's stream (../controlplane/
// connection.ts), as FlowColumns batches (protocol version 2). Records wait, as columns, in a buffer bounded in bytes (record-buffer.ts;
// drop-oldest, counted) while the control plane is away; batches stay in flight until
// acknowledged and are re-sent after a reconnect, and the control plane applies each
// (instance, batch id) once, so an outage loses nothing that fits the buffer.
import * as grpc from "@grpc/grpc-js";
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { columnsFromRecords, type FlowColumns } from "../../flowcolumns/columns.js";
import { timestampOfMs } from "../../config/time.js";
import { encodeColumnsRequest } from "../../flowcolumns/wire.js";
import { CHUNK_OVERHEAD_BYTES, RecordBuffer } from "./record-buffer.js";
import type { RecordSink } from "./sink.js";
import type { ControlPlaneConnection } from "../controlplane/connection.js";

export interface ControlPlaneSinkOptions {
  /** Bytes that records waiting for the control plane may take, buffered and in flight together (record-buffer.ts). */
  bufferBytes: number;
  /** Most records in one batch (default 2,000). */
  batchRecords?: number;
  maxInFlight?: number;
  onBufferDrop(n: number): void;
  /** Records in batches the control plane refused as invalid: re-sending them would fail forever. */
  onRefused(n: number, reason: string): void;
}

/** `bytes`: the batch's FlowColumns fields but batch_id and sent_at, as sent. */
interface Batch { id: bigint; records: number; bytes: Uint8Array }

const batchCost = (b: Batch) => b.bytes.byteLength + CHUNK_OVERHEAD_BYTES;

export class ControlPlaneSink implements RecordSink {
  readonly name = "controlplane";
  private readonly buffer: RecordBuffer;
  private readonly inFlight: Batch[] = [];
  private inFlightBytes = 0;
  private nextBatchId = 1n;
  /** The control plane said which batch it refused and where to go on (BatchRefused) on this stream. */
  private resynced = false;
  sentRecords = 0n;

  constructor(private readonly connection: ControlPlaneConnection, private readonly opts: ControlPlaneSinkOptions) {
    this.buffer = new RecordBuffer(opts.bufferBytes, opts.batchRecords ?? 2000, opts.onBufferDrop);
    connection.reportBacklog(() => ({ inFlight: this.inFlight.length, buffered: this.pending }));
    connection.on("connected", () => {
      // Batches unacknowledged on the last stream go first, in their order.
      for (const b of this.inFlight) this.writeBatch(b);
      this.flush();
    });
    connection.on("ack", (id) => {
      while (this.inFlight.length && (this.inFlight[0]?.id ?? id + 1n) <= id) {
        const b = this.inFlight.shift();
        if (b) this.settle(b);
      }
      this.flush();
    });
    connection.on("refused", ({ batchId, nextBatchId, reason }) => {
      // The stream ends next (INVALID_ARGUMENT): drop only the refused batch and renumber
      // the rest from where the control plane goes on; they are re-sent on reconnect.
      const i = this.inFlight.findIndex((b) => b.id === batchId);
      const bad = batchId !== 0n && i >= 0 ? this.inFlight.splice(i, 1)[0] : undefined;
      if (bad) this.opts.onRefused(this.settle(bad, false), reason);
      let id = nextBatchId;
      for (const b of this.inFlight) b.id = id++;
      this.nextBatchId = id;
      this.resynced = true;
    });
    connection.on("disconnected", (err) => {
      if (err?.code === grpc.status.INVALID_ARGUMENT && this.inFlight.length > 0 && !this.resynced) {
        // A refusal without BatchRefused: which batch was bad is unknown, and re-sending them all could fail forever.
        const refused = this.inFlight.splice(0).reduce((n, b) => n + this.settle(b, false), 0);
        this.opts.onRefused(refused, err.details);
      }
      this.resynced = false;
    });
  }

  get pending(): number {
    return this.buffer.length + this.inFlight.reduce((n, b) => n + b.records, 0);
  }

  /** Bytes held for the control plane, buffered and in flight; never above `bufferBytes`. */
  get heldBytes(): number {
    return this.buffer.bytes + this.inFlightBytes;
  }

  /** FlowRecords (tools, tests) are turned into columns first, one chunk per run of consecutive sequences. */
  push(batch: FlowColumns | readonly FlowRecord[]): void {
    if (Array.isArray(batch)) {
      const records = batch as readonly FlowRecord[];
      for (let from = 0, to = 1; from < records.length; from = to++) {
        while (to < records.length && records[to]?.sequence === (records[to - 1]?.sequence ?? 0n) + 1n) to++;
        this.buffer.pushAll(columnsFromRecords(records.slice(from, to)), this.inFlightBytes);
      }
    } else if ((batch as FlowColumns).rows > 0) {
      this.buffer.pushAll(batch as FlowColumns, this.inFlightBytes);
    }
    this.flush();
  }

  /** Forgets an in-flight batch (acknowledged, or refused when `sent` is false); resolves to its records. */
  private settle(b: Batch, sent = true): number {
    this.inFlightBytes -= batchCost(b);
    if (sent) this.sentRecords += BigInt(b.records);
    return b.records;
  }

  private flush(): void {
    const max = this.opts.maxInFlight ?? 8;
    while (this.connection.connected && this.inFlight.length < max) {
      const taken = this.buffer.take();
      if (!taken) break;
      const batch: Batch = { id: this.nextBatchId++, ...taken };
      this.inFlight.push(batch);
      this.inFlightBytes += batchCost(batch);
      this.writeBatch(batch);
    }
  }

  private writeBatch(batch: Batch): void {
    this.connection.write(encodeColumnsRequest(batch.id, batch.bytes, timestampOfMs(Date.now())));
  }

  /**
   * Waits up to `timeoutMs` for every buffered record to be acknowledged and resolves to
   * those that were not; the connection stays open (its owner closes it).
   */
  async close(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending > 0 && this.connection.connected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.pending;
  }
}
