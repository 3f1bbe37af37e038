import { defineConfig } from "vitest/config";

// Tests touch the kernel (eBPF programs, network namespaces): one file at a time.
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: "forks",
  },
});
