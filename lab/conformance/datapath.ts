// The DATAPATH conformance engine: runs NetworkPolicy conformance cases (format:
// /work/shared/conformance/README.md; runner: controlplane/policy/conformance.ts) on the
// real lab — agents, control plane, eBPF — instead of on a model. For a case the lab holds
// the model's namespaces (x, y, z) and pods (a, b, c; spread over the nodes so that some
// pairs cross nodes), one Service `s-<ns>-<pod>` per pod and one prober per pod (prober.ts).
// Policies go into the manifests folder as files (netpol-files.ts) and labels change through
// the lab API; each change waits until every node enforces the policy version compiled from
// it (enforcement.ts). Probes dial the destination's ClusterIP: policy is judged after DNAT.
//
// One lab serves a whole run: prepare() brings it up with pods serving every case's ports,
// and each case's setup() resets it to no policies and default labels (waiting until every
// node enforces that) instead of rebuilding it, which took most of a case's time. A case
// may find conntrack entries of the probes before it; every case changes the policy version,
// so the datapath judges those again at their next packet (native/bpf/README.md, "policy
// changes"), and probes use fresh source ports anyway. A lab whose probers died is rebuilt.
// teardown() removes the lab.
//
// A probe is allowed when its reply came back (TCP, UDP: the echo; SCTP: the packet reached
// the destination's listener). It is denied when the datapath reports a DROPPED record of
// exactly its 5-tuple (drops.ts: the engine picks each probe's source port, and the lab's
// agents drain their records every drainIntervalMs, so the record comes long before the
// timeout), or, failing that, when the timeout passes with no reply; each outcome names its
// cause ("reply", "drop-record", "timeout", "error").
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import {
  MODEL_NAMESPACES, ModelCluster, type ConformanceEngine, type ConformanceModel, type ModelPlacement, type ResolvedAction,
} from "./cases.js";
import type { PolicyCluster } from "../../controlplane/policy/model.js";
import { PolicyCompiler } from "../../controlplane/policy/compile.js";
import { cliMain } from "../../config/install.js";
import { DEFAULT_ENFORCEMENT_TIMEOUT_MS, EnforcementWatch } from "../enforcement.js";
import { labObserverClient } from "../controlplane.js";
import type { ObserverServiceClient } from "../../proto/gen/bulkhead/v1/observer.js";
import { up, type Lab } from "../lab.js";
import { manifestsDir } from "../manifests.js";
import { syncClusterPolicies, syncPolicies } from "../netpol-files.js";
import { ProberClient, SourcePorts } from "../prober.js";
import { describeRecordTuple, DropMatcher, DropStream } from "./drops.js";
import { LAB_INSTANCE_SUFFIX } from "../addressing.js";
import { LOGS_DIR } from "../state.js";
import type { Protocol } from "../topology.js";

export const MODE_ANNOTATION = "bulkhead.io/mode";
export const DEFAULT_OBSERVER = "127.0.0.1:22460";
export const DEFAULT_STATE_DIR = `/run/bulkhead/conformance${LAB_INSTANCE_SUFFIX}`;
const NAME_LABEL = "kubernetes.io/metadata.name";
const PROBERS_DIR = "probers";

export type NamespaceMode = "enforce" | "audit" | "observe";

export interface DatapathEngineOptions {
  /** Default /run/bulkhead/conformance. */
  stateDir?: string;
  /** The control plane's Observer API; default 127.0.0.1:22460. */
  observer?: string;
  /**
   * The control plane's web UI (HOST:PORT), false for none; default the lab's (127.0.0.1:4388).
   * Tests pass false: they never read it, and a fixed port another process holds would stop `up`.
   */
  ui?: string | false;
  /** 2 or more, so that some pairs cross nodes; default 2. */
  nodes?: number;
  /** The model namespaces' bulkhead.io/mode; default enforce. */
  mode?: NamespaceMode;
  log?: (line: string) => void;
  /** The agents' BPF pin folder (removed by `down`). */
  pinDir?: string;
  /** TCP and UDP probe timeout, the fallback when no drop record comes; default 1000 ms. */
  probeTimeoutMs?: number;
  /**
   * The lab agents' flow-map drain interval (--drain-interval): how soon a drop record
   * reaches the engine; default 100 ms.
   */
  drainIntervalMs?: number;
  /** How long an SCTP packet may take to reach the destination's listener; default 500 ms. */
  sctpWaitMs?: number;
  /** Per change; default 10 s. */
  enforcementTimeoutMs?: number;
  /**
   * Wait for every node to enforce each change (default true). false only for a control
   * plane that compiles no policy: then nothing tells when a change is in force.
   */
  awaitEnforcement?: boolean;
}

