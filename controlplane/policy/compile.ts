// Compiles the policy model (model.ts) into the PolicySnapshot agents load into kernel
// maps (native/bpf/endpoint.h, segmentation): identities, address → identity by longest
// prefix, and per-identity rules.
//
// Identity rule: every address that policy cannot tell apart shares an identity. A pod
// address is told apart by its namespace, the namespace's labels, the pod's labels, the
// pod's container ports whose names some policy uses, and the set of ipBlocks (cidr minus
// excepts) that contain the address. Node addresses are the host (1) or, when ipBlocks
// contain them, a host identity per ipBlock set; every ipBlock cidr and except is an
// address range whose identity is its ipBlock set (world, 2, when none). Ids are stable:
// the same signature gets the same id for as long as this compiler has seen it recently.
//
// Incremental: each compile diffs its input against the previous one. Policies are
// validated once per object (PolicySet); pods are re-signed only when they, their
// namespace's labels, or the set of used port names and ipBlocks change; a new identity
// is matched against every policy once, a new policy against every identity once; and
// only the identities whose rules may have changed (subjects of a changed policy, or of
// a policy whose peers gained or lost an identity) get their rules recomputed.
import { hostPrefix, parseIpPrefix, type IpPrefix } from "../../addresses/prefix.js";
import { PROTOCOLS, type Namespace, type Pod, type Protocol } from "../metadata/objects.js";
import type { PolicyAttribution } from "../../proto/gen/bulkhead/v1/flow.js";
import {
  PolicyDirection,
  PolicyMode,
  type Identity,
  type PolicyRule,
  type PolicySnapshot,
} from "../../proto/gen/bulkhead/v1/policy.js";
import {
  isPolicyEndpoint,
  namedPortsOf,
  namespaceLabels,
  namespaceMode,
  podKey,
  PolicyModel,
  PolicySet,
  PROTOCOL_NUMBERS,
  protocolOf,
  type IpBlockRange,
  type Labels,
  type NamedPortTarget,
  type NormalizedPeer,
  type NormalizedPolicy,
  type NormalizedRule,
  type PolicyCluster,
  type PolicyModeName,
  type PolicyProblem,
  type SideVerdict,
} from "./model.js";
import { addTo, removeFrom } from "../index-sets.js";
import { CnpSet, cnpSubjectMatches, compareCnps, overlapText, type NormalizedCnp, type NormalizedCnpRule } from "./cnp.js";
import type { NormalizedPort } from "./model.js";
import {
  FIRST_IDENTITY, IDENTITY_ANY, IDENTITY_HOST, IDENTITY_SERVICE, IDENTITY_WORLD, IP_BLOCKS_LABEL, reservedIdentity,
} from "./identities.js";
import { snapshotIndex, type AddressIdentity } from "./kernel-view.js";
import { TripleKeyTable } from "../triple-key-table.js";
import { PrefixTrie } from "./prefix-trie.js";
import { RuleAccumulator, sameRules } from "./rules.js";

const MODE_OF: Record<PolicyModeName, PolicyMode> = {
  observe: PolicyMode.POLICY_MODE_OBSERVE,
  audit: PolicyMode.POLICY_MODE_AUDIT,
  enforce: PolicyMode.POLICY_MODE_ENFORCE,
};

type Direction = "ingress" | "egress";
const DIRECTION_OF: Record<Direction, PolicyDirection> = {
  ingress: PolicyDirection.POLICY_DIRECTION_INGRESS,
  egress: PolicyDirection.POLICY_DIRECTION_EGRESS,
};

// ---- records -----------------------------------------------------------------------------

type IdentityKind = "pod" | "host" | "range" | "service";

interface IdentityRecord {
  id: number;
  key: string;
  kind: IdentityKind;
  namespace: string;
  namespaceLabels: Labels;
  podLabels: Labels;
  /** Only the names some policy uses. */
  namedPorts: ReadonlyMap<string, readonly NamedPortTarget[]>;
  blocks: ReadonlySet<string>;
  blocksText: string;
  refs: number;
  subjectOf: Set<PolicyRecord>;
  /** ClusterNetworkPolicies whose subject holds this identity. */
  cnpSubjectOf: Set<CnpRecord>;
  peerOf: Set<PolicyRecord | CnpRecord>;
  ingressIsolated: boolean;
  egressIsolated: boolean;
  /** Directions (0-2) whose rules are compiled as tiers (a ClusterNetworkPolicy names this subject). */
  tiered: number;
  rules: PolicyRule[];
  live: boolean;
  /** The Identity message as last assembled, and the mode it was made with; dropped when the flags change. */
  message: Identity | undefined;
  messageMode: PolicyModeName | undefined;
}

interface PeerRecord {
  spec: NormalizedPeer;
  policy: PolicyRecord | CnpRecord;
  matched: Set<IdentityRecord>;
}

interface RuleRecord {
  /** Unique per compiler: names the rule in the key of a tier computation shared by subjects. */
  uid: number;
  rule: NormalizedRule;
  /** Undefined: every peer. */
  peers: PeerRecord[] | undefined;
}

interface CnpRuleRecord {
  uid: number;
  rule: NormalizedCnpRule;
  peers: PeerRecord[];
}

interface CnpRecord {
  cnp: NormalizedCnp;
  subjects: Set<IdentityRecord>;
  ingress: CnpRuleRecord[];
  egress: CnpRuleRecord[];
}

/** A port match of one rule for one (subject, peer): protocol 0 = every protocol and port. */
interface PortSeg {
  proto: number;
  from: number;
  to: number;
}

/** One step of a tier walk: a ClusterNetworkPolicy rule (Accept, Deny, Pass) or a NetworkPolicy rule (allows). */
interface TierClause {
  uid: number;
  action: "Accept" | "Deny" | "Pass" | "allow";
  /** Undefined: every peer (a NetworkPolicy rule without peers). */
  peers: PeerRecord[] | undefined;
  ports: readonly NormalizedPort[] | undefined;
}

const PORTED_PROTOCOLS = [6, 17, 132] as const;

interface PolicyRecord {
  policy: NormalizedPolicy;
  subjects: Set<IdentityRecord>;
  ingress: RuleRecord[] | undefined;
  egress: RuleRecord[] | undefined;
  /** Some egress rule allows a named port to every peer: it depends on every pod identity using the name. */
  wildcardNamedEgress: Set<string>;
}

interface AddressEntry {
  ip: string;
  prefix: string;
  identity: IdentityRecord;
}

interface PodRecordState {
  pod: Pod;
  stamp: string;
  entries: AddressEntry[];
  /** The compile that last saw the pod. */
  seen: number;
  /** Replaced by a newer state or deleted: an old pod object passed again must not find it. */
  dead: boolean;
}

export interface PolicyCompilerOptions {
  /** Mode of namespaces without a bulkhead.io/mode annotation; default observe. */
  defaultMode?: PolicyModeName;
  /** Traffic between a pod and any node address is always allowed (rules to/from host identities); default true. */
  hostExempt?: boolean;
  /** Compiles an unused identity's id is remembered for (so it comes back with the same id); default 256. */
  idRetention?: number;
}

export interface CompileStats {
  identities: number;
  ipIdentities: number;
  rules: number;
  /** Identities whose rules were recomputed by the last compile. */
  recomputedSubjects: number;
  policies: number;
  invalidPolicies: number;
  /** ClusterNetworkPolicies in force. */
  clusterPolicies: number;
  /** Subject directions compiled as tiers (complete allow/deny entries) because a ClusterNetworkPolicy names them. */
  tieredSubjects: number;
}

function labelsKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  let out = "";
  for (const k of keys) out += `${k}=${labels[k]}\u0001`;
  return out;
}

