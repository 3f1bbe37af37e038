// The map drawn with cytoscape: workloads, Services, world and host peers as nodes (peers
// of other namespaces inside a compound parent per namespace), directed edges coloured by
// verdict. A snapshot lays the graph out with fcose once; deltas are applied in one batch
// without a new layout: new nodes appear next to a neighbour, known nodes keep their place.
import cytoscape, { type Core, type ElementDefinition, type NodeSingular } from "cytoscape";
import fcose from "cytoscape-fcose";
import type { MapDeltaJson, MapEdgeJson, MapJson, MapNodeJson } from "./types.js";

cytoscape.use(fcose);

export type Selection = { kind: "node"; node: MapNodeJson } | { kind: "edge"; edge: MapEdgeJson } | undefined;

const COLOURS = { forwarded: "#2e7d32", dropped: "#c62828", audit: "#ef8f00" } as const;

function nodeLabel(n: MapNodeJson): string {
  if (n.kind === "workload") return `${n.name} (${n.pods} pod${n.pods === 1 ? "" : "s"})`;
  if (n.kind === "service") return `svc ${n.name}`;
  if (n.kind === "host") return `host ${n.name}`;
  return n.name;
}

const parentId = (namespace: string) => `namespace:${namespace}`;

const BIG_MAP_EDGES = 500;

