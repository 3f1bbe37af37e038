// `bulkhead policy what-if` (issue 14): recorded flows replayed against the policies in
// force and against them plus a draft, with the policy model. Proves: which observations
// are replayed (each connection once, where the datapath judges it), the edges whose
// verdict changes with records, packets and times, the rule or policy deciding after,
// the identity of the time (recorded labels and pods, not today's, shown by a case where
// today's would answer differently), modes, and drafts refused by file, document and field.
import { describe, expect, it } from "vitest";
import { VerdictReason, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import type { ClusterNetworkPolicyObject, NetworkPolicy } from "../controlplane/metadata/objects.js";
import { endpoint, flow, ns, pod, podEnd, policy } from "./harness/flow-records.js";
import { FlowReplay, isJudgedObservation, type ReplayOptions } from "../controlplane/policy/whatif.js";
import { applyClusterDraft, applyDraft, DraftError, parseDrafts } from "../controlplane/policy/draft.js";

// shop (enforce): web-1 (app=web, role=frontend) and db-1 (app=db, named port pg=5432);
// debug (enforce): dbg-1. db admits web on 5432 today ("db-from-web").
const web = podEnd("shop", "web-1", "10.0.0.10", { app: "web", role: "frontend" });
const db = podEnd("shop", "db-1", "10.0.0.20", { app: "db" });
const dbg = podEnd("debug", "dbg-1", "10.0.0.30", { app: "dbg" });
const outside = endpoint({ ip: "203.0.113.7", world: true });
const cluster = {
  namespaces: [ns("shop", "enforce", { team: "shop" }), ns("debug", "enforce")],
  pods: [pod("shop", "web-1", "10.0.0.10", { app: "web", role: "frontend" }), pod("shop", "db-1", "10.0.0.20", { app: "db" }, [{ name: "pg", containerPort: 5432 }]),
    pod("debug", "dbg-1", "10.0.0.30", { app: "dbg" })],
};
const dbFromWeb = policy("shop", "db-from-web", { podSelector: { matchLabels: { app: "db" } },
  ingress: [{ from: [{ podSelector: { matchLabels: { role: "frontend" } } }], ports: [{ port: "pg" }] }] });

/** A what-if of `records` on `on` (today's cluster). */
function whatIf(on: typeof cluster, records: FlowRecord[], before: NetworkPolicy[], after: NetworkPolicy[], options: ReplayOptions = {}) {
  const replay = new FlowReplay(on, [...before, ...after]);
  replay.addAll(records);
  return replay.report({ before, after }, options);
}

describe("which records are replayed", () => {
  it("the judging observation of each connection once: TO_POD, or FROM_POD to a host or outside address; never replies, Service-addressed FROM_POD, or spoofed", () => {
    const svc = endpoint({ ip: "10.96.0.1", namespace: "shop", service: "shop/db" });
    expect(isJudgedObservation(flow(web, db, { point: "from", port: 5432 }))).toBe(false); // judged at db's TO_POD
    expect(isJudgedObservation(flow(web, db, { point: "to", port: 5432 }))).toBe(true);
    expect(isJudgedObservation(flow(web, svc, { point: "from", port: 5432 }))).toBe(false); // judged at the backend after DNAT
    expect(isJudgedObservation(flow(web, outside, { point: "from", port: 443 }))).toBe(true);
    expect(isJudgedObservation(flow(outside, web, { point: "to", port: 80 }))).toBe(true);
    expect(isJudgedObservation(flow(db, web, { point: "to", port: 40000, sport: 5432 }))).toBe(false); // a reply
    expect(isJudgedObservation(flow(web, db, { point: "to", reason: VerdictReason.VERDICT_REASON_SPOOFED }))).toBe(false);
  });

  it("records with none of them judged (only the sending ends' of calls to pods) replay nothing, and the report says why", () => {
    const denyAll = policy("shop", "deny-all", { podSelector: {} });
    const sendingEnds = whatIf(cluster, [flow(web, db, { point: "from", port: 5432 }), flow(dbg, db, { point: "from", port: 5432 })], [], [denyAll]);
    expect([sendingEnds.records, sendingEnds.replayed, sendingEnds.edges.length]).toEqual([2, 0, 0]);
    expect(sendingEnds.notes.at(-1)).toBe("none of the 2 records in range is the end that judged its connection (a connection to a pod or Service is judged at the destination pod's to-pod end, which the destination node's agent reports): nothing was replayed");
    // With the receiving end's record, the call is replayed and denied; no such note.
    const bothEnds = whatIf(cluster, [flow(web, db, { point: "from", port: 5432 }), flow(web, db, { point: "to", port: 5432 })], [], [denyAll]);
    expect([bothEnds.records, bothEnds.replayed, bothEnds.edges.length]).toEqual([2, 1, 1]);
    expect(bothEnds.notes.some((n) => n.startsWith("none of the"))).toBe(false);
  });
});

describe("what-if replay", () => {
  const records = () => [
    flow(web, db, { point: "from", port: 5432, packets: 5, endMs: 1_700_000_001_000 }),
    flow(web, db, { point: "to", port: 5432, packets: 5, endMs: 1_700_000_001_000 }),
    flow(web, db, { point: "to", port: 5432, packets: 7, endMs: 1_700_000_009_000 }),
    flow(db, web, { point: "to", sport: 5432, port: 40000, packets: 6 }),
    flow(dbg, db, { point: "to", port: 5432, packets: 3 }),
    flow(web, outside, { point: "from", port: 443, packets: 2 }),
  ];

  it("reports only edges whose verdict changes, with records, packets, first and last seen and the rule deciding after", () => {
    // The draft: db also admits debug's pods on pg (DROPPED → FORWARDED) and web may only call db (FORWARDED → DROPPED to outside).
    const draft = parseDrafts([{ name: "draft.yaml", content: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}, {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: debug}}}]
    ports: [{port: pg}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
` }]);
    const report = whatIf(cluster, records(), [dbFromWeb], applyDraft([dbFromWeb], draft));
    expect(report).toMatchObject({ records: 6, replayed: 4, breaks: true });
    expect(report.edges).toEqual([
      expect.objectContaining({ source: "workload:shop/Deployment/web", destination: "world:203.0.113.7", protocol: "TCP", port: 443,
        before: "FORWARDED", after: "DROPPED", records: 1, packets: 2, egress: expect.objectContaining({ allowed: false, isolatedBy: ["shop/web-egress"] }) }),
      expect.objectContaining({ source: "workload:debug/Deployment/dbg", destination: "workload:shop/Deployment/db", port: 5432,
        before: "DROPPED", after: "FORWARDED", records: 1, packets: 3, ingress: expect.objectContaining({ allowed: true, allowedBy: ["shop/db-from-web ingress[0]"] }) }),
    ]);
    // web → db stays allowed by the new egress rule: not reported. Its two TO_POD records were counted once each, the FROM_POD not at all.
    expect(report.edges.some((e) => e.source.includes("web") && e.destination.includes("db"))).toBe(false);
  });

  it("sums records and packets per edge, with first and last seen over all of them", () => {
    const report = whatIf(cluster, records(), [dbFromWeb], []); // deleting db-from-web opens db
    expect(report.breaks).toBe(false);
    expect(report.edges).toEqual([expect.objectContaining({ source: "workload:debug/Deployment/dbg", before: "DROPPED", after: "FORWARDED", records: 1 })]);
    const denyAll = policy("shop", "deny-all", { podSelector: {} });
    const r2 = whatIf(cluster, records(), [], [denyAll]);
    const webDb = r2.edges.find((e) => e.source === "workload:shop/Deployment/web" && e.destination === "workload:shop/Deployment/db");
    expect(webDb).toMatchObject({ before: "FORWARDED", after: "DROPPED", records: 2, packets: 12, firstSeenMs: 1_700_000_000_000, lastSeenMs: 1_700_000_009_000,
      ingress: { allowed: false, isolatedBy: ["shop/deny-all"], allowedBy: [] } });
  });

  it("uses the identity of the time: recorded labels and pod, where today's labels and today's owner of the address would answer differently", () => {
    // Recorded: web-1 had role=frontend and 10.0.0.10. Today web-1 lost the label, and
    // 10.0.0.10 is another pod's (the address was reused by debug's dbg-2).
    const today = {
      namespaces: cluster.namespaces,
      pods: [pod("shop", "web-1", "10.0.0.11", { app: "web" }), pod("shop", "db-1", "10.0.0.20", { app: "db" }, [{ name: "pg", containerPort: 5432 }]),
        pod("debug", "dbg-2", "10.0.0.10", { app: "dbg" })],
    };
    const denyAll = policy("shop", "deny-all", { podSelector: {} });
    const recorded = whatIf(today, [flow(web, db, { point: "to", port: 5432 })], [denyAll], [denyAll, dbFromWeb]);
    expect(recorded.edges).toEqual([expect.objectContaining({ source: "workload:shop/Deployment/web", before: "DROPPED", after: "FORWARDED" })]);
    // The same record with the endpoint as today's cluster would name it (by address: dbg-2;
    // by name: web-1 without role=frontend): the draft changes nothing for it.
    for (const todays of [podEnd("debug", "dbg-2", "10.0.0.10", { app: "dbg" }), podEnd("shop", "web-1", "10.0.0.10", { app: "web" })]) {
      expect(whatIf(today, [flow(todays, db, { point: "to", port: 5432 })], [denyAll], [denyAll, dbFromWeb]).edges).toEqual([]);
    }
    expect(recorded.notes[0]).toMatch(/namespace labels and modes are today's/);
  });

  it("applies the namespaces' modes, or one mode for all (--mode): a denial in observe changes the verdict, not the outcome", () => {
    const observed = { ...cluster, namespaces: [ns("shop", "observe", { team: "shop" }), ns("debug", "observe")] };
    const denyAll = policy("shop", "deny-all", { podSelector: {} });
    const asIs = whatIf(observed, records(), [], [denyAll]);
    expect(asIs.breaks).toBe(false);
    expect(asIs.edges.every((e) => e.before === "FORWARDED" && e.after === "FORWARDED" && e.allowedBefore && !e.allowedAfter)).toBe(true);
    const enforce = whatIf(observed, records(), [], [denyAll], { mode: "enforce" });
    expect(enforce.breaks).toBe(true);
    expect(enforce.edges.map((e) => e.after)).toContain("DROPPED");
  });
});

describe("drafts", () => {
  it("marks deletions with bulkhead.io/draft: delete (no spec needed); deleting a policy not in force is an error naming file and document", () => {
    const draft = parseDrafts([{ name: "rm.yaml", content: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop, annotations: {bulkhead.io/draft: delete}}
` }]);
    expect(draft.deletions.map((d) => d.key)).toEqual(["shop/db-from-web"]);
    expect(applyDraft([dbFromWeb], draft)).toEqual([]);
    expect(() => applyDraft([], draft)).toThrow(/rm\.yaml: document 0: metadata\.name: deletes NetworkPolicy shop\/db-from-web, which is not in force/);
  });

  it("refuses a bad draft naming file, document and field, every problem at once", () => {
    let error: DraftError | undefined;
    try {
      parseDrafts([
        { name: "a.yaml", content: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ok, namespace: shop}
spec: {podSelector: {}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-cidr, namespace: shop}
spec:
  podSelector: {}
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/40}}]}]
` },
        { name: "b.yaml", content: "kind: [unclosed\n" },
        { name: "c.yaml", content: `apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: x}
