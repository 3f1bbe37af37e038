// `bulkhead policy suggest` (issue 14, item 2): least-privilege NetworkPolicies for a
// namespace from its recorded flows. Proves the guarantee — the same history replayed
// against the suggestion (enforce) drops nothing that was forwarded, and traffic never
// observed is denied — and the shape: stable labels only, peers as namespaceSelector +
// podSelector, Service traffic at the backend's (named) target port, outside peers as
// ipBlocks cut to the minimum prefix, DNS egress, every rule justified by its flows.
import { describe, expect, it } from "vitest";
import { VerdictReason, Verdict, type Endpoint, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowReplay } from "../controlplane/policy/whatif.js";
import { JUSTIFICATION_ANNOTATION, PolicySuggester, policyManifest, suggestPolicies, type RuleJustification } from "../controlplane/policy/suggest.js";
import { PolicyModel } from "../controlplane/policy/model.js";
import { parseKubeObject, type Pod } from "../controlplane/metadata/objects.js";
import { FlowHistory, type HistoryQuery } from "../controlplane/store/history.js";
import { endpoint, flow, ns, pod, podEnd } from "./harness/flow-records.js";
import { seededRandom } from "./harness/seeded-random.js";

// shop: web (2 pods of a Deployment, different pod-template-hash), db (port "pg" 5432);
// api: client; debug: dbg; outside 203.0.113.7 and 203.0.113.99 (same /24).
const web1 = podEnd("shop", "web-1", "10.0.0.10", { app: "web", tier: "front", "pod-template-hash": "aaa" }, "web");
const web2 = podEnd("shop", "web-2", "10.0.0.11", { app: "web", tier: "front", "pod-template-hash": "bbb" }, "web");
const db = podEnd("shop", "db-1", "10.0.0.20", { app: "db", "controller-revision-hash": "x1" }, "db");
const client = podEnd("api", "client-1", "10.0.1.5", { app: "client" }, "client");
const dbg = podEnd("debug", "dbg-1", "10.0.2.5", { app: "dbg" }, "dbg");
const svc = endpoint({ ip: "10.96.0.9", namespace: "shop", service: "shop/db" });
const out7 = endpoint({ ip: "203.0.113.7", world: true });
const out99 = endpoint({ ip: "203.0.113.99", world: true });
const cluster = {
  namespaces: [ns("shop", "enforce"), ns("api", "enforce"), ns("debug", "enforce")],
  pods: [pod("shop", "web-1", "10.0.0.10", { app: "web", tier: "front", "pod-template-hash": "aaa" }),
    pod("shop", "web-2", "10.0.0.11", { app: "web", tier: "front", "pod-template-hash": "bbb" }),
    pod("shop", "db-1", "10.0.0.20", { app: "db", "controller-revision-hash": "x1" }, [{ name: "pg", containerPort: 5432 }]),
    pod("api", "client-1", "10.0.1.5", { app: "client" }), pod("debug", "dbg-1", "10.0.2.5", { app: "dbg" })],
};

const history = [
  // client → Service shop/db: the client's FROM_POD to the ClusterIP, then db's TO_POD after DNAT.
  flow(client, svc, { point: "from", port: 15432 }), flow(client, db, { point: "to", port: 5432, packets: 4, endMs: 1_700_000_005_000 }),
  flow(web1, db, { point: "from", port: 5432 }), flow(web1, db, { point: "to", port: 5432 }),
  flow(web2, db, { point: "to", port: 5432, endMs: 1_700_000_009_000 }),
  flow(web1, out7, { point: "from", port: 443 }), flow(web2, out99, { point: "from", port: 443 }),
  flow(client, web1, { point: "to", port: 8080 }),
  flow(db, web1, { point: "to", sport: 5432, port: 40000 }), // a reply: no rule
  flow(dbg, db, { point: "to", port: 5432, verdict: Verdict.VERDICT_DROPPED, reason: VerdictReason.VERDICT_REASON_POLICY }), // refused today
];

