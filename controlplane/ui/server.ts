// The web UI's HTTP server: the built UI (dist/ui) as static files, /healthz, /metrics, and the JSON
// API under /api/v1/ (namespaces, map, map/stream, flows, details). Every request gets one
// access scope (scope.ts) that every endpoint honours. A bad request is answered alone: no
// error of one client reaches another's stream or the stores.
import fs from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { ClusterState } from "../cluster/state.js";
import type { PolicyCompiler } from "../policy/compile.js";
import { endsInScope, flowInScope, namespaceReadable, restrictFlowMap, type AccessControl, type Scope } from "../access/index.js";
import type { FlowHistory } from "../store/history.js";
import type { FlowMapStore } from "../store/flowmap.js";
import { compileRequest, FlowFilterError, type FlowPredicate } from "../store/filter.js";
import { FILTER_NAMES, FilterNameError, flowFilterOf, isEmptyFilter, isFilterName } from "../store/filter-names.js";
import { timestampOfMs } from "../../config/time.js";
import { FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { ApiError, badParameter, Query, type Window } from "./params.js";
import { isNamespaceName } from "../../kubernetes/names.js";
import { requestScope } from "./scope.js";
import { backendsFromState, type BackendsOf, edgeJson, mapJson, nodeJson } from "./map-json.js";
import { MapDeltas, MapStream, type MapStreamOptions } from "./map-stream.js";
import { decidingPolicies, detailCandidates, nodeNamespace, notFound, parseEdgeId, parseNodeId, selectingPolicies, type DetailTarget, type ParsedNode } from "./details.js";
import { historyRange, rangeFlowMap, rangeFlows, type HistoryRange, type RecordedFlows } from "./history.js";
import { suggestionsJson, suggestRequest, whatIfJson, whatIfRequest } from "./whatif.js";
import { PolicyRequestError } from "../policy-requests.js";
import type { PolicyWhatIfRequest, PolicyWhatIfResponse, SuggestPoliciesRequest, SuggestPoliciesResponse } from "../../proto/gen/bulkhead/v1/observer.js";

/** What the UI reads: the control plane's stores (ControlPlane satisfies it). */
export interface UiSources extends RecordedFlows {
  readonly state: ClusterState;
  readonly history: FlowHistory;
  readonly flowMap: FlowMapStore;
  readonly policy: PolicyCompiler;
  /** Bearer tokens and their scopes, shared with the Observer API. */
  readonly access: AccessControl;
  /** The control plane's /metrics text. */
  metrics(): string;
  /** PolicyWhatIf of the Observer API: the draft replayed against the recorded flows. */
  policyWhatIf(scope: Scope, request: PolicyWhatIfRequest): Promise<PolicyWhatIfResponse>;
  /** SuggestPolicies of the Observer API: least-privilege policies learned from the recorded flows. */
  suggestPolicies(scope: Scope, request: SuggestPoliciesRequest): Promise<SuggestPoliciesResponse>;
}

export interface UiServerOptions {
  log: Logger;
  /** The built UI; default dist/ui of this installation. */
  staticDir?: string;
  stream?: MapStreamOptions;
  /** Serve HTTPS with this certificate and key (bearer tokens must not cross a network in clear). */
  tls?: { cert: Buffer; key: Buffer };
  /** Map streams open at once, all tokens together; more are refused with 429. Default 256. */
  maxStreams?: number;
  /** Map streams open at once with one token (requests without one count as one token); default 16. */
  maxStreamsPerToken?: number;
  /** Records the details pane examines, newest first (its counts then cover those); default 100,000. */
  maxDetailRecords?: number;
}

/** Each open map stream costs a flow-map listener and a delta per flush: a browser tab holds one. */
const DEFAULT_MAX_STREAMS = 256;
const DEFAULT_MAX_STREAMS_PER_TOKEN = 16;
/** Bounds one details request however busy the node: a busy window holds millions of records. */
const DEFAULT_MAX_DETAIL_RECORDS = 100_000;

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/controlplane/ui → dist/ui; from the sources (tests run them) → dist/ui as well. */
export const DEFAULT_STATIC_DIR = path.basename(path.resolve(HERE, "../..")) === "dist"
  ? path.resolve(HERE, "../../ui")
  : path.resolve(HERE, "../../dist/ui");

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".json": "application/json; charset=utf-8", ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2", ".txt": "text/plain; charset=utf-8",
};

