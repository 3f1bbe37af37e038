// One client's live map over server-sent events: a `snapshot` first, then `delta`s built
// from FlowMapStore.onChange + changesSince, at most one per `coalesceMs`, so a busy
// cluster costs a client a few small messages a second, never the whole map. Edges that
// go idle for longer than the client's window are removed by this session's own timer
// (FlowMapStore reports an edge as removed only when it leaves the store's retention).
// Streams that show the same map (namespace, window, readable namespaces) share each
// delta: busy streams flush on a common grid of `coalesceMs`, so they ask for the same
// version range, and MapDeltas computes and serializes it once for all of them (the bytes
// written too: one Buffer for every stream of the map). Flushes due on a grid point run
// from one queue in slices of a few milliseconds (FlushQueue), with I/O and timers in
// between, so that no single turn of the event loop computes every namespace's delta.
import type { ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { FlowMapStore } from "../store/flowmap.js";
import { type BackendsOf, edgeId, edgeJson, mapJson, nodeJson, type MapDeltaJson } from "./map-json.js";
import { restrictFlowMap, type Scope } from "../access/index.js";
import type { Window } from "./params.js";

export interface MapStreamOptions {
  /** Shortest time between two deltas; default 500 ms. */
  coalesceMs?: number;
  /** How often idle edges are checked against the window; default 1 s. */
  expiryCheckMs?: number;
  /** Default 15 s. */
  heartbeatMs?: number;
  /** A client this far behind (bytes queued) is disconnected; it reconnects to a fresh snapshot. Default 8 MiB. */
  maxQueuedBytes?: number;
  /** Told when a client is disconnected for being maxQueuedBytes behind, so it is logged and counted. */
  onCutOff?: (queuedBytes: number) => void;
  /** Services' backends for their map nodes (MapNodeJson.backends); none without it. */
  backendsOf?: BackendsOf;
  /** Deltas shared with the other streams of the server; without it, this stream's own. */
  deltas?: MapDeltas;
}

/** A delta computed this long ago still serves a stream that asks for the same start (its next flush brings the rest). */
const DELTA_REUSE_MS = 250;

/** The end of a delta event that removes nothing. */
const NO_REMOVALS = Buffer.from("[]}\n\n");

/** The changes between two versions of one map, ready to write: computed once per map and version range. */
interface SharedDelta {
  from: number;
  to: number;
  /** Changed edges' ids and last_seen, for each stream's record of what its client has. */
  edges: { id: string; lastSeen: number }[];
  /** Ids of edges the store removed (each stream sends those its client has). */
  removed: string[];
  /** When it was computed (performance.now()). */
  at: number;
  /** `event: delta\ndata: {"version":…,"edges":…,"nodes":…,"removed":` as bytes, the same for every stream. */
  head: Buffer;
  /** The whole event for a stream that removes no edge of its own. */
  whole: Buffer;
}

/**
 * Flushes due on a grid point, run in order a slice at a time: each slice runs flushes
 * until `sliceMs` have passed, then yields (setImmediate) so that ingest, timers and
 * other requests run before the next slice. The flushes of one map (its key) run together
 * in one slice: no ingest batch lands between them, so they all end at the same version
 * and ask for the same range next time, whatever versions they started from (streams that
 * opened at different versions line up after one flush and share every delta after it).
 */
export class FlushQueue {
  /** Flushes due, by map key, in the order their first was added. */
  private due = new Map<string, (() => void)[]>();
  private count = 0;
  private scheduled = false;

  constructor(private readonly sliceMs = 5) {}

  /** Flushes added and not yet run. */
  get pending(): number { return this.count; }

  add(key: string, flush: () => void): void {
    const group = this.due.get(key);
    if (group === undefined) this.due.set(key, [flush]);
    else group.push(flush);
    this.count++;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }

  private run(): void {
    this.scheduled = false;
    const until = performance.now() + this.sliceMs;
    for (const [key, group] of this.due) {
      this.due.delete(key);
      this.count -= group.length;
      for (const flush of group) flush();
      if (performance.now() >= until) break;
    }
    if (this.due.size > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.run());
    }
  }
}

/** The key of the map a stream shows: streams with the same key share its deltas. */
export function mapKey(namespace: string, window: Window, scope: Scope): string {
  return `${namespace}\u0000${window.ms}\u0000${scope.kind === "cluster" ? "*" : [...scope.namespaces].sort().join(",")}`;
}

