// A dense map's workloads, Services, peers and edges, drawn by us on a canvas under
// cytoscape's. cytoscape styles, measures and draws each element as one of its own: at 500
// workloads / 2,000 edges that was most of a first render (bench/README.md, ui-render), for
// straight lines between node centres and a few hundred shapes of five kinds. Here they are a
// few canvas paths: one stroke per verdict, one fill of the arrows in the edges' middles, the
// labels layout.ts found room for, the what-if halos under them, the hovered and selected edge
// on top; then one fill and one border per node kind, the node labels and the selected node.
// cytoscape still draws the namespace boxes over them (nearly transparent) and their headers;
// `nearestNode` and `nearestEdge` find what is under the pointer for hover, clicks and drags.
//
// The look is cytoscape's with graph.ts's styles (NODE_STYLE and EDGE_STYLE are what both
// draw with): edges as its haystack edges (a line between centres, the arrow in the middle,
// which a crowded map's ends have no room for), in cytoscape's model coordinates, so that a
// map drawn here and one drawn by cytoscape read alike.
import { METRICS, type Point } from "./layout.js";
import type { NodeKindName, VerdictState as Verdict } from "./types.js";

export type Halo = "denied" | "allowed" | "verdict";

export interface LayerEdge {
  id: string;
  source: string;
  target: string;
  verdict: Verdict;
  /** Traffic both ways: a second arrow, towards the source. */
  both: boolean;
  /** The label shown on the edge ("" for none: layout.ts found no room). */
  label: string;
  /** Where that label's centre lies from the edge's middle. */
  offset: Point;
  /** Every port: shown while the edge is hovered or selected. */
  fullLabel: string;
}

export interface LayerNode {
  id: string;
  kind: NodeKindName;
  /** The text under the node (graph.ts's nodeLabel). */
  label: string;
  /** Outside the namespace the map is of: drawn fainter. */
  foreign: boolean;
}

export type NodeShape = "ellipse" | "round-rectangle" | "diamond" | "rectangle" | "hexagon";

/** The selection's amber: a selected node's border, and the overlay around a selected node or edge. */
const SELECTION_COLOUR = "#ffb300";

/** How a node of each kind is drawn, by cytoscape (graph.ts's stylesheet) and by the layer alike. */
export const NODE_STYLE = {
  colour: { workload: "#1565c0", service: "#6a1b9a", world: "#546e7a", host: "#795548", unknown: "#9e9e9e" } as Readonly<Record<NodeKindName, string>>,
  shape: { workload: "ellipse", service: "round-rectangle", world: "diamond", host: "rectangle", unknown: "hexagon" } as Readonly<Record<NodeKindName, NodeShape>>,
  borderColour: "#fff",
  borderWidth: 1,
  selectedBorderColour: SELECTION_COLOUR,
  selectedBorderWidth: 3,
  foreignOpacity: 0.8,
  /** cytoscape's default font family, which graph.ts's node labels use. */
  font: `${METRICS.nodeFont}px Helvetica Neue, Helvetica, sans-serif`,
  textColour: "#222",
  minZoomedFont: 6,
} as const;

export interface LabelBox { id: string; text: string; box: { x1: number; y1: number; x2: number; y2: number } }

/** graph.ts's colours and widths (model units, scaled by the zoom as cytoscape's are). */
export const EDGE_STYLE = {
  colour: { forwarded: "#2e7d32", dropped: "#c62828", audit: "#ef8f00" } as Readonly<Record<Verdict, string>>,
  width: { forwarded: 1.5, audit: 2, dropped: 2.5 } as Readonly<Record<Verdict, number>>,
  selectedWidth: 4,
  dash: [6, 3],
  /** cytoscape's triangle at arrow-scale 0.8 for these widths: 29 × 0.8 × (0.15 half-width, 0.3 length). */
  arrowHalfWidth: 3.48,
  arrowLength: 6.96,
  /**
   * Arrows shorter than this on screen are left out (the hovered and selected edge keep
   * theirs): a 2 px triangle shows no direction, and 2,000 of them were half the layer's
   * drawing time at a 500-workload map's zoom (~0.25).
   */
  minArrowPixels: 3,
  haloPadding: 6,
  haloOpacity: 0.45,
  /** cytoscape's selection overlay (`:selected` in graph.ts): amber at 0.15, 10 beyond the line. */
  overlayColour: SELECTION_COLOUR,
  overlayOpacity: 0.15,
  overlayPadding: 10,
  font: `${METRICS.edgeFont}px Helvetica Neue, Helvetica, sans-serif`,
  textColour: "#333",
  /** Labels are not drawn below this size on screen (cytoscape's min-zoomed-font-size). */
  minZoomedFont: 6,
  labelPadding: 1,
} as const;

