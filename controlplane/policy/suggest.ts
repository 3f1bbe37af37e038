// `bulkhead policy suggest`: least-privilege NetworkPolicies for a namespace from the flows
// it was seen to need, each rule justified by those flows.
//
// What is learned: the judged observation of each connection (whatif.ts: TO_POD after
// Service DNAT, so a Service is resolved to its backends and their target port; FROM_POD
// to outside addresses) with an end in the namespace, and only what was FORWARDED (an
// AUDIT or DROPPED record is traffic the policies in force already refuse; the count of
// those left out is in the notes). Replies follow their connection and need no rule.
//
// What is suggested, per workload of the namespace seen in the history:
// - podSelector: the labels every recorded pod of the workload had, without per-rollout
//   labels (pod-template-hash, controller-revision-hash, …);
// - ingress and egress rules, one per peer: a pod peer as namespaceSelector
//   (kubernetes.io/metadata.name) + podSelector (its workload's stable labels); an outside
//   peer as the ipBlock of its address cut to the minimum prefix (/24, /64 by default);
//   ports as observed, by container-port name where the destination pod names it;
// - egress to DNS (pods labelled k8s-app=kube-dns in any namespace, 53/UDP and TCP);
// - annotations `bulkhead.io/justification`: per rule, the peer, ports, records, packets,
//   first and last seen.
// Plus `bulkhead-default-deny` isolating every pod of the namespace both ways (DNS egress
// allowed), so that traffic never observed — from workloads never seen, too — is denied.
// Host (node) peers need no rule: traffic between a pod and a node is always allowed.
// Protocols without ports (ICMP) cannot be allowed by port and are left out (noted).
//
// Checked on every suggestion: the learned flows replayed against it in enforce mode
// (FlowReplay) drop nothing; a violation is an error, never a silent suggestion. The check
// replays the learned tuples as summed here (FlowReplay.addJudged: each end identified
// once, not each record again) and asks only whether all are forwarded
// (FlowReplay.forwardsAll); the full what-if report names the edges when some are not.
//
// Learned from records (`add`: the durable store's) or from the hot window's columns
// (`addStored`: FlowHistory.scan's row view, no FlowRecord per row), summed the same way.
import type { Endpoint, FlowRecord, Layer3 } from "../../proto/gen/bulkhead/v1/flow.js";
import { Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { networkOf } from "../../addresses/ip.js";
import { parseKubeObject, type LabelSelector, type Namespace, type NetworkPolicy, type NetworkPolicyPeer, type NetworkPolicyPort, type Pod } from "../metadata/objects.js";
import { endpointWorkload } from "../store/filter.js";
import { newStoredRowNumbers, type FlowHistory, type HistoryQuery } from "../store/history.js";
import { NAMESPACE_NAME_LABEL } from "./model.js";
import { FlowReplay, isJudgedObservation, isJudgedRow, storedEndOf, type StoredEnd } from "./whatif.js";
import { TupleBatch, TupleTable } from "./tuple-table.js";

export const JUSTIFICATION_ANNOTATION = "bulkhead.io/justification";

/** Labels that change per rollout or per pod: never in a suggested selector. */
export const UNSTABLE_LABELS: readonly string[] = [
  "pod-template-hash", "controller-revision-hash", "pod-template-generation", "statefulset.kubernetes.io/pod-name",
  "apps.kubernetes.io/pod-index", "controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name",
  "batch.kubernetes.io/job-completion-index",
];

export interface SuggestOptions {
  namespace: string;
  /** Today's pods: named container ports of destinations, and the replay check. */
  cluster: { pods: readonly Pod[]; namespaces?: readonly Namespace[] };
  /** Outside addresses become ipBlocks of this prefix length (IPv4, default 24; IPv6, default 64). */
  minPrefixV4?: number;
  minPrefixV6?: number;
  /** The check judges every tuple with the model alone (whatif.ts `reference`): the benchmark's side-by-side reference. */
  reference?: boolean;
}

export interface RuleJustification {
  /** "ingress[0]" or "egress[1]". */
  rule: string;
  /** Map node id of the peer, or "dns". */
  peer: string;
  ports: string[];
  records: number;
  packets: number;
  firstSeen: string;
  lastSeen: string;
}

export interface Suggestion {
  policies: NetworkPolicy[];
  notes: string[];
  /** Records learned from (judged, forwarded, with an end in the namespace). */
  learned: number;
}

interface Usage { records: number; packets: number; firstMs: number; lastMs: number }

interface Workload {
  /** Dense, in order of first sight: rules are keyed by it. */
  index: number;
  /** "Kind/name". */
  id: string;
  namespace: string;
  name: string;
  /** Labels every recorded pod of it had (stable ones only), or undefined before the first. */
  labels: Record<string, string> | undefined;
  /** Rules by peer id. */
  ingress: Map<string, RuleAcc>;
  egress: Map<string, RuleAcc>;
}

interface EndInfo {
  /** Dense, in order of first sight: tuples are keyed by it. */
  id: number;
  endpoint: Endpoint;
  /** The record's address for this end in the first tuple learned with it (what the check replays it with). */
  replayAddress: string | undefined;
  /** Its workload, for a pod. */
  workload: Workload | undefined;
  /** How a rule names it; undefined for a host or a Service address. */
  peer: PeerSpec | undefined;
  peerId: string;
  /** Dense per distinct peerId (-1: none): rules are keyed by it. */
  peerIndex: number;
  /** Port (protocol << 16 | port) → its container-port name, or the number. */
  portNames: Map<number, number | string>;
}

/** An end of a history scan's rows (by dictionary id): what judging a row needs, and its EndInfo once learned from. */
interface StoredSuggestEnd extends StoredEnd {
  /** A pod of the namespace. */
  inNamespace: boolean;
  info: EndInfo | undefined;
}

type PeerSpec = { kind: "pod"; workload: Workload } | { kind: "cidr"; cidr: string };

interface RuleAcc {
  peerId: string;
  peer: PeerSpec;
  /** By protocol << 16 | port: the port as the rule names it, and its text ("TCP/80", "TCP/http"). */
  ports: Map<number, { protocol: string; port: number | string; text: string }>;
  usage: Usage;
}

/** The protocols with ports, by number (a switch: the per-record path). */
function portProtocol(protocol: number): string | undefined {
  switch (protocol) {
    case 6: return "TCP";
    case 17: return "UDP";
    case 132: return "SCTP";
    default: return undefined;
  }
}
/** String.prototype.localeCompare's order (the same default collator), without building a collator per comparison. */
const COLLATOR = new Intl.Collator();

function ms(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts === undefined ? 0 : Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6);
}