/** The last delta of each map (namespace, window, readable namespaces) asked for, so that streams of the same map share it. */
export class MapDeltas {
  private readonly last = new Map<string, SharedDelta>();
  /** Deltas computed (not served from `last`), since start: for tests and benchmarks. */
  computed = 0;
  /** The flushes of every stream that shares these deltas. */
  readonly flushes: FlushQueue;

  constructor(private readonly flowMap: FlowMapStore, private readonly backendsOf?: BackendsOf, flushSliceMs?: number) {
    this.flushes = new FlushQueue(flushSliceMs);
  }

  /** The changes after `from` of the map the stream shows; undefined when they are no longer known (resynchronize). */
  since(from: number, namespace: string, window: Window, scope: Scope): SharedDelta | undefined {
    const key = mapKey(namespace, window, scope);
    const cached = this.last.get(key);
    // The same start: the same changes up to cached.to, exact when they were computed. A
    // stream queued behind an ingest batch takes them and gets the rest on its next flush,
    // rather than computing a range of its own that no other stream asks for.
    if (cached !== undefined && cached.from === from
      && (cached.to === this.flowMap.version || performance.now() - cached.at <= DELTA_REUSE_MS)) return cached;
    const changes = this.flowMap.changesSince(from, { namespace: namespace || undefined, windowMs: window.ms });
    if (changes.resync) return undefined;
    const visible = restrictFlowMap(scope, changes);
    const edges = visible.edges.map(edgeJson);
    this.computed++;
    // MapDeltaJson up to its `removed`, which each stream writes for itself.
    const head = `event: delta\ndata: {"version":${changes.version},"edges":${JSON.stringify(edges)},"nodes":${
      JSON.stringify(visible.nodes.map((n) => nodeJson(n, this.backendsOf, scope)))},"removed":`;
    const headBytes = Buffer.from(head);
    const delta: SharedDelta = {
      from, to: changes.version,
      edges: edges.map((e) => ({ id: e.id, lastSeen: e.lastSeen })),
      removed: changes.removed.map(edgeId),
      at: performance.now(),
      head: headBytes,
      whole: Buffer.concat([headBytes, NO_REMOVALS]), // a copy, not a second encoding
    };
    // One entry per map: bounded by the maps streamed; forgotten all at once past a bound.
    if (this.last.size >= 4096 && !this.last.has(key)) this.last.clear();
    this.last.set(key, delta);
    return delta;
  }
}

export class MapStream {
  /** Edge id -> last_seen (ms) as the client has it. */
  private readonly sent = new Map<string, number>();
  /** At most the least last_seen in `sent`: idle() walks `sent` only when the window's start passed it. */
  private oldestSent = Infinity;
  private version = 0;
  private unsubscribe: (() => void) | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  /** In the FlushQueue, not yet run. */
  private queued = false;
  private readonly timers: NodeJS.Timeout[] = [];
  /** The grid point (ms) of the last flush, whenever the queue ran it. */
  private lastFlush = 0;
  private closed = false;
  private readonly coalesceMs: number;
  private readonly maxQueuedBytes: number;
  private readonly deltas: MapDeltas;

  constructor(
    private readonly response: ServerResponse,
    private readonly flowMap: FlowMapStore,
    private readonly namespace: string,
    private readonly window: Window,
    private scope: Scope,
    private readonly options: MapStreamOptions = {},
    private readonly onClose: () => void = () => undefined,
  ) {
    this.coalesceMs = options.coalesceMs ?? 500;
    this.maxQueuedBytes = options.maxQueuedBytes ?? 8 * 1024 * 1024;
    this.deltas = options.deltas ?? new MapDeltas(flowMap, options.backendsOf);
  }

