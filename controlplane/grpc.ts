// The control plane's gRPC server: AgentService, ObserverService, standard health
// checking (grpc.health.v1) and server reflection, so grpcurl and grpc_health_probe work.
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation } from "grpc-health-check";
import { AgentServiceDefinition, type AgentServer } from "./agent-columns.js";
import { ObserverServiceService, type ObserverServiceServer } from "../proto/gen/bulkhead/v1/observer.js";
import { repoRoot } from "../config/install.js";
import { MAX_MESSAGE_BYTES, MAX_POLICY_MESSAGE_BYTES } from "../config/wire.js";
import { prepareUnixSocket } from "../tls/listener.js";

export { MAX_MESSAGE_BYTES } from "../config/wire.js";

export interface GrpcServices {
  agent: AgentServer;
  observer: ObserverServiceServer;
}

export function createGrpcServer(services: GrpcServices): grpc.Server {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    // Policy snapshots are the big messages this server sends.
    "grpc.max_send_message_length": MAX_POLICY_MESSAGE_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
  });
  // Its deserializer keeps FlowColumns as bytes for the checked columnar decoder (agent-columns.ts).
  server.addService(AgentServiceDefinition, services.agent);
  server.addService(ObserverServiceService, services.observer);
  const health = new HealthImplementation({
    "": "SERVING", "bulkhead.v1.AgentService": "SERVING", "bulkhead.v1.ObserverService": "SERVING",
  });
  health.addToServer(server);
  const protoDir = path.join(repoRoot, "proto");
  const definition = protoLoader.loadSync(["bulkhead/v1/agent.proto", "bulkhead/v1/observer.proto"], {
    includeDirs: [protoDir],
  });
  new ReflectionService(definition).addToServer(server);
  return server;
}

/** Binds "host:port" or "unix:///path" without TLS (a stale socket file from a crashed run is removed). */
export function bind(server: grpc.Server, address: string, credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
  if (address.startsWith("unix://")) prepareUnixSocket(address);
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (err, port) => {
      if (err) reject(new Error(`gRPC listen on ${address}: ${err.message}`));
      else resolve(port);
    });
  });
}
