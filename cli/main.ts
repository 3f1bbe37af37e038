// The `bulkhead` command: one entry point, one handler per subcommand. The workstation
// commands (cli/commands.ts) plus those that run on a node or as the server, which need
// the native addon, the eBPF objects or a store engine and so are loaded only when run.
import { type Command, connectionFooter, dispatch, runProcess, topUsage, workstationCommands } from "./commands.js";

const nodeCommands: Command[] = [
  {
    name: "agent", summary: "run the node agent (flow capture on every pod veth of this node)",
    run: async (argv) => (await import("../agent/main.js")).runAgent(argv),
  },
  {
    name: "controlplane", summary: "run the control plane (ingest, enrichment, Observer API)",
    run: async (argv) => (await import("../controlplane/main.js")).runControlPlane(argv),
  },
  {
    name: "lab", summary: "build and drive the lab cluster datapath (lab up|down|status|exec|pod …)",
    run: async (argv) => (await import("../lab/cli.js")).runLab(argv),
  },
  {
    name: "probe", summary: "send or serve test traffic inside a lab pod (udp, tcp, sctp)",
    run: async (argv) => (await import("../lab/probe.js")).runProbe(argv),
  },
];

const byName = (name: string): Command => {
  const found = [...nodeCommands, ...workstationCommands].find((c) => c.name === name);
  if (!found) throw new Error(`no command ${name}`);
  return found;
};

// The order of the usage: running things first, then reading them, then tools.
const commands = ["agent", "controlplane", "observe", "map", "status", "policy", "certs", "lab", "probe", "flows", "version"]
  .map(byName);

runProcess(dispatch(process.argv.slice(2), commands, topUsage(commands, connectionFooter), () => null));
