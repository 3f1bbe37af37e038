// Live flow maps: which workloads, Services, hosts and outside addresses talk to which,
// over sliding windows up to an hour, per namespace.
//
// COUNTING RULE: every packet counts once.
//  1. The same packets are usually observed twice: leaving the sender's veth (FROM_POD)
//     and entering the receiver's (TO_POD), on one node or two. A record adds to the
//     volume (flows, packets, bytes) only at its counting observation: FROM_POD always
//     counts; TO_POD counts only when the sender is not a pod and not a Service address,
//     i.e. the packets came from outside or from a host and have no FROM_POD record.
//     (A Service address as sender appears on replies at the client's TO_POD after
//     reverse NAT; the backend pod's FROM_POD record already counted those packets.)
//     The rule looks at one record only, so it holds whatever order records arrive in.
//  2. Verdicts: enforcement may happen at either end, so DROPPED and AUDIT records count
//     towards `dropped` / `audit` at both observations. Per edge and time bucket the two
//     observations of the same packets are merged with max(), not added: dropped =
//     max(dropped at the counting point, dropped at the other point), same for audit.
//     `forwarded` = packets - dropped - audit (never below 0). The three are packets.
//  3. Edges point from the connection's client to its server, and `port` is the server
//     port, so a request and its replies are one edge and one flow. Which end is the
//     client: the end sending to a Service address; for TCP a record with SYN and no ACK;
//     ICMP echo/timestamp/info replies are replies; otherwise the lower port is the
//     server's (clients use ephemeral ports, 32768 and up). The port heuristic can be
//     wrong (a server on 50051 and a client on 40000); that only turns the edge around,
//     it never counts twice, because rule 1 picks one observation per packet without
//     looking at orientation. Records do not say which end opened the connection; if the
//     agent ever reports conntrack's direction, use it here instead.
//  4. Service traffic: the ClusterIP is visible only at the client's veth. Requests count
//     on client -> service:<ns>/<name> (the client's FROM_POD, port = Service port).
//     Replies leave the backend pod addressed to the client and count on client ->
//     backend workload (port = target port). Together the two edges show who called the
//     Service and which workload answered. The backend's TO_POD record of a request (sender
//     = client pod) does not count, but if it is DROPPED or AUDIT it marks client ->
//     backend workload: NetworkPolicy judges the packet after DNAT.
//  5. `flows` = distinct 5-tuples (client ip, server ip, protocol, client port, server
//     port) among counted records whose last bucket lies in the window, tracked per edge
//     by a 30-bit hash (collisions may merge a few tuples on huge edges).
//  6. CARDINALITY: a port scan, or a public service with many clients, would otherwise
//     make one edge per outside address and port for an hour. Edges are budgeted per
//     namespace (an edge counts towards each namespace of its ends; host and outside ends
//     alone towards "") and in all. While a namespace and the store are below half their
//     budget, an outside peer (world or unknown) is itself; from half, a NEW edge names
//     its outside peer by prefix ("world:203.0.113.0/24", /48 for IPv6); past the budget, a
//     new edge goes to "world:other" (or "unknown:other") with port 0. Edges that exist go
//     on as they are. Volume is never dropped: every record still adds to exactly one edge,
//     so totals stay exact and "other" holds exactly what did not fit (stats.prefixRecords,
//     stats.otherRecords). In-cluster edges are bounded by workloads and ports, and kept.
//
// Time: records go into buckets by end time. Fine buckets (5 s, kept 5 min) serve windows
// up to 5 min; coarse buckets (1 min, kept 1 h) serve longer ones. A record adds to its fine
// bucket only (to its coarse one when older than the fine window); a fine bucket leaving
// the fine window is folded into its coarse bucket, and a longer window sums each minute's
// coarse bucket with that minute's fine buckets not folded yet. A window covers the
// buckets that overlap [now - window, now], so `since` is the first bucket's start.
// Records older than the retention are counted in stats.late and otherwise ignored.
//
// Map node ids: "workload:<ns>/<Kind>/<name>" (a pod without owner is Kind Pod, name =
// pod), "service:<ns>/<name>", "world:<ip>", "host:<node>", and "unknown:<ip>" for an
// address the enricher could not resolve (treated as outside for rule 1).

import type { Endpoint, FlowRecord, TcpFlags } from "../../proto/gen/bulkhead/v1/flow.js";
import { ObservationPoint, Verdict } from "../../proto/gen/bulkhead/v1/flow.js";
import { MapNodeKind, type GetFlowMapResponse, type MapEdge, type MapNode } from "../../proto/gen/bulkhead/v1/observer.js";
import { endpointWorkload } from "./filter.js";
import { networkOf } from "../../addresses/ip.js";
import type { EnrichedColumns } from "./enriched-columns.js";
import { hashTriple, TripleKeyTable } from "../triple-key-table.js";
import { PROTOCOL_NAMES } from "../../flowcolumns/columns.js";
import { msOfTimestamp, timestampOfMs } from "../../config/time.js";
import { HintSlots } from "./hint-slots.js";
import {
  B_AUDIT_COUNTED, B_AUDIT_OTHER, B_BUCKET, B_BYTES, B_DROP_COUNTED, B_DROP_OTHER, B_FIRST_MS, B_LAST_MS, B_PACKETS, BucketLists,
} from "./bucket-lists.js";

export interface FlowMapOptions {
  /** Wall clock in milliseconds; injectable for tests. */
  now?: () => number;
  /** Default 5 s. */
  fineBucketMs?: number;
  /** Longest window served from fine buckets; default 5 min. */
  fineWindowMs?: number;
  /** Default 1 min; a multiple of fineBucketMs. */
  coarseBucketMs?: number;
  /** Longest window; default 1 h. */
  retentionMs?: number;
  /** Distinct 5-tuples tracked for `flows` across all edges; default 1,000,000. */
  maxTrackedFlows?: number;
  /** Edge removals remembered for changesSince(); default 10,000. */
  maxRemovalLog?: number;
  /** Edges with an end in one namespace (rule 6); default 20,000. */
  maxEdgesPerNamespace?: number;
  /** Edges in all (rule 6); default 500,000. */
  maxEdges?: number;
}

export interface FlowMapQuery {
  /** Only this namespace's workloads and Services, and every peer that talks to them. Empty: all. */
  namespace?: string;
  /** Default 5 minutes; at most the retention. */
  windowMs?: number;
}

export interface EdgeKey {
  source: string;
  destination: string;
  protocol: string;
  port: number;
}

export interface FlowMapChanges {
  /** Pass this to the next changesSince(). */
  version: number;
  /**
   * True when the changes since the given version are no longer known (too old, or from
   * another process): nodes and edges then hold the whole map, to replace the client's.
   */
  resync: boolean;
  /** Edges that received records since the version, with their totals over the window. */
  edges: MapEdge[];
  /** The ends of those edges. */
  nodes: MapNode[];
  /** Edges whose last bucket expired since the version. */
  removed: EdgeKey[];
}

