// Issues the certificates of mutual TLS between agents and the control plane: one CA,
// one server certificate for the control plane, one client certificate per node. ECDSA
// P-256 keys; certificates built with @peculiar/x509 over Node's webcrypto.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import crypto, { webcrypto } from "node:crypto";
import net from "node:net";
import { nodeUri } from "./node-identity.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** A certificate and its private key, both PEM (the key as PKCS#8). */
export interface IssuedPair {
  certPem: string;
  keyPem: string;
}

export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** From one minute ago (clocks of nodes differ a little) for `days` days. */
export function validityFor(days: number, now = new Date()): Validity {
  return { notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + days * DAY_MS) };
}

async function newKeys(): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]) as CryptoKeyPair;
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** A CA's signing key from PEM (any format Node reads; it must be a P-256 EC key). */
async function signingKey(pem: string): Promise<CryptoKey> {
  const key = crypto.createPrivateKey(pem);
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw new Error(`the CA key is ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? ""}, not an ECDSA P-256 key`);
  }
  const der = key.export({ type: "pkcs8", format: "der" });
  return await webcrypto.subtle.importKey("pkcs8", der, KEY_ALGORITHM, false, ["sign"]);
}

export async function createCa(validity: Validity, commonName = "bulkhead CA"): Promise<IssuedPair> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${commonName}`, keys, signingAlgorithm: SIGNING_ALGORITHM, ...validity,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await keyPem(keys.privateKey) };
}

/** A leaf certificate (PEM) for `publicKey`, signed by the CA. */
async function signLeaf(ca: IssuedPair, subject: string, publicKey: CryptoKey | x509.PublicKey, validity: Validity,
  extensions: x509.Extension[]): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    subject, issuer: caCert.subject, publicKey, signingKey: await signingKey(ca.keyPem),
    signingAlgorithm: SIGNING_ALGORITHM, ...validity,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      ...extensions,
    ],
  });
  return cert.toString("pem");
}

async function issueLeaf(ca: IssuedPair, subject: string, validity: Validity, extensions: x509.Extension[]): Promise<IssuedPair> {
  const keys = await newKeys();
  return { certPem: await signLeaf(ca, subject, keys.publicKey, validity, extensions), keyPem: await keyPem(keys.privateKey) };
}

/** Every name the control plane's server certificate covers: loopback, plus `hosts`. */
export function serverNames(hosts: readonly string[]): string[] {
  return [...new Set(["localhost", "127.0.0.1", "::1", ...hosts])];
}

/** The control plane's server certificate (serverAuth) for localhost, loopback and `hosts` (DNS names or IPs). */
export async function issueServerCertificate(ca: IssuedPair, hosts: readonly string[], validity: Validity): Promise<IssuedPair> {
  const names = serverNames(hosts).map((h) => ({ type: net.isIP(h) ? "ip" as const : "dns" as const, value: h }));
  return await issueLeaf(ca, "CN=bulkhead controlplane", validity, [
    new x509.SubjectAlternativeNameExtension(names),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
  ]);
}

function nodeExtensions(node: string): x509.Extension[] {
  return [
    new x509.SubjectAlternativeNameExtension([{ type: "url", value: nodeUri(node) }]),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
  ];
}

/** A node's client certificate (clientAuth): CN=<node> and the URI SAN bulkhead://node/<node>. */
export async function issueNodeCertificate(ca: IssuedPair, node: string, validity: Validity): Promise<IssuedPair> {
  return await issueLeaf(ca, `CN=${node}`, validity, nodeExtensions(node));
}

/**
 * The same node certificate for a key the node holds (from its certificate request): the
 * signer takes only the public key from a request and writes every other field itself.
 */
export async function signNodeCertificate(ca: IssuedPair, node: string, publicKey: x509.PublicKey, validity: Validity): Promise<string> {
  return await signLeaf(ca, `CN=${node}`, publicKey, validity, nodeExtensions(node));
}

/** A new P-256 key pair, the private key also as PKCS#8 PEM (for a node's certificate request). */
export async function newNodeKeys(): Promise<{ keys: CryptoKeyPair; keyPem: string }> {
  const keys = await newKeys();
  return { keys, keyPem: await keyPem(keys.privateKey) };
}

export { SIGNING_ALGORITHM };
