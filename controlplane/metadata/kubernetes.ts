// A metadata source over the Kubernetes API: one @kubernetes/client-node informer
// (ListWatch: list, then watch from the list's resourceVersion) per resource in
// WATCHED_RESOURCES, cluster-wide.
//
// What the informer does: keeps the last resourceVersion (bookmarks included), relists
// on 410 Gone and diffs the new list against its cache, so objects deleted while the
// watch was down are deleted here too; rewatches when the server ends a stream.
// What it does not, done here: asking for bookmarks (kubernetes-client.ts), restarting
// after an error (it stops on any error but 410), with capped exponential backoff and
// jitter; not starting a watch after stop(); reporting a resource that keeps failing.
//
// Objects are parsed by objects.ts; one that does not parse is reported by kind,
// namespace, name and field, and its last good version stays in force (as a bad manifest
// edit does in the folder source). Changes are coalesced and applied in KIND_APPLY_ORDER.
import { ListWatch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from "@kubernetes/client-node";
import {
  apiServerOf, apiVersionOf, BookmarkingWatch, collectionPath, describeApiFailure, getJson, informerList, KubeApiError, listAll,
} from "./kubernetes-client.js";
import { kubernetesVersionRefusal, parseKubernetesVersion, type KubernetesVersion } from "./kubernetes-version.js";
import { WATCHED_RESOURCES, type WatchedResource } from "./kubernetes-resources.js";
import { KIND_APPLY_ORDER, objectFingerprint, parseKubeObject, type KubeObject } from "./objects.js";
import type { MetadataError, MetadataSink, MetadataSource, ObjectEvent } from "./source.js";

export interface Backoff {
  /** First delay after a failure. */
  initialMs: number;
  /** No delay is longer. */
  maxMs: number;
}

export interface KubernetesSourceOptions {
  kubeConfig: KubeConfig;
  /** Defaults to "kubernetes:<server URL>". */
  name?: string;
  /** Default 500 ms doubling up to 30 s. */
  backoff?: Backoff;
  /** Objects per LIST page (limit/continue); default 500 as client-go's reflector. */
  listPageSize?: number;
  /** Consecutive failures of a resource before errors() shows it; default 2 (one dropped connection is routine). */
  reportAfterFailures?: number;
  /** Wall-clock ns for observedAtNs; injectable for tests. */
  now?: () => bigint;
  /** Called whenever the set of errors() changes, so the caller can log it. */
  onErrorsChanged?: (errors: MetadataError[]) => void;
}

/**
 * Delay before retry number `attempt` (0-based): doubling from initialMs, capped at maxMs,
 * the upper half of it drawn at random ("equal jitter") so that many control planes
 * failing together do not retry in step, yet never retry at once.
 */
export function backoffDelay(backoff: Backoff, attempt: number, random: number = Math.random()): number {
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + (ceiling / 2) * random;
}

/** The object's key as objectKey() computes it, read from the raw object before it is parsed. */
function rawKey(r: WatchedResource, raw: KubernetesObject): { key: string; name: string } {
  const namespace = r.namespaced ? (raw.metadata?.namespace || "default") : "";
  const name = raw.metadata?.name ?? "";
  return { key: `${r.kind}/${namespace}/${name}`, name: namespace === "" ? `${r.kind} ${name}` : `${r.kind} ${namespace}/${name}` };
}

interface Desired {
  object: KubeObject;
  fingerprint: string;
}

/** One resource's informer and how it is doing. */
class ResourceInformer {
  readonly path: string;
  readonly informer: ListWatch<KubernetesObject>;
  listed = false;
  /** An optional CRD's resource answered 404 (not installed): no objects, no error. */
  absent = false;
  /** Consecutive failures since the last list, watch event or accepted watch. */
  failures = 0;
  /** Retry number for the backoff; reset only by progress, not by an accepted connection. */
  attempt = 0;
  lastFailure: string | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  /** Watches that ended cleanly without one event in a row: the server may be closing them at once. */
  idleWatches = 0;
  pause: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  listAbort = new AbortController();

  constructor(readonly resource: WatchedResource, build: (ri: ResourceInformer) => ListWatch<KubernetesObject>) {
    this.path = collectionPath(resource);
    this.informer = build(this);
  }
}

export class KubernetesSource implements MetadataSource {
  readonly name: string;
  private readonly kc: KubeConfig;
  private readonly backoff: Backoff;
  private readonly pageSize: number;
  private readonly reportAfter: number;
  private readonly now: () => bigint;
  private readonly onErrorsChanged: ((errors: MetadataError[]) => void) | undefined;

  private sink: MetadataSink | undefined;
  private readonly informers: ResourceInformer[] = [];
  /** What the sink should hold, by objectKey. */
  private readonly desired = new Map<string, Desired>();
  /** What the sink was given, by objectKey. */
  private readonly applied = new Map<string, Desired>();
  private readonly dirty = new Set<string>();
  /** Objects the parser rejected, by objectKey; cleared by a good version or a delete. */
  private readonly invalid = new Map<string, string>();
  /** Watch events without usable metadata, by resource path (the latest one). */
  private readonly malformed = new Map<string, string>();
  private internalError: string | undefined;
  private currentErrors: MetadataError[] = [];
  private synced = false;
  private flushScheduled: NodeJS.Immediate | undefined;
  private stopped = false;
  private syncWaiters: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private readonly versionAbort = new AbortController();
  /** The API server's version, read at start. */
  serverVersion: KubernetesVersion | undefined;

  constructor(options: KubernetesSourceOptions) {
    this.kc = options.kubeConfig;
    this.name = options.name ?? `kubernetes:${apiServerOf(this.kc)}`;
    this.backoff = options.backoff ?? { initialMs: 500, maxMs: 30_000 };
    this.pageSize = options.listPageSize ?? 500;
    this.reportAfter = options.reportAfterFailures ?? 2;
    this.now = options.now ?? (() => BigInt(Date.now()) * 1_000_000n);
    this.onErrorsChanged = options.onErrorsChanged;
  }

  async start(sink: MetadataSink): Promise<void> {
    if (this.sink) throw new Error(`${this.name}: already started`);
    this.sink = sink;
    this.serverVersion = await this.checkServerVersion();
    if (this.stopped) throw new Error(`${this.name}: stopped before every resource was listed`);
    const listedOnce = new Promise<void>((resolve, reject) => { this.syncWaiters = { resolve, reject }; });
    for (const resource of WATCHED_RESOURCES) {
      const ri = new ResourceInformer(resource, (r) => this.makeInformer(r));
      this.informers.push(ri);
    }
    for (const ri of this.informers) this.startInformer(ri);
    await listedOnce;
    if (this.stopped) return;
    this.synced = true;
    // The first batch's sink errors reach the caller; later ones become errors().
    this.flush(true);
  }

  /**
   * GET /version, retried with the backoff while the server cannot be reached or answers
   * 5xx/429 (as the informers would be); refused when it answers otherwise or is too old
   * (kubernetes-version.ts), naming the version found and the one needed.
   */
  private async checkServerVersion(): Promise<KubernetesVersion | undefined> {
    const server = apiServerOf(this.kc);
    for (let attempt = 0; ; attempt++) {
      let body: unknown;
      try {
        body = await getJson(this.kc, "/version", {}, this.versionAbort.signal);
      } catch (err) {
        if (this.stopped) return undefined;
        const retry = !(err instanceof KubeApiError) || err.statusCode === undefined || err.statusCode === 429 || err.statusCode >= 500;
        if (!retry) throw new Error(`cannot read the Kubernetes version from ${server}/version: ${describeApiFailure(err).text}`);
        if (attempt + 1 >= this.reportAfter) {
          this.internalError = `GET /version: ${describeApiFailure(err).text}; retrying with backoff, so the source has not started`;
          this.publishErrors();
        }
        await new Promise((resolve) => setTimeout(resolve, backoffDelay(this.backoff, attempt)));
        if (this.stopped) return undefined;
        continue;
      }
      if (this.internalError !== undefined) {
        this.internalError = undefined;
        this.publishErrors();
      }
      const version = parseKubernetesVersion(body, server);
      const refusal = kubernetesVersionRefusal(version, server);
      if (refusal !== undefined) throw new Error(refusal);
      return version;
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.versionAbort.abort();
    if (this.flushScheduled) clearImmediate(this.flushScheduled);
    this.flushScheduled = undefined;
    for (const ri of this.informers) {
      if (ri.retryTimer) clearTimeout(ri.retryTimer);
      ri.retryTimer = undefined;
      if (ri.pause) {
        clearTimeout(ri.pause.timer);
        ri.pause.resolve();
        ri.pause = undefined;
      }
      ri.listAbort.abort();
      await ri.informer.stop();
    }
    this.syncWaiters?.reject(new Error(`${this.name}: stopped before every resource was listed`));
    this.syncWaiters = undefined;
  }

  errors(): MetadataError[] {
    return this.currentErrors.map((e) => ({ ...e }));
  }

  /** The resourceVersion each resource's watch continues from, by plural resource name. */
  resourceVersions(): Record<string, string> {
    return Object.fromEntries(this.informers.map((ri) => [ri.resource.resource, ri.informer.latestResourceVersion()]));
  }

  private makeInformer(ri: ResourceInformer): ListWatch<KubernetesObject> {
    const watch = new BookmarkingWatch(this.kc, {
      connected: () => this.recovered(ri, false),
      progressed: () => this.recovered(ri, true),
      watchError: (status, message) => this.failed(ri, `watch ended with an error${status === undefined ? "" : ` (HTTP ${status})`}: ${message}`),
      rejected: (message) => {
        this.malformed.set(ri.path, message);
        this.publishErrors();
      },
      ended: (progressed, failed) => {
        ri.idleWatches = progressed || failed ? 0 : ri.idleWatches + 1;
      },
      beforeWatch: () => this.pauseIfIdle(ri),
      active: () => !this.stopped,
    }, () => 300 + Math.floor(Math.random() * 300));
    const informer = new ListWatch<KubernetesObject>(ri.path, watch, () => this.list(ri), false);
    informer.on("add", (raw) => this.onUpsert(ri.resource, raw));
    informer.on("update", (raw) => this.onUpsert(ri.resource, raw));
    informer.on("delete", (raw) => this.onDelete(ri.resource, raw));
    informer.on("error", (err: unknown) => {
      if (this.stopped) return;
      if (!ri.absent) this.failed(ri, describeApiFailure(err).text);
      this.scheduleRestart(ri);
    });
    return informer;
  }

  private startInformer(ri: ResourceInformer): void {
    ri.informer.start().catch((err: unknown) => {
      // start() catches list and watch failures itself; anything else is a bug here.
      if (this.stopped) return;
      this.failed(ri, `informer failed: ${(err as Error).message}`);
      this.scheduleRestart(ri);
    });
  }

  /**
   * The informer reopens a watch the server ended cleanly at once; a server that keeps
   * ending watches without sending anything would make that a busy loop. From the second
   * such watch in a row, wait as after a failure.
   */
  private pauseIfIdle(ri: ResourceInformer): Promise<void> {
    if (ri.idleWatches < 2 || this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      ri.pause = { resolve, timer: setTimeout(() => { ri.pause = undefined; resolve(); }, backoffDelay(this.backoff, ri.attempt++)) };
    });
  }

  private async list(ri: ResourceInformer): Promise<KubernetesListObject<KubernetesObject>> {
    if (this.stopped) throw new Error("stopped");
    ri.listAbort = new AbortController();
    let listed: Awaited<ReturnType<typeof listAll>>;
    try {
      listed = await listAll(this.kc, ri.resource, this.pageSize, ri.listAbort.signal);
    } catch (err) {
      if (ri.resource.optionalCrd === true && describeApiFailure(err).status === 404) {
        // The CRD is not installed: there are none. Synced; the informer retries with backoff.
        ri.absent = true;
        if (!ri.listed) {
          ri.listed = true;
          setImmediate(() => this.checkListed());
        }
      }
      throw err;
    }
    ri.absent = false;
    const items: KubernetesObject[] = [];
    const malformed: string[] = [];
    listed.items.forEach((item, i) => {
      const o = (typeof item === "object" && item !== null && !Array.isArray(item) ? item : undefined) as Record<string, unknown> | undefined;
      const meta = o?.metadata as Record<string, unknown> | undefined;
      if (!o || typeof meta !== "object" || meta === null || typeof meta.name !== "string" || meta.name === "") {
        malformed.push(`${ri.path}: items[${i}]: expected an object with metadata.name`);
        return;
      }
      // Items of a list carry no kind or apiVersion; the parser needs both.
      items.push({ ...o, kind: (o.kind as string | undefined) ?? ri.resource.kind, apiVersion: (o.apiVersion as string | undefined) ?? apiVersionOf(ri.resource) });
    });
    const message = malformed.length > 0 ? malformed.join("; ") : undefined;
    if (this.malformed.get(ri.path) !== message) {
      if (message === undefined) this.malformed.delete(ri.path); else this.malformed.set(ri.path, message);
      this.publishErrors();
    }
    if (!ri.listed) {
      ri.listed = true;
      // The informer hands the items to its callbacks in the microtasks after this returns.
      setImmediate(() => this.checkListed());
    }
    ri.idleWatches = 0;
    this.recovered(ri, true);
    return informerList(listed.resourceVersion, items);
  }

  private checkListed(): void {
    if (this.informers.every((ri) => ri.listed)) {
      this.syncWaiters?.resolve();
      this.syncWaiters = undefined;
    }
  }

  private onUpsert(resource: WatchedResource, raw: KubernetesObject): void {
    if (this.stopped) return;
    const { key, name } = rawKey(resource, raw);
    // Watch events carry kind and apiVersion; a relist's items got them in list().
    const doc = { ...raw, kind: raw.kind ?? resource.kind, apiVersion: raw.apiVersion ?? apiVersionOf(resource) };
    let object: KubeObject | undefined;
    try {
      object = parseKubeObject(doc);
      if (!object) throw new Error(`${name}: apiVersion ${doc.apiVersion} is not ${apiVersionOf(resource)}`);
    } catch (err) {
      this.invalid.set(key, `${(err as Error).message} (last good version kept)`);
      this.publishErrors();
      return;
    }
    const hadError = this.invalid.delete(key);
    const fingerprint = objectFingerprint(object);
    if (this.desired.get(key)?.fingerprint !== fingerprint) {
      this.desired.set(key, { object, fingerprint });
      this.markDirty(key);
    }
    if (hadError) this.publishErrors();
  }

  private onDelete(resource: WatchedResource, raw: KubernetesObject): void {
    if (this.stopped) return;
    const { key } = rawKey(resource, raw);
    if (this.invalid.delete(key)) this.publishErrors();
    if (this.desired.delete(key)) this.markDirty(key);
  }

  private markDirty(key: string): void {
    this.dirty.add(key);
    if (!this.synced || this.flushScheduled) return;
    // One batch for everything the informers deliver in one turn (a relist, a burst of events).
    this.flushScheduled = setImmediate(() => {
      this.flushScheduled = undefined;
      this.flush(false);
    });
  }

  /** Sends the sink what differs from what it was sent: deletes first (dependents first), then upserts. */
  private flush(initial: boolean): void {
    if (this.stopped || !this.sink) return;
    const deletes: ObjectEvent[] = [];
    const upserts: ObjectEvent[] = [];
    for (const key of this.dirty) {
      const want = this.desired.get(key);
      const have = this.applied.get(key);
      if (!want) {
        if (have) deletes.push({ type: "delete", object: have.object });
        this.applied.delete(key);
      } else if (have?.fingerprint !== want.fingerprint) {
        upserts.push({ type: "upsert", object: want.object });
        this.applied.set(key, want);
      }
    }
    this.dirty.clear();
    if (deletes.length === 0 && upserts.length === 0) return;
    deletes.sort((a, b) => KIND_APPLY_ORDER[b.object.kind] - KIND_APPLY_ORDER[a.object.kind]);
    upserts.sort((a, b) => KIND_APPLY_ORDER[a.object.kind] - KIND_APPLY_ORDER[b.object.kind]);
    const events = [...deletes, ...upserts];
    if (initial) {
      this.sink.apply(events, this.now());
      return;
    }
    try {
      this.sink.apply(events, this.now());
      if (this.internalError !== undefined) {
        this.internalError = undefined;
        this.publishErrors();
      }
    } catch (err) {
      // A sink that throws has a bug; keep watching and make it visible.
      this.internalError = `the metadata sink rejected ${events.length} change(s): ${(err as Error).message}`;
      this.publishErrors();
    }
  }

  private failed(ri: ResourceInformer, message: string): void {
    ri.failures++;
    ri.lastFailure = message;
    if (ri.failures >= this.reportAfter) this.publishErrors();
  }

  /** `progress`: data arrived, so the backoff starts over; an accepted connection only clears the report. */
  private recovered(ri: ResourceInformer, progress: boolean): void {
    if (progress) ri.attempt = 0;
    if (ri.failures === 0) return;
    const wasReported = ri.failures >= this.reportAfter;
    ri.failures = 0;
    ri.lastFailure = undefined;
    if (wasReported) this.publishErrors();
  }

  private scheduleRestart(ri: ResourceInformer): void {
    if (this.stopped || ri.retryTimer) return;
    const delay = backoffDelay(this.backoff, ri.attempt++);
    ri.retryTimer = setTimeout(() => {
      ri.retryTimer = undefined;
      if (!this.stopped) this.startInformer(ri);
    }, delay);
  }

  private publishErrors(): void {
    const errors: MetadataError[] = [];
    if (this.internalError !== undefined) errors.push({ source: this.name, message: this.internalError });
    for (const ri of this.informers) {
      if (ri.failures >= this.reportAfter && ri.lastFailure !== undefined) {
        const state = ri.listed ? "" : "; not listed yet, so the source has not started";
        errors.push({ source: this.name, message: `${ri.resource.resource} (${ri.path}): ${ri.lastFailure}; retrying with backoff${state}` });
      }
    }
    for (const message of [...this.malformed.values()].sort()) errors.push({ source: this.name, message });
    for (const [, message] of [...this.invalid].sort(([a], [b]) => a.localeCompare(b))) errors.push({ source: this.name, message });
    if (JSON.stringify(errors) === JSON.stringify(this.currentErrors)) return;
    this.currentErrors = errors;
    this.onErrorsChanged?.(this.errors());
  }
}
