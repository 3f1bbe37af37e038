// Issue 16, items 1 and 2, as pure functions (ui/src/layout.ts, drawing.ts, names.ts): the
// map's layout keeps node boxes apart, every node inside its namespace box, namespace boxes
// apart and shown edge labels clear of everything, at the demo's size (its real edge list),
// at 3 nodes and on seeded random maps of 200 workloads / 800 edges; a call through a
// Service is one path; with arrows in the edges' middles (a dense map), no shown label covers
// an edge's middle; known nodes stay put when the map grows; pod names lose their
// template hash. The browser test (ui-e2e) checks the same metrics on what cytoscape drew.
import { describe, expect, it } from "vitest";
import { DEMO_EDGES, DEMO_WORKLOADS } from "../lab/demo.js";
import { drawEdges, drawnEdgeId, type Backends } from "../ui/src/drawing.js";
import { type LayerEdge, type LayerNode, nearestEdge, nearestNode } from "../ui/src/map-layer.js";
import { type Box, contains, edgesOverNodes, extendLayout, groupBody, groupHeader, layoutMap, type LayoutEdge, type LayoutNode, type MapLayout, overlaps } from "../ui/src/layout.js";
import { shortPodName } from "../ui/src/names.js";
import type { MapEdgeJson, MapNodeJson } from "../ui/src/types.js";
import { seededRandom } from "./harness/seeded-random.js";

/** What the layout promises, counted by brute force over its output. */
function faults(layout: MapLayout, nodes: readonly LayoutNode[]): Record<string, string[]> {
  const boxes = nodes.map((n) => [n.id, layout.nodeBoxes.get(n.id)!] as const);
  const pairs = <T>(xs: readonly (readonly [string, T])[], test: (a: T, b: T) => boolean) => {
    const out: string[] = [];
    for (let i = 0; i < xs.length; i++) for (let j = i + 1; j < xs.length; j++) if (test(xs[i]![1], xs[j]![1])) out.push(`${xs[i]![0]} × ${xs[j]![0]}`);
    return out;
  };
  const groups = [...layout.groups].map(([id, g]) => [id, g.box] as const);
  const labels = [...layout.labels];
  const obstacles: (readonly [string, Box])[] = [...boxes, ...[...layout.groups].map(([id, g]) => [`header ${id}`, groupHeader(g)] as const)];
  return {
    overlappingNodes: pairs(boxes, overlaps),
    nodesOutsideGroup: nodes.filter((n) => !contains(groupBody(layout.groups.get(n.group)!), layout.nodeBoxes.get(n.id)!)).map((n) => n.id),
    overlappingGroups: pairs(groups, overlaps),
    labelCollisions: [
      ...pairs(labels, overlaps),
      ...labels.flatMap(([id, b]) => obstacles.filter(([, o]) => overlaps(b, o)).map(([o]) => `${id} × ${o}`)),
    ],
  };
}
const NO_FAULTS = { overlappingNodes: [], nodesOutsideGroup: [], overlappingGroups: [], labelCollisions: [] };

/** A map node from its id, as the store names them. */
function node(id: string): MapNodeJson {
  const [kind, rest] = [id.slice(0, id.indexOf(":")), id.slice(id.indexOf(":") + 1)];
  const parts = rest.split("/");
  if (kind === "workload") return { id, kind, namespace: parts[0]!, workloadKind: parts[1]!, name: parts[2]!, pods: 1 };
  if (kind === "service") return { id, kind, namespace: parts[0]!, workloadKind: "", name: parts[1]!, pods: 0 };
  return { id, kind: kind as MapNodeJson["kind"], namespace: "", workloadKind: "", name: rest, pods: 0 };
}

function edge(source: string, destination: string, protocol: string, port: number, verdict: MapEdgeJson["verdict"] = "forwarded"): MapEdgeJson {
  return { id: `${source},${destination},${protocol},${port}`, source, destination, protocol, port, flows: 1, packets: 1, bytes: 1,
    forwarded: 1, dropped: 0, audit: 0, verdict, firstSeen: 0, lastSeen: 0 };
}

