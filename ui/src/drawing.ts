// What the map draws, from what the API sends (pure, unit-tested in test/ui-layout.test.ts):
//  - parallel edges (same two nodes, either direction, several ports) become ONE drawn edge
//    with one label listing the ports, arrows at the ends that are called, and the worst verdict;
//  - a call through a Service is one path: the API has client → Service (the Service port)
//    and client → backend workload (the target port, where replies and the backend's verdict
//    count); when the Service's backends include that workload, the second becomes part of
//    client → Service (its verdict) and Service → backend (its port), so no parallel
//    client → backend edge is drawn.
// Every map edge belongs to exactly one or two drawn edges (`members`), so selecting a drawn
// edge can name the map edges it stands for.
import type { MapEdgeJson, MapNodeJson, VerdictState } from "./types.js";

export interface DrawnEdge {
  id: string;
  source: string;
  target: string;
  /** `TCP/80` or `TCP/80, UDP/53` (at most MAX_PORTS, then `+N`). */
  label: string;
  /** Every port, for the hover text. */
  fullLabel: string;
  verdict: VerdictState;
  /** The map edges it stands for, in id order. */
  members: string[];
  /** Calls go both ways (an arrow at each end). */
  both: boolean;
}

const MAX_PORTS = 2;
const RANK: Record<VerdictState, number> = { forwarded: 0, audit: 1, dropped: 2 };
const worst = (a: VerdictState, b: VerdictState): VerdictState => (RANK[a] >= RANK[b] ? a : b);

/** Service node id → the workload node ids that back it (its selector's pods' workloads). */
export type Backends = ReadonlyMap<string, readonly string[]>;

interface Builder { a: string; b: string; forward: boolean; backward: boolean; ports: Set<string>; verdict: VerdictState; members: Set<string> }

export function drawnEdgeId(a: string, b: string): string {
  return a < b ? `drawn:${a}|${b}` : `drawn:${b}|${a}`;
}

export function drawEdges(nodes: readonly Pick<MapNodeJson, "id" | "kind">[], edges: readonly MapEdgeJson[], backends: Backends): DrawnEdge[] {
  const kinds = new Map(nodes.map((n) => [n.id, n.kind]));
  // client → (backend workload → the Services it reached through), from the client → Service edges.
  const via = new Map<string, Map<string, string[]>>();
  for (const e of edges) {
    if (kinds.get(e.destination) !== "service") continue;
    for (const backend of backends.get(e.destination) ?? []) {
      const byBackend = via.get(e.source) ?? via.set(e.source, new Map()).get(e.source)!;
      (byBackend.get(backend) ?? byBackend.set(backend, []).get(backend)!).push(e.destination);
    }
  }
  const drawn = new Map<string, Builder>();
  const add = (from: string, to: string, port: string, verdict: VerdictState, member: string) => {
    const id = drawnEdgeId(from, to);
    let d = drawn.get(id);
    if (!d) {
      d = { a: from < to ? from : to, b: from < to ? to : from, forward: false, backward: false, ports: new Set(), verdict: "forwarded", members: new Set() };
      drawn.set(id, d);
    }
    if (from === d.a) d.forward = true; else d.backward = true;
    if (port !== "") d.ports.add(port);
    d.verdict = worst(d.verdict, verdict);
    d.members.add(member);
  };
  const portOf = (e: MapEdgeJson) => (e.protocol === "" ? "" : e.port === 0 ? e.protocol : `${e.protocol}/${e.port}`);
  for (const e of edges) {
    const services = [...new Set(via.get(e.source)?.get(e.destination) ?? [])];
    if (services.length === 0) { add(e.source, e.destination, portOf(e), e.verdict, e.id); continue; }
    for (const service of services) {
      add(e.source, service, "", e.verdict, e.id);
      add(service, e.destination, portOf(e), e.verdict, e.id);
    }
  }
  return [...drawn].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([id, d]) => {
    const ports = [...d.ports].sort();
    const shown = ports.length > MAX_PORTS ? `${ports.slice(0, MAX_PORTS).join(", ")} +${ports.length - MAX_PORTS}` : ports.join(", ");
    const forward = d.forward || !d.backward;
    return {
      id, source: forward ? d.a : d.b, target: forward ? d.b : d.a, label: shown, fullLabel: ports.join(", "),
      verdict: d.verdict, members: [...d.members].sort(), both: d.forward && d.backward,
    };
  });
}
