// Namespace-scoped access: a token for `shop` reads only flows with an end in shop, the map
// of shop, and no cluster-wide data, through every Observer API call and the CLI. A real
// ControlPlane on 127.0.0.1:0 over real gRPC, fed through ingest (the path agent batches
// take after the stream); the CLI runs as processes against it, and `bulkhead controlplane`
// itself is started as a process to prove its flags. No lab, no network namespaces.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import { restrictFlowMap, type Scope } from "../controlplane/access/scope.js";
import { parseTokenFile, TokenFileError, loadTokenFile } from "../controlplane/access/tokens.js";
import { FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import {
  FlowFilter, GetFlowMapResponse, ObserverServiceClient, type GetFlowsRequest, type GetNodesResponse, type GetStatusResponse, type MapNode,
} from "../proto/gen/bulkhead/v1/observer.js";
import { cliMain } from "../config/install.js";
import { refusal } from "./harness/grpc.js";


// ---------------------------------------------------------------------------------------
// The cluster: shop/web-1, other/api-1, third/db-1, and Service shop/frontend.

const IP = { web: "10.0.1.5", api: "10.0.2.5", db: "10.0.3.5", frontend: "10.96.0.10" };

const pod = (ns: string, name: string, ip: string) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}, namespace: ${ns}, uid: uid-${name}, labels: { app: ${name} }, creationTimestamp: "2024-01-01T00:00:00Z" }
spec: { nodeName: node1 }
status: { phase: Running, podIP: ${ip} }`;

const MANIFESTS = [
  ...["shop", "other", "third"].map((ns) => `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${ns} }`),
  pod("shop", "web-1", IP.web), pod("other", "api-1", IP.api), pod("third", "db-1", IP.db),
  `apiVersion: v1\nkind: Service\nmetadata: { name: frontend, namespace: shop }\nspec: { clusterIP: ${IP.frontend}, ports: [{ port: 80 }] }`,
].join("\n---\n");

const SHOP_TOKEN = "shop-token-3f9a1c27d04b";
const OPS_TOKEN = "ops-token-88e2b1a09c5d7f";
const MULTI_TOKEN = "multi-token-51c0d2e7a6b9";
const sha256 = (t: string) => createHash("sha256").update(t).digest("hex");

/** The preferred form for ops (digest), the clear form for the others. */
const TOKEN_FILE = `
tokens:
  - name: shop-team
    token: ${SHOP_TOKEN}
    namespaces: [shop]
  - name: ops
    sha256: ${sha256(OPS_TOKEN)}
    namespaces: ["*"]
  - name: shop-and-third
    token: ${MULTI_TOKEN}
    namespaces: [shop, third]
`;

let sequence = 0n;

function flow(source: string, destination: string, port: number): FlowRecord {
  const nowMs = Date.now();
  const ts = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
  return FlowRecord.fromPartial({
    startTime: ts(nowMs - 200), endTime: ts(nowMs), node: "node1",
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: "veth-test", ifindex: 7,
    ip: { source, destination, version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 6, protocolName: "TCP", sourcePort: 40_000, destinationPort: port, icmpType: 0, icmpCode: 0 },
    packets: 2n, bytes: 120n, verdict: Verdict.VERDICT_FORWARDED, sequence: ++sequence,
  });
}

/** A key naming one record across processes (the CLI's JSON output) and calls. */
const keyOf = (r: FlowRecord) => `${r.ip?.source}->${r.ip?.destination}:${r.l4?.destinationPort}#${r.sequence}`;

/** History: three flows with an end in shop (one through shop's Service), two without. */
const HISTORY = {
  shopToOther: flow(IP.web, IP.api, 8080),
  otherToThird: flow(IP.api, IP.db, 5432),
  otherToShopService: flow(IP.api, IP.frontend, 80),
  thirdToOther: flow(IP.db, IP.api, 9090),
  thirdToShop: flow(IP.db, IP.web, 8443),
};
const SHOP_HISTORY = [HISTORY.shopToOther, HISTORY.otherToShopService, HISTORY.thirdToShop].map(keyOf).sort();
const ALL_HISTORY = Object.values(HISTORY).map(keyOf).sort();

class LogCapture {
  readonly text: string[] = [];
  readonly log = pino({ level: "debug" }, new Writable({
    write: (chunk: Buffer, _enc, done) => { this.text.push(chunk.toString("utf8")); done(); },
  }));
}