/** A model pod in the lab. */
export interface LabModelPod {
  namespace: string;
  name: string;
  /** "xa", as pairs name it. */
  key: string;
  node: string;
  ip: string;
  ipv6: string;
  service: string;
  clusterIP: string;
}

/** `serve-<port>-<tcp|udp|sctp>`, the container port name cases refer to. */
export function servePortName(port: number, protocol: Protocol): string {
  const name = `serve-${port}-${protocol.toLowerCase()}`;
  if (name.length > 15) throw new Error(`port ${port}/${protocol}: its name ${name} is longer than the 15 characters Kubernetes allows`);
  return name;
}

/** Pod i of namespaces × pods goes to node (i mod N)+1: with 2 nodes x/a, x/c, y/b, z/a, z/c share node1. */
export function placement(namespaces: readonly string[], pods: readonly string[], nodes: number): { namespace: string; name: string; node: string }[] {
  return namespaces.flatMap((namespace) => pods.map((name) => ({ namespace, name })))
    .map((p, i) => ({ ...p, node: `node${(i % nodes) + 1}` }));
}

/** The labels a case starts from, as the runner's model cluster has them. */
export const defaultNamespaceLabels = (ns: string): Record<string, string> => ({ ns });
export const defaultPodLabels = (pod: string): Record<string, string> => ({ pod });

interface Served {
  port: number;
  protocol: Protocol;
}

const servedKey = (s: Served) => `${s.port}/${s.protocol}`;
const served = (model: ConformanceModel): Served[] => model.protocols.flatMap((protocol) => model.ports.map((port) => ({ port, protocol })));

interface RunningProber {
  pod: LabModelPod;
  child: ChildProcess;
  client: ProberClient;
  /** Its probes' source ports. */
  ports: SourcePorts;
}

/**
 * What one probe found. cause: "reply" (it got through), "drop-record" (the datapath reported
 * a DROPPED record of its 5-tuple; detail names it), "timeout" (neither came in time), "error"
 * (the socket failed: ECONNREFUSED, …).
 */
export interface ProbeOutcome {
  ok: boolean;
  cause: "reply" | "drop-record" | "timeout" | "error";
  detail: string;
  sport: number;
}

/** Tries to send from a source port the prober still holds, then moves on to the next one. */
const MAX_PORT_ATTEMPTS = 20;

/** The engine with its lab up (nodes, namespaces x/y/z, control plane, agents; every node enforcing); pods come with setup(). */
export async function createDatapathEngine(opts: DatapathEngineOptions = {}): Promise<DatapathEngine> {
  const engine = new DatapathEngine(opts);
  await engine.start();
  try {
    await engine.waitEnforced(undefined);
  } catch (err) {
    await engine.teardown().catch(() => {});
    throw err;
  }
  return engine;
}

export class DatapathEngine implements ConformanceEngine {
  readonly name = "datapath";
  readonly stateDir: string;
  readonly observer: string;
  readonly nodes: number;
  private modeNow: NamespaceMode;
  /** Compiles each step as the control plane will, to know whether a new version is coming:
   * a step that changes nothing agents load (a policy selecting no pod) gets none. */
  private predictor = new PolicyCompiler();
  private predicted = 0n;
  private running: { lab: Lab; watch: EnforcementWatch; ca: string | undefined; drops: DropStream } | undefined;
  private served: Served[] = [];
  private pods: LabModelPod[] = [];
  private probers: RunningProber[] = [];
  private readonly log: (line: string) => void;
  private readonly outcomes = new Map<ProbeOutcome["cause"], number>();

  constructor(private readonly opts: DatapathEngineOptions = {}) {
    this.nodes = opts.nodes ?? 2;
    if (this.nodes < 2) throw new Error(`conformance needs at least 2 lab nodes (pairs must cross nodes), got ${this.nodes}`);
    this.stateDir = path.resolve(opts.stateDir ?? DEFAULT_STATE_DIR);
    this.observer = opts.observer ?? DEFAULT_OBSERVER;
    this.modeNow = opts.mode ?? "enforce";
    this.log = opts.log ?? (() => {});
  }

