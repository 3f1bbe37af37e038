// The agent's one AgentService.Connect stream to the control plane: a hello naming the
// node, then records and stats up, and configuration, endpoints, policy snapshots and
// acknowledgements down. It reconnects with jittered exponential backoff (a refusal of the
// agent's identity backs off longer and is logged as an error every time) and hands each
// message to whoever listens for its kind: the record sink (export/controlplane.ts) and the
// policy stream (policy-stream.ts).
//
// Given several addresses (control-plane replicas sharing one store), it starts at one
// picked by the node's name, so a cluster's agents spread over the replicas, and moves to
// the next whenever a stream is lost or cannot be opened: an agent whose replica died
// re-sends what was unacknowledged to another, and the store keeps each batch once.
import crypto from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  AgentServiceService, ConnectRequest, type AgentStats, type BatchRefused, type ConnectResponse, type LocalEndpoint,
} from "../../proto/gen/bulkhead/v1/agent.js";
import { MAX_MESSAGE_BYTES, MAX_POLICY_MESSAGE_BYTES, PROTOCOL_VERSION } from "../../config/wire.js";
import type { PolicySnapshot } from "../../proto/gen/bulkhead/v1/policy.js";
import { tlsChannel } from "../../tls/client.js";
import { VERSION } from "../../config/version.js";

export { PROTOCOL_VERSION };

export interface ConnectionOptions {
  /** The control plane's address (HOST:PORT or unix:///PATH), or its replicas', tried in turn. */
  addresses: readonly string[];
  node: string;
  capabilities: string[];
  log: Logger;
  /** Mutual TLS: this node's certificate and key, and the CA of the control plane's certificate. */
  tls?: { cert: Buffer; key: Buffer; ca: Buffer };
}

/** What a listener hears; each is called in the order the listeners were added. */
export interface ConnectionEvents {
  /** The control plane answered the hello (its config arrived): the stream is up, again after a reconnect. */
  connected: () => void;
  /** The stream ended (`err` undefined: it ended cleanly); heard before the reconnect is scheduled. */
  disconnected: (err: grpc.ServiceError | undefined) => void;
  /** Every batch up to and including `batchId` is stored. */
  ack: (batchId: bigint) => void;
  /** A batch refused (the stream ends next) and the id the control plane applies next. */
  refused: (refusal: BatchRefused) => void;
  endpoints: (endpoints: LocalEndpoint[]) => void;
  policy: (snapshot: PolicySnapshot) => void;
}

/** A refusal of who this agent is: retrying soon cannot help, so it backs off longer and says so every time. */
const REFUSED_CODES = new Set([grpc.status.UNAUTHENTICATED, grpc.status.PERMISSION_DENIED]);
const MAX_RETRY_MS = 5000;
const MAX_RETRY_REFUSED_MS = 30_000;

/** What the sender has waiting, for the logs: batches unacknowledged (re-sent first on a reconnect) and records buffered. */
export interface Backlog { inFlight: number; buffered: number }

type Listeners = { [K in keyof ConnectionEvents]: ConnectionEvents[K][] };

/**
 * What goes up the stream: a ConnectRequest, or one already encoded (the record sink keeps
 * its batches as wire bytes, ../export/record-buffer.ts, and sends them as they are).
 */
export type Outgoing = ConnectRequest | Uint8Array;

function serialize(m: Outgoing): Buffer {
  return m instanceof Uint8Array ? Buffer.from(m.buffer, m.byteOffset, m.byteLength) : Buffer.from(ConnectRequest.encode(m).finish());
}

export class ControlPlaneConnection {
  readonly instanceId = crypto.randomUUID();
  private readonly clients: (grpc.Client | undefined)[];
  private current: number;
  private readonly listeners: Listeners = { connected: [], disconnected: [], ack: [], refused: [], endpoints: [], policy: [] };
  private call: grpc.ClientDuplexStream<Outgoing, ConnectResponse> | undefined;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private backlog: () => Backlog = () => ({ inFlight: 0, buffered: 0 });
  connected = false;

  constructor(private readonly opts: ConnectionOptions) {
    if (opts.addresses.length === 0) throw new Error("ControlPlaneConnection: no control-plane address");
    this.clients = opts.addresses.map(() => undefined);
    this.current = startingReplica(opts.node, opts.addresses.length);
  }

  /** The address the stream uses now (or tries next). */
  get address(): string {
    return this.opts.addresses[this.current]!;
  }

