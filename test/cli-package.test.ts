// The workstation CLI package (issue 18 item 2): `npm run package:cli` bundles the
// workstation commands into one file in an npm package with no dependencies. Installed
// offline (empty npm cache, a registry that does not exist) into an empty folder, its
// `bulkhead observe` reads flows from a real control plane process started here with
// mutual TLS and tokens (as the production overlay runs it), fed by an agent stream with a
// node certificate. The bundle holds no addon, agent, store engine or logger; the commands
// it leaves out are refused by name.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliMain } from "../config/install.js";
import { VERSION } from "../config/version.js";
import { AgentServiceClient, type ConnectResponse } from "../proto/gen/bulkhead/v1/agent.js";
import { tlsChannel } from "../tls/client.js";
import { CA_CERT, nodeCertFile, nodeKeyFile, writeCertificates } from "../tls/certs-command.js";
import { agentRecord } from "./harness/flow-records.js";
import { installCliPackage } from "./harness/cli-package.js";
import { Spawned } from "./harness/process.js";
import { waitFor } from "./harness/wait.js";

const run = promisify(execFile);
const TOKEN = "shop-team-token-0123456789";

// Pods created long before the records: the control plane leases a pod's address from its
// creationTimestamp (else from when it first saw the pod, which may be after the record).
const MANIFESTS = `
apiVersion: v1
kind: Namespace
metadata: { name: shop }
---
apiVersion: v1
kind: Node
metadata: { name: node1 }
---
apiVersion: v1
kind: Pod
metadata: { name: frontend-1, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z", uid: u-frontend-1, labels: { app: frontend } }
spec: { nodeName: node1 }
status: { podIP: 10.0.1.5, podIPs: [{ ip: 10.0.1.5 }] }
---
apiVersion: v1
kind: Pod
metadata: { name: db-0, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z", uid: u-db-0, labels: { app: db } }
spec: { nodeName: node1 }
status: { podIP: 10.0.1.9, podIPs: [{ ip: 10.0.1.9 }] }
`;

