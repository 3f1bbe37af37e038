// The page: controls, the live map (graph.ts), its accessible mirror tables, the details
// pane, the what-if panel (whatif.ts) and the flow table. A live view's map comes from one
// event stream per (namespace, window): a snapshot, then deltas; on a dropped connection it
// reconnects and starts from a new snapshot. A past view (timerange.ts) is fetched once.
import "./style.css";
import { apiJson, ApiRequestError, onUnauthorized, readEvents, setAuthorization } from "./api.js";
import { MapView, type Selection } from "./graph.js";
import { shortPodName } from "./names.js";
import { describeView, isLive, localInputValue, rangeOfInputs, selectValue, viewFromUrl, viewOfSelect, viewParams, type TimeView } from "./timerange.js";
import { WhatIfPanel } from "./whatif.js";
import type { DecidingPolicy, MapDeltaJson, MapEdgeJson, MapJson, MapNodeJson, SelectingPolicy } from "./types.js";

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
};

const namespaceSelect = $<HTMLSelectElement>("namespace");
const windowSelect = $<HTMLSelectElement>("window");
const connection = $("connection");
const statusLine = $("status");
const nodeRows = $<HTMLTableElement>("node-list");
const edgeRows = $<HTMLTableElement>("edge-list");
const detailsBody = $("details-body");
const filterInput = $<HTMLInputElement>("filter");
const filterError = $("filter-error");
const flowRows = $("flow-rows");
const flowsSummary = $("flows-summary");
const rangeForm = $<HTMLFormElement>("range-form");
const rangeFrom = $<HTMLInputElement>("range-from");
const rangeTo = $<HTMLInputElement>("range-to");
const rangeError = $("range-error");
const backToLive = $<HTMLButtonElement>("back-to-live");

const params = new URLSearchParams(location.search);
/** Benchmark reference: on every change, fetch and redraw the whole map, as a poller would. */
const wholeMapReference = params.get("reference") === "whole-map";

const view = new MapView($("map"));
/** What the page shows: a live window, or a past one (see timerange.ts); the URL keeps it. */
let timeView: TimeView = viewFromUrl(params, Date.now()).view;
/** The last live window chosen, for "Back to live". */
let lastLiveWindow = timeView.kind === "live" ? timeView.window : "5m";
let renderedVersion = 0;
let deltasApplied = 0;

// ---- connection ------------------------------------------------------------------------------

type ConnectionState = "connecting" | "live" | "reconnecting" | "history";

function setConnection(state: ConnectionState, detail = ""): void {
  connection.dataset.state = state;
  connection.textContent = state === "live" ? "live" : state === "history" ? `history${detail ? ` (${detail})` : ""}`
    : state === "connecting" ? "connecting…" : `reconnecting…${detail ? ` (${detail})` : ""}`;
}

let streamAbort: AbortController | undefined;
let streamGeneration = 0;

/** (Re)opens the map stream for the current namespace and window; reconnects with backoff until replaced. */
function openStream(): void {
  streamAbort?.abort();
  const abort = new AbortController();
  streamAbort = abort;
  const generation = ++streamGeneration;
  const query = mapQuery();
  if (!isLive(timeView)) { void loadHistory(query, abort.signal); return; }
  let backoffMs = 500;
  let watchdog: number | undefined;
  let attempt = new AbortController();
  // Replacing the stream (new namespace or window) ends the attempt under way.
  abort.signal.addEventListener("abort", () => attempt.abort(), { once: true });
  const touch = () => {
    window.clearTimeout(watchdog);
    // Heartbeats come every 15 s: silence for 45 s means a dead connection, so this attempt
    // ends and the loop reconnects (aborting `abort` would end the loop's later attempts too).
    watchdog = window.setTimeout(() => attempt.abort(), 45_000);
  };
  const run = async (): Promise<void> => {
    setConnection("connecting");
    while (generation === streamGeneration) {
      attempt = new AbortController();
      try {
        touch();
        await readEvents("map/stream", query, attempt.signal, (e) => {
          touch();
          backoffMs = 500;
          if (e.event === "snapshot") { setConnection("live"); onSnapshot(e.data as MapJson); }
          else if (e.event === "delta") onDelta(e.data as MapDeltaJson);
        });
        if (generation !== streamGeneration) return;
        setConnection("reconnecting", "the server closed the stream");
      } catch (err) {
        if (generation !== streamGeneration) return;
        if (err instanceof ApiRequestError && err.status >= 400 && err.status < 500) {
          setConnection("reconnecting", err.message);
          // A 401 is announced once, by onUnauthorized (apiFetch), asking for a token.
          if (err.status !== 401) announce(`Map unavailable: ${err.message}`);
        } else {
          setConnection("reconnecting", (err as Error).message);
        }
      } finally {
        window.clearTimeout(watchdog);
      }
      await new Promise((r) => setTimeout(r, backoffMs));
      backoffMs = Math.min(backoffMs * 2, 10_000);
    }
  };
  void run();
}

