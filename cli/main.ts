// The `bulkhead` command: one entry point, one handler per subcommand.
import { parseArgs } from "node:util";
import pino from "pino";
import { parseAgentArgs, agentUsage } from "../agent/config.js";
import { ConfigError } from "../config/flags.js";
import { outputFormat, yamlDocument } from "./output.js";
import { VERSION } from "../config/version.js";
import { PROTOCOL_VERSION } from "../agent/controlplane/connection.js";
import { Agent } from "../agent/agent.js";
import { PinDir } from "../agent/pins.js";
import { agentKubeConfig, requestNodeCertificate } from "../agent/node-certificate.js";
import { StopSignals } from "../config/signals.js";

const usage = `usage: bulkhead <command> [flags]

commands:
  agent         run the node agent (flow capture on every pod veth of this node)
  controlplane  run the control plane (ingest, enrichment, Observer API)
  observe       flows from the control plane, filtered (like hubble observe)
  map           the flow map of a namespace (-n NS | -A) as a table, JSON or dot
  status        agents, record rates and every loss counter
  policy        policy explain: why a connection is allowed or denied, rule by rule;
                policy what-if: what a draft would change for the recorded flows;
                policy suggest: least-privilege policies from a namespace's recorded flows
  certs         create the CA and certificates of mutual TLS between agents and the control plane
  lab           build and drive the lab cluster datapath (lab up|down|status|exec|pod …)
  probe         send or serve test traffic inside a lab pod (udp, tcp, sctp)
  flows         print flow records from JSON-lines export files (flows tail DIR|FILE…)
  version       the version and the agent protocol version (also --version; -o json)
  help          this text; "bulkhead help <command>" or "bulkhead <command> --help" for a command's flags

observe, map and status send a bearer token when given one: --token-file FILE, --token TOKEN,
or $BULKHEAD_TOKEN; $BULKHEAD_SERVER names the control plane.
`;

async function runAgent(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(agentUsage);
    return 0;
  }
  let config = parseAgentArgs(argv);
  if (config.uninstall) {
    const removed = new PinDir(config.bpfDir).uninstall();
    process.stdout.write(`${JSON.stringify({ uninstalled: config.bpfDir, ...removed })}\n`);
    return 0;
  }
  const log = pino({ level: config.logLevel, base: { node: config.node } });
  if (config.tlsBootstrap !== undefined) {
    const { kubeconfig, certFile, keyFile, timeoutMs, problem } = config.tlsBootstrap;
    log.info({ reason: problem }, "requesting this node's certificate through the Kubernetes CSR API (--tls-bootstrap)");
    try {
      await requestNodeCertificate({ kubeConfig: agentKubeConfig(kubeconfig), node: config.node, certFile, keyFile, timeoutMs, log });
    } catch (err) {
      log.fatal({ err: (err as Error).message }, "no node certificate");
      process.stderr.write(`bulkhead agent: --tls-bootstrap: ${(err as Error).message}\n`);
      return 1;
    }
    config = parseAgentArgs(argv);
    if (config.tlsBootstrap !== undefined) {
      process.stderr.write(`bulkhead agent: --tls-bootstrap: the issued certificate cannot serve: ${config.tlsBootstrap.problem}\n`);
      return 1;
    }
  }
  const agent = new Agent(config, log);
  const signals = new StopSignals();
  try {
    await agent.start();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "agent failed to start");
    await agent.stop().catch(() => undefined);
    return 1;
  }
  return await new Promise<number>((resolve) => signals.onStop((signal) => {
    log.info({ signal }, "stopping");
    agent.stop().then(() => resolve(0), (err: Error) => {
      log.error({ err: err.message }, "stop failed");
      resolve(1);
    });
  }));
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

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "agent":
      return runAgent(rest);
    case "lab": {
      const { runLab } = await import("../lab/cli.js");
      return runLab(rest);
    }
    case "observe": {
      const { runObserve } = await import("./observe.js");
      return runObserve(rest);
    }
    case "map": {
      const { runMap } = await import("./map.js");
      return runMap(rest);
    }
    case "status": {
      const { runStatus } = await import("./map.js");
      return runStatus(rest);
    }
    case "controlplane": {
      const { runControlPlane } = await import("../controlplane/main.js");
      return runControlPlane(rest);
    }
    case "policy": {
      const { runPolicy } = await import("./policy.js");
      return runPolicy(rest);
    }
    case "certs": {
      const { runCerts } = await import("../tls/certs-command.js");
      return runCerts(rest);
    }
    case "probe": {
      const { runProbe } = await import("../lab/probe.js");
      return runProbe(rest);
    }
    case "flows": {
      const { runFlows } = await import("./flows.js");
      return runFlows(rest);
    }
    case "version":
    case "--version":
      return runVersion(rest);
    case "help":
      // `bulkhead help observe` is `bulkhead observe --help`, as with kubectl and git.
      if (rest.length > 0) return main([...rest, "--help"]);
      process.stdout.write(usage);
      return 0;
    case undefined:
    case "--help":
    case "-h":
      process.stdout.write(usage);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`bulkhead: unknown command "${command}"\n\n${usage}`);
      return 2;
  }
}

// A reader that went away (`bulkhead observe | head`) ends the command quietly.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(0);
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    const msg = err instanceof ConfigError ? err.message : (err as Error).stack ?? String(err);
    process.stderr.write(`bulkhead: ${msg}\n`);
    process.exitCode = err instanceof ConfigError ? 2 : 1;
  },
);
