// Keeps exactly one pair of links (from-pod, to-pod) on every pod interface present, and
// none on interfaces that are gone. Attach failures are counted and retried on the next
// scan; they never stop the other interfaces.
import type { Link } from "../native/index.js";
import { isBpfError } from "../native/index.js";
import type { PodInterface } from "./interfaces.js";

export interface AttachTarget {
  attach(iface: number, name: string): Link[];
}

export interface AttacherEvents {
  attached(iface: PodInterface, links: Link[]): void;
  detached(iface: PodInterface): void;
  failed(iface: PodInterface, cause: string, err: Error): void;
}

interface Attached extends PodInterface { links: Link[] }

export class Attacher {
  private readonly attached = new Map<number, Attached>();
  /** Names of interfaces detached since the last drain, for records still in the map. */
  private readonly recentlyGone = new Map<number, string>();

  constructor(private readonly target: AttachTarget, private readonly events: AttacherEvents) {}

  get count(): number {
    return this.attached.size;
  }

  reconcile(present: readonly PodInterface[]): void {
    const want = new Map(present.map((i) => [i.ifindex, i]));
    for (const [ifindex, a] of this.attached) {
      const now = want.get(ifindex);
      if (!now || now.name !== a.name) this.detach(a);
    }
    for (const iface of want.values()) {
      if (this.attached.has(iface.ifindex)) continue;
      try {
        const links = this.target.attach(iface.ifindex, iface.name);
        this.attached.set(iface.ifindex, { ...iface, links });
        this.recentlyGone.delete(iface.ifindex);
        this.events.attached(iface, links);
      } catch (err) {
        const cause = isBpfError(err) ? err.code : "error";
        this.events.failed(iface, cause, err as Error);
      }
    }
  }

  /** Links that began to run our programs later than the attach (the old programs held
   * the interface until a commit). */
  addLinks(ifindex: number, links: Link[]): void {
    const a = this.attached.get(ifindex);
    if (a) a.links.push(...links);
  }

  private detach(a: Attached): void {
    for (const link of a.links) {
      try { link.detach(); } catch { /* the interface is gone: its links already are */ }
    }
    this.attached.delete(a.ifindex);
    this.recentlyGone.set(a.ifindex, a.name);
    this.events.detached(a);
  }

  interfaceName(ifindex: number): string {
    return this.attached.get(ifindex)?.name ?? this.recentlyGone.get(ifindex) ?? "";
  }

  /** Called after a drain: names of gone interfaces are no longer needed. */
  forgetGone(): void {
    this.recentlyGone.clear();
  }

  detachAll(): void {
    for (const a of [...this.attached.values()]) this.detach(a);
  }
}
