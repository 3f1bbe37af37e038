// The signer of node certificates: watches CertificateSigningRequests for the signerName
// bulkhead.io/agent and, for each one it can vouch for, approves it and writes a node
// certificate signed by the CA whose key the control plane holds; every other one is
// denied with a reason. What it checks, cheapest first:
//
// 1. spec.username (set by the API server from the requester's token, not by the
//    requester) is the agent's service account;
// 2. spec.usages are exactly those of a node certificate (digital signature, client auth);
// 3. the PKCS#10 request verifies and names one valid node (CN and URI SAN), P-256 key;
// 4. the token the request came with was bound to a pod on that very node: spec.extra's
//    authentication.kubernetes.io/node-name (Kubernetes >= 1.30 puts it in pod-bound
//    service account tokens), so an agent can get a certificate for its own node only;
// 5. a Node of that name exists.
//
// The certificate carries only the node's name and the request's public key; its lifetime
// is the signer's, shortened to spec.expirationSeconds when that asks for less.
import { Buffer } from "node:buffer";
import {
  CertificatesV1Api, CoreV1Api, Watch, type KubeConfig, type V1CertificateSigningRequest, type V1CertificateSigningRequestStatus,
} from "@kubernetes/client-node";
import type { Logger } from "pino";
import { signNodeCertificate, validityFor, type IssuedPair } from "../../tls/issue.js";
import { NODE_CERTIFICATE_USAGES, NODE_SIGNER_NAME, readNodeRequest } from "../../tls/node-request.js";
import {
  conditionOf, parseCertificateSigningRequest, type CertificateSigningRequest, type CsrCondition,
} from "../../kubernetes/certificate-signing-request.js";

/** The user-info key under which the API server records the node of a pod-bound token. */
export const NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name";

/** Why a request is refused: the Denied condition's reason and message. */
export interface Refusal {
  reason: string;
  message: string;
}

export interface NodeCertificateSignerOptions {
  kubeConfig: KubeConfig;
  /** The CA that signs node certificates (the control plane's --tls-client-ca, with its key). */
  ca: IssuedPair;
  /** The username of the agents' service account, as the API server records it. */
  agentUser: string;
  /** Lifetime of a certificate, days, unless the request asks for less. */
  validityDays: number;
  log: Logger;
}

/** Counts since start, for logs and tests. */
export interface SignerCounts {
  issued: number;
  denied: number;
}

const RELIST_DELAY_MS = 1000;
const MAX_RELIST_DELAY_MS = 30_000;

/** The CSR with a new status, as an update of a subresource sends it (the server keeps the spec). */
function withStatus(csr: CertificateSigningRequest, status: V1CertificateSigningRequestStatus): V1CertificateSigningRequest {
  return {
    apiVersion: "certificates.k8s.io/v1", kind: "CertificateSigningRequest",
    metadata: { name: csr.name, resourceVersion: csr.resourceVersion },
    spec: { signerName: csr.signerName, request: csr.request, usages: csr.usages },
    status,
  };
}

/** Its conditions plus a new one (those it had are sent back as they were read). */
function conditionsWith(csr: CertificateSigningRequest, type: string, reason: string, message: string): V1CertificateSigningRequestStatus["conditions"] {
  const now = new Date();
  return [...csr.conditions.map((c: CsrCondition) => ({ ...c })), { type, status: "True", reason, message, lastUpdateTime: now, lastTransitionTime: now }];
}

export class NodeCertificateSigner {
  private readonly certificates: CertificatesV1Api;
  private readonly core: CoreV1Api;
  private readonly inFlight = new Set<string>();
  private running = false;
  private abort: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  /** Requests left unsettled by an error in a row: the relist after one waits longer each time. */
  private failures = 0;
  readonly counts: SignerCounts = { issued: 0, denied: 0 };

  constructor(private readonly options: NodeCertificateSignerOptions) {
    this.certificates = options.kubeConfig.makeApiClient(CertificatesV1Api);
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
  }

  /** Handles the pending requests, then follows new ones until stop(). */
  start(): void {
    this.running = true;
    this.loop = this.listAndWatch();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.abort?.abort();
    await this.loop;
  }

  /**
   * List (every pending request), then watch from the list's resourceVersion; when the
   * watch ends for any reason, list again: requests are few, so a relist costs little and
   * no 410 or missed event needs handling of its own.
   */
  private async listAndWatch(): Promise<void> {
    while (this.running) {
      let resourceVersion: string | undefined;
      try {
        const list = await this.certificates.listCertificateSigningRequest({ fieldSelector: `spec.signerName=${NODE_SIGNER_NAME}` });
        resourceVersion = list.metadata?.resourceVersion;
        for (const csr of list.items) this.consider(csr);
      } catch (err) {
        this.options.log.warn({ err: (err as Error).message }, "cannot list certificate signing requests; retrying");
      }
      if (resourceVersion !== undefined && this.running) await this.watch(resourceVersion);
      if (!this.running) return;
      const delay = Math.min(RELIST_DELAY_MS * 2 ** this.failures, MAX_RELIST_DELAY_MS);
      await new Promise<void>((resolve) => { this.timer = setTimeout(resolve, delay); });
    }
  }