/** A past view: its map once, from the stored history; a bad range's reason under the controls. */
async function loadHistory(query: URLSearchParams, signal: AbortSignal): Promise<void> {
  setConnection("connecting");
  try {
    const map = await apiJson<MapJson>("map", query, signal);
    if (signal.aborted) return;
    rangeError.textContent = "";
    setConnection("history");
    onSnapshot(map);
  } catch (err) {
    if (signal.aborted) return;
    const message = (err as Error).message;
    rangeError.textContent = `History unavailable for ${describeView(timeView)}: ${message}`;
    setConnection("history", "unavailable");
    // The map of another time must not stay on screen as if it were this one.
    onSnapshot({ version: 0, namespace: namespaceSelect.value, window: "", since: 0, until: 0, nodes: [], edges: [] }, false);
    announce(`Map unavailable: ${message}`);
  }
}

/** The view's namespace and time (window, or from/to), as the map, flows and what-if take them. */
function timeQuery(): URLSearchParams {
  const q = new URLSearchParams(viewParams(timeView));
  if (namespaceSelect.value !== "") q.set("namespace", namespaceSelect.value);
  return q;
}

function mapQuery(): URLSearchParams {
  return timeQuery();
}

function onSnapshot(map: MapJson, speak = true): void {
  // User Timing marks (DevTools' timeline, bench/ui-render's first-render phases).
  performance.mark("map: snapshot received");
  view.snapshot(map);
  performance.mark("map: snapshot laid out");
  renderedVersion = map.version;
  scheduleMirror(true);
  if (speak) announce(`Map of ${map.namespace || "all namespaces"}, ${describeView(timeView)}: ${map.nodes.length} nodes, ${map.edges.length} edges.`);
  refreshFlowsSoon();
}

let referenceBusy = false;

function onDelta(delta: MapDeltaJson): void {
  if (wholeMapReference) {
    // The reference path: the same notification, answered by redrawing the whole map.
    if (referenceBusy) return;
    referenceBusy = true;
    apiJson<MapJson>("map", mapQuery())
      .then((map) => { view.snapshot(map, false); renderedVersion = map.version; deltasApplied++; scheduleMirror(true); })
      .catch(() => undefined)
      .finally(() => { referenceBusy = false; });
    return;
  }
  const changed = view.apply(delta);
  renderedVersion = delta.version;
  deltasApplied++;
  scheduleMirror(false, delta);
  refreshNamespacesSoon();
  if (changed > 0) announceQuietly(`${view.nodes.size} nodes, ${view.edges.size} edges; ${delta.edges.length} updated, ${delta.removed.length} removed.`);
  refreshFlowsSoon();
}

// ---- status line -----------------------------------------------------------------------------

let lastAnnouncement = 0;
function announce(text: string): void {
  lastAnnouncement = Date.now();
  statusLine.textContent = text;
}

/**
 * Live updates are announced at most every 10 s and never within 10 s of another
 * announcement, so a screen reader is not flooded and what the user asked for (a new map,
 * an error) is not replaced by the next delta's counts before it is read.
 */
function announceQuietly(text: string): void {
  if (Date.now() - lastAnnouncement < 10_000) return;
  announce(text);
}

// ---- the accessible mirror: node and edge tables, updated by key ------------------------------

const nodeRowById = new Map<string, HTMLTableRowElement>();
const edgeRowById = new Map<string, HTMLTableRowElement>();
const pendingNodes = new Set<string>();
const pendingEdges = new Set<string>();
const pendingRemovals = new Set<string>();
let mirrorTimer: number | undefined;
/** The mirror waits for the map's first frame after a snapshot (MapView.whenDrawn). */
let mirrorWaiting = false;
let mirrorRebuild = false;
/** A rebuild's rows are still being written (the "mirror tables written" mark is due). */
let mirrorRebuilding = false;
/**
 * Rows written per task. A snapshot of 2,000 edges is written over several tasks, so the page
 * draws between them: written at once, the page layout of its 2,500 new rows held the first
 * frame of the map ~2 s under load (Chrome's timeline, bench/ui-render --trace). A frame lays
 * out its piece's rows at ~0.3 ms each: 300 rows a piece made each frame after the map's
 * first one 100-200 ms long while the tables filled; 60 keep them at 30-50 ms.
 */