  get lab(): Lab {
    if (!this.running) throw new Error("the conformance lab is down (setup() or start() brings it up)");
    return this.running.lab;
  }

  get watch(): EnforcementWatch {
    if (!this.running) throw new Error("the conformance lab is down (setup() or start() brings it up)");
    return this.running.watch;
  }

  /** A client of the lab control plane's Observer API (verifying its TLS certificate when it has one). */
  observerClient(): ObserverServiceClient {
    if (!this.running) throw new Error("the conformance lab is down (setup() or start() brings it up)");
    return labObserverClient({ observer: this.observer, ca: this.running.ca });
  }

  get manifests(): string {
    return manifestsDir(this.stateDir);
  }

  get mode(): NamespaceMode {
    return this.modeNow;
  }

  /** The model pods as they are now. */
  get modelPods(): LabModelPod[] {
    return this.pods.map((p) => ({ ...p }));
  }

  /** Brings the lab up without pods (removing any other lab on this machine) unless it is up; agents may still be connecting. */
  async start(): Promise<void> {
    if (!this.running) await this.bringUp(MODEL_NAMESPACES, [], []);
  }

  /**
   * A lab whose pods serve every (port, protocol) of every model of the run (extra ports
   * change no verdict on a model's own), so that each case's setup() only resets it.
   */
  async prepare(models: readonly ConformanceModel[]): Promise<void> {
    const first = models[0];
    if (!first) return;
    const samePods = (m: ConformanceModel) => m.namespaces.join() === first.namespaces.join() && m.pods.join() === first.pods.join();
    // Cases over other pods get a lab of their own at their setup().
    const wanted = models.filter(samePods).flatMap(served);
    for (const s of wanted) servePortName(s.port, s.protocol);
    if (this.serves(first, wanted)) return;
    await this.bringUp(first.namespaces, first.pods, [...new Map(wanted.map((s) => [servedKey(s), s])).values()]);
    await this.checkBaseline();
  }

  /** The lab is up with the model's pods, each serving every one of `wanted` through a live prober. */
  private serves(model: ConformanceModel, wanted: readonly Served[]): boolean {
    const have = new Set(this.served.map(servedKey));
    return this.running !== undefined && this.hasPods(model) && this.probersAlive() && wanted.every((s) => have.has(servedKey(s)));
  }

  private hasPods(model: ConformanceModel): boolean {
    return this.pods.length === model.namespaces.length * model.pods.length
      && model.namespaces.every((ns) => model.pods.every((pod) => this.pods.some((p) => p.namespace === ns && p.name === pod)));
  }

  private probersAlive(): boolean {
    return this.probers.length === this.pods.length && this.probers.every((p) => p.child.exitCode === null && p.child.signalCode === null);
  }

  /**
   * The model's pods and Services, no policies, default labels, every pair connecting. A lab
   * whose pods already serve every (port, protocol) of the model, with every prober alive,
   * is reset; otherwise a fresh lab comes up, its pods serving the model's ports and those
   * they served before.
   */
  async setup(model: ConformanceModel): Promise<ModelPlacement> {
    const wanted = served(model);
    for (const s of wanted) servePortName(s.port, s.protocol);
    const samePods = this.hasPods(model);
    if (this.serves(model, wanted)) {
      await this.reset();
    } else {
      if (this.running && samePods && !this.probersAlive()) this.log("conformance: a prober exited; building a fresh lab");
      const union = new Map([...(samePods ? this.served : []), ...wanted].map((s) => [servedKey(s), s]));
      await this.bringUp(model.namespaces, model.pods, [...union.values()]);
      await this.checkBaseline();
    }
    const nodes = (await this.lab.status()).nodes;
    const placement: ModelPlacement = {
      pods: this.pods.map((p) => ({ namespace: p.namespace, name: p.name, node: p.node, ips: [p.ip, p.ipv6] })),
      nodes: nodes.map((n) => ({ name: n.name, ips: [n.ip, n.ipv6] })),
    };
    this.predictor = new PolicyCompiler();
    this.predicted = this.predictor.compile(new ModelCluster(model, placement).objects()).version;
    return placement;
  }

