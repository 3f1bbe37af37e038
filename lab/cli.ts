// `bulkhead lab …`: the command-line face of lab.ts. runLab takes the arguments after "lab"
// and returns the exit code: 0 done, 1 failed, 2 usage error (the message names the flag).
import { parseArgs, type ParseArgsConfig } from "node:util";
import { constants } from "node:os";
import path from "node:path";
import { LAB_STORE_KINDS, Lab, down, up, type LabStatus, type LabStoreKind, type PodInput, type RestartTarget, type UpOptions } from "./lab.js";
import { supervise } from "./supervisor.js";
import { FieldError } from "../fields/reader.js";
import { MAX_NODES, PROTOCOLS, defaultTopology, loadTopology, type Protocol } from "./topology.js";
import { startTraffic } from "./traffic.js";
import { DEFAULT_STATE_DIR, LabNotUpError, requireState } from "./state.js";
import { DEFAULT_UI_ADDRESS, MAX_CONTROLPLANES, uiUrl } from "./controlplane.js";
import { DRAIN_INTERVAL_RANGE_MS } from "./agents.js";

export interface LabIO {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

const USAGE = `usage: bulkhead lab <command> [--state-dir DIR]

  up [--nodes N] [--topology FILE] [--export-dir DIR] [--no-agents] [--ui HOST:PORT | --no-ui] [--traffic] [--insecure]
     [--store embedded|clickhouse] [--controlplanes N] [--drain-interval MS]
                              build the lab (removes a previous one first); its control plane
                              serves the web UI on --ui (default ${DEFAULT_UI_ADDRESS}, loopback);
                              --traffic runs the topology's traffic section until \`lab down\`;
                              agents and control plane use mutual TLS (certificates in
                              <state dir>/tls/) unless --insecure; the flow history is in the
                              embedded store (<state dir>/store) unless --store clickhouse: a
                              clickhouse-server on loopback (<state dir>/clickhouse), run by the
                              supervisor, shared by --controlplanes N replicas (1-${MAX_CONTROLPLANES}, default 1;
                              replica i on the Observer and UI ports + 2i); every agent gets
                              every replica and moves to another when its own is lost;
                              --drain-interval: the agents' (default theirs, 1000)
  down                        remove every lab netns, agent, control plane, store, pin and the state
  status [-o table|json]      nodes, pods, services; agents, control-plane replicas and the
                              ClickHouse server with pid, running and restarts
  restart agent [NODE] | controlplane [INDEX|NAME] | store [--kill]
                              stop one (SIGTERM, or SIGKILL with --kill; every agent, or every
                              replica, when none is named) and wait until the supervisor has it
                              up again (healthz, GetStatus, an authenticated ClickHouse query)
  stop agent [NODE] | controlplane [INDEX|NAME] | store [--kill]
                              scale to zero: the supervisor holds it down, then it is stopped
  start agent [NODE] | controlplane [INDEX|NAME] | store
                              undo stop: started again, returns when it serves
  exec NS/POD -- CMD...       run CMD in the pod's network namespace
  pod add NS/NAME [--node N] [--label k=v]... [--port [name:]port[/TCP|UDP|SCTP]]...
  pod delete NS/NAME
  pod label NS/NAME k=v... [k-]...
  traffic [--topology FILE]   run the traffic section (default: of the lab's topology) until Ctrl-C
  conformance --cases FILE [--case ID] [-o text|json] [--engine datapath|model|snapshot]
                              NetworkPolicy reachability cases on the real datapath (or the models)

\`up\` starts a supervisor (\`lab supervise\`, log in <state dir>/logs/supervisor.log) that
starts the control plane replicas, the ClickHouse server and the agents again when they
exit; \`down\` stops it first.

The state dir defaults to $BULKHEAD_LAB_STATE_DIR or ${DEFAULT_STATE_DIR}.
`;

class UsageError extends Error {}

/**
 * One command's lines of USAGE ("pod" has three), as a usage text of its own; the whole
 * USAGE for a command it does not list.
 */
function commandUsage(command: string): string {
  const out: string[] = [];
  let inside = false;
  for (const line of USAGE.split("\n")) {
    if (/^ {2}\S/.test(line)) inside = line.slice(2).split(" ")[0] === command;
    else if (!/^ {3,}\S/.test(line)) inside = false;
    if (inside) out.push(/^ {2}\S/.test(line) ? `  bulkhead lab ${line.slice(2)}` : `             ${line}`);
  }
  if (out.length === 0) return USAGE;
  return `usage:\n${out.join("\n")}\n\n--state-dir DIR on every command; "bulkhead lab help" lists them all.\n`;
}

/** `--help` or `-h` among a command's own flags (for exec, before the "--" that starts CMD). */
function asksForHelp(command: string, rest: readonly string[]): boolean {
  const own = command === "exec" && rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  return own.includes("--help") || own.includes("-h");
}

export async function runLab(argv: readonly string[], io: LabIO = process): Promise<number> {
  const [command, ...rest] = argv;
  if (command !== undefined && command !== "conformance" && asksForHelp(command, rest)) {
    io.stdout.write(commandUsage(command));
    return 0;
  }
  try {
    switch (command) {
      case "up": return await cmdUp(rest, io);
      case "down": return await cmdDown(rest, io);
      case "status": return await cmdStatus(rest, io);
      case "restart": return await cmdRestart(rest, io);
      case "stop": return await cmdStop(rest, io);
      case "start": return await cmdStart(rest, io);
      case "supervise": return await cmdSupervise(rest);
      case "exec": return await cmdExec(rest);
      case "pod": return await cmdPod(rest, io);
      case "traffic": return await cmdTraffic(rest, io);
      case "conformance": {
        const { runConformanceCli } = await import("./conformance/cli.js");
        return await runConformanceCli(rest, io);
      }
      case undefined: case "help": case "-h": case "--help":
        io.stdout.write(USAGE);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`bulkhead lab: ${err.message}\n(bulkhead lab help: usage)\n`);
      return 2;
    }
    if (err instanceof FieldError) {
      io.stderr.write(`bulkhead lab: ${err.message}\n`);
      return 2;
    }
    io.stderr.write(`bulkhead lab ${command ?? ""}: ${err instanceof LabNotUpError ? err.message : (err as Error).message}\n`);
    return 1;
  }
}

