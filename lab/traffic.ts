// Background traffic for the lab: the `traffic` section of a topology says which pods talk
// to which Services (or straight to which pods, as a Prometheus scrapes pod IPs), how, and
// how often. Every pod with ports or conversations runs one pod application process
// (pod-app.ts: serves its container ports, sends its planned requests), so a busy lab costs
// one process per pod, not one per request. The processes live in the pods' netns, so
// `lab down` stops them with everything else there.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { type FieldReader, fieldPath } from "../fields/reader.js";
import type { Lab, LabStatus, PodStatus } from "./lab.js";
import { cliMain } from "../config/install.js";
import { OUTSIDE_NETNS } from "./addressing.js";
import { netnsExecArgv, run } from "./netns.js";
import { LOGS_DIR } from "./state.js";
import type { ContainerPort } from "./topology.js";
import type { ListenPort, TalkPlanEntry } from "./pod-app.js";

export type TrafficTarget =
  /** A Service, by its ClusterIP. */
  | { kind: "service"; namespace: string; service: string }
  /** Pods by their own IPs, in `namespace` (absent: every namespace) with these labels. */
  | { kind: "pods"; namespace?: string; labels: Record<string, string> }
  /** The lab's outside host (`to: outside`), on a port of the topology's `outside.ports`. */
  | { kind: "outside" };

export interface TrafficSpec {
  /** Source pods: those in `namespace` whose labels include `labels` (none: every pod there). */
  from: { namespace: string; labels: Record<string, string> };
  to: TrafficTarget;
  /**
   * Service port (number; default its first), or for pods the container port, by number or
   * name; pods without it are not targets.
   */
  port?: number | string;
  everyMs: number;
  /** Payload bytes per TCP/UDP request. */
  size: number;
  /** An HTTP GET of this path instead of a raw TCP request. */
  http?: string;
}

/** `to: outside`: the lab's outside host. */
export const OUTSIDE_TARGET = "outside";

export function readTrafficSpec(r: FieldReader, value: unknown, field: string): TrafficSpec {
  const m = r.map(value, field, ["from", "to", "toPods", "port", "everyMs", "size", "http"]);
  const fromField = fieldPath(field, "from");
  const from = r.map(m.from, fromField, ["namespace", "labels"]);
  let to: TrafficTarget;
  if ((m.to === undefined) === (m.toPods === undefined)) r.fail(field, "give exactly one of to (a Service NAMESPACE/NAME, or outside) and toPods");
  if (m.to === OUTSIDE_TARGET) {
    to = { kind: "outside" };
  } else if (m.to !== undefined) {
    const text = r.string(m.to, fieldPath(field, "to"));
    const slash = text.indexOf("/");
    if (slash <= 0) r.fail(fieldPath(field, "to"), `expected a Service as NAMESPACE/NAME or "${OUTSIDE_TARGET}" (the outside host), got "${text}"`);
    to = { kind: "service", namespace: r.dnsLabel(text.slice(0, slash), fieldPath(field, "to")), service: r.serviceName(text.slice(slash + 1), fieldPath(field, "to")) };
  } else {
    const pf = fieldPath(field, "toPods");
    const pods = r.map(m.toPods, pf, ["namespace", "labels"]);
    to = { kind: "pods", labels: r.labels(pods.labels, fieldPath(pf, "labels")) };
    if (pods.namespace !== undefined) to.namespace = r.dnsLabel(pods.namespace, fieldPath(pf, "namespace"));
    if (m.port === undefined) r.fail(fieldPath(field, "port"), "toPods needs the container port to reach (a number or a port name)");
  }
  const spec: TrafficSpec = {
    from: { namespace: r.dnsLabel(from.namespace, fieldPath(fromField, "namespace")), labels: r.labels(from.labels, fieldPath(fromField, "labels")) },
    to,
    everyMs: m.everyMs === undefined ? 1000 : r.int(m.everyMs, fieldPath(field, "everyMs"), 50, 3_600_000),
    size: m.size === undefined ? 64 : r.int(m.size, fieldPath(field, "size"), 1, 60_000),
  };
  if (m.port !== undefined) {
    spec.port = typeof m.port === "string" && to.kind === "pods" ? r.portName(m.port, fieldPath(field, "port")) : r.int(m.port, fieldPath(field, "port"), 1, 65535);
  }
  if (m.http !== undefined) {
    const p = r.string(m.http, fieldPath(field, "http"));
    if (!/^\/[\x21-\x7e]*$/.test(p)) r.fail(fieldPath(field, "http"), `expected a URL path starting with / (no spaces), got ${JSON.stringify(p)}`);
    spec.http = p;
  }
  return spec;
}

