// The ClickHouse schema, owned by the project: numbered migrations, applied in order and
// recorded in `schema_version`. Every statement is idempotent (IF NOT EXISTS, or an ADD
// COLUMN that finds its column already there), so replicas starting together may both run
// a migration. Version 2 added the tier attribution (which tier decided each side, the
// ClusterNetworkPolicy rules that matched). A database whose recorded version is newer
// than this build's is refused, naming both versions: an older control plane must not
// write rows a newer schema reads differently.
//
// Column names avoid SQL keywords (row, table, partition) that newer servers may not take
// unquoted. Tables (MergeTree; 18.16 has no TTL, so retention drops whole day partitions):
// - flows:   one row per FlowRecord (rows.ts), partitioned by the record's end day, sorted
//            by (hour, source namespace, destination namespace, end time): a time range
//            reads its hours only, and a namespace is a key range within each hour, on
//            either end (namespaces are few, so the second key column prunes as well).
// - batches: one row per stored batch write (the commit marker, store.ts), partitioned by
//            the day it was written.
// - retention_log: what retention dropped, per table and partition.
import { FLOW_COLUMNS } from "./rows.js";
import { sqlString } from "./sql.js";

/** The schema this build writes and reads. */
export const SCHEMA_VERSION = 2;

/** Columns of `flows` added by version 2 (tier attribution), each after the one before it. */
const ADDED_IN_2: readonly [string, string][] = [
  ["egress_decided_by", "ingress_isolated_by"], ["ingress_decided_by", "egress_decided_by"],
  ["egress_tier_rules", "ingress_decided_by"], ["ingress_tier_rules", "egress_tier_rules"],
];
const typeOf = (column: string) => FLOW_COLUMNS.find(([name]) => name === column)?.[1] ?? "String";

const MIGRATIONS: readonly ((db: string) => string[])[] = [
  (db) => [
    `CREATE TABLE IF NOT EXISTS ${db}.flows (${FLOW_COLUMNS.filter(([name]) => !ADDED_IN_2.some(([added]) => added === name))
      .map(([name, type]) => `${name} ${type}`).join(", ")})
     ENGINE = MergeTree PARTITION BY toDate(end_time) ORDER BY (toStartOfHour(end_time), src_namespace, dst_namespace, end_time)`,
    `CREATE TABLE IF NOT EXISTS ${db}.batches (written DateTime('UTC') DEFAULT now(), instance_id String, batch_id UInt64,
       write_id UInt64, node String, records UInt32, min_start_ns UInt64, max_end_ns UInt64, replica String, replica_seq UInt64)
     ENGINE = MergeTree PARTITION BY toDate(written) ORDER BY (instance_id, batch_id)`,
    `CREATE TABLE IF NOT EXISTS ${db}.retention_log (dropped DateTime('UTC') DEFAULT now(), table_name String, partition_id String,
       records UInt64, bytes UInt64, replica String)
     ENGINE = MergeTree ORDER BY (table_name, partition_id)`,
  ],
  // 18.16 has no ADD COLUMN IF NOT EXISTS: a replica that meets the column added by another
  // one starting at the same moment takes it as done (see migrate).
  (db) => ADDED_IN_2.map(([name, after]) => `ALTER TABLE ${db}.flows ADD COLUMN ${name} ${typeOf(name)} AFTER ${after}`),
];

if (MIGRATIONS.length !== SCHEMA_VERSION) throw new Error("schema.ts: SCHEMA_VERSION must equal the number of migrations");

/** The database holds a schema newer than this build's. */
export class StoreSchemaError extends Error {
  constructor(readonly location: string, readonly found: number, readonly supported: number) {
    super(`ClickHouse store ${location}: the database has schema version ${found}, newer than version ${supported} that this `
      + `control plane knows; run a control plane at least as new as the one that migrated it, or use another database`);
    this.name = "StoreSchemaError";
  }
}

export interface SchemaRunner {
  command(sql: string): Promise<void>;
  queryNumber(sql: string): Promise<number>;
}

/** Creates the database if needed and applies the migrations it lacks; returns the version found before. */
export async function migrate(run: SchemaRunner, db: string, location: string, replica: string): Promise<number> {
  await run.command(`CREATE DATABASE IF NOT EXISTS ${db}`);
  await run.command(`CREATE TABLE IF NOT EXISTS ${db}.schema_version (version UInt32, applied DateTime('UTC') DEFAULT now(), by String)
    ENGINE = MergeTree ORDER BY version`);
  const found = await run.queryNumber(`SELECT max(version) FROM ${db}.schema_version`);
  if (found > SCHEMA_VERSION) throw new StoreSchemaError(location, found, SCHEMA_VERSION);
  for (let version = found + 1; version <= SCHEMA_VERSION; version++) {
    for (const statement of MIGRATIONS[version - 1]!(db)) {
      try {
        await run.command(statement);
      } catch (error) {
        // Another replica ran this ALTER first.
        if (!(/ ADD COLUMN /.test(statement) && /already exists/i.test((error as Error).message))) throw error;
      }
    }
    await run.command(`INSERT INTO ${db}.schema_version (version, by) VALUES (${version}, ${sqlString(replica)})`);
  }
  return found;
}
