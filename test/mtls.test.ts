// Mutual TLS between agents and the control plane (issue 6): a real ControlPlane in this
// process serving TLS on 127.0.0.1:0 and a unix socket, real gRPC clients with real
// certificates from `bulkhead certs`. An agent is accepted only with a node certificate
// from the control plane's CA that names the node its hello claims; every refusal has its
// own status and a control-plane log line naming the cause, and the valid agent keeps
// streaming throughout. Also: `bulkhead certs` output and the TLS flags of both sides.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/index.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { parseAgentArgs } from "../agent/config.js";
import { ConfigError } from "../config/flags.js";
import { ControlPlaneSink } from "../agent/export/controlplane.js";
import { ControlPlaneConnection } from "../agent/controlplane/connection.js";
import { AgentServiceClient, type ConnectRequest, type ConnectResponse } from "../proto/gen/bulkhead/v1/agent.js";
import { FlowRecord, IpVersion, ObservationPoint, ReporterSide, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { ObserverServiceClient, type GetStatusResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { createCa, issueNodeCertificate, validityFor, type IssuedPair } from "../tls/issue.js";
import { loadTlsMaterial } from "../tls/material.js";
import { tlsChannel } from "../tls/client.js";
import { CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, nodeCertFile, nodeKeyFile, writeCertificates } from "../tls/certs-command.js";
import { LogCapture } from "./harness/log-capture.js";
import { UiServer } from "../controlplane/ui/server.js";
import http from "node:http";
import https from "node:https";
import { waitFor } from "./harness/wait.js";
import { cliMain } from "../config/install.js";

const run = promisify(execFile);

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
kind: Node
metadata: { name: node2 }
`;

let tmp: string;
let certs: string;
const read = (file: string) => fs.readFileSync(path.join(certs, file));
/** A node's certificate and key as the agent would load them. */
const nodePair = (node: string) => ({ cert: read(nodeCertFile(node)), key: read(nodeKeyFile(node)) });
const pem = (pair: IssuedPair) => ({ cert: Buffer.from(pair.certPem), key: Buffer.from(pair.keyPem) });

let otherCa: IssuedPair;
let foreignNode1: IssuedPair;
let expiredNode1: IssuedPair;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-mtls-"));
  certs = path.join(tmp, "certs");
  await writeCertificates({ out: certs, nodes: ["node1", "node2"], hosts: [], days: 30 });
  otherCa = await createCa(validityFor(30), "other CA");
  foreignNode1 = await issueNodeCertificate(otherCa, "node1", validityFor(30));
  const caPair = { certPem: read(CA_CERT).toString(), keyPem: read(CA_KEY).toString() };
  const day = 86_400_000;
  expiredNode1 = await issueNodeCertificate(caPair, "node1", { notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) });
  fs.mkdirSync(path.join(tmp, "manifests"));
  fs.writeFileSync(path.join(tmp, "manifests", "cluster.yaml"), MANIFESTS);
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});


let sequence = 0n;
function record(node: string): FlowRecord {
  const ms = Date.now();
  const ts = (t: number) => ({ seconds: BigInt(Math.floor(t / 1000)), nanos: (t % 1000) * 1_000_000 });
  return FlowRecord.fromPartial({
    startTime: ts(ms - 500), endTime: ts(ms), node,
    point: ObservationPoint.OBSERVATION_POINT_FROM_POD, reporter: ReporterSide.REPORTER_SIDE_SOURCE,
    interface: "lxc1", ifindex: 7,
    ip: { source: "10.0.1.5", destination: "10.0.2.7", version: IpVersion.IP_VERSION_IPV4 },
    l4: { protocol: 17, protocolName: "UDP", sourcePort: 40_000, destinationPort: 53 },
    packets: 1n, bytes: 80n, verdict: Verdict.VERDICT_FORWARDED, sequence: ++sequence,
  });
}

interface CallStatus { code: grpc.status; details: string }

/** One AgentService.Connect stream with the given TLS identity (none: only the CA). */
class TlsAgent {
  readonly client: AgentServiceClient;
  readonly call: grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>;
  readonly responses: ConnectResponse[] = [];
  readonly status: Promise<CallStatus>;
  final: CallStatus | undefined;

  constructor(address: string, helloNode: string, identity: { cert: Buffer; key: Buffer } | undefined, ca = read(CA_CERT)) {
    const tls = tlsChannel(address, ca, identity);
    this.client = new AgentServiceClient(address, tls.credentials, tls.options);
    this.call = this.client.connect();
    this.call.on("data", (m: ConnectResponse) => this.responses.push(m));
    this.call.on("error", () => undefined); // the status carries it
    this.status = new Promise((resolve) => this.call.on("status", (s: grpc.StatusObject) => {
      this.final = { code: s.code, details: s.details };
      resolve(this.final);
    }));
    this.call.write({ kind: { $case: "hello", value: {
      node: helloNode, version: "0.1.0-test", protocolVersion: 1, capabilities: ["tcx"], instanceId: `i-${Math.random()}`,
    } } });
  }

  acks(): bigint[] {
    return this.responses.flatMap((m) => (m.kind?.$case === "ack" ? [m.kind.value.batchId] : []));
  }

  send(batchId: bigint, records: FlowRecord[]): void {
    this.call.write({ kind: { $case: "flows", value: { batchId, records } } });
  }

  async deliver(batchId: bigint, records: FlowRecord[]): Promise<void> {
    this.send(batchId, records);
    await waitFor(() => this.acks().includes(batchId) || this.final !== undefined, (v) => v, 10_000, `ack of batch ${batchId}`);
    if (!this.acks().includes(batchId)) throw new Error(`stream ended (${JSON.stringify(this.final)}) before batch ${batchId} was acked`);
  }

  close(): void {
    this.call.cancel();
    this.client.close();
  }
}

describe("mutual TLS on AgentService.Connect", () => {
  let cp: ControlPlane;
  let logs: LogCapture;
  let tcp: string;
  let unix: string;
  const opened: TlsAgent[] = [];
  const agent = (...args: ConstructorParameters<typeof TlsAgent>) => {
    const a = new TlsAgent(...args);
    opened.push(a);
    return a;
  };
  /** node2's agent, streaming between refusals: its every batch must still be stored. */
  let good: TlsAgent;
  let goodBatch = 0n;
  const goodStillStreams = async () => {
    const before = cp.history.size;
    await good.deliver(++goodBatch, [record("node2"), record("node2")]);
    expect(cp.history.size).toBe(before + 2);
  };
  const refusalLog = (match: RegExp) => logs.find((l) => (l.msg === "agent stream refused" && match.test(String(l.err)))
    || (l.msg === "client certificate refused" && match.test(String(l.reason))));

  beforeAll(async () => {
    logs = new LogCapture();
    const tls = loadTlsMaterial({ cert: path.join(certs, SERVER_CERT), key: path.join(certs, SERVER_KEY), ca: path.join(certs, CA_CERT) }, "tls-client-ca");
    cp = new ControlPlane({ source: new FolderSource({ dir: path.join(tmp, "manifests") }), storeCapacity: 10_000,
      log: logs.log, access: new AccessControl({ tokens: [], allowUnauthenticated: true }), ...(tls ? { tls } : {}) });
    unix = `unix://${path.join(tmp, "cp.sock")}`;
    const [port] = await cp.start(["127.0.0.1:0", unix]);
    tcp = `127.0.0.1:${port}`;
    good = agent(unix, "node2", nodePair("node2"));
    await goodStillStreams();
  });

  afterAll(async () => {
    for (const a of opened) a.close();
    await cp?.stop();
  });

  it("accepts node1's agent with its certificate over TCP and over the unix socket, and stores its records", async () => {
    for (const address of [tcp, unix]) {
      const a = agent(address, "node1", nodePair("node1"));
      const before = cp.history.size;
      await a.deliver(1n, [record("node1"), record("node1"), record("node1")]);
      expect(cp.history.size).toBe(before + 3);
      expect(cp.agents.sessions.get("node1")?.connected).toBe(true);
      a.close();
    }
    const connected = logs.find((l) => l.msg === "agent connected" && l.node === "node1");
    expect(connected?.certificate).toBe("CN=node1");
  });

  it("refuses an agent without a certificate with UNAUTHENTICATED and says so in the log; the Observer API still answers it", async () => {
    const a = agent(tcp, "node1", undefined);
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("UNAUTHENTICATED");
    expect(status.details).toMatch(/^no client certificate/);
    expect(refusalLog(/^no client certificate/)).toMatchObject({ code: "UNAUTHENTICATED" });
    const tls = tlsChannel(tcp, read(CA_CERT));
    const observer = new ObserverServiceClient(tcp, tls.credentials, tls.options);
    const res = await new Promise<GetStatusResponse>((resolve, reject) => observer.getStatus({}, (err, r) => (err || !r ? reject(err) : resolve(r))));
    observer.close();
    expect(res.agentsConnected).toBeGreaterThanOrEqual(1);
    await goodStillStreams();
  });

  it("refuses a certificate from another CA with UNAUTHENTICATED, naming its subject and issuer", async () => {
    const a = agent(unix, "node1", pem(foreignNode1));
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("UNAUTHENTICATED");
    expect(status.details).toContain('client certificate "CN=node1" is issued by "CN=other CA", not by the control plane\'s client CA "CN=bulkhead CA"');
    const line = refusalLog(/issued by "CN=other CA"/);
    expect(line?.msg).toBe("client certificate refused");
    expect(cp.agents.sessions.get("node1")?.connected ?? false).toBe(false);
    await goodStillStreams();
  });

  it("refuses an expired certificate from the right CA with UNAUTHENTICATED, naming when it expired", async () => {
    const a = agent(tcp, "node1", pem(expiredNode1));
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("UNAUTHENTICATED");
    expect(status.details).toMatch(/^client certificate "CN=node1" expired at .* \(CERT_HAS_EXPIRED\)$/);
    expect(refusalLog(/CERT_HAS_EXPIRED/)?.msg).toBe("client certificate refused");
    await goodStillStreams();
  });

  it("refuses a hello that claims another node than the certificate names with PERMISSION_DENIED", async () => {
    const a = agent(unix, "node2", nodePair("node1"));
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("PERMISSION_DENIED");
    expect(status.details).toBe('hello claims node "node2", but the client certificate "CN=node1" is for node "node1"');
    expect(refusalLog(/hello claims node "node2"/)).toMatchObject({ code: "PERMISSION_DENIED", node: "node2" });
    // node2's own session was not taken over.
    expect(cp.agents.sessions.get("node2")?.connected).toBe(true);
    await goodStillStreams();
  });

  it("refuses records for another node on a certified stream with INVALID_ARGUMENT and stores none of them", async () => {
    const a = agent(tcp, "node1", nodePair("node1"));
    await a.deliver(1n, [record("node1")]);
    const before = cp.history.size;
    a.send(2n, [record("node1"), record("node2")]);
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("INVALID_ARGUMENT");
    expect(status.details).toBe('batch 2 record 1: record for node "node2" on the stream of node "node1"');
    expect(refusalLog(/record for node "node2" on the stream of node "node1"/)).toMatchObject({ code: "INVALID_ARGUMENT", node: "node1" });
    expect(cp.history.size).toBe(before);
    await goodStillStreams();
  });

  it("gives a plaintext client nothing: it cannot even complete a call", async () => {
    const plain = new ObserverServiceClient(tcp, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) => plain.getStatus({}, new grpc.Metadata(), { deadline: Date.now() + 3000 },
      (e) => resolve(e as grpc.ServiceError)));
    plain.close();
    expect(err?.code).toBeDefined();
    expect(err.code).not.toBe(grpc.status.OK);
    await goodStillStreams();
  });

  it("an agent that does not trust the control plane's certificate does not connect", async () => {
    const a = agent(tcp, "node1", nodePair("node1"), Buffer.from(otherCa.certPem));
    const status = await a.status;
    expect(grpc.status[status.code]).toBe("UNAVAILABLE");
    expect(status.details).toMatch(/certificate/i);
    expect(cp.agents.sessions.get("node1")?.connected ?? false).toBe(false);
    await goodStillStreams();
  });

  describe("the agent's ControlPlaneSink", () => {
    let sink: ControlPlaneSink | undefined;
    let connection: ControlPlaneConnection | undefined;
    afterEach(async () => {
      await sink?.close(500);
      connection?.close();
      sink = undefined;
      connection = undefined;
    });
    /** The agent's stream and its record sink; started. */
    const newSink = (address: string, identity: { cert: Buffer; key: Buffer }, log = logs.log) => {
      connection = new ControlPlaneConnection({ addresses: [address], node: "node1", capabilities: ["tcx"], log, tls: { ...identity, ca: read(CA_CERT) } });
      sink = new ControlPlaneSink(connection, { bufferBytes: 2 ** 20, batchRecords: 10, onBufferDrop: () => undefined, onRefused: () => undefined });
      connection.start();
      return { connection, sink };
    };

    it("streams over mutual TLS on the unix socket (server name checked as localhost)", async () => {
      const agent = newSink(unix, nodePair("node1"));
      await waitFor(() => agent.connection.connected, (c) => c, 10_000, "the sink to connect");
      const before = cp.history.size;
      agent.sink.push([record("node1"), record("node1")]);
      await waitFor(() => agent.sink.pending, (n) => n === 0, 10_000, "records acknowledged");
      expect(cp.history.size).toBe(before + 2);
    });

    it("logs a refusal as an error naming the cause and retries after a growing delay", async () => {
      const agentLogs = new LogCapture();
      const agent = newSink(tcp, pem(foreignNode1), agentLogs.log);
      const refusals = () => agentLogs.lines.filter((l) => l.msg === "control plane refused this agent; retrying");
      await waitFor(() => refusals().length, (n) => n >= 3, 15_000, "three refusals");
      for (const l of refusals()) {
        expect(l).toMatchObject({ level: 50, code: "UNAUTHENTICATED" });
        expect(String(l.err)).toContain('is issued by "CN=other CA"');
      }
      // Backoff: each nominal delay doubles (jitter keeps it within [delay/2, delay]).
      const delays = refusals().map((l) => Number(l.retryMs));
      expect(delays[2]).toBeGreaterThan(delays[0] ?? Infinity);
      expect(agent.connection.connected).toBe(false);
      await goodStillStreams();
    });
  });
});

