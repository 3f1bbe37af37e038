// Hand-written PolicySnapshot parts for the datapath tests (enforce, conntrack, fail-closed):
// an identity of a pod (namespace "shop") or of an address range, and one allow rule.
import {
  PolicyDirection, type Identity, type PolicyMode, type PolicyRule,
} from "../../proto/gen/bulkhead/v1/policy.js";

export function rule(subject: number, direction: "ingress" | "egress", peer: number, protocol = 0, port = 0, endPort = 0): PolicyRule {
  return {
    subject, peer, protocol, port, endPort,
    direction: direction === "ingress" ? PolicyDirection.POLICY_DIRECTION_INGRESS : PolicyDirection.POLICY_DIRECTION_EGRESS,
  };
}

export function identity(id: number, mode: PolicyMode, iso: { ingress?: boolean; egress?: boolean } = {}, endpoint = true): Identity {
  return { id, namespace: endpoint ? "shop" : "", labels: {}, mode, ingressIsolated: iso.ingress ?? false,
    egressIsolated: iso.egress ?? false, endpoint, service: false };
}