  /**
   * Makes the lab match `cluster` (the runner's model after the step's actions): the policy
   * files, namespace and pod labels; then waits until every node enforces it.
   */
  async apply(actions: readonly ResolvedAction[], cluster: PolicyCluster): Promise<void> {
    const before = await this.versionBeforeChange();
    let changed = await syncPolicies(this.manifests, cluster.policies);
    changed = (await syncClusterPolicies(this.manifests, cluster.clusterNetworkPolicies ?? [])) || changed;
    const status = await this.lab.status();
    for (const ns of cluster.namespaces) {
      const current = status.namespaces.find((n) => n.name === ns.metadata.name);
      if (!current) throw new Error(`namespace ${ns.metadata.name} is not in the conformance lab (it has ${status.namespaces.map((n) => n.name).join(", ")})`);
      const want = withoutNameLabel(ns.metadata.labels);
      if (sameLabels(withoutNameLabel(current.labels), want)) continue;
      await this.lab.setNamespaceLabels(ns.metadata.name, want);
      changed = true;
    }
    for (const pod of cluster.pods) {
      const { namespace, name, labels } = pod.metadata;
      const current = status.pods.find((p) => p.namespace === namespace && p.name === name);
      if (!current) throw new Error(`pod ${namespace}/${name} is not in the conformance lab`);
      if (sameLabels(current.labels, labels)) continue;
      if (labels.pod !== name) {
        // As upstream's, the pod's Service selects pod=<name>: without it the probe has no backend.
        this.log(`warning: pod ${namespace}/${name} loses pod=${name}; its Service s-${namespace}-${name} then has no backend`);
      }
      await this.lab.setPodLabels(namespace, name, { ...labels });
      changed = true;
    }
    this.log(`apply: ${actions.map((a) => a.do).join(", ") || "nothing"}${changed ? "" : " (no change)"}`);
    const predicted = this.predictor.compile(cluster).version;
    const newVersion = changed && predicted !== this.predicted;
    this.predicted = predicted;
    if (changed && !newVersion && this.opts.awaitEnforcement !== false) {
      // No new version will come: give the control plane time to read the files, then
      // wait until every node enforces the newest one.
      await new Promise((r) => setTimeout(r, 1500));
    }
    await this.waitEnforced(newVersion ? before : undefined);
  }

  async probe(port: number, protocol: Protocol): Promise<Set<string>> {
    if (!this.served.some((s) => s.port === port && s.protocol === protocol)) {
      throw new Error(`probe ${port}/${protocol}: the pods do not serve it (setup() with a model that has it first)`);
    }
    this.running?.drops.ensure();
    const denied = new Set<string>();
    const failures: string[] = [];
    const causes = new Map<string, number>();
    let retried = 0;
    await Promise.all(this.probers.flatMap((from) => this.probers.filter((to) => to !== from).map(async (to) => {
      const result = await retryTimeout((scale) =>
        this.probeOnce(from, to, port, protocol, (this.opts.probeTimeoutMs ?? 1000) * scale, (this.opts.sctpWaitMs ?? 500) * scale), () => retried++);
      this.outcomes.set(result.cause, (this.outcomes.get(result.cause) ?? 0) + 1);
      if (result.ok) return;
      const pair = `${from.pod.key}>${to.pod.key}`;
      denied.add(pair);
      failures.push(`${pair} (${result.cause}: ${result.detail})`);
      causes.set(result.cause, (causes.get(result.cause) ?? 0) + 1);
    })));
    const pairs = this.probers.length * (this.probers.length - 1);
    const by = [...causes].map(([cause, n]) => `${n} ${cause}`).join(", ");
    this.log(`probe ${port}/${protocol}: ${denied.size} of ${pairs} failed${failures.length ? ` (${by}): ${failures.sort().join(", ")}` : ""}`
      + (retried ? `; ${retried} timeout-retried` : ""));
    return denied;
  }

  /** How many of probe()'s probes so far ended by each cause: "12 reply, 3 drop-record, …". */
  get probeCauses(): string {
    return [...this.outcomes].map(([cause, n]) => `${n} ${cause}`).join(", ") || "no probes";
  }

