// Issue 16, items 1 and 2, in Debian's Chromium without a lab: a real ControlPlane in this
// process (generated manifests, records fed through cp.ingest) serving the built UI. The map
// is measured through what draws it (harness/map-metrics.ts: cytoscape's own positions and
// boxes, or the map layer's) at
// 1500×1000 and 1280×720: 0 overlapping nodes, 0 nodes outside their group or inside a
// foreign one, 0 overlapping groups, 0 label collisions, no parallel edges, all on the canvas,
// for a 3-node map (straight edges, arrows at the ends) and for 200 workloads / 800 edges
// (seeded; a dense map: its nodes and edges drawn by the page's map layer, ui/src/map-layer.ts,
// arrows in the middle, read back from the layer's canvas, hovered, clicked and dragged through it). Namespace
// boxes (plain nodes sized by the layout) are drawn under everything and let clicks through. The flow table at 1280 px:
// verdict words whole, pod names without their template hash (full name in the title), no
// column wider than the table. Screenshots go to test-results/ui-e2e/.
//   npx vitest run test/ui-map-browser.test.ts
import path from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { ControlPlane } from "../controlplane/controlplane.js";
import { type FlowRecord, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { launchChromium, type LaunchedBrowser } from "./harness/browser.js";
import { layoutFaults, mapMetrics, NO_LAYOUT_FAULTS } from "./harness/map-metrics.js";
import { seededRandom } from "./harness/seeded-random.js";
import { agentRecord } from "./harness/flow-records.js";
import { closeUiTest, SHOTS, startUiControlPlane, uiTestFolder } from "./harness/ui-control-plane.js";
import { DENSE_EDGES } from "../ui/src/graph.js";
import { METRICS } from "../ui/src/layout.js";

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const VIEWPORTS = [{ width: 1500, height: 1000 }, { width: 1280, height: 720 }] as const;
const BIG_WORKLOADS = 200, BIG_EDGES = 800, BIG_NAMESPACES = 8;

// The 3-node map: namespace tiny, web (a Deployment's pod, with its template hash) → db, web → the world.
const WEB_POD = "web-7d9f8b6c5d-x2k4p", DB_POD = "db-0";
const WEB_IP = "10.70.0.2", DB_IP = "10.70.0.3", OUTSIDE_IP = "203.0.113.7";
const bigIp = (i: number) => `10.71.${Math.floor(i / 250)}.${(i % 250) + 2}`;

function manifests(): string {
  const docs = [
    "apiVersion: v1\nkind: Node\nmetadata: { name: node1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.77.1 }] }",
    "apiVersion: v1\nkind: Namespace\nmetadata: { name: tiny }",
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${WEB_POD}, namespace: tiny, uid: uid-web, labels: { app: web, pod-template-hash: 7d9f8b6c5d }, creationTimestamp: "2024-01-01T00:00:00Z",
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8b6c5d, uid: uid-rs-web, controller: true }] }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${WEB_IP} }`,
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${DB_POD}, namespace: tiny, uid: uid-db, labels: { app: db }, creationTimestamp: "2024-01-01T00:00:00Z" }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${DB_IP} }`,
  ];
  for (let n = 0; n < BIG_NAMESPACES; n++) docs.push(`apiVersion: v1\nkind: Namespace\nmetadata: { name: team-${n} }`);
  for (let i = 0; i < BIG_WORKLOADS; i++) {
    docs.push(`apiVersion: v1\nkind: Pod\nmetadata: { name: service-${i}-0, namespace: team-${i % BIG_NAMESPACES}, uid: uid-big-${i}, labels: { app: s${i} }, creationTimestamp: "2024-01-01T00:00:00Z" }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${bigIp(i)} }`);
  }
  return docs.join("\n---\n") + "\n";
}

/** A node of Chrome's accessibility tree (CDP Accessibility.getFullAXTree), as far as the test reads it. */
interface AxNode { nodeId: string; role?: { value: string }; name?: { value: string }; childIds?: string[] }

/** A connection's record as an agent sends it, each on its own source port. */
const record = (src: string, dst: string, port: number, verdict = Verdict.VERDICT_FORWARDED): FlowRecord =>
  agentRecord(src, dst, port, { verdict, packets: 3, sport: "vary" });

/** 800 distinct edges between the 200 workloads (seeded): about 5 % dropped, 5 % audit. */
function bigEdges(): { a: number; b: number; port: number; verdict: Verdict }[] {
  const random = seededRandom(16);
  const seen = new Set<string>();
  const out: { a: number; b: number; port: number; verdict: Verdict }[] = [];
  while (out.length < BIG_EDGES) {
    const a = Math.floor(random() * BIG_WORKLOADS), b = Math.floor(random() * BIG_WORKLOADS), port = 8000 + Math.floor(random() * 3);
    if (a === b || seen.has(`${a}>${b}:${port}`)) continue;
    seen.add(`${a}>${b}:${port}`);
    const r = random();
    out.push({ a, b, port, verdict: r < 0.05 ? Verdict.VERDICT_DROPPED : r < 0.1 ? Verdict.VERDICT_AUDIT : Verdict.VERDICT_FORWARDED });
  }
  return out;
}

const bigRecords = (): FlowRecord[] => bigEdges().map((e) => record(bigIp(e.a), bigIp(e.b), e.port, e.verdict));

type Pt = { x: number; y: number };
type Box = { x1: number; y1: number; x2: number; y2: number };

/** A dense map as drawn, in the canvas' pixels: the map layer's edges, node centres and boxes (shape and label), shown edge labels' boxes. */
interface DrawnMap {
  edges: { id: string; source: string; target: string; both: boolean; text: string; verdict: string }[];
  centres: Record<string, Pt>;
  nodeBoxes: Record<string, Box>;
  labelBoxes: Box[];
  zoom: number;
}

