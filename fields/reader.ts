// Typed reads from one untrusted document: a Kubernetes object, a topology file, the lab's
// state.json, a conformance case, CLI input. Every failure names the source and the field
// path, e.g. `Pod shop/cart-7d9f: spec.containers[0].ports[1].containerPort: expected an
// integer 1-65535, got "http"`, so whoever wrote the input can fix it without reading code.
//
// Two kinds of documents, two settings:
//  - files bulkhead defines (topologies, state) reject unknown fields (`map(v, f, allowed)`)
//    and take null as a value like any other, so a forgotten value is an error;
//  - Kubernetes objects carry many fields bulkhead does not need (`map(v, f)` ignores them),
//    and null counts as absent (`{ nullIsAbsent: true }`), as when the API server decodes JSON.
import { parseCidr, parseIp, type IpFamily, type ParsedCidr } from "../addresses/ip.js";
import {
  isDns1035Label, isDnsLabel, isDnsSubdomain, isLabelName, isLabelValue, isPortName,
} from "../kubernetes/names.js";

export class FieldError extends Error {
  constructor(
    /** The file name, "Pod shop/cart-7d9f", "state", "--flag"; "document" when it cannot be named yet. */
    readonly source: string,
    /** Dotted path with list indices, e.g. "spec.ports[1].port"; "" for the whole document. */
    readonly field: string,
    readonly detail: string,
  ) {
    super(field === "" ? `${source}: ${detail}` : `${source}: ${field}: ${detail}`);
    this.name = "FieldError";
  }
}

/** A short rendering of a bad value for error messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a map";
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * `pods[2]` + `labels` → `pods[2].labels`, + 3 → `pods[2].labels[3]`; a key that is not an
 * identifier is quoted (`metadata.labels["app.kubernetes.io/name"]`), so the path stays unambiguous.
 */
export function fieldPath(parent: string, child: string | number): string {
  if (typeof child === "number") return `${parent}[${child}]`;
  // Every object read builds paths for each field: one test, no regex object per call.
  const identifier = IDENTIFIER.test(child);
  const part = identifier ? child : JSON.stringify(child);
  return parent === "" ? part : identifier ? `${parent}.${part}` : `${parent}[${part}]`;
}

const LABEL_VALUE_RULE = "at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric";
const PORT_NAME_RULE = "at most 15 lowercase letters, digits and '-', with a letter, no '--'";
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

export interface FieldReaderOptions {
  /** Null reads as absent (Kubernetes objects); otherwise null is a value of the wrong type. */
  nullIsAbsent?: boolean;
}

export class FieldReader {
  constructor(public source: string, private readonly options: FieldReaderOptions = {}) {}

  fail(field: string, detail: string): never {
    throw new FieldError(this.source, field, detail);
  }

  /** Undefined, or null where null counts as absent. */
  absent(value: unknown): value is undefined | null {
    return value === undefined || (value === null && this.options.nullIsAbsent === true);
  }

