// The replay's fast path (controlplane/policy/class-verdicts.ts) against the reference
// model, on seeded random clusters, policies and flows (the conformance generators and the
// shared PRNG): every side's allowed bit equals PolicyModel.evaluate's, and a what-if
// report through the fast path equals the report with every tuple judged by the model
// alone, field for field (verdicts, deciding rules, counts, times, notes).
import { describe, expect, it } from "vitest";
import { generatePlacement, ModelCluster } from "../lab/conformance/cases.js";
import { ClassVerdicts, EGRESS_ALLOWED, INGRESS_ALLOWED, type ClassEnd } from "../controlplane/policy/class-verdicts.js";
import { PolicyModel, protocolOf, type Peer, type PolicyModeName } from "../controlplane/policy/model.js";
import { FlowReplay, type ChangedEdge, isJudgedObservation, isJudgedRow, storedEndOf } from "../controlplane/policy/whatif.js";
import { BATCH_ROWS, TupleBatch, TupleTable } from "../controlplane/policy/tuple-table.js";
import type { Pod } from "../controlplane/metadata/objects.js";
import { VerdictReason, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowHistory, newStoredRowNumbers, type HistoryQuery } from "../controlplane/store/history.js";
import { randomCases } from "./harness/random-policy.js";
import { seededRandom } from "./harness/seeded-random.js";
import { endpoint, flow, podEnd } from "./harness/flow-records.js";

const PROTOCOLS = [6, 17, 132, 1] as const;

describe("class verdicts equal the model", () => {
  it("side by side for every pair of ends (pods, nodes, outside addresses) and random ports, on 150 random cases (seed 1401)", async () => {
    const rand = seededRandom(1401);
    let compared = 0, denied = 0;
    const wrong: string[] = [];
    for (const c of await randomCases(1401, 150)) {
      const cluster = new ModelCluster(c.model, generatePlacement(c.model));
      for (const [s, step] of c.steps.entries()) {
        for (const action of step.actions) cluster.apply(action);
        const objects = cluster.objects();
        const model = new PolicyModel(objects, { defaultMode: "enforce" });
        const fast = new ClassVerdicts(model);
        // Each end its own class (pods differ by address, which ipBlocks may tell apart); ends in random order so caches fill in any order.
        const peers: Peer[] = [
          ...objects.pods.map((p) => ({ pod: `${p.metadata.namespace}/${p.metadata.name}` })),
          ...objects.nodes.map((n) => ({ ip: n.status.addresses[0]!.address })),
          ...Array.from({ length: 4 }, () => ({ ip: `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}` })),
        ];
        const ends: ClassEnd[] = peers.map((p, i) => ({ classId: i, peer: model.resolve(p) }));
        const ports = [...c.model.ports, ...step.probes.map((p) => p.port), 1 + Math.floor(rand() * 65535)];
        for (let n = 0; n < 400; n++) {
          const i = Math.floor(rand() * ends.length), j = Math.floor(rand() * ends.length);
          const protocol = PROTOCOLS[Math.floor(rand() * PROTOCOLS.length)]!, port = protocol === 1 ? 0 : ports[Math.floor(rand() * ports.length)]!;
          const name = protocolOf(protocol);
          const v = model.evaluate({ src: peers[i]!, dst: peers[j]!, protocol: name ?? protocol, port });
          const bits = fast.sides(ends[i]!, ends[j]!, name, port);
          const want = (v.egress.allowed ? EGRESS_ALLOWED : 0) | (v.ingress.allowed ? INGRESS_ALLOWED : 0);
          compared++;
          if (!v.allowed) denied++;
          if (bits !== want) wrong.push(`${c.id} step ${s}: ${JSON.stringify(peers[i])} → ${JSON.stringify(peers[j])} ${protocol}/${port}: model ${want}, class verdicts ${bits}`);
        }
      }
    }
    expect(wrong.slice(0, 10)).toEqual([]);
    // Not a vacuous comparison: both answers occur often.
    expect(compared).toBeGreaterThan(100_000);
    expect(denied).toBeGreaterThan(compared / 10);
    expect(denied).toBeLessThan(compared * 0.9);
  });
});

/** Every step of `count` random cases (maxSteps each), with the cluster's objects before and after it. */
async function* randomSteps(seed: number, count: number, maxSteps: number) {
  for (const c of await randomCases(seed, count, { maxSteps })) {
    const cluster = new ModelCluster(c.model, generatePlacement(c.model));
    let before = cluster.objects();
    for (const step of c.steps) {
      for (const action of step.actions) cluster.apply(action);
      const after = cluster.objects();
      yield { c, before, after };
      before = after;
    }
  }
}