export class MapView {
  readonly cy: Core;
  private namespace = "";
  private onSelect: (s: Selection) => void = () => undefined;
  readonly nodes = new Map<string, MapNodeJson>();
  readonly edges = new Map<string, MapEdgeJson>();
  private edgeStyle: "bezier" | "straight" = "bezier";

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
      style: [
        { selector: "node", style: {
          label: "data(label)", "font-size": 10, "text-valign": "bottom", "text-margin-y": 3, "min-zoomed-font-size": 7,
          width: 22, height: 22, "background-color": "#1565c0", color: "#222", "border-width": 1, "border-color": "#fff",
        } },
        { selector: "node.service", style: { shape: "round-rectangle", "background-color": "#6a1b9a" } },
        { selector: "node.world", style: { shape: "diamond", "background-color": "#546e7a" } },
        { selector: "node.host", style: { shape: "rectangle", "background-color": "#795548" } },
        { selector: "node.unknown", style: { shape: "hexagon", "background-color": "#9e9e9e" } },
        { selector: "node.foreign", style: { opacity: 0.75 } },
        { selector: ":parent", style: {
          "background-opacity": 0.05, "background-color": "#455a64", "border-color": "#90a4ae", "border-style": "dashed",
          label: "data(label)", "text-valign": "top", "font-size": 12, "font-weight": "bold", shape: "round-rectangle",
        } },
        { selector: "edge", style: {
          width: 1.5, "curve-style": "bezier", "target-arrow-shape": "triangle", "arrow-scale": 0.8,
          "line-color": COLOURS.forwarded, "target-arrow-color": COLOURS.forwarded,
          label: "data(label)", "font-size": 8, "min-zoomed-font-size": 9, "text-rotation": "autorotate", color: "#333",
          "text-background-color": "#fff", "text-background-opacity": 0.8, "text-background-padding": "1px",
        } },
        { selector: "edge.dropped", style: { "line-color": COLOURS.dropped, "target-arrow-color": COLOURS.dropped, width: 2.5 } },
        { selector: "edge.audit", style: { "line-color": COLOURS.audit, "target-arrow-color": COLOURS.audit, "line-style": "dashed", width: 2 } },
        { selector: ":selected", style: { "border-width": 3, "border-color": "#ffb300", "overlay-opacity": 0.15, "overlay-color": "#ffb300" } },
        { selector: "edge:selected", style: { width: 4 } },
      ],
    });
    this.cy.on("tap", "node, edge", (event) => {
      const id = event.target.id() as string;
      if (event.target.isParent?.()) return;
      this.emit(id);
    });
    this.cy.on("tap", (event) => { if (event.target === this.cy) this.onSelect(undefined); });
  }

  setOnSelect(handler: (s: Selection) => void): void {
    this.onSelect = handler;
  }

  /** Selects a node or edge by id, as a click would; returns whether it exists. */
  select(id: string): boolean {
    const element = this.cy.getElementById(id);
    if (element.empty()) return false;
    this.cy.elements().unselect();
    element.select();
    this.emit(id);
    return true;
  }

  private emit(id: string): void {
    const node = this.nodes.get(id);
    if (node) { this.onSelect({ kind: "node", node }); return; }
    const edge = this.edges.get(id);
    if (edge) this.onSelect({ kind: "edge", edge });
  }

  /** Replaces the whole map; lays it out unless every node already has a place. */
  snapshot(map: MapJson, layout = true): void {
    const positions = new Map<string, { x: number; y: number }>();
    this.cy.nodes().forEach((n) => { if (!n.isParent()) positions.set(n.id(), { ...n.position() }); });
    this.namespace = map.namespace;
    this.nodes.clear();
    this.edges.clear();
    const elements: ElementDefinition[] = [];
    const parents = new Set<string>();
    for (const n of map.nodes) {
      this.nodes.set(n.id, n);
      const def = this.nodeDefinition(n, parents, elements);
      const p = positions.get(n.id);
      if (p) def.position = p;
      elements.push(def);
    }
    for (const e of map.edges) {
      this.edges.set(e.id, e);
      elements.push(this.edgeDefinition(e));
    }
    const missing = map.nodes.some((n) => !positions.has(n.id));
    this.cy.batch(() => {
      this.cy.elements().remove();
      this.cy.add(elements);
    });
    this.fitEdgeStyleToSize();
    if (layout && missing) this.layout();
  }

  /** Applies a delta in one batch; returns how many elements changed. */
  apply(delta: MapDeltaJson): number {
    let changed = 0;
    this.cy.batch(() => {
      const parents = new Set<string>();
      const added: ElementDefinition[] = [];
      for (const n of delta.nodes) {
        const before = this.nodes.get(n.id);
        this.nodes.set(n.id, n);
        if (before) {
          // Touching an element's data restyles and redraws it: only when its text changes.
          if (nodeLabel(before) !== nodeLabel(n)) this.cy.getElementById(n.id).data("label", nodeLabel(n));
        } else {
          added.push(this.nodeDefinition(n, parents, added));
        }
      }
      for (const e of delta.edges) {
        const before = this.edges.get(e.id);
        this.edges.set(e.id, e);
        if (before) {
          // The id fixes ends, protocol and port (the label): only the verdict can restyle it.
          if (before.verdict !== e.verdict) this.cy.getElementById(e.id).data("verdict", e.verdict).classes(e.verdict);
        } else {
          added.push(this.edgeDefinition(e));
        }
        changed++;
      }
      if (added.length > 0) {
        const collection = this.cy.add(added);
        collection.nodes().forEach((n) => { if (!n.isParent()) this.placeNearNeighbour(n, delta); });
      }
      for (const id of delta.removed) {
        if (!this.edges.delete(id)) continue;
        const edge = this.cy.getElementById(id);
        const ends = edge.connectedNodes();
        edge.remove();
        changed++;
        ends.forEach((n) => {
          if (n.connectedEdges().empty()) {
            this.nodes.delete(n.id());
            const parent = n.parent();
            n.remove();
            if (parent.nonempty() && parent.children().empty()) parent.remove();
          }
        });
      }
    });
    if (changed > 0) this.fitEdgeStyleToSize();
    return changed;
  }

  /** Bezier edges keep parallel edges (two ports between the same pair) apart, but cost
   * most of a redraw on big maps: past BIG_MAP_EDGES edges they are drawn straight. */
  private fitEdgeStyleToSize(): void {
    const style = this.edges.size > BIG_MAP_EDGES ? "straight" : "bezier";
    if (this.edgeStyle === style) return;
    this.edgeStyle = style;
    this.cy.style().selector("edge").style("curve-style", style).update();
  }

  /** A new node goes next to a neighbour already placed (or the centre), so nothing else moves. */
  private placeNearNeighbour(node: NodeSingular, delta: MapDeltaJson): void {
    const id = node.id();
    const edge = delta.edges.find((e) => e.source === id || e.destination === id);
    const other = edge ? this.cy.getElementById(edge.source === id ? edge.destination : edge.source) : undefined;
    const anchor = other && other.nonempty() && other.id() !== id ? other.position() : { x: this.cy.width() / 2, y: this.cy.height() / 2 };
    const angle = Math.random() * 2 * Math.PI;
    node.position({ x: anchor.x + 60 * Math.cos(angle), y: anchor.y + 60 * Math.sin(angle) });
  }

  layout(): void {
    const big = this.cy.nodes().length > 200;
    this.cy.layout({
      name: "fcose",
      animate: false,
      randomize: true,
      quality: big ? "draft" : "default",
      numIter: big ? 600 : 2500,
      nodeRepulsion: () => 8000,
      idealEdgeLength: () => 80,
      nodeDimensionsIncludeLabels: false,
      fit: true,
      padding: 20,
    } as cytoscape.LayoutOptions).run();
  }

  private nodeDefinition(n: MapNodeJson, parents: Set<string>, out: ElementDefinition[]): ElementDefinition {
    const classes: string[] = [n.kind];
    let parent: string | undefined;
    // Namespaces group their nodes: in the all-namespaces view every namespace; in one
    // namespace's view only the peers from other namespaces.
    if (n.namespace !== "" && (this.namespace === "" || n.namespace !== this.namespace)) {
      parent = parentId(n.namespace);
      if (!parents.has(parent) && this.cy.getElementById(parent).empty()) {
        out.push({ group: "nodes", data: { id: parent, label: n.namespace }, classes: "namespace" });
      }
      parents.add(parent);
    }
    if (this.namespace !== "" && n.namespace !== this.namespace) classes.push("foreign");
    return { group: "nodes", data: { id: n.id, label: nodeLabel(n), ...(parent ? { parent } : {}) }, classes: classes.join(" ") };
  }

  private edgeDefinition(e: MapEdgeJson): ElementDefinition {
    return {
      group: "edges",
      data: { id: e.id, source: e.source, target: e.destination, label: `${e.protocol}/${e.port}`, verdict: e.verdict },
      classes: e.verdict,
    };
  }
}