export interface FlowMapStats {
  /** Records given to add(). */
  records: number;
  /** Records that added volume (rule 1). */
  counted: number;
  /** Records at the other observation that added only a DROPPED/AUDIT verdict. */
  verdictOnly: number;
  /** Forwarded records at the other observation: the same packets as a counted record. */
  duplicates: number;
  /** Records whose end time was older than the retention when they arrived. */
  late: number;
  /** Records without a start or end time. */
  untimed: number;
  /** 5-tuples not tracked for `flows` because maxTrackedFlows was reached. */
  untrackedFlows: number;
  /** Records added to an edge whose outside peer is a prefix (rule 6). */
  prefixRecords: number;
  /** Records added to an edge to "other" (rule 6). */
  otherRecords: number;
  edges: number;
  nodes: number;
}

interface MapNodeState {
  id: string;
  kind: MapNodeKind;
  namespace: string;
  name: string;
  workloadKind: string;
  /** FlowMapStore's number for an identity it keeps per endpoint (keys of its edge cache); 0: none. */
  serial: number;
  /** Pod (uid, or name) -> last fine bucket it was seen in. */
  pods: Map<string, number>;
  edges: number;
  /** This node's number, never reused: what NodeIdentity.seenIn names. */
  number: number;
}

/** What a map node is, as named from one record's end. */
type NodeName = Omit<MapNodeState, "pods" | "edges" | "number">;

/**
 * A record's end as the map names it, with what seePod last wrote for its pod: its node's
 * `pods` holds the pod at `seenFine` or later (entries only grow until they expire, and an
 * expired one is older than any record not late), so rows of a pod whose identity is kept
 * (one per shared Endpoint object) skip the Map while the bucket is the same.
 */
interface NodeIdentity extends NodeName {
  /** MapNodeState.number of the node seePod last wrote this pod to; 0: none. */
  seenIn: number;
  seenFine: number;
}

// An edge holds no string key, bucket arrays or namespace list of its own (at 1M stored
// those were ~70 % of the map's heap): it is found by its nodes' numbers and port in a
// typed-array table, its key and namespaces follow from its nodes, and its buckets are
// lists in the map's BucketLists (fine: 2 * index, coarse: 2 * index + 1).
interface EdgeState {
  /** Its slot in FlowMapStore.edgeSlots, and so its bucket lists; reused after it is removed. */
  index: number;
  source: MapNodeState;
  destination: MapNodeState;
  protocol: string;
  port: number;
  /** The next edge with the same ends and port (another protocol): edgeTable keys those three only. */
  sameKey: EdgeState | undefined;
}

/**
 * How an edge's outside peer is named (rule 6): exactly (in-cluster edges too), by its
 * /24 or /48, or as "other".
 */
const PEER_EXACT = 0, PEER_PREFIX = 1, PEER_OTHER = 2;
type PeerLevel = typeof PEER_EXACT | typeof PEER_PREFIX | typeof PEER_OTHER;

/**
 * What each row reads and writes of its edge, in FlowMapStore.edgeHot by edge index (one
 * 64-byte record an edge), so that a row whose edge the cache finds never reads its
 * EdgeState: that object's first read was the per-row path's largest single cost (a cache
 * miss). H_VERSION: the map version it last changed in. H_FLOW_HASH, H_FLOW_LAST: its first
 * tracked 5-tuple's hash (-1: none) and the last fine bucket it was counted in; the others
 * in edgeFlows, made only for an edge with a second flow (most edges to outside peers carry
 * one). H_PEER: its PeerLevel. H_SOURCE_WORKLOAD, H_DESTINATION_WORKLOAD: the number of its
 * end's node when that is a workload (whose pods seePod marks), else 0.
 */
const H_VERSION = 0, H_FLOW_HASH = 1, H_FLOW_LAST = 2, H_PEER = 3, H_SOURCE_WORKLOAD = 4, H_DESTINATION_WORKLOAD = 5;
const H_STRIDE = 8;


/** The buckets a window covers: tier, first bucket in it, and where it starts. */
interface Window {
  fine: boolean;
  firstBucket: number;
  sinceMs: number;
  /** The first fine bucket at or after sinceMs, for per-flow and per-pod last-seen marks. */
  firstFine: number;
}

interface Removal {
  version: number;
  key: EdgeKey;
  namespaces: [string, string];
}

// Echo reply, timestamp reply, information reply, address mask reply.
const ICMP4_REPLY_TYPES = new Set([0, 14, 16, 18]);
const ICMP6_ECHO_REPLY = 129;

function isPod(endpoint: Endpoint | undefined): boolean {
  return endpoint !== undefined && endpoint.podName !== "";
}

function isServiceAddress(endpoint: Endpoint | undefined): boolean {
  return endpoint !== undefined && endpoint.podName === "" && endpoint.service !== "";
}

/** Rule 1: whether this observation carries the packets' volume. */
export function isCountingObservation(record: FlowRecord): boolean {
  return isCountingPoint(record.point, record.source);
}

function isCountingPoint(point: number, source: Endpoint | undefined): boolean {
  if (point === ObservationPoint.OBSERVATION_POINT_FROM_POD) return true;
  if (point !== ObservationPoint.OBSERVATION_POINT_TO_POD) return false;
  return !isPod(source) && !isServiceAddress(source);
}

/** One record's fields as FlowMapStore.observe() reads them, from a record or from columns. */
interface Observation {
  lastMs: number;
  firstMs: number;
  point: number;
  verdict: number;
  source: Endpoint | undefined;
  destination: Endpoint | undefined;
  sourceIp: string;
  destinationIp: string;
  /** addressHash() of sourceIp and destinationIp; -1: not known yet (computed when needed). */
  sourceHash: number;
  destinationHash: number;
  /** EnrichedColumns' hints of the two addresses; -1: none. */
  sourceHint: number;
  destinationHint: number;
  hasL4: boolean;
  protocol: number;
  protocolName: string;
  sourcePort: number;
  destinationPort: number;
  icmpType: number;
  /** The SYN and ACK bits (0x02, 0x10) when the record has TCP flags; -1 when not. */
  tcpFlags: number;
  packets: number;
  bytes: number;
}

/** isReply() over an Observation. */
function isReplyOf(o: Observation): boolean {
  if (!o.hasL4) return isServiceAddress(o.source) && !isServiceAddress(o.destination);
  return travelsToClient(isServiceAddress(o.source), isServiceAddress(o.destination), o.protocol, o.sourcePort, o.destinationPort, o.icmpType, o.tcpFlags);
}

/** Rule 3: whether the record's packets travel from the connection's server to its client. */
export function isReply(record: FlowRecord): boolean {
  const l4 = record.l4;
  const fromService = isServiceAddress(record.source), toService = isServiceAddress(record.destination);
  if (l4 === undefined) return fromService && !toService;
  return travelsToClient(fromService, toService, l4.protocol, l4.sourcePort, l4.destinationPort, l4.icmpType, synAckBits(l4.tcpFlags));
}

/** travelsToClient's `tcpFlags` of a Layer4's flags: SYN (0x02) and ACK (0x10), -1 without flags. */
export function synAckBits(f: TcpFlags | undefined): number {
  return f === undefined ? -1 : (f.syn ? 0x02 : 0) | (f.ack ? 0x10 : 0);
}

/**
 * Rule 3 over a record's fields (isReply() of a record, or of a columnar row without one):
 * whether its packets travel from the connection's server to its client. `tcpFlags`: the
 * SYN and ACK bits (0x02, 0x10) when the record has TCP flags, -1 when not; ICMP rows give
 * their type as `icmpType` and 0 as ports.
 */
