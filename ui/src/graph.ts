// The map drawn with cytoscape: workloads, Services, world and host peers as nodes, each in
// a dashed box of its namespace (peers outside every namespace in one box of their own);
// one edge per pair of nodes (drawing.ts: parallel edges merged, calls through a Service
// drawn client → Service → backend), coloured by its worst verdict. Positions come from
// layout.ts (pure, tested), given to cytoscape as a preset: a snapshot is laid out whole;
// deltas keep every known node where it is, new nodes take a free row in their group, and
// edge labels are shown only where they collide with nothing (others on hover/selection).
// A dense map's nodes and edges are drawn by map-layer.ts on a canvas under cytoscape's, not
// by cytoscape (its per-element style and geometry were most of a 2,000-edge first render);
// cytoscape then holds only the namespace boxes.
import cytoscape, { type CollectionReturnValue, type Core, type ElementDefinition, type StylesheetJson } from "cytoscape";
import { type Backends, drawEdges, type DrawnEdge } from "./drawing.js";
import { EDGE_STYLE, type LayerEdge, type LayerNode, MapLayer, NODE_STYLE } from "./map-layer.js";
import { extendLayout, groupBody, layoutMap, type LayoutNode, type MapLayout, METRICS } from "./layout.js";
import type { MapDeltaJson, MapEdgeJson, MapJson, MapNodeJson } from "./types.js";

export type Selection = { kind: "node"; node: MapNodeJson } | { kind: "edge"; edge: MapEdgeJson } | undefined;

const COLOURS = EDGE_STYLE.colour, WIDTHS = EDGE_STYLE.width;

export function nodeLabel(n: MapNodeJson): string {
  if (n.kind === "workload") return `${n.name} (${n.pods} pod${n.pods === 1 ? "" : "s"})`;
  if (n.kind === "service") return `svc ${n.name}`;
  if (n.kind === "host") return `host ${n.name}`;
  return n.name;
}

/** The box a node is drawn in: its namespace; hosts and outside addresses share one. */
export const OUTSIDE_GROUP = "outside namespaces";
const groupOf = (n: MapNodeJson) => (n.namespace === "" ? OUTSIDE_GROUP : n.namespace);
const groupId = (group: string) => `namespace:${group}`;

/** A fitted map is never drawn larger than this (a 3-node map would fill the canvas). */
const MAX_FIT_ZOOM = 1.25;
const FIT_PADDING = 24;

/** A pointer that goes down on a layer node and moves less than this (screen px) before it goes up clicks; further, it drags. */
const DRAG_PIXELS = 4;

/** What-if halos (the legend in index.html uses the same colours). */
export const WHATIF_COLOURS = { denied: "#d81b60", allowed: "#00acc1", verdict: "#7e57c2" } as const;
export type WhatIfMark = keyof typeof WHATIF_COLOURS;
/** A drawn edge carrying several changed map edges shows the most serious change. */
const WHATIF_RANK: Readonly<Record<WhatIfMark, number>> = { denied: 3, verdict: 2, allowed: 1 };

/** Drawn edges above which the map is dense: its nodes and edges on map-layer.ts's canvas, arrows in the middle. */
export const DENSE_EDGES = 400;