  start(): void {
    this.response.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
    });
    this.response.on("close", () => this.close());
    this.snapshot();
    this.unsubscribe = this.flowMap.onChange(() => this.schedule());
    this.timers.push(setInterval(() => this.expire(), this.options.expiryCheckMs ?? 1000));
    this.timers.push(setInterval(() => this.send("heartbeat", { version: this.version, time: Date.now() }), this.options.heartbeatMs ?? 15_000));
  }

  /** The token's scope changed (its file was reloaded): start again from a snapshot cut to the new one. */
  rescope(scope: Scope): void {
    if (this.closed) return;
    this.scope = scope;
    this.snapshot();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe?.();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    for (const t of this.timers) clearInterval(t);
    if (!this.response.writableEnded) this.response.end();
    this.onClose();
  }

  private snapshot(): void {
    const map = this.flowMap.getMap({ namespace: this.namespace || undefined, windowMs: this.window.ms });
    this.version = this.flowMap.version;
    const json = mapJson(map, this.version, this.namespace, this.window.name, this.scope, this.options.backendsOf);
    this.sent.clear();
    this.oldestSent = Infinity;
    for (const e of json.edges) this.see(e.id, e.lastSeen);
    this.send("snapshot", json);
  }

  /**
   * At once after a quiet spell (every stream a change reaches is scheduled in the same
   * turn, so they flush together); while busy, at the next multiple of coalesceMs at least
   * coalesceMs after the last flush, so that busy streams flush on one grid and share deltas.
   */
  private schedule(): void {
    if (this.closed || this.flushTimer || this.queued) return;
    const now = Date.now(), earliest = this.lastFlush + this.coalesceMs;
    const due = earliest <= now ? now : Math.ceil(earliest / this.coalesceMs) * this.coalesceMs;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.queued = true;
      this.deltas.flushes.add(mapKey(this.namespace, this.window, this.scope), () => { this.queued = false; this.flush(due); });
    }, due - now);
  }

  private flush(due: number): void {
    if (this.closed) return;
    // The grid point, not the time the queue got to it: a stream late in the queue keeps
    // the grid of the others, so that their next flushes ask for the same range again. A
    // queue later than a whole slot moves it to the grid point before now: one flush per
    // slot even then, never one after the other while the queue catches up.
    this.lastFlush = Math.max(due, Math.floor(Date.now() / this.coalesceMs) * this.coalesceMs);
    const delta = this.deltas.since(this.version, this.namespace, this.window, this.scope);
    if (delta === undefined) {
      this.snapshot();
      return;
    }
    this.version = delta.to;
    // A shared delta computed before the store's last change: the rest comes next.
    if (this.version < this.flowMap.version) this.schedule();
    const removed: string[] = [];
    for (const id of delta.removed) if (this.sent.delete(id)) removed.push(id);
    for (const e of delta.edges) this.see(e.id, e.lastSeen);
    removed.push(...this.idle());
    if (delta.edges.length === 0 && removed.length === 0) return;
    // MapDeltaJson, the shared part as the same bytes for every stream of the map.
    if (removed.length === 0) this.write(delta.whole);
    else this.write(delta.head, `${JSON.stringify(removed)}}\n\n`);
  }

  private see(id: string, lastSeen: number): void {
    this.sent.set(id, lastSeen);
    if (lastSeen < this.oldestSent) this.oldestSent = lastSeen;
  }

  /** Edges whose last_seen fell before the window's start: gone from the client's window. */
  private idle(): string[] {
    const start = this.flowMap.windowStart(this.window.ms);
    if (this.oldestSent >= start) return [];
    const out: string[] = [];
    let oldest = Infinity;
    for (const [id, lastSeen] of this.sent) {
      if (lastSeen < start) { this.sent.delete(id); out.push(id); } else if (lastSeen < oldest) oldest = lastSeen;
    }
    this.oldestSent = oldest;
    return out;
  }

  private expire(): void {
    if (this.closed || this.flushTimer || this.queued) return; // a pending flush checks idle edges too
    const removed = this.idle();
    if (removed.length > 0) this.send("delta", { version: this.version, edges: [], nodes: [], removed } satisfies MapDeltaJson);
  }

  private send(event: string, data: unknown): void {
    if (this.closed) return;
    this.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  /** One event, whole or as a shared head and this stream's tail. */
  private write(event: string | Buffer, tail?: string): void {
    if (this.closed) return;
    if (this.response.writableLength > this.maxQueuedBytes) {
      this.options.onCutOff?.(this.response.writableLength);
      this.close();
      return;
    }
    if (tail === undefined) {
      this.response.write(event);
      return;
    }
    // Both parts in one write to the socket.
    this.response.cork();
    this.response.write(event);
    this.response.write(tail);
    process.nextTick(() => this.response.uncork());
  }
}
