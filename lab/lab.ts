// The lab's programmatic API, used by tests and by `bulkhead lab …`. Every call reads and
// writes `<stateDir>/state.json` under the state dir's lock, so separate processes can work
// on the same lab. A change is applied to the datapath first, then to the Service rules,
// the manifests and the state file.
import { randomUUID } from "node:crypto";
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from "node:child_process";
import { readdir, rm, rmdir } from "node:fs/promises";
import path from "node:path";
import {
  allocateClusterIP, allocatePodHost, hostIfaceName, isLabNetns, nodeAddresses, nodeNetns, OUTSIDE, OUTSIDE_NETNS, podAddresses, podHost,
  podNetnsName, UNDERLAY_NETNS,
} from "./addressing.js";
import { agentSpecs, waitAgentHealthy, type AgentCommand, type AgentSpecOptions } from "./agents.js";
import { repoRoot } from "../config/install.js";
import {
  controlPlaneSpec, controlPlaneStatus, DEFAULT_UI_ADDRESS, issueLabCertificates, labTlsDir, stopControlPlane, TLS_DIR, uiUrl,
  waitControlPlaneReady, type ControlPlaneOptions,
} from "./controlplane.js";
import {
  BPF_PIN_DIR, createNodes, createOutside, createPods, createUnderlay, deletePodDatapath, STOP_GRACE_MS, teardown, underlayOwner,
  type TeardownReport,
} from "./datapath.js";
import { resolveService } from "./endpoints.js";
import { EnforcementWatch } from "./enforcement.js";
import { FieldReader } from "../fields/reader.js";
import { manifestsDir, writeManifests } from "./manifests.js";
import { policyManifest, writePolicy } from "./netpol-files.js";
import { listNetns, netnsExecArgv, run, running, type RunResult } from "./netns.js";
import { applyServiceRules } from "./services.js";
import {
  CONTROLPLANE_PID_FILE, DEFAULT_STATE_DIR, LOGS_DIR, MANIFESTS_DIR, STATE_FILE, STORE_DIR, SUPERVISION_FILE, readState, readSupervision, requireState,
  withLock, writeState, type LabControlPlane, type LabOutside, type LabPod, type LabService, type LabState,
} from "./state.js";
import { agentProcess, CONTROLPLANE_PROCESS, startSupervisor, stopSupervisor, supervisorPids } from "./supervisor.js";
import {
  defaultTopology, loadTopology, parseTopology, readAnnotations, readNamespaceSpec, readPodSpec, readServiceSpec,
  type Protocol, type ServiceSpec, type Topology,
} from "./topology.js";
import { startOutsideApp, startTraffic, trafficDocument } from "./traffic.js";
import { expandTopology, type PlannedPod } from "./workloads.js";
import type { GetStatusResponse } from "../proto/gen/bulkhead/v1/observer.js";

export interface UpOptions {
  /** node1..nodeN, replacing the topology's nodes. */
  nodes?: number;
  /** A topology file (YAML or JSON) or a topology object; default: DEFAULT_TOPOLOGY. */
  topology?: string | TopologyInput;
  /** Where agents write `<node>.jsonl` flow exports. */
  exportDir?: string;
  stateDir?: string;
  /** Default true. Tests pass false and run without agents. */
  startAgents?: boolean;
  /**
   * Start the control plane (default: with the agents). Its Observer API listens on
   * `observer` (default 127.0.0.1:4387), its web UI on `ui` (default DEFAULT_UI_ADDRESS,
   * 127.0.0.1:4388; false: none).
   */
  controlplane?: boolean | { observer?: string; ui?: string | false };
  /** Plaintext between agents and control plane, and for the Observer API; default: mutual TLS with
   * certificates from `bulkhead certs` in `<stateDir>/tls/`. */
  insecure?: boolean;
  /** Start the topology's traffic section in the pods (pod-app.ts), detached: it runs until `down`. */
  traffic?: boolean;
  /** Replaces `agentCommand` (agents.ts), e.g. with a stand-in agent in tests; `up` then does not wait for it to connect. */
  agentCommand?: AgentCommand;
  agentTimeoutMs?: number;
  /** Remove the BPF pin folder when a crashed lab is cleaned up (the CLI does). */
  removeLeftoverPins?: boolean;
  /** The agents' BPF pin folder, removed by `down`; default /sys/fs/bpf/bulkhead. */
  pinDir?: string;
  /** Progress and warnings, one line each. */
  log?: (line: string) => void;
}

export interface DownOptions {
  /** Remove the agents' BPF pin folder. Default: only if the lab being removed started agents. */
  removePins?: boolean;
  log?: (line: string) => void;
}

export interface PodInput {
  namespace: string;
  name: string;
  node?: string;
  labels?: Record<string, string>;
  ports?: { name?: string; port: number; protocol?: Protocol }[];
}

export interface ServiceInput {
  namespace: string;
  name: string;
  selector: Record<string, string>;
  ports: { name?: string; port: number; targetPort?: number | string; protocol?: Protocol }[];
  clusterIP?: string;
}

export interface NodeStatus {
  name: string;
  ip: string;
  ipv6: string;
  podCIDR: string;
  podCIDRv6: string;
  netns: string;
}