// ---------------------------------------------------------------------------------------
// gRPC calls with a token

function observer(address: string, token?: string): ObserverServiceClient {
  const interceptors: grpc.Interceptor[] = token === undefined ? [] : [(options, next) => new grpc.InterceptingCall(next(options), {
    start(metadata, listener, nextStart) { metadata.set("authorization", `Bearer ${token}`); nextStart(metadata, listener); },
  })];
  return new ObserverServiceClient(address, grpc.credentials.createInsecure(), { interceptors });
}

function unary<Res>(start: (cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => start((err, res) => (err || res === undefined ? reject(err) : resolve(res))));
}

function flows(client: ObserverServiceClient, req: Partial<GetFlowsRequest> = {}): Promise<FlowRecord[]> {
  return new Promise((resolve, reject) => {
    const out: FlowRecord[] = [];
    const call = client.getFlows({ allow: [], deny: [], last: 0n, follow: false, ...req });
    call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) out.push(m.flow); });
    call.on("error", reject);
    call.on("end", () => resolve(out));
  });
}

const flowMap = (client: ObserverServiceClient, namespace: string) =>
  unary<GetFlowMapResponse>((cb) => client.getFlowMap({ namespace, window: { seconds: 600n, nanos: 0 } }, cb));

/** A follow stream that collects what arrives, and how it ended. */
function follow(client: ObserverServiceClient) {
  const received: FlowRecord[] = [];
  let ended: { code: string; details: string } | undefined;
  const call = client.getFlows({ allow: [], deny: [], last: 0n, follow: true });
  call.on("data", (m: { flow?: FlowRecord }) => { if (m.flow) received.push(m.flow); });
  call.on("error", (e: grpc.ServiceError) => { ended = { code: grpc.status[e.code] ?? String(e.code), details: e.details }; });
  return { received, ended: () => ended, cancel: () => call.cancel() };
}

async function waitFor(done: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Both map ends' namespaces per edge, as "src-ns>dst-ns". */
function edgeNamespaces(map: GetFlowMapResponse): string[] {
  const byId = new Map<string, MapNode>(map.nodes.map((n) => [n.id, n]));
  return map.edges.map((e) => `${byId.get(e.source)?.namespace ?? "?"}>${byId.get(e.destination)?.namespace ?? "?"}`).sort();
}

// ---------------------------------------------------------------------------------------
// Processes

interface Run { code: number | null; stdout: string; stderr: string }

function run(args: string[], env: Record<string, string> = {}, timeoutMs = 20_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    // Only what the test gives: never an inherited BULKHEAD_TOKEN or BULKHEAD_SERVER.
    const child = spawn(process.execPath, [cliMain, ...args], { env: { PATH: process.env.PATH ?? "", ...env } });
    let stdout = "", stderr = "";
    child.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`bulkhead ${args.join(" ")} did not finish in ${timeoutMs} ms`)); }, timeoutMs);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

const jsonFlows = (out: string) => out.split("\n").filter((l) => l.trim()).map((l) => FlowRecord.fromJSON(JSON.parse(l)));

// ---------------------------------------------------------------------------------------

let tmp: string;
let manifests: string;