/** Collects the namespace's forwarded traffic; `suggest` turns it into policies. */
export class PolicySuggester {
  private readonly workloads = new Map<string, Workload>();
  private readonly peerIndexes = new Map<string, number>();
  private readonly ends = new WeakMap<Endpoint, EndInfo>();
  /** Every end seen, by id. */
  private readonly endList: EndInfo[] = [];
  /** Learned records summed per tuple (ends by id); turned into rules once per tuple in suggest(). */
  private readonly table = new TupleTable();
  /**
   * Learned records waiting to be summed into `table` (TupleTable.addBatch: their cache misses
   * overlap), with what a row that makes a new tuple needs then; summed before the table is read.
   */
  private readonly batch = new TupleBatch();
  // Addresses as strings: addStored's row (and its ip) is the scan's, reused for the next row.
  private readonly batchRows: { dst: EndInfo; d: Endpoint; source: string | undefined; destination: string | undefined; sides: number }[] = [];
  /**
   * By tuple index, in arrays rather than an object per tuple (100,000s of them; the
   * collector's work): the port as rules name it; 1 egress | 2 ingress learned | 4 replayed
   * by the check (its first record has addresses, as FlowReplay.add requires).
   */
  private readonly tuplePort: (number | string)[] = [];
  private readonly tupleSides: number[] = [];
  private learnedCount = 0;
  private readonly todayPods = new Map<string, Pod>();
  private notLearned = 0;
  private portless = 0;
  private readonly v4: number;
  private readonly v6: number;

  constructor(private readonly options: SuggestOptions) {
    this.v4 = options.minPrefixV4 ?? 24;
    this.v6 = options.minPrefixV6 ?? 64;
    for (const p of options.cluster.pods) this.todayPods.set(`${p.metadata.namespace}/${p.metadata.name}`, p);
  }

