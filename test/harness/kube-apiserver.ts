// A stand-in for the Kubernetes API server (none can run here), speaking the list/watch
// protocol the way kube-apiserver does for the resources the control plane reads:
//
// - HTTPS on 127.0.0.1 with a self-signed certificate (openssl) and a bearer token; a
//   kubeconfig file that points at it with the CA, as a real one would. 401 without the token.
// - One global resourceVersion counter; every create/update/delete gets the next one.
// - LIST `GET /api/v1/pods`, `/apis/<group>/<version>/<resource>`: items sorted by
//   namespace/name without kind/apiVersion (as the API server sends them), the collection's
//   resourceVersion, `limit`/`continue` served from the first page's snapshot, 410 Expired
//   for a continue token older than the compacted history.
// - WATCH `?watch=true&resourceVersion=N`: a chunked stream of JSON lines (ADDED,
//   MODIFIED, DELETED; BOOKMARK only with allowWatchBookmarks=true), replaying history
//   after N; an ERROR event with a 410 Expired Status when N is older than the compacted
//   window; `timeoutSeconds` ends the stream cleanly.
// - GET /version: a version.Info document, 1.31 unless the test sets another (`version`,
//   e.g. { major: "1", minor: "20" } or EKS-style "21+"; a body that is not one, to test
//   the parser; or an error status).
// - Faults on demand: drop every watch connection mid-stream, compact history, answer a
//   resource's requests with an error status (500, 403, ...).
// It does not emulate: field/label selectors, namespaced URLs, resourceVersionMatch, RV
// "0" list semantics beyond "latest", server-side apply, admission or validation (it
// stores what it is given, keeping a given uid and creationTimestamp so fixtures can
// refer to owners), watch-list streaming, protobuf, or HTTP/2.
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import os from "node:os";
import path from "node:path";

