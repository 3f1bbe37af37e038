// Names both ends of every flow record: pod (with labels, workload and node), Service
// ClusterIP, node, or world, as of the record's start time, so that a reused pod IP is
// named after the pod that held it when the flow happened.
//
// This runs once per record at the full ingest rate, so the common case allocates
// nothing: the answer for an address is cached together with the time span over which it
// holds (between lease edges) and the version of that address's history it was computed
// from (so metadata churn elsewhere in the cluster does not empty the cache), and the
// Endpoint objects it hands out are shared, frozen objects (one per pod and address;
// see PodRecord.endpointFor). Consumers must treat record.source and record.destination
// as read-only; copy an Endpoint before changing it.
import { ObservationPoint, VerdictReason, type Endpoint, type FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import type { ChangeCounter, ClusterState } from "./state.js";

export interface EnricherOptions {
  /** Addresses whose answer is cached; default 65,536. The cache is emptied when full. */
  cacheSize?: number;
}

/** A cached answer for one address; times as (seconds, nanoseconds) pairs of numbers. */
interface CachedAnswer {
  endpoint: Endpoint;
  /** The answer stands while counter.version === version. */
  counter: ChangeCounter;
  version: number;
  fromSeconds: number;
  fromNanos: number;
  toSeconds: number;
  toNanos: number;
}

const NS_PER_SECOND = 1_000_000_000n;

export class Enricher {
  private readonly byAddress = new Map<string, CachedAnswer>();
  private readonly cacheSize: number;

  constructor(private readonly state: ClusterState, options: EnricherOptions = {}) {
    this.cacheSize = options.cacheSize ?? 65_536;
  }

  /**
   * Fills record.source and record.destination in place and returns the record. An end
   * that already carries a podUid (the agent names its local pod by interface) is
   * completed from that pod, even one deleted within the lease retention; every other end
   * is resolved from its address at the record's startTime (endTime, or now, if absent).
   */
  enrich(record: FlowRecord): FlowRecord {
    const time = record.startTime ?? record.endTime;
    let seconds: number;
    let nanos: number;
    if (time !== undefined) {
      // Seconds since 1970 fit a double exactly; comparing (seconds, nanos) pairs avoids
      // bigint arithmetic per record.
      seconds = Number(time.seconds);
      nanos = time.nanos;
    } else {
      const ms = Date.now();
      seconds = Math.floor(ms / 1000);
      nanos = (ms % 1000) * 1_000_000;
    }
    const l3 = record.ip;
    record.source = record.point === ObservationPoint.OBSERVATION_POINT_FROM_POD
      && record.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED
      ? this.spoofedSource(record.source)
      : this.endpointOf(record.source, l3 === undefined ? "" : l3.source, seconds, nanos);
    record.destination = this.endpointOf(record.destination, l3 === undefined ? "" : l3.destination, seconds, nanos);
    return record;
  }

  /**
   * The sender of a packet with a forged source address: the pod the agent named by the
   * interface it came from (under the pod's own address), never the owner of the forged
   * address. Unnamed, it stays unresolved (an "unknown" end with no address).
   */
  private spoofedSource(given: Endpoint | undefined): Endpoint | undefined {
    if (given === undefined || given.podUid === "") return undefined;
    return this.state.podEndpoint(given.podUid, given.ip) ?? given;
  }

  private endpointOf(given: Endpoint | undefined, ip: string, seconds: number, nanos: number): Endpoint | undefined {
    if (given !== undefined && given.podUid !== "") {
      const known = this.state.podEndpoint(given.podUid, ip !== "" ? ip : given.ip);
      if (known !== undefined) return known;
      // A pod the agent knows before the control plane does: keep the agent's naming.
      if (given.ip === "") given.ip = ip;
      return given;
    }
    if (ip === "") return given;
    const resolved = this.resolve(ip, seconds, nanos);
    if (resolved.world && given !== undefined && given.podName !== "") {
      if (given.ip === "") given.ip = ip;
      return given;
    }
    return resolved;
  }

  private resolve(ip: string, seconds: number, nanos: number): Endpoint {
    const cached = this.byAddress.get(ip);
    if (cached !== undefined && cached.counter.version === cached.version
      && (seconds > cached.fromSeconds || (seconds === cached.fromSeconds && nanos >= cached.fromNanos))
      && (seconds < cached.toSeconds || (seconds === cached.toSeconds && nanos < cached.toNanos))) {
      return cached.endpoint;
    }
    return this.refresh(cached, ip, seconds, nanos);
  }

  private refresh(cached: CachedAnswer | undefined, ip: string, seconds: number, nanos: number): Endpoint {
    const span = this.state.resolveSpan(ip, BigInt(seconds) * NS_PER_SECOND + BigInt(nanos));
    let answer = cached;
    if (answer === undefined) {
      if (this.byAddress.size >= this.cacheSize) this.byAddress.clear();
      answer = { endpoint: span.endpoint, counter: this.state.unknownAddresses, version: 0, fromSeconds: 0, fromNanos: 0, toSeconds: 0, toNanos: 0 };
      this.byAddress.set(ip, answer);
    }
    answer.endpoint = span.endpoint;
    answer.counter = span.address ?? this.state.unknownAddresses;
    answer.version = answer.counter.version;
    if (span.fromNs === undefined) {
      answer.fromSeconds = -Infinity;
      answer.fromNanos = 0;
    } else {
      answer.fromSeconds = Number(floorSeconds(span.fromNs));
      answer.fromNanos = Number(span.fromNs - floorSeconds(span.fromNs) * NS_PER_SECOND);
    }
    if (span.toNs === undefined) {
      answer.toSeconds = Infinity;
      answer.toNanos = 0;
    } else {
      answer.toSeconds = Number(floorSeconds(span.toNs));
      answer.toNanos = Number(span.toNs - floorSeconds(span.toNs) * NS_PER_SECOND);
    }
    return span.endpoint;
  }
}

function floorSeconds(ns: bigint): bigint {
  const s = ns / NS_PER_SECOND;
  return ns < 0n && s * NS_PER_SECOND !== ns ? s - 1n : s;
}
