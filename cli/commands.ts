// The commands a workstation runs: they talk to a control plane (observe, map, status,
// policy), read files (flows, policy explain on a manifests folder) or make certificates.
// None of them loads the native addon, the eBPF objects or a store engine, so this table,
// and only it, is what the workstation package bundles (cli/workstation.ts,
// scripts/package-cli). cli/main.ts adds the node and server commands on top.
import { parseArgs } from "node:util";
import { ConfigError } from "../config/flags.js";
import { outputFormat, yamlDocument } from "./output.js";
import { VERSION } from "../config/version.js";
import { PROTOCOL_VERSION } from "../config/wire.js";

export interface Command {
  name: string;
  /** One or more lines for the top-level usage (continuation lines without indentation). */
  summary: string;
  run(argv: string[]): Promise<number>;
}

const versionUsage = `usage: bulkhead version [-o text|json|yaml]

The version of this bulkhead (CLI, agent and control plane ship as one) and the wire
protocol version its agent speaks to the control plane (a control plane refuses an agent
of another protocol version).
`;

function runVersion(argv: string[]): number {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(versionUsage);
    return 0;
  }
  let output: string | undefined;
  try {
    output = parseArgs({ args: argv, options: { output: { type: "string", short: "o" } }, strict: true }).values.output;
  } catch (err) {
    throw new ConfigError(`version: ${(err as Error).message}`);
  }
  const format = outputFormat("version", output, ["text", "json", "yaml"]);
  const json = { version: VERSION, protocolVersion: PROTOCOL_VERSION };
  process.stdout.write(format === "json" ? `${JSON.stringify(json)}\n`
    : format === "yaml" ? yamlDocument(json)
    : `bulkhead ${VERSION} (agent protocol ${PROTOCOL_VERSION})\n`);
  return 0;
}

export const workstationCommands: readonly Command[] = [
  {
    name: "observe", summary: "flows from the control plane, filtered (like hubble observe)",
    run: async (argv) => (await import("./observe.js")).runObserve(argv),
  },
  {
    name: "map", summary: "the flow map of a namespace (-n NS | -A) as a table, JSON or dot",
    run: async (argv) => (await import("./map.js")).runMap(argv),
  },
  {
    name: "status", summary: "agents, record rates and every loss counter",
    run: async (argv) => (await import("./map.js")).runStatus(argv),
  },
  {
    name: "policy",
    summary: "policy explain: why a connection is allowed or denied, rule by rule;\n"
      + "policy what-if: what a draft would change for the recorded flows;\n"
      + "policy suggest: least-privilege policies from a namespace's recorded flows",
    run: async (argv) => (await import("./policy.js")).runPolicy(argv),
  },
  {
    name: "certs", summary: "create the CA and certificates of mutual TLS between agents and the control plane",
    run: async (argv) => (await import("../tls/certs-command.js")).runCerts(argv),
  },
  {
    name: "flows", summary: "print flow records from JSON-lines export files (flows tail DIR|FILE…)",
    run: async (argv) => (await import("./flows.js")).runFlows(argv),
  },
  {
    name: "version", summary: "the version and the agent protocol version (also --version; -o json)",
    run: (argv) => Promise.resolve(runVersion(argv)),
  },
];

/** The top-level usage listing `commands` in the given order, and the lines after them. */
export function topUsage(commands: readonly Command[], footer: string): string {
  const lines = commands.map((c) => {
    const [first, ...more] = c.summary.split("\n");
    return [`  ${c.name.padEnd(12)}  ${first}`, ...more.map((m) => `${" ".repeat(16)}${m}`)].join("\n");
  });
  return `usage: bulkhead <command> [flags]

commands:
${lines.join("\n")}
  help          this text; "bulkhead help <command>" or "bulkhead <command> --help" for a command's flags
${footer}`;
}

export const connectionFooter = `
observe, map and status send a bearer token when given one: --token-file FILE, --token TOKEN,
or $BULKHEAD_TOKEN; $BULKHEAD_SERVER names the control plane.
`;

/** Runs `argv` with `commands`; `refuse` answers a command this build does not hold (null: unknown). */
export async function dispatch(
  argv: string[], commands: readonly Command[], usage: string, refuse: (name: string) => string | null,
): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--version") return dispatch(["version", ...rest], commands, usage, refuse);
  if (name === "help") {
    // `bulkhead help observe` is `bulkhead observe --help`, as with kubectl and git.
    if (rest.length > 0) return dispatch([...rest, "--help"], commands, usage, refuse);
    process.stdout.write(usage);
    return 0;
  }
  if (name === undefined || name === "--help" || name === "-h") {
    process.stdout.write(usage);
    return name === undefined ? 2 : 0;
  }
  const command = commands.find((c) => c.name === name);
  if (command) return command.run(rest);
  const refusal = refuse(name);
  if (refusal !== null) {
    process.stderr.write(`bulkhead: ${refusal}\n`);
    return 2;
  }
  process.stderr.write(`bulkhead: unknown command "${name}"\n\n${usage}`);
  return 2;
}

/** The process's end: exit code from `run`, errors printed as the CLI prints them. */
export function runProcess(run: Promise<number>): void {
  // A reader that went away (`bulkhead observe | head`) ends the command quietly.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  run.then(
    (code) => { process.exitCode = code; },
    (err: unknown) => {
      const msg = err instanceof ConfigError ? err.message : (err as Error).stack ?? String(err);
      process.stderr.write(`bulkhead: ${msg}\n`);
      process.exitCode = err instanceof ConfigError ? 2 : 1;
    },
  );
}
