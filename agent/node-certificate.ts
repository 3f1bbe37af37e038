// How an agent on a node that has no certificate yet (one an autoscaler added) gets one:
// a new key, a CertificateSigningRequest for bulkhead.io/agent naming its node, and a wait
// until the control plane's signer issues the certificate or denies the request. The key
// never leaves the node; the files are written only once the certificate is there and
// matches the key and the node, so a failed attempt leaves nothing half-written.
import { Buffer } from "node:buffer";
import { X509Certificate, createPrivateKey } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
// Types only: the Kubernetes client (~30 MB of heap, ~80 MiB of RSS once loaded) and the
// X.509 request builder (~20 MiB) are imported when an agent really bootstraps, not by
// every agent that parses its flags (bench/README.md, agent-load).
import type { CertificatesV1Api, KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { nodesInSubjectAltName } from "../tls/node-identity.js";
import { conditionOf, parseCertificateSigningRequest, type CertificateSigningRequest } from "../kubernetes/certificate-signing-request.js";

export interface NodeCertificateRequest {
  kubeConfig: KubeConfig;
  node: string;
  certFile: string;
  keyFile: string;
  /** How long to wait for the signer before giving up. */
  timeoutMs: number;
  log: Logger;
}

/** The kubeconfig to reach the API server with: --kubeconfig, else in-cluster or $KUBECONFIG, as kubectl. */
export async function agentKubeConfig(file: string | undefined): Promise<KubeConfig> {
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  try {
    if (file !== undefined) kc.loadFromFile(file);
    else kc.loadFromDefault();
  } catch (err) {
    throw new Error(`--kubeconfig ${file ?? "(default)"}: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new Error(`--kubeconfig ${file ?? "(default)"}: no current cluster (outside a pod, pass --kubeconfig PATH)`);
  return kc;
}

/**
 * Why the files at certFile/keyFile cannot serve `node` (missing, unreadable, another
 * node's, not its key, expired or expiring within `marginMs`), or undefined when they can.
 */
export function certificateProblem(certFile: string, keyFile: string, node: string, marginMs: number, now = new Date()): string | undefined {
  if (!fs.existsSync(certFile) || !fs.existsSync(keyFile)) return "no certificate yet";
  try {
    const cert = new X509Certificate(fs.readFileSync(certFile));
    if (!cert.checkPrivateKey(createPrivateKey(fs.readFileSync(keyFile)))) return `${keyFile} is not the key of ${certFile}`;
    const named = nodesInSubjectAltName(cert.subjectAltName);
    if (named.length !== 1 || named[0] !== node) return `${certFile} is not node ${node}'s certificate`;
    if (new Date(cert.validTo).getTime() - marginMs < now.getTime()) return `${certFile} expires ${new Date(cert.validTo).toISOString()}`;
  } catch (err) {
    return `${certFile}: ${(err as Error).message}`;
  }
  return undefined;
}

function describe(csr: CertificateSigningRequest, type: string): string | undefined {
  const c = conditionOf(csr, type);
  return c && `${c.reason || type}: ${c.message}`;
}

/** What a CSR's state means for the waiting agent: a certificate, a refusal, or nothing yet. */
function outcome(csr: CertificateSigningRequest): { certPem: string } | { refused: string } | undefined {
  const denied = describe(csr, "Denied");
  if (denied !== undefined) return { refused: `certificate signing request ${csr.name} was denied (${denied})` };
  const failed = describe(csr, "Failed");
  if (failed !== undefined) return { refused: `certificate signing request ${csr.name} failed (${failed})` };
  if (csr.certificate !== undefined && csr.certificate !== "") return { certPem: Buffer.from(csr.certificate, "base64").toString("utf8") };
  return undefined;
}

function writeAtomically(file: string, text: string, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fs.renameSync(tmp, file);
}

/**
 * Requests a certificate for the node and writes key and certificate; throws an Error
 * naming the request and the signer's reason when it is denied, and what to check when
 * no answer comes in time.
 */
export async function requestNodeCertificate(req: NodeCertificateRequest): Promise<void> {
  const { CertificatesV1Api } = await import("@kubernetes/client-node");
  const { NODE_CERTIFICATE_USAGES, NODE_SIGNER_NAME, createNodeRequest } = await import("../tls/node-request.js");
  const api = req.kubeConfig.makeApiClient(CertificatesV1Api);
  const { requestPem, keyPem } = await createNodeRequest(req.node);
  let created: CertificateSigningRequest;
  try {
    created = parseCertificateSigningRequest(await api.createCertificateSigningRequest({ body: {
      apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
      metadata: { generateName: `bulkhead-agent-${req.node}-`.slice(0, 200), labels: { "app.kubernetes.io/name": "bulkhead-agent" } },
      spec: { signerName: NODE_SIGNER_NAME, request: Buffer.from(requestPem).toString("base64"), usages: [...NODE_CERTIFICATE_USAGES] },
    } }));
  } catch (err) {
    throw new Error(`cannot create a certificate signing request for node ${req.node}: ${(err as Error).message}`);
  }
  const { name } = created;
  req.log.info({ csr: name, signer: NODE_SIGNER_NAME }, "waiting for the control plane to issue this node's certificate");
  const certPem = await waitForCertificate(req, api, created);
  const cert = new X509Certificate(certPem);
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new Error(`certificate signing request ${name}: the issued certificate is not for this request's key`);
  const named = nodesInSubjectAltName(cert.subjectAltName);
  if (named.length !== 1 || named[0] !== req.node) {
    throw new Error(`certificate signing request ${name}: the issued certificate names ${named.join(", ") || "no node"}, not node ${req.node}`);
  }
  writeAtomically(req.keyFile, keyPem, 0o600);
  writeAtomically(req.certFile, certPem, 0o644);
  req.log.info({ csr: name, cert: req.certFile, validTo: new Date(cert.validTo).toISOString() }, "node certificate issued");
}

async function waitForCertificate(req: NodeCertificateRequest, api: CertificatesV1Api, created: CertificateSigningRequest): Promise<string> {
  const { Watch } = await import("@kubernetes/client-node");
  const { name } = created;
  const deadline = Date.now() + req.timeoutMs;
  let current = created;
  for (;;) {
    const settled = outcome(current);
    if (settled && "refused" in settled) throw new Error(settled.refused);
    if (settled) return settled.certPem;
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(`no certificate for node ${req.node} after ${Math.round(req.timeoutMs / 1000)} s: certificate signing request ${name} `
        + `is still pending (is the control plane running with --csr-signer-cert/--csr-signer-key? kubectl describe csr ${name})`);
    }
    // Watch until the request changes, the watch ends or time is up; then read it afresh.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { controller?.abort(); resolve(); }, left);
      let controller: AbortController | undefined;
      new Watch(req.kubeConfig).watch("/apis/certificates.k8s.io/v1/certificatesigningrequests",
        { fieldSelector: `metadata.name=${name}`, resourceVersion: current.resourceVersion },
        (phase, object: unknown) => {
          // Whatever changed, the request is read afresh below; only a settled one ends the wait early.
          let changed: CertificateSigningRequest;
          try {
            changed = parseCertificateSigningRequest(object);
          } catch {
            return;
          }
          if (phase !== "MODIFIED" || outcome(changed) === undefined) return;
          clearTimeout(timer);
          controller?.abort();
          resolve();
        },
        () => { clearTimeout(timer); resolve(); },
      ).then((c) => { controller = c; }, () => { clearTimeout(timer); setTimeout(resolve, 1000); });
    });
    try {
      current = parseCertificateSigningRequest(await api.readCertificateSigningRequest({ name }));
    } catch (err) {
      req.log.warn({ csr: name, err: (err as Error).message }, "cannot read the certificate signing request; retrying");
    }
  }
}
