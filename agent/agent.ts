// The node agent, a pipeline of small stages:
//   interfaces (netlink) → attacher → kernel flow maps → drain loop → queue → exporter
// with every loss counted by cause and served on /metrics; policy snapshots from the
// control plane and the pods behind the veths (host routes) go into the policy maps.
import os from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import type http from "node:http";
import type { Logger } from "pino";
import { native, ringRecords, type RingBuffer } from "../native/index.js";
import { allocColumns, sumColumn, type FlowColumns } from "../flowcolumns/columns.js";
import type { PolicySnapshot } from "../proto/gen/bulkhead/v1/policy.js";
import type { AgentConfig } from "./config.js";
import { Datapath, type Counters } from "./datapath.js";
import { Attacher } from "./attacher.js";
import { InterfaceWatcher, type PodInterface } from "./interfaces.js";
import { Registry } from "../metrics/registry.js";
import { serveMetrics } from "./metrics.js";
import { decodeDrain, clockOffsetNow, UNJUDGED_CAUSES, UNJUDGED_VERDICTS } from "./records.js";
import { BH_EVENT_NEW_FLOW, bh_event } from "../native/gen/abi.js";
import { FileSink } from "./export/file.js";
import { ControlPlaneSink } from "./export/controlplane.js";
import { ControlPlaneConnection } from "./controlplane/connection.js";
import { receivePolicy } from "./controlplane/policy-stream.js";
import type { RecordSink } from "./export/sink.js";
import { LocalEndpoints } from "./endpoints.js";
import { kernelSupport, type AttachModeFlag } from "./kernel.js";

/** The attach mode the hello announces: what this kernel allows (start() refuses a kernel that cannot work, naming why). */
function expectedAttachMode(mode: AttachModeFlag): "tcx" | "clsact" {
  try {
    return kernelSupport(os.release(), mode).attach;
  } catch {
    return mode === "clsact" ? "clsact" : "tcx";
  }
}

/** Entries drained, decoded and handed to the sinks at a time: ~90 bytes a record of
 * columns plus ~80 of kernel entry, ~0.7 MB together, instead of a full map's worth (two
 * control-plane batches of 2,000). */
export const DRAIN_PIECE = 4000;

