// The control plane's configuration: one schema that parses, validates and documents every flag.
import { parseArgs } from "node:util";
import path from "node:path";
import { ConfigError, parseByteSize, parseHostPort } from "../config/flags.js";
import { parseDurationMs } from "../config/time.js";
import { defaultKubeConnection, type KubeConnection } from "./metadata/kubernetes-connection.js";
import { parseClickHouseLocation, type ClickHouseLocation } from "./store/clickhouse/location.js";

/** The service account whose node certificate requests the signer approves, unless --csr-agent-user. */
export const DEFAULT_AGENT_USER = "system:serviceaccount:bulkhead:bulkhead-agent";

/** Where cluster metadata comes from. */
export type MetadataSourceConfig =
  | { kind: "folder"; manifests: string }
  | { kind: "kubernetes"; connection: KubeConnection };
import { loadCertificateAndKey, loadTlsMaterial, type TlsMaterial } from "../tls/material.js";
import { X509Certificate, createPrivateKey } from "node:crypto";
import type { IssuedPair } from "../tls/issue.js";

export interface ControlPlaneConfig {
  source: MetadataSourceConfig;
  /** gRPC listen addresses (host:port or unix:///path), agents and clients alike. */
  listen: string[];
  /** HTTP address of the web UI and its JSON API (HOST:PORT); none when absent. */
  uiListen?: string;
  /** Serve the UI over HTTPS with this certificate and key; none: plain HTTP. */
  uiTls?: { cert: Buffer; key: Buffer; certFile: string };
  /** Token file (controlplane/access/tokens.ts): bearer tokens scoped to namespaces. */
  tokens?: string;
  /** Requests without a token see everything (the lab); a bad token is refused regardless. */
  allowUnauthenticated: boolean;
  storeCapacity: number;
  /** Threads that admit agents' batches beside the main one (ControlPlaneOptions.ingestWorkers); 0: none. */
  ingestWorkers: number;
  /** Where the history lives beyond the in-memory window (see controlPlaneUsage). */
  store: { kind: "memory" }
    | { kind: "duckdb"; dataDir: string; retentionMs?: number; retentionBytes?: bigint }
    | { kind: "clickhouse"; location: ClickHouseLocation; retentionMs?: number; retentionBytes?: bigint };
  defaultMode: "observe" | "audit" | "enforce";
  logLevel: "trace" | "debug" | "info" | "warn" | "error";
  /** Every listener serves TLS and agents must show a node certificate; none: plaintext, agents unauthenticated. */
  tls: TlsMaterial | undefined;
  /** Sign node certificates requested through the Kubernetes CSR API (controlplane/certificates/). */
  nodeSigner?: { ca: IssuedPair; agentUser: string; validityDays: number };
}

