// Synthetic enriched flow records for the store benchmarks (bench/store.ts,
// bench/history-store.ts), so both measure the same records. The mix is described at the
// top of bench/store.ts: 20 namespaces x 25 pods (5 Deployments), 10 nodes, one Service
// per Deployment, 200 world addresses; shared frozen Endpoints as the enricher hands out,
// fresh strings, timestamps and bigints per record as decoding yields.
import { IpVersion, ObservationPoint, ReporterSide, Verdict, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { seededRandom } from "../test/harness/seeded-random.js";

const NAMESPACES = 20;
const PODS_PER_NAMESPACE = 25;
const WORKLOADS_PER_NAMESPACE = 5;
const NODES = 10;
const WORLD = 200;

export interface SyntheticFlowsOptions {
  /** Records the run will produce: end times spread evenly over the span by this count. */
  records: number;
  /** End times span [endMs - spanMs, endMs]. */
  spanMs: number;
  /** Default: now. */
  endMs?: number;
  seed?: number;
}

export class SyntheticFlows {
  private produced = 0;
  private sequence = 0n;
  private readonly rand: () => number;
  private readonly pods: Endpoint[] = [];
  private readonly services: Endpoint[] = [];
  private readonly worlds: Endpoint[];
  private readonly endMs: number;

  constructor(private readonly options: SyntheticFlowsOptions) {
    this.rand = seededRandom(options.seed ?? 42);
    this.endMs = options.endMs ?? Date.now();
    for (let n = 0; n < NAMESPACES; n++) {
      for (let w = 0; w < WORKLOADS_PER_NAMESPACE; w++) {
        this.services.push(endpoint({ ip: `10.96.${n}.${w + 1}`, namespace: `ns-${n}`, service: `ns-${n}/svc-${w}` }));
        for (let p = 0; p < PODS_PER_NAMESPACE / WORKLOADS_PER_NAMESPACE; p++) {
          const i = this.pods.length;
          this.pods.push(endpoint({
            ip: `10.${(i >> 8) + 1}.${i & 255}.${(n % 200) + 1}`, namespace: `ns-${n}`, podName: `app-${w}-${p}`,
            podUid: `uid-${i}`, labels: Object.freeze({ app: `app-${w}`, team: `t${n}` }), workloadKind: "Deployment",
            workloadName: `app-${w}`, node: `node-${i % NODES}`,
          }));
        }
      }
    }
    this.worlds = Array.from({ length: WORLD }, (_, i) => endpoint({ ip: `203.0.${i >> 8}.${i & 255}`, world: true }));
  }

  /** Starts over (same records again, same sequence numbers not reused). */
  rewind(): void {
    this.produced = 0;
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }

  private record(src: Endpoint, dst: Endpoint, point: ObservationPoint, endMs: number): FlowRecord {
    const rand = this.rand;
    const tcp = rand() < 0.7;
    const v = rand();
    const seconds = Math.floor(endMs / 1000);
    const nanos = (endMs - seconds * 1000) * 1_000_000;
    const observed = point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? src : dst;
    return {
      startTime: { seconds: BigInt(seconds - 1), nanos },
      endTime: { seconds: BigInt(seconds), nanos },
      node: fresh(observed.node || "node-0"),
      point,
      reporter: point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? ReporterSide.REPORTER_SIDE_SOURCE : ReporterSide.REPORTER_SIDE_DESTINATION,
      interface: fresh(`lxc${observed.podUid}`),
      ifindex: 100 + (this.produced % 500),
      ip: { source: fresh(src.ip), destination: fresh(dst.ip), version: IpVersion.IP_VERSION_IPV4 },
      l4: {
        protocol: tcp ? 6 : 17,
        protocolName: fresh(tcp ? "TCP" : "UDP"),
        sourcePort: 32768 + Math.floor(rand() * 28000),
        destinationPort: tcp ? 8080 : 53,
        tcpFlags: tcp ? { fin: false, syn: rand() < 0.1, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false } : undefined,
        icmpType: 0,
        icmpCode: 0,
      },
      packets: BigInt(1 + Math.floor(rand() * 100)),
      bytes: BigInt(100 + Math.floor(rand() * 100_000)),
      source: src,
      destination: dst,
      verdict: v < 0.9 ? Verdict.VERDICT_FORWARDED : v < 0.97 ? Verdict.VERDICT_DROPPED : Verdict.VERDICT_AUDIT,
      verdictReason: 0,
      attribution: undefined,
      sequence: this.sequence++,
    };
  }

  /** The next `size` records (a pod -> pod pair may make it one more). */
  batch(size: number): FlowRecord[] {
    const { records, spanMs } = this.options;
    const out: FlowRecord[] = [];
    while (out.length < size) {
      const endMs = this.endMs - spanMs + Math.floor((this.produced / records) * spanMs);
      const kind = this.rand();
      if (kind < 0.4) {
        const src = this.pick(this.pods), dst = this.pick(this.pods);
        out.push(this.record(src, dst, ObservationPoint.OBSERVATION_POINT_FROM_POD, endMs));
        out.push(this.record(src, dst, ObservationPoint.OBSERVATION_POINT_TO_POD, endMs));
        this.produced += 2;
      } else if (kind < 0.5) {
        out.push(this.record(this.pick(this.pods), this.pick(this.services), ObservationPoint.OBSERVATION_POINT_FROM_POD, endMs));
        this.produced++;
      } else if (kind < 0.55) {
        out.push(this.record(this.pick(this.worlds), this.pick(this.pods), ObservationPoint.OBSERVATION_POINT_TO_POD, endMs));
        this.produced++;
      } else {
        out.push(this.record(this.pick(this.pods), this.pick(this.worlds), ObservationPoint.OBSERVATION_POINT_FROM_POD, endMs));
        this.produced++;
      }
    }
    return out;
  }
}

function endpoint(fields: Partial<Endpoint>): Endpoint {
  return Object.freeze({
    ip: "", namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "",
    node: "", service: "", world: false, ...fields,
  });
}

/** A copy of a string that is not the same object, as decoding a message yields. */
const fresh = (s: string) => (" " + s).slice(1);