  /** One probe of one pair ("ya", "xa"), e.g. to time a change; `timeoutMs` also bounds an SCTP packet's wait for its arrival. */
  async probePair(from: string, to: string, port: number, protocol: Protocol, timeoutMs: number): Promise<ProbeOutcome> {
    const src = this.probers.find((p) => p.pod.key === from);
    const dst = this.probers.find((p) => p.pod.key === to);
    if (!src || !dst) throw new Error(`probe ${from}>${to}: no such pod (pods: ${this.probers.map((p) => p.pod.key).join(", ")})`);
    this.running?.drops.ensure();
    return this.probeOnce(src, dst, port, protocol, timeoutMs, timeoutMs);
  }

  /** Sets the model namespaces' bulkhead.io/mode; when the lab is up, waits until it is enforced. */
  async setMode(mode: NamespaceMode): Promise<void> {
    if (mode === this.modeNow) return;
    this.modeNow = mode;
    if (!this.running) return;
    const before = await this.versionBeforeChange();
    for (const ns of (await this.lab.status()).namespaces.filter((n) => n.name !== "default")) {
      await this.lab.setNamespaceAnnotations(ns.name, { [MODE_ANNOTATION]: mode });
    }
    await this.waitEnforced(before);
  }

  /** Stops the probers and removes the lab (the next setup() builds a new one). */
  async teardown(): Promise<void> {
    const running = this.running;
    this.running = undefined;
    await this.stopProbers();
    this.pods = [];
    this.served = [];
    await rm(path.join(this.stateDir, PROBERS_DIR), { recursive: true, force: true });
    if (!running) return;
    running.watch.close();
    running.drops.close();
    await running.lab.down();
  }

  /** Waits for enforcement of a change made after `before` was read (undefined: convergence only). */
  async waitEnforced(before: bigint | undefined): Promise<void> {
    if (this.opts.awaitEnforcement === false) return;
    const timeoutMs = this.opts.enforcementTimeoutMs ?? DEFAULT_ENFORCEMENT_TIMEOUT_MS;
    await this.watch.waitEnforced(before === undefined ? { timeoutMs } : { after: before, timeoutMs });
  }

  private async versionBeforeChange(): Promise<bigint | undefined> {
    return this.opts.awaitEnforcement === false ? undefined : this.watch.latest();
  }