const protoNumber = (p: Protocol) => PROTOCOL_NUMBERS[p];

/**
 * Builds PolicySnapshots from cluster states, reusing the previous compile's work.
 * One instance per cluster; compile() is synchronous and not reentrant.
 */
export class PolicyCompiler {
  private readonly defaultMode: PolicyModeName;
  private readonly hostExempt: boolean;
  private readonly idRetention: number;
  private readonly policySet = new PolicySet();
  private readonly cnpSet = new CnpSet();
  private readonly cnps = new Map<string, CnpRecord>();

  private compiles = 0;
  private version = 0n;
  private snapshot: PolicySnapshot = { version: 0n, identities: [], ipIdentities: [], rules: [] };
  private cluster: PolicyCluster = { namespaces: [], pods: [], nodes: [], policies: [] };
  private lastModel: PolicyModel | undefined;
  private problems: PolicyProblem[] = [];
  private lastStats: CompileStats = { identities: 0, ipIdentities: 0, rules: 0, recomputedSubjects: 0, policies: 0, invalidPolicies: 0, clusterPolicies: 0, tieredSubjects: 0 };

  // stable ids
  private readonly ids = new Map<string, { id: number; lastUsed: number }>();
  private nextId = FIRST_IDENTITY;

  // inputs as last seen
  private readonly namespaceState = new Map<string, { object: Namespace; labels: Labels; labelsKey: string; mode: PolicyModeName; problem: PolicyProblem | undefined }>();
  private readonly podState = new Map<string, PodRecordState>();
  /** The same states by pod object: an unchanged pod is recognized without building its key. */
  private podStateByObject = new WeakMap<Pod, PodRecordState>();
  private nodeEntries = new Map<string, AddressEntry>();
  private serviceEntries = new Map<string, AddressEntry>();
  private rangeEntries = new Map<string, AddressEntry>();
  /** Port names and ipBlocks the policies in force use, with how many uses: identities depend on them. */
  private readonly nameUses = new Map<string, number>();
  private readonly blockUses = new Map<string, { block: IpBlockRange; uses: number }>();
  private blockTrie = new PrefixTrie<{ block: string; except: boolean }>();
  /** Moves when the used names or ipBlocks change: every address must be signed again. */
  private globalVersion = 0;

  // identities and policies
  private readonly identities = new Map<string, IdentityRecord>();
  private readonly identitiesByNamespace = new Map<string, Set<IdentityRecord>>();
  private readonly identitiesByBlock = new Map<string, Set<IdentityRecord>>();
  private readonly podIdentitiesByPortName = new Map<string, Set<IdentityRecord>>();
  private readonly hostIdentities = new Set<IdentityRecord>();
  private readonly policies = new Map<string, PolicyRecord>();
  private readonly policiesByNamespace = new Map<string, Set<PolicyRecord>>();
  private readonly sameNamespacePeers = new Map<string, Set<PeerRecord>>();
  private readonly namespaceSelectorPeers = new Set<PeerRecord>();
  private readonly blockPeers = new Map<string, Set<PeerRecord>>();
  private readonly wildcardNamedPolicies = new Set<PolicyRecord>();
  /** Namespaces each namespaceSelector (by key) matches; emptied when namespace labels change. */
  private namespaceMatches = new Map<string, string[]>();

  private nextRuleUid = 1;

  // per compile
  private dirty = new Set<IdentityRecord>();
  /**
   * Tiered rules (without their subject) by what they depend on: the clauses in order,
   * whether NetworkPolicy isolates, and the subject's named ports when a clause resolves one
   * on it. Subjects with the same key get the same entries; peers' matches do not change
   * while rules are computed, so it lives for one compile.
   */
  private tieredCache = new Map<string, PolicyRule[]>();
  /** Policies whose subjects are all in `dirty` this compile (subjects linked later are added by their link). */
  private subjectsDirtied = new Set<PolicyRecord | CnpRecord>();
  private released = new Set<IdentityRecord>();
  private changed = false;
  private hostsChanged = false;
  private addressesChanged = false;
  private identitySetChanged = false;
  /** Some identity's message (mode or isolation) changed since the last snapshot. */
  private messagesChanged = false;
  private sortedIdentities: IdentityRecord[] = [];

  // attribution
  /**
   * Attributions by (source identity, destination identity, protocol and port: see
   * attributionService), one probe without a string key; values index attributionList.
   */
  private readonly attributionCache = new TripleKeyTable();
  private readonly attributionList: PolicyAttribution[] = [];
  /**
   * One object per distinct attribution content: the cache above holds one per (identities,
   * protocol, port), and a history of a million rows over ephemeral ports would otherwise
   * keep ~150,000 equal copies alive (tens of MiB).
   */
  private attributionContents = new Map<string, PolicyAttribution>();

  constructor(options: PolicyCompilerOptions = {}) {
    this.defaultMode = options.defaultMode ?? "observe";
    this.hostExempt = options.hostExempt ?? true;
    this.idRetention = options.idRetention ?? 256;
  }

  /**
   * Pairs of ClusterNetworkPolicies of one tier at the same priority whose subjects hold a
   * common pod (upstream leaves their order to the implementation), one line each.
   */
  samePriorityOverlaps(): string[] {
    const out = new Map<string, string>();
    for (const identity of this.identities.values()) {
      if (identity.cnpSubjectOf.size < 2) continue;
      const list = [...identity.cnpSubjectOf].map((r) => r.cnp);
      for (let i = 0; i < list.length; i++) {
        for (let j = i + 1; j < list.length; j++) {
          const a = list[i] as NormalizedCnp;
          const b = list[j] as NormalizedCnp;
          if (a.tier !== b.tier || a.priority !== b.priority) continue;
          const key = a.name < b.name ? `${a.name}\u0000${b.name}` : `${b.name}\u0000${a.name}`;
          if (!out.has(key)) out.set(key, overlapText(a, b, `pods of namespace ${identity.namespace}`));
        }
      }
    }
    return [...out.keys()].sort().map((k) => out.get(k) ?? "");
  }

  /** Problems of the last compile: invalid policies (ignored, or kept at their last valid version) and bad mode annotations. */
  errors(): PolicyProblem[] {
    return [...this.problems];
  }

  stats(): CompileStats {
    return { ...this.lastStats };
  }

  /** The last snapshot compiled. */
  current(): PolicySnapshot {
    return this.snapshot;
  }

  /** The policy model of the last compiled cluster (built on first use after each compile). */
  model(): PolicyModel {
    this.lastModel ??= new PolicyModel(this.cluster, { defaultMode: this.defaultMode, hostExempt: this.hostExempt, policySet: this.policySet, cnpSet: this.cnpSet });
    return this.lastModel;
  }

