// Where bulkhead's files are: the repository (or image) root that holds package.json,
// proto/, native/build/ and dist/. Found by walking up from this module, so it is the same
// whether the code runs from sources (vitest) or from dist/ (the built CLI).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

function findRepoRoot(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, "package.json");
    if (existsSync(pkg) && /"name"\s*:\s*"bulkhead"/.test(readFileSync(pkg, "utf8"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`cannot find bulkhead's package.json above ${start}`);
  }
}

export const repoRoot = findRepoRoot();

/** The built CLI (`npm run build:ts`), which the lab, the tests and the benchmarks start as subprocesses. */
export const cliMain = path.join(repoRoot, "dist", "cli", "main.js");
