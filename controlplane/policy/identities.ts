// Reserved identities and the labels that describe identities without a pod: what the
// kernel's maps and every agent agree on before any policy is compiled.
import { PolicyMode, type Identity } from "../../proto/gen/bulkhead/v1/policy.js";

export const IDENTITY_ANY = 0;
export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
/** Service ClusterIPs (flag `service`): judged after DNAT, at the backend. */
export const IDENTITY_SERVICE = 3;
/** Allocated identities start here; below are reserved. */
export const FIRST_IDENTITY = 256;

export const RESERVED_LABEL = "bulkhead.io/reserved";
export const IP_BLOCKS_LABEL = "bulkhead.io/ip-blocks";

/** The snapshot entry of a reserved identity (host, world, …): observed, never isolated. */
export function reservedIdentity(id: number, name: string): Identity {
  return {
    id, namespace: "", labels: { [RESERVED_LABEL]: name }, mode: PolicyMode.POLICY_MODE_OBSERVE,
    ingressIsolated: false, egressIsolated: false, endpoint: false, service: false,
  };
}
