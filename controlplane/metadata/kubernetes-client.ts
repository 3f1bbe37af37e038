// How the Kubernetes API source reaches the API server: where its credentials come from
// (in-cluster service account or a kubeconfig file), paged LIST requests, and a watch
// that asks for bookmarks. @kubernetes/client-node supplies the credentials, TLS agents
// and the watch stream; this file fills what its informer leaves out.
import { existsSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import path from "node:path";
import { KubeConfig, Watch, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import type { WatchedResource } from "./kubernetes-resources.js";
import type { KubeConnection } from "./kubernetes-connection.js";

const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Loads credentials; throws an Error naming the file or variable that is missing or wrong. */
export function loadKubeConfig(connection: KubeConnection, env: NodeJS.ProcessEnv = process.env): KubeConfig {
  const kc = new KubeConfig();
  if (connection.kind === "in-cluster") {
    if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT) {
      throw new Error("in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set (they are in a pod); outside a cluster pass --kubeconfig PATH");
    }
    for (const file of ["token", "ca.crt"]) {
      const p = path.join(SERVICE_ACCOUNT_DIR, file);
      if (!existsSync(p)) throw new Error(`in-cluster config: ${p} does not exist (is a service account token mounted?)`);
    }
    kc.loadFromCluster();
    return kc;
  }
  if (!existsSync(connection.path)) throw new Error(`kubeconfig ${connection.path}: no such file`);
  try {
    kc.loadFromFile(connection.path);
  } catch (err) {
    throw new Error(`kubeconfig ${connection.path}: ${(err as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`kubeconfig ${connection.path}: the current context "${kc.getCurrentContext()}" names no cluster`);
  if (!/^https?:\/\//.test(cluster.server)) {
    throw new Error(`kubeconfig ${connection.path}: cluster "${cluster.name}" has server ${JSON.stringify(cluster.server)}, expected an https:// URL`);
  }
  return kc;
}

/** The API server's URL, for names and messages. */
export function apiServerOf(kc: KubeConfig): string {
  return kc.getCurrentCluster()?.server ?? "(no cluster)";
}

/** Path of a resource across all namespaces: /api/v1/pods, /apis/apps/v1/deployments. */
export function collectionPath(r: WatchedResource): string {
  return r.group === "" ? `/api/${r.version}/${r.resource}` : `/apis/${r.group}/${r.version}/${r.resource}`;
}

export function apiVersionOf(r: WatchedResource): string {
  return r.group === "" ? r.version : `${r.group}/${r.version}`;
}

/** A request the API server answered with an error status, or that never got an answer. */
export class KubeApiError extends Error {
  constructor(
    /** HTTP status; undefined when the server could not be reached. */
    readonly statusCode: number | undefined,
    /** The Status object's reason (Forbidden, Expired, ...), when the server sent one. */
    readonly reason: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

/** "HTTP 403 Forbidden: pods is forbidden: ..." or "connect ECONNREFUSED 127.0.0.1:6443". */
export function describeApiFailure(err: unknown): { status: number | undefined; text: string } {
  if (err instanceof KubeApiError) return { status: err.statusCode, text: err.message };
  const e = err as { statusCode?: unknown; code?: unknown; message?: unknown };
  const status = typeof e.statusCode === "number" ? e.statusCode : typeof e.code === "number" ? e.code : undefined;
  const message = typeof e.message === "string" && e.message !== "" ? e.message : String(err);
  return { status, text: status === undefined ? message : `HTTP ${status} ${message}` };
}

const LIST_TIMEOUT_MS = 60_000;

/** GET of a JSON document with the kubeconfig's credentials; throws KubeApiError. */
export async function getJson(kc: KubeConfig, urlPath: string, query: Record<string, string>, signal: AbortSignal): Promise<unknown> {
  const server = apiServerOf(kc);
  const url = new URL(server.replace(/\/+$/, "") + urlPath);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  // Re-read per request: in-cluster tokens are rotated on disk.
  const options: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(options);
  const requestOptions: https.RequestOptions = {
    agent: options.agent, auth: options.auth, headers: { ...options.headers, accept: "application/json" },
    signal: AbortSignal.any([signal, AbortSignal.timeout(LIST_TIMEOUT_MS)]),
  };
  const get = url.protocol === "http:" ? http.get : https.get;
  return await new Promise<unknown>((resolve, reject) => {
    const req = get(url, requestOptions, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (err) => reject(new KubeApiError(undefined, undefined, `GET ${urlPath}: ${err.message}`)));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        const status = res.statusCode ?? 0;
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        if (status === 200 && body !== undefined) {
          resolve(body);
          return;
        }
        if (status === 200) {
          reject(new KubeApiError(status, undefined, `GET ${urlPath}: the answer is not JSON: ${text.slice(0, 80)}`));
          return;
        }
        const st = (typeof body === "object" && body !== null ? body : {}) as { reason?: unknown; message?: unknown };
        const reason = typeof st.reason === "string" ? st.reason : undefined;
        const detail = typeof st.message === "string" ? st.message : text.slice(0, 200);
        reject(new KubeApiError(status, reason, `HTTP ${status}${reason ? ` ${reason}` : ""}: ${detail}`));
      });
    });
    req.on("error", (err) => reject(new KubeApiError(undefined, undefined, `cannot reach the API server at ${server}: ${err.message}`)));
  });
}

export interface ListedItems {
  /** The collection's resourceVersion, from which a watch continues. */
  resourceVersion: string;
  items: unknown[];
}

/**
 * Every object of a resource, in pages of `pageSize` (limit/continue) so that a large cluster
 * never needs one huge response. The server serves every page from the first page's
 * snapshot; when the continue token has expired (410) the list starts over once.
 */
