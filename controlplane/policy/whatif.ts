// What-if: replay recorded flows against the policies in force and against those plus a
// draft, with the policy model (model.ts) that the compiled snapshot and the datapath are
// proved against, and report every edge whose verdict would change.
//
// Which records are replayed: the observation where the datapath judges a new connection
// (native/bpf/endpoint.bpf.c). Traffic entering a pod is judged at that pod's TO_POD,
// after Service DNAT, for both ends (the source's egress and the destination's ingress);
// traffic from a pod to a host or outside address at the source's FROM_POD. So: TO_POD
// records, and FROM_POD records whose destination is neither a pod nor a Service address.
// Replies are not replayed (they follow their connection: conntrack), nor spoofed records
// (dropped whatever the policy). Each packet is counted once this way.
//
// Identity of the time: each end is what the record says it was when it was recorded —
// its namespace, pod, labels, address, workload, node — not what that pod (or address)
// is today; so a reused address or a relabelled pod is judged as it was. Two things are
// not recorded and are read from the cluster as it is now: a namespace's labels (and its
// bulkhead.io/mode), and a pod's named container ports (from the pod of that name, else a
// pod of the namespace with the same labels; none when neither exists, so named-port
// rules match nothing for it). Reports say so in `notes`.
//
// Speed: a record costs two WeakMap lookups (endpoints are shared objects, in the hot
// window and in the stores' dictionaries) and one probe of a typed-array table
// (tuple-table.ts); a row of the hot window's columns (addStored) is judged from facts of
// its ends found once per dictionary id and from its numbers (isJudgedRow), and summed into
// the table a batch of rows at a time (TupleTable.addBatch: their cache misses overlap);
// each distinct (source class, destination class, protocol, port) is judged once before
// and once after by class-verdicts.ts (per-class caches over the model's matching: two
// bits), found in a second table of keys; only the tuples whose
// outcome changes are ordered, merged into edges and go through the model, which names
// the deciding rules.
import type { Endpoint, FlowRecord } from "../../proto/gen/bulkhead/v1/flow.js";
import { ObservationPoint, VerdictReason } from "../../proto/gen/bulkhead/v1/flow.js";
import type { Namespace, NetworkPolicy, Node, Pod } from "../metadata/objects.js";
import { isReply, mapNodeOf, travelsToClient } from "../store/flowmap.js";
import { newStoredRowNumbers, type FlowHistory, type HistoryQuery, type StoredRowNumbers } from "../store/history.js";
import { outcomeOf, outcomeOfSides, type Outcome } from "./explain.js";
import { ClassVerdicts, EGRESS_ALLOWED, INGRESS_ALLOWED, type ClassEnd } from "./class-verdicts.js";
import { normalizeCnp, type ClusterNetworkPolicy } from "./cnp.js";
import { type IpBlockRange, PolicyModel, PolicySet, protocolOf, type Peer, type PolicyModeName, type SideVerdict, type Verdict } from "./model.js";
import { ipWords } from "../../addresses/prefix.js";
import { TupleBatch, TupleTable } from "./tuple-table.js";
import { PROTOCOL_NAMES } from "../../flowcolumns/columns.js";

export type { Outcome } from "./explain.js";

/** The cluster as it is now: namespace labels and modes, and the pods named ports are read from. */
export interface ReplayCluster {
  namespaces: readonly Namespace[];
  pods: readonly Pod[];
}

/** Policies to evaluate against: the ones in force, and the ones in force with a draft applied. */
export interface ReplayPolicies {
  before: readonly NetworkPolicy[];
  after: readonly NetworkPolicy[];
  /** The ClusterNetworkPolicies in force, and with the draft applied (default: the same). */
  clusterBefore?: readonly ClusterNetworkPolicy[];
  clusterAfter?: readonly ClusterNetworkPolicy[];
}

export interface ReplayOptions {
  /** Mode of namespaces without a bulkhead.io/mode annotation (the control plane's). */
  defaultMode?: PolicyModeName;
  /** Judge as if every namespace were in this mode (e.g. enforce: what switching would break). */
  mode?: PolicyModeName;
  /** Every tuple through the model alone, without class-verdicts.ts: the reference the fast path is tested against. */
  reference?: boolean;
}

