// gRPC channel credentials for the control plane's clients: agents (with their node
// certificate) and the CLI (only the CA, to verify the server).
import * as grpc from "@grpc/grpc-js";

/** TLS verified against `ca`, showing `own` (certificate and key) when given. */
export function channelCredentials(ca: Buffer, own?: { cert: Buffer; key: Buffer }): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(ca, own?.key ?? null, own?.cert ?? null);
}

/** A unix socket has no host name to check the server certificate against: check "localhost",
 * which every certificate from `bulkhead certs` covers. */
export function channelOptions(address: string): grpc.ChannelOptions {
  return address.startsWith("unix:") ? { "grpc.ssl_target_name_override": "localhost", "grpc.default_authority": "localhost" } : {};
}
