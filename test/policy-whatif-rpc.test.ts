// PolicyWhatIf over real gRPC and `bulkhead policy what-if` against it (issue 14, item 3):
// a ControlPlane on 127.0.0.1:0 fed through ingest (records as agents send them, enriched
// by the control plane), tokens scoped as in access.test.ts. Proves: the edges a draft
// changes come back with the verdicts and the exit code a CI gate reads (0 / 3 / 1); a
// bad draft is refused naming file, document and field; a shop token replays only flows
// with an end in shop and may draft only shop's policies.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import { parseTokenFile } from "../controlplane/access/tokens.js";
import { FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { ObserverServiceClient, type PolicyWhatIfRequest, type PolicyWhatIfResponse, type SuggestPoliciesResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { cliMain } from "../config/install.js";
import { refusal } from "./harness/grpc.js";

const IP = { web: "10.0.1.5", db: "10.0.1.6", api: "10.0.2.5", other: "10.0.3.5" };

const pod = (ns: string, name: string, app: string, ip: string, ports = "[]") => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, uid: uid-${name}, labels: { app: ${app} }, creationTimestamp: "2024-01-01T00:00:00Z" }
spec: { nodeName: node1, containers: [{ name: c, ports: ${ports} }] }
status: { phase: Running, podIP: ${ip} }`;

// shop (enforce): web, db (pg = 5432); api (enforce): api; third: other. db admits web on pg.
const MANIFESTS = [
  `apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, annotations: { bulkhead.io/mode: enforce } }`,
  `apiVersion: v1\nkind: Namespace\nmetadata: { name: api, annotations: { bulkhead.io/mode: enforce } }`,
  `apiVersion: v1\nkind: Namespace\nmetadata: { name: third }`,
  pod("shop", "web-1", "web", IP.web), pod("shop", "db-1", "db", IP.db, "[{ name: pg, containerPort: 5432 }]"),
  pod("api", "api-1", "api", IP.api), pod("third", "other-1", "other", IP.other),
  `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }], ports: [{ port: pg }] }]`,
].join("\n---\n");

const SHOP_TOKEN = "shop-token-3f9a1c27d04b";
const OPS_TOKEN = "ops-token-88e2b1a09c5d7f";
const TOKEN_FILE = `
tokens:
  - { name: shop-team, token: ${SHOP_TOKEN}, namespaces: [shop] }
  - { name: ops, token: ${OPS_TOKEN}, namespaces: ["*"] }
`;

let sequence = 0n;
function flow(source: string, destination: string, port: number, packets = 2n): FlowRecord {
  const nowMs = Date.now();
  const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
  return FlowRecord.fromPartial({
    startTime: ts(nowMs - 200), endTime: ts(nowMs), node: "node1",
    point: ObservationPoint.OBSERVATION_POINT_TO_POD, reporter: ReporterSide.REPORTER_SIDE_DESTINATION, interface: "veth-test", ifindex: 7,
    ip: { source, destination, version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 6, protocolName: "TCP", sourcePort: 40_000, destinationPort: port, icmpType: 0, icmpCode: 0 },
    packets, bytes: 120n, verdict: Verdict.VERDICT_FORWARDED, sequence: ++sequence,
  });
}

// web → db on pg (allowed), api → db on pg (dropped today), api → other (no end in shop).
const HISTORY = [flow(IP.web, IP.db, 5432, 4n), flow(IP.web, IP.db, 5432, 6n), flow(IP.api, IP.db, 5432), flow(IP.api, IP.other, 9000)];

const DENY_ALL_SHOP = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: shop }
spec: { podSelector: {} }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: shop, annotations: { bulkhead.io/draft: delete } }
`;
const OPEN_DB_TO_API = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-from-web, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }, { namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: api } } }], ports: [{ port: pg }] }]
`;
const API_POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: lockdown, namespace: api }
spec: { podSelector: {} }
`;

function observer(address: string, token: string): ObserverServiceClient {
  return new ObserverServiceClient(address, grpc.credentials.createInsecure(), { interceptors: [(options, next) => new grpc.InterceptingCall(next(options), {
    start(metadata, listener, nextStart) { metadata.set("authorization", `Bearer ${token}`); nextStart(metadata, listener); },
  })] });
}

function whatIf(client: ObserverServiceClient, req: Partial<PolicyWhatIfRequest>): Promise<PolicyWhatIfResponse> {
  return new Promise((resolve, reject) => client.policyWhatIf({ drafts: [], namespace: "", mode: "", ...req }, (err, res) => (err || !res ? reject(err) : resolve(res))));
}

