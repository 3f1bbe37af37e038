// Typed face of the native addon (native/addon, node-addon-api over libbpf). Everything
// the agent does with the kernel goes through here; the C++ side throws BpfError-shaped
// Errors: message "<op> <object>: <strerror> (errno N) [note] [libbpf: <libbpf line>]".
import { createRequire } from "node:module";
import path from "node:path";
import { repoRoot } from "../config/install.js";

export interface BpfErrorFields {
  op: string;       // e.g. "attach", "open", "map_lookup_batch"
  object: string;   // file path, map/program name or interface
  errno: number;    // positive errno
  code: string;     // symbolic errno, e.g. "ENOENT"; libbpf's own codes as "LIBBPF_ERRNO__FORMAT"
  /** What libbpf said about it (for a verifier rejection: the verifier's verdict line). */
  libbpfMessage?: string;
  /** Everything libbpf logged during the operation (e.g. the whole verifier log). */
  libbpfLog?: string;
  /** drain()/dump() only: the entries read (and, for drain, deleted) before the failure. */
  partial?: DrainResult;
}
export type BpfError = Error & BpfErrorFields;

export function isBpfError(err: unknown): err is BpfError {
  return err instanceof Error && typeof (err as Partial<BpfErrorFields>).errno === "number"
    && typeof (err as Partial<BpfErrorFields>).op === "string";
}

export interface OpenOptions {
  /** Values for `const volatile` globals in .rodata, set before load. */
  rodata?: Record<string, Buffer>;
  /** max_entries overrides, by map name, set before load. */
  maxEntries?: Record<string, number>;
  /** A bpffs folder of maps pinned by an earlier load (`<dir>/<map name>`). Every map of
   * the object (internal ones such as .rodata aside) is compared with its pin (type,
   * key/value size, max_entries, flags, map_extra, key/value BTF layout); only when every
   * one is pinned and the same are the pinned maps reused, all of them. `adoption` says
   * what was found. Nothing is pinned by this: pin() the maps afterwards. */
  reuseMapsFrom?: string;
}

/** What openObject({ reuseMapsFrom }) found. */
export interface MapAdoption {
  /** True when the object uses the pinned maps (all of them). */
  reused: boolean;
  /** Per map: "same", "absent", or what differs (e.g. "max_entries 262144 pinned vs 1024"). */
  maps: Record<string, string>;
}

export type AttachMode = "tcx" | "clsact";
export type AttachDirection = "ingress" | "egress";

export interface AttachOptions {
  /** Interface name (resolved inside `netns`) or ifindex. */
  iface: string | number;
  direction: AttachDirection;
  /** Path of a network namespace file (/proc/PID/ns/net, /run/netns/X); default: the caller's. */
  netns?: string;
  /** "tcx" needs kernel >= 6.6; "auto" tries tcx then falls back to clsact. Default "auto". */
  mode?: AttachMode | "auto";
  /**
   * Where in the interface's chain: "first" (the default, what the agent uses) goes ahead
   * of every program already there, a CNI's included (tcx BPF_F_BEFORE; clsact priority
   * 1); "last" behind them (tests put stand-in CNI programs there). A clsact filter of
   * ours left at that place by a dead process is replaced.
   */
  position?: "first" | "last";
}

export interface Link {
  readonly mode: AttachMode;
  readonly ifindex: number;
  readonly direction: AttachDirection;
  /** Kernel link id (tcx) or 0 (clsact). */
  readonly id: number;
  /** False after detach() or the owning BpfObject's close(). */
  readonly attached: boolean;
  /** Idempotent; never throws when the interface (or its netns) is gone. For tcx closes
   * the link fd (a pinned link is detached and its pin removed too); for clsact removes
   * the filter. A no-op after the owning BpfObject's close(), which already detached it. */
  detach(): void;
  /** tcx only (a clsact filter throws EOPNOTSUPP). A pinned link outlives the process;
   * remove it later with removePinnedLink(). */
  pin(path: string): void;
}

export type MapType = "hash" | "percpu_hash" | "array" | "percpu_array" | "ringbuf" | "lpm_trie"
  | "array_of_maps" | "hash_of_maps" | "lru_hash" | string;

export interface DrainResult {
  /** count * keySize bytes, entries back to back. */
  keys: Buffer;
  /** count * valueSize bytes (percpu maps: count * nCpus * roundUp(valueSize, 8)). */
  values: Buffer;
  count: number;
  /** Only when a read in pieces (stopWhenFull) stopped with entries left: the kernel's
   * batch position, to pass as `into.from` so the next piece resumes there. */
  next?: Buffer;
}

/** Caller-owned Buffers a batch read fills, reused from one read to the next. */
export interface DrainInto {
  keys: Buffer;
  values: Buffer;
  /** Read only as many entries as these Buffers hold and leave the rest in the map (drain
   * in pieces: call again until a drain returns fewer than they hold, or none). Without
   * it, entries past their room go to a fresh pair. */
  stopWhenFull?: boolean;
  /** Resume where an earlier read in pieces stopped: its `.next`, as it came back (a
   * Buffer of another size is a TypeError). Without it a read starts at the map's start. */
  from?: Buffer;
}

