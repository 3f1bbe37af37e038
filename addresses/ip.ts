// IP addresses and CIDRs, parsed once for every part of bulkhead (agent, control plane,
// lab, CLI): ./prefix.ts does the maths on prefixes. Every address is kept in one canonical
// text form (IPv4 dotted decimal; IPv6 per RFC 5952: lowercase, no leading zeros, the
// longest run of two or more zero groups compressed) because the agent formats flow
// addresses the same way, so an address from a flow and one from a Pod compare as plain
// strings on the enrichment hot path.

export type IpFamily = 4 | 6;

export interface ParsedIp {
  /** Canonical text form. */
  text: string;
  family: IpFamily;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface ParsedCidr {
  /** Canonical "address/prefix"; the address keeps any host bits it was written with. */
  text: string;
  address: ParsedIp;
  prefix: number;
}

/** The address, or undefined when `text` is not an IPv4 or IPv6 address. */
export function parseIp(text: string): ParsedIp | undefined {
  if (text.includes(":")) return parseIPv6(text);
  const bytes = parseIPv4Bytes(text);
  if (!bytes) return undefined;
  return { text: bytes.join("."), family: 4, bytes };
}

/** The canonical form of `text`, or undefined when it is not an address. */
export function canonicalIp(text: string): string | undefined {
  return parseIp(text)?.text;
}

export function parseCidr(text: string): ParsedCidr | undefined {
  const slash = text.indexOf("/");
  if (slash < 0) return undefined;
  const address = parseIp(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!address || !/^[0-9]{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > address.bytes.length * 8) return undefined;
  return { text: `${address.text}/${prefix}`, address, prefix };
}

function parseIPv4Bytes(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i] ?? "";
    // Leading zeros are read as decimal, as Kubernetes does for legacy objects.
    if (!/^[0-9]{1,3}$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

function parseIPv6(text: string): ParsedIp | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = groupsOf(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? groupsOf(halves[1] ?? "", true) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return { text: formatIPv6Groups(groups), family: 6, bytes };
}

/** Hex groups of one side of "::"; the last side may end in a dotted IPv4 address. */
function groupsOf(side: string, mayEndInIPv4: boolean): number[] | undefined {
  if (side === "") return [];
  const parts = side.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? "";
    if (i === parts.length - 1 && mayEndInIPv4 && part.includes(".")) {
      const v4 = parseIPv4Bytes(part);
      if (!v4) return undefined;
      groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
    groups.push(parseInt(part, 16));
  }
  return groups;
}

/** RFC 5952 text form of eight 16-bit groups: lower case, the longest run of two or more
 * zero groups as "::". The agent formats kernel addresses with it too, so text forms match. */
export function formatIPv6Groups(groups: number[]): string {
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/**
 * The network of `text` as canonical "address/prefix" with host bits cleared, taking
 * `v4Bits` of an IPv4 address and `v6Bits` of an IPv6 one (e.g. 24 and 48); undefined when
 * `text` is not an address.
 */
export function networkOf(text: string, v4Bits: number, v6Bits: number): string | undefined {
  const ip = parseIp(text);
  if (!ip) return undefined;
  const bits = ip.family === 4 ? v4Bits : v6Bits;
  const bytes = ip.bytes.slice();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] = (bytes[i] ?? 0) & ((0xff00 >> keep) & 0xff);
  }
  if (ip.family === 4) return `${bytes.join(".")}/${bits}`;
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0));
  return `${formatIPv6Groups(groups)}/${bits}`;
}