/** Today's pods as a record names them, one in five with labels some pod had before or after the step. */
function recordedPodEnds(rand: () => number, before: { pods: readonly Pod[] }, after: { pods: readonly Pod[] }): { ends: Endpoint[]; labelSets: Record<string, string>[] } {
  const labelSets = [...before.pods, ...after.pods].map((p) => p.metadata.labels);
  const ends = after.pods.map((p) => podEnd(p.metadata.namespace, p.metadata.name, p.status.podIPs[0] ?? "",
    rand() < 0.2 ? labelSets[Math.floor(rand() * labelSets.length)]! : p.metadata.labels, p.metadata.name));
  return { ends, labelSets };
}

/**
 * 600 records between random `ends` on a case's ports (and one random port): TO_POD into a
 * pod, or FROM_POD from a pod to an end that is not one; `more` adds options per record.
 */
function randomRecords(rand: () => number, ends: Endpoint[], casePorts: readonly number[],
  more: (src: Endpoint, dst: Endpoint) => Partial<Parameters<typeof flow>[2]> = () => ({})): FlowRecord[] {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const pods = ends.filter((e) => e.podName !== "");
  const ports = [...casePorts, 1 + Math.floor(rand() * 65535)];
  const records: FlowRecord[] = [];
  for (let n = 0; n < 600; n++) {
    const protocol = pick(PROTOCOLS);
    const src = pick(ends);
    const toPod = src.podName === "" || rand() < 0.8;
    const dst = toPod ? pick(pods) : pick(ends.filter((e) => e.podName === ""));
    records.push(flow(src, dst, { point: toPod ? "to" : "from", protocol, port: protocol === 1 ? 0 : pick(ports), packets: 1 + Math.floor(rand() * 50),
      endMs: 1_700_000_000_000 + Math.floor(rand() * 3_600_000), ...more(src, dst) }));
  }
  return records;
}

describe("what-if through class verdicts equals what-if through the model alone", () => {
  it("on random flows with recorded labels and addresses of their time, 100 random cases (seed 1402), every mode", async () => {
    const rand = seededRandom(1402);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    let changed = 0, reports = 0, nameTies = 0;
    for await (const { c, before, after } of randomSteps(1402, 100, 4)) {
      // Ends as recorded: today's pods, some with labels of another time or another pod's address; nodes; outside addresses.
      const { ends, labelSets } = recordedPodEnds(rand, before, after);
      for (let n = 0; n < 4; n++) {
        const p = pick(after.pods);
        ends.push(podEnd(p.metadata.namespace, `${p.metadata.name}-then`, pick(after.pods).status.podIPs[0] ?? "", pick(labelSets), `${p.metadata.name}-then`));
      }
      for (const node of after.nodes) ends.push(endpoint({ ip: node.status.addresses[0]!.address, node: node.metadata.name }));
      for (let n = 0; n < 4; n++) ends.push(endpoint({ ip: `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.0.${1 + Math.floor(rand() * 254)}`, world: true }));
      const records = randomRecords(rand, ends, c.model.ports);
      const mode = pick<PolicyModeName | undefined>([undefined, "enforce", "audit", "observe"]);
      const replay = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, [...before.policies, ...after.policies]);
      replay.addAll(records);
      const policies = { before: before.policies, after: after.policies };
      const fast = replay.report(policies, { mode, defaultMode: "enforce" });
      const reference = replay.report(policies, { mode, defaultMode: "enforce", reference: true });
      expect(fast).toEqual(reference);
      nameTies += expectEdgeOrder(fast.edges);
      changed += fast.edges.length;
      reports++;
    }
    expect(reports).toBeGreaterThan(150);
    expect(changed).toBeGreaterThan(500);
    expect(nameTies).toBeGreaterThan(100);
  });
});

/**
 * Checks the report's order (breaking first, then packets, then the ends' names as
 * localeCompare orders them, then the port), as report() sorts them (no other test pins it);
 * returns how many neighbours were ordered by their names.
 */
