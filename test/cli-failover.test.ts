// The CLI against several control-plane replicas (`--server A,B`, and the lab's default of
// every replica): it goes on to the next address when one is down, over TLS verified against
// each listed address, and refuses a list it cannot dial. Two real control planes over gRPC
// with TLS on 127.0.0.1, the CLI as a subprocess.
import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliMain } from "../config/install.js";
import { AccessControl } from "../controlplane/access/control.js";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { CA_CERT, SERVER_CERT, SERVER_KEY, writeCertificates } from "../tls/certs-command.js";
import { loadTlsMaterial } from "../tls/material.js";
import { agentRecord } from "./harness/flow-records.js";

/** A port nothing listens on: bound by the kernel's choice, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("bulkhead observe --server A,B (replicas)", () => {
  let tmp = "";
  const replicas: ControlPlane[] = [];
  const addresses: string[] = [];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bh-cli-failover-"));
    const certs = path.join(tmp, "certs");
    await writeCertificates({ out: certs, nodes: ["n1"], hosts: [], days: 1 });
    fs.mkdirSync(path.join(tmp, "manifests"));
    const tls = loadTlsMaterial({ cert: path.join(certs, SERVER_CERT), key: path.join(certs, SERVER_KEY), ca: path.join(certs, CA_CERT) }, "tls-client-ca")!;
    // Replica i holds one record to port 1000 + i, so an answer says which replica gave it.
    for (const i of [0, 1]) {
      const cp = new ControlPlane({ source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 100,
        log: pino({ level: "silent" }), access: new AccessControl({ tokens: [], allowUnauthenticated: true }), tls });
      const [port] = await cp.start(["127.0.0.1:0"]);
      cp.ingest("n1", [agentRecord("10.9.0.1", "10.9.0.2", 1000 + i, { node: "n1", endMs: Date.now() - 1000 })]);
      replicas.push(cp);
      addresses.push(`127.0.0.1:${port}`);
    }
  });

  afterAll(async () => {
    for (const cp of replicas) await cp.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const observe = (server: string) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [cliMain, "observe", "--last", "5", "-o", "json", "--server", server, "--tls-ca", path.join(tmp, "certs", CA_CERT)],
      { timeout: 30_000, env: { ...process.env, BULKHEAD_LAB_STATE_DIR: path.join(tmp, "no-lab") } }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : -1, stdout, stderr });
      });
  });
  const ports = (stdout: string) => stdout.split("\n").filter((l) => l !== "").map((l) => (JSON.parse(l) as { l4: { destinationPort: number } }).l4.destinationPort);

  it("asks the first replica that answers: past a closed port to the next, and the first when both answer", async () => {
    const dead = `127.0.0.1:${await closedPort()}`;
    const past = await observe(`${dead},${addresses[1]}`);
    expect(past.stderr).toBe("");
    expect(ports(past.stdout)).toEqual([1001]);
    const first = await observe(`${addresses[0]},${addresses[1]}`);
    expect(ports(first.stdout)).toEqual([1000]);
  });

  it("with every replica down, says it cannot reach the list; a list with a name or a unix socket is refused as a flag", async () => {
    const down = `127.0.0.1:${await closedPort()},127.0.0.1:${await closedPort()}`;
    const none = await observe(down);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain(`cannot reach the control plane at ${down}`);
    for (const [list, wrong] of [[`controlplane:4387,${addresses[0]}`, "controlplane:4387"], [`${addresses[0]},unix:///tmp/x.sock`, "unix:///tmp/x.sock"]]) {
      const bad = await observe(list!);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain(`--server: "${wrong}" in the list ${list} is not IP:PORT`);
    }
  });
});
