// The Kubernetes version the control plane needs, read from the API server's /version at
// start: 1.21, where the two newest APIs it watches became GA (EndpointSlice
// discovery.k8s.io/v1 and CronJob batch/v1). An older server would answer 404 on those
// lists forever; refusing at start names both versions instead.
import { describeValue, FieldReader } from "../../fields/reader.js";

export const MIN_KUBERNETES = { major: 1, minor: 21 } as const;
const WHY = "EndpointSlice discovery.k8s.io/v1 and CronJob batch/v1 are GA from 1.21";

export interface KubernetesVersion {
  major: number;
  minor: number;
  /** As the server spells it, e.g. "v1.29.4-eks-036c24b"; empty when it sent none. */
  gitVersion: string;
}

/** Why a server of version `v` cannot be used, or undefined when it can. */
export function kubernetesVersionRefusal(v: KubernetesVersion, server: string): string | undefined {
  if (v.major > MIN_KUBERNETES.major || (v.major === MIN_KUBERNETES.major && v.minor >= MIN_KUBERNETES.minor)) return undefined;
  const found = v.gitVersion !== "" ? `${v.gitVersion} (${v.major}.${v.minor})` : `${v.major}.${v.minor}`;
  return `the Kubernetes API server at ${server} runs ${found}; bulkhead needs ${MIN_KUBERNETES.major}.${MIN_KUBERNETES.minor} or newer (${WHY})`;
}

/**
 * The version.Info document of GET /version. `major` and `minor` are strings, and managed
 * clusters append to them ("21+" on EKS and GKE); the leading digits count.
 */
export function parseKubernetesVersion(body: unknown, server: string): KubernetesVersion {
  const source = `GET ${server}/version`;
  const r: FieldReader = new FieldReader(source, { nullIsAbsent: true });
  const doc = r.map(body, "");
  const number = (field: "major" | "minor"): number => {
    const text = r.string(doc[field], field);
    const m = /^([0-9]+)\+?$/.exec(text);
    if (!m) r.fail(field, `expected a version number such as "1" or "21+", got ${describeValue(text)}`);
    return Number(m[1]);
  };
  const gitVersion = r.optionalString(doc.gitVersion, "gitVersion") ?? "";
  return { major: number("major"), minor: number("minor"), gitVersion };
}
