// `--store clickhouse://HOST:PORT/DB` and `--store-credentials FILE`: where the ClickHouse
// store is and who it logs in as. PORT is the server's HTTP interface (8123 by default).
// Credentials live only in the file (a Kubernetes Secret mounted as a file, or the lab's
// <stateDir>/credentials), never in the URL, so they appear in no command line, log line or
// status field: the URL is shown as given.
import { readFileSync } from "node:fs";
import { ConfigError } from "../../../config/flags.js";

export interface ClickHouseLocation {
  /** http://HOST:PORT, what the client connects to. */
  httpUrl: string;
  database: string;
  /** The URL as the operator wrote it (it holds no credentials): for logs and status. */
  location: string;
  username: string;
  password: string;
}

/** A database name the project will put in SQL unquoted: letters, digits, underscores. */
const DATABASE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * Parses the store URL and reads the credentials file: one line `USER:PASSWORD` (the
 * password may contain ":"); without a file, user `default` with no password.
 */
export function parseClickHouseLocation(url: string, credentialsFile: string | undefined): ClickHouseLocation {
  const m = /^clickhouse:\/\/([^/?#@]+)\/([^/?#]*)$/.exec(url);
  if (!m) {
    if (/^clickhouse:\/\/[^/]*@/.test(url)) {
      throw new ConfigError("--store: the URL holds credentials; put USER:PASSWORD in a file and pass --store-credentials FILE");
    }
    throw new ConfigError(`--store: "${url}" is not clickhouse://HOST:PORT/DATABASE`);
  }
  const hostPort = m[1]!;
  const database = m[2]!;
  const hp = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(hostPort);
  if (!hp || Number(hp[2]) < 1 || Number(hp[2]) > 65535) {
    throw new ConfigError(`--store: "${hostPort}" in ${url} is not HOST:PORT (the server's HTTP port, e.g. 8123)`);
  }
  if (!DATABASE.test(database)) {
    throw new ConfigError(`--store: database "${database}" in ${url} must be letters, digits and "_" (not starting with a digit)`);
  }
  let username = "default";
  let password = "";
  if (credentialsFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(credentialsFile, "utf8");
    } catch (error) {
      throw new ConfigError(`--store-credentials: cannot read ${credentialsFile}: ${(error as Error).message}`);
    }
    const line = text.split("\n").find((l) => l.trim() !== "")?.replace(/\r$/, "") ?? "";
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ConfigError(`--store-credentials: ${credentialsFile} must hold one line USER:PASSWORD`);
    username = line.slice(0, colon);
    password = line.slice(colon + 1);
  }
  return { httpUrl: `http://${hostPort}`, database, location: url, username, password };
}
