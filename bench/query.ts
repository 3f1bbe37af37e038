// GetFlows over gRPC against a control plane holding 1M records: time until the client has
// received the last matching record. Run after `npm run build:ts` as
// `node dist/bench/query.js` (`--runs N` changes the default of 5). Method and last
// results: bench/README.md, "Control plane".
//
// Method: the control plane of bench/ingest.ts (its own process, the same 5,000-pod
// cluster and agent-like records: 90 % FORWARDED, 7 % DROPPED, 3 % AUDIT) is filled with
// exactly 1,000,000 records by 2 agent streams, so its store (capacity 1M) is full. This
// process then calls GetFlows with a filter of namespace "ns-3" (either end) and verdict
// DROPPED, returning every match, then the same filter with `last: 100`; the reference is
// GetFlows with no filter and `last: 1`, i.e. the fixed cost of a call (channel already
// connected). One untimed warm-up call each, then the median of N timed calls; nothing
// else runs meanwhile.
import os from "node:os";
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Verdict, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowFilter, GetFlowsRequest, ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import {
  BATCH_RECORDS, endChild, filledControlPlane, forkRole, getStatus, median, memoryMiB, STORE_CAPACITY, waitMessage, writeManifests,
} from "./ingest.js";

function flagValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

/** Milliseconds from the call until the stream's end, and the records received. */
function timedGetFlows(client: ObserverServiceClient, req: GetFlowsRequest): Promise<{ ms: number; flows: FlowRecord[] }> {
  return new Promise((resolve, reject) => {
    const flows: FlowRecord[] = [];
    const start = process.hrtime.bigint();
    const call = client.getFlows(req);
    call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) flows.push(m.flow); });
    call.on("error", reject);
    call.on("end", () => resolve({ ms: Number(process.hrtime.bigint() - start) / 1e6, flows }));
  });
}

async function main(): Promise<void> {
  const runs = Number(flagValue("--runs") ?? 5);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-bench-query-"));
  const dir = path.join(tmp, "manifests");
  const socket = path.join(tmp, "cp.sock");
  writeManifests(dir);
  const { server, fillSeconds } = await filledControlPlane(dir, socket, STORE_CAPACITY, 2);
  const client = new ObserverServiceClient(`unix://${socket}`, grpc.credentials.createInsecure());
  try {
    const status = await getStatus(client);
    if (status.flowsStored !== BigInt(STORE_CAPACITY)) throw new Error(`bench: ${status.flowsStored} stored, expected ${STORE_CAPACITY}`);
    console.log(`query: ${status.flowsStored.toLocaleString("en-US")} records stored (filled in ${fillSeconds.toFixed(1)} s, control plane RSS `
      + `${memoryMiB(server.pid!).rss.toFixed(0)} MiB); ${runs} timed runs after one warm-up; ${os.cpus().length} CPUs, node ${process.version}`);

    const filter = FlowFilter.fromPartial({ namespace: ["ns-3"], verdict: [Verdict.VERDICT_DROPPED] });
    const cases: { name: string; req: GetFlowsRequest; check: (flows: FlowRecord[]) => void }[] = [
      {
        name: "namespace=ns-3 verdict=DROPPED, every match",
        req: GetFlowsRequest.fromPartial({ allow: [filter] }),
        check: (flows) => {
          if (flows.length === 0) throw new Error("bench: the filter matched nothing; the synthetic records are wrong");
          const wrong = flows.find((f) => f.verdict !== Verdict.VERDICT_DROPPED || (f.source?.namespace !== "ns-3" && f.destination?.namespace !== "ns-3"));
          if (wrong) throw new Error(`bench: GetFlows returned a record outside the filter: ${JSON.stringify(wrong.source)}`);
        },
      },
      {
        name: "namespace=ns-3 verdict=DROPPED, last 100",
        req: GetFlowsRequest.fromPartial({ allow: [filter], last: 100n }),
        check: (flows) => { if (flows.length !== 100) throw new Error(`bench: last 100 returned ${flows.length}`); },
      },
      {
        name: "reference: no filter, last 1",
        req: GetFlowsRequest.fromPartial({ last: 1n }),
        check: (flows) => { if (flows.length !== 1) throw new Error(`bench: last 1 returned ${flows.length}`); },
      },
    ];
    const timeAll = async (label: string) => {
      const medians: number[] = [];
      console.log(label);
      for (const c of cases) {
        const warm = await timedGetFlows(client, c.req);
        c.check(warm.flows);
        const times: number[] = [];
        for (let i = 0; i < runs; i++) {
          const { ms, flows } = await timedGetFlows(client, c.req);
          if (flows.length !== warm.flows.length) throw new Error(`bench: ${c.name}: ${warm.flows.length} records, then ${flows.length}`);
          times.push(ms);
        }
        medians.push(median(times));
        console.log(`  ${c.name}: ${warm.flows.length.toLocaleString("en-US")} records, median ${median(times).toFixed(1)} ms `
          + `(runs: ${times.map((t) => t.toFixed(1)).join(", ")})`);
      }
      const [all, last100, reference] = medians as [number, number, number];
      console.log(`  ratio to the reference: every match ${(all / reference).toFixed(1)}x, last 100 ${(last100 / reference).toFixed(1)}x `
        + `(issue 11's targets: every match <= 100 ms; last 1 after the late batch <= 20 ms)`);
    };
    await timeAll("records as they arrive from agents (each ends within about a second of the newest):");

    // An agent back from an outage replays its buffer: one batch of records two minutes
    // old. A "last N" query must not pay for it (until 7a3952c it looked back over the
    // worst lateness ever seen, for as long as the process lived).
    const late = forkRole("client", [socket, "2", String(BATCH_RECORDS), "120000"]);
    await waitMessage(late, (m) => "done" in m);
    await endChild(late);
    await timeAll(`after one batch of ${BATCH_RECORDS} records arrived 120 s late:`);
  } finally {
    client.close();
    await endChild(server);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
