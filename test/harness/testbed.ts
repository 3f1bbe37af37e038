// The hand-built topology of the datapath tests that load the programs themselves (enforce,
// fail-closed, conntrack, restart): node namespaces with their address on lo, pods on veths
// whose host ends sit in their node the way a point-to-point CNI leaves them (/32 and /128
// routes; fe80::1 on the host end for IPv6), and optionally an "outside" host behind the
// first node, in a documentation or lab range and with no route anywhere else. Every
// namespace is named `<tag>-<pid>-…`, built with the lab's commands (lab/netns.ts);
// teardown() kills what spawnIn() started and deletes every namespace, whatever failed.
import { spawn } from "node:child_process";
import { ipBatch, netnsExecArgv, run, setSysctls } from "../../lab/netns.js";
import { existsSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { Spawned } from "./process.js";

export interface BedNode { name: string; netns: string; ip: string }

/** A pod as the tests describe it; the bed fills in ifindex and the MAC addresses. */
export interface BedPod {
  name: string;
  netns: string;
  ip: string;
  /** With an IPv6 address the pod is dual stack (the bed must be too). */
  ip6?: string;
  /** Host end of the veth, in the node's namespace. */
  hostIf: string;
  /** Its node (default: the bed's first). */
  node?: BedNode;
  ifindex: number;
  /** Date.now() just before its veth was created. */
  createdAt?: number;
  mac?: string;
  hostMac?: string;
}

export interface OutsideHost {
  netns: string;
  /** Its address and the node's end of their link (an address of the same /len). */
  ip: string;
  gateway: string;
  len: number;
  ip6?: string;
  gateway6?: string;
  len6?: number;
  /** Prefixes it routes back through the node (the pods'). */
  routes: string[];
  routes6?: string[];
}

export interface TestbedSpec<P extends BedPod> {
  /** `<tag>-<pid>`: the namespace prefix; a crashed run's namespaces of the same tag go first. */
  prefix: string;
  nodes: BedNode[];
  pods: P[];
  /** Dual stack (IPv6 without DAD) or IPv4 only (IPv6 disabled everywhere). */
  ipv6: boolean;
  /** The prefixes each pod routes through its node (v4 via the node's address, v6 via fe80::1). */
  podRoutes: string[];
  podRoutes6?: string[];
  /** The nodes' sysctls besides forwarding. */
  nodeSysctls?: Record<string, number>;
  outside?: OutsideHost;
}

const NO_DAD = { "net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0 };
const NO_IPV6 = { "net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1 };
/** Where the tests pin BPF objects. */
export const BPFFS = "/sys/fs/bpf";
/** The veth between the first node and the outside host, in the node. */
export const OUTSIDE_LINK = "wld0";

export class Testbed<P extends BedPod> {
  readonly pods: P[] = [];
  private readonly children = new Set<Spawned>();
  private readonly namespaces = new Set<string>();

  private constructor(readonly spec: TestbedSpec<P>) {}

  /** Builds the nodes, the pods and the outside host; on failure, tears down what it built. */
  static async create<P extends BedPod>(spec: TestbedSpec<P>): Promise<Testbed<P>> {
    await removeStale(spec.prefix);
    const bed = new Testbed(spec);
    try {
      for (const n of spec.nodes) {
        await bed.netnsAdd(n.netns);
        await setSysctls(n.netns, { ...bed.family, "net.ipv4.ip_forward": 1, ...(spec.ipv6 ? { "net.ipv6.conf.all.forwarding": 1 } : {}), ...spec.nodeSysctls });
        await ipBatch(n.netns, ["link set lo up", `addr add ${n.ip}/32 dev lo`]);
      }
      for (const p of spec.pods) await bed.addPod(p);
      if (spec.outside) await bed.addOutside(spec.outside);
    } catch (err) {
      await bed.teardown();
      throw err;
    }
    return bed;
  }

  private get family(): Record<string, number> {
    return this.spec.ipv6 ? NO_DAD : NO_IPV6;
  }

  nodeOf(p: BedPod): BedNode {
    const node = p.node ?? this.spec.nodes[0];
    if (!node) throw new Error(`${p.name}: the bed has no node`);
    return node;
  }

  /** A pod's namespace and veth (also after create(): a pod that comes later). */
  async addPod(p: P): Promise<void> {
    const node = this.nodeOf(p);
    await this.netnsAdd(p.netns);
    await setSysctls(p.netns, this.family);
    const v6 = this.spec.ipv6 && p.ip6 !== undefined;
    p.createdAt = Date.now();
    await ipBatch(node.netns, [`link add ${p.hostIf} type veth peer name eth0 netns ${p.netns}`, `link set ${p.hostIf} up`,
      ...(v6 ? [`addr add fe80::1/64 dev ${p.hostIf}`] : []),
      `route add ${p.ip}/32 dev ${p.hostIf} scope link`, ...(v6 ? [`route add ${p.ip6}/128 dev ${p.hostIf}`] : [])]);
    await ipBatch(p.netns, ["link set lo up", "link set eth0 up", `addr add ${p.ip}/32 dev eth0`,
      ...(v6 ? [`addr add ${p.ip6}/128 dev eth0 nodad`] : []), `route add ${node.ip}/32 dev eth0 scope link`,
      ...this.spec.podRoutes.map((r) => `route add ${r} via ${node.ip} dev eth0`),
      ...(v6 ? (this.spec.podRoutes6 ?? []).map((r) => `route add ${r} via fe80::1 dev eth0`) : [])]);
    const link = await linkOf(node.netns, p.hostIf);
    p.ifindex = link.ifindex;
    p.hostMac = link.address;
    p.mac = (await linkOf(p.netns, "eth0")).address;
    this.pods.push(p);
  }

  /** What a CNI DEL does: delete the host veth (its peer goes with it), then the netns. */
  async removePod(p: P): Promise<void> {
    await ipBatch(this.nodeOf(p).netns, [`link del ${p.hostIf}`]);
    await run(["ip", "netns", "del", p.netns]);
    this.namespaces.delete(p.netns);
    this.pods.splice(this.pods.indexOf(p), 1);
  }

  private async addOutside(o: OutsideHost): Promise<void> {
    const node = this.spec.nodes[0];
    if (!node) throw new Error("an outside host needs a node");
    const v6 = o.ip6 !== undefined;
    await this.netnsAdd(o.netns);
    if (v6) await setSysctls(o.netns, NO_DAD);
    await ipBatch(node.netns, [`link add ${OUTSIDE_LINK} type veth peer name eth0 netns ${o.netns}`, `link set ${OUTSIDE_LINK} up`,
      `addr add ${o.gateway}/${o.len} dev ${OUTSIDE_LINK}`, ...(v6 ? [`addr add ${o.gateway6}/${o.len6} dev ${OUTSIDE_LINK} nodad`] : [])]);
    await ipBatch(o.netns, ["link set lo up", "link set eth0 up", `addr add ${o.ip}/${o.len} dev eth0`,
      ...(v6 ? [`addr add ${o.ip6}/${o.len6} dev eth0 nodad`] : []),
      ...o.routes.map((r) => `route add ${r} via ${o.gateway} dev eth0`),
      ...(v6 ? (o.routes6 ?? []).map((r) => `route add ${r} via ${o.gateway6} dev eth0`) : [])]);
  }

  private async netnsAdd(name: string): Promise<void> {
    this.namespaces.add(name);
    await run(["ip", "netns", "add", name]);
  }

  /** Starts argv in `netns` (`how`: `ip netns exec`, or nsenter to keep /sys/fs/bpf);
   * teardown() kills it if it still runs. */
  spawnIn(netns: string, argv: readonly string[], opts: { how?: typeof netnsExecArgv; stdin?: "pipe" | "ignore" } = {}): Spawned {
    const [cmd, ...args] = (opts.how ?? netnsExecArgv)(netns, argv);
    const child = spawn(cmd ?? "false", args, { stdio: [opts.stdin ?? "pipe", "pipe", "pipe"] });
    const s = new Spawned(child, `${argv.slice(0, 3).join(" ")} in ${netns}`);
    this.children.add(s);
    void s.exited.then(() => this.children.delete(s));
    return s;
  }

  /** Kills every process spawnIn() started that still runs, then deletes every namespace. */
  async teardown(): Promise<void> {
    await Promise.all([...this.children].map(async (c) => {
      c.child.kill("SIGKILL");
      await c.exited;
    }));
    for (const ns of [...this.namespaces].reverse()) await run(["ip", "netns", "del", ns], { allowFail: true });
    this.namespaces.clear();
    this.pods.length = 0;
  }
}

async function linkOf(netns: string, dev: string): Promise<{ ifindex: number; address: string }> {
  const out = JSON.parse((await run(["ip", "-n", netns, "-j", "link", "show", "dev", dev])).stdout) as { ifindex: number; address: string }[];
  const link = out[0];
  if (!link) throw new Error(`${netns}: no link ${dev}`);
  return link;
}

/**
 * Which names a run that skipped its teardown left behind: `<tag>-<pid>…` (the tag and pid of
 * `prefix`, "bhpol-123" or "bhagt-123-4") of a process that is gone, and `prefix`'s own from an
 * earlier attempt (a retried set-up). Names of this process under other prefixes are not.
 */
function staleNames(prefix: string): (name: string) => boolean {
  const tag = /^(.+?)-\d+(?:-|$)/.exec(prefix)?.[1];
  if (tag === undefined) throw new Error(`testbed prefix ${prefix}: expected <tag>-<pid>[-<n>]`);
  return (name) => {
    const pid = new RegExp(`^${tag}-(\\d+)(?:-|$)`).exec(name)?.[1];
    if (pid === undefined) return false;
    return name === prefix || name.startsWith(`${prefix}-`) || (Number(pid) !== process.pid && !existsSync(`/proc/${pid}`));
  };
}

function removeStalePins(prefix: string): void {
  const stale = staleNames(prefix);
  for (const name of existsSync(BPFFS) ? readdirSync(BPFFS) : []) {
    if (stale(name)) rmSync(path.join(BPFFS, name), { recursive: true, force: true });
  }
}

/** Removes the namespaces and bpffs pins a run that skipped its teardown left behind (staleNames). */
export async function removeStale(prefix: string): Promise<void> {
  const stale = staleNames(prefix);
  for (const name of existsSync("/run/netns") ? readdirSync("/run/netns") : []) {
    if (stale(name)) await run(["ip", "netns", "del", name], { allowFail: true });
  }
  removeStalePins(prefix);
}

/**
 * This test process's pin folder, `/sys/fs/bpf/<tag>-<pid>`, once the folders of `<tag>` runs
 * that are gone are removed: a run killed before its teardown leaves its pinned links, and
 * they keep its programs loaded until someone unpins them.
 */
export function testPinDir(tag: string): string {
  const prefix = `${tag}-${process.pid}`;
  removeStalePins(prefix);
  return path.join(BPFFS, prefix);
}