/** The stylesheet (a dense map's nodes and edges are not cytoscape's: map-layer.ts). */
function mapStyle(): StylesheetJson {
  return [
    { selector: "node", style: {
      label: "data(label)", "font-size": METRICS.nodeFont, "text-valign": "bottom", "text-margin-y": METRICS.nodeLabelMargin, "min-zoomed-font-size": NODE_STYLE.minZoomedFont,
      width: METRICS.nodeSize, height: METRICS.nodeSize, "background-color": NODE_STYLE.colour.workload, color: NODE_STYLE.textColour,
      "border-width": NODE_STYLE.borderWidth, "border-color": NODE_STYLE.borderColour,
    } },
    ...(["service", "world", "host", "unknown"] as const).map((kind) => ({ selector: `node.${kind}`, style: { shape: NODE_STYLE.shape[kind], "background-color": NODE_STYLE.colour[kind] } })),
    { selector: "node.foreign", style: { opacity: NODE_STYLE.foreignOpacity } },
    // Namespace boxes are plain nodes sized by layout.ts, drawn under every edge and node and
    // deaf to the mouse, not compound parents: with a compound node in the graph, cytoscape
    // clears the style caches of a parent's every descendant and their edges for each style
    // property it applies (most of a 2,000-edge map's first render).
    { selector: "node.namespace", style: {
      "background-opacity": 0.04, "background-color": "#455a64", "border-color": "#90a4ae", "border-style": "dashed", "border-width": 1,
      label: "data(label)", "text-valign": "top", "text-margin-y": -2, "font-size": METRICS.groupFont, "font-weight": "bold", shape: "round-rectangle",
      width: "data(width)" as unknown as number, height: "data(height)" as unknown as number,
      color: "#37474f", "min-zoomed-font-size": 5, "z-compound-depth": "bottom", events: "no",
    } },
    { selector: "node.namespace.home", style: { "border-style": "solid", "border-color": "#1565c0", "background-color": "#1565c0" } },
    // Each property a rule gives an element costs cytoscape a parse, cache clearing and events
    // per element (most of a 2,000-edge map's first frame): an edge gets only what it draws.
    // Text properties go to the edges that show a label (layout.ts found room: class
    // "labelled") or are hovered or selected; the source arrow's colour to edges with one.
    { selector: "edge", style: {
      width: WIDTHS.forwarded, "curve-style": "straight", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
      "line-color": COLOURS.forwarded, "target-arrow-color": COLOURS.forwarded,
    } },
    { selector: "edge.labelled, edge.hover, edge:selected", style: {
      "font-size": METRICS.edgeFont, "min-zoomed-font-size": 6, color: "#333",
      "text-background-color": "#fff", "text-background-opacity": 0.9, "text-background-padding": "1px",
    } },
    // Where layout.ts found room for the label, from the edge's middle (mappers typed as numbers).
    { selector: "edge.labelled", style: { label: "data(label)", "text-margin-x": "data(dx)" as unknown as number, "text-margin-y": "data(dy)" as unknown as number } },
    { selector: "edge.both", style: { "source-arrow-shape": "triangle", "source-arrow-color": COLOURS.forwarded } },
    { selector: "edge.dropped", style: { "line-color": COLOURS.dropped, "target-arrow-color": COLOURS.dropped, width: WIDTHS.dropped } },
    { selector: "edge.both.dropped", style: { "source-arrow-color": COLOURS.dropped } },
    { selector: "edge.audit", style: { "line-color": COLOURS.audit, "target-arrow-color": COLOURS.audit, "line-style": "dashed", width: WIDTHS.audit } },
    { selector: "edge.both.audit", style: { "source-arrow-color": COLOURS.audit } },
    // A label left out for lack of room shows (every port) while the edge is hovered or selected.
    // The what-if overlay: a halo under the edge, its verdict colour kept on top.
    { selector: "edge.whatif-denied", style: { "underlay-color": WHATIF_COLOURS.denied, "underlay-opacity": 0.45, "underlay-padding": 6 } },
    { selector: "edge.whatif-allowed", style: { "underlay-color": WHATIF_COLOURS.allowed, "underlay-opacity": 0.45, "underlay-padding": 6 } },
    { selector: "edge.whatif-verdict", style: { "underlay-color": WHATIF_COLOURS.verdict, "underlay-opacity": 0.45, "underlay-padding": 6 } },
    { selector: "edge.hover, edge:selected", style: { label: "data(fullLabel)", "z-index": 10 } },
    { selector: ":selected", style: { "border-width": NODE_STYLE.selectedBorderWidth, "border-color": NODE_STYLE.selectedBorderColour, "overlay-opacity": EDGE_STYLE.overlayOpacity, "overlay-color": EDGE_STYLE.overlayColour } },
    { selector: "edge:selected", style: { width: EDGE_STYLE.selectedWidth } },
  ];
}

