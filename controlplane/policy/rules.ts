// The rules of one identity, reduced to the fewest entries the kernel's policy map needs.
import type { PolicyDirection, PolicyRule } from "../../proto/gen/bulkhead/v1/policy.js";
import { IDENTITY_ANY } from "./identities.js";

/**
 * The allowed (peer, protocol, port range) of one subject and direction, reduced before
 * output: ranges merged, any protocol / any port absorbing the rest, and entries for a
 * specific peer dropped when the any-peer entries already cover them.
 */
export class RuleAccumulator {
  /** peer → protocol (0 = any) → port ranges; [0, 65535] = any port. */
  private readonly byPeer = new Map<number, Map<number, [number, number][]>>();

  add(peer: number, protocol: number, from: number, to: number): void {
    let protos = this.byPeer.get(peer);
    if (!protos) this.byPeer.set(peer, (protos = new Map()));
    let ranges = protos.get(protocol);
    if (!ranges) protos.set(protocol, (ranges = []));
    ranges.push([from, to]);
  }

  emit(subject: number, direction: PolicyDirection, out: PolicyRule[]): void {
    const anyPeer = this.byPeer.get(IDENTITY_ANY);
    const anyMerged = new Map<number, [number, number][]>();
    if (anyPeer) for (const [proto, ranges] of anyPeer) anyMerged.set(proto, merge(ranges));
    if (anyMerged.has(0)) {
      out.push({ subject, direction, peer: IDENTITY_ANY, protocol: 0, port: 0, endPort: 0, deny: false });
      return;
    }
    for (const peer of [...this.byPeer.keys()].sort((a, b) => a - b)) {
      const protos = this.byPeer.get(peer);
      if (!protos) continue;
      if (protos.has(0)) {
        out.push({ subject, direction, peer, protocol: 0, port: 0, endPort: 0, deny: false });
        continue;
      }
      for (const proto of [...protos.keys()].sort((a, b) => a - b)) {
        const merged = peer === IDENTITY_ANY ? anyMerged.get(proto) ?? [] : merge(protos.get(proto) ?? []);
        const cover = peer === IDENTITY_ANY ? undefined : anyMerged.get(proto);
        for (const [from, to] of merged) {
          if (cover?.some(([cf, ct]) => cf <= from && to <= ct)) continue;
          const any = from === 0 && to === 65535;
          out.push({ subject, direction, peer, protocol: proto, port: any ? 0 : from, endPort: any || from === to ? 0 : to, deny: false });
        }
      }
    }
  }
}

function merge(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: [number, number][] = [];
  for (const [from, to] of sorted) {
    const last = out[out.length - 1];
    if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
    else out.push([from, to]);
  }
  return out;
}

/** Whether two reduced rule lists are equal, entry by entry. */
export function sameRules(a: readonly PolicyRule[], b: readonly PolicyRule[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as PolicyRule;
    const y = b[i] as PolicyRule;
    if (x.subject !== y.subject || x.direction !== y.direction || x.peer !== y.peer || x.protocol !== y.protocol || x.port !== y.port || x.endPort !== y.endPort || x.deny !== y.deny) return false;
  }
  return true;
}
