// The page's test and benchmark hooks (window.bulkheadMap): read-only views of what is
// drawn. Declared here alone so that main.ts and the browser tests share one type.
import type { Core } from "cytoscape";
import type { MapEdgeJson, MapNodeJson } from "./types.js";

export interface MapHooks {
  readonly version: number;
  readonly deltas: number;
  nodes(): MapNodeJson[];
  edges(): MapEdgeJson[];
  select(id: string): boolean;
  /** The cytoscape edge ids that draw a map edge (one; two for a call through a Service: client → Service, Service → backend). */
  drawnEdgesOf(id: string): string[];
  cy: Core;
}

declare global {
  interface Window {
    bulkheadMap: MapHooks;
  }
}