  add(r: FlowRecord): void {
    const sides = this.sidesOf(r);
    if (sides === 0) return;
    // sidesOf saw source, destination and l4 present.
    const d = r.destination!, l4 = r.l4!, ip = r.ip;
    this.learn(this.endOf(r.source!, ip?.source ?? ""), this.endOf(d, ip?.destination ?? ""), d, sides, ip, l4.protocol, l4.destinationPort,
      Number(r.packets), ms(r.startTime), ms(r.endTime));
  }

  /**
   * Learns from the history's records that `query` selects, as add() would one by one in
   * query() order, read from its columns (FlowHistory.scan): no FlowRecord, BigInt or
   * Timestamp per record, and each end found by its dictionary id in an array instead of a
   * WeakMap. Returns the number of records read.
   */
  addStored(history: FlowHistory, query: HistoryQuery = {}): number {
    // Endpoint dictionary ids are reused once no row holds them: valid for this scan only.
    const ends: (StoredSuggestEnd | undefined)[] = [];
    let rows = 0;
    const numbers = newStoredRowNumbers();
    history.scan(query, (row) => {
      rows++;
      const r = row.readNumbers(numbers);
      const s = ends[r.sourceId] ??= this.storedEnd(row.source), d = ends[r.destinationId] ??= this.storedEnd(row.destination);
      if (!isJudgedRow(r, s, d) || s.endpoint === undefined || d.endpoint === undefined || !r.hasL4) return;
      const sides = this.learnable((s.inNamespace ? 1 : 0) | (d.inNamespace ? 2 : 0), r.verdict, r.protocol);
      if (sides === 0) return;
      const ip = row.ip;
      const src = s.info ??= this.endOf(s.endpoint, ip?.source ?? "");
      const dst = d.info ??= this.endOf(d.endpoint, ip?.destination ?? "");
      this.learn(src, dst, d.endpoint, sides, ip, r.protocol, r.destinationPort, r.packets, r.startMs, r.endMs);
    });
    return rows;
  }

  private storedEnd(e: Endpoint | undefined): StoredSuggestEnd {
    const facts = storedEndOf(e);
    return { endpoint: e, serviceAddress: facts.serviceAddress, podOrService: facts.podOrService, inNamespace: e !== undefined && this.inNamespace(e), info: undefined };
  }

  private inNamespace(e: Endpoint): boolean {
    return e.podName !== "" && e.namespace === this.options.namespace;
  }

  /**
   * The opening of add(), per record: 0 when it is not learned from (not a judged
   * observation, an end or l4 missing, neither end a pod of the namespace; not FORWARDED, or
   * a protocol without ports, both counted for the notes), else 1 when the source is a pod
   * of the namespace | 2 when the destination is.
   */
  private sidesOf(r: FlowRecord): number {
    if (!isJudgedObservation(r)) return 0;
    const s = r.source, d = r.destination, l4 = r.l4;
    if (s === undefined || d === undefined || l4 === undefined) return 0;
    return this.learnable((this.inNamespace(s) ? 1 : 0) | (this.inNamespace(d) ? 2 : 0), r.verdict, l4.protocol);
  }

  /** What add() and addStored() share: the sides of a judged record with both ends and l4, or 0 (counted for the notes). */
  private learnable(sides: number, verdict: number, protocol: number): number {
    if (sides === 0) return 0;
    if (verdict !== Verdict.VERDICT_FORWARDED) { this.notLearned++; return 0; }
    if (portProtocol(protocol) === undefined) { this.portless++; return 0; }
    return sides;
  }

  /** Sums a learned record into its tuple (ends by id); a new tuple gets its port's name and the sides it makes rules for. */
  private learn(src: EndInfo, dst: EndInfo, d: Endpoint, sides: number, ip: Layer3 | undefined, protocolNumber: number, destinationPort: number,
    packets: number, startMs: number, endMs: number): void {
    const egress = (sides & 1) !== 0 && src.workload !== undefined && dst.peer !== undefined;
    const ingress = (sides & 2) !== 0 && dst.workload !== undefined && src.peer !== undefined;
    if (!egress && !ingress) return;
    this.learnedCount++;
    // Bitwise, so that the key stays a small integer.
    const portKey = ((protocolNumber & 0xff) << 16) | (destinationPort & 0xffff);
    const row = this.batch.length, sidesOut = (egress ? 1 : 0) | (ingress ? 2 : 0) | (ip !== undefined ? 4 : 0);
    const slot = this.batchRows[row], source = ip?.source, destination = ip?.destination;
    if (slot === undefined) this.batchRows.push({ dst, d, source, destination, sides: sidesOut });
    else { slot.dst = dst; slot.d = d; slot.source = source; slot.destination = destination; slot.sides = sidesOut; }
    if (this.batch.push(src.id, dst.id, portKey, packets, startMs, endMs)) this.sumBatch();
  }