describe("policy suggest", () => {
  const suggestion = suggestPolicies(history, { namespace: "shop", cluster });
  const byName = new Map(suggestion.policies.map((p) => [p.metadata.name, p]));

  it("one policy per workload from stable labels, plus a default deny with DNS for the namespace", () => {
    expect([...byName.keys()].sort()).toEqual(["bulkhead-db", "bulkhead-default-deny", "bulkhead-web"]);
    expect(byName.get("bulkhead-web")?.spec.podSelector.matchLabels).toEqual({ app: "web", tier: "front" });
    expect(byName.get("bulkhead-db")?.spec.podSelector.matchLabels).toEqual({ app: "db" });
    expect(byName.get("bulkhead-default-deny")?.spec).toMatchObject({ podSelector: { matchLabels: {} }, policyTypes: ["Ingress", "Egress"], ingress: [] });
    expect(suggestion.notes).toContain("1 records dropped or audited by the policies in force were not learned from");
  });

  it("peers as namespaceSelector + podSelector, Services at the backend's named target port, outside peers cut to the prefix, DNS egress", () => {
    const dbPolicy = byName.get("bulkhead-db")!;
    expect(dbPolicy.spec.ingress).toEqual([
      { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "api" }, matchExpressions: [] }, podSelector: { matchLabels: { app: "client" }, matchExpressions: [] } }],
        ports: [{ protocol: "TCP", port: "pg" }] },
      { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "shop" }, matchExpressions: [] }, podSelector: { matchLabels: { app: "web", tier: "front" }, matchExpressions: [] } }],
        ports: [{ protocol: "TCP", port: "pg" }] },
    ]);
    const webPolicy = byName.get("bulkhead-web")!;
    expect(webPolicy.spec.egress.map((r) => r.to)).toEqual([
      [{ ipBlock: { cidr: "203.0.113.0/24", except: [] } }],
      [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "shop" }, matchExpressions: [] }, podSelector: { matchLabels: { app: "db" }, matchExpressions: [] } }],
      [{ namespaceSelector: { matchLabels: {}, matchExpressions: [] }, podSelector: { matchLabels: { "k8s-app": "kube-dns" }, matchExpressions: [] } }],
    ]);
    const narrow = suggestPolicies(history, { namespace: "shop", cluster, minPrefixV4: 32 });
    expect(narrow.policies.find((p) => p.metadata.name === "bulkhead-web")?.spec.egress.slice(0, 2).map((r) => r.to[0]?.ipBlock?.cidr))
      .toEqual(["203.0.113.7/32", "203.0.113.99/32"]);
  });

  it("annotates each rule with the flows that justify it", () => {
    const j = JSON.parse(byName.get("bulkhead-db")!.metadata.annotations[JUSTIFICATION_ANNOTATION]!) as RuleJustification[];
    expect(j).toEqual([
      { rule: "ingress[0]", peer: "workload:api/Deployment/client", ports: ["TCP/pg"], records: 1, packets: 4,
        firstSeen: "2023-11-14T22:13:24.000Z", lastSeen: "2023-11-14T22:13:25.000Z" },
      { rule: "ingress[1]", peer: "workload:shop/Deployment/web", ports: ["TCP/pg"], records: 2, packets: 20,
        firstSeen: "2023-11-14T22:13:19.000Z", lastSeen: "2023-11-14T22:13:29.000Z" },
    ]);
  });

  it("guarantee: the same history replayed against the suggestion drops nothing forwarded; traffic never observed is denied", () => {
    const replay = new FlowReplay(cluster, suggestion.policies);
    replay.addAll(history);
    const report = replay.report({ before: [], after: suggestion.policies }, { mode: "enforce" });
    // Only debug → db changes (it was dropped today, and the suggestion does not admit it either).
    expect(report.edges.map((e) => `${e.source} → ${e.destination} ${e.before}→${e.after}`)).toEqual([
      "workload:debug/Deployment/dbg → workload:shop/Deployment/db FORWARDED→DROPPED",
    ]);
    const model = new PolicyModel({ ...cluster, nodes: [], policies: suggestion.policies }, { defaultMode: "enforce" });
    const allowed = (from: string, to: string, port: number, protocol: "TCP" | "UDP" = "TCP") => model.evaluate({ src: { pod: from }, dst: { pod: to }, protocol, port }).allowed;
    expect(allowed("api/client-1", "shop/db-1", 5432)).toBe(true);
    expect(allowed("api/client-1", "shop/db-1", 5433)).toBe(false); // another port
    expect(allowed("debug/dbg-1", "shop/db-1", 5432)).toBe(false); // another peer
    expect(allowed("shop/db-1", "shop/web-1", 8080)).toBe(false); // never observed in that direction
    expect(allowed("shop/web-1", "api/client-1", 8080)).toBe(false); // egress never observed
    expect(model.evaluate({ src: { pod: "shop/web-1" }, dst: { ip: "198.51.100.1" }, protocol: "TCP", port: 443 }).allowed).toBe(false);
    expect(model.evaluate({ src: { pod: "shop/web-1" }, dst: { ip: "203.0.113.50" }, protocol: "TCP", port: 443 }).allowed).toBe(true); // the /24
  });
});

