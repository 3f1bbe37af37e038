// Where the map's nodes, namespace boxes and edge labels go: a pure function of the graph
// (no DOM, no cytoscape), so its promises are unit-tested (test/ui-layout.test.ts) and the
// browser test checks the same ones on what cytoscape drew.
//
// Promises: no two node boxes (shape + label) overlap; every node lies inside its group's
// box; group boxes (with their header) do not overlap; a shown edge label overlaps no node
// box, no group header and no other shown label (a label that would is left for hover and
// selection); with `midArrows` (a dense map's arrows in the edges' middles) a shown label also
// covers no edge's middle. Deterministic: the same graph gives the same picture.
//
// Method. Nodes get a rank (longest path from a client, cycles broken where the walk meets
// them), so calls flow left to right. Each group is a grid: its ranks become columns (merged
// when there are more than a square grid wants), sorted by the neighbours' rows to keep
// crossings down. Groups are packed in shelves towards the canvas' aspect ratio, in the order
// of their mean rank. Later nodes (extendLayout) take a free row at the bottom of their group;
// a group that grows pushes the groups it would cover down, whole; nothing else moves.

export interface LayoutNode {
  id: string;
  /** The group (namespace box) the node sits in. */
  group: string;
  /** The text drawn under the node. */
  label: string;
}

/** One drawn edge: parallel edges (same two nodes) are merged into one before layout. */
export interface LayoutEdge {
  id: string;
  source: string;
  target: string;
  label: string;
}

export interface Box { x1: number; y1: number; x2: number; y2: number }
export interface Point { x: number; y: number }

export interface GroupLayout {
  label: string;
  /** The whole group: the dashed box and its header above it. */
  box: Box;
}

export interface MapLayout {
  /** Node centres (the shape's centre, as cytoscape positions a node). */
  positions: Map<string, Point>;
  /** Node shape and label together. */
  nodeBoxes: Map<string, Box>;
  groups: Map<string, GroupLayout>;
  /** Shown edge labels' boxes; an edge missing here shows its label on hover/selection only. */
  labels: Map<string, Box>;
  /** Where a shown label's centre lies from the middle of its edge (cytoscape's text-margin-x/y). */
  labelOffsets: Map<string, Point>;
}

export interface LayoutOptions {
  /**
   * Edges carry their arrow in the middle (a dense map's, edge-layer.ts): no shown
   * label may cover an edge's middle, where its direction is drawn.
   */
  midArrows?: boolean;
}

/** Sizes that graph.ts's styles use: keep the two in step. */
export const METRICS = {
  nodeSize: 22,
  nodeFont: 10,
  nodeLabelMargin: 3,
  edgeFont: 9,
  groupFont: 12,
  groupPadding: 12,
  /** A generous width per character (system-ui at 1 px per font px is narrower). */
  charWidth: 0.62,
  lineHeight: 1.3,
  columnGap: 72,
  rowGap: 22,
  groupGap: 36,
} as const;

const textWidth = (text: string, font: number) => Math.ceil(text.length * font * METRICS.charWidth) + 4;
const textHeight = (font: number) => Math.ceil(font * METRICS.lineHeight) + 2;

/** A node's box around its centre: the shape, and the label under it. */
export function nodeBox(label: string, at: Point): Box {
  const w = Math.max(METRICS.nodeSize, textWidth(label, METRICS.nodeFont));
  const h = METRICS.nodeSize + METRICS.nodeLabelMargin + textHeight(METRICS.nodeFont);
  return { x1: at.x - w / 2, y1: at.y - METRICS.nodeSize / 2, x2: at.x + w / 2, y2: at.y - METRICS.nodeSize / 2 + h };
}

/** An edge label's box around its centre. */
export function edgeLabelBox(label: string, at: Point): Box {
  // + the label's background padding (1 px each side).
  const w = textWidth(label, METRICS.edgeFont) + 2, h = textHeight(METRICS.edgeFont) + 2;
  return { x1: at.x - w / 2, y1: at.y - h / 2, x2: at.x + w / 2, y2: at.y + h / 2 };
}