const MIRROR_ROWS_PER_TASK = 60;
/**
 * Known rows rewritten per frame. An update touches ~100 rows (200 edges/s, written every
 * 500 ms), 4 cells each; written in one task, their page layout, pre-paint and paint took one
 * frame 40-60 ms of CPU (Chrome's timeline of bench/ui-render's streaming window), several
 * times that in wall time on a loaded machine. In slices, each frame carries a share.
 */
const MIRROR_UPDATED_ROWS_PER_FRAME = 20;
/**
 * Rows per row group. A changed cell re-lays out its row's parent and walks all its children:
 * with the 2,000 edge rows in one tbody, each mirror update cost a page layout of ~40-70 ms
 * (bench/ui-render's streaming window); in groups of this size it walks one group and the
 * table's groups.
 */
const MIRROR_ROWS_PER_GROUP = 50;

/** Appends a row to the table's last row group, or to a new one when that is full. */
function appendRow(table: HTMLTableElement, row: HTMLTableRowElement): void {
  let body = table.tBodies[table.tBodies.length - 1];
  if (!body || body.rows.length >= MIRROR_ROWS_PER_GROUP) {
    body = document.createElement("tbody");
    body.setAttribute("role", "rowgroup");
    table.append(body);
  }
  body.append(row);
}

function scheduleMirror(rebuild: boolean, delta?: MapDeltaJson): void {
  if (rebuild) mirrorRebuild = true;
  if (delta) {
    for (const n of delta.nodes) pendingNodes.add(n.id);
    for (const e of delta.edges) pendingEdges.add(e.id);
    for (const id of delta.removed) pendingRemovals.add(id);
  }
  if (mirrorTimer !== undefined || mirrorWaiting) return;
  // A snapshot's rows wait for the map's first frame (their script and page layout held it
  // ~0.4 s at 2,000 edges: bench/ui-render); then one piece per frame.
  mirrorWaiting = true;
  view.whenDrawn(() => {
    mirrorWaiting = false;
    // Tables trail the graph by at most 500 ms: DOM work is batched.
    mirrorTimer ??= window.setTimeout(renderMirror, mirrorRebuild ? 0 : 500);
  });
}

function renderMirror(): void {
  mirrorTimer = undefined;
  if (mirrorRebuild) {
    mirrorRebuild = false;
    mirrorRebuilding = true;
    for (const body of [...nodeRows.tBodies, ...edgeRows.tBodies]) body.remove();
    nodeRowById.clear();
    edgeRowById.clear();
    for (const id of [...view.nodes.keys()].sort()) pendingNodes.add(id);
    for (const id of [...view.edges.keys()].sort()) pendingEdges.add(id);
  }
  for (const id of pendingRemovals) { edgeRowById.get(id)?.remove(); edgeRowById.delete(id); }
  pendingRemovals.clear();
  for (const [id, row] of nodeRowById) if (!view.nodes.has(id)) { row.remove(); nodeRowById.delete(id); }
  let budget = mirrorRebuilding ? MIRROR_ROWS_PER_TASK : MIRROR_UPDATED_ROWS_PER_FRAME;
  for (const id of pendingNodes) {
    if (budget-- <= 0) break;
    pendingNodes.delete(id);
    const n = view.nodes.get(id);
    if (n) upsertRow(nodeRows, nodeRowById, id, nodeCells(n), { "data-testid": "node-row", "data-node-id": n.id, "data-kind": n.kind });
  }
  for (const id of pendingEdges) {
    if (budget-- <= 0) break;
    pendingEdges.delete(id);
    const e = view.edges.get(id);
    if (e) {
      upsertRow(edgeRows, edgeRowById, id, edgeCells(e), {
        "data-testid": "edge-row", "data-edge-id": e.id, "data-source": e.source, "data-destination": e.destination, "data-verdict": e.verdict,
      }, EDGE_CELL_CLASSES);
    }
  }
  // More rows than one task writes: the rest in the next task, after the page has had a chance to draw.
  if (pendingNodes.size + pendingEdges.size > 0) {
    // The next piece after the next frame: the page draws between pieces, and a frame holds one.
    mirrorTimer = requestAnimationFrame(() => { mirrorTimer = window.setTimeout(renderMirror, 0); });
    return;
  }
  if (mirrorRebuilding) { mirrorRebuilding = false; performance.mark("map: mirror tables written"); }
}

function describeNode(id: string): string {
  const n = view.nodes.get(id);
  if (!n) return id;
  if (n.kind === "workload") return `${n.namespace}/${n.name} (${n.workloadKind})`;
  if (n.kind === "service") return `Service ${n.namespace}/${n.name}`;
  if (n.kind === "host") return `host ${n.name}`;
  return `${n.kind} ${n.name}`;
}

