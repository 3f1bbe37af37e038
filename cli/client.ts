// How the CLI finds and talks to the control plane's Observer API, and with which token.
import fs from "node:fs";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import { ConfigError } from "../config/flags.js";
import { isWellFormedToken } from "../controlplane/access/tokens.js";
import { loadCa } from "../tls/material.js";
import { tlsChannel } from "../tls/client.js";
import { controlPlanes, DEFAULT_STATE_DIR, parseState, statePath, type LabState } from "../lab/state.js";

export const DEFAULT_SERVER = "127.0.0.1:4387";

/** parseArgs options every command that calls the Observer API takes. */
export const connectionOptions = {
  server: { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
  "tls-ca": { type: "string" },
} as const;

export const connectionUsage = `      --server ADDR[,ADDR…] control plane (default: $BULKHEAD_SERVER, else the lab's replicas, else 127.0.0.1:4387);
                           with several IP:PORT, the first that answers (replicas behind no load balancer)
      --token TOKEN        bearer token (visible in the process list: prefer --token-file or $BULKHEAD_TOKEN)
      --token-file FILE    file holding the bearer token (surrounding whitespace ignored)
                           without either: $BULKHEAD_TOKEN, else no token
      --tls-ca FILE        CA of a control plane serving TLS (default: $BULKHEAD_TLS_CA, else the lab's for the lab's)
`;

/** The lab's state.json: in $BULKHEAD_LAB_STATE_DIR as for `bulkhead lab`, else the default. */
function labStateFile(): string {
  return statePath(process.env.BULKHEAD_LAB_STATE_DIR || DEFAULT_STATE_DIR);
}

/** The running lab's control plane as state.json records it (read by the lab's own
 * parser), if there is one. */
function labControlPlane(): { observer?: string; ca?: string } {
  const file = labStateFile();
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return {}; // no lab running here
    throw new ConfigError(`cannot read the lab's state ${file}: ${(err as Error).message} (or give --server)`);
  }
  let state: LabState;
  try {
    state = parseState(JSON.parse(text), file);
  } catch (err) {
    // A broken state file must not send the CLI to a default address in plaintext unnoticed.
    throw new ConfigError(`the lab's state ${file} is unreadable: ${(err as Error).message} (bulkhead lab down, or give --server)`);
  }
  const cp = state.controlplane;
  // Every replica, replica 0 first: the CLI goes on to the next when one is down.
  const observers = controlPlanes(state).map((c) => c.observer);
  return {
    ...(observers.length > 0 ? { observer: observers.join(",") } : {}),
    ...(cp?.ca !== undefined ? { ca: cp.ca } : {}),
  };
}

/** --server, else $BULKHEAD_SERVER, else the running lab's control plane, else the default. */
export function serverAddress(flag: string | undefined): string {
  if (flag) return flag;
  if (process.env.BULKHEAD_SERVER) return process.env.BULKHEAD_SERVER;
  return labControlPlane().observer ?? DEFAULT_SERVER;
}

/** --token, else --token-file, else $BULKHEAD_TOKEN, else none. Errors never show the token. */
export function bearerToken(flags: { token?: string | undefined; "token-file"?: string | undefined }): string | undefined {
  if (flags.token !== undefined && flags["token-file"] !== undefined) throw new ConfigError("give --token or --token-file, not both");
  let token: string, from: string;
  if (flags.token !== undefined) {
    token = flags.token; from = "--token";
  } else if (flags["token-file"] !== undefined) {
    const file = flags["token-file"];
    try {
      token = fs.readFileSync(file, "utf8").trim();
    } catch (err) {
      throw new ConfigError(`--token-file: cannot read ${file}: ${(err as Error).message}`);
    }
    from = `--token-file ${file}`;
  } else if (process.env.BULKHEAD_TOKEN !== undefined && process.env.BULKHEAD_TOKEN !== "") {
    token = process.env.BULKHEAD_TOKEN; from = "$BULKHEAD_TOKEN";
  } else {
    return undefined;
  }
  if (!isWellFormedToken(token)) throw new ConfigError(`${from}: not a token (16 to 4096 printable ASCII characters without spaces)`);
  return token;
}

