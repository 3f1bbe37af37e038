// `bulkhead certs`: creates, or keeps when still good, the CA, the control plane's server
// certificate and one client certificate per node in one folder. Re-running it with more
// nodes or hosts adds what is missing and keeps the CA, so certificates already handed out
// stay valid.
import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { parseArgs } from "node:util";
import { ConfigError } from "../config/flags.js";
import {
  createCa, issueNodeCertificate, issueServerCertificate, serverNames, validityFor, type IssuedPair,
} from "./issue.js";
import { isNodeName, nodesInSubjectAltName } from "./node-identity.js";

export const certsUsage = `usage: bulkhead certs --out DIR --node NAME [--node NAME …] [--host DNS_OR_IP …] [--days N]

Creates the certificates of mutual TLS between agents and the control plane (ECDSA P-256),
or keeps those in DIR that are still valid and cover what is asked:

  DIR/ca.crt, ca.key                      the CA (kept once made: re-running adds, never replaces it)
  DIR/controlplane.crt, controlplane.key  server certificate for localhost, 127.0.0.1, ::1 and every --host
  DIR/node-NAME.crt, node-NAME.key        client certificate of node NAME (CN=NAME, URI SAN bulkhead://node/NAME)

  --out DIR        folder to write (created 0700; keys are written 0600)
  --node NAME      a node to issue a client certificate for, repeatable
  --host NAME|IP   another name or address agents reach the control plane by, repeatable
  --days N         validity of the certificates issued now (default 365; the CA: at least 3650)
`;

export const CA_CERT = "ca.crt";
export const CA_KEY = "ca.key";
export const SERVER_CERT = "controlplane.crt";
export const SERVER_KEY = "controlplane.key";
export const nodeCertFile = (node: string) => `node-${node}.crt`;
export const nodeKeyFile = (node: string) => `node-${node}.key`;

export interface CertsRequest {
  out: string;
  nodes: string[];
  hosts: string[];
  days: number;
}

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

export function parseCertsArgs(argv: string[]): CertsRequest {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, strict: true, allowPositionals: false, options: {
      out: { type: "string" }, node: { type: "string", multiple: true }, host: { type: "string", multiple: true },
      days: { type: "string" },
    } });
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const v = parsed.values;
  if (!v.out) throw new ConfigError("--out: required (the folder to write the certificates to)");
  const nodes = v.node ?? [];
  if (nodes.length === 0) throw new ConfigError("--node: at least one node name is required");
  for (const n of nodes) if (!isNodeName(n)) throw new ConfigError(`--node: "${n}" is not a valid node name (lower-case letters, digits, '-' and '.')`);
  const hosts = v.host ?? [];
  for (const h of hosts) if (!net.isIP(h) && !DNS_NAME.test(h)) throw new ConfigError(`--host: "${h}" is neither an IP address nor a DNS name`);
  const days = v.days ?? "365";
  if (!/^[0-9]+$/.test(days) || Number(days) < 1 || Number(days) > 36500) throw new ConfigError(`--days: "${days}" is not a whole number in 1..36500`);
  return { out: path.resolve(v.out), nodes: [...new Set(nodes)], hosts: [...new Set(hosts)], days: Number(days) };
}

/** One line per file: what was done and why. */
export interface CertsReport {
  lines: string[];
}

async function writeSecure(file: string, text: string, mode: number): Promise<void> {
  // Written beside and renamed, so a reader never sees half a key.
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, text, { mode });
  await chmod(tmp, mode);
  await rename(tmp, file);
}

async function readPair(dir: string, certFile: string, keyFile: string): Promise<{ cert: X509Certificate; key: KeyObject; pair: IssuedPair }> {
  const certPem = await readFile(path.join(dir, certFile), "utf8");
  const keyPem = await readFile(path.join(dir, keyFile), "utf8");
  let cert: X509Certificate, key: KeyObject;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new Error(`${certFile}: not a PEM certificate (${(err as Error).message})`);
  }
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new Error(`${keyFile}: not a PEM private key (${(err as Error).message})`);
  }
  if (!cert.checkPrivateKey(key)) throw new Error(`${keyFile} is not the key of ${certFile}`);
  return { cert, key, pair: { certPem, keyPem } };
}

function validNow(cert: X509Certificate, now: Date, marginMs = 0): boolean {
  return new Date(cert.validFrom) <= now && new Date(cert.validTo).getTime() - marginMs > now.getTime();
}

/** The CA in `dir`, kept when both files are there and good; made when neither is; an error otherwise
 * (replacing a CA would silently invalidate every certificate it issued). */
