// Builds and tears down the lab's namespaces and links:
//   bh-underlay   bridge br0, the lower device of every node's eth0 (macvlan, bridge mode)
//   bh-<node>     eth0 on the underlay, routes to the other nodes' pod CIDRs, forwarding on,
//                 lab0 (an ifb: swallows what only a route claims), one lxc* veth per pod
//   bh-pod-…      lo and eth0 only; default routes via 169.254.1.1 / fe80::1
//   bh-outside    eth0 on the underlay with 198.51.100.10 and 2001:db8:100::10 (the world to
//                 pods); routes to the pod CIDRs via their nodes, no default route
// Nothing here touches the root namespace beyond creating the netns names in /run/netns.
import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import {
  HOST_VETH_MAC, NODE_SINK_IFACE, OUTSIDE, OUTSIDE_NETNS, POD_GATEWAY_V4, POD_GATEWAY_V6, SERVICE_CIDR, UNDERLAY_BRIDGE, UNDERLAY_NETNS,
  isLabNetns, LAB_INSTANCE_SUFFIX, podHost, POD_NETNS_PREFIX,
} from "./addressing.js";
import { ipBatch, listNetns, netnsExecArgv, run, setSysctls, stopProcessesIn, underlayPeers } from "./netns.js";
import type { LabNode, LabPod } from "./state.js";

/** Where agents pin BPF objects by default (one folder per lab instance); `lab down` removes it. */
export const BPF_PIN_DIR = `/sys/fs/bpf/bulkhead${LAB_INSTANCE_SUFFIX}`;
/** Agents get this long to stop on SIGTERM (they detach programs) before SIGKILL. */
export const STOP_GRACE_MS = 5000;
const MAX_PARALLEL = 16;

export async function createUnderlay(stateDir: string): Promise<void> {
  await ipBatch(undefined, [`netns add ${UNDERLAY_NETNS}`]);
  await ipBatch(UNDERLAY_NETNS, [
    "link set lo up",
    `link add ${UNDERLAY_BRIDGE} type bridge`,
    // Records which state dir owns this lab, for `lab status` and for a later `lab up`.
    `link set ${UNDERLAY_BRIDGE} alias ${JSON.stringify(`bulkhead-lab ${stateDir}`)}`,
    `link set ${UNDERLAY_BRIDGE} up`,
  ]);
}

/** The state dir recorded on the underlay bridge, if the underlay exists. */
export async function underlayOwner(): Promise<string | undefined> {
  const result = await run(["ip", "-n", UNDERLAY_NETNS, "-j", "link", "show", UNDERLAY_BRIDGE], { allowFail: true });
  if (result.code !== 0) return undefined;
  const match = /"ifalias":"bulkhead-lab ([^"]*)"/.exec(result.stdout);
  return match?.[1];
}