function expectEdgeOrder(edges: readonly ChangedEdge[]): number {
  const rank = (e: ChangedEdge) => e.before !== "DROPPED" && e.after === "DROPPED" ? 2 : e.before === "DROPPED" && e.after !== "DROPPED" ? 1 : 0;
  const names = (e: ChangedEdge) => `${e.source} ${e.destination}`;
  let byNames = 0;
  for (let i = 1; i < edges.length; i++) {
    const x = edges[i - 1]!, y = edges[i]!;
    const order = rank(y) - rank(x) || y.packets - x.packets || names(x).localeCompare(names(y));
    if (order === 0) expect(x.port).toBeLessThanOrEqual(y.port);
    else expect(order, `edge ${i - 1} (${names(x)}) before edge ${i} (${names(y)})`).toBeLessThan(0);
    if (rank(x) === rank(y) && x.packets === y.packets && names(x) !== names(y)) byNames++;
  }
  return byNames;
}

describe("the tuple table the replays sum records in", () => {
  it("sums, bounds and numbers every tuple as a Map would, across several growths (seed 1403)", () => {
    const rand = seededRandom(1403);
    const table = new TupleTable(4);
    const reference = new Map<string, { index: number; records: number; packets: number; firstMs: number; lastMs: number }>();
    for (let n = 0; n < 50_000; n++) {
      const src = Math.floor(rand() * 300), dst = Math.floor(rand() * 300), port = ((Math.floor(rand() * 3) + 6) << 16) | Math.floor(rand() * 8);
      const packets = 1 + Math.floor(rand() * 100), firstMs = Math.floor(rand() * 1e6), lastMs = firstMs + Math.floor(rand() * 1e4);
      const got = table.add(src, dst, port, packets, firstMs, lastMs);
      const key = `${src}/${dst}/${port}`;
      const want = reference.get(key);
      if (want === undefined) {
        expect(got).toBe(~reference.size);
        reference.set(key, { index: reference.size, records: 1, packets, firstMs, lastMs });
      } else {
        expect(got).toBe(want.index);
        want.records++;
        want.packets += packets;
        want.firstMs = Math.min(want.firstMs, firstMs);
        want.lastMs = Math.max(want.lastMs, lastMs);
      }
    }
    expect(table.size).toBe(reference.size);
    expect(reference.size).toBeGreaterThan(10_000);
    for (const [key, want] of reference) {
      const t = want.index;
      expect(`${table.srcOf(t)}/${table.dstOf(t)}/${table.portOf(t)}`).toBe(key);
      expect([table.recordsOf(t), table.packetsOf(t), table.firstMsOf(t), table.lastMsOf(t)]).toEqual([want.records, want.packets, want.firstMs, want.lastMs]);
    }
  });

  it("sums a batch (addBatch, the column replay's and suggest's path) as add() one by one: per-row results, numbers, keys, sums and bounds, across growths within a batch (seed 1408)", () => {
    const rand = seededRandom(1408);
    const one = new TupleTable(4), batched = new TupleTable(4), batch = new TupleBatch();
    let rows = 0, batches = 0;
    const want: number[] = [];
    while (rows < 60_000) {
      // Batches of every length, full ones (as addStored flushes them) and partial ones (a scan's last).
      const length = rand() < 0.5 ? BATCH_ROWS : 1 + Math.floor(rand() * BATCH_ROWS);
      // Few ends at first (most rows find their tuple), then many (most rows are new tuples, so the table grows within batches).
      const ends = rows < 30_000 ? 20 : 2000;
      for (let i = 0; i < length; i++) {
        const src = Math.floor(rand() * ends), dst = Math.floor(rand() * ends), port = ((Math.floor(rand() * 3) + 6) << 16) | Math.floor(rand() * 4);
        const packets = 1 + Math.floor(rand() * 100) + rand(), firstMs = Math.floor(rand() * 1e6), lastMs = firstMs + Math.floor(rand() * 1e4);
        want.push(one.add(src, dst, port, packets, firstMs, lastMs));
        batch.push(src, dst, port, packets, firstMs, lastMs);
      }
      expect([...batched.addBatch(batch).subarray(0, length)]).toEqual(want.splice(0));
      expect(batch.length).toBe(0);
      rows += length;
      batches++;
    }
    expect(batches).toBeGreaterThan(300);
    expect(one.size).toBeGreaterThan(20_000);
    expect(batched.size).toBe(one.size);
    for (let t = 0; t < one.size; t++) {
      const row = (x: TupleTable) => [x.srcOf(t), x.dstOf(t), x.portOf(t), x.recordsOf(t), x.packetsOf(t), x.firstMsOf(t), x.lastMsOf(t)];
      expect(row(batched)).toEqual(row(one));
    }
  });
});