function drawnMap(page: Page): Promise<DrawnMap> {
  return page.evaluate(() => {
    const cy = window.bulkheadMap.cy, layer = window.bulkheadMap.layer()!, zoom = cy.zoom(), pan = cy.pan();
    const verdicts = new Map(window.bulkheadMap.edges().flatMap((e) => window.bulkheadMap.drawnEdgesOf(e.id).map((d) => [d, e.verdict] as const)));
    const rendered = ({ x1, y1, x2, y2 }: Box) => ({ x1: x1 * zoom + pan.x, y1: y1 * zoom + pan.y, x2: x2 * zoom + pan.x, y2: y2 * zoom + pan.y });
    return {
      edges: layer.edges.map((e) => ({ ...e, verdict: verdicts.get(e.id) ?? "" })),
      centres: Object.fromEntries(layer.nodes.map((n) => [n.id, { x: n.centre.x * zoom + pan.x, y: n.centre.y * zoom + pan.y }])),
      nodeBoxes: Object.fromEntries(layer.nodes.map((n) => [n.id, rendered(n.box)])),
      labelBoxes: layer.labels.map(({ box }) => rendered(box)),
      zoom,
    };
  });
}

function segmentDistance(p: Pt, a: Pt, b: Pt): number {
  const dx = b.x - a.x, dy = b.y - a.y, l = dx * dx + dy * dy;
  const t = l === 0 ? 0 : Math.max(0, Math.min(1, ((p.x - a.x) * dx + (p.y - a.y) * dy) / l));
  return Math.hypot(p.x - a.x - t * dx, p.y - a.y - t * dy);
}

/**
 * Whether `p` belongs to edge `id` alone: no other edge within `gap` px (their ends at
 * `centres`) and no box within 4 px, so that a pixel or the pointer there can only be that edge's.
 */
function clearOf(p: Pt, id: string, map: DrawnMap, gap: number, centres: Record<string, Pt>, boxes: Box[]): boolean {
  if (map.edges.some((o) => o.id !== id && segmentDistance(p, centres[o.source]!, centres[o.target]!) < gap)) return false;
  return !boxes.some((b) => p.x > b.x1 - 4 && p.x < b.x2 + 4 && p.y > b.y1 - 4 && p.y < b.y2 + 4);
}

/** The point `t` of the way from a to b, on the pixel grid. */
const along = (a: Pt, b: Pt, t: number): Pt => ({ x: Math.round(a.x + (b.x - a.x) * t), y: Math.round(a.y + (b.y - a.y) * t) });

