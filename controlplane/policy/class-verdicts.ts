// Whether each side of a connection is allowed, as PolicyModel.evaluate decides it, for
// the replay's policy classes (whatif.ts): pods that no selector label, named port or
// ipBlock tells apart. The model walks every policy of the subject's namespace and every
// rule for each query and names all that allow; a replay asks about up to 100,000s of
// (class pair, protocol, port) and needs only the two bits. So, once per subject class
// and direction, the policies that isolate it; once per (subject class, direction, peer
// class), the port lists of the rules whose peers admit the peer — found through the few
// distinct rule peers that admit the peer class, matched once per peer class, not by
// walking every rule of the subject, and their ports gathered into sets; then a query is
// one or two set lookups (ranges and named ports still walked). Matching itself is the
// model's (peerMatches, portMatches). ClusterNetworkPolicy tiers are not handled here:
// `exact` is false and callers ask the model.
//
// Proved equal to PolicyModel.evaluate on seeded random clusters, policies and flows
// (test/policy-class-verdicts.test.ts).
import { PROTOCOL_NUMBERS, peerMatches, portMatches, type NormalizedPeer, type NormalizedPolicy, type NormalizedPort, type PolicyModel, type ResolvedPeer } from "./model.js";
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

/** The rules isolating one subject class in one direction, indexed by the peers they name. */
interface SubjectRules {
  /** A policy isolates the subject in this direction. */
  isolated: boolean;
  /** Port lists of the rules without peers (every peer; undefined list: every port). */
  everyPeer: (readonly NormalizedPort[] | undefined)[];
  /** Spec id → port lists of the rules naming that peer. */
  bySpec: Map<number, (readonly NormalizedPort[] | undefined)[]>;
  /** Peer class id → the ports the rules admitting it admit (filled on first ask). */
  admitting: (AdmittedPorts | undefined)[];
}

/**
 * The ports some rules admit, for a query to find its port in one lookup rather than by
 * walking each rule's list (a suggested policy lists every observed port of each peer).
 */
interface AdmittedPorts {
  /** A rule without ports: every port of every protocol. */
  every: boolean;
  /** Protocols with a port entry without a number (every port of that protocol). */
  wholeProtocols: Set<Protocol>;
  /** Single ports (a range of one) by protocol number << 16 | port. */
  single: Set<number>;
  /** The rest (ranges, named ports), matched by portMatches. */
  rest: NormalizedPort[];
}

function admittedPorts(lists: readonly (readonly NormalizedPort[] | undefined)[]): AdmittedPorts {
  const admitted: AdmittedPorts = { every: false, wholeProtocols: new Set(), single: new Set(), rest: [] };
  for (const list of lists) {
    if (list === undefined) { admitted.every = true; continue; }
    for (const p of list) {
      if (p.kind === "all") admitted.wholeProtocols.add(p.protocol);
      else if (p.kind === "range" && p.from === p.to) admitted.single.add((PROTOCOL_NUMBERS[p.protocol] << 16) | p.from);
      else admitted.rest.push(p);
    }
  }
  return admitted;
}

export class ClassVerdicts {
  /** False when ClusterNetworkPolicy tiers take part: ask the model instead. */
  readonly exact: boolean;
  private readonly byNamespace = new Map<string, NormalizedPolicy[]>();
  /** By subject class * 2 + direction. */
  private readonly selecting: SubjectRules[] = [];
  private readonly specIds = new Map<string, number>();
  /** By spec id: the peer and its policy's namespace. */
  private readonly specs: { spec: NormalizedPeer; policyNamespace: string }[] = [];
  /**
   * By peer class id: the ids of the specs admitting it, among the first `checked` specs.
   * A peer class matches few of the specs (rules name peers one by one), so a subject's
   * rules for a peer are found through these rather than by walking all of them.
   */
  private readonly matching: { checked: number; ids: number[] }[] = [];

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
    const rules = this.selecting[subjectKey] ?? this.subjectRules(subjectKey, direction, namespace, labels);
    if (!rules.isolated) return true;
    let admitted = rules.admitting[peer.classId];
    if (admitted === undefined) {
      const lists = [...rules.everyPeer];
      for (const id of this.matchingSpecs(peer)) {
        const named = rules.bySpec.get(id);
        if (named !== undefined) for (const list of named) lists.push(list);
      }
      rules.admitting[peer.classId] = admitted = admittedPorts(lists);
    }
    // As portMatches decides for each listed port: a rule without ports admits even a protocol without ports.
    if (admitted.every) return true;
    if (protocol === undefined) return false;
    if (admitted.wholeProtocols.has(protocol) || admitted.single.has((PROTOCOL_NUMBERS[protocol] << 16) | port)) return true;
    for (const p of admitted.rest) if (portMatches(p, protocol, port, dstPod)) return true;
    return false;
  }

  private subjectRules(subjectKey: number, direction: number, namespace: string, labels: Record<string, string>): SubjectRules {
    const rules: SubjectRules = { isolated: false, everyPeer: [], bySpec: new Map(), admitting: [] };
    for (const p of this.byNamespace.get(namespace) ?? []) {
      const list = direction === EGRESS ? p.egress : p.ingress;
      // An isolating policy without rules still isolates.
      if (list === undefined || !p.podSelector.matches(labels)) continue;
      rules.isolated = true;
      for (const rule of list) {
        if (rule.peers === undefined) { rules.everyPeer.push(rule.ports); continue; }
        // A rule naming one peer twice is listed once for it.
        for (const id of new Set(rule.peers.map((x) => this.specId(x, p.namespace)))) {
          let lists = rules.bySpec.get(id);
          if (lists === undefined) rules.bySpec.set(id, (lists = []));
          lists.push(rule.ports);
        }
      }
    }
    this.selecting[subjectKey] = rules;
    return rules;
  }

  /** The ids of the specs admitting the peer's class, brought up to date with the specs known now. */
  private matchingSpecs(peer: ClassEnd): readonly number[] {
    let m = this.matching[peer.classId];
    if (m === undefined) this.matching[peer.classId] = m = { checked: 0, ids: [] };
    if (m.checked < this.specs.length) {
      let words: IpWords | undefined | null = null;
      const address = (): IpWords | undefined => {
        if (words === null) words = peer.peer.ip === undefined ? undefined : ipWords(peer.peer.ip);
        return words;
      };
      for (let id = m.checked; id < this.specs.length; id++) {
        const s = this.specs[id]!;
        if (peerMatches(s.spec, peer.peer, s.policyNamespace, address)) m.ids.push(id);
      }
      m.checked = this.specs.length;
    }
    return m.ids;
  }

  /** One id per distinct peer (same selectors in the same policy namespace, or the same ipBlock): most rules repeat a few. */
  private specId(spec: NormalizedPeer, policyNamespace: string): number {
    const key = spec.kind === "ipBlock" ? `ip\u0000${spec.block.key}`
      : `${spec.namespaceSelector === undefined ? `own\u0000${policyNamespace}` : `ns\u0000${spec.namespaceSelector.key}`}\u0000${spec.podSelector.key}`;
    let id = this.specIds.get(key);
    if (id === undefined) {
      this.specIds.set(key, (id = this.specs.length));
      this.specs.push({ spec, policyNamespace });
    }
    return id;
  }
}