/** A drawn edge as the layer draws it, with the label layout.ts found room for. */
function layerEdge(d: DrawnEdge, layout: MapLayout): LayerEdge {
  return {
    id: d.id, source: d.source, target: d.target, verdict: d.verdict, both: d.both,
    label: layout.labels.has(d.id) ? d.label : "", offset: layout.labelOffsets.get(d.id) ?? { x: 0, y: 0 }, fullLabel: d.fullLabel,
  };
}

/** graph.ts's layerView(): a dense map as the layer draws it. */
export interface LayerView {
  nodes: (ReturnType<MapLayer["nodeBoxes"]>[number] & { group: string })[];
  edges: { id: string; source: string; target: string; both: boolean; text: string }[];
  labels: ReturnType<MapLayer["labels"]>;
}

export class MapView {
  readonly cy: Core;
  private namespace = "";
  private onSelect: (s: Selection) => void = () => undefined;
  readonly nodes = new Map<string, MapNodeJson>();
  readonly edges = new Map<string, MapEdgeJson>();
  /** Drawn edge id → what it draws; map edge id → its drawn edges. */
  readonly drawn = new Map<string, DrawnEdge>();
  private readonly drawnOf = new Map<string, string[]>();
  private layoutState: MapLayout | undefined;
  private autoFit = true;
  /** Map edge id → its what-if change, while an overlay is shown. */
  private whatIf = new Map<string, WhatIfMark>();
  /** Whether cytoscape has drawn a frame since the last snapshot (a User Timing mark). */
  private snapshotDrawn = true;
  /** Called once cytoscape has drawn the last snapshot (whenDrawn). */
  private drawnWaiters: (() => void)[] = [];
  /** Whether the map is dense (more than DENSE_EDGES drawn edges): its nodes and edges are the layer's, not cytoscape's. */
  private dense = false;
  private readonly layer: MapLayer;
  /**
   * A layer node held by the pointer: where the pointer went down (screen) and holds it from its
   * centre (model); moved with the pointer once it has gone DRAG_PIXELS from there.
   */
  private dragging: { id: string; down: { x: number; y: number }; grip: { x: number; y: number }; moved: boolean } | undefined;
  /** A layer node was just dragged: the tap cytoscape sends after the drag is not a click. */
  private dragEnded = false;
  /** A frame of the layer's own is asked for (hover, selection, halos, edges between unmoved nodes). */
  private layerQueued = false;