describe("tuples summed by the caller (FlowReplay.addJudged, what suggest's check replays) equal the records one by one", () => {
  it("the same report, on random flows of 60 random cases (seed 1404), every mode", async () => {
    const rand = seededRandom(1404);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    let changed = 0, reports = 0;
    for await (const { c, before, after } of randomSteps(1404, 60, 3)) {
      const { ends } = recordedPodEnds(rand, before, after);
      for (const node of after.nodes) ends.push(endpoint({ ip: node.status.addresses[0]!.address, node: node.metadata.name }));
      // Ends without an address of their own take the record's, which must then be the first record's.
      for (let n = 0; n < 3; n++) ends.push(endpoint({ ip: "", world: true }));
      const address = () => `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.0.${1 + Math.floor(rand() * 254)}`;
      const records = randomRecords(rand, ends, c.model.ports, (src, dst) => ({ sport: rand() < 0.1 ? 1 : 40000,
        ...(src.ip === "" ? { srcIp: address() } : {}), ...(dst.ip === "" ? { dstIp: address() } : {}) }));
      const one = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, [...before.policies, ...after.policies]);
      one.addAll(records);
      // Summed per (source, destination, protocol, port) in order of first sight, with the first record's addresses.
      const sums = new Map<string, { r: FlowRecord; records: number; packets: number; firstMs: number; lastMs: number }>();
      const ids = new Map<Endpoint, number>();
      const idOf = (e: Endpoint) => ids.get(e) ?? (ids.set(e, ids.size), ids.size - 1);
      for (const r of records) {
        if (!isJudgedObservation(r)) continue;
        const key = `${idOf(r.source!)} ${idOf(r.destination!)} ${r.l4!.protocol} ${r.l4!.destinationPort}`;
        const firstMs = Number(r.startTime!.seconds) * 1000, lastMs = Number(r.endTime!.seconds) * 1000;
        const s = sums.get(key);
        if (s === undefined) sums.set(key, { r, records: 1, packets: Number(r.packets), firstMs, lastMs });
        else { s.records++; s.packets += Number(r.packets); s.firstMs = Math.min(s.firstMs, firstMs); s.lastMs = Math.max(s.lastMs, lastMs); }
      }
      const summed = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, [...before.policies, ...after.policies]);
      for (const { r, records: n, packets, firstMs, lastMs } of sums.values()) {
        summed.addJudged(r.source!, r.ip!.source, r.destination!, r.ip!.destination, r.l4!.protocol, r.l4!.destinationPort, n, packets, firstMs, lastMs);
      }
      const mode = pick<PolicyModeName | undefined>([undefined, "enforce", "audit", "observe"]);
      const policies = { before: before.policies, after: after.policies };
      const want = one.report(policies, { mode, defaultMode: "enforce" });
      const got = summed.report(policies, { mode, defaultMode: "enforce" });
      expect({ ...got, records: want.records, replayed: want.replayed }).toEqual(want);
      changed += want.edges.length;
      reports++;
    }
    expect(reports).toBeGreaterThan(90);
    expect(changed).toBeGreaterThan(200);
  });

  it("a key table's intern finds or adds a tuple and leaves its sums as they are", () => {
    const table = new TupleTable(2);
    expect(table.add(1, 2, 3, 10, 5, 6)).toBe(~0);
    expect(table.intern(1, 2, 3)).toBe(0);
    expect(table.intern(4, 5, 6)).toBe(~1);
    expect(table.intern(4, 5, 6)).toBe(1);
    expect([table.recordsOf(0), table.packetsOf(0), table.recordsOf(1)]).toEqual([1, 10, 0]);
  });
});