/** One side's decision after the draft, for the report. */
export interface DecidingSide {
  /** The rules that allow it ("ns/policy ingress[0]"); empty when denied or not isolated. */
  allowedBy: string[];
  /** The policies that isolate it; a denied side is denied by these (none of their rules allows). */
  isolatedBy: string[];
  allowed: boolean;
  exemption?: "self" | "host";
}

/** An edge (client → server, protocol, server port) whose verdict would change. */
export interface ChangedEdge {
  /** Map node ids, as GetFlowMap names them: "workload:ns/Kind/name", "world:ip", "host:node". */
  source: string;
  destination: string;
  protocol: string;
  port: number;
  before: Outcome;
  after: Outcome;
  /** The policy verdict (whatever the mode): both sides allow. */
  allowedBefore: boolean;
  allowedAfter: boolean;
  records: number;
  packets: number;
  /** Milliseconds since the epoch. */
  firstSeenMs: number;
  lastSeenMs: number;
  /** What decides after the draft, per side. */
  egress: DecidingSide;
  ingress: DecidingSide;
}

export interface WhatIfReport {
  edges: ChangedEdge[];
  /** Records given to the replay. */
  records: number;
  /** Of those, judged observations replayed (the rest: replies, other observations, spoofed). */
  replayed: number;
  /** Distinct (source class, destination class, protocol, port) evaluated, each before and after. */
  evaluated: number;
  /** Some edge FORWARDED or AUDIT before is DROPPED after: the draft would break traffic that works. */
  breaks: boolean;
  /** What the replay could not take from the records (see the top of whatif.ts). */
  notes: string[];
}

type IdentityKind = "pod" | "host" | "world";

/**
 * A replay identity: recorded ends that policy cannot tell apart (as the compiler's
 * identities: namespace, recorded labels, today's named ports, the ipBlocks containing
 * the address; host or outside address) and that show as the same map node.
 */
interface Identity {
  id: number;
  kind: IdentityKind;
  /** The first recorded end of this identity: its namespace, labels, address stand for all. */
  endpoint: Endpoint;
  ip: string;
  /** Map node id of the edge end. */
  node: string;
  /** The policy class (identities that differ only by map node share it): evaluations are cached by class. */
  classId: number;
}

interface Group {
  /** Index in the replay's tuple table. */
  tuple: number;
  src: Identity;
  dst: Identity;
  protocol: number;
  port: number;
  /** Both ends are the same pod. */
  self: boolean;
  records: number;
  packets: number;
  firstMs: number;
  lastMs: number;
}

const COLLATOR = new Intl.Collator();

function labelsKey(labels: Record<string, string>): string {
  const keys = Object.keys(labels).sort();
  let out = "";
  for (const k of keys) out += `${k}=${labels[k]}\u0000`;
  return out;
}

function endpointKind(e: Endpoint): IdentityKind {
  if (e.podName !== "") return "pod";
  if (!e.world && e.node !== "" && e.service === "") return "host";
  return "world";
}