let tmp: string;
let tarball: string;
let installed: string;
/** The environment of a workstation: no bulkhead variables, no npm configuration of the user. */
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-cli-package-"));
  const pkg = await installCliPackage(tmp);
  tarball = pkg.tarball;
  installed = pkg.bin;
  env = { ...pkg.env, BULKHEAD_LAB_STATE_DIR: path.join(tmp, "no-lab") };
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function bulkhead(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(installed, args, { env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe("the workstation CLI package", () => {
  it("is one bundled file, no native code, no dependencies: the empty folder holds only it", async () => {
    const files = (await run("tar", ["tzf", tarball])).stdout.trim().split("\n").sort();
    expect(files).toEqual(["package/README.md", "package/bulkhead.mjs", "package/package.json"]);
    const pkg = JSON.parse(fs.readFileSync(path.join(path.dirname(installed), "..", "bulkhead", "package.json"), "utf8")) as Record<string, unknown>;
    expect({ name: pkg.name, version: pkg.version, dependencies: pkg.dependencies }).toEqual({ name: "bulkhead", version: VERSION, dependencies: undefined });
    expect(fs.readdirSync(path.join(path.dirname(installed), ".."))).toEqual([".bin", ".package-lock.json", "bulkhead"]);
  });

  it("bundles no addon, agent, control-plane server, store engine or logger", () => {
    const meta = JSON.parse(fs.readFileSync(path.join(path.dirname(tarball), "meta.json"), "utf8")) as { inputs: Record<string, unknown> };
    const inputs = Object.keys(meta.inputs);
    expect(inputs).toContain("cli/observe.ts"); // the check reads the right list
    const forbidden = inputs.filter((i) => /^(native\/|agent\/|controlplane\/(main|controlplane|grpc|agents|ingest|store\/(duckdb|clickhouse))|node_modules\/(@duckdb|@clickhouse|pino|@kubernetes|@grpc\/proto-loader))/.test(i));
    expect(forbidden).toEqual([]);
  });

  it("prints its version, and refuses the node and server commands saying where they run", async () => {
    expect(await bulkhead("--version")).toEqual({ code: 0, stdout: `bulkhead ${VERSION} (agent protocol 2)\n`, stderr: "" });
    for (const command of ["agent", "controlplane", "lab", "probe"]) {
      const r = await bulkhead(command, "--help");
      expect({ command, code: r.code, stdout: r.stdout }).toEqual({ command, code: 2, stdout: "" });
      expect(r.stderr).toMatch(new RegExp(`^bulkhead: "${command}" is not in the workstation CLI package: .*(image|repository)`));
    }
    const unknown = await bulkhead("frobnicate");
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^bulkhead: unknown command "frobnicate"/);
    const help = await bulkhead("help", "observe");
    expect({ code: help.code, usage: help.stdout.startsWith("usage: bulkhead observe") }).toEqual({ code: 0, usage: true });
  });

  it("observe reads flows from a control plane serving mutual TLS and tokens", async () => {
    const certs = path.join(tmp, "certs");
    await writeCertificates({ out: certs, nodes: ["node1"], hosts: [], days: 2 });
    const manifests = path.join(tmp, "manifests");
    fs.mkdirSync(manifests);
    fs.writeFileSync(path.join(manifests, "cluster.yaml"), MANIFESTS);
    const tokens = path.join(tmp, "tokens.yaml");
    fs.writeFileSync(tokens, `tokens:\n  - { name: shop-team, token: ${TOKEN}, namespaces: [shop] }\n`);
    const tokenFile = path.join(tmp, "token");
    fs.writeFileSync(tokenFile, `${TOKEN}\n`);
    // The CLI's --listen takes no port 0: a socket of this test's own avoids guessing a free port.
    const address = `unix://${path.join(tmp, "cp.sock")}`;
    const cp = new Spawned(spawn(process.execPath, [cliMain, "controlplane", "--manifests", manifests, "--listen", address,
      "--tokens", tokens, "--tls-cert", path.join(certs, "controlplane.crt"), "--tls-key", path.join(certs, "controlplane.key"),
      "--tls-client-ca", path.join(certs, CA_CERT)], { env: { PATH: process.env.PATH ?? "" } }), "control plane");
    let agents: AgentServiceClient | undefined;
    try {
      await cp.waitForLine((l) => l.includes("control plane started"), 30_000);
      const read = (f: string) => fs.readFileSync(path.join(certs, f));
      const channel = tlsChannel(address, read(CA_CERT), { cert: read(nodeCertFile("node1")), key: read(nodeKeyFile("node1")) });
      agents = new AgentServiceClient(address, channel.credentials, channel.options);
      const stream = agents.connect();
      const acks: bigint[] = [];
      stream.on("data", (m: ConnectResponse) => { if (m.kind?.$case === "ack") acks.push(m.kind.value.batchId); });
      stream.on("error", () => undefined); // ended by the test
      stream.write({ kind: { $case: "hello", value: { node: "node1", version: VERSION, protocolVersion: 1, capabilities: ["tcx"], instanceId: "cli-package" } } });
      stream.write({ kind: { $case: "flows", value: { batchId: 1n, records: [agentRecord("10.0.1.5", "10.0.1.9", 5432, { packets: 7 })] } } });
      await waitFor(() => acks.includes(1n), (v) => v, 10_000, "the control plane's ack of the agent's batch");
      stream.cancel();

      const r = await bulkhead("observe", "-n", "shop", "--server", address, "--tls-ca", path.join(certs, CA_CERT),
        "--token-file", tokenFile, "--last", "5", "-o", "json");
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      const flows = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as {
        source: { podName: string }; destination: { podName: string }; l4: { destinationPort: number }; packets: string;
      });
      expect(flows.map((f) => [f.source.podName, f.destination.podName, f.l4.destinationPort, f.packets]))
        .toEqual([["frontend-1", "db-0", 5432, "7"]]);

      // Without the CA the package's CLI cannot talk to a TLS control plane, and says so.
      const plain = await bulkhead("observe", "-n", "shop", "--server", address, "--token-file", tokenFile, "--last", "5");
      expect(plain.code).toBe(1);
      expect(plain.stderr).toContain("needs --tls-ca FILE");
    } finally {
      agents?.close();
      await cp.stop();
    }
  });
});