export const controlPlaneUsage = `usage: bulkhead controlplane --manifests DIR (--tokens FILE | --allow-unauthenticated) [flags]
       bulkhead controlplane --source kubernetes [--kubeconfig PATH] (--tokens FILE | --allow-unauthenticated) [flags]

Receives agents' flow records, maps both ends onto pods, Services, workloads, namespaces
and nodes, keeps recent history and live flow maps, and serves the Observer API.

  --source KIND         where cluster metadata comes from: folder (default) | kubernetes
  --manifests DIR       folder source: folder of Kubernetes YAML to watch (Namespace, Pod, Service, EndpointSlice, Node, …)
  --kubeconfig PATH     kubernetes source: kubeconfig to use (default: the pod's service account when
                        KUBERNETES_SERVICE_HOST is set, else $KUBECONFIG, else ~/.kube/config)
  --listen ADDR         gRPC address, repeatable: HOST:PORT or unix:///PATH (default 127.0.0.1:4387)
  --ui-listen HOST:PORT web UI and its JSON API over HTTP (default: none)
  --ui-tls-cert FILE    serve the UI over HTTPS with this certificate (PEM; e.g. controlplane.crt) …
  --ui-tls-key FILE     … and its key; both or neither, and only with --ui-listen
  --tokens FILE         bearer tokens scoped to namespaces, for the Observer API, CLI and UI (YAML; reloaded
                        when it changes); a request without a valid token is refused
  --allow-unauthenticated
                        a request without a token sees every namespace (for the lab); with --tokens, tokens
                        still apply, and a wrong token is still refused. One of the two is required.
  --allow-plaintext-tokens
                        with --tokens, serve a non-loopback address without TLS all the same (tokens
                        then cross the network in clear); refused otherwise
  --data-dir DIR        keep the flow history durably in DIR/flows.duckdb (embedded DuckDB): batches
                        are acknowledged to agents once committed, and a restart serves the whole
                        history. The lab passes its state dir; the Deployment a volume.
  --store KIND          duckdb (the default with --data-dir) | memory (the default without: the
                        history is only the in-memory window and is lost on restart) |
                        clickhouse://HOST:PORT/DB (the server's HTTP port): a store that several
                        control-plane replicas share; each replica's follow streams and live maps
                        also see the others' records
  --store-credentials FILE
                        clickhouse: USER:PASSWORD on one line (e.g. a mounted Secret); never in the URL
  --retention D         duckdb: drop whole UTC days of history older than D, e.g. 7d (default: keep)
  --retention-size S    duckdb: drop the oldest days while the file is larger than S, e.g. 20GiB
  --store-capacity N    flow records kept in memory, the hot window for live maps, follow streams
                        and recent queries (default 1000000)
  --ingest-workers N    threads that name and attribute agents' records beside the one that
                        stores and maps them, 0..16 (default 0: all on one). 1 gave ~1.25x the
                        records/s for ~1.35 cores and ~85 MiB more RSS (bench/README, "Ingest workers")
  --default-mode MODE   observe | audit | enforce for namespaces without a bulkhead.io/mode annotation (default observe)
  --log-level LEVEL     trace | debug | info | warn | error (default info)

Mutual TLS with agents (all three or none; files from "bulkhead certs"):
  --tls-cert FILE       the control plane's server certificate (PEM), e.g. controlplane.crt
  --tls-key FILE        its private key (PEM), e.g. controlplane.key
  --tls-client-ca FILE  CA that agents' node certificates must chain to, e.g. ca.crt
                        With these, every --listen address serves TLS; AgentService.Connect
                        refuses agents without a valid node certificate and hellos or records
                        for another node than the certificate names. Clients of the Observer
                        API need no certificate, only the CA to verify the server.

Node certificates for agents that ask through the Kubernetes CSR API (signerName
bulkhead.io/agent; agent flag --tls-bootstrap; needs --source kubernetes and the TLS flags):
  --csr-signer-cert FILE  the CA certificate that signs them: the same as --tls-client-ca
  --csr-signer-key FILE   its private key (ECDSA P-256; e.g. ca.key from "bulkhead certs")
  --csr-agent-user USER   the only requester whose CSRs are signed (default
                          ${DEFAULT_AGENT_USER})
  --csr-days N            validity of the certificates it issues, unless a CSR asks for less (default 365)
`;

function oneOfModes(raw: string | undefined): ControlPlaneConfig["defaultMode"] {
  if (raw === undefined) return "observe";
  if (raw === "observe" || raw === "audit" || raw === "enforce") return raw;
  throw new ConfigError(`--default-mode: "${raw}" is not observe, audit or enforce`);
}

