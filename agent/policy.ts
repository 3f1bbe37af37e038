// Segmentation on this node: a PolicySnapshot (proto/bulkhead/v1/policy.proto) becomes the
// kernel's policy set (native/bpf/lib/identity.h, lib/policy.h), and the pod behind each
// veth becomes an `endpoints` entry. A snapshot is compiled and checked whole before the
// kernel sees any of it, written into the inactive half of the double-buffered set, and
// switched to with one flip plus an RCU grace period: no packet is ever judged by a
// half-written policy, and after apply() returns none is judged by the previous one.
// Layouts and values come from native/gen/abi.ts, generated from native/bpf/endpoint.h's
// BTF.
import { parseCidr, parseIp } from "../addresses/ip.js";
import { isBpfError, ROUTE_TABLE_MAIN, type BpfObject, type RouteInfo } from "../native/index.js";
import {
  PolicyDirection, PolicyMode, type PolicyRule, type PolicySnapshot,
} from "../proto/gen/bulkhead/v1/policy.js";
import {
  BH_DIR_EGRESS, BH_DIR_INGRESS, BH_ID_EGRESS_ISOLATED, BH_ID_ENDPOINT, BH_ID_INGRESS_ISOLATED, BH_ID_SERVICE,
  BH_MODE_AUDIT, BH_MODE_ENFORCE, BH_MODE_OBSERVE, BH_POLICY_DENY, BH_POLICY_PREFIX_ANY_PORT, BH_POLICY_PREFIX_ANY_PROTO,
  BH_STATE_ACTIVE_POLICY, BH_STATE_POLICY_VERSION, bh_ct_key, bh_ct_value, bh_endpoint_value, bh_identity_value,
  bh_ip_key, bh_ip_value, bh_policy_key, bh_policy_value,
} from "../native/gen/abi.js";

const MAPS = {
  ipIdentity: (set: number) => `ip_identity_${set}`,
  identities: (set: number) => `identities_${set}`,
  policy: (set: number) => `policy_${set}`,
};

/** A snapshot the agent refused; `entry` names what was wrong. */
export class PolicyError extends Error {
  constructor(readonly version: bigint, readonly entry: string, detail: string) {
    super(`policy version ${version}: ${entry}: ${detail}`);
    this.name = "PolicyError";
  }
}

// ---- addresses ---------------------------------------------------------------------

/** An address in the kernel's form: 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d),
 * as bh_ip_key stores it. */
export function kernelAddress(text: string): { bytes: Buffer; family: 4 | 6 } | undefined {
  const ip = parseIp(text);
  return ip && { bytes: mapped(ip.family, ip.bytes), family: ip.family };
}

/** "a.b.c.d/n" or "x::/n" → the LPM key's prefix length (IPv4: 96 + n) and its address
 * with the host bits cleared. */