/** The topology-file form of a spec (readTrafficSpec reads it back). */
export function trafficDocument(spec: TrafficSpec): Record<string, unknown> {
  const doc: Record<string, unknown> = { from: spec.from };
  if (spec.to.kind === "service") doc.to = `${spec.to.namespace}/${spec.to.service}`;
  else if (spec.to.kind === "outside") doc.to = OUTSIDE_TARGET;
  else doc.toPods = { labels: spec.to.labels, ...(spec.to.namespace !== undefined ? { namespace: spec.to.namespace } : {}) };
  if (spec.port !== undefined) doc.port = spec.port;
  doc.everyMs = spec.everyMs;
  doc.size = spec.size;
  if (spec.http !== undefined) doc.http = spec.http;
  return doc;
}

const matches = (labels: Record<string, string>, want: Record<string, string>) => Object.entries(want).every(([k, v]) => labels[k] === v);

/** Resolves specs against the running lab: which pod sends what to which address and port. */
export function planTraffic(specs: readonly TrafficSpec[], status: LabStatus): Map<PodStatus, TalkPlanEntry[]> {
  const plans = new Map<PodStatus, TalkPlanEntry[]>();
  specs.forEach((spec, i) => {
    const sources = status.pods.filter((p) => p.namespace === spec.from.namespace && matches(p.labels, spec.from.labels));
    if (sources.length === 0) throw new Error(`traffic[${i}]: no pod in ${spec.from.namespace} has labels ${JSON.stringify(spec.from.labels)}`);
    const targets = resolveTargets(spec, status, i);
    for (const pod of sources) {
      const list = plans.get(pod) ?? [];
      for (const t of targets) {
        if (t.ip === pod.ip) continue; // a pod talking to itself never crosses its veth
        if (spec.http !== undefined && t.protocol !== "TCP") throw new Error(`traffic[${i}]: http needs a TCP port, ${t.ip}:${t.port} is ${t.protocol}`);
        const entry: TalkPlanEntry = { to: t.ip, port: t.port, protocol: t.protocol, everyMs: spec.everyMs, size: spec.size };
        if (spec.http !== undefined) entry.http = spec.http;
        list.push(entry);
      }
      plans.set(pod, list);
    }
  });
  return plans;
}

function resolveTargets(spec: TrafficSpec, status: LabStatus, i: number): { ip: string; port: number; protocol: "TCP" | "UDP" }[] {
  const usable = (protocol: string, where: string): "TCP" | "UDP" => {
    if (protocol === "TCP" || protocol === "UDP") return protocol;
    throw new Error(`traffic[${i}]: ${where} is ${protocol}; lab traffic speaks TCP and UDP`);
  };
  const to = spec.to;
  if (to.kind === "service") {
    const svc = status.services.find((s) => s.namespace === to.namespace && s.name === to.service);
    if (!svc) throw new Error(`traffic[${i}]: no Service ${to.namespace}/${to.service} in the lab`);
    const port = spec.port === undefined ? svc.ports[0] : svc.ports.find((p) => p.port === spec.port);
    if (!port) throw new Error(`traffic[${i}]: Service ${svc.namespace}/${svc.name} has no port ${spec.port ?? ""}`);
    return [{ ip: svc.clusterIP, port: port.port, protocol: usable(port.protocol, `Service ${svc.namespace}/${svc.name} port ${port.port}`) }];
  }
  if (to.kind === "outside") {
    const outside = status.outside;
    const port = spec.port === undefined ? outside?.ports[0] : outside?.ports.find((p) => p.port === spec.port);
    if (!outside || !port) throw new Error(`traffic[${i}]: the lab's outside host serves no port ${spec.port ?? ""} (topology outside.ports)`);
    return [{ ip: outside.ip, port: port.port, protocol: usable(port.protocol, `the outside host's port ${port.port}`) }];
  }
  const targets = status.pods.flatMap((p) => {
    if ((to.namespace !== undefined && p.namespace !== to.namespace) || !matches(p.labels, to.labels)) return [];
    const port = p.ports.find((x) => (typeof spec.port === "string" ? x.name === spec.port : x.port === spec.port));
    return port ? [{ ip: p.ip, port: port.port, protocol: usable(port.protocol, `pod ${p.namespace}/${p.name} port ${port.port}`) }] : [];
  });
  if (targets.length === 0) throw new Error(`traffic[${i}]: no pod${to.namespace !== undefined ? ` in ${to.namespace}` : ""} with labels ${JSON.stringify(to.labels)} has port ${spec.port}`);
  return targets;
}

export interface RunningTraffic {
  /** Pods running the pod application. */
  readonly pods: number;
  /** Of those, pods sending requests. */
  readonly talkers: number;
  readonly pids: number[];
  /** Stops the processes (attached mode); detached ones stop with `lab down`. */
  stop(): Promise<void>;
}