describe("a suggested rule lists its ports in localeCompare order of their texts", () => {
  it("numbers, names and protocols mixed, learned in another order, in the rule and in its justification", () => {
    const pods = [...cluster.pods, pod("shop", "api-1", "10.0.0.30", { app: "api" }, [{ name: "http", containerPort: 8080 }, { name: "admin", containerPort: 9000 }])];
    const api = podEnd("shop", "api-1", "10.0.0.30", { app: "api" }, "api");
    const learned = [9102, 80, 9000, 8080, 443, 10000].map((port) => flow(client, api, { point: "to", port }));
    learned.push(flow(client, api, { point: "to", port: 53, protocol: 17 }), flow(client, api, { point: "to", port: 8080, protocol: 17 }));
    const policy = suggestPolicies(learned, { namespace: "shop", cluster: { ...cluster, pods } }).policies.find((p) => p.metadata.name === "bulkhead-api")!;
    const texts = policy.spec.ingress[0]!.ports.map((p) => `${p.protocol}/${p.port}`);
    expect(texts).toEqual([...texts].sort((a, b) => a.localeCompare(b)));
    expect(new Set(texts)).toEqual(new Set(["TCP/9102", "TCP/80", "TCP/admin", "TCP/http", "TCP/443", "TCP/10000", "UDP/53", "UDP/8080"]));
    const j = JSON.parse(policy.metadata.annotations[JUSTIFICATION_ANNOTATION]!) as RuleJustification[];
    expect(j[0]!.ports).toEqual(texts);
  });
});