beforeAll(() => {
  if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-access-"));
  manifests = path.join(tmp, "manifests");
  fs.mkdirSync(manifests);
  fs.writeFileSync(path.join(manifests, "cluster.yaml"), MANIFESTS);
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function startControlPlane(access: AccessControl, logs: LogCapture): Promise<{ cp: ControlPlane; address: string }> {
  const cp = new ControlPlane({ source: new FolderSource({ dir: manifests }), storeCapacity: 10_000, access, log: logs.log });
  await cp.start(["127.0.0.1:0"]);
  const address = cp.listening[0];
  if (address === undefined || address.endsWith(":0")) throw new Error(`control plane bound no port: ${String(address)}`);
  cp.ingest("node1", Object.values(HISTORY).map((r) => FlowRecord.fromPartial(r)));
  return { cp, address };
}

describe("token file", () => {
  const file = "/etc/bulkhead/tokens.yaml";
  const parseError = (text: string): TokenFileError => {
    try {
      parseTokenFile(text, file);
    } catch (err) {
      if (err instanceof TokenFileError) return err;
      throw err;
    }
    throw new Error("expected the token file to be refused");
  };

  it("reads clear and digest tokens, cluster-wide and per-namespace grants", () => {
    const entries = parseTokenFile(TOKEN_FILE, file);
    expect(entries.map((e) => [e.name, e.digest.toString("hex"), e.grant.kind === "cluster" ? "*" : [...e.grant.namespaces].join(",")])).toEqual([
      ["shop-team", sha256(SHOP_TOKEN), "shop"],
      ["ops", sha256(OPS_TOKEN), "*"],
      ["shop-and-third", sha256(MULTI_TOKEN), "shop,third"],
    ]);
  });

  it.each([
    ["not YAML", "tokens: [\n  - name: a", /tokens\.yaml: not valid YAML at line \d+, column \d+/],
    ["no tokens list", "users: []", /tokens\.yaml: users: unknown field/],
    ["an empty tokens list", "tokens: []", /tokens\.yaml: tokens: empty/],
    ["an empty namespaces list", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespaces: [] }`, /tokens\[0\] \(name "a"\): namespaces: empty/],
    ["a bad namespace name", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespaces: [shop, Shop_1] }`, /tokens\[0\] \(name "a"\): namespaces\[1\]: "Shop_1" is not a namespace name/],
    ["'*' beside namespaces", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespaces: [shop, "*"] }`, /namespaces\[1\]: "\*" \(every namespace\) must be the only entry/],
    ["a duplicate name", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespaces: [shop] }\n  - { name: a, token: ${OPS_TOKEN}, namespaces: [shop] }`, /tokens\[1\] \(name "a"\): name: the name is already used by tokens\[0\]/],
    ["the same token twice", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespaces: [shop] }\n  - { name: b, sha256: ${sha256(SHOP_TOKEN)}, namespaces: [x] }`, /tokens\[1\] \(name "b"\): sha256: the same token as tokens\[0\] \(name "a"\)/],
    ["a bad digest", "tokens:\n  - { name: a, sha256: abc123, namespaces: [shop] }", /tokens\[0\] \(name "a"\): sha256: "abc123" is not 64 hexadecimal digits/],
    ["neither token nor sha256", "tokens:\n  - { name: a, namespaces: [shop] }", /tokens\[0\] \(name "a"\): sha256: missing/],
    ["both token and sha256", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, sha256: ${sha256(SHOP_TOKEN)}, namespaces: [shop] }`, /tokens\[0\] \(name "a"\): token: give either token or sha256/],
    ["a misspelt field", `tokens:\n  - { name: a, token: ${SHOP_TOKEN}, namespace: [shop] }`, /tokens\[0\] \(name "a"\): namespace: unknown field/],
    ["no name", `tokens:\n  - { token: ${SHOP_TOKEN}, namespaces: [shop] }`, /tokens\[0\]: name: undefined is not a name/],
    ["a duplicate key", `tokens:\n  - name: a\n    name: b\n    token: ${SHOP_TOKEN}\n    namespaces: [shop]`, /not valid YAML at line 3, column 5 \(DUPLICATE_KEY\)/],
  ])("refuses %s, naming file, entry and field", (_what, text, message) => {
    const err = parseError(text);
    expect(err.message).toMatch(/^\/etc\/bulkhead\/tokens\.yaml: /);
    expect(err.message).toMatch(message);
  });

  it("never repeats a token in an error", () => {
    const short = "tokens:\n  - { name: a, token: \"secret with spaces\", namespaces: [shop] }";
    expect(parseError(short).message).toMatch(/token: must be a string of 16 to 4096 printable ASCII characters without spaces \(value not shown\)/);
    expect(parseError(short).message).not.toContain("secret");
    const broken = `tokens:\n  - name: a\n    token: ${SHOP_TOKEN}\n    namespaces: [shop\n`;
    expect(parseError(broken).message).not.toContain(SHOP_TOKEN);
  });

  it("names an unreadable file", () => {
    expect(() => loadTokenFile(path.join(tmp, "missing.yaml"))).toThrow(/missing\.yaml: cannot read: ENOENT/);
  });
});