export const overlaps = (a: Box, b: Box): boolean => a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
export const contains = (outer: Box, inner: Box): boolean =>
  inner.x1 >= outer.x1 && inner.x2 <= outer.x2 && inner.y1 >= outer.y1 && inner.y2 <= outer.y2;

const headerHeight = () => textHeight(METRICS.groupFont) + 4;

/** The group's outer box (header + dashed box) around its nodes' boxes. */
function groupBox(label: string, boxes: Box[]): Box {
  const p = METRICS.groupPadding;
  let x1 = Infinity, y1 = Infinity, x2 = -Infinity, y2 = -Infinity;
  for (const b of boxes) { x1 = Math.min(x1, b.x1); y1 = Math.min(y1, b.y1); x2 = Math.max(x2, b.x2); y2 = Math.max(y2, b.y2); }
  const width = Math.max(x2 - x1 + 2 * p, textWidth(label, METRICS.groupFont));
  const cx = (x1 + x2) / 2;
  return { x1: cx - width / 2, y1: y1 - p - headerHeight(), x2: cx + width / 2, y2: y2 + p };
}

/** The dashed box alone (what graph.ts draws as the namespace node), without its header. */
export function groupBody(group: GroupLayout): Box {
  return { ...group.box, y1: group.box.y1 + headerHeight() };
}

/** The header label's box, above the dashed box. */
export function groupHeader(group: GroupLayout): Box {
  const w = textWidth(group.label, METRICS.groupFont), cx = (group.box.x1 + group.box.x2) / 2;
  return { x1: cx - w / 2, y1: group.box.y1, x2: cx + w / 2, y2: group.box.y1 + headerHeight() };
}

/** Longest-path rank from the clients; a cycle is cut where the walk meets a node on its stack. */
function ranks(nodes: readonly LayoutNode[], edges: readonly LayoutEdge[]): Map<string, number> {
  const out = new Map<string, string[]>();
  const indegree = new Map<string, number>();
  for (const n of nodes) { out.set(n.id, []); indegree.set(n.id, 0); }
  for (const e of edges) {
    if (e.source === e.target || !out.has(e.source) || !out.has(e.target)) continue;
    out.get(e.source)!.push(e.target);
    indegree.set(e.target, indegree.get(e.target)! + 1);
  }
  // Depth-first from the clients (no incoming edge) first, then from whatever is left (cycles):
  // the edges that close a cycle are dropped, the rest is a DAG ranked by longest path.
  const state = new Map<string, 1 | 2>();
  const order: string[] = [];
  const dag = new Map<string, string[]>();
  const starts = [...nodes.filter((n) => indegree.get(n.id) === 0), ...nodes].map((n) => n.id);
  for (const start of starts) {
    if (state.has(start)) continue;
    const stack: [string, number][] = [[start, 0]];
    state.set(start, 1);
    dag.set(start, []);
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      const next = out.get(top[0])![top[1]++];
      if (next === undefined) { state.set(top[0], 2); order.push(top[0]); stack.pop(); continue; }
      if (state.get(next) === 1) continue; // back edge: closes a cycle
      dag.get(top[0])!.push(next);
      if (!state.has(next)) { state.set(next, 1); dag.set(next, []); stack.push([next, 0]); }
    }
  }
  const rank = new Map<string, number>(nodes.map((n) => [n.id, 0]));
  for (let i = order.length - 1; i >= 0; i--) {
    const id = order[i]!;
    for (const next of dag.get(id)!) rank.set(next, Math.max(rank.get(next)!, rank.get(id)! + 1));
  }
  return rank;
}

interface Placed { id: string; label: string; column: number; row: number }

