// One client's live map over server-sent events: a `snapshot` first, then `delta`s built
// from FlowMapStore.onChange + changesSince, at most one per `coalesceMs`, so a busy
// cluster costs a client a few small messages a second, never the whole map. Edges that
// go idle for longer than the client's window are removed by this session's own timer
// (FlowMapStore reports an edge as removed only when it leaves the store's retention).
// Streams that show the same map (namespace, window, readable namespaces) share each
// delta: busy streams flush on a common grid of `coalesceMs`, so they ask for the same
// version range, and MapDeltas computes and serializes it once for all of them.
import type { ServerResponse } from "node:http";
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

/** The changes between two versions of one map, ready to write: computed once per map and version range. */
interface SharedDelta {
  from: number;
  to: number;
  /** Changed edges' ids and last_seen, for each stream's record of what its client has. */
  edges: { id: string; lastSeen: number }[];
  /** Ids of edges the store removed (each stream sends those its client has). */
  removed: string[];
  edgesText: string;
  nodesText: string;
}

/** The last delta of each map (namespace, window, readable namespaces) asked for, so that streams of the same map share it. */
export class MapDeltas {
  private readonly last = new Map<string, SharedDelta>();

  constructor(private readonly flowMap: FlowMapStore, private readonly backendsOf?: BackendsOf) {}

  /** The changes after `from` of the map the stream shows; undefined when they are no longer known (resynchronize). */
  since(from: number, namespace: string, window: Window, scope: Scope): SharedDelta | undefined {
    const key = `${namespace}\u0000${window.ms}\u0000${scope.kind === "cluster" ? "*" : [...scope.namespaces].sort().join(",")}`;
    const cached = this.last.get(key);
    if (cached !== undefined && cached.from === from && cached.to === this.flowMap.version) return cached;
    const changes = this.flowMap.changesSince(from, { namespace: namespace || undefined, windowMs: window.ms });
    if (changes.resync) return undefined;
    const visible = restrictFlowMap(scope, changes);
    const edges = visible.edges.map(edgeJson);
    const delta: SharedDelta = {
      from, to: changes.version,
      edges: edges.map((e) => ({ id: e.id, lastSeen: e.lastSeen })),
      removed: changes.removed.map(edgeId),
      edgesText: JSON.stringify(edges),
      nodesText: JSON.stringify(visible.nodes.map((n) => nodeJson(n, this.backendsOf, scope))),
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
  private version = 0;
  private unsubscribe: (() => void) | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
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
    for (const e of json.edges) this.sent.set(e.id, e.lastSeen);
    this.send("snapshot", json);
  }

  /**
   * At once after a quiet spell (every stream a change reaches is scheduled in the same
   * turn, so they flush together); while busy, at the next multiple of coalesceMs at least
   * coalesceMs after the last flush, so that busy streams flush on one grid and share deltas.
   */
  private schedule(): void {
    if (this.closed || this.flushTimer) return;
    const now = Date.now(), earliest = this.lastFlush + this.coalesceMs;
    const wait = earliest <= now ? 0 : Math.ceil(earliest / this.coalesceMs) * this.coalesceMs - now;
    this.flushTimer = setTimeout(() => { this.flushTimer = undefined; this.flush(); }, wait);
  }

  private flush(): void {
    if (this.closed) return;
    this.lastFlush = Date.now();
    const delta = this.deltas.since(this.version, this.namespace, this.window, this.scope);
    if (delta === undefined) {
      this.snapshot();
      return;
    }
    this.version = delta.to;
    const removed: string[] = [];
    for (const id of delta.removed) if (this.sent.delete(id)) removed.push(id);
    for (const e of delta.edges) this.sent.set(e.id, e.lastSeen);
    removed.push(...this.idle());
    if (delta.edges.length === 0 && removed.length === 0) return;
    // MapDeltaJson, with the shared parts already serialized.
    this.write("delta", `{"version":${this.version},"edges":${delta.edgesText},"nodes":${delta.nodesText},"removed":${JSON.stringify(removed)}}`);
  }

  /** Edges whose last_seen fell before the window's start: gone from the client's window. */
  private idle(): string[] {
    const start = this.flowMap.windowStart(this.window.ms);
    const out: string[] = [];
    for (const [id, lastSeen] of this.sent) {
      if (lastSeen < start) { this.sent.delete(id); out.push(id); }
    }
    return out;
  }

  private expire(): void {
    if (this.closed || this.flushTimer) return; // a pending flush checks idle edges too
    const removed = this.idle();
    if (removed.length > 0) this.send("delta", { version: this.version, edges: [], nodes: [], removed } satisfies MapDeltaJson);
  }

  private send(event: string, data: unknown): void {
    if (this.closed) return;
    this.write(event, JSON.stringify(data));
  }

  private write(event: string, json: string): void {
    if (this.closed) return;
    if (this.response.writableLength > this.maxQueuedBytes) {
      this.options.onCutOff?.(this.response.writableLength);
      this.close();
      return;
    }
    this.response.write(`event: ${event}\ndata: ${json}\n\n`);
  }
}
