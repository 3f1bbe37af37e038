// The entry of the workstation CLI package (scripts/package-cli bundles it into one file):
// the commands that only talk to a control plane or read files. The node and server
// commands need the native addon, the eBPF objects and a store engine, which the package
// does not carry; they are refused by name, saying where they run.
import { connectionFooter, dispatch, runProcess, topUsage, workstationCommands } from "./commands.js";

/** The commands of the full install that this package leaves out, and why. */
export const NOT_IN_PACKAGE: Record<string, string> = {
  agent: "the node agent needs the native addon (libbpf) and the eBPF objects: it runs from the agent image (deploy/README.md)",
  controlplane: "the control plane needs its store engine and protocol files: it runs from the control-plane image (deploy/README.md)",
  lab: "the lab needs the native addon, the eBPF objects and root: run it from a build of the repository (./scripts/setup)",
  probe: "probe runs inside lab pods: run it from a build of the repository (./scripts/setup)",
};

const footer = `${connectionFooter}
This is the workstation package: ${Object.keys(NOT_IN_PACKAGE).join(", ")} run from the images or a build
of the repository.
`;

runProcess(dispatch(process.argv.slice(2), workstationCommands, topUsage(workstationCommands, footer), (name) => {
  const why = NOT_IN_PACKAGE[name];
  return why === undefined ? null : `"${name}" is not in the workstation CLI package: ${why}`;
}));
