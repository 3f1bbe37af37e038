// NetworkPolicy conformance cases (format: shared/conformance/README.md): parsing a cases
// file, the 3×3 model cluster (namespaces x, y, z; pods a, b, c), applying each step's
// actions, and comparing every probe's 72-pair reachability matrix with the expected one.
//
// The runner drives a ConformanceEngine, so one runner serves every engine:
// - "model":    PolicyModel.evaluate on every pair (model.ts),
// - "snapshot": the compiled PolicySnapshot judged as the kernel will (compile.ts),
// - "datapath": real packets in the lab (lab/conformance.ts, another engine on the same interface).
// All three must agree with the cases, and so with each other.
import { readFile } from "node:fs/promises";
import { parseKubeObject, type NetworkPolicy, type Protocol } from "../../controlplane/metadata/objects.js";
import { parseIp } from "../../addresses/ip.js";
import { describeValue, fieldPath, FieldError, FieldReader } from "../../fields/reader.js";
import { PolicyCompiler } from "../../controlplane/policy/compile.js";
import { snapshotAllows } from "../../controlplane/policy/kernel-view.js";
import { CNP_API_VERSION, CNP_KIND, CnpSet, normalizeCnp, type ClusterNetworkPolicy } from "../../controlplane/policy/cnp.js";
import { NAMESPACE_NAME_LABEL, PolicyModel, PolicySet, type PolicyCluster } from "../../controlplane/policy/model.js";
import type { PolicySnapshot } from "../../proto/gen/bulkhead/v1/policy.js";

export const MODEL_NAMESPACES: readonly string[] = ["x", "y", "z"];
export const MODEL_PODS: readonly string[] = ["a", "b", "c"];
const PROTOCOL_LIST: readonly Protocol[] = ["TCP", "UDP", "SCTP"];

/** What one case needs built: the fixed 3×3 pods, each serving ports × protocols. */
export interface ConformanceModel {
  namespaces: readonly string[];
  pods: readonly string[];
  ports: readonly number[];
  protocols: readonly Protocol[];
}

/** One action of a step, as written in the case (policies still hold their placeholders). */
export type CaseAction =
  | { do: "create" | "update"; policy: Record<string, unknown>; namespace: string; name: string; field: string }
  | { do: "delete_all_policies"; field: string }
  | { do: "create_cnp" | "update_cnp"; policy: Record<string, unknown>; name: string; field: string }
  | { do: "delete_cnp"; name: string; field: string }
  | { do: "delete_all_cnps"; field: string }
  | { do: "add_ns_labels" | "set_ns_labels"; namespace: string; labels: Record<string, string>; field: string }
  | { do: "add_pod_labels" | "set_pod_labels"; namespace: string; pod: string; labels: Record<string, string>; field: string };

export interface CaseProbe {
  port: number;
  protocol: Protocol;
  /** Pairs "<ns><pod>><ns><pod>" that must fail; every other non-self pair must succeed. */
  denied: ReadonlySet<string>;
}

export interface ConformanceStep {
  actions: CaseAction[];
  probes: CaseProbe[];
}

export interface ConformanceCase {
  id: string;
  name: string;
  source: string;
  notes?: string;
  model: ConformanceModel;
  steps: ConformanceStep[];
}

/** Where the engine put the model's pods: node and addresses (primary first) of each. */
export interface ModelPlacement {
  pods: { namespace: string; name: string; node: string; ips: string[] }[];
  nodes: { name: string; ips: string[] }[];
}

/** An action with placeholders resolved and its policy parsed. */
export type ResolvedAction =
  | { do: "create" | "update"; policy: NetworkPolicy }
  | { do: "delete_all_policies" }
  | { do: "create_cnp" | "update_cnp"; policy: ClusterNetworkPolicy }
  | { do: "delete_cnp"; name: string }
  | { do: "delete_all_cnps" }
  | { do: "add_ns_labels" | "set_ns_labels"; namespace: string; labels: Record<string, string> }
  | { do: "add_pod_labels" | "set_pod_labels"; namespace: string; pod: string; labels: Record<string, string> };

