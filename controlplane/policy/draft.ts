// Drafts for `bulkhead policy what-if`: YAML (or JSON) files of NetworkPolicies to create
// or replace, and of deletions, read as the control plane reads manifests
// (metadata/objects.ts parseDocument) and then validated as the policy engine validates
// policies (model.ts normalizePolicy), so a draft the control plane would refuse is
// refused here first, by file, document and field.
//
// A deletion is a NetworkPolicy document that names the policy (metadata.name and
// metadata.namespace) and carries the annotation `bulkhead.io/draft: delete`; its spec is
// ignored and may be left out. Deleting a policy that is not in force is an error (a typo
// would otherwise change nothing and say nothing).
//
// ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2) are drafted the same way,
// validated as the CRD does (cnp.ts), deleted with the same annotation; they are
// cluster-wide, so only a token of every namespace may draft them (policy-requests.ts).
import { parseAllDocuments } from "yaml";
import { FieldError, describeValue } from "../../fields/reader.js";
import { parseDocument, type ClusterNetworkPolicyObject, type NetworkPolicy } from "../metadata/objects.js";
import { normalizeCnp } from "./cnp.js";
import { normalizePolicy } from "./model.js";

export const DRAFT_ANNOTATION = "bulkhead.io/draft";

export interface DraftFile {
  /** As the user named it (a path); errors name it. */
  name: string;
  content: string;
}

export interface DraftProblem {
  file: string;
  /** From 0, in the order of the file's `---` documents. */
  document: number;
  /** "spec.ingress[0].from[1].ipBlock.cidr"; "" for the whole document. */
  field: string;
  message: string;
}

export interface Draft {
  /** Policies to create or replace, "namespace/name" unique across the draft. */
  upserts: NetworkPolicy[];
  /** Policies to delete, and where the draft says so. */
  deletions: { key: string; file: string; document: number }[];
  /** ClusterNetworkPolicies to create or replace, by name. */
  clusterUpserts: ClusterNetworkPolicyObject[];
  /** ClusterNetworkPolicies to delete (key: the name). */
  clusterDeletions: { key: string; file: string; document: number }[];
}

export class DraftError extends Error {
  constructor(readonly problems: DraftProblem[]) {
    super(problems.map(formatDraftProblem).join("\n"));
    this.name = "DraftError";
  }
}

export function formatDraftProblem(p: DraftProblem): string {
  return `${p.file}: document ${p.document}${p.field === "" ? "" : `: ${p.field}`}: ${p.message}`;
}

type Drafted = NetworkPolicy | ClusterNetworkPolicyObject;