/**
 * The edge whose line passes within `tolerance` (model units) of `p`, beyond half its width;
 * the nearest if several; undefined for none. Loops and edges with an end not placed are not
 * drawn, so they are never hit.
 */
export function nearestEdge(edges: readonly LayerEdge[], positions: ReadonlyMap<string, Point>, p: Point, tolerance: number): string | undefined {
  let best: string | undefined, bestDistance = Infinity;
  for (const e of edges) {
    const a = positions.get(e.source), b = positions.get(e.target);
    if (!a || !b || e.source === e.target) continue;
    const reach = tolerance + EDGE_STYLE.width[e.verdict] / 2;
    // A cheap reject on the segment's box before the distance.
    if (p.x < Math.min(a.x, b.x) - reach || p.x > Math.max(a.x, b.x) + reach || p.y < Math.min(a.y, b.y) - reach || p.y > Math.max(a.y, b.y) + reach) continue;
    const d = distanceToSegment(p, a, b);
    if (d <= reach && d < bestDistance) { best = e.id; bestDistance = d; }
  }
  return best;
}

/**
 * The node whose shape's box (METRICS.nodeSize square) lies within `tolerance` (model units)
 * of `p`, the nearest if several (layout.ts never lets two overlap); undefined for none.
 * Labels are not hit, as cytoscape's are not (text-events: no).
 */
export function nearestNode(nodes: readonly LayerNode[], positions: ReadonlyMap<string, Point>, p: Point, tolerance: number): string | undefined {
  const reach = METRICS.nodeSize / 2 + tolerance;
  let best: string | undefined, bestDistance = Infinity;
  for (const n of nodes) {
    const c = positions.get(n.id);
    if (!c || Math.abs(p.x - c.x) > reach || Math.abs(p.y - c.y) > reach) continue;
    const d = Math.hypot(p.x - c.x, p.y - c.y);
    if (d < bestDistance) { best = n.id; bestDistance = d; }
  }
  return best;
}

function distanceToSegment(p: Point, a: Point, b: Point): number {
  const dx = b.x - a.x, dy = b.y - a.y;
  const lengthSquared = dx * dx + dy * dy;
  const t = lengthSquared === 0 ? 0 : Math.max(0, Math.min(1, ((p.x - a.x) * dx + (p.y - a.y) * dy) / lengthSquared));
  return Math.hypot(p.x - (a.x + t * dx), p.y - (a.y + t * dy));
}

export class MapLayer {
  readonly canvas: HTMLCanvasElement;
  private readonly context: CanvasRenderingContext2D;
  private nodes: LayerNode[] = [];
  private nodeById = new Map<string, LayerNode>();
  private edges: LayerEdge[] = [];
  private byId = new Map<string, LayerEdge>();
  /** Node centres in model coordinates: layout.ts's, and a node's own while it is dragged. */
  readonly positions = new Map<string, Point>();
  private halos = new Map<string, Halo>();
  private readonly haloColours: Readonly<Record<Halo, string>>;
  /** The hovered edge. */
  hovered: string | undefined;
  /** The selected node or edge. */
  selected: string | undefined;

