#!/usr/bin/env node
// Builds the workstation CLI package: cli/workstation.ts and every JavaScript dependency it
// reaches bundled by esbuild into one file, in an npm package with no dependencies, packed
// as dist/cli-package/bulkhead-VERSION.tgz. It installs offline (`npm install -g ./bulkhead-….tgz`)
// and needs neither the native addon nor clang or libbpf: it holds only observe, map,
// status, policy, certs, flows and version, and refuses the rest by name.
//
// usage: node scripts/package-cli.mjs [--out DIR]     (npm run package:cli; needs proto/gen from `npm run build:proto`)
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({ options: { out: { type: "string" } }, strict: true });
const out = path.resolve(values.out ?? path.join(root, "dist", "cli-package"));
const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
const staging = path.join(out, "package");

rmSync(staging, { recursive: true, force: true });
mkdirSync(staging, { recursive: true });

const result = await build({
  entryPoints: [path.join(root, "cli", "workstation.ts")],
  outfile: path.join(staging, "bulkhead.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: `node${pkg.engines.node.replace(/^>=/, "")}`,
  // CommonJS dependencies (yaml, grpc-js) call require() for Node's own modules; an ES module has none.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __bulkheadRequire } from \"node:module\";\nconst require = __bulkheadRequire(import.meta.url);" },
  legalComments: "eof",
  logLevel: "warning",
  metafile: true,
});
// What went into the bundle, for test/cli-package.test.ts (no addon, agent, store engine).
writeFileSync(path.join(out, "meta.json"), JSON.stringify(result.metafile));

// Named "bulkhead" like the repository's package: config/install.ts finds the install's
// root (and config/version.ts its version) by that name.
writeFileSync(path.join(staging, "package.json"), `${JSON.stringify({
  name: "bulkhead",
  version: pkg.version,
  description: `${pkg.description}: the workstation CLI (observe, map, status, policy, certs, flows, version)`,
  license: pkg.license,
  type: "module",
  engines: pkg.engines,
  bin: { bulkhead: "bulkhead.mjs" },
  files: ["bulkhead.mjs", "README.md"],
}, null, 2)}\n`);
writeFileSync(path.join(staging, "README.md"), `# bulkhead ${pkg.version}, workstation CLI

\`bulkhead observe\`, \`map\`, \`status\`, \`policy\`, \`certs\`, \`flows\` and \`version\` against a
bulkhead control plane, in one file with its dependencies (no native code, no install
scripts). The agent, the control plane and the lab run from the images or a build of the
repository. Node ${pkg.engines.node}.
`);

const tarball = execFileSync("npm", ["pack", "--silent", "--pack-destination", out], { cwd: staging, encoding: "utf8" }).trim();
const file = path.join(out, tarball);
process.stdout.write(`${file} (${(statSync(file).size / 1024).toFixed(0)} KiB; bundle ${(statSync(path.join(staging, "bulkhead.mjs")).size / 1024).toFixed(0)} KiB)\n`);