export interface PodStatus {
  namespace: string;
  name: string;
  ip: string;
  ipv6: string;
  node: string;
  labels: Record<string, string>;
  uid: string;
  netns: string;
  hostIface: string;
  ports: { name?: string; port: number; protocol: Protocol }[];
  owner?: { kind: string; name: string };
}

export interface ServiceStatus {
  namespace: string;
  name: string;
  clusterIP: string;
  ports: { name?: string; port: number; protocol: Protocol; targetPort: number | string }[];
  selector: Record<string, string>;
  /** Backends as `podIP:port`, per Service port in `ports` order. */
  endpoints: string[][];
}

export interface AgentStatus {
  node: string;
  /** The live pid, as the supervisor last started it. */
  pid: number;
  running: boolean;
  /** Starts by the supervisor after the first. */
  restarts: number;
  /** Held down by `lab stop`. */
  held?: boolean;
  log: string;
  exportFile?: string;
}

export interface ControlPlaneStatus extends Omit<LabControlPlane, "argv"> {
  running: boolean;
  restarts: number;
  /** Held down by `lab stop`. */
  held?: boolean;
}

/** What `lab restart` restarts: one node's agent, or the control plane. */
export type RestartTarget = { kind: "agent"; node: string } | { kind: "controlplane" };

export interface RestartResult {
  /** "agent/node1" or "controlplane". */
  name: string;
  oldPid: number;
  newPid: number;
  restarts: number;
}

/** A topology object; traffic and policies may be left out. */
export type TopologyInput = Omit<Topology, "traffic" | "policies"> & Partial<Pick<Topology, "traffic" | "policies">>;

export interface OutsideStatus {
  netns: string;
  ip: string;
  ipv6: string;
  /** What its application serves (topology `outside.ports`). */
  ports: { name?: string; port: number; protocol: Protocol }[];
  /** Its application, when it runs one. */
  app?: { pid: number; running: boolean; log: string };
}

export interface LabStatus {
  /** The web UI's URL, when the lab's control plane serves it. */
  ui?: string;
  stateDir: string;
  manifestsDir: string;
  nodes: NodeStatus[];
  namespaces: { name: string; labels: Record<string, string> }[];
  pods: PodStatus[];
  services: ServiceStatus[];
  agents: AgentStatus[];
  controlplane?: ControlPlaneStatus;
  /** The process that restarts the agents and the control plane (supervisor.ts). */
  supervisor?: { pid: number; running: boolean };
  /** The outside host: the world to the cluster, a traffic target (`to: outside`). */
  outside?: OutsideStatus;
  /** Pod application processes started by `up` with traffic, and how many still run. */
  traffic?: { processes: number; running: number };
  /** Empty when every netns the state names exists and the underlay belongs to this state dir. */
  problems: string[];
}

/** "namespace/name" or an object. */
export type PodRef = string | { namespace: string; name: string };

export interface ExecOptions {
  input?: string;
  timeoutMs?: number;
}