const STATE_DIR_OPTION = { "state-dir": { type: "string" } } as const;

function parse<T extends NonNullable<ParseArgsConfig["options"]>>(args: readonly string[], options: T, command: string) {
  try {
    return parseArgs({ args: [...args], options: { ...STATE_DIR_OPTION, ...options }, allowPositionals: true, strict: true });
  } catch (err) {
    // node:util names the flag: "Unknown option '--foo'", "Option '--nodes <value>' argument missing".
    throw new UsageError(`${command}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}`);
  }
}

function stateDirOf(values: { "state-dir"?: string | boolean | (string | boolean)[] | undefined }): string {
  const v = values["state-dir"];
  if (v !== undefined && typeof v !== "string") throw new UsageError("--state-dir: expected a directory");
  if (v === "") throw new UsageError("--state-dir: expected a directory, got an empty string");
  return v ?? process.env.BULKHEAD_LAB_STATE_DIR ?? DEFAULT_STATE_DIR;
}

function noPositionals(positionals: string[], command: string): void {
  if (positionals.length > 0) throw new UsageError(`${command}: unexpected argument ${JSON.stringify(positionals[0])}`);
}

async function cmdTraffic(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, { topology: { type: "string" } }, "traffic");
  noPositionals(positionals, "traffic");
  const stateDir = stateDirOf(values);
  const file = values.topology ?? (await requireState(stateDir)).topologyFile;
  const topology = file !== undefined ? await loadTopology(file) : defaultTopology();
  if (topology.traffic.length === 0) throw new UsageError(`traffic: the topology (${file ?? "default"}) has no traffic section`);
  const running = await startTraffic(new Lab(stateDir), topology.traffic);
  io.stderr.write(`lab traffic: ${running.pods} pods running, ${running.talkers} of them talking (Ctrl-C stops)\n`);
  await new Promise<void>((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
  await running.stop();
  return 0;
}

async function cmdUp(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, {
    nodes: { type: "string" },
    topology: { type: "string" },
    "export-dir": { type: "string" },
    "no-agents": { type: "boolean" },
    insecure: { type: "boolean" },
    ui: { type: "string" },
    "no-ui": { type: "boolean" },
    traffic: { type: "boolean" },
    store: { type: "string" },
    controlplanes: { type: "string" },
    "drain-interval": { type: "string" },
  }, "up");
  noPositionals(positionals, "up");
  const opts: UpOptions = {
    stateDir: stateDirOf(values),
    startAgents: values["no-agents"] !== true,
    insecure: values.insecure === true,
    removeLeftoverPins: true,
    log: (line) => io.stderr.write(`${line}\n`),
  };
  if (values.nodes !== undefined) {
    if (!/^\d+$/.test(values.nodes) || Number(values.nodes) < 1 || Number(values.nodes) > MAX_NODES) {
      throw new UsageError(`--nodes: expected an integer 1-${MAX_NODES}, got ${JSON.stringify(values.nodes)}`);
    }
    opts.nodes = Number(values.nodes);
  }
  if (values.topology !== undefined) opts.topology = values.topology;
  if (values["export-dir"] !== undefined) opts.exportDir = values["export-dir"];
  if (values.ui !== undefined && values["no-ui"]) throw new UsageError("--ui and --no-ui: give one of them");
  if (values.ui !== undefined) {
    try {
      uiUrl(values.ui);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (values.ui !== undefined || values["no-ui"]) {
    if (values["no-agents"]) throw new UsageError(`${values.ui !== undefined ? "--ui" : "--no-ui"}: the UI is the control plane's, which --no-agents leaves out`);
    opts.controlplane = { ui: values["no-ui"] ? false : values.ui ?? DEFAULT_UI_ADDRESS };
  }
  if (values.traffic) opts.traffic = true;
  if (values.store !== undefined) {
    if (!(LAB_STORE_KINDS as readonly string[]).includes(values.store)) {
      throw new UsageError(`--store: expected ${LAB_STORE_KINDS.join(" or ")}, got ${JSON.stringify(values.store)}`);
    }
    opts.store = values.store as LabStoreKind;
  }
  if (values.controlplanes !== undefined) {
    if (!/^\d+$/.test(values.controlplanes) || Number(values.controlplanes) < 1 || Number(values.controlplanes) > MAX_CONTROLPLANES) {
      throw new UsageError(`--controlplanes: expected an integer 1-${MAX_CONTROLPLANES}, got ${JSON.stringify(values.controlplanes)}`);
    }
    opts.controlplanes = Number(values.controlplanes);
    if (opts.controlplanes > 1 && opts.store !== "clickhouse") {
      throw new UsageError(`--controlplanes ${opts.controlplanes}: replicas need a store they share; add --store clickhouse (the embedded store is one process's file)`);
    }
  }
  const drain = values["drain-interval"];
  if (drain !== undefined) {
    const { min, max } = DRAIN_INTERVAL_RANGE_MS;
    if (!/^\d+$/.test(drain) || Number(drain) < min || Number(drain) > max) {
      throw new UsageError(`--drain-interval: expected milliseconds, an integer ${min}-${max}, got ${JSON.stringify(drain)}`);
    }
    if (values["no-agents"]) throw new UsageError("--drain-interval: the agents drain, and --no-agents leaves them out");
    opts.drainIntervalMs = Number(drain);
  }
  if ((opts.store === "clickhouse" || (opts.controlplanes ?? 1) > 1) && values["no-agents"]) {
    throw new UsageError(`${opts.store === "clickhouse" ? "--store clickhouse" : "--controlplanes"}: the store is the control plane's, which --no-agents leaves out`);
  }
  const lab = await up(opts);
  writeTable(io, await lab.status());
  return 0;
}

async function cmdDown(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, {}, "down");
  noPositionals(positionals, "down");
  const report = await down(stateDirOf(values), { removePins: true, log: (line) => io.stderr.write(`${line}\n`) });
  io.stdout.write(`lab down: removed ${report.netns.length} netns, stopped ${report.stoppedPids.length} processes${report.pinsRemoved ? ", removed BPF pins" : ""}\n`);
  return 0;
}

async function cmdStatus(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, { output: { type: "string", short: "o" } }, "status");
  noPositionals(positionals, "status");
  const format = values.output ?? "table";
  if (format !== "table" && format !== "json") throw new UsageError(`-o/--output: "${format}" is not one of table, json`);
  const status = await new Lab(stateDirOf(values)).status();
  if (format === "json") io.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
  else writeTable(io, status);
  return status.problems.length === 0 ? 0 : 1;
}