function parseSource(values: { source?: string; manifests?: string; kubeconfig?: string }, env: NodeJS.ProcessEnv): MetadataSourceConfig {
  const kind = values.source ?? "folder";
  if (kind === "folder") {
    if (values.kubeconfig !== undefined) {
      throw new ConfigError(`--kubeconfig: only for --source kubernetes (the folder source reads --manifests), got --kubeconfig ${values.kubeconfig}`);
    }
    if (!values.manifests) throw new ConfigError("--manifests: required with --source folder (the folder of Kubernetes YAML to watch); or use --source kubernetes");
    return { kind, manifests: path.resolve(values.manifests) };
  }
  if (kind === "kubernetes") {
    if (values.manifests !== undefined) {
      throw new ConfigError(`--manifests: not used by --source kubernetes (it reads the Kubernetes API), got --manifests ${values.manifests}; drop one of them`);
    }
    if (values.kubeconfig === "") throw new ConfigError("--kubeconfig: empty path");
    return { kind, connection: values.kubeconfig !== undefined
      ? { kind: "kubeconfig", path: path.resolve(values.kubeconfig) } : defaultKubeConnection(env) };
  }
  throw new ConfigError(`--source: "${kind}" is not folder or kubernetes`);
}

export function parseControlPlaneArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ControlPlaneConfig {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: {
      source: { type: "string" }, manifests: { type: "string" }, kubeconfig: { type: "string" }, listen: { type: "string", multiple: true }, "ui-listen": { type: "string" },
      "ui-tls-cert": { type: "string" }, "ui-tls-key": { type: "string" },
      "store-capacity": { type: "string" }, "ingest-workers": { type: "string" }, "drain-interval": { type: "string" }, "log-level": { type: "string" },
      "default-mode": { type: "string" }, tokens: { type: "string" }, "allow-unauthenticated": { type: "boolean" },
      "tls-cert": { type: "string" }, "tls-key": { type: "string" }, "tls-client-ca": { type: "string" },
      "allow-plaintext-tokens": { type: "boolean" },
      "data-dir": { type: "string" }, store: { type: "string" }, retention: { type: "string" }, "retention-size": { type: "string" },
      "store-credentials": { type: "string" },
      "csr-signer-cert": { type: "string" }, "csr-signer-key": { type: "string" }, "csr-agent-user": { type: "string" }, "csr-days": { type: "string" },
    } });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const v = parsed.values;
  const source = parseSource(v, env);
  const listen = v.listen ?? ["127.0.0.1:4387"];
  for (const addr of listen) {
    if (addr.startsWith("unix://")) {
      if (addr.length <= 7) throw new ConfigError(`--listen: "${addr}" names no socket path`);
    } else {
      parseHostPort("listen", addr);
    }
  }
  if (v["ui-listen"] !== undefined) parseHostPort("ui-listen", v["ui-listen"]);
  let uiTls: ControlPlaneConfig["uiTls"];
  if (v["ui-tls-cert"] !== undefined || v["ui-tls-key"] !== undefined) {
    if (v["ui-tls-cert"] === undefined || v["ui-tls-key"] === undefined) {
      throw new ConfigError(`--${v["ui-tls-cert"] === undefined ? "ui-tls-cert" : "ui-tls-key"}: required with --${v["ui-tls-cert"] === undefined ? "ui-tls-key" : "ui-tls-cert"} (HTTPS needs a certificate and its key)`);
    }
    if (v["ui-listen"] === undefined) throw new ConfigError("--ui-tls-cert: only with --ui-listen (there is no UI to serve over HTTPS)");
    uiTls = loadCertificateAndKey("ui-tls", v["ui-tls-cert"], v["ui-tls-key"]);
  }
  if (v.tokens === "") throw new ConfigError("--tokens: names no file");
  const allowUnauthenticated = v["allow-unauthenticated"] ?? false;
  // Safe by default: nobody gets an open Observer API without asking for it.
  if (v.tokens === undefined && !allowUnauthenticated) {
    throw new ConfigError("choose who may read flows: --tokens FILE (bearer tokens scoped to namespaces) "
      + "or --allow-unauthenticated (anyone who reaches the API sees every namespace; meant for the lab)");
  }
  const int = (flag: string, raw: string | undefined, fallback: number, max: number) => {
    if (raw === undefined) return fallback;
    if (!/^[0-9]+$/.test(raw) || Number(raw) < 1 || Number(raw) > max) throw new ConfigError(`--${flag}: "${raw}" is not a whole number in 1..${max}`);
    return Number(raw);
  };
  const tls = loadTlsMaterial({ cert: v["tls-cert"], key: v["tls-key"], ca: v["tls-client-ca"] }, "tls-client-ca");
  if (v.tokens !== undefined && v["allow-plaintext-tokens"] !== true) {
    const clear = [
      ...(tls === undefined ? listen.filter((a) => !isLoopback(a)).map((a) => `--listen ${a}`) : []),
      ...(v["ui-listen"] !== undefined && uiTls === undefined && !isLoopback(v["ui-listen"]) ? [`--ui-listen ${v["ui-listen"]}`] : []),
    ];
    if (clear.length > 0) {
      throw new ConfigError(`--tokens: bearer tokens would cross the network in clear on ${clear.join(" and ")}; serve TLS there `
        + "(--tls-cert/--tls-key/--tls-client-ca, --ui-tls-cert/--ui-tls-key), listen on loopback or a unix socket, or accept it with --allow-plaintext-tokens");
    }
  }
  if (v["drain-interval"] !== undefined) {
    throw new ConfigError("--drain-interval: set it on the agents (bulkhead agent --drain-interval MS); the control plane does not drain");
  }
  const store = parseStore(v);
  const nodeSigner = parseNodeSigner(v, source, tls, int);
  const level = v["log-level"] ?? "info";
  if (!["trace", "debug", "info", "warn", "error"].includes(level)) throw new ConfigError(`--log-level: "${level}" is not trace, debug, info, warn or error`);
  return {
    source,
    listen,
    ...(v["ui-listen"] !== undefined ? { uiListen: v["ui-listen"] } : {}),
    ...(uiTls !== undefined ? { uiTls } : {}),
    ...(v.tokens !== undefined ? { tokens: path.resolve(v.tokens) } : {}),
    allowUnauthenticated,
    storeCapacity: int("store-capacity", v["store-capacity"], 1_000_000, 100_000_000),
    ingestWorkers: ingestWorkers(v["ingest-workers"]),
    store,
    defaultMode: oneOfModes(v["default-mode"]),
    logLevel: level as ControlPlaneConfig["logLevel"],
    tls,
    ...(nodeSigner !== undefined ? { nodeSigner } : {}),
  };
}