export function travelsToClient(fromService: boolean, toService: boolean, protocol: number,
  sourcePort: number, destinationPort: number, icmpType: number, tcpFlags: number): boolean {
  if (toService) return false;
  if (fromService) return true;
  if (protocol === 1) return ICMP4_REPLY_TYPES.has(icmpType);
  if (protocol === 58) return icmpType === ICMP6_ECHO_REPLY;
  if (protocol === 6 && tcpFlags >= 0 && (tcpFlags & 0x02) !== 0 && (tcpFlags & 0x10) === 0) return false;
  // Clients take ephemeral ports (32768 and up on Linux), above nearly every server port.
  if (sourcePort === 0 || destinationPort === 0) return false;
  return sourcePort < destinationPort;
}

/** A record's ends as client and server (rule 3), with the edge's protocol name and server port. */
function orient(record: FlowRecord): {
  clientEndpoint: Endpoint | undefined; serverEndpoint: Endpoint | undefined; clientIp: string; serverIp: string;
  protocolNumber: number; protocol: string; clientPort: number; serverPort: number;
} {
  const reply = isReply(record);
  const l4 = record.l4;
  const protocolNumber = l4?.protocol ?? 0;
  return {
    clientEndpoint: reply ? record.destination : record.source,
    serverEndpoint: reply ? record.source : record.destination,
    clientIp: (reply ? record.ip?.destination : record.ip?.source) ?? "",
    serverIp: (reply ? record.ip?.source : record.ip?.destination) ?? "",
    protocolNumber,
    protocol: l4 === undefined ? "" : l4.protocolName || (PROTOCOL_NAMES[protocolNumber] ?? String(protocolNumber)),
    clientPort: l4 === undefined ? 0 : reply ? l4.destinationPort : l4.sourcePort,
    serverPort: l4 === undefined ? 0 : reply ? l4.sourcePort : l4.destinationPort,
  };
}

/** The map edge a record adds to (whether or not it carries volume): its ends' map node ids, protocol and server port. */
export function edgeOfRecord(record: FlowRecord): EdgeKey {
  const o = orient(record);
  return {
    source: identify(o.clientEndpoint, o.clientIp).id,
    destination: identify(o.serverEndpoint, o.serverIp).id,
    protocol: o.protocol,
    port: o.serverPort,
  };
}

/** The map node id of a record's end ("workload:ns/Kind/name", "service:ns/name", "world:ip", "host:node", "unknown:ip"). */
export function mapNodeOf(endpoint: Endpoint | undefined, address: string): string {
  return identify(endpoint, address).id;
}

function identify(endpoint: Endpoint | undefined, address: string): NodeIdentity {
  if (endpoint !== undefined) {
    const workload = endpointWorkload(endpoint);
    if (workload !== undefined) {
      return {
        id: `workload:${endpoint.namespace}/${workload.kind}/${workload.name}`, kind: MapNodeKind.MAP_NODE_KIND_WORKLOAD,
        namespace: endpoint.namespace, name: workload.name, workloadKind: workload.kind, serial: 0, seenIn: 0, seenFine: 0,
      };
    }
    if (endpoint.service !== "") {
      const slash = endpoint.service.indexOf("/");
      const namespace = slash === -1 ? endpoint.namespace : endpoint.service.slice(0, slash);
      const name = endpoint.service.slice(slash + 1);
      return { id: `service:${namespace}/${name}`, kind: MapNodeKind.MAP_NODE_KIND_SERVICE, namespace, name, workloadKind: "", serial: 0, seenIn: 0, seenFine: 0 };
    }
    const ip = endpoint.ip || address;
    if (endpoint.world) return { id: `world:${ip}`, kind: MapNodeKind.MAP_NODE_KIND_WORLD, namespace: "", name: ip, workloadKind: "", serial: 0, seenIn: 0, seenFine: 0 };
    if (endpoint.node !== "") {
      return { id: `host:${endpoint.node}`, kind: MapNodeKind.MAP_NODE_KIND_HOST, namespace: "", name: endpoint.node, workloadKind: "", serial: 0, seenIn: 0, seenFine: 0 };
    }
  }
  const ip = endpoint?.ip || address;
  return { id: `unknown:${ip}`, kind: MapNodeKind.MAP_NODE_KIND_UNSPECIFIED, namespace: "", name: ip, workloadKind: "", serial: 0, seenIn: 0, seenFine: 0 };
}

/** The namespace a map node id names (identify() above writes the ids); "" for host, world and unknown ends. */
export function namespaceOfMapNodeId(id: string): string {
  const colon = id.indexOf(":");
  const kind = id.slice(0, colon);
  if (kind !== "workload" && kind !== "service") return "";
  const slash = id.indexOf("/", colon);
  return slash === -1 ? "" : id.slice(colon + 1, slash);
}

/** The order collect() lists edges in: source id, destination id, protocol, then port as text. */
function edgeKey(edge: EdgeState): string {
  return `${edge.source.id}\u0000${edge.destination.id}\u0000${edge.protocol}\u0000${edge.port}`;
}

/** World and unresolved addresses: the ends that can be aggregated (rule 6). */
function isOutside(node: NodeIdentity): boolean {
  return node.kind === MapNodeKind.MAP_NODE_KIND_WORLD || node.kind === MapNodeKind.MAP_NODE_KIND_UNSPECIFIED;
}

/** The namespaces an edge between these ends counts towards (rule 6); "" when neither has one. */
function namespacesOf(client: NodeName, server: NodeName): string[] {
  const out = [client.namespace, server.namespace].filter((ns, i, all) => ns !== "" && all.indexOf(ns) === i);
  return out.length > 0 ? out : [""];
}

const PREFIX_BITS_V4 = 24, PREFIX_BITS_V6 = 48;

/** An outside end named by its /24 or /48 (the end itself when it is not outside); undefined for a name that is no address. */
function prefixOf(node: NodeIdentity): NodeIdentity | undefined {
  if (!isOutside(node)) return node;
  const net = networkOf(node.name, PREFIX_BITS_V4, PREFIX_BITS_V6);
  if (net === undefined) return undefined;
  return { ...node, id: `${node.id.slice(0, node.id.indexOf(":"))}:${net}`, name: net, serial: 0, seenIn: 0 };
}

function otherOf(node: NodeIdentity): NodeIdentity {
  if (!isOutside(node)) return node;
  const kind = node.id.slice(0, node.id.indexOf(":"));
  return { ...node, id: `${kind}:other`, name: "other", serial: 0, seenIn: 0 };
}

/**
 * An address's part of a 5-tuple's hash: FNV-1a over its text. The column path computes it
 * once per distinct address (the enricher's AddressEntry), the record path per record; both
 * give the same, so a connection's records count as one flow whichever path brought them.
 */