export interface TrafficOptions {
  /** Detach the processes, logging to `<logDir>/app-<netns>.log`, so they outlive the caller. */
  detachedLogDir?: string;
}

/**
 * Starts the pod application on the outside host, serving `ports`, detached (it stops with
 * the netns on `down`); logs to `<stateDir>/logs/app-bh-outside.log`.
 */
export async function startOutsideApp(stateDir: string, ports: readonly ContainerPort[]): Promise<{ pid: number; log: string }> {
  const logs = path.join(stateDir, LOGS_DIR);
  await mkdir(logs, { recursive: true });
  const log = path.join(logs, `app-${OUTSIDE_NETNS}.log`);
  const argv = netnsExecArgv(OUTSIDE_NETNS, [process.execPath, cliMain, "probe", "app", "--name", "outside",
    ...ports.flatMap((p) => ["--listen", `${p.port}/${p.protocol}`]), "--plan", "[]"]);
  const fd = openSync(log, "a");
  let pid: number | undefined;
  try {
    const child = spawn(argv[0] ?? "ip", argv.slice(1), { detached: true, stdio: ["ignore", fd, fd] });
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  if (pid === undefined) throw new Error(`the outside host's application did not start (${argv.join(" ")})`);
  // Serving once every port is bound (TCP listening, UDP bound): traffic may target it at once.
  await waitListening(OUTSIDE_NETNS, ports, `the outside host's application (pid ${pid}; see ${log})`);
  return { pid, log };
}

/** Waits (≤ 30 s: a dozen node processes start at once on a small machine) until every port is bound in the netns: TCP listening, UDP bound (ss). */
async function waitListening(netns: string, ports: readonly { port: number }[], what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await run(netnsExecArgv(netns, ["ss", "-Hln", "-tu"]), { allowFail: true });
    const bound = new Set([...r.stdout.matchAll(/:(\d+)\s/g)].map((x) => Number(x[1])));
    const missing = ports.filter((p) => !bound.has(p.port));
    if (missing.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${what}: not serving ${missing.map((p) => p.port).join(", ")} in netns ${netns} after 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startTraffic(lab: Lab, specs: readonly TrafficSpec[], opts: TrafficOptions = {}): Promise<RunningTraffic> {
  const status = await lab.status();
  const plans = planTraffic(specs, status);
  if (opts.detachedLogDir !== undefined) await mkdir(opts.detachedLogDir, { recursive: true });
  const children: ChildProcess[] = [];
  // Readiness: pods talk once every pod serves, as a Service sends to ready pods only (a
  // request before its server bound would draw a port unreachable, an edge of its own).
  const gateDir = opts.detachedLogDir ?? await mkdtemp(path.join(tmpdir(), "bh-traffic-"));
  const gate = path.join(gateDir, `traffic-ready-${randomUUID()}`);
  const serving: { netns: string; ports: ListenPort[]; name: string }[] = [];
  for (const pod of status.pods) {
    const listen: ListenPort[] = pod.ports.flatMap((p) => (p.protocol === "SCTP" ? [] : [{ port: p.port, protocol: p.protocol }]));
    const plan = plans.get(pod) ?? [];
    if (listen.length === 0 && plan.length === 0) continue;
    const argv = [process.execPath, cliMain, "probe", "app", "--name", `${pod.namespace}/${pod.name}`,
      ...listen.flatMap((l) => ["--listen", `${l.port}/${l.protocol}`]), "--plan", JSON.stringify(plan), "--talk-after", gate];
    if (listen.length > 0) serving.push({ netns: pod.netns, ports: listen, name: `${pod.namespace}/${pod.name}` });
    if (opts.detachedLogDir === undefined) {
      children.push(await lab.spawn(pod, argv, { stdio: "ignore" }));
      continue;
    }
    const fd = openSync(path.join(opts.detachedLogDir, `app-${pod.netns}.log`), "a");
    try {
      const child = await lab.spawn(pod, argv, { detached: true, stdio: ["ignore", fd, fd] });
      child.unref();
      children.push(child);
    } finally {
      closeSync(fd);
    }
  }
  try {
    await Promise.all(serving.map((p) => waitListening(p.netns, p.ports, `pod ${p.name}'s application`)));
  } catch (err) {
    for (const c of children) c.kill("SIGTERM");
    throw err;
  }
  await writeFile(gate, "");
  return {
    pods: children.length,
    talkers: [...plans.values()].filter((p) => p.length > 0).length,
    pids: children.flatMap((c) => (c.pid === undefined ? [] : [c.pid])),
    async stop() {
      await Promise.all(children.map((c) => new Promise<void>((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) { resolve(); return; }
        c.once("exit", () => resolve());
        c.kill("SIGTERM");
      })));
      if (opts.detachedLogDir === undefined) await rm(gateDir, { recursive: true, force: true });
    },
  };
}