/** One group as a grid of columns, placed with its top-left content corner at (0, 0). */
function gridOfGroup(members: LayoutNode[], rank: Map<string, number>, neighbours: Map<string, string[]>): Map<string, Point> {
  const distinct = [...new Set(members.map((n) => rank.get(n.id)!))].sort((a, b) => a - b);
  // A grid about as wide as tall in pixels (node boxes are wider than tall), yet up to four
  // ranks side by side in a small group, so calls read left to right.
  const cellWidth = members.reduce((s, n) => s + nodeBox(n.label, { x: 0, y: 0 }).x2 * 2, 0) / members.length + METRICS.columnGap;
  const rowHeight0 = nodeBox("", { x: 0, y: 0 }).y2 - nodeBox("", { x: 0, y: 0 }).y1 + METRICS.rowGap;
  const square = Math.round(Math.sqrt((members.length * rowHeight0 * 1.5) / cellWidth));
  const maxColumns = Math.max(1, square, Math.min(distinct.length, 4));
  const columnOfRank = new Map(distinct.map((r, i) => [r, Math.floor((i * Math.min(maxColumns, distinct.length)) / distinct.length)]));
  const columns: LayoutNode[][] = [];
  for (const n of [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))) {
    const c = columnOfRank.get(rank.get(n.id)!)!;
    (columns[c] ??= []).push(n);
  }
  // A column taller than the grid wants wraps into the next ones.
  const maxRows = Math.max(1, Math.ceil(members.length / Math.max(1, Math.min(maxColumns, columns.length))));
  const wrapped: LayoutNode[][] = [];
  for (const column of columns) {
    if (!column) continue;
    for (let i = 0; i < column.length; i += maxRows) wrapped.push(column.slice(i, i + maxRows));
  }
  // One barycentre pass: a node goes near the rows of its neighbours in earlier columns.
  const rowOf = new Map<string, number>();
  for (const column of wrapped) {
    const key = (n: LayoutNode) => {
      const rows = (neighbours.get(n.id) ?? []).map((m) => rowOf.get(m)).filter((r): r is number => r !== undefined);
      return rows.length === 0 ? Infinity : rows.reduce((a, b) => a + b, 0) / rows.length;
    };
    const keyed = column.map((n) => ({ n, k: key(n) }));
    keyed.sort((a, b) => (a.k === b.k ? 0 : a.k < b.k ? -1 : 1));
    keyed.forEach(({ n }, i) => { rowOf.set(n.id, i); column[i] = n; });
  }
  const placed: Placed[] = wrapped.flatMap((column, c) => column.map((n, r) => ({ id: n.id, label: n.label, column: c, row: r })));
  const widths = wrapped.map((column) => Math.max(...column.map((n) => nodeBox(n.label, { x: 0, y: 0 }).x2 * 2)));
  const rowHeight = nodeBox("", { x: 0, y: 0 }).y2 - nodeBox("", { x: 0, y: 0 }).y1 + METRICS.rowGap;
  const left: number[] = [];
  let x = 0;
  for (const w of widths) { left.push(x); x += w + METRICS.columnGap; }
  const positions = new Map<string, Point>();
  for (const p of placed) positions.set(p.id, { x: left[p.column]! + widths[p.column]! / 2, y: METRICS.nodeSize / 2 + p.row * rowHeight });
  return positions;
}

function neighboursOf(edges: readonly LayoutEdge[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of edges) {
    (out.get(e.source) ?? out.set(e.source, []).get(e.source)!).push(e.target);
    (out.get(e.target) ?? out.set(e.target, []).get(e.target)!).push(e.source);
  }
  return out;
}

function translate(b: Box, dx: number, dy: number): Box {
  return { x1: b.x1 + dx, y1: b.y1 + dy, x2: b.x2 + dx, y2: b.y2 + dy };
}