  /**
   * The snapshot of `cluster`. Returns the previous snapshot object (same version) when
   * nothing the agents load changed.
   */
  compile(cluster: PolicyCluster): PolicySnapshot {
    this.compiles++;
    this.changed = false;
    this.hostsChanged = false;
    this.addressesChanged = false;
    this.identitySetChanged = false;
    this.dirty = new Set();
    this.released = new Set();
    this.tieredCache = new Map();
    this.subjectsDirtied = new Set();
    this.cluster = cluster;
    this.lastModel = undefined;

    // 1. Policies: validate, and find which ones changed (an update is a removal and an addition).
    const { inForce, problems } = this.policySet.update(cluster.policies);
    const removed: PolicyRecord[] = [];
    const added: NormalizedPolicy[] = [];
    const next = new Map<string, NormalizedPolicy>();
    for (const p of inForce) {
      next.set(p.key, p);
      const record = this.policies.get(p.key);
      if (record === undefined || (record.policy !== p && record.policy.contentKey !== p.contentKey)) added.push(p);
    }
    for (const [key, record] of this.policies) {
      const now = next.get(key);
      if (now === undefined || (now !== record.policy && now.contentKey !== record.policy.contentKey)) removed.push(record);
    }

    const cnpResult = this.cnpSet.update(cluster.clusterNetworkPolicies ?? []);
    const cnpRemoved: CnpRecord[] = [];
    const cnpAdded: NormalizedCnp[] = [];
    const cnpNext = new Map<string, NormalizedCnp>();
    for (const c of cnpResult.inForce) {
      cnpNext.set(c.name, c);
      const record = this.cnps.get(c.name);
      if (record === undefined || (record.cnp !== c && record.cnp.contentKey !== c.contentKey)) cnpAdded.push(c);
    }
    for (const [name, record] of this.cnps) {
      const now = cnpNext.get(name);
      if (now === undefined || (now !== record.cnp && now.contentKey !== record.cnp.contentKey)) cnpRemoved.push(record);
    }

    // 2. What identities depend on: the port names and ipBlocks the policies use.
    let globalChanged = false;
    for (const record of removed) if (this.countUses(record.policy, -1)) globalChanged = true;
    for (const p of added) if (this.countUses(p, 1)) globalChanged = true;
    for (const record of cnpRemoved) if (this.countRuleUses([...record.cnp.ingress, ...record.cnp.egress], -1)) globalChanged = true;
    for (const c of cnpAdded) if (this.countRuleUses([...c.ingress, ...c.egress], 1)) globalChanged = true;
    if (globalChanged) {
      this.globalVersion++;
      this.blockTrie = new PrefixTrie();
      for (const { block } of this.blockUses.values()) {
        this.blockTrie.add(block.cidr, { block: block.key, except: false });
        for (const e of block.except) this.blockTrie.add(e, { block: block.key, except: true });
      }
    }
    for (const record of removed) this.removePolicy(record);
    for (const record of cnpRemoved) this.removeCnp(record);

    // 3. Namespaces.
    const modeProblems: PolicyProblem[] = [];
    const nsChanged = new Set<string>();
    const seenNs = new Set<string>();
    for (const ns of cluster.namespaces) {
      const name = ns.metadata.name;
      seenNs.add(name);
      const old = this.namespaceState.get(name);
      if (old && old.object === ns) {
        if (old.problem) modeProblems.push(old.problem);
        continue;
      }
      const { mode, problem } = namespaceMode(ns, this.defaultMode);
      if (problem) modeProblems.push(problem);
      const labels = namespaceLabels(name, ns);
      const key = labelsKey(labels);
      if (!old || old.labelsKey !== key) nsChanged.add(name);
      if (!old || old.mode !== mode) {
        this.changed = true;
        this.messagesChanged = true;
      }
      this.namespaceState.set(name, { object: ns, labels, labelsKey: key, mode, problem });
    }
    if (seenNs.size !== this.namespaceState.size) {
      for (const name of [...this.namespaceState.keys()]) {
        if (seenNs.has(name)) continue;
        this.namespaceState.delete(name);
        nsChanged.add(name);
        this.changed = true;
      }
    }
    this.problems = [...problems, ...cnpResult.problems, ...modeProblems];
    if (nsChanged.size > 0) this.namespaceMatches = new Map();

    // 4. Addresses → identities.
    const resign = globalChanged || nsChanged.size > 0;
    for (const pod of cluster.pods) {
      const same = this.podStateByObject.get(pod);
      if (same !== undefined && !same.dead && same.pod === pod && same.seen !== this.compiles && (!resign || (!globalChanged && !nsChanged.has(pod.metadata.namespace)))) {
        same.seen = this.compiles;
        continue;
      }
      const key = podKey(pod);
      this.updatePod(key, pod, this.podState.get(key));
    }
    for (const [key, old] of this.podState) {
      if (old.seen === this.compiles) continue;
      for (const e of old.entries) this.release(e.identity);
      old.dead = true;
      this.podState.delete(key);
      this.addressesChanged = true;
    }
    this.updateNodes(cluster, globalChanged);
    this.updateServices(cluster);
    if (globalChanged) this.updateRanges();
    for (const identity of this.released) if (identity.refs === 0) this.removeIdentity(identity);

    // 5. New and changed policies.
    for (const p of added) this.addPolicy(p);
    for (const c of cnpAdded) this.addCnp(c);

    // 6. Rules of the identities that may have changed.
    if (this.hostsChanged && this.hostExempt) {
      for (const identity of this.identities.values()) if (identity.kind === "pod" && (identity.subjectOf.size > 0 || identity.cnpSubjectOf.size > 0)) this.dirty.add(identity);
    }
    let recomputed = 0;
    let rulesChanged = false;
    for (const identity of this.dirty) {
      if (!identity.live || identity.kind !== "pod") continue;
      if (this.computeRules(identity)) rulesChanged = true;
      recomputed++;
    }
    if (rulesChanged || this.messagesChanged || this.addressesChanged || this.identitySetChanged) this.changed = true;

    // 7. The snapshot.
    if (this.compiles % 64 === 0) this.pruneIds();
    if (this.changed || this.compiles === 1) {
      this.version++;
      this.snapshot = this.assemble(rulesChanged);
    }
    // Attribution names policies: a change that allows nothing new can still rename the answer.
    if (this.changed || added.length > 0 || removed.length > 0 || cnpAdded.length > 0 || cnpRemoved.length > 0 || nsChanged.size > 0) this.forgetAttributions();
    this.lastStats = {
      identities: this.snapshot.identities.length,
      ipIdentities: this.snapshot.ipIdentities.length,
      rules: this.snapshot.rules.length,
      recomputedSubjects: recomputed,
      policies: inForce.length,
      invalidPolicies: new Set([...problems, ...cnpResult.problems].map((p) => p.policy)).size,
      clusterPolicies: cnpResult.inForce.length,
      tieredSubjects: [...this.identities.values()].reduce((n, i) => n + i.tiered, 0),
    };
    return this.snapshot;
  }

  /** Adds (delta 1) or removes (-1) a policy's uses of port names and ipBlocks; true when the set of used ones changed. */
  private countUses(policy: NormalizedPolicy, delta: 1 | -1): boolean {
    return this.countRuleUses([...(policy.ingress ?? []), ...(policy.egress ?? [])], delta);
  }

  private countRuleUses(rules: readonly { peers?: readonly NormalizedPeer[] | undefined; ports?: readonly NormalizedPort[] | undefined }[], delta: 1 | -1): boolean {
    let changed = false;
    {
      for (const rule of rules) {
        for (const port of rule.ports ?? []) {
          if (port.kind !== "named") continue;
          const uses = (this.nameUses.get(port.name) ?? 0) + delta;
          if (uses === 0 || (uses === 1 && delta === 1)) changed = true;
          if (uses === 0) this.nameUses.delete(port.name);
          else this.nameUses.set(port.name, uses);
        }
        for (const peer of rule.peers ?? []) {
          if (peer.kind !== "ipBlock") continue;
          const entry = this.blockUses.get(peer.block.key) ?? { block: peer.block, uses: 0 };
          entry.uses += delta;
          if (entry.uses === 0 || (entry.uses === 1 && delta === 1)) changed = true;
          if (entry.uses === 0) this.blockUses.delete(peer.block.key);
          else this.blockUses.set(peer.block.key, entry);
        }
      }
    }
    return changed;
  }

  /**
   * Which policies decided a flow between two addresses, from the model; cached per
   * (source identity, destination identity, protocol, port) until the next change.
   */
  attribution(srcIp: string, dstIp: string, protocol: Protocol | number, port: number): PolicyAttribution {
    const index = snapshotIndex(this.snapshot);
    return this.attributionBetween(index.lookup(srcIp), index.lookup(dstIp), protocol, port);
  }