const VERDICT_TEXT = { forwarded: "forwarded", dropped: "dropped", audit: "audit (would drop)" } as const;

function nodeCells(n: MapNodeJson): (string | HTMLElement)[] {
  return [selectButton(n.id, `${describeNode(n.id)}`), n.kind, n.namespace || "—", n.kind === "workload" ? String(n.pods) : "—"];
}

function edgeCells(e: MapEdgeJson): (string | HTMLElement)[] {
  const text = `${describeNode(e.source)} → ${describeNode(e.destination)}, ${e.protocol}/${e.port}, ${VERDICT_TEXT[e.verdict]}`;
  return [selectButton(e.id, text), VERDICT_TEXT[e.verdict], String(e.flows), String(e.packets), String(e.bytes), timeOf(e.lastSeen)];
}

function selectButton(id: string, text: string): HTMLButtonElement {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "link";
  b.textContent = text;
  b.dataset.select = id;
  return b;
}

const EDGE_CELL_CLASSES = ["", "verdict", "number", "number", "number", "time"];

function upsertRow(table: HTMLTableElement, rows: Map<string, HTMLTableRowElement>, id: string, cells: (string | HTMLElement)[], attributes: Record<string, string>,
  classes: readonly string[] = []): void {
  let row = rows.get(id);
  if (!row) {
    row = document.createElement("tr");
    row.setAttribute("role", "row");
    rows.set(id, row);
    appendRow(table, row);
  }
  for (const [k, v] of Object.entries(attributes)) if (row.getAttribute(k) !== v) row.setAttribute(k, v);
  if (row.cells.length === cells.length) {
    // A known row: touch only the cells whose text changed (counters, verdict, last seen),
    // so an update of thousands of rows re-lays out only what moved.
    cells.forEach((c, i) => {
      const cell = row.cells[i]!;
      if (cell.textContent !== (typeof c === "string" ? c : c.textContent)) cell.replaceChildren(c);
    });
    return;
  }
  row.replaceChildren(...cells.map((c, i) => {
    const cell = document.createElement(i === 0 ? "th" : "td");
    if (i === 0) cell.setAttribute("scope", "row");
    cell.setAttribute("role", i === 0 ? "rowheader" : "cell");
    if (classes[i]) cell.className = classes[i]!;
    cell.append(c);
    return cell;
  }));
}

// Activating a row's button selects the element as a click on the map does.
for (const table of [nodeRows, edgeRows]) {
  table.addEventListener("click", (event) => {
    const id = (event.target as HTMLElement).closest<HTMLElement>("[data-select]")?.dataset.select;
    if (id !== undefined && !view.select(id)) announce(`${id} is no longer on the map.`);
  });
}

// ---- selection: details pane and table filter -------------------------------------------------

view.setOnSelect((selection) => {
  if (!selection) return;
  filterInput.value = filterFor(selection);
  void refreshFlows();
  void showDetails(selection);
});

/** The observe filter that shows a node's or an edge's flows. */
function filterFor(selection: NonNullable<Selection>): string {
  const endFilter = (id: string, side: "" | "from-" | "to-"): string => {
    const n = view.nodes.get(id);
    if (!n) return "";
    switch (n.kind) {
      case "workload": return `${side}workload=${n.namespace}/${n.workloadKind}/${n.name}`;
      case "service": return `${side}service=${n.namespace}/${n.name}`;
      case "host": return `node=${n.name}`;
      default: return `${side}ip=${n.name}`;
    }
  };
  if (selection.kind === "node") return endFilter(selection.node.id, "");
  const e = selection.edge;
  const parts = [endFilter(e.source, "from-"), endFilter(e.destination, "to-")];
  if (e.protocol !== "") parts.push(`protocol=${e.protocol}`);
  if (e.port !== 0) parts.push(`to-port=${e.port}`);
  return parts.filter((p) => p !== "").join(" ");
}

let detailsAbort: AbortController | undefined;