export interface BpfMap {
  readonly name: string;
  readonly type: MapType;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly fd: number;
  /** For percpu maps the value is nCpus * roundUp(valueSize, 8) bytes. */
  lookup(key: Buffer): Buffer | null;
  /** flags: 0 = BPF_ANY, 1 = BPF_NOEXIST, 2 = BPF_EXIST. */
  update(key: Buffer, value: Buffer, flags?: number): void;
  /** Returns false when the key was absent. */
  delete(key: Buffer): boolean;
  /** Batch lookup-and-delete of every entry (BPF_MAP_LOOKUP_AND_DELETE_BATCH). With
   * `into`, entries are read straight into those Buffers and come back as views of them
   * (valid until the caller reuses them); only when they lack room is a fresh pair made. */
  drain(batchSize?: number, into?: DrainInto): DrainResult;
  /** Batch lookup of every entry without deleting; `into` as for drain. */
  dump(batchSize?: number, into?: DrainInto): DrainResult;
  pin(path: string): void;
  unpin(path: string): void;
}

export interface TestRunResult {
  /** The program's return code (tc: -1 = TC_ACT_UNSPEC/TCX_NEXT). */
  retval: number;
  /** Average run time per repetition. */
  durationNs: number;
  /** The packet after the program ran. */
  data: Buffer;
}

export interface BpfProgram {
  readonly name: string;
  readonly fd: number;
  readonly id: number;
  readonly type: string;
  attachTc(opts: AttachOptions): Link;
  /** Puts this program into the tcx link pinned at `path` (BPF_LINK_UPDATE: no moment
   * without a program) and returns it, owned by this object like an attachTc() link.
   * Throws ENOENT (nothing pinned), ENOLINK (defunct link: its interface is gone), EINVAL
   * (not a tcx link). */
  adoptLink(path: string): Link;
  /** BPF_PROG_TEST_RUN: runs the program `repeat` times (default 1) on `packet` (a whole
   * Ethernet frame for tc programs) without attaching it. */
  testRun(packet: Buffer, repeat?: number): TestRunResult;
}

export interface BpfObject {
  readonly path: string;
  map(name: string): BpfMap;
  program(name: string): BpfProgram;
  maps(): string[];
  programs(): string[];
  /** Waits until every program that may have read a map value before this call has
   * finished (an RCU grace period, via an update of a map-in-map: synchronize_rcu).
   * Rewrites the first populated slot of `outerMapName` with the map it already holds, so
   * programs see no change; ENOENT if no slot is populated, EINVAL if not a map-in-map. */
  synchronize(outerMapName: string): void;
  /** Detaches every link made from this object and closes every fd. Idempotent. */
  close(): void;
  /** What process exit does: closes every fd; pinned links (with the programs and maps
   * they hold) stay attached, unpinned ones go. Idempotent. */
  release(): void;
  /** What openObject({ reuseMapsFrom }) found; { reused: false, maps: {} } without it. */
  readonly adoption: MapAdoption;
}

/** A map opened from its bpffs pin, without an object (an earlier load's). */
export interface PinnedMap {
  readonly path: string;
  readonly type: MapType;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly id: number;
  lookup(key: Buffer): Buffer | null;
  update(key: Buffer, value: Buffer, flags?: number): void;
  delete(key: Buffer): boolean;
  drain(): DrainResult;
  dump(): DrainResult;
  /** As BpfObject.synchronize() on this (map-in-map) map. `innerPin`: where the inner
   * map is pinned (without it the inner map is opened by id, which needs CAP_SYS_ADMIN). */
  synchronize(innerPin?: string): void;
  close(): void;
}

/** A tcx link pinned on bpffs, as the kernel describes it. */
export interface PinnedLinkInfo {
  id: number;
  programId: number;
  /** 0 when the link is defunct: its interface was deleted. */
  ifindex: number;
  direction: AttachDirection;
}

export interface RingBufferOptions {
  /** Upper bound on records consumed per event-loop turn (default 4096). */
  maxPerBatch?: number;
}

/** One callback per batch: `records` holds `count` records, each as a u32 LE length
 * followed by the record bytes, padded with zeros so that the next length starts at a
 * multiple of 8 (entry size = roundUp(4 + length, 8)). Use ringRecords() to split. */
export type RingBatchHandler = (records: Buffer, count: number) => void;

/** Splits a ring buffer batch into its records (views into `records`, not copies). */
export function* ringRecords(records: Buffer, count: number): Generator<Buffer> {
  let off = 0;
  for (let i = 0; i < count; i++) {
    if (off + 4 > records.length) throw new Error(`ring batch truncated at record ${i} of ${count}`);
    const len = records.readUInt32LE(off);
    if (off + 4 + len > records.length) throw new Error(`ring record ${i} overruns its batch`);
    yield records.subarray(off + 4, off + 4 + len);
    off += (4 + len + 7) & ~7;
  }
}

export interface RingBuffer {
  /** Reads every record now (for producers that submit without waking the reader),
   * delivering them to the batch callback; returns how many. */
  consume(): number;
  /** Stops polling and frees the ring; idempotent. */
  close(): void;
}