interface ResourceType {
  kind: string;
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

// What a real server would announce through discovery, for the kinds tests use.
const RESOURCE_TYPES: ResourceType[] = [
  { kind: "Namespace", group: "", version: "v1", plural: "namespaces", namespaced: false },
  { kind: "Node", group: "", version: "v1", plural: "nodes", namespaced: false },
  { kind: "Pod", group: "", version: "v1", plural: "pods", namespaced: true },
  { kind: "Service", group: "", version: "v1", plural: "services", namespaced: true },
  { kind: "ConfigMap", group: "", version: "v1", plural: "configmaps", namespaced: true },
  { kind: "EndpointSlice", group: "discovery.k8s.io", version: "v1", plural: "endpointslices", namespaced: true },
  { kind: "NetworkPolicy", group: "networking.k8s.io", version: "v1", plural: "networkpolicies", namespaced: true },
  { kind: "ClusterNetworkPolicy", group: "policy.networking.k8s.io", version: "v1alpha2", plural: "clusternetworkpolicies", namespaced: false },
  { kind: "ReplicaSet", group: "apps", version: "v1", plural: "replicasets", namespaced: true },
  { kind: "Deployment", group: "apps", version: "v1", plural: "deployments", namespaced: true },
  { kind: "StatefulSet", group: "apps", version: "v1", plural: "statefulsets", namespaced: true },
  { kind: "DaemonSet", group: "apps", version: "v1", plural: "daemonsets", namespaced: true },
  { kind: "Job", group: "batch", version: "v1", plural: "jobs", namespaced: true },
  { kind: "CronJob", group: "batch", version: "v1", plural: "cronjobs", namespaced: true },
];

function apiVersionOf(t: ResourceType): string {
  return t.group === "" ? t.version : `${t.group}/${t.version}`;
}

function pathOf(t: ResourceType): string {
  return t.group === "" ? `/api/${t.version}/${t.plural}` : `/apis/${t.group}/${t.version}/${t.plural}`;
}

type Json = Record<string, unknown>;
type EventType = "ADDED" | "MODIFIED" | "DELETED";

interface LogEntry {
  rv: number;
  plural: string;
  key: string;
  type: EventType;
  /** The object after the change (for DELETED: as it was when deleted, with the delete's RV). */
  object: Json;
  /** The object before the change; undefined for ADDED. */
  previous: Json | undefined;
}

interface Watcher {
  plural: string;
  bookmarks: boolean;
  res: ServerResponse;
  /** Events of this resource are written from here on (history up to it was replayed). */
  timer: NodeJS.Timeout | undefined;
}

export interface RequestLogEntry {
  method: string;
  plural: string;
  watch: boolean;
  query: Record<string, string>;
  status: number;
}

interface Fault {
  status: number;
  /** Requests left to fail; Infinity until healed. */
  remaining: number;
}

const REASONS: Record<number, string> = {
  400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 410: "Expired",
  429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
};

function status(code: number, message: string, reason = REASONS[code] ?? "Unknown"): Json {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

export class FakeKubeApiServer {
  readonly token = `fake-token-${randomUUID()}`;
  /** Every request, in order. */
  readonly requests: RequestLogEntry[] = [];
  private readonly dir: string;
  private server!: https.Server;
  private port = 0;
  private rv = 1;
  /** Watches from an RV below this get 410 Expired. */
  private compactedRv = 1;
  private readonly stores = new Map<string, Map<string, Json>>();
  private log: LogEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private readonly faults = new Map<string, Fault>();
  /** What GET /version answers: the body (200), or an error status. */
  version: Json | { status: number } = { major: "1", minor: "31", gitVersion: "v1.31.4", platform: "linux/amd64" };

  private constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-fake-apiserver-"));
    for (const t of RESOURCE_TYPES) this.stores.set(t.plural, new Map());
  }

  static async start(): Promise<FakeKubeApiServer> {
    const s = new FakeKubeApiServer();
    await s.listen();
    return s;
  }

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get caFile(): string {
    return path.join(this.dir, "ca.crt");
  }

  /** A kubeconfig with the server's CA and token, as `kubectl config view --raw` would show it. */
  get kubeconfigPath(): string {
    return path.join(this.dir, "kubeconfig");
  }

  /** The newest resourceVersion handed out. */
  get resourceVersion(): number {
    return this.rv;
  }

  private async listen(): Promise<void> {
    const key = path.join(this.dir, "tls.key");
    // One self-signed certificate, its own CA, valid for 127.0.0.1 only.
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", key, "-out", this.caFile, "-days", "2", "-subj", "/CN=fake-kube-apiserver",
      "-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE"], { stdio: "pipe" });
    this.server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(this.caFile) }, (req, res) => this.handle(req, res));
    this.server.on("connection", (socket: Socket) => {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    if (typeof address !== "object" || address === null) throw new Error("fake apiserver: no address");
    this.port = address.port;
    fs.writeFileSync(this.kubeconfigPath, [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: fake",
      "  cluster:",
      `    server: ${this.url}`,
      `    certificate-authority: ${this.caFile}`,
      "users:",
      "- name: fake-user",
      "  user:",
      `    token: ${this.token}`,
      "contexts:",
      "- name: fake",
      "  context: { cluster: fake, user: fake-user }",
      "current-context: fake",
      "",
    ].join("\n"));
  }

  /** Open TCP connections from clients (list requests finished, watches still streaming, ...). */
  openConnections(): number {
    return this.sockets.size;
  }

  /** Watch streams currently open, for one resource or all. */
  openWatches(plural?: string): number {
    return [...this.watchers].filter((w) => plural === undefined || w.plural === plural).length;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) this.endWatch(w);
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // -------------------------------------------------------------------------------------
  // Objects

  private typeOf(object: Json): ResourceType {
    const t = RESOURCE_TYPES.find((r) => r.kind === object.kind && apiVersionOf(r) === object.apiVersion);
    if (!t) throw new Error(`fake apiserver: no resource for ${String(object.apiVersion)} ${String(object.kind)}`);
    return t;
  }

  private keyOf(t: ResourceType, object: Json): string {
    const meta = (object.metadata ?? {}) as Json;
    if (typeof meta.name !== "string") throw new Error("fake apiserver: metadata.name is required");
    const ns = t.namespaced ? String(meta.namespace ?? "default") : "";
    return `${ns}/${meta.name}`;
  }

  /** Creates an object (kind, apiVersion, metadata.name[, namespace]); returns it as stored. */
  create(input: Json): Json {
    const t = this.typeOf(input);
    const key = this.keyOf(t, input);
    const store = this.stores.get(t.plural)!;
    if (store.has(key)) throw new Error(`fake apiserver: ${t.kind} ${key} exists`);
    const object = clone(input);
    const meta = (object.metadata ?? {}) as Json;
    object.metadata = meta;
    if (t.namespaced) meta.namespace ??= "default";
    meta.uid ??= randomUUID();
    meta.creationTimestamp ??= new Date().toISOString().replace(/\.\d+Z$/, "Z");
    meta.resourceVersion = String(++this.rv);
    store.set(key, object);
    this.record(t, key, "ADDED", object, undefined);
    return clone(object);
  }

  /** Replaces an existing object (same kind, namespace, name); keeps its uid. */
  update(input: Json): Json {
    const t = this.typeOf(input);
    const key = this.keyOf(t, input);
    const store = this.stores.get(t.plural)!;
    const previous = store.get(key);
    if (!previous) throw new Error(`fake apiserver: ${t.kind} ${key} does not exist`);
    const object = clone(input);
    const meta = (object.metadata ?? {}) as Json;
    object.metadata = meta;
    const prevMeta = previous.metadata as Json;
    if (t.namespaced) meta.namespace = prevMeta.namespace;
    meta.uid = prevMeta.uid;
    meta.creationTimestamp = prevMeta.creationTimestamp;
    meta.resourceVersion = String(++this.rv);
    store.set(key, object);
    this.record(t, key, "MODIFIED", object, previous);
    return clone(object);
  }

  /** Deletes an object; watchers get DELETED with its last state at the delete's RV. */
  delete(apiVersion: string, kind: string, namespace: string, name: string): void {
    const t = this.typeOf({ apiVersion, kind });
    const key = `${t.namespaced ? namespace : ""}/${name}`;
    const store = this.stores.get(t.plural)!;
    const previous = store.get(key);
    if (!previous) throw new Error(`fake apiserver: ${t.kind} ${key} does not exist`);
    store.delete(key);
    const object = clone(previous);
    (object.metadata as Json).resourceVersion = String(++this.rv);
    this.record(t, key, "DELETED", object, previous);
  }

  /** Objects of a kind as stored now. */
  list(plural: string): Json[] {
    return [...(this.stores.get(plural)?.values() ?? [])].map(clone);
  }

  private record(t: ResourceType, key: string, type: EventType, object: Json, previous: Json | undefined): void {
    const entry: LogEntry = { rv: this.rv, plural: t.plural, key, type, object: clone(object), previous: previous && clone(previous) };
    this.log.push(entry);
    for (const w of this.watchers) {
      if (w.plural === t.plural) this.send(w, { type, object: entry.object });
    }
  }

  // -------------------------------------------------------------------------------------
  // Faults

  /** Forgets history up to now, as etcd compaction does: older RVs get 410 Expired. */
  compact(): void {
    this.compactedRv = this.rv;
    this.log = this.log.filter((e) => e.rv > this.compactedRv);
  }

  /** Cuts every open watch (of one resource, or all) mid-stream, as a lost connection would. */
  dropWatches(plural?: string): void {
    for (const w of [...this.watchers]) {
      if (plural !== undefined && w.plural !== plural) continue;
      this.watchers.delete(w);
      if (w.timer) clearTimeout(w.timer);
      w.res.socket?.destroy();
    }
  }

  /** Sends a BOOKMARK with the current RV to every watch that asked for bookmarks. */
  bookmark(plural?: string): void {
    for (const w of this.watchers) {
      if (!w.bookmarks || (plural !== undefined && w.plural !== plural)) continue;
      const t = RESOURCE_TYPES.find((r) => r.plural === w.plural)!;
      this.send(w, { type: "BOOKMARK", object: { kind: t.kind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Answers the next `times` requests (list or watch) for a resource with `code`. */
  fail(plural: string, code: number, times = Infinity): void {
    this.faults.set(plural, { status: code, remaining: times });
  }

  heal(plural: string): void {
    this.faults.delete(plural);
  }

  // -------------------------------------------------------------------------------------
  // HTTP

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "https://127.0.0.1");
    const query = Object.fromEntries(url.searchParams);
    const t = RESOURCE_TYPES.find((r) => pathOf(r) === url.pathname);
    const watch = query.watch === "true" || query.watch === "1";
    const reply = (code: number, body: Json): void => {
      this.requests.push({ method: req.method ?? "", plural: t?.plural ?? url.pathname, watch, query, status: code });
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      reply(401, status(401, "Unauthorized"));
      return;
    }
    if (url.pathname === "/version" && req.method === "GET") {
      const v = this.version;
      if (typeof v.status === "number") reply(v.status, status(v.status, `injected failure ${v.status} for /version`));
      else reply(200, clone(v));
      return;
    }
    if (!t) {
      reply(404, status(404, `the server could not find the requested resource (${url.pathname})`));
      return;
    }
    if (req.method !== "GET") {
      reply(405, status(405, `${req.method} is not supported by this fake`, "MethodNotAllowed"));
      return;
    }
    const fault = this.faults.get(t.plural);
    if (fault && fault.remaining > 0) {
      fault.remaining--;
      const message = fault.status === 403
        ? `${t.plural} is forbidden: User "system:serviceaccount:bulkhead:controlplane" cannot ${watch ? "watch" : "list"} resource "${t.plural}" in API group "${t.group}" at the cluster scope`
        : `injected failure ${fault.status} for ${t.plural}`;
      reply(fault.status, status(fault.status, message));
      return;
    }
    if (watch) {
      this.requests.push({ method: "GET", plural: t.plural, watch, query, status: 200 });
      this.serveWatch(t, query, res);
      return;
    }
    this.serveList(t, query, reply);
  }

  /** The resource's objects as they were at `rv` (history after it undone), by key. */
  private snapshot(t: ResourceType, rv: number): Map<string, Json> {
    const objects = new Map(this.stores.get(t.plural)!);
    for (let i = this.log.length - 1; i >= 0; i--) {
      const e = this.log[i]!;
      if (e.rv <= rv) break;
      if (e.plural !== t.plural) continue;
      if (e.previous) objects.set(e.key, e.previous);
      else objects.delete(e.key);
    }
    return objects;
  }

  private serveList(t: ResourceType, query: Record<string, string>, reply: (code: number, body: Json) => void): void {
    let snapshotRv = this.rv;
    let after = "";
    if (query.continue) {
      let token: { rv?: unknown; start?: unknown };
      try {
        token = JSON.parse(Buffer.from(query.continue, "base64url").toString("utf8")) as { rv?: unknown; start?: unknown };
      } catch {
        reply(400, status(400, "continue key is not valid"));
        return;
      }
      if (typeof token.rv !== "number" || typeof token.start !== "string") {
        reply(400, status(400, "continue key is not valid"));
        return;
      }
      if (token.rv < this.compactedRv) {
        reply(410, status(410, "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
        return;
      }
      snapshotRv = token.rv;
      after = token.start;
    }
    const limit = query.limit ? Number(query.limit) : 0;
    const keys = [...this.snapshot(t, snapshotRv).entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .filter(([k]) => k > after);
    const page = limit > 0 ? keys.slice(0, limit) : keys;
    const metadata: Json = { resourceVersion: String(snapshotRv) };
    if (limit > 0 && keys.length > limit) {
      metadata.continue = Buffer.from(JSON.stringify({ rv: snapshotRv, start: page[page.length - 1]![0] })).toString("base64url");
      metadata.remainingItemCount = keys.length - limit;
    }
    const items = page.map(([, o]) => {
      const { kind: _kind, apiVersion: _apiVersion, ...rest } = clone(o);
      return rest;
    });
    reply(200, { kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata, items });
  }

  private serveWatch(t: ResourceType, query: Record<string, string>, res: ServerResponse): void {
    // No content-length: node sends the stream with Transfer-Encoding: chunked.
    res.writeHead(200, { "content-type": "application/json" });
    res.flushHeaders();
    const w: Watcher = { plural: t.plural, bookmarks: query.allowWatchBookmarks === "true", res, timer: undefined };
    const from = query.resourceVersion ?? "";
    if (from === "" || from === "0") {
      // "Any": start with the current state as ADDED events.
      for (const o of this.stores.get(t.plural)!.values()) this.send(w, { type: "ADDED", object: o });
    } else {
      const rv = Number(from);
      if (!Number.isInteger(rv) || rv < 0) {
        this.send(w, { type: "ERROR", object: status(400, `invalid resourceVersion ${JSON.stringify(from)}`) });
        res.end();
        return;
      }
      if (rv < this.compactedRv) {
        this.send(w, { type: "ERROR", object: status(410, `too old resource version: ${rv} (${this.compactedRv})`) });
        res.end();
        return;
      }
      for (const e of this.log) if (e.plural === t.plural && e.rv > rv) this.send(w, { type: e.type, object: e.object });
    }
    this.watchers.add(w);
    res.on("close", () => this.watchers.delete(w));
    const timeout = Number(query.timeoutSeconds ?? "0");
    if (timeout > 0) w.timer = setTimeout(() => this.endWatch(w), timeout * 1000);
  }

  private endWatch(w: Watcher): void {
    this.watchers.delete(w);
    if (w.timer) clearTimeout(w.timer);
    w.res.end();
  }

  private send(w: Watcher, event: { type: string; object: Json }): void {
    w.res.write(JSON.stringify(event) + "\n");
  }
}