export class Agent {
  readonly metrics = new Registry();
  private readonly m = {
    records: this.metrics.counter("bulkhead_agent_flow_records_total", "Flow records produced by draining the kernel flow maps"),
    packets: this.metrics.counter("bulkhead_agent_packets_total", "Packets counted in flow records"),
    bytes: this.metrics.counter("bulkhead_agent_bytes_total", "L3 bytes counted in flow records"),
    datapathPackets: this.metrics.counter("bulkhead_agent_datapath_packets_total", "Packets the capture programs ran on"),
    unparsed: this.metrics.counter("bulkhead_agent_unparsed_packets_total", "Packets seen but not aggregated into a flow, by reason"),
    lostPackets: this.metrics.counter("bulkhead_agent_lost_packets_total", "Packets lost to flow accounting, by cause"),
    lostBytes: this.metrics.counter("bulkhead_agent_lost_bytes_total", "L3 bytes lost to flow accounting, by cause"),
    lostEvents: this.metrics.counter("bulkhead_agent_lost_events_total", "Ring-buffer events lost, by cause"),
    lostRecords: this.metrics.counter("bulkhead_agent_lost_records_total", "Flow records lost before export, by cause"),
    exported: this.metrics.counter("bulkhead_agent_exported_records_total", "Flow records written by an exporter"),
    newFlows: this.metrics.counter("bulkhead_agent_new_flows_total", "Flow entries the datapath created (one per record drained, map_full aside)"),
    newFlowEvents: this.metrics.counter("bulkhead_agent_new_flow_events_total", "New-flow events read from the ring buffer (none unless the datapath is loaded with events on)"),
    untracked: this.metrics.counter("bulkhead_agent_untracked_connections_total", "Packets whose connection could not be tracked: conntrack map full"),
    unjudged: this.metrics.counter("bulkhead_agent_unjudged_packets_total",
      "Frames the datapath could not judge (no flow record), by cause and by verdict (dropped in enforce)"),
    conntrack: this.metrics.counter("bulkhead_agent_conntrack_events_total",
      "Conntrack events, by event: created (unconfirmed entry), confirmed (peer answered), lost (TCP packet of an evicted or expired entry), rejudged (after a policy change), icmp_related (ICMP error given its connection's verdict)"),
    attachErrors: this.metrics.counter("bulkhead_agent_attach_errors_total", "Failed attachments, by errno"),
    attaches: this.metrics.counter("bulkhead_agent_attaches_total", "Interfaces attached"),
    detaches: this.metrics.counter("bulkhead_agent_detaches_total", "Interfaces detached"),
    watched: this.metrics.gauge("bulkhead_agent_interfaces_watched", "Pod interfaces with capture attached"),
    queued: this.metrics.gauge("bulkhead_agent_export_pending_records", "Flow records waiting for export, by sink"),
    connected: this.metrics.gauge("bulkhead_agent_controlplane_connected", "1 while the control plane stream is up"),
    held: this.metrics.gauge("bulkhead_agent_controlplane_buffer_bytes", "Bytes of records (columns; encoded batches in flight) held for the control plane, buffered and in flight (at most --buffer-bytes)"),
    drainSeconds: this.metrics.gauge("bulkhead_agent_drain_duration_seconds", "Duration of the last drain"),
    memory: this.metrics.gauge("bulkhead_agent_memory_bytes",
      "The agent's memory after the last drain, by kind (process.memoryUsage: rss, heap_total, heap_used, external, array_buffers)"),
    policyErrors: this.metrics.counter("bulkhead_agent_policy_errors_total", "Policy snapshots or endpoint updates not applied, by stage"),
    policyVersion: this.metrics.gauge("bulkhead_agent_policy_version", "The policy snapshot version the datapath enforces (0: none)"),
    endpoints: this.metrics.gauge("bulkhead_agent_policy_endpoints", "Pod veths with a known endpoint (identity, addresses)"),
    replacing: this.metrics.gauge("bulkhead_agent_datapath_replacing", "1 while an earlier agent's programs and maps (another map layout) enforce, until the first policy snapshot"),
  };

  private datapath: Datapath | undefined;
  private attacher: Attacher | undefined;
  private watcher: InterfaceWatcher | undefined;
  private ring: RingBuffer | undefined;
  private server: http.Server | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private drainStorage: FlowColumns | undefined;
  /** The drain under way: one at a time (a drain that waits for its sinks between pieces
   * must not be overtaken by the next one's flip). */
  private draining: Promise<number> | undefined;
  private readonly sinks: RecordSink[] = [];
  private connection: ControlPlaneConnection | undefined;
  private controlplane: ControlPlaneSink | undefined;
  private readonly endpoints = new LocalEndpoints();
  private sequence = 0n;
  private lastCounters: Counters | undefined;
  private lastUnjudged = new Map<string, bigint>();
  private lastDrainOk = true;
  private podInterfaces: PodInterface[] = [];

  constructor(readonly config: AgentConfig, private readonly log: Logger) {
    if (config.exportFile) {
      const file = config.exportFile;
      this.sinks.push(new FileSink(file, config.node, config.exportBufferBytes, {
        written: (n) => this.m.exported.inc({ sink: "file" }, n),
        lost: (cause, n) => this.m.lostRecords.inc({ cause }, n),
        failed: (err, records) => this.log.error({ err: err.message, records }, "export failed; records dropped"),
      }));
    }
    if (config.controlplane) {
      this.connection = new ControlPlaneConnection({
        addresses: config.controlplane,
        node: config.node,
        capabilities: ["ipv6", expectedAttachMode(config.attachMode)],
        log: this.log,
        ...(config.tls ? { tls: config.tls } : {}),
      });
      receivePolicy(this.connection, {
        onEndpoints: (eps) => this.endpoints.replace(eps),
        onPolicy: (snapshot) => this.applyPolicy(snapshot),
      }, this.log);
      this.controlplane = new ControlPlaneSink(this.connection, {
        bufferBytes: config.bufferBytes,
        onBufferDrop: (n) => this.m.lostRecords.inc({ cause: "buffer_full" }, n),
        onRefused: (n, reason) => {
          this.m.lostRecords.inc({ cause: "refused" }, n);
          this.log.error({ records: n, reason }, "control plane refused batches as invalid; dropped, not re-sent");
        },
      });
      this.sinks.push(this.controlplane);
    }
  }

