// The lab's runtime state: `<stateDir>/state.json`, shared by every process that works on
// the same lab (`bulkhead lab up` in one shell, `lab status` in another, a test in a third).
// Writes go to a temp file and are renamed into place; mutations hold `<stateDir>/lock`.
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { LAB_INSTANCE_SUFFIX } from "./addressing.js";
import { FieldReader, fieldPath } from "../fields/reader.js";
import { PROTOCOLS, WORKLOAD_KINDS, type ContainerPort, type Protocol, type ServicePort, type WorkloadKind } from "./topology.js";

export const DEFAULT_STATE_DIR = `/run/bulkhead/lab${LAB_INSTANCE_SUFFIX}`;
export const STATE_FILE = "state.json";
export const LOCK_FILE = "lock";
export const MANIFESTS_DIR = "manifests";
export const LOGS_DIR = "logs";
/** The control plane's embedded flow store (--data-dir): fresh for each `up`, removed by `down`. */
export const STORE_DIR = "store";
/** The control plane's pid, rewritten by the supervisor at each start, so `down` finds it without state.json. */
export const CONTROLPLANE_PID_FILE = "controlplane.pid";
/** Each supervised control-plane replica's and the ClickHouse server's pid file is `<name>.pid`, the
 * replica's log `logs/<name>.log`; these are every such file name, so `down` finds them without state. */
export const SERVER_PID_FILE = /^(controlplane(-\d+)?|clickhouse)\.pid$/;
/** The lab's ClickHouse server (up --store clickhouse): config, data, logs and credentials. */
export const CLICKHOUSE_DIR = "clickhouse";
/** The supervised process name of the single control plane (and of replica 0's pid file when alone). */
export const CONTROLPLANE_NAME = "controlplane";
/** Written by the lab's supervisor alone (supervisor.ts): the live pid and restarts of each process it runs. */
export const SUPERVISION_FILE = "supervisor.json";

export interface LabNode {
  name: string;
  /** 1-based; fixes the node's addresses (see addressing.ts). */
  index: number;
  ip: string;
  ipv6: string;
  podCIDR: string;
  podCIDRv6: string;
  netns: string;
  uid: string;
  creationTimestamp: string;
}

export interface LabNamespace {
  name: string;
  labels: Record<string, string>;
  annotations?: Record<string, string>;
  uid: string;
  creationTimestamp: string;
}

export interface OwnerRef {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
}

export interface LabWorkload {
  kind: WorkloadKind;
  namespace: string;
  name: string;
  uid: string;
  labels: Record<string, string>;
  replicas: number;
  ports: ContainerPort[];
  /** pod-template-hash (Deployment) or controller-revision-hash suffix (others). */
  templateHash: string;
  creationTimestamp: string;
  /** The ReplicaSet of a Deployment. */
  replicaSet?: { name: string; uid: string };
}

export interface LabPod {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  ip: string;
  ipv6: string;
  netns: string;
  /** Host-side veth in the node netns. */
  hostIface: string;
  labels: Record<string, string>;
  ports: ContainerPort[];
  container: string;
  owner?: OwnerRef;
  creationTimestamp: string;
}

export interface LabService {
  namespace: string;
  name: string;
  uid: string;
  clusterIP: string;
  selector: Record<string, string>;
  ports: ServicePort[];
  creationTimestamp: string;
}

export interface LabAgent {
  node: string;
  /** The first pid the supervisor started (0 until then); the live one is in supervisor.json. */
  pid: number;
  log: string;
  exportFile?: string;
  /** The command line the supervisor runs (agentCommand's output). */
  argv?: string[];
}

/** The lab's control plane process (one replica of them) and how to reach it. */
export interface LabControlPlane {
  /** Its supervised process name: "controlplane" when it is the only one, else "controlplane-<index>". */
  name: string;
  /** The first pid the supervisor started (0 until then); the live one is in supervisor.json. */
  pid: number;
  /** The command line the supervisor runs. */
  argv?: string[];
  /** Address for the CLI and the UI. */
  observer: string;
  /** Address agents stream to. */
  agents: string;
  log: string;
  /** The CA of the control plane's certificate when it serves mutual TLS (the default); absent: plaintext. */
  ca?: string;
  /** The web UI's URL (the control plane's --ui-listen), when it serves one. */
  ui?: string;
}

