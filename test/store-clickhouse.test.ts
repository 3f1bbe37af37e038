// The ClickHouse flow store against a real clickhouse-server (Debian's 18.16) that this
// file starts on 127.0.0.1 and stops: every field round-trips; a batch is stored once
// across two replicas and a replica killed between its two writes; SQL literals survive
// quotes, backslashes, NUL and `'); DROP TABLE` through every filter field; a newer schema
// is refused naming both versions; an unreachable server fails appends naming the URL;
// retention drops the oldest day partitions and counts them; a replica's tail hands over
// the other replica's records once, and at once those stored before it began that end after
// the replica's hot window start.
import { afterAll, describe, expect, it } from "vitest";
import { createClient } from "@clickhouse/client";
import { Readable } from "node:stream";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  IpVersion, ObservationPoint, ReporterSide, Verdict, VerdictReason, type Endpoint, type FlowRecord,
} from "../proto/gen/bulkhead/v1/flow.js";
import { TrafficDirection, type FlowFilter } from "../proto/gen/bulkhead/v1/observer.js";
import { compileRequest } from "../controlplane/store/filter.js";
import { FlowHistory } from "../controlplane/store/history.js";
import type { StoredBatch } from "../controlplane/store/durable.js";
import { parseClickHouseLocation, type ClickHouseLocation } from "../controlplane/store/clickhouse/location.js";
import { sqlString, sqlUInt } from "../controlplane/store/clickhouse/sql.js";
import { FLOW_COLUMNS, FlowRowEncoder, RowWriter } from "../controlplane/store/clickhouse/rows.js";
import { SCHEMA_VERSION } from "../controlplane/store/clickhouse/schema.js";
import { ClickHouseFlowStore, openClickHouseStore, type ClickHouseStoreOptions } from "../controlplane/store/clickhouse/store.js";
import { ConfigError } from "../config/flags.js";
import { freeLoopbackPort } from "../lab/clickhouse.js";
import { useClickHouse } from "./harness/clickhouse.js";
import { expectNanosecondBounds } from "./harness/store-bounds.js";
import { sleep, waitFor } from "./harness/wait.js";

const server = useClickHouse();
let databases = 0;
/** A fresh database per test, so tests cannot see each other's rows. */
const location = (): ClickHouseLocation =>
  parseClickHouseLocation(server().storeUrl(`bh_test_${process.pid}_${++databases}`), server().credentialsFile);
const open = (loc: ClickHouseLocation, more: Partial<ClickHouseStoreOptions> = {}) => openClickHouseStore({ location: loc, pollIntervalMs: 100, ...more });

function sql(loc: ClickHouseLocation) {
  return createClient({ url: loc.httpUrl, username: loc.username, password: loc.password, compression: { request: false, response: false } });
}
async function scalar(loc: ClickHouseLocation, query: string): Promise<string> {
  const client = sql(loc);
  try {
    const rows = await (await client.query({ query, format: "JSONEachRow" })).json<Record<string, unknown>>();
    return String(Object.values(rows[0] ?? {})[0]);
  } finally {
    await client.close();
  }
}

// ---------------------------------------------------------------------------------------
// Records with every field set

const ts = (ms: number, extraNanos = 0) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 + extraNanos });

function endpoint(namespace: string, podName: string, ip: string, labels: Record<string, string> = { app: podName }): Endpoint {
  return { ip, namespace, podName, podUid: `uid-${podName}`, labels, workloadKind: "Deployment", workloadName: `${podName}-wl`,
    node: "node-a", service: "", world: false };
}

const NOW = Date.now();