/** The UI's path from API nodes and edges to a layout (graph.ts does the same). */
function lay(nodes: MapNodeJson[], edges: MapEdgeJson[], backends: Backends = new Map(), aspect = 1.5) {
  const layoutNodes: LayoutNode[] = nodes.map((n) => ({ id: n.id, group: n.namespace || "outside namespaces", label: n.kind === "service" ? `svc ${n.name}` : `${n.name} (${n.pods} pod)` }));
  const drawn = drawEdges(nodes, edges, backends);
  const layoutEdges: LayoutEdge[] = drawn.map((d) => ({ id: d.id, source: d.source, target: d.target, label: d.label }));
  return { layoutNodes, layoutEdges, drawn, layout: layoutMap(layoutNodes, layoutEdges, aspect) };
}

/** A seeded random map of 200 workloads and 800 edges in 8 namespaces. */
function randomMap(seed: number): { nodes: MapNodeJson[]; edges: MapEdgeJson[] } {
  const random = seededRandom(seed);
  const nodes = Array.from({ length: 200 }, (_, i) => node(`workload:ns${Math.floor(random() * 8)}/Deployment/app-${i}-${"x".repeat(Math.floor(random() * 12))}`));
  const edges = new Map<string, MapEdgeJson>();
  while (edges.size < 800) {
    const s = nodes[Math.floor(random() * 200)]!.id, d = nodes[Math.floor(random() * 200)]!.id;
    if (s === d) continue;
    const e = edge(s, d, "TCP", 8000 + Math.floor(random() * 3), random() < 0.05 ? "dropped" : "forwarded");
    edges.set(e.id, e);
  }
  return { nodes, edges: [...edges.values()] };
}

const W = DEMO_WORKLOADS;
const DEMO_BACKENDS: Backends = new Map([
  ...(["frontend", "catalog", "cart", "payments"] as const).map((s) => [`service:shop/${s}`, [W[s]]] as const),
  ["service:shop/datastore", [W.datastore]], ["service:kube-system/kube-dns", [W.coredns]], ["service:monitoring/prometheus", [W.prometheus]],
]);
const demoEdges = () => DEMO_EDGES.map((e) => edge(e.source, e.destination, e.protocol, e.port, e.verdict === "sent" ? "forwarded" : e.verdict));
const demoNodes = () => [...new Set(DEMO_EDGES.flatMap((e) => [e.source, e.destination]))].map(node);

