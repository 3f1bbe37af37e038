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
// - Users: the kubeconfig's token is an administrator; `addUser` adds tokens that stand
//   for a service account (username, groups, extra as a bound token carries them) with
//   RBAC rules, checked as the RBAC authorizer does (verb, group, resource[/subresource],
//   resourceNames), 403 Forbidden otherwise.
// - CertificateSigningRequests (certificates.k8s.io/v1) as kube-apiserver serves them:
//   create (POST; spec.username/uid/groups/extra set from the caller, status dropped; the
//   request must be a PEM CERTIFICATE REQUEST whose signature verifies, usages known and
//   non-empty, expirationSeconds >= 600, generateName), get, the /approval subresource
//   (conditions only; Approved and Denied exclusive and never removed; needs the `approve`
//   verb on `signers` named signerName) and /status (certificate only once Approved, never
//   changed once set, PEM CERTIFICATE blocks; setting it needs the `sign` verb on the
//   signer), 409 Conflict on a stale metadata.resourceVersion, and the field selectors
//   `metadata.name=` and `spec.signerName=` on list and watch.
// It does not emulate: label selectors, other field selectors, namespaced URLs,
// resourceVersionMatch, RV "0" list semantics beyond "latest", server-side apply, writes
// over HTTP other than CSRs, admission or validation of what tests store with `create()`
// (kept as given, with a given uid and creationTimestamp so fixtures can refer to owners),
// signer-name wildcards (`example.com/*`) in RBAC resourceNames, RBAC Roles, the CSR
// cleaner, watch-list streaming, protobuf, or HTTP/2.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { execFileSync } from "node:child_process";
import { randomUUID, webcrypto } from "node:crypto";
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
  { kind: "CertificateSigningRequest", group: "certificates.k8s.io", version: "v1", plural: "certificatesigningrequests", namespaced: false },
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
  /** The watch's field selector: only objects it matches are sent. */
  selects: (object: Json) => boolean;
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

/** An RBAC PolicyRule, as in a ClusterRole. */
export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** Who a token authenticates as, as the API server records it in a CSR's spec. */
export interface FakeUser {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
  /** What the user may do; undefined: everything (an administrator). */
  rules?: PolicyRule[];
}

/** Key usages the certificates API accepts (k8s.io/api/certificates/v1 KeyUsage). */
const KEY_USAGES = new Set(["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
  "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth",
  "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping",
  "ocsp signing", "microsoft sgc", "netscape sgc"]);

const CSR_PLURAL = "certificatesigningrequests";

function ruleAllows(rule: PolicyRule, verb: string, group: string, resource: string, name: string | undefined): boolean {
  const has = (list: string[], value: string): boolean => list.includes("*") || list.includes(value);
  if (!has(rule.verbs, verb) || !has(rule.apiGroups, group) || !has(rule.resources, resource)) return false;
  return rule.resourceNames === undefined || rule.resourceNames.length === 0 || (name !== undefined && rule.resourceNames.includes(name));
}

/** "metadata.name=a,spec.signerName=b" → a predicate; only those two fields, as for CSRs. */
function parseFieldSelector(raw: string | undefined): ((object: Json) => boolean) | { error: string } {
  if (raw === undefined || raw === "") return () => true;
  const terms: [string, string][] = [];
  for (const term of raw.split(",")) {
    const m = /^([a-zA-Z.]+)==?(.*)$/.exec(term);
    if (!m || (m[1] !== "metadata.name" && m[1] !== "spec.signerName")) return { error: `"${term}" is not a supported field selector` };
    terms.push([m[1], m[2] ?? ""]);
  }
  return (object) => terms.every(([field, value]) => {
    const [outer, inner] = field.split(".") as [string, string];
    return ((object[outer] ?? {}) as Json)[inner] === value;
  });
}

/** PEM text of base64 `data`, or undefined when it is not base64 of the block `label`. */
function pemBlocks(data: unknown, label: string): string | undefined {
  if (typeof data !== "string" || !/^[A-Za-z0-9+/=]*$/.test(data)) return undefined;
  const text = Buffer.from(data, "base64").toString("utf8");
  return text.includes(`-----BEGIN ${label}-----`) && text.includes(`-----END ${label}-----`) ? text : undefined;
}

