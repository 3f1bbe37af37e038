// ObserverService: GetFlows (history then, with follow, live), GetFlowMap, GetStatus,
// GetNodes, and the policy requests PolicyWhatIf and SuggestPolicies (policy-requests.ts)
// over the control plane's stores. Bad requests get INVALID_ARGUMENT naming the
// field; nothing a client sends can change stored data.
//
// Every call first authenticates its `authorization: Bearer <token>` metadata (access/):
// UNAUTHENTICATED for a missing (unless allowed), malformed or unknown token;
// PERMISSION_DENIED naming what lies outside the token's scope. A namespace-scoped token
// gets only flows with an end in its namespaces, maps cut to edges with such an end, and
// no cluster-wide status or node list. Tokens are never logged; the subject (entry name) is.
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type {
  ObserverServiceServer, GetFlowsRequest, GetFlowsResponse, GetStatusResponse, GetNodesResponse,
} from "../proto/gen/bulkhead/v1/observer.js";
import { compileRequest, FlowFilterError } from "./store/filter.js";
import { FlowStream } from "./flow-stream.js";
import { isNamespaceName } from "../kubernetes/names.js";
import type { ControlPlane } from "./controlplane.js";
import { policySuggestions, policyWhatIf, PolicyRequestError } from "./policy-requests.js";
import type { AccessControl } from "./access/control.js";
import { msOfTimestamp } from "../config/time.js";
import { MAX_LIVE_MAP_WINDOW_MS, MAX_STORED_MAP_WINDOW_MS } from "../config/wire.js";
import {
  AccessError, flowInScope, requireCluster, requireFlowFilters, requireNamespace, restrictFlowMap, type Scope,
} from "./access/scope.js";

/**
 * A follow stream with `until` ends this long after `until`: records of flows that started
 * by then reach the control plane up to a drain interval (1 s by default) and an export
 * batch later. What comes later still is in the history, for a query without follow.
 */
export const FOLLOW_UNTIL_GRACE_MS = 5000;

function serviceError(code: grpc.status, message: string): grpc.ServiceError {
  return Object.assign(new Error(message), { code, details: message, metadata: new grpc.Metadata() });
}

function invalid(message: string): grpc.ServiceError {
  return serviceError(grpc.status.INVALID_ARGUMENT, message);
}

function refusal(err: AccessError): grpc.ServiceError {
  return serviceError(err.status === 401 ? grpc.status.UNAUTHENTICATED : grpc.status.PERMISSION_DENIED, err.message);
}

/** The call's one authorization value, as text; several are refused rather than guessed between. */
function authorizationOf(metadata: grpc.Metadata): string | AccessError | undefined {
  const values = metadata.get("authorization");
  if (values.length > 1) return new AccessError(401, `${values.length} authorization values; send one`);
  const value = values[0];
  if (value === undefined) return undefined;
  return typeof value === "string" ? value : value.toString("latin1");
}

