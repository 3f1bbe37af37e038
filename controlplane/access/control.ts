// Who is calling: turns an Authorization value ("Bearer <token>") into a Scope, or into
// the AccessError that refuses the request. Transport-neutral: the gRPC Observer API reads
// the value from call metadata, the HTTP API from the request header.
//
// Rules: no token → everything when the operator allowed unauthenticated access, else 401;
// a malformed or unknown token → 401 always (a wrong token is a mistake worth reporting,
// never a silent fallback to anonymous access).
import fs from "node:fs";
import { timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import { AccessError, UNAUTHENTICATED_SUBJECT, type Scope } from "./scope.js";
import { loadTokenFile, tokenDigest, type TokenEntry } from "./tokens.js";

export interface AccessControlOptions {
  /** Known tokens; may be empty (then only unauthenticated access, if allowed, works). */
  tokens: readonly TokenEntry[];
  /** Requests without a token see everything (the lab). A bad token is refused regardless. */
  allowUnauthenticated: boolean;
}

const BEARER = /^bearer +(\S+) *$/i;

export class AccessControl {
  private entries: readonly TokenEntry[];
  private readonly listeners = new Set<() => void>();
  private watching: { file: string; listener: (curr: fs.Stats, prev: fs.Stats) => void } | undefined;
  readonly allowUnauthenticated: boolean;

  constructor(opts: AccessControlOptions) {
    this.entries = opts.tokens;
    this.allowUnauthenticated = opts.allowUnauthenticated;
  }

  /** Loads the token file (throws TokenFileError naming file, entry and field). */
  static fromTokenFile(file: string, opts: { allowUnauthenticated: boolean }): AccessControl {
    return new AccessControl({ tokens: loadTokenFile(file), allowUnauthenticated: opts.allowUnauthenticated });
  }

  get tokenCount(): number {
    return this.entries.length;
  }

  /** `authorization`: the header or metadata value as received (undefined or "" when absent). */
  authenticate(authorization: string | undefined): Scope | AccessError {
    if (authorization === undefined || authorization.trim() === "") {
      if (this.allowUnauthenticated) return { kind: "cluster", subject: UNAUTHENTICATED_SUBJECT };
      return new AccessError(401, "a bearer token is required (authorization: Bearer <token>)");
    }
    const m = BEARER.exec(authorization);
    if (!m) return new AccessError(401, "the authorization value is not \"Bearer <token>\"");
    const digest = tokenDigest(m[1]!);
    // Every entry is compared, in constant time, so timing tells nothing about which matched or how closely.
    let found: TokenEntry | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest) && found === undefined) found = entry;
    }
    if (found === undefined) return new AccessError(401, "the bearer token is not known to this control plane");
    return found.grant.kind === "cluster"
      ? { kind: "cluster", subject: found.name }
      : { kind: "namespaces", subject: found.name, namespaces: found.grant.namespaces };
  }

  replaceTokens(tokens: readonly TokenEntry[]): void {
    this.entries = tokens;
    for (const listener of [...this.listeners]) listener();
  }

  /** Calls `listener` after every change of tokens, so that a long-lived stream re-authenticates; returns the unsubscribe. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  /**
   * Reloads the file when it changes (stat polled every `intervalMs`, which also sees an
   * atomic rename or a Kubernetes Secret's symlink swap). A file that no longer parses is
   * reported and the last good tokens stay in force, as for metadata files.
   */
  watch(file: string, log: Logger, intervalMs = 1000): void {
    this.close();
    const listener = (curr: fs.Stats, prev: fs.Stats) => {
      if (curr.mtimeMs === prev.mtimeMs && curr.size === prev.size && curr.ino === prev.ino) return;
      try {
        const tokens = loadTokenFile(file);
        this.replaceTokens(tokens);
        log.info({ file, tokens: tokens.length }, "token file reloaded");
      } catch (err) {
        log.error({ file, err: (err as Error).message }, "token file not reloaded; the previous tokens stay in force");
      }
    };
    fs.watchFile(file, { interval: intervalMs, persistent: false }, listener);
    this.watching = { file, listener };
  }

  close(): void {
    if (this.watching) fs.unwatchFile(this.watching.file, this.watching.listener);
    this.watching = undefined;
  }
}