  private client(): grpc.Client {
    const existing = this.clients[this.current];
    if (existing) return existing;
    const address = this.address;
    const tls = this.opts.tls ? tlsChannel(address, this.opts.tls.ca, this.opts.tls) : undefined;
    const created = new grpc.Client(address, tls?.credentials ?? grpc.credentials.createInsecure(), {
      ...tls?.options,
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
      // Policy snapshots arrive as one message; grpc's default (4 MiB) cut off large clusters.
      "grpc.max_receive_message_length": MAX_POLICY_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      // The channel's own reconnect backoff (grpc's default grows to 120 s) under ours: after
      // a 30 s outage the stream came back 19-23 s after the control plane did.
      "grpc.max_reconnect_backoff_ms": MAX_RETRY_MS,
    });
    this.clients[this.current] = created;
    return created;
  }

  on<K extends keyof ConnectionEvents>(event: K, listener: ConnectionEvents[K]): void {
    this.listeners[event].push(listener);
  }

  /** What waits to be sent (the record sink's), shown in the connection's logs. */
  reportBacklog(backlog: () => Backlog): void {
    this.backlog = backlog;
  }

  start(): void {
    this.connect();
  }

  /** Writes on the current stream; false (nothing written) while there is none. */
  write(request: Outgoing): boolean {
    if (!this.call) return false;
    this.call.write(request);
    return true;
  }

  sendStats(stats: AgentStats): void {
    if (this.connected) this.write({ kind: { $case: "stats", value: stats } });
  }

  private connect(): void {
    if (this.stopped) return;
    const { path: method, responseDeserialize } = AgentServiceService.connect;
    const call = this.client().makeBidiStreamRequest(method, serialize, responseDeserialize);
    this.call = call;
    call.write({
      kind: { $case: "hello", value: {
        node: this.opts.node, version: VERSION, protocolVersion: PROTOCOL_VERSION,
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
        this.opts.log.info({ address: this.address, resend: this.backlog().inFlight }, "connected to control plane");
        for (const l of this.listeners.connected) l();
      }
    } else if (kind.$case === "endpoints") {
      for (const l of this.listeners.endpoints) l(kind.value.endpoints);
    } else if (kind.$case === "policy") {
      for (const l of this.listeners.policy) l(kind.value);
    } else if (kind.$case === "ack") {
      for (const l of this.listeners.ack) l(kind.value.batchId);
    } else if (kind.$case === "refused") {
      for (const l of this.listeners.refused) l(kind.value);
    }
  }

  private onDisconnect(call: grpc.ClientDuplexStream<Outgoing, ConnectResponse>, err: grpc.ServiceError | undefined): void {
    if (call !== this.call) return;
    this.call = undefined;
    for (const l of this.listeners.disconnected) l(err);
    const wasConnected = this.connected;
    this.connected = false;
    if (this.stopped) return;
    const refused = err !== undefined && REFUSED_CODES.has(err.code);
    const delay = Math.min(refused ? MAX_RETRY_REFUSED_MS : MAX_RETRY_MS, 100 * 2 ** Math.min(this.attempt, 9));
    const jittered = Math.round(delay / 2 + Math.random() * delay / 2);
    this.attempt++;
    if (refused) {
      this.opts.log.error({ address: this.address, code: grpc.status[err.code], err: err.details,
        retryMs: jittered, buffered: this.backlog().buffered }, "control plane refused this agent; retrying");
    } else {
      const level = wasConnected || this.attempt === 1 ? "warn" : "debug";
      this.opts.log[level]({ address: this.address, code: err?.code, err: err?.details ?? "stream ended",
        retryMs: jittered, buffered: this.backlog().buffered }, "control plane stream lost; reconnecting");
    }
    // Another replica, if there is one: this one is gone, or refuses this agent.
    this.current = (this.current + 1) % this.opts.addresses.length;
    this.reconnectTimer = setTimeout(() => this.connect(), jittered);
  }

  /** Ends the stream and stops reconnecting. */
  close(): void {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.call?.end();
    this.call?.cancel();
    for (const client of this.clients) client?.close();
  }
}

/** Where a node's agent starts among `n` replicas: spread, and the same at every restart. */
function startingReplica(node: string, n: number): number {
  return crypto.createHash("sha256").update(node).digest().readUInt32BE(0) % n;
}