  /**
   * An address's identity in the snapshot in force, for attributionBetween(): a caller that
   * sees the same addresses again (ingest) looks each up once per compile(), not per flow.
   */
  addressIdentity(ip: string): AddressIdentity {
    return snapshotIndex(this.snapshot).lookup(ip);
  }

  /** attribution() of two addresses given by addressIdentity() since the last compile(). */
  attributionBetween(s: AddressIdentity, d: AddressIdentity, protocol: Protocol | number, port: number): PolicyAttribution {
    const src = s.ip;
    const dst = d.ip;
    // A connection to itself is exempt whatever the identities, so it is not cached by them
    // (two identities are two addresses: the texts are compared only under one identity).
    const service = s.identity === d.identity && src === dst ? -1 : attributionService(protocol, port);
    const cached = service < 0 ? -1 : this.attributionCache.get(s.identity, d.identity, service);
    if (cached >= 0) return this.attributionList[cached]!;
    const verdict = this.model().evaluate({ src: { ip: src }, dst: { ip: dst }, protocol, port });
    const out: PolicyAttribution = {
      policyVersion: this.snapshot.version,
      egressIsolated: verdict.egress.isolated,
      egressAllowedBy: verdict.egress.allowedBy,
      egressIsolatedBy: verdict.egress.isolatedBy,
      ingressIsolated: verdict.ingress.isolated,
      ingressAllowedBy: verdict.ingress.allowedBy,
      ingressIsolatedBy: verdict.ingress.isolatedBy,
      egressDecidedBy: verdict.src.kind === "pod" ? verdict.egress.decidedBy ?? "" : "",
      ingressDecidedBy: verdict.dst.kind === "pod" ? verdict.ingress.decidedBy ?? "" : "",
      egressTierRules: tierRules(verdict.egress),
      ingressTierRules: tierRules(verdict.ingress),
    };
    const content = attributionContent(out);
    let shared = this.attributionContents.get(content);
    if (shared === undefined) {
      if (this.attributionContents.size >= 10_000) this.attributionContents = new Map();
      shared = out;
      this.attributionContents.set(content, shared);
    }
    if (service >= 0) {
      if (this.attributionList.length >= 100_000) this.forgetAttributions();
      this.attributionCache.set(s.identity, d.identity, service, this.attributionList.push(shared) - 1);
    }
    return shared;
  }

  private forgetAttributions(): void {
    this.attributionCache.clear();
    this.attributionList.length = 0;
  }

  // ---- addresses ---------------------------------------------------------------------------

  private updatePod(key: string, pod: Pod, old: PodRecordState | undefined): void {
    const ns = pod.metadata.namespace;
    const nsState = this.namespaceState.get(ns);
    const nsLabels = nsState?.labels ?? namespaceLabels(ns, undefined);
    const nsKey = nsState?.labelsKey ?? labelsKey(nsLabels);
    const ips = isPolicyEndpoint(pod) ? pod.status.podIPs : [];
    const allPorts = namedPortsOf(pod);
    const namedPorts = new Map<string, NamedPortTarget[]>();
    for (const name of [...allPorts.keys()].sort()) if (this.nameUses.has(name)) namedPorts.set(name, allPorts.get(name) ?? []);
    const portsKey = [...namedPorts].map(([n, ts]) => `${n}:${ts.map((t) => `${t.protocol}/${t.port}`).sort().join("+")}`).join(",");
    const base = `pod\u0000${ns}\u0000${nsKey}\u0000${labelsKey(pod.metadata.labels)}\u0000${portsKey}\u0000`;
    const stamp = `${this.globalVersion}\u0000${base}${ips.join(",")}`;
    if (old && old.stamp === stamp) {
      old.pod = pod;
      old.seen = this.compiles;
      this.podStateByObject.set(pod, old);
      return;
    }
    const entries: AddressEntry[] = [];
    for (const ip of ips) {
      const prefix = hostPrefix(ip);
      if (!prefix) continue;
      const { set, text } = this.blocksOf(prefix);
      const identity = this.acquire(`${base}${text}`, () => ({
        kind: "pod",
        namespace: ns,
        namespaceLabels: nsLabels,
        podLabels: pod.metadata.labels,
        namedPorts,
        blocks: set,
        blocksText: text,
      }));
      entries.push({ ip: prefix.text.slice(0, prefix.text.indexOf("/")), prefix: prefix.text, identity });
    }
    if (old) {
      for (const e of old.entries) this.release(e.identity);
      old.dead = true;
    }
    const state: PodRecordState = { pod, stamp, entries, seen: this.compiles, dead: false };
    this.podState.set(key, state);
    this.podStateByObject.set(pod, state);
    this.addressesChanged = true;
  }

  private updateNodes(cluster: PolicyCluster, globalChanged: boolean): void {
    const ips = new Set<string>();
    for (const node of cluster.nodes) {
      for (const a of node.status.addresses) if (a.type === "InternalIP" || a.type === "ExternalIP") ips.add(a.address);
    }
    const next = new Map<string, AddressEntry>();
    for (const ip of ips) {
      const old = this.nodeEntries.get(ip);
      if (old && !globalChanged) {
        next.set(ip, old);
        continue;
      }
      const prefix = hostPrefix(ip);
      if (!prefix) continue;
      const { set, text } = this.blocksOf(prefix);
      const identity = this.acquire(`host\u0000${text}`, () => hostOrRange("host", set, text));
      next.set(ip, { ip, prefix: prefix.text, identity });
      if (old) this.release(old.identity);
      this.addressesChanged = true;
    }
    for (const [ip, old] of this.nodeEntries) {
      if (!next.has(ip)) {
        this.release(old.identity);
        this.addressesChanged = true;
      }
    }
    this.nodeEntries = next;
  }

  /** Service ClusterIPs share the reserved identity 3, flagged `service`: the datapath judges their traffic after DNAT. */
  private updateServices(cluster: PolicyCluster): void {
    const ips = new Set<string>();
    for (const service of cluster.services ?? []) for (const ip of service.spec.clusterIPs) ips.add(ip);
    const next = new Map<string, AddressEntry>();
    for (const ip of ips) {
      const old = this.serviceEntries.get(ip);
      if (old) {
        next.set(ip, old);
        continue;
      }
      const prefix = hostPrefix(ip);
      if (!prefix) continue;
      next.set(ip, { ip, prefix: prefix.text, identity: this.acquire("service\u0000", () => hostOrRange("service", new Set(), "")) });
      this.addressesChanged = true;
    }
    for (const [ip, old] of this.serviceEntries) {
      if (next.has(ip)) continue;
      this.release(old.identity);
      this.addressesChanged = true;
    }
    this.serviceEntries = next;
  }

  private updateRanges(): void {
    const prefixes = new Map<string, IpPrefix>();
    for (const text of ["0.0.0.0/0", "::/0"]) {
      const p = parseIpPrefix(text);
      if (p) prefixes.set(p.text, p);
    }
    for (const { block } of this.blockUses.values()) {
      prefixes.set(block.cidr.text, block.cidr);
      for (const e of block.except) prefixes.set(e.text, e);
    }
    const next = new Map<string, AddressEntry>();
    for (const [text, prefix] of prefixes) {
      const { set, text: blocksText } = this.blocksOf(prefix);
      const identity = this.acquire(`range\u0000${blocksText}`, () => hostOrRange("range", set, blocksText));
      next.set(text, { ip: "", prefix: text, identity });
    }
    for (const old of this.rangeEntries.values()) this.release(old.identity);
    this.rangeEntries = next;
    this.addressesChanged = true;
  }