export function observerService(cp: ControlPlane, access: AccessControl, log: Logger): ObserverServiceServer {
  /** The caller's scope; or undefined after refusing the call (logged by subject or reason, never by token). */
  const authorize = (method: string, metadata: grpc.Metadata, refuse: (err: grpc.ServiceError) => void): Scope | undefined => {
    const authorization = authorizationOf(metadata);
    const result = authorization instanceof AccessError ? authorization : access.authenticate(authorization);
    if (result instanceof AccessError) {
      log.info({ method, reason: result.message }, "observer call refused: not authenticated");
      refuse(refusal(result));
      return undefined;
    }
    log.debug({ method, subject: result.subject }, "observer call");
    return result;
  };
  const deny = (method: string, scope: Scope, err: AccessError, refuse: (err: grpc.ServiceError) => void) => {
    log.info({ method, subject: scope.subject, reason: err.message }, "observer call refused: outside the token's scope");
    refuse(refusal(err));
  };

  return {
    getFlows(call: grpc.ServerWritableStream<GetFlowsRequest, GetFlowsResponse>) {
      const fail = (err: grpc.ServiceError) => call.emit("error", err);
      const authorization = authorizationOf(call.metadata);
      let scope = authorize("GetFlows", call.metadata, fail);
      if (scope === undefined) return;
      const req = call.request;
      let predicate;
      try {
        predicate = compileRequest(req.allow, req.deny);
      } catch (err) {
        const msg = err instanceof FlowFilterError ? err.message : `bad filter: ${(err as Error).message}`;
        fail(invalid(msg));
        return;
      }
      const outside = requireFlowFilters(scope, req.allow);
      if (outside) { deny("GetFlows", scope, outside, fail); return; }
      const since = msOfTimestamp(req.since), until = msOfTimestamp(req.until);
      if (since !== undefined && until !== undefined && since > until) {
        fail(invalid("since is after until"));
        return;
      }
      // The in-memory history answers `last` holding N records; a store that streams it does not.
      if (req.last > BigInt(cp.history.capacity) && cp.store?.streamsLast !== true) {
        fail(invalid(`last ${req.last} exceeds the store capacity ${cp.history.capacity}`
          + (cp.store === undefined ? " (the in-memory history; with --data-dir the embedded store answers any last N)" : ` (the ${cp.store.status().kind} store keeps last N in memory)`)));
        return;
      }
      // The scope is part of the predicate, so `last N` counts only flows the caller may see.
      const requested = predicate;
      const visible = (flow: Parameters<typeof requested>[0]) => scope !== undefined && flowInScope(scope, flow) && requested(flow);
      // Written at the client's pace; one that stays behind is cut and counted (flow-stream.ts).
      const stream = new FlowStream(call, cp.flowStreamLimits, (why) => {
        cp.flowStreamsCut++;
        log.warn({ method: "GetFlows", subject: scope?.subject, why, cutTotal: cp.flowStreamsCut }, "GetFlows client too far behind: cut off");
      }, (err) => log.error({ method: "GetFlows", err: err.message }, "flow store query failed"));
      // Older than the hot window, the history comes from the durable store, first; live
      // records meanwhile queue in the stream, so nothing is missed or sent twice.
      const history = cp.flows({ predicate: visible, allow: req.allow, deny: req.deny, since: req.since, until: req.until, last: Number(req.last) });
      if (!req.follow) {
        stream.start(history.hot, false, history.stored);
        call.on("close", () => stream.stop());
        return;
      }
      // Subscribed in the same turn as the history query: no record falls between the two.
      const unsubscribe = cp.history.subscribe(visible, (records) => {
        stream.push(until === undefined ? records : records.filter((flow) => (msOfTimestamp(flow.startTime) ?? 0) <= until));
      });
      stream.start(history.hot, true, history.stored);
      // Tokens were reloaded: a revoked token's stream ends now; a changed scope applies from the next batch.
      const stopWatchingTokens = access.onChange(() => {
        const again = authorization instanceof AccessError ? authorization : access.authenticate(authorization);
        if (!(again instanceof AccessError)) { scope = again; return; }
        stop();
        log.info({ method: "GetFlows", subject: scope?.subject, reason: again.message }, "follow stream ended: token no longer valid");
        fail(refusal(again));
      });
      // Until has passed (plus the grace for late records): nothing more can match.
      const ending = until === undefined ? undefined
        : setTimeout(() => { unsubscribe(); stopWatchingTokens(); stream.finish(); }, Math.max(0, until + FOLLOW_UNTIL_GRACE_MS - Date.now()));
      const stop = () => { stream.stop(); unsubscribe(); stopWatchingTokens(); clearTimeout(ending); };
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("error", stop);
    },

    getFlowMap(call, callback) {
      const scope = authorize("GetFlowMap", call.metadata, (err) => callback(err));
      if (scope === undefined) return;
      const { namespace, window } = call.request;
      if (namespace !== "" && !isNamespaceName(namespace)) {
        callback(invalid(`namespace "${namespace}" is not a valid namespace name`));
        return;
      }
      if (namespace !== "") {
        const outside = requireNamespace(scope, namespace);
        if (outside) { deny("GetFlowMap", scope, outside, (err) => callback(err)); return; }
      }
      const windowMs = window ? Number(window.seconds) * 1000 + window.nanos / 1e6 : 5 * 60_000;
      const maxMs = cp.store === undefined ? MAX_LIVE_MAP_WINDOW_MS : MAX_STORED_MAP_WINDOW_MS;
      if (!(windowMs > 0) || windowMs > maxMs) {
        callback(invalid(`window ${windowMs} ms is outside (0, ${cp.store === undefined ? "1h] (no durable store: --store memory)" : "366d]"}`));
        return;
      }
      if (windowMs <= MAX_LIVE_MAP_WINDOW_MS) {
        callback(null, restrictFlowMap(scope, cp.flowMap.getMap({ namespace: namespace || undefined, windowMs })));
        return;
      }
      // Beyond the live maps' hour: built from the store's records of the window.
      cp.storedFlowMap({ ...(namespace !== "" ? { namespace } : {}), windowMs }).then(
        (map) => callback(null, restrictFlowMap(scope, map)),
        (err: Error) => callback(serviceError(grpc.status.UNAVAILABLE, `flow store: ${err.message}`)));
    },

    // Status and nodes describe the whole cluster (every node's losses, metadata errors
    // naming other namespaces' objects): cluster-wide tokens only.
    getStatus(call, callback) {
      const scope = authorize("GetStatus", call.metadata, (err) => callback(err));
      if (scope === undefined) return;
      const outside = requireCluster(scope, "the control plane's status");
      if (outside) { deny("GetStatus", scope, outside, (err) => callback(err)); return; }
      callback(null, cp.status());
    },

    policyWhatIf(call, callback) {
      const scope = authorize("PolicyWhatIf", call.metadata, (err) => callback(err));
      if (scope === undefined) return;
      policyWhatIf(cp, scope, call.request).then((response) => callback(null, response), (err: Error) => {
        if (err instanceof PolicyRequestError && err.kind === "denied") deny("PolicyWhatIf", scope, new AccessError(403, err.message), (e) => callback(e));
        else if (err instanceof PolicyRequestError) callback(invalid(err.message));
        else callback(serviceError(grpc.status.UNAVAILABLE, `flow store: ${err.message}`));
      });
    },

    suggestPolicies(call, callback) {
      const scope = authorize("SuggestPolicies", call.metadata, (err) => callback(err));
      if (scope === undefined) return;
      policySuggestions(cp, scope, call.request).then((response) => callback(null, response), (err: Error) => {
        if (err instanceof PolicyRequestError && err.kind === "denied") deny("SuggestPolicies", scope, new AccessError(403, err.message), (e) => callback(e));
        else if (err instanceof PolicyRequestError) callback(invalid(err.message));
        else callback(serviceError(grpc.status.INTERNAL, `SuggestPolicies: ${err.message}`));
      });
    },

    getNodes(call, callback) {
      const scope = authorize("GetNodes", call.metadata, (err) => callback(err));
      if (scope === undefined) return;
      const outside = requireCluster(scope, "the node list");
      if (outside) { deny("GetNodes", scope, outside, (err) => callback(err)); return; }
      callback(null, cp.nodes());
    },
  };
}

export type { GetStatusResponse, GetNodesResponse };
