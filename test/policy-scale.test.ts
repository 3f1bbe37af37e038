// A cluster of 10,000 pods and 2,000 NetworkPolicies (1,000 namespaces on 50 nodes) read
// from manifests by a real control plane, compiled, and sent over gRPC to two agents'
// own connections (issue 13: "a 10k-pod / 2k-policy snapshot reaches every agent"): both
// receive the same snapshot, it compiles into the agent's kernel map entries, and the
// policy map fits the kernel map's capacity. The encoded size and the entry counts are
// printed. No kernel: the agent side stops at its map entries (the kernel tests load them).
//   npx vitest run test/policy-scale.test.ts
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/control.js";
import { MAX_POLICY_MESSAGE_BYTES } from "../config/wire.js";
import { ControlPlaneConnection } from "../agent/controlplane/connection.js";
import { compilePolicy } from "../agent/policy.js";
import { PolicySnapshot } from "../proto/gen/bulkhead/v1/policy.js";
import { LogCapture } from "./harness/log-capture.js";
import { largeCluster } from "./harness/large-cluster.js";
import { waitFor } from "./harness/wait.js";

/** native/bpf/lib/policy.h BH_POLICY_MAX_ENTRIES: the kernel policy map's capacity. */
const POLICY_MAP_CAPACITY = 262_144;

let tmp: string;
let cp: ControlPlane | undefined;
const connections: ControlPlaneConnection[] = [];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-policy-scale-"));
});

afterAll(async () => {
  for (const c of connections) c.close();
  await cp?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("a 10,000-pod / 2,000-policy cluster", () => {
  it("reaches two agents' connections as one snapshot that compiles into map entries within the kernel's capacity", async () => {
    const cluster = largeCluster({ namespaces: 1_000, podsPerNamespace: 10, nodes: 50 });
    expect([cluster.pods.length, cluster.policies.length]).toEqual([10_000, 2_000]);
    const manifests = path.join(tmp, "manifests");
    fs.mkdirSync(manifests);
    // JSON documents are YAML documents: one file, as `kubectl get -o yaml` would give many.
    fs.writeFileSync(path.join(manifests, "cluster.yaml"), cluster.documents.map((d) => JSON.stringify(d)).join("\n---\n"));

    const logs = new LogCapture();
    const address = `unix://${path.join(tmp, "cp.sock")}`;
    cp = new ControlPlane({
      source: new FolderSource({ dir: manifests }), storeCapacity: 1_000, log: logs.log, defaultMode: "enforce",
      access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
    });
    await cp.start([address]);

    const received = new Map<string, PolicySnapshot>();
    for (const node of ["node-0", "node-49"]) {
      const c = new ControlPlaneConnection({ addresses: [address], node, capabilities: ["tcx"], log: logs.log });
      c.on("policy", (p) => { if (p.identities.length > 0) received.set(node, p); });
      connections.push(c);
      c.start();
    }
    // The first snapshot with identities is the cluster's (the folder is read once at start;
    // compiling 10k pods takes seconds on a loaded 2-core machine).
    await waitFor(() => received.size, (n) => n === 2, 60_000, "both agents' connections to receive the cluster's snapshot");
    const [a, b] = [received.get("node-0")!, received.get("node-49")!];
    expect(b.version).toBe(a.version);
    expect(PolicySnapshot.toJSON(b)).toEqual(PolicySnapshot.toJSON(a));

    const bytes = PolicySnapshot.encode(a).finish().length;
    const compiled = compilePolicy(a);
    console.log(`10,000 pods / 2,000 policies: snapshot ${(bytes / 1048576).toFixed(1)} MiB encoded (the agent stream's policy limit ${MAX_POLICY_MESSAGE_BYTES / 1048576} MiB), `
      + `${a.identities.length} identities, ${a.ipIdentities.length} address identities, ${a.rules.length} rules; `
      + `agent map entries: ${compiled.identities.size} identities, ${compiled.ipIdentities.size} addresses, ${compiled.policy.size} policy (capacity ${POLICY_MAP_CAPACITY})`);
    // Every pod's address has its identity at the agent (the identity map the programs look up).
    expect(compiled.hosts.size).toBeGreaterThanOrEqual(10_000);
    expect(bytes).toBeLessThan(MAX_POLICY_MESSAGE_BYTES);
    expect(compiled.policy.size).toBeGreaterThan(0);
    expect(compiled.policy.size).toBeLessThanOrEqual(POLICY_MAP_CAPACITY);
  }, 180_000);
});
