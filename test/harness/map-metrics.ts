// Layout metrics of the web UI's map, read from cytoscape's own positions and bounding boxes
// in the page (window.bulkheadMap.cy) and, on a dense map, from the nodes, edges and label
// boxes its map layer draws (window.bulkheadMap.layer()): what issue 16 asks to be zero, and
// whether the whole map lies on the canvas. Shared by the browser tests (ui-e2e on the demo lab, ui-map-browser).
// Its code runs in the page (DOM types): tsconfig.test.json checks it, the root tsconfig
// (node only, emitted) leaves it out.
import type { Page } from "playwright-core";

export interface MapMetrics {
  nodes: number;
  edges: number;
  groups: number;
  /** Pairs of leaf nodes whose boxes (shape + label) overlap. */
  overlappingNodes: string[];
  /** Nodes not inside their own group's box. */
  nodesOutsideGroup: string[];
  /** Nodes whose box overlaps a group that is not theirs. */
  nodesInForeignGroup: string[];
  /** Pairs of group boxes (with their header) that overlap. */
  overlappingGroups: string[];
  /** Shown edge labels overlapping another shown label, a node box or a group header. */
  labelCollisions: string[];
  labelsShown: number;
  /** Pairs of drawn edges between the same two nodes. */
  parallelEdges: string[];
  /** The whole map's rendered box lies inside the canvas. */
  fitsCanvas: boolean;
  zoom: number;
  canvas: { width: number; height: number };
  rendered: { x1: number; y1: number; x2: number; y2: number };
}

