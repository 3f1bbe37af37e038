// The agent's bpffs folder (--bpf-dir, one per agent): what keeps the datapath enforcing
// while no agent runs, and what the next agent adopts.
//   <dir>/maps/<map name>             every map of endpoint.bpf.o (internal .rodata aside)
//   <dir>/links/if<ifindex>-<ingress|egress>   one tcx link per pod veth and direction
// A link pin names the ifindex it was made for; on adoption the link's own info says
// whether it still runs on that interface (an ifindex reused by a new veth after the old
// one was deleted finds a defunct link, ifindex 0, whose pin is removed).
import fs from "node:fs";
import path from "node:path";
import { native, type AttachDirection, type BpfObject } from "../native/index.js";

export interface LinkPin {
  path: string;
  ifindex: number;
  direction: AttachDirection;
}

const BPF_FS_MAGIC = 0xcafe4a11;
/** Prefix of a pin being made before it is renamed into place ("-" is in no map name,
 * and bpffs refuses names with a dot). */
const STAGED = "new-";
const LINK_PIN = /^if(\d+)-(ingress|egress)$/;

/** Internal maps (".rodata": per-load constants, "<obj>.bss" …) hold no state worth keeping
 * and cannot all be pinned; user map names are C identifiers, never with a dot. */
export const isStateMap = (name: string) => !name.includes(".");

export class PinDir {
  readonly maps: string;
  readonly links: string;

  constructor(readonly dir: string) {
    this.maps = path.join(dir, "maps");
    this.links = path.join(dir, "links");
  }

  /** Creates the folders (and missing parents), which must be on a bpf filesystem. */
  ensure(): void {
    let existing = path.resolve(this.dir);
    while (!fs.existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
    if (fs.statfsSync(existing).type !== BPF_FS_MAGIC) {
      throw new Error(`--bpf-dir ${this.dir}: ${existing} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf; `
        + "inside `ip netns exec`, /sys is remounted without it: enter the netns with nsenter --net=… instead)");
    }
    fs.mkdirSync(this.maps, { recursive: true });
    fs.mkdirSync(this.links, { recursive: true });
  }

  /** Names of the maps pinned now. */
  pinnedMaps(): string[] {
    return fs.existsSync(this.maps) ? fs.readdirSync(this.maps).filter((n) => !n.startsWith(STAGED)) : [];
  }

  linkPath(ifindex: number, direction: AttachDirection): string {
    return path.join(this.links, `if${ifindex}-${direction}`);
  }

  pinnedLinks(): LinkPin[] {
    if (!fs.existsSync(this.links)) return [];
    const out: LinkPin[] = [];
    for (const name of fs.readdirSync(this.links)) {
      const m = LINK_PIN.exec(name);
      if (m?.[1] && m[2]) out.push({ path: path.join(this.links, name), ifindex: Number(m[1]), direction: m[2] as AttachDirection });
    }
    return out;
  }

  /** Pins every state map of `object` at maps/<name>, replacing what is there: each pin is
   * made beside the old one and renamed over it, so a map path is never missing. Pins of
   * maps the object does not have are removed. */
  pinMaps(object: BpfObject): void {
    const names = object.maps().filter(isStateMap);
    for (const name of names) {
      const final = path.join(this.maps, name);
      const staged = path.join(this.maps, `${STAGED}${name}`);
      fs.rmSync(staged, { force: true });
      object.map(name).pin(staged);
      fs.renameSync(staged, final);
    }
    for (const name of fs.readdirSync(this.maps)) {
      if (!names.includes(name)) fs.rmSync(path.join(this.maps, name), { force: true });
    }
  }

  /** Removes the pins of links whose interface is not in `keep`: those interfaces went
   * away while no agent watched (or while this one did, and the pin outlived it). */
  removeLinksExcept(keep: ReadonlySet<number>): LinkPin[] {
    const removed: LinkPin[] = [];
    for (const pin of this.pinnedLinks()) {
      if (keep.has(pin.ifindex)) continue;
      native().removePinnedLink(pin.path);
      removed.push(pin);
    }
    return removed;
  }

  /** Detaches every pinned link and removes the folder with every pin in it. */
  uninstall(): { links: number; maps: number } {
    let links = 0;
    for (const pin of this.pinnedLinks()) if (native().removePinnedLink(pin.path)) links++;
    const maps = this.pinnedMaps().length;
    fs.rmSync(this.dir, { recursive: true, force: true });
    return { links, maps };
  }
}