function fullRecord(i: number, fields: Partial<FlowRecord> = {}): FlowRecord {
  return {
    startTime: ts(NOW - 2000 + i, 123), endTime: ts(NOW - 1000 + i, 456_789),
    node: "node-a", point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: "lxc0123456789a", ifindex: 17 + i,
    ip: { source: "10.0.1.5", destination: "10.0.2.7", version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 6, protocolName: "TCP", sourcePort: 40000 + i, destinationPort: 8080,
      tcpFlags: { fin: true, syn: true, rst: false, psh: true, ack: true, urg: false, ece: true, cwr: false }, icmpType: 0, icmpCode: 0 },
    packets: 2n ** 40n + BigInt(i), bytes: 2n ** 63n + 5n, sequence: 1_000_000n + BigInt(i),
    source: endpoint("shop", "web-1", "10.0.1.5", { app: "web", "tier.example.com/x": "front" }),
    destination: { ...endpoint("shop", "cart-1", "10.0.2.7"), service: "shop/cart", world: false },
    verdict: Verdict.VERDICT_DROPPED, verdictReason: VerdictReason.VERDICT_REASON_POLICY,
    attribution: { policyVersion: 42n, egressIsolated: true, egressAllowedBy: ["shop/a", "shop/b"], egressIsolatedBy: ["shop/deny"],
      ingressIsolated: false, ingressAllowedBy: [], ingressIsolatedBy: ["db/x"], egressDecidedBy: "Baseline", ingressDecidedBy: "NetworkPolicy",
      egressTierRules: ["Admin platform defer: Pass", "Baseline zero-trust deny-all: Deny"], ingressTierRules: ["Admin platform 'quoted\\rule: Pass"] },
    ...fields,
  };
}

const batch = (instanceId: string, batchId: number, records: FlowRecord[]): StoredBatch =>
  ({ node: "node-a", instanceId, batchId: BigInt(batchId), records });

async function all(store: ClickHouseFlowStore, query: Partial<Parameters<ClickHouseFlowStore["query"]>[0]> = {}): Promise<FlowRecord[]> {
  const out: FlowRecord[] = [];
  for await (const chunk of store.query({ allow: [], deny: [], predicate: () => true, ...query })) out.push(...chunk);
  return out;
}

const byEnd = (a: FlowRecord, b: FlowRecord) => {
  const x = (a.endTime?.seconds ?? 0n) * 1_000_000_000n + BigInt(a.endTime?.nanos ?? 0);
  const y = (b.endTime?.seconds ?? 0n) * 1_000_000_000n + BigInt(b.endTime?.nanos ?? 0);
  return x < y ? -1 : x > y ? 1 : 0;
};

// ---------------------------------------------------------------------------------------

describe("store URL and credentials", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "bh-chloc-"));
  const creds = path.join(dir, "credentials");
  writeFileSync(creds, "bulkhead:pa:ss'word\n");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads HOST:PORT and the database from the URL, user and password from the file", () => {
    expect(parseClickHouseLocation("clickhouse://ch.example:8123/flows", creds)).toEqual({
      httpUrl: "http://ch.example:8123", database: "flows", location: "clickhouse://ch.example:8123/flows",
      username: "bulkhead", password: "pa:ss'word",
    });
  });

  it("refuses credentials in the URL, a database name SQL would need quoted, a missing port, an unreadable file", () => {
    expect(() => parseClickHouseLocation("clickhouse://u:p@h:8123/db", undefined)).toThrow(/--store-credentials FILE/);
    expect(() => parseClickHouseLocation("clickhouse://h:8123/a;DROP", undefined)).toThrow(ConfigError);
    expect(() => parseClickHouseLocation("clickhouse://h/db", undefined)).toThrow(/HOST:PORT/);
    expect(() => parseClickHouseLocation("clickhouse://h:8123/db", path.join(dir, "nope"))).toThrow(/cannot read/);
  });
});

const NASTY = ["it's", "back\\slash", "nul\0byte", "'); DROP TABLE flows; --", "\\'; DROP DATABASE x; --", "ünïcødé-名前-🦀",
  "new\nline\ttab", "%_like", "a\\\\'b''c", "\x01\x7f"];