  /** Sums the waiting rows; a row that made a new tuple gives it its port's name and the sides it makes rules for, in row order (tuple order). */
  private sumBatch(): void {
    const n = this.batch.length;
    if (n === 0) return;
    const b = this.batch, result = this.table.addBatch(b);
    for (let i = 0; i < n; i++) {
      if (result[i]! >= 0) continue;
      const { dst, d, source, destination, sides } = this.batchRows[i]!, src = this.endList[b.src[i]!]!, portKey = b.port[i]!;
      let port = dst.portNames.get(portKey);
      if (port === undefined) dst.portNames.set(portKey, (port = this.portName(d, portProtocol(portKey >> 16)!, portKey & 0xffff)));
      this.tuplePort.push(port);
      // The check replays each end with the address of the first tuple it was learned in, as a replay of these records would.
      if (source !== undefined) {
        src.replayAddress ??= source;
        dst.replayAddress ??= destination;
      }
      this.tupleSides.push(sides);
    }
  }

  addAll(records: Iterable<FlowRecord>): void {
    for (const r of records) this.add(r);
  }

  /** What an end is to the suggestion, once per Endpoint object (the enricher and the stores share them). */
  private endOf(e: Endpoint, address: string): EndInfo {
    let info = this.ends.get(e);
    if (info !== undefined) return info;
    const workload = e.podName !== "" ? this.workloadOf(e) : undefined;
    let peer: PeerSpec | undefined;
    if (workload !== undefined) peer = { kind: "pod", workload };
    else if (e.world || (e.node === "" && e.service === "")) {
      // Hosts need no rule (always allowed); Service addresses are judged at their backends.
      const cidr = networkOf(e.ip || address, this.v4, this.v6);
      if (cidr !== undefined) peer = { kind: "cidr", cidr };
    }
    const peerId = peer === undefined ? "" : peer.kind === "pod" ? `workload:${peer.workload.namespace}/${peer.workload.id}` : `ipBlock:${peer.cidr}`;
    let peerIndex = -1;
    if (peer !== undefined) {
      peerIndex = this.peerIndexes.get(peerId) ?? this.peerIndexes.size;
      this.peerIndexes.set(peerId, peerIndex);
    }
    info = { id: this.endList.length, endpoint: e, replayAddress: undefined, workload, peer, peerId, peerIndex, portNames: new Map() };
    this.endList.push(info);
    this.ends.set(e, info);
    return info;
  }

  /** The destination's container port name for this port, when today's pod of that name has one. */
  private portName(d: Endpoint, protocol: string, port: number): number | string {
    const pod = d.podName === "" ? undefined : this.todayPods.get(`${d.namespace}/${d.podName}`);
    for (const c of pod?.spec.containers ?? []) for (const p of c.ports) if (p.name !== "" && p.containerPort === port && p.protocol === protocol) return p.name;
    return port;
  }

  private workloadOf(e: Endpoint): Workload {
    const w = endpointWorkload(e) ?? { kind: "Pod", name: e.podName };
    const key = `${e.namespace}/${w.kind}/${w.name}`;
    let workload = this.workloads.get(key);
    if (workload === undefined) {
      this.workloads.set(key, (workload = { index: this.workloads.size, id: `${w.kind}/${w.name}`, namespace: e.namespace, name: w.name, labels: undefined, ingress: new Map(), egress: new Map() }));
    }
    const stable = Object.fromEntries(Object.entries(e.labels).filter(([k]) => !UNSTABLE_LABELS.includes(k)));
    if (workload.labels === undefined) workload.labels = stable;
    else for (const [k, v] of Object.entries(workload.labels)) if (stable[k] !== v) delete workload.labels[k];
    return workload;
  }