  /** The ipBlocks containing every address of `prefix` (for a host prefix: the address). */
  private blocksOf(prefix: IpPrefix): { set: Set<string>; text: string } {
    const inside = new Set<string>();
    const excluded = new Set<string>();
    this.blockTrie.walk(prefix, prefix.length, (values) => {
      for (const v of values) (v.except ? excluded : inside).add(v.block);
    });
    for (const b of excluded) inside.delete(b);
    const sorted = [...inside].sort();
    return { set: new Set(sorted), text: sorted.join("\u0001") };
  }

  // ---- identities ----------------------------------------------------------------------------

  private acquire(key: string, make: () => Omit<IdentityRecord, "id" | "key" | "refs" | "subjectOf" | "cnpSubjectOf" | "tiered" | "peerOf" | "ingressIsolated" | "egressIsolated" | "rules" | "live" | "message" | "messageMode">): IdentityRecord {
    let identity = this.identities.get(key);
    if (!identity) {
      identity = {
        ...make(),
        id: this.idFor(key),
        key,
        refs: 0,
        subjectOf: new Set(),
        cnpSubjectOf: new Set(),
        peerOf: new Set(),
        ingressIsolated: false,
        egressIsolated: false,
        tiered: 0,
        rules: [],
        live: true,
        message: undefined,
        messageMode: undefined,
      };
      this.identities.set(key, identity);
      this.addIdentity(identity);
    }
    identity.refs++;
    return identity;
  }

  private release(identity: IdentityRecord): void {
    identity.refs--;
    if (identity.refs === 0) this.released.add(identity);
  }

  private idFor(key: string): number {
    if (key === "host\u0000") return IDENTITY_HOST;
    if (key === "range\u0000") return IDENTITY_WORLD;
    if (key === "service\u0000") return IDENTITY_SERVICE;
    const known = this.ids.get(key);
    if (known) {
      known.lastUsed = this.compiles;
      return known.id;
    }
    const id = this.nextId++;
    this.ids.set(key, { id, lastUsed: this.compiles });
    return id;
  }

  private pruneIds(): void {
    for (const [key, entry] of this.ids) {
      if (this.identities.has(key)) entry.lastUsed = this.compiles;
      else if (this.compiles - entry.lastUsed > this.idRetention) this.ids.delete(key);
    }
  }

  private addIdentity(identity: IdentityRecord): void {
    this.identitySetChanged = true;
    for (const b of identity.blocks) addTo(this.identitiesByBlock, b, identity);
    if (identity.kind === "host") {
      this.hostIdentities.add(identity);
      this.hostsChanged = true;
    }
    if (identity.kind === "pod") {
      // A namespace with its first identity may match cached namespaceSelectors.
      if (!this.identitiesByNamespace.has(identity.namespace)) this.namespaceMatches = new Map();
      addTo(this.identitiesByNamespace, identity.namespace, identity);
      for (const name of identity.namedPorts.keys()) addTo(this.podIdentitiesByPortName, name, identity);
      for (const policy of this.policiesByNamespace.get(identity.namespace) ?? []) {
        if (policy.policy.podSelector.matches(identity.podLabels)) this.linkSubject(policy, identity);
      }
      for (const record of this.cnps.values()) {
        if (cnpSubjectMatches(record.cnp, identity.namespaceLabels, identity.podLabels)) this.linkCnpSubject(record, identity);
      }
      for (const peer of this.sameNamespacePeers.get(identity.namespace) ?? []) this.tryPeer(peer, identity);
      for (const peer of this.namespaceSelectorPeers) this.tryPeer(peer, identity);
      if (identity.namedPorts.size > 0) {
        for (const policy of this.wildcardNamedPolicies) {
          if ([...policy.wildcardNamedEgress].some((n) => identity.namedPorts.has(n))) for (const s of policy.subjects) this.dirty.add(s);
        }
      }
    }
    for (const b of identity.blocks) for (const peer of this.blockPeers.get(b) ?? []) this.tryPeer(peer, identity);
  }

  private removeIdentity(identity: IdentityRecord): void {
    this.identitySetChanged = true;
    identity.live = false;
    this.identities.delete(identity.key);
    const known = this.ids.get(identity.key);
    if (known) known.lastUsed = this.compiles;
    for (const b of identity.blocks) removeFrom(this.identitiesByBlock, b, identity);
    if (identity.kind === "host") {
      this.hostIdentities.delete(identity);
      this.hostsChanged = true;
    }
    if (identity.kind === "pod") {
      removeFrom(this.identitiesByNamespace, identity.namespace, identity);
      for (const name of identity.namedPorts.keys()) {
        removeFrom(this.podIdentitiesByPortName, name, identity);
        for (const policy of this.wildcardNamedPolicies) if (policy.wildcardNamedEgress.has(name)) for (const s of policy.subjects) this.dirty.add(s);
      }
    }
    for (const policy of identity.subjectOf) policy.subjects.delete(identity);
    for (const record of identity.cnpSubjectOf) record.subjects.delete(identity);
    for (const policy of identity.peerOf) {
      for (const rule of [...(policy.ingress ?? []), ...(policy.egress ?? [])]) for (const peer of rule.peers ?? []) peer.matched.delete(identity);
      this.dirtySubjects(policy);
    }
    this.dirty.delete(identity);
  }

  // ---- policies ------------------------------------------------------------------------------

  private addPolicy(policy: NormalizedPolicy): void {
    const record: PolicyRecord = { policy, subjects: new Set(), ingress: undefined, egress: undefined, wildcardNamedEgress: new Set() };
    const rules = (list: readonly NormalizedRule[] | undefined): RuleRecord[] | undefined =>
      list?.map((rule) => ({ uid: this.nextRuleUid++, rule, peers: rule.peers?.map((spec) => ({ spec, policy: record, matched: new Set<IdentityRecord>() })) }));
    record.ingress = rules(policy.ingress);
    record.egress = rules(policy.egress);
    for (const rule of policy.egress ?? []) {
      if (rule.peers !== undefined) continue;
      for (const port of rule.ports ?? []) if (port.kind === "named") record.wildcardNamedEgress.add(port.name);
    }
    this.policies.set(policy.key, record);
    addTo(this.policiesByNamespace, policy.namespace, record);
    if (record.wildcardNamedEgress.size > 0) this.wildcardNamedPolicies.add(record);

    for (const identity of this.identitiesByNamespace.get(policy.namespace) ?? []) {
      if (policy.podSelector.matches(identity.podLabels)) this.linkSubject(record, identity);
    }
    for (const rule of [...(record.ingress ?? []), ...(record.egress ?? [])]) {
      for (const peer of rule.peers ?? []) this.attachPeer(peer, policy.namespace);
    }
    this.dirtySubjects(record);
  }

  /** Indexes a peer and links the identities it matches now. */
  private attachPeer(peer: PeerRecord, ownNamespace: string): void {
    const spec = peer.spec;
    if (spec.kind === "ipBlock") {
      addTo(this.blockPeers, spec.block.key, peer);
      for (const identity of this.identitiesByBlock.get(spec.block.key) ?? []) this.linkPeer(peer, identity);
    } else if (spec.namespaceSelector === undefined) {
      addTo(this.sameNamespacePeers, ownNamespace, peer);
      for (const identity of this.identitiesByNamespace.get(ownNamespace) ?? []) this.tryPeer(peer, identity);
    } else {
      this.namespaceSelectorPeers.add(peer);
      const selector = spec.namespaceSelector;
      let namespaces = this.namespaceMatches.get(selector.key);
      if (namespaces === undefined) {
        namespaces = [];
        for (const ns of this.identitiesByNamespace.keys()) {
          if (selector.matches(this.namespaceState.get(ns)?.labels ?? namespaceLabels(ns, undefined))) namespaces.push(ns);
        }
        this.namespaceMatches.set(selector.key, namespaces);
      }
      for (const ns of namespaces) for (const identity of this.identitiesByNamespace.get(ns) ?? []) this.tryPeer(peer, identity);
    }
  }