  async start(): Promise<void> {
    const c = this.config;
    // Before anything is loaded: a kernel that cannot work is named, not left to the verifier.
    const kernel = kernelSupport(os.release(), c.attachMode);
    this.log.info({ kernel: kernel.kernel.release, attach: kernel.attach, attachMode: c.attachMode, reason: kernel.reason }, "kernel checked");
    this.datapath = new Datapath({ objectPath: c.bpfObject, flowMapSize: c.flowMapSize, bpfDir: c.bpfDir });
    const datapath = this.datapath;
    const differs = Object.entries(datapath.object.adoption.maps).filter(([, v]) => v !== "same" && v !== "absent");
    this.log.info({ start: datapath.start, bpfDir: c.bpfDir, ...(differs.length ? { changed: Object.fromEntries(differs) } : {}),
      policyVersion: String(datapath.policy.version), endpoints: datapath.policy.endpoints().size },
      datapath.start === "adopted" ? "adopted the pinned datapath"
        : datapath.start === "replacing" ? "map layout changed: the pinned datapath enforces until the first policy snapshot"
          : "new datapath");
    this.m.replacing.set({}, datapath.replacing ? 1 : 0);
    this.ring = native().ringBuffer(datapath.object.map("events"), (records, count) => this.onEvents(records, count));
    this.attacher = new Attacher(
      { attach: (ifindex, name) => datapath.attach(ifindex, c.attachMode, undefined, name) },
      {
        attached: (iface, links) => {
          this.m.attaches.inc();
          this.log.info({ iface: iface.name, ifindex: iface.ifindex, mode: links[0]?.mode }, "attached");
        },
        detached: (iface) => {
          this.m.detaches.inc();
          this.log.info({ iface: iface.name, ifindex: iface.ifindex }, "detached");
        },
        failed: (iface, cause, err) => {
          this.m.attachErrors.inc({ cause });
          this.log.warn({ iface: iface.name, ifindex: iface.ifindex, cause, err: err.message }, "attach failed");
        },
      },
    );
    const attacher = this.attacher;
    this.watcher = new InterfaceWatcher(
      (ifaces) => {
        attacher.reconcile(ifaces);
        for (const pin of datapath.removeStaleLinkPins(ifaces.map((i) => i.ifindex))) {
          this.log.info({ ifindex: pin.ifindex, direction: pin.direction }, "removed the pinned link of a gone interface");
        }
        this.m.watched.set({}, attacher.count);
        this.podInterfaces = ifaces;
        this.updateEndpoints();
      },
      (err) => this.log.error({ err: err.message }, "interface scan failed"),
      c.resyncIntervalMs,
    );
    this.watcher.start();
    // Without a control plane no snapshot will come: the new programs take over now.
    if (datapath.replacing && !this.connection) this.commitDatapath();
    this.drainTimer = setInterval(() => void this.drainOnce(), c.drainIntervalMs);
    this.connection?.start();
    if (c.metricsAddr) this.server = await serveMetrics(this.metrics, this, c.metricsAddr);
    this.log.info({ object: c.bpfObject, interfaces: attacher.count,
      metrics: c.metricsAddr, export: c.exportFile }, "agent started");
  }

  healthy(): { ok: boolean; detail: string } {
    const ok = this.datapath !== undefined && this.lastDrainOk;
    return { ok, detail: ok ? `ok: ${this.attacher?.count ?? 0} interfaces` : "drain failing" };
  }

  private onEvents(records: Buffer, count: number): void {
    let newFlows = 0;
    for (const r of ringRecords(records, count)) {
      if (r.length >= bh_event.size && r.readUInt32LE(bh_event.type) === BH_EVENT_NEW_FLOW) newFlows++;
    }
    this.m.newFlowEvents.inc({}, newFlows);
  }

