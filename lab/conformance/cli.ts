// `bulkhead lab conformance`: runs a NetworkPolicy cases file on one engine and reports.
// runConformanceCli takes the arguments after "conformance" and returns the exit code:
// 0 every case passed, 1 some failed (or the engine could not run), 2 usage error.
//
// Output: one line per case (and per wrong probe), then "N passed, M failed" as the last
// line. With --json, stdout is only the JSON report (so it pipes into jq) and the summary
// line goes to stderr.
import { parseArgs } from "node:util";
import {
  loadConformanceCases,
  ModelEngine,
  runConformance,
  SnapshotEngine,
  summaryLine,
  type ConformanceEngine,
} from "./cases.js";

export interface ConformanceIO {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

export const ENGINES = ["model", "snapshot", "datapath"] as const;
export type EngineName = (typeof ENGINES)[number];

/** The datapath engine (./datapath.ts); loaded only when asked for: it brings the whole lab. */
const DATAPATH_MODULE = "./datapath.js";

const USAGE = `usage: bulkhead lab conformance --cases FILE [--case ID] [-o text|json] [--engine model|snapshot|datapath]

  --cases FILE   NetworkPolicy cases (format: shared/conformance/README.md)
  --case ID      run only this case
  -o json        print the report as JSON (the summary line goes to stderr); --json is the same
  --engine E     datapath (default): real packets in the lab;
                 model: the policy model; snapshot: the compiled policy as the kernel reads it
`;

class UsageError extends Error {}

export async function runConformanceCli(argv: readonly string[], io: ConformanceIO = process): Promise<number> {
  let values: { cases?: string; case?: string; json?: boolean; output?: string; engine?: string; help?: boolean };
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        cases: { type: "string" },
        case: { type: "string" },
        json: { type: "boolean" },
        output: { type: "string", short: "o" },
        engine: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      allowPositionals: false,
      strict: true,
    }).values;
  } catch (err) {
    return usage(io, (err as Error).message.replace(/\. To specify a positional.*$/s, ""));
  }
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  try {
    if (values.cases === undefined || values.cases === "") throw new UsageError("--cases FILE is required");
    const engineName = values.engine ?? "datapath";
    if (!(ENGINES as readonly string[]).includes(engineName)) throw new UsageError(`--engine: expected one of ${ENGINES.join(", ")}, got ${JSON.stringify(engineName)}`);
    const cases = await loadConformanceCases(values.cases);
    if (values.case !== undefined && !cases.some((c) => c.id === values.case)) {
      throw new UsageError(`--case: no case ${JSON.stringify(values.case)} in ${values.cases} (it has ${cases.map((c) => c.id).join(", ")})`);
    }
    if (values.output !== undefined && values.output !== "text" && values.output !== "json") {
      throw new UsageError(`-o/--output: "${values.output}" is not one of text, json`);
    }
    if (values.json === true && values.output === "text") throw new UsageError("--json and -o text: give one of them");
    const json = values.json === true || values.output === "json";
    const log = (line: string) => {
      if (!json) io.stdout.write(`${line}\n`);
    };
    const engine = await createEngine(engineName as EngineName, (line) => io.stderr.write(`${line}\n`));
    const options = values.case === undefined ? { log } : { log, caseId: values.case };
    const report = await runConformance(cases, engine, options);
    if (json) {
      io.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      io.stderr.write(`${summaryLine(report)}\n`);
    } else {
      io.stdout.write(`${summaryLine(report)}\n`);
    }
    return report.failed === 0 ? 0 : 1;
  } catch (err) {
    if (err instanceof UsageError) return usage(io, err.message);
    io.stderr.write(`bulkhead lab conformance: ${(err as Error).message}\n`);
    return 1;
  }
}

function usage(io: ConformanceIO, message: string): number {
  io.stderr.write(`bulkhead lab conformance: ${message}\n${USAGE}`);
  return 2;
}

export async function createEngine(name: EngineName, log: (line: string) => void): Promise<ConformanceEngine> {
  switch (name) {
    case "model":
      return new ModelEngine();
    case "snapshot":
      return new SnapshotEngine();
    case "datapath":
      return loadDatapathEngine(log);
  }
}

/** The lab's engine, from `specifier` (the lab's module unless a test points elsewhere). */
export async function loadDatapathEngine(log: (line: string) => void, specifier: string = DATAPATH_MODULE): Promise<ConformanceEngine> {
  let module: unknown;
  try {
    // A variable specifier: type-checking must not depend on the lab's module existing.
    module = await import(specifier);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === "ERR_MODULE_NOT_FOUND" || /Cannot find module|Failed to load url|does not exist/i.test((err as Error).message)) {
      throw new Error("the datapath engine is not available: lab/conformance/datapath.ts (createDatapathEngine) is missing from this build; use --engine model or --engine snapshot, or build the lab");
    }
    throw new Error(`loading the datapath engine (lab/conformance/datapath.ts): ${(err as Error).message}`);
  }
  const factory = (module as { createDatapathEngine?: unknown }).createDatapathEngine;
  if (typeof factory !== "function") throw new Error("lab/conformance/datapath.ts does not export createDatapathEngine(opts): Promise<ConformanceEngine>");
  const engine: unknown = await (factory as (opts: { log: (line: string) => void }) => Promise<unknown>)({ log });
  const e = engine as Partial<ConformanceEngine> | null;
  if (e === null || typeof e !== "object" || typeof e.setup !== "function" || typeof e.apply !== "function" || typeof e.probe !== "function" || typeof e.teardown !== "function") {
    throw new Error("createDatapathEngine() did not return a ConformanceEngine (setup, apply, probe, teardown)");
  }
  return e as ConformanceEngine;
}