describe("authentication", () => {
  const tokens = parseTokenFile(TOKEN_FILE, "tokens.yaml");
  const kindOf = (r: Scope | Error) => (r instanceof Error ? `refused ${(r as { status?: number }).status}` : r.kind === "cluster" ? `${r.subject}: *` : `${r.subject}: ${[...r.namespaces].join(",")}`);

  it("maps each token to its scope and refuses the rest with 401", () => {
    const access = new AccessControl({ tokens, allowUnauthenticated: false });
    expect(kindOf(access.authenticate(`Bearer ${SHOP_TOKEN}`))).toBe("shop-team: shop");
    expect(kindOf(access.authenticate(`bearer ${OPS_TOKEN}`))).toBe("ops: *");
    expect(kindOf(access.authenticate(`Bearer ${MULTI_TOKEN}`))).toBe("shop-and-third: shop,third");
    expect(kindOf(access.authenticate(undefined))).toBe("refused 401");
    expect(kindOf(access.authenticate(`Bearer ${SHOP_TOKEN}x`))).toBe("refused 401");
    expect(kindOf(access.authenticate(`Basic ${SHOP_TOKEN}`))).toBe("refused 401");
    expect(kindOf(access.authenticate(SHOP_TOKEN))).toBe("refused 401");
  });

  it("lets requests without a token see everything only when allowed, and still refuses a wrong token", () => {
    const access = new AccessControl({ tokens, allowUnauthenticated: true });
    expect(kindOf(access.authenticate(undefined))).toBe("unauthenticated: *");
    expect(kindOf(access.authenticate(""))).toBe("unauthenticated: *");
    expect(kindOf(access.authenticate("Bearer wrong-token-0000000000"))).toBe("refused 401");
    expect(kindOf(access.authenticate(`Bearer ${SHOP_TOKEN}`))).toBe("shop-team: shop");
  });

  it("cuts a map's removals to the scope too (for streamed map changes)", () => {
    const scope: Scope = { kind: "namespaces", subject: "t", namespaces: new Set(["shop"]) };
    const changes = restrictFlowMap(scope, {
      nodes: [], edges: [],
      removed: [
        { source: "workload:shop/Pod/web-1", destination: "world:1.2.3.4", protocol: "TCP", port: 443 },
        { source: "workload:other/Pod/api-1", destination: "service:shop/frontend", protocol: "TCP", port: 80 },
        { source: "workload:other/Pod/api-1", destination: "workload:third/Pod/db-1", protocol: "TCP", port: 5432 },
        { source: "host:node1", destination: "workload:shopping/Pod/x", protocol: "TCP", port: 80 },
      ],
    });
    expect(changes.removed?.map((k) => `${k.source}>${k.destination}`)).toEqual([
      "workload:shop/Pod/web-1>world:1.2.3.4", "workload:other/Pod/api-1>service:shop/frontend",
    ]);
  });
});

