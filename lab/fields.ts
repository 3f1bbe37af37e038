// Typed readers for untrusted documents (topology files, state.json, CLI input). Every
// failure names the source and the field path, e.g. `topo.yaml: pods[2].ports[0].port:
// expected an integer 1-65535, got "http"`, so a user can fix the input without reading code.
import {
  isDns1035Label, isDnsLabel, isDnsSubdomain, isLabelName, isLabelValue, isPortName,
} from "../kubernetes/names.js";

export class FieldError extends Error {
  constructor(readonly source: string, readonly field: string, readonly detail: string) {
    super(`${source}: ${field}: ${detail}`);
    this.name = "FieldError";
  }
}

export function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a map";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Reads fields of one document; `source` is the file name (or "state", "--flag"). */
export class FieldReader {
  constructor(readonly source: string) {}

  fail(field: string, detail: string): never {
    throw new FieldError(this.source, field, detail);
  }

  /** A map whose keys must all be in `allowed` (typos are errors, not silently ignored). */
  map(value: unknown, field: string, allowed: readonly string[]): Record<string, unknown> {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.fail(field, `expected a map, got ${describe(value)}`);
    }
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!allowed.includes(key)) {
        this.fail(join(field, key), `unknown field (allowed: ${allowed.join(", ")})`);
      }
    }
    return record;
  }

  list(value: unknown, field: string): unknown[] {
    if (!Array.isArray(value)) this.fail(field, `expected a list, got ${describe(value)}`);
    return value;
  }

  optionalList(value: unknown, field: string): unknown[] {
    return value === undefined ? [] : this.list(value, field);
  }

  string(value: unknown, field: string): string {
    if (typeof value !== "string") this.fail(field, `expected a string, got ${describe(value)}`);
    return value;
  }

  optionalString(value: unknown, field: string): string | undefined {
    return value === undefined ? undefined : this.string(value, field);
  }

  boolean(value: unknown, field: string): boolean {
    if (typeof value !== "boolean") this.fail(field, `expected true or false, got ${describe(value)}`);
    return value;
  }

  int(value: unknown, field: string, min: number, max: number): number {
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
      this.fail(field, `expected an integer ${min}-${max}, got ${describe(value)}`);
    }
    return value;
  }

  oneOf<T extends string>(value: unknown, field: string, choices: readonly T[]): T {
    if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
      this.fail(field, `expected one of ${choices.join(", ")}, got ${describe(value)}`);
    }
    return value as T;
  }

  /** A DNS-1123 label (Namespace, Node and Pod names in the lab). */
  dnsLabel(value: unknown, field: string, maxLength = 63): string {
    const text = this.string(value, field);
    if (text.length > maxLength || !isDnsLabel(text)) {
      this.fail(field, `expected a DNS label (lowercase letters, digits and '-', at most ${maxLength} characters), got ${describe(value)}`);
    }
    return text;
  }

  /** A DNS-1035 label (Service names: must start with a letter). */
  serviceName(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (!isDns1035Label(text)) {
      this.fail(field, `expected a DNS-1035 label (starts with a letter; lowercase letters, digits and '-'; at most 63 characters), got ${describe(value)}`);
    }
    return text;
  }

  /** An IANA service name, as Kubernetes requires for container and Service port names. */
  portName(value: unknown, field: string): string {
    const text = this.string(value, field);
    if (!isPortName(text)) {
      this.fail(field, `expected a port name (at most 15 lowercase letters, digits and '-', with a letter, no '--'), got ${describe(value)}`);
    }
    return text;
  }

  /** Kubernetes labels: `[prefix/]name` keys, values of at most 63 characters. */
  labels(value: unknown, field: string): Record<string, string> {
    if (value === undefined) return {};
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.fail(field, `expected a map of labels, got ${describe(value)}`);
    }
    const out: Record<string, string> = {};
    for (const [key, raw] of Object.entries(value as Record<string, unknown>)) {
      const keyField = join(field, key);
      checkLabelKey(key, (detail) => this.fail(keyField, detail));
      const text = this.string(raw, keyField);
      if (!isLabelValue(text)) {
        this.fail(keyField, `invalid label value ${describe(text)} (at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric)`);
      }
      out[key] = text;
    }
    return out;
  }
}

export function checkLabelKey(key: string, fail: (detail: string) => never): void {
  const slash = key.indexOf("/");
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (prefix !== undefined && !isDnsSubdomain(prefix)) {
    fail(`invalid label key prefix ${describe(prefix)} (expected a DNS subdomain)`);
  }
  if (!isLabelName(name)) {
    fail(`invalid label key ${describe(key)} (name part: at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric)`);
  }
}

/** `pods[2]` + `labels` → `pods[2].labels`; keys that are not identifiers get quoted. */
export function join(field: string, key: string | number): string {
  if (typeof key === "number") return `${field}[${key}]`;
  const part = /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? key : JSON.stringify(key);
  return field === "" ? part : /^[A-Za-z_]/.test(part) ? `${field}.${part}` : `${field}[${part}]`;
}