describe("bulkhead certs", () => {
  const cert = (file: string) => new X509Certificate(read(file));

  it("writes a CA, a server certificate for loopback and a client certificate per node, chained to the CA", () => {
    const ca = cert(CA_CERT);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe("CN=bulkhead CA");
    const server = cert(SERVER_CERT);
    expect(server.checkIssued(ca) && server.verify(ca.publicKey)).toBe(true);
    expect(server.checkHost("localhost")).toBe("localhost");
    expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(server.checkIP("::1")).toBe("::1");
    expect(server.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // serverAuth only
    for (const node of ["node1", "node2"]) {
      const c = cert(nodeCertFile(node));
      expect(c.checkIssued(ca) && c.verify(ca.publicKey)).toBe(true);
      expect(c.subject).toBe(`CN=${node}`);
      expect(c.subjectAltName).toBe(`URI:bulkhead://node/${node}`);
      expect(c.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]); // clientAuth only
      expect(c.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
      expect(c.checkPrivateKey(createPrivateKey(read(nodeKeyFile(node))))).toBe(true);
    }
    for (const key of [CA_KEY, SERVER_KEY, nodeKeyFile("node1"), nodeKeyFile("node2")]) {
      expect((fs.statSync(path.join(certs, key)).mode & 0o777).toString(8)).toBe("600");
    }
  });

  it("keeps the CA and the certificates still good when re-run, adds a node and re-issues the server certificate for a new host", async () => {
    const dir = path.join(tmp, "rerun");
    await writeCertificates({ out: dir, nodes: ["a"], hosts: [], days: 10 });
    const fingerprint = (f: string) => new X509Certificate(fs.readFileSync(path.join(dir, f))).fingerprint256;
    const ca = fingerprint(CA_CERT), server = fingerprint(SERVER_CERT), a = fingerprint(nodeCertFile("a"));
    const report = await writeCertificates({ out: dir, nodes: ["a", "b"], hosts: ["cp.example.internal", "10.1.2.3"], days: 10 });
    expect(report.lines).toEqual([
      expect.stringMatching(/^ca\.crt: kept/),
      "controlplane.crt: re-issued (does not cover cp.example.internal, 10.1.2.3)",
      "node-a.crt: kept",
      "node-b.crt: created",
    ]);
    expect(fingerprint(CA_CERT)).toBe(ca);
    expect(fingerprint(nodeCertFile("a"))).toBe(a);
    expect(fingerprint(SERVER_CERT)).not.toBe(server);
    const s = new X509Certificate(fs.readFileSync(path.join(dir, SERVER_CERT)));
    expect(s.checkHost("cp.example.internal")).toBe("cp.example.internal");
    expect(s.checkIP("10.1.2.3")).toBe("10.1.2.3");
    expect(s.verify(new X509Certificate(fs.readFileSync(path.join(dir, CA_CERT))).publicKey)).toBe(true);
  });

  it("refuses to replace a CA whose key is missing", async () => {
    const dir = path.join(tmp, "halfca");
    await writeCertificates({ out: dir, nodes: ["a"], hosts: [], days: 10 });
    fs.rmSync(path.join(dir, CA_KEY));
    await expect(writeCertificates({ out: dir, nodes: ["a"], hosts: [], days: 10 })).rejects.toThrow(/ca\.crt exists without ca\.key/);
  });

  it("exits 2 with a message naming the bad flag and value", async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npm run build first");
    const cases: [string[], RegExp][] = [
      [["--node", "a"], /--out: required/],
      [["--out", path.join(tmp, "x")], /--node: at least one/],
      [["--out", path.join(tmp, "x"), "--node", "Bad_Name"], /--node: "Bad_Name" is not a valid node name/],
      [["--out", path.join(tmp, "x"), "--node", "a", "--host", "not a host"], /--host: "not a host" is neither/],
      [["--out", path.join(tmp, "x"), "--node", "a", "--days", "0"], /--days: "0" is not a whole number/],
      [["--out", path.join(tmp, "x"), "--node", "a", "--bogus"], /Unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const err = await run(process.execPath, [cliMain, "certs", ...args]).then(() => undefined, (e: { code: number; stderr: string }) => e);
      expect(err?.code, args.join(" ")).toBe(2);
      expect(err?.stderr).toMatch(message);
    }
    expect(fs.existsSync(path.join(tmp, "x"))).toBe(false);
    const ok = await run(process.execPath, [cliMain, "certs", "--out", path.join(tmp, "cli"), "--node", "n1"]);
    expect(ok.stdout).toContain(path.join(tmp, "cli", "node-n1.crt: created"));
  });
});

describe("TLS flags", () => {
  const f = (name: string) => path.join(certs, name);
  const cpArgs = (...extra: string[]) => parseControlPlaneArgs(["--manifests", tmp, "--allow-unauthenticated", ...extra]);
  const agentArgs = (...extra: string[]) => parseAgentArgs(["--node", "node1", "--controlplane", "127.0.0.1:4387", ...extra]);
  const configError = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      if (err instanceof ConfigError) return err.message;
      throw err;
    }
    throw new Error("expected a ConfigError");
  };

  it("agent: /metrics on loopback unless told (in the host network every interface would expose it)", () => {
    expect(agentArgs().metricsAddr).toEqual({ host: "127.0.0.1", port: 9387 });
    expect(agentArgs("--metrics-addr", "192.0.2.21:9387").metricsAddr).toEqual({ host: "192.0.2.21", port: 9387 });
    expect(agentArgs("--metrics-addr", "off").metricsAddr).toBeUndefined();
  });

  it("control plane: refuses --tokens that would cross the network in clear, unless told to, naming the address", () => {
    const tokens = path.join(tmp, "tokens.yaml");
    fs.writeFileSync(tokens, "tokens: []\n");
    const tlsFlags = ["--tls-cert", f(SERVER_CERT), "--tls-key", f(SERVER_KEY), "--tls-client-ca", f(CA_CERT)];
    expect(configError(() => cpArgs("--tokens", tokens, "--listen", "0.0.0.0:4387", "--listen", "unix:///tmp/x.sock")))
      .toMatch(/^--tokens: bearer tokens would cross the network in clear on --listen 0\.0\.0\.0:4387; serve TLS there/);
    expect(configError(() => cpArgs("--tokens", tokens, ...tlsFlags, "--listen", "0.0.0.0:4387", "--ui-listen", "[::]:4388")))
      .toMatch(/in clear on --ui-listen \[::\]:4388;/);
    // Loopback and unix sockets, TLS, or the explicit flag: accepted.
    expect(cpArgs("--tokens", tokens, "--listen", "127.0.0.1:4387", "--listen", "unix:///tmp/x.sock", "--ui-listen", "[::1]:4388").tokens).toBe(tokens);
    expect(cpArgs("--tokens", tokens, ...tlsFlags, "--listen", "0.0.0.0:4387").tokens).toBe(tokens);
    expect(cpArgs("--tokens", tokens, "--listen", "0.0.0.0:4387", "--allow-plaintext-tokens").tokens).toBe(tokens);
  });

  it("control plane: all three or none, each file readable and right", () => {
    expect(cpArgs().tls).toBeUndefined();
    expect(cpArgs("--tls-cert", f(SERVER_CERT), "--tls-key", f(SERVER_KEY), "--tls-client-ca", f(CA_CERT)).tls?.certFile).toBe(f(SERVER_CERT));
    expect(configError(() => cpArgs("--tls-cert", f(SERVER_CERT))))
      .toBe("--tls-key, --tls-client-ca: required with --tls-cert (TLS needs a certificate, its key and a CA, or none of them)");
    expect(configError(() => cpArgs("--tls-cert", f("nope.crt"), "--tls-key", f(SERVER_KEY), "--tls-client-ca", f(CA_CERT))))
      .toBe(`--tls-cert: cannot read "${f("nope.crt")}": ENOENT`);
    expect(configError(() => cpArgs("--tls-cert", f(SERVER_CERT), "--tls-key", f(nodeKeyFile("node1")), "--tls-client-ca", f(CA_CERT))))
      .toBe(`--tls-key: "${f(nodeKeyFile("node1"))}" is not the key of the certificate "${f(SERVER_CERT)}"`);
    expect(configError(() => cpArgs("--tls-cert", f(SERVER_CERT), "--tls-key", f(SERVER_KEY), "--tls-client-ca", f(SERVER_CERT))))
      .toBe(`--tls-client-ca: "${f(SERVER_CERT)}" is not a CA certificate (no basicConstraints CA:TRUE)`);
    expect(configError(() => cpArgs("--tls-cert", f(SERVER_KEY), "--tls-key", f(SERVER_KEY), "--tls-client-ca", f(CA_CERT))))
      .toMatch(new RegExp(`^--tls-cert: "${f(SERVER_KEY)}" is not a PEM certificate`));
  });

  it("control plane: --ui-tls-cert and --ui-tls-key together, with --ui-listen, and a key that fits", () => {
    const ui = ["--ui-listen", "127.0.0.1:4388"];
    expect(cpArgs(...ui).uiTls).toBeUndefined();
    expect(cpArgs(...ui, "--ui-tls-cert", f(SERVER_CERT), "--ui-tls-key", f(SERVER_KEY)).uiTls?.certFile).toBe(f(SERVER_CERT));
    expect(configError(() => cpArgs(...ui, "--ui-tls-cert", f(SERVER_CERT))))
      .toBe("--ui-tls-key: required with --ui-tls-cert (HTTPS needs a certificate and its key)");
    expect(configError(() => cpArgs("--ui-tls-cert", f(SERVER_CERT), "--ui-tls-key", f(SERVER_KEY))))
      .toBe("--ui-tls-cert: only with --ui-listen (there is no UI to serve over HTTPS)");
    expect(configError(() => cpArgs(...ui, "--ui-tls-cert", f(SERVER_CERT), "--ui-tls-key", f(nodeKeyFile("node1")))))
      .toBe(`--ui-tls-key: "${f(nodeKeyFile("node1"))}" is not the key of the certificate "${f(SERVER_CERT)}"`);
  });

  it("agent: all three or none, only with --controlplane, and the certificate must be the node's", () => {
    expect(agentArgs().tls).toBeUndefined();
    expect(agentArgs("--tls-cert", f(nodeCertFile("node1")), "--tls-key", f(nodeKeyFile("node1")), "--tls-ca", f(CA_CERT)).tls).toBeDefined();
    expect(configError(() => agentArgs("--tls-ca", f(CA_CERT))))
      .toBe("--tls-cert, --tls-key: required with --tls-ca (TLS needs a certificate, its key and a CA, or none of them)");
    expect(configError(() => parseAgentArgs(["--node", "node1", "--tls-cert", f(nodeCertFile("node1")), "--tls-key", f(nodeKeyFile("node1")), "--tls-ca", f(CA_CERT)])))
      .toBe("--tls-cert, --tls-key, --tls-ca: only used with --controlplane ADDR");
    expect(configError(() => agentArgs("--tls-cert", f(nodeCertFile("node2")), "--tls-key", f(nodeKeyFile("node2")), "--tls-ca", f(CA_CERT))))
      .toBe(`--tls-cert: "${f(nodeCertFile("node2"))}" is the certificate of node node2, not of node "node1" (--node)`);
  });
});

