// The agent's configuration: one schema that parses, validates and documents every flag.
import { parseArgs } from "node:util";
import os from "node:os";
import path from "node:path";
import { bpfObjectDir } from "../native/index.js";
import { ConfigError, parseByteSize, parseHostPort } from "../config/flags.js";
import { X509Certificate } from "node:crypto";
import { loadTlsMaterial, type TlsMaterial } from "../tls/material.js";
import { nodesInSubjectAltName } from "../tls/node-identity.js";
import { certificateProblem } from "./node-certificate.js";

export interface AgentConfig {
  /** Node name put on every record. */
  node: string;
  /** Path of endpoint.bpf.o. */
  bpfObject: string;
  /** bpffs folder where the datapath is pinned, so that it outlives the agent. */
  bpfDir: string;
  /** `--uninstall`: detach and remove everything under bpfDir, then exit. */
  uninstall: boolean;
  /** Drain interval of the in-kernel flow map, milliseconds. */
  drainIntervalMs: number;
  /** max_entries of each of the two flow maps (each holds one drain interval of flows). */
  flowMapSize: number;
  /** How programs are attached: tcx (kernel >= 6.6), legacy clsact, or auto. */
  attachMode: "auto" | "tcx" | "clsact";
  /** JSON-lines export file, or undefined for none. */
  exportFile: string | undefined;
  /** Bytes of drained columns the export file's queue holds before it drops the oldest records (counted). */
  exportBufferBytes: number;
  /** gRPC addresses of the control plane (host:port or unix:///path; several: its replicas), or undefined for none. */
  controlplane: string[] | undefined;
  /** Bytes of record columns held for the control plane while it is unreachable (buffered and in flight). */
  bufferBytes: number;
  /** host:port of the /metrics and /healthz server, or undefined for none. */
  metricsAddr: { host: string; port: number } | undefined;
  /** Resync of the interface list even without netlink events, milliseconds. */
  resyncIntervalMs: number;
  logLevel: "trace" | "debug" | "info" | "warn" | "error";
  /** Mutual TLS to the control plane: this node's certificate and key, and the CA of the control plane's certificate. */
  tls: TlsMaterial | undefined;
  /**
   * `--tls-bootstrap` when the node has no usable certificate yet: request one through the
   * Kubernetes CSR API, write it to certFile/keyFile, then read the flags again.
   */
  tlsBootstrap?: { certFile: string; keyFile: string; kubeconfig: string | undefined; timeoutMs: number; problem: string };
}

export const agentUsage = `usage: bulkhead agent [flags]

Attaches flow capture to the host side of every pod veth on this node, drains the
in-kernel flow map on an interval and exports flow records.

  --node NAME               node name on every record (default: hostname)
  --bpf-object PATH         endpoint.bpf.o (default: native/build/endpoint.bpf.o)
  --bpf-dir DIR             bpffs folder of this agent's pinned maps and links, which keep
                            enforcing while no agent runs and which the next agent adopts
                            (default /sys/fs/bpf/bulkhead; one folder per agent)
  --uninstall               detach every pinned link, remove the folder (--bpf-dir) and exit
  --drain-interval MS       flow map drain interval (default 1000)
  --flow-map-size N         entries per flow map, two maps (default 65536)
  --attach-mode MODE        auto | tcx | clsact (default auto: tcx, else clsact)
  --export-file PATH        append records as JSON lines (proto3 JSON mapping)
  --export-buffer-bytes SIZE  drained records (as columns, ~90 bytes each) waiting for the export
                            file, e.g. 64Mi; past it the oldest drop, counted as export_queue_full
                            (default 64Mi: ~740k records)
  --controlplane ADDR[,ADDR...]
                            stream records to the control plane (HOST:PORT or unix:///PATH); several
                            addresses: replicas sharing one store, the next tried when one is lost
  --buffer-bytes SIZE       records held (as columns, ~90 bytes each) while the control plane is away,
                            e.g. 256Mi; past it the oldest are dropped and counted as buffer_full
                            (default 128Mi: ~1.4M records, within the DaemonSet's 1Gi limit beside the rest)
  --metrics-addr HOST:PORT  serve /metrics and /healthz (default 127.0.0.1:9387: in the host network
                            every interface would expose them; the DaemonSet binds the node's IP; "off" for none)
  --resync-interval MS      full interface rescan besides netlink events (default 5000)
  --log-level LEVEL         trace | debug | info | warn | error (default info)

Mutual TLS with the control plane (all three or none; files from "bulkhead certs"):
  --tls-cert FILE           this node's certificate (PEM), e.g. node-NAME.crt; it must name --node
  --tls-key FILE            its private key (PEM), e.g. node-NAME.key
  --tls-ca FILE             CA that the control plane's certificate must chain to, e.g. ca.crt
  --tls-bootstrap           when --tls-cert/--tls-key are missing, another node's, or expire within a
                            day: request this node's certificate through the Kubernetes CSR API
                            (signerName bulkhead.io/agent, signed by the control plane) and write both
                            files there before starting; a denied request stops the agent with its reason
  --kubeconfig PATH         for --tls-bootstrap: the API server and credentials (default: the pod's
                            service account token, else $KUBECONFIG, else ~/.kube/config)
  --tls-bootstrap-timeout S seconds to wait for the certificate (default 300)
`;

