// Command-line configuration shared by every bulkhead command (agent, control plane, CLI,
// lab, certs): the error a bad flag raises (the commands print it and exit 2), the
// HOST:PORT form of listen and dial addresses, and sizes in bytes.

/** A bad flag or flag value; the message names the flag, the value and what was expected. */
export class ConfigError extends Error {}

/** "HOST:PORT", "[IPv6]:PORT" or ":PORT" (every address, 0.0.0.0). */
export function parseHostPort(flag: string, raw: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]*)):([0-9]{1,5})$/.exec(raw);
  if (!m) throw new ConfigError(`--${flag}: "${raw}" is not HOST:PORT`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new ConfigError(`--${flag}: port ${port} is out of range 1..65535`);
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

const BINARY_SUFFIXES: Record<string, number> = { "": 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30 };

/** A size in bytes: a whole number, optionally with a binary suffix as Kubernetes writes memory (Ki, Mi, Gi). */
export function parseByteSize(flag: string, raw: string, min: number, max: number): number {
  const m = /^([0-9]+)(Ki|Mi|Gi)?$/.exec(raw);
  if (!m) throw new ConfigError(`--${flag}: "${raw}" is not a size in bytes (e.g. 268435456 or 256Mi)`);
  const n = Number(m[1]) * (BINARY_SUFFIXES[m[2] ?? ""] ?? 1);
  if (n < min || n > max) throw new ConfigError(`--${flag}: ${raw} is out of range ${min}..${max} bytes`);
  return n;
}