/**
 * `agent [NODE]` (every agent when no NODE), `controlplane [INDEX|NAME]` (every replica when
 * none is named) or `store`, for restart, stop and start.
 */
async function supervisedTargets(lab: Lab, positionals: string[], command: string): Promise<RestartTarget[]> {
  const [kind, which, extra] = positionals;
  if (kind !== "agent" && kind !== "controlplane" && kind !== "store") {
    throw new UsageError(`${command}: expected agent [NODE], controlplane [INDEX|NAME] or store, got ${JSON.stringify(kind ?? "")}`);
  }
  if (extra !== undefined || (kind === "store" && which !== undefined)) throw new UsageError(`${command}: unexpected argument ${JSON.stringify(extra ?? which)}`);
  if (kind === "store") return [{ kind }];
  if (kind === "controlplane") {
    if (which !== undefined) return [{ kind, replica: which }];
    const replicas = (await lab.status()).controlplanes ?? [];
    // One replica: as before, the lab's one control plane (the error, if none, names it).
    return replicas.length <= 1 ? [{ kind }] : replicas.map((cp) => ({ kind, replica: cp.index }));
  }
  const targets: RestartTarget[] = which !== undefined ? [{ kind, node: which }] : (await lab.status()).agents.map((a) => ({ kind, node: a.node }));
  if (targets.length === 0) throw new Error(`${command}: this lab runs no agents (up --no-agents)`);
  return targets;
}

