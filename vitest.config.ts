import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

// Three projects (test/README.md says which file proves what):
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
//  - kernel: eBPF programs, network namespaces, the lab, Chromium: one file at a time
//    (they share the machine's bpffs, netns names and fixed ports).
// One `npx vitest run` runs the groups one after the other: unit, kernel-own, kernel.
// ./scripts/test runs them as two vitest processes at once (`--project unit --project
// kernel-own`, and `--project kernel`), since neither touches what the other uses but the
// CPU; there kernel-own starts after the unit files, long after the census files, which
// the kernel project runs first.
// A new test file is a kernel test unless it is listed here.
const UNIT = [
  "access", "time", "cli-help", "cli-package", "deploy-docs", "kernel", "cli-output", "cluster", "flowcolumns", "flow-stream", "conformance-model", "controlplane-stream", "kubernetes-source", "layout",
  "metadata", "mtls", "node-certificates", "policy", "policy-explain", "policy-random", "policy-suggest", "policy-suggest-store", "policy-scale", "policy-class-verdicts", "policy-whatif", "policy-whatif-cases", "policy-whatif-rpc", "records",
  "store", "store-clickhouse", "store-duckdb", "ui-api", "ui-layout", "ui-timerange", "ingest-columns", "ingest-attribution", "cli-failover", "triple-key-table", "lab-supervisor",
].map((name) => `test/${name}.test.ts`);
const KERNEL_OWN = [
  "deploy", // netns bhdep-<pid>-node/-pod, pins /sys/fs/bpf/bhdep-<pid>-*, 10.198.0.0/30 inside them
  // harness/testbed.ts: netns <tag>-<pid>-…, pins /sys/fs/bpf/<tag>-<pid>, listeners inside them
  "enforce", // bhpol-<pid>
  "fail-closed", // bhfc-<pid>, nft tables inside its own namespaces
  "conntrack", // bhct-<pid>
  "restart", // bhrst-<pid>
  // harness/netns.ts: netns and pins bhagt-<pid>-<n>, metrics on 127.0.0.1 inside the node
  "agent",
  "cni-coexist",
].map((name) => `test/${name}.test.ts`);
/** Kernel files that count the machine's BPF programs and links: first in the kernel
 * project, so that they are done before the kernel-own files (after the type check, lint
 * and unit files in ./scripts/test) load theirs; the census lock keeps them apart either way. */
const CENSUS = ["addon", "capture"].map((name) => `test/${name}.test.ts`);

/** vitest's order, with the census files first in their project. */
class CensusFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const first = (f: TestSpecification) => (CENSUS.some((c) => f.moduleId.endsWith(c)) ? 0 : 1);
    // Stable: the project order stays, census files move to the front of theirs.
    return sorted.map((f, i) => ({ f, i })).sort((a, b) =>
      (a.f.project.name === b.f.project.name ? first(a.f) - first(b.f) : 0) || a.i - b.i).map((x) => x.f);
  }
}

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    sequence: { sequencer: CensusFirst },
    projects: [
      { extends: true, test: { name: "unit", include: UNIT, sequence: { groupOrder: 0 } } },
      {
        extends: true,
        test: { name: "kernel-own", include: KERNEL_OWN, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
      {
        extends: true,
        test: {
          name: "kernel", include: ["test/**/*.test.ts"], exclude: [...UNIT, ...KERNEL_OWN], fileParallelism: false,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
