// The workstation CLI package built (scripts/package-cli.mjs) and installed the way a
// workstation would, into an empty folder: offline, with an empty npm cache and a registry
// nobody serves, so any dependency not in the tarball fails the install (ENOTCACHED)
// instead of being fetched. For test/cli-package.test.ts and the lab test that runs its
// observe against a lab.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { repoRoot } from "../../config/install.js";

const run = promisify(execFile);

export interface InstalledCliPackage {
  tarball: string;
  /** The installed `bulkhead` (node_modules/.bin). */
  bin: string;
  /** A workstation's environment: PATH and HOME only (no bulkhead variables, no user npm configuration). */
  env: NodeJS.ProcessEnv;
}

/** Builds the package into `dir`/dist and installs it into `dir`/workstation. */
export async function installCliPackage(dir: string): Promise<InstalledCliPackage> {
  fs.mkdirSync(dir, { recursive: true });
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "", HOME: dir };
  const built = await run(process.execPath, [path.join(repoRoot, "scripts", "package-cli.mjs"), "--out", path.join(dir, "dist")], { cwd: repoRoot });
  const tarball = built.stdout.trim().split(" ")[0]!;
  const workstation = path.join(dir, "workstation");
  fs.mkdirSync(workstation);
  await run("npm", ["install", "--offline", "--cache", path.join(dir, "npm-cache"), "--registry", "http://127.0.0.1:9/",
    "--no-audit", "--no-fund", "--ignore-scripts", tarball], { cwd: workstation, env });
  return { tarball, bin: path.join(workstation, "node_modules", ".bin", "bulkhead"), env };
}
