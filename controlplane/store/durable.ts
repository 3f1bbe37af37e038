// The durable flow store behind the in-memory window (issue 12): what the control plane
// needs from an engine that keeps history across restarts and, for ClickHouse, across
// control-plane replicas. The in-memory FlowHistory stays as the hot window for live maps
// and follow streams; a FlowStore holds everything older, up to its retention.
//
// Exactly once. A batch is named by (agent instance, batch id), ids counting from 1 per
// instance. `append` stores every row with that name in one atomic write, so after a crash
// the store itself says which batches are in (`lastBatchId`); the agent re-sends what was
// not acknowledged and the control plane skips ids at or below it. A batch is acknowledged
// to its agent only after `append` resolved.

import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import type { FlowFilter } from "../../proto/gen/bulkhead/v1/observer.js";
import type { Timestamp } from "../../proto/gen/google/protobuf/timestamp.js";
import type { FlowPredicate } from "./filter.js";
import { recordsOf, type EnrichedColumns } from "./enriched-columns.js";

/** One agent batch, enriched and admitted, with the name that makes storing it idempotent. */
export interface StoredBatch {
  /** The node whose agent sent it. */
  node: string;
  /** AgentHello.instance_id: random per agent process. */
  instanceId: string;
  /** FlowBatch.batch_id: from 1, one more per batch of the instance. */
  batchId: bigint;
  /** Its rows as records, or (the control plane's agents' batches) as enriched columns. */
  records?: readonly FlowRecord[];
  columns?: EnrichedColumns;
}

/** A batch's rows as records (built from its columns for stores that take records). */
export function batchRecords(b: StoredBatch): readonly FlowRecord[] {
  return b.records ?? (b.columns === undefined ? [] : recordsOf(b.columns));
}

/** How many rows a batch holds. */
export function batchRows(b: StoredBatch): number {
  return b.records?.length ?? b.columns?.rows.length ?? 0;
}

export interface StoreQuery {
  /**
   * Records whose [start, end] overlaps [since, until], exactly to the nanosecond (every
   * bound is a Timestamp, compared with `compareTimestamps` or as ns in the engine, never
   * as float milliseconds). A record without a start or end takes the other for both.
   */
  since?: Timestamp;
  until?: Timestamp;
  /**
   * Only records that end at or before this instant, exactly: the part of a range up to
   * the hot window, which serves what ends after it from memory (ControlPlane.flows).
   */
  endNotAfter?: Timestamp;
  /**
   * The request's filters (GetFlowsRequest.allow / deny), for the engine to narrow what it
   * reads. A store may push down any part it can express exactly or as a superset; the
   * exact answer is `predicate`, which the store applies to every row it returns.
   */
  allow: readonly FlowFilter[];
  deny: readonly FlowFilter[];
  /** The exact test (request filters and the caller's access scope). */
  predicate: FlowPredicate;
  /** Only the N newest matching records by end time; 0 or undefined: all. */
  last?: number;
}

export interface StoreStatus {
  /** "memory", "duckdb", "clickhouse". */
  kind: string;
  /** A file path or a URL without credentials. */
  location: string;
  /** Records held now. */
  records: bigint;
  /** Bytes on disk (or in the server) now. */
  bytes: bigint;
  /** Records and time partitions dropped by retention since the store was created. */
  retentionDroppedRecords: bigint;
  retentionDroppedPartitions: bigint;
  /** The last write or read error, "" when the last write succeeded. */
  error: string;
}

export interface FlowStore {
  readonly status: () => StoreStatus;
  /**
   * True when `query` answers `last N` streamed, with memory bounded by a page whatever N
   * is: the Observer then takes `last` above the in-memory history's capacity.
   */
  readonly streamsLast?: boolean;
  /** The highest batch id stored for an agent instance, or undefined when none is. */
  lastBatchId(instanceId: string): Promise<bigint | undefined>;
  /**
   * Stores the batches, each atomically (all its rows or none). Resolves once they are
   * durable: only then may they be acknowledged. Rejects (and acknowledges nothing) when
   * the engine cannot take them: unreachable, disk full, or a batch that does not follow
   * its instance's last stored id (its predecessor failed: storing it would leave a gap
   * that `lastBatchId` hides). Resolves to one flag per batch: true when stored now,
   * false when it was stored before (a re-send: acknowledge it, publish it nowhere).
   */
  append(batches: readonly StoredBatch[]): Promise<boolean[]>;
  /** Matching records in end-time order, in chunks. */
  query(query: StoreQuery): AsyncIterable<readonly FlowRecord[]>;
  /**
   * Only stores shared by several control-plane replicas (ClickHouse): hands over, as they
   * are stored, the records that *other* replicas append from now on, each batch once, so
   * follow streams and live maps on any replica see every replica's records. The replica
   * feeds them to its hot window as if its own agents had sent them (they are already
   * stored: never append them again). Errors go to `onError`; it keeps trying. Returns a
   * function that stops it. `endingAfterMs` (the replica's hot window start): the batches
   * others stored before the tail began whose records end after it are handed over too, at
   * once, since the replica's store queries stop there (ControlPlane.flows) and a replica
   * starting while agents stream would otherwise show neither part of them.
   */
  tail?(onRecords: (records: readonly FlowRecord[]) => void, onError?: (error: Error) => void, endingAfterMs?: number): () => void;
  /** Drops the oldest time partitions beyond the retention; returns what it dropped. */
  enforceRetention(): Promise<{ records: bigint; partitions: bigint }>;
  close(): Promise<void>;
}

/** Storage options from the command line (`--data-dir`, `--store`, `--retention`, `--retention-size`). */
export interface StoreOptions {
  /** Records older than this are dropped (by whole day partitions); undefined: kept. */
  retentionMs?: number;
  /** Oldest partitions are dropped while the store is larger; undefined: no bound. */
  retentionBytes?: bigint;
}
