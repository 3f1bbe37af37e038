// The agent's handle on endpoint.bpf.o: load, attach per interface, the exact drain
// protocol (flip the active flow map, wait out in-flight programs, drain the idle map),
// and the policy maps (./policy.ts) the same programs enforce.
//
// With a bpf folder (./pins.ts) the datapath outlives the agent, and a starting agent
// takes over what an earlier one left:
//   fresh      nothing pinned: new maps, pinned at once; links pinned as they are made.
//   adopted    every pinned map has this object's definition and layout: the object
//              reuses them (state and policy in force included); pinned links get this
//              object's programs by BPF_LINK_UPDATE.
//   replacing  the layout changed: new maps, filled by the agent (endpoints, then the
//              first policy snapshot), while the old programs keep enforcing on the old
//              maps (./retiring.ts); commit() then swaps the programs into the links,
//              moves what can be moved, and pins the new maps in place of the old.
import {
  isBpfError, native, type AttachDirection, type AttachOptions, type BpfObject, type DrainInto, type DrainResult, type Link,
} from "../native/index.js";
import {
  COUNTER, UNJUDGED_CAUSES, UNJUDGED_VERDICTS, unjudgedCounter, type UnjudgedCause, type UnjudgedVerdict,
} from "./records.js";
import { BH_STATE_ACTIVE_MAP, bh_flow_key, bh_flow_value } from "../native/gen/abi.js";
import { PolicyApplier } from "./policy.js";
import { PinDir, type LinkPin } from "./pins.js";
import { concatDrains, RetiringDatapath, sumCounters, type CounterTotals } from "./retiring.js";

export interface DrainedFlows {
  keys: Buffer;
  values: Buffer;
  count: number;
  /** A map's drain failed midway: these entries are what it took before; the rest waits in the map for a later drain. */
  failure?: Error;
}

/**
 * Drains `map`. A batch lookup-and-delete that fails midway has already deleted what it
 * read: that part comes back (the error goes to `failures`) instead of being lost
 * uncounted; the entries it did not reach stay in the map, and the drain after next reads
 * them (the flip makes it the idle map again). Any other error is thrown.
 */
export function drainKept(map: { drain(batchSize?: number, into?: DrainInto): DrainResult }, failures: Error[],
  into?: DrainInto): DrainResult {
  try {
    return into ? map.drain(undefined, into) : map.drain();
  } catch (err) {
    if (!isBpfError(err) || err.partial === undefined) throw err;
    failures.push(err);
    return err.partial;
  }
}

export type Counters = Record<keyof typeof COUNTER, bigint>;
export type UnjudgedCounts = { verdict: UnjudgedVerdict; cause: UnjudgedCause; packets: bigint }[];

export interface DatapathOptions {
  objectPath: string;
  flowMapSize: number;
  /** An event per new flow in the `events` ring buffer; off by default (counters.newFlows
   * counts new flows, and each event cost about half a reference packet: bench/README.md). */
  emitNewFlowEvents?: boolean;
  /** bpffs folder to pin into and adopt from (./pins.ts); none: nothing pinned, and
   * close() detaches everything. */
  bpfDir?: string;
}

export type DatapathStart = "unpinned" | "fresh" | "adopted" | "replacing";

/** What commit() did. */
export interface CommitResult {
  /** Links now running this object's programs, by ifindex (the interfaces the old
   * programs held until now). */
  links: Map<number, Link[]>;
  conntrackCopied: number;
  /** Old flow entries whose layout this agent cannot decode: dropped, counted here. */
  unreadableFlows: number;
}

const DIRECTIONS: readonly AttachDirection[] = ["ingress", "egress"];

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

export class Datapath {
  readonly object: BpfObject;
  readonly policy: PolicyApplier;
  readonly pins: PinDir | undefined;
  private started: DatapathStart;
  private active = 0;
  private retiring: RetiringDatapath | undefined;
  /** Link pins still running the old programs (replacing), by ifindex. */
  private readonly deferred = new Map<number, LinkPin[]>();
  /** Old flow entries drained at commit(), handed out by the next drain(). */
  private retiredFlows: DrainResult[] = [];
  /** Totals of the old counters at commit(): counters() stays cumulative across it. */
  private retiredCounters: CounterTotals | undefined;
  /** Room for one full flow map, which drain() reads into: a fresh pair of ~9 MB Buffers
   * per drain stayed resident until V8 collected them (bench/README.md, agent-load).
   * Made at the first drain(); the agent drains in pieces instead (drainPieces). */
  private scratch: DrainInto | undefined;
  /** Room for one piece of drainPieces(), reused piece after piece. */
  private pieceScratch: DrainInto | undefined;
  private readonly flowMapSize: number;

