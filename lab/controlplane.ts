// The lab's control plane: one process (or one per replica, `up --controlplanes N`, on a
// shared ClickHouse store) in the machine's own namespace, watching the lab's manifests, run
// (and restarted) by the lab's supervisor. Agents reach it over a unix socket in the state
// dir (a socket file is visible from every network namespace); the CLI over 127.0.0.1. A
// pid file per server, rewritten by the supervisor at each start, lets `down` stop it even
// when state.json is gone. By default both speak TLS with certificates from
// `bulkhead certs` in <stateDir>/tls/, and agents show their node's certificate.
import { readFileSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import net from "node:net";
import type { ObserverServiceClient, GetStatusResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { observerClient } from "../cli/client.js";
import { CA_CERT, SERVER_CERT, SERVER_KEY, writeCertificates } from "../tls/certs-command.js";
import { CONTROLPLANE_NAME, CONTROLPLANE_PID_FILE, LOGS_DIR, MANIFESTS_DIR, SERVER_PID_FILE, STORE_DIR, type LabClickHouse, type LabControlPlane } from "./state.js";

export { CONTROLPLANE_PID_FILE };
import { waitStarted } from "./supervisor.js";

export const DEFAULT_OBSERVER_ADDRESS = "127.0.0.1:4387";
/** The web UI's address: loopback, so only this machine (or an SSH port forward) reaches it. */
export const DEFAULT_UI_ADDRESS = "127.0.0.1:4388";
export const CONTROLPLANE_SOCKET = "controlplane.sock";
/** Replicas a lab runs at most (`up --controlplanes N`): each is a Node process on a 2-core machine. */
export const MAX_CONTROLPLANES = 8;
/** The ClickHouse database the lab's replicas share. */
export const LAB_CLICKHOUSE_DATABASE = "bulkhead";
const READY_TIMEOUT_MS = 20_000;

export const TLS_DIR = "tls";
/** Days the lab's certificates are valid: a lab lives for hours, but a forgotten one should not break overnight. */
const LAB_CERT_DAYS = 30;

export function labTlsDir(stateDir: string): string {
  return path.join(stateDir, TLS_DIR);
}

/** CA, server certificate and one node certificate per lab node, in <stateDir>/tls/. */
export async function issueLabCertificates(stateDir: string, nodes: string[]): Promise<void> {
  await writeCertificates({ out: labTlsDir(stateDir), nodes, hosts: [], days: LAB_CERT_DAYS });
}

/** A client of the lab control plane's Observer API (TLS verified with the lab's CA when it has one). */
export function labObserverClient(cp: { observer: string; ca?: string | undefined }): ObserverServiceClient {
  return observerClient(cp.observer, cp.ca === undefined ? undefined : { flag: "the lab's CA", file: cp.ca });
}

/**
 * Checks a UI listen address (HOST:PORT, HOST an IPv4 address, [IPv6] or localhost) and
 * returns the URL a browser opens. Port 0 is refused: the URL must be known before the
 * control plane starts.
 */
export function uiUrl(address: string): string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(address);
  const host = m?.[1] ?? m?.[2] ?? "";
  const port = Number(m?.[3]);
  const hostOk = m?.[1] !== undefined ? net.isIPv6(host) : host === "localhost" || net.isIPv4(host);
  if (!m || !hostOk || port < 1 || port > 65535) {
    throw new Error(`--ui: expected HOST:PORT with HOST an IPv4 address, [IPv6 address] or localhost and PORT 1-65535 (e.g. ${DEFAULT_UI_ADDRESS}), got ${JSON.stringify(address)}`);
  }
  return `http://${m[1] !== undefined ? `[${host}]` : host}:${port}/`;
}

/** The control plane's GetStatus (agents connected, records received), within `timeoutMs`. */
export function controlPlaneStatus(cp: { observer: string; ca?: string | undefined }, timeoutMs: number): Promise<GetStatusResponse> {
  const address = cp.observer;
  const client = labObserverClient(cp);
  return new Promise((resolve, reject) => {
    client.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      if (err || !res) reject(err ?? new Error(`GetStatus on ${address}: no answer`)); else resolve(res);
    });
  });
}

/** The agents' address of a replica (its socket in the state dir): controlplane.sock when it is the only one. */
export function agentAddress(stateDir: string, name: string = CONTROLPLANE_NAME): string {
  return `unix://${path.join(stateDir, name === CONTROLPLANE_NAME ? CONTROLPLANE_SOCKET : `${name}.sock`)}`;
}

/** Replica i's supervised name: "controlplane" when it is the only one, else "controlplane-<i>". */
export function replicaName(index: number, count: number): string {
  return count === 1 ? CONTROLPLANE_NAME : `${CONTROLPLANE_NAME}-${index}`;
}

/** HOST:PORT with the port moved by `by` (replica i's Observer and UI addresses: the first's, +2i). */
export function shiftPort(address: string, by: number, flag: string): string {
  const m = /^(.*):(\d{1,5})$/.exec(address);
  const port = Number(m?.[2]) + by;
  if (!m || port > 65535) throw new Error(`${flag}: ${JSON.stringify(address)} leaves no port for replica ${by / 2} (+${by})`);
  return `${m[1]}:${port}`;
}