  private addCnp(cnp: NormalizedCnp): void {
    const record: CnpRecord = { cnp, subjects: new Set(), ingress: [], egress: [] };
    const rules = (list: readonly NormalizedCnpRule[]): CnpRuleRecord[] =>
      list.map((rule) => ({ uid: this.nextRuleUid++, rule, peers: rule.peers.map((spec) => ({ spec, policy: record, matched: new Set<IdentityRecord>() })) }));
    record.ingress = rules(cnp.ingress);
    record.egress = rules(cnp.egress);
    this.cnps.set(cnp.name, record);
    // The namespace selector once per namespace labels object (a namespace's identities share
    // it), the pod selector per identity.
    for (const identities of this.identitiesByNamespace.values()) {
      let labels: Labels | undefined;
      let nsMatches = false;
      for (const identity of identities) {
        if (identity.namespaceLabels !== labels) {
          labels = identity.namespaceLabels;
          nsMatches = cnp.subjectNamespaces === undefined || cnp.subjectNamespaces.matches(labels);
        }
        if (nsMatches && (cnp.subjectPods === undefined || cnp.subjectPods.matches(identity.podLabels))) this.linkCnpSubject(record, identity);
      }
    }
    for (const rule of [...record.ingress, ...record.egress]) for (const peer of rule.peers) this.attachPeer(peer, "");
    this.dirtySubjects(record);
  }

  private removeCnp(record: CnpRecord): void {
    this.cnps.delete(record.cnp.name);
    for (const identity of record.subjects) {
      identity.cnpSubjectOf.delete(record);
      this.dirty.add(identity);
    }
    for (const rule of [...record.ingress, ...record.egress]) {
      for (const peer of rule.peers) {
        if (peer.spec.kind === "ipBlock") removeFrom(this.blockPeers, peer.spec.block.key, peer);
        else this.namespaceSelectorPeers.delete(peer);
        for (const identity of peer.matched) identity.peerOf.delete(record);
      }
    }
  }

  private linkCnpSubject(record: CnpRecord, identity: IdentityRecord): void {
    record.subjects.add(identity);
    identity.cnpSubjectOf.add(record);
    this.dirty.add(identity);
  }

  private removePolicy(record: PolicyRecord): void {
    const policy = record.policy;
    this.policies.delete(policy.key);
    removeFrom(this.policiesByNamespace, policy.namespace, record);
    this.wildcardNamedPolicies.delete(record);
    for (const identity of record.subjects) {
      identity.subjectOf.delete(record);
      this.dirty.add(identity);
    }
    for (const rule of [...(record.ingress ?? []), ...(record.egress ?? [])]) {
      for (const peer of rule.peers ?? []) {
        const spec = peer.spec;
        if (spec.kind === "ipBlock") removeFrom(this.blockPeers, spec.block.key, peer);
        else if (spec.namespaceSelector === undefined) removeFrom(this.sameNamespacePeers, policy.namespace, peer);
        else this.namespaceSelectorPeers.delete(peer);
        for (const identity of peer.matched) identity.peerOf.delete(record);
      }
    }
  }

  private linkSubject(policy: PolicyRecord, identity: IdentityRecord): void {
    policy.subjects.add(identity);
    identity.subjectOf.add(policy);
    this.dirty.add(identity);
  }

  private tryPeer(peer: PeerRecord, identity: IdentityRecord): void {
    const spec = peer.spec;
    if (spec.kind === "ipBlock") {
      if (identity.blocks.has(spec.block.key)) this.linkPeer(peer, identity);
      return;
    }
    if (identity.kind !== "pod") return;
    const ownNamespace = "policy" in peer.policy ? peer.policy.policy.namespace : "";
    if (spec.namespaceSelector === undefined ? identity.namespace !== ownNamespace : !spec.namespaceSelector.matches(identity.namespaceLabels)) return;
    if (spec.podSelector.matches(identity.podLabels)) this.linkPeer(peer, identity);
  }

  private linkPeer(peer: PeerRecord, identity: IdentityRecord): void {
    if (peer.matched.has(identity)) return;
    peer.matched.add(identity);
    identity.peerOf.add(peer.policy);
    this.dirtySubjects(peer.policy);
  }

  /**
   * Marks every subject of the policy for recomputation, once per compile: a subject linked
   * later is marked by its link, so a second walk would add nothing (and a policy's peers
   * can match thousands of identities, each of which would walk all its subjects).
   */
  private dirtySubjects(policy: PolicyRecord | CnpRecord): void {
    if (this.subjectsDirtied.has(policy)) return;
    this.subjectsDirtied.add(policy);
    for (const s of policy.subjects) this.dirty.add(s);
  }

  // ---- rules ---------------------------------------------------------------------------------

  /** Recomputes the subject's isolation and rules; true when either changed. */
  private computeRules(subject: IdentityRecord): boolean {
    const out: PolicyRule[] = [];
    const before = { ingress: subject.ingressIsolated, egress: subject.egressIsolated, rules: subject.rules };
    subject.tiered = 0;
    for (const direction of ["ingress", "egress"] as const) {
      if ([...subject.cnpSubjectOf].some((c) => c[direction].length > 0)) {
        // Judged by tiers: complete allow/deny entries; the kernel looks them up.
        subject.tiered++;
        if ((direction === "ingress" ? subject.ingressIsolated : subject.egressIsolated) !== true) {
          subject.message = undefined;
          this.messagesChanged = true;
        }
        if (direction === "ingress") subject.ingressIsolated = true;
        else subject.egressIsolated = true;
        this.computeTiered(subject, direction, out);
        continue;
      }
      const acc = new RuleAccumulator();
      let isolated = false;
      for (const policy of subject.subjectOf) {
        const rules = policy[direction];
        if (rules === undefined) continue;
        isolated = true;
        for (const { rule, peers } of rules) this.addRule(acc, direction, subject, rule, peers);
      }
      if (isolated && this.hostExempt) for (const host of this.hostIdentities) acc.add(host.id, 0, 0, 65535);
      if ((direction === "ingress" ? subject.ingressIsolated : subject.egressIsolated) !== isolated) {
        subject.message = undefined;
        this.messagesChanged = true;
      }
      if (direction === "ingress") subject.ingressIsolated = isolated;
      else subject.egressIsolated = isolated;
      if (isolated) acc.emit(subject.id, DIRECTION_OF[direction], out);
    }
    subject.rules = out;
    return before.ingress !== subject.ingressIsolated || before.egress !== subject.egressIsolated || !sameRules(before.rules, out);
  }

