// The pods on this node as the control plane last described them, so that the agent
// names the local end of each flow: the source of a from-pod record, the destination of
// a to-pod record. The control plane completes both ends from its cluster state.
//
// A SPOOFED record (a from-pod packet whose source address is not the pod's own) is
// named after the pod behind the interface that sent it, found by that pod's own
// address, never after the owner of the forged address: otherwise a pod could plant
// edges on another namespace's map. The record's IP source still shows the forged one.
import type { LocalEndpoint } from "../proto/gen/bulkhead/v1/agent.js";
import { ObservationPoint, VerdictReason, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";

export class LocalEndpoints {
  private byIp = new Map<string, LocalEndpoint>();

  replace(endpoints: readonly LocalEndpoint[]): void {
    const next = new Map<string, LocalEndpoint>();
    for (const ep of endpoints) for (const ip of ep.ips) next.set(ip, ep);
    this.byIp = next;
  }

  get size(): number {
    return this.byIp.size;
  }

  /** `podAddress`: an address of the pod behind an interface (from the node's host routes). */
  nameLocalEnd(r: FlowRecord, podAddress?: (ifindex: number) => string | undefined): void {
    const fromPod = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD;
    const spoofed = fromPod && r.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED;
    const ip = spoofed ? podAddress?.(r.ifindex) : fromPod ? r.ip?.source : r.ip?.destination;
    const ep = ip === undefined ? undefined : this.byIp.get(ip);
    if (!ep || ip === undefined) return;
    const end = { ip, namespace: ep.namespace, podName: ep.podName, podUid: ep.podUid, labels: {},
      workloadKind: "", workloadName: "", node: "", service: "", world: false };
    if (fromPod) r.source = end; else r.destination = end;
  }
}