/** Lays the whole graph out. `aspect` is the canvas' width / height. */
export function layoutMap(nodes: readonly LayoutNode[], edges: readonly LayoutEdge[], aspect = 1.5, options: LayoutOptions = {}): MapLayout {
  checkGraph(nodes, edges);
  const rank = ranks(nodes, edges);
  const neighbours = neighboursOf(edges);
  const byGroup = new Map<string, LayoutNode[]>();
  for (const n of nodes) (byGroup.get(n.group) ?? byGroup.set(n.group, []).get(n.group)!).push(n);
  // Each group laid out alone, at the origin; then packed.
  const local = [...byGroup].map(([group, members]) => {
    const positions = gridOfGroup(members, rank, neighbours);
    const box = groupBox(group, members.map((n) => nodeBox(n.label, positions.get(n.id)!)));
    const meanRank = members.reduce((s, n) => s + rank.get(n.id)!, 0) / members.length;
    return { group, members, positions, box, meanRank };
  });
  local.sort((a, b) => a.meanRank - b.meanRank || (a.group < b.group ? -1 : 1));
  const area = local.reduce((s, g) => s + (g.box.x2 - g.box.x1 + METRICS.groupGap) * (g.box.y2 - g.box.y1 + METRICS.groupGap), 0);
  const widest = Math.max(0, ...local.map((g) => g.box.x2 - g.box.x1));
  const shelfWidth = Math.max(widest, Math.sqrt(area * aspect));
  const layout: MapLayout = { positions: new Map(), nodeBoxes: new Map(), groups: new Map(), labels: new Map(), labelOffsets: new Map() };
  let x = 0, y = 0, shelfHeight = 0;
  for (const g of local) {
    const w = g.box.x2 - g.box.x1, h = g.box.y2 - g.box.y1;
    if (x > 0 && x + w > shelfWidth) { x = 0; y += shelfHeight + METRICS.groupGap; shelfHeight = 0; }
    const dx = x - g.box.x1, dy = y - g.box.y1;
    for (const n of g.members) {
      const p = g.positions.get(n.id)!;
      const at = { x: p.x + dx, y: p.y + dy };
      layout.positions.set(n.id, at);
      layout.nodeBoxes.set(n.id, nodeBox(n.label, at));
    }
    layout.groups.set(g.group, { label: g.group, box: translate(g.box, dx, dy) });
    x += w + METRICS.groupGap;
    shelfHeight = Math.max(shelfHeight, h);
  }
  placeLabels(layout, edges, options);
  return layout;
}

/**
 * Adds nodes that the previous layout lacks without moving the ones it has: a new node takes
 * a free row at the bottom of its group (a new group goes below everything); a group that
 * grows over another pushes that one down, whole. Edge labels are placed again.
 */