` },
        { name: "d.yaml", content: `apiVersion: v1
kind: Pod
metadata: {name: p}
` },
        { name: "e.yaml", content: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x, namespace: shop, annotations: {bulkhead.io/draft: remove}}
spec: {podSelector: {}}
` },
        { name: "f.yaml", content: `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: too-high}
spec: {tier: Admin, priority: 2000, subject: {namespaces: {}}, ingress: []}
` },
      ]);
    } catch (err) {
      error = err as DraftError;
    }
    expect(error).toBeInstanceOf(DraftError);
    const texts = error?.problems.map((p) => `${p.file}#${p.document} ${p.field}`) ?? [];
    expect(texts).toEqual([
      "a.yaml#1 spec.egress[0].to[0].ipBlock.cidr",
      "b.yaml#0 ",
      "c.yaml#0 kind",
      "d.yaml#0 kind",
      "e.yaml#0 metadata.annotations.bulkhead.io/draft",
      "f.yaml#0 spec.priority",
    ]);
    expect(error?.message).toMatch(/c\.yaml: document 0: kind: AdminNetworkPolicy was replaced by ClusterNetworkPolicy/);
    expect(error?.message).toMatch(/f\.yaml: document 0: spec\.priority: ClusterNetworkPolicy too-high: expected an integer 0-1000, got 2000/);
    expect(error?.message).toMatch(/a\.yaml: document 1: spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr: /);
  });

  it("refuses the same policy twice in a draft", () => {
    const doc = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: shop}
spec: {podSelector: {}}
`;
    expect(() => parseDrafts([{ name: "a.yaml", content: doc }, { name: "b.yaml", content: doc }])).toThrow(/b\.yaml: document 0: metadata\.name: NetworkPolicy shop\/p is already in this draft \(a\.yaml document 0\)/);
  });
});

describe("ClusterNetworkPolicies in force", () => {
  // Admin tier: shop's pods accept debug's on 5432 whatever NetworkPolicy says; a draft
  // that default-denies shop's ingress therefore breaks nothing from debug.
  const acceptDebug: ClusterNetworkPolicyObject = { apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name: "debug-to-shop", namespace: "", uid: "", labels: {}, annotations: {}, ownerReferences: [] }, spec: {
    tier: "Admin", priority: 10, subject: { namespaces: { matchLabels: { "kubernetes.io/metadata.name": "shop" } } },
    ingress: [{ name: "from-debug", action: "Accept", from: [{ pods: { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "debug" } }, podSelector: { matchLabels: { app: "dbg" } } } }],
      protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }],
  } };
  const denyAll = policy("shop", "deny-all", { podSelector: {}, policyTypes: ["Ingress"] });
  const records = () => [flow(dbg, db, { point: "to", port: 5432, packets: 3 }), flow(web, db, { point: "to", port: 5432, packets: 5 })];

  it("decide before and after alike: an Admin Accept keeps the edge a draft's default deny would break", () => {
    const run = (clusterPolicies: ClusterNetworkPolicyObject[]) => {
      const replay = new FlowReplay(cluster, [dbFromWeb, denyAll], clusterPolicies);
      replay.addAll(records());
      return replay.report({ before: [], after: [dbFromWeb, denyAll], clusterBefore: clusterPolicies });
    };
    // Without the CNP, debug → db breaks (web → db stays allowed by db-from-web).
    expect(run([]).edges.map((e) => `${e.source} -> ${e.destination} ${e.before}->${e.after}`)).toEqual(["workload:debug/Deployment/dbg -> workload:shop/Deployment/db FORWARDED->DROPPED"]);
    const withCnp = run([acceptDebug]);
    expect(withCnp.edges).toEqual([]);
    expect(withCnp.breaks).toBe(false);
  });

  it("are drafted like NetworkPolicies: an Admin Deny added breaks an edge, the Accept deleted breaks another, named in the draft", () => {
    const cnp = (yaml: string) => parseDrafts([{ name: "cnp.yaml", content: yaml }]);
    const denyWeb = cnp(`apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-web-to-db}