export function addressHash(ip: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < ip.length; i++) h = Math.imul(h ^ ip.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The oriented 5-tuple's hash from its addresses' (addressHash), folded to 30 bits so it stays a small integer. */
function tupleHash(clientHash: number, serverHash: number, protocol: number, clientPort: number, serverPort: number): number {
  const h = hashTriple(clientHash, serverHash ^ Math.imul(protocol + 1, 0x9e3779b1), clientPort * 65_536 + serverPort);
  return (h ^ (h >>> 30)) & 0x3fffffff;
}

/**
 * An edge's tracked 5-tuples after its first (rule 5): 30-bit hash -> last fine bucket, by
 * open addressing in one typed array, (hash + 1, last bucket) side by side so that a probe
 * reads one cache line (separate key and bucket arrays measured two misses per counted row
 * on edges with many flows). A Map per edge took a probe of V8's hash table per counted row
 * and several times the memory. Entries leave only by forgetBefore(), which rebuilds the
 * table from what stays.
 */
class FlowMarks {
  /** Per slot: hash + 1 (0: a free slot), then the last fine bucket. */
  private slots: Float64Array;
  private mask: number;
  size = 0;

  // 4 slots (64 bytes) to start: V8 keeps a typed array of at most 64 bytes on the heap,
  // beside its object; a larger one is a separate off-heap allocation per edge.
  constructor(slots = 4) {
    this.slots = new Float64Array(2 * slots);
    this.mask = slots - 1;
  }

  /** If `hash` is tracked: moves its last bucket up to `fine` and returns true. */
  touch(hash: number, fine: number): boolean {
    const k = this.slotOf(hash);
    const slots = this.slots;
    if (slots[k] === 0) return false;
    if (fine > slots[k + 1]!) slots[k + 1] = fine;
    return true;
  }

  /** Tracks `hash` (not tracked: see touch()) as last seen in `fine`. */
  add(hash: number, fine: number): void {
    if (2 * (this.size + 1) > this.mask + 1) this.rebuild(2 * (this.mask + 1), -Infinity);
    const k = this.slotOf(hash);
    this.slots[k] = hash + 1;
    this.slots[k + 1] = fine;
    this.size++;
  }

  /** Tuples last seen in `firstFine` or later. */
  countSince(firstFine: number): number {
    const slots = this.slots;
    let n = 0;
    for (let k = 0; k < slots.length; k += 2) if (slots[k] !== 0 && slots[k + 1]! >= firstFine) n++;
    return n;
  }

  /** Forgets the tuples last seen before `oldest`; returns how many. */
  forgetBefore(oldest: number): number {
    const before = this.size;
    const slots = this.slots;
    let stale = 0;
    for (let k = 0; k < slots.length; k += 2) if (slots[k] !== 0 && slots[k + 1]! < oldest) stale++;
    if (stale > 0) {
      let room = this.mask + 1;
      while (room > 4 && 4 * (before - stale) < room) room /= 2;
      this.rebuild(room, oldest);
    }
    return before - this.size;
  }

  /** The index in `slots` of the slot holding `hash`, or of the free slot where it would go. */
  private slotOf(hash: number): number {
    const slots = this.slots, mask = this.mask, key = hash + 1;
    let slot = hash & mask; // tupleHash's bits are mixed already
    while (slots[2 * slot] !== 0 && slots[2 * slot] !== key) slot = (slot + 1) & mask;
    return 2 * slot;
  }

  /** Re-inserts the tuples last seen at `oldest` or later into `room` slots. */
  private rebuild(room: number, oldest: number): void {
    const old = this.slots;
    this.slots = new Float64Array(2 * room);
    this.mask = room - 1;
    this.size = 0;
    for (let k = 0; k < old.length; k += 2) {
      if (old[k] === 0 || old[k + 1]! < oldest) continue;
      const to = this.slotOf(old[k]! - 1);
      this.slots[to] = old[k]!;
      this.slots[to + 1] = old[k + 1]!;
      this.size++;
    }
  }
}

/** A little-endian 64-bit column as its 32-bit words (low, high per value). */
function wordsOf(col: BigUint64Array): Uint32Array {
  return new Uint32Array(col.buffer, col.byteOffset, col.length * 2);
}

function positive(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`flow map option ${name} must be a positive integer, got ${value}`);
  return value;
}

export class FlowMapStore {
  private readonly now: () => number;
  private readonly fineBucketMs: number;
  private readonly fineWindowMs: number;
  private readonly coarseBucketMs: number;
  /** Fine buckets in a coarse one (the constructor checks it is whole). */
  private readonly finePerCoarse: number;
  private readonly retentionMs: number;
  private readonly maxTrackedFlows: number;
  private readonly maxRemovalLog: number;
  private readonly maxEdgesPerNamespace: number;
  private readonly maxEdges: number;

  /** Edges by index (EdgeState.index); undefined: a free slot, its index in freeEdgeSlots. */
  private readonly edgeSlots: (EdgeState | undefined)[] = [];
  /** Per edge index, H_STRIDE numbers (H_VERSION ...). */
  private edgeHot = new Float64Array(64 * H_STRIDE);
  /** Per edge index, its tracked 5-tuples after the first (see H_FLOW_HASH). */
  private readonly edgeFlows: (FlowMarks | undefined)[] = [];
  private readonly freeEdgeSlots: number[] = [];
  private get edgeCount(): number { return this.edgeSlots.length - this.freeEdgeSlots.length; }
  /**
   * Edges by (source node number, destination node number, port), the first of those with
   * that key (others differ in protocol: EdgeState.sameKey); values are edge indexes.
   */
  private readonly edgeTable = new TripleKeyTable();
  /** Every edge's fine and coarse buckets. */
  private readonly buckets = new BucketLists();
  /** Edges by the namespaces they count towards (namespacesOf their two nodes): budgets, and a namespace's map without walking every edge. */
  private readonly edgesByNamespace = new Map<string, Set<EdgeState>>();
  private readonly nodes = new Map<string, MapNodeState>();
  // Shared Endpoint objects (one per pod) resolve to their map node once.
  private readonly identities = new WeakMap<Endpoint, NodeIdentity>();
  /** The identity last kept for an endpoint, by its address's hint (identity()): saves the WeakMap lookup. */
  private readonly hintedIdentities = new HintSlots<Endpoint, NodeIdentity>();
  /** The next NodeIdentity.serial: identities kept in `identities` (one object per endpoint) key exactEdges. */
  private nextSerial = 1;
  /** The next MapNodeState.number. */
  private nextNodeNumber = 1;
  /**
   * Exact edges by (client serial, server serial, port * 256 + protocol number), one probe
   * of a typed-array table: what edges.get(edgeKey(...)) answers, without building the
   * string key; values are edge indexes. Emptied when an edge is removed.
   */
  private readonly exactEdges = new TripleKeyTable();
  private readonly listeners = new Set<(version: number) => void>();
  private readonly removals: Removal[] = [];
  private removalsForgottenUpTo = 0;
  private currentVersion = 0;
  private trackedFlows = 0;
  private lastFineMaintenance = -Infinity;
  private lastCoarseMaintenance = -Infinity;
  /** The observation add() and addColumns() fill for observe(), reused. */
  private readonly scratch: Observation = {
    lastMs: 0, firstMs: 0, point: 0, verdict: 0, source: undefined, destination: undefined, sourceIp: "", destinationIp: "", sourceHash: -1, destinationHash: -1, sourceHint: -1, destinationHint: -1,
    hasL4: false, protocol: 0, protocolName: "", sourcePort: 0, destinationPort: 0, icmpType: 0, tcpFlags: -1, packets: 0, bytes: 0,
  };
  private oldestCoarse = 0;
  private oldestFine = 0;
  private readonly counters = {
    records: 0, counted: 0, verdictOnly: 0, duplicates: 0, late: 0, untimed: 0, untrackedFlows: 0, prefixRecords: 0, otherRecords: 0,
  };