describe("SQL literals", () => {
  it("sqlString: every nasty value comes back from the server unchanged", async () => {
    const loc = location();
    for (const v of NASTY) expect(await scalar(loc, `SELECT ${sqlString(v)} AS v`), JSON.stringify(v)).toBe(v);
  });

  it("sqlUInt refuses what is not an unsigned integer", () => {
    expect(sqlUInt(5)).toBe("5");
    expect(sqlUInt(2n ** 64n - 1n)).toBe("18446744073709551615");
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 60, -1n, 2n ** 64n]) expect(() => sqlUInt(bad)).toThrow(RangeError);
  });
});

describe("round trip", () => {
  it("every field of every record reads back as appended, in end-time order", async () => {
    const loc = location();
    const store = await open(loc);
    try {
      const v6 = fullRecord(3, {
        ip: { source: "fd00::5", destination: "2001:db8::1:0:0:1", version: IpVersion.IP_VERSION_IPV6 },
        source: endpoint("db", "pg-0", "fd00::5", {}), destination: { ...endpoint("", "", "2001:db8::1:0:0:1"), podName: "", world: true, labels: {} },
        l4: { protocol: 58, protocolName: "ICMPv6", sourcePort: 0, destinationPort: 0, icmpType: 128, icmpCode: 3 },
        point: ObservationPoint.OBSERVATION_POINT_TO_POD, verdict: Verdict.VERDICT_AUDIT, attribution: undefined,
      });
      // Kept as text: not canonical (IPv4-mapped IPv6, upper case, leading zeros), empty.
      const odd = fullRecord(1, {
        ip: { source: "::ffff:10.0.0.1", destination: "FD00::1", version: IpVersion.IP_VERSION_IPV6 },
        source: endpoint("shop", "x", "010.0.0.1"), destination: endpoint("shop", "y", ""),
        node: NASTY[3]!, interface: NASTY[2]!,
      });
      const bare: FlowRecord = {
        node: "n", point: 0, reporter: 0, interface: "", ifindex: 0, packets: 0n, bytes: 0n, verdict: 0, sequence: 0n, verdictReason: 0,
        endTime: ts(NOW - 1500),
      };
      const unknownEnums = fullRecord(2, { point: 7 as ObservationPoint, verdict: 9 as Verdict, verdictReason: 5 as VerdictReason, reporter: -3 as ReporterSide });
      // Frozen, shared Endpoints (as the enricher hands out) are encoded once and reused.
      const shared = Object.freeze({ ...endpoint("shop", "web-2", "fd00::9", {}), labels: Object.freeze({ app: "web" }) });
      const sharedV4 = Object.freeze({ ...endpoint("shop", "web-3", "10.0.1.9", {}), labels: Object.freeze({ a: "b", c: "" }) });
      const records = [fullRecord(0, { source: shared, destination: sharedV4 }), odd, unknownEnums, v6, bare,
        fullRecord(5, { l4: { ...fullRecord(5).l4!, tcpFlags: undefined }, source: sharedV4, destination: shared })];
      await store.append([batch("inst-a", 1, records.slice(0, 3)), batch("inst-a", 2, records.slice(3))]);
      expect(await all(store)).toEqual([...records].sort(byEnd));
      expect(await store.lastBatchId("inst-a")).toBe(2n);
      expect(await store.lastBatchId("inst-b")).toBeUndefined();
    } finally {
      await store.close();
    }
  });

  it("last N: the newest N that pass the predicate, oldest first", async () => {
    const store = await open(location());
    try {
      const records = Array.from({ length: 600 }, (_, i) => fullRecord(i, { verdict: i % 3 === 0 ? Verdict.VERDICT_FORWARDED : Verdict.VERDICT_DROPPED }));
      await store.append([batch("i", 1, records)]);
      const predicate = (r: FlowRecord) => r.verdict === Verdict.VERDICT_FORWARDED;
      const got = await all(store, { last: 150, predicate });
      expect(got).toEqual(records.filter(predicate).slice(-150));
    } finally {
      await store.close();
    }
  });
});

