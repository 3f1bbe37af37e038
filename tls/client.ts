// gRPC channel credentials for the control plane's clients: agents (with their node
// certificate) and the CLI (only the CA, to verify the server).
import net from "node:net";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** Where the channel goes: IP literals (one, or a list of replicas), a host name, or a unix socket (no name at all). */
function targetHost(address: string): { kind: "unix" } | { kind: "ip"; ips: string[] } | { kind: "name" } {
  if (address.startsWith("unix:")) return { kind: "unix" };
  const hosts = address.split(",").map((part) => {
    const m = /^(?:dns:(?:\/\/[^/]*\/)?)?(?:\[([^\]]+)\]|([^:]+))(?::[0-9]+)?$/.exec(part);
    return m?.[1] ?? m?.[2] ?? "";
  });
  return hosts.every((h) => net.isIP(h)) ? { kind: "ip", ips: hosts } : { kind: "name" };
}

/** TLS to `address`, verified against `ca`, showing `own` (certificate and key) when given. */
export function tlsChannel(address: string, ca: Buffer, own?: { cert: Buffer; key: Buffer }): {
  credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions;
} {
  const target = targetHost(address);
  // An IP literal is not a valid TLS server name (SNI; Node warns about it): send "localhost"
  // as the name but still check the certificate against the IP address (of a list, any:
  // the channel does not say which replica answered, and each was named by the user).
  const verify = target.kind === "ip"
    ? { checkServerIdentity: (_host: string, cert: tls.PeerCertificate) => {
      const errors = target.ips.map((ip) => tls.checkServerIdentity(ip, cert));
      return errors.some((e) => e === undefined) ? undefined : errors[0];
    } }
    : {};
  const credentials = grpc.credentials.createSsl(ca, own?.key ?? null, own?.cert ?? null, verify);
  // A unix socket has no host name: check "localhost", which every certificate from `bulkhead certs` covers.
  const options: grpc.ChannelOptions = target.kind === "name" ? {} : { "grpc.ssl_target_name_override": "localhost" };
  return { credentials, options };
}