describe("the map's layout", () => {
  it("at the demo's size (its whole map: 16 nodes, 35 edges): no overlapping nodes or groups, every node in its group, no label collisions, most labels shown", () => {
    expect(demoNodes().length).toBe(16);
    expect(DEMO_EDGES.length).toBe(35);
    for (const aspect of [1500 / 1000 * 0.6, 1280 / 720 * 0.6, 1.5]) {
      const { layoutNodes, drawn, layout } = lay(demoNodes(), demoEdges(), DEMO_BACKENDS, aspect);
      expect(faults(layout, layoutNodes)).toEqual(NO_FAULTS);
      expect(layout.labels.size).toBeGreaterThanOrEqual(Math.ceil(drawn.length * 0.8));
    }
  });

  it("with 3 nodes", () => {
    const a = "workload:shop/Deployment/web", b = "workload:shop/Deployment/db", c = "world:203.0.113.7";
    const { layoutNodes, layout } = lay([a, b, c].map(node), [edge(a, b, "TCP", 5432), edge(b, c, "TCP", 443)]);
    expect(faults(layout, layoutNodes)).toEqual(NO_FAULTS);
    expect(layout.labels.size).toBe(2);
    expect(layout.groups.size).toBe(2);
  });

  it("on seeded random maps of 200 workloads and 800 edges in 8 namespaces", () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const { nodes, edges } = randomMap(seed);
      const { layoutNodes, layout } = lay(nodes, edges);
      expect({ seed, ...faults(layout, layoutNodes) }).toEqual({ seed, ...NO_FAULTS });
    }
  });

  it("with arrows in the edges' middles (a dense map's haystack edges): no shown label covers an edge's middle, and the other promises hold", () => {
    for (const seed of [1, 2]) {
      const { nodes, edges } = randomMap(seed);
      const { layoutNodes, layoutEdges } = lay(nodes, edges);
      const layout = layoutMap(layoutNodes, layoutEdges, 1.5, { midArrows: true });
      expect({ seed, ...faults(layout, layoutNodes) }).toEqual({ seed, ...NO_FAULTS });
      const covered: string[] = [];
      for (const e of layoutEdges) {
        const a = layout.positions.get(e.source)!, b = layout.positions.get(e.target)!;
        const middle = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
        for (const [id, box] of layout.labels) if (contains(box, { x1: middle.x, y1: middle.y, x2: middle.x, y2: middle.y })) covered.push(`${id} over ${e.id}`);
      }
      expect({ seed, covered }).toEqual({ seed, covered: [] });
      expect(layout.labels.size).toBeGreaterThan(layoutEdges.length / 4);
      // Without the option, labels sit on their own edge's middle first.
      const plain = layoutMap(layoutNodes, layoutEdges, 1.5);
      expect(layoutEdges.some((e) => {
        const box = plain.labels.get(e.id), a = plain.positions.get(e.source)!, b = plain.positions.get(e.target)!;
        return box !== undefined && contains(box, { x1: (a.x + b.x) / 2, y1: (a.y + b.y) / 2, x2: (a.x + b.x) / 2, y2: (a.y + b.y) / 2 });
      })).toBe(true);
    }
  });

  it("counts edges drawn across a node's shape (not routed around nodes yet: reported, not promised)", () => {
    const a = "workload:shop/Deployment/a", b = "workload:shop/Deployment/b", c = "workload:shop/Deployment/c";
    const layout: MapLayout = { positions: new Map([[a, { x: 0, y: 0 }], [b, { x: 100, y: 0 }], [c, { x: 200, y: 0 }]]), nodeBoxes: new Map(), groups: new Map(), labels: new Map(), labelOffsets: new Map() };
    const ac: LayoutEdge = { id: "a-c", source: a, target: c, label: "" }, ab: LayoutEdge = { id: "a-b", source: a, target: b, label: "" };
    expect(edgesOverNodes(layout, [ac, ab])).toEqual([`a-c × ${b}`]);
    layout.positions.set(b, { x: 100, y: 12 }); // just clear of the line (shapes are 22 px)
    expect(edgesOverNodes(layout, [ac, ab])).toEqual([]);
    // The figures, for bench/README.md: the demo's map and one 200 / 800 map.
    const demo = lay(demoNodes(), demoEdges(), DEMO_BACKENDS, 1500 / 1000 * 0.6);
    const big = randomMap(1), bigLaid = lay(big.nodes, big.edges);
    process.stdout.write(`edges over nodes: demo ${edgesOverNodes(demo.layout, demo.layoutEdges).length} crossings, ${demo.drawn.length} drawn edges; `
      + `200 workloads / 800 edges (seed 1) ${edgesOverNodes(bigLaid.layout, bigLaid.layoutEdges).length} crossings, ${bigLaid.drawn.length} drawn edges\n`);
  });

  it("keeps every known node where it was when an unrelated edge arrives, and when a new node joins a group", () => {
    const { layoutNodes, layoutEdges, layout } = lay(demoNodes(), demoEdges(), DEMO_BACKENDS);
    // A new edge between known nodes: nothing moves.
    const more = [...layoutEdges, { id: "extra", source: W.loadgen, target: W.prometheus, label: "TCP/9090" }];
    const same = extendLayout(layout, layoutNodes, more);
    expect(same.positions).toEqual(layout.positions);
    expect(faults(same, layoutNodes)).toEqual(NO_FAULTS);
    // A new workload in shop and a new namespace: shop's nodes stay; groups move only whole.
    const extra: LayoutNode[] = [
      { id: "workload:shop/Deployment/reviews", group: "shop", label: "reviews (1 pod)" },
      { id: "workload:billing/Deployment/invoices", group: "billing", label: "invoices (3 pods)" },
    ];
    const grown = extendLayout(layout, [...layoutNodes, ...extra], [...more,
      { id: "e1", source: W.frontend, target: extra[0]!.id, label: "TCP/80" }, { id: "e2", source: W.payments, target: extra[1]!.id, label: "TCP/443" }]);
    expect(faults(grown, [...layoutNodes, ...extra])).toEqual(NO_FAULTS);
    for (const n of layoutNodes) {
      const before = layout.positions.get(n.id)!, after = grown.positions.get(n.id)!;
      if (n.group === "shop") expect(after).toEqual(before);
      // Another group moved, if at all, as a whole: by its group box's offset.
      const dy = grown.groups.get(n.group)!.box.y1 - layout.groups.get(n.group)!.box.y1;
      expect(after).toEqual({ x: before.x, y: before.y + dy });
    }
  });

  it("refuses an edge whose end is not a node, naming it", () => {
    expect(() => layoutMap([{ id: "a", group: "g", label: "a" }], [{ id: "e", source: "a", target: "b", label: "" }])).toThrow("layout: edge e ends at b, which is not a node");
  });
});