  constructor(container: HTMLElement) {
    this.cy = cytoscape({
      container,
      // Scale: a flat pixel ratio, and edges hidden / a texture while the user pans and zooms.
      pixelRatio: 1,
      hideEdgesOnViewport: true,
      textureOnViewport: true,
      motionBlur: false,
      minZoom: 0.05,
      maxZoom: 4,
      wheelSensitivity: 0.3,
      boxSelectionEnabled: false,
      autounselectify: false,
      style: mapStyle(),
    });
    this.layer = new MapLayer(container, WHATIF_COLOURS);
    this.cy.on("tap", "node, edge", (event) => {
      const id = event.target.id() as string;
      if (event.target.hasClass("namespace")) return;
      this.emit(id);
    });
    // A tap on no element of cytoscape's (namespace boxes are deaf to the mouse) may be on
    // one of the layer's nodes or edges; cytoscape has unselected its own elements either way.
    this.cy.on("tap", (event) => {
      const dragged = this.dragEnded;
      this.dragEnded = false;
      if (event.target !== this.cy) { this.selectLayer(undefined); return; }
      if (dragged) return;
      const hit = this.dense ? this.layerHit(event.position) : undefined;
      this.selectLayer(hit);
      if (hit !== undefined) this.emit(hit); else this.onSelect(undefined);
    });
    this.cy.on("mousemove", (event) => {
      if (!this.dense || this.dragging) return;
      // On a node the pointer hovers no edge.
      const hit = event.target === this.cy ? this.layerHit(event.position) : undefined;
      this.hoverLayerEdge(hit !== undefined && this.layer.edge(hit) !== undefined ? hit : undefined);
    });
    container.addEventListener("mouseleave", () => { this.hoverLayerEdge(undefined); });
    // A layer node held and moved takes its edges along, as cytoscape's nodes do; the map does
    // not pan meanwhile (cytoscape reads whether it may pan as the pointer moves).
    this.cy.on("tapstart", (event) => {
      this.dragEnded = false;
      const id = this.dense && event.target === this.cy ? this.layer.hitNode(event.position, this.cy.zoom()) : undefined;
      const centre = id === undefined ? undefined : this.layer.positions.get(id);
      if (id === undefined || !centre) return;
      this.dragging = { id, down: { ...event.renderedPosition }, grip: { x: event.position.x - centre.x, y: event.position.y - centre.y }, moved: false };
      this.cy.userPanningEnabled(false);
    });
    this.cy.on("tapdrag", (event) => {
      if (!this.dragging) return;
      const { id, down, grip } = this.dragging;
      if (!this.dragging.moved && Math.hypot(event.renderedPosition.x - down.x, event.renderedPosition.y - down.y) < DRAG_PIXELS) return;
      this.dragging.moved = true;
      this.layer.positions.set(id, { x: event.position.x - grip.x, y: event.position.y - grip.y });
      this.hoverLayerEdge(undefined);
      this.queueLayer();
    });
    this.cy.on("tapend", () => {
      if (!this.dragging) return;
      this.dragEnded = this.dragging.moved;
      this.dragging = undefined;
      this.cy.userPanningEnabled(true);
    });
    // The map keeps fitting the canvas (when the canvas is resized, when the map grows) until
    // the user pans or zooms; "Lay out again" fits it again.
    for (const gesture of ["wheel", "mousedown", "touchstart", "keydown"]) container.addEventListener(gesture, () => { this.autoFit = false; }, { passive: true });
    new ResizeObserver(() => {
      this.cy.resize();
      if (this.autoFit) this.fit();
    }).observe(container);
    // This observer resizes cytoscape; its renderer's own (a ResizeObserver and a watch on the
    // container's attributes) would only do it again, 100 ms later (debounced), then redraw the
    // whole map and read the container's size, forcing a page layout. Its first call, the
    // observers' initial notice, fell after a 2,000-edge snapshot's first frame: a second full
    // frame, ~0.45 s of CPU under load (bench/ui-render --profile). (Internal fields of
    // cytoscape 3.35's canvas renderer; absent, nothing changes.)
    const renderer = (this.cy as unknown as { renderer(): { resizeObserver?: ResizeObserver; styleObserver?: MutationObserver } }).renderer();
    renderer.resizeObserver?.disconnect();
    renderer.styleObserver?.disconnect();
    this.cy.on("render", () => {
      this.drawLayer();
      if (!this.snapshotDrawn) { this.snapshotDrawn = true; performance.mark("map: snapshot drawn"); this.wakeDrawnWaiters(); }
    });
    this.cy.on("mouseover", "edge", (event) => { event.target.addClass("hover"); });
    this.cy.on("mouseout", "edge", (event) => { event.target.removeClass("hover"); });
  }

  /**
   * Runs `callback` once cytoscape has drawn the last snapshot (now, if it has), or after
   * `timeoutMs` at the latest (a canvas that is never drawn, e.g. hidden). Work that can wait,
   * such as the mirror tables, goes here, so it does not hold the map's first frame.
   */
  whenDrawn(callback: () => void, timeoutMs = 2000): void {
    if (this.snapshotDrawn) { callback(); return; }
    let done = false;
    const once = () => { if (!done) { done = true; callback(); } };
    this.drawnWaiters.push(once);
    window.setTimeout(once, timeoutMs);
  }