  constructor(options: FlowMapOptions = {}) {
    this.now = options.now ?? Date.now;
    this.fineBucketMs = positive("fineBucketMs", options.fineBucketMs ?? 5_000);
    this.fineWindowMs = positive("fineWindowMs", options.fineWindowMs ?? 5 * 60_000);
    this.coarseBucketMs = positive("coarseBucketMs", options.coarseBucketMs ?? 60_000);
    this.retentionMs = positive("retentionMs", options.retentionMs ?? 60 * 60_000);
    this.maxTrackedFlows = positive("maxTrackedFlows", options.maxTrackedFlows ?? 1_000_000);
    this.maxRemovalLog = positive("maxRemovalLog", options.maxRemovalLog ?? 10_000);
    this.maxEdgesPerNamespace = positive("maxEdgesPerNamespace", options.maxEdgesPerNamespace ?? 20_000);
    this.maxEdges = positive("maxEdges", options.maxEdges ?? 500_000);
    if (this.coarseBucketMs % this.fineBucketMs !== 0) {
      throw new Error(`flow map coarseBucketMs (${this.coarseBucketMs}) must be a multiple of fineBucketMs (${this.fineBucketMs})`);
    }
    this.finePerCoarse = this.coarseBucketMs / this.fineBucketMs;
    if (this.fineWindowMs > this.retentionMs) {
      throw new Error(`flow map fineWindowMs (${this.fineWindowMs}) must not exceed retentionMs (${this.retentionMs})`);
    }
  }

  /** Increases whenever an edge gains records or expires. */
  get version(): number { return this.currentVersion; }

  get stats(): FlowMapStats {
    return { ...this.counters, edges: this.edgeCount, nodes: this.nodes.size };
  }

  /** Listeners registered with onChange() and not yet unsubscribed. */
  get subscribers(): number { return this.listeners.size; }

  /**
   * Where a window of `windowMs` starts now (the `since` getMap would report): an edge is
   * in that window exactly when its last_seen is at or after this instant, so a client can
   * drop edges that fall out of its window without fetching the map again.
   */
  windowStart(windowMs?: number): number {
    return this.window(this.now(), windowMs).sinceMs;
  }

