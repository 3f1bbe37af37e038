// Address prefixes (CIDRs) and the maths on them: containment, host prefixes, bits. Two
// forms: ParsedCidr keeps the address as written (Kubernetes objects echo it back), IpPrefix
// clears the host bits and holds 32-bit words, the form the policy model and compiler walk.
import { canonicalIp, parseCidr, parseIp, type ParsedCidr } from "./ip.js";

/** An address as 32-bit words in network order: one for IPv4, four for IPv6. */
export interface IpWords {
  family: 4 | 6;
  words: Uint32Array;
}

/** A CIDR with its host bits cleared. `text` is canonical ("10.0.0.0/8", "fd00::/8"). */
export interface IpPrefix extends IpWords {
  length: number;
  text: string;
}

/** 4 or 16 bytes in network order as 32-bit words. */
export function wordsOf(bytes: Uint8Array): Uint32Array {
  const words = new Uint32Array(bytes.length / 4);
  for (let i = 0; i < words.length; i++) {
    words[i] = (((bytes[4 * i] ?? 0) << 24) | ((bytes[4 * i + 1] ?? 0) << 16) | ((bytes[4 * i + 2] ?? 0) << 8) | (bytes[4 * i + 3] ?? 0)) >>> 0;
  }
  return words;
}

function wordMask(length: number, i: number): number {
  const bits = Math.max(0, Math.min(32, length - 32 * i));
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

function formatWords(family: 4 | 6, words: Uint32Array): string {
  if (family === 4) {
    const w = words[0] ?? 0;
    return `${w >>> 24}.${(w >>> 16) & 0xff}.${(w >>> 8) & 0xff}.${w & 0xff}`;
  }
  const groups: string[] = [];
  for (const w of words) groups.push((w >>> 16).toString(16), (w & 0xffff).toString(16));
  return canonicalIp(groups.join(":")) ?? groups.join(":");
}

export function ipWords(ip: string): IpWords | undefined {
  const parsed = parseIp(ip);
  return parsed ? { family: parsed.family, words: wordsOf(parsed.bytes) } : undefined;
}

/** The prefix of a CIDR, host bits cleared (as Kubernetes reads 10.0.0.1/8 as 10.0.0.0/8). */
export function parseIpPrefix(text: string): IpPrefix | undefined {
  const cidr = parseCidr(text);
  if (!cidr) return undefined;
  const words = wordsOf(cidr.address.bytes);
  for (let i = 0; i < words.length; i++) words[i] = ((words[i] ?? 0) & wordMask(cidr.prefix, i)) >>> 0;
  return { family: cidr.address.family, words, length: cidr.prefix, text: `${formatWords(cidr.address.family, words)}/${cidr.prefix}` };
}

/** The host prefix (/32 or /128) of an address. */
export function hostPrefix(ip: string): IpPrefix | undefined {
  const parsed = parseIp(ip);
  if (!parsed) return undefined;
  const length = parsed.family === 4 ? 32 : 128;
  return { family: parsed.family, words: wordsOf(parsed.bytes), length, text: `${parsed.text}/${length}` };
}

/** True when `address` (or every address of a prefix at least as long) lies in `prefix`. */
export function prefixContains(prefix: IpPrefix, address: IpWords & { length?: number }): boolean {
  if (prefix.family !== address.family) return false;
  if (address.length !== undefined && address.length < prefix.length) return false;
  for (let i = 0; i < prefix.words.length; i++) {
    const mask = wordMask(prefix.length, i);
    if (mask === 0) break;
    if ((((address.words[i] ?? 0) & mask) >>> 0) !== prefix.words[i]) return false;
  }
  return true;
}

/** The bit of an address at position `bit` (0 = most significant). */
export function addressBit(words: Uint32Array, bit: number): 0 | 1 {
  return (((words[bit >>> 5] ?? 0) >>> (31 - (bit & 31))) & 1) as 0 | 1;
}

/** True when every address of `inner` lies in `outer` (same family, longer or equal prefix). */
export function cidrContains(outer: ParsedCidr, inner: ParsedCidr): boolean {
  if (outer.address.family !== inner.address.family || inner.prefix < outer.prefix) return false;
  return prefixEqual(outer.address.bytes, inner.address.bytes, outer.prefix);
}

function prefixEqual(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[whole] ?? 0) & mask) === ((b[whole] ?? 0) & mask);
}