describe("the web UI over HTTPS", () => {
  it("serves its page, API and health over TLS with the control plane's certificate, and nothing in clear", async () => {
    const log = new LogCapture().log;
    const cp = new ControlPlane({ source: new FolderSource({ dir: tmp }), storeCapacity: 1000, log,
      access: new AccessControl({ tokens: [], allowUnauthenticated: true }) });
    const ui = new UiServer(cp, { log, tls: { cert: read(SERVER_CERT), key: read(SERVER_KEY) } });
    const url = await ui.listen("127.0.0.1", 0);
    try {
      expect(url).toMatch(/^https:\/\/127\.0\.0\.1:[0-9]+\/$/);
      const get = (path: string) => new Promise<{ status: number; body: string }>((resolve, reject) => {
        https.get(new URL(path, url), { ca: read(CA_CERT) }, (res) => {
          let body = "";
          res.on("data", (d: Buffer) => { body += d.toString(); });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        }).on("error", reject);
      });
      expect(await get("/healthz")).toEqual({ status: 200, body: "ok\n" });
      expect((await get("/api/v1/namespaces")).status).toBe(200);
      const clear = await new Promise<string>((resolve) => {
        http.get(url.replace("https:", "http:") + "healthz", (res) => resolve(`answered ${res.statusCode}`)).on("error", (err) => resolve(err.message));
      });
      expect(clear).not.toMatch(/^answered 200/);
    } finally {
      await ui.close();
    }
  });
});