/** A certificate closer than this to its end is requested anew under --tls-bootstrap. */
const BOOTSTRAP_RENEW_MARGIN_MS = 86_400_000;

export const DEFAULT_BPF_DIR = "/sys/fs/bpf/bulkhead";

/**
 * The outage buffer's default: ~1.4M records as columns of ~90 bytes (~600k as the encoded
 * records of ~220 bytes it held before issue 11, 60 s at 10k records/s). The
 * DaemonSet's limit is 1Gi; with the control plane away at 50k records/s the agent's sink
 * peaked at 642 MiB RSS with 128 MiB held and 773 MiB with 256 MiB (bench/README.md,
 * agent-outage: building the records costs more than holding them), so 128 MiB leaves room
 * for a faster drain. Raise it together with the memory limit.
 */
const DEFAULT_BUFFER = "128Mi";

/** The export file's queue: ~740k records as columns (~90 bytes each), 7 s at 100k records/s. */
const DEFAULT_EXPORT_BUFFER = "64Mi";

function positiveInt(flag: string, raw: string | undefined, fallback: number, max = 2 ** 31 - 1): number {
  if (raw === undefined) return fallback;
  if (!/^[0-9]+$/.test(raw)) throw new ConfigError(`--${flag}: "${raw}" is not a whole number`);
  const n = Number(raw);
  if (n < 1 || n > max) throw new ConfigError(`--${flag}: ${n} is out of range 1..${max}`);
  return n;
}

function parseControlPlaneAddrs(raw: string | undefined): string[] | undefined {
  if (raw === undefined) return undefined;
  const addresses = raw.split(",");
  for (const address of addresses) {
    if (address === "") throw new ConfigError(`--controlplane: "${raw}" has an empty address (expected ADDR[,ADDR...])`);
    if (address.startsWith("unix://")) {
      if (address.length <= "unix://".length) throw new ConfigError(`--controlplane: "${address}" names no socket path`);
    } else {
      parseHostPort("controlplane", address);
    }
  }
  const repeated = addresses.find((a, i) => addresses.indexOf(a) !== i);
  if (repeated !== undefined) throw new ConfigError(`--controlplane: "${repeated}" is given twice`);
  return addresses;
}

function oneOf<T extends string>(flag: string, raw: string | undefined, allowed: readonly T[], fallback: T): T {
  if (raw === undefined) return fallback;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new ConfigError(`--${flag}: "${raw}" is not one of ${allowed.join(", ")}`);
}

