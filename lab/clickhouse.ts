// A local clickhouse-server (Debian's 18.16 or newer) for the tests, the benches and the
// lab: its own config, every file under one state dir, HTTP on 127.0.0.1 only. No native
// TCP, interserver, TLS or MySQL port is configured, so the HTTP port is the only socket it
// opens. One user, `bulkhead`, with a random password written to <stateDir>/credentials in
// the format `--store-credentials` reads (controlplane/store/clickhouse/url.ts).
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const CLICKHOUSE_SERVER = "clickhouse-server";
export const CLICKHOUSE_USER = "bulkhead";
/** Long enough for a first start on a busy 2-core machine (it creates its system tables). */
const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;

export interface ClickHouseOptions {
  /** Where config, data and logs go; default: a new temp dir, removed by stop(). */
  stateDir?: string;
  /** HTTP port on 127.0.0.1; default: a free one. */
  port?: number;
}

export interface ClickHouseServer {
  /** http://127.0.0.1:PORT */
  httpUrl: string;
  port: number;
  pid: number;
  stateDir: string;
  /** `--store clickhouse://127.0.0.1:PORT/DB` for a database. */
  storeUrl(database: string): string;
  /** The file with the user and password (`--store-credentials`). */
  credentialsFile: string;
  username: string;
  password: string;
  /** SIGTERM, SIGKILL after 10 s; removes the state dir when this module made it. (If the
   * starting process exits first, the server is killed with it.) */
  stop(): Promise<void>;
}

/** A port the kernel just gave out on 127.0.0.1 (it is free unless someone takes it first). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address !== null ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

const xmlText = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function serverConfig(dir: string, port: number): string {
  const p = (name: string) => xmlText(path.join(dir, name));
  return `<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>${p("logs/clickhouse-server.log")}</log>
    <errorlog>${p("logs/clickhouse-server.err.log")}</errorlog>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${port}</http_port>
  <path>${p("data")}/</path>
  <tmp_path>${p("tmp")}/</tmp_path>
  <user_files_path>${p("user_files")}/</user_files_path>
  <format_schema_path>${p("format_schemas")}/</format_schema_path>
  <users_config>${p("users.xml")}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>64</max_concurrent_queries>
</yandex>
`;
}

function usersConfig(password: string): string {
  return `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users>
    <${CLICKHOUSE_USER}>
      <password>${xmlText(password)}</password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </${CLICKHOUSE_USER}>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;
}

export function clickHouseLogTail(dir: string): string {
  try {
    return readFileSync(path.join(dir, "logs", "clickhouse-server.err.log"), "utf8").split("\n").slice(-5).join("\n");
  } catch {
    return "(no error log)";
  }
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts clickhouse-server and resolves once `GET /ping` answers "Ok." and an
 * authenticated `SELECT 1` succeeds (the users file is loaded). Rejects, with the server's
 * own last error lines, if it exits first or is not ready within 30 s; it is stopped then.
 */
/** A server's files, written and ready to start: what a supervisor needs to run it. */
export interface ClickHouseSetup {
  /** The command line: clickhouse-server with this setup's config file. */
  argv: string[];
  port: number;
  httpUrl: string;
  credentialsFile: string;
  password: string;
}

/**
 * Writes config, users and credentials into `dir` (sub-folders for data, tmp and logs
 * made) for a server on 127.0.0.1:`port`; starts nothing. startClickHouse runs it itself;
 * the lab's supervisor runs the same command line (lab up --store clickhouse).
 */
export function writeClickHouseSetup(dir: string, port: number): ClickHouseSetup {
  for (const sub of ["data", "tmp", "user_files", "format_schemas", "logs"]) mkdirSync(path.join(dir, sub), { recursive: true });
  const password = randomBytes(18).toString("base64url");
  writeFileSync(path.join(dir, "config.xml"), serverConfig(dir, port));
  writeFileSync(path.join(dir, "users.xml"), usersConfig(password), { mode: 0o600 });
  const credentialsFile = path.join(dir, "credentials");
  writeFileSync(credentialsFile, `${CLICKHOUSE_USER}:${password}\n`, { mode: 0o600 });
  return { argv: [CLICKHOUSE_SERVER, `--config-file=${path.join(dir, "config.xml")}`], port, httpUrl: `http://127.0.0.1:${port}`, credentialsFile, password };
}

/** Whether the server answers `/ping` and an authenticated `SELECT 1` (its users file is loaded). */
export async function clickHouseAnswers(httpUrl: string, username: string, password: string): Promise<{ ok: boolean; last: string }> {
  const auth = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
  try {
    const ping = await fetch(`${httpUrl}/ping`, { signal: AbortSignal.timeout(2000) });
    const select = ping.ok ? await fetch(`${httpUrl}/?query=SELECT%201`, { headers: { Authorization: auth }, signal: AbortSignal.timeout(2000) }) : undefined;
    if (select?.ok && (await select.text()).trim() === "1") return { ok: true, last: "ready" };
    return { ok: false, last: `ping ${ping.status}${select ? `, SELECT 1 ${select.status}` : ""}` };
  } catch (error) {
    return { ok: false, last: (error as Error).message };
  }
}

export async function startClickHouse(options: ClickHouseOptions = {}): Promise<ClickHouseServer> {
  const ownDir = options.stateDir === undefined;
  const dir = options.stateDir ?? mkdtempSync(path.join(os.tmpdir(), "bh-clickhouse-"));
  const port = options.port ?? await freeLoopbackPort();
  const { argv, credentialsFile, password } = writeClickHouseSetup(dir, port);

  const child = spawn(argv[0] ?? CLICKHOUSE_SERVER, argv.slice(1), {
    cwd: dir, stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
  let spawnFailure: Error | undefined;
  child.once("error", (error) => { spawnFailure = error; });
  const httpUrl = `http://127.0.0.1:${port}`;
  // A test runner or bench that exits without stop() (an uncaught error) takes the server along.
  const killOnExit = () => {
    child.kill("SIGKILL");
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", killOnExit);
  const stop = async () => {
    process.off("exit", killOnExit);
    await stopChild(child, STOP_GRACE_MS);
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = "no answer yet";
  try {
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`clickhouse-server exited (${child.exitCode ?? child.signalCode}) before answering on ${httpUrl}: ${stderr.trim()} ${clickHouseLogTail(dir)}`);
      }
      if (spawnFailure) throw new Error(`${CLICKHOUSE_SERVER} could not be started (${spawnFailure.message}); install it: apt-get install clickhouse-server`);
      const answer = await clickHouseAnswers(httpUrl, CLICKHOUSE_USER, password);
      if (answer.ok) break;
      last = answer.last;
      if (Date.now() > deadline) throw new Error(`clickhouse-server on ${httpUrl} not ready after ${READY_TIMEOUT_MS} ms (last: ${last}): ${clickHouseLogTail(dir)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    httpUrl, port, pid: child.pid ?? 0, stateDir: dir, credentialsFile, username: CLICKHOUSE_USER, password,
    storeUrl: (database) => `clickhouse://127.0.0.1:${port}/${database}`,
    stop,
  };
}
