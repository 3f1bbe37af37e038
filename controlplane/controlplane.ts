// The control plane, composed: metadata source → cluster state; agent streams → enrich →
// history + flow maps; Observer API over both.
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import type { GetNodesResponse, GetStatusResponse, NodeLoss } from "../proto/gen/bulkhead/v1/observer.js";
import { ClusterState } from "./cluster/state.js";
import { Enricher } from "./cluster/enrich.js";
import type { MetadataSource, ObjectEvent } from "./metadata/source.js";
import { FlowHistory } from "./store/history.js";
import { FlowMapStore } from "./store/flowmap.js";
import { AgentRegistry } from "./agents.js";
import { observerService } from "./observer.js";
import { bind, createGrpcServer } from "./grpc.js";

export interface ControlPlaneOptions {
  source: MetadataSource;
  storeCapacity: number;
  drainIntervalMs: number;
  log: Logger;
}

/** Records received per second over the last ten seconds. */
class Rate {
  private readonly buckets = new Array<number>(10).fill(0);
  private second = Math.floor(Date.now() / 1000);

  add(n: number): void {
    this.advance();
    this.buckets[this.second % 10] = (this.buckets[this.second % 10] ?? 0) + n;
  }

  perSecond(): number {
    this.advance();
    // The current second is still filling: average the nine complete ones.
    let sum = 0;
    for (let i = 1; i < 10; i++) sum += this.buckets[(this.second - i + 10) % 10] ?? 0;
    return sum / 9;
  }

  private advance(): void {
    const now = Math.floor(Date.now() / 1000);
    for (let s = this.second + 1; s <= now && s <= this.second + 10; s++) this.buckets[s % 10] = 0;
    this.second = Math.max(this.second, now);
  }
}

export class ControlPlane {
  readonly state = new ClusterState();
  readonly enricher = new Enricher(this.state);
  readonly history: FlowHistory;
  readonly flowMap = new FlowMapStore();
  readonly agents: AgentRegistry;
  private server: grpc.Server | undefined;
  private recordsTotal = 0n;
  private readonly rate = new Rate();
  private pushTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: ControlPlaneOptions) {
    this.history = new FlowHistory({
      capacity: opts.storeCapacity,
      onSubscriberError: (err) => opts.log.warn({ err: (err as Error).message }, "a follow stream failed"),
    });
    this.agents = new AgentRegistry({
      ingest: (node, records) => this.ingest(node, records),
      localEndpoints: (node) => this.state.localEndpoints(node),
      drainIntervalMs: opts.drainIntervalMs,
    }, opts.log);
  }

  async start(listen: string[]): Promise<void> {
    const log = this.opts.log;
    await this.opts.source.start({
      apply: (events: ObjectEvent[], observedAtNs: bigint) => {
        this.state.apply(events, observedAtNs);
        // Pods moved or changed: tell agents their local endpoints, at most every 100 ms.
        this.pushTimer ??= setTimeout(() => { this.pushTimer = undefined; this.agents.pushEndpoints(); }, 100);
      },
    });
    for (const e of this.opts.source.errors()) log.error({ file: e.file, document: e.document, err: e.message }, "metadata error");
    this.server = createGrpcServer({ agent: this.agents.service, observer: observerService(this) });
    for (const addr of listen) await bind(this.server, addr);
    log.info({ listen, source: this.opts.source.name, pods: this.state.pods().length }, "control plane started");
  }

  ingest(_node: string, records: FlowRecord[]): void {
    for (const r of records) this.enricher.enrich(r);
    this.history.append(records);
    this.flowMap.add(records);
    this.recordsTotal += BigInt(records.length);
    this.rate.add(records.length);
  }

  status(): GetStatusResponse {
    const losses: NodeLoss[] = [];
    for (const s of this.agents.sessions.values()) {
      for (const l of s.stats?.losses ?? []) losses.push({ node: s.node, cause: l.cause, unit: l.unit, count: l.count });
    }
    return {
      agentsConnected: this.agents.connected,
      agentsKnown: this.agents.sessions.size,
      recordsTotal: this.recordsTotal,
      recordsPerSecond: this.rate.perSecond(),
      flowsStored: BigInt(this.history.size),
      storeCapacity: BigInt(this.history.capacity),
      losses,
      metadataErrors: this.opts.source.errors().map((e) =>
        `${e.file ?? e.source}${e.document !== undefined ? ` document ${e.document}` : ""}: ${e.message}`),
    };
  }

  nodes(): GetNodesResponse {
    const known = new Set<string>([...this.state.nodes().map((n) => n.metadata.name), ...this.agents.sessions.keys()]);
    return {
      nodes: [...known].sort().map((name) => {
        const s = this.agents.sessions.get(name);
        const seen = s?.lastSeenMs;
        return {
          name, connected: s?.connected ?? false, version: s?.version ?? "",
          lastSeen: seen === undefined ? undefined : { seconds: BigInt(Math.floor(seen / 1000)), nanos: (seen % 1000) * 1e6 },
          records: s?.records ?? 0n, capabilities: s?.capabilities ?? [],
          policyVersion: s?.stats?.policyVersion ?? 0n, policyVersionLatest: 0n,
        };
      }),
    };
  }

  async stop(): Promise<void> {
    if (this.pushTimer) clearTimeout(this.pushTimer);
    await this.opts.source.stop();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    this.server?.forceShutdown();
  }
}