  /** A map; with `allowed`, a key outside it is an error (a typo, not silently ignored). */
  map(value: unknown, field: string, allowed?: readonly string[]): Record<string, unknown> {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.fail(field, `expected a map, got ${describeValue(value)}`);
    }
    const record = value as Record<string, unknown>;
    if (allowed !== undefined) {
      for (const key of Object.keys(record)) {
        if (!allowed.includes(key)) this.fail(fieldPath(field, key), `unknown field (allowed: ${allowed.join(", ")})`);
      }
    }
    return record;
  }

  optionalMap(value: unknown, field: string, allowed?: readonly string[]): Record<string, unknown> | undefined {
    return this.absent(value) ? undefined : this.map(value, field, allowed);
  }

  list(value: unknown, field: string): unknown[] {
    if (!Array.isArray(value)) this.fail(field, `expected a list, got ${describeValue(value)}`);
    return value;
  }

  /** Absent lists read as empty, as they do in the Kubernetes API. */
  optionalList(value: unknown, field: string): unknown[] {
    return this.absent(value) ? [] : this.list(value, field);
  }

  string(value: unknown, field: string): string {
    if (typeof value !== "string") this.fail(field, `expected a string, got ${describeValue(value)}`);
    return value;
  }

  nonEmptyString(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (text === "") this.fail(field, "expected a non-empty string");
    return text;
  }

  optionalString(value: unknown, field: string): string | undefined {
    return this.absent(value) ? undefined : this.string(value, field);
  }

  /** With `fallback`, an absent value reads as it; without, it is an error. */
  boolean(value: unknown, field: string, fallback?: boolean): boolean {
    if (fallback !== undefined && this.absent(value)) return fallback;
    if (typeof value !== "boolean") this.fail(field, `expected true or false, got ${describeValue(value)}`);
    return value;
  }

  int(value: unknown, field: string, min: number, max: number): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      this.fail(field, `expected an integer ${min}-${max}, got ${describeValue(value)}`);
    }
    return value;
  }

  optionalInt(value: unknown, field: string, min: number, max: number): number | undefined {
    return this.absent(value) ? undefined : this.int(value, field, min, max);
  }

  port(value: unknown, field: string): number {
    return this.int(value, field, 1, 65535);
  }

  /** With `fallback`, an absent value reads as it; without, it is an error. */
  oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[], fallback?: T): T {
    if (fallback !== undefined && this.absent(value)) return fallback;
    if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
      this.fail(field, `expected one of ${allowed.join(", ")}, got ${describeValue(value)}`);
    }
    return value as T;
  }

  /** A canonical IP address; with `family`, only addresses of that family. */
  ip(value: unknown, field: string, family?: IpFamily): string {
    const text = this.string(value, field);
    const ip = parseIp(text);
    if (!ip || (family !== undefined && ip.family !== family)) {
      this.fail(field, `expected an ${family === undefined ? "IPv4 or IPv6" : `IPv${family}`} address, got ${describeValue(value)}`);
    }
    return ip.text;
  }

  cidr(value: unknown, field: string): ParsedCidr {
    const text = this.string(value, field);
    const cidr = parseCidr(text);
    if (!cidr) this.fail(field, `expected a CIDR such as 10.0.0.0/8 or fd00::/8, got ${describeValue(value)}`);
    return cidr;
  }

  /** RFC 3339 time as wall-clock nanoseconds since the Unix epoch; absent as undefined. */
  optionalTimestamp(value: unknown, field: string): bigint | undefined {
    if (this.absent(value)) return undefined;
    // A YAML 1.1 loader would hand us a Date; the `yaml` package's default 1.2 schema does not.
    if (value instanceof Date) {
      if (Number.isNaN(value.getTime())) this.fail(field, "expected an RFC 3339 time, got an invalid date");
      return BigInt(value.getTime()) * 1_000_000n;
    }
    const text = this.string(value, field);
    const m = RFC3339.exec(text);
    if (!m) this.fail(field, `expected an RFC 3339 time such as 2024-05-01T12:00:00Z, got ${describeValue(value)}`);
    const [, y, mo, d, h, mi, s, frac, zone] = m;
    const ms = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
    if (Number.isNaN(ms) || Number(mo) < 1 || Number(mo) > 12 || Number(d) < 1 || Number(d) > 31 || Number(h) > 23
      || Number(mi) > 59 || Number(s) > 60) {
      this.fail(field, `expected an RFC 3339 time, got ${describeValue(value)}`);
    }
    let offsetMinutes = 0;
    if (zone !== undefined && zone !== "Z" && zone !== "z") {
      const sign = zone.startsWith("-") ? -1 : 1;
      offsetMinutes = sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6)));
    }
    const nanos = frac === undefined ? 0n : BigInt(frac.padEnd(9, "0"));
    return (BigInt(ms) - BigInt(offsetMinutes) * 60_000n) * 1_000_000n + nanos;
  }

  /** A DNS-1123 label (Namespace, Node and Pod names in the lab). */
  dnsLabel(value: unknown, field: string, maxLength = 63): string {
    const text = this.string(value, field);
    if (text.length > maxLength || !isDnsLabel(text)) {
      this.fail(field, `expected a DNS label (lowercase letters, digits and '-', at most ${maxLength} characters), got ${describeValue(value)}`);
    }
    return text;
  }

  /** A DNS-1035 label (Service names: must start with a letter). */
  serviceName(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (!isDns1035Label(text)) {
      this.fail(field, `expected a DNS-1035 label (starts with a letter; lowercase letters, digits and '-'; at most 63 characters), got ${describeValue(value)}`);
    }
    return text;
  }

  /** An IANA service name, as Kubernetes requires for container and Service port names. */
  portName(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (!isPortName(text)) this.fail(field, `expected a port name (${PORT_NAME_RULE}), got ${describeValue(value)}`);
    return text;
  }

  /** A port number, or a port name (as a Service's targetPort or a NetworkPolicy port may be). */
  intOrPortName(value: unknown, field: string): number | string {
    if (typeof value === "number") return this.port(value, field);
    if (typeof value === "string" && isPortName(value)) return value;
    return this.fail(field, `expected a port number 1-65535 or a port name (${PORT_NAME_RULE}), got ${describeValue(value)}`);
  }

  /** A label key, `[prefix/]name`: the prefix a DNS subdomain, the name a label name. */
  labelKey(key: string, field: string): string {
    const slash = key.indexOf("/");
    const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
    const name = slash >= 0 ? key.slice(slash + 1) : key;
    if (prefix !== undefined && !isDnsSubdomain(prefix)) {
      this.fail(field, `invalid label key prefix ${describeValue(prefix)} (expected a DNS subdomain)`);
    }
    if (!isLabelName(name)) {
      this.fail(field, `invalid label key ${describeValue(key)} (name part: ${LABEL_VALUE_RULE})`);
    }
    return key;
  }

  /** Labels (or a selector's matchLabels): keys and values as Kubernetes validates them; absent as none. */
  labels(value: unknown, field: string): Record<string, string> {
    if (this.absent(value)) return {};
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.fail(field, `expected a map of labels, got ${describeValue(value)}`);
    }
    const out: Record<string, string> = {};
    for (const [key, raw] of Object.entries(value as Record<string, unknown>)) {
      const keyField = fieldPath(field, key);
      this.labelKey(key, keyField);
      const text = this.string(raw, keyField);
      if (!isLabelValue(text)) this.fail(keyField, `invalid label value ${describeValue(text)} (${LABEL_VALUE_RULE})`);
      out[key] = text;
    }
    return out;
  }

  /** A map of strings under any keys (annotations, a stored selector). */
  stringMap(value: unknown, field: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [key, v] of Object.entries(this.map(value, field))) out[key] = this.string(v, fieldPath(field, key));
    return out;
  }

  /** Annotations as the API server hands them: any keys, string values; absent as none. */
  annotations(value: unknown, field: string): Record<string, string> {
    return this.absent(value) ? {} : this.stringMap(value, field);
  }
}