export function extendLayout(previous: MapLayout, nodes: readonly LayoutNode[], edges: readonly LayoutEdge[], options: LayoutOptions = {}): MapLayout {
  checkGraph(nodes, edges);
  const layout: MapLayout = { positions: new Map(), nodeBoxes: new Map(), groups: new Map(), labels: new Map(), labelOffsets: new Map() };
  const byGroup = new Map<string, LayoutNode[]>();
  for (const n of nodes) (byGroup.get(n.group) ?? byGroup.set(n.group, []).get(n.group)!).push(n);
  const rowHeight = nodeBox("", { x: 0, y: 0 }).y2 - nodeBox("", { x: 0, y: 0 }).y1 + METRICS.rowGap;
  let bottom = 0, left = Infinity;
  for (const g of previous.groups.values()) { bottom = Math.max(bottom, g.box.y2); left = Math.min(left, g.box.x1); }
  if (left === Infinity) left = 0;
  const order: string[] = [];
  for (const [group, members] of byGroup) {
    const kept = members.filter((n) => previous.positions.has(n.id));
    const fresh = members.filter((n) => !previous.positions.has(n.id));
    const boxes: Box[] = [];
    for (const n of kept) {
      const at = previous.positions.get(n.id)!;
      layout.positions.set(n.id, at);
      boxes.push(nodeBox(n.label, at));
    }
    if (fresh.length > 0) {
      // A row below what the group holds, from its left edge, as wide as the group is (at least one node).
      const inner = kept.length > 0 ? groupBox(group, boxes) : undefined;
      const x0 = inner ? inner.x1 + METRICS.groupPadding : left;
      const width = inner ? inner.x2 - inner.x1 - 2 * METRICS.groupPadding : 0;
      let y = inner ? inner.y2 - METRICS.groupPadding + METRICS.rowGap + METRICS.nodeSize / 2 : bottom + METRICS.groupGap + headerHeight() + METRICS.groupPadding + METRICS.nodeSize / 2;
      let x = x0;
      for (const n of fresh) {
        const w = nodeBox(n.label, { x: 0, y: 0 }).x2 * 2;
        if (x > x0 && x + w > x0 + width) { x = x0; y += rowHeight; }
        const at = { x: x + w / 2, y };
        layout.positions.set(n.id, at);
        boxes.push(nodeBox(n.label, at));
        x += w + METRICS.columnGap;
      }
      if (!inner) bottom = Math.max(bottom, y + rowHeight);
    }
    if (boxes.length === 0) continue;
    layout.groups.set(group, { label: group, box: groupBox(group, boxes) });
    order.push(group);
  }
  // Groups that now overlap: the later one (by top, then left) moves down below the other, whole.
  order.sort((a, b) => layout.groups.get(a)!.box.y1 - layout.groups.get(b)!.box.y1 || layout.groups.get(a)!.box.x1 - layout.groups.get(b)!.box.x1);
  for (let i = 0; i < order.length; i++) {
    const g = layout.groups.get(order[i]!)!;
    for (let moved = true; moved;) {
      moved = false;
      for (let j = 0; j < i; j++) {
        const other = layout.groups.get(order[j]!)!.box;
        if (!overlaps(g.box, other)) continue;
        const dy = other.y2 + METRICS.groupGap - g.box.y1;
        g.box = translate(g.box, 0, dy);
        for (const n of byGroup.get(order[i]!)!) { const p = layout.positions.get(n.id)!; layout.positions.set(n.id, { x: p.x, y: p.y + dy }); }
        moved = true;
      }
    }
  }
  for (const n of nodes) layout.nodeBoxes.set(n.id, nodeBox(n.label, layout.positions.get(n.id)!));
  placeLabels(layout, edges, options);
  return layout;
}

const LABEL_MARGIN = 3;
const LABEL_SPOTS: readonly (readonly [number, number])[] = [[0.5, 0], [0.4, 0], [0.6, 0], [0.3, 0], [0.7, 0], [0.5, 9], [0.5, -9], [0.4, 9], [0.6, -9]];
/** With the arrow in the middle: beside it first (far enough to clear it), then further along the edge. */
const MID_ARROW_LABEL_SPOTS: readonly (readonly [number, number])[] = [[0.5, 18], [0.5, -18], [0.3, 0], [0.7, 0], [0.25, 0], [0.75, 0], [0.35, 9], [0.65, -9], [0.2, 0], [0.8, 0]];

/** Half the side of the box kept clear around a middle arrow (arrow-scale 0.8 at the widest edge, with room). */
const MID_ARROW_HALF = 6;