interface Run { code: number | null; stdout: string; stderr: string }
function run(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliMain, ...args], { env: { PATH: process.env.PATH ?? "", ...env } });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`bulkhead ${args.join(" ")} did not finish in 30 s`)); }, 30_000);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

let tmp = "";
let cp: ControlPlane | undefined;
let address = "";
const drafts: Record<string, string> = {};

beforeAll(async () => {
  if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-whatif-"));
  fs.mkdirSync(path.join(tmp, "manifests"));
  fs.writeFileSync(path.join(tmp, "manifests", "cluster.yaml"), MANIFESTS);
  for (const [name, text] of Object.entries({ "deny-all.yaml": DENY_ALL_SHOP, "open.yaml": OPEN_DB_TO_API, "api.yaml": API_POLICY,
    "bad.yaml": DENY_ALL_SHOP.replace("podSelector: {} }", "podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: 300.0.0.0/8 } }] }] }") })) {
    drafts[name] = path.join(tmp, name);
    fs.writeFileSync(drafts[name], text);
  }
  const log = pino({ level: "silent" }, new Writable({ write: (_c, _e, done) => done() }));
  cp = new ControlPlane({ source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 10_000,
    access: new AccessControl({ tokens: parseTokenFile(TOKEN_FILE, "tokens.yaml"), allowUnauthenticated: false }), log });
  await cp.start(["127.0.0.1:0"]);
  address = cp.listening[0] ?? "";
  cp.ingest("node1", HISTORY.map((r) => FlowRecord.fromPartial(r)));
});