describe("Observer API with tokens (unauthenticated access not allowed)", () => {
  let cp: ControlPlane;
  let address: string;
  const logs = new LogCapture();
  const clients: ObserverServiceClient[] = [];
  const client = (token?: string) => { const c = observer(address, token); clients.push(c); return c; };

  beforeAll(async () => {
    const tokenFile = path.join(tmp, "tokens.yaml");
    fs.writeFileSync(tokenFile, TOKEN_FILE);
    ({ cp, address } = await startControlPlane(AccessControl.fromTokenFile(tokenFile, { allowUnauthenticated: false }), logs));
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await cp?.stop();
  });

  it("GetFlows: a shop token gets exactly the flows with an end in shop; ops gets all", async () => {
    expect((await flows(client(SHOP_TOKEN))).map(keyOf).sort()).toEqual(SHOP_HISTORY);
    expect((await flows(client(OPS_TOKEN))).map(keyOf).sort()).toEqual(ALL_HISTORY);
    // `last` counts only visible flows: the two newest shop flows, skipping third → other between them.
    expect((await flows(client(SHOP_TOKEN), { last: 2n })).map(keyOf)).toEqual([HISTORY.otherToShopService, HISTORY.thirdToShop].map(keyOf));
    // A filter cannot widen the scope: of other/api-1's flows, only the one into shop shows.
    const fromApi = { allow: [FlowFilter.fromPartial({ sourcePod: ["other/api-1"] })] };
    expect((await flows(client(SHOP_TOKEN), fromApi)).map(keyOf)).toEqual([keyOf(HISTORY.otherToShopService)]);
    expect((await flows(client(OPS_TOKEN), fromApi)).map(keyOf).sort()).toEqual([HISTORY.otherToThird, HISTORY.otherToShopService].map(keyOf).sort());
  });

  it("GetFlows: a filter naming a namespace outside the scope is PERMISSION_DENIED, naming it", async () => {
    const r = await refusal(flows(client(SHOP_TOKEN), { allow: [FlowFilter.fromPartial({ namespace: ["shop", "other"] })] }));
    expect(r).toEqual({ code: "PERMISSION_DENIED", details: "the token's scope does not include namespace other (it reads namespace shop)" });
    const allowed = await flows(client(SHOP_TOKEN), { allow: [FlowFilter.fromPartial({ namespace: ["shop"] })] });
    expect(allowed.map(keyOf).sort()).toEqual(SHOP_HISTORY);
    const fromOther = await refusal(flows(client(SHOP_TOKEN), { allow: [FlowFilter.fromPartial({ sourceNamespace: ["other"] })] }));
    expect(fromOther.code).toBe("PERMISSION_DENIED");
    // From other into shop: every match has its destination in shop, so the question is within the scope.
    const intoShop = await flows(client(SHOP_TOKEN), { allow: [FlowFilter.fromPartial({ sourceNamespace: ["other"], destinationNamespace: ["shop"] })] });
    expect(intoShop.map(keyOf)).toEqual([keyOf(HISTORY.otherToShopService)]);
  });

  it("GetFlows follow: new flows between other namespaces never reach a shop token", async () => {
    const shop = follow(client(SHOP_TOKEN));
    const ops = follow(client(OPS_TOKEN));
    await waitFor(() => shop.received.length >= SHOP_HISTORY.length && ops.received.length >= ALL_HISTORY.length, "the history part of both streams");
    const live = [flow(IP.api, IP.db, 5432), flow(IP.db, IP.web, 8443), flow(IP.db, IP.api, 9090), flow(IP.web, IP.frontend, 80)];
    // Batches arrive in order: once the last shop flow is in, every earlier one has been filtered.
    cp.ingest("node1", live.slice(0, 2));
    cp.ingest("node1", live.slice(2));
    await waitFor(() => shop.received.some((r) => r.sequence === live[3]!.sequence) && ops.received.some((r) => r.sequence === live[3]!.sequence), "the last live flow");
    expect(shop.received.slice(SHOP_HISTORY.length).map(keyOf)).toEqual([live[1]!, live[3]!].map(keyOf));
    expect(ops.received.slice(ALL_HISTORY.length).map(keyOf)).toEqual(live.map(keyOf));
    shop.cancel();
    ops.cancel();
  });

  it("GetFlowMap: shop's map for a shop token, other's is PERMISSION_DENIED, the all-namespaces map only shop's edges", async () => {
    const shopMap = await flowMap(client(SHOP_TOKEN), "shop");
    expect(edgeNamespaces(shopMap).length).toBeGreaterThan(0);
    expect(edgeNamespaces(shopMap).every((e) => e.split(">").includes("shop"))).toBe(true);
    expect(await refusal(flowMap(client(SHOP_TOKEN), "other"))).toEqual({
      code: "PERMISSION_DENIED", details: "the token's scope does not include namespace other (it reads namespace shop)",
    });
    const everything = await flowMap(client(OPS_TOKEN), "");
    const scoped = await flowMap(client(SHOP_TOKEN), "");
    // The full map has edges the shop token must not see; the shop token's has none of them.
    expect(edgeNamespaces(everything).filter((e) => !e.split(">").includes("shop")).length).toBeGreaterThan(0);
    expect(edgeNamespaces(scoped)).toEqual(edgeNamespaces(everything).filter((e) => e.split(">").includes("shop")));
    expect(edgeNamespaces(scoped)).toEqual(edgeNamespaces(shopMap));
    const ends = new Set(scoped.edges.flatMap((e) => [e.source, e.destination]));
    expect(scoped.nodes.map((n) => n.id).sort()).toEqual([...ends].sort());
    expect(scoped.nodes.some((n) => n.namespace === "third")).toBe(true); // third/db-1 → shop/web-1: a peer of shop
    // shop and third together: the union of both namespaces' edges.
    const multi = await flowMap(client(MULTI_TOKEN), "");
    expect(edgeNamespaces(multi)).toEqual(edgeNamespaces(everything).filter((e) => e.split(">").some((ns) => ns === "shop" || ns === "third")));
    expect(edgeNamespaces(multi).length).toBeGreaterThan(edgeNamespaces(scoped).length);
  });

  it("GetStatus and GetNodes are cluster-wide: PERMISSION_DENIED for a scoped token, answered for ops", async () => {
    const status = await refusal(unary<GetStatusResponse>((cb) => client(SHOP_TOKEN).getStatus({}, cb)));
    expect(status.code).toBe("PERMISSION_DENIED");
    expect(status.details).toMatch(/namespace shop\) does not include the control plane's status, which is cluster-wide/);
    expect((await refusal(unary<GetNodesResponse>((cb) => client(SHOP_TOKEN).getNodes({}, cb)))).code).toBe("PERMISSION_DENIED");
    const ok = await unary<GetStatusResponse>((cb) => client(OPS_TOKEN).getStatus({}, cb));
    expect(ok.recordsTotal).toBeGreaterThanOrEqual(BigInt(ALL_HISTORY.length));
    await unary<GetNodesResponse>((cb) => client(OPS_TOKEN).getNodes({}, cb));
  });

  it("refuses every call without a token, or with a wrong one, as UNAUTHENTICATED", async () => {
    for (const c of [client(), client("wrong-token-0000000000")]) {
      const answers = [
        await refusal(flows(c)),
        await refusal(flowMap(c, "shop")),
        await refusal(unary<GetStatusResponse>((cb) => c.getStatus({}, cb))),
        await refusal(unary<GetNodesResponse>((cb) => c.getNodes({}, cb))),
      ];
      expect(answers.map((a) => a.code)).toEqual(["UNAUTHENTICATED", "UNAUTHENTICATED", "UNAUTHENTICATED", "UNAUTHENTICATED"]);
    }
    expect((await refusal(flows(client())))).toEqual({ code: "UNAUTHENTICATED", details: "a bearer token is required (authorization: Bearer <token>)" });
  });

  it("never logs a token, and names the subject", () => {
    const all = logs.text.join("");
    for (const t of [SHOP_TOKEN, OPS_TOKEN, MULTI_TOKEN, "wrong-token-0000000000"]) expect(all).not.toContain(t);
    expect(all).toContain("\"subject\":\"shop-team\"");
  });
});