  private wakeDrawnWaiters(): void {
    const waiters = this.drawnWaiters;
    this.drawnWaiters = [];
    for (const w of waiters) w();
  }

  setOnSelect(handler: (s: Selection) => void): void {
    this.onSelect = handler;
  }

  /** Selects a node, a map edge (by its API id) or a drawn edge, as a click would; returns whether it exists. */
  select(id: string): boolean {
    const drawnId = this.drawn.has(id) ? id : this.drawnOf.get(id)?.[0];
    if (this.layer.has(drawnId ?? id)) {
      this.cy.elements().unselect();
      this.selectLayer(drawnId ?? id);
      this.emit(id);
      return true;
    }
    const element = this.cy.getElementById(drawnId ?? id);
    if (element.empty() || element.hasClass("namespace")) return false;
    this.cy.elements().unselect();
    this.selectLayer(undefined);
    element.select();
    this.emit(id);
    return true;
  }

  /** Clears the selection, cytoscape's and the layer's. */
  unselect(): void {
    this.cy.elements().unselect();
    this.selectLayer(undefined);
  }

  /** The selected node or drawn edge ids. */
  selected(): string[] {
    return [...this.cy.$(":selected").map((e) => e.id()), ...(this.layer.selected === undefined ? [] : [this.layer.selected])];
  }

  /**
   * A dense map as the layer draws it: its nodes with their group (the namespace box's id),
   * centre and box; its edges, each with the text it shows now; the labels shown whatever is
   * hovered or selected; all in model units (undefined when cytoscape draws the map): for tests.
   */
  layerView(): LayerView | undefined {
    if (!this.dense) return undefined;
    const nodes = this.layer.nodeBoxes().map((n) => ({ ...n, group: groupId(groupOf(this.nodes.get(n.id)!)) }));
    const edges = this.layer.ids().map((id) => {
      const e = this.layer.edge(id)!;
      return { id, source: e.source, target: e.target, both: e.both, text: this.layer.textOf(id) };
    });
    return { nodes, edges, labels: this.layer.labels(false) };
  }

  /** The layer's node under a point (model units), else its edge there. */
  private layerHit(p: { x: number; y: number }): string | undefined {
    const zoom = this.cy.zoom();
    return this.layer.hitNode(p, zoom) ?? this.layer.hit(p, zoom);
  }

  private selectLayer(id: string | undefined): void {
    if (this.layer.selected === id) return;
    this.layer.selected = id;
    this.queueLayer();
  }

  private hoverLayerEdge(id: string | undefined): void {
    if (this.layer.hovered === id) return;
    this.layer.hovered = id;
    this.queueLayer();
  }

  /** The layer drawn under cytoscape's current viewport (in cytoscape's frame, or a frame of its own). */
  private drawLayer(): void {
    this.layerQueued = false;
    this.layer.draw(this.cy.width(), this.cy.height(), this.cy.zoom(), this.cy.pan());
  }

  private queueLayer(): void {
    if (this.layerQueued) return;
    this.layerQueued = true;
    requestAnimationFrame(() => { if (this.layerQueued) this.drawLayer(); });
  }

  /** A node id, a map edge id, or a drawn edge id (which stands for its main map edge). */
  private emit(id: string): void {
    const node = this.nodes.get(id);
    if (node) { this.onSelect({ kind: "node", node }); return; }
    const edge = this.edges.get(id) ?? this.mainEdge(id);
    if (edge) this.onSelect({ kind: "edge", edge });
  }

  /** The map edge a drawn edge selects: one between the drawn ends, else its first member. */
  private mainEdge(drawnId: string): MapEdgeJson | undefined {
    const d = this.drawn.get(drawnId);
    if (!d) return undefined;
    const members = d.members.map((m) => this.edges.get(m)).filter((e): e is MapEdgeJson => e !== undefined);
    const between = (e: MapEdgeJson) => (e.source === d.source && e.destination === d.target) || (e.source === d.target && e.destination === d.source);
    return members.find(between) ?? members[0];
  }

