// Node certificates through the Kubernetes CSR API (issue 18): an agent on a node that has
// no certificate (one an autoscaler added) creates a CertificateSigningRequest for
// bulkhead.io/agent; the control plane's signer approves it and issues a certificate, with
// which the agent then streams to the control plane over mutual TLS. Requests the signer
// cannot vouch for are denied with a reason the agent reports. Both sides run against the
// fake API server with the RBAC rules of deploy/kustomize (the fake authorizes as RBAC does).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Buffer } from "node:buffer";
import { X509Certificate } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import { CertificatesV1Api, KubeConfig } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeKubeApiServer, type FakeUser, type PolicyRule } from "./harness/kube-apiserver.js";
import { LogCapture } from "./harness/log-capture.js";
import { waitFor } from "./harness/wait.js";
import { NodeCertificateSigner, NODE_NAME_EXTRA } from "../controlplane/certificates/signer.js";
import { parseCertificateSigningRequest } from "../kubernetes/certificate-signing-request.js";
import { certificateProblem, requestNodeCertificate } from "../agent/node-certificate.js";
import { parseAgentArgs } from "../agent/config.js";
import { ControlPlane } from "../controlplane/controlplane.js";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { AccessControl } from "../controlplane/access/index.js";
import { createCa, issueServerCertificate, validityFor, type IssuedPair } from "../tls/issue.js";
import { createNodeRequest, NODE_SIGNER_NAME, readNodeRequest } from "../tls/node-request.js";
import { tlsChannel } from "../tls/client.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { cliMain } from "../config/install.js";
import { execFile, execFileSync } from "node:child_process";
import { promisify } from "node:util";
import { AgentServiceClient, type ConnectResponse } from "../proto/gen/bulkhead/v1/agent.js";

const repoRoot = path.resolve(import.meta.dirname, "..");
const run = promisify(execFile);
const AGENT_USER = "system:serviceaccount:bulkhead:bulkhead-agent";
const CONTROLPLANE_USER = "system:serviceaccount:bulkhead:bulkhead-controlplane";

/** The rules of every ClusterRole bound to `account` in the given manifests. */
function rulesOf(account: string, files: string[]): PolicyRule[] {
  const objects = files.flatMap((f) => parseAllDocuments(fs.readFileSync(path.join(repoRoot, f), "utf8")).map((d) => d.toJS() as {
    kind: string; metadata: { name: string }; rules?: PolicyRule[]; roleRef?: { name: string }; subjects?: { name: string; namespace: string }[];
  }));
  const [, , ns, name] = account.split(":");
  const roles = objects.filter((o) => o.kind === "ClusterRoleBinding" && o.subjects?.some((s) => s.name === name && s.namespace === ns))
    .map((b) => b.roleRef?.name);
  return objects.filter((o) => o.kind === "ClusterRole" && roles.includes(o.metadata.name)).flatMap((r) => r.rules ?? []);
}

/** The kubernetes-models module of a kind (a path computed at run time, as test/deploy.test.ts does). */
const modelPath = (apiVersion: string, kind: string): string => `kubernetes-models/${apiVersion}/${kind}`;

const RBAC_FILES = ["deploy/kustomize/base/rbac.yaml", "deploy/kustomize/overlays/node-certificates/rbac-node-certificates.yaml"];

let api: FakeKubeApiServer;
let tmp: string;
let ca: IssuedPair;
let signer: NodeCertificateSigner;
let signerLogs: LogCapture;

/** A kubeconfig for the agent's service account, its token bound to a pod on `node`. */
function agentOn(node: string | undefined, overrides: Partial<FakeUser> = {}): KubeConfig {
  const { kubeconfigPath } = api.addUser({
    username: AGENT_USER, uid: "agent-sa-uid", groups: ["system:serviceaccounts", "system:serviceaccounts:bulkhead", "system:authenticated"],
    extra: node === undefined ? {} : { [NODE_NAME_EXTRA]: [node], "authentication.kubernetes.io/pod-name": [`bulkhead-agent-${node}`] },
    rules: rulesOf(AGENT_USER, RBAC_FILES), ...overrides,
  });
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc;
}

