// -o/--output, the same way in every command: one parser naming the command and the
// choices, YAML written from the same JSON the `json` format prints (so both carry one
// schema), and one time format for people. Machines get RFC 3339 (the proto3 JSON mapping's
// timestamps, in json and yaml); people get local time to the millisecond with the UTC
// offset, as `date` would print it.
import { stringify } from "yaml";
import { ConfigError } from "../config/flags.js";

/** The format asked for, or the first of `allowed` when none was; a ConfigError names the choices. */
export function outputFormat<T extends string>(command: string, raw: string | undefined, allowed: readonly [T, ...T[]]): T {
  if (raw === undefined) return allowed[0];
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new ConfigError(`${command}: -o/--output: "${raw}" is not one of ${allowed.join(", ")}`);
}

/** One YAML document of a JSON value (the `json` format's), so a stream of them is valid YAML. */
export function yamlDocument(json: unknown): string {
  return `---\n${stringify(json, { lineWidth: 0 })}`;
}

/** A time for people: local, to the millisecond, with the UTC offset ("2026-12-02 16:04:05.123 +01:00"). */
export function localTime(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(Math.abs(n)).padStart(w, "0");
  const offset = -d.getTimezoneOffset();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    + `.${pad(d.getMilliseconds(), 3)} ${offset < 0 ? "-" : "+"}${pad(Math.trunc(offset / 60))}:${pad(offset % 60)}`;
}