export function kernelPrefix(text: string): { bytes: Buffer; prefixLen: number; family: 4 | 6 } | undefined {
  const cidr = parseCidr(text);
  if (!cidr) return undefined;
  const { family } = cidr.address;
  const prefixLen = family === 4 ? 96 + cidr.prefix : cidr.prefix;
  const bytes = mapped(family, cidr.address.bytes);
  for (let bit = prefixLen; bit < 128; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { bytes, prefixLen, family };
}

function mapped(family: 4 | 6, address: Uint8Array): Buffer {
  const bytes = Buffer.alloc(16);
  if (family === 4) {
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(address, 12);
  } else {
    bytes.set(address);
  }
  return bytes;
}

// ---- compilation -------------------------------------------------------------------

/** The fewest (port, fixed leading bits) prefixes that cover lo..hi exactly. */
export function portPrefixes(lo: number, hi: number): { port: number; bits: number }[] {
  const out: { port: number; bits: number }[] = [];
  let p = lo;
  while (p <= hi) {
    let size = 1;
    // Grow the block while it stays aligned at p and inside the range.
    while (size < 0x10000 && p % (size * 2) === 0 && p + size * 2 - 1 <= hi) size *= 2;
    out.push({ port: p, bits: 16 - Math.log2(size) });
    p += size;
  }
  return out;
}

/** Kernel map contents of one snapshot, keyed by the key bytes in hex. */
export interface CompiledPolicy {
  version: bigint;
  identities: Map<string, Buffer>;
  ipIdentities: Map<string, Buffer>;
  policy: Map<string, Buffer>;
  /** Identities of host entries (/32, /128), by 16-byte address in hex: which identity a
   * pod address holds. */
  hosts: Map<string, number>;
}

const MODES: Partial<Record<PolicyMode, number>> = {
  [PolicyMode.POLICY_MODE_UNSPECIFIED]: BH_MODE_OBSERVE,
  [PolicyMode.POLICY_MODE_OBSERVE]: BH_MODE_OBSERVE,
  [PolicyMode.POLICY_MODE_AUDIT]: BH_MODE_AUDIT,
  [PolicyMode.POLICY_MODE_ENFORCE]: BH_MODE_ENFORCE,
};

const isU32 = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

function ruleText(r: PolicyRule, i: number): string {
  const dir = r.direction === PolicyDirection.POLICY_DIRECTION_INGRESS ? "ingress"
    : r.direction === PolicyDirection.POLICY_DIRECTION_EGRESS ? "egress" : `direction ${r.direction}`;
  const ports = r.port ? ` port ${r.port}${r.endPort ? `-${r.endPort}` : ""}` : "";
  return `rules[${i}] (subject ${r.subject} ${dir} peer ${r.peer} protocol ${r.protocol}${ports}${r.deny ? " deny" : ""})`;
}

/** Checks and converts a whole snapshot; throws a PolicyError naming the first bad entry. */
export function compilePolicy(s: PolicySnapshot): CompiledPolicy {
  const fail = (entry: string, detail: string): never => { throw new PolicyError(s.version, entry, detail); };
  const out: CompiledPolicy = {
    version: s.version, identities: new Map(), ipIdentities: new Map(), policy: new Map(), hosts: new Map(),
  };

  s.identities.forEach((id, i) => {
    const entry = `identities[${i}] (id ${id.id}${id.namespace ? `, namespace ${id.namespace}` : ""})`;
    if (!isU32(id.id) || id.id === 0) fail(entry, "identity must be 1..2^32-1 (0 means any peer)");
    const mode = MODES[id.mode];
    if (mode === undefined) fail(entry, `unknown mode ${id.mode}`);
    const key = Buffer.alloc(4);
    key.writeUInt32LE(id.id);
    if (out.identities.has(key.toString("hex"))) fail(entry, "identity listed twice");
    const value = Buffer.alloc(bh_identity_value.size);
    value[bh_identity_value.mode] = mode ?? BH_MODE_OBSERVE;
    value[bh_identity_value.flags] = (id.ingressIsolated ? BH_ID_INGRESS_ISOLATED : 0)
      | (id.egressIsolated ? BH_ID_EGRESS_ISOLATED : 0) | (id.endpoint ? BH_ID_ENDPOINT : 0)
      | (id.service ? BH_ID_SERVICE : 0);
    out.identities.set(key.toString("hex"), value);
  });

  const cidrOwner = new Map<string, string>();
  s.ipIdentities.forEach((e, i) => {
    const entry = `ip_identities[${i}] (${JSON.stringify(e.cidr)} → ${e.identity})`;
    const cidr = kernelPrefix(e.cidr);
    if (!cidr) fail(entry, "not a CIDR (a.b.c.d/n or an IPv6 prefix/n)");
    if (!isU32(e.identity)) fail(entry, "identity must be a u32");
    const { bytes, prefixLen } = cidr!;
    const key = Buffer.alloc(bh_ip_key.size);
    key.writeUInt32LE(prefixLen, bh_ip_key.prefixlen);
    bytes.copy(key, bh_ip_key.addr);
    const hex = key.toString("hex");
    const value = Buffer.alloc(bh_ip_value.size);
    value.writeUInt32LE(e.identity, bh_ip_value.identity);
    const earlier = out.ipIdentities.get(hex);
    if (earlier && !earlier.equals(value)) {
      fail(entry, `the same prefix is already mapped to identity ${earlier.readUInt32LE(0)} by ${cidrOwner.get(hex)}`);
    }
    out.ipIdentities.set(hex, value);
    cidrOwner.set(hex, `ip_identities[${i}]`);
    if (prefixLen === 128) out.hosts.set(bytes.toString("hex"), e.identity);
  });

  s.rules.forEach((r, i) => {
    const entry = ruleText(r, i);
    if (!isU32(r.subject) || r.subject === 0) fail(entry, "subject must be an identity (1..2^32-1)");
    if (!isU32(r.peer)) fail(entry, "peer must be a u32 (0: any)");
    const direction = r.direction === PolicyDirection.POLICY_DIRECTION_INGRESS ? BH_DIR_INGRESS
      : r.direction === PolicyDirection.POLICY_DIRECTION_EGRESS ? BH_DIR_EGRESS
      : fail(entry, "direction must be ingress or egress");
    if (!Number.isInteger(r.protocol) || r.protocol < 0 || r.protocol > 255) fail(entry, "protocol must be 0..255");
    if (!Number.isInteger(r.port) || r.port < 0 || r.port > 65535) fail(entry, "port must be 0..65535");
    if (!Number.isInteger(r.endPort) || r.endPort < 0 || r.endPort > 65535) fail(entry, "end_port must be 0..65535");
    if (r.protocol === 0 && (r.port || r.endPort)) fail(entry, "a port needs a protocol");
    if (r.port === 0 && r.endPort) fail(entry, "end_port needs a port");
    if (r.endPort && r.endPort < r.port) fail(entry, "end_port is below port");

    const prefixes = r.protocol === 0 ? [{ prefixLen: BH_POLICY_PREFIX_ANY_PROTO, port: 0 }]
      : r.port === 0 ? [{ prefixLen: BH_POLICY_PREFIX_ANY_PORT, port: 0 }]
      : portPrefixes(r.port, r.endPort || r.port).map((p) => ({ prefixLen: BH_POLICY_PREFIX_ANY_PORT + p.bits, port: p.port }));
    for (const p of prefixes) {
      const key = Buffer.alloc(bh_policy_key.size);
      key.writeUInt32LE(p.prefixLen, bh_policy_key.prefixlen);
      key.writeUInt32LE(r.subject, bh_policy_key.subject);
      key.writeUInt32LE(r.peer, bh_policy_key.peer);
      key[bh_policy_key.direction] = direction;
      key[bh_policy_key.proto] = p.prefixLen > BH_POLICY_PREFIX_ANY_PROTO ? r.protocol : 0;
      key.writeUInt16BE(p.port, bh_policy_key.port);
      const value = Buffer.alloc(bh_policy_value.size);
      value.writeUInt32LE(r.deny ? BH_POLICY_DENY : 0, bh_policy_value.flags);
      const hex = key.toString("hex");
      const earlier = out.policy.get(hex);
      if (earlier && !earlier.equals(value)) fail(entry, "an entry for the same key says the opposite (allow and deny)");
      out.policy.set(hex, value);
    }
  });
  return out;
}

// ---- endpoints ---------------------------------------------------------------------

export interface EndpointAddresses {
  identity: number;
  ip4?: string;
  ip6?: string;
}

export function endpointValue(ep: EndpointAddresses): Buffer {
  const value = Buffer.alloc(bh_endpoint_value.size);
  if (!isU32(ep.identity)) throw new Error(`endpoint identity ${ep.identity} is not a u32`);
  value.writeUInt32LE(ep.identity, bh_endpoint_value.identity);
  if (ep.ip4 !== undefined) {
    const a = kernelAddress(ep.ip4);
    if (a?.family !== 4) throw new Error(`endpoint ip4 ${JSON.stringify(ep.ip4)} is not an IPv4 address`);
    value[bh_endpoint_value.has_ip4] = 1;
    a.bytes.copy(value, bh_endpoint_value.ip4, 12, 16);
  }
  if (ep.ip6 !== undefined) {
    const a = kernelAddress(ep.ip6);
    if (a?.family !== 6) throw new Error(`endpoint ip6 ${JSON.stringify(ep.ip6)} is not an IPv6 address`);
    value[bh_endpoint_value.has_ip6] = 1;
    a.bytes.copy(value, bh_endpoint_value.ip6);
  }
  return value;
}

export function decodeEndpointValue(v: Buffer): EndpointAddresses {
  const out: EndpointAddresses = { identity: v.readUInt32LE(bh_endpoint_value.identity) };
  if (v[bh_endpoint_value.has_ip4]) out.ip4 = [...v.subarray(bh_endpoint_value.ip4, bh_endpoint_value.ip4 + 4)].join(".");
  if (v[bh_endpoint_value.has_ip6]) out.ip6 = formatIp6(v.subarray(bh_endpoint_value.ip6, bh_endpoint_value.ip6 + 16));
  return out;
}

/** RFC 5952 text of 16 bytes: lowercase, the longest run of two or more zero groups as "::". */
export function formatIp6(b: Buffer): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i));
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

