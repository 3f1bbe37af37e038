// Issue 15, item 3, in Debian's Chromium without a lab: the details pane of a judged flow
// names the tier, the policy and the rule that decided it, and for a flow that an Admin
// rule passed on, the Pass rule together with the NetworkPolicy that then decided. A real
// ControlPlane in this process reads a folder of manifests (a NetworkPolicy and a
// ClusterNetworkPolicy), attributes the records fed through cp.ingest with its own
// compiler and model, and serves the built UI; the test clicks each edge's row and reads
// the pane. Screenshots go to test-results/ui-e2e/.
//   npx vitest run test/ui-tiers-browser.test.ts
import path from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { ControlPlane } from "../controlplane/controlplane.js";
import { type FlowRecord, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { launchChromium, type LaunchedBrowser } from "./harness/browser.js";
import { agentRecord } from "./harness/flow-records.js";
import { closeUiTest, SHOTS, startUiControlPlane, uiTestFolder } from "./harness/ui-control-plane.js";

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const NS = "tiers";
const WEB_IP = "10.73.0.2", DB_IP = "10.73.0.3", DEBUG_IP = "10.73.0.4", ADMIN_IP = "10.73.0.5";

// db is isolated for ingress by a NetworkPolicy that admits web on 5432. The Admin tier
// (priority 10) passes web on to it, denies debug, and accepts the admin pod before the
// NetworkPolicy (which does not admit it) is reached.
function manifests(): string {
  const pod = (name: string, app: string, ip: string) =>
    `apiVersion: v1\nkind: Pod\nmetadata: { name: ${name}, namespace: ${NS}, uid: uid-${name}, labels: { app: ${app} }, creationTimestamp: "2024-01-01T00:00:00Z" }\nspec: { nodeName: node1 }\nstatus: { phase: Running, podIP: ${ip} }`;
  return [
    "apiVersion: v1\nkind: Node\nmetadata: { name: node1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.78.1 }] }",
    `apiVersion: v1\nkind: Namespace\nmetadata: { name: ${NS}, annotations: { bulkhead.io/mode: enforce } }`,
    pod("web", "web", WEB_IP), pod("db", "db", DB_IP), pod("debug", "debug", DEBUG_IP), pod("admin", "admin", ADMIN_IP),
    `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: db-from-web, namespace: ${NS} }
spec:
  podSelector: { matchLabels: { app: db } }
  policyTypes: [Ingress]
  ingress: [{ from: [{ podSelector: { matchLabels: { app: web } } }], ports: [{ protocol: TCP, port: 5432 }] }]`,
    `apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: { name: guard-db }
spec:
  tier: Admin
  priority: 10
  subject: { pods: { namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: ${NS} } }, podSelector: { matchLabels: { app: db } } } }
  ingress:
    - { name: web-to-namespace, action: Pass, from: [{ pods: { podSelector: { matchLabels: { app: web } } } }] }
    - { name: no-debug, action: Deny, from: [{ pods: { podSelector: { matchLabels: { app: debug } } } }] }
    - { name: admin-always, action: Accept, from: [{ pods: { podSelector: { matchLabels: { app: admin } } } }], protocols: [{ tcp: { destinationPort: { number: 5432 } } }] }`,
  ].join("\n---\n") + "\n";
}

/** A record the datapath judged by policy (first packet of a connection), seen leaving the client's veth. */
function judged(src: string, dst: string, port: number, verdict: Verdict): FlowRecord {
  return agentRecord(src, dst, port, { verdict, packets: 1, bytes: 60, sport: "vary" });
}

describe("details of a judged flow name its tier, policy and rule (Chromium)", () => {
  let tmp: string;
  let cp: ControlPlane;
  let browser: LaunchedBrowser | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    tmp = uiTestFolder("ui-tiers", manifests());
    cp = await startUiControlPlane(tmp);
    // Records are attributed at ingest with the compiled policy: wait until the folder's
    // ClusterNetworkPolicy is in force (and nothing in the folder was refused).
    await vi.waitUntil(() => cp.policy.stats().clusterPolicies === 1 && cp.policy.stats().policies === 1, { timeout: 20_000, interval: 50 });
    expect(cp.policy.errors()).toEqual([]);
    cp.ingest("node1", [
      judged(WEB_IP, DB_IP, 5432, Verdict.VERDICT_FORWARDED),
      judged(WEB_IP, DB_IP, 6379, Verdict.VERDICT_DROPPED),
      judged(DEBUG_IP, DB_IP, 5432, Verdict.VERDICT_DROPPED),
      judged(ADMIN_IP, DB_IP, 5432, Verdict.VERDICT_FORWARDED),
    ]);
    browser = await launchChromium();
    page = await browser.context.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${cp.ui!.url}?namespace=${NS}`);
    await page.locator("[data-testid=connection-state][data-state=live]").waitFor({ timeout: 20_000 });
  });

  afterAll(() => closeUiTest({ browser, cp, tmp }));

  /** Clicks the row of the edge client → db on `port` and returns the pane's "decided" lines once it has loaded them. */
  async function decidedFor(client: string, port: number): Promise<string[]> {
    const row = page.locator(`[data-testid=edge-row][data-source="workload:${NS}/Pod/${client}"][data-destination="workload:${NS}/Pod/db"]`)
      .filter({ hasText: String(port) });
    // The row appears once the map stream has delivered the edge.
    await row.first().waitFor({ timeout: 20_000 });
    await row.first().locator("button").click();
    const details = page.locator("[data-testid=details]");
    // The pane says "loading…" until the details request answers; then it lists the deciding policies.
    await details.locator("[data-testid=decided-by]").waitFor({ timeout: 10_000 });
    await expect.poll(() => details.locator("h3").first().textContent(), { timeout: 10_000 }).toContain(`${client} (Pod) → ${NS}/db (Pod) TCP/${port}`);
    return details.locator("[data-testid=decided-by] li").allTextContents();
  }

  it("a Pass names the Admin rule that passed and the NetworkPolicy that then allowed or denied", async () => {
    expect(await decidedFor("web", 5432)).toEqual([
      `${NS}/db-from-web — ingress allowed 1 record, enforce mode; NetworkPolicy tier; after Pass by Admin ClusterNetworkPolicy guard-db rule web-to-namespace`,
    ]);
    await page.screenshot({ path: path.join(SHOTS, "details-pass-then-networkpolicy.png") });
    expect(await decidedFor("web", 6379)).toEqual([
      `${NS}/db-from-web — ingress denied 1 record, enforce mode; NetworkPolicy tier; after Pass by Admin ClusterNetworkPolicy guard-db rule web-to-namespace`,
    ]);
  });

  it("an Admin Deny and an Admin Accept name the tier, the ClusterNetworkPolicy and the rule, not the NetworkPolicy they overrode", async () => {
    expect(await decidedFor("debug", 5432)).toEqual(["ClusterNetworkPolicy guard-db — Admin tier, rule no-debug — ingress denied 1 record"]);
    await page.screenshot({ path: path.join(SHOTS, "details-admin-deny.png") });
    expect(await decidedFor("admin", 5432)).toEqual(["ClusterNetworkPolicy guard-db — Admin tier, rule admin-always — ingress allowed 1 record"]);
    expect(pageErrors).toEqual([]);
  });
});