  /** Below cytoscape's canvases: first in the container, which is positioned (style.css). */
  constructor(container: HTMLElement, haloColours: Readonly<Record<Halo, string>>) {
    this.haloColours = haloColours;
    this.canvas = document.createElement("canvas");
    this.canvas.dataset.testid = "map-layer";
    this.canvas.style.cssText = "position:absolute;left:0;top:0;pointer-events:none";
    container.prepend(this.canvas);
    this.context = this.canvas.getContext("2d")!;
  }

  /** Replaces the nodes, the edges and the node centres. */
  set(nodes: LayerNode[], edges: LayerEdge[], positions: ReadonlyMap<string, Point>): void {
    this.nodes = nodes;
    this.nodeById = new Map(nodes.map((n) => [n.id, n]));
    this.edges = edges;
    this.byId = new Map(edges.map((e) => [e.id, e]));
    this.positions.clear();
    for (const [id, p] of positions) this.positions.set(id, { x: p.x, y: p.y });
    if (this.hovered !== undefined && !this.byId.has(this.hovered)) this.hovered = undefined;
    if (this.selected !== undefined && !this.has(this.selected)) this.selected = undefined;
  }

  /** Whether a node or an edge of that id is the layer's. */
  has(id: string): boolean {
    return this.byId.has(id) || this.nodeById.has(id);
  }

  ids(): string[] {
    return this.edges.map((e) => e.id);
  }

  /**
   * Every node with its centre and its box (shape and label, the label as wide as the canvas
   * measures it), in model units.
   */
  nodeBoxes(): { id: string; centre: Point; box: { x1: number; y1: number; x2: number; y2: number } }[] {
    this.context.font = NODE_STYLE.font;
    const half = METRICS.nodeSize / 2;
    return this.nodes.flatMap((n) => {
      const c = this.positions.get(n.id);
      if (!c) return [];
      const text = n.label === "" ? 0 : this.context.measureText(n.label).width / 2;
      const bottom = n.label === "" ? c.y + half : c.y + half + METRICS.nodeLabelMargin + METRICS.nodeFont * METRICS.lineHeight;
      return [{ id: n.id, centre: { x: c.x, y: c.y }, box: { x1: c.x - Math.max(half, text), y1: c.y - half, x2: c.x + Math.max(half, text), y2: bottom } }];
    });
  }

  edge(id: string): LayerEdge | undefined {
    return this.byId.get(id);
  }

  setHalos(halos: ReadonlyMap<string, Halo>): void {
    this.halos = new Map([...halos].filter(([id]) => this.byId.has(id)));
  }

  halosDrawn(): Record<Halo, string[]> {
    const out: Record<Halo, string[]> = { denied: [], allowed: [], verdict: [] };
    for (const [id, halo] of this.halos) out[halo].push(id);
    for (const ids of Object.values(out)) ids.sort();
    return out;
  }

  /** The edge under a point in model coordinates, within a few screen pixels at this zoom. */
  hit(p: Point, zoom: number): string | undefined {
    return nearestEdge(this.edges, this.positions, p, 4 / zoom);
  }

  /** The node under a point in model coordinates, within a screen pixel at this zoom. */
  hitNode(p: Point, zoom: number): string | undefined {
    return nearestNode(this.nodes, this.positions, p, 1 / zoom);
  }

  /** The text an edge shows now: its full label while hovered or selected, else its shown label. */
  textOf(id: string): string {
    const e = this.byId.get(id);
    if (!e) return "";
    return id === this.hovered || id === this.selected ? e.fullLabel : e.label;
  }

  /**
   * Every label shown, with the box its background fills, in model units; the hovered and the
   * selected edge's full labels with them if `withPointed`, else those edges' shown labels.
   */
  labels(withPointed: boolean): LabelBox[] {
    this.context.font = EDGE_STYLE.font;
    const out: LabelBox[] = [];
    for (const e of this.edges) {
      const text = withPointed ? this.textOf(e.id) : e.label;
      if (text === "") continue;
      const at = this.labelCentre(e, withPointed && (e.id === this.hovered || e.id === this.selected));
      if (!at) continue;
      const w = this.context.measureText(text).width + 2 * EDGE_STYLE.labelPadding, h = METRICS.edgeFont + 2 * EDGE_STYLE.labelPadding;
      out.push({ id: e.id, text, box: { x1: at.x - w / 2, y1: at.y - h / 2, x2: at.x + w / 2, y2: at.y + h / 2 } });
    }
    return out;
  }