describe("suggest from the history's columns (PolicySuggester.addStored) equals suggest from its records one by one", () => {
  it("the same policies, notes and counts (or the same refusal), each policy what its own manifest parses to, on 60 random histories (seed 1406): in and out of time order, evicting, ranges and predicates", () => {
    const rand = seededRandom(1406);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const outcomes = new Map<string, number>();
    const paths = new Set<string>();
    let policies = 0, learned = 0;
    for (let n = 0; n < 60; n++) {
      // Three namespaces of workloads with 1-3 pods: a stable app label (one workload in ten
      // without one, which the check refuses), a pod-template-hash per pod, a tier some pods lack;
      // some pods name their container port 80 "http".
      const namespaces = ["shop", "api", "ops"];
      const cluster = { namespaces: namespaces.map((name) => ns(name, pick(["enforce", "audit", "observe"]))), pods: [] as Pod[] };
      const ends: Endpoint[] = [];
      for (const namespace of namespaces) {
        for (let w = 0; w < 2 + Math.floor(rand() * 4); w++) {
          const app = rand() < 0.1 ? undefined : `app${w}`;
          for (let p = 0; p < 1 + Math.floor(rand() * 3); p++) {
            const name = `${namespace}-w${w}-${p}`, ip = `10.${namespaces.indexOf(namespace)}.${w}.${p + 1}`;
            const labels: Record<string, string> = { ...(app !== undefined ? { app } : { [`only-${p}`]: "x" }), "pod-template-hash": `h${Math.floor(rand() * 3)}`,
              ...(rand() < 0.7 ? { tier: `t${w % 2}` } : {}) };
            if (rand() < 0.8) cluster.pods.push(pod(namespace, name, ip, labels, rand() < 0.5 ? [{ name: "http", containerPort: 80 }] : []));
            ends.push(podEnd(namespace, name, ip, labels, `w${w}`));
          }
        }
      }
      // Outside addresses (one without its own address: the record's is taken), a node, a Service address.
      for (let i = 0; i < 4; i++) ends.push(endpoint({ ip: `203.0.${Math.floor(rand() * 4)}.${1 + Math.floor(rand() * 254)}`, world: true }));
      ends.push(endpoint({ ip: "", world: true }), endpoint({ ip: "192.168.0.1", node: "n1" }), endpoint({ ip: "10.96.0.10", namespace: "shop", service: "shop/web" }));
      const pods = ends.filter((e) => e.podName !== "");
      const records: FlowRecord[] = [];
      for (let i = 0; i < 500; i++) {
        const src = pick(ends);
        const toPod = src.podName === "" || rand() < 0.75;
        const dst = toPod ? pick(pods) : pick(ends.filter((e) => e.podName === ""));
        const protocol = pick([6, 6, 17, 132, 1]), nanos = Math.floor(rand() * 1e9);
        const r = flow(src, dst, { point: toPod ? "to" : "from", protocol, port: protocol === 1 ? 0 : pick([80, 443, 5432, 8080]), sport: rand() < 0.15 ? 1 : 40000,
          packets: 1 + Math.floor(rand() * 50), endMs: 1_700_000_000_000 + Math.floor(rand() * 3_600_000),
          verdict: rand() < 0.1 ? Verdict.VERDICT_DROPPED : rand() < 0.05 ? Verdict.VERDICT_AUDIT : Verdict.VERDICT_FORWARDED,
          reason: rand() < 0.03 ? VerdictReason.VERDICT_REASON_SPOOFED : VerdictReason.VERDICT_REASON_UNSPECIFIED,
          ...(src.ip === "" ? { srcIp: `198.51.${Math.floor(rand() * 2)}.${1 + Math.floor(rand() * 254)}` } : {}),
          ...(dst.ip === "" ? { dstIp: `198.51.${Math.floor(rand() * 2)}.${1 + Math.floor(rand() * 254)}` } : {}) });
        const syn = rand() < 0.3, ack = rand() < 0.5;
        records.push({ ...r,
          // A copy of an end now and then, as a decoder hands out: the same end in another object.
          source: rand() < 0.1 ? { ...src } : src,
          startTime: { seconds: r.startTime!.seconds, nanos }, endTime: rand() < 0.05 ? undefined : { seconds: r.endTime!.seconds, nanos },
          packets: rand() < 0.05 ? 2n ** 60n + BigInt(Math.floor(rand() * 1e6)) : r.packets,
          l4: { ...r.l4!, tcpFlags: protocol === 6 && rand() < 0.5 ? { fin: false, syn, rst: false, psh: false, ack, urg: false, ece: false, cwr: false } : undefined } });
      }
      if (rand() < 0.5) records.sort((a, b) => Number(a.endTime?.seconds ?? 0n) - Number(b.endTime?.seconds ?? 0n) || (a.endTime?.nanos ?? 0) - (b.endTime?.nanos ?? 0));
      paths.add(`${records.every((r, i) => i === 0 || (r.endTime?.seconds ?? 0n) >= (records[i - 1]!.endTime?.seconds ?? 0n)) ? "in" : "out of"} time order`);
      // Sometimes a ring smaller than the records: evicted rows free dictionary ids for reuse.
      const history = new FlowHistory({ capacity: rand() < 0.3 ? 300 : 600 });
      for (let i = 0; i < records.length; i += 50) history.append(records.slice(i, i + 50));
      const query: HistoryQuery = {};
      if (rand() < 0.3) query.since = { seconds: 1_700_000_000n + BigInt(Math.floor(rand() * 1800)), nanos: 0 };
      if (rand() < 0.3) query.until = { seconds: 1_700_001_800n + BigInt(Math.floor(rand() * 1800)), nanos: 0 };
      if (rand() < 0.3) { const other = pick(namespaces); query.predicate = (r) => r.source?.namespace === other || r.destination?.namespace === other; }
      const options = { namespace: pick(namespaces), cluster, ...(rand() < 0.3 ? { minPrefixV4: pick([16, 28, 32]) } : {}) };
      const outcome = (learn: (s: PolicySuggester) => number) => {
        const s = new PolicySuggester(options);
        const read = learn(s);
        try { return { read, result: s.suggest() }; } catch (err) { return { read, refused: (err as Error).message }; }
      };
      const want = outcome((s) => { const rows = history.query(query); s.addAll(rows); return rows.length; });
      const got = outcome((s) => s.addStored(history, query));
      expect(got).toEqual(want);
      // Policies typed as they are built are what their own manifests parse to.
      for (const p of want.result?.policies ?? []) expect(parseKubeObject(policyManifest(p))).toEqual(p);
      outcomes.set(want.result !== undefined ? "suggested" : "refused", (outcomes.get(want.result !== undefined ? "suggested" : "refused") ?? 0) + 1);
      policies += want.result?.policies.length ?? 0;
      learned += want.result?.learned ?? 0;
    }
    // Both outcomes met, most cases suggest, and they learn from many records.
    expect(outcomes.get("refused")).toBeGreaterThan(0);
    expect(outcomes.get("suggested")).toBeGreaterThan(30);
    expect(policies).toBeGreaterThan(100);
    expect(learned).toBeGreaterThan(3000);
    expect([...paths].sort()).toEqual(["in time order", "out of time order"]);
  });
});

