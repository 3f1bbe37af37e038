// Reserved identities and the labels that describe identities without a pod: what the
// kernel's maps and every agent agree on before any policy is compiled.
import { BH_IDENTITY_ANY, BH_IDENTITY_HOST, BH_IDENTITY_WORLD } from "../../native/gen/abi.js";
import { PolicyMode, type Identity } from "../../proto/gen/bulkhead/v1/policy.js";

/** The identities the kernel itself gives meaning (enum bh_identity_reserved in
 * native/bpf/endpoint.h): any peer (in a rule), the node, addresses no prefix covers. */
export const IDENTITY_ANY = BH_IDENTITY_ANY;
export const IDENTITY_HOST = BH_IDENTITY_HOST;
export const IDENTITY_WORLD = BH_IDENTITY_WORLD;
/** Service ClusterIPs (flag `service`): judged after DNAT, at the backend. The kernel
 * knows them by that flag, not by this number, which the control plane alone reserves. */
export const IDENTITY_SERVICE = 3;
/** Allocated identities start here; below are reserved (control plane only). */
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