export interface LabState {
  version: 1;
  stateDir: string;
  createdAt: string;
  nodes: LabNode[];
  namespaces: LabNamespace[];
  workloads: LabWorkload[];
  pods: LabPod[];
  services: LabService[];
  agents: LabAgent[];
  /** Whether `up` started agents (then `down` also removes their BPF pins). */
  agentsEnabled: boolean;
  /** Where the agents pin BPF objects (/sys/fs/bpf/bulkhead unless a test says otherwise). */
  pinDir: string;
  /** Round-robin position for pods added without a node. */
  nextNode: number;
  /** Digest of the nftables ruleset last applied to every node; unchanged rules are not reapplied. */
  rulesDigest: string;
  exportDir?: string;
  /** The control plane `up` started, if any; with several replicas, the first (replica 0). */
  controlplane?: LabControlPlane;
  /** Replicas 1..N-1 (`up --controlplanes N`), beside `controlplane`; they share the ClickHouse store. */
  replicas?: LabControlPlane[];
  /** The ClickHouse server the replicas share (`up --store clickhouse`); absent: the embedded store. */
  store?: LabClickHouse;
  /** The topology file `up` built from (`lab traffic` reads its traffic section). */
  topologyFile?: string;
  /** Pod application processes `up --traffic` started (they stop with the pods' netns). */
  traffic?: { pids: number[] };
  /** The process that runs and restarts the control plane and agents (supervisor.ts). */
  supervisor?: { pid: number; log: string };
  /** Supervised processes held down by `lab stop` (not started again until `lab start`). */
  held?: string[];
  /** The outside host (datapath.ts): a netns with documentation-range addresses, the world to pods. */
  outside?: LabOutside;
}

/** The lab's own clickhouse-server (lab/clickhouse.ts), run by the supervisor as "clickhouse". */
export interface LabClickHouse {
  kind: "clickhouse";
  /** The first pid the supervisor started (0 until then); the live one is in supervisor.json. */
  pid: number;
  argv: string[];
  /** `--store` of every replica: clickhouse://127.0.0.1:PORT/DB. */
  url: string;
  /** http://127.0.0.1:PORT, for readiness. */
  httpUrl: string;
  /** `--store-credentials`: USER:PASSWORD. */
  credentials: string;
  /** Its config, data and logs (<stateDir>/clickhouse). */
  dir: string;
  /** Its stdout and stderr, and the supervisor's lines about it. */
  log: string;
}

/** Every control-plane replica, replica 0 first. */
export function controlPlanes(state: Pick<LabState, "controlplane" | "replicas">): LabControlPlane[] {
  return state.controlplane ? [state.controlplane, ...(state.replicas ?? [])] : [];
}

export interface LabOutside {
  netns: string;
  ip: string;
  ipv6: string;
  /** Ports its application serves (topology `outside.ports`); none: no application runs. */
  ports: ContainerPort[];
  /** The pid of its application, when it runs one. */
  pid?: number;
  log?: string;
}

/** One supervised process as the supervisor last saw it. */
export interface SupervisedProcess {
  /** "controlplane" (or "controlplane-<i>", one per replica), "clickhouse" or "agent/<node>". */
  name: string;
  /** The pid of the latest start (0 while waiting to restart after a failed spawn). */
  pid: number;
  /** Starts after the first. */
  restarts: number;
  startedAt: string;
  /** How the previous run ended ("killed by SIGKILL", "exited with code 3"), once one has. */
  lastExit?: string;
  /** Held down by `lab stop`: not started again until `lab start`. */
  held?: boolean;
}

export interface Supervision {
  /** The supervisor's pid. */
  pid: number;
  updatedAt: string;
  processes: SupervisedProcess[];
}

export class LabNotUpError extends Error {
  constructor(readonly stateDir: string) {
    super(`no lab is up in ${stateDir} (no ${STATE_FILE}); run \`bulkhead lab up\` first`);
    this.name = "LabNotUpError";
  }
}

export function statePath(stateDir: string): string {
  return path.join(stateDir, STATE_FILE);
}