async function cmdRestart(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, { kill: { type: "boolean" } }, "restart");
  const lab = new Lab(stateDirOf(values));
  // One at a time, as a rolling update would: never every node without an agent at once.
  for (const target of await supervisedTargets(lab, positionals, "restart")) {
    const r = await lab.restart(target, { kill: values.kill === true });
    io.stdout.write(`${r.name}: pid ${r.oldPid} ${values.kill ? "killed" : "stopped"}, pid ${r.newPid} up (${r.restarts} restarts)\n`);
  }
  return 0;
}

async function cmdStop(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, { kill: { type: "boolean" } }, "stop");
  const lab = new Lab(stateDirOf(values));
  for (const target of await supervisedTargets(lab, positionals, "stop")) {
    const r = await lab.stop(target, { kill: values.kill === true });
    io.stdout.write(`${r.name}: pid ${r.pid} ${values.kill ? "killed" : "stopped"}; held down until \`lab start\`\n`);
  }
  return 0;
}

async function cmdStart(args: readonly string[], io: LabIO): Promise<number> {
  const { values, positionals } = parse(args, {}, "start");
  const lab = new Lab(stateDirOf(values));
  for (const target of await supervisedTargets(lab, positionals, "start")) {
    const r = await lab.start(target);
    io.stdout.write(`${r.name}: pid ${r.newPid} up (${r.restarts} restarts)\n`);
  }
  return 0;
}