describe("Observer API allowing unauthenticated access", () => {
  let cp: ControlPlane;
  let address: string;
  const clients: ObserverServiceClient[] = [];
  const client = (token?: string) => { const c = observer(address, token); clients.push(c); return c; };

  beforeAll(async () => {
    ({ cp, address } = await startControlPlane(new AccessControl({ tokens: parseTokenFile(TOKEN_FILE, "tokens.yaml"), allowUnauthenticated: true }), new LogCapture()));
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await cp?.stop();
  });

  it("serves everything without a token, still scopes tokens, and refuses a wrong token", async () => {
    expect((await flows(client())).map(keyOf).sort()).toEqual(ALL_HISTORY);
    await unary<GetStatusResponse>((cb) => client().getStatus({}, cb));
    expect((await flows(client(SHOP_TOKEN))).map(keyOf).sort()).toEqual(SHOP_HISTORY);
    expect((await refusal(flows(client("wrong-token-0000000000")))).code).toBe("UNAUTHENTICATED");
    expect((await refusal(flowMap(client("wrong-token-0000000000"), ""))).code).toBe("UNAUTHENTICATED");
  });
});

describe("token file reload", () => {
  let cp: ControlPlane;
  let address: string;
  let access: AccessControl;
  const logs = new LogCapture();
  const tokenFile = () => path.join(tmp, "reloaded.yaml");
  const clients: ObserverServiceClient[] = [];
  const client = (token?: string) => { const c = observer(address, token); clients.push(c); return c; };

  beforeAll(async () => {
    fs.writeFileSync(tokenFile(), TOKEN_FILE);
    access = AccessControl.fromTokenFile(tokenFile(), { allowUnauthenticated: false });
    access.watch(tokenFile(), logs.log, 50);
    ({ cp, address } = await startControlPlane(access, logs));
  });

  afterAll(async () => {
    access.close();
    for (const c of clients) c.close();
    await cp?.stop();
  });

  it("keeps the last good tokens when the file turns bad, and ends a revoked token's follow stream", async () => {
    const stream = follow(client(SHOP_TOKEN));
    await waitFor(() => stream.received.length >= SHOP_HISTORY.length, "the shop stream's history");
    fs.writeFileSync(tokenFile(), "tokens: [ broken");
    await waitFor(() => logs.text.join("").includes("token file not reloaded"), "the refused reload");
    expect(stream.ended()).toBeUndefined();
    expect((await flows(client(SHOP_TOKEN))).map(keyOf).sort()).toEqual(SHOP_HISTORY);

    // Revoke shop-team: the open stream ends without waiting for a flow, new calls are refused.
    fs.writeFileSync(tokenFile(), `tokens:\n  - name: ops\n    sha256: ${sha256(OPS_TOKEN)}\n    namespaces: ["*"]\n`);
    await waitFor(() => stream.ended() !== undefined, "the revoked stream to end");
    expect(stream.ended()).toEqual({ code: "UNAUTHENTICATED", details: "the bearer token is not known to this control plane" });
    expect((await refusal(flows(client(SHOP_TOKEN)))).code).toBe("UNAUTHENTICATED");
    expect((await flows(client(OPS_TOKEN))).map(keyOf).sort()).toEqual(ALL_HISTORY);
  });
});