  /**
   * The rules of a subject some ClusterNetworkPolicy names in this direction: every tier's
   * decision precomputed per peer identity, protocol and port interval (Admin rules by
   * priority and order, first match; Pass or no match → NetworkPolicy when it isolates the
   * subject; then Baseline; else allowed). Each peer whose decisions differ from those of a
   * peer no rule names gets complete entries (one for any protocol at least, so the
   * kernel's fallback to peer 0 never applies to it); peer 0 gets the default.
   */
  private computeTiered(subject: IdentityRecord, direction: Direction, out: PolicyRule[]): void {
    const tier = (name: "Admin" | "Baseline"): TierClause[] => {
      const records = [...subject.cnpSubjectOf].filter((c) => c.cnp.tier === name).sort((a, b) => compareCnps(a.cnp, b.cnp));
      return records.flatMap((c) => c[direction].map((r): TierClause => ({ uid: r.uid, action: r.rule.action, peers: r.peers, ports: r.rule.ports })));
    };
    const admin = tier("Admin");
    const baseline = tier("Baseline");
    let npIsolated = false;
    const np: TierClause[] = [];
    for (const policy of subject.subjectOf) {
      const rules = policy[direction];
      if (rules === undefined) continue;
      npIsolated = true;
      for (const { uid, rule, peers } of rules) np.push({ uid, action: "allow", peers, ports: rule.ports });
    }
    // NetworkPolicy rules only add up (any allows): their order does not matter, so sort for the key.
    np.sort((x, y) => x.uid - y.uid);
    // A subject NetworkPolicy isolates never reaches its Baseline tier.
    if (npIsolated) baseline.length = 0;
    // Admin rules after one that decides for every peer and port are never reached.
    const firstTotal = admin.findIndex((c) => c.peers === undefined && c.ports === undefined);
    if (firstTotal >= 0) admin.length = firstTotal + 1;
    const all = [...admin, ...np, ...baseline];
    const dir = DIRECTION_OF[direction];
    // Named ports resolved on the subject (ingress) make the result the subject's own.
    const onSubject = direction === "ingress" && all.some((c) => c.ports?.some((port) => port.kind === "named"));
    const cacheKey = `${direction}|${admin.map((c) => c.uid).join(",")}|${npIsolated ? np.map((c) => c.uid).join(",") : "-"}|${baseline.map((c) => c.uid).join(",")}${onSubject ? `|${namedPortsText(subject.namedPorts)}` : ""}`;
    const cached = this.tieredCache.get(cacheKey);
    if (cached !== undefined) {
      const id = subject.id;
      // Literal objects of one shape: a spread per entry cost more than the walk it saves.
      for (const r of cached) out.push({ subject: id, direction: r.direction, peer: r.peer, protocol: r.protocol, port: r.port, endPort: r.endPort, deny: r.deny });
      return;
    }
    const start = out.length;
    // Each peer a clause names, with the clauses it matches: peers matching the same clauses
    // (and, when a named port is resolved on the peer, with the same named ports) decide alike.
    const peers = new Map<IdentityRecord, number[]>();
    let peerNamedPorts = false;
    all.forEach((c, i) => {
      for (const p of c.peers ?? []) {
        for (const identity of p.matched) {
          const list = peers.get(identity);
          if (list === undefined) peers.set(identity, [i]);
          else if (list[list.length - 1] !== i) list.push(i);
        }
      }
      if (direction === "egress" && c.ports?.some((port) => port.kind === "named")) {
        peerNamedPorts = true;
        if (c.peers === undefined) {
          for (const port of c.ports) if (port.kind === "named") for (const identity of this.podIdentitiesByPortName.get(port.name) ?? []) if (!peers.has(identity)) peers.set(identity, []);
        }
      }
    });
    if (this.hostExempt) for (const host of this.hostIdentities) if (!peers.has(host)) peers.set(host, []);

    const segsOf = (clause: TierClause, peer: IdentityRecord | undefined): PortSeg[] | undefined => {
      if (clause.peers === undefined ? false : !clause.peers.some((p) => peer !== undefined && p.matched.has(peer))) {
        return undefined;
      }
      if (clause.ports === undefined) return [{ proto: 0, from: 0, to: 65535 }];
      const segs: PortSeg[] = [];
      for (const port of clause.ports) {
        const proto = protoNumber(port.protocol);
        if (port.kind === "all") segs.push({ proto, from: 1, to: 65535 });
        else if (port.kind === "range") segs.push({ proto, from: port.from, to: port.to });
        else {
          // Resolved on the destination: the subject for ingress, the peer (a pod) for egress.
          const on = direction === "ingress" ? subject : peer?.kind === "pod" ? peer : undefined;
          for (const t of on?.namedPorts.get(port.name) ?? []) if (t.protocol === port.protocol) segs.push({ proto, from: t.port, to: t.port });
        }
      }
      return segs.length === 0 ? undefined : segs;
    };
    const decisions = (peer: IdentityRecord | undefined): { key: string; other: boolean; protos: [number, [number, number, boolean][]][] } => {
      if (peer !== undefined && peer.kind === "host" && this.hostExempt) {
        return { key: "A", other: true, protos: PORTED_PROTOCOLS.map((p) => [p, [[1, 65535, true]]]) };
      }
      const matched = (list: TierClause[]) => list.map((c) => ({ action: c.action, segs: segsOf(c, peer) })).filter((c): c is { action: TierClause["action"]; segs: PortSeg[] } => c.segs !== undefined);
      const a = matched(admin);
      const n = matched(np);
      const b = matched(baseline);
      const covers = (segs: PortSeg[], proto: number, port: number) => segs.some((g) => g.proto === 0 || (g.proto === proto && port >= g.from && port <= g.to));
      const judge = (proto: number, port: number): boolean => {
        for (const c of a) {
          if (!covers(c.segs, proto, port)) continue;
          if (c.action === "Pass") break;
          return c.action === "Accept";
        }
        if (npIsolated) return n.some((c) => covers(c.segs, proto, port));
        for (const c of b) {
          if (!covers(c.segs, proto, port)) continue;
          if (c.action === "Pass") break;
          return c.action === "Accept";
        }
        return true;
      };
      const other = judge(-1, 0);
      let key = other ? "A" : "D";
      const protos: [number, [number, number, boolean][]][] = [];
      for (const proto of PORTED_PROTOCOLS) {
        const cuts = new Set<number>([1]);
        for (const c of [...a, ...n, ...b]) {
          for (const g of c.segs) {
            if (g.proto !== proto) continue;
            cuts.add(g.from);
            if (g.to < 65535) cuts.add(g.to + 1);
          }
        }
        const starts = [...cuts].sort((x, y) => x - y);
        const intervals: [number, number, boolean][] = [];
        starts.forEach((from, i) => {
          const to = (starts[i + 1] ?? 65536) - 1;
          const allow = judge(proto, from);
          const last = intervals[intervals.length - 1];
          if (last && last[2] === allow) last[1] = to;
          else intervals.push([from, to, allow]);
        });
        protos.push([proto, intervals]);
        key += `|${proto}:${intervals.map(([f, t, al]) => `${f}-${t}${al ? "A" : "D"}`).join(",")}`;
      }
      return { key, other, protos };
    };
    const emit = (peerId: number, d: ReturnType<typeof decisions>) => {
      out.push({ subject: subject.id, direction: dir, peer: peerId, protocol: 0, port: 0, endPort: 0, deny: !d.other });
      for (const [proto, intervals] of d.protos) {
        let allowed = 0;
        for (const [f, t, al] of intervals) if (al) allowed += t - f + 1;
        const base = allowed * 2 >= 65535;
        if (base !== d.other) out.push({ subject: subject.id, direction: dir, peer: peerId, protocol: proto, port: 0, endPort: 0, deny: !base });
        for (const [f, t, al] of intervals) {
          if (al !== base) out.push({ subject: subject.id, direction: dir, peer: peerId, protocol: proto, port: f, endPort: f === t ? 0 : t, deny: !al });
        }
      }
    };
    const fallback = decisions(undefined);
    emit(IDENTITY_ANY, fallback);
    const memo = new Map<string, ReturnType<typeof decisions>>();
    for (const [peer, clauses] of [...peers].sort((x, y) => x[0].id - y[0].id)) {
      if (peer.id === IDENTITY_ANY) continue;
      const signature = `${peer.kind === "host" ? "h" : ""}${clauses.join(",")}${peerNamedPorts && peer.kind === "pod" ? `|${peer.id}` : ""}`;
      let d = memo.get(signature);
      if (d === undefined) memo.set(signature, (d = decisions(peer)));
      if (d.key !== fallback.key) emit(peer.id, d);
    }
    this.tieredCache.set(cacheKey, out.slice(start));
  }