async function showDetails(selection: NonNullable<Selection>): Promise<void> {
  detailsAbort?.abort();
  const abort = new AbortController();
  detailsAbort = abort;
  // The view's time: a live window, or a past one (served from the store).
  const q = new URLSearchParams(viewParams(timeView));
  if (selection.kind === "node") q.set("node", selection.node.id);
  else q.set("edge", selection.edge.id);
  const heading = selection.kind === "node" ? describeNode(selection.node.id)
    : `${describeNode(selection.edge.source)} → ${describeNode(selection.edge.destination)} ${selection.edge.protocol}/${selection.edge.port}`;
  detailsBody.replaceChildren(paragraph(`${heading}: loading…`));
  try {
    const d = await apiJson<{ records: number; edge?: MapEdgeJson; node?: MapNodeJson; packets?: number; bytes?: number; edges?: number;
      selectedBy: SelectingPolicy[]; decidedBy: DecidingPolicy[] }>("details", q, abort.signal);
    const parts: HTMLElement[] = [heading3(heading)];
    const facts: [string, string][] = [];
    if (d.edge) {
      facts.push(["Verdict", VERDICT_TEXT[d.edge.verdict]], ["Flows", String(d.edge.flows)], ["Packets", String(d.edge.packets)],
        ["Forwarded / dropped / audit", `${d.edge.forwarded} / ${d.edge.dropped} / ${d.edge.audit}`],
        ["Bytes", String(d.edge.bytes)], ["First seen", timeOf(d.edge.firstSeen)], ["Last seen", timeOf(d.edge.lastSeen)]);
    }
    if (d.node) {
      facts.push(["Kind", d.node.workloadKind || d.node.kind], ["Namespace", d.node.namespace || "—"], ["Pods seen", String(d.node.pods)],
        ["Edges", String(d.edges ?? 0)], ["Packets", String(d.packets ?? 0)], ["Bytes", String(d.bytes ?? 0)]);
    }
    facts.push([isLive(timeView) ? "Flow records in window" : `Flow records over ${describeView(timeView)}`, String(d.records)]);
    const dl = document.createElement("dl");
    for (const [k, v] of facts) { const dt = document.createElement("dt"); dt.textContent = k; const dd = document.createElement("dd"); dd.textContent = v; dl.append(dt, dd); }
    parts.push(dl, heading3("Policies selecting it"), policyList("selected-by", d.selectedBy.map((p) => `${p.namespace}/${p.name} — ${p.direction}, ${p.mode} mode`)),
      heading3("Policies that decided its flows"),
      policyList("decided-by", d.decidedBy.map(describeDeciding)));
    detailsBody.replaceChildren(...parts);
  } catch (err) {
    if (abort.signal.aborted) return;
    detailsBody.replaceChildren(paragraph(`${heading}: ${(err as Error).message}`));
  }
}

/**
 * One deciding policy: a NetworkPolicy as "ns/name — ingress allowed 3 records, enforce mode";
 * a ClusterNetworkPolicy with its tier and rule; either with the Pass rules that handed the
 * flows on to it ("after Pass by Admin ClusterNetworkPolicy p rule r").
 */
function describeDeciding(p: DecidingPolicy): string {
  const what = `${p.direction} ${p.decision} ${p.records} record${p.records === 1 ? "" : "s"}`;
  const passed = p.passedBy.map((t) => {
    const [tier = "", policy = "", ...rule] = t.split(" ");
    return `after Pass by ${tier} ClusterNetworkPolicy ${policy} rule ${rule.join(" ")}`;
  });
  if (p.tier === "NetworkPolicy") {
    return [`${p.namespace}/${p.name} — ${what}, ${p.mode} mode`, ...(passed.length > 0 ? ["NetworkPolicy tier", ...passed] : [])].join("; ");
  }
  return [`ClusterNetworkPolicy ${p.name} — ${p.tier} tier, rule ${p.rule} — ${what}`, ...passed].join("; ");
}

function heading3(text: string): HTMLElement {
  const h = document.createElement("h3");
  h.textContent = text;
  return h;
}

function paragraph(text: string): HTMLElement {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}

function policyList(testid: string, items: string[]): HTMLElement {
  const ul = document.createElement("ul");
  ul.dataset.testid = testid;
  if (items.length === 0) ul.append(Object.assign(document.createElement("li"), { textContent: "none" }));
  for (const text of items) ul.append(Object.assign(document.createElement("li"), { textContent: text }));
  return ul;
}

// ---- flow table -------------------------------------------------------------------------------

/** "from-pod=shop/web-1 verdict=DROPPED" → query pairs (the names are observe's). */
function filterPairs(text: string): [string, string][] {
  const pairs: [string, string][] = [];
  for (const token of text.trim().split(/\s+/).filter((t) => t !== "")) {
    const bare = token.replace(/^--/, "");
    const eq = bare.indexOf("=");
    if (eq <= 0) throw new Error(`"${token}" is not name=value`);
    pairs.push([bare.slice(0, eq), bare.slice(eq + 1)]);
  }
  return pairs;
}

let flowsAbort: AbortController | undefined;
let flowsTimer: number | undefined;

