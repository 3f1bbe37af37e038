// What the lab store tests share: a paced UDP sender to run in a lab pod, GetFlows against
// one of the lab's control planes, and packets summed at one observation point.
import { labObserverClient } from "../../lab/controlplane.js";
import type { GetFlowsRequest } from "../../proto/gen/bulkhead/v1/observer.js";
import type { FlowRecord, ObservationPoint } from "../../proto/gen/bulkhead/v1/flow.js";

/**
 * A script for `node -e SCRIPT HOST N`: N one-byte UDP datagrams to HOST:port, 10 every
 * 20 ms (500/s), so that a kill or restart lands while they flow; prints how many sends failed.
 */
export function pacedUdpSender(port: number): string {
  return `const s = require("dgram").createSocket("udp4");
const [host, n] = [process.argv[1], Number(process.argv[2])];
let sent = 0, done = 0, failed = 0;
const t = setInterval(() => {
  for (let k = 0; k < 10 && sent < n; k++, sent++) s.send("x", ${port}, host, (err) => { if (err) failed++; if (++done === n) { console.log(failed); process.exit(0); } });
  if (sent >= n) clearInterval(t);
}, 20);`;
}

/** Every record GetFlows answers for `request` from the control plane at `cp` (its Observer address and CA). */
export function labFlows(cp: { observer: string; ca: string }, request: Partial<GetFlowsRequest>): Promise<FlowRecord[]> {
  const client = labObserverClient(cp);
  return new Promise((resolve, reject) => {
    const out: FlowRecord[] = [];
    const call = client.getFlows({ allow: [], deny: [], last: 0n, follow: false, ...request });
    call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) out.push(m.flow); });
    call.on("error", (e) => { client.close(); reject(e); });
    call.on("end", () => { client.close(); resolve(out); });
  });
}

export const packetsAt = (records: readonly FlowRecord[], point: ObservationPoint): bigint =>
  records.filter((r) => r.point === point).reduce((n, r) => n + r.packets, 0n);
