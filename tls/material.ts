// Reads the certificate, key and CA files that flags name, checking each on the way in,
// so a wrong path or a mismatched key is a clear error at start, not a failed handshake later.
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ConfigError } from "../config/flags.js";

/** An own certificate with its key, and the CA that peers' certificates must chain to. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** The CA, parsed (for describing it in refusals). */
  caCertificate: X509Certificate;
  certFile: string;
  caFile: string;
}

function readFlagFile(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new ConfigError(`--${flag}: cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function certificate(flag: string, file: string, pem: Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new ConfigError(`--${flag}: "${file}" is not a PEM certificate (${(err as Error).message})`);
  }
}

/** Reads `<prefix>-cert`, `<prefix>-key` and the CA flag: all three or none (undefined). */
export function loadTlsMaterial(values: { cert?: string; key?: string; ca?: string }, caFlag: string): TlsMaterial | undefined {
  const flags = { "tls-cert": values.cert, "tls-key": values.key, [caFlag]: values.ca };
  const given = Object.entries(flags).filter(([, v]) => v !== undefined).map(([k]) => k);
  if (given.length === 0) return undefined;
  const missing = Object.entries(flags).filter(([, v]) => v === undefined).map(([k]) => `--${k}`);
  if (missing.length > 0) {
    throw new ConfigError(`${missing.join(", ")}: required with ${given.map((g) => `--${g}`).join(", ")} (TLS needs a certificate, its key and a CA, or none of them)`);
  }
  const caFile = path.resolve(values.ca ?? "");
  const { cert, key, certFile } = loadCertificateAndKey("tls", values.cert ?? "", values.key ?? "");
  const ca = readFlagFile(caFlag, caFile);
  const caCertificate = certificate(caFlag, caFile, ca);
  if (!caCertificate.ca) throw new ConfigError(`--${caFlag}: "${caFile}" is not a CA certificate (no basicConstraints CA:TRUE)`);
  return { cert, key, ca, caCertificate, certFile, caFile };
}

/** `--<prefix>-cert` and `--<prefix>-key`: a PEM certificate and the private key that belongs to it. */
export function loadCertificateAndKey(prefix: string, certPath: string, keyPath: string): { cert: Buffer; key: Buffer; certFile: string } {
  const certFile = path.resolve(certPath), keyFile = path.resolve(keyPath);
  const cert = readFlagFile(`${prefix}-cert`, certFile), key = readFlagFile(`${prefix}-key`, keyFile);
  const own = certificate(`${prefix}-cert`, certFile, cert);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch (err) {
    throw new ConfigError(`--${prefix}-key: "${keyFile}" is not a PEM private key (${(err as Error).message})`);
  }
  if (!own.checkPrivateKey(keyObject)) throw new ConfigError(`--${prefix}-key: "${keyFile}" is not the key of the certificate "${certFile}"`);
  return { cert, key, certFile };
}

/** Only the CA (a client that verifies a server but shows no certificate of its own). */
export function loadCa(flag: string, file: string): Buffer {
  const resolved = path.resolve(file);
  const pem = readFlagFile(flag, resolved);
  if (!certificate(flag, resolved, pem).ca) throw new ConfigError(`--${flag}: "${resolved}" is not a CA certificate (no basicConstraints CA:TRUE)`);
  return pem;
}
