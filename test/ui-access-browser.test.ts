// Issue "tokens", the UI path, in Debian's Chromium: a control plane that requires tokens
// (allowUnauthenticated false) serving the built UI (dist/ui), with a token scoped to shop.
// The page without a token is refused (401) and asks for one; with the shop token it shows
// shop's map; the all-namespaces view keeps only edges with an end in shop; asking for
// another namespace by URL is refused and shows none of its flows; every API request the
// page sends carries the token, and no answer holds a record or edge without an end in shop.
// No lab: a real ControlPlane in this process, records fed through cp.ingest, real HTTP.
//   npx vitest run test/ui-access-browser.test.ts
import path from "node:path";
import type { Page, Response } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AccessControl, parseTokenFile } from "../controlplane/access/index.js";
import type { ControlPlane } from "../controlplane/controlplane.js";
import { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { launchChromium, type LaunchedBrowser } from "./harness/browser.js";
import { agentRecord } from "./harness/flow-records.js";
import { closeUiTest, SHOTS, startUiControlPlane, uiTestFolder } from "./harness/ui-control-plane.js";

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const SHOP_TOKEN = "shop-team-token-5d1e0b7a94c2f3e8";
const TOKENS = `
tokens:
  - name: shop-team
    token: ${SHOP_TOKEN}
    namespaces: [shop]
`;

const WEB_IP = "10.0.1.5", DB_IP = "10.0.2.7", X_IP = "10.0.9.1", Y_IP = "10.0.9.2";
const WEB = "workload:shop/Pod/web-1", DB = "workload:shop/Pod/db-0", X = "workload:other/Pod/x-1";

const pod = (ns: string, name: string, ip: string) =>
  `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: ${ns}, uid: uid-${name}, labels: { app: ${name} }, creationTimestamp: "2024-01-01T00:00:00Z" }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${ip} }`;
const MANIFESTS = [
  "apiVersion: v1\nkind: Namespace\nmetadata: { name: shop }",
  "apiVersion: v1\nkind: Namespace\nmetadata: { name: other }",
  "apiVersion: v1\nkind: Node\nmetadata: { name: node1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.0.11 }] }",
  pod("shop", "web-1", WEB_IP), pod("shop", "db-0", DB_IP), pod("other", "x-1", X_IP), pod("other", "y-1", Y_IP),
].join("\n---\n") + "\n";

const record = (src: string, dst: string, dport: number): FlowRecord => agentRecord(src, dst, dport);

/** The namespaces at the ends of a flow record's proto3 JSON. */
function flowNamespaces(f: unknown): string[] {
  const r = FlowRecord.fromJSON(f);
  return [r.source?.namespace ?? "", r.destination?.namespace ?? ""];
}

describe("tokens through the web UI, in Chromium", () => {
  let tmp: string;
  let cp: ControlPlane;
  let browser: LaunchedBrowser | undefined;
  let page: Page;
  let base: string;
  const apiRequests: { url: string; authorization: string | undefined }[] = [];
  /** Bodies of the page's JSON API answers (the stream is checked through the DOM). */
  const answers: { url: string; status: number; body: unknown }[] = [];

  async function shot(name: string): Promise<void> {
    const file = path.join(SHOTS, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    process.stdout.write(`screenshot: ${file}\n`);
  }

  const edgeRows = () => page.$$eval("[data-testid=edge-row]", (rows) => rows.map((r) => r.getAttribute("data-edge-id") ?? ""));
  const flowRowText = () => page.$$eval("[data-testid=flow-row]", (rows) => rows.map((r) => r.textContent ?? ""));

  beforeAll(async () => {
    tmp = uiTestFolder("ui-access", MANIFESTS);
    cp = await startUiControlPlane(tmp, { access: new AccessControl({ tokens: parseTokenFile(TOKENS, "tokens.yaml"), allowUnauthenticated: false }) });
    base = cp.ui!.url;
    // shop internal, other → shop (cross), other internal (never visible to the shop token).
    cp.ingest("node1", [record(WEB_IP, DB_IP, 5432), record(X_IP, WEB_IP, 8080), record(X_IP, Y_IP, 9000)]);
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("request", (r) => { if (r.url().includes("/api/v1/")) apiRequests.push({ url: r.url(), authorization: r.headers().authorization }); });
    page.on("response", (r: Response) => {
      if (!r.url().includes("/api/v1/") || r.url().includes("/map/stream")) return;
      void r.json().then((body: unknown) => answers.push({ url: r.url(), status: r.status(), body }), () => undefined);
    });
  });

  afterAll(() => closeUiTest({ browser, cp, tmp }));

  it("without a token: 401, and the page asks for one", async () => {
    await page.goto(`${base}?namespace=shop`);
    await expect.poll(() => page.textContent("[data-testid=status-line]"), { timeout: 10_000 }).toMatch(/Access refused: a bearer token is required.*Enter a bearer token/);
    expect(await page.getAttribute("[data-testid=token-input]", "aria-invalid")).toBe("true");
    expect(await page.getAttribute("[data-testid=connection-state]", "data-state")).toBe("reconnecting");
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.filter((a) => a.status !== 401)).toEqual([]);
    expect(await edgeRows()).toEqual([]);
    expect(await flowRowText()).toEqual([]);
    await shot("access-01-no-token");
  });

  it("with the shop token: shop's map and flows", async () => {
    await page.getByTestId("token-input").fill(SHOP_TOKEN);
    await page.getByTestId("token-input").press("Enter");
    await expect.poll(() => page.getAttribute("[data-testid=connection-state]", "data-state"), { timeout: 10_000 }).toBe("live");
    await expect.poll(edgeRows, { timeout: 5000 }).toEqual(expect.arrayContaining([`${WEB},${DB},TCP,5432`, `${X},${WEB},TCP,8080`]));
    expect(await edgeRows()).toHaveLength(2);
    await expect.poll(flowRowText, { timeout: 5000 }).toHaveLength(2);
    // The namespace select offers only what the token may read.
    expect(await page.$$eval("[data-testid=namespace-select] option", (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(["", "shop"]);
    await shot("access-02-shop-token");
  });

  it("all namespaces: only edges and flows with an end in shop", async () => {
    await page.getByTestId("namespace-select").selectOption("");
    await expect.poll(() => page.textContent("[data-testid=status-line]"), { timeout: 10_000 }).toContain("Map of all namespaces");
    expect((await edgeRows()).sort()).toEqual([`${WEB},${DB},TCP,5432`, `${X},${WEB},TCP,8080`].sort());
    expect(await page.evaluate(() => window.bulkheadMap.nodes().map((n) => n.id).sort())).toEqual([DB, WEB, X].sort());
    await expect.poll(() => page.getAttribute("[data-testid=flow-table]", "data-filter"), { timeout: 5000 }).toBe("");
    const rows = await flowRowText();
    expect(rows).toHaveLength(2);
    expect(rows.filter((t) => t.includes("other/y-1"))).toEqual([]);
    // Selecting the peer from other filters the table to its flows, which the token sees only where they touch shop.
    await page.locator(`[data-testid=node-row][data-node-id="${X}"] button`).click();
    await page.locator("[data-testid=flow-table][data-filter=\"workload=other/Pod/x-1\"]").waitFor({ timeout: 5000 });
    expect(await flowRowText()).toEqual([expect.stringMatching(/other\/x-1.*shop\/web-1:8080/)]);
    await shot("access-03-all-namespaces");
    await page.getByTestId("clear-filter").click();
  });

  it("another namespace by URL: refused, and none of its flows appear", async () => {
    await page.goto(`${base}?namespace=other`);
    await expect.poll(() => page.textContent("[data-testid=status-line]"), { timeout: 10_000 }).toMatch(/Map unavailable: .*other/);
    await expect.poll(() => page.textContent("[data-testid=filter-error]"), { timeout: 10_000 }).toMatch(/other/);
    expect(await edgeRows()).toEqual([]);
    expect(await flowRowText()).toEqual([]);
    await shot("access-04-other-refused");
  });

  it("every API request carried the token once given, and no answer held data without an end in shop", () => {
    const firstWithToken = apiRequests.findIndex((r) => r.authorization !== undefined);
    expect(firstWithToken).toBeGreaterThan(0);
    expect(apiRequests.slice(firstWithToken).filter((r) => r.authorization !== `Bearer ${SHOP_TOKEN}`)).toEqual([]);
    const refusedOther = answers.filter((a) => new URL(a.url).searchParams.get("namespace") === "other");
    expect(refusedOther.length).toBeGreaterThan(0);
    expect(refusedOther.filter((a) => a.status !== 403)).toEqual([]);
    const leaks: string[] = [];
    for (const a of answers.filter((x) => x.status === 200)) {
      const body = a.body as { flows?: unknown[]; edges?: { source: string; destination: string }[]; namespaces?: { name: string }[] };
      for (const f of body.flows ?? []) if (!flowNamespaces(f).includes("shop")) leaks.push(`${a.url}: ${JSON.stringify(f)}`);
      for (const e of body.edges ?? []) if (![e.source, e.destination].some((id) => id.startsWith("workload:shop/"))) leaks.push(`${a.url}: ${JSON.stringify(e)}`);
      for (const n of body.namespaces ?? []) if (n.name !== "shop") leaks.push(`${a.url}: namespace ${n.name}`);
    }
    expect(leaks).toEqual([]);
    expect(answers.some((a) => a.status === 200 && (a.body as { flows?: unknown[] }).flows?.length)).toBe(true);
  });
});