  /** The drawn edges that carry a map edge (one, or two for a call through a Service). */
  drawnEdgesOf(edgeId: string): DrawnEdge[] {
    return (this.drawnOf.get(edgeId) ?? []).map((id) => this.drawn.get(id)!);
  }

  get layout(): MapLayout | undefined {
    return this.layoutState;
  }

  /** Replaces the whole map; lays it out unless every node already has a place. */
  snapshot(map: MapJson, layout = true): void {
    this.namespace = map.namespace;
    this.nodes.clear();
    this.edges.clear();
    for (const n of map.nodes) this.nodes.set(n.id, n);
    for (const e of map.edges) this.edges.set(e.id, e);
    const known = this.layoutState !== undefined && map.nodes.every((n) => this.layoutState!.positions.has(n.id));
    this.redraw(layout && !known ? "whole" : "extend", true);
    this.snapshotDrawn = false;
  }

  /** Applies a delta; returns how many map elements changed. */
  apply(delta: MapDeltaJson): number {
    let changed = 0, structural = false;
    for (const n of delta.nodes) {
      const before = this.nodes.get(n.id);
      this.nodes.set(n.id, n);
      if (!before || nodeLabel(before) !== nodeLabel(n) || String(before.backends) !== String(n.backends)) structural = true;
    }
    for (const e of delta.edges) {
      const before = this.edges.get(e.id);
      this.edges.set(e.id, e);
      // Counters alone change nothing drawn; a new edge or a new verdict does.
      if (!before || before.verdict !== e.verdict) structural = true;
      changed++;
    }
    for (const id of delta.removed) {
      if (!this.edges.delete(id)) continue;
      structural = true;
      changed++;
    }
    if (structural) {
      // A node without edges leaves the map.
      const ends = new Set<string>();
      for (const e of this.edges.values()) { ends.add(e.source); ends.add(e.destination); }
      for (const id of [...this.nodes.keys()]) if (!ends.has(id)) this.nodes.delete(id);
      this.redraw("extend", false);
    }
    return changed;
  }

  /** Shows (or, with an empty map, clears) the what-if overlay: map edge id → change. */
  setWhatIf(marks: ReadonlyMap<string, WhatIfMark>): void {
    this.whatIf = new Map(marks);
    this.paintWhatIf();
  }

  /** Drawn edge ids with each what-if halo (for the page's hooks and tests). */
  whatIfDrawn(): Record<WhatIfMark, string[]> {
    const out: Record<WhatIfMark, string[]> = { denied: [], allowed: [], verdict: [] };
    if (this.dense) return this.layer.halosDrawn();
    for (const mark of Object.keys(out) as WhatIfMark[]) out[mark] = this.cy.edges(`.whatif-${mark}`).map((e) => e.id()).sort();
    return out;
  }

  private paintWhatIf(): void {
    const markOf = new Map<string, WhatIfMark>();
    for (const [edgeId, mark] of this.whatIf) {
      for (const drawnId of this.drawnOf.get(edgeId) ?? []) {
        const before = markOf.get(drawnId);
        if (before === undefined || WHATIF_RANK[mark] > WHATIF_RANK[before]) markOf.set(drawnId, mark);
      }
    }
    this.cy.batch(() => {
      this.cy.edges(".whatif-denied, .whatif-allowed, .whatif-verdict").removeClass("whatif-denied whatif-allowed whatif-verdict");
      for (const [drawnId, mark] of markOf) this.cy.getElementById(drawnId).addClass(`whatif-${mark}`);
    });
    this.layer.setHalos(this.dense ? markOf : new Map());
    this.queueLayer();
  }

  /** "Lay out again": the whole layout from scratch, fitted. */
  relayout(): void {
    this.autoFit = true;
    this.redraw("whole", true);
  }

  private foreign(n: MapNodeJson): boolean {
    return this.namespace !== "" && n.namespace !== this.namespace;
  }

