import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Four projects (test/README.md says which file proves what):
//  - unit: no kernel objects, no network namespaces, only 127.0.0.1:0 listeners and temp
//    folders of their own, so files run in parallel;
//  - kernel-own: real kernel objects, but only the file's own: network namespaces and
//    bpffs pins named by its process id, addresses and listeners only inside those
//    namespaces, no lab, no check of the machine's whole netns, process or BPF link lists;
//    so they run beside the kernel project. While their programs are loaded they hold the
//    census lock (test/harness/census.ts), which the kernel files that count the machine's
//    BPF programs and links (capture, addon) hold while they count. One file at a time:
//    each holds that lock for most of its run, so files in parallel would only queue on it
//    (and a census file waits for one kernel-own file at most, never for a queue of them);
//  - browser: Chromium on a control plane in the test's own process, no lab and no kernel
//    objects, the UI on 127.0.0.1:0 and a temp folder of its own, so beside the kernel
//    project too; one file at a time (each browser takes most of a core);
//  - kernel: eBPF programs, network namespaces, the lab, Chromium on the lab: one file at a
//    time (they share the machine's bpffs, netns names and fixed ports).
// One `npx vitest run` runs the groups one after the other: unit, kernel-own, browser,
// kernel. ./scripts/test runs three vitest processes at once from the start, since none
// touches what another uses but the CPU: `--project kernel`; `--project kernel-own
// --project browser`; and, after the type check and lint, `--project unit`.
// A new test file is a kernel test unless it is listed here.
const UNIT = [
  "access", "time", "cli-help", "cli-package", "deploy-docs", "kernel", "cli-output", "cluster", "flowcolumns", "flow-stream", "conformance-model", "controlplane-stream", "kubernetes-source", "layout",
  "metadata", "mtls", "node-certificates", "policy", "policy-explain", "policy-random", "policy-suggest", "policy-suggest-store", "policy-scale", "policy-class-verdicts", "policy-whatif", "policy-whatif-cases", "policy-whatif-rpc", "records",
  "store", "store-clickhouse", "store-duckdb", "ui-api", "ui-layout", "ui-timerange", "ingest-columns", "ingest-attribution", "cli-failover", "triple-key-table", "bucket-lists", "lab-supervisor", "clock-skew", "folder-scan",
].map((name) => `test/${name}.test.ts`);
const KERNEL_OWN = [
  "deploy", // first (FIRST below); netns bhdep-<pid>-node/-pod, pins /sys/fs/bpf/bhdep-<pid>-*, 10.198.0.0/30 inside them
  // harness/testbed.ts: netns <tag>-<pid>-…, pins /sys/fs/bpf/<tag>-<pid>, listeners inside them
  "enforce", // bhpol-<pid>
  "fail-closed", // bhfc-<pid>, nft tables inside its own namespaces
  "conntrack", // bhct-<pid>
  "restart", // bhrst-<pid>
  // harness/netns.ts: netns and pins bhagt-<pid>-<n>, metrics on 127.0.0.1 inside the node
  "agent",
  "cni-coexist",
  "testbed", // folders /sys/fs/bpf/bhpintest-*
].map((name) => `test/${name}.test.ts`);
/** Chromium without a lab (harness/ui-control-plane.ts). */
const BROWSER = ["ui-access-browser", "ui-tiers-browser", "ui-map-browser", "ui-history-browser"].map((name) => `test/${name}.test.ts`);
/**
 * ./scripts/test runs the kernel project in parts (BULKHEAD_KERNEL_PART), unset = all of it:
 *  - census: the files that count the machine's BPF programs and links, alone;
 *  - lab-2: files whose labs run as lab instance 2 (BULKHEAD_LAB_INSTANCE=2: netns bh2-…,
 *    folders of their own, Observer ports no lab-1 file uses), beside
 *  - lab-1: every other kernel file (the default lab names).
 */
const KERNEL_PARTS: Record<string, string[]> = {
  census: ["addon", "capture"],
  "lab-2": ["conformance-datapath", "controlplane", "conformance-random-datapath"],
};
const kernelPart = process.env.BULKHEAD_KERNEL_PART;
function kernelFiles(): { include: string[]; exclude: string[] } {
  const own = [...UNIT, ...KERNEL_OWN, ...BROWSER];
  const files = (names: string[]) => names.map((name) => `test/${name}.test.ts`);
  if (kernelPart === undefined || kernelPart === "") return { include: ["test/**/*.test.ts"], exclude: own };
  if (kernelPart === "lab-1") return { include: ["test/**/*.test.ts"], exclude: [...own, ...Object.values(KERNEL_PARTS).flatMap(files)] };
  const part = KERNEL_PARTS[kernelPart];
  if (part === undefined) throw new Error(`BULKHEAD_KERNEL_PART=${kernelPart}: expected census, lab-1 or lab-2`);
  return { include: files(part), exclude: [] };
}

/**
 * Files that go first in their project, in this order:
 *  - the kernel files that count the machine's BPF programs and links (census): so that
 *    they are done before the kernel-own files, which ./scripts/test starts at the same
 *    time, load theirs (the census lock keeps them apart either way; this keeps them from
 *    waiting for each other);
 *  - deploy, the longest kernel-own file (its schema checks and the image tree's assembly
 *    hold no lock): it starts at once and takes the lock after the census files are done;
 *  - the two longest unit files (policy-random ~70 s, controlplane-stream ~40 s), so that
 *    where vitest runs unit files in parallel (more than 2 cores) they do not end on one of
 *    them alone.
 * Without this, vitest orders a fresh clone's files by size (it has no durations yet).
 */
const FIRST = ["addon", "capture", "deploy", "policy-random", "controlplane-stream"].map((name) => `test/${name}.test.ts`);

/** vitest's order, with the FIRST files first in their project. */
class FirstFiles extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = FIRST.findIndex((first) => f.moduleId.endsWith(first));
      return i < 0 ? FIRST.length : i;
    };
    // Stable: the project order stays, FIRST files move to the front of theirs.
    return sorted.map((f, i) => ({ f, i })).sort((a, b) =>
      (a.f.project.name === b.f.project.name ? rank(a.f) - rank(b.f) : 0) || a.i - b.i).map((x) => x.f);
  }
}

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    sequence: { sequencer: FirstFiles },
    projects: [
      { extends: true, test: { name: "unit", include: UNIT, sequence: { groupOrder: 0 } } },
      {
        extends: true,
        test: { name: "kernel-own", include: KERNEL_OWN, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
      {
        extends: true,
        test: { name: "browser", include: BROWSER, fileParallelism: false, sequence: { groupOrder: 2 } },
      },
      {
        extends: true,
        test: {
          name: "kernel", ...kernelFiles(), fileParallelism: false,
          sequence: { groupOrder: 3 },
        },
      },
    ],
  },
});