  private addRule(acc: RuleAccumulator, direction: Direction, subject: IdentityRecord, rule: NormalizedRule, peers: PeerRecord[] | undefined): void {
    const peerIds: number[] = [];
    if (peers === undefined) peerIds.push(IDENTITY_ANY);
    else for (const peer of peers) for (const identity of peer.matched) peerIds.push(identity.id);
    if (rule.ports === undefined) {
      for (const id of peerIds) acc.add(id, 0, 0, 65535);
      return;
    }
    for (const port of rule.ports) {
      const proto = protoNumber(port.protocol);
      switch (port.kind) {
        case "all":
          for (const id of peerIds) acc.add(id, proto, 0, 65535);
          break;
        case "range":
          for (const id of peerIds) acc.add(id, proto, port.from, port.to);
          break;
        case "named":
          if (direction === "ingress") {
            // Resolved on the destination: the subject itself.
            for (const t of subject.namedPorts.get(port.name) ?? []) {
              if (t.protocol === port.protocol) for (const id of peerIds) acc.add(id, proto, t.port, t.port);
            }
          } else {
            // Resolved on the destination: each peer pod; a peer that is not a pod never matches.
            const candidates = peers === undefined
              ? this.podIdentitiesByPortName.get(port.name) ?? new Set<IdentityRecord>()
              : peers.flatMap((p) => [...p.matched]);
            for (const peer of candidates) {
              if (peer.kind !== "pod") continue;
              for (const t of peer.namedPorts.get(port.name) ?? []) if (t.protocol === port.protocol) acc.add(peer.id, proto, t.port, t.port);
            }
          }
          break;
      }
    }
  }

  // ---- output --------------------------------------------------------------------------------

  /** The snapshot from the records; parts whose inputs did not change are reused from the previous one. */
  private assemble(rulesChanged: boolean): PolicySnapshot {
    const previous = this.snapshot;
    if (this.identitySetChanged || this.sortedIdentities.length === 0) {
      this.sortedIdentities = [...this.identities.values()].sort((a, b) => a.id - b.id);
    }
    let identities = previous.identities;
    if (this.identitySetChanged || this.messagesChanged || this.compiles === 1) {
      identities = [];
      let hasHost = false;
      let hasWorld = false;
      for (const r of this.sortedIdentities) {
        if (r.id === IDENTITY_HOST) hasHost = true;
        if (r.id === IDENTITY_WORLD) hasWorld = true;
        identities.push(this.messageOf(r));
      }
      if (!hasHost) identities.push(reservedIdentity(IDENTITY_HOST, "host"));
      if (!hasWorld) identities.push(reservedIdentity(IDENTITY_WORLD, "world"));
      if (!hasHost || !hasWorld) identities.sort((a, b) => a.id - b.id);
    }
    this.messagesChanged = false;

    let rules = previous.rules;
    if (rulesChanged || this.identitySetChanged || this.compiles === 1) {
      let total = 0;
      for (const r of this.sortedIdentities) total += r.rules.length;
      rules = new Array<PolicyRule>(total);
      let i = 0;
      for (const r of this.sortedIdentities) for (const rule of r.rules) rules[i++] = rule;
    }

    let ipIdentities = previous.ipIdentities;
    if (this.addressesChanged || this.identitySetChanged || this.compiles === 1) {
      const byPrefix = new Map<string, number>();
      for (const e of this.rangeEntries.values()) byPrefix.set(e.prefix, e.identity.id);
      for (const e of this.nodeEntries.values()) byPrefix.set(e.prefix, e.identity.id);
      for (const e of this.serviceEntries.values()) byPrefix.set(e.prefix, e.identity.id);
      // Pods win over nodes and ranges on the same prefix; of two pods claiming one address, the first by name.
      const claimedBy = new Map<string, string>();
      for (const [key, state] of this.podState) {
        for (const e of state.entries) {
          const claim = claimedBy.get(e.prefix);
          if (claim !== undefined && claim < key) continue;
          claimedBy.set(e.prefix, key);
          byPrefix.set(e.prefix, e.identity.id);
        }
      }
      ipIdentities = [];
      for (const [cidr, identity] of byPrefix) ipIdentities.push({ cidr, identity });
      ipIdentities.sort((a, b) => (a.cidr < b.cidr ? -1 : a.cidr > b.cidr ? 1 : 0));
    }
    return { version: this.version, identities, ipIdentities, rules };
  }

  private messageOf(r: IdentityRecord): Identity {
    if (r.kind !== "pod") {
      if (!r.message) {
        r.message = reservedIdentity(r.id, r.kind === "range" ? "world" : r.kind);
        if (r.kind === "service") r.message.service = true;
        if (r.blocksText !== "") r.message.labels[IP_BLOCKS_LABEL] = [...r.blocks].join(";");
      }
      return r.message;
    }
    const mode = this.namespaceState.get(r.namespace)?.mode ?? this.defaultMode;
    if (!r.message || r.messageMode !== mode) {
      r.message = {
        id: r.id, namespace: r.namespace, labels: { ...r.podLabels }, mode: MODE_OF[mode],
        ingressIsolated: r.ingressIsolated, egressIsolated: r.egressIsolated, endpoint: true, service: false,
      };
      r.messageMode = mode;
    }
    return r.message;
  }
}

/** A pod's named ports as text ("name:TCP/80+UDP/80,…"): subjects with the same text resolve named ports alike. */
function namedPortsText(ports: ReadonlyMap<string, readonly NamedPortTarget[]>): string {
  let out = "";
  for (const [name, targets] of ports) out += `${name}:${targets.map((t) => `${t.protocol}/${t.port}`).join("+")},`;
  return out;
}

/** "<tier> <policy> <rule>: <action>" of the ClusterNetworkPolicy rules that matched first on a side. */
/** Every field of an attribution, as a key: equal keys, equal attributions. */
function attributionContent(a: PolicyAttribution): string {
  return JSON.stringify([String(a.policyVersion), a.egressIsolated, a.egressAllowedBy, a.egressIsolatedBy, a.ingressIsolated,
    a.ingressAllowedBy, a.ingressIsolatedBy, a.egressDecidedBy, a.ingressDecidedBy, a.egressTierRules, a.ingressTierRules]);
}

function tierRules(side: SideVerdict): string[] {
  return [side.admin, side.baseline].filter((m) => m !== undefined).map((m) => `${m.tier} ${m.policy} ${m.rule}: ${m.action}`);
}

function hostOrRange(kind: "host" | "range" | "service", blocks: Set<string>, text: string): Omit<IdentityRecord, "id" | "key" | "refs" | "subjectOf" | "cnpSubjectOf" | "tiered" | "peerOf" | "ingressIsolated" | "egressIsolated" | "rules" | "live" | "message" | "messageMode"> {
  return { kind, namespace: "", namespaceLabels: {}, podLabels: {}, namedPorts: new Map(), blocks, blocksText: text };
}



export { protocolOf };

/**
 * attribution()'s cache key for a protocol and port: a protocol number (0-255) or name
 * (256 and up) times 65,536 plus the port; -1 (not cached) for anything else.
 */
function attributionService(protocol: Protocol | number, port: number): number {
  let p: number;
  if (typeof protocol === "number") {
    if (!Number.isInteger(protocol) || protocol < 0 || protocol > 255) return -1;
    p = protocol;
  } else {
    const i = PROTOCOLS.indexOf(protocol);
    if (i < 0) return -1;
    p = 256 + i;
  }
  if (!Number.isInteger(port) || port < 0 || port > 65_535) return -1;
  return p * 65_536 + port;
}
