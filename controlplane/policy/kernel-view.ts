// The kernel's decision in TypeScript: a PolicySnapshot read the way native/bpf reads its
// maps (longest-prefix identity, per-identity rules for the peer and then any peer), so
// tests and the conformance runner prove compile(model) ≡ model without a kernel.
import { parseIp } from "../../addresses/ip.js";
import { addressBit, parseIpPrefix, wordsOf } from "../../addresses/prefix.js";
import { BH_IDENTITY_ANY, BH_IDENTITY_WORLD } from "../../native/gen/abi.js";
import { PolicyDirection, type Identity, type PolicySnapshot } from "../../proto/gen/bulkhead/v1/policy.js";
import type { Protocol } from "../metadata/objects.js";
import { PROTOCOL_NUMBERS } from "./model.js";

interface LpmNode {
  zero?: LpmNode;
  one?: LpmNode;
  identity?: number;
}

interface RuleEntry {
  protocol: number;
  port: number;
  endPort: number;
  deny: boolean;
}

/** An address as a snapshot names it: its canonical text and the identity of its longest prefix. */
export interface AddressIdentity {
  readonly ip: string;
  readonly identity: number;
}

export class SnapshotIndex {
  private readonly roots: Record<4 | 6, LpmNode> = { 4: {}, 6: {} };
  readonly identities = new Map<number, Identity>();
  /** (subject, direction) → peer → allowed entries. */
  private readonly rules = new Map<number, Map<number, RuleEntry[]>>();
  /** Address text → canonical text and identity; bounded, as flow addresses are not. */
  private addresses = new Map<string, AddressIdentity>();

  constructor(snapshot: PolicySnapshot) {
    for (const identity of snapshot.identities) this.identities.set(identity.id, identity);
    for (const entry of snapshot.ipIdentities) {
      const prefix = parseIpPrefix(entry.cidr);
      if (!prefix) throw new Error(`policy snapshot ${snapshot.version}: ip_identities: bad CIDR ${JSON.stringify(entry.cidr)}`);
      let node = this.roots[prefix.family];
      for (let bit = 0; bit < prefix.length; bit++) {
        if (addressBit(prefix.words, bit) === 0) node = node.zero ??= {};
        else node = node.one ??= {};
      }
      node.identity = entry.identity;
    }
    for (const r of snapshot.rules) {
      const key = r.subject * 4 + r.direction;
      let byPeer = this.rules.get(key);
      if (!byPeer) this.rules.set(key, (byPeer = new Map()));
      let list = byPeer.get(r.peer);
      if (!list) byPeer.set(r.peer, (list = []));
      list.push({ protocol: r.protocol, port: r.port, endPort: r.endPort, deny: r.deny });
    }
  }

  /** The canonical address and its identity by longest-prefix match; an address no entry covers (or not an address) is world. */
  lookup(ip: string): AddressIdentity {
    const cached = this.addresses.get(ip);
    if (cached) return cached;
    const parsed = parseIp(ip);
    let found = BH_IDENTITY_WORLD;
    if (parsed) {
      const words = wordsOf(parsed.bytes);
      const bits = parsed.family === 4 ? 32 : 128;
      let node: LpmNode | undefined = this.roots[parsed.family];
      for (let bit = 0; node; bit++) {
        if (node.identity !== undefined) found = node.identity;
        if (bit >= bits) break;
        node = addressBit(words, bit) === 0 ? node.zero : node.one;
      }
    }
    const out = { ip: parsed?.text ?? ip, identity: found };
    if (this.addresses.size >= 65_536) this.addresses = new Map();
    this.addresses.set(ip, out);
    return out;
  }

  identityOf(ip: string): number {
    return this.lookup(ip).identity;
  }

  /**
   * Whether the entries allow it, as the kernel's two lookups decide: the most specific
   * entry for the peer, else the most specific for any peer (0); an entry allows unless it
   * denies; no entry denies.
   */
  hasRule(subject: number, direction: PolicyDirection, peer: number, protocol: number, port: number): boolean {
    const byPeer = this.rules.get(subject * 4 + direction);
    if (!byPeer) return false;
    const specific = mostSpecific(byPeer.get(peer), protocol, port);
    if (specific) return !specific.deny;
    if (peer === BH_IDENTITY_ANY) return false;
    const any = mostSpecific(byPeer.get(BH_IDENTITY_ANY), protocol, port);
    return any !== undefined && !any.deny;
  }
}

/**
 * The entry a longest-prefix match picks: a port range over any port of the protocol, that
 * over any protocol; among port ranges, the narrowest (ranges split into prefixes the way
 * the agent writes them never overlap partially).
 */
function mostSpecific(entries: RuleEntry[] | undefined, protocol: number, port: number): RuleEntry | undefined {
  if (!entries) return undefined;
  let best: RuleEntry | undefined;
  let bestRank = -1;
  for (const r of entries) {
    let rank: number;
    if (r.protocol === 0) rank = 0;
    else if (r.protocol !== protocol) continue;
    else if (r.port === 0) rank = 1;
    else {
      const end = r.endPort === 0 ? r.port : r.endPort;
      if (port < r.port || port > end) continue;
      rank = 2 + (65535 - (end - r.port));
    }
    // Equally specific entries (allow-only NetworkPolicy entries) agree; a deny wins a tie, as a compile bug must not open anything.
    if (rank > bestRank || (rank === bestRank && r.deny)) {
      best = r;
      bestRank = rank;
    }
  }
  return best;
}

const indexes = new WeakMap<PolicySnapshot, SnapshotIndex>();

/** The snapshot's index, built once per snapshot object. */
export function snapshotIndex(snapshot: PolicySnapshot): SnapshotIndex {
  let index = indexes.get(snapshot);
  if (!index) indexes.set(snapshot, (index = new SnapshotIndex(snapshot)));
  return index;
}

/** The identity the kernel would give an address (longest-prefix match over ip_identities). */
export function snapshotIdentityOf(snapshot: PolicySnapshot, ip: string): number {
  return snapshotIndex(snapshot).identityOf(ip);
}

/**
 * What the datapath decides for a new connection from `srcIp` to `dstIp` (after DNAT),
 * as policy (the identity's mode is not applied: this is the enforce verdict):
 * identities by longest-prefix match; if the source's identity is egress-isolated, an
 * egress rule (subject = source, peer = destination or 0, protocol or 0, port in range or
 * 0) must exist; if the destination's is ingress-isolated, an ingress rule likewise.
 * An address talking to itself is always allowed. A Service ClusterIP is not a
 * destination here: pass the backend's address (the datapath judges after DNAT).
 */
export function snapshotAllows(snapshot: PolicySnapshot, srcIp: string, dstIp: string, protocol: Protocol | number, port: number): boolean {
  const index = snapshotIndex(snapshot);
  const src = index.lookup(srcIp);
  const dst = index.lookup(dstIp);
  if (src.ip === dst.ip) return true;
  const proto = typeof protocol === "number" ? protocol : PROTOCOL_NUMBERS[protocol];
  const s = src.identity;
  const d = dst.identity;
  if (index.identities.get(d)?.service) throw new Error(`snapshotAllows: ${dst.ip} is a Service ClusterIP; judge the connection to the backend's address (after DNAT)`);
  if (index.identities.get(s)?.egressIsolated && !index.hasRule(s, PolicyDirection.POLICY_DIRECTION_EGRESS, d, proto, port)) return false;
  if (index.identities.get(d)?.ingressIsolated && !index.hasRule(d, PolicyDirection.POLICY_DIRECTION_INGRESS, s, proto, port)) return false;
  return true;
}
