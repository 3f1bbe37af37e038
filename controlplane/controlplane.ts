// The control plane, composed: metadata source → cluster state; agent streams → enrich →
// history + flow maps; Observer API over both.
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import type { Timestamp } from "../proto/gen/google/protobuf/timestamp.js";
import type { GetNodesResponse, GetStatusResponse, NodeLoss, NodeUnjudged } from "../proto/gen/bulkhead/v1/observer.js";
import { ClusterState } from "./cluster/state.js";
import { Enricher, type LocalEndProblem } from "./cluster/enrich.js";
import type { EnrichedColumns } from "./store/enriched-columns.js";
import type { FlowColumns } from "../flowcolumns/columns.js";
import type { MetadataSource, ObjectEvent } from "./metadata/source.js";
import { FlowHistory, type HistoryQuery } from "./store/history.js";
import type { FlowStore, StoreStatus } from "./store/durable.js";
import { flowMapFromStore } from "./store/stored-map.js";
import { columnsRequired, type FlowPredicate } from "./store/filter.js";
import { SkewEstimate } from "./clock-skew.js";
import type { FlowFilter, GetFlowMapResponse, PolicyWhatIfRequest, PolicyWhatIfResponse, SuggestPoliciesRequest, SuggestPoliciesResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { FlowMapStore, isReply } from "./store/flowmap.js";
import { AgentRegistry, type AgentBatch } from "./agents.js";
import { PolicyCompiler } from "./policy/compile.js";
import { attributable, ColumnAttribution } from "./ingest/attribution.js";
import { IngestWorkers, WorkerStopped } from "./ingest/workers.js";
import { clusterOf, type PolicyModeName } from "./policy/model.js";
import { VerdictReason, type PolicyAttribution } from "../proto/gen/bulkhead/v1/flow.js";
import { PolicyMode, type Identity, type PolicySnapshot } from "../proto/gen/bulkhead/v1/policy.js";

/** Reserved identity 3: every Service ClusterIP (see policy.proto). */
const SERVICE_IDENTITY: Identity = {
  id: 3, namespace: "", labels: { "bulkhead.io/reserved": "service" }, mode: PolicyMode.POLICY_MODE_OBSERVE,
  ingressIsolated: false, egressIsolated: false, endpoint: false, service: true,
};
import { observerService } from "./observer.js";
import { policySuggestions, policyWhatIf } from "./policy-requests.js";
import type { Scope } from "./access/scope.js";
import { DEFAULT_FLOW_STREAM_LIMITS, type FlowStreamLimits } from "./flow-stream.js";
import { EventLoopLag, renderMetrics } from "./metrics.js";
import type { AccessControl } from "./access/control.js";
import { bind, createGrpcServer } from "./grpc.js";
import { UiServer, type UiServerOptions } from "./ui/server.js";
import type { TlsMaterial } from "../tls/material.js";
import { TlsListeners } from "../tls/listener.js";
import { compareTimestamps, msOfTimestamp, timestampOfMs } from "../config/time.js";

export interface ControlPlaneOptions {
  source: MetadataSource;
  /** Records kept in memory: the hot window for live maps, follow streams and recent queries. */
  storeCapacity: number;
  /**
   * The durable history behind the hot window (opened and closed by the caller). With it,
   * a batch is acknowledged only once stored, and queries beyond the hot window read it.
   * Without it (`--store memory`, tests) the hot window is all there is.
   */
  store?: FlowStore;
  /** How often retention runs on the store (ms); default 60 s. */
  retentionIntervalMs?: number;
  /** Mode of namespaces without a bulkhead.io/mode annotation. */
  defaultMode?: PolicyModeName;
  /** Who may read what through the Observer API; required, so that no caller gets an open API by omission. */
  access: AccessControl;
  /** Serve every listener over TLS; agents must then present a node certificate chained to `tls.ca`. */
  tls?: TlsMaterial;
  log: Logger;
  /** Serve the web UI and its JSON API here (port 0: any free port). */
  uiListen?: { host: string; port: number };
  /** Options of the UI server (static folder, access scope, stream timing). */
  ui?: Omit<UiServerOptions, "log">;
  /** Wall clock of the flow maps, in ms; injectable for tests. Default Date.now. */
  now?: () => number;
  /** How far a GetFlows client may fall behind before it is cut (flow-stream.ts). */
  flowStreamLimits?: FlowStreamLimits;
  /**
   * Threads that admit and attribute agents' columnar batches (ingest/workers.ts), each
   * agent's on one of them, so that ingest uses more than one core; 0 (default): all on
   * this thread. Their cluster models follow the metadata source, so with workers the
   * model changes only through it.
   */
  ingestWorkers?: number;
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
  readonly flowMap: FlowMapStore;
  readonly now: () => number;
  private uiServer: UiServer | undefined;
  readonly agents: AgentRegistry;
  private server: grpc.Server | undefined;
  /** Bound gRPC addresses as listened on ("127.0.0.1:0" becomes the port the kernel chose). */
  private bound: string[] = [];
  private tlsListeners: TlsListeners | undefined;
  private recordsTotal = 0n;
  /** Each agent's clock skew as its recent batches show it (clock-skew.ts), and the records moved by it. */
  private readonly clocks = new Map<string, { estimate: SkewEstimate; skewMs: number; corrected: bigint }>();
  /** Records refused or renamed (localEndProblem), by "node\0cause". */
  private readonly refused = new Map<string, bigint>();
  private readonly rate = new Rate();
  private pushTimer: NodeJS.Timeout | undefined;
  private retentionTimer: NodeJS.Timeout | undefined;
  /** Stops handing over other replicas' records (a shared store's tail). */
  private stopTail: (() => void) | undefined;
  /** Records that end after this (ms) reached this process, so the hot window may hold them. */
  private readonly startedMs: number;
  readonly policy: PolicyCompiler;
  /** Attributes columnar batches admitted on this thread. */
  private readonly columnAttribution: ColumnAttribution;
  /** Mode of namespaces without a bulkhead.io/mode annotation. */
  readonly defaultMode: PolicyModeName;
  private policyProblems = "";
  /** Attributions by (addresses, protocol, port) since the last metadata change: the compiler's own
   * cache needs both addresses parsed and looked up, which cost a third of ingest. */
  private attributions = new Map<string, PolicyAttribution>();
  /** What agents were last sent: the compiler's snapshot plus the ClusterIPs. */
  private shipped: { compilerVersion: bigint; clusterIPs: string; snapshot: PolicySnapshot } | undefined;
  private shipVersion = 0n;
  readonly flowStreamLimits: FlowStreamLimits;
  /** GetFlows clients cut for reading too slowly. */
  flowStreamsCut = 0;
  private readonly lag = new EventLoopLag();
  /** Threads admitting agents' columnar batches (ControlPlaneOptions.ingestWorkers); undefined: none. */
  readonly ingestWorkers: IngestWorkers | undefined;

  constructor(private readonly opts: ControlPlaneOptions) {
    this.now = opts.now ?? Date.now;
    this.startedMs = this.now();
    this.flowStreamLimits = opts.flowStreamLimits ?? DEFAULT_FLOW_STREAM_LIMITS;
    this.flowMap = new FlowMapStore({ now: this.now });
    this.history = new FlowHistory({
      capacity: opts.storeCapacity,
      onSubscriberError: (err) => opts.log.warn({ err: (err as Error).message }, "a follow stream failed"),
    });
    this.defaultMode = opts.defaultMode ?? "observe";
    this.policy = new PolicyCompiler({ defaultMode: this.defaultMode });
    this.columnAttribution = new ColumnAttribution(this.policy);
    const workers = opts.ingestWorkers ?? 0;
    if (workers > 0) this.ingestWorkers = new IngestWorkers(workers, this.defaultMode, opts.log);
    this.agents = new AgentRegistry({
      ingest: (batch, clockSkewMs) => this.ingestBatch(batch, clockSkewMs),
      lastBatchId: async (instanceId) => await opts.store?.lastBatchId(instanceId),
      refusedBatch: (node, records) => this.countRefused(node, "invalid_record", records),
      localEndpoints: (node) => this.state.localEndpoints(node),
      policy: () => this.shipped?.snapshot ?? { version: 0n, identities: [], ipIdentities: [], rules: [] },
      requireClientCertificate: opts.tls !== undefined,
    }, opts.log);
  }

  /** Starts serving; resolves to the port bound for each listen address (1 for a unix socket). */
  async start(listen: string[]): Promise<number[]> {
    const log = this.opts.log;
    this.lag.start();
    await this.opts.source.start({
      apply: (events: ObjectEvent[], observedAtNs: bigint) => {
        this.state.apply(events, observedAtNs);
        this.ingestWorkers?.apply(events, observedAtNs);
        // Recompile at once (policy propagation is measured from here); endpoints may wait.
        this.recompile();
        this.pushTimer ??= setTimeout(() => { this.pushTimer = undefined; this.agents.pushEndpoints(); }, 100);
      },
    });
    this.recompile();
    if (this.opts.store !== undefined) {
      await this.enforceRetention();
      const every = this.opts.retentionIntervalMs ?? 60_000;
      const tick = () => { this.retentionTimer = setTimeout(() => { void this.enforceRetention().then(tick); }, every); };
      tick();
      // A store shared by replicas (ClickHouse): the others' records join this replica's
      // hot window and maps, so a follow stream or a live map shows every replica's agents;
      // those already stored that end after the hot window's start too (flowParts' store
      // query stops there).
      this.stopTail = this.opts.store.tail?.(
        (records) => { this.history.append(records); this.flowMap.add(records); },
        (err) => log.warn({ err: err.message }, "reading other replicas' records from the store failed; retrying"),
        msOfTimestamp(this.hotWindowStart));
    }
    for (const e of this.opts.source.errors()) log.error({ file: e.file, document: e.document, err: e.message }, "metadata error");
    this.server = createGrpcServer({ agent: this.agents.service, observer: observerService(this, this.opts.access, log) });
    const ports: number[] = [];
    if (this.opts.tls) {
      const listeners = new TlsListeners(this.server, this.opts.tls, log);
      this.tlsListeners = listeners;
      for (const addr of listen) ports.push(await listeners.listen(addr));
    } else {
      for (const addr of listen) ports.push(await bind(this.server, addr));
    }
    this.bound = listen.map((addr, i) => addr.startsWith("unix://") ? addr : addr.replace(/:[0-9]+$/, `:${ports[i]}`));
    if (this.opts.uiListen) {
      this.uiServer = new UiServer(this, { ...this.opts.ui, log });
      const url = await this.uiServer.listen(this.opts.uiListen.host, this.opts.uiListen.port);
      log.info({ url }, `web UI at ${url}`);
    }
    log.info({ listen: this.bound, tls: this.opts.tls ? { cert: this.opts.tls.certFile, clientCa: this.opts.tls.caFile } : false,
      source: this.opts.source.name, pods: this.state.pods().length }, "control plane started");
    return ports;
  }

  /** Compiles NetworkPolicy into a new snapshot and ships it when anything agents load changed. */
  private recompile(): void {
    const compiled = this.policy.compile(clusterOf(this.state));
    this.ingestWorkers?.compile();
    // Names of policies may change without a new version: attributions are recomputed.
    this.attributions.clear();
    this.columnAttribution.compiled();
    const problems = this.policy.errors().map((p) => `${p.object}: ${p.field}: ${p.message}`).join("\n");
    if (problems !== this.policyProblems) {
      for (const p of this.policy.errors()) {
        this.opts.log.error({ object: p.object, field: p.field, err: p.message, keptPrevious: p.keptPrevious, isolating: p.isolating === true },
          p.keptPrevious ? "invalid policy: its previous version stays in force" : p.isolating ? "invalid policy: its pods are isolated until it is fixed" : "invalid policy ignored");
      }
      this.policyProblems = problems;
    }
    // Traffic to a ClusterIP is judged after DNAT at the backend: agents must know the
    // addresses, so a Service change ships a new version too.
    const clusterIPs = this.state.services().flatMap((s) => s.spec.clusterIPs).sort().join(",");
    if (this.shipped?.compilerVersion === compiled.version && this.shipped.clusterIPs === clusterIPs) return;
    const snapshot: PolicySnapshot = {
      ...compiled,
      version: ++this.shipVersion,
      identities: [...compiled.identities, SERVICE_IDENTITY],
      ipIdentities: [...compiled.ipIdentities, ...(clusterIPs ? clusterIPs.split(",") : [])
        .map((ip) => ({ cidr: ip.includes(":") ? `${ip}/128` : `${ip}/32`, identity: SERVICE_IDENTITY.id }))],
    };
    this.shipped = { compilerVersion: compiled.version, clusterIPs, snapshot };
    const stats = this.policy.stats();
    this.opts.log.info({ version: snapshot.version, identities: stats.identities, rules: stats.rules }, "policy compiled");
    this.agents.pushPolicy(snapshot);
  }

  /**
   * A batch an agent sent (validated: every record is of `node`), `clockSkewMs` its send
   * time less our clock when it came (a sample of the agent's skew, clockShift()). Resolves
   * once it is durable (with a store) and published to the hot window and maps; rejects
   * when the store cannot take it: then it must not be acknowledged. A re-sent batch the
   * store already holds resolves without publishing.
   */
  async ingestBatch(batch: AgentBatch, clockSkewMs?: number): Promise<void> {
    if ("columns" in batch) {
      const workers = this.ingestWorkers;
      const admitted = workers === undefined ? this.admitColumns(batch.node, batch.columns, clockSkewMs)
        : await this.admitColumnsOnWorker(workers, batch.node, batch.columns, clockSkewMs);
      const store = this.opts.store;
      if (store !== undefined) {
        // The embedded store takes the columns as they are; ClickHouse builds records from them (durable.ts batchRecords).
        const [stored] = await store.append([{ node: batch.node, instanceId: batch.instanceId, batchId: batch.batchId, columns: admitted }]);
        if (stored === false) return;
      }
      this.publishColumns(admitted, batch.columns.rows);
      return;
    }
    const kept = this.admit(batch.node, batch.records, clockSkewMs);
    const store = this.opts.store;
    if (store !== undefined) {
      const [stored] = await store.append([{ ...batch, records: kept }]);
      if (stored === false) return;
    }
    this.publish(kept, batch.records.length);
  }

  /** Records enriched and published at once, without the durable store (in-process callers: tests, benchmarks). */
  ingest(node: string, records: FlowRecord[], clockSkewMs?: number): void {
    this.publish(this.admit(node, records, clockSkewMs), records.length);
  }

  /** Columns of `node` enriched and published at once, without the durable store (in-process callers: tests, benchmarks). */
  ingestColumns(node: string, columns: FlowColumns, clockSkewMs?: number): void {
    this.publishColumns(this.admitColumns(node, columns, clockSkewMs), columns.rows);
  }

  /** admit() for a columnar batch: the same checks, names and attributions, from the columns (Enricher.admitColumns). */
  private admitColumns(node: string, columns: FlowColumns, clockSkewMs: number | undefined): EnrichedColumns {
    return this.admitShifted(node, columns, this.clockShift(node, columns.rows, clockSkewMs));
  }

  /** admitColumns() with the batch's clock shift known. */
  private admitShifted(node: string, columns: FlowColumns, shiftMs: number): EnrichedColumns {
    const admitted = this.enricher.admitColumns(node, columns, shiftMs);
    for (const [problem, rows] of admitted.problems) this.countRefused(node, problem, rows);
    this.columnAttribution.attribute(admitted);
    return admitted.batch;
  }

  /** admitColumns() by the ingest worker of `node`. A batch the worker hands back (it stopped) is admitted here, in its turn. */
  private async admitColumnsOnWorker(workers: IngestWorkers, node: string, columns: FlowColumns, clockSkewMs: number | undefined): Promise<EnrichedColumns> {
    const worker = workers.workerOf(node);
    const shiftMs = this.clockShift(node, columns.rows, clockSkewMs);
    let admitted;
    try {
      admitted = await worker.admit(node, columns, shiftMs);
    } catch (err) {
      if (!(err instanceof WorkerStopped)) throw err;
      return this.admitShifted(node, columns, shiftMs);
    }
    for (const [problem, rows] of admitted.problems) this.countRefused(node, problem, rows);
    return admitted.batch;
  }

  /**
   * How far (ms) a batch of `rows` rows moves back for its agent's clock skew, given the
   * batch's sample of it (send time less arrival; none from an agent that sends no time).
   * Agents' clocks are not trusted: a record dated in the future pins its edge in every
   * window, one an hour behind never shows. Past CLOCK_TOLERANCE_MS the batch's times move
   * by the skew estimated from the agent's recent batches.
   */
  private clockShift(node: string, rows: number, sampleMs: number | undefined): number {
    if (sampleMs === undefined) return 0;
    let clock = this.clocks.get(node);
    if (clock === undefined) this.clocks.set(node, clock = { estimate: new SkewEstimate(), skewMs: 0, corrected: 0n });
    clock.skewMs = Math.round(clock.estimate.note(sampleMs, this.now()));
    if (Math.abs(clock.skewMs) <= CLOCK_TOLERANCE_MS) return 0;
    clock.corrected += BigInt(rows);
    return clock.skewMs;
  }

  private publishColumns(batch: EnrichedColumns, received: number): void {
    this.history.appendColumns(batch);
    this.flowMap.addColumns(batch);
    this.recordsTotal += BigInt(received);
    this.rate.add(received);
  }

  /** Corrects clocks, refuses records the node may not send, attributes verdicts; returns what is kept. */
  private admit(node: string, records: FlowRecord[], clockSkewMs: number | undefined): FlowRecord[] {
    if (clockSkewMs !== undefined) this.correctClock(node, records, clockSkewMs);
    let kept = records;
    for (const [i, r] of records.entries()) {
      const problem = this.enricher.admit(r);
      if (problem !== undefined) this.countRefused(node, problem, 1);
      if (problem === "foreign_pod" || problem === "foreign_address") {
        // Copied only when a batch has a record to refuse.
        if (kept === records) kept = records.slice(0, i);
        continue;
      }
      this.attribute(r);
      if (kept !== records) kept.push(r);
    }
    return kept;
  }

  private publish(kept: FlowRecord[], received: number): void {
    this.history.append(kept);
    this.flowMap.add(kept);
    this.recordsTotal += BigInt(received);
    this.rate.add(received);
  }

  /** The durable store, when there is one. */
  get store(): FlowStore | undefined {
    return this.opts.store;
  }

  /**
   * With a store, every record that ends strictly after this instant is in the hot window:
   * it reached this process (agents' clocks are corrected beyond CLOCK_TOLERANCE_MS) and
   * was not evicted. Records ending at or before it may be only in the store. Exact to the
   * nanosecond, since records of one batch often end at the same instant.
   */
  get hotWindowStart(): Timestamp | undefined {
    if (this.opts.store === undefined) return undefined;
    const afterStart = timestampOfMs(this.startedMs + CLOCK_TOLERANCE_MS);
    const complete = this.history.completeAfter;
    return complete !== undefined && compareTimestamps(complete, afterStart) > 0 ? complete : afterStart;
  }

  /**
   * A GetFlows history in two parts: `hot`, the matches in memory (fixed when called, built
   * as iterated), and before it `stored`, the older matches from the store, when the
   * range reaches before the hot window. Iterate `stored` first.
   */
  flows(q: { predicate: FlowPredicate; allow: readonly FlowFilter[]; deny: readonly FlowFilter[];
    since?: Timestamp; until?: Timestamp; last: number }): { hot: Iterable<FlowRecord>; stored: AsyncIterable<readonly FlowRecord[]> | undefined } {
    const parts = this.flowParts(q);
    if (q.last === 0) return { hot: this.history.iterate(parts.hot), stored: parts.stored?.() };
    const hot = this.history.query({ ...parts.hot, last: q.last });
    const missing = q.last - hot.length;
    return { hot, stored: parts.stored === undefined || missing === 0 ? undefined : parts.stored(missing) };
  }

  /**
   * flows() for scans that only sum (the policy replay): the hot part as a query of
   * `history`, for FlowHistory.scan over its columns instead of a record built per match.
   * Scan it after `stored`, as flows() orders them.
   */
  flowsToScan(q: { predicate: FlowPredicate; allow: readonly FlowFilter[]; deny: readonly FlowFilter[]; since?: Timestamp; until?: Timestamp }):
    { history: FlowHistory; hot: HistoryQuery; stored: AsyncIterable<readonly FlowRecord[]> | undefined } {
    const parts = this.flowParts({ ...q, last: 0 });
    return { history: this.history, hot: parts.hot, stored: parts.stored?.() };
  }

  /** The hot window's query, and the store's part before it (given the records still missing for `last`) when the range reaches there. */
  private flowParts(q: { predicate: FlowPredicate; allow: readonly FlowFilter[]; deny: readonly FlowFilter[]; since?: Timestamp; until?: Timestamp; last: number }):
    { hot: HistoryQuery; stored: ((missing?: number) => AsyncIterable<readonly FlowRecord[]>) | undefined } {
    const store = this.opts.store;
    const hotStart = this.hotWindowStart;
    // The verdicts, points and namespaces the allow filters require, for the history to check before the predicate.
    const hot: HistoryQuery = { predicate: q.predicate, since: q.since, until: q.until, ...columnsRequired(q.allow) };
    if (store === undefined || hotStart === undefined || (q.since !== undefined && compareTimestamps(q.since, hotStart) > 0)) {
      return { hot, stored: undefined };
    }
    // Split at the hot window's start: what ends after it from memory, the rest from the store.
    return {
      hot: { ...hot, endAfter: hotStart },
      stored: (missing = 0) => store.query({
        ...(q.since !== undefined ? { since: q.since } : {}), ...(q.until !== undefined ? { until: q.until } : {}), endNotAfter: hotStart,
        allow: q.allow, deny: q.deny, predicate: q.predicate, ...(missing > 0 ? { last: missing } : {}),
      }),
    };
  }

  /** PolicyWhatIf over this control plane's recorded flows (the web UI's what-if overlay; observer.ts has its own call). */
  async policyWhatIf(scope: Scope, request: PolicyWhatIfRequest): Promise<PolicyWhatIfResponse> {
    return await policyWhatIf(this, scope, request);
  }

  /** SuggestPolicies over this control plane's recorded flows (the web UI's suggestions). */
  async suggestPolicies(scope: Scope, request: SuggestPoliciesRequest): Promise<SuggestPoliciesResponse> {
    return await policySuggestions(this, scope, request);
  }

  /** A flow map over a window longer than the live maps keep, from the store. */
  async storedFlowMap(query: { namespace?: string; windowMs: number }): Promise<GetFlowMapResponse> {
    if (this.opts.store === undefined) throw new Error("no durable store: flow maps reach back 1 h");
    return await flowMapFromStore(this.opts.store, { ...query, nowMs: this.now() });
  }

  private async enforceRetention(): Promise<void> {
    const store = this.opts.store;
    if (store === undefined) return;
    try {
      const dropped = await store.enforceRetention();
      if (dropped.partitions > 0n) {
        this.opts.log.info({ records: Number(dropped.records), partitions: Number(dropped.partitions) }, "flow store retention dropped the oldest partitions");
      }
    } catch (err) {
      this.opts.log.error({ store: store.status().location, err: (err as Error).message }, "flow store retention failed");
    }
  }

  /** clockShift() for a batch of records: their times move back by the shift. */
  private correctClock(node: string, records: FlowRecord[], sampleMs: number): void {
    const shiftMs = this.clockShift(node, records.length, sampleMs);
    if (shiftMs === 0) return;
    const shiftNs = BigInt(shiftMs) * 1_000_000n;
    for (const r of records) {
      r.startTime = shiftTimestamp(r.startTime, shiftNs);
      r.endTime = shiftTimestamp(r.endTime, shiftNs);
    }
  }

  /** Counts records refused (or renamed, unknown_pod) by node and cause; logs the first of each and then every doubling, so a lying agent cannot flood the log. */
  private countRefused(node: string, cause: LocalEndProblem | "invalid_record", records: number): void {
    // A batch refused before its row count was read, or claiming none, refuses no record: no line of 0.
    if (records === 0) return;
    const key = `${node}\u0000${cause}`;
    const before = this.refused.get(key) ?? 0n;
    const n = before + BigInt(records);
    this.refused.set(key, n);
    if (before === 0n || n.toString(2).length > before.toString(2).length) {
      this.opts.log.warn({ node, cause, records: Number(n) }, "records refused or renamed: the agent sent what it may not");
    }
  }

  /** Which policies decided the flow's connection (see attributable()); at a client's veth toward
   * a ClusterIP the backend is not known yet, so that record is attributed at the backend's veth instead. */
  private attribute(r: FlowRecord): void {
    const ip = r.ip, l4 = r.l4;
    if (!ip || !l4) return;
    const reply = r.verdictReason === VerdictReason.VERDICT_REASON_ESTABLISHED && isReply(r);
    if (!attributable(r.verdict, r.verdictReason, r.point, reply, Boolean((reply ? r.source : r.destination)?.service))) return;
    const client = reply ? ip.destination : ip.source, server = reply ? ip.source : ip.destination;
    const port = reply ? l4.sourcePort : l4.destinationPort;
    const key = `${client}|${server}|${l4.protocol}|${port}`;
    let a = this.attributions.get(key);
    if (!a) {
      if (this.attributions.size >= MAX_ATTRIBUTIONS) this.attributions.clear();
      a = this.policy.attribution(client, server, l4.protocol, port);
      this.attributions.set(key, a);
    }
    r.attribution = a;
  }

  /** The addresses start() bound, with real port numbers. */
  /** Bearer tokens and their scopes: the Observer API's and the UI's. */
  get access(): AccessControl {
    return this.opts.access;
  }

  get listening(): readonly string[] {
    return this.bound;
  }

  status(): GetStatusResponse {
    const losses: NodeLoss[] = [];
    const unjudged: NodeUnjudged[] = [];
    for (const s of this.agents.sessions.values()) {
      for (const l of s.stats?.losses ?? []) losses.push({ node: s.node, cause: l.cause, unit: l.unit, count: l.count });
      for (const u of s.stats?.unjudged ?? []) unjudged.push({ node: s.node, cause: u.cause, verdict: u.verdict, packets: u.packets });
    }
    // The control plane's own: records older than the flow map's retention when they came,
    // 5-tuples past its flow-tracking bound, and UI map streams and GetFlows clients cut
    // for lagging behind.
    const map = this.flowMap.stats;
    losses.push(
      { node: "controlplane", cause: "late_records", unit: "records", count: BigInt(map.late) },
      { node: "controlplane", cause: "untracked_flows", unit: "flows", count: BigInt(map.untrackedFlows) },
      { node: "controlplane", cause: "ui_streams_cut", unit: "streams", count: BigInt(this.uiServer?.streamsCutOff ?? 0) },
      { node: "controlplane", cause: "flow_streams_cut", unit: "streams", count: BigInt(this.flowStreamsCut) },
    );
    return {
      agentsConnected: this.agents.connected,
      agentsKnown: this.agents.sessions.size,
      recordsTotal: this.recordsTotal,
      recordsPerSecond: this.rate.perSecond(),
      flowsStored: BigInt(this.history.size),
      store: this.storeStatus(),
      storeCapacity: BigInt(this.history.capacity),
      losses,
      unjudged,
      clocks: [...this.clocks].map(([node, c]) => ({ node, skewMs: BigInt(c.skewMs), recordsCorrected: c.corrected })),
      refused: [...this.refused].map(([key, records]) => {
        const [node = "", cause = ""] = key.split("\u0000");
        return { node, cause, records };
      }),
      metadataErrors: [
        ...this.opts.source.errors().map((e) =>
          `${e.file ?? e.source}${e.document !== undefined ? ` document ${e.document}` : ""}: ${e.message}`),
        ...this.policy.errors().map((p) => `${p.object}: ${p.field}: ${p.message}${p.keptPrevious ? " (previous version kept)" : p.isolating ? " (its pods isolated until fixed)" : " (ignored)"}`),
      ],
      policyWarnings: this.policy.samePriorityOverlaps(),
    };
  }

  /** The durable store's status, or the hot window's when there is none. */
  storeStatus(): StoreStatus {
    return this.opts.store?.status() ?? {
      kind: "memory", location: "", records: BigInt(this.history.size), bytes: 0n,
      retentionDroppedRecords: BigInt(this.history.evicted), retentionDroppedPartitions: 0n, error: "",
    };
  }

  /** /metrics in the Prometheus text format (metrics.ts). */
  metrics(): string {
    return renderMetrics({
      status: this.status(), lag: this.lag, mapStreams: this.uiServer?.streamCount ?? 0, mapStreamsRefused: this.uiServer?.streamsRefused ?? 0,
    });
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
          policyVersion: s?.stats?.policyVersion ?? 0n, policyVersionLatest: this.shipVersion,
        };
      }),
    };
  }

  /** The web UI server, when uiListen was given and start() has run. */
  get ui(): UiServer | undefined {
    return this.uiServer;
  }

  async stop(): Promise<void> {
    if (this.pushTimer) clearTimeout(this.pushTimer);
    if (this.retentionTimer) clearTimeout(this.retentionTimer);
    this.retentionTimer = undefined;
    this.stopTail?.();
    this.stopTail = undefined;
    this.lag.stop();
    await this.uiServer?.close();
    await this.opts.source.stop();
    // Agent streams never end on their own: end them, then give other calls a moment.
    this.agents.close();
    this.tlsListeners?.close(false);
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { server.forceShutdown(); resolve(); }, 2000);
        server.tryShutdown(() => { clearTimeout(timer); resolve(); });
      });
    }
    this.tlsListeners?.close(true);
    await this.ingestWorkers?.close();
  }
}

/** An agent clock this far from ours (ms) is taken as it is: below it, skew is mostly network delay. */
export const CLOCK_TOLERANCE_MS = 1000;

/** Cached attributions of the record path; past it the cache starts again. */
const MAX_ATTRIBUTIONS = 100_000;

/** `ts` moved back by `shiftNs` (the agent's clock ahead by that much). */
function shiftTimestamp(ts: Timestamp | undefined, shiftNs: bigint): Timestamp | undefined {
  if (ts === undefined) return undefined;
  const ns = ts.seconds * 1_000_000_000n + BigInt(ts.nanos) - shiftNs;
  const seconds = ns >= 0n ? ns / 1_000_000_000n : (ns - 999_999_999n) / 1_000_000_000n;
  return { seconds, nanos: Number(ns - seconds * 1_000_000_000n) };
}
