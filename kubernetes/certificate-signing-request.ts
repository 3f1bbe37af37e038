// A certificates.k8s.io/v1 CertificateSigningRequest as the API server sends it (in lists,
// watch events and answers), read field by field: the agent waiting for its certificate
// and the control plane's signer both act on what this returns, never on the raw JSON.
import { FieldError, FieldReader, fieldPath } from "../fields/reader.js";

export interface CsrCondition {
  type: string;
  /** "True" unless the condition says otherwise (the API's default). */
  status: string;
  reason: string;
  message: string;
}

export interface CertificateSigningRequest {
  name: string;
  resourceVersion: string;
  signerName: string;
  /** spec.request, still base64 of the PEM as on the wire. */
  request: string;
  usages: string[];
  /** Set by the API server from the requester's credentials. */
  username: string;
  extra: Record<string, string[]>;
  expirationSeconds: number | undefined;
  conditions: CsrCondition[];
  /** status.certificate, base64 of the PEM; undefined until issued. */
  certificate: string | undefined;
}

/** Reads one CSR; throws a FieldError naming the CSR and the field that is wrong. */
export function parseCertificateSigningRequest(doc: unknown): CertificateSigningRequest {
  const r = new FieldReader("CertificateSigningRequest", { nullIsAbsent: true });
  const top = r.map(doc, "");
  const meta = r.map(top.metadata, "metadata");
  const name = r.nonEmptyString(meta.name, "metadata.name");
  r.source = `CertificateSigningRequest ${name}`;
  const spec = r.map(top.spec, "spec");
  const status = r.optionalMap(top.status, "status") ?? {};
  const extraMap = r.optionalMap(spec.extra, "spec.extra") ?? {};
  const extra: Record<string, string[]> = {};
  for (const [key, values] of Object.entries(extraMap)) {
    const f = fieldPath("spec.extra", key);
    extra[key] = r.optionalList(values, f).map((v, i) => r.string(v, fieldPath(f, i)));
  }
  return {
    name,
    resourceVersion: r.nonEmptyString(meta.resourceVersion, "metadata.resourceVersion"),
    signerName: r.nonEmptyString(spec.signerName, "spec.signerName"),
    request: r.nonEmptyString(spec.request, "spec.request"),
    usages: r.optionalList(spec.usages, "spec.usages").map((u, i) => r.string(u, fieldPath("spec.usages", i))),
    username: r.optionalString(spec.username, "spec.username") ?? "",
    extra,
    expirationSeconds: r.optionalInt(spec.expirationSeconds, "spec.expirationSeconds", 600, 2 ** 31 - 1),
    conditions: r.optionalList(status.conditions, "status.conditions").map((c, i) => {
      const f = fieldPath("status.conditions", i);
      const m = r.map(c, f);
      return {
        type: r.nonEmptyString(m.type, fieldPath(f, "type")),
        status: r.optionalString(m.status, fieldPath(f, "status")) ?? "True",
        reason: r.optionalString(m.reason, fieldPath(f, "reason")) ?? "",
        message: r.optionalString(m.message, fieldPath(f, "message")) ?? "",
      };
    }),
    certificate: r.optionalString(status.certificate, "status.certificate"),
  };
}

/** The condition of that type that holds (status True), if any. */
export function conditionOf(csr: CertificateSigningRequest, type: string): CsrCondition | undefined {
  return csr.conditions.find((c) => c.type === type && c.status === "True");
}

export { FieldError };