async function ensureCa(req: CertsRequest, now: Date, lines: string[]): Promise<IssuedPair> {
  const certThere = existsSync(path.join(req.out, CA_CERT));
  const keyThere = existsSync(path.join(req.out, CA_KEY));
  if (certThere || keyThere) {
    if (!certThere || !keyThere) {
      throw new Error(`${path.join(req.out, certThere ? CA_CERT : CA_KEY)} exists without ${certThere ? CA_KEY : CA_CERT}; `
        + "restore it, or remove both to make a new CA (every certificate it issued must then be re-issued)");
    }
    const { cert, pair } = await readPair(req.out, CA_CERT, CA_KEY).catch((err: Error) => {
      throw new Error(`${req.out}: ${err.message}; remove ${CA_CERT} and ${CA_KEY} to make a new CA`);
    });
    if (!cert.ca) throw new Error(`${path.join(req.out, CA_CERT)} is not a CA certificate (no basicConstraints CA:TRUE)`);
    if (!validNow(cert, now)) {
      throw new Error(`${path.join(req.out, CA_CERT)} is valid only from ${cert.validFrom} to ${cert.validTo}; remove ${CA_CERT} and ${CA_KEY} to make a new CA`);
    }
    lines.push(`${CA_CERT}: kept (${cert.subject.replace(/\n/g, ", ")}, valid until ${cert.validTo})`);
    return pair;
  }
  const ca = await createCa(validityFor(Math.max(req.days, 3650), now));
  await writeSecure(path.join(req.out, CA_KEY), ca.keyPem, 0o600);
  await writeSecure(path.join(req.out, CA_CERT), ca.certPem, 0o644);
  lines.push(`${CA_CERT}: created`);
  return ca;
}

/** Why an existing leaf cannot be kept, or undefined when it can. */
async function leafProblem(req: CertsRequest, ca: X509Certificate, certFile: string, keyFile: string, now: Date,
  covers: (cert: X509Certificate) => string | undefined): Promise<string | undefined> {
  if (!existsSync(path.join(req.out, certFile)) || !existsSync(path.join(req.out, keyFile))) return "missing";
  let cert: X509Certificate;
  try {
    ({ cert } = await readPair(req.out, certFile, keyFile));
  } catch (err) {
    return (err as Error).message;
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return "not issued by this CA";
  if (!validNow(cert, now, 86_400_000)) return `valid only from ${cert.validFrom} to ${cert.validTo}`;
  return covers(cert);
}

async function ensureLeaf(req: CertsRequest, ca: IssuedPair, certFile: string, keyFile: string, now: Date, lines: string[],
  covers: (cert: X509Certificate) => string | undefined, issue: () => Promise<IssuedPair>): Promise<void> {
  const problem = await leafProblem(req, new X509Certificate(ca.certPem), certFile, keyFile, now, covers);
  if (problem === undefined) {
    lines.push(`${certFile}: kept`);
    return;
  }
  const pair = await issue();
  await writeSecure(path.join(req.out, keyFile), pair.keyPem, 0o600);
  await writeSecure(path.join(req.out, certFile), pair.certPem, 0o644);
  lines.push(`${certFile}: ${problem === "missing" ? "created" : `re-issued (${problem})`}`);
}

export async function writeCertificates(req: CertsRequest, now = new Date()): Promise<CertsReport> {
  await mkdir(req.out, { recursive: true, mode: 0o700 });
  const lines: string[] = [];
  const ca = await ensureCa(req, now, lines);
  const validity = validityFor(req.days, now);
  const names = serverNames(req.hosts);
  await ensureLeaf(req, ca, SERVER_CERT, SERVER_KEY, now, lines, (cert) => {
    const missing = names.filter((n) => (net.isIP(n) ? cert.checkIP(n) : cert.checkHost(n)) === undefined);
    return missing.length ? `does not cover ${missing.join(", ")}` : undefined;
  }, () => issueServerCertificate(ca, req.hosts, validity));
  for (const node of req.nodes) {
    await ensureLeaf(req, ca, nodeCertFile(node), nodeKeyFile(node), now, lines, (cert) => {
      const named = nodesInSubjectAltName(cert.subjectAltName);
      return named.length === 1 && named[0] === node ? undefined : `names ${named.join(", ") || "no node"}, not ${node}`;
    }, () => issueNodeCertificate(ca, node, validity));
  }
  return { lines };
}

export async function runCerts(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(certsUsage);
    return 0;
  }
  const req = parseCertsArgs(argv);
  try {
    const report = await writeCertificates(req);
    for (const line of report.lines) process.stdout.write(`${path.join(req.out, line)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`bulkhead certs: ${(err as Error).message}\n`);
    return 1;
  }
}
