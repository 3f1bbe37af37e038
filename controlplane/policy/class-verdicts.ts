// Whether each side of a connection is allowed, as PolicyModel.evaluate decides it, for
// the replay's policy classes (whatif.ts): pods that no selector label, named port or
// ipBlock tells apart. The model walks every policy of the subject's namespace and every
// rule for each query and names all that allow; a replay asks about up to 100,000s of
// (class pair, protocol, port) and needs only the two bits. So, once per subject class
// and direction, the policies that isolate it; once per (subject class, direction, peer
// class), the port lists of the rules whose peers admit the peer; then a query is a walk
// over a few port lists, stopping at the first that admits. Matching itself is the
// model's (peerMatches, portMatches). ClusterNetworkPolicy tiers are not handled here:
// `exact` is false and callers ask the model.
//
// Proved equal to PolicyModel.evaluate on seeded random clusters, policies and flows
// (test/policy-class-verdicts.test.ts).
import { peerMatches, portMatches, type NormalizedPeer, type NormalizedPolicy, type NormalizedPort, type PolicyModel, type ResolvedPeer } from "./model.js";
import type { Protocol } from "../metadata/objects.js";
import { ipWords, type IpWords } from "../../addresses/prefix.js";

/** An end of a replayed connection: its policy class and what the model resolved it to. */
export interface ClassEnd {
  classId: number;
  peer: ResolvedPeer;
}

/** Bits of `ClassVerdicts.sides`. */
export const EGRESS_ALLOWED = 1;
export const INGRESS_ALLOWED = 2;

const EGRESS = 0, INGRESS = 1;
/** Class ids stay below this (whatif.ts keys pairs the same way). */
const CLASS_LIMIT = 0x200000;

export class ClassVerdicts {
  /** False when ClusterNetworkPolicy tiers take part: ask the model instead. */
  readonly exact: boolean;
  private readonly byNamespace = new Map<string, NormalizedPolicy[]>();
  /** subject class * 2 + direction → the rules of the policies isolating it in that direction (peers as spec ids; null: every peer). */
  private readonly selecting = new Map<number, { peers: number[] | null; ports: readonly NormalizedPort[] | undefined }[]>();
  private readonly specIds = new Map<string, number>();
  /** By spec id: the peer, its policy's namespace, and whether it admits each peer class (by class id). */
  private readonly specs: { spec: NormalizedPeer; policyNamespace: string; matches: boolean[] }[] = [];
  /** (subject class * 2 + direction) * CLASS_LIMIT + peer class → port lists of the rules admitting the peer (undefined: every port). */
  private readonly admitting = new Map<number, (readonly NormalizedPort[] | undefined)[]>();

  constructor(private readonly model: PolicyModel) {
    this.exact = model.clusterPolicies().length === 0;
    for (const p of model.policies()) {
      let list = this.byNamespace.get(p.namespace);
      if (list === undefined) this.byNamespace.set(p.namespace, (list = []));
      list.push(p);
    }
  }

  /**
   * EGRESS_ALLOWED | INGRESS_ALLOWED as evaluate() sets egress.allowed and ingress.allowed
   * (ends that are not pods are not judged; self and host exemptions applied).
   */
  sides(src: ClassEnd, dst: ClassEnd, protocol: Protocol | undefined, port: number): number {
    if (!this.exact) throw new Error("ClassVerdicts: ClusterNetworkPolicy tiers take part; evaluate with the model");
    if (src.classId >= CLASS_LIMIT || dst.classId >= CLASS_LIMIT) throw new Error(`ClassVerdicts: class id beyond ${CLASS_LIMIT}`);
    const s = src.peer, d = dst.peer;
    const dstPod = d.kind === "pod" ? d.pod : undefined;
    let egress = s.kind !== "pod" || this.side(EGRESS, src.classId, s.pod.namespace, s.pod.labels, dst, protocol, port, dstPod);
    let ingress = d.kind !== "pod" || this.side(INGRESS, dst.classId, d.pod.namespace, d.pod.labels, src, protocol, port, dstPod);
    if (s.kind === "pod" && d.kind === "pod" && s.pod === d.pod) egress = ingress = true;
    if (this.model.hostExempt) {
      if (s.kind === "pod" && d.kind === "host") egress = true;
      if (d.kind === "pod" && s.kind === "host") ingress = true;
    }
    return (egress ? EGRESS_ALLOWED : 0) | (ingress ? INGRESS_ALLOWED : 0);
  }

  private side(direction: number, subjectClass: number, namespace: string, labels: Record<string, string>, peer: ClassEnd,
    protocol: Protocol | undefined, port: number, dstPod: Parameters<typeof portMatches>[3]): boolean {
    const subjectKey = subjectClass * 2 + direction;
    let rules = this.selecting.get(subjectKey);
    if (rules === undefined) {
      rules = [];
      for (const p of this.byNamespace.get(namespace) ?? []) {
        const list = direction === EGRESS ? p.egress : p.ingress;
        if (list === undefined || !p.podSelector.matches(labels)) continue;
        for (const rule of list) rules.push({ peers: rule.peers === undefined ? null : rule.peers.map((x) => this.specId(x, p.namespace)), ports: rule.ports });
        // An isolating policy without rules still isolates: the list must not look empty.
        if (list.length === 0) rules.push({ peers: [], ports: undefined });
      }
      this.selecting.set(subjectKey, rules);
    }
    if (rules.length === 0) return true;
    const key = subjectKey * CLASS_LIMIT + peer.classId;
    let ports = this.admitting.get(key);
    if (ports === undefined) {
      ports = [];
      for (const rule of rules) if (rule.peers === null || rule.peers.some((id) => this.peerMatch(id, peer))) ports.push(rule.ports);
      this.admitting.set(key, ports);
    }
    for (const list of ports) {
      if (list === undefined) return true;
      for (const p of list) if (portMatches(p, protocol, port, dstPod)) return true;
    }
    return false;
  }

  /** One id per distinct peer (same selectors in the same policy namespace, or the same ipBlock): most rules repeat a few. */
  private specId(spec: NormalizedPeer, policyNamespace: string): number {
    const key = spec.kind === "ipBlock" ? `ip\u0000${spec.block.key}`
      : `${spec.namespaceSelector === undefined ? `own\u0000${policyNamespace}` : `ns\u0000${spec.namespaceSelector.key}`}\u0000${spec.podSelector.key}`;
    let id = this.specIds.get(key);
    if (id === undefined) {
      this.specIds.set(key, (id = this.specs.length));
      this.specs.push({ spec, policyNamespace, matches: [] });
    }
    return id;
  }

  private peerMatch(id: number, peer: ClassEnd): boolean {
    const s = this.specs[id]!;
    let m = s.matches[peer.classId];
    if (m === undefined) {
      let words: IpWords | undefined | null = null;
      const address = (): IpWords | undefined => {
        if (words === null) words = peer.peer.ip === undefined ? undefined : ipWords(peer.peer.ip);
        return words;
      };
      s.matches[peer.classId] = m = peerMatches(s.spec, peer.peer, s.policyNamespace, address);
    }
    return m;
  }
}