  /**
   * Adds a tuple's sums to the rule of `subject` for `peer` in a direction (0 egress, 1
   * ingress), found in `rules` by integers (workload, peer index, direction) rather than
   * by the peer's text per tuple; a port joins the rule the first time it is seen for it.
   */
  private addRule(rules: { keys: TupleTable; accs: RuleAcc[]; ports: TupleTable }, subject: Workload, direction: number, peer: EndInfo,
    protocol: string, portKey: number, port: number | string, t: number): void {
    const table = this.table;
    let r = rules.keys.intern(subject.index, peer.peerIndex * 2 + direction, 0);
    if (r < 0) {
      r = ~r;
      const acc: RuleAcc = { peerId: peer.peerId, peer: peer.peer!, ports: new Map(), usage: { records: 0, packets: 0, firstMs: table.firstMsOf(t), lastMs: table.lastMsOf(t) } };
      rules.accs.push(acc);
      (direction === 0 ? subject.egress : subject.ingress).set(peer.peerId, acc);
    }
    const acc = rules.accs[r]!;
    if (rules.ports.intern(r, portKey, 0) < 0) acc.ports.set(portKey, { protocol, port, text: `${protocol}/${port}` });
    const u = acc.usage;
    u.records += table.recordsOf(t);
    u.packets += table.packetsOf(t);
    if (table.firstMsOf(t) < u.firstMs) u.firstMs = table.firstMsOf(t);
    if (table.lastMsOf(t) > u.lastMs) u.lastMs = table.lastMsOf(t);
  }

