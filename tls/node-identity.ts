// Which node a certificate speaks for. A node certificate names its node twice: as the
// subject CN (what people read) and as a URI SAN `bulkhead://node/<name>` (what the
// control plane trusts, since a SAN of this scheme is never put on any other certificate).
import type { PeerCertificate } from "node:tls";
import { isDnsSubdomain } from "../kubernetes/names.js";

export const NODE_URI_PREFIX = "bulkhead://node/";

/** A Kubernetes node name (a DNS subdomain, as the API server requires). */
export function isNodeName(name: string): boolean {
  return isDnsSubdomain(name);
}

export function nodeUri(node: string): string {
  return `${NODE_URI_PREFIX}${node}`;
}

/** "URI:bulkhead://node/a, DNS:localhost" (Node's subjectaltname) → the node names it carries. */
export function nodesInSubjectAltName(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName.split(", ")
    .filter((entry) => entry.startsWith(`URI:${NODE_URI_PREFIX}`))
    .map((entry) => entry.slice(`URI:${NODE_URI_PREFIX}`.length));
}

/** The node a verified peer certificate names, or an error saying why it names none. */
export function nodeOfCertificate(cert: PeerCertificate): { node: string } | { error: string } {
  const nodes = nodesInSubjectAltName(cert.subjectaltname);
  const subject = describeName(cert.subject);
  if (nodes.length === 0) return { error: `client certificate "${subject}" names no node (no ${NODE_URI_PREFIX}<name> URI SAN)` };
  if (nodes.length > 1) return { error: `client certificate "${subject}" names several nodes (${nodes.join(", ")})` };
  const node = nodes[0] ?? "";
  if (!isNodeName(node)) return { error: `client certificate "${subject}" names "${node}", which is not a valid node name` };
  return { node };
}

/** "CN=node-a, O=bulkhead" from Node's parsed subject or issuer. */
export function describeName(name: Record<string, string | string[] | undefined> | undefined): string {
  if (!name) return "(none)";
  const parts: string[] = [];
  for (const [key, value] of Object.entries(name)) {
    for (const v of Array.isArray(value) ? value : [value]) if (v !== undefined) parts.push(`${key}=${v}`);
  }
  return parts.length ? parts.join(", ") : "(empty)";
}