/** The state, or undefined when there is no state file. A corrupt file is an error. */
export async function readState(stateDir: string): Promise<LabState | undefined> {
  let text: string;
  try {
    text = await readFile(statePath(stateDir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${statePath(stateDir)}: not JSON (${(err as Error).message}); run \`bulkhead lab down\` to clear it`);
  }
  return parseState(doc, statePath(stateDir));
}

export async function requireState(stateDir: string): Promise<LabState> {
  const state = await readState(stateDir);
  if (!state) throw new LabNotUpError(stateDir);
  return state;
}

export async function writeState(state: LabState): Promise<void> {
  await writeFileAtomic(statePath(state.stateDir), `${JSON.stringify(state, null, 2)}\n`);
}

/** Readers (a manifest watcher, another `lab status`) never see half a file. */
export async function writeFileAtomic(file: string, content: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, content);
  await rename(tmp, file);
}

// ---- lock ---------------------------------------------------------------------------------

const inProcess = new Map<string, Promise<void>>();

/**
 * Runs `fn` holding the state dir's lock: a promise chain serialises callers in this
 * process, a lock file (O_EXCL, holding our pid) other processes. A lock whose pid is dead
 * was left by a crash and is taken over.
 */
export async function withLock<T>(stateDir: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const key = path.resolve(stateDir);
  const previous = inProcess.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => { release = resolve; });
  const chained = previous.then(() => mine);
  inProcess.set(key, chained);
  await previous;
  try {
    await acquireFileLock(key, timeoutMs);
    try {
      return await fn();
    } finally {
      await rm(path.join(key, LOCK_FILE), { force: true });
    }
  } finally {
    release();
    if (inProcess.get(key) === chained) inProcess.delete(key);
  }
}