/** Shows an edge's label on the edge (its middle if it can) when it covers no node, header, middle arrow or shown label. */
function placeLabels(layout: MapLayout, edges: readonly LayoutEdge[], options: LayoutOptions): void {
  const CELL = 64;
  const grid = new Map<string, Box[]>();
  const cells = (b: Box): string[] => {
    const out: string[] = [];
    for (let cx = Math.floor(b.x1 / CELL); cx <= Math.floor(b.x2 / CELL); cx++) {
      for (let cy = Math.floor(b.y1 / CELL); cy <= Math.floor(b.y2 / CELL); cy++) out.push(`${cx},${cy}`);
    }
    return out;
  };
  const insert = (b: Box) => { for (const c of cells(b)) (grid.get(c) ?? grid.set(c, []).get(c)!).push(b); };
  const free = (b: Box) => cells(b).every((c) => !(grid.get(c) ?? []).some((o) => overlaps(o, b)));
  for (const b of layout.nodeBoxes.values()) insert(b);
  for (const g of layout.groups.values()) insert(groupHeader(g));
  if (options.midArrows) {
    for (const e of edges) {
      if (e.source === e.target) continue;
      const a = layout.positions.get(e.source)!, b = layout.positions.get(e.target)!;
      const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
      insert({ x1: mx - MID_ARROW_HALF, y1: my - MID_ARROW_HALF, x2: mx + MID_ARROW_HALF, y2: my + MID_ARROW_HALF });
    }
  }
  // Short edges first: their middles are the most crowded.
  const length = (e: LayoutEdge) => {
    const a = layout.positions.get(e.source)!, b = layout.positions.get(e.target)!;
    return Math.hypot(a.x - b.x, a.y - b.y);
  };
  for (const e of [...edges].sort((a, b) => length(a) - length(b) || (a.id < b.id ? -1 : 1))) {
    if (e.label === "" || e.source === e.target) continue;
    const a = layout.positions.get(e.source)!, b = layout.positions.get(e.target)!;
    const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    // The middle first, then along the edge, then a little off it on either side.
    for (const [t, side] of options.midArrows ? MID_ARROW_LABEL_SPOTS : LABEL_SPOTS) {
      const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
      const at = { x: a.x + (b.x - a.x) * t - ((b.y - a.y) / len) * side, y: a.y + (b.y - a.y) * t + ((b.x - a.x) / len) * side };
      const box = edgeLabelBox(e.label, at);
      // A margin: cytoscape puts the label at the middle of the drawn line, which the arrow
      // head shortens at the target end, a few pixels from the middle of the two centres.
      if (!free({ x1: box.x1 - LABEL_MARGIN, y1: box.y1 - LABEL_MARGIN, x2: box.x2 + LABEL_MARGIN, y2: box.y2 + LABEL_MARGIN })) continue;
      layout.labels.set(e.id, box);
      layout.labelOffsets.set(e.id, { x: at.x - mid.x, y: at.y - mid.y });
      insert(box);
      break;
    }
  }
}

/**
 * Edges drawn across a node's shape that is not one of their ends ("edge × node"): edges are
 * straight lines between centres and are not routed around nodes yet, so this measures what
 * the layout does not promise (issue 16). For tests and reports; not used to draw.
 */
export function edgesOverNodes(layout: MapLayout, edges: readonly LayoutEdge[]): string[] {
  const half = METRICS.nodeSize / 2;
  const out: string[] = [];
  for (const e of edges) {
    const a = layout.positions.get(e.source), b = layout.positions.get(e.target);
    if (!a || !b || e.source === e.target) continue;
    for (const [id, c] of layout.positions) {
      if (id === e.source || id === e.target) continue;
      if (segmentHitsBox(a, b, { x1: c.x - half, y1: c.y - half, x2: c.x + half, y2: c.y + half })) out.push(`${e.id} × ${id}`);
    }
  }
  return out;
}

/** Whether the segment a–b passes through the box's inside (Liang–Barsky clipping). */
function segmentHitsBox(a: Point, b: Point, box: Box): boolean {
  let t0 = 0, t1 = 1;
  const dx = b.x - a.x, dy = b.y - a.y;
  for (const [p, q] of [[-dx, a.x - box.x1], [dx, box.x2 - a.x], [-dy, a.y - box.y1], [dy, box.y2 - a.y]] as const) {
    if (p === 0) { if (q <= 0) return false; continue; }
    const t = q / p;
    if (p < 0) t0 = Math.max(t0, t); else t1 = Math.min(t1, t);
    if (t0 >= t1) return false;
  }
  return true;
}

function checkGraph(nodes: readonly LayoutNode[], edges: readonly LayoutEdge[]): void {
  const ids = new Set<string>();
  for (const n of nodes) {
    if (ids.has(n.id)) throw new Error(`layout: node ${n.id} is listed twice`);
    ids.add(n.id);
  }
  for (const e of edges) {
    if (!ids.has(e.source)) throw new Error(`layout: edge ${e.id} starts at ${e.source}, which is not a node`);
    if (!ids.has(e.target)) throw new Error(`layout: edge ${e.id} ends at ${e.target}, which is not a node`);
  }
}