  suggest(): Suggestion {
    this.sumBatch();
    for (const w of this.workloads.values()) { w.ingress.clear(); w.egress.clear(); }
    const table = this.table;
    const rules = { keys: new TupleTable(), accs: [], ports: new TupleTable() };
    for (let t = 0; t < table.size; t++) {
      const src = this.endList[table.srcOf(t)]!, dst = this.endList[table.dstOf(t)]!, sides = this.tupleSides[t]!;
      const portKey = table.portOf(t), protocol = portProtocol(portKey >> 16)!, port = this.tuplePort[t]!;
      if ((sides & 1) !== 0) this.addRule(rules, src.workload!, 0, dst, protocol, portKey, port, t);
      if ((sides & 2) !== 0) this.addRule(rules, dst.workload!, 1, src, protocol, portKey, port, t);
    }
    const ns = this.options.namespace;
    const notes: string[] = [];
    const policies: NetworkPolicy[] = [];
    const dnsRule = { to: [{ namespaceSelector: {}, podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }], ports: [{ protocol: "UDP", port: 53 }, { protocol: "TCP", port: 53 }] };
    policies.push(parse({
      apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
      metadata: { name: "bulkhead-default-deny", namespace: ns, annotations: { [JUSTIFICATION_ANNOTATION]: JSON.stringify([{ rule: "egress[0]", peer: "dns", ports: ["UDP/53", "TCP/53"], records: 0, packets: 0, firstSeen: "", lastSeen: "" }]) } },
      spec: { podSelector: {}, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [dnsRule] },
    }));
    const subjects = [...this.workloads.values()].filter((w) => w.namespace === ns).sort((a, b) => COLLATOR.compare(a.id, b.id));
    // Rules are listed in the collator's order of their peer ids, and a rule's ports in that
    // of their texts: each distinct text ranked once, not compared per rule per workload.
    const peerRank = collatorRanks(this.peerIndexes.keys());
    const portTexts = new Set<string>();
    for (const w of subjects) for (const acc of [...w.ingress.values(), ...w.egress.values()]) for (const p of acc.ports.values()) portTexts.add(p.text);
    const portRank = collatorRanks(portTexts);
    // Typed as they are built, not written out and parsed whole (25,000 rules for 100 workloads):
    // each policy's frame (name, annotations, podSelector, DNS), each distinct peer and each
    // distinct port goes through the parser once, so its checks still apply, and rules share them.
    const peers = new Map<string, NetworkPolicyPeer>(), ports = new Map<string, NetworkPolicyPort>();
    const parsedPeer = (acc: RuleAcc): NetworkPolicyPeer => {
      let peer = peers.get(acc.peerId);
      if (peer === undefined) {
        peer = parsePart(ns, `peer ${acc.peerId}`, acc.peer.kind === "cidr" ? { ipBlock: { cidr: acc.peer.cidr } }
          : { namespaceSelector: { matchLabels: { [NAMESPACE_NAME_LABEL]: acc.peer.workload.namespace } }, podSelector: { matchLabels: { ...acc.peer.workload.labels } } }, undefined).from[0]!;
        peers.set(acc.peerId, peer);
      }
      return peer;
    };
    const parsedPort = (p: { protocol: string; port: number | string; text: string }): NetworkPolicyPort => {
      let parsed = ports.get(p.text);
      if (parsed === undefined) ports.set(p.text, (parsed = parsePart(ns, `port ${p.text}`, undefined, { protocol: p.protocol, port: p.port }).ports[0]!));
      return parsed;
    };
    // One ports list per distinct set of ports (a few dozen), shared by the rules that have it, not one per rule.
    const portSets = new Map<string, NetworkPolicyPort[]>();
    const portSet = (named: { protocol: string; port: number | string; text: string }[]): NetworkPolicyPort[] => {
      const key = named.map((n) => n.text).join(" ");
      let set = portSets.get(key);
      if (set === undefined) portSets.set(key, (set = named.map(parsedPort)));
      return set;
    };
    for (const w of subjects) {
      const labels = w.labels ?? {};
      if (Object.keys(labels).length === 0) {
        notes.push(`${ns}/${w.id}: its pods share no stable label, so no policy can select it alone; it keeps only the default deny (and DNS)`);
        continue;
      }
      const justification: RuleJustification[] = [];
      const rulesOf = (accs: Map<string, RuleAcc> | undefined, direction: "ingress" | "egress") =>
        [...(accs?.values() ?? [])].sort((a, b) => peerRank.get(a.peerId)! - peerRank.get(b.peerId)!).map((acc, i) => {
          const named = [...acc.ports.values()].sort((a, b) => portRank.get(a.text)! - portRank.get(b.text)!);
          justification.push({ rule: `${direction}[${i}]`, peer: acc.peerId, ports: named.map((n) => n.text), records: acc.usage.records,
            packets: acc.usage.packets, firstSeen: new Date(acc.usage.firstMs).toISOString(), lastSeen: new Date(acc.usage.lastMs).toISOString() });
          return { peers: [parsedPeer(acc)], ports: portSet(named) };
        });
      const ingress = rulesOf(w.ingress, "ingress").map((r) => ({ from: r.peers, ports: r.ports }));
      const egress = rulesOf(w.egress, "egress").map((r) => ({ to: r.peers, ports: r.ports }));
      for (const acc of [...w.ingress.values(), ...w.egress.values()]) {
        if (acc.peer.kind === "pod" && Object.keys(acc.peer.workload.labels ?? {}).length === 0) {
          notes.push(`${ns}/${w.id}: peer ${acc.peerId} shares no stable label: the rule admits every pod of its namespace`);
        }
      }
      const policy = parse({
        apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
        metadata: { name: `bulkhead-${w.name}`.slice(0, 253), namespace: ns, annotations: { [JUSTIFICATION_ANNOTATION]: JSON.stringify(justification) } },
        spec: { podSelector: { matchLabels: labels }, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [dnsRule] },
      });
      policy.spec.ingress = ingress;
      policy.spec.egress = [...egress, ...policy.spec.egress];
      policies.push(policy);
    }
    if (this.notLearned > 0) notes.push(`${this.notLearned} records dropped or audited by the policies in force were not learned from`);
    if (this.portless > 0) notes.push(`${this.portless} records of protocols without ports (ICMP) cannot be allowed by a port rule and were left out`);
    this.check(policies);
    return { policies, notes, learned: this.learnedCount };
  }