describe("time ranges", () => {
  it("since/until select what the in-memory history selects (records overlapping the range), with and without last N", async () => {
    const store = await open(location());
    try {
      // Records 0.5 s to 3 s long, ending every 0.7 s over two minutes, with sub-millisecond ends.
      const records = Array.from({ length: 170 }, (_, i) => {
        const end = NOW - 120_000 + i * 700;
        return fullRecord(i, { startTime: ts(end - 500 - (i % 6) * 500, i), endTime: ts(end, 999_999 - i), sequence: BigInt(i) });
      });
      await store.append([batch("t", 1, records.slice(0, 80)), batch("t", 2, records.slice(80))]);
      const history = new FlowHistory();
      history.append(records);
      const msTs = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: Math.round((ms % 1000) * 1e6) });
      for (const [since, until] of [[NOW - 100_000.5, NOW - 60_000], [NOW - 30_000, undefined], [undefined, NOW - 110_000], [NOW - 50_000, NOW - 50_000]]) {
        for (const last of [undefined, 7]) {
          const expected = history.query({ since: since === undefined ? undefined : msTs(since), until: until === undefined ? undefined : msTs(until), last });
          const got = await all(store, { since: since === undefined ? undefined : msTs(since), until: until === undefined ? undefined : msTs(until), last });
          expect(got.map((r) => r.sequence), `since ${since} until ${until} last ${last}`).toEqual(expected.map((r) => r.sequence));
        }
      }
    } finally {
      await store.close();
    }
  });
  it("endNotAfter keeps exactly the records that end at or before it (the hot window serves those after), with and without last N", async () => {
    const store = await open(location());
    try {
      // Record 30 ends exactly at the bound (kept); record 31 one nanosecond after it (left out).
      const bound = ts(NOW - 30_000);
      const records = Array.from({ length: 60 }, (_, i) => {
        const end = NOW - 60_000 + i * 1000;
        const endTime = i === 30 ? bound : i === 31 ? ts(NOW - 30_000, 1) : ts(end, 1);
        return fullRecord(i, { startTime: ts(end - 1500), endTime, sequence: BigInt(i) });
      });
      await store.append([batch("hot", 1, records)]);
      const endNs = (r: FlowRecord) => r.endTime!.seconds * 1_000_000_000n + BigInt(r.endTime!.nanos);
      const boundNs = bound.seconds * 1_000_000_000n + BigInt(bound.nanos);
      for (const [sinceMs, last] of [[undefined, undefined], [NOW - 45_000, undefined], [undefined, 5]] as const) {
        const older = records.filter((r) => endNs(r) <= boundNs && (sinceMs === undefined || endNs(r) >= BigInt(sinceMs) * 1_000_000n));
        const expected = last === undefined ? older : older.slice(-last);
        expect(expected.map((r) => r.sequence)).toContain(30n);
        const got = await all(store, { endNotAfter: bound, ...(sinceMs !== undefined ? { since: ts(sinceMs) } : {}), ...(last !== undefined ? { last } : {}) });
        expect(got.map((r) => r.sequence), `since ${sinceMs} last ${last}`).toEqual(expected.map((r) => r.sequence));
      }
    } finally {
      await store.close();
    }
  });
  it("compares every time bound exactly to the nanosecond: a record at since, until or endNotAfter is kept, one a nanosecond beyond is not", async () => {
    const store = await open(location());
    try {
      // Ends (and starts) 1 ns apart around a bound inside a second: a float of ms cannot tell them apart.
      const base = ts(NOW - 10_000, 456_789);
      const at = (dn: number) => ({ seconds: base.seconds, nanos: base.nanos + dn });
      const records = Array.from({ length: 5 }, (_, i) => fullRecord(i, { startTime: at(i - 2), endTime: at(i - 2), sequence: BigInt(i) }));
      await store.append([batch("ns", 1, records)]);
      const seqs = async (q: Partial<Parameters<ClickHouseFlowStore["query"]>[0]>) => (await all(store, q)).map((r) => Number(r.sequence));
      await expectNanosecondBounds(seqs, base, at);
    } finally {
      await store.close();
    }
  });
});


