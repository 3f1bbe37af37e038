// The agent's outage buffer (agent/export/record-buffer.ts): the control plane away for
// 60 s while the agent produces 50,000 records a second, then back. Run after
// `npx tsc -p .` as `node dist/bench/agent-outage.js [--seconds 60] [--rate 50000] [--buffer-bytes 256Mi]`.
//
// Method: the agent's own ControlPlaneConnection and ControlPlaneSink (default batch 2,000,
// 8 in flight) towards a unix socket where nothing listens. Once a second (paced on the
// wall clock, as the drain loop is) one push of `rate` records built as the agent builds
// them (fresh timestamps and address strings, the local end named as agent/endpoints.ts
// names it, sequence numbered), for `seconds`. Measured during the outage: the time spent
// in push() (encoding and trimming), the bytes the sink holds, the records it dropped
// (buffer_full) and holds, this process's RSS and peak RSS (VmHWM, which includes building
// the records) and heap + array buffers after a full GC. Then a decode-and-acknowledge
// AgentService (as bench/ingest.ts's reference) listens on the socket; measured: the time
// until everything is acknowledged, and that the sequences received are exactly the
// newest `held` ones, each once. Exit 1 if produced ≠ dropped + held or a record is
// missing or duplicated.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { parseArgs } from "node:util";
import pino from "pino";
import { ControlPlaneConnection } from "../agent/controlplane/connection.js";
import { ControlPlaneSink } from "../agent/export/controlplane.js";
import { bind, createGrpcServer } from "../controlplane/grpc.js";
import { parseByteSize } from "../config/flags.js";
import type { AgentRequest, AgentServer } from "../controlplane/agent-columns.js";
import { decodeColumns } from "../flowcolumns/wire.js";
import type { ObserverServiceServer } from "../proto/gen/bulkhead/v1/observer.js";
import { IpVersion, ObservationPoint, ReporterSide, Verdict, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";

const { values } = parseArgs({ options: { seconds: { type: "string" }, rate: { type: "string" }, "buffer-bytes": { type: "string" } } });
const SECONDS = Number(values.seconds ?? 60);
const RATE = Number(values.rate ?? 50_000);
const BUFFER = parseByteSize("buffer-bytes", values["buffer-bytes"] ?? "256Mi", 2 ** 20, 2 ** 36);

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const status = (field: string) => Number(/(\d+) kB/.exec(fs.readFileSync("/proc/self/status", "utf8").split("\n").find((l) => l.startsWith(field)) ?? "")?.[1] ?? 0) * 1024;
const fresh = (s: string) => (" " + s).slice(1);

let sequence = 0n;
function record(i: number): FlowRecord {
  const ms = Date.now();
  const ts = (t: number) => ({ seconds: BigInt(Math.floor(t / 1000)), nanos: (t % 1000) * 1_000_000 });
  const pod = i % 200, peer = (i * 7919) % 50_000;
  const src = fresh(`10.244.${pod >> 8}.${pod & 255}`);
  return {
    startTime: ts(ms - 900), endTime: ts(ms), node: "node-a",
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: fresh(`lxc${(0x1a2b3c4d5e + pod).toString(16)}`), ifindex: 100 + pod,
    ip: { source: src, destination: fresh(`10.96.${peer >> 8}.${peer & 255}`), version: IpVersion.IP_VERSION_IPV4 },
    l4: {
      protocol: 6, protocolName: "TCP", sourcePort: 32768 + (i % 28000), destinationPort: 8080,
      tcpFlags: { fin: false, syn: false, rst: false, psh: true, ack: true, urg: false, ece: false, cwr: false }, icmpType: 0, icmpCode: 0,
    },
    packets: BigInt(1 + (i % 50)), bytes: BigInt(60 + (i % 50) * 1400),
    source: { ip: src, namespace: "payments", podName: `checkout-7d9f8c6b5-${pod}`, podUid: `3f1b2c4d-5e6f-4a7b-8c9d-${String(pod).padStart(12, "0")}`,
      labels: {}, workloadKind: "", workloadName: "", node: "", service: "", world: false },
    destination: undefined,
    verdict: Verdict.VERDICT_FORWARDED, verdictReason: 1, attribution: undefined, sequence: ++sequence,
  };
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-outage-"));
const socket = path.join(dir, "cp.sock");
const connection = new ControlPlaneConnection({ addresses: [`unix://${socket}`], node: "node-a", capabilities: ["tcx"], log: pino({ level: "silent" }) });
let dropped = 0;
const sink = new ControlPlaneSink(connection, { bufferBytes: BUFFER, onBufferDrop: (n) => { dropped += n; }, onRefused: () => undefined });
let server: ReturnType<typeof createGrpcServer> | undefined;

try {
  connection.start();
  gc();
  const baseline = process.memoryUsage().rss;
  console.log(`outage: ${SECONDS} s at ${RATE} records/s, --buffer-bytes ${mib(BUFFER)} MiB; baseline RSS ${mib(baseline)} MiB`);
  let pushNs = 0n;
  const start = Date.now();
  for (let s = 0; s < SECONDS; s++) {
    const records = Array.from({ length: RATE }, (_, k) => record(s * RATE + k));
    const t = process.hrtime.bigint();
    sink.push(records);
    pushNs += process.hrtime.bigint() - t;
    const wait = start + (s + 1) * 1000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if ((s + 1) % 10 === 0) console.log(`  ${s + 1} s: held ${mib(sink.heldBytes)} MiB, ${sink.pending} records; dropped ${dropped}; RSS ${mib(process.memoryUsage().rss)} MiB`);
  }
  const produced = SECONDS * RATE;
  const held = sink.pending, heldBytes = sink.heldBytes;
  const rss = process.memoryUsage().rss, hwm = status("VmHWM:");
  gc();
  const m = process.memoryUsage();
  console.log(`after ${((Date.now() - start) / 1000).toFixed(1)} s: produced ${produced}, held ${held} in ${heldBytes} bytes (${(heldBytes / held).toFixed(0)} B a record), dropped ${dropped} (buffer_full); `
    + `push ${(Number(pushNs) / produced).toFixed(0)} ns a record`);
  console.log(`  RSS ${mib(rss)} MiB (peak ${mib(hwm)}); after GC: RSS ${mib(m.rss)} MiB, heap ${mib(m.heapUsed)} MiB, array buffers ${mib(m.arrayBuffers)} MiB`);
  const books = produced === dropped + held;

  // The control plane is back: decode, count sequences, acknowledge.
  const seen = new Uint8Array(produced + 1);
  let duplicates = 0, received = 0;
  const agent: AgentServer = {
    connect(stream) {
      stream.on("data", (msg: AgentRequest) => {
        const kind = msg.kind;
        if (kind?.$case === "hello") stream.write({ kind: { $case: "config", value: { node: kind.value.node, drainIntervalMs: 1000 } } });
        else if (kind?.$case === "flows") {
          for (const r of kind.value.records) {
            const q = Number(r.sequence);
            if (seen[q]) duplicates++; else seen[q] = 1;
            received++;
          }
          stream.write({ kind: { $case: "ack", value: { batchId: kind.value.batchId } } });
        } else if (kind?.$case === "columnBytes") {
          const batch = decodeColumns(kind.value);
          for (let i = 0; i < batch.columns.rows; i++) {
            const q = Number(batch.columns.firstSequence) + i;
            if (seen[q]) duplicates++; else seen[q] = 1;
            received++;
          }
          stream.write({ kind: { $case: "ack", value: { batchId: batch.batchId } } });
        }
      });
      stream.on("end", () => stream.end());
      stream.on("error", () => undefined);
    },
  };
  const refuse = (_call: unknown, callback: (err: Error) => void) => callback(new Error("not served"));
  const observer = { getFlows: (call: { end(): void }) => call.end(), getFlowMap: refuse, getStatus: refuse, getNodes: refuse } as unknown as ObserverServiceServer;
  server = createGrpcServer({ agent, observer });
  const back = Date.now();
  await bind(server, `unix://${socket}`);
  while (sink.pending > 0 && Date.now() - back < 300_000) await new Promise((r) => setTimeout(r, 50));
  const drainS = (Date.now() - back) / 1000;
  let missing = 0;
  for (let q = produced - held + 1; q <= produced; q++) if (!seen[q]) missing++;
  const once = missing === 0 && duplicates === 0 && received === held;
  console.log(`back: ${received} records received in ${drainS.toFixed(1)} s (reconnect backoff included), missing ${missing}, duplicates ${duplicates}: ${once ? "the newest held, each once" : "NOT EXACT"}`);
  console.log(`SUMMARY agent-outage seconds=${SECONDS} rate=${RATE} buffer_mib=${mib(BUFFER)} held=${held} dropped=${dropped} books=${books ? "exact" : "off"} `
    + `held_mib=${mib(heldBytes)} bytes_per_record=${(heldBytes / held).toFixed(0)} rss_peak_mib=${mib(hwm)} rss_gc_mib=${mib(m.rss)} drain_s=${drainS.toFixed(1)} delivered_once=${once ? "yes" : "no"}`);
  if (!books || !once) process.exitCode = 1;
} finally {
  await sink.close(0);
  connection.close();
  server?.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
}