function refreshFlowsSoon(): void {
  // New traffic refreshes the table at most every 2 s.
  flowsTimer ??= window.setTimeout(() => { flowsTimer = undefined; void refreshFlows(); }, 2000);
}

async function refreshFlows(): Promise<void> {
  flowsAbort?.abort();
  const abort = new AbortController();
  flowsAbort = abort;
  let pairs: [string, string][];
  try {
    pairs = filterPairs(filterInput.value);
  } catch (err) {
    filterError.textContent = (err as Error).message;
    return;
  }
  const q = new URLSearchParams(pairs);
  if (namespaceSelect.value !== "" && !pairs.some(([k]) => k === "namespace")) q.append("namespace", namespaceSelect.value);
  for (const [k, v] of viewParams(timeView)) q.set(k, v);
  q.set("limit", "200");
  try {
    const body = await apiJson<{ flows: FlowJson[] }>("flows", q, abort.signal);
    filterError.textContent = "";
    await renderFlowRows(body.flows.slice().reverse(), abort.signal);
    if (abort.signal.aborted) return;
    flowsSummary.textContent = `${body.flows.length} most recent flow records${pairs.length ? ` matching ${filterInput.value.trim()}` : ""}.`;
    flowRows.closest("table")?.setAttribute("data-filter", filterInput.value.trim());
  } catch (err) {
    if (abort.signal.aborted) return;
    filterError.textContent = (err as Error).message;
  }
}

interface FlowEndJson { namespace?: string; podName?: string; workloadKind?: string; workloadName?: string; service?: string; node?: string }

/** The proto3 JSON of a FlowRecord, as far as the table reads it. */
interface FlowJson {
  endTime?: string;
  node?: string;
  ip?: { source?: string; destination?: string };
  l4?: { protocolName?: string; sourcePort?: number; destinationPort?: number };
  packets?: string;
  bytes?: string;
  verdict?: string;
  source?: FlowEndJson;
  destination?: FlowEndJson;
}

/** An end as people read it (pod names without their template hash) and in full (the cell's title). */
function endName(e: FlowJson["source"], ip: string | undefined, port: number | undefined, protocol = ""): { text: string; full: string } {
  const suffix = (port ? `:${port}` : "") + (protocol ? `/${protocol}` : "");
  const workload = e?.workloadKind && e.workloadName ? { kind: e.workloadKind, name: e.workloadName } : undefined;
  if (e?.podName) return { text: `${e.namespace}/${shortPodName(e.podName, workload)}${suffix}`, full: `${e.namespace}/${e.podName}${suffix}${ip ? ` (${ip})` : ""}` };
  const name = e?.service ? `svc ${e.service}` : e?.node ? `host ${e.node}` : ip ?? "?";
  return { text: name + suffix, full: name + suffix + (ip && name !== ip ? ` (${ip})` : "") };
}

const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DATE_TIME = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

/** A time as people read it, in the browser's zone: the clock in a live view, with the date in a past one (which may span days). */
function clockText(ms: number): string {
  return (isLive(timeView) ? TIME : DATE_TIME).format(new Date(ms));
}

/** Sets a cell's text and title only where they changed: rebuilding every row on each refresh
 * made the browser lay out the whole table again (bench/ui-render's layout objects). A name's
 * text may break after "/" and before ":" (<wbr>: the text itself is unchanged). */
function setCell(td: HTMLTableCellElement, text: string, title: string, breakable: boolean): void {
  if (td.textContent !== text) {
    if (breakable) {
      td.replaceChildren();
      for (const part of text.split(/(?<=\/)|(?=:)/)) td.append(part, document.createElement("wbr"));
    } else td.textContent = text;
  }
  const wanted = title !== "" && title !== text ? title : null;
  if (td.getAttribute("title") !== wanted) {
    if (wanted === null) td.removeAttribute("title"); else td.title = wanted;
  }
}

const FLOW_CELL_CLASSES = ["time", "end", "end", "verdict", "number", "node"];

function newFlowRow(): HTMLTableRowElement {
  const tr = document.createElement("tr");
  tr.dataset.testid = "flow-row";
  for (const className of FLOW_CELL_CLASSES) tr.insertCell().className = className;
  return tr;
}

