// Readable names for people: Kubernetes appends generated suffixes to pod names
// (Deployment pods: `<name>-<pod-template-hash>-<5 chars>`; StatefulSet pods `<name>-0`,
// DaemonSet and Job pods `<name>-<5 chars>`). Tables show the name with the template hash
// cut (`catalog-…x2k4p`); the full name stays in the cell's title. Pure, unit-tested.

/** The characters Kubernetes draws generated suffixes from (no vowels, no 0 1 3). */
const ALNUM = "bcdfghjklmnpqrstvwxz2456789";
const TEMPLATE_HASH = new RegExp(`^(.+)-[${ALNUM}]{6,10}-([${ALNUM}]{5})$`);

/**
 * `catalog-7d9f8b6c5d-x2k4p` → `catalog-…x2k4p`; anything else as it is. With the pod's
 * workload known (a Deployment named `catalog`), whatever sits between its name and the last
 * suffix is the template hash; without it, only Kubernetes' own suffix alphabet counts as one.
 */
export function shortPodName(name: string, workload?: { kind: string; name: string }): string {
  if (workload?.kind === "Deployment" && name.startsWith(`${workload.name}-`)) {
    const m = /^[a-z0-9]+-([a-z0-9]+)$/.exec(name.slice(workload.name.length + 1));
    if (m) return `${workload.name}-…${m[1]}`;
  }
  const m = TEMPLATE_HASH.exec(name);
  return m ? `${m[1]}-…${m[2]}` : name;
}
