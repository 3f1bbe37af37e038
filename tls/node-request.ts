// A node's certificate request (PKCS#10), as an agent sends it through the Kubernetes
// CertificateSigningRequest API and as the control plane's signer reads it. The request
// names the node as its certificate will (CN and the URI SAN bulkhead://node/<name>), so
// a request that names anything else is refused before anyone looks at who sent it.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto } from "node:crypto";
import { newNodeKeys, SIGNING_ALGORITHM } from "./issue.js";
import { isNodeName, nodeUri, NODE_URI_PREFIX } from "./node-identity.js";

/** The signerName of node certificates: CSRs for it are signed by bulkhead's control plane only. */
export const NODE_SIGNER_NAME = "bulkhead.io/agent";

/**
 * The key usages a node's CSR asks for, as certificates.k8s.io spells them: what a node
 * certificate carries (keyUsage digitalSignature, extKeyUsage clientAuth), nothing more.
 */
export const NODE_CERTIFICATE_USAGES: readonly string[] = ["digital signature", "client auth"];

/** A new key and a request for `node`'s certificate, both PEM. */
export async function createNodeRequest(node: string): Promise<{ requestPem: string; keyPem: string }> {
  if (!isNodeName(node)) throw new Error(`"${node}" is not a valid node name (a DNS subdomain)`);
  const { keys, keyPem } = await newNodeKeys();
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${node}`, keys, signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: "url", value: nodeUri(node) }])],
  }, webcrypto as unknown as Crypto);
  return { requestPem: request.toString("pem"), keyPem };
}

/** The node a request names and its public key, or why it is not a node's request. */
export async function readNodeRequest(pem: string): Promise<{ node: string; publicKey: x509.PublicKey } | { error: string }> {
  let request: x509.Pkcs10CertificateRequest;
  try {
    request = new x509.Pkcs10CertificateRequest(pem);
  } catch (err) {
    return { error: `the request is not a PKCS#10 certificate request (${(err as Error).message})` };
  }
  if (!await request.verify(webcrypto as unknown as Crypto)) return { error: "the request's signature does not verify with its own key" };
  const algorithm = request.publicKey.algorithm as EcKeyAlgorithm;
  if (algorithm.name !== "ECDSA" || algorithm.namedCurve !== "P-256") {
    return { error: `the request's key is ${algorithm.name}${algorithm.namedCurve ? ` ${algorithm.namedCurve}` : ""}, not ECDSA P-256` };
  }
  const rdns = request.subjectName.toJSON();
  const cn = request.subjectName.getField("CN");
  if (rdns.length !== 1 || Object.keys(rdns[0] ?? {}).length !== 1 || cn.length !== 1) {
    return { error: `the request's subject "${request.subject}" is not CN=<node> alone` };
  }
  const node = cn[0] ?? "";
  if (!isNodeName(node)) return { error: `the request's CN "${node}" is not a valid node name` };
  const sans = request.extensions.filter((e) => e instanceof x509.SubjectAlternativeNameExtension);
  const names = sans.flatMap((e) => e.names.items.map((n) => `${n.type}:${n.value}`));
  if (names.length !== 1 || names[0] !== `url:${nodeUri(node)}`) {
    return { error: `the request's subject alternative names [${names.join(", ")}] are not exactly url:${NODE_URI_PREFIX}${node}` };
  }
  return { node, publicKey: request.publicKey };
}
