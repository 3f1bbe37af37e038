// Issue 12 on the real kernel: the lab's control plane keeps its flow history in the
// embedded store (<stateDir>/store/flows.duckdb). While a pod sends a known number of UDP
// datagrams to a pod on the other node, the control plane is killed with SIGKILL and the
// lab's supervisor starts it again; agents buffer, reconnect and re-send what was not
// acknowledged. Afterwards the restarted control plane serves the whole history, and the
// packets in it are exactly the datagrams sent, at FROM_POD and at TO_POD: a batch
// acknowledged before the kill was durable (not lost), and one committed but not yet
// acknowledged was stored once (not twice).
// Needs the kernel lock:  flock /tmp/bulkhead-kernel.lock npx vitest run test/lab-store.test.ts
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { controlPlaneStatus } from "../lab/controlplane.js";
import { down, type Lab, up } from "../lab/lab.js";
import { FlowFilter, type GetFlowsRequest } from "../proto/gen/bulkhead/v1/observer.js";
import { FlowRecord, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";
import { LAB_DRAIN_MS, NOTHING_MORE_MS, sleep } from "./harness/flows.js";
import { installCliPackage } from "./harness/cli-package.js";
import { labFlows, pacedUdpSender, packetsAt } from "./harness/lab-flows.js";

vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });

const root = mkdtempSync(path.join(tmpdir(), "bh-lab-store-"));
const stateDir = path.join(root, "state");
const OBSERVER = "127.0.0.1:22490";
const CA = path.join(stateDir, "tls", "ca.crt");
const PORT = 9999;
const DATAGRAMS = 4000;
const TOPOLOGY = `nodes: 2
pods:
  - {namespace: default, name: sender, node: node1}
  - {namespace: default, name: receiver, node: node2}
`;
// 10 datagrams every 20 ms: 8 s for 4000.
const SEND_JS = pacedUdpSender(PORT);

let lab: Lab;

const flows = (request: Partial<GetFlowsRequest>): Promise<FlowRecord[]> => labFlows({ observer: OBSERVER, ca: CA }, request);

const toReceiver = [FlowFilter.fromPartial({ destinationPod: ["default/receiver"], destinationPort: [PORT], protocol: ["UDP"] })];

beforeAll(async () => {
  const file = path.join(root, "topology.yaml");
  writeFileSync(file, TOPOLOGY);
  lab = await up({ stateDir, topology: file, controlplane: { observer: OBSERVER, ui: false }, removeLeftoverPins: true, drainIntervalMs: LAB_DRAIN_MS });
});

afterAll(async () => {
  await down(stateDir, { removePins: true });
  rmSync(root, { recursive: true, force: true });
});

describe("the embedded store across a kill -9 of the control plane", () => {
  it("serves the whole history afterwards, with exactly the datagrams sent at from_pod and at to_pod", async () => {
    const status = await controlPlaneStatus({ observer: OBSERVER, ca: CA }, 5000);
    expect(status.store).toMatchObject({ kind: "duckdb", location: path.join(stateDir, "store", "flows.duckdb"), error: "" });
    const receiver = (await lab.status()).pods.find((p) => p.name === "receiver")!;
    const startMs = Date.now();
    const sending = lab.exec("default/sender", [process.execPath, "-e", SEND_JS, receiver.ip, String(DATAGRAMS)]);
    // Mid-stream: some batches are acknowledged, some in flight, some still buffered.
    await sleep(3000);
    const old = (await lab.status()).controlplane?.pid ?? 0;
    expect(old).toBeGreaterThan(0);
    process.kill(old, "SIGKILL");
    const killedMs = Date.now();
    const sent = await sending;
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout.trim(), "datagrams the sender failed to send").toBe("0");

    // Waits for the agents' last drains and re-sends to land (the control plane restarts
    // with backoff, agents reconnect within 5 s); stops early once both counts are in.
    const deadline = Date.now() + 60_000;
    let records: FlowRecord[] = [];
    while (Date.now() < deadline) {
      records = await flows({ allow: toReceiver, since: { seconds: BigInt(Math.floor(startMs / 1000) - 5), nanos: 0 } }).catch(() => []);
      if (packetsAt(records, ObservationPoint.OBSERVATION_POINT_FROM_POD) >= BigInt(DATAGRAMS)
        && packetsAt(records, ObservationPoint.OBSERVATION_POINT_TO_POD) >= BigInt(DATAGRAMS)) break;
      await sleep(1000);
    }
    // The next drains and their streaming: a duplicate arriving late would show.
    await sleep(NOTHING_MORE_MS);
    records = await flows({ allow: toReceiver, since: { seconds: BigInt(Math.floor(startMs / 1000) - 5), nanos: 0 } });
    expect(packetsAt(records, ObservationPoint.OBSERVATION_POINT_FROM_POD), "sender's from_pod packets").toBe(BigInt(DATAGRAMS));
    expect(packetsAt(records, ObservationPoint.OBSERVATION_POINT_TO_POD), "receiver's to_pod packets").toBe(BigInt(DATAGRAMS));
    // Part of it is history from before the kill, served by the new process from the store.
    const before = records.filter((r) => Number(r.endTime!.seconds) * 1000 < killedMs - 1000);
    expect(before.length, "records that ended before the kill").toBeGreaterThan(0);
    // The same without a time bound (the whole history) and with `last`.
    expect(packetsAt(await flows({ allow: toReceiver }), ObservationPoint.OBSERVATION_POINT_FROM_POD)).toBe(BigInt(DATAGRAMS));
    const last = await flows({ allow: toReceiver, last: 3n });
    expect(last).toEqual(records.slice(-3));

    const after = await controlPlaneStatus({ observer: OBSERVER, ca: CA }, 5000);
    expect(after.store?.error).toBe("");
    expect(after.store?.records).toBeGreaterThanOrEqual(BigInt(records.length));
  });

  it("the workstation CLI package, installed in an empty folder, observes the same datagrams from the lab (issue 18)", async () => {
    const pkg = await installCliPackage(path.join(root, "package"));
    // The lab's address and CA come from its state, as on the machine that runs the lab.
    const observed = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(pkg.bin, ["observe", "--to-pod", "default/receiver", "--to-port", String(PORT), "--protocol", "UDP", "--all", "-o", "json"],
        { env: { ...pkg.env, BULKHEAD_LAB_STATE_DIR: stateDir }, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }));
    });
    expect(observed.code, observed.stderr).toBe(0);
    const records = observed.stdout.split("\n").filter((l) => l !== "").map((l) => FlowRecord.fromJSON(JSON.parse(l)));
    expect(packetsAt(records, ObservationPoint.OBSERVATION_POINT_FROM_POD)).toBe(BigInt(DATAGRAMS));
    expect(packetsAt(records, ObservationPoint.OBSERVATION_POINT_TO_POD)).toBe(BigInt(DATAGRAMS));
  });
});
