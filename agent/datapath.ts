// The agent's handle on endpoint.bpf.o: load, attach per interface, the exact drain
// protocol (flip the active flow map, wait out in-flight programs, drain the idle map),
// and the policy maps (./policy.ts) the same programs enforce.
import { native, type BpfObject, type Link, type AttachOptions } from "../native/index.js";
import {
  COUNTER, FLOW_KEY, FLOW_VALUE, UNJUDGED_CAUSES, UNJUDGED_VERDICTS, unjudgedCounter, type UnjudgedCause, type UnjudgedVerdict,
} from "./records.js";
import { PolicyApplier } from "./policy.js";

export interface DrainedFlows {
  keys: Buffer;
  values: Buffer;
  count: number;
}

export type Counters = Record<keyof typeof COUNTER, bigint>;
export type UnjudgedCounts = { verdict: UnjudgedVerdict; cause: UnjudgedCause; packets: bigint }[];

export interface DatapathOptions {
  objectPath: string;
  flowMapSize: number;
  emitNewFlowEvents?: boolean;
}

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

export class Datapath {
  readonly object: BpfObject;
  readonly policy: PolicyApplier;
  private active = 0;

  constructor(opts: DatapathOptions) {
    this.object = native().openObject(opts.objectPath, {
      rodata: { emit_new_flow_events: u32(opts.emitNewFlowEvents === false ? 0 : 1) },
      maxEntries: { flows_0: opts.flowMapSize, flows_1: opts.flowMapSize },
    });
    try {
      const keySize = this.object.map("flows_0").keySize;
      const valueSize = this.object.map("flows_0").valueSize;
      if (keySize !== FLOW_KEY.size || valueSize !== FLOW_VALUE.size) {
        throw new Error(`${opts.objectPath}: flow map key/value sizes ${keySize}/${valueSize} differ from `
          + `the agent's ${FLOW_KEY.size}/${FLOW_VALUE.size}: object and agent are from different builds`);
      }
      this.object.map("flow_state").update(u32(0), u32(0));
      this.policy = new PolicyApplier(this.object);
    } catch (err) {
      this.object.close();
      throw err;
    }
  }

  /** Attaches both directions; on a failure of the second, the first is detached.
   * `name` only labels errors (an ifindex alone tells a reader little). */
  attach(iface: AttachOptions["iface"], mode: AttachOptions["mode"], netns?: string, name?: string): Link[] {
    let ingress: Link | undefined;
    try {
      ingress = this.object.program("from_pod").attachTc({ iface, direction: "ingress", mode, netns });
      const egress = this.object.program("to_pod").attachTc({ iface, direction: "egress", mode, netns });
      return [ingress, egress];
    } catch (err) {
      ingress?.detach();
      if (name !== undefined && err instanceof Error) err.message = `${name}: ${err.message}`;
      throw err;
    }
  }

  /** Every entry counted since the previous drain, each exactly once. */
  drain(): DrainedFlows {
    const idle = this.active;
    this.active = 1 - idle;
    this.object.map("flow_state").update(u32(0), u32(this.active));
    // After this returns no program still writes into the map it read before the flip.
    this.object.synchronize("sync_outer");
    return this.object.map(`flows_${idle}`).drain();
  }

  /** Cumulative datapath counters summed over CPUs. */
  counters(): Counters {
    const map = this.object.map("counters");
    const out = {} as Counters;
    for (const [name, index] of Object.entries(COUNTER) as [keyof typeof COUNTER, number][]) {
      const perCpu = map.lookup(u32(index));
      let sum = 0n;
      if (perCpu) for (let off = 0; off + 8 <= perCpu.length; off += 8) sum += perCpu.readBigUInt64LE(off);
      out[name] = sum;
    }
    return out;
  }

  /** Cumulative frames the programs could not judge, by verdict and cause, summed over CPUs. */
  unjudged(): UnjudgedCounts {
    const map = this.object.map("counters");
    const out: UnjudgedCounts = [];
    for (const verdict of UNJUDGED_VERDICTS) {
      for (const cause of UNJUDGED_CAUSES) {
        const perCpu = map.lookup(u32(unjudgedCounter(verdict, cause)));
        let packets = 0n;
        if (perCpu) for (let off = 0; off + 8 <= perCpu.length; off += 8) packets += perCpu.readBigUInt64LE(off);
        out.push({ verdict, cause, packets });
      }
    }
    return out;
  }

  close(): void {
    this.object.close();
  }
}