  /** Enforces `snapshot`; never throws: a snapshot that cannot be applied is logged and
   * counted, and the previous policy stays in force. */
  applyPolicy(snapshot: PolicySnapshot): void {
    const policy = this.datapath?.policy;
    if (!policy) {
      this.m.policyErrors.inc({ stage: "apply" });
      this.log.error({ version: String(snapshot.version) }, "policy snapshot received before the datapath loaded; not applied");
      return;
    }
    const t0 = process.hrtime.bigint();
    try {
      const r = policy.apply(snapshot);
      this.m.policyVersion.set({}, r.version);
      this.log.info({ version: String(r.version), identities: r.identities, ipIdentities: r.ipIdentities,
        policyEntries: r.policyEntries, written: r.written, deleted: r.deleted,
        ms: Number(process.hrtime.bigint() - t0) / 1e6 }, "policy applied");
    } catch (err) {
      this.m.policyErrors.inc({ stage: "apply" });
      this.log.error({ version: String(snapshot.version), err: (err as Error).message, keeping: String(policy.version) },
        "policy snapshot rejected; the previous policy stays in force");
      return;
    }
    // Identities may have changed: the endpoints take the new ones.
    this.updateEndpoints();
    // A changed layout: the new maps now hold endpoints and policy; the programs swap.
    if (this.datapath?.replacing) this.commitDatapath();
    // Say at once which version is enforced: status and propagation waits read it.
    this.connection?.sendStats(this.stats());
  }

  /** Swaps this agent's programs into the links the old ones held (see Datapath.commit). */
  private commitDatapath(): void {
    const datapath = this.datapath;
    if (!datapath) return;
    try {
      const r = datapath.commit();
      for (const [ifindex, links] of r.links) this.attacher?.addLinks(ifindex, links);
      if (r.unreadableFlows) this.m.lostRecords.inc({ cause: "layout_changed" }, r.unreadableFlows);
      this.m.replacing.set({}, 0);
      this.log.info({ interfaces: r.links.size, conntrackCopied: r.conntrackCopied, unreadableFlows: r.unreadableFlows },
        "new programs and maps in place of the old");
    } catch (err) {
      this.m.policyErrors.inc({ stage: "commit" });
      this.log.error({ err: (err as Error).message }, "swapping in the new datapath failed; retried with the next snapshot");
    }
  }

  /** Which pod is behind each watched veth, from its host routes. */
  private updateEndpoints(): void {
    const policy = this.datapath?.policy;
    if (!policy) return;
    try {
      const ifindexes = this.podInterfaces.map((i) => i.ifindex);
      const changed = policy.reconcileEndpoints(ifindexes, native().listRoutes());
      if (changed.set || changed.deleted) this.log.debug(changed, "endpoints updated");
      this.m.endpoints.set({}, policy.endpoints().size);
    } catch (err) {
      this.m.policyErrors.inc({ stage: "endpoints" });
      this.log.error({ err: (err as Error).message }, "updating endpoints failed; retried on the next interface scan");
    }
  }

  /** One drain: every flow entry since the previous drain becomes one row of columns,
   * decoded and handed to the sinks a piece at a time (DRAIN_PIECE entries: the agent
   * never holds a full map's worth of entries or columns). Resolves to the records
   * drained; while a drain is under way, to that one's. */
  drainOnce(): Promise<number> {
    this.draining ??= this.drainPieces().finally(() => { this.draining = undefined; });
    return this.draining;
  }

