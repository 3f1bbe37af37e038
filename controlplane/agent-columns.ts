// How the control plane takes in agents' flow batches of protocol version 2 (FlowColumns,
// flowcolumns/wire.ts). The stream's deserializer keeps a FlowColumns message as its bytes
// (ts-proto would make a BigInt and a number per value and stop at the first cut field
// without naming it); `decodeColumns` reads and checks them whole, naming the batch and
// the column of anything wrong.
//
// The checked columns then go to ingest as they are (agents.ts → ControlPlane.ingestBatch →
// Enricher.admitColumns → FlowHistory.appendColumns, FlowMapStore.addColumns): no record
// per row on the way in (store/enriched-columns.ts).
import type * as grpc from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { AgentServiceService, ConnectRequest, type ConnectResponse } from "../proto/gen/bulkhead/v1/agent.js";
import { CONNECT_COLUMNS_FIELD } from "../flowcolumns/wire.js";

/** A ConnectRequest, or the undecoded bytes of its FlowColumns. */
export type AgentRequest = ConnectRequest | { kind: { $case: "columnBytes"; value: Uint8Array } };

export function decodeAgentRequest(buf: Buffer): AgentRequest {
  if (buf.length > 0 && buf[0] === ((CONNECT_COLUMNS_FIELD << 3) | 2)) {
    const reader = new BinaryReader(buf);
    reader.tag();
    try {
      return { kind: { $case: "columnBytes", value: reader.bytes() } };
    } catch {
      // Framing cut short: decodeColumns names what it can (the batch id comes first).
      return { kind: { $case: "columnBytes", value: buf.subarray(reader.pos) } };
    }
  }
  return ConnectRequest.decode(buf);
}

/** AgentService with that deserializer. */
export const AgentServiceDefinition = {
  connect: { ...AgentServiceService.connect, requestDeserialize: decodeAgentRequest },
} as const;

export interface AgentServer extends grpc.UntypedServiceImplementation {
  connect: grpc.handleBidiStreamingCall<AgentRequest, ConnectResponse>;
}