describe("the map's layout and the flow table, measured in Chromium", () => {
  let tmp: string;
  let cp: ControlPlane;
  let browser: LaunchedBrowser | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    tmp = uiTestFolder("ui-map", manifests());
    cp = await startUiControlPlane(tmp, { storeCapacity: 100_000 });
    cp.ingest("node1", [
      record(WEB_IP, DB_IP, 5432), record(WEB_IP, DB_IP, 5432, Verdict.VERDICT_DROPPED), record(WEB_IP, OUTSIDE_IP, 443, Verdict.VERDICT_AUDIT),
      ...bigRecords(),
    ]);
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  });

  afterAll(() => closeUiTest({ browser, cp, tmp }));

  /**
   * Opens the map at a viewport and waits for its snapshot: the stream is live and the page
   * holds `edges` map edges. Every record was ingested before, so the snapshot holds them
   * all; the layout and fit run in the same task as the snapshot, before the hook counts.
   */
  async function open(query: string, viewport: { width: number; height: number }, edges: number): Promise<void> {
    await page.setViewportSize(viewport);
    await page.goto(`${cp.ui!.url}?${query}`);
    await page.locator("[data-testid=connection-state][data-state=live]").waitFor({ timeout: 20_000 });
    await page.waitForFunction((n) => window.bulkheadMap.edges().length >= n, edges, { timeout: 30_000 });
  }

  /** The distinct curve and arrow shapes cytoscape gives the drawn edges. */
  function edgeShapes(): Promise<{ curve: string; arrow: string; midArrow: string }[]> {
    return page.evaluate(() => {
      const seen = new Map<string, { curve: string; arrow: string; midArrow: string }>();
      window.bulkheadMap.cy.edges().forEach((e) => {
        const shape = { curve: String(e.style("curve-style")), arrow: String(e.style("target-arrow-shape")), midArrow: String(e.style("mid-target-arrow-shape")) };
        seen.set(JSON.stringify(shape), shape);
      });
      return [...seen.values()];
    });
  }

  it("3 nodes: no overlaps, each node in its group, labels clear, not zoomed past 1.25, all on the canvas", async () => {
    for (const viewport of VIEWPORTS) {
      await open("namespace=tiny", viewport, 2);
      const m = await mapMetrics(page);
      expect([m.nodes, m.edges, m.groups]).toEqual([3, 2, 2]);
      expect(layoutFaults(m)).toEqual(NO_LAYOUT_FAULTS);
      expect(m.labelsShown).toBe(2);
      expect(await edgeShapes()).toEqual([{ curve: "straight", arrow: "triangle", midArrow: "none" }]);
      expect(m.zoom).toBeLessThanOrEqual(1.25);
      await page.screenshot({ path: path.join(SHOTS, `map-3-nodes-${viewport.width}x${viewport.height}.png`) });
    }
  });

  it(`${BIG_WORKLOADS} workloads / ${BIG_EDGES} edges: no overlaps, each node in its group, no label collisions, all on the canvas`, async () => {
    for (const viewport of VIEWPORTS) {
      await open("", viewport, BIG_EDGES + 2);
      const m = await mapMetrics(page);
      expect(m.nodes).toBe(BIG_WORKLOADS + 3);
      expect(m.groups).toBe(BIG_NAMESPACES + 2);
      expect(layoutFaults(m)).toEqual(NO_LAYOUT_FAULTS);
      // A dense map (graph.ts's DENSE_EDGES): its nodes and edges are the map layer's; cytoscape holds the namespace boxes alone.
      const held = await page.evaluate(() => ({
        cytoscape: window.bulkheadMap.cy.elements().filter((e) => !e.hasClass("namespace")).length,
        layer: [window.bulkheadMap.layer()?.nodes.length, window.bulkheadMap.layer()?.edges.length],
      }));
      expect(held).toEqual({ cytoscape: 0, layer: [m.nodes, m.edges] });
      expect(m.edges).toBeGreaterThan(DENSE_EDGES);
      expect(m.labelsShown).toBeGreaterThan(0);
      process.stdout.write(`${viewport.width}x${viewport.height}: ${m.nodes} nodes, ${m.edges} drawn edges, ${m.labelsShown} labels shown, zoom ${m.zoom.toFixed(2)}\n`);
      // A labelled edge shows its ports; another none until selected, then every port.
      const text = await page.evaluate(() => {
        const textOf = (id: string) => window.bulkheadMap.layer()!.edges.find((e) => e.id === id)!.text;
        const layer = window.bulkheadMap.layer()!;
        const labelled = layer.labels[0]!, plain = layer.edges.find((e) => e.text === "")!;
        const shown = { labelled: textOf(labelled.id), box: labelled.text, plain: plain.text };
        window.bulkheadMap.select(plain.id);
        const selected = { text: textOf(plain.id), ids: window.bulkheadMap.selected(), plain: plain.id };
        window.bulkheadMap.select(labelled.id);
        return { shown, selected, after: textOf(plain.id) };
      });
      expect(text.shown.labelled).toMatch(/^TCP\/\d+/);
      expect(text.shown.labelled).toBe(text.shown.box);
      expect(text.shown.plain).toBe("");
      expect(text.selected.text).toMatch(/^TCP\/\d+/);
      expect(text.selected.ids).toEqual([text.selected.plain]);
      expect(text.after).toBe("");
      await page.screenshot({ path: path.join(SHOTS, `map-200-workloads-${viewport.width}x${viewport.height}.png`) });
    }
  });

  it(`${BIG_WORKLOADS} workloads / ${BIG_EDGES} edges, drawn by the map layer: each verdict's colour on its edges' pixels, an edge hovered and clicked on its line, nothing off the lines`, async () => {
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    const canvas = await page.locator("[data-testid=map-canvas]").boundingBox();
    if (!canvas) throw new Error("the map canvas has no box");
    // A point on each of the layer's edges (the first of a few along it, off its middle's
    // arrow), in the canvas' pixels, kept only where no other edge passes within 5 px and no
    // node's box (shape and label) or shown edge label lies within 4 px, so that the pixel and
    // the pointer can belong to that edge alone.
    const map = await drawnMap(page);
    const boxes = [...Object.values(map.nodeBoxes), ...map.labelBoxes];
    const clear = map.edges.flatMap((e) => {
      const a = map.centres[e.source]!, b = map.centres[e.target]!;
      const p = [0.3, 0.2, 0.4, 0.7, 0.6, 0.8].map((t) => along(a, b, t)).find((q) => clearOf(q, e.id, map, 5, map.centres, boxes));
      return p ? [{ id: e.id, verdict: e.verdict, text: e.text, ...p }] : [];
    });
    // A point away from every edge: the canvas' top-left corner region is left of every group.
    const empty = [2, 2];
    const pixels = await page.evaluate((points) => {
      const context = (document.querySelector("[data-testid=map-layer]") as HTMLCanvasElement).getContext("2d")!;
      // The most opaque pixel around the point: a line under 1 px wide is antialiased.
      return points.map(([x, y]) => {
        const d = context.getImageData(x! - 1, y! - 1, 3, 3).data;
        let best = [0, 0, 0, 0];
        for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > best[3]!) best = [d[i]!, d[i + 1]!, d[i + 2]!, d[i + 3]!];
        return best;
      });
    }, [...clear.map((c) => [c.x, c.y]), empty]);
    const probe = { drawn: clear.map((c, i) => ({ ...c, rgba: pixels[i]! })), emptyPixel: pixels[clear.length]!, empty };
    const hue = ([r, g, b]: number[]) => (g! > r! && g! > b! ? "forwarded" : r! > g! && g! > b! + 60 ? "audit" : r! > g! && r! > b! ? "dropped" : "other");
    const byVerdict = new Map<string, typeof probe.drawn>();
    for (const d of probe.drawn) (byVerdict.get(d.verdict ?? "") ?? byVerdict.set(d.verdict ?? "", []).get(d.verdict ?? "")!).push(d);
    process.stdout.write(`edge layer probes: ${[...byVerdict].map(([v, ds]) => `${v} ${ds.length}`).join(", ")}\n`);
    for (const verdict of ["forwarded", "dropped"]) {
      const probes = byVerdict.get(verdict) ?? [];
      expect(probes.length, `clear points on ${verdict} edges`).toBeGreaterThan(0);
      for (const p of probes) {
        expect(p.rgba[3], `${p.id} drawn at ${p.x},${p.y}`).toBeGreaterThan(0);
        expect(hue(p.rgba), `${p.id}'s colour ${p.rgba.join(",")}`).toBe(verdict);
      }
    }
    expect(probe.emptyPixel[3]).toBe(0);
    // Hover: the pointer on the line shows every port; a click there selects the edge.
    const target = probe.drawn.find((d) => d.text === "") ?? probe.drawn[0]!;
    await page.mouse.move(canvas.x + target.x, canvas.y + target.y);
    await page.waitForFunction((id) => window.bulkheadMap.layer()!.edges.find((e) => e.id === id)!.text !== "", target.id, { timeout: 5000 });
    await page.mouse.click(canvas.x + target.x, canvas.y + target.y);
    expect(await page.evaluate(() => window.bulkheadMap.selected())).toEqual([target.id]);
    await expect.poll(() => page.locator("[data-testid=details]").innerText()).toMatch(/→/);
    // Off every line and node: nothing selected, nothing hovered.
    await page.mouse.click(canvas.x + probe.empty[0]!, canvas.y + probe.empty[1]!);
    expect(await page.evaluate(() => window.bulkheadMap.selected())).toEqual([]);
    expect(await page.evaluate((id) => window.bulkheadMap.layer()!.edges.find((e) => e.id === id)!.text, target.id)).toBe(target.text);

    // Arrows: too small to show direction at the fitted zoom (left out), drawn at zoom 1. An
    // edge one way, with no other edge or node near its middle, centred on the canvas: inside
    // its arrow (behind the tip, beside the line) the layer is painted; as far ahead of the
    // tip, on the same side, it is not.
    // At the fitted zoom z: no other edge within 14 z px of its middle, no node within 30 z px.
    const near = map.edges.find((e) => {
      const a = map.centres[e.source]!, b = map.centres[e.target]!, mid = along(a, b, 0.5);
      return !e.both && Math.hypot(b.x - a.x, b.y - a.y) > 80 * map.zoom
        && map.edges.every((o) => o.id === e.id || segmentDistance(mid, map.centres[o.source]!, map.centres[o.target]!) > 14 * map.zoom)
        && Object.values(map.centres).every((n) => Math.hypot(n.x - mid.x, n.y - mid.y) > 30 * map.zoom);
    });
    const arrow = near && await page.evaluate(async ({ id, source, target }) => {
      const cy = window.bulkheadMap.cy, centre = (node: string) => window.bulkheadMap.layer()!.nodes.find((n) => n.id === node)!.centre;
      const a = centre(source), b = centre(target), length = Math.hypot(b.x - a.x, b.y - a.y);
      const u = { x: (b.x - a.x) / length, y: (b.y - a.y) / length }, n = { x: -u.y, y: u.x };
      cy.viewport({ zoom: 1, pan: { x: cy.width() / 2 - (a.x + b.x) / 2, y: cy.height() / 2 - (a.y + b.y) / 2 } });
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const context = (document.querySelector("[data-testid=map-layer]") as HTMLCanvasElement).getContext("2d")!;
      // 2.5 px beside the line: clear of it (half its width, 1.25 at most, and a pixel of
      // antialiasing), inside the arrow 6.2 px behind its tip (half-width 3.1 there).
      const alpha = (at: number) => {
        const x = Math.floor(cy.width() / 2 + u.x * at + n.x * 2.5), y = Math.floor(cy.height() / 2 + u.y * at + n.y * 2.5);
        return context.getImageData(x, y, 1, 1).data[3];
      };
      return { id, inside: alpha(-6.2), ahead: alpha(6.2) };
    }, near);
    expect(arrow, "an edge one way with a clear middle").toBeDefined();
    expect(arrow!.inside, `${arrow!.id}'s arrow`).toBeGreaterThan(0);
    expect(arrow!.ahead, `ahead of ${arrow!.id}'s arrow`).toBe(0);

    // Down to a small map in the same page: its edges are cytoscape's again, the layer's canvas blank.
    await page.locator("[data-testid=namespace-select]").selectOption("tiny");
    await page.waitForFunction(() => window.bulkheadMap.edges().length === 2, undefined, { timeout: 10_000 });
    const small = await page.evaluate(async () => {
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const canvas = document.querySelector("[data-testid=map-layer]") as HTMLCanvasElement;
      const data = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
      let painted = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
      return { layer: window.bulkheadMap.layer(), cytoscape: window.bulkheadMap.cy.edges().length, painted, size: canvas.width * canvas.height };
    });
    expect(small).toEqual({ layer: undefined, cytoscape: 2, painted: 0, size: small.size });
    expect(small.size).toBeGreaterThan(0);
    expect(pageErrors).toEqual([]);
  });

  it(`${BIG_WORKLOADS} workloads / ${BIG_EDGES} edges, nodes drawn by the map layer: each kind's colour over its centre, a click on one selects it, labels readable from zoom 0.6`, async () => {
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    const canvas = await page.locator("[data-testid=map-canvas]").boundingBox();
    if (!canvas) throw new Error("the map canvas has no box");
    const map = await drawnMap(page);
    const kinds = await page.evaluate(() => Object.fromEntries(window.bulkheadMap.nodes().map((n) => [n.id, n.kind])));
    const ids = Object.keys(map.centres);
    expect(ids.sort()).toEqual(Object.keys(kinds).sort());
    // Every node's centre pixel on the layer's canvas: its kind's fill, opaque over the edges that end there.
    const pixels = await page.evaluate((points) => {
      const context = (document.querySelector("[data-testid=map-layer]") as HTMLCanvasElement).getContext("2d")!;
      return points.map(([x, y]) => [...context.getImageData(Math.floor(x!), Math.floor(y!), 1, 1).data]);
    }, ids.map((id) => [map.centres[id]!.x, map.centres[id]!.y]));
    const FILL: Record<string, number[]> = { workload: [0x15, 0x65, 0xc0, 255], world: [0x54, 0x6e, 0x7a, 255] };
    const wrong = ids.flatMap((id, i) => (String(pixels[i]) === String(FILL[kinds[id]!]) ? [] : [`${id} (${kinds[id]}): ${pixels[i]!.join(",")}`]));
    expect(new Set(Object.values(kinds))).toEqual(new Set(Object.keys(FILL)));
    expect(wrong).toEqual([]);
    // A click on a workload selects it: the details name it.
    const web = ids.find((id) => kinds[id] === "workload" && id.includes("/web"))!;
    await page.mouse.click(canvas.x + map.centres[web]!.x, canvas.y + map.centres[web]!.y);
    expect(await page.evaluate(() => window.bulkheadMap.selected())).toEqual([web]);
    await expect.poll(() => page.locator("[data-testid=details]").innerText()).toContain("tiny/web (Deployment)");
    // The label under a node: dark text pixels (edges and fills are all lighter) at zoom 1, none at 0.5 (below cytoscape's min-zoomed-font-size rule).
    const darkUnder = (zoom: number) => page.evaluate(async ({ id, zoom, half }) => {
      const cy = window.bulkheadMap.cy, node = window.bulkheadMap.layer()!.nodes.find((n) => n.id === id)!;
      cy.viewport({ zoom, pan: { x: cy.width() / 2 - node.centre.x * zoom, y: cy.height() / 2 - node.centre.y * zoom } });
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const context = (document.querySelector("[data-testid=map-layer]") as HTMLCanvasElement).getContext("2d")!;
      const x1 = Math.floor(cy.width() / 2 + (node.box.x1 - node.centre.x) * zoom), x2 = Math.ceil(cy.width() / 2 + (node.box.x2 - node.centre.x) * zoom);
      const y1 = Math.floor(cy.height() / 2 + half * zoom), y2 = Math.ceil(cy.height() / 2 + (node.box.y2 - node.centre.y) * zoom);
      const d = context.getImageData(x1, y1, x2 - x1, y2 - y1).data;
      let dark = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > 100 && d[i]! < 90 && d[i + 1]! < 90 && d[i + 2]! < 90) dark++;
      return dark;
    }, { id: web, zoom, half: METRICS.nodeSize / 2 });
    expect(await darkUnder(1)).toBeGreaterThan(10);
    // The layer at zoom 1 around the selected node, for people to look at.
    await page.screenshot({ path: path.join(SHOTS, "map-200-workloads-zoom-1-selected-1500x1000.png") });
    expect(await darkUnder(0.5)).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it("namespace boxes lie under every edge and node and let clicks through: a click on a node or edge inside a box selects it, one on a box's empty part clears the selection", async () => {
    await open("namespace=tiny", VIEWPORTS[0], 2);
    const canvas = await page.locator("[data-testid=map-canvas]").boundingBox();
    if (!canvas) throw new Error("the map canvas has no box");
    const drawn = await page.evaluate(() => {
      const cy = window.bulkheadMap.cy;
      // cytoscape's own drawing order (its renderer's z-sorted elements, first drawn first).
      const order = ((cy as unknown as { renderer(): unknown }).renderer() as { getCachedZSortedEles(): { id(): string; hasClass(c: string): boolean }[] }).getCachedZSortedEles();
      const boxes = order.flatMap((e, i) => (e.hasClass("namespace") ? [i] : []));
      const others = order.flatMap((e, i) => (e.hasClass("namespace") ? [] : [i]));
      const tiny = cy.getElementById("namespace:tiny");
      const db = cy.nodes().filter((n) => !n.hasClass("namespace")).filter((n) => n.data("group") === "namespace:tiny" && /db/.test(n.id())).nodes().first();
      const edge = db.connectedEdges().first();
      const body = tiny.renderedBoundingBox({ includeLabels: false });
      return {
        lastBox: Math.max(...boxes), firstOther: Math.min(...others), boxes: boxes.length,
        db: { id: db.id(), at: db.renderedPosition() }, edge: { id: edge.id(), at: edge.renderedMidpoint() },
        // A point of tiny's box with nothing drawn on it: its bottom-left corner, inside the border.
        empty: { x: body.x1 + 4, y: body.y2 - 4 },
      };
    });
    expect(drawn.boxes).toBe(2);
    expect(drawn.lastBox).toBeLessThan(drawn.firstOther);
    const selected = () => page.evaluate(() => window.bulkheadMap.cy.$(":selected").map((e) => e.id()));
    await page.mouse.click(canvas.x + drawn.db.at.x, canvas.y + drawn.db.at.y);
    expect(await selected()).toEqual([drawn.db.id]);
    await page.mouse.click(canvas.x + drawn.edge.at.x, canvas.y + drawn.edge.at.y);
    expect(await selected()).toEqual([drawn.edge.id]);
    await page.mouse.click(canvas.x + drawn.empty.x, canvas.y + drawn.empty.y);
    expect(await selected()).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("the map's canvas keeps its size whatever the mirror tables hold (3 rows or 800)", async () => {
    const canvasSize = async () => {
      // The mirror is written in a task after the snapshot: wait for its rows, one per map edge.
      const edges = await page.evaluate(() => window.bulkheadMap.edges().length);
      await expect.poll(() => page.locator("[data-testid=edge-row]").count(), { timeout: 10_000 }).toBe(edges);
      return page.evaluate(() => ({ width: window.bulkheadMap.cy.width(), height: window.bulkheadMap.cy.height() }));
    };
    await open("namespace=tiny", VIEWPORTS[0], 2);
    const small = await canvasSize();
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    expect(await canvasSize()).toEqual(small);
  });

  it("the mirror tables at 800 edges: every edge a row of an accessible table in Chrome's accessibility tree, rows out of view included", async () => {
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    const edges = await page.evaluate(() => window.bulkheadMap.edges().length);
    // The mirror is written in a task after the snapshot: wait for one row per map edge.
    await expect.poll(() => page.locator("[data-testid=edge-row]").count(), { timeout: 10_000 }).toBe(edges);
    // In row groups of 50: a changed row re-lays out its group, not all 800.
    const groups = await page.$$eval("[data-testid=edge-list] tbody", (bodies) => bodies.map((b) => b.querySelectorAll("[data-testid=edge-row]").length));
    expect(groups.length).toBe(Math.ceil(edges / 50));
    expect(groups.every((n) => n <= 50)).toBe(true);

    // Chrome's own accessibility tree (what a screen reader gets): the edge list is a table
    // with a header row and one row per edge, each a row header (the edge) and five cells.
    const cdp = await page.context().newCDPSession(page);
    try {
      const { nodes } = await cdp.send("Accessibility.getFullAXTree") as { nodes: AxNode[] };
      const byId = new Map(nodes.map((n) => [n.nodeId, n]));
      const table = nodes.find((n) => n.role?.value === "table" && n.name?.value === "Edges");
      expect(table, "a table named Edges").toBeDefined();
      const rows: AxNode[] = [];
      const walk = (n: AxNode) => { if (n.role?.value === "row") rows.push(n); else for (const c of n.childIds ?? []) { const child = byId.get(c); if (child) walk(child); } };
      walk(table!);
      expect(rows.length).toBe(edges + 1);
      const roles = (row: AxNode) => (row.childIds ?? []).map((c) => byId.get(c)?.role?.value ?? "?").join(" ");
      expect(roles(rows[0]!)).toBe("columnheader columnheader columnheader columnheader columnheader columnheader");
      expect(new Set(rows.slice(1).map(roles))).toEqual(new Set(["rowheader cell cell cell cell cell"]));
      // The last row is far below the mirror's fold: its text is there all the same.
      const lastEdge = await page.locator("[data-testid=edge-row] th").last().evaluate((th) => th.textContent ?? "");
      expect(lastEdge).toMatch(/^.+ → .+, (TCP|UDP)\/\d+, (forwarded|dropped|audit)/);
      expect(byId.get(rows.at(-1)!.childIds![0]!)?.name?.value).toBe(lastEdge);
    } finally {
      await cdp.detach();
    }

    expect(pageErrors).toEqual([]);
  });

  it("a flow-table refresh of 200 rows reaches the page 50 rows a frame, not all in one frame", async () => {
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    await expect.poll(() => page.locator("[data-testid=flow-row]").count(), { timeout: 10_000 }).toBe(200);
    // A filter that matches nothing empties the table; clearing it writes the 200 rows anew.
    await page.fill("#filter", "to-port=1");
    await page.press("#filter", "Enter");
    await expect.poll(() => page.locator("[data-testid=flow-row]").count(), { timeout: 10_000 }).toBe(0);
    const counting = page.evaluate(() => new Promise<number[]>((resolve) => {
      // Rows added per frame: a MutationObserver counts them, each animation frame closes a count.
      const body = document.getElementById("flow-rows") as HTMLTableSectionElement;
      const perFrame: number[] = [];
      let added = 0;
      new MutationObserver((records) => { for (const r of records) added += [...r.addedNodes].filter((n) => n.nodeName === "TR").length; })
        .observe(body, { childList: true });
      const frame = () => {
        if (added > 0) perFrame.push(added);
        added = 0;
        if (body.rows.length >= 200) resolve(perFrame); else requestAnimationFrame(frame);
      };
      requestAnimationFrame(frame);
    }));
    await page.click("[data-testid=clear-filter]");
    const perFrame = await counting;
    expect(perFrame.reduce((a, b) => a + b, 0)).toBe(200);
    expect(Math.max(...perFrame)).toBeLessThanOrEqual(50);
    expect(pageErrors).toEqual([]);
  });

  it("the flow table at 1280 px: verdict words whole, pod names without their template hash (full in the title), every column inside the table", async () => {
    await open("namespace=tiny", { width: 1280, height: 720 }, 2);
    // The flow table loads once the page opens (refreshFlows): wait for its rows, all three verdicts.
    await expect.poll(() => page.$$eval("[data-testid=flow-row]", (rows) => new Set(rows.map((r) => r.getAttribute("data-verdict"))).size), { timeout: 10_000 }).toBe(3);
    const table = await page.$eval("[data-testid=flow-table]", (t) => {
      const cells = [...t.querySelectorAll("td")];
      return {
        tableFits: t.scrollWidth <= (t.parentElement?.clientWidth ?? 0),
        verdicts: [...t.querySelectorAll("td.verdict")].map((c) => ({ text: c.textContent, cut: c.scrollWidth > c.clientWidth })),
        overflowing: cells.filter((c) => c.scrollWidth > c.clientWidth).map((c) => c.textContent),
        webSources: [...t.querySelectorAll("[data-testid=flow-row] td:nth-child(2)")].map((c) => ({ text: c.textContent, title: c.getAttribute("title") })),
      };
    });
    expect(table.tableFits).toBe(true);
    expect(table.overflowing).toEqual([]);
    expect(new Set(table.verdicts.map((v) => `${v.text} ${v.cut}`))).toEqual(new Set(["FORWARDED false", "DROPPED false", "AUDIT false"]));
    expect(new Set(table.webSources.map((s) => s.text))).toEqual(new Set(["tiny/web-…x2k4p"]));
    for (const s of table.webSources) expect(s.title).toMatch(new RegExp(`^tiny/${WEB_POD}:\\d+ \\(${WEB_IP.replace(/\./g, "\\.")}\\)$`));
    await page.screenshot({ path: path.join(SHOTS, "flow-table-1280x720.png") });
    expect(pageErrors).toEqual([]);
  });

  it("a flow-table refresh reuses its rows and rewrites each changed cell: no reused cell keeps the old text or title", async () => {
    await open("namespace=tiny", { width: 1280, height: 720 }, 2);
    await expect.poll(() => page.$$eval("[data-testid=flow-row]", (rows) => rows.length), { timeout: 10_000 }).toBe(3);
    await page.$$eval("[data-testid=flow-row]", (rows) => rows.forEach((r) => { r.dataset.mark = "old"; }));
    // Only the audited call to the world: the reused first row must now read it, with no title
    // on the destination (an outside address is its own full name) where the pod's was before.
    await page.fill("#filter", "verdict=audit");
    await page.press("#filter", "Enter");
    await expect.poll(() => page.$$eval("[data-testid=flow-row]", (rows) => rows.length), { timeout: 10_000 }).toBe(1);
    const row = await page.$eval("[data-testid=flow-row]", (r) => ({
      mark: (r as HTMLElement).dataset.mark, verdict: r.getAttribute("data-verdict"),
      cells: [...(r as HTMLTableRowElement).cells].map((c) => ({ text: c.textContent, title: c.getAttribute("title") })),
    }));
    expect(row.mark).toBe("old");
    expect(row.verdict).toBe("audit");
    expect(row.cells[3]).toEqual({ text: "AUDIT", title: null });
    expect(row.cells[2]!.text).toBe(`${OUTSIDE_IP}:443/TCP`);
    expect(row.cells[2]!.title).toBeNull();
    expect(row.cells[1]!.title).toMatch(new RegExp(`^tiny/${WEB_POD}:\\d+ `));
    expect(pageErrors).toEqual([]);
  });

  it("the map does not wait for the namespace list: with its answer held, the link's namespace is selected and its map live", async () => {
    // The namespace list's answer is held until the map is live; a page that opened the
    // stream only after the list (as before) never goes live, and the wait below fails.
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => { release = resolve; });
    let asked = 0;
    await page.route("**/api/v1/namespaces?**", async (route) => { asked++; await held; await route.continue().catch(() => undefined); });
    try {
      await page.setViewportSize(VIEWPORTS[0]);
      await page.goto(`${cp.ui!.url}?namespace=tiny`);
      // A 3-node map is live within a second or two here; 10 s is the wait of a page that never opens the stream.
      await page.locator("[data-testid=connection-state][data-state=live]").waitFor({ timeout: 10_000 });
      await page.waitForFunction(() => window.bulkheadMap.edges().length >= 2, undefined, { timeout: 10_000 });
      expect(asked).toBeGreaterThan(0);
      expect(await page.inputValue("[data-testid=namespace-select]")).toBe("tiny");
      release();
      // The list arrives: its options replace the stand-in, the namespace stays selected.
      await expect.poll(() => page.locator("[data-testid=namespace-select] option[value=tiny]").textContent(), { timeout: 10_000 }).toBe("tiny (observe)");
      expect(await page.inputValue("[data-testid=namespace-select]")).toBe("tiny");
    } finally {
      release();
      await page.unroute("**/api/v1/namespaces?**");
    }
    expect(pageErrors).toEqual([]);
  });

  it("the map's stream starts before the page's script has loaded, and the script takes it over: one stream request", async () => {
    // The bundle is held until a map stream request has been sent (or 5 s have passed, as a
    // page that opens its stream from the bundle alone never sends one while it is held).
    const streams: string[] = [];
    let streamSeen: () => void = () => undefined;
    const streamSent = new Promise<void>((resolve) => { streamSeen = resolve; });
    const onRequest = (request: { url(): string }) => { if (request.url().includes("/api/v1/map/stream")) { streams.push(request.url()); streamSeen(); } };
    page.on("request", onRequest);
    let streamBeforeBundle: boolean | undefined;
    await page.route("**/assets/*.js", async (route) => {
      streamBeforeBundle = await Promise.race([streamSent.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
      await route.continue().catch(() => undefined);
    });
    try {
      await open("namespace=tiny&window=5m", VIEWPORTS[0], 2);
      expect(streamBeforeBundle).toBe(true);
      // The page's script asked for the same stream and took the early one over: no second request.
      expect(streams.map((u) => new URL(u).search)).toEqual(["?window=5m&namespace=tiny"]);
    } finally {
      page.off("request", onRequest);
      await page.unroute("**/assets/*.js");
    }
    expect(pageErrors).toEqual([]);
  });

  it("a snapshot's new nodes are styled before their edges are added (cytoscape then styles a node without walking its edges)", async () => {
    await open("namespace=tiny", VIEWPORTS[0], 2);
    await page.evaluate(() => {
      const w = window as unknown as { unstyledEnds: number; edgesAdded: number; onAdd: (event: { target: unknown }) => void };
      w.unstyledEnds = 0;
      w.edgesAdded = 0;
      // appliedInitStyle is cytoscape's own record that an element's style has been applied;
      // reading any style property would apply it, so the flag is the only way to look.
      const styled = (n: { _private: { appliedInitStyle?: boolean } }) => n._private.appliedInitStyle === true;
      w.onAdd = (event) => {
        w.edgesAdded++;
        const edge = event.target as { source(): never; target(): never };
        if (!styled(edge.source()) || !styled(edge.target())) w.unstyledEnds++;
      };
      window.bulkheadMap.cy.on("add", "edge", w.onAdd);
    });
    // Namespace team-0: a snapshot of its 25 workloads, their peers and every edge touching
    // them, ~190 (under DENSE_EDGES: cytoscape draws them).
    const teamEdges = bigEdges().filter((e) => e.a % BIG_NAMESPACES === 0 || e.b % BIG_NAMESPACES === 0).length;
    await page.locator("[data-testid=namespace-select]").selectOption("team-0");
    await page.waitForFunction((n) => window.bulkheadMap.edges().length >= n, teamEdges, { timeout: 30_000 });
    // The listener goes before anything is judged, so a failed check leaves none behind.
    const seen = await page.evaluate(() => {
      const w = window as unknown as { unstyledEnds: number; edgesAdded: number; onAdd: () => void };
      window.bulkheadMap.cy.off("add", "edge", w.onAdd);
      return { edgesAdded: w.edgesAdded, unstyledEnds: w.unstyledEnds };
    });
    expect(seen.edgesAdded).toBeGreaterThan(teamEdges / 2);
    expect(seen.edgesAdded).toBeLessThanOrEqual(DENSE_EDGES);
    expect(seen.unstyledEnds).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it("a resized map canvas is resized once and fills its new box: cytoscape's own observers do not resize and redraw it again", async () => {
    await open("namespace=tiny", VIEWPORTS[0], 2);
    const before = await page.evaluate(() => {
      const w = window as unknown as { resizes: number };
      w.resizes = 0;
      window.bulkheadMap.cy.on("resize", () => { w.resizes++; });
      // The map's box changes, the window does not.
      const map = document.getElementById("map")!;
      const height = map.clientHeight;
      map.style.flex = `0 0 ${height - 100}px`;
      return height;
    });
    // cytoscape's own observers resize 100 ms (debounced) after a change: 1 s gives them time to.
    await page.waitForTimeout(1000);
    const after = await page.evaluate(() => {
      const map = document.getElementById("map")!;
      const cy = window.bulkheadMap.cy;
      return { resizes: (window as unknown as { resizes: number }).resizes, cy: [cy.width(), cy.height()], box: [map.clientWidth, map.clientHeight] };
    });
    expect(after.box[1]).toBe(before - 100);
    expect(after.resizes).toBe(1);
    expect(after.cy).toEqual(after.box);
    await page.evaluate(() => { document.getElementById("map")!.style.removeProperty("flex"); });
    expect(pageErrors).toEqual([]);
  });

  it(`${BIG_WORKLOADS} workloads / ${BIG_EDGES} edges: a node dragged takes its layer edges along (the pointer finds one on its new line)`, async () => {
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    const canvas = await page.locator("[data-testid=map-canvas]").boundingBox();
    if (!canvas) throw new Error("the map canvas has no box");
    // An unlabelled edge and a point on its line once its source has moved 60 px right, with no
    // other edge within 5 px and no node box within 4 px there (the source's edges and box
    // moved too), in the canvas' pixels.
    const DX = 60;
    const map = await drawnMap(page);
    const plan = map.edges.filter((e) => e.text === "" && e.source !== e.target).slice(0, 200).flatMap((e) => {
      const centres = { ...map.centres, [e.source]: { x: map.centres[e.source]!.x + DX, y: map.centres[e.source]!.y } };
      const boxes = Object.entries(map.nodeBoxes).map(([id, bx]) => (id === e.source ? { ...bx, x1: bx.x1 + DX, x2: bx.x2 + DX } : bx));
      const a = centres[e.source]!, b = centres[e.target]!;
      // Off the edge's line before the move too, so that only the moved line can be hit there.
      const point = [0.25, 0.3, 0.35, 0.4, 0.6, 0.65, 0.7, 0.75].map((t) => along(a, b, t))
        .find((p) => clearOf(p, e.id, map, 5, centres, boxes) && segmentDistance(p, map.centres[e.source]!, b) >= 8);
      return point ? [{ node: e.source, edge: e.id, from: map.centres[e.source]!, point }] : [];
    })[0];
    expect(plan, "an edge with a clear point once its source has moved").toBeDefined();
    const { node, edge, from, point } = plan!;
    const textNow = () => page.evaluate((id) => window.bulkheadMap.layer()!.edges.find((e) => e.id === id)!.text, edge);
    await page.mouse.move(canvas.x + point.x, canvas.y + point.y);
    expect(await textNow(), "nothing to hover there before the drag").toBe("");
    await page.mouse.move(canvas.x + from.x, canvas.y + from.y);
    await page.mouse.down();
    for (let step = 1; step <= 6; step++) await page.mouse.move(canvas.x + from.x + (step * DX) / 6, canvas.y + from.y);
    await page.mouse.up();
    const after = await drawnMap(page);
    const moved = after.centres[node]!;
    expect(moved.x - from.x).toBeCloseTo(DX, 0);
    expect(moved.y - from.y).toBeCloseTo(0, 0);
    // The drag moved the node, not the map (every other node stays where it was), and was no click.
    const shifted = Object.keys(map.centres).filter((id) => id !== node && Math.hypot(after.centres[id]!.x - map.centres[id]!.x, after.centres[id]!.y - map.centres[id]!.y) > 0.5);
    expect(shifted).toEqual([]);
    expect(await page.evaluate(() => window.bulkheadMap.selected())).toEqual([]);
    // On the new line the pointer hovers the edge: its ports show.
    await page.mouse.move(canvas.x + point.x, canvas.y + point.y);
    await page.waitForFunction((id) => window.bulkheadMap.layer()!.edges.find((e) => e.id === id)!.text !== "", edge, { timeout: 5000 });
    expect(pageErrors).toEqual([]);
  });

  // Last in the file: it adds the receiving ends' records, which no test above expects.
  it(`${BIG_WORKLOADS} workloads / ${BIG_EDGES} edges: a what-if draft's halos are the edge layer's, on every drawn edge carrying an edge it would deny, cleared with it`, async () => {
    // A connection to a pod is judged at the destination's TO_POD (the what-if replays those);
    // the map counts pod traffic at FROM_POD, so these records change no edge.
    cp.ingest("node1", bigEdges().map((e) => agentRecord(bigIp(e.a), bigIp(e.b), e.port, { verdict: e.verdict, point: "to", packets: 3, sport: "vary" })));
    await open("", VIEWPORTS[0], BIG_EDGES + 2);
    // Every pod of team-1 isolated both ways: each edge with an end there would be denied.
    const draft = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: deny-all, namespace: team-1 }\nspec: { podSelector: {}, policyTypes: [Ingress, Egress] }\n";
    await page.locator("[data-testid=whatif-draft]").fill(draft);
    await page.locator("[data-testid=whatif-run]").click();
    const summary = page.locator("[data-testid=whatif-summary]");
    await summary.and(page.locator("[data-state=done]")).waitFor({ timeout: 20_000 });
    const team1 = bigEdges().filter((e) => e.a % BIG_NAMESPACES === 1 || e.b % BIG_NAMESPACES === 1).length;
    expect(await summary.evaluate((el) => [el.dataset.denied, el.dataset.allowed, el.dataset.verdict])).toEqual([String(team1), "0", "0"]);
    const seen = await page.evaluate(() => {
      const namespaceOf = new Map(window.bulkheadMap.nodes().map((n) => [n.id, n.namespace]));
      const expected = new Set(window.bulkheadMap.edges()
        .filter((e) => namespaceOf.get(e.source) === "team-1" || namespaceOf.get(e.destination) === "team-1")
        .flatMap((e) => window.bulkheadMap.drawnEdgesOf(e.id)));
      return { drawn: window.bulkheadMap.whatIfDrawn(), expected: [...expected].sort(), cytoscapeEdges: window.bulkheadMap.cy.edges().length, layerEdges: window.bulkheadMap.layer()?.edges.length };
    });
    expect(seen.cytoscapeEdges).toBe(0);
    expect(seen.layerEdges).toBeGreaterThan(DENSE_EDGES);
    expect(seen.expected.length).toBeGreaterThan(0);
    expect(seen.drawn).toEqual({ denied: seen.expected, allowed: [], verdict: [] });
    await page.screenshot({ path: path.join(SHOTS, "whatif-200-workloads-1500x1000.png") });
    await page.locator("[data-testid=whatif-clear]").click();
    expect(await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).toEqual({ denied: [], allowed: [], verdict: [] });
    expect(pageErrors).toEqual([]);
  });
});