  /** Calls `listener(version)` after every change; returns the unsubscribe. */
  onChange(listener: (version: number) => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  add(records: readonly FlowRecord[]): void {
    const o = this.scratch;
    const version = this.begin();
    let changed = false;
    for (const record of records) {
      this.counters.records++;
      const end = record.endTime ?? record.startTime;
      if (end === undefined) { this.counters.untimed++; continue; }
      o.lastMs = msOfTimestamp(end);
      o.firstMs = record.startTime === undefined ? o.lastMs : msOfTimestamp(record.startTime);
      o.point = record.point;
      o.verdict = record.verdict;
      o.source = record.source;
      o.destination = record.destination;
      o.sourceIp = record.ip?.source ?? "";
      o.destinationIp = record.ip?.destination ?? "";
      o.sourceHash = -1;
      o.destinationHash = -1;
      o.sourceHint = -1;
      o.destinationHint = -1;
      const l4 = record.l4;
      o.hasL4 = l4 !== undefined;
      o.protocol = l4?.protocol ?? 0;
      o.protocolName = l4?.protocolName ?? "";
      o.sourcePort = l4?.sourcePort ?? 0;
      o.destinationPort = l4?.destinationPort ?? 0;
      o.icmpType = l4?.icmpType ?? 0;
      const f = l4?.tcpFlags;
      o.tcpFlags = f === undefined ? -1 : (f.syn ? 0x02 : 0) | (f.ack ? 0x10 : 0);
      o.packets = Number(record.packets);
      o.bytes = Number(record.bytes);
      if (this.observe(o, version)) changed = true;
    }
    if (changed) this.publish(version);
  }

  /**
   * An ingested columnar batch, row by row from the columns (add()'s rules, no FlowRecord):
   * the ends, their addresses and the corrected times come from ingest.
   */
  addColumns(b: EnrichedColumns): void {
    const o = this.scratch;
    const c = b.columns;
    const version = this.begin();
    let changed = false;
    // The 64-bit counts as 32-bit word pairs: reading a BigUint64Array makes a BigInt per value.
    const packets = wordsOf(c.packets), bytes = wordsOf(c.bytes);
    for (let k = 0; k < b.rows.length; k++) {
      const i = b.rows[k]!;
      this.counters.records++;
      o.lastMs = b.endSeconds[i]! * 1000 + b.endNanos[i]! / 1e6;
      o.firstMs = b.startSeconds[i]! * 1000 + b.startNanos[i]! / 1e6;
      o.point = c.points[i]!;
      o.verdict = c.verdicts[i]!;
      o.source = b.sources[i];
      o.destination = b.destinations[i];
      o.sourceIp = b.sourceIps[i]!;
      o.destinationIp = b.destinationIps[i]!;
      o.sourceHash = b.sourceHashes[i]!;
      o.destinationHash = b.destinationHashes[i]!;
      o.sourceHint = b.sourceHints[i]!;
      o.destinationHint = b.destinationHints[i]!;
      const proto = c.protocols[i]!;
      const isIcmp = proto === 1 || proto === 58;
      o.hasL4 = true;
      o.protocol = proto;
      o.protocolName = "";
      o.sourcePort = isIcmp ? 0 : c.sourcePorts[i]!;
      o.destinationPort = isIcmp ? 0 : c.destinationPorts[i]!;
      o.icmpType = isIcmp ? c.sourcePorts[i]! : 0;
      o.tcpFlags = proto === 6 ? c.tcpFlags[i]! : -1;
      o.packets = packets[2 * i + 1]! * 2 ** 32 + packets[2 * i]!;
      o.bytes = bytes[2 * i + 1]! * 2 ** 32 + bytes[2 * i]!;
      if (this.observe(o, version)) changed = true;
    }
    if (changed) this.publish(version);
  }

  /** Maintenance before a batch; the version its edges take. */
  private begin(): number {
    const now = this.now();
    this.maintain(now);
    this.oldestCoarse = Math.floor((now - this.retentionMs) / this.coarseBucketMs);
    this.oldestFine = Math.floor((now - this.fineWindowMs) / this.fineBucketMs);
    return this.currentVersion + 1;
  }

  /** One observation into its edge (rules 1-6); whether an edge changed. Counts `records` and `untimed` are the caller's. */
  private observe(o: Observation, version: number): boolean {
    const lastMs = o.lastMs;
    const coarse = Math.floor(lastMs / this.coarseBucketMs);
    if (coarse < this.oldestCoarse) { this.counters.late++; return false; }

    const counted = isCountingPoint(o.point, o.source);
    const verdict = o.verdict;
    const dropped = verdict === Verdict.VERDICT_DROPPED;
    const audited = verdict === Verdict.VERDICT_AUDIT;
    if (!counted && !dropped && !audited) { this.counters.duplicates++; return false; }
    if (counted) this.counters.counted++;
    else this.counters.verdictOnly++;

    const reply = isReplyOf(o);
    const clientEndpoint = reply ? o.destination : o.source;
    const serverEndpoint = reply ? o.source : o.destination;
    const clientIp = reply ? o.destinationIp : o.sourceIp;
    const serverIp = reply ? o.sourceIp : o.destinationIp;
    const protocol = o.hasL4 ? o.protocolName || (PROTOCOL_NAMES[o.protocol] ?? String(o.protocol)) : "";
    const clientPort = !o.hasL4 ? 0 : reply ? o.destinationPort : o.sourcePort;
    const serverPort = !o.hasL4 ? 0 : reply ? o.sourcePort : o.destinationPort;

    // The protocol's name follows from its number unless a record named it otherwise: then edgeFor's cache is not used.
    const byNumber = o.hasL4 && (o.protocolName === "" || o.protocolName === PROTOCOL_NAMES[o.protocol]) ? o.protocol : -1;
    const client = this.identity(clientEndpoint, clientIp, reply ? o.destinationHint : o.sourceHint);
    const server = this.identity(serverEndpoint, serverIp, reply ? o.sourceHint : o.destinationHint);
    const edge = this.edgeFor(client, server, protocol, serverPort, byNumber);
    // Read after edgeFor(): making an edge may have grown (replaced) edgeHot.
    const hot = this.edgeHot, h = edge * H_STRIDE;
    const peer = hot[h + H_PEER]!;
    if (peer === PEER_PREFIX) this.counters.prefixRecords++;
    else if (peer === PEER_OTHER) this.counters.otherRecords++;
    const packets = o.packets;
    const bytes = counted ? o.bytes : 0;
    const volume = counted ? packets : 0;
    const firstMs = o.firstMs;
    const dropField = counted ? B_DROP_COUNTED : B_DROP_OTHER;
    const auditField = counted ? B_AUDIT_COUNTED : B_AUDIT_OTHER;
    const drop = dropped ? packets : 0;
    const audit = audited ? packets : 0;
    const fine = Math.floor(lastMs / this.fineBucketMs);
    const lists = 2 * edge;
    // One bucket a row: its fine one, folded into its coarse one when it leaves the fine window (maintain()).
    if (fine >= this.oldestFine) this.buckets.add(lists, fine, volume, bytes, dropField, drop, auditField, audit, firstMs, lastMs);
    else this.buckets.add(lists + 1, coarse, volume, bytes, dropField, drop, auditField, audit, firstMs, lastMs);

    if (counted) {
      const clientHash = reply ? o.destinationHash : o.sourceHash, serverHash = reply ? o.sourceHash : o.destinationHash;
      this.trackFlow(edge, tupleHash(clientHash < 0 ? addressHash(clientIp) : clientHash, serverHash < 0 ? addressHash(serverIp) : serverHash,
        o.protocol, clientPort, serverPort), fine);
    }
    if (hot[h + H_SOURCE_WORKLOAD] !== 0) this.seePod(edge, true, client, clientEndpoint, fine);
    if (hot[h + H_DESTINATION_WORKLOAD] !== 0) this.seePod(edge, false, server, serverEndpoint, fine);
    hot[h + H_VERSION] = version;
    return true;
  }

  getMap(query: FlowMapQuery = {}): GetFlowMapResponse {
    const now = this.now();
    this.maintain(now);
    const window = this.window(now, query.windowMs);
    const namespace = query.namespace ?? "";
    const { edges, nodes } = this.collect(window, namespace, -Infinity);
    return {
      nodes,
      edges,
      since: timestampOfMs(window.sinceMs),
      until: timestampOfMs(now),
    };
  }

  /**
   * What changed since `version` (from `version` or a previous call), for streaming a map.
   * Totals also change as buckets slide out of a window without any new record; a client
   * showing totals should also refresh them on a timer (getMap).
   */
  changesSince(version: number, query: FlowMapQuery = {}): FlowMapChanges {
    const now = this.now();
    this.maintain(now);
    if (!Number.isSafeInteger(version) || version < this.removalsForgottenUpTo || version > this.currentVersion) {
      const map = this.getMap(query);
      return { version: this.currentVersion, resync: true, edges: map.edges, nodes: map.nodes, removed: [] };
    }
    const window = this.window(now, query.windowMs);
    const namespace = query.namespace ?? "";
    const { edges, nodes } = this.collect(window, namespace, version);
    const removed = this.removals
      .filter((r) => r.version > version && (namespace === "" || r.namespaces.includes(namespace)))
      .map((r) => r.key);
    return { version: this.currentVersion, resync: false, edges, nodes, removed };
  }

  /** Edges of the namespace changed after `afterVersion`, with totals over the window, in key order. */
  private collect(window: Window, namespace: string, afterVersion: number): { edges: MapEdge[]; nodes: MapNode[] } {
    const selected: { key: string; edge: EdgeState }[] = [];
    // A namespace's edges are those that count towards it: one namespace's map (and each
    // of its streams' deltas) walks that namespace only, not the whole cluster's edges.
    const candidates = namespace === "" ? this.edgeSlots : this.edgesByNamespace.get(namespace)?.values() ?? [];
    for (const edge of candidates) {
      if (edge !== undefined && this.edgeHot[edge.index * H_STRIDE + H_VERSION]! > afterVersion) selected.push({ key: edgeKey(edge), edge });
    }
    // Keys order by source id, destination id, protocol, then port as text: stable for diffs.
    selected.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const edges: MapEdge[] = [];
    const nodes = new Map<string, MapNodeState>();
    for (const { edge } of selected) {
      const summary = this.summarize(edge, window);
      if (summary === undefined) continue;
      edges.push(summary);
      nodes.set(edge.source.id, edge.source);
      nodes.set(edge.destination.id, edge.destination);
    }
    return { edges, nodes: this.mapNodes(nodes, window) };
  }

  private window(now: number, windowMs = 5 * 60_000): Window {
    if (!Number.isFinite(windowMs) || windowMs <= 0 || windowMs > this.retentionMs) {
      throw new Error(`flow map window must be more than 0 and at most ${this.retentionMs} ms, got ${windowMs} ms`);
    }
    const fine = windowMs <= this.fineWindowMs;
    const bucketMs = fine ? this.fineBucketMs : this.coarseBucketMs;
    const firstBucket = Math.floor((now - windowMs) / bucketMs);
    const sinceMs = firstBucket * bucketMs;
    return { fine, firstBucket, sinceMs, firstFine: Math.floor(sinceMs / this.fineBucketMs) };
  }

  private summarize(edge: EdgeState, window: Window): MapEdge | undefined {
    const b = this.buckets;
    let packets = 0, bytes = 0, dropped = 0, audit = 0, firstMs = Infinity, lastMs = -Infinity;
    let any = false;
    // Rule 2's max() applies per bucket of the window's tier. A coarse window's minute is its
    // coarse bucket with the fine buckets of that minute not folded into it yet (maintain()).
    const per = window.fine ? 1 : this.finePerCoarse;
    let coarse = window.fine ? -1 : b.first(2 * edge.index + 1);
    let fine = b.first(2 * edge.index);
    let dropCounted = 0, dropOther = 0, auditCounted = 0, auditOther = 0;
    const tally = (k: number): void => {
      packets += b.get(k, B_PACKETS);
      bytes += b.get(k, B_BYTES);
      dropCounted += b.get(k, B_DROP_COUNTED);
      dropOther += b.get(k, B_DROP_OTHER);
      auditCounted += b.get(k, B_AUDIT_COUNTED);
      auditOther += b.get(k, B_AUDIT_OTHER);
      firstMs = Math.min(firstMs, b.get(k, B_FIRST_MS));
      lastMs = Math.max(lastMs, b.get(k, B_LAST_MS));
    };
    while (coarse !== -1 || fine !== -1) {
      const bucket = Math.min(coarse === -1 ? Infinity : b.get(coarse, B_BUCKET), fine === -1 ? Infinity : Math.floor(b.get(fine, B_BUCKET) / per));
      const inWindow = bucket >= window.firstBucket;
      dropCounted = dropOther = auditCounted = auditOther = 0;
      if (coarse !== -1 && b.get(coarse, B_BUCKET) === bucket) {
        if (inWindow) tally(coarse);
        coarse = b.next(coarse);
      }
      for (; fine !== -1 && Math.floor(b.get(fine, B_BUCKET) / per) === bucket; fine = b.next(fine)) if (inWindow) tally(fine);
      if (!inWindow) continue;
      any = true;
      dropped += Math.max(dropCounted, dropOther);
      audit += Math.max(auditCounted, auditOther);
    }
    if (!any) return undefined;
    let flows = 0;
    const h = edge.index * H_STRIDE;
    if (this.edgeHot[h + H_FLOW_HASH] !== -1 && this.edgeHot[h + H_FLOW_LAST]! >= window.firstFine) flows++;
    flows += this.edgeFlows[edge.index]?.countSince(window.firstFine) ?? 0;
    return {
      source: edge.source.id,
      destination: edge.destination.id,
      protocol: edge.protocol,
      port: edge.port,
      flows: BigInt(flows),
      packets: BigInt(packets),
      bytes: BigInt(bytes),
      forwarded: BigInt(Math.max(0, packets - dropped - audit)),
      dropped: BigInt(dropped),
      audit: BigInt(audit),
      firstSeen: timestampOfMs(firstMs),
      lastSeen: timestampOfMs(lastMs),
    };
  }

  private mapNodes(nodes: Map<string, MapNodeState>, window: Window): MapNode[] {
    const out: MapNode[] = [];
    for (const node of nodes.values()) {
      let pods = 0;
      for (const last of node.pods.values()) if (last >= window.firstFine) pods++;
      out.push({ id: node.id, kind: node.kind, namespace: node.namespace, name: node.name, workloadKind: node.workloadKind, pods });
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The identity of a record's end: `hint` is its address's (Observation.sourceHint), -1 for none. */
  private identity(endpoint: Endpoint | undefined, address: string, hint: number): NodeIdentity {
    if (endpoint === undefined) return identify(undefined, address);
    const hinted = hint < 0 ? undefined : this.hintedIdentities.get(hint, endpoint);
    if (hinted !== undefined) return hinted;
    let identity = this.identities.get(endpoint);
    if (identity === undefined) {
      identity = identify(endpoint, address);
      // An endpoint without an address borrows the record's; such an identity is per record.
      if (endpoint.ip === "" && identity.kind !== MapNodeKind.MAP_NODE_KIND_WORKLOAD
        && identity.kind !== MapNodeKind.MAP_NODE_KIND_SERVICE && identity.kind !== MapNodeKind.MAP_NODE_KIND_HOST) return identity;
      this.identities.set(endpoint, identity);
      if (this.nextSerial < 2 ** 30) identity.serial = this.nextSerial++;
    }
    if (hint >= 0) this.hintedIdentities.set(hint, endpoint, identity);
    return identity;
  }

  private nodeFor(identity: NodeIdentity): MapNodeState {
    let node = this.nodes.get(identity.id);
    if (node === undefined) {
      const { id, kind, namespace, name, workloadKind, serial } = identity;
      node = { id, kind, namespace, name, workloadKind, serial, pods: new Map(), edges: 0, number: this.nextNodeNumber++ };
      this.nodes.set(identity.id, node);
    }
    return node;
  }

  /** The index of the edge a record adds to: the existing one, or a new one within the budget (rule 6). */
  private edgeFor(client: NodeIdentity, server: NodeIdentity, protocol: string, port: number, protocolNumber = -1): number {
    const cacheable = protocolNumber >= 0 && client.serial > 0 && server.serial > 0;
    const inner = port * 256 + protocolNumber;
    if (cacheable) {
      const cached = this.exactEdges.get(client.serial, server.serial, inner);
      if (cached >= 0) return cached;
    }
    const exact = this.findEdge(client, server, protocol, port);
    if (exact !== undefined) {
      if (cacheable) this.rememberExact(client.serial, server.serial, inner, exact);
      return exact.index;
    }
    const outside = isOutside(client) || isOutside(server);
    const namespaces = namespacesOf(client, server);
    const fill = outside ? this.fill(namespaces) : 0;
    if (fill < 0.5) {
      const edge = this.newEdge(client, server, protocol, port, PEER_EXACT, namespaces);
      // Remembered at once: an edge to an outside peer often gets its second row soon (its reply).
      if (cacheable) this.rememberExact(client.serial, server.serial, inner, edge);
      return edge.index;
    }
    const byPrefix = [prefixOf(client), prefixOf(server)] as const;
    if (byPrefix[0] !== undefined && byPrefix[1] !== undefined) {
      const prefix = this.findEdge(byPrefix[0], byPrefix[1], protocol, port);
      if (prefix !== undefined) return prefix.index;
      if (fill < 1) return this.newEdge(byPrefix[0], byPrefix[1], protocol, port, PEER_PREFIX, namespaces).index;
    }
    const other = [otherOf(client), otherOf(server)] as const;
    return (this.findEdge(other[0], other[1], protocol, 0) ?? this.newEdge(other[0], other[1], protocol, 0, PEER_OTHER, namespaces)).index;
  }

  /** The edge between the nodes these identities name, if it exists. */
  private findEdge(client: NodeName, server: NodeName, protocol: string, port: number): EdgeState | undefined {
    const source = this.nodes.get(client.id), destination = this.nodes.get(server.id);
    if (source === undefined || destination === undefined) return undefined;
    const first = this.edgeTable.get(source.number, destination.number, port);
    for (let edge = first < 0 ? undefined : this.edgeSlots[first]; edge !== undefined; edge = edge.sameKey) {
      if (edge.protocol === protocol) return edge;
    }
    return undefined;
  }

  /** Caches an exact hit of edgeFor by its identity objects, so that the next row skips building the string key. */
  private rememberExact(client: number, server: number, inner: number, edge: EdgeState): void {
    if (this.exactEdges.size >= 4 * this.maxEdges) this.forgetExactEdges();
    this.exactEdges.set(client, server, inner, edge.index);
  }

  private forgetExactEdges(): void {
    this.exactEdges.clear();
  }

  /** How full the fullest budget a new edge would count towards is: 1 = full. */
  private fill(namespaces: readonly string[]): number {
    let fill = this.edgeCount / this.maxEdges;
    for (const ns of namespaces) fill = Math.max(fill, (this.edgesByNamespace.get(ns)?.size ?? 0) / this.maxEdgesPerNamespace);
    return fill;
  }

  private newEdge(client: NodeIdentity, server: NodeIdentity, protocol: string, port: number, peer: PeerLevel, namespaces: string[]): EdgeState {
    const source = this.nodeFor(client);
    const destination = this.nodeFor(server);
    source.edges++;
    destination.edges++;
    const index = this.freeEdgeSlots.pop() ?? this.edgeSlots.length;
    const first = this.edgeTable.get(source.number, destination.number, port);
    const edge: EdgeState = { index, source, destination, protocol, port, sameKey: first < 0 ? undefined : this.edgeSlots[first] };
    this.edgeTable.set(source.number, destination.number, port, index);
    this.edgeSlots[index] = edge;
    if ((index + 1) * H_STRIDE > this.edgeHot.length) {
      const grown = new Float64Array(2 * this.edgeHot.length);
      grown.set(this.edgeHot);
      this.edgeHot = grown;
    }
    const h = index * H_STRIDE;
    this.edgeHot.fill(0, h, h + H_STRIDE);
    this.edgeHot[h + H_FLOW_HASH] = -1;
    this.edgeHot[h + H_PEER] = peer;
    this.edgeHot[h + H_SOURCE_WORKLOAD] = source.kind === MapNodeKind.MAP_NODE_KIND_WORKLOAD ? source.number : 0;
    this.edgeHot[h + H_DESTINATION_WORKLOAD] = destination.kind === MapNodeKind.MAP_NODE_KIND_WORKLOAD ? destination.number : 0;
    for (const ns of namespaces) {
      const edges = this.edgesByNamespace.get(ns);
      if (edges === undefined) this.edgesByNamespace.set(ns, new Set([edge])); else edges.add(edge);
    }
    return edge;
  }

  /** Counts the 5-tuple `hash` on the edge of index `edge` as seen in bucket `fine`. */
  private trackFlow(edge: number, hash: number, fine: number): void {
    const hot = this.edgeHot, h = edge * H_STRIDE;
    if (hot[h + H_FLOW_HASH] === hash) {
      if (fine > hot[h + H_FLOW_LAST]!) hot[h + H_FLOW_LAST] = fine;
      return;
    }
    if (this.edgeFlows[edge]?.touch(hash, fine) === true) return;
    if (this.trackedFlows >= this.maxTrackedFlows) { this.counters.untrackedFlows++; return; }
    if (hot[h + H_FLOW_HASH] === -1) { hot[h + H_FLOW_HASH] = hash; hot[h + H_FLOW_LAST] = fine; } else (this.edgeFlows[edge] ??= new FlowMarks()).add(hash, fine);
    this.trackedFlows++;
  }

  /** Marks the pod of `endpoint` (whose identity is `identity`) seen in bucket `fine` on its workload's node. */
  private seePod(edge: number, source: boolean, identity: NodeIdentity, endpoint: Endpoint | undefined, fine: number): void {
    if (endpoint === undefined || endpoint.podName === "") return;
    const number = this.edgeHot[edge * H_STRIDE + (source ? H_SOURCE_WORKLOAD : H_DESTINATION_WORKLOAD)];
    if (identity.seenIn === number && fine <= identity.seenFine) return;
    const state = this.edgeSlots[edge]!;
    const node = source ? state.source : state.destination;
    const key = endpoint.podUid || `${endpoint.namespace}/${endpoint.podName}`;
    const last = node.pods.get(key);
    const seen = last === undefined || fine > last ? fine : last;
    if (seen !== last) node.pods.set(key, seen);
    identity.seenIn = node.number;
    identity.seenFine = seen;
  }

  /** Expires buckets (each fine bucket), and flows and pods (each coarse bucket). */
  private maintain(now: number): void {
    const fineNow = Math.floor(now / this.fineBucketMs);
    if (fineNow === this.lastFineMaintenance) return;
    this.lastFineMaintenance = fineNow;
    const coarseNow = Math.floor(now / this.coarseBucketMs);
    const sweepFlows = coarseNow !== this.lastCoarseMaintenance;
    this.lastCoarseMaintenance = coarseNow;

    const oldestFine = Math.floor((now - this.fineWindowMs) / this.fineBucketMs);
    const oldestCoarse = Math.floor((now - this.retentionMs) / this.coarseBucketMs);
    const oldestFineInRetention = oldestCoarse * this.finePerCoarse;
    const version = this.currentVersion + 1;
    let removedAny = false;
    const buckets = this.buckets;
    for (const edge of this.edgeSlots) {
      if (edge === undefined) continue;
      const fineLeft = buckets.fold(2 * edge.index, oldestFine, 2 * edge.index + 1, this.finePerCoarse);
      if (!buckets.expire(2 * edge.index + 1, oldestCoarse) && !fineLeft) {
        this.removeEdge(edge, version);
        removedAny = true;
        continue;
      }
      if (sweepFlows) {
        const h = edge.index * H_STRIDE;
        if (this.edgeHot[h + H_FLOW_HASH] !== -1 && this.edgeHot[h + H_FLOW_LAST]! < oldestFineInRetention) {
          this.edgeHot[h + H_FLOW_HASH] = -1;
          this.trackedFlows--;
        }
        const flows = this.edgeFlows[edge.index];
        if (flows !== undefined) {
          this.trackedFlows -= flows.forgetBefore(oldestFineInRetention);
          if (flows.size === 0) this.edgeFlows[edge.index] = undefined;
        }
      }
    }
    if (sweepFlows) {
      for (const node of this.nodes.values()) {
        for (const [pod, last] of node.pods) if (last < oldestFineInRetention) node.pods.delete(pod);
      }
    }
    if (removedAny) this.publish(version);
  }

  private removeEdge(edge: EdgeState, version: number): void {
    this.unlinkEdge(edge);
    this.buckets.clear(2 * edge.index);
    this.buckets.clear(2 * edge.index + 1);
    this.edgeSlots[edge.index] = undefined;
    this.freeEdgeSlots.push(edge.index);
    this.forgetExactEdges();
    for (const ns of namespacesOf(edge.source, edge.destination)) {
      const edges = this.edgesByNamespace.get(ns);
      edges?.delete(edge);
      if (edges?.size === 0) this.edgesByNamespace.delete(ns);
    }
    this.trackedFlows -= (this.edgeHot[edge.index * H_STRIDE + H_FLOW_HASH] !== -1 ? 1 : 0) + (this.edgeFlows[edge.index]?.size ?? 0);
    this.edgeFlows[edge.index] = undefined;
    for (const node of [edge.source, edge.destination]) {
      if (--node.edges === 0) this.nodes.delete(node.id);
    }
    this.removals.push({
      version,
      key: { source: edge.source.id, destination: edge.destination.id, protocol: edge.protocol, port: edge.port },
      namespaces: [edge.source.namespace, edge.destination.namespace],
    });
    if (this.removals.length > this.maxRemovalLog) {
      const forgotten = this.removals.splice(0, this.removals.length - this.maxRemovalLog);
      this.removalsForgottenUpTo = forgotten[forgotten.length - 1]?.version ?? this.removalsForgottenUpTo;
    }
  }

  /** Takes `edge` out of edgeTable and its same-key chain. */
  private unlinkEdge(edge: EdgeState): void {
    const { source, destination, port } = edge;
    const first = this.edgeSlots[this.edgeTable.get(source.number, destination.number, port)]!;
    if (first === edge) {
      if (edge.sameKey === undefined) this.edgeTable.delete(source.number, destination.number, port);
      else this.edgeTable.set(source.number, destination.number, port, edge.sameKey.index);
      return;
    }
    let before = first;
    while (before.sameKey !== edge) before = before.sameKey!;
    before.sameKey = edge.sameKey;
  }

  private publish(version: number): void {
    this.currentVersion = version;
    for (const listener of [...this.listeners]) listener(version);
  }
}
