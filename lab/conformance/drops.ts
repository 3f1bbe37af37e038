// Denials as the datapath reports them. A probe's 5-tuple is known before it is sent (the
// engine picks its source port, prober.ts), so a DROPPED flow record of exactly that
// 5-tuple says the datapath refused that probe: no need to wait out the connect timeout.
// The records come from the lab's control plane over the Observer API (one GetFlows follow
// stream of DROPPED records, DropStream); DropMatcher hands each to the probe it is about.
//
// Exactness: a record settles a probe only when its verdict is DROPPED and its protocol,
// source address, source port and destination port are the probe's and its destination is
// the probe's destination (the backend pod, as the datapath judges a ClusterIP probe after
// DNAT, or the ClusterIP itself). A drop of any other 5-tuple — another source port,
// another peer — is not this probe's. Only records that arrive while the probe waits count.
import type { ClientReadableStream } from "@grpc/grpc-js";
import { type FlowRecord, Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter, GetFlowsRequest, type GetFlowsResponse, type ObserverServiceClient } from "../../proto/gen/bulkhead/v1/observer.js";
import type { Protocol } from "../topology.js";

/** IANA protocol numbers, as Layer4.protocol carries them. */
export const PROTOCOL_NUMBERS: Readonly<Record<Protocol, number>> = { TCP: 6, UDP: 17, SCTP: 132 };

/** One probe's packets as they leave the source pod. */
export interface ProbeTuple {
  protocol: Protocol;
  source: string;
  sport: number;
  /** The addresses the datapath may report as its destination: the backend pod's and the ClusterIP it dialled. */
  destinations: readonly string[];
  dport: number;
}

/** "TCP 10.244.1.2:20001 > 10.244.2.3:80" */
export function describeRecordTuple(r: FlowRecord): string {
  return `${r.l4?.protocolName || r.l4?.protocol || "?"} ${r.ip?.source ?? "?"}:${r.l4?.sourcePort ?? "?"} > ${r.ip?.destination ?? "?"}:${r.l4?.destinationPort ?? "?"}`;
}

const key = (protocol: number, source: string, sport: number, dport: number) => `${protocol}|${source}|${sport}|${dport}`;

interface Waiter {
  destinations: ReadonlySet<string>;
  resolve: (record: FlowRecord) => void;
}

/** Probes waiting for a drop record of their 5-tuple, and the records that settle them. */
export class DropMatcher {
  private readonly waiting = new Map<string, Waiter[]>();

  /**
   * `dropped` resolves with the first DROPPED record of exactly `tuple` that arrives from now
   * on (never, if none does); cancel() once the probe is decided.
   */
  expect(tuple: ProbeTuple): { dropped: Promise<FlowRecord>; cancel: () => void } {
    const k = key(PROTOCOL_NUMBERS[tuple.protocol], tuple.source, tuple.sport, tuple.dport);
    let waiter: Waiter | undefined;
    const dropped = new Promise<FlowRecord>((resolve) => {
      waiter = { destinations: new Set(tuple.destinations), resolve };
    });
    const w = waiter as unknown as Waiter;
    this.waiting.set(k, [...(this.waiting.get(k) ?? []), w]);
    const cancel = () => {
      const rest = (this.waiting.get(k) ?? []).filter((x) => x !== w);
      if (rest.length > 0) this.waiting.set(k, rest); else this.waiting.delete(k);
    };
    return { dropped, cancel };
  }

  /** Settles the probes this record is about; true when there was one. */
  onRecord(r: FlowRecord): boolean {
    if (r.verdict !== Verdict.VERDICT_DROPPED || !r.ip || !r.l4) return false;
    const k = key(r.l4.protocol, r.ip.source, r.l4.sourcePort, r.l4.destinationPort);
    const list = this.waiting.get(k);
    if (!list) return false;
    const settled = list.filter((w) => w.destinations.has(r.ip?.destination ?? ""));
    if (settled.length === 0) return false;
    const rest = list.filter((w) => !settled.includes(w));
    if (rest.length > 0) this.waiting.set(k, rest); else this.waiting.delete(k);
    for (const w of settled) w.resolve(r);
    return true;
  }

  /** Probes still waiting (for tests). */
  get pending(): number {
    let n = 0;
    for (const list of this.waiting.values()) n += list.length;
    return n;
  }
}

/**
 * One GetFlows follow stream of the control plane's DROPPED records into a DropMatcher.
 * ensure() opens it (again, after it ended or failed: a probe without it falls back to its
 * timeout, which is slower, never wrong).
 */
export class DropStream {
  private call: ClientReadableStream<GetFlowsResponse> | undefined;
  private client: ObserverServiceClient | undefined;
  private closed = false;

  constructor(private readonly connect: () => ObserverServiceClient, readonly matcher: DropMatcher,
    private readonly log: (line: string) => void = () => {}) {}

  ensure(): void {
    if (this.call || this.closed) return;
    const now = Date.now();
    const client = this.connect();
    const call = client.getFlows(GetFlowsRequest.fromPartial({
      allow: [FlowFilter.fromPartial({ verdict: [Verdict.VERDICT_DROPPED] })],
      since: { seconds: BigInt(Math.floor(now / 1000)), nanos: (now % 1000) * 1e6 },
      follow: true,
    }));
    this.client = client;
    this.call = call;
    call.on("data", (res: GetFlowsResponse) => { if (res.flow) this.matcher.onRecord(res.flow); });
    const ended = (why: string) => {
      if (this.call !== call) return;
      this.call = undefined;
      this.client = undefined;
      client.close();
      if (!this.closed) this.log(`conformance: the stream of drop records ${why}; probes wait out their timeout until it is open again`);
    };
    call.on("error", (err: Error) => ended(`failed: ${err.message}`));
    call.on("end", () => ended("ended"));
  }

  close(): void {
    this.closed = true;
    const { call, client } = this;
    this.call = undefined;
    this.client = undefined;
    call?.cancel();
    client?.close();
  }
}
