// GetFlows' writer (controlplane/flow-stream.ts) on a stand-in call: a record that is both
// live and in a stored chunk read after it arrived is written once.
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { FlowStream, type FlowCall } from "../controlplane/flow-stream.js";
import { FlowRecord, ObservationPoint } from "../proto/gen/bulkhead/v1/flow.js";

/** What FlowStream uses of a grpc-js server stream: write, end, writableNeedDrain, events. */
class Call extends EventEmitter {
  readonly written: FlowRecord[] = [];
  ended = false;
  writableNeedDrain = false;
  write(m: { flow: FlowRecord }): boolean { this.written.push(m.flow); return true; }
  end(): void { this.ended = true; }
}

const rec = (node: string, sequence: bigint) => FlowRecord.fromPartial({
  node, sequence, point: ObservationPoint.OBSERVATION_POINT_FROM_POD, packets: 1n,
  endTime: { seconds: 1_700_000_000n, nanos: Number(sequence) },
});
const seqs = (rs: FlowRecord[]) => rs.map((r) => `${r.node}#${r.sequence}`);

describe("FlowStream", () => {
  it("writes a record once when it arrives live before the stored chunk that also holds it is read", async () => {
    const call = new Call();
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    async function* stored(): AsyncGenerator<readonly FlowRecord[]> {
      await released; // the store answers after the live records came
      yield [rec("n1", 1n), rec("n1", 2n), rec("n2", 7n)];
    }
    const stream = new FlowStream(call as unknown as FlowCall, { maxQueuedRecords: 100, maxStallMs: 10_000 }, () => undefined);
    stream.start([rec("n1", 3n)], true, stored());
    stream.push([rec("n1", 2n), rec("n2", 7n), rec("n1", 4n)]);
    release();
    await new Promise((r) => setTimeout(r, 20)); // the generator's chunk, then pump: two turns of the loop
    expect(seqs(call.written)).toEqual(["n1#1", "n1#3", "n1#2", "n2#7", "n1#4"]);
    stream.finish();
    expect(call.ended).toBe(true);
  });

  it("keeps a stored record whose node and number match a live one from another time", async () => {
    const call = new Call();
    async function* stored(): AsyncGenerator<readonly FlowRecord[]> {
      yield [{ ...rec("n1", 2n), endTime: { seconds: 1_600_000_000n, nanos: 0 } }]; // an earlier agent's record 2
    }
    const stream = new FlowStream(call as unknown as FlowCall, { maxQueuedRecords: 100, maxStallMs: 10_000 }, () => undefined);
    stream.start([], false, stored());
    stream.push([rec("n1", 2n)]);
    await new Promise((r) => setTimeout(r, 20));
    expect(seqs(call.written)).toEqual(["n1#2", "n1#2"]);
  });
});
