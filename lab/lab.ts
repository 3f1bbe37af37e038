// The lab's programmatic API, used by tests and by `bulkhead lab …`. Every call reads and
// writes `<stateDir>/state.json` under the state dir's lock, so separate processes can work
// on the same lab. A change is applied to the datapath first, then to the Service rules,
// the manifests and the state file.
import { randomUUID } from "node:crypto";
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from "node:child_process";
import { readdir, readFile, rm, rmdir } from "node:fs/promises";
import path from "node:path";
import {
  allocateClusterIP, allocatePodHost, hostIfaceName, isLabNetns, nodeAddresses, nodeNetns, OUTSIDE, OUTSIDE_NETNS, podAddresses, podHost,
  podNetnsName, UNDERLAY_NETNS,
} from "./addressing.js";
import { agentSpecs, DRAIN_INTERVAL_RANGE_MS, waitAgentHealthy, type AgentCommand, type AgentSpecOptions } from "./agents.js";
import { repoRoot } from "../config/install.js";
import { clickHouseLogTail, freeLoopbackPort, writeClickHouseSetup } from "./clickhouse.js";
import {
  controlPlaneSpec, controlPlaneStatus, DEFAULT_OBSERVER_ADDRESS, DEFAULT_UI_ADDRESS, issueLabCertificates, LAB_CLICKHOUSE_DATABASE, labTlsDir,
  MAX_CONTROLPLANES, replicaName, shiftPort, stopControlPlane, TLS_DIR, uiUrl, waitControlPlaneReady, type ControlPlaneOptions,
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
  CLICKHOUSE_DIR, controlPlanes, DEFAULT_STATE_DIR, LOGS_DIR, MANIFESTS_DIR, SERVER_PID_FILE, STATE_FILE, STORE_DIR, SUPERVISION_FILE, readState, readSupervision,
  requireState, withLock, writeState, type LabClickHouse, type LabControlPlane, type LabOutside, type LabPod, type LabService, type LabState,
} from "./state.js";
import { agentProcess, CLICKHOUSE_PROCESS, startSupervisor, stopSupervisor, storeReady, supervisorPids, waitStarted } from "./supervisor.js";
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
  /**
   * Where the control plane keeps the flow history: "embedded" (default; DuckDB in
   * `<stateDir>/store`) or "clickhouse" (a clickhouse-server the supervisor runs, loopback
   * only, its files in `<stateDir>/clickhouse`, shared by every replica).
   */
  store?: LabStoreKind;
  /** Control-plane replicas (default 1); more than one needs `store: "clickhouse"`. Replica i
   * serves the Observer API and UI on the first's ports + 2i; every agent gets every replica. */
  controlplanes?: number;
  /** Plaintext between agents and control plane, and for the Observer API; default: mutual TLS with
   * certificates from `bulkhead certs` in `<stateDir>/tls/`. */
  insecure?: boolean;
  /** Start the topology's traffic section in the pods (pod-app.ts), detached: it runs until `down`. */
  traffic?: boolean;
  /**
   * The agents' flow-map drain interval (`bulkhead agent --drain-interval`), default the
   * agent's (1 s): how soon a packet's record reaches the export file and the control
   * plane. Tests and the conformance engine, which wait for records, pass 100.
   */
  drainIntervalMs?: number;
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

export const LAB_STORE_KINDS = ["embedded", "clickhouse"] as const;
export type LabStoreKind = typeof LAB_STORE_KINDS[number];

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
  /** Its replica index (0 for the only one). */
  index: number;
  running: boolean;
  restarts: number;
  /** Held down by `lab stop`. */
  held?: boolean;
}

/** Where the lab's control planes keep the flow history. */
export type StoreStatus =
  | { kind: "embedded"; location: string }
  | { kind: "clickhouse"; url: string; httpUrl: string; pid: number; running: boolean; restarts: number; held?: boolean; log: string; dir: string };

/**
 * What `lab restart` restarts: one node's agent, or a control-plane replica (`replica`: its
 * index or name; may be left out when the lab runs one), or the ClickHouse server.
 */
