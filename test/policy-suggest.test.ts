// `bulkhead policy suggest` (issue 14, item 2): least-privilege NetworkPolicies for a
// namespace from its recorded flows. Proves the guarantee — the same history replayed
// against the suggestion (enforce) drops nothing that was forwarded, and traffic never
// observed is denied — and the shape: stable labels only, peers as namespaceSelector +
// podSelector, Service traffic at the backend's (named) target port, outside peers as
// ipBlocks cut to the minimum prefix, DNS egress, every rule justified by its flows.
import { describe, expect, it } from "vitest";
import { VerdictReason, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { FlowReplay } from "../controlplane/policy/whatif.js";
import { JUSTIFICATION_ANNOTATION, suggestPolicies, type RuleJustification } from "../controlplane/policy/suggest.js";
import { PolicyModel } from "../controlplane/policy/model.js";
import { endpoint, flow, ns, pod, podEnd } from "./harness/flow-records.js";

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