export async function listAll(kc: KubeConfig, r: WatchedResource, pageSize: number, signal: AbortSignal): Promise<ListedItems> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await listPages(kc, r, pageSize, signal);
    } catch (err) {
      if (attempt === 0 && err instanceof KubeApiError && err.statusCode === 410) continue;
      throw err;
    }
  }
}

async function listPages(kc: KubeConfig, r: WatchedResource, pageSize: number, signal: AbortSignal): Promise<ListedItems> {
  const urlPath = collectionPath(r);
  const items: unknown[] = [];
  let resourceVersion: string | undefined;
  let token = "";
  do {
    const query: Record<string, string> = { limit: String(pageSize) };
    if (token !== "") query.continue = token;
    const page = await getJson(kc, urlPath, query, signal);
    const { list, metadata } = readList(urlPath, page);
    items.push(...list);
    resourceVersion ??= metadata.resourceVersion;
    token = metadata.continue;
  } while (token !== "");
  return { resourceVersion: resourceVersion ?? "", items };
}

function readList(urlPath: string, page: unknown): { list: unknown[]; metadata: { resourceVersion: string; continue: string } } {
  const bad = (what: string): never => { throw new KubeApiError(200, undefined, `GET ${urlPath}: not a list: ${what}`); };
  if (typeof page !== "object" || page === null || Array.isArray(page)) return bad("expected a map");
  const p = page as Record<string, unknown>;
  const meta = p.metadata;
  if (typeof meta !== "object" || meta === null) return bad("metadata is missing");
  const m = meta as Record<string, unknown>;
  if (typeof m.resourceVersion !== "string" || m.resourceVersion === "") return bad("metadata.resourceVersion is missing");
  if (m.continue !== undefined && typeof m.continue !== "string") return bad("metadata.continue is not a string");
  if (p.items !== undefined && p.items !== null && !Array.isArray(p.items)) return bad("items is not a list");
  return {
    list: (p.items ?? []) as unknown[],
    metadata: { resourceVersion: m.resourceVersion, continue: (m.continue as string | undefined) ?? "" },
  };
}

/** A list in the shape the informer takes, its items already checked to carry metadata. */
export function informerList(resourceVersion: string, items: KubernetesObject[]): KubernetesListObject<KubernetesObject> {
  return { metadata: { resourceVersion }, items };
}

export interface WatchObserver {
  /** The server accepted the watch (HTTP 200). */
  connected(): void;
  /** An event with a resourceVersion arrived (ADDED, MODIFIED, DELETED or BOOKMARK). */
  progressed(): void;
  /** The server ended the watch with an ERROR event other than 410 Expired. */
  watchError(status: number | undefined, message: string): void;
  /** An event object this source cannot use; it is dropped. */
  rejected(message: string): void;
  /** The watch ended: `progressed` when it delivered at least one event, `failed` on an error. */
  ended(progressed: boolean, failed: boolean): void;
  /** Resolves when the next watch may open (after a pause when watches keep ending idle). */
  beforeWatch(): Promise<void>;
  /** False once the source stops: no new watch may open. */
  active(): boolean;
}

/**
 * The client's Watch with what its informer leaves out: asks for bookmarks (so that a
 * rewatch after a quiet period starts from a recent resourceVersion instead of getting
 * 410), a server-side timeout spread over 5-10 minutes as client-go does, ends the stream
 * on an ERROR event (the informer itself only notes a 410 and waits), drops event objects
 * without metadata (the informer would throw on them), and opens nothing once stopped.
 */
export class BookmarkingWatch extends Watch {
  constructor(kc: KubeConfig, private readonly observer: WatchObserver, private readonly timeoutSeconds: () => number) {
    super(kc);
  }

  override async watch(
    urlPath: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let ended = false;
    let progressed = false;
    const doneOnce = (err: unknown): void => {
      if (ended) return;
      ended = true;
      this.observer.ended(progressed, Boolean(err));
      done(err);
    };
    await this.observer.beforeWatch();
    if (!this.observer.active()) {
      const idle = new AbortController();
      queueMicrotask(() => doneOnce(null));
      return idle;
    }
    const params = { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds() };
    const onEvent = (phase: string, object: unknown, watchObj?: unknown): void => {
      if (ended) return;
      const o = (typeof object === "object" && object !== null ? object : {}) as { metadata?: unknown; code?: unknown; message?: unknown };
      if (phase === "ERROR") {
        const code = typeof o.code === "number" ? o.code : undefined;
        // 410: the informer relists when this stream ends; anything else is a failed watch.
        if (code !== 410) this.observer.watchError(code, typeof o.message === "string" ? o.message : JSON.stringify(object));
        callback(phase, object, watchObj);
        doneOnce(null);
        return;
      }
      const meta = o.metadata as { name?: unknown; resourceVersion?: unknown } | undefined;
      if (typeof meta !== "object" || meta === null || typeof meta.resourceVersion !== "string"
        || (phase !== "BOOKMARK" && typeof meta.name !== "string")) {
        this.observer.rejected(`${urlPath}: a ${phase} watch event without metadata.name and metadata.resourceVersion was ignored`);
        return;
      }
      progressed = true;
      this.observer.progressed();
      callback(phase, object, watchObj);
    };
    const controller = await super.watch(urlPath, params, onEvent, (err: unknown) => doneOnce(err));
    if (!this.observer.active()) {
      // Stopped while connecting: the informer's stop() could not reach this request yet.
      controller.abort();
      doneOnce(null);
      return controller;
    }
    // The parent answers a non-200 status through done() before it returns.
    if (!ended) this.observer.connected();
    return controller;
  }
}
