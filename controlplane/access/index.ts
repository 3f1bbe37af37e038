// Namespace-scoped access, as one import for every surface that serves flows.
export { AccessControl, type AccessControlOptions } from "./control.js";
export {
  AccessError, UNAUTHENTICATED_SUBJECT, describeScope, endsInScope, flowInScope, namespaceReadable, requireCluster,
  requireFlowFilters, requireNamespace, restrictFlowMap, type Scope,
} from "./scope.js";
export { TokenFileError, isWellFormedToken, loadTokenFile, parseTokenFile, tokenDigest, type Grant, type TokenEntry } from "./tokens.js";
