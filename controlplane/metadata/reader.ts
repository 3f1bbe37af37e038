// Typed reads from one untrusted Kubernetes document. Every failure names the object and
// the field path, e.g. `Pod shop/cart-7d9f: spec.containers[0].ports[1].containerPort:
// expected an integer 1-65535, got "http"`, so whoever wrote the manifest can fix it
// without reading this code.
//
// Unlike the lab's topology reader, unknown fields are not errors: objects from the
// Kubernetes API carry many fields this control plane does not need. A null field counts
// as absent, as it does when the API server decodes JSON.
import { parseCidr, parseIp, type IpFamily, type ParsedCidr } from "../../addresses/ip.js";
import { isLabelValue, isPortName, isQualifiedName } from "../../kubernetes/names.js";

export class ObjectError extends Error {
  constructor(
    /** "Pod shop/cart-7d9f", or "document" when the object cannot be named yet. */
    readonly object: string,
    /** Dotted path with list indices, e.g. "spec.ports[1].port"; "" for the whole object. */
    readonly field: string,
    readonly detail: string,
  ) {
    super(field === "" ? `${object}: ${detail}` : `${object}: ${field}: ${detail}`);
    this.name = "ObjectError";
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

export function fieldPath(parent: string, child: string | number): string {
  if (typeof child === "number") return `${parent}[${child}]`;
  return parent === "" ? child : `${parent}.${child}`;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$/;

export class ObjectReader {
  constructor(public object: string) {}

  fail(field: string, detail: string): never {
    throw new ObjectError(this.object, field, detail);
  }

  /** Absent (undefined or null) as undefined; anything else must be a map. */
  optionalMap(value: unknown, field: string): Record<string, unknown> | undefined {
    if (value === undefined || value === null) return undefined;
    return this.map(value, field);
  }

  map(value: unknown, field: string): Record<string, unknown> {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.fail(field, `expected a map, got ${describeValue(value)}`);
    }
    return value as Record<string, unknown>;
  }

  /** Absent lists read as empty, as they do in the Kubernetes API. */
  list(value: unknown, field: string): unknown[] {
    if (value === undefined || value === null) return [];
    if (!Array.isArray(value)) this.fail(field, `expected a list, got ${describeValue(value)}`);
    return value;
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
    return value === undefined || value === null ? undefined : this.string(value, field);
  }

  boolean(value: unknown, field: string, fallback: boolean): boolean {
    if (value === undefined || value === null) return fallback;
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
    return value === undefined || value === null ? undefined : this.int(value, field, min, max);
  }

  port(value: unknown, field: string): number {
    return this.int(value, field, 1, 65535);
  }

  /** A number, or a named port (IANA service name: at most 15 characters, at least one letter). */
  intOrPortName(value: unknown, field: string): number | string {
    if (typeof value === "number") return this.port(value, field);
    if (typeof value === "string" && isPortName(value)) {
      return value;
    }
    return this.fail(field, `expected a port number 1-65535 or a port name (lowercase letters, digits and "-", at most 15, at least one letter), got ${describeValue(value)}`);
  }

  oneOf<T extends string>(value: unknown, field: string, allowed: readonly T[], fallback?: T): T {
    if ((value === undefined || value === null) && fallback !== undefined) return fallback;
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
    if (value === undefined || value === null) return undefined;
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

  /** Labels (or a selector's matchLabels): keys and values as Kubernetes validates them. */
  labels(value: unknown, field: string): Record<string, string> {
    const m = this.optionalMap(value, field);
    const out: Record<string, string> = {};
    if (!m) return out;
    for (const [key, v] of Object.entries(m)) {
      const f = fieldPath(field, key);
      if (!isQualifiedName(key)) {
        this.fail(f, "invalid label key: expected [prefix/]name, name at most 63 characters of letters, digits, \"-\", \"_\", \".\", starting and ending with a letter or digit");
      }
      const text = this.string(v, f);
      if (!isLabelValue(text)) {
        this.fail(f, `invalid label value ${describeValue(text)}: at most 63 characters of letters, digits, "-", "_", ".", starting and ending with a letter or digit`);
      }
      out[key] = text;
    }
    return out;
  }

  /** Annotations: any string values. */
  annotations(value: unknown, field: string): Record<string, string> {
    const m = this.optionalMap(value, field);
    const out: Record<string, string> = {};
    if (!m) return out;
    for (const [key, v] of Object.entries(m)) out[key] = this.string(v, fieldPath(field, key));
    return out;
  }
}