describe("the check judges by policy class without merging pods of one workload that policy tells apart", () => {
  // web-1 and web-2: one workload, the same labels, but only web-1 names 8080 "http" today.
  // A rule learned from web-1 first names the port "http", which web-2 does not have, so its
  // traffic would be dropped: the check must judge web-2 apart from web-1 and refuse. Learned
  // from web-2 first, the rule names 8080 and both are forwarded. Taking the two pods for one
  // class (either way round; e.g. classes without their named ports, or judged per workload)
  // gives one answer for both and fails one of the cases.
  const labels = { app: "web" };
  const named = podEnd("shop", "web-1", "10.0.0.10", labels, "web"), plain = podEnd("shop", "web-2", "10.0.0.11", labels, "web");
  const today = { namespaces: cluster.namespaces, pods: [pod("shop", "web-1", "10.0.0.10", labels, [{ name: "http", containerPort: 8080 }]),
    pod("shop", "web-2", "10.0.0.11", labels), pod("api", "client-1", "10.0.1.5", { app: "client" })] };
  const learned = (first: typeof named, second: typeof named) => [flow(client, first, { point: "to", port: 8080 }), flow(client, second, { point: "to", port: 8080, packets: 3 })];

  it("learned from the pod that names the port first: refused, naming the edge that would break", () => {
    expect(() => suggestPolicies(learned(named, plain), { namespace: "shop", cluster: today }))
      .toThrow("suggestion check failed: it would drop 1 observed edges, e.g. workload:api/Deployment/client → workload:shop/Deployment/web TCP/8080");
  });

  it("learned from the pod without the name first: the rule names the number and both pods are forwarded", () => {
    const web = suggestPolicies(learned(plain, named), { namespace: "shop", cluster: today }).policies.find((p) => p.metadata.name === "bulkhead-web")!;
    expect(web.spec.ingress.map((r) => r.ports)).toEqual([[{ protocol: "TCP", port: 8080 }]]);
  });
});