/** The pod behind each pod veth, from the host routes (/32, /128 in the main table) whose
 * interface it is, with the identity the policy gives that address. Veths without host
 * routes are left out: nothing says which pod they hold. A pod with several addresses of
 * a family keeps the one the policy knows (then the lowest). */
export function endpointsFromRoutes(ifindexes: Iterable<number>, routes: readonly RouteInfo[],
  identityOf: (address: string) => number | undefined): Map<number, EndpointAddresses> {
  const wanted = new Set(ifindexes);
  const found = new Map<number, { ip4: string[]; ip6: string[] }>();
  for (const r of routes) {
    if (!wanted.has(r.oif) || r.table !== ROUTE_TABLE_MAIN || r.type !== "unicast") continue;
    if (r.prefixLen !== (r.family === 4 ? 32 : 128)) continue;
    const f = found.get(r.oif) ?? { ip4: [], ip6: [] };
    (r.family === 4 ? f.ip4 : f.ip6).push(r.dst);
    found.set(r.oif, f);
  }
  const pick = (ips: string[]) => [...ips].sort((a, b) =>
    Number(identityOf(b) !== undefined) - Number(identityOf(a) !== undefined) || (a < b ? -1 : a > b ? 1 : 0))[0];
  const out = new Map<number, EndpointAddresses>();
  for (const [ifindex, f] of found) {
    const ip4 = pick(f.ip4);
    const ip6 = pick(f.ip6);
    const identity = (ip4 !== undefined ? identityOf(ip4) : undefined)
      ?? (ip6 !== undefined ? identityOf(ip6) : undefined) ?? 0;
    out.set(ifindex, { identity, ...(ip4 !== undefined ? { ip4 } : {}), ...(ip6 !== undefined ? { ip6 } : {}) });
  }
  return out;
}

