// The pods on this node as the control plane last described them, so that the agent
// names the local end of each flow: the source of a from-pod record, the destination of
// a to-pod record. The control plane completes both ends from its cluster state.
//
// A SPOOFED record (a from-pod packet whose source address is not the pod's own) is
// named after the pod behind the interface that sent it, found by that pod's own
// address, never after the owner of the forged address: otherwise a pod could plant
// edges on another namespace's map. The record's IP source still shows the forged one.
//
// The drain looks local ends up by the 16-byte address in its columns (records.ts,
// LocalEndNames): IPv4 by a number, IPv6 by its bytes as text, without formatting addresses.
import type { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import { ObservationPoint, VerdictReason, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { ADDRESS_WIDTH, writeAddress } from "../flowcolumns/columns.js";
import type { LocalEndNames } from "./records.js";

const v6Key = (a: Uint8Array, off: number) => String.fromCharCode(...a.subarray(off, off + ADDRESS_WIDTH));

export class LocalEndpoints implements LocalEndNames {
  /** One entry per address (its one address in `ips`): the dictionary the columns index, 1-based. */
  names: LocalEndpoint[] = [];
  private byText = new Map<string, number>();
  private byV4 = new Map<number, number>();
  private byV6 = new Map<string, number>();

  replace(endpoints: readonly LocalEndpoint[]): void {
    const names: LocalEndpoint[] = [];
    const byText = new Map<string, number>(), byV4 = new Map<number, number>(), byV6 = new Map<string, number>();
    const scratch = new Uint8Array(ADDRESS_WIDTH);
    for (const ep of endpoints) {
      for (const ip of ep.ips) {
        const k = names.push({ namespace: ep.namespace, podName: ep.podName, podUid: ep.podUid, ips: [ip] });
        byText.set(ip, k);
        const family = writeAddress(scratch, 0, ip);
        if (family === 4) byV4.set(((scratch[12] ?? 0) * 2 ** 24) + ((scratch[13] ?? 0) << 16) + ((scratch[14] ?? 0) << 8) + (scratch[15] ?? 0), k);
        else if (family === 6) byV6.set(v6Key(scratch, 0), k);
      }
    }
    // A new table each time: columns drained earlier keep the one they index.
    this.names = names;
    this.byText = byText; this.byV4 = byV4; this.byV6 = byV6;
  }

  get size(): number {
    return this.byText.size;
  }

  lookup(a: Uint8Array, off: number): number {
    let mapped = a[off + 10] === 0xff && a[off + 11] === 0xff;
    for (let b = 0; b < 10 && mapped; b++) mapped = a[off + b] === 0;
    if (mapped) {
      return this.byV4.get(((a[off + 12] ?? 0) * 2 ** 24) + ((a[off + 13] ?? 0) << 16) + ((a[off + 14] ?? 0) << 8) + (a[off + 15] ?? 0)) ?? 0;
    }
    return this.byV6.size === 0 ? 0 : this.byV6.get(v6Key(a, off)) ?? 0;
  }

  lookupText(ip: string): number {
    return this.byText.get(ip) ?? 0;
  }

  /** Names the local end of a FlowRecord (tools and tests that hold records; the drain uses `lookup`). */
  nameLocalEnd(r: FlowRecord, podAddress?: (ifindex: number) => string | undefined): void {
    const fromPod = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const spoofed = fromPod && r.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED;
    const ip = spoofed ? podAddress?.(r.ifindex) : fromPod ? r.ip?.source : r.ip?.destination;
    const ep = ip === undefined ? undefined : this.names[this.lookupText(ip) - 1];
    if (!ep || ip === undefined) return;
    const end = { ip, namespace: ep.namespace, podName: ep.podName, podUid: ep.podUid, labels: {},
      workloadKind: "", workloadName: "", node: "", service: "", world: false };
    if (fromPod) r.source = end; else r.destination = end;
  }
}