  constructor(opts: DatapathOptions) {
    this.pins = opts.bpfDir !== undefined ? new PinDir(opts.bpfDir) : undefined;
    this.pins?.ensure();
    this.flowMapSize = opts.flowMapSize;
    this.object = native().openObject(opts.objectPath, {
      rodata: { emit_new_flow_events: u32(opts.emitNewFlowEvents === true ? 1 : 0) },
      maxEntries: { flows_0: opts.flowMapSize, flows_1: opts.flowMapSize },
      ...(this.pins ? { reuseMapsFrom: this.pins.maps } : {}),
    });
    try {
      const keySize = this.object.map("flows_0").keySize;
      const valueSize = this.object.map("flows_0").valueSize;
      if (keySize !== bh_flow_key.size || valueSize !== bh_flow_value.size) {
        throw new Error(`${opts.objectPath}: flow map key/value sizes ${keySize}/${valueSize} differ from `
          + `the agent's ${bh_flow_key.size}/${bh_flow_value.size}: object and agent are from different builds`);
      }
      if (this.object.adoption.reused) {
        // The programs enforcing now keep counting into the half they use: no reset.
        this.started = "adopted";
        this.active = this.object.map("flow_state").lookup(u32(BH_STATE_ACTIVE_MAP))?.readUInt32LE(0) ? 1 : 0;
        this.policy = new PolicyApplier(this.object, { adopt: true });
        this.pins?.pinMaps(this.object); // drops pins of maps this object no longer has
      } else {
        this.object.map("flow_state").update(u32(BH_STATE_ACTIVE_MAP), u32(0));
        this.policy = new PolicyApplier(this.object);
        if (this.pins && this.pins.pinnedMaps().length > 0) {
          this.started = "replacing";
          this.retiring = new RetiringDatapath(this.pins);
        } else {
          this.started = this.pins ? "fresh" : "unpinned";
          this.pins?.pinMaps(this.object);
        }
      }
    } catch (err) {
      this.retiring?.close();
      this.object.close();
      throw err;
    }
  }

  /** How this datapath started; "replacing" until commit(), "adopted" after it. */
  get start(): DatapathStart {
    return this.started;
  }

  /** True while old programs still enforce on old maps (a changed layout, before commit()). */
  get replacing(): boolean {
    return this.retiring !== undefined;
  }

  /** Attaches both directions; on a failure of the second, the first is detached.
   * `name` only labels errors (an ifindex alone tells a reader little). With a bpf folder
   * a live pinned link of the interface is adopted instead (or, while replacing, left to
   * the old program until commit()), and a new tcx link is pinned. */
  attach(iface: AttachOptions["iface"], mode: AttachOptions["mode"], netns?: string, name?: string): Link[] {
    const links: Link[] = [];
    const made: Link[] = [];
    try {
      for (const direction of DIRECTIONS) {
        const program = this.object.program(direction === "ingress" ? "from_pod" : "to_pod");
        const pin = this.pins && typeof iface === "number" ? this.pins.linkPath(iface, direction) : undefined;
        if (pin !== undefined && typeof iface === "number") {
          const pinned = native().pinnedLink(pin);
          if (pinned && pinned.ifindex === iface && pinned.direction === direction) {
            if (this.retiring) {
              const list = this.deferred.get(iface) ?? [];
              list.push({ path: pin, ifindex: iface, direction });
              this.deferred.set(iface, list);
            } else {
              links.push(program.adoptLink(pin));
            }
            continue;
          }
          // Defunct (its interface was deleted and the ifindex reused) or not ours.
          if (pinned) native().removePinnedLink(pin);
        }
        const link = program.attachTc({ iface, direction, mode, netns });
        links.push(link);
        made.push(link);
        if (pin !== undefined && link.mode === "tcx") link.pin(pin);
      }
      return links;
    } catch (err) {
      // Only what was made here: an adopted link keeps enforcing (it is pinned, and the
      // next attempt adopts it again).
      for (const l of made) l.detach();
      if (name !== undefined && err instanceof Error) err.message = `${name}: ${err.message}`;
      throw err;
    }
  }

