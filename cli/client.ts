// How the CLI finds and talks to the control plane's Observer API.
import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import { loadCa } from "../tls/material.js";
import { tlsChannel } from "../tls/client.js";

export const DEFAULT_SERVER = "127.0.0.1:4245";
export const LAB_STATE_FILE = "/run/bulkhead/lab/state.json";

/** The lab's state.json: in $BULKHEAD_LAB_STATE_DIR as for `bulkhead lab`, else the default. */
function labStateFile(): string {
  const dir = process.env.BULKHEAD_LAB_STATE_DIR;
  return dir ? path.join(dir, "state.json") : LAB_STATE_FILE;
}

/** The running lab's control plane as state.json records it, if there is one. */
function labControlPlane(): { observer?: string; ca?: string } {
  try {
    const state = JSON.parse(fs.readFileSync(labStateFile(), "utf8")) as { controlplane?: { observer?: unknown; ca?: unknown } };
    const cp = state.controlplane;
    return {
      ...(typeof cp?.observer === "string" ? { observer: cp.observer } : {}),
      ...(typeof cp?.ca === "string" ? { ca: cp.ca } : {}),
    };
  } catch {
    return {}; // no lab running here
  }
}

/** --server, else $BULKHEAD_SERVER, else the running lab's control plane, else the default. */
export function serverAddress(flag: string | undefined): string {
  if (flag) return flag;
  if (process.env.BULKHEAD_SERVER) return process.env.BULKHEAD_SERVER;
  return labControlPlane().observer ?? DEFAULT_SERVER;
}

/** The CA that verifies the server, as a file: --tls-ca, else $BULKHEAD_TLS_CA, else the lab's
 * when `address` is the lab's control plane; undefined: plaintext. */
export function serverCaFile(address: string, flag: string | undefined): { flag: string; file: string } | undefined {
  if (flag) return { flag: "tls-ca", file: flag };
  if (process.env.BULKHEAD_TLS_CA) return { flag: "tls-ca (from $BULKHEAD_TLS_CA)", file: process.env.BULKHEAD_TLS_CA };
  const lab = labControlPlane();
  if (lab.ca !== undefined && lab.observer === address) return { flag: `tls-ca (the lab's, from ${labStateFile()})`, file: lab.ca };
  return undefined;
}

/** An Observer API client: TLS verified against `caFile` when given, else plaintext. */
export function observerClient(address: string, caFile?: { flag: string; file: string }): ObserverServiceClient {
  if (!caFile) return new ObserverServiceClient(address, grpc.credentials.createInsecure());
  const tls = tlsChannel(address, loadCa(caFile.flag, caFile.file));
  return new ObserverServiceClient(address, tls.credentials, tls.options);
}

/** The Observer API client the CLI's flags (--server, --tls-ca) ask for. */
export function connectObserver(flags: { server?: string | undefined; tlsCa?: string | undefined }): { address: string; client: ObserverServiceClient } {
  const address = serverAddress(flags.server);
  return { address, client: observerClient(address, serverCaFile(address, flags.tlsCa)) };
}

export function describeGrpcError(address: string, err: grpc.ServiceError): string {
  if (err.code === grpc.status.UNAVAILABLE) {
    return `cannot reach the control plane at ${address} (${err.details}); is it running? (bulkhead lab up, or --server ADDR;`
      + " a control plane with TLS needs --tls-ca FILE or $BULKHEAD_TLS_CA)";
  }
  return `${grpc.status[err.code] ?? err.code}: ${err.details}`;
}