  private async drainPieces(): Promise<number> {
    const datapath = this.datapath;
    const attacher = this.attacher;
    if (!datapath || !attacher) return 0;
    const t0 = process.hrtime.bigint();
    let sinkNs = 0n;
    let records = 0;
    // Waiting for the sinks ends here, so that a slow file reader costs queued records
    // (dropped and counted by its sink), never a drain late into the next interval.
    const waitUntil = Date.now() + this.config.drainIntervalMs / 2;
    try {
      // Events are submitted without waking us (one wakeup per new flow costs more than the flow).
      this.ring?.consume();
      // One storage for every piece's columns (the sinks copy what they keep): ~90 bytes a
      // record for one piece, instead of new arrays per drain that stay resident until V8
      // collects them (bench/README.md, agent-load).
      this.drainStorage ??= allocColumns(DRAIN_PIECE);
      const storage = this.drainStorage;
      const ctx = {
        interfaceName: (ifindex: number) => attacher.interfaceName(ifindex),
        // One clock reading serves the whole drain.
        clockOffsetNs: clockOffsetNow(),
        firstSequence: 0n,
        localEnds: this.endpoints,
        // The pod behind a veth, for records whose source address is forged (SPOOFED).
        podAddress: (ifindex: number) => {
          const e = datapath.policy.endpoints().get(ifindex);
          return e?.ip4 ?? e?.ip6;
        },
      };
      const drained = await datapath.drainPieces(DRAIN_PIECE, (piece) => {
        ctx.firstSequence = this.sequence + 1n;
        // A piece larger than the storage: only when the addon read a too-large bucket's rest whole.
        const columns = decodeDrain(piece.keys, piece.values, piece.count, ctx,
          piece.count <= storage.rows ? storage : undefined);
        this.sequence += BigInt(piece.count);
        records += piece.count;
        this.m.records.inc({}, piece.count);
        this.m.packets.inc({}, sumColumn(columns.packets));
        this.m.bytes.inc({}, sumColumn(columns.bytes));
        const s0 = process.hrtime.bigint();
        for (const sink of this.sinks) sink.push(columns);
        sinkNs += process.hrtime.bigint() - s0;
        // Past the deadline not even a yield: each would let a sink encode a chunk first.
        const behind = Date.now() < waitUntil ? this.sinks.flatMap((sink) => sink.room?.() ?? []) : [];
        if (behind.length === 0) return undefined;
        const w0 = process.hrtime.bigint();
        return untilOrTimeout(Promise.all(behind), waitUntil).finally(() => { sinkNs += process.hrtime.bigint() - w0; });
      });
      attacher.forgetGone();
      this.readCounters(datapath);
      this.lastDrainOk = drained.failure === undefined;
      if (drained.failure) {
        this.log.error({ err: drained.failure.message, records: drained.count },
          "drain failed midway: the entries it had taken are exported, the rest stays in the map for a later drain");
      }
    } catch (err) {
      this.lastDrainOk = false;
      this.log.error({ err: (err as Error).message }, "drain failed");
    }
    // The drain and its decoding, not the sinks' share (their own queues and metrics).
    this.m.drainSeconds.set({}, Number(process.hrtime.bigint() - t0 - sinkNs) / 1e9);
    const mem = process.memoryUsage();
    this.m.memory.set({ kind: "rss" }, mem.rss);
    this.m.memory.set({ kind: "heap_total" }, mem.heapTotal);
    this.m.memory.set({ kind: "heap_used" }, mem.heapUsed);
    this.m.memory.set({ kind: "external" }, mem.external);
    this.m.memory.set({ kind: "array_buffers" }, mem.arrayBuffers);
    for (const sink of this.sinks) this.m.queued.set({ sink: sink.name }, sink.pending);
    this.m.connected.set({}, this.connection?.connected ? 1 : 0);
    if (this.controlplane) this.m.held.set({}, this.controlplane.heldBytes);
    this.connection?.sendStats(this.stats());
    return records;
  }

