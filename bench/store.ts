// Flow store: memory of 1M records in FlowHistory, GetFlows-like query time, append rate,
// and the flow map's ingest rate. Run after `npm run build:ts` as `node dist/bench/store.js`
// (pass a number to change the record count).
//
// Method: 20 namespaces x 25 pods (5 Deployments of 5 pods each), 10 nodes, one Service
// per Deployment, 200 world addresses; one shared, frozen Endpoint per pod, Service,
// node and world address, as the enricher hands out. Records come in batches of 1,000
// built like decoded agent records (fresh timestamps, Layer3 with fresh address strings,
// Layer4 with TCP flags, bigints): 40 % pod -> pod seen at FROM_POD and 40 % its TO_POD
// twin, 10 % pod -> Service at FROM_POD, 5 % world -> pod, 5 % pod -> world; verdicts
// 90 % FORWARDED, 7 % DROPPED, 3 % AUDIT; 70 % TCP, 30 % UDP. Record times span the last
// 50 minutes. Only append() is timed for the append rate (building records is not).
// RSS is read after a full GC once the history is full. The query is namespace "ns-3" and
// verdict DROPPED over the whole history, returning every match as FlowRecords; the
// median of 5 runs is reported. The flow map part runs afterwards on a fresh FlowMapStore.
import v8 from "node:v8";
import vm from "node:vm";
import { Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowHistory } from "../controlplane/store/history.js";
import { compileRequest } from "../controlplane/store/filter.js";
import { FlowMapStore } from "../controlplane/store/flowmap.js";
import { SyntheticFlows } from "./synthetic-flows.js";

const RECORDS = Number(process.argv[2] ?? 1_000_000);
const BATCH = 1_000;
const RUNS = 5;
const SPAN_MS = 50 * 60_000;

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const flows = new SyntheticFlows({ records: RECORDS, spanMs: SPAN_MS });
const batch = (size: number) => flows.batch(size);

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(0)} MiB`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function memory(label: string): void {
  gc();
  const m = process.memoryUsage();
  console.log(`${label}: rss ${mib(m.rss)}, heap used ${mib(m.heapUsed)}, array buffers ${mib(m.arrayBuffers)}`);
}

memory("baseline");
const history = new FlowHistory({ capacity: RECORDS });
let appendNs = 0n;
while (history.appended < RECORDS) {
  const records = batch(Math.min(BATCH, RECORDS - history.appended));
  const t = process.hrtime.bigint();
  history.append(records);
  appendNs += process.hrtime.bigint() - t;
}
console.log(`history: ${history.size} records (capacity ${history.capacity}), append ${(RECORDS / (Number(appendNs) / 1e9) / 1e6).toFixed(2)} M records/s`);
memory("after filling");

const predicate = compileRequest([{ namespace: ["ns-3"], verdict: [Verdict.VERDICT_DROPPED] }], []);
const times: number[] = [];
let found = 0;
for (let run = 0; run < RUNS; run++) {
  const t = process.hrtime.bigint();
  const result = history.query({ predicate });
  times.push(Number(process.hrtime.bigint() - t) / 1e6);
  found = result.length;
}
console.log(`query namespace=ns-3 verdict=DROPPED over ${history.size}: ${found} matches, median ${median(times).toFixed(1)} ms (runs: ${times.map((x) => x.toFixed(1)).join(", ")})`);

const lastTimes: number[] = [];
for (let run = 0; run < RUNS; run++) {
  const t = process.hrtime.bigint();
  history.query({ predicate, last: 100 });
  lastTimes.push(Number(process.hrtime.bigint() - t) / 1e6);
}
console.log(`query same filter, last 100: median ${median(lastTimes).toFixed(2)} ms`);
memory("after queries");

// The flow map on the same kind of records, in a fresh store (the history stays alive).
const map = new FlowMapStore();
flows.rewind();
let mapNs = 0n;
let mapped = 0;
while (mapped < RECORDS) {
  const records = batch(Math.min(BATCH, RECORDS - mapped));
  const t = process.hrtime.bigint();
  map.add(records);
  mapNs += process.hrtime.bigint() - t;
  mapped += records.length;
}
const stats = map.stats;
console.log(`flow map: add ${(mapped / (Number(mapNs) / 1e9) / 1e6).toFixed(2)} M records/s; ${stats.edges} edges, ${stats.nodes} nodes, counted ${stats.counted}, duplicates ${stats.duplicates}, verdict-only ${stats.verdictOnly}`);
for (const [label, query] of [["all, 1 h", { windowMs: 3_600_000 }], ["ns-3, 5 min", { namespace: "ns-3", windowMs: 300_000 }]] as const) {
  const mapTimes: number[] = [];
  let edges = 0;
  for (let run = 0; run < RUNS; run++) {
    const t = process.hrtime.bigint();
    edges = map.getMap(query).edges.length;
    mapTimes.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(`getMap ${label}: ${edges} edges, median ${median(mapTimes).toFixed(1)} ms`);
}
memory("with flow map");