/** The CA that verifies the server, as a file: --tls-ca, else $BULKHEAD_TLS_CA, else the lab's
 * when `address` is the lab's control planes (all or some); undefined: plaintext. */
export function serverCaFile(address: string, flag: string | undefined): { flag: string; file: string } | undefined {
  if (flag) return { flag: "tls-ca", file: flag };
  if (process.env.BULKHEAD_TLS_CA) return { flag: "tls-ca (from $BULKHEAD_TLS_CA)", file: process.env.BULKHEAD_TLS_CA };
  const lab = labControlPlane();
  const labs = new Set(lab.observer?.split(",") ?? []);
  if (lab.ca !== undefined && address.split(",").every((a) => labs.has(a))) return { flag: `tls-ca (the lab's, from ${labStateFile()})`, file: lab.ca };
  return undefined;
}

/**
 * The gRPC target of `--server`: one address as given, or a list of IP:PORT of one family
 * as grpc-js's static resolver takes it ("ipv4:a:p,b:q"); its pick_first policy tries them
 * in order and stays with the first that answers. Names in a list are refused: one DNS name
 * that resolves to every replica (a headless Service) does the same.
 */
export function grpcTarget(address: string): string {
  const parts = address.split(",");
  if (parts.length === 1) return address;
  const families = new Set(parts.map((part) => {
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(part);
    const family = m ? net.isIP(m[1] ?? m[2] ?? "") : 0;
    if (family === 0 || (m![1] !== undefined) !== (family === 6) || Number(m![3]) < 1 || Number(m![3]) > 65535) {
      throw new ConfigError(`--server: "${part}" in the list ${address} is not IP:PORT or [IPv6]:PORT (a list takes addresses only; give a name alone)`);
    }
    return family;
  }));
  if (families.size > 1) throw new ConfigError(`--server: the list ${address} mixes IPv4 and IPv6 addresses`);
  return `${families.has(6) ? "ipv6" : "ipv4"}:${address}`;
}

/** An Observer API client: TLS verified against `caFile` when given, else plaintext; the
 * bearer token, if any, goes as call metadata on every call (grpc-js attaches call
 * credentials to TLS channels only, and the Observer API reads the same header either way). */
export function observerClient(address: string, caFile?: { flag: string; file: string }, token?: string): ObserverServiceClient {
  const target = grpcTarget(address);
  const interceptors: grpc.Interceptor[] = token === undefined ? [] : [(options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    })];
  if (!caFile) return new ObserverServiceClient(target, grpc.credentials.createInsecure(), { interceptors });
  const tls = tlsChannel(address, loadCa(caFile.flag, caFile.file));
  return new ObserverServiceClient(target, tls.credentials, { ...tls.options, interceptors });
}

/** The Observer API client the CLI's flags (--server, --tls-ca, --token…) ask for. */
export function connectObserver(flags: { server?: string | undefined; tlsCa?: string | undefined; token?: string | undefined }): { address: string; client: ObserverServiceClient } {
  const address = serverAddress(flags.server);
  return { address, client: observerClient(address, serverCaFile(address, flags.tlsCa), flags.token) };
}

export function describeGrpcError(address: string, err: grpc.ServiceError): string {
  if (err.code === grpc.status.UNAVAILABLE) {
    return `cannot reach the control plane at ${address} (${err.details}); is it running? (bulkhead lab up, or --server ADDR;`
      + " a control plane with TLS needs --tls-ca FILE or $BULKHEAD_TLS_CA)";
  }
  if (err.code === grpc.status.UNAUTHENTICATED) {
    return `not authenticated by the control plane at ${address}: ${err.details} (give a token: --token-file FILE, $BULKHEAD_TOKEN or --token)`;
  }
  if (err.code === grpc.status.PERMISSION_DENIED) return `permission denied: ${err.details}`;
  return `${grpc.status[err.code] ?? err.code}: ${err.details}`;
}