// ---- the applier -------------------------------------------------------------------

export interface ApplyResult {
  version: bigint;
  /** The half of the policy set now active. */
  set: number;
  identities: number;
  ipIdentities: number;
  policyEntries: number;
  /** Map entries written / deleted in the kernel to get there. */
  written: number;
  deleted: number;
}

/** What one half of the policy set holds in the kernel: key hex → value hex. */
type SetContents = Record<"ipIdentity" | "identities" | "policy", Map<string, string>>;

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

export class PolicyApplier {
  private active = 0;
  private readonly contents: [SetContents, SetContents];
  private current: CompiledPolicy | undefined;
  private readonly endpointValues = new Map<number, string>();
  private readonly endpointAddresses = new Map<number, EndpointAddresses>();

  /** `adopt`: the maps come from an earlier agent (pinned): learn what both halves and
   * the endpoints hold instead of assuming them empty, and take the active half as the
   * policy in force (its version, and the identities it gives pod addresses) until the
   * next snapshot. */
  constructor(private readonly object: BpfObject, opts: { adopt?: boolean } = {}) {
    const empty = (): SetContents => ({ ipIdentity: new Map(), identities: new Map(), policy: new Map() });
    this.contents = [empty(), empty()];
    const expect = (name: string, key: number, value: number) => {
      const m = object.map(name);
      if (m.keySize !== key || m.valueSize !== value) {
        throw new Error(`${object.path}: map ${name} key/value sizes ${m.keySize}/${m.valueSize} differ from the `
          + `agent's ${key}/${value}: object and agent are from different builds`);
      }
    };
    for (const set of [0, 1]) {
      expect(MAPS.ipIdentity(set), bh_ip_key.size, bh_ip_value.size);
      expect(MAPS.identities(set), 4, bh_identity_value.size);
      expect(MAPS.policy(set), bh_policy_key.size, bh_policy_value.size);
    }
    expect("endpoints", 4, bh_endpoint_value.size);
    expect("conntrack", bh_ct_key.size, bh_ct_value.size);
    expect("conntrack_new", bh_ct_key.size, bh_ct_value.size);
    this.active = object.map("flow_state").lookup(u32(BH_STATE_ACTIVE_POLICY))?.readUInt32LE(0) ? 1 : 0;
    if (opts.adopt) this.learn();
  }