spec:
  tier: Admin
  priority: 5
  subject: {pods: {podSelector: {matchLabels: {app: db}}}}
  ingress:
  - {name: from-web, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]}
`);
    expect(denyWeb.clusterUpserts.map((p) => p.metadata.name)).toEqual(["no-web-to-db"]);
    const run = (draft: ReturnType<typeof parseDrafts>) => {
      const after = applyClusterDraft([acceptDebug], draft);
      const replay = new FlowReplay(cluster, [dbFromWeb, denyAll], [acceptDebug, ...after]);
      replay.addAll(records());
      return replay.report({ before: [dbFromWeb, denyAll], after: [dbFromWeb, denyAll], clusterBefore: [acceptDebug], clusterAfter: after });
    };
    const denied = run(denyWeb);
    expect(denied.edges.map((e) => `${e.source} -> ${e.destination} ${e.before}->${e.after}`))
      .toEqual(["workload:shop/Deployment/web -> workload:shop/Deployment/db FORWARDED->DROPPED"]);
    expect(denied.breaks).toBe(true);
    const removed = run(cnp(`apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: debug-to-shop, annotations: {bulkhead.io/draft: delete}}
`));
    expect(removed.edges.map((e) => `${e.source} -> ${e.destination} ${e.before}->${e.after}`))
      .toEqual(["workload:debug/Deployment/dbg -> workload:shop/Deployment/db FORWARDED->DROPPED"]);
    expect(() => applyClusterDraft([], cnp(`apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: debug-to-shop, annotations: {bulkhead.io/draft: delete}}
`))).toThrow(/cnp\.yaml: document 0: metadata\.name: deletes ClusterNetworkPolicy debug-to-shop, which is not in force/);
  });
});