function ingestWorkers(raw: string | undefined): number {
  if (raw === undefined) return 0;
  if (!/^[0-9]+$/.test(raw) || Number(raw) > 16) throw new ConfigError(`--ingest-workers: "${raw}" is not a whole number in 0..16`);
  return Number(raw);
}

function parseNodeSigner(
  v: { "csr-signer-cert"?: string; "csr-signer-key"?: string; "csr-agent-user"?: string; "csr-days"?: string },
  source: MetadataSourceConfig, tls: TlsMaterial | undefined, int: (flag: string, raw: string | undefined, fallback: number, max: number) => number,
): ControlPlaneConfig["nodeSigner"] {
  const cert = v["csr-signer-cert"], key = v["csr-signer-key"];
  if (cert === undefined && key === undefined) {
    const stray = (["csr-agent-user", "csr-days"] as const).find((f) => v[f] !== undefined);
    if (stray !== undefined) throw new ConfigError(`--${stray}: only with --csr-signer-cert and --csr-signer-key`);
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    throw new ConfigError(`--${cert === undefined ? "csr-signer-cert" : "csr-signer-key"}: required with --${cert === undefined ? "csr-signer-key" : "csr-signer-cert"} (signing needs the CA certificate and its key)`);
  }
  if (source.kind !== "kubernetes") throw new ConfigError("--csr-signer-cert: only with --source kubernetes (requests come through the Kubernetes API)");
  if (tls === undefined) throw new ConfigError("--csr-signer-cert: only with --tls-cert/--tls-key/--tls-client-ca (node certificates are for mutual TLS)");
  const pair = loadCertificateAndKey("csr-signer", cert, key);
  const signerCa = new X509Certificate(pair.cert);
  if (!signerCa.ca) throw new ConfigError(`--csr-signer-cert: "${pair.certFile}" is not a CA certificate (no basicConstraints CA:TRUE)`);
  if (!signerCa.raw.equals(tls.caCertificate.raw)) {
    throw new ConfigError(`--csr-signer-cert: "${pair.certFile}" ("${signerCa.subject}") is not the --tls-client-ca "${tls.caFile}" ("${tls.caCertificate.subject}"): `
      + "the control plane would refuse the certificates it signs");
  }
  const details = createPrivateKey(pair.key).asymmetricKeyDetails;
  if (details?.namedCurve !== "prime256v1") throw new ConfigError("--csr-signer-key: not an ECDSA P-256 key (what \"bulkhead certs\" makes)");
  const agentUser = v["csr-agent-user"] ?? DEFAULT_AGENT_USER;
  if (agentUser === "") throw new ConfigError("--csr-agent-user: empty");
  return { ca: { certPem: pair.cert.toString("utf8"), keyPem: pair.key.toString("utf8") }, agentUser, validityDays: int("csr-days", v["csr-days"], 365, 36_500) };
}