  /** Removes link pins of interfaces not in `present` (gone while no agent ran). */
  removeStaleLinkPins(present: Iterable<number>): LinkPin[] {
    const keep = new Set(present);
    for (const ifindex of [...this.deferred.keys()]) if (!keep.has(ifindex)) this.deferred.delete(ifindex);
    return this.pins?.removeLinksExcept(keep) ?? [];
  }

  /** Ends "replacing": this object's programs go into every link the old ones held (one
   * BPF_LINK_UPDATE each), the old programs are waited out, the old flow maps drained
   * (their records come with the next drain()), the old counters' totals kept, the old
   * connections copied, and the new maps pinned in place of the old. */
  commit(): CommitResult {
    const retiring = this.retiring;
    const result: CommitResult = { links: new Map(), conntrackCopied: 0, unreadableFlows: 0 };
    if (!retiring) return result;
    const conntrack = this.object.map("conntrack");
    // Entries are copied only when their layout is the same (the map may have grown or
    // shrunk): an entry of another layout would be misread, so those connections are
    // judged anew instead.
    const ct = this.object.adoption.maps["conntrack"] ?? "absent";
    const copyConntrack = ct === "same" || ct.startsWith("max_entries ");
    // Before the swap, so the new programs find the connections at once...
    if (copyConntrack) result.conntrackCopied += retiring.copyConntrack(conntrack);
    for (const [ifindex, pins] of this.deferred) {
      const links: Link[] = [];
      for (const pin of pins) {
        const program = this.object.program(pin.direction === "ingress" ? "from_pod" : "to_pod");
        try {
          links.push(program.adoptLink(pin.path));
        } catch (err) {
          // ENOLINK/ENOENT: the interface went away since; its pin goes too.
          if (!isBpfError(err) || (err.code !== "ENOLINK" && err.code !== "ENOENT")) throw err;
          native().removePinnedLink(pin.path);
        }
      }
      if (links.length) result.links.set(ifindex, links);
    }
    this.deferred.clear();
    retiring.synchronize();
    // ...and after it, for those the old programs made in between.
    if (copyConntrack) result.conntrackCopied += retiring.copyConntrack(conntrack);
    const { flows, unreadable } = retiring.drainAll();
    if (flows.count) this.retiredFlows.push(flows);
    result.unreadableFlows = unreadable;
    const old = retiring.counters();
    this.retiredCounters = this.addCounters(this.retiredCounters, old);
    retiring.close();
    this.retiring = undefined;
    this.pins?.pinMaps(this.object);
    this.started = "adopted";
    return result;
  }

  /** Every entry counted since the previous drain, each exactly once (while replacing,
   * the old maps' entries too). The Buffers may be views of the datapath's own scratch:
   * valid until the next drain (decode them before draining again). */
  drain(): DrainedFlows {
    const idle = this.flip();
    const parts = [...this.retiredFlows];
    this.retiredFlows = [];
    const failures: Error[] = [];
    if (this.retiring) parts.push(drainKept(this.retiring, failures));
    this.scratch ??= {
      keys: Buffer.allocUnsafeSlow(this.flowMapSize * bh_flow_key.size),
      values: Buffer.allocUnsafeSlow(this.flowMapSize * bh_flow_value.size),
    };
    parts.push(drainKept(this.object.map(`flows_${idle}`), failures, this.scratch));
    return { ...concatDrains(parts), ...(failures[0] ? { failure: failures[0] } : {}) };
  }