describe("the replay from the history's columns (FlowReplay.addStored) equals the history's records one by one", () => {
  it("the same report, on random flows of 40 random cases (seed 1405): in and out of time order, evicting, ranges and predicates, every mode", async () => {
    const rand = seededRandom(1405);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    let changed = 0, reports = 0, replayed = 0;
    const paths = new Set<string>();
    for await (const { c, before, after } of randomSteps(1405, 40, 3)) {
      const { ends } = recordedPodEnds(rand, before, after);
      for (const node of after.nodes) ends.push(endpoint({ ip: node.status.addresses[0]!.address, node: node.metadata.name }));
      for (let n = 0; n < 3; n++) ends.push(endpoint({ ip: `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.0.${1 + Math.floor(rand() * 254)}`, world: true }));
      // A Service address and an end without an address of its own (the record's is taken).
      ends.push(endpoint({ ip: "10.96.0.10", service: "default/dns" }), endpoint({ ip: "", world: true }));
      const address = () => `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.0.${1 + Math.floor(rand() * 254)}`;
      // What the columns keep and the replay reads, varied: replies by port and by TCP flags, spoofed
      // records, nanoseconds, packet counts beyond 2^53, records without an end time.
      const records = randomRecords(rand, ends, c.model.ports, (src, dst) => ({ sport: rand() < 0.2 ? 1 : 40000,
        reason: rand() < 0.05 ? VerdictReason.VERDICT_REASON_SPOOFED : VerdictReason.VERDICT_REASON_UNSPECIFIED,
        ...(src.ip === "" ? { srcIp: address() } : {}), ...(dst.ip === "" ? { dstIp: address() } : {}) })).map((r) => {
        const syn = rand() < 0.3, ack = rand() < 0.5, nanos = Math.floor(rand() * 1e9);
        return { ...r,
          startTime: { seconds: r.startTime!.seconds, nanos }, endTime: rand() < 0.05 ? undefined : { seconds: r.endTime!.seconds, nanos },
          packets: rand() < 0.1 ? 2n ** 60n + BigInt(Math.floor(rand() * 1e6)) : r.packets,
          l4: { ...r.l4!, tcpFlags: r.l4!.protocol === 6 && rand() < 0.5 ? { fin: false, syn, rst: false, psh: false, ack, urg: false, ece: false, cwr: false } : undefined } };
      });
      if (rand() < 0.5) records.sort((a, b) => Number(a.endTime?.seconds ?? 0n) - Number(b.endTime?.seconds ?? 0n) || (a.endTime?.nanos ?? 0) - (b.endTime?.nanos ?? 0));
      // Sometimes a ring smaller than the records: evicted rows free dictionary ids for reuse.
      const history = new FlowHistory({ capacity: rand() < 0.3 ? 400 : 1000 });
      for (let i = 0; i < records.length; i += 50) history.append(records.slice(i, i + 50));
      const query: HistoryQuery = {};
      if (rand() < 0.3) query.since = { seconds: 1_700_000_000n + BigInt(Math.floor(rand() * 1800)), nanos: 0 };
      if (rand() < 0.3) query.until = { seconds: 1_700_001_800n + BigInt(Math.floor(rand() * 1800)), nanos: 0 };
      if (rand() < 0.3) { const ns = pick(ends).namespace; query.predicate = (r) => r.source?.namespace === ns || r.destination?.namespace === ns; }
      const policies = [...before.policies, ...after.policies];
      const one = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, policies);
      one.addAll(history.query(query));
      const stored = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, policies);
      stored.addStored(history, query);
      paths.add(`${records.every((r, i) => i === 0 || (r.endTime?.seconds ?? 0n) >= (records[i - 1]!.endTime?.seconds ?? 0n)) ? "in" : "out of"} time order`);
      const mode = pick<PolicyModeName | undefined>([undefined, "enforce", "audit", "observe"]);
      const on = { before: before.policies, after: after.policies };
      const want = one.report(on, { mode, defaultMode: "enforce" });
      expect(stored.report(on, { mode, defaultMode: "enforce" })).toEqual(want);
      changed += want.edges.length;
      replayed += want.replayed;
      reports++;
    }
    expect(reports).toBeGreaterThan(60);
    expect(changed).toBeGreaterThan(100);
    expect(replayed).toBeGreaterThan(reports * 100);
    expect([...paths].sort()).toEqual(["in time order", "out of time order"]);
  });
});

