// Background traffic for the lab: the `traffic` section of a topology says which pods talk
// to which Services and how often. Every pod serves its container ports (one process per
// pod, echoing), and every pod with conversations runs one talker process with its plan,
// so a busy lab costs a few processes, not one per request.
import type { ChildProcess } from "node:child_process";
import path from "node:path";
import { FieldReader, join } from "./fields.js";
import type { Lab, PodStatus } from "./lab.js";
import { repoRoot } from "./agents.js";

export interface TrafficSpec {
  /** Source pods: those in `namespace` whose labels include `labels`. */
  from: { namespace: string; labels: Record<string, string> };
  /** A Service, "namespace/name". */
  to: { namespace: string; service: string };
  /** Service port; default its first. */
  port?: number;
  everyMs: number;
  /** Payload bytes per request. */
  size: number;
}

export function readTrafficSpec(r: FieldReader, value: unknown, field: string): TrafficSpec {
  const m = r.map(value, field, ["from", "to", "port", "everyMs", "size"]);
  const from = r.map(m.from, join(field, "from"), ["namespace", "labels"]);
  const to = r.string(m.to, join(field, "to"));
  const slash = to.indexOf("/");
  if (slash <= 0) r.fail(join(field, "to"), `expected a Service as NAMESPACE/NAME, got "${to}"`);
  const spec: TrafficSpec = {
    from: { namespace: r.dnsLabel(from.namespace, join(join(field, "from"), "namespace")),
      labels: r.labels(from.labels, join(join(field, "from"), "labels")) },
    to: { namespace: r.dnsLabel(to.slice(0, slash), join(field, "to")), service: r.serviceName(to.slice(slash + 1), join(field, "to")) },
    everyMs: m.everyMs === undefined ? 1000 : r.int(m.everyMs, join(field, "everyMs"), 50, 3_600_000),
    size: m.size === undefined ? 64 : r.int(m.size, join(field, "size"), 1, 60_000),
  };
  if (m.port !== undefined) spec.port = r.int(m.port, join(field, "port"), 1, 65535);
  return spec;
}

export interface TalkPlanEntry { to: string; port: number; protocol: "TCP" | "UDP" | "SCTP"; everyMs: number; size: number }

/** Resolves specs against the running lab: which pod talks to which ClusterIP:port. */
export function planTraffic(specs: readonly TrafficSpec[], status: Awaited<ReturnType<Lab["status"]>>): Map<PodStatus, TalkPlanEntry[]> {
  const plans = new Map<PodStatus, TalkPlanEntry[]>();
  specs.forEach((spec, i) => {
    const svc = status.services.find((s) => s.namespace === spec.to.namespace && s.name === spec.to.service);
    if (!svc) throw new Error(`traffic[${i}]: no Service ${spec.to.namespace}/${spec.to.service} in the lab`);
    const port = spec.port === undefined ? svc.ports[0] : svc.ports.find((p) => p.port === spec.port);
    if (!port) throw new Error(`traffic[${i}]: Service ${svc.namespace}/${svc.name} has no port ${spec.port ?? ""}`);
    const sources = status.pods.filter((p) => p.namespace === spec.from.namespace
      && Object.entries(spec.from.labels).every(([k, v]) => p.labels[k] === v));
    if (sources.length === 0) throw new Error(`traffic[${i}]: no pod in ${spec.from.namespace} has labels ${JSON.stringify(spec.from.labels)}`);
    for (const pod of sources) {
      const list = plans.get(pod) ?? [];
      list.push({ to: svc.clusterIP, port: port.port, protocol: port.protocol, everyMs: spec.everyMs, size: spec.size });
      plans.set(pod, list);
    }
  });
  return plans;
}

export interface RunningTraffic {
  readonly talkers: number;
  readonly servers: number;
  stop(): Promise<void>;
}

export async function startTraffic(lab: Lab, specs: readonly TrafficSpec[]): Promise<RunningTraffic> {
  const status = await lab.status();
  const plans = planTraffic(specs, status);
  const main = path.join(repoRoot(), "dist", "cli", "main.js");
  const children: ChildProcess[] = [];
  let servers = 0;
  for (const pod of status.pods) {
    if (pod.ports.length === 0) continue;
    const listen = pod.ports.flatMap((p) => ["--listen", `${p.port}/${p.protocol}`]);
    children.push(await lab.spawn(pod, [process.execPath, main, "probe", "serve", ...listen], { stdio: "ignore" }));
    servers++;
  }
  for (const [pod, plan] of plans) {
    children.push(await lab.spawn(pod, [process.execPath, main, "probe", "talk", "--plan", JSON.stringify(plan)], { stdio: "ignore" }));
  }
  return {
    talkers: plans.size,
    servers,
    async stop() {
      await Promise.all(children.map((c) => new Promise<void>((resolve) => {
        if (c.exitCode !== null || c.signalCode !== null) { resolve(); return; }
        c.once("exit", () => resolve());
        c.kill("SIGTERM");
      })));
    },
  };
}
