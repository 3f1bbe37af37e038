// AgentService.Connect: one stream per agent. Validates the hello and every batch,
// applies each (instance, batch id) exactly once, acknowledges it once it is durable,
// keeps each node's status and loss counters, and sends the node its configuration and
// local endpoints.
//
// Acknowledgement. A batch is accepted at once (validated, enriched, handed to the hub in
// arrival order) and acknowledged when the hub's promise resolves: with a durable store,
// once it is committed. Several batches of an agent are in flight together; acks go out
// in batch order. When a batch cannot be stored the stream ends UNAVAILABLE: the agent
// keeps every unacknowledged batch, reconnects and re-sends them, and the store's own
// dedup (StoredBatch) skips what it already holds.
import * as grpc from "@grpc/grpc-js";
import net from "node:net";
import type { Logger } from "pino";
import type { ConnectResponse, LocalEndpoint, AgentStats } from "../proto/gen/bulkhead/v1/agent.js";
import type { Timestamp } from "../proto/gen/google/protobuf/timestamp.js";
import { ColumnsError, decodeColumns } from "../flowcolumns/wire.js";
import type { AgentRequest, AgentServer } from "./agent-columns.js";
import type { FlowColumns } from "../flowcolumns/columns.js";
import { ObservationPoint, IpVersion, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import type { PolicySnapshot } from "../proto/gen/bulkhead/v1/policy.js";
import { describeName, isNodeName, nodeOfCertificate } from "../tls/node-identity.js";

/** The wire protocol versions this control plane speaks: 2 sends flows as FlowColumns, 1 as
 * FlowBatch (agents of the previous release, accepted during a rolling upgrade). */
export const SUPPORTED_PROTOCOL_VERSIONS = [1, 2] as const;
export const SUPPORTED_PROTOCOL_VERSION = 2;

export interface AgentSession {
  node: string;
  instanceId: string;
  version: string;
  /** The hello's protocol_version: which kind of flow batch the stream carries. */
  protocolVersion: number;
  capabilities: string[];
  connected: boolean;
  lastSeenMs: number;
  records: bigint;
  /** The highest batch id accepted (in flight or acknowledged). Undefined until the
   * instance's first batch when the store knows nothing of it: the agent resumes at
   * whatever batch it had in flight. */
  lastBatchId: bigint | undefined;
  /** Resolves after the last accepted batch's acknowledgement: acks go out in order. */
  acked: Promise<void>;
  /** Batches at or below lastBatchId whose ingest failed (not acknowledged): applied when
   * the agent re-sends them, never acknowledged as applied. Shared by the sessions of one
   * agent instance. */
  unstored: Set<bigint>;
  stats: AgentStats | undefined;
  stream: grpc.ServerDuplexStream<AgentRequest, ConnectResponse> | undefined;
}

/** One batch of an agent: records (protocol 1) or, from protocol 2, its checked columns, never turned into records here. */
export type AgentBatch = { node: string; instanceId: string; batchId: bigint } & ({ records: FlowRecord[] } | { columns: FlowColumns });

export interface AgentHub {
  /**
   * Enriches and stores a batch whose records passed validation; `clockSkewMs`: the
   * agent's clock when it sent the batch, if it said, minus ours when it is taken here (the
   * skew less the batch's time on the way: controlplane/clock-skew.ts). Resolves once the batch may be
   * acknowledged (durable); rejects when it may not.
   */
  ingest(batch: AgentBatch, clockSkewMs?: number): Promise<void>;
  /** The highest batch id of an agent instance already stored, e.g. before a control-plane restart. */
  lastBatchId(instanceId: string): Promise<bigint | undefined>;
  /** Counts records of a batch refused as invalid (GetStatus.refused, cause "invalid_record"). */
  refusedBatch(node: string, records: number): void;
  localEndpoints(node: string): LocalEndpoint[];
  policy(): PolicySnapshot;
  /** With mutual TLS: a stream needs a verified node certificate, and its hello must name that node. */
  requireClientCertificate?: boolean;
}

export class AgentStreamError extends Error {
  /** The node a refused hello named, for the log line (there is no session yet). */
  node: string | undefined;
  constructor(readonly code: grpc.status, message: string, node?: string) {
    super(message);
    this.node = node;
  }
}

/** Checks what the control plane relies on; protobuf decoding has checked the rest. */
export function validateRecord(r: FlowRecord, node: string, where: string): void {
  const fail = (what: string) => { throw new AgentStreamError(grpc.status.INVALID_ARGUMENT, `${where}: ${what}`); };
  if (r.node !== node) fail(`record for node "${r.node}" on the stream of node "${node}"`);
  if (r.point !== ObservationPoint.OBSERVATION_POINT_FROM_POD && r.point !== ObservationPoint.OBSERVATION_POINT_TO_POD) {
    fail(`observation point ${r.point} is not FROM_POD or TO_POD`);
  }
  const ip = r.ip;
  if (!ip) return fail("no ip");
  const family = ip.version === IpVersion.IP_VERSION_IPV4 ? 4 : ip.version === IpVersion.IP_VERSION_IPV6 ? 6 : 0;
  if (family === 0) fail(`ip version ${ip.version} is not IPv4 or IPv6`);
  if (net.isIP(ip.source) !== family || net.isIP(ip.destination) !== family) {
    fail(`addresses "${ip.source}" → "${ip.destination}" are not IPv${family}`);
  }
  if (!r.l4) fail("no l4");
  if (!r.startTime || !r.endTime) fail("no start or end time");
}

/** How long a disconnected agent's session (its counts, losses, last batch id) is kept. */
export const SESSION_RETENTION_MS = 60 * 60 * 1000;

export class AgentRegistry {
  readonly sessions = new Map<string, AgentSession>();

  constructor(private readonly hub: AgentHub, private readonly log: Logger) {}

  get connected(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.connected) n++;
    return n;
  }

  readonly service: AgentServer = {
    connect: (stream) => this.serve(stream),
  };

  /** Pushes a node's local endpoints to its agent (after metadata changes). */
  pushEndpoints(node?: string): void {
    for (const s of this.sessions.values()) {
      if (!s.connected || !s.stream || (node !== undefined && s.node !== node)) continue;
      s.stream.write({ kind: { $case: "endpoints", value: { endpoints: this.hub.localEndpoints(s.node) } } });
    }
  }

  /** Ends every agent stream (UNAVAILABLE: agents reconnect with backoff and re-send). */
  close(): void {
    for (const s of this.sessions.values()) {
      const stream = s.stream;
      if (!stream) continue;
      s.connected = false;
      s.stream = undefined;
      stream.emit("error", { code: grpc.status.UNAVAILABLE, details: "control plane shutting down" } as grpc.ServiceError);
      stream.end();
    }
  }

  /** Sends a new policy snapshot to every connected agent. */
  pushPolicy(snapshot: PolicySnapshot): void {
    for (const s of this.sessions.values()) {
      if (s.connected && s.stream) s.stream.write({ kind: { $case: "policy", value: snapshot } });
    }
  }

  /** The node the stream's verified client certificate names (mutual TLS), or why there is none. */
  private certifiedNode(stream: grpc.ServerDuplexStream<AgentRequest, ConnectResponse>): { node: string; subject: string } {
    // getAuthContext() carries a peer certificate only when the TLS layer verified it
    // against the client CA; connections with a certificate that failed never get here.
    const cert = stream.getAuthContext().sslPeerCertificate;
    if (!cert) {
      throw new AgentStreamError(grpc.status.UNAUTHENTICATED,
        "no client certificate: agents must present a node certificate issued by the control plane's CA (agent flags --tls-cert, --tls-key, --tls-ca)");
    }
    const identity = nodeOfCertificate(cert);
    if ("error" in identity) throw new AgentStreamError(grpc.status.PERMISSION_DENIED, identity.error);
    return { node: identity.node, subject: describeName(cert.subject as unknown as Record<string, string>) };
  }

  private serve(stream: grpc.ServerDuplexStream<AgentRequest, ConnectResponse>): void {
    let session: AgentSession | undefined;
    let refused = false;
    let certified: { node: string; subject: string } | undefined;
    const peer = stream.getPeer();
    const close = (err: AgentStreamError) => {
      refused = true;
      this.log.warn({ peer, node: session?.node ?? err.node, code: grpc.status[err.code], err: err.message }, "agent stream refused");
      if (session) session.connected = false;
      stream.emit("error", { code: err.code, details: err.message } as grpc.ServiceError);
      stream.end();
    };
    // Messages are handled one after another; only a hello waits (for the store's last
    // batch id of the instance), and what arrives meanwhile waits behind it.
    let handled = Promise.resolve();
    stream.on("data", (msg: AgentRequest) => {
      handled = handled.then(async () => {
        if (refused) return;
        try {
          if (!session) {
            session = await this.hello(msg, stream, certified);
            return;
          }
          this.onMessage(session, msg, (err) => close(err));
        } catch (err) {
          if (err instanceof AgentStreamError) close(err);
          else close(new AgentStreamError(grpc.status.INTERNAL, (err as Error).message));
        }
      });
    });
    const gone = (reason: string) => {
      if (session && session.stream === stream) {
        session.connected = false;
        session.stream = undefined;
        this.log.info({ node: session.node, reason }, "agent disconnected");
      }
    };
    stream.on("error", (err: Error) => gone(err.message));
    stream.on("end", () => { gone("stream ended"); stream.end(); });
    stream.on("cancelled", () => gone("cancelled"));
    if (this.hub.requireClientCertificate) {
      // Checked once the handlers above are in place: a refusal emits "error" on the stream.
      try {
        certified = this.certifiedNode(stream);
      } catch (err) {
        close(err as AgentStreamError);
      }
    }
  }

  private async hello(msg: AgentRequest, stream: grpc.ServerDuplexStream<AgentRequest, ConnectResponse>,
    certified: { node: string; subject: string } | undefined): Promise<AgentSession> {
    if (msg.kind?.$case !== "hello") {
      throw new AgentStreamError(grpc.status.FAILED_PRECONDITION, `the first message must be a hello, got ${msg.kind?.$case === "columnBytes" ? "columns" : msg.kind?.$case ?? "an empty message"}`);
    }
    const h = msg.kind.value;
    if (!(SUPPORTED_PROTOCOL_VERSIONS as readonly number[]).includes(h.protocolVersion)) {
      throw new AgentStreamError(grpc.status.FAILED_PRECONDITION,
        `agent protocol version ${h.protocolVersion} is not supported: this control plane speaks version ${SUPPORTED_PROTOCOL_VERSION}`
        + ` (and version 1 of agents not yet upgraded); run an agent and control plane of the same release`, h.node);
    }
    if (!isNodeName(h.node)) {
      throw new AgentStreamError(grpc.status.INVALID_ARGUMENT, `hello: node name "${h.node}" is not a valid Kubernetes node name`);
    }
    if (certified && h.node !== certified.node) {
      throw new AgentStreamError(grpc.status.PERMISSION_DENIED,
        `hello claims node "${h.node}", but the client certificate "${certified.subject}" is for node "${certified.node}"`, h.node);
    }
    if (!h.instanceId) throw new AgentStreamError(grpc.status.INVALID_ARGUMENT, "hello: no instance id");
    this.forgetGone(Date.now());
    let stored: bigint | undefined;
    try {
      stored = await this.hub.lastBatchId(h.instanceId);
    } catch (err) {
      throw new AgentStreamError(grpc.status.UNAVAILABLE, `flow store: ${(err as Error).message}`, h.node);
    }
    const prev = this.sessions.get(h.node);
    const sameInstance = prev?.instanceId === h.instanceId;
    if (prev?.connected && prev.stream && prev.stream !== stream) {
      // A new stream from the node replaces the old one (a reconnect that raced the old stream's end).
      prev.stream.end();
    }
    const session: AgentSession = {
      node: h.node, instanceId: h.instanceId, version: h.version, protocolVersion: h.protocolVersion, capabilities: h.capabilities,
      connected: true, lastSeenMs: Date.now(),
      records: prev?.records ?? 0n,
      // The store's view, else this process's: batches still in flight on an old stream
      // are re-sent, and the store skips those it committed meanwhile.
      lastBatchId: stored ?? (sameInstance && prev ? prev.lastBatchId : undefined),
      // The old stream's batches still in flight settle first: one that fails is in
      // `unstored` before a re-send of it is answered.
      acked: sameInstance && prev ? prev.acked : Promise.resolve(),
      unstored: sameInstance && prev ? prev.unstored : new Set(),
      stats: prev?.stats, stream,
    };
    this.sessions.set(h.node, session);
    this.log.info({ node: h.node, version: h.version, instance: h.instanceId, peer: stream.getPeer(),
      certificate: certified?.subject }, "agent connected");
    stream.write({ kind: { $case: "config", value: { node: h.node, drainIntervalMs: 0 } } });
    stream.write({ kind: { $case: "endpoints", value: { endpoints: this.hub.localEndpoints(h.node) } } });
    stream.write({ kind: { $case: "policy", value: this.hub.policy() } });
    return session;
  }

  /**
   * Forgets sessions disconnected for longer than SESSION_RETENTION_MS (their node left, or
   * was replaced under another name), so that node churn does not grow the registry, the
   * status and the node list for ever. Checked at each hello: only a hello adds a session.
   */
  private forgetGone(nowMs: number): void {
    for (const [node, s] of this.sessions) {
      if (!s.connected && nowMs - s.lastSeenMs > SESSION_RETENTION_MS) {
        this.sessions.delete(node);
        this.log.info({ node, lastSeenMs: s.lastSeenMs }, "agent session forgotten: disconnected for over an hour");
      }
    }
  }

  /** Tells the agent which batch is refused and where to go on (BatchRefused), and returns the error that ends the stream. */
  private refuse(s: AgentSession, batchId: bigint, nextBatchId: bigint, reason: string): AgentStreamError {
    s.stream?.write({ kind: { $case: "refused", value: { batchId, nextBatchId, reason } } });
    return new AgentStreamError(grpc.status.INVALID_ARGUMENT, reason);
  }

  private onMessage(s: AgentSession, msg: AgentRequest, fail: (err: AgentStreamError) => void): void {
    s.lastSeenMs = Date.now();
    const kind = msg.kind;
    if (!kind) throw new AgentStreamError(grpc.status.INVALID_ARGUMENT, "empty message");
    switch (kind.$case) {
      case "hello":
        throw new AgentStreamError(grpc.status.FAILED_PRECONDITION, "a second hello on one stream");
      case "stats":
        s.stats = kind.value;
        return;
      case "flows": {
        const batch = kind.value;
        this.acceptBatch(s, batch.batchId, batch.sentAt, fail, batch.records.length, () => {
          if (s.protocolVersion !== 1) {
            throw new Error(`batch ${batch.batchId}: protocol version ${s.protocolVersion} sends flows as FlowColumns, not FlowBatch`);
          }
          batch.records.forEach((r, i) => validateRecord(r, s.node, `batch ${batch.batchId} record ${i}`));
          return { records: batch.records };
        });
        return;
      }
      case "columns":
        // Never produced by decodeAgentRequest (it keeps FlowColumns as bytes).
        throw new AgentStreamError(grpc.status.INTERNAL, "FlowColumns decoded outside the columnar decoder");
      case "columnBytes": {
        let decoded;
        try {
          if (s.protocolVersion < 2) throw new ColumnsError(0n, "batch", `protocol version ${s.protocolVersion} sends flows as FlowBatch, not FlowColumns`);
          decoded = decodeColumns(kind.value);
        } catch (err) {
          if (!(err instanceof ColumnsError)) throw err;
          const id = err.batchId;
          // A batch id that could not be read, or is not the next one, names no batch to skip: the agent resends from the next.
          const next = s.lastBatchId === undefined ? undefined : s.lastBatchId + 1n;
          if (id === 0n || (next !== undefined && id !== next && !s.unstored.has(id))) {
            if (next !== undefined && id !== 0n && id < next) {
              s.acked = s.acked.then(() => { if (s.connected) s.stream?.write({ kind: { $case: "ack", value: { batchId: id } } }); });
              return;
            }
            throw this.refuse(s, 0n, next ?? 1n, err.message);
          }
          this.acceptBatch(s, id, undefined, fail, err.rows, () => { throw err; });
          return;
        }
        const d = decoded;
        this.acceptBatch(s, d.batchId, d.sentAt, fail, d.columns.rows, () => ({ columns: d.columns }));
        return;
      }
    }
  }

  /**
   * Applies batch `batchId` once: an id already applied is acknowledged again, one out of
   * order refused; `records()` checks the content and throws to refuse the batch (counted,
   * its id consumed so that the agent goes on with the next).
   */
  private acceptBatch(s: AgentSession, batchId: bigint, sentAt: Timestamp | undefined, fail: (err: AgentStreamError) => void,
    claimed: number, records: () => { records: FlowRecord[] } | { columns: FlowColumns }): void {
    const stream = s.stream;
    const ack = () => {
      if (s.stream === stream && s.connected) stream?.write({ kind: { $case: "ack", value: { batchId } } });
    };
    const again = s.unstored.delete(batchId);
    if (!again && s.lastBatchId !== undefined && batchId <= s.lastBatchId) {
      // Already applied (before a reconnect, or in flight): acknowledge again once
      // everything before it is settled, apply never twice; unless it failed meanwhile.
      s.acked = s.acked.then(() => {
        if (!s.unstored.has(batchId)) ack();
        else if (s.stream === stream) fail(new AgentStreamError(grpc.status.UNAVAILABLE, `batch ${batchId} was not stored; re-send it`));
      });
      return;
    }
    if (!again && s.lastBatchId !== undefined && batchId !== s.lastBatchId + 1n) {
      throw this.refuse(s, 0n, s.lastBatchId + 1n, `batch ${batchId} out of order: expected ${s.lastBatchId + 1n}`);
    }
    let valid: { records: FlowRecord[] } | { columns: FlowColumns };
    try {
      valid = records();
    } catch (err) {
      // The batch is consumed, refused: the agent goes on with the next id. Stored
      // empty, so that the store's instance sequence has no gap.
      s.lastBatchId = max(s.lastBatchId, batchId);
      this.hub.refusedBatch(s.node, claimed);
      this.hub.ingest({ node: s.node, instanceId: s.instanceId, batchId, records: [] }).catch(() => undefined);
      throw this.refuse(s, batchId, batchId + 1n, (err as Error).message);
    }
    const count = "records" in valid ? valid.records.length : valid.columns.rows;
    const durable = this.hub.ingest({ node: s.node, instanceId: s.instanceId, batchId, ...valid },
      sentAt === undefined ? undefined : Number(sentAt.seconds) * 1000 + sentAt.nanos / 1e6 - Date.now());
    s.lastBatchId = max(s.lastBatchId, batchId);
    const previous = s.acked;
    // Not acknowledged when it fails: the agent keeps it and what follows, and re-sends them
    // after reconnecting; the store holds nothing past its last committed batch.
    const failure = durable.then(() => undefined, (err: Error) => { s.unstored.add(batchId); return err; });
    // Settles after every batch before it did, and never rejects: later batches fail on their own.
    s.acked = Promise.all([failure, previous]).then(([err]) => {
      if (err === undefined) {
        s.records += BigInt(count);
        ack();
      } else if (s.stream === stream) {
        this.log.error({ node: s.node, batch: Number(batchId), err: err.message }, "batch not stored; not acknowledged");
        fail(new AgentStreamError(grpc.status.UNAVAILABLE, `${err.message}; batch ${batchId} not acknowledged, re-send it`));
      }
    });
  }
}

function max(a: bigint | undefined, b: bigint): bigint {
  return a === undefined || b > a ? b : a;
}
