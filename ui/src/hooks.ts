// The page's test and benchmark hooks (window.bulkheadMap): read-only views of what is
// drawn. Declared here alone so that main.ts and the browser tests share one type.
import type { Core } from "cytoscape";
import type { LayerView } from "./graph.js";
import type { TimeView } from "./timerange.js";
import type { MapEdgeJson, MapNodeJson, WhatIfJson } from "./types.js";

export interface MapHooks {
  readonly version: number;
  readonly deltas: number;
  nodes(): MapNodeJson[];
  edges(): MapEdgeJson[];
  select(id: string): boolean;
  /** The drawn edge ids that draw a map edge (one; two for a call through a Service: client → Service, Service → backend). */
  drawnEdgesOf(id: string): string[];
  /** The selected node or drawn edge ids (cytoscape's selection and the map layer's). */
  selected(): string[];
  /**
   * A dense map as map-layer.ts draws it (cytoscape then holds only the namespace boxes): its
   * nodes with their group, centre and box (shape and label); its edges, each with the text it
   * shows now; every shown edge label's box; in model coordinates. Undefined while cytoscape
   * draws the map.
   */
  layer(): LayerView | undefined;
  cy: Core;
  /** What the page shows: a live window, a past window, or a from/to range. */
  readonly time: TimeView;
  /** Drawn edge ids with each what-if halo. */
  whatIfDrawn(): { denied: string[]; allowed: string[]; verdict: string[] };
  /** The what-if answer shown, if any. */
  readonly whatIf: WhatIfJson | undefined;
}

declare global {
  interface Window {
    bulkheadMap: MapHooks;
  }
}
