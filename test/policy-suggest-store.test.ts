// SuggestPolicies over both parts of the recorded flows: the durable store's older records
// (learned as records) and the hot window's (learned from the history's columns,
// PolicySuggester.addStored). A ControlPlane in this process over a DuckDB store, no UI, no
// kernel: web → db only in the store (3 h ago), web → cache only in the hot window (after the
// control plane started); the suggestion admits both and counts every record read.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AccessControl } from "../controlplane/access/control.js";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { DuckDBFlowStore } from "../controlplane/store/duckdb.js";
import type { FlowRecord } from "../proto/gen/bulkhead/v1/flow.js";
import { timestampOfMs } from "../config/time.js";
import { flow, podEnd } from "./harness/flow-records.js";

const HOUR = 3_600_000;
const PODS = { web: "10.81.0.2", db: "10.81.0.3", cache: "10.81.0.4" } as const;
// Bare pods, named as the control plane names them (workload Pod/<name>), so both parts learn the same workloads.
const end = (app: keyof typeof PODS) => ({ ...podEnd("shop", `${app}-1`, PODS[app], { app }), workloadKind: "", workloadName: "" });
const MANIFESTS = [
  "apiVersion: v1\nkind: Node\nmetadata: { name: n1 }\nstatus: { addresses: [{ type: InternalIP, address: 192.168.79.1 }] }",
  "apiVersion: v1\nkind: Namespace\nmetadata: { name: shop, annotations: { bulkhead.io/mode: enforce } }",
  ...Object.entries(PODS).map(([app, ip]) => `apiVersion: v1\nkind: Pod\nmetadata: { name: ${app}-1, namespace: shop, uid: uid-${app}-1, labels: { app: ${app} }, creationTimestamp: \"2024-01-01T00:00:00Z\" }\nspec: { nodeName: n1 }\nstatus: { phase: Running, podIP: ${ip} }`),
].join("\n---\n") + "\n";

describe("SuggestPolicies learns from the store and from the hot window's columns", () => {
  let tmp: string;
  let store: DuckDBFlowStore | undefined;
  let cp: ControlPlane | undefined;
  // A clock the test moves: the hot window starts 1 s after the control plane does.
  const started = 1_800_000_000_000;
  let clock = started;
  // web → db 3 h before the start, only in the store; web → cache after it, only in the hot window (each seen leaving web and reaching the server).
  const stored: FlowRecord[] = [1, 2, 3].flatMap((i) => (["from", "to"] as const).map((point) => flow(end("web"), end("db"), { point, port: 5432, sport: 41_000 + i, endMs: started - 3 * HOUR + i * 1000 })));
  const hot: FlowRecord[] = [1, 2].flatMap((i) => (["from", "to"] as const).map((point) => flow(end("web"), end("cache"), { point, port: 6379, sport: 42_000 + i, endMs: started + 5000 + i * 1000 })));

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-suggest-store-"));
    fs.mkdirSync(path.join(tmp, "manifests"));
    fs.writeFileSync(path.join(tmp, "manifests", "cluster.yaml"), MANIFESTS);
    fs.mkdirSync(path.join(tmp, "store"));
    store = await DuckDBFlowStore.open(path.join(tmp, "store"), { commitDelayMs: 1 });
    expect(await store.append([{ node: "n1", instanceId: "test-agent", batchId: 1n, records: stored }])).toEqual([true]);
    cp = new ControlPlane({
      source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 1000, store, now: () => clock,
      log: pino({ level: "silent" }), access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
    });
    await cp.start([`unix://${path.join(tmp, "cp.sock")}`]);
    clock = started + 10_000;
    cp.ingest("n1", hot.map((r) => ({ ...r })));
  });

  afterAll(async () => {
    try {
      await cp?.stop();
      await store?.close();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it("rules for the store's edge and the hot window's edge, and every record of both counted", async () => {
    expect(cp!.hotWindowStart).toEqual(timestampOfMs(started + 1000));
    const res = await cp!.suggestPolicies({ kind: "cluster", subject: "" }, { namespace: "shop", since: undefined, until: undefined, minPrefixV4: 0, minPrefixV6: 0 });
    expect(res.records).toBe(BigInt(stored.length + hot.length));
    const policies = new Map(res.policies.map((text) => {
      const p = JSON.parse(text) as { metadata: { name: string }; spec: {
        ingress: { from?: { podSelector?: { matchLabels?: Record<string, string> } }[]; ports?: unknown[] }[];
        egress: { to?: { podSelector?: { matchLabels?: Record<string, string> } }[]; ports?: unknown[] }[];
      } };
      return [p.metadata.name, p];
    }));
    expect([...policies.keys()].sort()).toEqual(["bulkhead-cache-1", "bulkhead-db-1", "bulkhead-default-deny", "bulkhead-web-1"]);
    const ingressOf = (name: string) => policies.get(name)?.spec.ingress.map((r) => ({ from: r.from?.[0]?.podSelector?.matchLabels, ports: r.ports }));
    expect(ingressOf("bulkhead-db-1")).toEqual([{ from: { app: "web" }, ports: [{ protocol: "TCP", port: 5432 }] }]);
    expect(ingressOf("bulkhead-cache-1")).toEqual([{ from: { app: "web" }, ports: [{ protocol: "TCP", port: 6379 }] }]);
    const egress = policies.get("bulkhead-web-1")?.spec.egress.map((r) => ({ to: r.to?.[0]?.podSelector?.matchLabels, ports: r.ports }));
    expect(egress?.slice(0, 2)).toEqual([{ to: { app: "cache" }, ports: [{ protocol: "TCP", port: 6379 }] }, { to: { app: "db" }, ports: [{ protocol: "TCP", port: 5432 }] }]);
  });
});
