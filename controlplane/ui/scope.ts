// Who may see what through the UI: the same bearer tokens and the same rule as the gRPC
// Observer API (controlplane/access/). requestScope is the one place a request's scope is
// decided; every endpoint honours what it returns.
import type { IncomingMessage } from "node:http";
import { AccessError, type AccessControl, type Scope } from "../access/index.js";
import { ApiError } from "./params.js";

/** The scope of one request's bearer token; a missing or unknown token is a 401 ApiError. */
export function requestScope(access: AccessControl, request: IncomingMessage): Scope {
  const scope = access.authenticate(request.headers.authorization);
  if (scope instanceof AccessError) throw new ApiError(scope.status, scope.message);
  return scope;
}