function ms(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts === undefined ? 0 : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

/** Whether the record is the observation where the datapath judges its packets' connection (see the top). */
export function isJudgedObservation(r: FlowRecord): boolean {
  if (r.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) return false;
  if (r.point === ObservationPoint.OBSERVATION_POINT_TO_POD) return !isReply(r);
  if (r.point !== ObservationPoint.OBSERVATION_POINT_FROM_POD) return false;
  const d = r.destination;
  if (d !== undefined && (d.podName !== "" || d.service !== "")) return false;
  return !isReply(r);
}

/** What judging a stored row needs from one of its ends, found once per end rather than read per row. */
export interface StoredEnd {
  endpoint: Endpoint | undefined;
  /** A Service address (no pod): rule 3 of isReply. */
  serviceAddress: boolean;
  /** A pod or a Service address: a FROM_POD record to it is judged at its TO_POD instead. */
  podOrService: boolean;
}

/** The facts of an end for isJudgedRow (none for a row without that end). */
export function storedEndOf(e: Endpoint | undefined): StoredEnd {
  return {
    endpoint: e,
    serviceAddress: e !== undefined && e.podName === "" && e.service !== "",
    podOrService: e !== undefined && (e.podName !== "" || e.service !== ""),
  };
}

/**
 * isJudgedObservation over a history scan's row (its numbers, StoredRowNumbers), with the
 * facts of its ends (`s`, `d`) found once per end: the per-row path of the replays
 * (addStored here and in suggest.ts).
 */
export function isJudgedRow(r: StoredRowNumbers, s: StoredEnd, d: StoredEnd): boolean {
  if (r.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) return false;
  const point = r.point;
  if (point === ObservationPoint.OBSERVATION_POINT_FROM_POD) {
    if (d.podOrService) return false;
  } else if (point !== ObservationPoint.OBSERVATION_POINT_TO_POD) {
    return false;
  }
  // Not a reply (isReply's rule over the ends' facts and the row's numbers).
  if (!r.hasL4) return !s.serviceAddress || d.serviceAddress;
  return !travelsToClient(s.serviceAddress, d.serviceAddress, r.protocol, r.sourcePort, r.destinationPort, r.icmpType, r.synAckBits);
}

/** An end of a replayed row: its facts, its pod (for the self flag) and its identity once replayed. */
interface ReplayEnd extends StoredEnd {
  /** Dense per (namespace, pod name), -1 for an end that is not a pod: equal for two ends of one pod. */
  pod: number;
  identity: Identity | undefined;
}

/**
 * Collects recorded flows by distinct judged (source, destination, protocol, port); then
 * `report` evaluates each once. Built for one cluster and the policies it will be asked
 * about (those in force and the draft's), whose ipBlocks decide which addresses policy
 * tells apart.
 */
export class FlowReplay {
  private readonly byObject = new WeakMap<Endpoint, Identity>();
  /** Policies normalized once for the ipBlocks here and for both models of a report (the same objects, mostly). */
  private readonly normalized: ConstructorParameters<typeof PolicySet>[0] = new WeakMap();
  private readonly byContent = new Map<string, Identity>();
  private readonly classes = new Map<string, number>();
  private readonly identities: Identity[] = [];
  /** By "namespace\u0000pod name", for ReplayEnd.pod. */
  private readonly pods = new Map<string, number>();
  /** Judged records summed per (source identity, destination identity, self flag | protocol << 16 | port). */
  private readonly tuples = new TupleTable();
  private readonly blocks: IpBlockRange[];
  private readonly today = new Map<string, Pod>();
  private readonly todayByLabels = new Map<string, Pod>();
  private withoutPorts = 0;
  private readonly selectorKeys: ReadonlySet<string>;
  records = 0;
  replayed = 0;

  constructor(private readonly cluster: ReplayCluster, policies: readonly NetworkPolicy[], clusterPolicies: readonly ClusterNetworkPolicy[] = []) {
    const blocks = new Map<string, IpBlockRange>();
    for (const p of new PolicySet(this.normalized).update(policies).inForce) {
      for (const rules of [p.ingress, p.egress]) {
        for (const rule of rules ?? []) for (const peer of rule.peers ?? []) if (peer.kind === "ipBlock") blocks.set(peer.block.key, peer.block);
      }
    }
    // A ClusterNetworkPolicy's `networks` tell addresses apart as ipBlocks do.
    for (const object of clusterPolicies) {
      const p = normalizeCnp(object).policy;
      for (const rule of p ? [...p.ingress, ...p.egress] : []) for (const peer of rule.peers) if (peer.kind === "ipBlock") blocks.set(peer.block.key, peer.block);
    }
    this.blocks = [...blocks.values()];
    // Only the label keys some pod selector names can change a verdict: the rest (a
    // pod-template-hash, a version) would split classes and multiply evaluations for nothing.
    const keys = new Set<string>();
    const note = (sel: { matchLabels?: Record<string, string>; matchExpressions?: { key: string }[] } | undefined) => {
      for (const k of Object.keys(sel?.matchLabels ?? {})) keys.add(k);
      for (const e of sel?.matchExpressions ?? []) keys.add(e.key);
    };
    for (const p of policies) {
      note(p.spec?.podSelector);
      for (const r of p.spec?.ingress ?? []) for (const peer of r.from ?? []) note(peer.podSelector);
      for (const r of p.spec?.egress ?? []) for (const peer of r.to ?? []) note(peer.podSelector);
    }
    // A ClusterNetworkPolicy's spec is not trusted to have a shape: every podSelector in it.
    const walk = (value: unknown): void => {
      if (Array.isArray(value)) { for (const v of value) walk(v); return; }
      if (typeof value !== "object" || value === null) return;
      for (const [k, v] of Object.entries(value)) {
        if (k === "podSelector" && typeof v === "object" && v !== null) note(v as Parameters<typeof note>[0]);
        walk(v);
      }
    };
    for (const p of clusterPolicies) walk(p.spec);
    this.selectorKeys = keys;
    for (const pod of cluster.pods) {
      this.today.set(`${pod.metadata.namespace}/${pod.metadata.name}`, pod);
      const lk = `${pod.metadata.namespace}\u0001${labelsKey(pod.metadata.labels)}`;
      if (!this.todayByLabels.has(lk)) this.todayByLabels.set(lk, pod);
    }
  }

  /** Adds one record (skipped unless it is a judged observation). */
  add(r: FlowRecord): void {
    this.records++;
    if (!isJudgedObservation(r)) return;
    const s = r.source, d = r.destination, ip = r.ip, l4 = r.l4;
    if (s === undefined || d === undefined || ip === undefined || l4 === undefined) return;
    this.replayed++;
    // addJudged's steps written out: this is the per-record path (millions a replay).
    const src = this.byObject.get(s) ?? this.identify(s, ip.source);
    const dst = this.byObject.get(d) ?? this.identify(d, ip.destination);
    const protocol = l4.protocol & 0xff;
    const port = protocol === 6 || protocol === 17 || protocol === 132 ? l4.destinationPort & 0xffff : 0;
    const self = s === d || (s.podName !== "" && s.podName === d.podName && s.namespace === d.namespace);
    const key = (self ? 0x1000000 : 0) + protocol * 0x10000 + port;
    this.tuples.add(src.id, dst.id, key, Number(r.packets), ms(r.startTime), ms(r.endTime));
  }

  /**
   * Adds `records` judged observations of one connection tuple at once, summed by the
   * caller (suggest.ts: what it learned), as add() would have added them one by one.
   */
  addJudged(source: Endpoint, sourceAddress: string, destination: Endpoint, destinationAddress: string, protocol: number, destinationPort: number,
    records: number, packets: number, firstMs: number, lastMs: number): void {
    const src = this.byObject.get(source) ?? this.identify(source, sourceAddress);
    const dst = this.byObject.get(destination) ?? this.identify(destination, destinationAddress);
    const p = protocol & 0xff;
    const port = p === 6 || p === 17 || p === 132 ? destinationPort & 0xffff : 0;
    // A pod talking to itself is always allowed: kept apart from two pods of one identity.
    const self = source === destination || (source.podName !== "" && source.podName === destination.podName && source.namespace === destination.namespace);
    const key = (self ? 0x1000000 : 0) + p * 0x10000 + port;
    this.tuples.addSummed(src.id, dst.id, key, records, packets, firstMs, lastMs);
  }

  addAll(records: Iterable<FlowRecord>): void {
    for (const r of records) this.add(r);
  }

  /**
   * Adds the history's records that `query` selects, as add() would one by one in query()
   * order, read from its columns: no FlowRecord, BigInt or Timestamp per record, and each
   * end found by its dictionary id in an array instead of a WeakMap.
   */
  addStored(history: FlowHistory, query: HistoryQuery = {}): void {
    // Endpoint dictionary ids are reused once no row holds them: valid for this scan only.
    const ends: (ReplayEnd | undefined)[] = [];
    // Rows are summed a batch at a time (TupleTable.addBatch: the table's cache misses overlap).
    const batch = new TupleBatch();
    const numbers = newStoredRowNumbers();
    history.scan(query, (row) => {
      this.records++;
      const r = row.readNumbers(numbers);
      const sid = r.sourceId, did = r.destinationId;
      const s = ends[sid] ??= this.replayEnd(row.source), d = ends[did] ??= this.replayEnd(row.destination);
      if (!isJudgedRow(r, s, d) || s.endpoint === undefined || d.endpoint === undefined || !r.hasIp || !r.hasL4) return;
      this.replayed++;
      // The row's addresses only when an end is met first.
      const src = s.identity ??= this.byObject.get(s.endpoint) ?? this.identify(s.endpoint, row.ip!.source);
      const dst = d.identity ??= this.byObject.get(d.endpoint) ?? this.identify(d.endpoint, row.ip!.destination);
      const protocol = r.protocol & 0xff;
      const port = protocol === 6 || protocol === 17 || protocol === 132 ? r.destinationPort & 0xffff : 0;
      const self = sid === did || (s.pod >= 0 && s.pod === d.pod);
      const key = (self ? 0x1000000 : 0) + protocol * 0x10000 + port;
      if (batch.push(src.id, dst.id, key, r.packets, r.startMs, r.endMs)) this.tuples.addBatch(batch);
    });
    this.tuples.addBatch(batch);
  }

  private replayEnd(e: Endpoint | undefined): ReplayEnd {
    let pod = -1;
    if (e !== undefined && e.podName !== "") {
      const key = `${e.namespace}\u0000${e.podName}`;
      pod = this.pods.get(key) ?? this.pods.size;
      this.pods.set(key, pod);
    }
    const facts = storedEndOf(e);
    return { endpoint: e, serviceAddress: facts.serviceAddress, podOrService: facts.podOrService, pod, identity: undefined };
  }

  /** Today's pod whose named ports stand for a recorded pod's: the same name, else the same labels in its namespace. */
  private portSource(e: Endpoint): Pod | undefined {
    return this.today.get(`${e.namespace}/${e.podName}`) ?? this.todayByLabels.get(`${e.namespace}\u0001${labelsKey(e.labels)}`);
  }

  private identify(e: Endpoint, address: string): Identity {
    const kind = endpointKind(e);
    const ip = e.ip || address;
    const words = ipWords(ip);
    let blocks = "";
    if (words !== undefined) this.blocks.forEach((b, n) => { if (b.contains(words)) blocks += `${n},`; });
    let policyClass: string;
    if (kind === "pod") {
      const source = this.portSource(e);
      const ports = source === undefined ? "-" : JSON.stringify(source.spec.containers.flatMap((c) => c.ports.filter((p) => p.name !== "")));
      policyClass = `p\u0001${e.namespace}\u0001${labelsKey(this.selectedLabels(e.labels))}\u0001${ports}\u0001${blocks}`;
    } else {
      policyClass = `${kind}\u0001${blocks}`;
    }
    const node = mapNodeOf(e, ip);
    const content = `${policyClass}\u0002${node}`;
    let identity = this.byContent.get(content);
    if (identity === undefined) {
      let classId = this.classes.get(policyClass);
      if (classId === undefined) this.classes.set(policyClass, (classId = this.classes.size));
      identity = { id: this.identities.length, kind, endpoint: e, ip, node, classId };
      this.identities.push(identity);
      this.byContent.set(content, identity);
      if (kind === "pod" && this.portSource(e) === undefined) this.withoutPorts++;
    }
    this.byObject.set(e, identity);
    return identity;
  }

  /** The labels some selector names; the only ones that can change a verdict. */
  private selectedLabels(labels: Record<string, string>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const k of Object.keys(labels)) if (this.selectorKeys.has(k)) out[k] = labels[k]!;
    return out;
  }

  /**
   * The given tuples, in the order a Map of Maps by source identity, destination and key
   * gave them (source identity, then first sight of the pair, then first sight of the key),
   * so that merged edges list their deciding rules as they always did.
   */
  private groups(tuples: number[]): Group[] {
    const t = this.tuples;
    if (tuples.length === 0) return [];
    // First tuple of each (source, destination) pair: the table numbers tuples in order of first sight.
    const pairs = new TupleTable(), pairFirst: number[] = [];
    const pairOf = new Int32Array(t.size);
    for (let i = 0; i < t.size; i++) {
      const p = pairs.intern(t.srcOf(i), t.dstOf(i), 0);
      if (p < 0) pairFirst.push(i);
      pairOf[i] = pairFirst[p < 0 ? ~p : p]!;
    }
    const order = [...tuples].sort((a, b) => t.srcOf(a) - t.srcOf(b) || pairOf[a]! - pairOf[b]! || a - b);
    return order.map((i) => {
      const key = t.portOf(i);
      return { tuple: i, src: this.identities[t.srcOf(i)]!, dst: this.identities[t.dstOf(i)]!, protocol: (key >> 16) & 0xff, port: key & 0xffff, self: key >= 0x1000000,
        records: t.recordsOf(i), packets: t.packetsOf(i), firstMs: t.firstMsOf(i), lastMs: t.lastMsOf(i) };
    });
  }

  /** Evaluates every distinct tuple before and after (once per pair of policy classes), and returns the edges that change. */
  report(policies: ReplayPolicies, options: ReplayOptions = {}): WhatIfReport {
    const { objects, peerOf, twinOf, notes } = this.replayCluster();
    const modelOptions = { defaultMode: options.defaultMode ?? "observe" };
    const clusterBefore = policies.clusterBefore ?? [];
    const before = new PolicyModel({ ...objects, policies: policies.before, clusterNetworkPolicies: clusterBefore }, { ...modelOptions, policySet: new PolicySet(this.normalized) });
    const after = new PolicyModel({ ...objects, policies: policies.after, clusterNetworkPolicies: policies.clusterAfter ?? clusterBefore }, { ...modelOptions, policySet: new PolicySet(this.normalized) });
    // Whether a tuple changes is decided on the two allowed bits per side (class-verdicts.ts);
    // the model names the deciding rules only for the tuples that change.
    const fastBefore = new ClassVerdicts(before), fastAfter = new ClassVerdicts(after);
    const fast = fastBefore.exact && fastAfter.exact && options.reference !== true;
    const endsBefore = new ClassEnds(before, peerOf, twinOf), endsAfter = new ClassEnds(after, peerOf, twinOf);
    type Changed = { b: Verdict; a: Verdict; ob: Outcome; oa: Outcome };
    const judge = (src: Identity, dst: Identity, key: number): Changed | null => {
      const protocolNumber = (key >> 16) & 0xff, port = key & 0xffff;
      const twin = isTwin(src, dst, key);
      if (fast) {
        const protocol = protocolOf(protocolName(protocolNumber));
        const sb = endsBefore.of(src, false), db = endsBefore.of(dst, twin);
        const sa = endsAfter.of(src, false), da = endsAfter.of(dst, twin);
        const bits = fastBefore.sides(sb, db, protocol, port), abits = fastAfter.sides(sa, da, protocol, port);
        const ob = outcomeOfSides(before, (bits & EGRESS_ALLOWED) !== 0, sb.peer, (bits & INGRESS_ALLOWED) !== 0, db.peer, options.mode);
        const oa = outcomeOfSides(after, (abits & EGRESS_ALLOWED) !== 0, sa.peer, (abits & INGRESS_ALLOWED) !== 0, da.peer, options.mode);
        if (ob === oa && (bits === 3) === (abits === 3)) return null;
      }
      const from = peerOf(src), to = twin ? twinOf(dst) : peerOf(dst);
      const b = evaluate(before, from, to, protocolNumber, port), a = evaluate(after, from, to, protocolNumber, port);
      const ob = outcomeOf(before, b, options.mode), oa = outcomeOf(after, a, options.mode);
      return ob === oa && b.allowed === a.allowed ? null : { b, a, ob, oa };
    };
    // Judged once per (source class, destination class, self | protocol | port), in a table of keys.
    const t = this.tuples, classTuples = new TupleTable();
    const judged: (Changed | null)[] = [];
    const changedTuples: number[] = [], classOf = new Int32Array(t.size);
    for (let i = 0; i < t.size; i++) {
      const src = this.identities[t.srcOf(i)]!, dst = this.identities[t.dstOf(i)]!, key = t.portOf(i);
      let c = classTuples.intern(src.classId, dst.classId, key);
      if (c < 0) { c = ~c; judged.push(judge(src, dst, key)); }
      classOf[i] = c;
      if (judged[c] !== null) changedTuples.push(i);
    }
    const evaluated = judged.length;
    const edges = new Map<string, ChangedEdge>();
    for (const g of this.groups(changedTuples)) {
      const { b, a, ob, oa } = judged[classOf[g.tuple]!]!;
      const protocol = PROTOCOL_NAMES[g.protocol] ?? String(g.protocol);
      const key = `${g.src.node}\u0000${g.dst.node}\u0000${protocol}\u0000${g.port}\u0000${ob}\u0000${oa}\u0000${b.allowed}\u0000${a.allowed}`;
      let edge = edges.get(key);
      if (edge === undefined) {
        edge = {
          source: g.src.node, destination: g.dst.node, protocol, port: g.port, before: ob, after: oa,
          allowedBefore: b.allowed, allowedAfter: a.allowed, records: 0, packets: 0, firstSeenMs: g.firstMs, lastSeenMs: g.lastMs,
          egress: deciding(a.egress), ingress: deciding(a.ingress),
        };
        edges.set(key, edge);
      } else {
        mergeDeciding(edge.egress, deciding(a.egress));
        mergeDeciding(edge.ingress, deciding(a.ingress));
      }
      edge.records += g.records;
      edge.packets += g.packets;
      if (g.firstMs < edge.firstSeenMs) edge.firstSeenMs = g.firstMs;
      if (g.lastMs > edge.lastSeenMs) edge.lastSeenMs = g.lastMs;
    }
    // Ranks and names computed once per edge, not per comparison; the collator orders as localeCompare does.
    const keyed = [...edges.values()].map((e) => ({ e, rank: RANK_CHANGE(e), names: `${e.source} ${e.destination}` }));
    keyed.sort((x, y) => y.rank - x.rank || y.e.packets - x.e.packets || COLLATOR.compare(x.names, y.names) || x.e.port - y.e.port);
    const sorted = keyed.map((k) => k.e);
    // Records but nothing judged among them: say why, or a 0 reads as "the draft changes nothing".
    if (this.records > 0 && this.replayed === 0) {
      notes.push(`none of the ${this.records} records in range is the end that judged its connection (a connection to a pod or Service is judged at the destination pod's to-pod end, which the destination node's agent reports): nothing was replayed`);
    }
    return {
      edges: sorted,
      records: this.records,
      replayed: this.replayed,
      evaluated,
      breaks: sorted.some((e) => e.before !== "DROPPED" && e.after === "DROPPED"),
      notes,
    };
  }

  /**
   * Whether every replayed tuple would be forwarded with `policies` alone in force and every
   * namespace in enforce: what report({ before: [], after: policies }, { mode: "enforce" })
   * answers by listing no DROPPED edge (with nothing in force before, nothing is dropped
   * before). For the suggestion's check, which needs no model before, no outcomes and no
   * edges: each class tuple judged once on its two allowed bits, stopping at the first
   * denied; a denied pod side is what enforce drops (host and outside ends are not judged).
   */
  forwardsAll(policies: readonly NetworkPolicy[]): boolean {
    const { objects, peerOf, twinOf } = this.replayCluster();
    // No ClusterNetworkPolicy: class verdicts are exact.
    const model = new PolicyModel({ ...objects, policies, clusterNetworkPolicies: [] }, { defaultMode: "observe", policySet: new PolicySet(this.normalized) });
    const verdicts = new ClassVerdicts(model), ends = new ClassEnds(model, peerOf, twinOf);
    const t = this.tuples, classTuples = new TupleTable();
    for (let i = 0; i < t.size; i++) {
      const src = this.identities[t.srcOf(i)]!, dst = this.identities[t.dstOf(i)]!, key = t.portOf(i);
      if (classTuples.intern(src.classId, dst.classId, key) >= 0) continue;
      const protocol = protocolOf(protocolName((key >> 16) & 0xff));
      const bits = verdicts.sides(ends.of(src, false), ends.of(dst, isTwin(src, dst, key)), protocol, key & 0xffff);
      if (bits !== (EGRESS_ALLOWED | INGRESS_ALLOWED)) return false;
    }
    return true;
  }

  /**
   * The model's cluster: one pod per recorded pod class (its first end's namespace, labels
   * and address; named ports from today's pods), one node address per host class, today's
   * namespaces (plus bare ones for namespaces that are gone).
   */
  private replayCluster(): {
    objects: { namespaces: Namespace[]; pods: Pod[]; nodes: Node[] }; peerOf: (i: Identity) => Peer; twinOf: (i: Identity) => Peer; notes: string[];
  } {
    const namespaces = new Map<string, Namespace>();
    for (const ns of this.cluster.namespaces) namespaces.set(ns.metadata.name, ns);
    const pods: Pod[] = [];
    const nodes: Node[] = [];
    const peers: Peer[] = [];
    const twins: Peer[] = [];
    const goneNamespaces = new Set<string>();
    for (const i of this.identities) {
      if (peers[i.classId] !== undefined) continue;
      const e = i.endpoint;
      if (i.kind === "pod") {
        if (!namespaces.has(e.namespace)) {
          goneNamespaces.add(e.namespace);
          namespaces.set(e.namespace, { kind: "Namespace", apiVersion: "v1", metadata: meta(e.namespace, "", {}) });
        }
        const name = `${e.podName}.replay-${i.classId}`;
        for (const n of [name, `${name}.twin`]) {
          pods.push({
            kind: "Pod", apiVersion: "v1", metadata: meta(n, e.namespace, this.selectedLabels(e.labels)),
            spec: { nodeName: e.node, hostNetwork: false, containers: this.portSource(e)?.spec.containers ?? [] },
            status: { phase: "Running", podIP: i.ip, podIPs: [i.ip], hostIP: "" },
          });
        }
        peers[i.classId] = { pod: `${e.namespace}/${name}`, ip: i.ip };
        twins[i.classId] = { pod: `${e.namespace}/${name}.twin`, ip: i.ip };
      } else {
        if (i.kind === "host") {
          nodes.push({ kind: "Node", apiVersion: "v1", metadata: meta(`replay-${i.classId}`, "", {}), spec: { podCIDRs: [] },
            status: { addresses: [{ type: "InternalIP", address: i.ip }] } });
        }
        peers[i.classId] = { ip: i.ip };
      }
    }
    const notes = ["namespace labels and modes are today's (records do not carry them); pod labels, addresses and namespaces are the recorded ones"];
    if (goneNamespaces.size > 0) notes.push(`namespaces that no longer exist are judged with no labels but their name: ${[...goneNamespaces].sort().join(", ")}`);
    if (this.withoutPorts > 0) notes.push(`${this.withoutPorts} recorded pod identities have no pod of the same name or labels today: named ports match nothing for them`);
    return { objects: { namespaces: [...namespaces.values()], pods, nodes }, peerOf: (i) => peers[i.classId]!, twinOf: (i) => twins[i.classId]!, notes };
  }
}