const MAX_FLOWS = 10_000;
/** A draft is a few policies: a body past this is refused before it is parsed. */
const MAX_DRAFT_BYTES = 1 << 20;

type Route = (query: URLSearchParams, scope: Scope, response: ServerResponse, request: IncomingMessage) => void;

/** Content types a draft is taken in: none of them is one a cross-site form or simple request may send. */
const DRAFT_TYPES = ["application/yaml", "application/x-yaml", "text/yaml", "application/json"];

export class UiServer {
  private readonly server: http.Server;
  private readonly streams = new Set<MapStream>();
  /** Open map streams by token subject. */
  private readonly streamsBySubject = new Map<string, number>();
  private cutOff = 0;
  private refused = 0;
  private readonly maxDetailRecords: number;
  private readonly staticDir: string;
  private readonly scopeOf: (request: IncomingMessage) => Scope;
  private readonly routes: ReadonlyMap<string, Route>;
  private readonly backendsOf: BackendsOf;
  /** Deltas shared by the map streams that show the same map. */
  private readonly deltas: MapDeltas;
  /** Endpoints that take a body (a draft): POST only. */
  private readonly postRoutes: ReadonlyMap<string, Route>;

  constructor(private readonly sources: UiSources, private readonly options: UiServerOptions) {
    this.staticDir = path.resolve(options.staticDir ?? DEFAULT_STATIC_DIR);
    this.maxDetailRecords = options.maxDetailRecords ?? DEFAULT_MAX_DETAIL_RECORDS;
    this.scopeOf = (request) => requestScope(sources.access, request);
    this.backendsOf = backendsFromState(sources.state);
    this.deltas = new MapDeltas(sources.flowMap, this.backendsOf);
    this.postRoutes = new Map<string, Route>([
      ["policy/what-if", (q, s, res, req) => this.whatIf(q, s, res, req)],
    ]);
    this.routes = new Map<string, Route>([
      ["namespaces", (q, s, res) => this.namespaces(q, s, res)],
      ["map", (q, s, res) => this.map(q, s, res)],
      ["map/stream", (q, s, res, req) => this.mapStream(q, s, res, req)],
      ["flows", (q, s, res) => this.flows(q, s, res)],
      ["details", (q, s, res) => this.details(q, s, res)],
      ["policy/suggest", (q, s, res) => this.suggest(q, s, res)],
    ]);
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handle(req, res);
    this.server = options.tls ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, handler) : http.createServer(handler);
    // Streams stay open for hours; only idle keep-alive sockets time out.
    this.server.requestTimeout = 0;
  }

  /** Listens; returns the URL ("http://HOST:PORT/"). */
  async listen(host: string, port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => reject(new Error(`web UI: cannot listen on ${host}:${port}: ${err.message}`));
      this.server.once("error", fail);
      this.server.listen(port, host, () => { this.server.off("error", fail); resolve(); });
    });
    return this.url;
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
    return `${this.options.tls ? "https" : "http"}://${host}:${a.port}/`;
  }

  /** Map stream clients disconnected for lagging maxQueuedBytes behind, since start. */
  get streamsCutOff(): number {
    return this.cutOff;
  }

  /** Map streams refused for a full cap (per token or in total), since start. */
  get streamsRefused(): number {
    return this.refused;
  }

  /** Map deltas computed since start (streams of one map share each; for tests and benchmarks). */
  get mapDeltasComputed(): number {
    return this.deltas.computed;
  }

  /** Open map streams (for tests and status). */
  get streamCount(): number {
    return this.streams.size;
  }

  async close(): Promise<void> {
    for (const s of [...this.streams]) s.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- dispatch ----------------------------------------------------------------------------

  private handle(request: IncomingMessage, response: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(request.url ?? "/", "http://ui.invalid");
    } catch {
      this.error(response, new ApiError(400, `bad request target ${JSON.stringify(request.url)}`));
      return;
    }
    try {
      const method = request.method ?? "GET";
      if (url.pathname === "/healthz") {
        this.requireRead(method);
        response.writeHead(200, { "content-type": "text/plain; charset=utf-8" }).end("ok\n");
        return;
      }
      // Cluster-wide counts, as GetStatus: a cluster-wide token (or none, with --allow-unauthenticated).
      if (url.pathname === "/metrics") {
        this.requireRead(method);
        if (this.scopeOf(request).kind !== "cluster") throw new ApiError(403, "/metrics describes the whole cluster: it needs a token without a namespace restriction");
        response.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(this.sources.metrics());
        return;
      }
      if (url.pathname.startsWith("/api/")) {
        const name = url.pathname.startsWith("/api/v1/") ? url.pathname.slice("/api/v1/".length) : undefined;
        const posted = name === undefined ? undefined : this.postRoutes.get(name);
        if (posted !== undefined) {
          if (method !== "POST") throw new ApiError(405, `method ${method} is not allowed on ${url.pathname} (POST the draft as the body)`);
          // A type no HTML form or simple cross-site request can send: another site's page
          // cannot make a visitor's browser (and its token or cookie-free session) run it.
          const type = (request.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
          if (!DRAFT_TYPES.includes(type)) {
            throw new ApiError(415, `POST the draft with content-type ${DRAFT_TYPES[0]} (or ${DRAFT_TYPES.slice(1).join(", ")}), not ${JSON.stringify(type || "none")}`);
          }
          posted(url.searchParams, this.scopeOf(request), response, request);
          return;
        }
        const route = name === undefined ? undefined : this.routes.get(name);
        if (route === undefined) {
          const all = [...this.routes.keys(), ...[...this.postRoutes.keys()].map((k) => `${k} (POST)`)];
          throw new ApiError(404, `no API endpoint ${url.pathname} (endpoints: ${all.map((k) => `/api/v1/${k}`).join(", ")})`);
        }
        this.requireRead(method);
        route(url.searchParams, this.scopeOf(request), response, request);
        return;
      }
      this.requireRead(method);
      this.serveStatic(request.url ?? "/", url.pathname, method, response);
    } catch (err) {
      if (err instanceof ApiError) {
        if (err.status === 405) response.setHeader("allow", this.postRoutes.has(url.pathname.slice("/api/v1/".length)) ? "POST" : "GET, HEAD");
        this.error(response, err);
        return;
      }
      this.options.log.error({ err: (err as Error).message, url: request.url }, "web UI request failed");
      this.error(response, new ApiError(500, `internal error: ${(err as Error).message}`));
    }
  }

  private requireRead(method: string): void {
    if (method !== "GET" && method !== "HEAD") throw new ApiError(405, `method ${method} is not allowed (GET or HEAD)`);
  }

  /** An endpoint that answers later: its ApiError (or any other failure) is answered as handle() would. */
  private later(response: ServerResponse, work: Promise<unknown>): void {
    work.then((body) => this.json(response, body), (err: Error) => {
      if (err instanceof ApiError) { this.error(response, err); return; }
      if (err instanceof PolicyRequestError) { this.error(response, new ApiError(err.kind === "denied" ? 403 : 400, err.message)); return; }
      this.options.log.error({ err: err.message }, "web UI request failed");
      this.error(response, new ApiError(503, `flow store: ${err.message}`));
    });
  }

  private error(response: ServerResponse, err: ApiError): void {
    if (response.headersSent) { response.end(); return; }
    this.json(response, { error: err.message }, err.status);
  }

  private json(response: ServerResponse, body: unknown, status = 200): void {
    const text = JSON.stringify(body);
    response.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
    response.end(text);
  }

  // ---- endpoints -----------------------------------------------------------------------------

  private namespaces(params: URLSearchParams, scope: Scope, response: ServerResponse): void {
    const query = Query.parse(params, ["window"]);
    const window = query.window();
    const model = this.sources.policy.model();
    const inCluster = new Set(this.sources.state.namespaces().map((n) => n.metadata.name));
    const onMap = new Set<string>();
    for (const n of this.sources.flowMap.getMap({ windowMs: window.ms }).nodes) if (n.namespace !== "") onMap.add(n.namespace);
    const names = [...new Set([...inCluster, ...onMap])].filter((n) => namespaceReadable(scope, n)).sort();
    this.json(response, {
      namespaces: names.map((name) => ({ name, mode: model.modeOf(name), inCluster: inCluster.has(name), onMap: onMap.has(name) })),
    });
  }

  private mapQuery(params: URLSearchParams, scope: Scope, history: boolean): { namespace: string; window: Window; range: HistoryRange | undefined } {
    const query = Query.parse(params, history ? ["namespace", "window", "from", "to"] : ["namespace", "window"]);
    const namespace = query.namespace();
    const range = historyRange(query, this.sources);
    if (range !== undefined && !history) {
      throw new ApiError(400, `window ${range.name} is a past range, not a live one (1m, 5m, 1h): fetch its map once from /api/v1/map`);
    }
    const window = range === undefined ? query.window() : { name: "1h" as const, ms: 3_600_000 };
    if (namespace !== "" && !namespaceReadable(scope, namespace)) throw new ApiError(403, `namespace ${JSON.stringify(namespace)} is outside this request's access scope`);
    return { namespace, window, range };
  }

  private map(params: URLSearchParams, scope: Scope, response: ServerResponse): void {
    const { namespace, window, range } = this.mapQuery(params, scope, true);
    if (range !== undefined) {
      // A past range: built once from its records (version 0: no stream follows it).
      this.later(response, rangeFlowMap(this.sources, range, namespace).then((map) =>
        mapJson(map, 0, namespace, range.name, scope, this.backendsOf)));
      return;
    }
    const map = this.sources.flowMap.getMap({ namespace: namespace || undefined, windowMs: window.ms });
    this.json(response, mapJson(map, this.sources.flowMap.version, namespace, window.name, scope, this.backendsOf));
  }

  private mapStream(params: URLSearchParams, scope: Scope, response: ServerResponse, request: IncomingMessage): void {
    const { namespace, window } = this.mapQuery(params, scope, false);
    const subject = scope.subject;
    const mine = this.streamsBySubject.get(subject) ?? 0;
    const perToken = this.options.maxStreamsPerToken ?? DEFAULT_MAX_STREAMS_PER_TOKEN;
    const total = this.options.maxStreams ?? DEFAULT_MAX_STREAMS;
    const full = mine >= perToken ? `this token (${subject}) already has ${mine} map streams open, the most one token may hold`
      : this.streams.size >= total ? `the control plane already serves ${this.streams.size} map streams, the most it holds at once` : undefined;
    if (full !== undefined) {
      this.refused++;
      this.options.log.warn({ subject, namespace, open: mine, total: this.streams.size, refusedTotal: this.refused }, "map stream refused: cap reached");
      response.setHeader("retry-after", "30");
      throw new ApiError(429, `${full}; close another tab or stream, or use /api/v1/map for a one-off map`);
    }
    // Tokens reloaded (as the Observer API's follow streams do): a revoked token's stream, or
    // one whose namespace left its scope, ends now; a changed scope starts a new snapshot.
    const stopWatchingTokens = this.sources.access.onChange(() => {
      let again: Scope;
      try {
        again = requestScope(this.sources.access, request);
        if (namespace !== "" && !namespaceReadable(again, namespace)) throw new ApiError(403, `namespace ${namespace} left the token's scope`);
      } catch (err) {
        this.options.log.info({ subject: scope.subject, reason: (err as Error).message }, "map stream ended: token no longer valid for it");
        stream.close();
        return;
      }
      stream.rescope(again);
    });
    const onCutOff = (queuedBytes: number) => {
      this.cutOff++;
      this.options.log.warn({ subject: scope.subject, namespace, queuedBytes, cutOffTotal: this.cutOff },
        "map stream client too far behind: disconnected (it reconnects to a fresh snapshot)");
    };
    const stream: MapStream = new MapStream(response, this.sources.flowMap, namespace, window, scope, { ...this.options.stream, onCutOff, backendsOf: this.backendsOf, deltas: this.deltas },
      () => {
        stopWatchingTokens();
        this.streams.delete(stream);
        const left = (this.streamsBySubject.get(subject) ?? 1) - 1;
        if (left > 0) this.streamsBySubject.set(subject, left); else this.streamsBySubject.delete(subject);
      });
    this.streams.add(stream);
    this.streamsBySubject.set(subject, mine + 1);
    stream.start();
  }

  /** The flows endpoint: observe's filter names, plus limit and window. */
  private flows(params: URLSearchParams, scope: Scope, response: ServerResponse): void {
    const query = Query.parse(params, [...FILTER_NAMES, "limit", "window", "from", "to"], isFilterName);
    const limit = query.limit(500, MAX_FLOWS);
    const range = historyRange(query, this.sources);
    const pairs = query.entries().filter(([name]) => isFilterName(name));
    for (const [name, value] of pairs) {
      if (name === "namespace" && !isNamespaceName(value)) throw badParameter(name, value, "is not a namespace name");
      if (name === "namespace" && !namespaceReadable(scope, value)) throw new ApiError(403, `namespace ${JSON.stringify(value)} is outside this request's access scope`);
    }
    let predicate: FlowPredicate;
    try {
      const filter = flowFilterOf(pairs);
      predicate = compileRequest(isEmptyFilter(filter) ? [] : [filter], []);
    } catch (err) {
      if (err instanceof FilterNameError) throw badParameter(err.parameter, err.value, err.problem);
      if (err instanceof FlowFilterError) throw badParameter(parameterOfField(err.field), err.value, err.problem);
      throw err;
    }
    const visible = this.visibleFlows(scope);
    const shown: FlowPredicate = visible === undefined ? predicate : (r) => predicate(r) && visible(r);
    if (range !== undefined) {
      this.later(response, rangeFlows(this.sources, range, shown, limit).then((flows) =>
        ({ window: range.name, since: range.sinceMs, until: range.untilMs, limit, flows: flows.map((f) => FlowRecord.toJSON(f)) })));
      return;
    }
    const window = query.window();
    // The same span as the map and the details pane (bucket-aligned), so the table matches them.
    const sinceMs = this.sources.flowMap.windowStart(window.ms);
    const flows = this.sources.history.query({
      predicate: shown,
      since: timestampOfMs(sinceMs),
      last: limit,
    });
    this.json(response, { window: window.name, limit, flows: flows.map((f) => FlowRecord.toJSON(f)) });
  }

  /** The view's range: a past one as asked for, or the live window's bucket-aligned span up to now (as the map shows it). */
  private viewSpan(query: Query): HistoryRange {
    const range = historyRange(query, this.sources);
    if (range !== undefined) return range;
    const window = query.window();
    return { name: window.name, sinceMs: this.sources.flowMap.windowStart(window.ms), untilMs: this.sources.now() };
  }

  /** Undefined when every flow is visible. */
  private visibleFlows(scope: Scope): FlowPredicate | undefined {
    if (scope.kind === "cluster") return undefined;
    return (r) => flowInScope(scope, r);
  }

  /**
   * POST /api/v1/policy/what-if: the body is the draft (YAML or JSON), replayed against the
   * recorded flows of the view's range (a live window, or a past one), as PolicyWhatIf does.
   */
  private whatIf(params: URLSearchParams, scope: Scope, response: ServerResponse, request: IncomingMessage): void {
    const query = Query.parse(params, ["namespace", "window", "from", "to", "mode", "name"]);
    const namespace = query.namespace();
    const span = this.viewSpan(query);
    const name = query.get("name") ?? "draft.yaml";
    if (!/^[A-Za-z0-9._-]{1,100}$/.test(name)) throw badParameter("name", name, "is not a file name (letters, digits, . _ -)");
    this.later(response, readBody(request, MAX_DRAFT_BYTES).then(async (body) => {
      const req = whatIfRequest(body, name, namespace, query.get("mode") ?? "", span);
      return whatIfJson(await this.sources.policyWhatIf(scope, req), span.name);
    }));
  }

  /** GET /api/v1/policy/suggest: SuggestPolicies for one namespace over the view's range, each policy as YAML with its justifying flows. */
  private suggest(params: URLSearchParams, scope: Scope, response: ServerResponse): void {
    const query = Query.parse(params, ["namespace", "window", "from", "to"]);
    const namespace = query.namespace();
    const span = this.viewSpan(query);
    const req = suggestRequest(namespace, span);
    this.later(response, this.sources.suggestPolicies(scope, req).then((r) => suggestionsJson(r, namespace, span.name)));
  }

  /** GET /api/v1/details: a node's or an edge's totals and the policies selecting it and deciding its flows, over a live window or a past range. */
  private details(params: URLSearchParams, scope: Scope, response: ServerResponse): void {
    const query = Query.parse(params, ["node", "edge", "window", "from", "to"]);
    const range = historyRange(query, this.sources);
    const window = range === undefined ? query.window() : undefined;
    const viewName = range?.name ?? window!.name;
    const nodeText = query.get("node"), edgeText = query.get("edge");
    if ((nodeText === undefined) === (edgeText === undefined)) {
      throw new ApiError(400, "details takes exactly one of the parameters node and edge");
    }
    const { state, history, flowMap, policy } = this.sources;
    const model = policy.model();
    const visible = this.visibleFlows(scope) ?? (() => true);
    let target: DetailTarget;
    let namespace: string;
    if (nodeText !== undefined) {
      const node = parseNodeId("node", nodeText);
      this.requireVisible(scope, node);
      target = { node };
      namespace = nodeNamespace(node);
    } else {
      const { key, source, destination } = parseEdgeId("edge", edgeText!);
      if (!endsInScope(scope, nodeNamespace(source), nodeNamespace(destination))) {
        throw new ApiError(403, `edge ${JSON.stringify(edgeText)} has no end in this request's access scope`);
      }
      target = { edge: key, source, destination };
      namespace = nodeNamespace(source) || nodeNamespace(destination);
    }
    // The map and the records of the view: the live window's (bucket-aligned, as the map
    // shows it), or exactly the past range's, from the store.
    const cheap = detailCandidates(target);
    const candidates = (r: FlowRecord) => cheap(r) && visible(r);
    const limit = this.maxDetailRecords + 1;
    const work = range !== undefined
      ? Promise.all([rangeFlowMap(this.sources, range, namespace), rangeFlows(this.sources, range, candidates, limit)])
      : Promise.resolve([flowMap.getMap({ namespace: namespace || undefined, windowMs: window!.ms }), [...history.iterate({
        predicate: candidates, since: timestampOfMs(flowMap.windowStart(window!.ms)), last: limit })]] as const);
    // Cut to the scope first: a world or host node has no namespace of its own, and its
    // edges into namespaces the token cannot read must not count (or even reveal it).
    this.later(response, work.then(([fullMap, records]) => {
      const map = restrictFlowMap(scope, fullMap);
      const { decidedBy, records: count, examined, truncated } = decidingPolicies(records, model, target, this.maxDetailRecords);
      if ("node" in target) {
        const node = target.node;
        const found = map.nodes.find((n) => n.id === node.id);
        if (found === undefined) throw notFound("node", node.id, viewName);
        const edges = map.edges.filter((e) => e.source === node.id || e.destination === node.id);
        return {
          window: viewName, node: nodeJson(found), edges: edges.length, records: count, examined, truncated,
          packets: edges.reduce((sum, e) => sum + Number(e.packets), 0), bytes: edges.reduce((sum, e) => sum + Number(e.bytes), 0),
          selectedBy: selectingPolicies(state, model, node, ["ingress", "egress"]), decidedBy,
        };
      }
      const { edge: key, source, destination } = target;
      const found = map.edges.find((e) => e.source === key.source && e.destination === key.destination && e.protocol === key.protocol && e.port === key.port);
      if (found === undefined) throw notFound("edge", edgeText!, viewName);
      const selectedBy = [...selectingPolicies(state, model, source, ["egress"]), ...selectingPolicies(state, model, destination, ["ingress"])];
      return { window: viewName, edge: edgeJson(found), records: count, examined, truncated, selectedBy, decidedBy };
    }));
  }

  private requireVisible(scope: Scope, node: ParsedNode): void {
    const namespace = nodeNamespace(node);
    if (namespace !== "" && !namespaceReadable(scope, namespace)) {
      throw new ApiError(403, `node ${JSON.stringify(node.id)} is in namespace ${JSON.stringify(namespace)}, outside this request's access scope`);
    }
  }

  // ---- static files --------------------------------------------------------------------------

  private serveStatic(rawTarget: string, pathname: string, method: string, response: ServerResponse): void {
    let decoded: string;
    try {
      decoded = decodeURIComponent(pathname);
    } catch {
      throw new ApiError(400, `path ${JSON.stringify(rawTarget)} is not valid percent-encoding`);
    }
    const file = path.resolve(this.staticDir, `.${decoded}`);
    if (decoded.includes("\0") || (file !== this.staticDir && !file.startsWith(this.staticDir + path.sep))) {
      throw new ApiError(403, `path ${JSON.stringify(rawTarget)} leaves the UI folder`);
    }
    const index = path.join(this.staticDir, "index.html");
    let target = file;
    let stat = statOf(target);
    if (stat?.isDirectory()) { target = path.join(target, "index.html"); stat = statOf(target); }
    // Client-side routes (no file extension) get the app; a missing asset is a 404.
    if (stat === undefined && path.extname(decoded) === "") { target = index; stat = statOf(target); }
    if (stat === undefined || !stat.isFile()) {
      if (!fs.existsSync(index)) throw new ApiError(503, `the web UI is not built (${index} is missing): run npm run build:ui`);
      throw new ApiError(404, `no file ${JSON.stringify(decoded)}`);
    }
    const type = CONTENT_TYPES[path.extname(target).toLowerCase()] ?? "application/octet-stream";
    // Vite names assets by content hash: they never change; index.html must be re-read.
    const cache = target.includes(`${path.sep}assets${path.sep}`) ? "public, max-age=31536000, immutable" : "no-cache";
    response.writeHead(200, { "content-type": type, "content-length": stat.size, "cache-control": cache, "x-content-type-options": "nosniff" });
    if (method === "HEAD") { response.end(); return; }
    fs.createReadStream(target).on("error", () => response.destroy()).pipe(response);
  }
}

/** The request's body as UTF-8, refused (413) past `max` bytes. */
function readBody(request: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) { reject(new ApiError(413, `the draft is larger than ${max} bytes`)); request.destroy(); return; }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

function statOf(file: string): fs.Stats | undefined {
  try { return fs.statSync(file); } catch { return undefined; }
}

/** compileFilter names fields by their proto names ("source_ip"); the API's parameters are observe's ("from-ip"). */
function parameterOfField(field: string): string {
  return field.replace(/^source_/, "from-").replace(/^destination_/, "to-");
}