function files(node: string): { certFile: string; keyFile: string } {
  return { certFile: path.join(tmp, node, "node.crt"), keyFile: path.join(tmp, node, "node.key") };
}

async function request(kubeConfig: KubeConfig, node: string): Promise<void> {
  await requestNodeCertificate({ kubeConfig, node, ...files(node), timeoutMs: 20_000, log: new LogCapture().log });
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bulkhead-node-certs-"));
  api = await FakeKubeApiServer.start();
  for (const node of ["node-old", "node-new"]) api.create({ apiVersion: "v1", kind: "Node", metadata: { name: node } });
  ca = await createCa(validityFor(3650));
  const { kubeconfigPath } = api.addUser({ username: CONTROLPLANE_USER, groups: ["system:serviceaccounts", "system:authenticated"],
    rules: rulesOf(CONTROLPLANE_USER, RBAC_FILES) });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  signerLogs = new LogCapture();
  signer = new NodeCertificateSigner({ kubeConfig, ca, agentUser: AGENT_USER, validityDays: 30, log: signerLogs.log });
  signer.start();
});

afterAll(async () => {
  await signer?.stop();
  await api?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe("a node added later gets its certificate through the CSR API", () => {
  it("the agent's request is approved and signed; the files it writes serve the agent's TLS flags", async () => {
    const { certFile, keyFile } = files("node-new");
    expect(certificateProblem(certFile, keyFile, "node-new", 3_600_000)).toBe("no certificate yet");
    await request(agentOn("node-new"), "node-new");
    expect(certificateProblem(certFile, keyFile, "node-new", 3_600_000)).toBeUndefined();
    const cert = new X509Certificate(fs.readFileSync(certFile));
    expect(cert.subject).toBe("CN=node-new");
    expect(cert.subjectAltName).toBe("URI:bulkhead://node/node-new");
    expect(cert.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    // As the API server keeps it: requested by the agent, approved by the signer, certificate in status.
    const [csr] = api.list("certificatesigningrequests").filter((o) => (o.spec as { username: string }).username === AGENT_USER
      && Buffer.from(String((o.status as { certificate?: string }).certificate ?? ""), "base64").toString() === fs.readFileSync(certFile, "utf8"));
    expect((csr?.spec as { signerName: string }).signerName).toBe(NODE_SIGNER_NAME);
    expect((csr?.status as { conditions: { type: string; reason: string }[] }).conditions.map((c) => `${c.type}/${c.reason}`)).toEqual(["Approved/NodeVerified"]);
    const caFile = path.join(tmp, "ca.crt");
    fs.writeFileSync(caFile, ca.certPem);
    const config = parseAgentArgs(["--node", "node-new", "--controlplane", "127.0.0.1:4387", "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile]);
    expect(config.tls?.certFile).toBe(certFile);
  });

  it("the node's next pod (a new key) gets a new certificate; the first stays valid until it expires (no revocation)", async () => {
    const { certFile, keyFile } = files("node-new");
    const again = { certFile: `${certFile}.2`, keyFile: `${keyFile}.2` };
    await requestNodeCertificate({ kubeConfig: agentOn("node-new"), node: "node-new", ...again, timeoutMs: 20_000, log: new LogCapture().log });
    const [first, second] = [certFile, again.certFile].map((f) => new X509Certificate(fs.readFileSync(f)));
    expect(second?.subjectAltName).toBe("URI:bulkhead://node/node-new");
    expect(second?.publicKey.export({ format: "der", type: "spki" }).equals(first!.publicKey.export({ format: "der", type: "spki" }))).toBe(false);
    expect(certificateProblem(certFile, keyFile, "node-new", 0)).toBeUndefined();
    fs.rmSync(again.certFile);
    fs.rmSync(again.keyFile);
  });

  it("with that certificate the agent streams to the control plane over mutual TLS", async () => {
    const manifests = path.join(tmp, "manifests");
    fs.mkdirSync(manifests, { recursive: true });
    fs.writeFileSync(path.join(manifests, "nodes.yaml"), "apiVersion: v1\nkind: Node\nmetadata: { name: node-new }\n");
    const server = await issueServerCertificate(ca, [], validityFor(30));
    const cp = new ControlPlane({ source: new FolderSource({ dir: manifests }), storeCapacity: 1000, log: new LogCapture().log,
      access: new AccessControl({ tokens: [], allowUnauthenticated: true }),
      tls: { cert: Buffer.from(server.certPem), key: Buffer.from(server.keyPem), ca: Buffer.from(ca.certPem),
        caCertificate: new X509Certificate(ca.certPem), certFile: "controlplane.crt", caFile: "ca.crt" } });
    const [port] = await cp.start(["127.0.0.1:0"]);
    const address = `127.0.0.1:${port}`;
    const { certFile, keyFile } = files("node-new");
    const channel = tlsChannel(address, Buffer.from(ca.certPem), { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
    const client = new AgentServiceClient(address, channel.credentials, channel.options);
    const call = client.connect();
    const responses: ConnectResponse[] = [];
    call.on("data", (m: ConnectResponse) => responses.push(m));
    let ended: grpc.StatusObject | undefined;
    call.on("status", (s: grpc.StatusObject) => { ended = s; });
    call.on("error", () => undefined);
    try {
      call.write({ kind: { $case: "hello", value: { node: "node-new", version: "test", protocolVersion: 2, capabilities: [], instanceId: "i-1" } } });
      await waitFor(() => cp.agents.sessions.get("node-new")?.connected === true || ended !== undefined, (v) => v, 10_000,
        "the control plane to accept node-new's agent stream");
      expect(ended).toBeUndefined();
      expect(cp.agents.sessions.get("node-new")?.connected).toBe(true);
    } finally {
      call.cancel();
      client.close();
      await cp.stop();
    }
  });
});

describe("requests the signer cannot vouch for are denied, with a reason the agent reports", () => {
  it("a node that does not exist", async () => {
    await expect(request(agentOn("node-ghost"), "node-ghost")).rejects.toThrow(
      /^certificate signing request bulkhead-agent-node-ghost-\w+ was denied \(UnknownNode: no node "node-ghost" exists\)$/);
    expect(certificateProblem(files("node-ghost").certFile, files("node-ghost").keyFile, "node-ghost", 0)).toBe("no certificate yet");
  });

  it("a node other than the one the requester's pod runs on", async () => {
    await expect(request(agentOn("node-old"), "node-new")).rejects.toThrow(
      /was denied \(NodeMismatch: the request names node "node-new" but comes from a pod on node "node-old"\)$/);
  });

  it("a token bound to no node (Kubernetes before 1.30, or a token not bound to a pod)", async () => {
    await expect(request(agentOn(undefined), "node-new")).rejects.toThrow(/was denied \(NoNodeBinding: the requester's token names no node/);
  });

  it("a requester that is not the agents' service account", async () => {
    const kc = agentOn("node-new", { username: "system:serviceaccount:default:intruder" });
    await expect(request(kc, "node-new")).rejects.toThrow(
      /was denied \(NotTheAgent: requested by "system:serviceaccount:default:intruder", not by the agents' service account "system:serviceaccount:bulkhead:bulkhead-agent"\)$/);
  });

  it("server auth among the usages, or a request whose names are not one node's", async () => {
    const kc = agentOn("node-new");
    const certificates = kc.makeApiClient(CertificatesV1Api);
    const { requestPem } = await createNodeRequest("node-new");
    const denial = async (usages: string[], pem: string): Promise<string> => {
      const created = await certificates.createCertificateSigningRequest({ body: { apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
        metadata: { generateName: "test-" }, spec: { signerName: NODE_SIGNER_NAME, request: Buffer.from(pem).toString("base64"), usages } } });
      const name = created.metadata?.name ?? "";
      const denied = await waitFor(() => certificates.readCertificateSigningRequest({ name }),
        (csr) => (csr.status?.conditions ?? []).length > 0, 10_000, `the signer's verdict on ${name}`);
      return (denied.status?.conditions ?? []).map((c) => `${c.type}/${c.reason}: ${c.message}`).join("; ");
    };
    expect(await denial(["digital signature", "client auth", "server auth"], requestPem)).toBe(
      "Denied/UsagesNotAllowed: usages [digital signature, client auth, server auth] are not exactly [digital signature, client auth]");
    const serverRequest = fs.readFileSync(path.join(repoRoot, "test/fixtures/node-certificates/dns-san.csr"), "utf8");
    expect(await denial(["digital signature", "client auth"], serverRequest)).toMatch(
      /^Denied\/BadRequest: the request's subject alternative names \[dns:node-new\] are not exactly url:bulkhead:\/\/node\/node-new$/);
  });

  it("the agent's account may not approve or sign its own request (RBAC)", async () => {
    const kc = agentOn("node-new");
    const certificates = kc.makeApiClient(CertificatesV1Api);
    const { requestPem } = await createNodeRequest("node-new");
    const created = await certificates.createCertificateSigningRequest({ body: { apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
      metadata: { name: "self-approved" }, spec: { signerName: NODE_SIGNER_NAME, request: Buffer.from(requestPem).toString("base64"), usages: ["client auth"] } } });
    const approved = { ...created, status: { conditions: [{ type: "Approved", status: "True", reason: "Self", message: "", lastUpdateTime: new Date() }] } };
    await expect(certificates.replaceCertificateSigningRequestApproval({ name: "self-approved", body: approved })).rejects.toMatchObject({ code: 403 });
    await expect(certificates.replaceCertificateSigningRequestStatus({ name: "self-approved", body: { ...created, status: { certificate: "x" } } }))
      .rejects.toMatchObject({ code: 403 });
  });

  it("the signer counted each denial and logged it with the requester and reason", () => {
    expect(signer.counts.issued).toBe(2);
    // Six above, and the self-approved request (its usages lack digital signature).
    expect(signer.counts.denied).toBe(7);
    expect(signerLogs.find((l) => l.msg === "node certificate request denied" && l.reason === "NotTheAgent")?.requester)
      .toBe("system:serviceaccount:default:intruder");
  });
});

describe("what the signer reads from a request (tls/node-request.ts)", () => {
  /** A CSR made by openssl, as another tool would make it. */
  const opensslRequest = (key: string[], subject: string, san: string): string => execFileSync("openssl",
    ["req", "-new", ...key, "-nodes", "-keyout", "/dev/null", "-subj", subject, "-addext", `subjectAltName=${san}`], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const P256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

  it("takes a node's request from another tool, naming the node", async () => {
    expect(await readNodeRequest(opensslRequest(P256, "/CN=node-new", "URI:bulkhead://node/node-new"))).toMatchObject({ node: "node-new" });
  });

  it("refuses another key type, a subject with more than the CN, two nodes, and a request whose signature does not verify", async () => {
    expect(await readNodeRequest(opensslRequest(["-newkey", "rsa:2048"], "/CN=node-new", "URI:bulkhead://node/node-new")))
      .toEqual({ error: "the request's key is RSASSA-PKCS1-v1_5, not ECDSA P-256" });
    expect(await readNodeRequest(opensslRequest(P256, "/O=system:nodes/CN=node-new", "URI:bulkhead://node/node-new")))
      .toEqual({ error: 'the request\'s subject "O=system:nodes, CN=node-new" is not CN=<node> alone' });
    expect(await readNodeRequest(opensslRequest(P256, "/CN=node-new", "URI:bulkhead://node/node-new,URI:bulkhead://node/node-old")))
      .toEqual({ error: "the request's subject alternative names [url:bulkhead://node/node-new, url:bulkhead://node/node-old] are not exactly url:bulkhead://node/node-new" });
    // The same request with another node's name put in: the signature no longer covers it.
    const { requestPem } = await createNodeRequest("node-aaa");
    const der = Buffer.from(requestPem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
    const forged = Buffer.from(der.toString("latin1").replaceAll("node-aaa", "node-bbb"), "latin1").toString("base64");
    expect(await readNodeRequest(`-----BEGIN CERTIFICATE REQUEST-----\n${forged}\n-----END CERTIFICATE REQUEST-----\n`))
      .toEqual({ error: "the request's signature does not verify with its own key" });
  });
});

describe("CSRs are parsed, not cast (kubernetes/certificate-signing-request.ts)", () => {
  it("a malformed CSR is an error naming it and the field; the signer logs and skips one and goes on signing", async () => {
    const bad = { apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest", metadata: { name: "malformed", resourceVersion: "5" },
      spec: { signerName: NODE_SIGNER_NAME, request: "eA==", usages: "client auth" } };
    expect(() => parseCertificateSigningRequest(bad)).toThrow('CertificateSigningRequest malformed: spec.usages: expected a list, got "client auth"');
    // Stored as given (the fake keeps what its own create is handed), so the signer's watch gets it.
    api.create(bad);
    await waitFor(() => signerLogs.find((l) => l.msg === "certificate signing request ignored: not one the API server would send"),
      (line) => line !== undefined, 10_000, "the signer to log the malformed CSR");
    await request(agentOn("node-old"), "node-old");
    expect(certificateProblem(files("node-old").certFile, files("node-old").keyFile, "node-old", 0)).toBeUndefined();
  });
});

describe("when the signer cannot answer, and when a person approved first", () => {
  it("the agent gives up after its timeout naming the pending CSR; the signer retries once the API answers again, and issues", async () => {
    api.fail("nodes", 500);
    let pending = "";
    try {
      const err = await requestNodeCertificate({ kubeConfig: agentOn("node-new"), node: "node-new", ...files("node-late"), timeoutMs: 2000, log: new LogCapture().log })
        .then(() => undefined, (e: Error) => e);
      expect(err?.message).toMatch(/^no certificate for node node-new after 2 s: certificate signing request (bulkhead-agent-node-new-\w+) is still pending \(is the control plane running with --csr-signer-cert\/--csr-signer-key\? kubectl describe csr \1\)$/);
      pending = /request (\S+) is still pending/.exec(err?.message ?? "")?.[1] ?? "";
      expect(signerLogs.find((l) => l.msg === "certificate signing request not settled; will retry" && l.csr === pending)?.err).toMatch(/500/);
    } finally {
      api.heal("nodes");
    }
    const issued = await waitFor(() => api.list("certificatesigningrequests").find((o) => (o.metadata as { name: string }).name === pending),
      (csr) => typeof (csr?.status as { certificate?: string } | undefined)?.certificate === "string", 40_000, `the signer to issue ${pending} after the API healed`);
    expect((issued?.status as { conditions: { type: string }[] }).conditions.map((c) => c.type)).toEqual(["Approved"]);
    expect(certificateProblem(files("node-late").certFile, files("node-late").keyFile, "node-new", 0)).toBe("no certificate yet");
  });

  it("a request someone approved by hand is still checked: one for a node that does not exist is marked Failed, not signed", async () => {
    const certificates = agentOn("node-ghost").makeApiClient(CertificatesV1Api);
    const { requestPem } = await createNodeRequest("node-ghost");
    const admin = new KubeConfig();
    admin.loadFromFile(api.kubeconfigPath);
    const adminApi = admin.makeApiClient(CertificatesV1Api);
    // Created and approved while the signer cannot look nodes up, so the person is first.
    api.fail("nodes", 500);
    try {
      const created = await certificates.createCertificateSigningRequest({ body: { apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
        metadata: { name: "hand-approved" }, spec: { signerName: NODE_SIGNER_NAME, request: Buffer.from(requestPem).toString("base64"), usages: ["digital signature", "client auth"] } } });
      await adminApi.replaceCertificateSigningRequestApproval({ name: "hand-approved", body: { ...created, status: { conditions: [
        { type: "Approved", status: "True", reason: "KubectlApprove", message: "approved by kubectl", lastUpdateTime: new Date() }] } } });
    } finally {
      api.heal("nodes");
    }
    const settled = await waitFor(() => adminApi.readCertificateSigningRequest({ name: "hand-approved" }),
      (csr) => (csr.status?.conditions ?? []).some((c) => c.type === "Failed"), 40_000, "the signer to mark hand-approved Failed");
    expect(settled.status?.certificate).toBeUndefined();
    expect((settled.status?.conditions ?? []).map((c) => `${c.type}/${c.reason}`)).toEqual(["Approved/KubectlApprove", "Failed/UnknownNode"]);
  });
});

describe("the flags of both sides", () => {
  it("bulkhead agent --tls-bootstrap exits 1 naming the denied request and its reason, and writes no files", async () => {
    if (!fs.existsSync(cliMain)) throw new Error("dist/ is missing: run npx tsc -p . first");
    const { kubeconfigPath } = api.addUser({ username: AGENT_USER, extra: { [NODE_NAME_EXTRA]: ["node-gone"] }, rules: rulesOf(AGENT_USER, RBAC_FILES) });
    const { certFile, keyFile } = files("node-gone");
    const caFile = path.join(tmp, "ca.crt");
    fs.writeFileSync(caFile, ca.certPem);
    const err = await run(process.execPath, [cliMain, "agent", "--node", "node-gone", "--controlplane", "127.0.0.1:1", "--metrics-addr", "off",
      "--tls-bootstrap", "--kubeconfig", kubeconfigPath, "--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", caFile])
      .then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/^bulkhead agent: --tls-bootstrap: certificate signing request bulkhead-agent-node-gone-\w+ was denied \(UnknownNode: no node "node-gone" exists\)\n$/);
    expect(fs.existsSync(certFile) || fs.existsSync(keyFile)).toBe(false);
  });

  it("the agent asks only when it has no usable certificate, and needs somewhere to write it", () => {
    const caFile = path.join(tmp, "ca.crt");
    const args = (node: string) => ["--node", node, "--controlplane", "127.0.0.1:4387", "--tls-bootstrap",
      "--tls-cert", files("node-new").certFile, "--tls-key", files("node-new").keyFile, "--tls-ca", caFile];
    // node-new's certificate was issued above: nothing to ask for.
    const ready = parseAgentArgs(args("node-new"));
    expect(ready.tlsBootstrap).toBeUndefined();
    expect(ready.tls?.certFile).toBe(files("node-new").certFile);
    expect(parseAgentArgs(args("node-old")).tlsBootstrap?.problem).toBe(`${files("node-new").certFile} is not node node-old's certificate`);
    expect(() => parseAgentArgs(["--node", "n", "--tls-bootstrap", "--controlplane", "127.0.0.1:1"]))
      .toThrow("--tls-bootstrap: needs --tls-cert, --tls-key, --tls-ca (where to write the certificate and key, and whom to connect to)");
    expect(() => parseAgentArgs(["--node", "n", "--kubeconfig", "/k"])).toThrow("--kubeconfig: only with --tls-bootstrap");
  });

  it("the control plane signs only with the CA it verifies agents against, and only over the Kubernetes API", async () => {
    const dir = path.join(tmp, "cp-flags");
    fs.mkdirSync(dir, { recursive: true });
    const write = (name: string, text: string) => { fs.writeFileSync(path.join(dir, name), text); return path.join(dir, name); };
    const other = await createCa(validityFor(30), "other CA");
    const server = await issueServerCertificate(ca, [], validityFor(30));
    const base = ["--source", "kubernetes", "--kubeconfig", api.kubeconfigPath, "--allow-unauthenticated",
      "--tls-cert", write("cp.crt", server.certPem), "--tls-key", write("cp.key", server.keyPem), "--tls-client-ca", write("ca.crt", ca.certPem)];
    const signerFlags = (pair: IssuedPair) => ["--csr-signer-cert", write(`${pair === ca ? "ca" : "other"}.crt`, pair.certPem),
      "--csr-signer-key", write(`${pair === ca ? "ca" : "other"}.key`, pair.keyPem)];
    const config = parseControlPlaneArgs([...base, ...signerFlags(ca), "--csr-days", "7"], {});
    expect(config.nodeSigner).toMatchObject({ agentUser: AGENT_USER, validityDays: 7 });
    expect(() => parseControlPlaneArgs([...base, ...signerFlags(other)], {})).toThrow(/^--csr-signer-cert: ".*other\.crt" \("CN=other CA"\) is not the --tls-client-ca/);
    expect(() => parseControlPlaneArgs(["--manifests", dir, "--allow-unauthenticated", ...signerFlags(ca)], {}))
      .toThrow("--csr-signer-cert: only with --source kubernetes (requests come through the Kubernetes API)");
    expect(() => parseControlPlaneArgs([...base, "--csr-signer-cert", path.join(dir, "ca.crt")], {}))
      .toThrow("--csr-signer-key: required with --csr-signer-cert (signing needs the CA certificate and its key)");
  });
});

describe("deploy/kustomize/overlays/node-certificates", () => {
  type PodSpec = { automountServiceAccountToken?: boolean; serviceAccountName?: string;
    containers: { args?: string[]; volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[] }[];
    volumes?: { name: string; emptyDir?: unknown; secret?: { secretName: string } }[] };
  type Rendered = { kind: string; metadata: { name: string }; rules?: PolicyRule[]; spec?: { template?: { spec?: PodSpec } } };
  let objects: Rendered[];
  const podSpec = (kind: string, name: string): PodSpec => {
    const spec = objects.find((o) => o.kind === kind && o.metadata.name === name)?.spec?.template?.spec;
    if (!spec) throw new Error(`no ${kind}/${name} in the rendering`);
    return spec;
  };
  /** Args with $(VAR) filled and the Secret mounts pointed at `secrets` (folder per Secret). */
  const args = (spec: PodSpec, secrets: string): string[] => (spec.containers[0]?.args ?? []).map((a) => {
    const env: Record<string, string> = { NODE_NAME: "node-new", HOST_IP: "10.0.0.1", LOG_LEVEL: "info", STORE_CAPACITY: "1000", DEFAULT_MODE: "observe" };
    let arg = a.replace(/\$\(([A-Z_]+)\)/g, (_, name: string) => env[name] ?? `$(${name})`);
    for (const m of spec.containers[0]?.volumeMounts ?? []) {
      const secret = spec.volumes?.find((v) => v.name === m.name)?.secret?.secretName;
      if (secret !== undefined) arg = arg.replace(`=${m.mountPath}/`, `=${path.join(secrets, secret)}/`);
    }
    return arg;
  });

  beforeAll(() => {
    const text = execFileSync("kubectl", ["kustomize", path.join(repoRoot, "deploy/kustomize/overlays/node-certificates")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    objects = parseAllDocuments(text).map((d) => d.toJS() as Rendered);
  });

  it("every object it adds or changes validates against the Kubernetes OpenAPI schema (kubernetes-models)", async () => {
    const errors: string[] = [];
    for (const o of objects.filter((x) => ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "Deployment"].includes(x.kind))) {
      const { apiVersion } = o as unknown as { apiVersion: string };
      const Model = (await import(modelPath(apiVersion, o.kind)) as Record<string, new (data: unknown) => { validate(): void }>)[o.kind];
      try {
        if (!Model) throw new Error("no model");
        new Model(o).validate();
      } catch (err) {
        errors.push(`${o.kind}/${o.metadata.name}: ${(err as Error).message}`);
      }
    }
    expect(errors).toEqual([]);
  });

  it("holds the RBAC these tests ran with, bound to the two accounts", () => {
    for (const name of ["bulkhead-agent-csr", "bulkhead-node-signer"]) {
      expect(objects.find((o) => o.kind === "ClusterRole" && o.metadata.name === name)?.rules).toEqual(
        parseAllDocuments(fs.readFileSync(path.join(repoRoot, RBAC_FILES[1]!), "utf8")).map((d) => d.toJS() as Rendered)
          .find((o) => o.kind === "ClusterRole" && o.metadata.name === name)?.rules);
    }
    expect(rulesOf(AGENT_USER, RBAC_FILES).flatMap((r) => r.verbs).sort()).toEqual(["create", "get", "watch"]);
  });

  it("the agent mounts its pod-bound token and a memory folder for key and certificate, and its args ask at start", () => {
    const spec = podSpec("DaemonSet", "bulkhead-agent");
    expect(spec.serviceAccountName).toBe("bulkhead-agent");
    expect(spec.automountServiceAccountToken).toBe(true);
    expect(spec.volumes?.find((v) => v.name === "node-tls")?.emptyDir).toEqual({ medium: "Memory", sizeLimit: "1Mi" });
    const config = parseAgentArgs(args(spec, path.join(tmp, "secrets")));
    expect(config.tlsBootstrap).toMatchObject({ certFile: "/var/lib/bulkhead-agent/tls/node.crt", keyFile: "/var/lib/bulkhead-agent/tls/node.key",
      kubeconfig: undefined, problem: "no certificate yet" });
    expect(spec.containers[0]?.volumeMounts?.find((m) => m.mountPath === "/var/lib/bulkhead-agent/tls")?.readOnly).toBeUndefined();
  });

  it("the control plane's args parse into a signer with the CA key from the Secret bulkhead-node-signer", async () => {
    const secrets = path.join(tmp, "secrets");
    const server = await issueServerCertificate(ca, [], validityFor(30));
    const put = (secret: string, file: string, text: string) => {
      fs.mkdirSync(path.join(secrets, secret), { recursive: true });
      fs.writeFileSync(path.join(secrets, secret, file), text);
    };
    put("bulkhead-controlplane-tls", "ca.crt", ca.certPem);
    put("bulkhead-controlplane-tls", "controlplane.crt", server.certPem);
    put("bulkhead-controlplane-tls", "controlplane.key", server.keyPem);
    put("bulkhead-node-signer", "ca.key", ca.keyPem);
    put("bulkhead-tokens", "tokens.yaml", `tokens:\n  - name: ops\n    sha256: ${"ab".repeat(32)}\n    namespaces: ["*"]\n`);
    const config = parseControlPlaneArgs(args(podSpec("Deployment", "bulkhead-controlplane"), secrets), { KUBERNETES_SERVICE_HOST: "10.96.0.1" });
    expect(config.nodeSigner).toMatchObject({ agentUser: AGENT_USER, validityDays: 365 });
    expect(config.nodeSigner?.ca.keyPem).toBe(ca.keyPem);
  });
});

describe("what an agent loads", () => {
  // A resolve hook that refuses the two libraries only the bootstrap needs: an agent that
  // loads them at start holds ~80 MiB more RSS on every node (bench/README.md, agent-load).
  const REFUSED = ["@kubernetes/client-node", "@peculiar/x509"];
  const hooks = `export async function resolve(specifier, context, next) {
    if (${JSON.stringify(REFUSED)}.includes(specifier)) throw new Error("refused import of " + specifier);
    return next(specifier, context);
  }`;
  const register = `import { register } from "node:module"; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hooks)}`)});`;
  const load = (code: string) => run(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(register)}`,
    "--input-type=module", "-e", code]).then(() => "loaded", (err: { stderr: string }) => err.stderr);
  const built = (file: string) => JSON.stringify(path.join(repoRoot, "dist", file));

  it("an agent that does not bootstrap loads neither the Kubernetes client nor the X.509 request builder (the built agent)", async () => {
    expect(await load(`await import(${built("agent/main.js")});`)).toBe("loaded");
    expect(await load(`const m = await import(${built("agent/config.js")}); m.parseAgentArgs(["--node", "n1"]);`)).toBe("loaded");
  });

  it("the bootstrap does load them: the hook above sees the import it refuses", async () => {
    expect(await load(`const m = await import(${built("agent/node-certificate.js")}); await m.agentKubeConfig(undefined);`))
      .toContain("refused import of @kubernetes/client-node");
  });
});