/**
 * Durable when given a place: --data-dir selects the embedded store. Without one the
 * history is memory only (a default directory would have two control planes on one
 * machine, tests and the lab's replicas, fight over one file, and write where nobody
 * chose); `bulkhead status` then says the history is lost on restart.
 */
function parseStore(v: { "data-dir"?: string; store?: string; retention?: string; "retention-size"?: string; "store-credentials"?: string }): ControlPlaneConfig["store"] {
  const kind = v.store ?? (v["data-dir"] !== undefined ? "duckdb" : "memory");
  if (v["store-credentials"] !== undefined && !kind.startsWith("clickhouse://")) {
    throw new ConfigError("--store-credentials: only for --store clickhouse://HOST:PORT/DB");
  }
  if (kind.startsWith("clickhouse://")) {
    if (v["data-dir"] !== undefined) throw new ConfigError("--data-dir: not used with a ClickHouse store (the history lives in the server); drop one of them");
    return { kind: "clickhouse", location: parseClickHouseLocation(kind, v["store-credentials"]), ...retention(v) };
  }
  if (kind === "memory") {
    const extra = v["data-dir"] !== undefined ? "--data-dir" : v.retention !== undefined ? "--retention" : v["retention-size"] !== undefined ? "--retention-size" : undefined;
    if (extra !== undefined) throw new ConfigError(`${extra}: not used by --store memory (the in-memory window keeps --store-capacity records); drop one of them`);
    return { kind };
  }
  if (kind !== "duckdb") throw new ConfigError(`--store: "${kind}" is not duckdb, memory or clickhouse://HOST:PORT/DB`);
  if (v["data-dir"] === undefined || v["data-dir"] === "") throw new ConfigError("--store duckdb: needs --data-dir DIR (where the flows.duckdb file lives)");
  return { kind, dataDir: path.resolve(v["data-dir"]), ...retention(v) };
}

/** --retention and --retention-size, for either durable store (both drop whole UTC days). */
function retention(v: { retention?: string; "retention-size"?: string }): { retentionMs?: number; retentionBytes?: bigint } {
  const retentionMs = v.retention === undefined ? undefined : parseDurationMs("--retention", v.retention);
  if (retentionMs !== undefined && retentionMs < 86_400_000) {
    throw new ConfigError(`--retention: "${v.retention}" is under a day; history is dropped by whole UTC days, so keep at least 1d`);
  }
  return {
    ...(retentionMs !== undefined ? { retentionMs } : {}),
    ...(v["retention-size"] !== undefined ? { retentionBytes: BigInt(parseByteSize("retention-size", v["retention-size"])) } : {}),
  };
}

/** A unix socket, or a TCP address on the loopback interface: nothing crosses the network. */
function isLoopback(address: string): boolean {
  if (address.startsWith("unix://")) return true;
  const { host } = parseHostPort("listen", address);
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
