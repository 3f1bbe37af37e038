// A clickhouse-server for one test file (lab/clickhouse.ts): started in beforeAll, stopped
// in afterAll whatever happened in between, state in a temp dir it removes.
import { afterAll, beforeAll } from "vitest";
import { startClickHouse, type ClickHouseServer } from "../../lab/clickhouse.js";

/** Registers the hooks; call the returned function inside a test to get the server. */
export function useClickHouse(): () => ClickHouseServer {
  let server: ClickHouseServer | undefined;
  beforeAll(async () => { server = await startClickHouse(); }, 60_000);
  afterAll(async () => { await server?.stop(); }, 30_000);
  return () => {
    if (server === undefined) throw new Error("clickhouse-server did not start (see the beforeAll error)");
    return server;
  };
}
