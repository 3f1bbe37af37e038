// Which pods back which Service port: the one answer that both the nftables DNAT rules and
// the EndpointSlices are built from, so the datapath and the YAML cannot disagree.
import type { LabPod, LabService } from "./state.js";
import type { ServicePort } from "./topology.js";

export interface Backend {
  pod: LabPod;
  /** targetPort resolved for this pod (a named targetPort can differ per pod). */
  port: number;
}

export interface ResolvedPort {
  port: ServicePort;
  backends: Backend[];
}

export function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

/** The pods a Service selects: same namespace, labels match. Every lab pod is Running and ready. */
export function selectedPods(service: LabService, pods: readonly LabPod[]): LabPod[] {
  return pods
    .filter((pod) => pod.namespace === service.namespace && selects(service.selector, pod.labels))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * A numeric targetPort applies to every selected pod; a named one only to pods with a
 * container port of that name and protocol (as kube-proxy and the EndpointSlice
 * controller do: pods without it are no backend for that port).
 */
export function resolveTargetPort(port: ServicePort, pod: LabPod): number | undefined {
  if (typeof port.targetPort === "number") return port.targetPort;
  return pod.ports.find((p) => p.name === port.targetPort && p.protocol === port.protocol)?.port;
}

export function resolveService(service: LabService, pods: readonly LabPod[]): ResolvedPort[] {
  const selected = selectedPods(service, pods);
  return service.ports.map((port) => ({
    port,
    backends: selected.flatMap((pod) => {
      const target = resolveTargetPort(port, pod);
      return target === undefined ? [] : [{ pod, port: target }];
    }),
  }));
}
