// NetworkPolicies as files in the lab's manifests folder, the way a user would `kubectl
// apply` them: one `netpol-<namespace>.<name>.yaml` per policy (a namespace has no dots, so
// the file name is unambiguous), written via a temp file and a rename so the control
// plane's watcher never reads half a policy. Other files in the folder are the lab's.
import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { stringify } from "yaml";
import type { NetworkPolicy } from "../controlplane/metadata/objects.js";
import { CNP_API_VERSION, CNP_KIND, type ClusterNetworkPolicy } from "../controlplane/policy/cnp.js";
import { writeFileAtomic } from "./state.js";
import { isDnsSubdomain, isNamespaceName } from "../kubernetes/names.js";

const POLICY_FILE = /^netpol-[a-z0-9-]+\..+\.yaml$/;
/** ClusterNetworkPolicies: `cnp-<name>.yaml` (cluster-scoped, no namespace). */
const CNP_FILE = /^cnp-.+\.yaml$/;

export function cnpFileName(name: string): string {
  if (!isDnsSubdomain(name)) throw new Error(`ClusterNetworkPolicy name ${JSON.stringify(name)} is not a DNS subdomain`);
  return `cnp-${name}.yaml`;
}

/** The manifest of a ClusterNetworkPolicy as YAML. */
export function cnpDocument(policy: ClusterNetworkPolicy): string {
  return stringify({ apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name: policy.metadata.name }, spec: policy.spec }, { lineWidth: 0, aliasDuplicateObjects: false });
}

/** Makes the folder hold exactly `policies` as ClusterNetworkPolicy files; true when any file was written or removed. */
export async function syncClusterPolicies(dir: string, policies: readonly ClusterNetworkPolicy[]): Promise<boolean> {
  const wanted = new Set(policies.map((p) => cnpFileName(p.metadata.name)));
  let changed = false;
  for (const policy of policies) {
    const file = path.join(dir, cnpFileName(policy.metadata.name));
    const content = cnpDocument(policy);
    if ((await readFile(file, "utf8").catch(() => undefined)) === content) continue;
    await writeFileAtomic(file, content);
    changed = true;
  }
  for (const name of (await readdir(dir).catch(() => [] as string[])).filter((n) => CNP_FILE.test(n))) {
    if (wanted.has(name)) continue;
    await rm(path.join(dir, name), { force: true });
    changed = true;
  }
  return changed;
}

export function policyFileName(namespace: string, name: string): string {
  if (!isNamespaceName(namespace)) throw new Error(`policy namespace ${JSON.stringify(namespace)} is not a DNS label`);
  if (!isDnsSubdomain(name)) throw new Error(`policy name ${JSON.stringify(name)} is not a DNS subdomain`);
  return `netpol-${namespace}.${name}.yaml`;
}

/** The manifest object of a parsed policy: only name and namespace of its metadata, the whole spec. */
export function policyManifest(policy: NetworkPolicy): Record<string, unknown> {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: policy.metadata.name, namespace: policy.metadata.namespace },
    spec: policy.spec,
  };
}

/** The manifest of a parsed policy as YAML. */
export function policyDocument(policy: NetworkPolicy): string {
  return stringify(policyManifest(policy), { lineWidth: 0, aliasDuplicateObjects: false });
}

/** Creates or replaces the policy's file; false when the file already said exactly this. */
export async function writePolicy(dir: string, policy: NetworkPolicy): Promise<boolean> {
  const file = path.join(dir, policyFileName(policy.metadata.namespace, policy.metadata.name));
  const content = policyDocument(policy);
  if ((await readFile(file, "utf8").catch(() => undefined)) === content) return false;
  await writeFileAtomic(file, content);
  return true;
}

/** Names of the policy files in `dir`. */
export async function policyFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((n) => POLICY_FILE.test(n)).sort();
}

/** Makes the folder hold exactly `policies`; true when any file was written or removed. */
export async function syncPolicies(dir: string, policies: readonly NetworkPolicy[]): Promise<boolean> {
  const wanted = new Set(policies.map((p) => policyFileName(p.metadata.namespace, p.metadata.name)));
  let changed = false;
  for (const policy of policies) changed = (await writePolicy(dir, policy)) || changed;
  for (const name of await policyFiles(dir)) {
    if (wanted.has(name)) continue;
    await rm(path.join(dir, name), { force: true });
    changed = true;
  }
  return changed;
}