/**
 * A way to run cases. The runner calls prepare once with every model it will run, then per
 * case setup, and for each step apply (the step's actions and the whole resulting cluster:
 * namespaces and pods with their current labels, nodes, policies) and probe once per probe;
 * teardown once after the last case (also after a failure).
 */
export interface ConformanceEngine {
  readonly name: string;
  /** Optional: build once what every case of the run needs (e.g. pods serving every case's ports). */
  prepare?(models: readonly ConformanceModel[]): Promise<void>;
  /**
   * The model's namespaces, pods (serving model.ports × protocols) and Services, with no
   * policies and default labels, whatever the case before left; says where the pods are.
   */
  setup(model: ConformanceModel): Promise<ModelPlacement>;
  apply(actions: readonly ResolvedAction[], cluster: PolicyCluster): Promise<void>;
  /** Every ordered pair of distinct pods whose connection failed, as "xa>xb". */
  probe(port: number, protocol: Protocol): Promise<Set<string>>;
  teardown(): Promise<void>;
}

// ---- parsing -------------------------------------------------------------------------------

/** "xa>xb" for a connection from pod a in x to pod b in x. */
export function pairName(src: { namespace: string; name: string }, dst: { namespace: string; name: string }): string {
  return `${src.namespace}${src.name}>${dst.namespace}${dst.name}`;
}

/** Every pair the model probes (no self-pairs), in order. */
export function modelPairs(model: Pick<ConformanceModel, "namespaces" | "pods">): { name: string; src: { namespace: string; name: string }; dst: { namespace: string; name: string } }[] {
  const pods = model.namespaces.flatMap((namespace) => model.pods.map((name) => ({ namespace, name })));
  const out = [];
  for (const src of pods) for (const dst of pods) if (src !== dst) out.push({ name: pairName(src, dst), src, dst });
  return out;
}

const PLACEHOLDER = /<(podIP|slash4-net-of-podIP):([^<>/\s]+)\/([^<>/\s]+)>(\/[0-9]+)?/g;
const ACTIONS = ["create", "update", "delete_all_policies", "create_cnp", "update_cnp", "delete_cnp", "delete_all_cnps", "add_ns_labels", "set_ns_labels", "add_pod_labels", "set_pod_labels"] as const;
const POLICY_KEYS = new Set(["name", "namespace", "podSelector", "policyTypes", "ingress", "egress"]);

function containerPortName(port: number, protocol: Protocol): string {
  return `serve-${port}-${protocol.toLowerCase()}`;
}

/** Parses a cases document (the JSON list of cases). Throws FieldError naming case (its source) and field. */
export function parseConformanceCases(doc: unknown): ConformanceCase[] {
  if (!Array.isArray(doc)) throw new FieldError("cases file", "", `expected a list of cases, got ${describeValue(doc)}`);
  const seen = new Set<string>();
  return doc.map((raw, i) => {
    const c = parseCase(raw, i);
    if (seen.has(c.id)) throw new FieldError(c.id, "id", "another case has the same id");
    seen.add(c.id);
    return c;
  });
}