  /** A full label (hover, selection) sits on the middle; a shown one where layout.ts put it. */
  private labelCentre(e: LayerEdge, full: boolean): Point | undefined {
    const a = this.positions.get(e.source), b = this.positions.get(e.target);
    if (!a || !b) return undefined;
    const offset = full ? { x: 0, y: 0 } : e.offset;
    return { x: (a.x + b.x) / 2 + offset.x, y: (a.y + b.y) / 2 + offset.y };
  }

  /** Draws the map for a canvas of `width` × `height` CSS pixels under cytoscape's viewport. */
  draw(width: number, height: number, zoom: number, pan: Point): void {
    const canvas = this.canvas, ctx = this.context;
    if (canvas.width !== width) { canvas.width = width; canvas.style.width = `${width}px`; }
    if (canvas.height !== height) { canvas.height = height; canvas.style.height = `${height}px`; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, width, height);
    if (this.edges.length === 0 && this.nodes.length === 0) return;
    ctx.setTransform(zoom, 0, 0, zoom, pan.x, pan.y);
    // The hovered and the selected edge go on top, their full labels over the nodes.
    const top = new Set([this.hovered, this.selected].filter((id): id is string => id !== undefined && this.byId.has(id)));
    this.drawEdges(ctx, zoom, top);
    // Shown labels where they are large enough on screen to read; the pointed edges' always.
    const readable = METRICS.edgeFont * zoom >= EDGE_STYLE.minZoomedFont;
    const labels = readable || top.size > 0 ? this.labels(true) : [];
    if (readable) this.drawEdgeLabels(ctx, labels.filter((l) => !top.has(l.id)));
    // What the viewport shows, in model units, with a node's reach around it.
    const margin = METRICS.nodeSize * 4;
    const view = { x1: -pan.x / zoom - margin, y1: -pan.y / zoom - margin, x2: (width - pan.x) / zoom + margin, y2: (height - pan.y) / zoom + margin };
    this.drawNodes(ctx, zoom, view);
    this.drawEdgeLabels(ctx, labels.filter((l) => top.has(l.id)));
  }

