// Command-line configuration shared by every bulkhead command (agent, control plane, CLI,
// lab, certs): the error a bad flag raises (the commands print it and exit 2) and the
// HOST:PORT form of listen and dial addresses.

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

const BYTE_UNITS: Record<string, bigint> = {
  "": 1n, B: 1n, KB: 1000n, MB: 1000n ** 2n, GB: 1000n ** 3n, TB: 1000n ** 4n,
  KiB: 1024n, MiB: 1024n ** 2n, GiB: 1024n ** 3n, TiB: 1024n ** 4n,
};

/** A size as users type it: "20GiB", "500MB", "1048576" (bytes). */
export function parseByteSize(flag: string, raw: string): bigint {
  const m = /^([0-9]+)\s*([KMGT]i?B|B)?$/.exec(raw);
  const unit = BYTE_UNITS[m?.[2] ?? ""];
  if (!m || unit === undefined || BigInt(m[1]!) === 0n) {
    throw new ConfigError(`--${flag}: "${raw}" is not a size like 20GiB, 500MB or a number of bytes`);
  }
  return BigInt(m[1]!) * unit;
}