export async function up(opts: UpOptions = {}): Promise<Lab> {
  const stateDir = path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR);
  const log = opts.log ?? (() => {});
  const topology = await resolveTopology(opts);
  const withAgents = opts.startAgents ?? true;
  const uiOption = typeof opts.controlplane === "object" ? opts.controlplane.ui : undefined;
  if (typeof uiOption === "string") uiUrl(uiOption); // a bad address fails before anything is built
  await withLock(stateDir, async () => {
    await removeLeftovers(stateDir, opts.removeLeftoverPins, log);
    const state = planState(stateDir, topology, withAgents, path.resolve(opts.pinDir ?? BPF_PIN_DIR), opts.exportDir);
    if (typeof opts.topology === "string") state.topologyFile = path.resolve(opts.topology);
    try {
      await createUnderlay(stateDir);
      await createNodes(state.nodes);
      log(`lab up: ${state.nodes.length} nodes (${state.nodes.map((n) => n.name).join(", ")})`);
      await createPods(state.pods, state.nodes);
      await createOutside(state.nodes);
      if (state.outside && state.outside.ports.length > 0) {
        Object.assign(state.outside, await startOutsideApp(stateDir, state.outside.ports));
      }
      log(`lab up: outside host ${OUTSIDE.ip} ${OUTSIDE.ipv6} (netns ${OUTSIDE_NETNS})${state.outside?.pid !== undefined
        ? `, serving ${state.outside.ports.map((p) => `${p.port}/${p.protocol}`).join(", ")} (pid ${state.outside.pid})` : ""}`);
      log(`lab up: ${state.pods.length} pods in ${new Set(state.pods.map((p) => p.namespace)).size} namespaces`);
      await commit(state, { forceRules: true });
      for (const policy of topology.policies) await writePolicy(manifestsDir(stateDir), policy);
      log(`lab up: ${state.services.length} services, ${topology.policies.length} network policies (state ${stateDir})`);
      const withControlPlane = opts.controlplane ?? withAgents;
      if (withControlPlane) {
        const cpOpts: ControlPlaneOptions = {};
        const ui = typeof withControlPlane === "object" ? withControlPlane.ui : undefined;
        if (ui !== false) cpOpts.ui = ui ?? DEFAULT_UI_ADDRESS;
        if (typeof withControlPlane === "object" && withControlPlane.observer !== undefined) cpOpts.observer = withControlPlane.observer;
        const secure = opts.insecure !== true;
        cpOpts.secure = secure;
        if (secure) await issueLabCertificates(stateDir, state.nodes.map((n) => n.name));
        // A new lab starts with an empty history, whatever a crashed one left.
        await rm(path.join(stateDir, STORE_DIR), { recursive: true, force: true });
        state.controlplane = controlPlaneSpec(stateDir, repoRoot, cpOpts);
      }
      if (withAgents) {
        const agentOpts: AgentSpecOptions = { stateDir, pinDir: state.pinDir };
        if (state.controlplane) agentOpts.controlplane = state.controlplane.agents;
        if (state.controlplane?.ca !== undefined) agentOpts.tlsDir = labTlsDir(stateDir);
        if (state.exportDir !== undefined) agentOpts.exportDir = state.exportDir;
        if (opts.agentCommand) agentOpts.command = opts.agentCommand;
        state.agents = await agentSpecs(state.nodes, agentOpts);
      }
      if (state.controlplane || state.agents.length > 0) {
        // One supervisor runs them all and starts again whatever exits (supervisor.ts).
        await writeState(state);
        state.supervisor = await startSupervisor(stateDir, repoRoot);
        await writeState(state);
        log(`lab up: supervisor pid ${state.supervisor.pid} (log ${state.supervisor.log})`);
      }
      if (state.controlplane) {
        state.controlplane.pid = await waitControlPlaneReady(stateDir, state.controlplane, { failOnExit: true });
        await writeState(state);
        log(`lab up: control plane pid ${state.controlplane.pid}, Observer API on ${state.controlplane.observer}`
          + (state.controlplane.ca !== undefined ? ` (TLS; CA ${state.controlplane.ca})` : " (plaintext)")
          + `${state.controlplane.ui !== undefined ? `, UI on ${state.controlplane.ui}` : ""}`);
      }
      if (withAgents) {
        const timeoutMs = opts.agentTimeoutMs;
        await Promise.all(state.agents.map(async (agent) => {
          const node = requireNode(state, agent.node);
          agent.pid = await waitAgentHealthy(stateDir, node, agent, { failOnExit: true, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
        }));
        await writeState(state);
        log(`lab up: agents running (${state.agents.map((a) => `${a.node} pid ${a.pid}`).join(", ")})`);
        // A stand-in agent (agentCommand) need not speak to the control plane.
        if (state.controlplane && opts.agentCommand === undefined) {
          await waitFor(state.controlplane, "agents connected", (s) => s.agentsConnected >= state.nodes.length,
            (s) => `${s.agentsConnected}/${state.nodes.length}`, log);
          // Traffic starts only once every node enforces the topology's policies, so no
          // early packet gets a verdict from before them.
          const watch = new EnforcementWatch(state.controlplane.observer, state.nodes.map((n) => n.name), state.controlplane.ca);
          try {
            const version = await watch.waitEnforced();
            log(`lab up: policy version ${version} enforced on every node`);
          } finally {
            watch.close();
          }
        }
      }
      if (opts.traffic) {
        if (topology.traffic.length === 0) throw new Error("lab up: traffic was asked for, but the topology has no traffic section");
        const running = await startTraffic(new Lab(stateDir), topology.traffic, { detachedLogDir: path.join(stateDir, LOGS_DIR) });
        state.traffic = { pids: running.pids };
        await writeState(state);
        log(`lab up: traffic running: ${running.pods} pods serving, ${running.talkers} of them talking`);
        if (state.controlplane && withAgents && opts.agentCommand === undefined) {
          await waitFor(state.controlplane, "first flows seen", (s) => s.recordsTotal > 0n,
            (s) => (s.recordsTotal > 0n ? `${s.recordsTotal} records` : ""), log);
        }
      }
    } catch (err) {
      // Leave nothing half-built behind.
      await cleanup(stateDir, { removePins: withAgents, log }, state.pinDir).catch((e: Error) => log(`lab up: cleanup after failure: ${e.message}`));
      throw err;
    }
  });
  return new Lab(stateDir);
}

/** Removes the lab: agents, every lab netns, BPF pins (see DownOptions), the state dir's contents. Idempotent. */
export async function down(stateDir: string = DEFAULT_STATE_DIR, opts: DownOptions = {}): Promise<TeardownReport> {
  const dir = path.resolve(stateDir);
  const report = await withLock(dir, () => cleanup(dir, opts));
  await rmdir(dir).catch(() => { /* not empty: someone else's files, or a new lab */ });
  return report;
}

export async function status(stateDir: string = DEFAULT_STATE_DIR): Promise<LabStatus> {
  return new Lab(stateDir).status();
}

export function openLab(stateDir: string = DEFAULT_STATE_DIR): Lab {
  return new Lab(stateDir);
}

export class Lab {
  readonly stateDir: string;

  constructor(stateDir: string = DEFAULT_STATE_DIR) {
    this.stateDir = path.resolve(stateDir);
  }

  async status(): Promise<LabStatus> {
    const state = await requireState(this.stateDir);
    const present = new Set(await listNetns());
    const problems: string[] = [];
    for (const item of [{ netns: UNDERLAY_NETNS, what: "underlay" }, ...state.nodes.map((n) => ({ netns: n.netns, what: `node ${n.name}` })),
      ...(state.outside ? [{ netns: state.outside.netns, what: "outside host" }] : []),
      ...state.pods.map((p) => ({ netns: p.netns, what: `pod ${p.namespace}/${p.name}` }))]) {
      if (!present.has(item.netns)) problems.push(`${item.what}: netns ${item.netns} is missing`);
    }
    if (present.has(UNDERLAY_NETNS)) {
      const owner = await underlayOwner();
      if (owner !== undefined && owner !== this.stateDir) problems.push(`the lab's netns belong to another state dir (${owner}); this state is stale`);
    }
    const supervision = await readSupervision(this.stateDir).catch((err: Error) => {
      problems.push(err.message);
      return undefined;
    });
    const live = (name: string, first: number) => {
      const p = supervision?.processes.find((x) => x.name === name);
      return { pid: p !== undefined && p.pid > 0 ? p.pid : first, restarts: p?.restarts ?? 0, ...(p?.held ? { held: true } : {}) };
    };
    const agents = await Promise.all(state.agents.map(async (a) => {
      const { pid, restarts, held } = live(agentProcess(a.node), a.pid);
      const s: AgentStatus = { node: a.node, pid, running: pid > 0 && await running(pid), restarts, ...(held ? { held } : {}), log: a.log };
      if (a.exportFile !== undefined) s.exportFile = a.exportFile;
      return s;
    }));
    let controlplane: ControlPlaneStatus | undefined;
    if (state.controlplane) {
      const { argv: _argv, ...cp } = state.controlplane;
      const { pid, restarts, held } = live(CONTROLPLANE_PROCESS, cp.pid);
      controlplane = { ...cp, pid, running: pid > 0 && await running(pid), restarts, ...(held ? { held } : {}) };
    }
    if (state.supervisor && !(await running(state.supervisor.pid))) {
      problems.push(`the supervisor (pid ${state.supervisor.pid}) is not running: nothing restarts an agent or the control plane that exits`);
    }
    return {
      ...(state.controlplane?.ui !== undefined ? { ui: state.controlplane.ui } : {}),
      stateDir: this.stateDir,
      manifestsDir: manifestsDir(this.stateDir),
      nodes: state.nodes.map((n) => ({ name: n.name, ip: n.ip, ipv6: n.ipv6, podCIDR: n.podCIDR, podCIDRv6: n.podCIDRv6, netns: n.netns })),
      namespaces: state.namespaces.map((ns) => ({ name: ns.name, labels: { ...ns.labels, "kubernetes.io/metadata.name": ns.name } })),
      pods: state.pods.map(podStatus),
      services: state.services.map((svc) => serviceStatus(svc, state.pods)),
      agents,
      ...(controlplane ? { controlplane } : {}),
      ...(state.outside ? { outside: await outsideStatus(state.outside) } : {}),
      ...(state.supervisor ? { supervisor: { pid: state.supervisor.pid, running: await running(state.supervisor.pid) } } : {}),
      ...(state.traffic ? { traffic: { processes: state.traffic.pids.length, running: (await Promise.all(state.traffic.pids.map(running))).filter(Boolean).length } } : {}),
      problems,
    };
  }

  async addPod(input: PodInput): Promise<PodStatus> {
    const spec = readPodSpec(new FieldReader("addPod"), input, "pod");
    return this.mutate(async (state) => {
      requireNamespace(state, spec.namespace);
      if (state.pods.some((p) => p.namespace === spec.namespace && p.name === spec.name)) {
        throw new Error(`pod ${spec.namespace}/${spec.name} already exists`);
      }
      if (spec.node !== undefined) requireNode(state, spec.node);
      const taken = new Set(await listNetns());
      const pod = placePod(state, { ...spec, container: spec.name }, new Date().toISOString(), taken);
      try {
        await createPods([pod], state.nodes);
      } catch (err) {
        await deletePodDatapath(pod, state.nodes).catch(() => {});
        throw err;
      }
      state.pods.push(pod);
      await commit(state);
      return podStatus(pod);
    });
  }

  async deletePod(namespace: string, name: string): Promise<void> {
    await this.mutate(async (state) => {
      const pod = findPod(state, namespace, name);
      await deletePodDatapath(pod, state.nodes);
      state.pods = state.pods.filter((p) => p !== pod);
      await commit(state);
    });
  }

  /** Replaces the pod's labels. */
  async setPodLabels(namespace: string, name: string, labels: Record<string, string>): Promise<PodStatus> {
    const checked = new FieldReader("setPodLabels").labels(labels, "labels");
    return this.mutate(async (state) => {
      const pod = findPod(state, namespace, name);
      pod.labels = checked;
      await commit(state);
      return podStatus(pod);
    });
  }

  /** Adds or overwrites labels; a null value removes that label (kubectl label k-). */
  async patchPodLabels(namespace: string, name: string, patch: Record<string, string | null>): Promise<PodStatus> {
    const { set, remove } = splitPatch(patch, "patchPodLabels");
    return this.mutate(async (state) => {
      const pod = findPod(state, namespace, name);
      pod.labels = applyPatch(pod.labels, set, remove);
      await commit(state);
      return podStatus(pod);
    });
  }

  async addNamespace(name: string, labels: Record<string, string> = {}, annotations?: Record<string, string>): Promise<void> {
    const spec = readNamespaceSpec(new FieldReader("addNamespace"), { name, labels, ...(annotations ? { annotations } : {}) }, "namespace");
    await this.mutate(async (state) => {
      if (state.namespaces.some((ns) => ns.name === spec.name)) throw new Error(`namespace ${spec.name} already exists`);
      state.namespaces.push({ ...spec, uid: randomUUID(), creationTimestamp: new Date().toISOString() });
      await commit(state);
    });
  }

  /** Replaces the namespace's labels (kubernetes.io/metadata.name always stays). */
  async setNamespaceLabels(name: string, labels: Record<string, string>): Promise<void> {
    const checked = new FieldReader("setNamespaceLabels").labels(labels, "labels");
    await this.mutate(async (state) => {
      requireNamespace(state, name).labels = withoutNameLabel(checked);
      await commit(state);
    });
  }

  async patchNamespaceLabels(name: string, patch: Record<string, string | null>): Promise<void> {
    const { set, remove } = splitPatch(patch, "patchNamespaceLabels");
    await this.mutate(async (state) => {
      const ns = requireNamespace(state, name);
      ns.labels = withoutNameLabel(applyPatch(ns.labels, set, remove));
      await commit(state);
    });
  }

  /** Replaces the namespace's annotations (e.g. `bulkhead.io/mode`). */
  async setNamespaceAnnotations(name: string, annotations: Record<string, string>): Promise<void> {
    const checked = readAnnotations(new FieldReader("setNamespaceAnnotations"), annotations, "annotations");
    await this.mutate(async (state) => {
      requireNamespace(state, name).annotations = checked;
      await commit(state);
    });
  }

  async addService(input: ServiceInput): Promise<ServiceStatus> {
    const spec = readServiceSpec(new FieldReader("addService"), input, "service");
    return this.mutate(async (state) => {
      requireNamespace(state, spec.namespace);
      if (state.services.some((s) => s.namespace === spec.namespace && s.name === spec.name)) {
        throw new Error(`service ${spec.namespace}/${spec.name} already exists`);
      }
      const svc = makeService(state, spec, new Date().toISOString());
      state.services.push(svc);
      await commit(state);
      return serviceStatus(svc, state.pods);
    });
  }

  async deleteService(namespace: string, name: string): Promise<void> {
    await this.mutate(async (state) => {
      const svc = state.services.find((s) => s.namespace === namespace && s.name === name);
      if (!svc) throw new Error(`service ${namespace}/${name} not found`);
      state.services = state.services.filter((s) => s !== svc);
      await commit(state);
    });
  }

  /** Runs `argv` in the pod's netns and collects its output; a non-zero exit is a result, not an error. */
  async exec(target: PodRef, argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    const pod = findPod(await requireState(this.stateDir), ...splitRef(target));
    return run(netnsExecArgv(pod.netns, argv), { ...opts, allowFail: true });
  }

  /** Starts `argv` in the pod's netns (e.g. a server a test talks to); the caller owns the child. */
  async spawn(target: PodRef, argv: readonly string[], opts: SpawnOptions = {}): Promise<ChildProcess> {
    const pod = findPod(await requireState(this.stateDir), ...splitRef(target));
    const [cmd, ...args] = netnsExecArgv(pod.netns, argv);
    return spawnChild(cmd ?? "ip", args, opts);
  }

  /** Runs `argv` on the outside host (netns bh-outside); a non-zero exit is a result. */
  async outsideExec(argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    const state = await requireState(this.stateDir);
    return run(netnsExecArgv(state.outside?.netns ?? OUTSIDE_NETNS, argv), { ...opts, allowFail: true });
  }

  /** Starts `argv` on the outside host (e.g. a server a test talks to); the caller owns the child. */
  async outsideSpawn(argv: readonly string[], opts: SpawnOptions = {}): Promise<ChildProcess> {
    const state = await requireState(this.stateDir);
    const [cmd, ...args] = netnsExecArgv(state.outside?.netns ?? OUTSIDE_NETNS, argv);
    return spawnChild(cmd ?? "ip", args, opts);
  }

  async nodeExec(node: string, argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    const n = requireNode(await requireState(this.stateDir), node);
    return run(netnsExecArgv(n.netns, argv), { ...opts, allowFail: true });
  }

  async nodeSpawn(node: string, argv: readonly string[], opts: SpawnOptions = {}): Promise<ChildProcess> {
    const n = requireNode(await requireState(this.stateDir), node);
    const [cmd, ...args] = netnsExecArgv(n.netns, argv);
    return spawnChild(cmd ?? "ip", args, opts);
  }

  /**
   * Restarts an agent or the control plane the way a pod is restarted: SIGTERM (SIGKILL with
   * `kill`) to the process, which the supervisor then starts again; resolves when the new
   * process serves (/healthz, GetStatus).
   */
  async restart(target: RestartTarget, opts: { kill?: boolean } = {}): Promise<RestartResult> {
    const t = await this.supervised(target, "restart");
    if (t.current.held) throw new Error(`lab restart ${t.name}: it is held down by \`lab stop\`; \`lab start\` it`);
    if (t.current.pid > 0 && await running(t.current.pid)) process.kill(t.current.pid, opts.kill ? "SIGKILL" : "SIGTERM");
    const newPid = await t.waitReady(t.current.pid);
    const after = (await readSupervision(this.stateDir))?.processes.find((p) => p.name === t.name);
    return { name: t.name, oldPid: t.current.pid, newPid, restarts: after?.restarts ?? t.current.restarts + 1 };
  }

  /**
   * Scales an agent or the control plane to zero: the supervisor holds it (does not start it
   * again), then it gets SIGTERM (SIGKILL with `kill`); resolves once it has exited. For
   * tests of what goes on while it is down; `start` undoes it.
   */
  async stop(target: RestartTarget, opts: { kill?: boolean } = {}): Promise<{ name: string; pid: number }> {
    const t = await this.supervised(target, "stop");
    await this.setHeld(t.name, true, t.supervisorPid);
    if (t.current.pid > 0 && await running(t.current.pid)) process.kill(t.current.pid, opts.kill ? "SIGKILL" : "SIGTERM");
    const deadline = Date.now() + STOP_GRACE_MS + 2000;
    while (t.current.pid > 0 && await running(t.current.pid)) {
      if (Date.now() > deadline) throw new Error(`lab stop ${t.name}: pid ${t.current.pid} still runs ${(STOP_GRACE_MS + 2000) / 1000} s after ${opts.kill ? "SIGKILL" : "SIGTERM"}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return { name: t.name, pid: t.current.pid };
  }

  /** Undoes `stop`: the supervisor starts it again; resolves when it serves. */
  async start(target: RestartTarget): Promise<RestartResult> {
    const t = await this.supervised(target, "start");
    await this.setHeld(t.name, false, t.supervisorPid);
    const newPid = await t.waitReady(t.current.pid);
    const after = (await readSupervision(this.stateDir))?.processes.find((p) => p.name === t.name);
    return { name: t.name, oldPid: t.current.pid, newPid, restarts: after?.restarts ?? t.current.restarts };
  }

  /** Writes the hold into state.json, signals the supervisor, and waits until its record shows it. */
  private async setHeld(name: string, held: boolean, supervisorPid: number): Promise<void> {
    await this.mutate(async (state) => {
      const set = new Set(state.held ?? []);
      if (held) set.add(name); else set.delete(name);
      if (set.size > 0) state.held = [...set].sort(); else delete state.held;
      await writeState(state);
    });
    process.kill(supervisorPid, "SIGHUP");
    const deadline = Date.now() + 5000;
    for (;;) {
      const p = (await readSupervision(this.stateDir))?.processes.find((x) => x.name === name);
      if ((p?.held ?? false) === held) return;
      if (Date.now() > deadline) throw new Error(`lab ${held ? "stop" : "start"} ${name}: the supervisor (pid ${supervisorPid}) did not take the change within 5 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The supervised process a target names, its supervisor, and how to wait until a new one serves. */
  private async supervised(target: RestartTarget, verb: string) {
    const state = await requireState(this.stateDir);
    const name = target.kind === "agent" ? agentProcess(requireNode(state, target.node).name) : CONTROLPLANE_PROCESS;
    const cp = state.controlplane;
    if (target.kind === "controlplane" && !cp) throw new Error(`lab ${verb}: this lab runs no control plane (up --no-agents)`);
    const agent = target.kind === "agent" ? state.agents.find((a) => a.node === target.node) : undefined;
    if (target.kind === "agent" && !agent) throw new Error(`lab ${verb}: this lab runs no agent on node ${target.node} (up --no-agents)`);
    const current = (await readSupervision(this.stateDir))?.processes.find((p) => p.name === name);
    if (!current || !state.supervisor || !(await running(state.supervisor.pid))) {
      throw new Error(`lab ${verb} ${name}: the lab's supervisor is not running, so nothing would start it again; \`lab up\` anew`);
    }
    const waitReady = (notPid: number): Promise<number> => agent
      ? waitAgentHealthy(this.stateDir, requireNode(state, agent.node), agent, { notPid })
      : waitControlPlaneReady(this.stateDir, cp as LabControlPlane, { notPid });
    return { name, current, supervisorPid: state.supervisor.pid, waitReady };
  }

  down(opts: DownOptions = {}): Promise<TeardownReport> {
    return down(this.stateDir, opts);
  }

  private mutate<T>(fn: (state: LabState) => Promise<T>): Promise<T> {
    return withLock(this.stateDir, async () => fn(await requireState(this.stateDir)));
  }
}

// ---- building state ---------------------------------------------------------------------------

async function resolveTopology(opts: UpOptions): Promise<Topology> {
  const parseOpts = opts.nodes !== undefined ? { nodes: opts.nodes } : {};
  if (typeof opts.topology === "string") return loadTopology(opts.topology, parseOpts);
  // An object goes through the same checks as a file.
  if (opts.topology) return parseTopology(JSON.stringify(topologyDocument(opts.topology)), "topology", parseOpts);
  return defaultTopology(parseOpts);
}

function topologyDocument(t: TopologyInput): unknown {
  return { nodes: t.nodes, namespaces: t.namespaces, pods: t.pods, workloads: t.workloads, services: t.services,
    ...(t.outside !== undefined ? { outside: t.outside } : {}),
    traffic: (t.traffic ?? []).map(trafficDocument), policies: (t.policies ?? []).map(policyManifest) };
}

const STARTUP_WAIT_MS = 30_000;

/** Polls the control plane's status until `done`, logging `show` when it changes (not when ""); fails after STARTUP_WAIT_MS. */
async function waitFor(cp: LabControlPlane, what: string, done: (s: GetStatusResponse) => boolean,
  show: (s: GetStatusResponse) => string, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + STARTUP_WAIT_MS;
  let shown = "";
  for (;;) {
    let status: GetStatusResponse | undefined;
    try {
      status = await controlPlaneStatus(cp, 2000);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`lab up: waiting for ${what}: the control plane on ${cp.observer} does not answer: ${(err as Error).message}`);
    }
    if (status) {
      const now = show(status);
      if (now !== shown && now !== "") log(`lab up: ${what}: ${now}`);
      shown = now;
      if (done(status)) return;
      if (Date.now() > deadline) throw new Error(`lab up: ${what}: still ${now} after ${STARTUP_WAIT_MS / 1000} s (logs in the state dir's logs/)`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function planState(stateDir: string, topology: Topology, agentsEnabled: boolean, pinDir: string, exportDir: string | undefined): LabState {
  const now = new Date().toISOString();
  const state: LabState = {
    version: 1,
    stateDir,
    createdAt: now,
    nodes: topology.nodes.map((name, i) => ({
      name, index: i + 1, ...nodeAddresses(i + 1), netns: nodeNetns(name), uid: randomUUID(), creationTimestamp: now,
    })),
    namespaces: topology.namespaces.map((ns) => ({ ...ns, uid: randomUUID(), creationTimestamp: now })),
    workloads: [],
    pods: [],
    services: [],
    agents: [],
    agentsEnabled,
    pinDir,
    nextNode: 0,
    rulesDigest: "",
  };
  if (exportDir !== undefined) state.exportDir = path.resolve(exportDir);
  state.outside = { netns: OUTSIDE_NETNS, ip: OUTSIDE.ip, ipv6: OUTSIDE.ipv6, ports: topology.outside?.ports ?? [] };
  const expanded = expandTopology(topology, randomUUID, now);
  state.workloads = expanded.workloads;
  const taken = new Set<string>();
  for (const plan of expanded.pods) state.pods.push(placePod(state, plan, now, taken));
  for (const spec of topology.services) state.services.push(makeService(state, spec, now));
  return state;
}

/** Picks the node (given, or round-robin), the lowest free IP on it, and the pod's netns and veth names. */
function placePod(state: LabState, plan: PlannedPod, now: string, takenNetns: Set<string>): LabPod {
  let node = state.nodes.find((n) => n.name === plan.node);
  if (!node) {
    node = state.nodes[state.nextNode % state.nodes.length];
    state.nextNode++;
  }
  if (!node) throw new Error("the lab has no nodes");
  const used = new Set(state.pods.filter((p) => p.node === node.name).map((p) => podHost(p.ip)));
  const host = allocatePodHost(used, node.name);
  for (const p of state.pods) takenNetns.add(p.netns);
  const netns = podNetnsName(plan.namespace, plan.name, takenNetns);
  takenNetns.add(netns);
  const pod: LabPod = {
    namespace: plan.namespace,
    name: plan.name,
    uid: randomUUID(),
    node: node.name,
    ...podAddresses(node.index, host),
    netns,
    hostIface: hostIfaceName(plan.namespace, plan.name),
    labels: plan.labels,
    ports: plan.ports,
    container: plan.container,
    creationTimestamp: now,
  };
  if (plan.owner) pod.owner = plan.owner;
  return pod;
}

function makeService(state: LabState, spec: ServiceSpec, now: string): LabService {
  const used = new Set(state.services.map((s) => s.clusterIP));
  if (spec.clusterIP !== undefined && used.has(spec.clusterIP)) {
    throw new Error(`service ${spec.namespace}/${spec.name}: clusterIP ${spec.clusterIP} is already in use`);
  }
  return {
    namespace: spec.namespace,
    name: spec.name,
    uid: randomUUID(),
    clusterIP: spec.clusterIP ?? allocateClusterIP(used),
    selector: spec.selector,
    ports: spec.ports,
    creationTimestamp: now,
  };
}

/** Service rules, manifests, state file: the state is saved even if the rules fail. */
async function commit(state: LabState, opts: { forceRules?: boolean } = {}): Promise<void> {
  let failure: unknown;
  try {
    await applyServiceRules(state, { force: opts.forceRules ?? false });
  } catch (err) {
    failure = err;
  }
  await writeManifests(state);
  await writeState(state);
  if (failure !== undefined) throw failure;
}

// ---- teardown ---------------------------------------------------------------------------------

async function removeLeftovers(stateDir: string, removePins: boolean | undefined, log: (line: string) => void): Promise<void> {
  let previous: LabState | undefined;
  let unreadable = false;
  try {
    previous = await readState(stateDir);
  } catch {
    unreadable = true;
  }
  const leftovers = (await listNetns()).filter((n) => isLabNetns(n, previous?.nodes.map((x) => x.name) ?? []));
  const supervisors = await supervisorPids(stateDir);
  if (!previous && !unreadable && leftovers.length === 0 && supervisors.length === 0) return;
  const owner = leftovers.includes(UNDERLAY_NETNS) ? await underlayOwner() : undefined;
  log(`lab up: removing a previous lab first (${leftovers.length} netns${supervisors.length > 0 ? `, supervisor pid ${supervisors.join(", ")}` : ""}`
    + `${owner && owner !== stateDir ? `, state dir ${owner}` : ""})`);
  const opts: DownOptions = { log };
  if (removePins !== undefined) opts.removePins = removePins;
  await cleanup(stateDir, opts);
}

/** `pinDir`: the pin folder when the state does not name one (it is not written yet, or lost). */
async function cleanup(stateDir: string, opts: DownOptions, pinDir = BPF_PIN_DIR): Promise<TeardownReport> {
  let previous: LabState | undefined;
  try {
    previous = await readState(stateDir);
  } catch (err) {
    opts.log?.(`lab down: ignoring unreadable state (${(err as Error).message})`);
  }
  // First, so nothing is started again while the rest goes.
  const supervisors = await stopSupervisor(stateDir);
  const removePins = opts.removePins ?? previous?.agentsEnabled ?? false;
  const teardownOpts: { pinDir?: string } = {};
  if (removePins) teardownOpts.pinDir = previous?.pinDir ?? pinDir;
  const report = await teardown(previous?.nodes.map((n) => n.name) ?? [], teardownOpts);
  report.stoppedPids = [...new Set([...supervisors, ...report.stoppedPids])];
  const cp = await stopControlPlane(stateDir);
  if (cp !== undefined) report.stoppedPids.push(cp);
  const entries = await readdir(stateDir).catch(() => [] as string[]);
  for (const entry of entries) {
    // The certificates go too: a lab's CA key must not outlive the lab.
    if (entry === STATE_FILE || entry.startsWith(`${STATE_FILE}.tmp-`) || entry === MANIFESTS_DIR || entry === LOGS_DIR || entry === TLS_DIR
      || entry === SUPERVISION_FILE || entry.startsWith(`${SUPERVISION_FILE}.tmp-`) || entry === CONTROLPLANE_PID_FILE || entry === STORE_DIR) {
      await rm(path.join(stateDir, entry), { recursive: true, force: true });
    }
  }
  return report;
}

// ---- lookups and views ------------------------------------------------------------------------

function splitRef(ref: PodRef): [string, string] {
  if (typeof ref !== "string") return [ref.namespace, ref.name];
  const slash = ref.indexOf("/");
  if (slash <= 0 || slash === ref.length - 1) throw new Error(`expected a pod as NAMESPACE/NAME, got ${JSON.stringify(ref)}`);
  return [ref.slice(0, slash), ref.slice(slash + 1)];
}

function findPod(state: LabState, namespace: string, name: string): LabPod {
  const pod = state.pods.find((p) => p.namespace === namespace && p.name === name);
  if (!pod) {
    const inNs = state.pods.filter((p) => p.namespace === namespace).map((p) => p.name);
    throw new Error(`pod ${namespace}/${name} not found (pods in ${namespace}: ${inNs.join(", ") || "none"})`);
  }
  return pod;
}

function requireNamespace(state: LabState, name: string) {
  const ns = state.namespaces.find((n) => n.name === name);
  if (!ns) throw new Error(`namespace ${name} not found (namespaces: ${state.namespaces.map((n) => n.name).join(", ")}); add it first`);
  return ns;
}

function requireNode(state: LabState, name: string) {
  const node = state.nodes.find((n) => n.name === name);
  if (!node) throw new Error(`node ${name} not found (nodes: ${state.nodes.map((n) => n.name).join(", ")})`);
  return node;
}

function splitPatch(patch: Record<string, string | null>, source: string): { set: Record<string, string>; remove: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) remove.push(k);
    else set[k] = v;
  }
  return { set: new FieldReader(source).labels(set, "labels"), remove };
}

function applyPatch(labels: Record<string, string>, set: Record<string, string>, remove: readonly string[]): Record<string, string> {
  const out = { ...labels, ...set };
  for (const k of remove) delete out[k];
  return out;
}

function withoutNameLabel(labels: Record<string, string>): Record<string, string> {
  const { ["kubernetes.io/metadata.name"]: _name, ...rest } = labels;
  return rest;
}

async function outsideStatus(o: LabOutside): Promise<OutsideStatus> {
  const s: OutsideStatus = { netns: o.netns, ip: o.ip, ipv6: o.ipv6, ports: o.ports };
  if (o.pid !== undefined) s.app = { pid: o.pid, running: await running(o.pid), log: o.log ?? "" };
  return s;
}

function podStatus(pod: LabPod): PodStatus {
  const s: PodStatus = {
    namespace: pod.namespace,
    name: pod.name,
    ip: pod.ip,
    ipv6: pod.ipv6,
    node: pod.node,
    labels: pod.labels,
    uid: pod.uid,
    netns: pod.netns,
    hostIface: pod.hostIface,
    ports: pod.ports,
  };
  if (pod.owner) s.owner = { kind: pod.owner.kind, name: pod.owner.name };
  return s;
}

function serviceStatus(svc: LabService, pods: readonly LabPod[]): ServiceStatus {
  return {
    namespace: svc.namespace,
    name: svc.name,
    clusterIP: svc.clusterIP,
    ports: svc.ports,
    selector: svc.selector,
    endpoints: resolveService(svc, pods).map((r) => r.backends.map((b) => `${b.pod.ip}:${b.port}`)),
  };
}