  /** Cumulative losses by cause and unit, as the control plane's status shows them. */
  private stats() {
    const loss = (cause: string, unit: string, value: number | bigint) => ({ cause, unit, count: BigInt(value) });
    return {
      losses: [
        loss("map_full", "packets", this.m.lostPackets.get({ cause: "map_full" })),
        loss("map_full", "bytes", this.m.lostBytes.get({ cause: "map_full" })),
        loss("ring_full", "events", this.m.lostEvents.get({ cause: "ring_full" })),
        loss("export_queue_full", "records", this.m.lostRecords.get({ cause: "export_queue_full" })),
        loss("export_error", "records", this.m.lostRecords.get({ cause: "export_error" })),
        loss("buffer_full", "records", this.m.lostRecords.get({ cause: "buffer_full" })),
        loss("refused", "records", this.m.lostRecords.get({ cause: "refused" })),
        // Flows an upgrade's old maps held in a layout this agent cannot read.
        loss("layout_changed", "records", this.m.lostRecords.get({ cause: "layout_changed" })),
        // Connections conntrack could not track: an insert refused. (Packets of evicted or
        // expired entries are in /metrics, conntrack_events_total{event="lost"}: a TCP
        // packet the agent started too late for counts there too, so it is no loss.)
        loss("conntrack_full", "connections", this.m.untracked.get()),
      ],
      unjudged: UNJUDGED_VERDICTS.flatMap((verdict) => UNJUDGED_CAUSES.map((cause) =>
        ({ cause, verdict, packets: BigInt(this.m.unjudged.get({ cause, verdict })) }))).filter((u) => u.packets > 0n),
      recordsProduced: BigInt(this.m.records.get()),
      recordsBuffered: BigInt(this.controlplane?.pending ?? 0),
      interfacesWatched: this.attacher?.count ?? 0,
      policyVersion: this.datapath?.policy.version ?? 0n,
    };
  }

  private readCounters(datapath: Datapath): void {
    const now = datapath.counters();
    const prev = this.lastCounters;
    const delta = (k: keyof Counters) => now[k] - (prev ? prev[k] : 0n);
    this.m.datapathPackets.inc({}, delta("packets"));
    this.m.unparsed.inc({ reason: "not_ip" }, delta("notIp"));
    this.m.newFlows.inc({}, delta("newFlows"));
    this.m.lostPackets.inc({ cause: "map_full" }, delta("mapFullPackets"));
    this.m.lostBytes.inc({ cause: "map_full" }, delta("mapFullBytes"));
    this.m.lostEvents.inc({ cause: "ring_full" }, delta("ringFull"));
    this.m.untracked.inc({}, delta("ctFull"));
    this.m.conntrack.inc({ event: "created" }, delta("ctCreated"));
    this.m.conntrack.inc({ event: "confirmed" }, delta("ctConfirmed"));
    this.m.conntrack.inc({ event: "lost" }, delta("ctLost"));
    this.m.conntrack.inc({ event: "rejudged" }, delta("ctRejudged"));
    this.m.conntrack.inc({ event: "icmp_related" }, delta("icmpRelated"));
    this.lastCounters = now;
    for (const u of datapath.unjudged()) {
      const key = `${u.verdict}/${u.cause}`;
      this.m.unjudged.inc({ cause: u.cause, verdict: u.verdict }, u.packets - (this.lastUnjudged.get(key) ?? 0n));
      this.lastUnjudged.set(key, u.packets);
    }
  }

  /** Final drain and flush, then closes every fd. The pinned datapath stays and keeps
   * enforcing (an upgrade is a stop and a start); packets counted after the final drain
   * wait in the pinned flow maps for the next agent. `--uninstall` removes it. */
  async stop(): Promise<void> {
    if (this.drainTimer) clearInterval(this.drainTimer);
    this.watcher?.stop();
    // The drain under way, if any, then a last one for what came since.
    await this.draining;
    await this.drainOnce();
    const unsent = await Promise.all(this.sinks.map((sink) => sink.close(5000)));
    for (const [i, n] of unsent.entries()) {
      // Counted, never silent: the control plane was away or slow past the 5 s.
      if (n > 0) this.log.error({ sink: this.sinks[i]?.name, records: n }, "records not delivered at shutdown");
    }
    this.connection?.close();
    this.ring?.close();
    this.datapath?.release();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.datapath = undefined;
    this.log.info({ records: this.m.records.get(), exportedToFile: this.m.exported.get({ sink: "file" }),
      sentToControlPlane: this.controlplane?.sentRecords ?? 0n }, "agent stopped");
  }
}

/** Resolves when `done` does or at `deadline` (ms since the epoch), whichever comes first. */
async function untilOrTimeout(done: Promise<unknown>, deadline: number): Promise<void> {
  const timer = new AbortController();
  await Promise.race([done, sleep(Math.max(0, deadline - Date.now()), undefined, { signal: timer.signal }).catch(() => undefined)]);
  timer.abort();
}