export interface ControlPlaneOptions {
  /** The Observer API's gRPC address; default DEFAULT_OBSERVER_ADDRESS. */
  observer?: string;
  /** The web UI's HOST:PORT (checked by uiUrl); none when absent. */
  ui?: string;
  /** Serve mutual TLS with the certificates issueLabCertificates() left in <stateDir>/tls/; default true. */
  secure?: boolean;
  /** Its supervised name (replicaName); default "controlplane". */
  name?: string;
  /** The shared ClickHouse server; default: the embedded store in <stateDir>/store. */
  store?: Pick<LabClickHouse, "url" | "credentials">;
}

/**
 * The control plane's command line and addresses (`options` as a string: the Observer
 * address alone); the lab's supervisor runs it (supervisor.ts) and `up` waits with
 * waitControlPlaneReady.
 */
export function controlPlaneSpec(stateDir: string, repoRoot: string, options: string | ControlPlaneOptions = {}): LabControlPlane {
  const opts = typeof options === "string" ? { observer: options } : options;
  const observer = opts.observer ?? DEFAULT_OBSERVER_ADDRESS;
  const ui = opts.ui !== undefined ? uiUrl(opts.ui) : undefined;
  const secure = opts.secure ?? true;
  const name = opts.name ?? CONTROLPLANE_NAME;
  const cp: LabControlPlane = { name, pid: 0, observer, agents: agentAddress(stateDir, name), log: path.join(stateDir, LOGS_DIR, `${name}.log`) };
  if (ui !== undefined) cp.ui = ui;
  const tls = labTlsDir(stateDir);
  if (secure) cp.ca = path.join(tls, CA_CERT);
  cp.argv = [process.execPath, path.join(repoRoot, "dist", "cli", "main.js"), "controlplane",
    "--manifests", path.join(stateDir, MANIFESTS_DIR), "--listen", observer, "--listen", cp.agents,
    // The history survives a control-plane restart (kill -9, `lab restart controlplane`):
    // in the embedded store, or in the ClickHouse server that every replica shares.
    ...(opts.store !== undefined ? ["--store", opts.store.url, "--store-credentials", opts.store.credentials] : ["--data-dir", path.join(stateDir, STORE_DIR)]),
    ...(opts.ui !== undefined ? ["--ui-listen", opts.ui] : []),
    ...(secure ? ["--tls-cert", path.join(tls, SERVER_CERT), "--tls-key", path.join(tls, SERVER_KEY), "--tls-client-ca", path.join(tls, CA_CERT)] : []),
    // The lab is one machine's sandbox, its Observer API and UI on loopback: no tokens, by choice.
    "--allow-unauthenticated"];
  return cp;
}

/** Whether the control plane answers GetStatus within a second. */
export async function controlPlaneReady(cp: { observer: string; ca?: string | undefined }): Promise<boolean> {
  try {
    await controlPlaneStatus(cp, 1000);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the supervisor runs the control plane (a pid other than `notPid`) and it answers; returns its pid. */
export async function waitControlPlaneReady(stateDir: string, cp: LabControlPlane, opts: { notPid?: number; failOnExit?: boolean } = {}): Promise<number> {
  try {
    return await waitStarted(stateDir, cp.name, {
      ...opts, what: cp.name === CONTROLPLANE_NAME ? "control plane" : `control plane ${cp.name}`, timeoutMs: READY_TIMEOUT_MS, ready: () => controlPlaneReady(cp),
    });
  } catch (err) {
    throw new Error(`${(err as Error).message} (Observer API ${cp.observer})${tail(cp.log)}`);
  }
}

function tail(file: string): string {
  try {
    return "\n" + readFileSync(file, "utf8").trimEnd().split("\n").slice(-15).join("\n");
  } catch {
    return "";
  }
}

/** Whether `pid` still runs the server its pid file names (a reused pid is left alone). */
function runsServer(pid: number, file: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return file.startsWith("clickhouse") ? argv.some((a) => a.endsWith("clickhouse-server") || a.endsWith("clickhouse")) : argv.includes("controlplane");
  } catch {
    return false;
  }
}

/**
 * Stops every server a pid file in the state dir names (each control-plane replica, the
 * ClickHouse server: SIGTERM, then SIGKILL after 5 s) and removes the pid files and the
 * replicas' sockets; idempotent, and needs no state.json. Returns the pids it stopped.
 */
export async function stopControlPlane(stateDir: string): Promise<number[]> {
  const entries = await readdir(stateDir).catch(() => [] as string[]);
  const stopped: number[] = [];
  await Promise.all(entries.filter((e) => SERVER_PID_FILE.test(e)).map(async (file) => {
    const pidFile = path.join(stateDir, file);
    const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
    if (pid > 0 && runsServer(pid, file)) {
      process.kill(pid, "SIGTERM");
      // ClickHouse may take its time to flush; it gets the supervisor's own grace.
      const deadline = Date.now() + 5000;
      while (runsServer(pid, file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (runsServer(pid, file)) process.kill(pid, "SIGKILL");
      stopped.push(pid);
    }
    await rm(pidFile, { force: true });
  }));
  for (const e of entries) {
    if (e === CONTROLPLANE_SOCKET || /^controlplane-\d+\.sock$/.test(e)) await rm(path.join(stateDir, e), { force: true });
  }
  return stopped;
}