export async function loadConformanceCases(file: string): Promise<ConformanceCase[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new Error(`cannot read the cases file ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`the cases file ${file} is not JSON: ${(err as Error).message}`);
  }
  return parseConformanceCases(doc);
}

function parseCase(raw: unknown, index: number): ConformanceCase {
  // Errors name the case by its id once it is read. Null reads as absent, as in the
  // Kubernetes objects the cases hold.
  const r = new FieldReader(`case [${index}]`, { nullIsAbsent: true });
  const fail = (field: string, detail: string): never => r.fail(field, detail);
  const c = r.map(raw, "");
  const id = r.nonEmptyString(c.id, "id");
  r.source = id;
  const name = r.optionalString(c.name, "name") ?? "";
  const source = r.optionalString(c.source, "source") ?? "";
  const notes = r.optionalString(c.notes, "notes");

  const m = r.map(c.model, "model");
  const ports = r.optionalList(m.ports, "model.ports").map((p, i) => r.port(p, fieldPath("model.ports", i)));
  if (ports.length === 0) fail("model.ports", "expected at least one port");
  const protocols = r.optionalList(m.protocols, "model.protocols").map((p, i) => r.oneOf(p, fieldPath("model.protocols", i), PROTOCOL_LIST));
  if (protocols.length === 0) fail("model.protocols", "expected at least one protocol");
  for (const port of ports) {
    for (const protocol of protocols) {
      if (containerPortName(port, protocol).length > 15) {
        fail("model.ports", `port ${port} with ${protocol} makes the container port name ${containerPortName(port, protocol)}, longer than the 15 characters Kubernetes allows`);
      }
    }
  }
  const model: ConformanceModel = { namespaces: MODEL_NAMESPACES, pods: MODEL_PODS, ports: [...new Set(ports)], protocols: [...new Set(protocols)] };
  const pairs = new Set(modelPairs(model).map((p) => p.name));

  const steps = r.optionalList(c.steps, "steps").map((rawStep, si): ConformanceStep => {
    const sf = fieldPath("steps", si);
    const step = r.map(rawStep, sf);
    const actions = r.optionalList(step.do, fieldPath(sf, "do")).map((a, ai) => parseAction(r, fail, a, fieldPath(fieldPath(sf, "do"), ai), model));
    const probes = r.optionalList(step.probes, fieldPath(sf, "probes")).map((rawProbe, pi): CaseProbe => {
      const pf = fieldPath(fieldPath(sf, "probes"), pi);
      const p = r.map(rawProbe, pf);
      const port = r.port(p.port, fieldPath(pf, "port"));
      const protocol = r.oneOf(p.protocol, fieldPath(pf, "protocol"), PROTOCOL_LIST, "TCP");
      if (!model.ports.includes(port)) fail(fieldPath(pf, "port"), `${port} is not one of model.ports (${model.ports.join(", ")}): no pod serves it`);
      if (!model.protocols.includes(protocol)) fail(fieldPath(pf, "protocol"), `${protocol} is not one of model.protocols (${model.protocols.join(", ")})`);
      const denied = new Set<string>();
      r.optionalList(p.denied, fieldPath(pf, "denied")).forEach((d, di) => {
        const df = fieldPath(fieldPath(pf, "denied"), di);
        const pair = r.string(d, df);
        if (!pairs.has(pair)) fail(df, `${describeValue(pair)} is not a pair "<ns><pod>><ns><pod>" of two different model pods (e.g. "xa>yb")`);
        denied.add(pair);
      });
      return { port, protocol, denied };
    });
    return { actions, probes };
  });
  if (steps.length === 0) fail("steps", "expected at least one step");
  const out: ConformanceCase = { id, name, source, model, steps };
  if (notes !== undefined) out.notes = notes;
  return out;
}

function parseAction(
  r: FieldReader,
  fail: (field: string, detail: string) => never,
  raw: unknown,
  field: string,
  model: ConformanceModel,
): CaseAction {
  const a = r.map(raw, field);
  const keys = Object.keys(a);
  const kind = keys[0];
  if (keys.length !== 1 || kind === undefined || !(ACTIONS as readonly string[]).includes(kind)) {
    fail(field, `expected a map with exactly one of ${ACTIONS.join(", ")}, got ${keys.length === 0 ? "an empty map" : keys.join(", ")}`);
  }
  const f = fieldPath(field, kind as string);
  const value = a[kind as string];
  switch (kind) {
    case "create":
    case "update": {
      const policy = r.map(value, f);
      for (const key of Object.keys(policy)) {
        if (!POLICY_KEYS.has(key)) fail(fieldPath(f, key), `unknown field; a policy is name, namespace and the NetworkPolicy spec fields (podSelector, policyTypes, ingress, egress)`);
      }
      const name = r.nonEmptyString(policy.name, fieldPath(f, "name"));
      const namespace = r.nonEmptyString(policy.namespace, fieldPath(f, "namespace"));
      if (!model.namespaces.includes(namespace)) fail(fieldPath(f, "namespace"), `${describeValue(namespace)} is not a model namespace (${model.namespaces.join(", ")})`);
      // Check the policy now, with placeholders standing for some address, so that a
      // mistake in the file shows before anything is built.
      const placeholderProblem = (text: string) => {
        for (const match of text.matchAll(PLACEHOLDER)) {
          const ns = match[2] ?? "";
          const pod = match[3] ?? "";
          if (!model.namespaces.includes(ns) || !model.pods.includes(pod)) return `<${match[1] ?? ""}:${ns}/${pod}> names no model pod`;
        }
        return undefined;
      };
      const dummy = new Map<string, { ips: string[] }>();
      for (const ns of model.namespaces) for (const pod of model.pods) dummy.set(`${ns}/${pod}`, { ips: ["10.0.0.1"] });
      const bad = findInStrings(policy, placeholderProblem);
      if (bad !== undefined) fail(f, bad);
      try {
        policyObject(substitute(policy, dummy), namespace, name);
      } catch (err) {
        if (err instanceof FieldError) fail(f, `${err.field === "" ? "" : `${err.field}: `}${err.detail}`);
        throw err;
      }
      return { do: kind, policy, namespace, name, field };
    }
    case "delete_all_policies":
    case "delete_all_cnps":
      if (value !== true) fail(f, `expected true, got ${describeValue(value)}`);
      return { do: kind, field };
    case "create_cnp":
    case "update_cnp": {
      const policy = r.map(value, f);
      const name = r.nonEmptyString(policy.name, fieldPath(f, "name"));
      const bad = findInStrings(policy, (text) => {
        for (const match of text.matchAll(PLACEHOLDER)) {
          const ns = match[2] ?? "";
          const pod = match[3] ?? "";
          if (!model.namespaces.includes(ns) || !model.pods.includes(pod)) return `<${match[1] ?? ""}:${ns}/${pod}> names no model pod`;
        }
        return undefined;
      });
      if (bad !== undefined) fail(f, bad);
      // Validate now (placeholders standing for some address), so a mistake shows before anything is built.
      const dummy = new Map<string, { ips: string[] }>();
      for (const ns of model.namespaces) for (const pod of model.pods) dummy.set(`${ns}/${pod}`, { ips: ["10.0.0.1"] });
      const checked = normalizeCnp(cnpObject(substitute(policy, dummy), name));
      if (checked.problems) fail(f, checked.problems.map((p) => `${p.field}: ${p.message}`).join("; "));
      return { do: kind, policy, name, field };
    }
    case "delete_cnp": {
      const m = r.map(value, f);
      return { do: kind, name: r.nonEmptyString(m.name, fieldPath(f, "name")), field };
    }
    case "add_ns_labels":
    case "set_ns_labels": {
      const m = r.map(value, f);
      const namespace = r.nonEmptyString(m.ns, fieldPath(f, "ns"));
      if (!model.namespaces.includes(namespace)) fail(fieldPath(f, "ns"), `${describeValue(namespace)} is not a model namespace`);
      const labels = r.labels(m.labels, fieldPath(f, "labels"));
      return { do: kind, namespace, labels, field };
    }
    case "add_pod_labels":
    case "set_pod_labels": {
      const m = r.map(value, f);
      const ref = r.nonEmptyString(m.pod, fieldPath(f, "pod"));
      const [namespace, pod, extra] = ref.split("/");
      if (extra !== undefined || namespace === undefined || pod === undefined || !model.namespaces.includes(namespace) || !model.pods.includes(pod)) {
        fail(fieldPath(f, "pod"), `expected "<ns>/<pod>" naming a model pod (e.g. "x/b"), got ${describeValue(ref)}`);
      }
      const labels = r.labels(m.labels, fieldPath(f, "labels"));
      return { do: kind, namespace, pod, labels, field };
    }
    default:
      return fail(field, "unreachable");
  }
}

function findInStrings(value: unknown, check: (text: string) => string | undefined): string | undefined {
  if (typeof value === "string") return check(value);
  if (Array.isArray(value)) {
    for (const v of value) {
      const found = findInStrings(v, check);
      if (found !== undefined) return found;
    }
  } else if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) {
      const found = findInStrings(v, check);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * A copy of `value` with CIDR placeholders resolved against the pods' addresses (primary first):
 * `<podIP:ns/pod>` is the pod's address (a host-length suffix written for the other family,
 * "/32" on an IPv6 address or "/128" on IPv4, is corrected); `<slash4-net-of-podIP:ns/pod>`
 * is the /4 network containing it ("a.0.0.0/4", or just the address when the case writes
 * the "/4" itself).
 */
export function substitute(value: unknown, pods: ReadonlyMap<string, { ips: readonly string[] }>): unknown {
  if (typeof value === "string") {
    return value.replace(PLACEHOLDER, (whole, kind: string, ns: string, pod: string, suffix: string | undefined) => {
      const ip = pods.get(`${ns}/${pod}`)?.ips[0];
      if (ip === undefined) throw new Error(`${whole}: pod ${ns}/${pod} has no address`);
      const parsed = parseIp(ip);
      if (!parsed) throw new Error(`${whole}: ${ip} is not an address`);
      const hostLength = parsed.family === 4 ? 32 : 128;
      if (kind === "podIP") {
        if (suffix === "/32" || suffix === "/128") return `${parsed.text}/${hostLength}`;
        return `${parsed.text}${suffix ?? ""}`;
      }
      const bytes = new Uint8Array(parsed.bytes.length);
      bytes[0] = (parsed.bytes[0] ?? 0) & 0xf0;
      const network = parsed.family === 4 ? `${bytes[0]}.0.0.0` : `${bytes[0].toString(16)}00::`;
      return suffix === undefined ? `${network}/4` : `${network}${suffix}`;
    });
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, pods));
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, pods)]));
  }
  return value;
}

function policyObject(policy: unknown, namespace: string, name: string): NetworkPolicy {
  const { name: _n, namespace: _ns, ...spec } = policy as Record<string, unknown>;
  const object = parseKubeObject({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace }, spec });
  if (object?.kind !== "NetworkPolicy") throw new Error(`NetworkPolicy ${namespace}/${name} did not parse as a NetworkPolicy`);
  return object;
}

/** The manifest of a case's ClusterNetworkPolicy: `name` plus the spec fields. */
export function cnpObject(policy: unknown, name: string): ClusterNetworkPolicy {
  const { name: _n, ...spec } = policy as Record<string, unknown>;
  return { apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name }, spec };
}

// ---- the model cluster ----------------------------------------------------------------------

/** The model's pods on `nodes` nodes (alternating), with addresses inside 10.0.0.0/4: 10.244.<node>.<n>. */
export function generatePlacement(model: ConformanceModel, nodes = 2): ModelPlacement {
  const pods: ModelPlacement["pods"] = [];
  let i = 0;
  for (const namespace of model.namespaces) {
    for (const name of model.pods) {
      const node = i % nodes;
      pods.push({ namespace, name, node: `node-${node + 1}`, ips: [`10.244.${node + 1}.${10 + i}`] });
      i++;
    }
  }
  const nodeList = Array.from({ length: nodes }, (_, n) => ({ name: `node-${n + 1}`, ips: [`172.18.0.${n + 2}`] }));
  return { pods, nodes: nodeList };
}

/** The model cluster one case changes step by step: labels and policies, as Kubernetes objects. */
export class ModelCluster {
  private readonly nsLabels = new Map<string, Record<string, string>>();
  private readonly podLabels = new Map<string, Record<string, string>>();
  private readonly policies = new Map<string, NetworkPolicy>();
  private readonly cnps = new Map<string, ClusterNetworkPolicy>();
  private readonly placement: Map<string, { node: string; ips: string[] }>;

  constructor(readonly model: ConformanceModel, private readonly where: ModelPlacement) {
    for (const ns of model.namespaces) this.nsLabels.set(ns, { [NAMESPACE_NAME_LABEL]: ns, ns });
    for (const ns of model.namespaces) for (const pod of model.pods) this.podLabels.set(`${ns}/${pod}`, { pod });
    this.placement = new Map(where.pods.map((p) => [`${p.namespace}/${p.name}`, { node: p.node, ips: p.ips }]));
    for (const ns of model.namespaces) {
      for (const pod of model.pods) {
        const at = this.placement.get(`${ns}/${pod}`);
        if (!at || at.ips.length === 0) throw new Error(`the engine placed no pod ${ns}/${pod} with an address`);
      }
    }
  }

  /** Applies one action and returns it resolved; throws (changing nothing) when it cannot apply. */
  apply(action: CaseAction): ResolvedAction {
    switch (action.do) {
      case "create":
      case "update": {
        const policy = policyObject(substitute(action.policy, this.placement), action.namespace, action.name);
        this.policies.set(`${action.namespace}/${action.name}`, policy);
        return { do: action.do, policy };
      }
      case "delete_all_policies":
        this.policies.clear();
        return { do: action.do };
      case "create_cnp":
      case "update_cnp": {
        const policy = cnpObject(substitute(action.policy, this.placement), action.name);
        this.cnps.set(action.name, policy);
        return { do: action.do, policy };
      }
      case "delete_cnp":
        if (!this.cnps.delete(action.name)) throw new Error(`delete_cnp: no ClusterNetworkPolicy ${JSON.stringify(action.name)} (have: ${[...this.cnps.keys()].join(", ") || "none"})`);
        return { do: action.do, name: action.name };
      case "delete_all_cnps":
        this.cnps.clear();
        return { do: action.do };
      case "add_ns_labels":
      case "set_ns_labels": {
        const labels = action.do === "add_ns_labels" ? { ...this.nsLabels.get(action.namespace), ...action.labels } : { ...action.labels };
        labels[NAMESPACE_NAME_LABEL] = action.namespace;
        this.nsLabels.set(action.namespace, labels);
        return { do: action.do, namespace: action.namespace, labels: { ...labels } };
      }
      case "add_pod_labels":
      case "set_pod_labels": {
        const key = `${action.namespace}/${action.pod}`;
        const labels = action.do === "add_pod_labels" ? { ...this.podLabels.get(key), ...action.labels } : { ...action.labels };
        this.podLabels.set(key, labels);
        return { do: action.do, namespace: action.namespace, pod: action.pod, labels: { ...labels } };
      }
    }
  }

  /** The whole cluster as Kubernetes objects, parsed as the control plane parses manifests. */
  objects(): PolicyCluster {
    const parse = <K extends string>(doc: Record<string, unknown>, kind: K) => {
      const object = parseKubeObject(doc);
      if (object?.kind !== kind) throw new Error(`model ${kind} did not parse`);
      return object as Extract<NonNullable<ReturnType<typeof parseKubeObject>>, { kind: K }>;
    };
    const containerPorts = this.model.ports.flatMap((port) => this.model.protocols.map((protocol) => ({ name: containerPortName(port, protocol), containerPort: port, protocol })));
    const namespaces = [...this.nsLabels].map(([name, labels]) => parse({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels } }, "Namespace"));
    const pods = [...this.podLabels].map(([key, labels]) => {
      const [namespace, name] = key.split("/");
      const at = this.placement.get(key) ?? { node: "", ips: [] };
      return parse({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace, uid: `model-${namespace}-${name}`, labels },
        spec: { nodeName: at.node, containers: [{ name: "serve", ports: containerPorts }] },
        status: { phase: "Running", podIP: at.ips[0], podIPs: at.ips.map((ip) => ({ ip })) },
      }, "Pod");
    });
    const nodes = this.where.nodes.map((n) => parse({
      apiVersion: "v1", kind: "Node", metadata: { name: n.name }, status: { addresses: n.ips.map((address) => ({ type: "InternalIP", address })) },
    }, "Node"));
    return { namespaces, pods, nodes, policies: [...this.policies.values()], clusterNetworkPolicies: [...this.cnps.values()] };
  }
}

// ---- the runner -------------------------------------------------------------------------------

export interface ProbeReport {
  port: number;
  protocol: Protocol;
  passed: boolean;
  /** Pairs the engine let through that the case denies. */
  allowedButShouldBeDenied: string[];
  /** Pairs the engine stopped that the case allows. */
  deniedButShouldBeAllowed: string[];
}

export interface StepReport {
  step: number;
  /** Actions that could not apply (e.g. a policy invalid once its placeholders resolved), with why. */
  rejected: string[];
  probes: ProbeReport[];
}

export interface CaseReport {
  id: string;
  name: string;
  source: string;
  passed: boolean;
  /** Set when the case could not run to the end (setup, apply or probe failed). */
  error?: string;
  steps: StepReport[];
}

export interface ConformanceReport {
  engine: string;
  passed: number;
  failed: number;
  cases: CaseReport[];
}

export interface RunOptions {
  /** Run only this case. */
  caseId?: string;
  /** Progress, one line per case and per failed probe. */
  log?: (line: string) => void;
  /** Leave the engine set up after the last case: the caller runs more and tears down itself. */
  leaveUp?: boolean;
}

export async function runConformance(cases: readonly ConformanceCase[], engine: ConformanceEngine, options: RunOptions = {}): Promise<ConformanceReport> {
  const log = options.log ?? (() => {});
  const selected = options.caseId === undefined ? cases : cases.filter((c) => c.id === options.caseId);
  if (selected.length === 0) throw new Error(`no case ${JSON.stringify(options.caseId)} in the cases file (it has ${cases.map((c) => c.id).join(", ")})`);
  const report: ConformanceReport = { engine: engine.name, passed: 0, failed: 0, cases: [] };
  try {
    await engine.prepare?.(selected.map((c) => c.model));
    for (const c of selected) {
      const result = await runCase(c, engine, log);
      report.cases.push(result);
      if (result.passed) report.passed++;
      else report.failed++;
    }
  } finally {
    if (options.leaveUp !== true) await engine.teardown();
  }
  return report;
}

async function runCase(c: ConformanceCase, engine: ConformanceEngine, log: (line: string) => void): Promise<CaseReport> {
  const report: CaseReport = { id: c.id, name: c.name, source: c.source, passed: true, steps: [] };
  try {
    const placement = await engine.setup(c.model);
    const cluster = new ModelCluster(c.model, placement);
    for (const [si, step] of c.steps.entries()) {
      const stepReport: StepReport = { step: si + 1, rejected: [], probes: [] };
      report.steps.push(stepReport);
      const resolved: ResolvedAction[] = [];
      for (const action of step.actions) {
        try {
          resolved.push(cluster.apply(action));
        } catch (err) {
          stepReport.rejected.push(`${action.field}: ${(err as Error).message}`);
        }
      }
      await engine.apply(resolved, cluster.objects());
      for (const probe of step.probes) {
        const denied = await engine.probe(probe.port, probe.protocol);
        const pairs = modelPairs(c.model).map((p) => p.name);
        const allowedButShouldBeDenied = pairs.filter((p) => probe.denied.has(p) && !denied.has(p));
        const deniedButShouldBeAllowed = pairs.filter((p) => !probe.denied.has(p) && denied.has(p));
        const passed = allowedButShouldBeDenied.length === 0 && deniedButShouldBeAllowed.length === 0;
        if (!passed) report.passed = false;
        stepReport.probes.push({ port: probe.port, protocol: probe.protocol, passed, allowedButShouldBeDenied, deniedButShouldBeAllowed });
      }
    }
  } catch (err) {
    report.passed = false;
    report.error = (err as Error).message;
  }
  for (const line of describeCase(report)) log(line);
  return report;
}

/** Human-readable lines for one case: PASS/FAIL, then every wrong pair and rejected action. */
export function describeCase(report: CaseReport): string[] {
  const lines = [`${report.passed ? "PASS" : "FAIL"} ${report.id}  ${report.name}`];
  for (const step of report.steps) {
    for (const rejected of step.rejected) lines.push(`  step ${step.step}: action rejected: ${rejected}`);
    for (const probe of step.probes) {
      if (probe.passed) continue;
      const at = `  step ${step.step}, probe ${probe.port}/${probe.protocol}`;
      if (probe.allowedButShouldBeDenied.length > 0) lines.push(`${at}: allowed but should be denied (${probe.allowedButShouldBeDenied.length}): ${probe.allowedButShouldBeDenied.join(" ")}`);
      if (probe.deniedButShouldBeAllowed.length > 0) lines.push(`${at}: denied but should be allowed (${probe.deniedButShouldBeAllowed.length}): ${probe.deniedButShouldBeAllowed.join(" ")}`);
    }
  }
  if (report.error !== undefined) lines.push(`  error: ${report.error}`);
  return lines;
}

export function summaryLine(report: ConformanceReport): string {
  return `${report.passed} passed, ${report.failed} failed`;
}

// ---- engines without a datapath -----------------------------------------------------------------

interface ProbeTarget {
  namespace: string;
  name: string;
  key: string;
  ip: string;
}

function probeTargets(cluster: PolicyCluster): ProbeTarget[] {
  return cluster.pods.map((p) => ({ namespace: p.metadata.namespace, name: p.metadata.name, key: `${p.metadata.namespace}/${p.metadata.name}`, ip: p.status.podIPs[0] ?? "" }));
}

/** Judges every pair with PolicyModel.evaluate (namespaces in enforce mode). */
export class ModelEngine implements ConformanceEngine {
  readonly name = "model";
  private policySet = new PolicySet();
  private cnpSet = new CnpSet();
  private model: PolicyModel | undefined;
  private targets: ProbeTarget[] = [];

  constructor(private readonly options: { nodes?: number; hostExempt?: boolean } = {}) {}

  async setup(model: ConformanceModel): Promise<ModelPlacement> {
    this.policySet = new PolicySet();
    this.cnpSet = new CnpSet();
    this.model = undefined;
    return generatePlacement(model, this.options.nodes ?? 2);
  }

  async apply(_actions: readonly ResolvedAction[], cluster: PolicyCluster): Promise<void> {
    this.model = new PolicyModel(cluster, { defaultMode: "enforce", hostExempt: this.options.hostExempt ?? true, policySet: this.policySet, cnpSet: this.cnpSet });
    this.targets = probeTargets(cluster);
  }

  async probe(port: number, protocol: Protocol): Promise<Set<string>> {
    const model = this.model;
    if (!model) throw new Error("model engine: probe before apply");
    const denied = new Set<string>();
    for (const src of this.targets) {
      for (const dst of this.targets) {
        if (src === dst) continue;
        if (!model.evaluate({ src: { pod: src.key }, dst: { pod: dst.key }, protocol, port }).allowed) denied.add(pairName(src, dst));
      }
    }
    return denied;
  }

  async teardown(): Promise<void> {
    this.model = undefined;
  }
}

/** Compiles each state into a PolicySnapshot (one compiler per case, so steps compile incrementally) and judges every pair as the kernel will. */
export class SnapshotEngine implements ConformanceEngine {
  readonly name = "snapshot";
  private compiler = new PolicyCompiler({ defaultMode: "enforce" });
  private snapshot: PolicySnapshot | undefined;
  private targets: ProbeTarget[] = [];

  constructor(private readonly options: { nodes?: number; hostExempt?: boolean } = {}) {}

  async setup(model: ConformanceModel): Promise<ModelPlacement> {
    this.compiler = new PolicyCompiler({ defaultMode: "enforce", hostExempt: this.options.hostExempt ?? true });
    this.snapshot = undefined;
    return generatePlacement(model, this.options.nodes ?? 2);
  }

  async apply(_actions: readonly ResolvedAction[], cluster: PolicyCluster): Promise<void> {
    this.snapshot = this.compiler.compile(cluster);
    this.targets = probeTargets(cluster);
  }

  async probe(port: number, protocol: Protocol): Promise<Set<string>> {
    const snapshot = this.snapshot;
    if (!snapshot) throw new Error("snapshot engine: probe before apply");
    const denied = new Set<string>();
    for (const src of this.targets) {
      for (const dst of this.targets) {
        if (src === dst) continue;
        if (!snapshotAllows(snapshot, src.ip, dst.ip, protocol, port)) denied.add(pairName(src, dst));
      }
    }
    return denied;
  }

  async teardown(): Promise<void> {
    this.snapshot = undefined;
  }
}