  /** The guarantee: the learned flows, replayed against the suggestion alone in enforce mode, are all forwarded. */
  private check(policies: NetworkPolicy[]): void {
    const cluster = { namespaces: this.options.cluster.namespaces ?? [], pods: this.options.cluster.pods };
    const replay = new FlowReplay(cluster, policies);
    const t = this.table;
    for (let i = 0; i < t.size; i++) {
      if ((this.tupleSides[i]! & 4) === 0) continue;
      const src = this.endList[t.srcOf(i)]!, dst = this.endList[t.dstOf(i)]!, portKey = t.portOf(i);
      replay.addJudged(src.endpoint, src.replayAddress!, dst.endpoint, dst.replayAddress!, portKey >> 16, portKey & 0xffff,
        t.recordsOf(i), t.packetsOf(i), t.firstMsOf(i), t.lastMsOf(i));
    }
    // The quick answer first; the report (the model names what breaks) only when something would.
    if (this.options.reference !== true && replay.forwardsAll(policies)) return;
    const report = replay.report({ before: [], after: policies }, { mode: "enforce", reference: this.options.reference === true });
    const broken = report.edges.filter((e) => e.after === "DROPPED");
    if (broken.length > 0) {
      throw new Error(`suggestion check failed: it would drop ${broken.length} observed edges, e.g. ${broken[0]!.source} → ${broken[0]!.destination} ${broken[0]!.protocol}/${broken[0]!.port}`);
    }
  }
}

/**
 * Each text's rank in the collator's order; texts the collator finds equal share a rank, so
 * that a stable sort by rank keeps them in the order a sort by COLLATOR.compare would.
 */
function collatorRanks(texts: Iterable<string>): Map<string, number> {
  const ranks = new Map<string, number>();
  let previous: string | undefined, rank = -1;
  for (const text of [...texts].sort(COLLATOR.compare)) {
    if (previous === undefined || COLLATOR.compare(previous, text) !== 0) rank++;
    ranks.set(text, rank);
    previous = text;
  }
  return ranks;
}

function parse(doc: Record<string, unknown>): NetworkPolicy {
  return parseKubeObject(doc) as NetworkPolicy;
}

/** One peer or one port of a suggested rule (`what`, for errors), parsed as the parser reads it in a policy (its checks, its defaults). */
function parsePart(namespace: string, what: string, peer: Record<string, unknown> | undefined, port: Record<string, unknown> | undefined):
  { from: NetworkPolicyPeer[]; ports: NetworkPolicyPort[] } {
  try {
    return parse({
      apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name: "bulkhead-part", namespace },
      spec: { podSelector: {}, ingress: [{ ...(peer !== undefined ? { from: [peer] } : {}), ...(port !== undefined ? { ports: [port] } : {}) }] },
    }).spec.ingress[0]!;
  } catch (err) {
    throw new Error(`suggested ${what} is not a valid NetworkPolicy part: ${(err as Error).message}`);
  }
}

export function suggestPolicies(records: Iterable<FlowRecord>, options: SuggestOptions): Suggestion {
  const s = new PolicySuggester(options);
  s.addAll(records);
  return s.suggest();
}

/** A policy as a Kubernetes manifest (what `kubectl apply` takes): empty fields left out. */
export function policyManifest(p: NetworkPolicy): Record<string, unknown> {
  const selector = (s: LabelSelector) => ({
    ...(Object.keys(s.matchLabels).length > 0 ? { matchLabels: s.matchLabels } : {}),
    ...(s.matchExpressions.length > 0 ? { matchExpressions: s.matchExpressions } : {}),
  });
  const peer = (x: NetworkPolicyPeer) => x.ipBlock !== undefined
    ? { ipBlock: { cidr: x.ipBlock.cidr, ...(x.ipBlock.except.length > 0 ? { except: x.ipBlock.except } : {}) } }
    : { ...(x.namespaceSelector !== undefined ? { namespaceSelector: selector(x.namespaceSelector) } : {}), ...(x.podSelector !== undefined ? { podSelector: selector(x.podSelector) } : {}) };
  const rule = (peers: NetworkPolicyPeer[], ports: NetworkPolicyPort[], field: "from" | "to") => ({
    ...(peers.length > 0 ? { [field]: peers.map(peer) } : {}), ...(ports.length > 0 ? { ports } : {}),
  });
  const m = p.metadata;
  return {
    apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy",
    metadata: { name: m.name, namespace: m.namespace, ...(Object.keys(m.annotations).length > 0 ? { annotations: m.annotations } : {}) },
    spec: {
      podSelector: selector(p.spec.podSelector), policyTypes: p.spec.policyTypes,
      ingress: p.spec.ingress.map((r) => rule(r.from, r.ports, "from")), egress: p.spec.egress.map((r) => rule(r.to, r.ports, "to")),
    },
  };
}