async function acquireFileLock(stateDir: string, timeoutMs: number): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  const lock = path.join(stateDir, LOCK_FILE);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await open(lock, "wx");
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const holder = Number((await readFile(lock, "utf8").catch(() => "")).trim());
    if (Number.isInteger(holder) && holder > 0 && !processAlive(holder)) {
      await rm(lock, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new Error(`lab state ${stateDir} is locked by pid ${holder || "?"} (${lock}); wait for it or remove the lock if that process is gone`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

// ---- parsing --------------------------------------------------------------------------------

export function parseState(doc: unknown, source: string): LabState {
  const r = new FieldReader(source);
  const m = r.map(doc, "", ["version", "stateDir", "createdAt", "nodes", "namespaces", "workloads", "pods",
    "services", "agents", "agentsEnabled", "pinDir", "nextNode", "rulesDigest", "exportDir", "controlplane", "replicas", "store", "topologyFile", "traffic",
    "supervisor", "held", "outside"]);
  if (m.version !== 1) r.fail("version", `unsupported state version ${JSON.stringify(m.version)}; run \`bulkhead lab down\``);
  const state: LabState = {
    version: 1,
    stateDir: r.string(m.stateDir, "stateDir"),
    createdAt: r.string(m.createdAt, "createdAt"),
    nodes: r.list(m.nodes, "nodes").map((v, i) => readNode(r, v, fieldPath("nodes", i))),
    namespaces: r.list(m.namespaces, "namespaces").map((v, i) => readNamespace(r, v, fieldPath("namespaces", i))),
    workloads: r.list(m.workloads, "workloads").map((v, i) => readWorkload(r, v, fieldPath("workloads", i))),
    pods: r.list(m.pods, "pods").map((v, i) => readPod(r, v, fieldPath("pods", i))),
    services: r.list(m.services, "services").map((v, i) => readService(r, v, fieldPath("services", i))),
    agents: r.list(m.agents, "agents").map((v, i) => readAgent(r, v, fieldPath("agents", i))),
    agentsEnabled: r.boolean(m.agentsEnabled, "agentsEnabled"),
    pinDir: r.string(m.pinDir, "pinDir"),
    nextNode: r.int(m.nextNode, "nextNode", 0, Number.MAX_SAFE_INTEGER),
    rulesDigest: r.string(m.rulesDigest, "rulesDigest"),
  };
  const exportDir = r.optionalString(m.exportDir, "exportDir");
  if (exportDir !== undefined) state.exportDir = exportDir;
  if (m.controlplane !== undefined) state.controlplane = readControlPlane(r, m.controlplane, "controlplane");
  if (m.replicas !== undefined) state.replicas = r.list(m.replicas, "replicas").map((v, i) => readControlPlane(r, v, fieldPath("replicas", i)));
  if (m.store !== undefined) {
    const c = r.map(m.store, "store", ["kind", "pid", "argv", "url", "httpUrl", "credentials", "dir", "log"]);
    state.store = {
      kind: r.oneOf(c.kind, "store.kind", ["clickhouse"] as const),
      pid: r.int(c.pid, "store.pid", 0, 2 ** 31),
      argv: readArgv(r, c.argv, "store.argv"),
      url: r.string(c.url, "store.url"),
      httpUrl: r.string(c.httpUrl, "store.httpUrl"),
      credentials: r.string(c.credentials, "store.credentials"),
      dir: r.string(c.dir, "store.dir"),
      log: r.string(c.log, "store.log"),
    };
  }
  if (m.supervisor !== undefined) {
    const s = r.map(m.supervisor, "supervisor", ["pid", "log"]);
    state.supervisor = { pid: r.int(s.pid, "supervisor.pid", 1, 2 ** 31), log: r.string(s.log, "supervisor.log") };
  }
  if (m.held !== undefined) state.held = r.list(m.held, "held").map((v, i) => r.string(v, fieldPath("held", i)));
  if (m.outside !== undefined) {
    const o = r.map(m.outside, "outside", ["netns", "ip", "ipv6", "ports", "pid", "log"]);
    state.outside = { netns: r.string(o.netns, "outside.netns"), ip: r.string(o.ip, "outside.ip"), ipv6: r.string(o.ipv6, "outside.ipv6"),
      ports: readPorts(r, o.ports, "outside.ports") };
    if (o.pid !== undefined) state.outside.pid = r.int(o.pid, "outside.pid", 1, 2 ** 31);
    const log = r.optionalString(o.log, "outside.log");
    if (log !== undefined) state.outside.log = log;
  }
  const topologyFile = r.optionalString(m.topologyFile, "topologyFile");
  if (topologyFile !== undefined) state.topologyFile = topologyFile;
  if (m.traffic !== undefined) {
    const t = r.map(m.traffic, "traffic", ["pids"]);
    state.traffic = { pids: r.list(t.pids, "traffic.pids").map((v, i) => r.int(v, fieldPath("traffic.pids", i), 1, 2 ** 31)) };
  }
  return state;
}

function readControlPlane(r: FieldReader, value: unknown, f: string): LabControlPlane {
  const c = r.map(value, f, ["name", "pid", "argv", "observer", "agents", "log", "ca", "ui"]);
  const cp: LabControlPlane = {
    // A state from before replicas names none: it ran the one control plane.
    name: r.optionalString(c.name, fieldPath(f, "name")) ?? CONTROLPLANE_NAME,
    pid: r.int(c.pid, fieldPath(f, "pid"), 0, 2 ** 31),
    observer: r.string(c.observer, fieldPath(f, "observer")),
    agents: r.string(c.agents, fieldPath(f, "agents")),
    log: r.string(c.log, fieldPath(f, "log")),
  };
  const ca = r.optionalString(c.ca, fieldPath(f, "ca"));
  if (ca !== undefined) cp.ca = ca;
  const ui = r.optionalString(c.ui, fieldPath(f, "ui"));
  if (ui !== undefined) cp.ui = ui;
  if (c.argv !== undefined) cp.argv = readArgv(r, c.argv, fieldPath(f, "argv"));
  return cp;
}

function readNode(r: FieldReader, value: unknown, f: string): LabNode {
  const m = r.map(value, f, ["name", "index", "ip", "ipv6", "podCIDR", "podCIDRv6", "netns", "uid", "creationTimestamp"]);
  return {
    name: r.string(m.name, fieldPath(f, "name")),
    index: r.int(m.index, fieldPath(f, "index"), 1, 254),
    ip: r.string(m.ip, fieldPath(f, "ip")),
    ipv6: r.string(m.ipv6, fieldPath(f, "ipv6")),
    podCIDR: r.string(m.podCIDR, fieldPath(f, "podCIDR")),
    podCIDRv6: r.string(m.podCIDRv6, fieldPath(f, "podCIDRv6")),
    netns: r.string(m.netns, fieldPath(f, "netns")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
    creationTimestamp: r.string(m.creationTimestamp, fieldPath(f, "creationTimestamp")),
  };
}

function readNamespace(r: FieldReader, value: unknown, f: string): LabNamespace {
  const m = r.map(value, f, ["name", "labels", "annotations", "uid", "creationTimestamp"]);
  const ns: LabNamespace = {
    name: r.string(m.name, fieldPath(f, "name")),
    labels: r.stringMap(m.labels, fieldPath(f, "labels")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
    creationTimestamp: r.string(m.creationTimestamp, fieldPath(f, "creationTimestamp")),
  };
  if (m.annotations !== undefined) ns.annotations = r.stringMap(m.annotations, fieldPath(f, "annotations"));
  return ns;
}

function readPorts(r: FieldReader, value: unknown, f: string): ContainerPort[] {
  return r.list(value, f).map((v, i) => {
    const pf = fieldPath(f, i);
    const m = r.map(v, pf, ["name", "port", "protocol"]);
    const port: ContainerPort = { port: r.int(m.port, fieldPath(pf, "port"), 1, 65535), protocol: readProtocol(r, m.protocol, fieldPath(pf, "protocol")) };
    const name = r.optionalString(m.name, fieldPath(pf, "name"));
    if (name !== undefined) port.name = name;
    return port;
  });
}

function readProtocol(r: FieldReader, value: unknown, f: string): Protocol {
  return r.oneOf(value, f, PROTOCOLS);
}

function readOwner(r: FieldReader, value: unknown, f: string): OwnerRef {
  const m = r.map(value, f, ["apiVersion", "kind", "name", "uid"]);
  return {
    apiVersion: r.string(m.apiVersion, fieldPath(f, "apiVersion")),
    kind: r.string(m.kind, fieldPath(f, "kind")),
    name: r.string(m.name, fieldPath(f, "name")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
  };
}

function readWorkload(r: FieldReader, value: unknown, f: string): LabWorkload {
  const m = r.map(value, f, ["kind", "namespace", "name", "uid", "labels", "replicas", "ports", "templateHash",
    "creationTimestamp", "replicaSet"]);
  const w: LabWorkload = {
    kind: r.oneOf(m.kind, fieldPath(f, "kind"), WORKLOAD_KINDS),
    namespace: r.string(m.namespace, fieldPath(f, "namespace")),
    name: r.string(m.name, fieldPath(f, "name")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
    labels: r.stringMap(m.labels, fieldPath(f, "labels")),
    replicas: r.int(m.replicas, fieldPath(f, "replicas"), 0, 100_000),
    ports: readPorts(r, m.ports, fieldPath(f, "ports")),
    templateHash: r.string(m.templateHash, fieldPath(f, "templateHash")),
    creationTimestamp: r.string(m.creationTimestamp, fieldPath(f, "creationTimestamp")),
  };
  if (m.replicaSet !== undefined) {
    const rf = fieldPath(f, "replicaSet");
    const rs = r.map(m.replicaSet, rf, ["name", "uid"]);
    w.replicaSet = { name: r.string(rs.name, fieldPath(rf, "name")), uid: r.string(rs.uid, fieldPath(rf, "uid")) };
  }
  return w;
}

function readPod(r: FieldReader, value: unknown, f: string): LabPod {
  const m = r.map(value, f, ["namespace", "name", "uid", "node", "ip", "ipv6", "netns", "hostIface", "labels", "ports",
    "container", "owner", "creationTimestamp"]);
  const pod: LabPod = {
    namespace: r.string(m.namespace, fieldPath(f, "namespace")),
    name: r.string(m.name, fieldPath(f, "name")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
    node: r.string(m.node, fieldPath(f, "node")),
    ip: r.string(m.ip, fieldPath(f, "ip")),
    ipv6: r.string(m.ipv6, fieldPath(f, "ipv6")),
    netns: r.string(m.netns, fieldPath(f, "netns")),
    hostIface: r.string(m.hostIface, fieldPath(f, "hostIface")),
    labels: r.stringMap(m.labels, fieldPath(f, "labels")),
    ports: readPorts(r, m.ports, fieldPath(f, "ports")),
    container: r.string(m.container, fieldPath(f, "container")),
    creationTimestamp: r.string(m.creationTimestamp, fieldPath(f, "creationTimestamp")),
  };
  if (m.owner !== undefined) pod.owner = readOwner(r, m.owner, fieldPath(f, "owner"));
  return pod;
}

function readService(r: FieldReader, value: unknown, f: string): LabService {
  const m = r.map(value, f, ["namespace", "name", "uid", "clusterIP", "selector", "ports", "creationTimestamp"]);
  return {
    namespace: r.string(m.namespace, fieldPath(f, "namespace")),
    name: r.string(m.name, fieldPath(f, "name")),
    uid: r.string(m.uid, fieldPath(f, "uid")),
    clusterIP: r.string(m.clusterIP, fieldPath(f, "clusterIP")),
    selector: r.stringMap(m.selector, fieldPath(f, "selector")),
    ports: r.list(m.ports, fieldPath(f, "ports")).map((v, i) => {
      const pf = fieldPath(fieldPath(f, "ports"), i);
      const pm = r.map(v, pf, ["name", "port", "targetPort", "protocol"]);
      const port: ServicePort = {
        port: r.int(pm.port, fieldPath(pf, "port"), 1, 65535),
        targetPort: typeof pm.targetPort === "string" ? pm.targetPort : r.int(pm.targetPort, fieldPath(pf, "targetPort"), 1, 65535),
        protocol: readProtocol(r, pm.protocol, fieldPath(pf, "protocol")),
      };
      const name = r.optionalString(pm.name, fieldPath(pf, "name"));
      if (name !== undefined) port.name = name;
      return port;
    }),
    creationTimestamp: r.string(m.creationTimestamp, fieldPath(f, "creationTimestamp")),
  };
}

function readAgent(r: FieldReader, value: unknown, f: string): LabAgent {
  const m = r.map(value, f, ["node", "pid", "log", "exportFile", "argv"]);
  const agent: LabAgent = {
    node: r.string(m.node, fieldPath(f, "node")),
    pid: r.int(m.pid, fieldPath(f, "pid"), 0, 2 ** 31),
    log: r.string(m.log, fieldPath(f, "log")),
  };
  const exportFile = r.optionalString(m.exportFile, fieldPath(f, "exportFile"));
  if (exportFile !== undefined) agent.exportFile = exportFile;
  if (m.argv !== undefined) agent.argv = readArgv(r, m.argv, fieldPath(f, "argv"));
  return agent;
}

function readArgv(r: FieldReader, value: unknown, f: string): string[] {
  const argv = r.list(value, f).map((v, i) => r.string(v, fieldPath(f, i)));
  if (argv.length === 0) r.fail(f, "empty command line");
  return argv;
}

// ---- supervision ------------------------------------------------------------------------------
// supervisor.json has one writer, the supervisor, which renames a whole file into place: it
// needs no lock (and must not wait for one: `up` holds the lock while it waits for the
// supervisor's first starts, and a restart must not wait behind a long mutation).

export function supervisionPath(stateDir: string): string {
  return path.join(stateDir, SUPERVISION_FILE);
}

export async function writeSupervision(stateDir: string, s: Supervision): Promise<void> {
  await writeFileAtomic(supervisionPath(stateDir), `${JSON.stringify(s, null, 2)}\n`);
}

/** What the supervisor last wrote, or undefined when it has written nothing (yet). */
export async function readSupervision(stateDir: string): Promise<Supervision | undefined> {
  const file = supervisionPath(stateDir);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const r = new FieldReader(file);
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not JSON (${(err as Error).message})`);
  }
  const m = r.map(doc, "", ["pid", "updatedAt", "processes"]);
  return {
    pid: r.int(m.pid, "pid", 1, 2 ** 31),
    updatedAt: r.string(m.updatedAt, "updatedAt"),
    processes: r.list(m.processes, "processes").map((v, i) => {
      const f = fieldPath("processes", i);
      const p = r.map(v, f, ["name", "pid", "restarts", "startedAt", "lastExit", "held"]);
      const proc: SupervisedProcess = {
        name: r.string(p.name, fieldPath(f, "name")),
        pid: r.int(p.pid, fieldPath(f, "pid"), 0, 2 ** 31),
        restarts: r.int(p.restarts, fieldPath(f, "restarts"), 0, Number.MAX_SAFE_INTEGER),
        startedAt: r.string(p.startedAt, fieldPath(f, "startedAt")),
      };
      const lastExit = r.optionalString(p.lastExit, fieldPath(f, "lastExit"));
      if (lastExit !== undefined) proc.lastExit = lastExit;
      if (p.held !== undefined) proc.held = r.boolean(p.held, fieldPath(f, "held"));
      return proc;
    }),
  };
}