/** Writes one flow into a row (new or reused), touching only the cells that differ. */
function fillFlowRow(tr: HTMLTableRowElement, f: FlowJson): void {
  const verdict = (f.verdict ?? "VERDICT_UNSPECIFIED").replace("VERDICT_", "");
  if (tr.dataset.verdict !== verdict.toLowerCase()) tr.dataset.verdict = verdict.toLowerCase();
  // The client's port is ephemeral: in the title only.
  const source = endName(f.source, f.ip?.source, undefined);
  const sourceFull = endName(f.source, f.ip?.source, f.l4?.sourcePort).full;
  const destination = endName(f.destination, f.ip?.destination, f.l4?.destinationPort, f.l4?.protocolName ?? "");
  const cells: [string, string, boolean][] = [
    [f.endTime ? clockText(Date.parse(f.endTime)) : "", f.endTime ?? "", false],
    [source.text, sourceFull, true],
    [destination.text, destination.full, true],
    [verdict, "", false],
    [`${f.packets ?? "0"} / ${f.bytes ?? "0"}`, `${f.packets ?? "0"} packets, ${f.bytes ?? "0"} bytes`, false],
    [f.node ?? "", "", false],
  ];
  cells.forEach(([text, title, breakable], i) => { const td = tr.cells[i]; if (td) setCell(td, text, title, breakable); });
}

/**
 * Flow rows written per frame. A live refresh replaces most of the 200 rows (at 200 edges/s
 * every record is new after 2 s): written at once, one frame held ~3,500 dirty layout objects,
 * 25-30 ms of layout CPU plus paint (Chrome's timeline of bench/ui-render's streaming window).
 */
const FLOW_ROWS_PER_FRAME = 50;

/** The flow table refreshed in place, a slice per frame: rows reused, extra ones dropped, missing ones added. */
async function renderFlowRows(flows: FlowJson[], signal: AbortSignal): Promise<void> {
  const body = flowRows as HTMLTableSectionElement;
  for (let start = 0; start < flows.length; start += FLOW_ROWS_PER_FRAME) {
    if (start > 0) await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    // A newer refresh (another filter, newer records) took over.
    if (signal.aborted) return;
    flows.slice(start, start + FLOW_ROWS_PER_FRAME).forEach((f, i) => fillFlowRow(body.rows[start + i] ?? body.appendChild(newFlowRow()), f));
  }
  while (body.rows.length > flows.length) body.deleteRow(-1);
}

$("filter-form").addEventListener("submit", (e) => { e.preventDefault(); void refreshFlows(); });
$("clear-filter").addEventListener("click", () => {
  filterInput.value = "";
  view.unselect();
  detailsBody.replaceChildren(paragraph("Select a node or an edge on the map or in the tables."));
  void refreshFlows();
  filterInput.focus();
});

function timeOf(ms: number): string {
  return ms ? clockText(ms) : "—";
}

// ---- controls ---------------------------------------------------------------------------------

let namespacesLoadedAt = 0;

/** Namespace modes change without a map change (an annotation): the options are refreshed
 * with the live updates, at most every 10 s, and not while the user is in the select. */
function refreshNamespacesSoon(): void {
  if (Date.now() - namespacesLoadedAt < 10_000 || document.activeElement === namespaceSelect) return;
  void loadNamespaces();
}

async function loadNamespaces(): Promise<void> {
  namespacesLoadedAt = Date.now();
  try {
    const body = await apiJson<{ namespaces: { name: string; mode: string }[] }>("namespaces", new URLSearchParams({ window: "1h" }));
    const selected = namespaceSelect.value;
    const options = [new Option("All namespaces", "")];
    for (const ns of body.namespaces) {
      const o = new Option(`${ns.name} (${ns.mode})`, ns.name);
      o.dataset.mode = ns.mode;
      options.push(o);
    }
    // A namespace asked for by URL but not listed (unknown, or outside the token's scope) stays selected.
    if (selected !== "" && !options.some((o) => o.value === selected)) options.push(new Option(selected, selected));
    namespaceSelect.replaceChildren(...options);
    namespaceSelect.value = selected;
  } catch (err) {
    // A 401 is announced once, by onUnauthorized (apiFetch), asking for a token; the map's
    // stream, opened at the same time, gets the same answer.
    if (err instanceof ApiRequestError && err.status === 401) return;
    announce(`Namespaces unavailable: ${(err as Error).message}`);
  }
}

/** The controls as they stand into the URL (a link reproduces the view), then the map and flows. */
function applyControls(): void {
  const q = new URLSearchParams(location.search);
  if (namespaceSelect.value) q.set("namespace", namespaceSelect.value); else q.delete("namespace");
  for (const k of ["window", "from", "to"]) q.delete(k);
  for (const [k, v] of viewParams(timeView)) q.set(k, v);
  history.replaceState(null, "", `?${q.toString()}`);
  // A what-if answer covers the view it was asked for: another view needs another replay.
  whatIf.clear();
  showTimeControls();
  openStream();
  void refreshFlows();
}

