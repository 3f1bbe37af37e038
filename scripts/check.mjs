// Type-checks the tests, the build configs and the web UI, then lints, in one process:
// eslint's type information comes from the very programs the check built
// (typescript-eslint's parserOptions.programs), so each file is parsed and each type
// computed once instead of once by tsc and again by eslint. The same as
// `tsc -p tsconfig.test.json && tsc -p ui/tsconfig.json && eslint .`; the product's own
// check without the DOM library (`tsc -p tsconfig.json`) is scripts/build's.
//
// usage: node scripts/check.mjs   (exit 1 if a type error or a lint error was found)
import path from "node:path";
import process from "node:process";
import ts from "typescript";
import { ESLint } from "eslint";

const root = path.resolve(import.meta.dirname, "..");
const CONFIGS = ["tsconfig.test.json", "ui/tsconfig.json"];

/** The program of one tsconfig, as tsc builds it; parent pointers set, as eslint needs. */
function programOf(configPath) {
  const config = ts.getParsedCommandLineOfConfigFile(path.join(root, configPath), undefined, {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(ts.flattenDiagnosticMessageText(d.messageText, "\n")); },
  });
  if (!config) throw new Error(`${configPath}: cannot be read`);
  const host = ts.createCompilerHost(config.options, true);
  host.jsDocParsingMode = ts.JSDocParsingMode.ParseForTypeErrors; // what tsc parses
  const program = ts.createProgram({ rootNames: config.fileNames, options: config.options, host, configFileParsingDiagnostics: config.errors });
  return { program, host };
}

let failed = false;
const programs = [];
for (const configPath of CONFIGS) {
  const { program, host } = programOf(configPath);
  programs.push(program);
  const diagnostics = ts.getPreEmitDiagnostics(program);
  if (diagnostics.length) {
    failed = true;
    process.stderr.write(ts.formatDiagnosticsWithColorAndContext(diagnostics, {
      getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => host.getNewLine(),
    }));
    console.error(`check: ${diagnostics.length} type error(s) in ${configPath}`);
  }
}

const eslint = new ESLint({
  cwd: root,
  overrideConfig: { files: ["**/*.ts"], languageOptions: { parserOptions: { programs } } },
});
const results = await eslint.lintFiles(["."]);
const text = (await eslint.loadFormatter("stylish")).format(results);
if (text) process.stdout.write(text);
if (results.some((r) => r.errorCount > 0)) {
  failed = true;
  console.error("check: lint errors");
}
process.exit(failed ? 1 : 0);