  /**
   * The same entries as drain(), handed to `onPiece` in pieces of at most `pieceEntries`
   * (the idle map is read a piece at a time, the rest staying in it until the next piece),
   * so that neither the read nor its decoding ever holds a full map's worth. A piece's
   * Buffers are valid during the call only; when `onPiece` returns a promise, the next
   * piece waits for it (the agent lets its sinks write meanwhile). Resolves to the entries
   * drained and the first failure (after a failure the map's rest waits for a later drain,
   * as with drain()).
   */
  async drainPieces(pieceEntries: number, onPiece: (piece: DrainedFlows) => Promise<void> | void):
    Promise<{ count: number; failure?: Error }> {
    if (!Number.isInteger(pieceEntries) || pieceEntries < 1) throw new RangeError(`drainPieces: pieceEntries ${pieceEntries}: expected an integer >= 1`);
    const idle = this.flip();
    const whole = [...this.retiredFlows];
    this.retiredFlows = [];
    const failures: Error[] = [];
    if (this.retiring) whole.push(drainKept(this.retiring, failures));
    let count = 0;
    // Old maps' entries (an upgrade only) come whole; they are handed on in slices.
    for (const part of whole) {
      for (let i = 0; i < part.count; i += pieceEntries) {
        const n = Math.min(pieceEntries, part.count - i);
        await onPiece({ keys: part.keys.subarray(i * bh_flow_key.size, (i + n) * bh_flow_key.size),
          values: part.values.subarray(i * bh_flow_value.size, (i + n) * bh_flow_value.size), count: n });
        count += n;
      }
    }
    if (this.pieceScratch === undefined || this.pieceScratch.keys.length !== pieceEntries * bh_flow_key.size) {
      this.pieceScratch = {
        keys: Buffer.allocUnsafeSlow(pieceEntries * bh_flow_key.size),
        values: Buffer.allocUnsafeSlow(pieceEntries * bh_flow_value.size),
        stopWhenFull: true,
      };
    }
    const map = this.object.map(`flows_${idle}`);
    // Each piece resumes at the kernel's batch position where the last one stopped (a
    // restart at bucket 0 walks every emptied bucket again: quadratic in pieces); the map
    // is read through when a piece comes back without a position.
    let from: Buffer | undefined;
    for (;;) {
      const before = failures.length;
      const piece = drainKept(map, failures, from ? { ...this.pieceScratch, from } : this.pieceScratch);
      if (piece.count > 0) {
        await onPiece(piece);
        count += piece.count;
      }
      if (failures.length > before || piece.next === undefined) break;
      from = piece.next;
    }
    return { count, ...(failures[0] ? { failure: failures[0] } : {}) };
  }

  /** Makes the other flow map the active one and waits until no program still writes
   * into the one it leaves; returns that one's index. */
  private flip(): number {
    const idle = this.active;
    this.active = 1 - idle;
    this.object.map("flow_state").update(u32(BH_STATE_ACTIVE_MAP), u32(this.active));
    // After this returns no program still writes into the map it read before the flip.
    this.object.synchronize("sync_outer");
    return idle;
  }

  /** Cumulative datapath counters summed over CPUs (kernel-lifetime totals: a pinned
   * map keeps counting across agents). */
  counters(): Counters {
    const map = this.object.map("counters");
    let out = sumCounters((key) => map.lookup(key));
    if (this.retiring) out = this.addCounters(out, this.retiring.counters());
    return this.addCounters(out, this.retiredCounters);
  }

  private addCounters(a: CounterTotals | undefined, b: CounterTotals | undefined): CounterTotals {
    if (!a) return b ?? sumCounters(() => null);
    if (!b) return a;
    const out = { ...a };
    for (const k of Object.keys(COUNTER) as (keyof typeof COUNTER)[]) out[k] = a[k] + b[k];
    return out;
  }

  /** Cumulative frames the programs could not judge, by verdict and cause, summed over CPUs. */
  unjudged(): UnjudgedCounts {
    const map = this.object.map("counters");
    const out: UnjudgedCounts = [];
    for (const verdict of UNJUDGED_VERDICTS) {
      for (const cause of UNJUDGED_CAUSES) {
        const perCpu = map.lookup(u32(unjudgedCounter(verdict, cause)));
        let packets = 0n;
        if (perCpu) for (let off = 0; off + 8 <= perCpu.length; off += 8) packets += perCpu.readBigUInt64LE(off);
        out.push({ verdict, cause, packets });
      }
    }
    return out;
  }

  /** Detaches every link and closes every fd (pins of links made here go with them). */
  close(): void {
    this.retiring?.close();
    this.object.close();
  }

  /** Closes every fd and leaves what is pinned enforcing: what a stopping agent does. */
  release(): void {
    this.retiring?.close();
    this.object.release();
  }
}