export type RestartTarget = { kind: "agent"; node: string } | { kind: "controlplane"; replica?: number | string } | { kind: "store" };

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
  /** The control plane; with several replicas, replica 0 (every one is in `controlplanes`). */
  controlplane?: ControlPlaneStatus;
  /** Every control-plane replica, in index order (one when the lab runs one). */
  controlplanes?: ControlPlaneStatus[];
  /** The flow store of the control planes. */
  store?: StoreStatus;
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
  const { storeKind, replicas } = checkStoreOptions(opts, withAgents);
  checkDrainInterval(opts.drainIntervalMs, withAgents);
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
        await rm(path.join(stateDir, CLICKHOUSE_DIR), { recursive: true, force: true });
        if (storeKind === "clickhouse") state.store = await planClickHouse(stateDir);
        const specs = replicaSpecs(stateDir, cpOpts, replicas, state.store);
        state.controlplane = specs[0];
        if (specs.length > 1) state.replicas = specs.slice(1);
      }
      if (withAgents) {
        const agentOpts: AgentSpecOptions = { stateDir, pinDir: state.pinDir };
        // Every agent gets every replica; it starts at one picked by its node's name and moves on when it is lost.
        if (state.controlplane) agentOpts.controlplane = controlPlanes(state).map((cp) => cp.agents).join(",");
        if (state.controlplane?.ca !== undefined) agentOpts.tlsDir = labTlsDir(stateDir);
        if (state.exportDir !== undefined) agentOpts.exportDir = state.exportDir;
        if (opts.drainIntervalMs !== undefined) agentOpts.drainIntervalMs = opts.drainIntervalMs;
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
      if (state.store) {
        state.store.pid = await waitStoreReady(stateDir, state.store, { failOnExit: true });
        await writeState(state);
        log(`lab up: ClickHouse server pid ${state.store.pid} on ${state.store.httpUrl} (${state.store.url}, files in ${state.store.dir})`);
      }
      for (const cp of controlPlanes(state)) {
        cp.pid = await waitControlPlaneReady(stateDir, cp, { failOnExit: true });
        await writeState(state);
        log(`lab up: ${cp.name === state.controlplane?.name && !state.replicas ? "control plane" : `control plane ${cp.name}`} pid ${cp.pid}, Observer API on ${cp.observer}`
          + (cp.ca !== undefined ? ` (TLS; CA ${cp.ca})` : " (plaintext)")
          + `${cp.ui !== undefined ? `, UI on ${cp.ui}` : ""}`);
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
          const cps = controlPlanes(state);
          const connected = (ss: GetStatusResponse[]) => ss.reduce((n, s) => n + s.agentsConnected, 0);
          await waitFor(cps, "agents connected", (ss) => connected(ss) >= state.nodes.length,
            (ss) => `${connected(ss)}/${state.nodes.length}${cps.length > 1 ? ` (${ss.map((s, i) => `${cps[i]?.name} ${s.agentsConnected}`).join(", ")})` : ""}`, log);
          // Traffic starts only once every node enforces the topology's policies, so no
          // early packet gets a verdict from before them. Each replica knows the agents on it.
          for (const cp of cps) {
            const nodes = cps.length === 1 ? state.nodes.map((n) => n.name) : await connectedNodes(cp);
            if (nodes.length === 0) continue;
            const watch = new EnforcementWatch(cp.observer, nodes, cp.ca);
            try {
              const version = await watch.waitEnforced();
              log(`lab up: policy version ${version} enforced on every node${cps.length > 1 ? ` of ${cp.name} (${nodes.join(", ")})` : ""}`);
            } finally {
              watch.close();
            }
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
          const records = (ss: GetStatusResponse[]) => ss.reduce((n, s) => n + s.recordsTotal, 0n);
          await waitFor(controlPlanes(state), "first flows seen", (ss) => records(ss) > 0n,
            (ss) => (records(ss) > 0n ? `${records(ss)} records` : ""), log);
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
    const controlplanes = await Promise.all(controlPlanes(state).map(async (c, index): Promise<ControlPlaneStatus> => {
      const { argv: _argv, ...cp } = c;
      const { pid, restarts, held } = live(cp.name, cp.pid);
      return { ...cp, index, pid, running: pid > 0 && await running(pid), restarts, ...(held ? { held } : {}) };
    }));
    const controlplane = controlplanes[0];
    let store: StoreStatus | undefined;
    if (state.store) {
      const { pid, restarts, held } = live(CLICKHOUSE_PROCESS, state.store.pid);
      store = { kind: "clickhouse", url: state.store.url, httpUrl: state.store.httpUrl, pid, running: pid > 0 && await running(pid), restarts,
        ...(held ? { held } : {}), log: state.store.log, dir: state.store.dir };
    } else if (state.controlplane) {
      store = { kind: "embedded", location: path.join(this.stateDir, STORE_DIR) };
    }
    if (state.supervisor && !(await running(state.supervisor.pid))) {
      problems.push(`the supervisor (pid ${state.supervisor.pid}) is not running: nothing restarts an agent, control plane or store that exits`);
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
      ...(controlplane ? { controlplane, controlplanes } : {}),
      ...(store ? { store } : {}),
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
    let name: string;
    let waitReady: (notPid: number) => Promise<number>;
    if (target.kind === "agent") {
      const node = requireNode(state, target.node);
      const agent = state.agents.find((a) => a.node === target.node);
      if (!agent) throw new Error(`lab ${verb}: this lab runs no agent on node ${target.node} (up --no-agents)`);
      name = agentProcess(node.name);
      waitReady = (notPid) => waitAgentHealthy(this.stateDir, node, agent, { notPid });
    } else if (target.kind === "controlplane") {
      const cp = pickReplica(state, target.replica, verb);
      name = cp.name;
      waitReady = (notPid) => waitControlPlaneReady(this.stateDir, cp, { notPid });
    } else {
      const store = state.store;
      if (!store) throw new Error(`lab ${verb}: this lab runs no ClickHouse server (its store is the embedded one; up --store clickhouse runs one)`);
      name = CLICKHOUSE_PROCESS;
      waitReady = (notPid) => waitStoreReady(this.stateDir, store, { notPid });
    }
    const current = (await readSupervision(this.stateDir))?.processes.find((p) => p.name === name);
    if (!current || !state.supervisor || !(await running(state.supervisor.pid))) {
      throw new Error(`lab ${verb} ${name}: the lab's supervisor is not running, so nothing would start it again; \`lab up\` anew`);
    }
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

/**
 * Polls every replica's status until `done` (given them in replica order), logging `show`
 * when it changes (not when ""); fails after STARTUP_WAIT_MS.
 */
async function waitFor(cps: readonly LabControlPlane[], what: string, done: (s: GetStatusResponse[]) => boolean,
  show: (s: GetStatusResponse[]) => string, log: (line: string) => void): Promise<void> {
  const deadline = Date.now() + STARTUP_WAIT_MS;
  let shown = "";
  for (;;) {
    let status: GetStatusResponse[] | undefined;
    try {
      status = await Promise.all(cps.map((cp) => controlPlaneStatus(cp, 2000).catch((err: Error) => {
        throw new Error(`the control plane on ${cp.observer} does not answer: ${err.message}`);
      })));
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`lab up: waiting for ${what}: ${(err as Error).message}`);
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

/** The store and replica count `up` was given, checked before anything is built. */
function checkStoreOptions(opts: UpOptions, withAgents: boolean): { storeKind: LabStoreKind; replicas: number } {
  const storeKind = opts.store ?? "embedded";
  if (!(LAB_STORE_KINDS as readonly string[]).includes(storeKind)) {
    throw new Error(`store: expected one of ${LAB_STORE_KINDS.join(", ")}, got ${JSON.stringify(storeKind)}`);
  }
  const replicas = opts.controlplanes ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_CONTROLPLANES) {
    throw new Error(`controlplanes: expected an integer 1-${MAX_CONTROLPLANES}, got ${JSON.stringify(replicas)}`);
  }
  if (replicas > 1 && storeKind !== "clickhouse") {
    throw new Error(`controlplanes: ${replicas} replicas need a store they share: add --store clickhouse (the embedded store is one process's file)`);
  }
  if ((storeKind !== "embedded" || replicas > 1) && !(opts.controlplane ?? withAgents)) {
    throw new Error(`${storeKind !== "embedded" ? "store" : "controlplanes"}: this lab runs no control plane (no agents, or controlplane: false)`);
  }
  return { storeKind, replicas };
}

/** The drain interval `up` was given, checked before anything is built (the agent's own bounds). */
function checkDrainInterval(ms: number | undefined, withAgents: boolean): void {
  if (ms === undefined) return;
  const { min, max } = DRAIN_INTERVAL_RANGE_MS;
  if (!Number.isInteger(ms) || ms < min || ms > max) {
    throw new Error(`drainIntervalMs: expected an integer ${min}-${max} (milliseconds), got ${JSON.stringify(ms)}`);
  }
  if (!withAgents) throw new Error("drainIntervalMs: this lab runs no agents (startAgents: false) to drain anything");
}

/** The lab's ClickHouse server: its files written under <stateDir>/clickhouse, a free loopback port; the supervisor starts it. */
async function planClickHouse(stateDir: string): Promise<LabClickHouse> {
  const dir = path.join(stateDir, CLICKHOUSE_DIR);
  const setup = writeClickHouseSetup(dir, await freeLoopbackPort());
  return { kind: "clickhouse", pid: 0, argv: setup.argv, url: `clickhouse://127.0.0.1:${setup.port}/${LAB_CLICKHOUSE_DATABASE}`,
    httpUrl: setup.httpUrl, credentials: setup.credentialsFile, dir, log: path.join(stateDir, LOGS_DIR, `${CLICKHOUSE_PROCESS}.log`) };
}

/** Replica i listens on the first's Observer and UI ports + 2i (4387, 4389, …; UI 4388, 4390, …). */
function replicaSpecs(stateDir: string, first: ControlPlaneOptions, count: number, store: LabClickHouse | undefined): LabControlPlane[] {
  const specs: LabControlPlane[] = [];
  for (let i = 0; i < count; i++) {
    const o: ControlPlaneOptions = { ...first, name: replicaName(i, count) };
    if (store) o.store = store;
    if (i > 0) {
      o.observer = shiftPort(first.observer ?? DEFAULT_OBSERVER_ADDRESS, 2 * i, "--observer");
      if (first.ui !== undefined) o.ui = shiftPort(first.ui, 2 * i, "--ui");
    }
    specs.push(controlPlaneSpec(stateDir, repoRoot, o));
  }
  const addresses = specs.flatMap((cp) => [cp.observer, ...(cp.ui !== undefined ? [new URL(cp.ui).host] : [])]);
  const twice = addresses.find((a, i) => addresses.indexOf(a) !== i);
  if (twice !== undefined) throw new Error(`controlplanes: two replicas would listen on ${twice} (replica i takes the first's Observer and UI ports + 2i); choose other ports`);
  return specs;
}

/** The nodes whose agents stream to this replica now. */
async function connectedNodes(cp: LabControlPlane): Promise<string[]> {
  const probe = new EnforcementWatch(cp.observer, [], cp.ca);
  try {
    return (await probe.nodeStatus()).filter((n) => n.connected).map((n) => n.name);
  } finally {
    probe.close();
  }
}

/** Waits until the supervisor runs the ClickHouse server (a pid other than `notPid`) and it answers an authenticated query. */
async function waitStoreReady(stateDir: string, store: LabClickHouse, opts: { notPid?: number; failOnExit?: boolean } = {}): Promise<number> {
  try {
    return await waitStarted(stateDir, CLICKHOUSE_PROCESS, { ...opts, what: "ClickHouse server", timeoutMs: STORE_READY_MS, ready: () => storeReady(store) });
  } catch (err) {
    const own = (await readFile(store.log, "utf8").catch(() => "")).trimEnd().split("\n").slice(-10).join("\n");
    throw new Error(`${(err as Error).message} (${store.httpUrl}; log ${store.log}; server log in ${path.join(store.dir, "logs")})`
      + `\n--- last lines of ${store.log} ---\n${own || "(empty)"}\n--- server error log ---\n${clickHouseLogTail(store.dir)}`);
  }
}

/** A first start on a busy 2-core machine creates ClickHouse's system tables. */
const STORE_READY_MS = 30_000;

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
  // The control planes and the ClickHouse server run in the machine's namespace: by their pid files.
  report.stoppedPids.push(...(await stopControlPlane(stateDir)).filter((pid) => !report.stoppedPids.includes(pid)));
  const entries = await readdir(stateDir).catch(() => [] as string[]);
  for (const entry of entries) {
    // The certificates go too: a lab's CA key must not outlive the lab.
    if (entry === STATE_FILE || entry.startsWith(`${STATE_FILE}.tmp-`) || entry === MANIFESTS_DIR || entry === LOGS_DIR || entry === TLS_DIR
      || entry === SUPERVISION_FILE || entry.startsWith(`${SUPERVISION_FILE}.tmp-`) || SERVER_PID_FILE.test(entry) || entry === STORE_DIR
      || entry === CLICKHOUSE_DIR) {
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

/** The replica an index or name (controlplane-1, or 1) picks; none given: the only one. */
function pickReplica(state: LabState, replica: number | string | undefined, verb: string): LabControlPlane {
  const cps = controlPlanes(state);
  if (cps.length === 0) throw new Error(`lab ${verb}: this lab runs no control plane (up --no-agents)`);
  const names = cps.map((cp, i) => `${i} (${cp.name})`).join(", ");
  if (replica === undefined) {
    if (cps.length === 1) return cps[0] as LabControlPlane;
    throw new Error(`lab ${verb} controlplane: this lab runs ${cps.length} replicas; name one by index or name: ${names}`);
  }
  const found = typeof replica === "number" || /^\d+$/.test(replica) ? cps[Number(replica)] : cps.find((cp) => cp.name === replica);
  if (!found) throw new Error(`lab ${verb} controlplane: no replica ${JSON.stringify(replica)}; the lab runs ${names}`);
  return found;
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
