// The lab's addressing plan and names, in one place (README.md describes the same plan):
//
//   underlay      bh-underlay netns, bridge br0; node i eth0 (a macvlan on br0) = 172.30.0.(10+i)/24,
//                 fd00:30::(10+i)/64
//   pod CIDRs     node i: 10.244.i.0/24 and fd00:244:0:i::/64; pods get .2-.254, lowest free first,
//                 and the IPv6 address repeats the IPv4 host number: 10.244.1.7 ↔ fd00:244:0:1::7
//   ClusterIPs    10.96.0.0/16, lowest free from 10.96.0.10 (IPv4 only)
//   gateway       pods route via 169.254.1.1 (proxy ARP) and fe80::1 (on every host veth)
//   outside host  bh-outside netns: 198.51.100.10/24 and 2001:db8:100::10/64 (documentation
//                 ranges, RFC 5737 and RFC 3849), on the underlay as 172.30.0.250 and
//                 fd00:30::250; nodes route the two ranges to it, it routes the pod CIDRs
//                 back to the nodes, and nothing else
//
// Every address is private to the lab's namespaces: nothing here is routed to or from the
// root namespace.
import { createHash } from "node:crypto";

/**
 * `BULKHEAD_LAB_INSTANCE=N` (a small positive integer) names a second lab that can run on the
 * same machine beside the default one (./scripts/test runs two kernel chains at once): netns
 * `bhN-…`, state under /run/bulkhead/lab-N, pins under /sys/fs/bpf/bulkhead-N. Unset or empty
 * keeps the default names.
 */
export const LAB_INSTANCE = readLabInstance(process.env.BULKHEAD_LAB_INSTANCE);
/** "" for the default lab, "-N" for instance N: the suffix of its folders. */
export const LAB_INSTANCE_SUFFIX = LAB_INSTANCE === "" ? "" : `-${LAB_INSTANCE}`;
export const NETNS_PREFIX = `bh${LAB_INSTANCE}-`;
export const UNDERLAY_NETNS = `${NETNS_PREFIX}underlay`;
export const POD_NETNS_PREFIX = `${NETNS_PREFIX}pod-`;
export const UNDERLAY_BRIDGE = "br0";
/** A device in each node that swallows what no route claims (ClusterIPs without a DNAT match). */
export const NODE_SINK_IFACE = "lab0";
export const POD_GATEWAY_V4 = "169.254.1.1";
export const POD_GATEWAY_V6 = "fe80::1";
/** The MAC of every host-side pod veth, as Calico does: the pod's gateway is "the host". */
export const HOST_VETH_MAC = "ee:ee:ee:ee:ee:ee";
export const SERVICE_CIDR = "10.96.0.0/16";
/** A host outside the cluster (the world, to the control plane), reached from pods through their node. */
export const OUTSIDE_NETNS = `${NETNS_PREFIX}outside`;
export const OUTSIDE = {
  ip: "198.51.100.10",
  ipv6: "2001:db8:100::10",
  cidr: "198.51.100.0/24",
  cidrV6: "2001:db8:100::/64",
  /** Its address on the underlay, the nodes' next hop to it (above every node's 172.30.0.(10+i)). */
  underlayIp: "172.30.0.250",
  underlayIpv6: "fd00:30::250",
  linkLocal: "fe80::250",
} as const;
const FIRST_POD_HOST = 2;
const LAST_POD_HOST = 254;

export interface NodeAddresses {
  ip: string;
  ipv6: string;
  podCIDR: string;
  podCIDRv6: string;
}

/** `index` is 1-based: node1 is index 1. */
export function nodeAddresses(index: number): NodeAddresses {
  return {
    ip: `172.30.0.${10 + index}`,
    ipv6: `fd00:30::${10 + index}`,
    podCIDR: `10.244.${index}.0/24`,
    podCIDRv6: `fd00:244:0:${index}::/64`,
  };
}

export function podAddresses(nodeIndex: number, host: number): { ip: string; ipv6: string } {
  return { ip: `10.244.${nodeIndex}.${host}`, ipv6: `fd00:244:0:${nodeIndex}::${host}` };
}

/** The host number of a pod IPv4 address (10.244.i.h → h). */
export function podHost(ip: string): number {
  return Number(ip.split(".")[3]);
}

/** Lowest free host number in a node's pod CIDR, so a freed address is reused first. */
export function allocatePodHost(used: ReadonlySet<number>, node: string): number {
  for (let host = FIRST_POD_HOST; host <= LAST_POD_HOST; host++) {
    if (!used.has(host)) return host;
  }
  throw new Error(`node ${node}: pod CIDR is full (${LAST_POD_HOST - FIRST_POD_HOST + 1} pods)`);
}

/** Lowest free ClusterIP from 10.96.0.10 (the first ten are left for well-known Services). */
export function allocateClusterIP(used: ReadonlySet<string>): string {
  for (let n = 10; n < 65535; n++) {
    const ip = `10.96.${n >> 8}.${n & 255}`;
    if (!used.has(ip)) return ip;
  }
  throw new Error(`Service CIDR ${SERVICE_CIDR} is full`);
}

export function nodeNetns(node: string): string {
  return `${NETNS_PREFIX}${node}`;
}

/** Named like a CNI's host veth: `lxc` + 11 hex characters of a hash of namespace/name. */
export function hostIfaceName(namespace: string, name: string): string {
  return `lxc${digest(`${namespace}/${name}`).slice(0, 11)}`;
}

/**
 * `bh-pod-<ns>-<name>`, unless that is long or already taken (ns "a-b"/pod "c" and ns "a"/pod
 * "b-c" read the same), in which case a hash of namespace/name keeps it unique.
 */
export function podNetnsName(namespace: string, name: string, taken: ReadonlySet<string>): string {
  const plain = `${POD_NETNS_PREFIX}${namespace}-${name}`;
  if (plain.length <= 60 && !taken.has(plain)) return plain;
  return `${POD_NETNS_PREFIX}${`${namespace}-${name}`.slice(0, 40)}-${digest(`${namespace}/${name}`).slice(0, 12)}`;
}

/** Is `name` one of the lab's netns (never the bhaddon-/bhbpf- netns of other test suites)? */
export function isLabNetns(name: string, nodes: readonly string[]): boolean {
  return name === UNDERLAY_NETNS || name === OUTSIDE_NETNS || name.startsWith(POD_NETNS_PREFIX) || isNumberedNode(name)
    || nodes.some((node) => nodeNetns(node) === name);
}

const NUMBERED_NODE = new RegExp(`^${NETNS_PREFIX}node[0-9]+$`);
function isNumberedNode(name: string): boolean {
  return NUMBERED_NODE.test(name);
}

function readLabInstance(value: string | undefined): string {
  if (value === undefined || value === "") return "";
  if (!/^[1-9][0-9]?$/.test(value)) {
    throw new Error(`BULKHEAD_LAB_INSTANCE=${value}: expected a number from 1 to 99 (or unset for the default lab)`);
  }
  return value;
}

export function digest(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