export async function createNodes(nodes: readonly LabNode[]): Promise<void> {
  await ipBatch(undefined, nodes.map((n) => `netns add ${n.netns}`));
  // The node's NIC is a macvlan on the underlay bridge, not a veth: as on a real node, the
  // only veths in a node netns are pod interfaces.
  await ipBatch(UNDERLAY_NETNS, nodes.map((n) => `link add link ${UNDERLAY_BRIDGE} name eth0 netns ${n.netns} type macvlan mode bridge`));
  await Promise.all(nodes.map(async (node) => {
    const others = nodes.filter((o) => o.name !== node.name);
    await ipBatch(node.netns, [
      "link set lo up",
      // A fixed link-local without DAD: while an autoconfigured one is tentative the node
      // sends no neighbour solicitation for forwarded packets, and the first pod-to-pod
      // IPv6 packets across nodes are lost.
      "link set eth0 addrgenmode none",
      `address add fe80::${(10 + node.index).toString(16)}/64 dev eth0 nodad`,
      `address add ${node.ip}/24 dev eth0`,
      `address add ${node.ipv6}/64 dev eth0 nodad`,
      "link set eth0 up",
      `link add ${NODE_SINK_IFACE} type ifb`,
      `link set ${NODE_SINK_IFACE} addrgenmode none`,
      `link set ${NODE_SINK_IFACE} up`,
      // Proxy ARP answers for the pods' gateway only if the node has a route to it that
      // does not point back at the asking veth; this one goes nowhere.
      `route add ${POD_GATEWAY_V4}/32 dev ${NODE_SINK_IFACE}`,
      // Node-local connects to a ClusterIP need a route before the output DNAT hook runs.
      `route add ${SERVICE_CIDR} dev ${NODE_SINK_IFACE}`,
      ...others.flatMap((o) => [
        `route add ${o.podCIDR} via ${o.ip} dev eth0`,
        `route add ${o.podCIDRv6} via ${o.ipv6} dev eth0`,
      ]),
    ]);
    // After eth0 exists, so only the pod veths created later inherit proxy_arp.
    await setSysctls(node.netns, {
      "net.ipv4.ip_forward": 1,
      "net.ipv6.conf.all.forwarding": 1,
      "net.ipv4.conf.all.rp_filter": 0,
      "net.ipv4.conf.default.rp_filter": 0,
      "net.ipv4.conf.default.proxy_arp": 1,
    });
  }));
}

/**
 * The outside host: its own netns on the underlay (a macvlan, as the nodes' eth0), its
 * documentation-range addresses, routes to each node's pod CIDRs via that node, and in
 * every node a route to the outside ranges via it. Pods reach it through their node as
 * they would reach the internet through a node's uplink (no masquerade: it sees pod IPs,
 * as with native routing). No route anywhere else, here or in the nodes.
 */
export async function createOutside(nodes: readonly LabNode[]): Promise<void> {
  await ipBatch(undefined, [`netns add ${OUTSIDE_NETNS}`]);
  await ipBatch(UNDERLAY_NETNS, [`link add link ${UNDERLAY_BRIDGE} name eth0 netns ${OUTSIDE_NETNS} type macvlan mode bridge`]);
  await ipBatch(OUTSIDE_NETNS, [
    "link set lo up",
    // Fixed link-local without DAD, as on the nodes: no tentative address to delay the first packets.
    "link set eth0 addrgenmode none",
    `address add ${OUTSIDE.linkLocal}/64 dev eth0 nodad`,
    `address add ${OUTSIDE.underlayIp}/24 dev eth0`,
    `address add ${OUTSIDE.underlayIpv6}/64 dev eth0 nodad`,
    `address add ${OUTSIDE.ip}/24 dev eth0`,
    `address add ${OUTSIDE.ipv6}/64 dev eth0 nodad`,
    "link set eth0 up",
    ...nodes.flatMap((n) => [`route add ${n.podCIDR} via ${n.ip} dev eth0`, `route add ${n.podCIDRv6} via ${n.ipv6} dev eth0`]),
  ]);
  await Promise.all(nodes.map((n) => ipBatch(n.netns, [
    `route add ${OUTSIDE.cidr} via ${OUTSIDE.underlayIp} dev eth0`,
    `route add ${OUTSIDE.cidrV6} via ${OUTSIDE.underlayIpv6} dev eth0`,
  ])));
}