export function mapMetrics(page: Page): Promise<MapMetrics> {
  return page.evaluate(() => {
    type B = { x1: number; y1: number; x2: number; y2: number };
    const cy = window.bulkheadMap.cy;
    // A dense map's nodes and edges are the map layer's; cytoscape then holds only the namespace boxes.
    const layer = window.bulkheadMap.layer();
    const hit = (a: B, b: B) => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
    const inside = (o: B, i: B) => i.x1 >= o.x1 - 0.5 && i.x2 <= o.x2 + 0.5 && i.y1 >= o.y1 - 0.5 && i.y2 <= o.y2 + 0.5;
    const plain = (b: B): B => ({ x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2 });
    // Groups are the namespace boxes (plain nodes drawn under the others); a node names its box in data("group").
    const leaves = layer ? layer.nodes.map((n) => ({ id: n.id, parent: n.group, box: plain(n.box) })) : cy.nodes().filter((n) => !n.hasClass("namespace")).map((n) => ({
      id: n.id(), parent: String(n.data("group") ?? ""),
      box: plain(n.boundingBox({ includeLabels: true, includeOverlays: false })),
    }));
    const groups = cy.nodes(".namespace").map((g) => ({
      id: g.id(),
      body: plain(g.boundingBox({ includeLabels: false, includeOverlays: false })),
      whole: plain(g.boundingBox({ includeLabels: true, includeOverlays: false })),
    }));
    const out = {
      nodes: leaves.length, edges: layer ? layer.edges.length : cy.edges().length, groups: groups.length,
      overlappingNodes: [] as string[], nodesOutsideGroup: [] as string[], nodesInForeignGroup: [] as string[],
      overlappingGroups: [] as string[], labelCollisions: [] as string[], labelsShown: 0, parallelEdges: [] as string[],
    };
    for (let i = 0; i < leaves.length; i++) {
      for (let j = i + 1; j < leaves.length; j++) if (hit(leaves[i]!.box, leaves[j]!.box)) out.overlappingNodes.push(`${leaves[i]!.id} × ${leaves[j]!.id}`);
    }
    for (const n of leaves) {
      const own = groups.find((g) => g.id === n.parent);
      if (!own || !inside(own.body, n.box)) out.nodesOutsideGroup.push(n.id);
      for (const g of groups) if (g.id !== n.parent && hit(g.whole, n.box)) out.nodesInForeignGroup.push(`${n.id} in ${g.id}`);
    }
    for (let i = 0; i < groups.length; i++) {
      for (let j = i + 1; j < groups.length; j++) if (hit(groups[i]!.whole, groups[j]!.whole)) out.overlappingGroups.push(`${groups[i]!.id} × ${groups[j]!.id}`);
    }
    // A group's header: its label above the dashed body, as wide as the canvas measures its text.
    const measure = document.createElement("canvas").getContext("2d")!;
    const headers = cy.nodes(".namespace").map((g) => {
      measure.font = `${String(g.style("font-weight"))} ${String(g.style("font-size"))} ${String(g.style("font-family"))}`;
      const width = measure.measureText(String(g.data("label"))).width, cx = g.position("x");
      const own = groups.find((x) => x.id === g.id())!;
      return { id: `header ${g.id()}`, box: { x1: cx - width / 2, x2: cx + width / 2, y1: own.whole.y1, y2: own.body.y1 } };
    });
    const labels = layer ? layer.labels.map((l) => ({ id: l.id, box: plain(l.box) })) : cy.edges().filter((e) => String(e.data("label") ?? "") !== "" && e.visible()).map((e) => ({
      id: e.id(),
      box: plain(e.boundingBox({ includeNodes: false, includeEdges: false, includeLabels: true, includeMainLabels: true, includeSourceLabels: false, includeTargetLabels: false, includeOverlays: false } as never)),
    }));
    out.labelsShown = labels.length;
    for (let i = 0; i < labels.length; i++) {
      for (let j = i + 1; j < labels.length; j++) if (hit(labels[i]!.box, labels[j]!.box)) out.labelCollisions.push(`${labels[i]!.id} × ${labels[j]!.id}`);
      for (const o of [...leaves, ...headers]) if (hit(labels[i]!.box, o.box)) out.labelCollisions.push(`${labels[i]!.id} × ${o.id}`);
    }
    const pairs = new Map<string, string>();
    const ends = layer ? layer.edges : cy.edges().map((e) => ({ id: e.id(), source: e.source().id(), target: e.target().id() }));
    for (const e of ends) {
      const [a, b] = [e.source, e.target].sort();
      const key = `${a}|${b}`;
      if (pairs.has(key)) out.parallelEdges.push(`${pairs.get(key)} ∥ ${e.id}`); else pairs.set(key, e.id);
    }
    // The layer's edges join node centres; its nodes lie in their groups (judged above), its labels may reach beyond them.
    const r = plain(cy.elements().renderedBoundingBox({ includeLabels: true, includeOverlays: false }));
    const zoom = cy.zoom(), pan = cy.pan();
    for (const { box } of layer ? [...labels, ...leaves] : []) {
      r.x1 = Math.min(r.x1, box.x1 * zoom + pan.x); r.x2 = Math.max(r.x2, box.x2 * zoom + pan.x);
      r.y1 = Math.min(r.y1, box.y1 * zoom + pan.y); r.y2 = Math.max(r.y2, box.y2 * zoom + pan.y);
    }
    const canvas = { width: cy.width(), height: cy.height() };
    return { ...out, fitsCanvas: r.x1 >= 0 && r.y1 >= 0 && r.x2 <= canvas.width && r.y2 <= canvas.height, zoom, canvas, rendered: r };
  });
}

/** The metrics that must be empty, for one expect().toEqual(). */
export function layoutFaults(m: MapMetrics): Pick<MapMetrics, "overlappingNodes" | "nodesOutsideGroup" | "nodesInForeignGroup" | "overlappingGroups" | "labelCollisions" | "parallelEdges" | "fitsCanvas"> {
  return {
    overlappingNodes: m.overlappingNodes, nodesOutsideGroup: m.nodesOutsideGroup, nodesInForeignGroup: m.nodesInForeignGroup,
    overlappingGroups: m.overlappingGroups, labelCollisions: m.labelCollisions, parallelEdges: m.parallelEdges, fitsCanvas: m.fitsCanvas,
  };
}

export const NO_LAYOUT_FAULTS = {
  overlappingNodes: [], nodesOutsideGroup: [], nodesInForeignGroup: [], overlappingGroups: [], labelCollisions: [], parallelEdges: [], fitsCanvas: true,
};