export function parseAgentArgs(argv: string[]): AgentConfig {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        node: { type: "string" },
        "bpf-object": { type: "string" },
        "bpf-dir": { type: "string" },
        uninstall: { type: "boolean" },
        "drain-interval": { type: "string" },
        "flow-map-size": { type: "string" },
        "attach-mode": { type: "string" },
        "export-file": { type: "string" },
        "export-queue": { type: "string" },
        "export-buffer-bytes": { type: "string" },
        "metrics-addr": { type: "string" },
        controlplane: { type: "string" },
        "buffer-bytes": { type: "string" },
        "resync-interval": { type: "string" },
        "log-level": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-ca": { type: "string" },
        "tls-bootstrap": { type: "boolean" },
        "tls-bootstrap-timeout": { type: "string" },
        kubeconfig: { type: "string" },
      },
    });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const v = parsed.values;
  if (v["export-queue"] !== undefined) {
    throw new ConfigError(`--export-queue: removed; the export file's queue is bounded in bytes now: --export-buffer-bytes SIZE `
      + `(e.g. 64Mi, the default; a record takes ~90 bytes, so --export-queue ${v["export-queue"]} is about `
      + `--export-buffer-bytes ${Math.max(1, Math.ceil(Number(v["export-queue"]) * 90 / 2 ** 20)) || 1}Mi)`);
  }
  const metrics = v["metrics-addr"] ?? "127.0.0.1:9387";
  const node = v.node ?? os.hostname();
  let tlsBootstrap: AgentConfig["tlsBootstrap"];
  if (v["tls-bootstrap"] === true) {
    const missing = (["tls-cert", "tls-key", "tls-ca", "controlplane"] as const).filter((f) => v[f] === undefined);
    if (missing.length > 0) throw new ConfigError(`--tls-bootstrap: needs ${missing.map((f) => `--${f}`).join(", ")} (where to write the certificate and key, and whom to connect to)`);
    const certFile = path.resolve(v["tls-cert"] ?? ""), keyFile = path.resolve(v["tls-key"] ?? "");
    const problem = certificateProblem(certFile, keyFile, node, BOOTSTRAP_RENEW_MARGIN_MS);
    if (problem !== undefined) {
      tlsBootstrap = { certFile, keyFile, problem, kubeconfig: v.kubeconfig === undefined ? undefined : path.resolve(v.kubeconfig),
        timeoutMs: positiveInt("tls-bootstrap-timeout", v["tls-bootstrap-timeout"], 300, 86_400) * 1000 };
    }
  } else {
    const stray = (["kubeconfig", "tls-bootstrap-timeout"] as const).find((f) => v[f] !== undefined);
    if (stray !== undefined) throw new ConfigError(`--${stray}: only with --tls-bootstrap`);
  }
  const tls = tlsBootstrap !== undefined ? undefined : loadTlsMaterial({ cert: v["tls-cert"], key: v["tls-key"], ca: v["tls-ca"] }, "tls-ca");
  if (tls && v.controlplane === undefined) throw new ConfigError("--tls-cert, --tls-key, --tls-ca: only used with --controlplane ADDR");
  if (tls) {
    const named = nodesInSubjectAltName(new X509Certificate(tls.cert).subjectAltName);
    if (named.length !== 1 || named[0] !== node) {
      throw new ConfigError(`--tls-cert: "${tls.certFile}" is the certificate of ${named.length ? `node ${named.join(", ")}` : "no node"}, not of node "${node}" (--node)`);
    }
  }
  return {
    node,
    bpfObject: path.resolve(v["bpf-object"] ?? path.join(bpfObjectDir, "endpoint.bpf.o")),
    bpfDir: path.resolve(v["bpf-dir"] ?? DEFAULT_BPF_DIR),
    uninstall: v.uninstall ?? false,
    drainIntervalMs: positiveInt("drain-interval", v["drain-interval"], 1000, 3_600_000),
    flowMapSize: positiveInt("flow-map-size", v["flow-map-size"], 65536, 16_777_216),
    attachMode: oneOf("attach-mode", v["attach-mode"], ["auto", "tcx", "clsact"] as const, "auto"),
    exportFile: v["export-file"] === undefined ? undefined : path.resolve(v["export-file"]),
    exportBufferBytes: parseByteSize("export-buffer-bytes", v["export-buffer-bytes"] ?? DEFAULT_EXPORT_BUFFER, 2 ** 20, 64 * 2 ** 30),
    controlplane: parseControlPlaneAddrs(v.controlplane),
    bufferBytes: parseByteSize("buffer-bytes", v["buffer-bytes"] ?? DEFAULT_BUFFER, 2 ** 20, 64 * 2 ** 30),
    metricsAddr: metrics === "off" ? undefined : parseHostPort("metrics-addr", metrics),
    resyncIntervalMs: positiveInt("resync-interval", v["resync-interval"], 5000, 3_600_000),
    logLevel: oneOf("log-level", v["log-level"], ["trace", "debug", "info", "warn", "error"] as const, "info"),
    tls,
    ...(tlsBootstrap !== undefined ? { tlsBootstrap } : {}),
  };
}
