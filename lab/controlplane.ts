// The lab's control plane: one process in the machine's own namespace, watching the lab's
// manifests, run (and restarted) by the lab's supervisor. Agents reach it over a unix socket
// in the state dir (a socket file is visible from every network namespace); the CLI over
// 127.0.0.1. A pid file, rewritten by the supervisor at each start, lets `down` stop it
// even when state.json is gone. By default both speak TLS with certificates from
// `bulkhead certs` in <stateDir>/tls/, and agents show their node's certificate.
import { readFileSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import net from "node:net";
import type { ObserverServiceClient, GetStatusResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { observerClient } from "../cli/client.js";
import { CA_CERT, SERVER_CERT, SERVER_KEY, writeCertificates } from "../tls/certs-command.js";
import { CONTROLPLANE_PID_FILE, LOGS_DIR, MANIFESTS_DIR, STORE_DIR, type LabControlPlane } from "./state.js";

export { CONTROLPLANE_PID_FILE };
import { CONTROLPLANE_PROCESS, waitStarted } from "./supervisor.js";

export const DEFAULT_OBSERVER_ADDRESS = "127.0.0.1:4387";
/** The web UI's address: loopback, so only this machine (or an SSH port forward) reaches it. */
export const DEFAULT_UI_ADDRESS = "127.0.0.1:4388";
export const CONTROLPLANE_SOCKET = "controlplane.sock";
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

export function agentAddress(stateDir: string): string {
  return `unix://${path.join(stateDir, CONTROLPLANE_SOCKET)}`;
}

export interface ControlPlaneOptions {
  /** The Observer API's gRPC address; default DEFAULT_OBSERVER_ADDRESS. */
  observer?: string;
  /** The web UI's HOST:PORT (checked by uiUrl); none when absent. */
  ui?: string;
  /** Serve mutual TLS with the certificates issueLabCertificates() left in <stateDir>/tls/; default true. */
  secure?: boolean;
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
  const cp: LabControlPlane = { pid: 0, observer, agents: agentAddress(stateDir), log: path.join(stateDir, LOGS_DIR, "controlplane.log") };
  if (ui !== undefined) cp.ui = ui;
  const tls = labTlsDir(stateDir);
  if (secure) cp.ca = path.join(tls, CA_CERT);
  cp.argv = [process.execPath, path.join(repoRoot, "dist", "cli", "main.js"), "controlplane",
    "--manifests", path.join(stateDir, MANIFESTS_DIR), "--listen", observer, "--listen", cp.agents,
    // The history survives a control-plane restart (kill -9, `lab restart controlplane`).
    "--data-dir", path.join(stateDir, STORE_DIR),
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
    return await waitStarted(stateDir, CONTROLPLANE_PROCESS, {
      ...opts, what: "control plane", timeoutMs: READY_TIMEOUT_MS, ready: () => controlPlaneReady(cp),
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

function isControlPlane(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes("controlplane");
  } catch {
    return false;
  }
}

/** Stops the control plane the pid file names (SIGTERM, then SIGKILL after 5 s); idempotent. */
export async function stopControlPlane(stateDir: string): Promise<number | undefined> {
  const pidFile = path.join(stateDir, CONTROLPLANE_PID_FILE);
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).trim());
  let stopped: number | undefined;
  if (pid > 0 && isControlPlane(pid)) {
    process.kill(pid, "SIGTERM");
    const deadline = Date.now() + 5000;
    while (isControlPlane(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (isControlPlane(pid)) process.kill(pid, "SIGKILL");
    stopped = pid;
  }
  await rm(pidFile, { force: true });
  await rm(path.join(stateDir, CONTROLPLANE_SOCKET), { force: true });
  return stopped;
}