  /** One probe from the next free source port of `from` (a port the prober still holds is skipped). */
  private async probeOnce(from: RunningProber, to: RunningProber, port: number, protocol: Protocol, timeoutMs: number, sctpWaitMs: number): Promise<ProbeOutcome> {
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.probeFrom(from.ports.take(), from, to, port, protocol, timeoutMs, sctpWaitMs);
      if (outcome.detail !== "EADDRINUSE" || attempt >= MAX_PORT_ATTEMPTS) return outcome;
    }
  }

  /**
   * Allowed: TCP/UDP, the echo came back; SCTP, the destination's listener got the packet.
   * Denied: a DROPPED record of this probe's 5-tuple came first, else no reply in time.
   */
  private async probeFrom(sport: number, from: RunningProber, to: RunningProber, port: number, protocol: Protocol, timeoutMs: number,
    sctpWaitMs: number): Promise<ProbeOutcome> {
    const bytes = randomBytes(8);
    bytes[0] = (bytes[0] ?? 0) | 0x80; // an SCTP INIT's initiate tag (the first 4 bytes) must not be zero
    const token = bytes.toString("hex");
    const drop = this.running?.drops.matcher.expect({ protocol, source: from.pod.ip, sport, destinations: [to.pod.ip, to.pod.clusterIP], dport: port });
    try {
      const dropped = drop?.dropped.then((record) => ({ kind: "drop" as const, record })) ?? new Promise<never>(() => {});
      const byRecord = (record: Parameters<typeof describeRecordTuple>[0]): ProbeOutcome => ({
        ok: false, cause: "drop-record", sport, detail: `${record.node}: DROPPED ${describeRecordTuple(record)}`,
      });
      // The prober's answer, or the drop record if that comes first (the prober then finishes
      // on its own; its answer is dropped).
      const sending = from.client.probe({ to: to.pod.clusterIP, port, protocol, sport, token, timeoutMs }).then((result) => ({ kind: "sent" as const, result }));
      const first = await Promise.race([sending, dropped]);
      if (first.kind === "drop") {
        sending.catch(() => {});
        return byRecord(first.record);
      }
      const sent = first.result;
      if (protocol !== "SCTP" || !sent.ok) {
        const cause = sent.ok ? "reply" : sent.detail === "timeout" ? "timeout" : "error";
        return { ok: sent.ok, cause, detail: sent.detail, sport };
      }
      const arriving = to.client.received(token, sctpWaitMs).then((arrival) => ({ kind: "arrival" as const, arrival }));
      const next = await Promise.race([arriving, dropped]);
      if (next.kind === "drop") {
        arriving.catch(() => {});
        return byRecord(next.record);
      }
      const { arrival } = next;
      return arrival.received
        ? { ok: true, cause: "reply", detail: `received from ${arrival.from ?? "?"}`, sport }
        : { ok: false, cause: "timeout", detail: "not received", sport };
    } finally {
      drop?.cancel();
    }
  }

  // ---- pods, Services, probers ------------------------------------------------------------

  /** Back to no policies and default labels; waits until that is enforced. */
  private async reset(): Promise<void> {
    const before = await this.versionBeforeChange();
    let changed = await syncPolicies(this.manifests, []);
    changed = (await syncClusterPolicies(this.manifests, [])) || changed;
    const status = await this.lab.status();
    for (const ns of new Set(this.pods.map((p) => p.namespace))) {
      const current = withoutNameLabel(status.namespaces.find((n) => n.name === ns)?.labels ?? {});
      if (sameLabels(current, defaultNamespaceLabels(ns))) continue;
      await this.lab.setNamespaceLabels(ns, defaultNamespaceLabels(ns));
      changed = true;
    }
    for (const pod of this.pods) {
      const current = status.pods.find((p) => p.namespace === pod.namespace && p.name === pod.name)?.labels ?? {};
      if (sameLabels(current, defaultPodLabels(pod.name))) continue;
      await this.lab.setPodLabels(pod.namespace, pod.name, defaultPodLabels(pod.name));
      changed = true;
    }
    await this.waitEnforced(changed ? before : undefined);
  }

  /**
   * A fresh lab holding the pods and their Services from the start (one `up` builds them all
   * at once, far faster than adding them one by one), then one prober per pod.
   */
  private async bringUp(namespaces: readonly string[], podNames: readonly string[], served: Served[]): Promise<void> {
    await this.stopProbers();
    this.running?.watch.close();
    this.running?.drops.close();
    this.running = undefined;
    this.pods = [];
    this.served = served;
    if (podNames.length > 0) this.log(`conformance: a lab whose pods serve ${served.map(servedKey).join(", ")}`);
    const ports = served.map((s) => ({ name: servePortName(s.port, s.protocol), port: s.port, protocol: s.protocol }));
    const places = placement(namespaces, podNames, this.nodes);
    const lab = await up({
      stateDir: this.stateDir,
      topology: {
        nodes: Array.from({ length: this.nodes }, (_, i) => `node${i + 1}`),
        namespaces: namespaces.map((ns) => ({ name: ns, labels: defaultNamespaceLabels(ns), annotations: { [MODE_ANNOTATION]: this.modeNow } })),
        pods: places.map((p) => ({ ...p, labels: defaultPodLabels(p.name), ports })),
        services: places.map((p) => ({
          namespace: p.namespace, name: `s-${p.namespace}-${p.name}`, selector: defaultPodLabels(p.name),
          ports: ports.map((port) => ({ name: port.name, port: port.port, targetPort: port.name, protocol: port.protocol })),
        })),
        workloads: [], traffic: [],
      },
      controlplane: { observer: this.observer, ...(this.opts.ui !== undefined ? { ui: this.opts.ui } : {}) },
      // Agents that drain often, so that a drop record comes soon after the drop.
      drainIntervalMs: this.opts.drainIntervalMs ?? 100,
      ...(this.opts.pinDir !== undefined ? { pinDir: this.opts.pinDir } : {}),
      ...(this.opts.log ? { log: this.opts.log } : {}),
    });
    const status = await lab.status();
    const ca = status.controlplane?.ca;
    const watch = new EnforcementWatch(this.observer, Array.from({ length: this.nodes }, (_, i) => `node${i + 1}`), ca);
    const drops = new DropStream(() => labObserverClient({ observer: this.observer, ca }), new DropMatcher(), this.log);
    this.running = { lab, watch, ca, drops };
    if (places.length === 0) return;
    this.pods = places.map((place) => {
      const pod = status.pods.find((p) => p.namespace === place.namespace && p.name === place.name);
      const service = `s-${place.namespace}-${place.name}`;
      const svc = status.services.find((x) => x.namespace === place.namespace && x.name === service);
      if (!pod || !svc) throw new Error(`the lab came up without pod ${place.namespace}/${place.name} or its Service ${service}`);
      return { namespace: pod.namespace, name: pod.name, key: `${pod.namespace}${pod.name}`, node: pod.node, ip: pod.ip, ipv6: pod.ipv6, service, clusterIP: svc.clusterIP };
    });
    const listen = served.flatMap((x) => ["--listen", servedKey(x)]);
    const started = await Promise.allSettled(this.pods.map((pod) => this.startProber(pod, listen)));
    this.probers = started.flatMap((x) => (x.status === "fulfilled" ? [x.value] : []));
    const failed = started.flatMap((x) => (x.status === "rejected" ? [(x.reason as Error).message] : []));
    if (failed.length > 0) throw new Error(`${failed.join("; ")} (logs: ${path.join(this.stateDir, LOGS_DIR)}/prober-*.log)`);
    // The control plane compiled the manifests before it answered: convergence is enough.
    await this.waitEnforced(undefined);
  }

  /** With no policy every pair must connect; retried for a while (agents attach to new veths). */
  private async checkBaseline(): Promise<void> {
    const deadline = Date.now() + 15_000;
    for (const s of this.served) {
      for (;;) {
        const failed = await this.probe(s.port, s.protocol);
        if (failed.size === 0) break;
        if (Date.now() > deadline) {
          throw new Error(`with no policies, ${failed.size} pairs still fail on ${servedKey(s)}: ${[...failed].sort().join(", ")} `
            + `(prober logs: ${path.join(this.stateDir, LOGS_DIR)}/prober-*.log)`);
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  /** `bulkhead probe prober` in the pod's netns; resolves once its control socket answers. */
  private async startProber(pod: LabModelPod, listen: readonly string[]): Promise<RunningProber> {
    const sockets = path.join(this.stateDir, PROBERS_DIR);
    const logs = path.join(this.stateDir, LOGS_DIR);
    await mkdir(sockets, { recursive: true });
    await mkdir(logs, { recursive: true });
    const socket = path.join(sockets, `${pod.namespace}-${pod.name}.sock`);
    const fd = openSync(path.join(logs, `prober-${pod.namespace}-${pod.name}.log`), "a");
    let child: ChildProcess;
    try {
      child = await this.lab.spawn(pod, [process.execPath, cliMain, "probe", "prober", "--socket", socket, ...listen], { stdio: ["ignore", fd, fd] });
    } finally {
      closeSync(fd);
    }
    let exited: string | undefined;
    child.on("exit", (code, signal) => { exited = signal ? `was killed by ${signal}` : `exited with code ${code}`; });
    child.on("error", (err) => { exited = `failed to start: ${err.message}`; });
    try {
      return { pod, child, client: await ProberClient.connect(pod.key, socket, 20_000, () => exited), ports: new SourcePorts() };
    } catch (err) {
      child.kill("SIGKILL");
      throw err;
    }
  }

  private async stopProbers(): Promise<void> {
    const running = this.probers;
    this.probers = [];
    await Promise.all(running.map(async ({ child, client }) => {
      client.close();
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    }));
  }
}

function withoutNameLabel(labels: Record<string, string>): Record<string, string> {
  const { [NAME_LABEL]: _name, ...rest } = labels;
  return rest;
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => b[k] === a[k]);
}

const TIMEOUT_RETRY_SCALE = 5;

/**
 * A probe that timed out with no drop record, probed once more (the caller takes a new source
 * port) with TIMEOUT_RETRY_SCALE times the timeout: on a loaded machine (load 28 on 2 cores)
 * a TCP handshake took more than the 1 s timeout and an allowed pair read as denied. A
 * second timeout is still a denial, and a drop record is one at once, with no retry.
 */
export async function retryTimeout(probe: (timeoutScale: number) => Promise<ProbeOutcome>, onRetry: () => void): Promise<ProbeOutcome> {
  const first = await probe(1);
  if (first.cause !== "timeout") return first;
  onRetry();
  return probe(TIMEOUT_RETRY_SCALE);
}