/** The supervisor process `up` starts (supervisor.ts); runs until SIGTERM. */
async function cmdSupervise(args: readonly string[]): Promise<number> {
  const { values, positionals } = parse(args, {}, "supervise");
  noPositionals(positionals, "supervise");
  await supervise(path.resolve(stateDirOf(values)));
  // Its children are detached but still referenced; the supervisor leaves them running.
  process.exit(0);
}

async function cmdExec(args: readonly string[]): Promise<number> {
  const dash = args.indexOf("--");
  if (dash < 0) throw new UsageError("exec: expected NS/POD -- CMD...");
  const { values, positionals } = parse(args.slice(0, dash), {}, "exec");
  const command = args.slice(dash + 1);
  if (positionals.length !== 1) throw new UsageError("exec: expected exactly one NS/POD before --");
  if (command.length === 0) throw new UsageError("exec: expected a command after --");
  const child = await new Lab(stateDirOf(values)).spawn(positionals[0] ?? "", command, { stdio: "inherit" });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      resolve(code ?? 128 + (signal ? (constants.signals as Record<string, number>)[signal] ?? 0 : 0));
    });
  });
}

async function cmdPod(args: readonly string[], io: LabIO): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "add": {
      const { values, positionals } = parse(rest, {
        node: { type: "string" },
        label: { type: "string", multiple: true },
        port: { type: "string", multiple: true },
      }, "pod add");
      const [namespace, name] = podArg(positionals, "pod add");
      const input: PodInput = { namespace, name, labels: Object.fromEntries((values.label ?? []).map((l) => labelArg(l, "--label"))) };
      if (values.node !== undefined) input.node = values.node;
      if (values.port) input.ports = values.port.map(portArg);
      const pod = await new Lab(stateDirOf(values)).addPod(input);
      io.stdout.write(`pod ${pod.namespace}/${pod.name} on ${pod.node}: ${pod.ip} ${pod.ipv6} (netns ${pod.netns}, host veth ${pod.hostIface})\n`);
      return 0;
    }
    case "delete": {
      const { values, positionals } = parse(rest, {}, "pod delete");
      const [namespace, name] = podArg(positionals, "pod delete");
      await new Lab(stateDirOf(values)).deletePod(namespace, name);
      io.stdout.write(`pod ${namespace}/${name} deleted\n`);
      return 0;
    }
    case "label": {
      const { values, positionals } = parse(rest, {}, "pod label");
      const [target, ...changes] = positionals;
      const [namespace, name] = podArg(target === undefined ? [] : [target], "pod label");
      if (changes.length === 0) throw new UsageError("pod label: expected k=v or k- after NS/NAME");
      const patch: Record<string, string | null> = {};
      for (const change of changes) {
        if (/^[^=]+-$/.test(change)) patch[change.slice(0, -1)] = null;
        else {
          const [k, v] = labelArg(change, "pod label");
          patch[k] = v;
        }
      }
      const pod = await new Lab(stateDirOf(values)).patchPodLabels(namespace, name, patch);
      io.stdout.write(`pod ${namespace}/${name} labels: ${formatLabels(pod.labels)}\n`);
      return 0;
    }
    default:
      throw new UsageError(`pod: expected add, delete or label, got ${JSON.stringify(sub ?? "")}`);
  }
}

function podArg(positionals: string[], command: string): [string, string] {
  const [ref, extra] = positionals;
  if (ref === undefined || extra !== undefined) throw new UsageError(`${command}: expected exactly one NS/NAME`);
  const m = /^([^/]+)\/([^/]+)$/.exec(ref);
  if (!m) throw new UsageError(`${command}: expected NS/NAME, got ${JSON.stringify(ref)}`);
  return [m[1] ?? "", m[2] ?? ""];
}