afterAll(async () => {
  await cp?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const file = (name: string) => ({ name, content: fs.readFileSync(drafts[name]!, "utf8") });

describe("PolicyWhatIf over gRPC", () => {
  it("returns the edges a draft changes, before and after, with records, packets and what decides after", async () => {
    const client = observer(address, OPS_TOKEN);
    try {
      const closing = await whatIf(client, { drafts: [file("deny-all.yaml")] });
      expect(closing).toMatchObject({ breaks: true, records: 4n, replayed: 4n });
      expect(closing.edges).toEqual([expect.objectContaining({
        source: "workload:shop/Pod/web-1", destination: "workload:shop/Pod/db-1", protocol: "TCP", port: 5432,
        before: Verdict.VERDICT_FORWARDED, after: Verdict.VERDICT_DROPPED, records: 2n, packets: 10n,
        ingress: expect.objectContaining({ allowed: false, isolatedBy: ["shop/deny-all"] }),
      })]);
      const opening = await whatIf(client, { drafts: [file("open.yaml")] });
      expect(opening.breaks).toBe(false);
      expect(opening.edges).toEqual([expect.objectContaining({ source: "workload:api/Pod/api-1", before: Verdict.VERDICT_DROPPED, after: Verdict.VERDICT_FORWARDED,
        ingress: expect.objectContaining({ allowedBy: ["shop/db-from-web ingress[0]"] }) })]);
    } finally {
      client.close();
    }
  });

  it("refuses a bad draft naming file, document and field, replaying nothing", async () => {
    const client = observer(address, OPS_TOKEN);
    try {
      const r = await refusal(whatIf(client, { drafts: [file("bad.yaml")] }));
      expect(r.code).toBe("INVALID_ARGUMENT");
      expect(r.details).toMatch(/bad draft, nothing replayed:\nbad\.yaml: document 0: spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr: /);
    } finally {
      client.close();
    }
  });

  it("a shop token replays only flows with an end in shop and may draft only shop's policies", async () => {
    const shop = observer(address, SHOP_TOKEN);
    try {
      const r = await whatIf(shop, { drafts: [file("deny-all.yaml")] });
      expect(r.records).toBe(3n); // api → other has no end in shop
      const denied = await refusal(whatIf(shop, { drafts: [file("api.yaml")] }));
      expect(denied.code).toBe("PERMISSION_DENIED");
      expect(denied.details).toMatch(/the draft changes policies of namespace api/);
      const other = await refusal(whatIf(shop, { drafts: [file("deny-all.yaml")], namespace: "api" }));
      expect(other.code).toBe("PERMISSION_DENIED");
    } finally {
      shop.close();
    }
  });

  it("a ClusterNetworkPolicy draft is cluster-wide: a shop token is refused, an every-namespace token replays it", async () => {
    const cnp = { name: "cnp.yaml", content: `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: no-web-to-db}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}
  ingress:
  - {name: from-web, action: Deny, from: [{pods: {namespaceSelector: {}, podSelector: {}}}], protocols: [{tcp: {destinationPort: {number: 5432}}}]}
` };
    const shop = observer(address, SHOP_TOKEN);
    const ops = observer(address, OPS_TOKEN);
    try {
      const denied = await refusal(whatIf(shop, { drafts: [cnp] }));
      expect(denied.code).toBe("PERMISSION_DENIED");
      expect(denied.details).toMatch(/the draft changes ClusterNetworkPolicies: .*cluster-wide/);
      const r = await whatIf(ops, { drafts: [cnp] });
      expect(r.breaks).toBe(true);
      expect(r.edges).toEqual([expect.objectContaining({ source: "workload:shop/Pod/web-1", destination: "workload:shop/Pod/db-1", port: 5432,
        before: Verdict.VERDICT_FORWARDED, after: Verdict.VERDICT_DROPPED })]);
    } finally {
      shop.close();
      ops.close();
    }
  });
});

describe("SuggestPolicies over gRPC and bulkhead policy suggest", () => {
  const suggest = (client: ObserverServiceClient, namespace: string) => new Promise<SuggestPoliciesResponse>((resolve, reject) =>
    client.suggestPolicies({ namespace, minPrefixV4: 0, minPrefixV6: 0 }, (err, res) => (err || !res ? reject(err) : resolve(res))));

  it("suggests the namespace's policies from its recorded flows; a shop token may ask only for shop", async () => {
    const shop = observer(address, SHOP_TOKEN);
    try {
      const r = await suggest(shop, "shop");
      const policies = r.policies.map((p) => JSON.parse(p) as { metadata: { name: string }; spec: { ingress: unknown[] } });
      expect(policies.map((p) => p.metadata.name).sort()).toEqual(["bulkhead-db-1", "bulkhead-default-deny", "bulkhead-web-1"]);
      expect(policies.find((p) => p.metadata.name === "bulkhead-db-1")?.spec.ingress).toEqual([
        { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "api" } }, podSelector: { matchLabels: { app: "api" } } }], ports: [{ protocol: "TCP", port: "pg" }] },
        { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "shop" } }, podSelector: { matchLabels: { app: "web" } } }], ports: [{ protocol: "TCP", port: "pg" }] },
      ]);
      const denied = await refusal(suggest(shop, "api"));
      expect(denied.code).toBe("PERMISSION_DENIED");
      expect((await refusal(suggest(shop, ""))).code).toBe("INVALID_ARGUMENT");
    } finally {
      shop.close();
    }
  });

  it("the CLI prints YAML documents that parse back into the policies", async () => {
    const r = await run(["policy", "suggest", "-n", "shop", "--server", address], { BULKHEAD_TOKEN: SHOP_TOKEN });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^# bulkhead policy suggest -n shop: learned from 3 records/);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind: string; metadata: { name: string; annotations?: Record<string, string> } });
    expect(docs.map((d) => d.metadata.name).sort()).toEqual(["bulkhead-db-1", "bulkhead-default-deny", "bulkhead-web-1"]);
    expect(docs.find((d) => d.metadata.name === "bulkhead-db-1")?.metadata.annotations?.["bulkhead.io/justification"]).toMatch(/"peer":"workload:shop\/Pod\/web-1","ports":\["TCP\/pg"\],"records":2,"packets":10/);
  });
});

describe("bulkhead policy what-if", () => {
  const cli = (...args: string[]) => run(["policy", "what-if", "--server", address, ...args], { BULKHEAD_TOKEN: OPS_TOKEN });

  it("exits 3 when a draft would drop what is forwarded, 0 when it would not, 1 on a bad draft", async () => {
    const breaking = await cli("-f", drafts["deny-all.yaml"]!);
    expect(breaking.code).toBe(3);
    expect(breaking.stdout).toMatch(/shop\/web-1 +shop\/db-1 +TCP\/5432 +FORWARDED +DROPPED +2 +10 /);
    expect(breaking.stdout).toMatch(/ingress denied: isolated by shop\/deny-all/);
    expect(breaking.stdout).toMatch(/something forwarded today would be DROPPED/);
    const opening = await cli("-f", drafts["open.yaml"]!, "-o", "json");
    expect(opening.code).toBe(0);
    expect(JSON.parse(opening.stdout)).toMatchObject({ edges: [{ source: "workload:api/Pod/api-1", before: "VERDICT_DROPPED", after: "VERDICT_FORWARDED" }] });
    const bad = await cli("-f", drafts["bad.yaml"]!);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/bad\.yaml: document 0: spec\.egress\[0\]\.to\[0\]\.ipBlock\.cidr/);
    const missing = await cli("-f", path.join(tmp, "nope.yaml"));
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*nope\.yaml/);
  });
});