  private async watch(resourceVersion: string): Promise<void> {
    await new Promise<void>((resolve) => {
      const watch = new Watch(this.options.kubeConfig);
      watch.watch("/apis/certificates.k8s.io/v1/certificatesigningrequests",
        { fieldSelector: `spec.signerName=${NODE_SIGNER_NAME}`, resourceVersion, allowWatchBookmarks: true },
        (phase, object: unknown) => {
          if (phase === "ADDED" || phase === "MODIFIED") this.consider(object);
        },
        () => resolve(),
      ).then((controller) => {
        this.abort = controller;
        if (!this.running) controller.abort();
      }, (err: Error) => {
        this.options.log.warn({ err: err.message }, "cannot watch certificate signing requests; relisting");
        resolve();
      });
    });
  }

  /** Starts handling a request unless it is settled or already being handled. */
  private consider(object: unknown): void {
    let csr: CertificateSigningRequest;
    try {
      csr = parseCertificateSigningRequest(object);
    } catch (err) {
      this.options.log.warn({ err: (err as Error).message }, "certificate signing request ignored: not one the API server would send");
      return;
    }
    const { name } = csr;
    if (csr.signerName !== NODE_SIGNER_NAME || this.inFlight.has(name)) return;
    if (csr.certificate !== undefined || conditionOf(csr, "Denied") || conditionOf(csr, "Failed")) return;
    this.inFlight.add(name);
    this.handle(csr).then(() => { this.failures = 0; }, (err: Error) => {
      // A conflict, a lost connection, an API error: end the watch, so that the relist
      // (after a delay growing with each failure in a row) brings the request back.
      this.failures = Math.min(this.failures + 1, 10);
      this.options.log.warn({ csr: name, err: err.message }, "certificate signing request not settled; will retry");
      this.abort?.abort();
    }).finally(() => this.inFlight.delete(name));
  }

  private async handle(csr: CertificateSigningRequest): Promise<void> {
    const { name } = csr;
    const verdict = await this.verify(csr);
    if ("reason" in verdict) {
      // One already approved (by a person) is still not signed: it fails instead.
      const approved = conditionOf(csr, "Approved") !== undefined;
      const body = withStatus(csr, { conditions: conditionsWith(csr, approved ? "Failed" : "Denied", verdict.reason, verdict.message) });
      if (approved) await this.certificates.replaceCertificateSigningRequestStatus({ name, body });
      else await this.certificates.replaceCertificateSigningRequestApproval({ name, body });
      this.counts.denied++;
      this.options.log.warn({ csr: name, requester: csr.username, reason: verdict.reason, err: verdict.message }, "node certificate request denied");
      return;
    }
    let current = csr;
    if (conditionOf(csr, "Approved") === undefined) {
      const conditions = conditionsWith(csr, "Approved", "NodeVerified", `requested by ${csr.username} from a pod on node ${verdict.node}, which exists`);
      current = parseCertificateSigningRequest(await this.certificates.replaceCertificateSigningRequestApproval({ name, body: withStatus(csr, { conditions }) }));
    }
    const requested = current.expirationSeconds;
    const days = Math.min(this.options.validityDays, requested !== undefined ? requested / 86_400 : Infinity);
    const certPem = await signNodeCertificate(this.options.ca, verdict.node, verdict.publicKey, validityFor(days));
    await this.certificates.replaceCertificateSigningRequestStatus({
      name, body: withStatus(current, { conditions: current.conditions.map((c) => ({ ...c })), certificate: Buffer.from(certPem).toString("base64") }),
    });
    this.counts.issued++;
    this.options.log.info({ csr: name, node: verdict.node, days }, "node certificate issued");
  }

  /** The node to certify, or why not. */
  private async verify(csr: CertificateSigningRequest): Promise<{ node: string; publicKey: Parameters<typeof signNodeCertificate>[2] } | Refusal> {
    const { agentUser } = this.options;
    const user = csr.username;
    if (user !== agentUser) {
      return { reason: "NotTheAgent", message: `requested by "${user}", not by the agents' service account "${agentUser}"` };
    }
    const usages = [...new Set(csr.usages)].sort();
    const expected = [...NODE_CERTIFICATE_USAGES].sort();
    if (usages.length !== expected.length || usages.some((u, i) => u !== expected[i])) {
      return { reason: "UsagesNotAllowed", message: `usages [${csr.usages.join(", ")}] are not exactly [${NODE_CERTIFICATE_USAGES.join(", ")}]` };
    }
    const request = await readNodeRequest(Buffer.from(csr.request, "base64").toString("utf8"));
    if ("error" in request) return { reason: "BadRequest", message: request.error };
    const boundTo = csr.extra[NODE_NAME_EXTRA] ?? [];
    if (boundTo.length === 0) {
      return { reason: "NoNodeBinding", message: `the requester's token names no node (no ${NODE_NAME_EXTRA}: a projected, pod-bound service account token on Kubernetes >= 1.30 carries it)` };
    }
    if (boundTo.length !== 1 || boundTo[0] !== request.node) {
      return { reason: "NodeMismatch", message: `the request names node "${request.node}" but comes from a pod on node "${boundTo.join(", ")}"` };
    }
    const nodes = await this.core.listNode({ fieldSelector: `metadata.name=${request.node}` });
    if (!nodes.items.some((n) => n.metadata?.name === request.node)) {
      return { reason: "UnknownNode", message: `no node "${request.node}" exists` };
    }
    return request;
  }
}
