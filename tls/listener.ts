// The control plane's TLS listeners. grpc-js's own TLS servers either demand a client
// certificate on every connection (which would shut out the CLI and the UI, who show
// none) or, when they only ask for one, hide from the call whether and why a presented
// certificate failed verification. So the handshake happens here, in a node:tls server
// that asks for a client certificate, and each connection goes one of two ways:
//  - no certificate, or one chained to the client CA and valid now: handed to the gRPC
//    server (a grpc-js connection injector). AgentService.Connect then demands a verified
//    certificate and reads the node from it (call.getAuthContext());
//  - a certificate that failed verification: logged with its subject, issuer and the
//    cause, and every call on the connection is answered UNAUTHENTICATED with that cause
//    (a gRPC trailers-only response), so the agent's log says why too.
import http2 from "node:http2";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import type { X509Certificate } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { TlsMaterial } from "./material.js";
import { describeName } from "./node-identity.js";

/** Removes a stale socket file from a crashed run and makes its folder. */
export function prepareUnixSocket(address: string): string {
  const file = address.slice("unix://".length);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.rmSync(file, { force: true });
  return file;
}

function oneLine(name: string): string {
  return name.replace(/\n/g, ", ");
}

/** Why a presented client certificate is refused, from OpenSSL's verification error code. */
export function refusalReason(code: string, peer: tls.PeerCertificate, clientCa: X509Certificate): string {
  const subject = describeName(peer.subject as unknown as Record<string, string>);
  const issuer = describeName(peer.issuer as unknown as Record<string, string>);
  const cert = `client certificate "${subject}"`;
  switch (code) {
    case "CERT_HAS_EXPIRED":
      return `${cert} expired at ${peer.valid_to} (${code})`;
    case "CERT_NOT_YET_VALID":
      return `${cert} is not valid before ${peer.valid_from} (${code})`;
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "CERT_SIGNATURE_FAILURE":
      return `${cert} is issued by "${issuer}", not by the control plane's client CA "${oneLine(clientCa.subject)}" (${code})`;
    case "INVALID_PURPOSE":
      return `${cert} (issuer "${issuer}") is not for client authentication (${code})`;
    default:
      return `${cert} (issuer "${issuer}") failed verification (${code})`;
  }
}

/** grpc-message is percent-encoded (gRPC over HTTP/2): bytes outside printable ASCII, and '%'. */
function grpcMessage(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export class TlsListeners {
  private readonly injector: grpc.ConnectionInjector;
  private readonly servers: tls.Server[] = [];
  private readonly sockets = new Set<tls.TLSSocket>();

  constructor(grpcServer: grpc.Server, private readonly material: TlsMaterial, private readonly log: Logger) {
    // Plaintext on the gRPC side: the connections injected here are already TLS sockets.
    this.injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  }

  /** Listens on HOST:PORT or unix:///PATH; resolves to the port (1 for a unix socket). */
  async listen(address: string): Promise<number> {
    const server = tls.createServer({
      cert: this.material.cert, key: this.material.key, ca: this.material.ca,
      requestCert: true, rejectUnauthorized: false, ALPNProtocols: ["h2"],
    });
    server.on("secureConnection", (socket) => this.accept(socket));
    server.on("tlsClientError", (err, socket) => {
      this.log.warn({ peer: socket.remoteAddress ?? address, err: err.message }, "TLS handshake failed");
    });
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => reject(new Error(`TLS listen on ${address}: ${err.message}`));
      server.once("error", fail);
      const listening = () => {
        server.off("error", fail);
        // Errors after listening (e.g. EMFILE on accept) are logged, not lost on a settled promise.
        server.on("error", (err) => this.log.error({ address, err: err.message }, "TLS listener error"));
        resolve();
      };
      if (address.startsWith("unix://")) {
        server.listen(prepareUnixSocket(address), listening);
      } else {
        // Port 0 (any free port) is allowed here: tests use it; --listen flags are checked before.
        const m = /^(?:\[([^\]]+)\]|([^:]*)):([0-9]{1,5})$/.exec(address);
        if (!m) throw new Error(`TLS listen on ${address}: not HOST:PORT or unix:///PATH`);
        server.listen({ host: m[1] ?? (m[2] || "0.0.0.0"), port: Number(m[3]) }, listening);
      }
    });
    const bound = server.address();
    return typeof bound === "object" && bound !== null ? bound.port : 1;
  }

  private accept(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("error", (err) => this.log.debug({ peer: socket.remoteAddress, err: err.message }, "TLS connection error"));
    const peer = socket.getPeerCertificate();
    const presented = peer !== null && Object.keys(peer).length > 0;
    if (socket.authorized || !presented) {
      this.injector.injectConnection(socket);
      return;
    }
    const reason = refusalReason(String(socket.authorizationError), peer, this.material.caCertificate);
    this.log.warn({ peer: socket.remoteAddress ?? "unix socket", reason }, "client certificate refused");
    this.refuse(socket, reason);
  }

  /** Answers every call on the connection with UNAUTHENTICATED and `reason`, then closes it. */
  private refuse(socket: tls.TLSSocket, reason: string): void {
    const session = http2.performServerHandshake(socket);
    session.on("error", () => undefined);
    session.on("stream", (stream) => {
      stream.on("error", () => undefined);
      stream.respond({
        ":status": 200, "content-type": "application/grpc",
        "grpc-status": String(grpc.status.UNAUTHENTICATED), "grpc-message": grpcMessage(reason),
      }, { endStream: true });
      session.close();
    });
  }

  /** Stops accepting; with `force`, also ends every connection still open. */
  close(force: boolean): void {
    for (const server of this.servers) server.close();
    this.servers.length = 0;
    // The gRPC server's shutdown ends the injected connections; refused ones end here.
    if (force) for (const socket of this.sockets) socket.destroy();
  }
}