/** The select shows the view; the from/to inputs show for a range; "Back to live" for any past view. */
function showTimeControls(): void {
  windowSelect.value = selectValue(timeView);
  rangeForm.hidden = timeView.kind !== "range" && windowSelect.value !== "range";
  backToLive.hidden = isLive(timeView);
  if (timeView.kind === "range") { rangeFrom.value = localInputValue(timeView.from); rangeTo.value = localInputValue(timeView.to); }
}

function setTimeView(next: TimeView): void {
  timeView = next;
  if (next.kind === "live") lastLiveWindow = next.window;
  rangeError.textContent = "";
  applyControls();
}

namespaceSelect.addEventListener("change", applyControls);
windowSelect.addEventListener("change", () => {
  const next = viewOfSelect(windowSelect.value);
  if (next !== undefined) { setTimeView(next); return; }
  // "from … to …": the inputs open on the last hour; nothing changes until "Show range".
  rangeForm.hidden = false;
  const now = Date.now();
  if (rangeFrom.value === "") rangeFrom.value = localInputValue(now - 3_600_000);
  if (rangeTo.value === "") rangeTo.value = localInputValue(now);
  rangeFrom.focus();
});
rangeForm.addEventListener("submit", (e) => {
  e.preventDefault();
  try {
    setTimeView(rangeOfInputs(rangeFrom.value, rangeTo.value, Date.now()));
  } catch (err) {
    rangeError.textContent = `Bad range: ${(err as Error).message}.`;
    announce(rangeError.textContent);
  }
});
backToLive.addEventListener("click", () => setTimeView({ kind: "live", window: lastLiveWindow }));
namespaceSelect.addEventListener("focus", () => void loadNamespaces());
$("relayout").addEventListener("click", () => view.relayout());

// Access: a control plane with --tokens answers 401 without a known bearer token. The token
// lives in this tab's sessionStorage only, and goes out through apiFetch's one header.
const TOKEN_KEY = "bulkhead.token";
const tokenInput = $<HTMLInputElement>("token");
function useToken(token: string): void {
  if (token === "") sessionStorage.removeItem(TOKEN_KEY); else sessionStorage.setItem(TOKEN_KEY, token);
  setAuthorization(token === "" ? undefined : `Bearer ${token}`);
}
useToken(sessionStorage.getItem(TOKEN_KEY) ?? "");
onUnauthorized((message) => {
  announce(`Access refused: ${message}. Enter a bearer token.`);
  tokenInput.setAttribute("aria-invalid", "true");
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  useToken(tokenInput.value.trim());
  tokenInput.value = "";
  tokenInput.removeAttribute("aria-invalid");
  void loadNamespaces().then(() => applyControls());
});

const whatIf = new WhatIfPanel({
  form: $<HTMLFormElement>("whatif-form"), draft: $<HTMLTextAreaElement>("whatif-draft"), file: $<HTMLInputElement>("whatif-file"),
  clear: $<HTMLButtonElement>("whatif-clear"), error: $("whatif-error"), summary: $("whatif-summary"), rows: $("whatif-rows"),
  suggest: $<HTMLButtonElement>("suggest-run"), suggestError: $("suggest-error"), suggestions: $("suggestions"),
}, { view, query: timeQuery, describe: describeNode, announce });

// Test and benchmark hooks (./hooks.ts).
window.bulkheadMap = {
  get time() { return timeView; },
  whatIfDrawn: () => view.whatIfDrawn(),
  get whatIf() { return whatIf.last; },
  get version() { return renderedVersion; },
  get deltas() { return deltasApplied; },
  nodes: () => [...view.nodes.values()],
  edges: () => [...view.edges.values()],
  select: (id) => view.select(id),
  drawnEdgesOf: (id) => view.drawnEdgesOf(id).map((d) => d.id),
  selected: () => view.selected(),
  layer: () => view.layerView(),
  cy: view.cy,
};

void (async () => {
  const initialNamespace = params.get("namespace") ?? "";
  const { problem } = viewFromUrl(params, Date.now());
  if (problem !== undefined) rangeError.textContent = `Bad range in the link: ${problem}.`;
  showTimeControls();
  // The map does not wait for the namespace list (it took ~0.15 s before the stream opened,
  // bench/ui-render): the link's namespace is an option of its own until the list, which keeps
  // the selected value, replaces the options.
  if (initialNamespace) {
    namespaceSelect.append(new Option(initialNamespace, initialNamespace));
    namespaceSelect.value = initialNamespace;
  }
  openStream();
  void refreshFlows();
  await loadNamespaces();
})();


