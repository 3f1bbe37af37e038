// Streams flow records to the control plane over AgentService.Connect. Records wait in
// a bounded buffer (drop-oldest, counted) while the control plane is away; batches stay
// in flight until acknowledged and are re-sent after a reconnect, and the control plane
// applies each (instance, batch id) once, so an outage loses nothing that fits the buffer.
import crypto from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  AgentServiceClient, type ConnectRequest, type ConnectResponse, type LocalEndpoint, type AgentStats,
} from "../../proto/gen/bulkhead/v1/agent.js";
import type { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import type { PolicySnapshot } from "../../proto/gen/bulkhead/v1/policy.js";
import { BoundedQueue } from "../queue.js";
import type { RecordSink } from "./sink.js";
import { tlsChannel } from "../../tls/client.js";
import { MAX_MESSAGE_BYTES, MAX_POLICY_MESSAGE_BYTES } from "../../config/wire.js";

export const PROTOCOL_VERSION = 1;
export const AGENT_VERSION = "0.1.0";

export interface ControlPlaneSinkOptions {
  address: string;
  node: string;
  capabilities: string[];
  /** Records buffered while disconnected (default 1,200,000: 120 s at 10k records/s). */
  bufferRecords: number;
  batchRecords?: number;
  maxInFlight?: number;
  log: Logger;
  onEndpoints(endpoints: LocalEndpoint[]): void;
  /** A new policy snapshot to enforce; errors are the callee's to handle and count. */
  onPolicy?(snapshot: PolicySnapshot): void;
  onBufferDrop(n: number): void;
  /** Records in batches the control plane refused as invalid: re-sending them would fail forever. */
  onRefused(n: number, reason: string): void;
  /** Mutual TLS: this node's certificate and key, and the CA of the control plane's certificate. */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
}

/** A refusal of who this agent is: retrying soon cannot help, so it backs off longer and says so every time. */
const REFUSED_CODES = new Set([grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);
const MAX_RETRY_MS = 5000;
const MAX_RETRY_REFUSED_MS = 30_000;

interface Batch { id: bigint; records: FlowRecord[] }

export class ControlPlaneSink implements RecordSink {
  readonly name = "controlplane";
  readonly instanceId = crypto.randomUUID();
  private readonly buffer: BoundedQueue<FlowRecord>;
  private readonly inFlight: Batch[] = [];
  private readonly client: AgentServiceClient;
  private call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse> | undefined;
  private nextBatchId = 1n;
  /** The control plane said which batch it refused and where to go on (BatchRefused) on this stream. */
  private resynced = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  connected = false;
  sentRecords = 0n;

  constructor(private readonly opts: ControlPlaneSinkOptions) {
    this.buffer = new BoundedQueue<FlowRecord>(opts.bufferRecords, opts.onBufferDrop);
    const tls = opts.tls ? tlsChannel(opts.address, opts.tls.ca, opts.tls) : undefined;
    this.client = new AgentServiceClient(opts.address, tls?.credentials ?? grpc.credentials.createInsecure(), {
      ...tls?.options,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // Policy snapshots arrive as one message; grpc's default (4 MiB) cut off large clusters.
      "grpc.max_receive_message_length": MAX_POLICY_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
    });
  }

  get pending(): number {
    return this.buffer.length + this.inFlight.reduce((n, b) => n + b.records.length, 0);
  }

  start(): void {
    this.connect();
  }

  push(records: readonly FlowRecord[]): void {
    this.buffer.pushAll(records);
    this.flush();
  }

  sendStats(stats: AgentStats): void {
    if (this.connected) this.call?.write({ kind: { $case: "stats", value: stats } });
  }

  private connect(): void {
    if (this.stopped) return;
    const call = this.client.connect();
    this.call = call;
    call.write({
      kind: { $case: "hello", value: {
        node: this.opts.node, version: AGENT_VERSION, protocolVersion: PROTOCOL_VERSION,
        capabilities: this.opts.capabilities, instanceId: this.instanceId,
      } },
    });
    call.on("data", (msg: ConnectResponse) => this.onMessage(msg));
    call.on("error", (err: grpc.ServiceError) => this.onDisconnect(call, err));
    call.on("end", () => this.onDisconnect(call, undefined));
  }

  private onMessage(msg: ConnectResponse): void {
    const kind = msg.kind;
    if (!kind) return;
    if (kind.$case === "config") {
      if (!this.connected) {
        this.connected = true;
        this.attempt = 0;
        this.opts.log.info({ address: this.opts.address, resend: this.inFlight.length }, "connected to control plane");
        // Batches unacknowledged on the last stream go first, in their order.
        for (const b of this.inFlight) this.writeBatch(b);
        this.flush();
      }
    } else if (kind.$case === "endpoints") {
      this.opts.onEndpoints(kind.value.endpoints);
    } else if (kind.$case === "policy") {
      try {
        this.opts.onPolicy?.(kind.value);
      } catch (err) {
        // A failed apply must never take the stream down with it.
        this.opts.log.error({ version: String(kind.value.version), err: (err as Error).message }, "policy snapshot not applied");
      }
    } else if (kind.$case === "refused") {
      // The stream ends next (INVALID_ARGUMENT): drop only the refused batch and renumber
      // the rest from where the control plane goes on; they are re-sent on reconnect.
      const { batchId, nextBatchId, reason } = kind.value;
      const i = this.inFlight.findIndex((b) => b.id === batchId);
      if (batchId !== 0n && i >= 0) this.opts.onRefused(this.inFlight.splice(i, 1)[0]?.records.length ?? 0, reason);
      let id = nextBatchId;
      for (const b of this.inFlight) b.id = id++;
      this.nextBatchId = id;
      this.resynced = true;
    } else if (kind.$case === "ack") {
      const id = kind.value.batchId;
      while (this.inFlight.length && (this.inFlight[0]?.id ?? id + 1n) <= id) {
        const b = this.inFlight.shift();
        if (b) this.sentRecords += BigInt(b.records.length);
      }
      this.flush();
    }
  }

  private onDisconnect(call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>, err: grpc.ServiceError | undefined): void {
    if (call !== this.call) return;
    this.call = undefined;
    if (err?.code === grpc.status.INVALID_ARGUMENT && this.inFlight.length > 0 && !this.resynced) {
      // A refusal without BatchRefused: which batch was bad is unknown, and re-sending them all could fail forever.
      const refused = this.inFlight.splice(0).reduce((n, b) => n + b.records.length, 0);
      this.opts.onRefused(refused, err.details);
    }
    this.resynced = false;
    const wasConnected = this.connected;
    this.connected = false;
    if (this.stopped) return;
    const refused = err !== undefined && REFUSED_CODES.has(err.code);
    const delay = Math.min(refused ? MAX_RETRY_REFUSED_MS : MAX_RETRY_MS, 100 * 2 ** Math.min(this.attempt, 9));
    const jittered = Math.round(delay / 2 + Math.random() * delay / 2);
    this.attempt++;
    if (refused) {
      this.opts.log.error({ address: this.opts.address, code: grpc.status[err.code], err: err.details,
        retryMs: jittered, buffered: this.pending }, "control plane refused this agent; retrying");
    } else {
      const level = wasConnected || this.attempt === 1 ? "warn" : "debug";
      this.opts.log[level]({ address: this.opts.address, code: err?.code, err: err?.details ?? "stream ended",
        retryMs: jittered, buffered: this.pending }, "control plane stream lost; reconnecting");
    }
    this.reconnectTimer = setTimeout(() => this.connect(), jittered);
  }

  private flush(): void {
    const max = this.opts.maxInFlight ?? 8;
    while (this.connected && this.inFlight.length < max && this.buffer.length > 0) {
      const batch: Batch = { id: this.nextBatchId++, records: this.buffer.take(this.opts.batchRecords ?? 2000) };
      this.inFlight.push(batch);
      this.writeBatch(batch);
    }
  }

  private writeBatch(batch: Batch): void {
    const ms = Date.now();
    const sentAt = { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
    this.call?.write({ kind: { $case: "flows", value: { batchId: batch.id, records: batch.records, sentAt } } });
  }

  /** Waits up to `timeoutMs` for every buffered record to be acknowledged; resolves to those that were not. */
  async close(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (this.pending > 0 && this.connected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const unsent = this.pending;
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.call?.end();
    this.call?.cancel();
    this.client.close();
    return unsent;
  }
}