  private learn(): void {
    const read = (name: string): Map<string, string> => {
      const map = this.object.map(name);
      const d = map.dump();
      const out = new Map<string, string>();
      for (let i = 0; i < d.count; i++) {
        out.set(d.keys.subarray(i * map.keySize, (i + 1) * map.keySize).toString("hex"),
          d.values.subarray(i * map.valueSize, (i + 1) * map.valueSize).toString("hex"));
      }
      return out;
    };
    for (const set of [0, 1] as const) {
      this.contents[set] = {
        identities: read(MAPS.identities(set)), ipIdentity: read(MAPS.ipIdentity(set)), policy: read(MAPS.policy(set)),
      };
    }
    const version = BigInt(this.kernelVersion());
    if (version !== 0n) {
      const inForce = this.active === 0 ? this.contents[0] : this.contents[1];
      const buffers = (m: Map<string, string>) => new Map([...m].map(([k, v]) => [k, Buffer.from(v, "hex")]));
      const hosts = new Map<string, number>();
      for (const [key, value] of inForce.ipIdentity) {
        const k = Buffer.from(key, "hex");
        if (k.readUInt32LE(bh_ip_key.prefixlen) === 128) {
          hosts.set(k.subarray(bh_ip_key.addr, bh_ip_key.addr + 16).toString("hex"), Buffer.from(value, "hex").readUInt32LE(bh_ip_value.identity));
        }
      }
      this.current = { version, identities: buffers(inForce.identities), ipIdentities: buffers(inForce.ipIdentity),
        policy: buffers(inForce.policy), hosts };
    }
    for (const [key, value] of read("endpoints")) {
      const ifindex = Buffer.from(key, "hex").readUInt32LE(0);
      this.endpointValues.set(ifindex, value);
      this.endpointAddresses.set(ifindex, decodeEndpointValue(Buffer.from(value, "hex")));
    }
  }

  /** The version applied last (0n: none yet). */
  get version(): bigint {
    return this.current?.version ?? 0n;
  }

  /** The active policy version as the kernel holds it (low 32 bits). */
  kernelVersion(): number {
    return this.object.map("flow_state").lookup(u32(BH_STATE_POLICY_VERSION))?.readUInt32LE(0) ?? 0;
  }

  /** The identity the applied policy gives a host address (exact /32 or /128 entry). */
  identityOf(address: string): number | undefined {
    const a = kernelAddress(address);
    return a ? this.current?.hosts.get(a.bytes.toString("hex")) : undefined;
  }

