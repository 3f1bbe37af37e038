// The operator's token file: who may read which namespaces' flows.
//
//   tokens:
//     - name: shop-team                 # the subject in logs; unique
//       sha256: 4f1c…(64 hex digits)    # SHA-256 of the token (preferred), or
//       # token: "…"                    # the token itself, 16..4096 printable ASCII characters
//       namespaces: [shop]              # or ["*"]: every namespace and cluster-wide status
//
// Errors name the file, the entry (index and name) and the field. They never repeat a
// token, and YAML syntax errors give only line and column, since the offending line may
// hold one.
import { createHash } from "node:crypto";
import fs from "node:fs";
import YAML from "yaml";
import { isNamespaceName } from "../../kubernetes/names.js";

/** What a token may read: every namespace (plus cluster-wide data), or these namespaces only. */
export type Grant = { readonly kind: "cluster" } | { readonly kind: "namespaces"; readonly namespaces: ReadonlySet<string> };

export interface TokenEntry {
  /** Names the holder in logs; never the token. */
  readonly name: string;
  /** SHA-256 of the token: a clear token in the file is hashed at load and then forgotten. */
  readonly digest: Buffer;
  readonly grant: Grant;
}

export class TokenFileError extends Error {
  constructor(readonly file: string, readonly problem: string, readonly entry?: string, readonly field?: string) {
    super(`${file}: ${[entry, field].filter((p) => p !== undefined).join(": ")}${entry !== undefined || field !== undefined ? ": " : ""}${problem}`);
    this.name = "TokenFileError";
  }
}

const ENTRY_FIELDS = new Set(["name", "token", "sha256", "namespaces"]);
const NAME = /^[A-Za-z0-9][-A-Za-z0-9_.@:/]{0,127}$/;
/** Printable ASCII without space: what an HTTP header and gRPC metadata carry unchanged. */
const TOKEN = /^[\x21-\x7e]{16,4096}$/;
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

export function tokenDigest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/** True when text can be a bearer token at all (the same rule the file applies to clear tokens). */
export function isWellFormedToken(text: string): boolean {
  return TOKEN.test(text);
}

function describe(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readGrant(fail: (field: string, problem: string) => never, value: unknown): Grant {
  if (!Array.isArray(value)) fail("namespaces", `expected a list of namespace names or ["*"], got ${describe(value)}`);
  if (value.length === 0) fail("namespaces", `empty: list the namespaces the token may read, or ["*"] for all`);
  const namespaces = new Set<string>();
  value.forEach((ns: unknown, i) => {
    const field = `namespaces[${i}]`;
    if (typeof ns !== "string") fail(field, `expected a namespace name, got ${describe(ns)}`);
    if (ns === "*") {
      if (value.length !== 1) fail(field, `"*" (every namespace) must be the only entry of the list`);
      return;
    }
    if (!isNamespaceName(ns)) fail(field, `${describe(ns)} is not a namespace name (a lower-case RFC 1123 label of at most 63 characters)`);
    if (namespaces.has(ns)) fail(field, `${describe(ns)} is listed twice`);
    namespaces.add(ns);
  });
  return namespaces.size === 0 ? { kind: "cluster" } : { kind: "namespaces", namespaces };
}

/** Parses a token file's text; `file` only names it in errors. */
export function parseTokenFile(text: string, file: string): TokenEntry[] {
  // prettyErrors supplies linePos; its message (which quotes the line) is not used.
  const docs = YAML.parseAllDocuments(text, { uniqueKeys: true });
  const all = Array.isArray(docs) ? docs : [docs];
  if (all.length === 0) throw new TokenFileError(file, `empty: expected a map with a "tokens" list`);
  for (const doc of all) {
    const err = doc.errors[0];
    if (err !== undefined) {
      const at = err.linePos?.[0];
      throw new TokenFileError(file, `not valid YAML${at ? ` at line ${at.line}, column ${at.col}` : ""} (${err.code})`);
    }
  }
  if (all.length !== 1) throw new TokenFileError(file, `expected one YAML document, found ${all.length}`);
  const top: unknown = all[0]!.toJS();
  if (!isMap(top)) throw new TokenFileError(file, `expected a map with a "tokens" list, got ${describe(top)}`);
  for (const key of Object.keys(top)) {
    if (key !== "tokens") throw new TokenFileError(file, `unknown field (the file has only "tokens")`, undefined, key);
  }
  const list = top.tokens;
  if (!Array.isArray(list)) throw new TokenFileError(file, `expected a list of token entries, got ${describe(list)}`, undefined, "tokens");
  if (list.length === 0) throw new TokenFileError(file, "empty: list at least one token entry", undefined, "tokens");

  const entries: TokenEntry[] = [];
  const byName = new Map<string, number>();
  const byDigest = new Map<string, string>();
  list.forEach((raw: unknown, i) => {
    let entry = `tokens[${i}]`;
    const fail = (field: string, problem: string): never => { throw new TokenFileError(file, problem, entry, field); };
    if (!isMap(raw)) throw new TokenFileError(file, `expected a map with name, sha256 (or token) and namespaces, got ${describe(raw)}`, entry);
    const name = raw.name;
    if (typeof name !== "string" || !NAME.test(name)) {
      fail("name", `${describe(name)} is not a name (1..128 letters, digits and - _ . @ : /, starting with a letter or digit)`);
    }
    entry = `${entry} (name "${name as string}")`;
    for (const key of Object.keys(raw)) if (!ENTRY_FIELDS.has(key)) fail(key, "unknown field (expected name, sha256 or token, namespaces)");
    const earlier = byName.get(name as string);
    if (earlier !== undefined) fail("name", `the name is already used by tokens[${earlier}]`);
    byName.set(name as string, i);

    let digest: Buffer;
    if (raw.token !== undefined && raw.sha256 !== undefined) fail("token", "give either token or sha256, not both");
    if (raw.sha256 !== undefined) {
      if (typeof raw.sha256 !== "string" || !SHA256_HEX.test(raw.sha256)) fail("sha256", `${describe(raw.sha256)} is not 64 hexadecimal digits (sha256sum of the token)`);
      digest = Buffer.from(raw.sha256 as string, "hex");
    } else if (raw.token !== undefined) {
      // The value is a secret: the error says what is wrong with it, not what it is.
      if (typeof raw.token !== "string" || !TOKEN.test(raw.token)) fail("token", "must be a string of 16 to 4096 printable ASCII characters without spaces (value not shown)");
      digest = tokenDigest(raw.token as string);
    } else {
      return fail("sha256", "missing: give the token's SHA-256 as sha256 (or the token itself as token)");
    }
    const other = byDigest.get(digest.toString("hex"));
    if (other !== undefined) fail(raw.sha256 !== undefined ? "sha256" : "token", `the same token as ${other}: every holder needs its own token`);
    byDigest.set(digest.toString("hex"), entry);

    if (raw.namespaces === undefined) fail("namespaces", `missing: list the namespaces the token may read, or ["*"] for all`);
    entries.push({ name: name as string, digest, grant: readGrant(fail, raw.namespaces) });
  });
  return entries;
}

export function loadTokenFile(file: string): TokenEntry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new TokenFileError(file, `cannot read: ${(err as Error).message}`);
  }
  return parseTokenFile(text, file);
}
