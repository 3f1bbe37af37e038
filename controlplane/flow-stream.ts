// GetFlows' writer: the history answer, then (with follow) live records, written at the
// client's pace. grpc-js buffers whatever is written, without limit, so a client that
// reads slowly or not at all would make the control plane hold every record meant for it.
// Here a write that returns false pauses the producer until 'drain': the history iterator
// simply waits, and live records wait in a queue of at most `maxQueuedRecords`. A client
// that stays behind past that, or makes no progress for `maxStallMs`, is cut: the
// producer stops, the queue is released, the call ends RESOURCE_EXHAUSTED (the client
// sees it after what it had been sent), and `onCut` counts it. What a cut client still
// pins is grpc-js's own buffer: 16 messages and an HTTP/2 window.
//
// With a durable store the answer starts with records older than the hot window, read
// from the store a chunk at a time and only when the client has taken the previous one;
// live records that arrive meanwhile queue (bounded as above). A record stored after the
// call began can be both live and in a stored chunk read later (a record that ends just
// before the hot window, from this replica's agents or another replica's, through the
// store's tail): while the stored part is read, live records are remembered and skipped
// when a stored chunk holds them, so a client sees each record once.
import * as grpc from "@grpc/grpc-js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import type { GetFlowsRequest, GetFlowsResponse } from "../proto/gen/bulkhead/v1/observer.js";

export interface FlowStreamLimits {
  /** Live records waiting for a client that is behind; past it the client is cut. */
  maxQueuedRecords: number;
  /** A client that accepts nothing for this long while records wait is cut. */
  maxStallMs: number;
}

/** At 100k records/s cluster-wide, a follow client without a filter may fall ~0.1 s behind. */
export const DEFAULT_FLOW_STREAM_LIMITS: FlowStreamLimits = { maxQueuedRecords: 10_000, maxStallMs: 30_000 };

export type FlowCall = grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>;

/** next() while the store's next chunk is on its way: not the client's delay. */
const WAITING_FOR_STORE = Symbol("waiting for the store");

export class FlowStream {
  private stored: AsyncIterator<readonly FlowRecord[]> | undefined;
  private chunk: readonly FlowRecord[] = [];
  private chunkAt = 0;
  private fetching = false;
  /** While the stored part is read: the live records queued so far, by recordKey. */
  private liveKeys: Set<string> | undefined;
  private history: Iterator<FlowRecord> | undefined;
  private queue: FlowRecord[] = [];
  private head = 0;
  /** End the call once the history and the queue are written (no follow, or follow until a time). */
  private ending = false;
  private stallTimer: NodeJS.Timeout | undefined;
  private done = false;

  constructor(
    private readonly call: FlowCall,
    private readonly limits: FlowStreamLimits,
    /** Told once when the client is cut for staying behind; `why` says how far. */
    private readonly onCut: (why: string) => void,
    /** Told when reading the store failed; the call then ends UNAVAILABLE. */
    private readonly onStoreError: (error: Error) => void = () => undefined,
  ) {
    call.on("drain", () => {
      // Progress: the stall clock starts again the next time the client falls behind.
      clearTimeout(this.stallTimer);
      this.stallTimer = undefined;
      this.pump();
    });
  }

  /**
   * Starts writing `stored` (the older records, from the durable store), then `history`
   * (the hot window's); then ends the call, or (follow) goes on with what `push` queues.
   */
  start(history: Iterable<FlowRecord>, follow: boolean, stored?: AsyncIterable<readonly FlowRecord[]>): void {
    this.stored = stored?.[Symbol.asyncIterator]();
    this.liveKeys = stored === undefined ? undefined : new Set();
    this.history = history[Symbol.iterator]();
    this.ending = !follow;
    this.pump();
  }

  /** No more live records will come: end the call once what waits is written. */
  finish(): void {
    this.ending = true;
    this.pump();
  }

  /** Live records, after everything before them. */
  push(records: readonly FlowRecord[]): void {
    if (this.done) return;
    const queued = this.queue.length - this.head + records.length;
    if (queued > this.limits.maxQueuedRecords) {
      this.cut(`${queued} live records waiting, over the bound of ${this.limits.maxQueuedRecords}`);
      return;
    }
    for (const r of records) this.queue.push(r);
    if (this.liveKeys) for (const r of records) this.liveKeys.add(recordKey(r));
    this.pump();
  }

  /** Stops producing (the call ended, or its owner ends it); nothing more is written. */
  stop(): void {
    this.done = true;
    void this.stored?.return?.();
    this.stored = undefined;
    this.chunk = [];
    this.liveKeys = undefined;
    this.history = undefined;
    this.queue = [];
    this.head = 0;
    clearTimeout(this.stallTimer);
  }

  private pump(): void {
    if (this.done) return;
    while (!this.call.writableNeedDrain) {
      const flow = this.next();
      if (flow === WAITING_FOR_STORE) return;
      if (flow === undefined) {
        if (this.history === undefined && this.ending) {
          this.stop();
          this.call.end();
        }
        return;
      }
      this.call.write({ flow });
    }
    // Behind: wait for 'drain', but not forever (new records do not restart the clock).
    this.stallTimer ??= setTimeout(() => this.cut(`no progress for ${this.limits.maxStallMs} ms`), this.limits.maxStallMs);
  }

  private next(): FlowRecord | undefined | typeof WAITING_FOR_STORE {
    while (this.chunkAt < this.chunk.length) {
      const r = this.chunk[this.chunkAt++];
      if (r !== undefined && !this.liveKeys?.has(recordKey(r))) return r;
    }
    if (this.stored) {
      this.fetch(this.stored);
      return WAITING_FOR_STORE;
    }
    if (this.history) {
      const r = this.history.next();
      if (!r.done) return r.value;
      this.history = undefined;
    }
    if (this.head >= this.queue.length) return undefined;
    const flow = this.queue[this.head++];
    if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return flow;
  }

  /** The store's next chunk, then pump again. */
  private fetch(stored: AsyncIterator<readonly FlowRecord[]>): void {
    if (this.fetching) return;
    this.fetching = true;
    stored.next().then((r) => {
      this.fetching = false;
      if (this.done) return;
      if (r.done) { this.stored = undefined; this.liveKeys = undefined; }
      else { this.chunk = r.value; this.chunkAt = 0; }
      this.pump();
    }, (err: Error) => {
      this.fetching = false;
      if (this.done) return;
      this.stop();
      this.onStoreError(err);
      const message = `flow store: ${err.message}`;
      this.call.emit("error", Object.assign(new Error(message), { code: grpc.status.UNAVAILABLE, details: message, metadata: new grpc.Metadata() }));
    });
  }

  private cut(why: string): void {
    if (this.done) return;
    this.stop();
    this.onCut(why);
    const message = `this client read too slowly and was cut off (${why}); read faster, narrow the filter, or query the history instead of following`;
    this.call.emit("error", Object.assign(new Error(message), { code: grpc.status.RESOURCE_EXHAUSTED, details: message, metadata: new grpc.Metadata() }));
  }
}

/** One record among all: its agent (node), the agent's record number, where and until when. */
function recordKey(r: FlowRecord): string {
  return `${r.node}/${r.sequence}/${r.point}/${r.endTime?.seconds ?? 0}/${r.endTime?.nanos ?? 0}`;
}