describe("exactly once across replicas", () => {
  it("a batch written by two replicas, and one left half-written by a killed replica, each read once", async () => {
    const loc = location();
    const a = await open(loc, { replicaId: "replica-a" });
    const b = await open(loc, { replicaId: "replica-b" });
    try {
      const records = (id: number) => Array.from({ length: 5 }, (_, i) => fullRecord(id * 10 + i, { sequence: BigInt(id * 10 + i) }));
      await a.append([batch("agent-1", 1, records(1)), batch("agent-1", 2, records(2))]);
      // A dies with its INSERT of batch 3 in flight while the agent already re-sends to B:
      // both writes land.
      await Promise.all([a.append([batch("agent-1", 3, records(3))]), b.append([batch("agent-1", 3, records(3))])]);
      // A is killed between the rows and the marker of batch 4: rows without a marker.
      const rows = new RowWriter();
      const encoder = new FlowRowEncoder();
      records(4).forEach((r, row) => encoder.record(rows, r, { instanceId: "agent-1", batchId: 4n, row, writeId: 12345n }));
      const client = sql(loc);
      const result = await client.exec({ query: `INSERT INTO ${loc.database}.flows (${FLOW_COLUMNS.map(([n]) => n).join(", ")}) FORMAT RowBinary`,
        values: Readable.from([rows.take()]) });
      result.stream.destroy();
      await client.close();
      expect(await scalar(loc, `SELECT count() FROM ${loc.database}.flows`)).toBe("25");

      // The agent reconnects to B, which asks the store what is in.
      expect(await b.lastBatchId("agent-1")).toBe(3n);
      await b.append([batch("agent-1", 4, records(4))]);
      expect(await a.lastBatchId("agent-1")).toBe(4n);
      const expected = [1, 2, 3, 4].flatMap(records).sort(byEnd);
      for (const store of [a, b]) {
        const got = await all(store);
        expect(got.map((r) => r.sequence)).toEqual(expected.map((r) => r.sequence));
        expect(got).toEqual(expected);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe("group commit", () => {
  it("appends that arrive while a write is in flight go in one write; each resolves once stored", async () => {
    const loc = location();
    const store = await open(loc);
    try {
      const records = (agent: number) => Array.from({ length: 50 }, (_, i) => fullRecord(i, { sequence: BigInt(agent * 1000 + i) }));
      await Promise.all(Array.from({ length: 20 }, (_, agent) => store.append([batch(`agent-${agent}`, 1, records(agent))])));
      // The first write starts alone; the 19 that arrived meanwhile share the next.
      expect(store.writes).toBe(2);
      expect((await all(store)).length).toBe(20 * 50);
      for (let agent = 0; agent < 20; agent++) expect(await store.lastBatchId(`agent-${agent}`)).toBe(1n);
    } finally {
      await store.close();
    }
  });
});

describe("tail: one replica sees the other's records", () => {
  it("hands over B's batches once, never A's own, never a batch A also wrote", async () => {
    const loc = location();
    const a = await open(loc, { replicaId: "tail-a" });
    const b = await open(loc, { replicaId: "tail-b" });
    const got: FlowRecord[][] = [];
    const errors: Error[] = [];
    const stop = a.tail((records) => got.push([...records]), (e) => errors.push(e));
    try {
      await sleep(300); // the priming poll
      await a.append([batch("agent-a", 1, [fullRecord(1)])]);
      await b.append([batch("agent-b", 1, [fullRecord(2), fullRecord(3)])]);
      await a.append([batch("agent-c", 1, [fullRecord(4)])]);
      await b.append([batch("agent-c", 1, [fullRecord(4)])]);
      await waitFor(() => got.length, (n) => n >= 1, 10_000, "A's tail to hand over B's batch");
      await sleep(500); // more polls: nothing else may come
      expect(got).toEqual([[fullRecord(2), fullRecord(3)]]);
      expect(errors).toEqual([]);
    } finally {
      stop();
      await a.close();
      await b.close();
    }
  });

  it("hands over at once, given an instant, the batches B stored before the tail began whose records end after it, and only those", async () => {
    const loc = location();
    const a = await open(loc, { replicaId: "tail-a" });
    const b = await open(loc, { replicaId: "tail-b" });
    const early = fullRecord(5, { startTime: ts(NOW - 11_000), endTime: ts(NOW - 10_000) });
    const late = fullRecord(6); // ends NOW - 994 ms
    await b.append([batch("agent-b", 1, [early])]);
    await b.append([batch("agent-b", 2, [late])]);
    const got: FlowRecord[][] = [];
    const errors: Error[] = [];
    // A replica whose hot window starts 5 s before NOW: its store queries serve `early`, its tail must serve `late`.
    const stop = a.tail((records) => got.push([...records]), (e) => errors.push(e), NOW - 5_000);
    try {
      await waitFor(() => got.length, (n) => n >= 1, 10_000, "A's tail to hand over B's late batch on its first poll");
      await sleep(500); // more polls (every 100 ms): nothing else may come
      expect(got).toEqual([[late]]);
      expect(errors).toEqual([]);
    } finally {
      stop();
      await a.close();
      await b.close();
    }
  });
});

// ---------------------------------------------------------------------------------------

const filter = (fields: Partial<FlowFilter>): FlowFilter => ({
  namespace: [], sourceNamespace: [], destinationNamespace: [], pod: [], sourcePod: [], destinationPod: [],
  label: [], sourceLabel: [], destinationLabel: [], workload: [], sourceWorkload: [], destinationWorkload: [],
  service: [], sourceService: [], destinationService: [], ip: [], sourceIp: [], destinationIp: [],
  port: [], sourcePort: [], destinationPort: [], protocol: [], verdict: [], node: [], direction: [], ...fields,
});

const STRING_FIELDS = ["namespace", "sourceNamespace", "destinationNamespace", "pod", "sourcePod", "destinationPod",
  "label", "sourceLabel", "destinationLabel", "workload", "sourceWorkload", "destinationWorkload",
  "service", "sourceService", "destinationService", "ip", "sourceIp", "destinationIp", "protocol", "node"] as const;

describe("injection through every filter field", () => {
  it("answers exactly what the predicate answers and leaves the tables intact", async () => {
    const loc = location();
    const store = await open(loc);
    try {
      // A record per nasty value, carrying it in every string the filters read.
      const records = NASTY.map((v, i) => fullRecord(i, {
        node: v,
        source: { ...endpoint(v, v, "10.0.1.5", { app: v }), workloadName: v, service: `${v}/${v}` },
        destination: { ...endpoint("shop", `${v}-dst`, "10.0.2.7"), service: `shop/${v}` },
      }));
      records.push(fullRecord(50), fullRecord(51, { verdict: Verdict.VERDICT_FORWARDED, point: ObservationPoint.OBSERVATION_POINT_TO_POD }));
      await store.append([batch("inj", 1, records)]);
      const total = records.length;
      let asked = 0;
      let refused = 0;
      for (const field of STRING_FIELDS) {
        for (const v of [...NASTY, ...NASTY.map((x) => `${x}/${x}`), ...NASTY.map((x) => `${x}*`)]) {
          for (const side of ["allow", "deny"] as const) {
            const f = filter({ [field]: [v] });
            const request = side === "allow" ? { allow: [f], deny: [] } : { allow: [], deny: [f] };
            let predicate;
            try {
              predicate = compileRequest(request.allow, request.deny);
            } catch {
              refused++; // refused by validation before any SQL is written
              continue;
            }
            asked++;
            const got = await all(store, { ...request, predicate });
            expect(got.map((r) => r.sequence), `${side} ${field} ${JSON.stringify(v)}`).toEqual(records.filter(predicate).sort(byEnd).map((r) => r.sequence));
          }
        }
      }
      // Numbers and enums too, through the same path.
      for (const f of [{ port: [8080] }, { sourcePort: [40003] }, { verdict: [Verdict.VERDICT_FORWARDED] },
        { direction: [TrafficDirection.TRAFFIC_DIRECTION_INGRESS] }, { protocol: ["tcp"] }, { ip: ["10.0.0.0/16"] }, { destinationIp: ["10.0.2.7"] }].map(filter)) {
        const predicate = compileRequest([f], []);
        expect((await all(store, { allow: [f], deny: [], predicate })).map((r) => r.sequence), JSON.stringify(f))
          .toEqual(records.filter(predicate).sort(byEnd).map((r) => r.sequence));
      }
      expect(asked).toBeGreaterThan(300);
      expect(refused).toBeGreaterThan(0);
      expect(await scalar(loc, `SELECT count() FROM ${loc.database}.flows`)).toBe(String(total));
      expect(await scalar(loc, `SELECT count() FROM system.tables WHERE database = '${loc.database}'`)).toBe("4");
    } finally {
      await store.close();
    }
  });
});

// ---------------------------------------------------------------------------------------

describe("bad input and faults", () => {
  it("refuses a database with a newer schema, naming both versions", async () => {
    const loc = location();
    await (await open(loc)).close();
    const client = sql(loc);
    await client.command({ query: `INSERT INTO ${loc.database}.schema_version (version, by) VALUES (${SCHEMA_VERSION + 98}, 'future')` });
    await client.close();
    await expect(open(loc)).rejects.toThrow(new RegExp(`schema version ${SCHEMA_VERSION + 98}, newer than version ${SCHEMA_VERSION}`));
  });

  it("upgrades a version 1 database in place: its rows read back, without tiers, beside new rows with them", async () => {
    const loc = location();
    const first = await open(loc);
    const old = fullRecord(1);
    await first.append([batch("upgrade", 1, [old])]);
    await first.close();
    // Back to version 1: the flows table without version 2's columns, schema_version saying 1.
    const client = sql(loc);
    for (const column of ["egress_decided_by", "ingress_decided_by", "egress_tier_rules", "ingress_tier_rules"]) {
      await client.command({ query: `ALTER TABLE ${loc.database}.flows DROP COLUMN ${column}` });
    }
    await client.command({ query: `DROP TABLE ${loc.database}.schema_version` });
    await client.command({ query: `CREATE TABLE ${loc.database}.schema_version (version UInt32, applied DateTime('UTC') DEFAULT now(), by String) ENGINE = MergeTree ORDER BY version` });
    await client.command({ query: `INSERT INTO ${loc.database}.schema_version (version, by) VALUES (1, 'v1')` });
    await client.close();
    const store = await open(loc);
    try {
      const fresh = fullRecord(2);
      await store.append([batch("upgrade", 2, [fresh])]);
      const noTiers = { ...old.attribution!, egressDecidedBy: "", ingressDecidedBy: "", egressTierRules: [], ingressTierRules: [] };
      expect(await all(store)).toEqual([{ ...old, attribution: noTiers }, fresh]);
    } finally {
      await store.close();
    }
  });

  it("a version 1 upgrade left half done (a replica killed between its ALTERs) is finished by two replicas starting together", async () => {
    const loc = location();
    const first = await open(loc);
    const old = fullRecord(3);
    await first.append([batch("half", 1, [old])]);
    await first.close();
    // Version 1 with half of version 2's columns added: the killed replica's ALTERs ran for
    // the egress side only, and it never recorded version 2.
    const client = sql(loc);
    for (const column of ["ingress_decided_by", "ingress_tier_rules"]) {
      await client.command({ query: `ALTER TABLE ${loc.database}.flows DROP COLUMN ${column}` });
    }
    await client.command({ query: `DROP TABLE ${loc.database}.schema_version` });
    await client.command({ query: `CREATE TABLE ${loc.database}.schema_version (version UInt32, applied DateTime('UTC') DEFAULT now(), by String) ENGINE = MergeTree ORDER BY version` });
    await client.command({ query: `INSERT INTO ${loc.database}.schema_version (version, by) VALUES (1, 'v1')` });
    await client.close();
    // Each replica finds some column already there: the one the killed replica added, and
    // possibly one the other replica added a moment before. Both open and both write.
    const [a, b] = await Promise.all([open(loc), open(loc)]);
    const [fromA, fromB] = [fullRecord(4), fullRecord(5)];
    try {
      await a.append([batch("half-a", 1, [fromA])]);
      await b.append([batch("half-b", 1, [fromB])]);
    } finally {
      await a.close();
      await b.close();
    }
    const reader = await open(loc);
    try {
      const egressOnly = { ...old.attribution!, ingressDecidedBy: "", ingressTierRules: [] };
      expect(await all(reader)).toEqual([{ ...old, attribution: egressOnly }, fromA, fromB]);
      expect(await scalar(loc, `SELECT max(version) FROM ${loc.database}.schema_version`)).toBe(String(SCHEMA_VERSION));
    } finally {
      await reader.close();
    }
  });

  it("an unreachable server: open and append reject naming the URL, status names the error", async () => {
    const port = await freeLoopbackPort();
    const url = `clickhouse://127.0.0.1:${port}/flows`;
    const loc = parseClickHouseLocation(url, server().credentialsFile);
    await expect(open(loc)).rejects.toThrow(url);
    const store = new ClickHouseFlowStore({ location: loc });
    try {
      await expect(store.append([batch("x", 1, [fullRecord(0)])])).rejects.toThrow(url);
      expect(store.status().error).toContain(url);
      expect(store.status().error).not.toContain(server().password);
    } finally {
      await store.close();
    }
  });
});

describe("retention", () => {
  const day = 86_400_000;
  const at = (daysAgo: number, i: number) => fullRecord(i, { startTime: ts(NOW - daysAgo * day + i), endTime: ts(NOW - daysAgo * day + i + 1) });

  it("drops day partitions older than the retention, oldest first, counts them, keeps the rest", async () => {
    const loc = location();
    const store = await open(loc, { retentionMs: 5.5 * day });
    try {
      await store.append([batch("r", 1, [at(10, 0), at(10, 1), at(10, 2)]), batch("r", 2, [at(8, 3), at(8, 4)]),
        batch("r", 3, [at(1, 5)]), batch("r", 4, [at(0, 6), at(0, 7)])]);
      expect(await store.enforceRetention()).toEqual({ records: 5n, partitions: 2n });
      expect((await all(store)).map((r) => r.sequence)).toEqual([at(1, 5), at(0, 6), at(0, 7)].sort(byEnd).map((r) => r.sequence));
      expect(await store.enforceRetention()).toEqual({ records: 0n, partitions: 0n });
      expect(store.status()).toMatchObject({ kind: "clickhouse", location: loc.location, records: 3n, retentionDroppedRecords: 5n, retentionDroppedPartitions: 2n, error: "" });
      expect(store.status().bytes).toBeGreaterThan(0n);
    } finally {
      await store.close();
    }
  });

  it("drops the oldest days while the store is larger than the size bound, never the newest", async () => {
    const loc = location();
    const store = await open(loc, { retentionBytes: 1n });
    try {
      await store.append([batch("s", 1, [at(3, 0)]), batch("s", 2, [at(2, 1), at(2, 2)]), batch("s", 3, [at(0, 3)])]);
      expect(await store.enforceRetention()).toEqual({ records: 3n, partitions: 2n });
      expect((await all(store)).map((r) => r.sequence)).toEqual([at(0, 3).sequence]);
    } finally {
      await store.close();
    }
  });
});