  private layerNode(n: MapNodeJson): LayerNode {
    return { id: n.id, kind: n.kind, label: nodeLabel(n), foreign: this.foreign(n) };
  }

  private backends(): Backends {
    const out = new Map<string, readonly string[]>();
    for (const n of this.nodes.values()) if (n.kind === "service" && n.backends) out.set(n.id, n.backends);
    return out;
  }

  /** Brings cytoscape in line with nodes/edges: positions from layout.ts, elements diffed by id, in one batch. */
  private redraw(mode: "whole" | "extend", fit: boolean): void {
    const nodes = [...this.nodes.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    const layoutNodes: LayoutNode[] = nodes.map((n) => ({ id: n.id, group: groupOf(n), label: nodeLabel(n) }));
    const drawn = drawEdges(nodes, [...this.edges.values()], this.backends());
    const layoutEdges = drawn.map((d) => ({ id: d.id, source: d.source, target: d.target, label: d.label }));
    const aspect = Math.max(0.5, Math.min(3, (this.cy.width() || 3) / (this.cy.height() || 2)));
    const dense = drawn.length > DENSE_EDGES;
    const options = { midArrows: dense };
    const placed = this.layoutState ? this.layoutState.positions.size + this.layoutState.groups.size : 0;
    this.layoutState = mode === "whole" || !this.layoutState
      ? layoutMap(layoutNodes, layoutEdges, aspect, options)
      : extendLayout(this.layoutState, layoutNodes, layoutEdges, options);
    const layout = this.layoutState;
    const grew = placed < layout.positions.size + layout.groups.size;
    // A dense map's nodes and edges leave cytoscape for the layer (and come back below the line).
    this.dense = dense;
    this.drawn.clear();
    this.drawnOf.clear();
    for (const d of drawn) {
      this.drawn.set(d.id, d);
      for (const m of d.members) (this.drawnOf.get(m) ?? this.drawnOf.set(m, []).get(m)!).push(d.id);
    }
    const added: ElementDefinition[] = [], addedEdges: ElementDefinition[] = [];
    let addedNodes: CollectionReturnValue | undefined;
    this.cy.batch(() => {
      const wanted = new Set<string>();
      for (const [group, g] of layout.groups) {
        const id = groupId(group);
        wanted.add(id);
        const home = this.namespace !== "" && group === this.namespace;
        const classes = home ? "namespace home" : "namespace";
        const body = groupBody(g);
        const position = { x: (body.x1 + body.x2) / 2, y: (body.y1 + body.y2) / 2 };
        const size = { width: body.x2 - body.x1, height: body.y2 - body.y1 };
        const el = this.cy.getElementById(id);
        if (el.empty()) {
          added.push({ group: "nodes", data: { id, label: group, ...size }, classes, position, selectable: false, grabbable: false });
        } else {
          if (el.classes().join(" ") !== classes) el.classes(classes);
          if (el.data("width") !== size.width || el.data("height") !== size.height) el.data(size);
          const p = el.position();
          if (p.x !== position.x || p.y !== position.y) el.position(position);
        }
      }
      for (const n of dense ? [] : nodes) {
        wanted.add(n.id);
        const classes = [n.kind, ...(this.foreign(n) ? ["foreign"] : [])].join(" ");
        const position = { ...layout.positions.get(n.id)! };
        const el = this.cy.getElementById(n.id);
        if (el.empty()) {
          added.push({ group: "nodes", data: { id: n.id, label: nodeLabel(n), group: groupId(groupOf(n)) }, classes, position });
        } else {
          if (el.data("label") !== nodeLabel(n)) el.data("label", nodeLabel(n));
          const p = el.position();
          if (p.x !== position.x || p.y !== position.y) el.position(position);
        }
      }
      for (const d of dense ? [] : drawn) {
        wanted.add(d.id);
        const label = layout.labels.has(d.id) ? d.label : "";
        const offset = layout.labelOffsets.get(d.id) ?? { x: 0, y: 0 };
        const labelled = label !== "";
        const classes = [d.verdict, ...(d.both ? ["both"] : []), ...(labelled ? ["labelled"] : [])].join(" ");
        const el = this.cy.getElementById(d.id);
        if (el.nonempty() && (el.data("source") !== d.source || el.data("target") !== d.target)) el.remove();
        const now = this.cy.getElementById(d.id);
        if (now.empty()) {
          addedEdges.push({ group: "edges", data: { id: d.id, source: d.source, target: d.target, label, fullLabel: d.fullLabel, verdict: d.verdict, dx: offset.x, dy: offset.y }, classes });
        } else {
          // Touching an element's data restyles and redraws it: only what changed.
          if (now.data("label") !== label) now.data("label", label);
          if (now.data("dx") !== offset.x || now.data("dy") !== offset.y) now.data({ dx: offset.x, dy: offset.y });
          if (now.data("fullLabel") !== d.fullLabel) now.data("fullLabel", d.fullLabel);
          if (now.data("verdict") !== d.verdict) now.data("verdict", d.verdict);
          if (!now.hasClass(d.verdict) || now.hasClass("both") !== d.both || now.hasClass("labelled") !== labelled) now.classes([classes, ...(now.hasClass("hover") ? ["hover"] : [])].join(" "));
        }
      }
      this.cy.elements().forEach((el) => { if (!wanted.has(el.id())) el.remove(); });
      if (added.length > 0) addedNodes = this.cy.add(added);
    });
    if (addedEdges.length > 0) this.addEdges(addedNodes, addedEdges);
    this.layer.set(dense ? nodes.map((n) => this.layerNode(n)) : [], dense ? drawn.map((d) => layerEdge(d, layout)) : [], layout.positions);
    this.queueLayer();
    // Classes were rewritten for changed edges: the overlay goes back on.
    if (this.whatIf.size > 0) this.paintWhatIf();
    if (fit || (grew && this.autoFit)) this.fit();
  }

  /**
   * New edges, after their new nodes have been styled. cytoscape styles an element lazily (at
   * the next frame) and, for every style property it applies to a node, clears the style cache
   * of each of the node's edges through a fresh collection of them: styled while it has no
   * edges yet, a node skips that walk (a 500-workload snapshot: ~5,700 node properties).
   */
  private addEdges(nodes: CollectionReturnValue | undefined, edges: ElementDefinition[]): void {
    nodes?.forEach((n) => { n.style("width"); });
    this.cy.batch(() => { this.cy.add(edges); });
  }

  /**
   * The whole map on the canvas, never zoomed in past MAX_FIT_ZOOM. The extent is the layout's
   * group boxes (every node, label and header lies in one; text widths there are generous),
   * not cytoscape's bounding box: cy.fit() computes every element's style, label size and edge
   * geometry first, most of a 2,000-edge map's first render.
   */
  fit(): void {
    const groups = this.layoutState?.groups;
    if (this.cy.elements().empty() || !groups || groups.size === 0) return;
    let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
    for (const { box } of groups.values()) { x1 = Math.min(x1, box.x1); y1 = Math.min(y1, box.y1); x2 = Math.max(x2, box.x2); y2 = Math.max(y2, box.y2); }
    const w = this.cy.width(), h = this.cy.height();
    if (w <= 2 * FIT_PADDING || h <= 2 * FIT_PADDING) return;
    const fitted = Math.min((w - 2 * FIT_PADDING) / Math.max(1, x2 - x1), (h - 2 * FIT_PADDING) / Math.max(1, y2 - y1));
    const zoom = Math.max(this.cy.minZoom(), Math.min(fitted, MAX_FIT_ZOOM, this.cy.maxZoom()));
    this.cy.viewport({ zoom, pan: { x: (w - zoom * (x1 + x2)) / 2, y: (h - zoom * (y1 + y2)) / 2 } });
  }
}