/** Creates pods' netns and veths: a few `ip -batch` runs, not a command per setting. */
export async function createPods(pods: readonly LabPod[], nodes: readonly LabNode[]): Promise<void> {
  if (pods.length === 0) return;
  await ipBatch(undefined, pods.map((p) => `netns add ${p.netns}`));
  await Promise.all(nodes.map((node) => ipBatch(node.netns, pods.filter((p) => p.node === node.name).flatMap((p) => [
    `link add ${p.hostIface} address ${HOST_VETH_MAC} type veth peer name eth0 netns ${p.netns}`,
    `link set ${p.hostIface} addrgenmode none`,
    // Proxy ARP replies are otherwise delayed by up to 0.8 s (neigh.default is not per netns).
    `ntable change name arp_cache dev ${p.hostIface} proxy_delay 0`,
    `link set ${p.hostIface} up`,
    `address add ${POD_GATEWAY_V6}/64 dev ${p.hostIface} nodad`,
    `route add ${p.ip}/32 dev ${p.hostIface}`,
    `route add ${p.ipv6}/128 dev ${p.hostIface}`,
  ]))));
  await inParallel(pods, MAX_PARALLEL, (p) => ipBatch(p.netns, [
    "link set lo up",
    // No autoconfigured link-local: it would sit in DAD for a second; a fixed one does not.
    "link set eth0 addrgenmode none",
    `address add ${p.ip}/32 dev eth0`,
    `address add ${p.ipv6}/128 dev eth0 nodad`,
    `address add fe80::${podHost(p.ip).toString(16)}/64 dev eth0 nodad`,
    "link set eth0 up",
    `route add default via ${POD_GATEWAY_V4} dev eth0 onlink`,
    `route add default via ${POD_GATEWAY_V6} dev eth0`,
  ]));
}

/**
 * Removes one pod: its processes, its host veth (synchronously, so the name can be reused
 * at once), its netns, and conntrack entries naming its IP on every node (the IP may soon
 * belong to another pod).
 */
export async function deletePodDatapath(pod: LabPod, nodes: readonly LabNode[]): Promise<void> {
  await stopProcessesIn([pod.netns], 2000);
  const node = nodes.find((n) => n.name === pod.node);
  if (node) await ipBatch(node.netns, [`link del ${pod.hostIface}`], { force: true });
  await ipBatch(undefined, [`netns del ${pod.netns}`], { force: true });
  await Promise.all(nodes.map((n) => run(netnsExecArgv(n.netns, ["sh", "-c",
    'for f in -s -d -r -q; do conntrack -D "$f" "$1"; done >/dev/null 2>&1; true', "conntrack-flush", pod.ip]), { allowFail: true })));
}

export interface TeardownReport {
  netns: string[];
  stoppedPids: number[];
  pinsRemoved: boolean;
}

/**
 * Removes every lab netns: `bh-underlay`, `bh-pod-*`, `bh-node<N>`, the node netns named in
 * state, and any netns still joined to the underlay bridge. Agents (in node netns) are
 * stopped first, then whatever runs in pods; then pods, nodes and the underlay are deleted.
 * Never touches netns of other suites (bhaddon-*, bhbpf-*).
 */
export async function teardown(knownNodes: readonly string[], opts: { pinDir?: string }): Promise<TeardownReport> {
  const peers = await underlayPeers(knownNodes);
  const all = (await listNetns()).filter((n) => isLabNetns(n, knownNodes) || peers.includes(n));
  const pods = all.filter((n) => n.startsWith(POD_NETNS_PREFIX));
  const nodes = all.filter((n) => n !== UNDERLAY_NETNS && !pods.includes(n));
  const stoppedPids = [
    ...(await stopProcessesIn(nodes, STOP_GRACE_MS)),
    ...(await stopProcessesIn([...pods, ...all.filter((n) => n === UNDERLAY_NETNS)], STOP_GRACE_MS)),
  ];
  const ordered = [...pods, ...nodes, ...all.filter((n) => n === UNDERLAY_NETNS)];
  await ipBatch(undefined, ordered.map((n) => `netns del ${n}`), { force: true });
  const left = (await listNetns()).filter((n) => ordered.includes(n));
  if (left.length > 0) throw new Error(`lab teardown: could not delete netns ${left.join(", ")}`);
  let pinsRemoved = false;
  if (opts.pinDir !== undefined && existsSync(opts.pinDir)) {
    await rm(opts.pinDir, { recursive: true, force: true });
    pinsRemoved = true;
  }
  return { netns: ordered, stoppedPids, pinsRemoved };
}

async function inParallel<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}