  /** Halos, lines and arrows (labels: drawEdgeLabels). */
  private drawEdges(ctx: CanvasRenderingContext2D, zoom: number, top: ReadonlySet<string>): void {
    ctx.lineCap = "butt";
    const arrows = EDGE_STYLE.arrowLength * zoom >= EDGE_STYLE.minArrowPixels;
    // The what-if halos, under every edge: a wider line of the halo's colour, as cytoscape's underlay.
    ctx.globalAlpha = EDGE_STYLE.haloOpacity;
    ctx.setLineDash([]);
    for (const [id, halo] of this.halos) {
      const e = this.byId.get(id)!;
      ctx.beginPath();
      if (!this.line(ctx, e)) continue;
      ctx.strokeStyle = this.haloColours[halo];
      ctx.lineWidth = EDGE_STYLE.width[e.verdict] + 2 * EDGE_STYLE.haloPadding;
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    // The edges by verdict, the most serious on top; each verdict's arrows right after its lines.
    for (const verdict of ["forwarded", "audit", "dropped"] as const) {
      ctx.beginPath();
      let any = false;
      for (const e of this.edges) if (e.verdict === verdict && !top.has(e.id)) any = this.line(ctx, e) || any;
      if (!any) continue;
      ctx.strokeStyle = ctx.fillStyle = EDGE_STYLE.colour[verdict];
      ctx.lineWidth = EDGE_STYLE.width[verdict];
      ctx.setLineDash(verdict === "audit" ? EDGE_STYLE.dash : []);
      ctx.stroke();
      if (!arrows) continue;
      ctx.beginPath();
      for (const e of this.edges) if (e.verdict === verdict && !top.has(e.id)) this.arrows(ctx, e);
      ctx.fill();
    }
    // The hovered and the selected edge over the others (graph.ts: z-index 10; selected 4 wide, with an overlay).
    for (const id of top) {
      const e = this.byId.get(id)!;
      if (id === this.selected) {
        ctx.beginPath();
        if (this.line(ctx, e)) {
          ctx.globalAlpha = EDGE_STYLE.overlayOpacity;
          ctx.strokeStyle = EDGE_STYLE.overlayColour;
          ctx.lineWidth = EDGE_STYLE.selectedWidth + 2 * EDGE_STYLE.overlayPadding;
          ctx.setLineDash([]);
          ctx.stroke();
          ctx.globalAlpha = 1;
        }
      }
      ctx.beginPath();
      if (!this.line(ctx, e)) continue;
      ctx.strokeStyle = ctx.fillStyle = EDGE_STYLE.colour[e.verdict];
      ctx.lineWidth = id === this.selected ? EDGE_STYLE.selectedWidth : EDGE_STYLE.width[e.verdict];
      ctx.setLineDash(e.verdict === "audit" ? EDGE_STYLE.dash : []);
      ctx.stroke();
      ctx.beginPath();
      this.arrows(ctx, e);
      ctx.fill();
    }
    ctx.setLineDash([]);
  }

  /** Edge labels on their white boxes (labels() measured them, in its font). */
  private drawEdgeLabels(ctx: CanvasRenderingContext2D, labels: readonly LabelBox[]): void {
    ctx.font = EDGE_STYLE.font;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    for (const label of labels) {
      const { x1, y1, x2, y2 } = label.box;
      ctx.globalAlpha = 0.9;
      ctx.fillStyle = "#fff";
      ctx.fillRect(x1, y1, x2 - x1, y2 - y1);
      ctx.globalAlpha = 1;
      ctx.fillStyle = EDGE_STYLE.textColour;
      ctx.fillText(label.text, (x1 + x2) / 2, (y1 + y2) / 2);
    }
  }

  /**
   * The nodes in the viewport: per kind (and faintness) one path, filled and bordered; the
   * selected node's overlay and border; labels where they are large enough on screen to read.
   */
  private drawNodes(ctx: CanvasRenderingContext2D, zoom: number, view: { x1: number; y1: number; x2: number; y2: number }): void {
    const shown = this.nodes.filter((n) => {
      const c = this.positions.get(n.id);
      return c !== undefined && c.x >= view.x1 && c.x <= view.x2 && c.y >= view.y1 && c.y <= view.y2;
    });
    ctx.setLineDash([]);
    ctx.lineJoin = "miter";
    const kinds = new Set(shown.map((n) => n.kind));
    for (const kind of kinds) {
      for (const foreign of [false, true]) {
        ctx.beginPath();
        let any = false;
        for (const n of shown) if (n.kind === kind && n.foreign === foreign) { this.shape(ctx, n); any = true; }
        if (!any) continue;
        ctx.globalAlpha = foreign ? NODE_STYLE.foreignOpacity : 1;
        ctx.fillStyle = NODE_STYLE.colour[kind];
        ctx.fill();
        ctx.strokeStyle = NODE_STYLE.borderColour;
        ctx.lineWidth = NODE_STYLE.borderWidth;
        ctx.stroke();
      }
    }
    ctx.globalAlpha = 1;
    const selected = this.selected === undefined ? undefined : this.nodeById.get(this.selected);
    const at = selected && this.positions.get(selected.id);
    if (selected && at) {
      // cytoscape's selection overlay (`:selected` in graph.ts): a rounded box 10 beyond the shape.
      const half = METRICS.nodeSize / 2 + EDGE_STYLE.overlayPadding;
      ctx.beginPath();
      ctx.roundRect(at.x - half, at.y - half, 2 * half, 2 * half, Math.min(half / 2, 8));
      ctx.globalAlpha = EDGE_STYLE.overlayOpacity;
      ctx.fillStyle = EDGE_STYLE.overlayColour;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.beginPath();
      this.shape(ctx, selected);
      ctx.strokeStyle = NODE_STYLE.selectedBorderColour;
      ctx.lineWidth = NODE_STYLE.selectedBorderWidth;
      ctx.stroke();
    }
    if (METRICS.nodeFont * zoom < NODE_STYLE.minZoomedFont) return;
    ctx.font = NODE_STYLE.font;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.fillStyle = NODE_STYLE.textColour;
    for (const n of shown) {
      const c = this.positions.get(n.id)!;
      ctx.globalAlpha = n.foreign ? NODE_STYLE.foreignOpacity : 1;
      ctx.fillText(n.label, c.x, c.y + METRICS.nodeSize / 2 + METRICS.nodeLabelMargin);
    }
    ctx.globalAlpha = 1;
  }

  /** Adds the node's shape (graph.ts's, for its kind) to the path. */
  private shape(ctx: CanvasRenderingContext2D, n: LayerNode): void {
    const c = this.positions.get(n.id)!, h = METRICS.nodeSize / 2;
    switch (NODE_STYLE.shape[n.kind]) {
      case "ellipse":
        ctx.moveTo(c.x + h, c.y);
        ctx.arc(c.x, c.y, h, 0, 2 * Math.PI);
        break;
      case "rectangle":
        ctx.rect(c.x - h, c.y - h, 2 * h, 2 * h);
        break;
      case "round-rectangle":
        // cytoscape's corner radius: a quarter of the side, at most 8.
        ctx.roundRect(c.x - h, c.y - h, 2 * h, 2 * h, Math.min(h / 2, 8));
        break;
      case "diamond":
        ctx.moveTo(c.x, c.y - h);
        ctx.lineTo(c.x + h, c.y);
        ctx.lineTo(c.x, c.y + h);
        ctx.lineTo(c.x - h, c.y);
        ctx.closePath();
        break;
      case "hexagon":
        ctx.moveTo(c.x + h, c.y);
        ctx.lineTo(c.x + h / 2, c.y - h);
        ctx.lineTo(c.x - h / 2, c.y - h);
        ctx.lineTo(c.x - h, c.y);
        ctx.lineTo(c.x - h / 2, c.y + h);
        ctx.lineTo(c.x + h / 2, c.y + h);
        ctx.closePath();
        break;
    }
  }

  /** Adds the edge's line to the path; false if an end is unknown or the edge is a loop. */
  private line(ctx: CanvasRenderingContext2D, e: LayerEdge): boolean {
    const a = this.positions.get(e.source), b = this.positions.get(e.target);
    if (!a || !b || e.source === e.target) return false;
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    return true;
  }

  /** Adds the edge's arrow(s) at its middle to the path: towards the target, and towards the source for traffic both ways. */
  private arrows(ctx: CanvasRenderingContext2D, e: LayerEdge): void {
    const a = this.positions.get(e.source), b = this.positions.get(e.target);
    if (!a || !b || e.source === e.target) return;
    const length = Math.hypot(b.x - a.x, b.y - a.y);
    if (length === 0) return;
    const ux = (b.x - a.x) / length, uy = (b.y - a.y) / length;
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const triangle = (dx: number, dy: number) => {
      const bx = mx - dx * EDGE_STYLE.arrowLength, by = my - dy * EDGE_STYLE.arrowLength;
      ctx.moveTo(mx, my);
      ctx.lineTo(bx - dy * EDGE_STYLE.arrowHalfWidth, by + dx * EDGE_STYLE.arrowHalfWidth);
      ctx.lineTo(bx + dy * EDGE_STYLE.arrowHalfWidth, by - dx * EDGE_STYLE.arrowHalfWidth);
      ctx.closePath();
    };
    triangle(ux, uy);
    if (e.both) triangle(-ux, -uy);
  }
}