/** Two pods of one class (not one pod with itself): the destination is the class's twin, so that the model does not take them for one pod. */
function isTwin(src: Identity, dst: Identity, key: number): boolean {
  return src.classId === dst.classId && key < 0x1000000 && dst.kind === "pod";
}

/** A model's resolved ends of the replay's classes (and of their twins), each resolved once. */
class ClassEnds {
  private readonly ends: ClassEnd[] = [];
  private readonly twins: ClassEnd[] = [];
  constructor(private readonly model: PolicyModel, private readonly peerOf: (i: Identity) => Peer, private readonly twinOf: (i: Identity) => Peer) {}

  of(i: Identity, twin: boolean): ClassEnd {
    const cache = twin ? this.twins : this.ends;
    return (cache[i.classId] ??= { classId: i.classId, peer: this.model.resolve(twin ? this.twinOf(i) : this.peerOf(i)) });
  }
}

function meta(name: string, namespace: string, labels: Record<string, string>) {
  return { name, namespace, uid: "", labels, annotations: {}, ownerReferences: [] };
}

function RANK_CHANGE(e: ChangedEdge): number {
  return e.before !== "DROPPED" && e.after === "DROPPED" ? 2 : e.before === "DROPPED" && e.after !== "DROPPED" ? 1 : 0;
}

function deciding(s: SideVerdict): DecidingSide {
  return { allowed: s.allowed, allowedBy: [...s.allowingRules], isolatedBy: [...s.isolatedBy], ...(s.exemption !== undefined ? { exemption: s.exemption } : {}) };
}

function mergeDeciding(into: DecidingSide, s: DecidingSide): void {
  for (const r of s.allowedBy) if (!into.allowedBy.includes(r)) into.allowedBy.push(r);
  for (const r of s.isolatedBy) if (!into.isolatedBy.includes(r)) into.isolatedBy.push(r);
}

/** A protocol as the model takes it: names for TCP, UDP, SCTP; other numbers match only rules without ports. */
function protocolName(protocol: number): "TCP" | "UDP" | "SCTP" | number {
  const name = PROTOCOL_NAMES[protocol];
  return name === "TCP" || name === "UDP" || name === "SCTP" ? name : protocol;
}

/** The model's verdict for any IANA protocol. */
function evaluate(model: PolicyModel, src: Peer, dst: Peer, protocol: number, port: number): Verdict {
  return model.evaluate({ src, dst, protocol: protocolName(protocol), port });
}