describe("what the map draws", () => {
  it("a call through a Service as one path: client → Service → backend, no parallel client → backend edge", () => {
    const drawn = drawEdges(demoNodes(), demoEdges(), DEMO_BACKENDS);
    const ids = drawn.map((d) => d.id);
    expect(ids).not.toContain(drawnEdgeId(W.frontend, W.catalog));
    const toService = drawn.find((d) => d.id === drawnEdgeId(W.frontend, "service:shop/catalog"))!;
    const toBackend = drawn.find((d) => d.id === drawnEdgeId("service:shop/catalog", W.catalog))!;
    expect([toService.source, toService.target, toService.label]).toEqual([W.frontend, "service:shop/catalog", "TCP/80"]);
    expect([toBackend.source, toBackend.target, toBackend.label]).toEqual(["service:shop/catalog", W.catalog, "TCP/8080"]);
    // The backend's drop shows on both legs of debug's path, and on nothing of cart's.
    const dropped = `${W.debug},${W.datastore},TCP,6379`;
    expect(drawn.filter((d) => d.members.includes(dropped)).map((d) => `${d.id} ${d.verdict}`))
      .toEqual([`${drawnEdgeId("service:shop/datastore", W.datastore)} dropped`, `${drawnEdgeId(W.debug, "service:shop/datastore")} dropped`].sort());
    expect(drawn.find((d) => d.id === drawnEdgeId(W.cart, "service:shop/datastore"))!.verdict).toBe("forwarded");
    // Every map edge is drawn; a direct call by pod IP (prometheus → catalog:9102) stays a direct edge.
    const members = new Set(drawn.flatMap((d) => d.members));
    expect(demoEdges().filter((e) => !members.has(e.id))).toEqual([]);
    expect(ids).toContain(drawnEdgeId(W.prometheus, W.catalog));
  });

  it("without backends (a scope that cannot read the Service's namespace) both edges are drawn, as the API has them", () => {
    const drawn = drawEdges(demoNodes(), demoEdges(), new Map());
    expect(drawn.map((d) => d.id)).toContain(drawnEdgeId(W.frontend, W.catalog));
  });

  it("parallel edges as one: both directions and several ports, one label, the worst verdict", () => {
    const a = "workload:x/Deployment/a", b = "workload:x/Deployment/b";
    const drawn = drawEdges([a, b].map(node), [edge(a, b, "TCP", 80), edge(a, b, "TCP", 443, "audit"), edge(b, a, "UDP", 53), edge(b, a, "TCP", 9000)], new Map());
    expect(drawn).toEqual([{ id: drawnEdgeId(a, b), source: a, target: b, label: "TCP/443, TCP/80 +2", fullLabel: "TCP/443, TCP/80, TCP/9000, UDP/53",
      verdict: "audit", members: expect.any(Array) as unknown as string[], both: true }]);
  });
});