describe("the CLI with tokens", () => {
  let cp: ControlPlane;
  let address: string;

  beforeAll(async () => {
    fs.writeFileSync(path.join(tmp, "cli-tokens.yaml"), TOKEN_FILE);
    ({ cp, address } = await startControlPlane(AccessControl.fromTokenFile(path.join(tmp, "cli-tokens.yaml"), { allowUnauthenticated: false }), new LogCapture()));
  });

  afterAll(async () => {
    await cp?.stop();
  });

  it("observe: --token and $BULKHEAD_TOKEN see exactly shop's flows; --token-file too", async () => {
    const byFlag = await run(["observe", "--server", address, "--token", SHOP_TOKEN, "-o", "json", "--all"]);
    expect(byFlag.stderr).toBe("");
    expect(byFlag.code).toBe(0);
    expect(jsonFlows(byFlag.stdout).map(keyOf).sort()).toEqual(SHOP_HISTORY);
    const byEnv = await run(["observe", "--server", address, "-o", "json", "--all"], { BULKHEAD_TOKEN: SHOP_TOKEN });
    expect(byEnv.code).toBe(0);
    expect(jsonFlows(byEnv.stdout).map(keyOf).sort()).toEqual(SHOP_HISTORY);
    const file = path.join(tmp, "ops.token");
    fs.writeFileSync(file, `${OPS_TOKEN}\n`);
    const byFile = await run(["observe", "--server", address, "--token-file", file, "-o", "json", "--all"], { BULKHEAD_TOKEN: SHOP_TOKEN });
    expect(byFile.code).toBe(0);
    expect(jsonFlows(byFile.stdout).map(keyOf).sort()).toEqual(ALL_HISTORY);
  });

  it("observe -n other and map -n other: refused, naming the namespace, exit 1", async () => {
    const observe = await run(["observe", "--server", address, "-n", "other"], { BULKHEAD_TOKEN: SHOP_TOKEN });
    expect(observe.code).toBe(1);
    expect(observe.stdout).toBe("");
    expect(observe.stderr).toBe("bulkhead observe: permission denied: the token's scope does not include namespace other (it reads namespace shop)\n");
    const map = await run(["map", "-n", "other", "--server", address, "--token", SHOP_TOKEN]);
    expect(map.code).toBe(1);
    expect(map.stderr).toBe("bulkhead map: permission denied: the token's scope does not include namespace other (it reads namespace shop)\n");
  });

  it("map -A with a shop token: only edges with an end in shop", async () => {
    const scoped = await run(["map", "-A", "-o", "json", "--window", "10m", "--server", address], { BULKHEAD_TOKEN: SHOP_TOKEN });
    const all = await run(["map", "-A", "-o", "json", "--window", "10m", "--server", address, "--token", OPS_TOKEN]);
    expect([scoped.code, all.code]).toEqual([0, 0]);
    const scopedMap = edgeNamespaces(GetFlowMapResponse.fromJSON(JSON.parse(scoped.stdout)));
    const fullMap = edgeNamespaces(GetFlowMapResponse.fromJSON(JSON.parse(all.stdout)));
    expect(fullMap.some((e) => !e.split(">").includes("shop"))).toBe(true);
    expect(scopedMap).toEqual(fullMap.filter((e) => e.split(">").includes("shop")));
  });

  it("status: refused for a shop token, shown for ops; no token or a wrong one: not authenticated", async () => {
    const shop = await run(["status", "--server", address, "--token", SHOP_TOKEN]);
    expect(shop.code).toBe(1);
    expect(shop.stderr).toMatch(/^bulkhead status: permission denied: the token's scope \(namespace shop\) does not include the control plane's status, which is cluster-wide; it needs a token with namespaces \["\*"\]\n$/);
    const ops = await run(["status", "--server", address], { BULKHEAD_TOKEN: OPS_TOKEN });
    expect(ops.code).toBe(0);
    expect(ops.stdout).toMatch(/^Agents: 0\/0 connected/);
    // This control plane has no --data-dir: status says where the history is, and that it does not survive.
    expect(ops.stdout).toMatch(/^Store: memory \(lost on restart\): \d+ records, 0 B; retention dropped \d+ records, 0 partitions$/m);
    const none = await run(["status", "--server", address]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("not authenticated by the control plane");
    expect(none.stderr).toContain("a bearer token is required");
    const wrong = await run(["observe", "--server", address, "--token", "wrong-token-0000000000"]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("the bearer token is not known to this control plane");
  });

  it("refuses a malformed token or both --token and --token-file before calling (exit 2), without echoing it", async () => {
    const bad = await run(["observe", "--server", address], { BULKHEAD_TOKEN: "short secret" });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe("bulkhead: $BULKHEAD_TOKEN: not a token (16 to 4096 printable ASCII characters without spaces)\n");
    const both = await run(["map", "-A", "--server", address, "--token", SHOP_TOKEN, "--token-file", "/nonexistent"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toBe("bulkhead: give --token or --token-file, not both\n");
  });
});

describe("bulkhead controlplane flags", () => {
  it("refuses to start with neither --tokens nor --allow-unauthenticated", async () => {
    const r = await run(["controlplane", "--manifests", manifests]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^bulkhead: choose who may read flows: --tokens FILE .* or --allow-unauthenticated/);
  });

  it("refuses a bad token file, naming file, entry and field", async () => {
    const file = path.join(tmp, "bad-tokens.yaml");
    fs.writeFileSync(file, `tokens:\n  - { name: shop-team, token: ${SHOP_TOKEN}, namespaces: [Shop] }\n`);
    const r = await run(["controlplane", "--manifests", manifests, "--tokens", file, "--allow-unauthenticated"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`bulkhead: --tokens: ${file}: tokens[0] (name "shop-team"): namespaces[0]: "Shop" is not a namespace name (a lower-case RFC 1123 label of at most 63 characters)\n`);
  });

  it("with --tokens, serves a token and refuses a call without one", async () => {
    const file = path.join(tmp, "process-tokens.yaml");
    fs.writeFileSync(file, TOKEN_FILE);
    // The CLI's --listen takes no port 0: a socket of this test's own avoids guessing a free port.
    const addr = `unix://${path.join(tmp, "process-cp.sock")}`;
    const child = spawn(process.execPath, [cliMain, "controlplane", "--manifests", manifests, "--listen", addr, "--tokens", file],
      { env: { PATH: process.env.PATH ?? "" } });
    const closed = new Promise((r) => child.once("close", r));
    let out = "";
    child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
    child.stderr.on("data", (d: Buffer) => { out += d.toString(); });
    try {
      await waitFor(() => out.includes("control plane started") || child.exitCode !== null, "the control plane to start", 20_000);
      expect(out).toContain("control plane started");
      const ok = await run(["map", "-n", "shop", "--server", addr, "--token", SHOP_TOKEN]);
      expect(ok.code).toBe(0);
      const none = await run(["map", "-n", "shop", "--server", addr]);
      expect(none.code).toBe(1);
      expect(none.stderr).toContain("not authenticated by the control plane");
      expect(out).not.toContain(SHOP_TOKEN);
    } finally {
      child.kill("SIGTERM");
      await closed;
    }
  });
});