function conditionTypes(status: Json | undefined): string[] {
  const conditions = (status?.conditions ?? []) as Json[];
  return conditions.map((c) => String(c.type));
}

const REASONS: Record<number, string> = {
  400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired", 422: "Invalid",
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
  private readonly users = new Map<string, FakeUser>();

  private constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-fake-apiserver-"));
    for (const t of RESOURCE_TYPES) this.stores.set(t.plural, new Map());
    this.users.set(this.token, { username: "kubernetes-admin", groups: ["system:masters", "system:authenticated"] });
  }

  /**
   * A new token for `user` and a kubeconfig that uses it (e.g. a service account's
   * projected token: username system:serviceaccount:NS:NAME, extra with the pod's node).
   */
  addUser(user: FakeUser): { token: string; kubeconfigPath: string } {
    const token = `fake-token-${randomUUID()}`;
    this.users.set(token, { ...user, groups: user.groups ?? ["system:authenticated"] });
    const kubeconfigPath = path.join(this.dir, `kubeconfig-${this.users.size}`);
    fs.writeFileSync(kubeconfigPath, this.kubeconfigText(token));
    return { token, kubeconfigPath };
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
    fs.writeFileSync(this.kubeconfigPath, this.kubeconfigText(this.token));
  }

  private kubeconfigText(token: string): string {
    return [
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
      `    token: ${token}`,
      "contexts:",
      "- name: fake",
      "  context: { cluster: fake, user: fake-user }",
      "current-context: fake",
      "",
    ].join("\n");
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
      if (w.plural === t.plural && w.selects(entry.object)) this.send(w, { type, object: entry.object });
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
    // /apis/<group>/<version>/<plural>[/<name>[/<subresource>]]
    let t: ResourceType | undefined;
    let name: string | undefined;
    let subresource: string | undefined;
    for (const r of RESOURCE_TYPES) {
      const base = pathOf(r);
      if (url.pathname === base) t = r;
      else if (url.pathname.startsWith(`${base}/`)) {
        const rest = url.pathname.slice(base.length + 1).split("/");
        if (rest.length > 2 || rest[0] === "") continue;
        [t, name, subresource] = [r, decodeURIComponent(rest[0] ?? ""), rest[1]];
      }
      if (t) break;
    }
    const watch = query.watch === "true" || query.watch === "1";
    const reply = (code: number, body: Json): void => {
      this.requests.push({ method: req.method ?? "", plural: t?.plural ?? url.pathname, watch, query, status: code });
      res.writeHead(code, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    const auth = req.headers.authorization ?? "";
    const user = auth.startsWith("Bearer ") ? this.users.get(auth.slice("Bearer ".length)) : undefined;
    if (!user) {
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
    const method = req.method ?? "GET";
    const verb = method === "GET" ? (name !== undefined ? "get" : watch ? "watch" : "list")
      : method === "POST" && name === undefined ? "create" : method === "PUT" && name !== undefined ? "update" : undefined;
    const writable = t.plural === CSR_PLURAL && (verb === "create" || (verb === "update" && (subresource === "approval" || subresource === "status")));
    if (verb === undefined || (verb !== "get" && verb !== "list" && verb !== "watch" && !writable) || (verb === "get" && subresource !== undefined)) {
      reply(405, status(405, `${method} ${url.pathname} is not supported by this fake`, "MethodNotAllowed"));
      return;
    }
    const resource = subresource === undefined ? t.plural : `${t.plural}/${subresource}`;
    if (!this.allowed(user, verb, t.group, resource, name)) {
      reply(403, status(403, `${resource} is forbidden: User "${user.username}" cannot ${verb} resource "${resource}" in API group "${t.group}" at the cluster scope`));
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
    if (verb === "get") {
      const object = this.stores.get(t.plural)!.get(`/${name}`);
      if (t.namespaced || !object) reply(404, status(404, `${t.plural} "${name}" not found`));
      else reply(200, clone(object));
      return;
    }
    if (verb === "create" || verb === "update") {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch {
          reply(400, status(400, "the request body is not JSON"));
          return;
        }
        if (typeof body !== "object" || body === null || Array.isArray(body)) {
          reply(400, status(400, "the request body is not an object"));
          return;
        }
        const answer = verb === "create"
          ? this.createCsr(user, body as Json)
          : this.updateCsr(user, name ?? "", subresource === "approval" ? "approval" : "status", body as Json);
        void answer.then(([code, object]) => reply(code, object), (err: Error) => reply(500, status(500, err.message)));
      });
      return;
    }
    const selects = parseFieldSelector(query.fieldSelector);
    if (typeof selects !== "function") {
      reply(400, status(400, selects.error));
      return;
    }
    if (watch) {
      this.requests.push({ method: "GET", plural: t.plural, watch, query, status: 200 });
      this.serveWatch(t, query, selects, res);
      return;
    }
    this.serveList(t, query, selects, reply);
  }

  private allowed(user: FakeUser, verb: string, group: string, resource: string, name: string | undefined): boolean {
    return user.rules === undefined || user.rules.some((r) => ruleAllows(r, verb, group, resource, name));
  }

  private async createCsr(user: FakeUser, body: Json): Promise<[number, Json]> {
    const invalid = (field: string, message: string): [number, Json] =>
      [422, status(422, `CertificateSigningRequest.certificates.k8s.io is invalid: ${field}: ${message}`)];
    if (body.apiVersion !== "certificates.k8s.io/v1" || body.kind !== "CertificateSigningRequest") {
      return [400, status(400, `expected certificates.k8s.io/v1 CertificateSigningRequest, got ${String(body.apiVersion)} ${String(body.kind)}`)];
    }
    const meta = { ...((body.metadata ?? {}) as Json) };
    if (typeof meta.name !== "string" || meta.name === "") {
      if (typeof meta.generateName !== "string" || meta.generateName === "") return invalid("metadata.name", "Required value: name or generateName is required");
      meta.name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    }
    const name = meta.name as string;
    if (this.stores.get(CSR_PLURAL)!.has(`/${name}`)) {
      return [409, status(409, `certificatesigningrequests.certificates.k8s.io "${name}" already exists`, "AlreadyExists")];
    }
    const spec = (body.spec ?? {}) as Json;
    if (typeof spec.signerName !== "string" || !/^[a-z0-9.-]+\/[A-Za-z0-9._-]+$/.test(spec.signerName)) {
      return invalid("spec.signerName", "Invalid value: must be a fully qualified domain and path of the form 'example.com/signer-name'");
    }
    const requestPem = pemBlocks(spec.request, "CERTIFICATE REQUEST");
    if (requestPem === undefined) return invalid("spec.request", "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST");
    try {
      const request = new x509.Pkcs10CertificateRequest(requestPem);
      if (!await request.verify(webcrypto as unknown as Crypto)) return invalid("spec.request", "Invalid value: the request's signature does not verify");
    } catch (err) {
      return invalid("spec.request", `Invalid value: ${(err as Error).message}`);
    }
    const usages = spec.usages;
    if (!Array.isArray(usages) || usages.length === 0) return invalid("spec.usages", "Required value");
    const unknown = usages.find((u) => typeof u !== "string" || !KEY_USAGES.has(u));
    if (unknown !== undefined) return invalid("spec.usages", `Unsupported value: ${JSON.stringify(unknown)}`);
    if (spec.expirationSeconds !== undefined && (typeof spec.expirationSeconds !== "number" || spec.expirationSeconds < 600)) {
      return invalid("spec.expirationSeconds", `Invalid value: ${String(spec.expirationSeconds)}: may not specify a duration less than 600 seconds (10 minutes)`);
    }
    // What the caller says about itself is overwritten with what its token says.
    const { uid: _uid, resourceVersion: _rv, creationTimestamp: _ct, ...givenMeta } = meta;
    const object = this.create({
      apiVersion: body.apiVersion, kind: body.kind, metadata: { ...givenMeta, name },
      spec: { ...spec, username: user.username, uid: user.uid ?? "", groups: user.groups ?? [], ...(user.extra ? { extra: user.extra } : {}) },
      status: {},
    });
    return [201, object];
  }

  private async updateCsr(user: FakeUser, name: string, subresource: "approval" | "status", body: Json): Promise<[number, Json]> {
    const stored = this.stores.get(CSR_PLURAL)!.get(`/${name}`);
    if (!stored) return [404, status(404, `certificatesigningrequests.certificates.k8s.io "${name}" not found`)];
    const invalid = (field: string, message: string): [number, Json] =>
      [422, status(422, `CertificateSigningRequest.certificates.k8s.io "${name}" is invalid: ${field}: ${message}`)];
    const meta = (body.metadata ?? {}) as Json;
    if (meta.name !== name) return [400, status(400, `the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`)];
    const storedMeta = stored.metadata as Json;
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== storedMeta.resourceVersion) {
      return [409, status(409, `Operation cannot be fulfilled on certificatesigningrequests.certificates.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`)];
    }
    const before = (stored.status ?? {}) as Json;
    const given = (body.status ?? {}) as Json;
    const conditions = ((given.conditions ?? []) as Json[]).map((c): Json => ({
      ...c, status: c.status ?? "True",
      lastUpdateTime: c.lastUpdateTime ?? new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      lastTransitionTime: c.lastTransitionTime ?? new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    }));
    const types = conditions.map((c) => String(c.type));
    if (types.includes("Approved") && types.includes("Denied")) return invalid("status.conditions", "Invalid value: Approved and Denied conditions are mutually exclusive");
    for (const fixed of ["Approved", "Denied"]) {
      const had = conditionTypes(before).includes(fixed), has = types.includes(fixed);
      if (had && !has) return invalid("status.conditions", `Forbidden: updates may not remove a condition of type "${fixed}"`);
      if (subresource === "status" && !had && has) return invalid("status.conditions", `Forbidden: updates may not add a condition of type "${fixed}"`);
    }
    const signerName = String((stored.spec as Json).signerName);
    let next: Json;
    if (subresource === "approval") {
      if (!this.allowed(user, "approve", "certificates.k8s.io", "signers", signerName)) {
        return [403, status(403, `certificatesigningrequests.certificates.k8s.io "${name}" is forbidden: user not permitted to approve requests with signerName "${signerName}"`)];
      }
      next = { ...before, conditions };
    } else {
      const certificate = given.certificate;
      if (certificate !== undefined && certificate !== before.certificate) {
        if (before.certificate !== undefined) return invalid("status.certificate", "Forbidden: updates may not modify existing certificate content");
        if (!types.includes("Approved") || types.includes("Failed")) return invalid("status.certificate", "Forbidden: certificate may only be set when the Approved condition is present and Failed is not");
        if (pemBlocks(certificate, "CERTIFICATE") === undefined) return invalid("status.certificate", "Invalid value: must contain at least one CERTIFICATE PEM block");
        if (!this.allowed(user, "sign", "certificates.k8s.io", "signers", signerName)) {
          return [403, status(403, `certificatesigningrequests.certificates.k8s.io "${name}" is forbidden: user not permitted to sign requests with signerName "${signerName}"`)];
        }
      }
      next = { ...(certificate !== undefined ? { certificate } : {}), conditions };
    }
    return [200, this.update({ ...stored, status: next })];
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

  private serveList(t: ResourceType, query: Record<string, string>, selects: (object: Json) => boolean, reply: (code: number, body: Json) => void): void {
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
      .filter(([k, o]) => k > after && selects(o));
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

  private serveWatch(t: ResourceType, query: Record<string, string>, selects: (object: Json) => boolean, res: ServerResponse): void {
    // No content-length: node sends the stream with Transfer-Encoding: chunked.
    res.writeHead(200, { "content-type": "application/json" });
    res.flushHeaders();
    const w: Watcher = { plural: t.plural, selects, bookmarks: query.allowWatchBookmarks === "true", res, timer: undefined };
    const from = query.resourceVersion ?? "";
    if (from === "" || from === "0") {
      // "Any": start with the current state as ADDED events.
      for (const o of this.stores.get(t.plural)!.values()) if (selects(o)) this.send(w, { type: "ADDED", object: o });
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
      for (const e of this.log) if (e.plural === t.plural && e.rv > rv && selects(e.object)) this.send(w, { type: e.type, object: e.object });
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
