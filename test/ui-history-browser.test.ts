// Issue 16, items 3 and 4 (and issue 12's UI window), in Debian's Chromium without a lab: a
// real ControlPlane in this process over a DuckDB store, serving the built UI. Known flows:
// some only in the store (3 h and 30 h ago), some recent (in the store and ingested live).
//  - History: the window picker's past windows (24h, 7d) and a from/to range show exactly
//    the records of their time on the map and in the flow table; the URL keeps the view and
//    a new page opened on it shows the same; a bad range (from after to, a link with from
//    alone) is refused with its reason; "Back to live" streams again.
//  - What-if: a pasted draft (a new policy isolating db, and a replacement of the policy
//    that locks cache down) marks web → db as would-be-denied and web → cache as newly
//    allowed, on the map (halo classes on the drawn edges) and in the list, with their
//    record and packet counts, over the view's time (the live window, then a past range);
//    bad YAML is refused with the file, document and problem named.
//  - Suggestions: the policies learned for the selected namespace, each rule with the flows
//    that justify it (records, packets), loaded into the draft one or all at once; all of
//    them replayed change no recorded verdict.
// Screenshots go to test-results/ui-e2e/.
//   npx vitest run test/ui-history-browser.test.ts
import fs from "node:fs";
import path from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { ControlPlane } from "../controlplane/controlplane.js";
import { DuckDBFlowStore } from "../controlplane/store/duckdb.js";
import { Verdict, VerdictReason, type FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { launchChromium, type LaunchedBrowser } from "./harness/browser.js";
import { flow, podEnd } from "./harness/flow-records.js";
import { closeUiTest, SHOTS, startUiControlPlane, uiTestFolder } from "./harness/ui-control-plane.js";

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const HOUR = 3_600_000;
const WEB = { pod: "web-7d9f8b6c5d-x2k4p", ip: "10.80.0.2", labels: { app: "web", "pod-template-hash": "7d9f8b6c5d" } };
const DB = { pod: "db-5c8f7d9b4-q7z2m", ip: "10.80.0.3", labels: { app: "db", "pod-template-hash": "5c8f7d9b4" } };
const CACHE = { pod: "cache-6b7c8d9f5-m4n5p", ip: "10.80.0.4", labels: { app: "cache", "pod-template-hash": "6b7c8d9f5" } };
const WEB_ID = "workload:shop/Deployment/web", DB_ID = "workload:shop/Deployment/db", CACHE_ID = "workload:shop/Deployment/cache";
const TO_DB = `${WEB_ID},${DB_ID},TCP,5432`, TO_CACHE = `${WEB_ID},${CACHE_ID},TCP,6379`;

function podManifest(p: typeof WEB): string {
  const rs = p.pod.replace(/-[a-z0-9]+$/, "");
  return `apiVersion: v1\nkind: Pod\nmetadata: { name: ${p.pod}, namespace: shop, uid: uid-${p.pod}, labels: ${JSON.stringify(p.labels)}, creationTimestamp: "2024-01-01T00:00:00Z",
  ownerReferences: [{ apiVersion: apps/v1, kind: ReplicaSet, name: ${rs}, uid: uid-${rs}, controller: true }] }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${p.ip} }`;
}

/** cache accepts nothing (an ingress policy without rules): web → cache is dropped today. */
const MANIFESTS = [
  "apiVersion: v1\nkind: Node\nmetadata: { name: node1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.78.1 }] }",
  "apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, annotations: { bulkhead.io/mode: enforce } }",
  podManifest(WEB), podManifest(DB), podManifest(CACHE),
  "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: cache-lockdown, namespace: shop }\nspec: { podSelector: { matchLabels: { app: cache } }, policyTypes: [Ingress] }",
].join("\n---\n") + "\n";

/** The draft: db takes only api's calls (web's would be denied); cache's lockdown replaced by one that lets web in. */
const DRAFT = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: db-only-api, namespace: shop }
spec:
  podSelector: { matchLabels: { app: db } }
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: api } } }] }]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: cache-lockdown, namespace: shop }
spec:
  podSelector: { matchLabels: { app: cache } }
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }], ports: [{ port: 6379 }] }]
`;

const end = (p: typeof WEB) => podEnd("shop", p.pod, p.ip, p.labels, p.pod.replace(/-[a-z0-9]+-[a-z0-9]+$/, ""));
let sport = 41_000;
/**
 * `n` calls web → db:5432 (forwarded) or web → cache:6379 (dropped at cache's ingress by
 * policy), one connection each, ending at endMs, 1 s apart: each seen twice, as the datapath
 * reports it, leaving web (FROM_POD, forwarded: the map counts its packets) and reaching the
 * server (TO_POD: where policy judges it; the what-if replays these), 10 packets each.
 */
function calls(to: "db" | "cache", n: number, endMs: number): FlowRecord[] {
  return Array.from({ length: n }, (_, i) => {
    const port = to === "db" ? 5432 : 6379, s = sport++;
    const one = (point: "from" | "to") => {
      const dropped = point === "to" && to === "cache";
      const r = flow(end(WEB), end(to === "db" ? DB : CACHE), {
        point, port, sport: s, endMs: endMs - i * 1000, packets: 10,
        ...(dropped ? { verdict: Verdict.VERDICT_DROPPED, reason: VerdictReason.VERDICT_REASON_POLICY } : {}),
      });
      r.node = "node1";
      r.source!.node = "node1";
      r.destination!.node = "node1";
      return r;
    };
    return [one("from"), one("to")];
  }).flat();
}

describe("the history picker and the what-if overlay, in Chromium", () => {
  let tmp: string;
  let store: DuckDBFlowStore | undefined;
  let cp: ControlPlane | undefined;
  let browser: LaunchedBrowser | undefined;
  let page: Page;
  const pageErrors: string[] = [];
  const now = Date.now();
  // 30 h ago: only the 7-day window reaches it. 3 h ago: the past range and both long windows. Now: every view.
  const old30h = calls("db", 5, now - 30 * HOUR);
  const old3h = [...calls("db", 4, now - 3 * HOUR), ...calls("cache", 2, now - 3 * HOUR)];
  const recent = [...calls("db", 3, now - 2000), ...calls("cache", 2, now - 2000)];
  const RANGE = { from: now - 3 * HOUR - 10 * 60_000, to: now - 3 * HOUR + 10 * 60_000 };

  beforeAll(async () => {
    tmp = uiTestFolder("ui-history", MANIFESTS);
    fs.mkdirSync(path.join(tmp, "store"));
    // Everything is stored (as agents' batches are); the recent records are also ingested
    // below, for the live map. They end before the hot window starts (start + 1 s), so a
    // range reads each record once, from the store.
    store = await DuckDBFlowStore.open(path.join(tmp, "store"), { commitDelayMs: 1 });
    expect(await store.append([{ node: "node1", instanceId: "test-agent", batchId: 1n, records: [...old30h, ...old3h, ...recent] }])).toEqual([true]);
    cp = await startUiControlPlane(tmp, { store });
    cp.ingest("node1", recent.map((r) => ({ ...r })));
    browser = await launchChromium({ viewport: { width: 1500, height: 1000 } });
    page = await browser.context.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  });

  afterAll(() => closeUiTest({ browser, cp, also: async () => { await store?.close(); }, tmp }));

  /** Packets per map edge id, as the page holds them. */
  const packets = () => page.evaluate(() => Object.fromEntries(window.bulkheadMap.edges().map((e) => [e.id, e.packets])));
  /** Waits for the map of `view` (the hook's time view, JSON) to be drawn: the status line names it after the snapshot. */
  async function waitForMap(state: "live" | "history", edges: number): Promise<void> {
    await page.locator(`[data-testid=connection-state][data-state=${state}]`).waitFor({ timeout: 20_000 });
    await page.waitForFunction((n) => window.bulkheadMap.edges().length === n, edges, { timeout: 20_000 });
  }
  const rows = () => page.locator("[data-testid=flow-table] [data-testid=flow-row]");
  const query = () => new URL(page.url()).searchParams;

  it("past windows and a from/to range show exactly their records; the URL reproduces the view; bad ranges say why; back to live", async () => {
    await page.goto(`${cp!.ui!.url}?namespace=shop&window=5m`);
    await waitForMap("live", 2);
    expect(await packets()).toEqual({ [TO_DB]: 30, [TO_CACHE]: 20 });
    // Live: neither the from/to inputs nor "Back to live" show.
    expect([await page.locator("[data-testid=range-form]").isVisible(), await page.locator("[data-testid=back-to-live]").isVisible()]).toEqual([false, false]);

    // 24 h, from the store: 4 + 3 calls to db, 2 + 2 to cache.
    await page.locator("[data-testid=window-select]").selectOption("24h");
    await waitForMap("history", 2);
    await page.waitForFunction(() => window.bulkheadMap.edges().some((e) => e.packets === 70));
    expect(await packets()).toEqual({ [TO_DB]: 70, [TO_CACHE]: 40 });
    expect(query().get("window")).toBe("24h");
    // Each call is two records (leaving web, reaching the server).
    await expect.poll(() => rows().count()).toBe(22);
    expect(await page.locator("[data-testid=back-to-live]").isVisible()).toBe(true);

    // 7 days reaches the calls of 30 h ago as well.
    await page.locator("[data-testid=window-select]").selectOption("7d");
    await page.waitForFunction(() => window.bulkheadMap.edges().some((e) => e.packets === 120));
    expect(await packets()).toEqual({ [TO_DB]: 120, [TO_CACHE]: 40 });
    await expect.poll(() => rows().count()).toBe(32);
    // The details of an edge cover the view's records too (from the store), with the policies selecting it.
    await page.locator(`[data-testid=edge-row][data-edge-id="${TO_CACHE}"] button`).click();
    const details = page.locator("[data-testid=details]");
    await expect.poll(() => details.textContent(), { timeout: 10_000 }).toContain("Flow records over last 7d (history)8");
    expect(await details.locator("[data-testid=selected-by] li").allTextContents()).toEqual(["shop/cache-lockdown — ingress, enforce mode"]);
    await page.locator("#clear-filter").click();
    await expect.poll(() => rows().count()).toBe(32);
    // A past view spans days: its times carry their date (the calls of 30 h ago fall on another day than today's).
    const times = await page.locator("[data-testid=flow-table] [data-testid=flow-row] td.time").allTextContents();
    expect(new Set(times.map((t) => t.replace(/,?\s*\d\d:\d\d:\d\d$/, ""))).size, times.join(" | ")).toBeGreaterThanOrEqual(2);

    // From/to around 3 h ago, entered in the picker (datetime-local: the browser's local time).
    await page.locator("[data-testid=window-select]").selectOption("range");
    expect(await page.locator("[data-testid=range-form]").isVisible()).toBe(true);
    const local = (ms: number) => page.evaluate((t) => {
      const d = new Date(t), p = (n: number) => String(n).padStart(2, "0");
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    }, ms);
    await page.locator("[data-testid=range-from]").fill(await local(RANGE.from));
    await page.locator("[data-testid=range-to]").fill(await local(RANGE.to));
    await page.locator("[data-testid=range-apply]").click();
    // The range's map is drawn once db's edge has its 40 packets (120 in the 7d view before it;
    // cache's edge had 40 there, so "some edge has 40" was true before the range's map came).
    await page.waitForFunction((db) => window.bulkheadMap.edges().some((e) => e.id === db && e.packets === 40), TO_DB);
    expect(await packets()).toEqual({ [TO_DB]: 40, [TO_CACHE]: 20 });
    await expect.poll(() => rows().count()).toBe(12);
    const link = page.url();
    expect([query().get("from"), query().get("to"), query().get("window")])
      .toEqual([new Date(Math.floor(RANGE.from / 1000) * 1000).toISOString(), new Date(Math.floor(RANGE.to / 1000) * 1000).toISOString(), null]);
    await page.screenshot({ path: path.join(SHOTS, "history-range-1500x1000.png") });

    // The link reproduces the view in a new page.
    const again = await browser!.context.newPage();
    try {
      await again.goto(link);
      await again.locator("[data-testid=connection-state][data-state=history]").waitFor({ timeout: 20_000 });
      await again.waitForFunction(() => window.bulkheadMap.edges().length === 2);
      expect(await again.evaluate(() => Object.fromEntries(window.bulkheadMap.edges().map((e) => [e.id, e.packets])))).toEqual({ [TO_DB]: 40, [TO_CACHE]: 20 });
      expect(await again.locator("[data-testid=window-select]").inputValue()).toBe("range");
    } finally {
      await again.close();
    }

    // A bad range: from after to is refused in the page, and the map stays as it was.
    await page.locator("[data-testid=range-from]").fill(await local(RANGE.to));
    await page.locator("[data-testid=range-to]").fill(await local(RANGE.from));
    await page.locator("[data-testid=range-apply]").click();
    await expect.poll(() => page.locator("[data-testid=range-error]").textContent()).toMatch(/^Bad range: From \(\S+\) is not before To \(\S+\)\.$/);
    expect(await packets()).toEqual({ [TO_DB]: 40, [TO_CACHE]: 20 });

    // Back to live: the stream again, the last 5 minutes.
    await page.locator("[data-testid=back-to-live]").click();
    await waitForMap("live", 2);
    await page.waitForFunction(() => window.bulkheadMap.edges().some((e) => e.packets === 30));
    expect(await packets()).toEqual({ [TO_DB]: 30, [TO_CACHE]: 20 });
    expect(query().get("window")).toBe("5m");
    // Live: the clock alone.
    await expect.poll(async () => {
      const live = await rows().locator("td.time").allTextContents();
      return live.length > 0 && live.every((t) => /^\d\d:\d\d:\d\d$/.test(t)) ? "clock only" : live.join(" | ");
    }).toBe("clock only");
    expect(await page.locator("[data-testid=range-error]").textContent()).toBe("");
    expect([await page.locator("[data-testid=range-form]").isVisible(), await page.locator("[data-testid=back-to-live]").isVisible()]).toEqual([false, false]);

    // A link with from alone names what is missing and falls back to live.
    await page.goto(`${cp!.ui!.url}?namespace=shop&from=${new Date(RANGE.from).toISOString()}`);
    await waitForMap("live", 2);
    expect(await page.locator("[data-testid=range-error]").textContent())
      .toBe("Bad range in the link: the link gives from without to: a range needs both; showing the last 5 minutes live.");
    expect(pageErrors).toEqual([]);
  });

  it("a pasted draft marks the edges it would deny and newly allow, with counts, over the view's time; bad YAML is named", async () => {
    await page.goto(`${cp!.ui!.url}?namespace=shop&window=5m`);
    await waitForMap("live", 2);
    const summary = page.locator("[data-testid=whatif-summary]");

    // Bad YAML first: the file, the document and the problem.
    await page.locator("[data-testid=whatif-draft]").fill("kind: NetworkPolicy\nmetadata: { name: x\n");
    await page.locator("[data-testid=whatif-run]").click();
    await expect.poll(() => page.locator("[data-testid=whatif-error]").textContent()).toMatch(/^bad draft, nothing replayed:\ndraft\.yaml: document 0: not valid YAML: /);
    expect(await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).toEqual({ denied: [], allowed: [], verdict: [] });

    await page.locator("[data-testid=whatif-draft]").fill(DRAFT);
    await page.locator("[data-testid=whatif-run]").click();
    await summary.and(page.locator("[data-state=done]")).waitFor({ timeout: 20_000 });
    expect(await page.locator("[data-testid=whatif-error]").textContent()).toBe("");
    expect(await summary.evaluate((el) => ({ ...el.dataset }))).toEqual({ testid: "whatif-summary", state: "done", denied: "1", allowed: "1", verdict: "0", records: "10", replayed: "5", onMap: "2" });
    // Each call recorded at both ends, replayed from the one that judged it.
    expect(await summary.textContent()).toContain("; 5 of 10 recorded flows over 5m replayed (the ends that judged them).");
    const listed = await page.locator("[data-testid=whatif-row]").evaluateAll((trs) => trs.map((tr) => ({
      id: tr.getAttribute("data-edge-id"), change: tr.getAttribute("data-change"), cells: [...tr.querySelectorAll("td")].map((td) => td.textContent),
    })));
    expect(listed).toEqual([
      { id: TO_DB, change: "denied", cells: ["would be denied", "FORWARDED → DROPPED", "3", "30"] },
      { id: TO_CACHE, change: "allowed", cells: ["newly allowed", "DROPPED → FORWARDED", "2", "20"] },
    ]);
    // On the map: the drawn edge of each, with its halo.
    const drawn = await page.evaluate(([a, b]) => ({ denied: window.bulkheadMap.drawnEdgesOf(a!), allowed: window.bulkheadMap.drawnEdgesOf(b!) }), [TO_DB, TO_CACHE]);
    expect(await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).toEqual({ ...drawn, verdict: [] });
    expect(drawn.denied).toHaveLength(1);
    expect(drawn.allowed).toHaveLength(1);
    await page.screenshot({ path: path.join(SHOTS, "whatif-live-1500x1000.png") });
    await page.setViewportSize({ width: 1280, height: 720 });
    await page.screenshot({ path: path.join(SHOTS, "whatif-live-1280x720.png") });
    await page.setViewportSize({ width: 1500, height: 1000 });

    // The same draft over the past range: the calls of 3 h ago (4 to db, 2 to cache).
    const q = new URLSearchParams({ namespace: "shop", from: new Date(RANGE.from).toISOString(), to: new Date(RANGE.to).toISOString() });
    await page.goto(`${cp!.ui!.url}?${q.toString()}`);
    await waitForMap("history", 2);
    expect(await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).toEqual({ denied: [], allowed: [], verdict: [] });
    await page.locator("[data-testid=whatif-draft]").fill(DRAFT);
    await page.locator("[data-testid=whatif-run]").click();
    await summary.and(page.locator("[data-state=done]")).waitFor({ timeout: 20_000 });
    expect(await page.locator("[data-testid=whatif-row]").evaluateAll((trs) => trs.map((tr) =>
      [tr.getAttribute("data-change"), ...[...tr.querySelectorAll("td.number")].map((td) => td.textContent)])))
      .toEqual([["denied", "4", "40"], ["allowed", "2", "20"]]);
    expect((await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).denied).toHaveLength(1);

    // Clearing takes the halos off.
    await page.locator("[data-testid=whatif-clear]").click();
    expect(await page.evaluate(() => window.bulkheadMap.whatIfDrawn())).toEqual({ denied: [], allowed: [], verdict: [] });
    expect(pageErrors).toEqual([]);
  });

  it("suggests policies for the namespace with the flows that justify each rule, and loads them as the draft", async () => {
    await page.goto(`${cp!.ui!.url}?window=5m`);
    await waitForMap("live", 2);
    // All namespaces: suggestions are for one.
    await page.locator("[data-testid=suggest-run]").click();
    expect(await page.locator("[data-testid=suggest-error]").textContent()).toBe("Pick a namespace: policies are suggested for one namespace.");

    await page.goto(`${cp!.ui!.url}?namespace=shop&window=5m`);
    await waitForMap("live", 2);
    await page.locator("[data-testid=suggest-run]").click();
    await page.locator("[data-testid=suggestions][data-state=done]").waitFor({ timeout: 20_000 });
    expect(await page.locator("[data-testid=suggest-summary]").textContent())
      .toBe("3 policies for shop, learned from 10 recorded flows over 5m. Notes: 2 records dropped or audited by the policies in force were not learned from");
    expect(await page.locator("[data-testid=suggestion]").evaluateAll((as) => as.map((a) => a.getAttribute("data-name"))))
      .toEqual(["bulkhead-default-deny", "bulkhead-db", "bulkhead-web"]);
    // db's one ingress rule: justified by web's 3 calls (30 packets) on 5432.
    const justification = (name: string) => page.locator(`[data-testid=suggestion][data-name=${name}] [data-testid=justification-row]`)
      .evaluateAll((trs) => trs.map((tr) => [...tr.children].map((c) => c.textContent)));
    expect(await justification("bulkhead-db")).toEqual([["ingress[0]", "shop/web (Deployment)", "TCP/5432", "3", "30"]]);
    expect(await justification("bulkhead-web")).toEqual([["egress[0]", "shop/db (Deployment)", "TCP/5432", "3", "30"]]);

    // One loaded as the draft: its manifest alone.
    await page.locator("[data-testid=suggestion][data-name=bulkhead-db] [data-testid=suggestion-load]").click();
    const one = await page.locator("[data-testid=whatif-draft]").inputValue();
    expect(one).toMatch(/^apiVersion: networking.k8s.io\/v1\nkind: NetworkPolicy\nmetadata:\n {2}name: bulkhead-db\n {2}namespace: shop\n/);
    expect(one.split(/^---$/m)).toHaveLength(1);

    // All of them, replayed: the flows they were learned from keep their verdicts (the dropped calls to cache stay dropped).
    await page.locator("[data-testid=suggest-load-all]").click();
    expect((await page.locator("[data-testid=whatif-draft]").inputValue()).split(/^---$/m)).toHaveLength(3);
    await page.locator("[data-testid=whatif-run]").click();
    const summary = page.locator("[data-testid=whatif-summary]");
    await summary.and(page.locator("[data-state=done]")).waitFor({ timeout: 20_000 });
    expect(await summary.evaluate((el) => [el.dataset.denied, el.dataset.allowed, el.dataset.verdict, el.dataset.records])).toEqual(["0", "0", "0", "10"]);
    expect(await page.locator("[data-testid=whatif-row]").count()).toBe(0);
    await page.screenshot({ path: path.join(SHOTS, "suggestions-1500x1000.png") });
    expect(pageErrors).toEqual([]);
  });
});
