// ObserverService: GetFlows (history then, with follow, live), GetFlowMap, GetStatus and
// GetNodes over the control plane's stores. Bad requests get INVALID_ARGUMENT naming the
// field; nothing a client sends can change stored data.
import * as grpc from "@grpc/grpc-js";
import type {
  ObserverServiceServer, GetFlowsRequest, GetFlowsResponse, GetStatusResponse, GetNodesResponse,
} from "../proto/gen/bulkhead/v1/observer.js";
import { compileRequest, FlowFilterError } from "./store/filter.js";
import type { ControlPlane } from "./controlplane.js";

const MAX_WINDOW_MS = 60 * 60 * 1000;
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function invalid(message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code: grpc.status.INVALID_ARGUMENT, details: message, metadata: new grpc.Metadata() });
}

function timestampMs(ts: { seconds: bigint; nanos: number } | undefined): number | undefined {
  return ts === undefined ? undefined : Number(ts.seconds) * 1000 + ts.nanos / 1e6;
}

export function observerService(cp: ControlPlane): ObserverServiceServer {
  return {
    getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) {
      const req = call.request;
      let predicate;
      try {
        predicate = compileRequest(req.allow, req.deny);
      } catch (err) {
        const msg = err instanceof FlowFilterError ? err.message : `bad filter: ${(err as Error).message}`;
        call.emit("error", invalid(msg));
        return;
      }
      const since = timestampMs(req.since), until = timestampMs(req.until);
      if (since !== undefined && until !== undefined && since > until) {
        call.emit("error", invalid("since is after until"));
        return;
      }
      if (req.last > BigInt(cp.history.capacity)) {
        call.emit("error", invalid(`last ${req.last} exceeds the store capacity ${cp.history.capacity}`));
        return;
      }
      for (const flow of cp.history.iterate({ predicate, since: req.since, until: req.until, last: Number(req.last) })) {
        call.write({ flow });
      }
      if (!req.follow) {
        call.end();
        return;
      }
      const unsubscribe = cp.history.subscribe(predicate, (records) => {
        for (const flow of records) {
          if (until !== undefined && (timestampMs(flow.startTime) ?? 0) > until) continue;
          call.write({ flow });
        }
      });
      const stop = () => unsubscribe();
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("error", stop);
    },

    getFlowMap(call, callback) {
      const { namespace, window } = call.request;
      if (namespace !== "" && !NAMESPACE_RE.test(namespace)) {
        callback(invalid(`namespace "${namespace}" is not a valid namespace name`));
        return;
      }
      const windowMs = window ? Number(window.seconds) * 1000 + window.nanos / 1e6 : 5 * 60_000;
      if (!(windowMs > 0) || windowMs > MAX_WINDOW_MS) {
        callback(invalid(`window ${windowMs} ms is outside (0, 1h]`));
        return;
      }
      callback(null, cp.flowMap.getMap({ namespace: namespace || undefined, windowMs }));
    },

    getStatus(_call, callback) {
      callback(null, cp.status());
    },

    getNodes(_call, callback) {
      callback(null, cp.nodes());
    },
  };
}

export type { GetStatusResponse, GetNodesResponse };
