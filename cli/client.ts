// How the CLI finds and talks to the control plane's Observer API.
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";

export const DEFAULT_SERVER = "127.0.0.1:4245";
export const LAB_STATE_FILE = "/run/bulkhead/lab/state.json";

/** --server, else $BULKHEAD_SERVER, else the running lab's control plane, else the default. */
export function serverAddress(flag: string | undefined): string {
  if (flag) return flag;
  if (process.env.BULKHEAD_SERVER) return process.env.BULKHEAD_SERVER;
  try {
    const state = JSON.parse(fs.readFileSync(LAB_STATE_FILE, "utf8")) as { controlplane?: { observer?: unknown } };
    if (typeof state.controlplane?.observer === "string") return state.controlplane.observer;
  } catch { /* no lab running here */ }
  return DEFAULT_SERVER;
}

export function observerClient(address: string): ObserverServiceClient {
  return new ObserverServiceClient(address, grpc.credentials.createInsecure());
}

export function describeGrpcError(address: string, err: grpc.ServiceError): string {
  if (err.code === grpc.status.UNAVAILABLE) {
    return `cannot reach the control plane at ${address} (${err.details}); is it running? (bulkhead lab up, or --server ADDR)`;
  }
  return `${grpc.status[err.code] ?? err.code}: ${err.details}`;
}
