// How the CLI finds and talks to the control plane's Observer API, and with which token.
import fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ObserverServiceClient } from "../proto/gen/bulkhead/v1/observer.js";
import { ConfigError } from "../agent/config.js";
import { isWellFormedToken } from "../controlplane/access/tokens.js";

export const DEFAULT_SERVER = "127.0.0.1:4245";
export const LAB_STATE_FILE = "/run/bulkhead/lab/state.json";

/** parseArgs options every command that calls the Observer API takes. */
export const connectionOptions = {
  server: { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
} as const;

export const connectionUsage = `      --server ADDR        control plane (default: $BULKHEAD_SERVER, else the lab's, else 127.0.0.1:4245)
      --token TOKEN        bearer token (visible in the process list: prefer --token-file or $BULKHEAD_TOKEN)
      --token-file FILE    file holding the bearer token (surrounding whitespace ignored)
                           without either: $BULKHEAD_TOKEN, else no token
`;

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

export function observerClient(address: string, token?: string): ObserverServiceClient {
  // The token goes as call metadata on every call: grpc-js will not attach call credentials
  // to an insecure channel, and the Observer API reads the same `authorization` value either way.
  const interceptors: grpc.Interceptor[] = token === undefined ? [] : [(options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    })];
  return new ObserverServiceClient(address, grpc.credentials.createInsecure(), { interceptors });
}

export function describeGrpcError(address: string, err: grpc.ServiceError): string {
  if (err.code === grpc.status.UNAVAILABLE) {
    return `cannot reach the control plane at ${address} (${err.details}); is it running? (bulkhead lab up, or --server ADDR)`;
  }
  if (err.code === grpc.status.UNAUTHENTICATED) {
    return `not authenticated by the control plane at ${address}: ${err.details} (give a token: --token-file FILE, $BULKHEAD_TOKEN or --token)`;
  }
  if (err.code === grpc.status.PERMISSION_DENIED) return `permission denied: ${err.details}`;
  return `${grpc.status[err.code] ?? err.code}: ${err.details}`;
}