describe("the stored row's judgment (isJudgedRow) equals isJudgedObservation", () => {
  it("on every row of random histories (seed 1406): every observation point, spoofed, replies by port, TCP flags and ICMP type, Service, host, outside and missing ends", () => {
    const rand = seededRandom(1406);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const ends: (Endpoint | undefined)[] = [
      podEnd("a", "web-1", "10.0.0.1", { app: "web" }), podEnd("a", "db-1", "10.0.0.2", { app: "db" }), podEnd("b", "web-1", "10.0.1.1", { app: "web" }),
      endpoint({ ip: "10.96.0.10", service: "a/web" }), endpoint({ ip: "10.96.0.11", service: "b/web", podName: "" }),
      endpoint({ ip: "192.168.0.1", node: "n1" }), endpoint({ ip: "203.0.113.9", world: true }), endpoint({ ip: "", world: true }), undefined,
    ];
    let judged = 0, rows = 0;
    const wrong: string[] = [];
    for (let h = 0; h < 20; h++) {
      const records: FlowRecord[] = [];
      for (let n = 0; n < 500; n++) {
        const src = pick(ends), dst = pick(ends);
        const protocol = pick([6, 6, 17, 132, 1, 58, 47]);
        const r = flow(src ?? endpoint({}), dst ?? endpoint({}), { protocol, port: pick([0, 80, 5432, 40000]), sport: pick([0, 1, 80, 40000, 60000]),
          reason: rand() < 0.1 ? VerdictReason.VERDICT_REASON_SPOOFED : VerdictReason.VERDICT_REASON_UNSPECIFIED, endMs: 1_700_000_000_000 + n });
        const syn = rand() < 0.5, ack = rand() < 0.5;
        records.push({ ...r, source: src, destination: dst, point: Math.floor(rand() * 5),
          ...(rand() < 0.1 ? { l4: undefined } : { l4: { ...r.l4!, icmpType: pick([0, 3, 8, 14, 16, 18, 128, 129]),
            tcpFlags: rand() < 0.6 ? { fin: false, syn, rst: false, psh: false, ack, urg: false, ece: false, cwr: false } : undefined } }) });
      }
      const history = new FlowHistory({ capacity: rand() < 0.3 ? 300 : 1000 });
      for (let i = 0; i < records.length; i += 100) history.append(records.slice(i, i + 100));
      history.scan({}, (row) => {
        const want = isJudgedObservation(row), got = isJudgedRow(row.readNumbers(newStoredRowNumbers()), storedEndOf(row.source), storedEndOf(row.destination));
        rows++;
        if (want) judged++;
        if (got !== want) wrong.push(`${JSON.stringify({ point: row.point, reason: row.verdictReason, source: row.source, destination: row.destination, l4: row.l4 && { protocol: row.l4.protocol, icmpType: row.l4.icmpType, sport: row.l4.sourcePort, dport: row.l4.destinationPort, flags: row.l4.tcpFlags } })}: want ${want}, got ${got}`);
      });
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    // Not a vacuous comparison: both answers occur often.
    expect(rows).toBeGreaterThan(6_000);
    expect(judged).toBeGreaterThan(rows / 20);
    expect(judged).toBeLessThan(rows / 2);
  });
});

describe("FlowReplay.forwardsAll answers as the report's DROPPED edges (the suggestion's check)", () => {
  it("with policies alone in enforce, on small random sets of random flows of 100 random cases (seed 1407)", async () => {
    const rand = seededRandom(1407);
    let all = 0, some = 0;
    const wrong: string[] = [];
    for await (const { c, before, after } of randomSteps(1407, 100, 3)) {
      const { ends } = recordedPodEnds(rand, before, after);
      for (const node of after.nodes) ends.push(endpoint({ ip: node.status.addresses[0]!.address, node: node.metadata.name }));
      for (let n = 0; n < 3; n++) ends.push(endpoint({ ip: `${Math.floor(rand() * 16)}.${Math.floor(rand() * 256)}.0.${1 + Math.floor(rand() * 254)}`, world: true }));
      const records = randomRecords(rand, ends, c.model.ports);
      // Few records a replay, so that some replays are forwarded whole and others are not.
      for (let k = 0; k < 6; k++) {
        const start = Math.floor(rand() * records.length), count = 1 + Math.floor(rand() * (k < 3 ? 2 : 40));
        const replay = new FlowReplay({ namespaces: after.namespaces, pods: after.pods }, after.policies);
        replay.addAll(records.slice(start, start + count));
        const report = replay.report({ before: [], after: after.policies }, { mode: "enforce" });
        const want = !report.edges.some((e) => e.after === "DROPPED");
        const got = replay.forwardsAll(after.policies);
        if (want) all++; else some++;
        if (got !== want) wrong.push(`${c.id}: records ${start}..${start + count}: report ${want ? "forwards all" : `drops ${report.edges.filter((e) => e.after === "DROPPED").length} edges`}, forwardsAll ${got}`);
      }
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    // Not a vacuous comparison: both answers occur often.
    expect(all).toBeGreaterThan(100);
    expect(some).toBeGreaterThan(100);
  });
});
