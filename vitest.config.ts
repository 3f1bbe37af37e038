import { defineConfig } from "vitest/config";

// Two projects (test/README.md says which file proves what):
//  - unit: no kernel objects, no network namespaces, only 127.0.0.1:0 listeners and temp
//    folders of their own, so files run in parallel;
//  - kernel: eBPF programs, network namespaces, the lab, Chromium: one file at a time,
//    after the unit project (they share the machine's bpffs, netns names and CPU).
// A new test file is a kernel test unless it is listed here.
const UNIT = [
  "access", "time", "cli-help", "cli-package", "deploy-docs", "kernel", "cli-output", "cluster", "flowcolumns", "flow-stream", "conformance-model", "controlplane-stream", "kubernetes-source", "layout",
  "metadata", "mtls", "node-certificates", "policy", "policy-explain", "policy-random", "policy-suggest", "policy-suggest-store", "policy-scale", "policy-class-verdicts", "policy-whatif", "policy-whatif-cases", "policy-whatif-rpc", "records",
  "store", "store-clickhouse", "store-duckdb", "ui-api", "ui-layout", "ui-timerange", "ingest-columns", "cli-failover", "triple-key-table",
].map((name) => `test/${name}.test.ts`);

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    projects: [
      { extends: true, test: { name: "unit", include: UNIT, sequence: { groupOrder: 0 } } },
      {
        extends: true,
        test: { name: "kernel", include: ["test/**/*.test.ts"], exclude: UNIT, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