export interface LinkInfo {
  ifindex: number;
  name: string;
  kind: string;        // IFLA_INFO_KIND: "veth", "bridge", "" …
  up: boolean;
  mac: string;         // "aa:bb:…"
  /** IFLA_LINK_NETNSID: the peer lives in another netns when >= 0; -1 if absent. */
  linkNetnsId: number;
  /** IFLA_LINK: peer's ifindex (in the peer's netns), 0 if unknown. */
  peerIfindex: number;
}

/** "new" is sent for a created link and for every change of one (flags, name, …); "del"
 * when it is gone. "resync": the kernel dropped messages (socket overrun), so the
 * listener must call listLinks() and reconcile; it carries no link. */
export type LinkEvent =
  | ({ type: "new" | "del" } & LinkInfo)
  | { type: "resync"; ifindex: 0; name: "" };

export interface LinkWatcher { close(): void }

/** One route of an RTM_GETROUTE dump. */
export interface RouteInfo {
  family: 4 | 6;
  /** Destination prefix address ("0.0.0.0" / "::" for a default route). */
  dst: string;
  prefixLen: number;
  /** RTA_OIF: the outgoing interface's ifindex, 0 if absent (e.g. multipath). */
  oif: number;
  /** Routing table id: 254 = main, 255 = local. */
  table: number;
  /** rtm_type: "unicast", "local", "broadcast", "multicast", "blackhole", … */
  type: string;
}

export const ROUTE_TABLE_MAIN = 254;

/** A raw IP socket (SOCK_RAW) for protocols the kernel has no sockets for here (SCTP). */
export interface RawSocket {
  /** Sends `payload` as the L4 part of one IP packet to `dst`. */
  send(dst: string, payload: Buffer): void;
  close(): void;
}
export interface RawPacket { src: string; payload: Buffer }

export interface NativeAddon {
  /** SOCK_RAW for `protocol` (e.g. 132 = SCTP), made inside `netns` when given (it stays
   * there); `onPacket` receives each packet's L4 part (IPv4: the IP header stripped) on
   * the event loop, in batches. Needs CAP_NET_RAW. Without `onPacket` it only sends. */
  rawSocket(family: 4 | 6, protocol: number, onPacket?: (packets: RawPacket[]) => void,
    netns?: string): RawSocket;
  openObject(path: string, opts?: OpenOptions): BpfObject;
  ringBuffer(map: BpfMap, onBatch: RingBatchHandler, opts?: RingBufferOptions): RingBuffer;
  /** RTM_GETLINK dump in the given netns (default: the caller's). */
  listLinks(netns?: string): LinkInfo[];
  /** RTM_GETROUTE dump of every table, IPv4 and IPv6, in the given netns (default: the
   * caller's). */
  listRoutes(netns?: string): RouteInfo[];
  /** RTMGRP_LINK subscription on the event loop; one callback per netlink datagram batch. */
  watchLinks(onEvents: (events: LinkEvent[]) => void, netns?: string): LinkWatcher;
  /** Number of possible CPUs (libbpf_num_possible_cpus), for percpu values. */
  possibleCpus(): number;
  /** CLOCK_REALTIME minus CLOCK_MONOTONIC in ns, read together: converts bpf_ktime_get_ns() to wall-clock time. */
  clockOffsetNs(): bigint;
  /** Loaded program and link counts in the kernel (for leak checks). */
  kernelObjectCounts(): { programs: number; links: number; maps: number };
  /** The ids behind kernelObjectCounts(): a leak check that other processes cannot disturb
   * asserts that its own ids (Link.id, BpfProgram.id) are gone. */
  kernelObjectIds(): { programs: number[]; links: number[]; maps: number[] };
  /** Removes bulkhead's clsact filters (fixed handle/priority, both directions) that a
   * crashed process may have left on `iface`; returns how many there were. Other
   * filters and the clsact qdisc stay. Throws ENODEV if the interface does not exist. */
  cleanupClsact(iface: string, netns?: string): number;
  /** Detaches the tcx link pinned at `path` (bpffs) and removes the pin; false when
   * nothing is pinned there. */
  removePinnedLink(path: string): boolean;
  /** The tcx link pinned at `path`, or null when nothing is pinned there. */
  pinnedLink(path: string): PinnedLinkInfo | null;
  /** Opens the map pinned at `path` (ENOENT: nothing there; EINVAL: not a map). */
  openPinnedMap(path: string): PinnedMap;
}


export const addonPath = path.join(repoRoot, "native", "addon", "build", "Release", "bulkhead.node");
export const bpfObjectDir = path.join(repoRoot, "native", "build");

let loaded: NativeAddon | undefined;
export function native(): NativeAddon {
  if (!loaded) {
    const require = createRequire(import.meta.url);
    try {
      loaded = require(addonPath) as NativeAddon;
    } catch (err) {
      throw new Error(`cannot load the native addon at ${addonPath} (run "npm run build"): ${(err as Error).message}`);
    }
  }
  return loaded;
}