  /** Compiles, writes the inactive half, switches to it and waits until no packet can
   * still be judged by the previous half. Throws (PolicyError for a bad snapshot, a
   * BpfError-shaped Error for the kernel) and then leaves the active policy as it was. */
  apply(snapshot: PolicySnapshot): ApplyResult {
    const compiled = compilePolicy(snapshot);
    const target = 1 - this.active;
    const c = target === 0 ? this.contents[0] : this.contents[1];
    let written = 0, deleted = 0;
    const sync = (kind: keyof SetContents, name: string, want: Map<string, Buffer>) => {
      const have = c[kind];
      const map = this.object.map(name);
      for (const key of [...have.keys()]) {
        if (want.has(key)) continue;
        map.delete(Buffer.from(key, "hex"));
        have.delete(key);
        deleted++;
      }
      for (const [key, value] of want) {
        const hex = value.toString("hex");
        if (have.get(key) === hex) continue;
        try {
          map.update(Buffer.from(key, "hex"), value);
        } catch (err) {
          if (isBpfError(err) && (err.code === "E2BIG" || err.code === "ENOSPC" || err.code === "ENOMEM")) {
            err.message = `${err.message}: ${name} holds at most ${map.maxEntries} entries; version ${snapshot.version} needs ${want.size}`;
          }
          throw err;
        }
        have.set(key, hex);
        written++;
      }
    };
    // Deletions first within each map, so a full map still takes a same-size replacement.
    sync("identities", MAPS.identities(target), compiled.identities);
    sync("ipIdentity", MAPS.ipIdentity(target), compiled.ipIdentities);
    sync("policy", MAPS.policy(target), compiled.policy);

    const state = this.object.map("flow_state");
    state.update(u32(BH_STATE_ACTIVE_POLICY), u32(target));
    state.update(u32(BH_STATE_POLICY_VERSION), u32(Number(snapshot.version & 0xffffffffn)));
    // Every program that read the old index has finished once this returns.
    this.object.synchronize("sync_outer");
    this.active = target;
    this.current = compiled;
    return {
      version: snapshot.version, set: target, identities: compiled.identities.size,
      ipIdentities: compiled.ipIdentities.size, policyEntries: compiled.policy.size, written, deleted,
    };
  }

  setEndpoint(ifindex: number, ep: EndpointAddresses): void {
    const value = endpointValue(ep);
    const hex = value.toString("hex");
    if (this.endpointValues.get(ifindex) === hex) return;
    try {
      this.object.map("endpoints").update(u32(ifindex), value);
    } catch (err) {
      if (err instanceof Error) err.message = `endpoint ifindex ${ifindex}: ${err.message}`;
      throw err;
    }
    this.endpointValues.set(ifindex, hex);
    this.endpointAddresses.set(ifindex, { ...ep });
  }

  deleteEndpoint(ifindex: number): void {
    this.object.map("endpoints").delete(u32(ifindex));
    this.endpointValues.delete(ifindex);
    this.endpointAddresses.delete(ifindex);
  }

  /** The endpoints written, by ifindex. */
  endpoints(): ReadonlyMap<number, EndpointAddresses> {
    return this.endpointAddresses;
  }

  /** Makes `endpoints` hold exactly the pods behind `ifindexes` that `routes` show;
   * returns what changed. */
  reconcileEndpoints(ifindexes: Iterable<number>, routes: readonly RouteInfo[]): { set: number; deleted: number } {
    const want = endpointsFromRoutes(ifindexes, routes, (a) => this.identityOf(a));
    let set = 0, deleted = 0;
    for (const ifindex of [...this.endpointValues.keys()]) {
      if (!want.has(ifindex)) { this.deleteEndpoint(ifindex); deleted++; }
    }
    for (const [ifindex, ep] of want) {
      const before = this.endpointValues.get(ifindex);
      this.setEndpoint(ifindex, ep);
      if (this.endpointValues.get(ifindex) !== before) set++;
    }
    return { set, deleted };
  }
}
