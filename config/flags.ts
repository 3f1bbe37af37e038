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

const BYTE_UNITS: Record<string, number> = {
  "": 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
  KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30, TiB: 2 ** 40,
  // As Kubernetes writes memory: a DaemonSet's limit and the agent's buffer read alike.
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40,
};

/** A size as users type it: "20GiB", "500MB", "256Mi", "1048576" (bytes), within [min, max]. */
export function parseByteSize(flag: string, raw: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const m = /^([0-9]+)\s*([KMGT]i?B?|B)?$/.exec(raw);
  const unit = BYTE_UNITS[m?.[2] ?? ""];
  if (!m || unit === undefined) throw new ConfigError(`--${flag}: "${raw}" is not a size like 256Mi, 20GiB, 500MB or a number of bytes`);
  const n = Number(m[1]) * unit;
  if (n < min || n > max) throw new ConfigError(`--${flag}: ${raw} is out of range ${min}..${max} bytes`);
  return n;
}