/** What differs between the two kinds a draft holds; everything else is read the same way. */
const DRAFTED: Record<Drafted["kind"], {
  apiVersion: string;
  /** Unique within the kind: "namespace/name", or the name of a cluster-scoped policy. */
  key(object: Drafted): string;
  /** The document as the parser should see it when it only names what to delete. */
  deletable(item: Record<string, unknown>): Record<string, unknown>;
  problems(object: Drafted): readonly { field: string; message: string }[];
}> = {
  NetworkPolicy: {
    apiVersion: "networking.k8s.io/v1",
    key: (p) => `${p.metadata.namespace}/${p.metadata.name}`,
    // A deletion needs only its name: give the parser an empty spec to read.
    deletable: (item) => ({ ...item, spec: { podSelector: {} } }),
    problems: (p) => {
      const normalized = normalizePolicy(p as NetworkPolicy);
      return "problems" in normalized ? normalized.problems : [];
    },
  },
  ClusterNetworkPolicy: {
    apiVersion: "policy.networking.k8s.io/v1alpha2",
    key: (p) => p.metadata.name,
    // The parser keeps a cluster policy's spec as written (validated below), absent included.
    deletable: (item) => item,
    problems: (p) => normalizeCnp(p as ClusterNetworkPolicyObject).problems ?? [],
  },
};

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The draft in the files, or DraftError listing every problem (then nothing may be replayed). */
export function parseDrafts(files: readonly DraftFile[]): Draft {
  const problems: DraftProblem[] = [];
  const upserts: NetworkPolicy[] = [];
  const deletions: Draft["deletions"] = [];
  const clusterUpserts: ClusterNetworkPolicyObject[] = [];
  const clusterDeletions: Draft["clusterDeletions"] = [];
  const seen = new Map<string, string>();
  if (files.length === 0) throw new DraftError([{ file: "(none)", document: 0, field: "", message: "no draft files given" }]);
  for (const file of files) {
    const fail = (document: number, field: string, message: string) => problems.push({ file: file.name, document, field, message });
    const docs: { index: number; value: unknown }[] = [];
    if (file.name.endsWith(".json")) {
      try {
        docs.push({ index: 0, value: JSON.parse(file.content) as unknown });
      } catch (err) {
        fail(0, "", `not valid JSON: ${(err as Error).message}`);
      }
    } else {
      parseAllDocuments(file.content).forEach((doc, index) => {
        if (doc.errors.length > 0) fail(index, "", `not valid YAML: ${doc.errors.map((e) => e.message.split("\n")[0]).join("; ")}`);
        else docs.push({ index, value: doc.toJS() as unknown });
      });
    }
    let objects = 0;
    for (const { index, value } of docs) {
      if (value === null || value === undefined) continue;
      const items = isMap(value) && value.kind === "List" && Array.isArray(value.items) ? value.items as unknown[] : [value];
      items.forEach((item, i) => {
        const prefix = items.length === 1 && item === value ? "" : `items[${i}].`;
        if (!isMap(item)) { fail(index, prefix.replace(/\.$/, ""), `expected a NetworkPolicy map, got ${describeValue(item)}`); return; }
        const kind = item.kind;
        if (kind === "AdminNetworkPolicy" || kind === "BaselineAdminNetworkPolicy") {
          fail(index, `${prefix}kind`, `${String(kind)} was replaced by ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, spec.tier Admin or Baseline)`);
          return;
        }
        if (kind !== "NetworkPolicy" && kind !== "ClusterNetworkPolicy") {
          fail(index, `${prefix}kind`, `a draft holds NetworkPolicies and ClusterNetworkPolicies only, got ${describeValue(kind)}`);
          return;
        }
        const meta = isMap(item.metadata) ? item.metadata : {};
        const annotations = isMap(meta.annotations) ? meta.annotations : {};
        const marker = annotations[DRAFT_ANNOTATION];
        if (marker !== undefined && marker !== "delete") {
          fail(index, `${prefix}metadata.annotations.${DRAFT_ANNOTATION}`, `expected "delete" (or no annotation to create or replace), got ${describeValue(marker)}`);
          return;
        }
        const rules = DRAFTED[kind];
        let object: Drafted;
        try {
          const parsed = parseDocument(marker === "delete" ? rules.deletable(item) : item);
          const first = parsed[0];
          if (parsed.length !== 1 || first?.kind !== kind) {
            fail(index, `${prefix}apiVersion`, `expected ${rules.apiVersion}, got ${describeValue(item.apiVersion)}`);
            return;
          }
          object = first as Drafted;
        } catch (err) {
          if (err instanceof FieldError) fail(index, `${prefix}${err.field}`.replace(/\.$/, ""), `${err.source}: ${err.detail}`);
          else fail(index, prefix.replace(/\.$/, ""), (err as Error).message);
          return;
        }
        objects++;
        const key = rules.key(object);
        const before = seen.get(`${kind} ${key}`);
        if (before !== undefined) { fail(index, `${prefix}metadata.name`, `${kind} ${key} is already in this draft (${before})`); return; }
        seen.set(`${kind} ${key}`, `${file.name} document ${index}`);
        if (marker === "delete") {
          (kind === "NetworkPolicy" ? deletions : clusterDeletions).push({ key, file: file.name, document: index });
          return;
        }
        const wrong = rules.problems(object);
        if (wrong.length > 0) {
          for (const p of wrong) fail(index, `${prefix}${p.field}`, `${kind} ${key}: ${p.message}`);
          return;
        }
        if (object.kind === "NetworkPolicy") upserts.push(object);
        else clusterUpserts.push(object);
      });
    }
    if (objects === 0 && !problems.some((p) => p.file === file.name)) fail(0, "", "holds no NetworkPolicy or ClusterNetworkPolicy");
  }
  if (problems.length > 0) throw new DraftError(problems);
  return { upserts, deletions, clusterUpserts, clusterDeletions };
}

/**
 * The policies in force with the draft applied. Throws DraftError when a deletion names
 * a policy not in force.
 */
export function applyDraft(active: readonly NetworkPolicy[], draft: Draft): NetworkPolicy[] {
  const key = (p: NetworkPolicy) => `${p.metadata.namespace}/${p.metadata.name}`;
  const byKey = new Map(active.map((p) => [key(p), p]));
  const missing = draft.deletions.filter((d) => !byKey.has(d.key));
  if (missing.length > 0) {
    throw new DraftError(missing.map((d) => ({ file: d.file, document: d.document, field: "metadata.name", message: `deletes NetworkPolicy ${d.key}, which is not in force` })));
  }
  for (const d of draft.deletions) byKey.delete(d.key);
  for (const p of draft.upserts) byKey.set(key(p), p);
  return [...byKey.values()];
}

/**
 * The ClusterNetworkPolicies in force with the draft applied. Throws DraftError when a
 * deletion names one not in force.
 */
export function applyClusterDraft(active: readonly ClusterNetworkPolicyObject[], draft: Draft): ClusterNetworkPolicyObject[] {
  const byName = new Map(active.map((p) => [p.metadata.name, p]));
  const missing = draft.clusterDeletions.filter((d) => !byName.has(d.key));
  if (missing.length > 0) {
    throw new DraftError(missing.map((d) => ({ file: d.file, document: d.document, field: "metadata.name", message: `deletes ClusterNetworkPolicy ${d.key}, which is not in force` })));
  }
  for (const d of draft.clusterDeletions) byName.delete(d.key);
  for (const p of draft.clusterUpserts) byName.set(p.metadata.name, p);
  return [...byName.values()];
}

/** Whether the draft changes cluster-wide policy (ClusterNetworkPolicies). */
export function draftIsClusterWide(draft: Draft): boolean {
  return draft.clusterUpserts.length > 0 || draft.clusterDeletions.length > 0;
}

/** The namespaces a draft touches (for access scopes). */
export function draftNamespaces(draft: Draft): Set<string> {
  return new Set([...draft.upserts.map((p) => p.metadata.namespace), ...draft.deletions.map((d) => d.key.slice(0, d.key.indexOf("/")))]);
}
