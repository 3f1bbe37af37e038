// Hand-written PolicySnapshot parts for the datapath tests (enforce, conntrack, fail-closed):
// an identity of a pod (namespace "shop") or of an address range, one allow rule, and a
// whole snapshot of pods, world and host.
import {
  PolicyDirection, PolicyMode, type Identity, type PolicyRule, type PolicySnapshot,
} from "../../proto/gen/bulkhead/v1/policy.js";

export function rule(subject: number, direction: "ingress" | "egress", peer: number, protocol = 0, port = 0, endPort = 0, deny = false): PolicyRule {
  return {
    subject, peer, protocol, port, endPort, deny,
    direction: direction === "ingress" ? PolicyDirection.POLICY_DIRECTION_INGRESS : PolicyDirection.POLICY_DIRECTION_EGRESS,
  };
}

export function identity(id: number, mode: PolicyMode, iso: { ingress?: boolean; egress?: boolean } = {}, endpoint = true): Identity {
  return { id, namespace: endpoint ? "shop" : "", labels: {}, mode, ingressIsolated: iso.ingress ?? false,
    egressIsolated: iso.egress ?? false, endpoint, service: false };
}

/** The reserved identities of the datapath tests' snapshots. */
export const WORLD_ID = 2;
export const HOST_ID = 1;

/**
 * A snapshot of `pods` (each its own identity in `mode`, isolated as `isolated` says, with
 * its v4 and v6 address), world (0.0.0.0/0, ::/0) and host (the nodes' addresses), and `rules`.
 */
export function podsSnapshot(version: number, mode: PolicyMode, pods: readonly { id: number; name: string; ip: string; ip6: string }[],
  isolated: Partial<Record<string, { ingress?: boolean; egress?: boolean }>>, hostIps: readonly string[], rules: PolicyRule[]): PolicySnapshot {
  return {
    version: BigInt(version),
    identities: [
      ...pods.map((p) => identity(p.id, mode, isolated[p.name])),
      identity(WORLD_ID, PolicyMode.POLICY_MODE_OBSERVE, {}, false),
      identity(HOST_ID, PolicyMode.POLICY_MODE_OBSERVE, {}, false),
    ],
    ipIdentities: [
      ...pods.flatMap((p) => [{ cidr: `${p.ip}/32`, identity: p.id }, { cidr: `${p.ip6}/128`, identity: p.id }]),
      { cidr: "0.0.0.0/0", identity: WORLD_ID }, { cidr: "::/0", identity: WORLD_ID },
      ...hostIps.map((ip) => ({ cidr: `${ip}/32`, identity: HOST_ID })),
    ],
    rules,
  };
}