function labelArg(text: string, flag: string): [string, string] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new UsageError(`${flag}: expected key=value, got ${JSON.stringify(text)}`);
  return [text.slice(0, eq), text.slice(eq + 1)];
}

/** `[name:]port[/PROTOCOL]`, e.g. `http:8080`, `53/UDP`, `serve-80-tcp:80/TCP`. */
function portArg(text: string): NonNullable<PodInput["ports"]>[number] {
  const m = /^(?:([a-z0-9-]+):)?(\d{1,5})(?:\/([A-Za-z]+))?$/.exec(text);
  const proto = m?.[3]?.toUpperCase();
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535 || (proto !== undefined && !(PROTOCOLS as readonly string[]).includes(proto))) {
    throw new UsageError(`--port: expected [name:]port[/TCP|UDP|SCTP] with port 1-65535, got ${JSON.stringify(text)}`);
  }
  const port: NonNullable<PodInput["ports"]>[number] = { port: Number(m[2]), protocol: (proto ?? "TCP") as Protocol };
  if (m[1] !== undefined) port.name = m[1];
  return port;
}

function formatLabels(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",") || "<none>";
}

function writeTable(io: LabIO, status: LabStatus): void {
  const table = (rows: string[][]): string => {
    const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
    return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ")).join("\n");
  };
  const out: string[] = [];
  out.push(table([["NODE", "IP", "IPV6", "POD CIDRS", "NETNS", "AGENT"], ...status.nodes.map((n) => {
    const agent = status.agents.find((a) => a.node === n.name);
    return [n.name, n.ip, n.ipv6, `${n.podCIDR},${n.podCIDRv6}`, n.netns,
      agent ? `pid ${agent.pid} ${agent.running ? "running" : "NOT RUNNING"}, ${agent.restarts} restarts` : "-"];
  })]));
  out.push("");
  out.push(table([["NAMESPACE", "POD", "NODE", "IP", "IPV6", "HOST VETH", "LABELS"], ...status.pods.map((p) =>
    [p.namespace, p.name, p.node, p.ip, p.ipv6, p.hostIface, formatLabels(p.labels)])]));
  out.push("");
  out.push(table([["NAMESPACE", "SERVICE", "CLUSTER-IP", "PORTS", "ENDPOINTS"], ...status.services.map((s) => [
    s.namespace, s.name, s.clusterIP,
    s.ports.map((p) => `${p.port}/${p.protocol}→${p.targetPort}`).join(","),
    [...new Set(s.endpoints.flat())].join(",") || "<none>",
  ])]));
  out.push("");
  out.push(`manifests: ${status.manifestsDir}`);
  for (const cp of status.controlplanes ?? []) {
    out.push(`control plane${(status.controlplanes?.length ?? 0) > 1 ? ` ${cp.name}` : ""}: pid ${cp.pid} ${cp.running ? "running" : "NOT RUNNING"}, `
      + `${cp.restarts} restarts, Observer API ${cp.observer}`);
  }
  if (status.store?.kind === "clickhouse") {
    out.push(`store: ClickHouse pid ${status.store.pid} ${status.store.running ? "running" : "NOT RUNNING"}, ${status.store.restarts} restarts, ${status.store.url}`);
  }
  if (status.supervisor) out.push(`supervisor: pid ${status.supervisor.pid} ${status.supervisor.running ? "running" : "NOT RUNNING"}`);
  if (status.traffic) out.push(`traffic: ${status.traffic.running}/${status.traffic.processes} pod processes running`);
  if (status.ui !== undefined) out.push(`ui: ${status.ui}`);
  for (const problem of status.problems) out.push(`PROBLEM: ${problem}`);
  io.stdout.write(`${out.join("\n")}\n`);
}
