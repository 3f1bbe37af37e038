// The flow map's cardinality bound (controlplane/store/flowmap.ts, rule 6): one pod talking
// to N distinct world addresses (default 2,000,000), e.g. a scan or a public service's
// clients. Run after `npm run build:ts` as `node dist/bench/flowmap-cardinality.js [N]`.
//
// Method: one FlowMapStore with its default budgets (20,000 edges per namespace, 500,000 in
// all, 1,000,000 tracked 5-tuples). Records in batches of 1,000, each a FROM_POD record of
// the pod shop/web-1 to a new world address (100.64.0.0 upwards, so 256 per /24), TCP to
// port 443 from a varying client port, 10 packets and 1,000 bytes each, all in the last
// minute. Measured: heap (used + array buffers) after a full GC before and after, the
// add() rate, edges, records by peer level, getMap of the namespace over 5 min, and whether
// the packet and byte totals over all edges equal what was sent. Reference, in the same
// process: a store whose budgets cannot be reached, fed the first N/10 addresses, for the
// bytes an edge costs without the bound (what N would cost is that times N).
import v8 from "node:v8";
import vm from "node:vm";
import { IpVersion, ObservationPoint, ReporterSide, Verdict, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowMapStore, type FlowMapOptions } from "../controlplane/store/flowmap.js";

const PEERS = Number(process.argv[2] ?? 2_000_000);
const BATCH = 1_000;

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const web: Endpoint = Object.freeze({
  ip: "10.0.1.5", namespace: "shop", podName: "web-1", podUid: "uid-web-1", labels: Object.freeze({ app: "web" }),
  workloadKind: "Deployment", workloadName: "web", node: "node-a", service: "", world: false,
});
const now = Date.now();

/** Two spreads of peers: 256 per /24 from 100.64.0.0 up (clients of one region), or scattered over all of IPv4 (a scan). */
type Spread = "clustered" | "scattered";
let spread: Spread = "clustered";

function peerIp(i: number): string {
  // Knuth's multiplicative hash is a bijection on 32 bits: distinct peers, nearly each in its own /24.
  const x = spread === "clustered" ? (100 << 24) + (64 << 16) + i : Math.imul(i, 2654435761) >>> 0;
  return `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
}

function record(i: number): FlowRecord {
  const ip = peerIp(i);
  const endMs = now - 30_000 + (i % 30_000);
  const seconds = Math.floor(endMs / 1000), nanos = (endMs % 1000) * 1_000_000;
  return {
    startTime: { seconds: BigInt(seconds - 1), nanos }, endTime: { seconds: BigInt(seconds), nanos },
    node: "node-a", point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: "lxc-web-1", ifindex: 7,
    ip: { source: web.ip, destination: ip, version: IpVersion.IP_VERSION_IPV4 },
    l4: {
      protocol: 6, protocolName: "TCP", sourcePort: 32768 + (i % 28000), destinationPort: 443,
      tcpFlags: { fin: false, syn: false, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false }, icmpType: 0, icmpCode: 0,
    },
    packets: 10n, bytes: 1000n,
    source: web,
    destination: { ip, namespace: "", podName: "", podUid: "", labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: true },
    verdict: Verdict.VERDICT_FORWARDED, verdictReason: 0, attribution: undefined, sequence: BigInt(i),
  };
}

function heap(): number {
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

function feed(map: FlowMapStore, peers: number): number {
  let ns = 0n;
  for (let i = 0; i < peers; i += BATCH) {
    const records = Array.from({ length: Math.min(BATCH, peers - i) }, (_, k) => record(i + k));
    const t = process.hrtime.bigint();
    map.add(records);
    ns += process.hrtime.bigint() - t;
  }
  return peers / (Number(ns) / 1e9);
}

function run(label: string, peers: number, options: FlowMapOptions): { map: FlowMapStore; grown: number; rate: number } {
  const before = heap();
  const map = new FlowMapStore(options);
  const rate = feed(map, peers);
  const grown = heap() - before;
  console.log(`${label}: ${peers} peers, add ${(rate / 1e3).toFixed(0)}k records/s, ${map.stats.edges} edges, heap +${mib(grown)} MiB`);
  return { map, grown, rate };
}

function bounded(which: Spread) {
  spread = which;
  const result = run(`bounded (defaults), ${which}`, PEERS, {});
  const stats = result.map.stats;
  const t = process.hrtime.bigint();
  const edges = result.map.getMap({ namespace: "shop", windowMs: 300_000 }).edges;
  const getMapMs = Number(process.hrtime.bigint() - t) / 1e6;
  const packets = edges.reduce((n, e) => n + e.packets, 0n);
  const bytes = edges.reduce((n, e) => n + e.bytes, 0n);
  const other = edges.filter((e) => e.destination === "world:other");
  const otherPackets = other.reduce((n, e) => n + e.packets, 0n);
  const exact = packets === BigInt(PEERS) * 10n && bytes === BigInt(PEERS) * 1000n && otherPackets === BigInt(stats.otherRecords) * 10n;
  console.log(`  records by peer: exact ${PEERS - stats.prefixRecords - stats.otherRecords}, by prefix ${stats.prefixRecords}, other ${stats.otherRecords} (${other.length} edge, ${otherPackets} packets)`);
  console.log(`  getMap shop 5 min: ${edges.length} edges in ${getMapMs.toFixed(1)} ms; packets ${packets} (sent ${PEERS * 10}), bytes ${bytes} (sent ${PEERS * 1000}): ${exact ? "exact" : "NOT EXACT"}`);
  console.log(`  5-tuples past the 1M tracking bound (counted as untracked_flows): ${stats.untrackedFlows}`);
  return { ...result, stats, exact };
}

const clustered = bounded("clustered");
const scattered = bounded("scattered");
clustered.map = scattered.map = new FlowMapStore(); // let both go before the reference
const exact = clustered.exact && scattered.exact;

const referencePeers = Math.max(BATCH, Math.floor(PEERS / 10));
spread = "scattered";
const reference = run("reference (budgets out of reach), scattered", referencePeers, { maxEdgesPerNamespace: 2 ** 40, maxEdges: 2 ** 40 });
const perEdge = reference.grown / reference.map.stats.edges;
console.log(`  ${perEdge.toFixed(0)} bytes an edge: ${PEERS} peers would take ~${mib(perEdge * PEERS)} MiB unbounded`);

const s = scattered.stats;
console.log(`SUMMARY flowmap-cardinality peers=${PEERS} edges=${s.edges} heap_mib=${mib(scattered.grown)} prefix_records=${s.prefixRecords} other_records=${s.otherRecords} totals_exact=${exact ? "yes" : "no"} add_krps=${(scattered.rate / 1e3).toFixed(0)} clustered_edges=${clustered.stats.edges} clustered_heap_mib=${mib(clustered.grown)} unbounded_bytes_per_edge=${perEdge.toFixed(0)}`);
if (!exact) process.exitCode = 1;