describe("readable names", () => {
  it("cuts a Deployment pod's template hash, keeps its own suffix, and leaves other names alone", () => {
    expect(shortPodName("catalog-7d9f8b6c5d-x2k4p")).toBe("catalog-…x2k4p");
    expect(shortPodName("my-app-api-5c6b7f9d48-qwz7r")).toBe("my-app-api-…qwz7r");
    expect(shortPodName("datastore-0")).toBe("datastore-0");
    expect(shortPodName("node-exporter-x2k4p")).toBe("node-exporter-x2k4p");
    expect(shortPodName("debug")).toBe("debug");
    // With the workload known, any hash between its name and the pod's own suffix (the lab's are hex).
    expect(shortPodName("frontend-3fa9e01c2b-0a1e3", { kind: "Deployment", name: "frontend" })).toBe("frontend-…0a1e3");
    expect(shortPodName("frontend-3fa9e01c2b-0a1e3")).toBe("frontend-3fa9e01c2b-0a1e3");
    expect(shortPodName("datastore-0", { kind: "StatefulSet", name: "datastore" })).toBe("datastore-0");
  });

  it("the map layer's hit test: the nearest edge within the tolerance (plus half the edge's width), none beyond it", () => {
    const positions = new Map([["a", { x: 0, y: 0 }], ["b", { x: 100, y: 0 }], ["c", { x: 0, y: 10 }], ["d", { x: 100, y: 10 }], ["e", { x: 50, y: 50 }]]);
    const edge = (id: string, source: string, target: string, verdict: LayerEdge["verdict"] = "forwarded"): LayerEdge =>
      ({ id, source, target, verdict, both: false, label: "", offset: { x: 0, y: 0 }, fullLabel: "" });
    const edges = [edge("ab", "a", "b"), edge("cd", "c", "d", "dropped"), edge("loop", "e", "e")];
    expect(nearestEdge(edges, positions, { x: 50, y: 3 }, 4)).toBe("ab");
    expect(nearestEdge(edges, positions, { x: 50, y: 6 }, 4)).toBe("cd");
    // Past an end the distance is to the end point: 4 + 0.75 (half of 1.5) reaches 4.7, not 4.8.
    expect(nearestEdge(edges, positions, { x: 104.7, y: 0 }, 4)).toBe("ab");
    expect(nearestEdge(edges, positions, { x: 104.8, y: 0 }, 4)).toBeUndefined();
    // A dropped edge is 2.5 wide: 4 + 1.25 from its line.
    expect(nearestEdge(edges, positions, { x: 50, y: 15.2 }, 4)).toBe("cd");
    expect(nearestEdge(edges, positions, { x: 50, y: 15.3 }, 4)).toBeUndefined();
    // A loop (an edge from a node to itself) is not drawn, so it is not hit.
    expect(nearestEdge(edges, positions, { x: 50, y: 50 }, 4)).toBeUndefined();
    // An edge whose end is not placed is skipped.
    expect(nearestEdge([edge("ax", "a", "x")], positions, { x: 0, y: 0 }, 4)).toBeUndefined();
  });

  it("the map layer's node hit test: a point within the node's square (22 wide) plus the tolerance, the nearest centre if several, none beyond", () => {
    const positions = new Map([["a", { x: 0, y: 0 }], ["b", { x: 30, y: 0 }]]);
    const node = (id: string): LayerNode => ({ id, kind: "workload", label: id, foreign: false });
    const nodes = [node("a"), node("b"), node("unplaced")];
    expect(nearestNode(nodes, positions, { x: 0, y: 0 }, 1)).toBe("a");
    // The square, not the circle: a corner is still the node (cytoscape's box test is as loose).
    expect(nearestNode(nodes, positions, { x: 11.9, y: -11.9 }, 1)).toBe("a");
    expect(nearestNode(nodes, positions, { x: 12.1, y: 0 }, 1)).toBeUndefined();
    expect(nearestNode(nodes, positions, { x: 12.1, y: 0 }, 2)).toBe("a");
    // Both in reach: the nearer centre.
    expect(nearestNode(nodes, positions, { x: 16, y: 0 }, 10)).toBe("b");
    expect(nearestNode(nodes, positions, { x: 14, y: 0 }, 10)).toBe("a");
    // The label under a node is not the node.
    expect(nearestNode(nodes, positions, { x: 0, y: 20 }, 1)).toBeUndefined();
  });
});
