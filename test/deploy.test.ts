// deploy/: every Kustomize overlay renders with the machine's `kubectl kustomize`; every
// object validates against the Kubernetes OpenAPI schemas (kubernetes-models: the ajv
// validators and the TypeScript types it generates from the spec, the types catching
// unknown fields as a strict API server would); the ClusterRole grants exactly what the
// control plane watches; the agent's pod spec is what it needs and no more, and those
// capabilities are enough on the real kernel; the manifests' args parse with the real
// flag parsers; the Dockerfile is pinned, builds with scripts/build (what ./scripts/setup
// runs) on a context that is a fresh clone's tree, and assembles with
// deploy/images/assemble.sh a tree the agent and control plane run from.
//
// No Kubernetes API server and no Docker engine exist here: the schemas stand in for the
// server's validation, the scripts for the image build. That the build runs from a clean
// tree is proved by CI's setup: on a fresh clone (.ci/run) it is scripts/build on exactly
// the files the image's context holds; this file assembles from that build instead of
// building a second time (on a developer's tree, run ./scripts/setup after a change).
// Network namespaces are
// bhdep-<pid>-…, addresses 10.198.0.0/30, both removed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import { repoRoot } from "../config/install.js";
import { parseAgentArgs } from "../agent/config.js";
import { AGENT_NODE_FLAGS } from "../agent/node-flags.js";
import { parseControlPlaneArgs } from "../controlplane/config.js";
import { WATCHED_RESOURCES, WATCH_VERBS } from "../controlplane/metadata/kubernetes-resources.js";
import { poll } from "./harness/netns.js";
import { Spawned } from "./harness/process.js";
import { holdCensusLock } from "./harness/census.js";

const OVERLAYS = ["production", "dev", "scale-out"] as const;
/** Overlays with TLS and tokens: production, and scale-out, which is built on it. */
const secure = (overlay: string) => overlay !== "dev";
const kustomizeDir = path.join(repoRoot, "deploy", "kustomize");
const dockerfile = path.join(repoRoot, "deploy", "images", "Dockerfile");

// ---------------------------------------------------------------------------------------
// Rendered objects, parsed at the edge into a narrow shape; everything deeper is read
// through `field`, which names the path that was missing.

interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

function parseKubeObject(doc: unknown, where: string): KubeObject {
  if (!doc || typeof doc !== "object") throw new Error(`${where}: not an object`);
  const o = doc as Record<string, unknown>;
  const meta = o.metadata as Record<string, unknown> | undefined;
  if (typeof o.apiVersion !== "string" || typeof o.kind !== "string" || typeof meta?.name !== "string") {
    throw new Error(`${where}: no apiVersion, kind or metadata.name`);
  }
  return o as KubeObject;
}

function field(obj: unknown, dotted: string): unknown {
  let at: unknown = obj;
  for (const key of dotted.split(".")) {
    if (!at || typeof at !== "object") throw new Error(`no ${dotted} (stopped at ${key})`);
    at = (at as Record<string, unknown>)[/^[0-9]+$/.test(key) && Array.isArray(at) ? Number(key) : key];
  }
  return at;
}

function render(overlay: string): KubeObject[] {
  const text = execFileSync("kubectl", ["kustomize", path.join(kustomizeDir, "overlays", overlay)], {
    encoding: "utf8", stdio: ["ignore", "pipe", "pipe"],
  });
  return parseAllDocuments(text).map((d, i) => {
    if (d.errors.length) throw new Error(`${overlay} document ${i}: ${d.errors[0]?.message}`);
    return parseKubeObject(d.toJS(), `${overlay} document ${i}`);
  });
}

function one(objects: KubeObject[], kind: string, name: string): KubeObject {
  const hits = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (hits.length !== 1) throw new Error(`${hits.length} ${kind}/${name} in the rendered objects`);
  return hits[0]!;
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: {
    fieldRef?: { fieldPath: string }; configMapKeyRef?: { name: string; key: string }; secretKeyRef?: { name: string; key: string };
  } }[];
  ports?: { name?: string; containerPort: number }[];
  livenessProbe?: { httpGet?: { path: string; port: string | number; scheme?: string } };
  readinessProbe?: { httpGet?: { path: string; port: string | number; scheme?: string } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    privileged?: boolean; runAsUser?: number; runAsNonRoot?: boolean; readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean; capabilities?: { add?: string[]; drop?: string[] };
    seccompProfile?: { type: string };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }[];
}

interface PodSpec {
  containers: Container[];
  hostNetwork?: boolean;
  hostPID?: boolean;
  dnsPolicy?: string;
  priorityClassName?: string;
  tolerations?: { operator?: string; key?: string; effect?: string }[];
  automountServiceAccountToken?: boolean;
  serviceAccountName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
  volumes?: { name: string; hostPath?: { path: string; type?: string }; secret?: { secretName: string; items?: { key: string; path: string }[] };
    persistentVolumeClaim?: { claimName: string } }[];
}

const podSpec = (o: KubeObject) => field(o, "spec.template.spec") as PodSpec;

// ---------------------------------------------------------------------------------------
// Schema validation. kubernetes-models ships, per kind, a class whose validate() runs the
// ajv validator generated from the Kubernetes OpenAPI spec (types, required fields, enums,
// formats). The spec leaves additionalProperties open (the API server rejects unknown
// fields itself, in Strict field validation), so the same package's generated TypeScript
// types check that: each object becomes an object literal typed as the kind's interface,
// and the compiler's excess-property check names every unknown field.

interface Validatable { validate(): void }
type ModelClass = new (data: unknown) => Validatable;

function modelPath(o: { apiVersion: string; kind: string }): string {
  return `kubernetes-models/${o.apiVersion}/${o.kind}`;
}

async function schemaErrors(o: KubeObject): Promise<string | undefined> {
  let mod: Record<string, unknown>;
  try {
    mod = await import(modelPath(o)) as Record<string, unknown>;
  } catch (err) {
    return `${o.apiVersion} ${o.kind} is not a kind kubernetes-models knows: ${(err as Error).message}`;
  }
  const Model = mod[o.kind] as ModelClass | undefined;
  if (!Model) return `kubernetes-models/${o.apiVersion}/${o.kind} exports no ${o.kind}`;
  try {
    new Model(o).validate();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Unknown fields (and type errors) per object, by the compiler over the generated types. */
function unknownFieldErrors(objects: KubeObject[]): string[] {
  const file = path.join(repoRoot, "test", `deploy-rendered-${process.pid}.ts`);
  const lines = objects.map((o, i) =>
    `import type { I${o.kind} as T${i} } from ${JSON.stringify(modelPath(o))};\n` +
    `export const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`);
  const source = lines.join("\n");
  const options: ts.CompilerOptions = {
    strict: true, noEmit: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022, skipLibCheck: true, types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => name === file
    ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest);
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const sf = program.getSourceFile(file);
  if (!sf) throw new Error("the rendered objects' source file was not created");
  // The line each object's declaration starts on, to name the object a diagnostic is in.
  const starts = lines.map((_, i) => lines.slice(0, i).join("\n").split("\n").length - (i === 0 ? 1 : 0));
  return ts.getPreEmitDiagnostics(program, sf).map((d) => {
    const line = d.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(d.start).line;
    const o = objects[starts.filter((start) => start <= line).length - 1];
    return `${o ? `${o.kind}/${o.metadata.name}` : "?"}: ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
  });
}

const rendered = new Map<string, KubeObject[]>();
beforeAll(() => {
  for (const overlay of OVERLAYS) rendered.set(overlay, render(overlay));
});
const objectsOf = (overlay: string) => rendered.get(overlay) ?? [];

describe.each(OVERLAYS)("overlay %s", (overlay) => {
  it("renders the namespace, both accounts, RBAC, the ConfigMap, both workloads, the Service, the NetworkPolicy and the store claim (or, scaled out, the disruption budget)", () => {
    const kinds = objectsOf(overlay).map((o) => `${o.kind}/${o.metadata.name.replace(/-[a-z0-9]{10}$/, "")}`).sort();
    // The embedded store's claim, except where the replicas share ClickHouse (and drain one at a time).
    const byOverlay = overlay === "scale-out" ? ["PodDisruptionBudget/bulkhead-controlplane"] : ["PersistentVolumeClaim/bulkhead-controlplane-data"];
    expect(kinds).toEqual([
      "ClusterRole/bulkhead-controlplane", "ClusterRoleBinding/bulkhead-controlplane", "ConfigMap/bulkhead-config",
      "DaemonSet/bulkhead-agent", "Deployment/bulkhead-controlplane", "Namespace/bulkhead",
      "NetworkPolicy/bulkhead-controlplane", "Service/bulkhead-controlplane",
      "ServiceAccount/bulkhead-agent", "ServiceAccount/bulkhead-controlplane", ...byOverlay,
    ].sort());
    for (const o of objectsOf(overlay)) {
      if (!["Namespace", "ClusterRole", "ClusterRoleBinding"].includes(o.kind)) expect(o.metadata.namespace, o.kind).toBe("bulkhead");
    }
  });

  it("every object validates against the Kubernetes OpenAPI schema", async () => {
    const errors: string[] = [];
    for (const o of objectsOf(overlay)) {
      const e = await schemaErrors(o);
      if (e) errors.push(`${o.kind}/${o.metadata.name}: ${e}`);
    }
    expect(errors).toEqual([]);
  });

  it("no object has a field its kind does not define", () => {
    expect(unknownFieldErrors(objectsOf(overlay))).toEqual([]);
  });

  it("images are pinned to an exact tag", () => {
    for (const kind of ["DaemonSet", "Deployment"]) {
      for (const o of objectsOf(overlay).filter((x) => x.kind === kind)) {
        for (const c of podSpec(o).containers) {
          const image = c.image;
          expect(image, `${o.metadata.name}/${c.name}`).toMatch(/^bulkhead\/(agent|controlplane)(:[A-Za-z0-9][\w.-]*|@sha256:[0-9a-f]{64})$/);
          expect(image).not.toMatch(/:latest$/);
        }
      }
    }
  });
});

describe("the validation is real", () => {
  it("rejects a container port given as a string", async () => {
    const ds = structuredClone(one(objectsOf("production"), "DaemonSet", "bulkhead-agent"));
    (field(ds, "spec.template.spec.containers.0.ports.0") as { containerPort: unknown }).containerPort = "9387";
    expect(await schemaErrors(ds)).toMatch(/containerPort must be integer/);
  });

  it("rejects a missing required field and a value outside an enum", async () => {
    const svc = structuredClone(one(objectsOf("production"), "Service", "bulkhead-controlplane"));
    delete (field(svc, "spec.ports.0") as { port?: number }).port;
    expect(await schemaErrors(svc)).toMatch(/spec\/ports\/0 must have required property port/);
    const ds = structuredClone(one(objectsOf("production"), "DaemonSet", "bulkhead-agent"));
    (field(ds, "spec.template.spec.containers.0.volumeMounts.0") as { mountPropagation: string }).mountPropagation = "Sideways";
    expect(await schemaErrors(ds)).toMatch(/mountPropagation must be equal to one of the allowed values/);
  });

  it("names a misspelt field", () => {
    const ds = structuredClone(one(objectsOf("production"), "DaemonSet", "bulkhead-agent"));
    const spec = field(ds, "spec.template.spec") as Record<string, unknown>;
    spec.hostNetwrok = spec.hostNetwork;
    delete spec.hostNetwork;
    const errors = unknownFieldErrors([ds]);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^DaemonSet\/bulkhead-agent: .*hostNetwrok.* does not exist in type 'IPodSpec'/);
  });
});

// ---------------------------------------------------------------------------------------

describe("RBAC", () => {
  type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[]; nonResourceURLs?: string[] };

  function grants(objects: KubeObject[]): string[] {
    const out: string[] = [];
    for (const role of objects.filter((o) => o.kind === "ClusterRole" || o.kind === "Role")) {
      for (const r of (role.rules ?? []) as Rule[]) {
        expect(r.resourceNames, `${role.metadata.name}: resourceNames`).toBeUndefined();
        expect(r.nonResourceURLs, `${role.metadata.name}: nonResourceURLs`).toBeUndefined();
        for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) for (const v of r.verbs ?? []) {
          out.push(`${role.kind}/${role.metadata.name} ${g}/${res} ${v}`);
        }
      }
    }
    return out.sort();
  }

  it.each(OVERLAYS)("%s: the ClusterRole grants get/list/watch on exactly the watched resources, nothing else anywhere", (overlay) => {
    const expected = WATCHED_RESOURCES.flatMap((r) => WATCH_VERBS.map((v) => `ClusterRole/bulkhead-controlplane ${r.group}/${r.resource} ${v}`)).sort();
    const actual = grants(objectsOf(overlay));
    expect(actual.filter((g) => g.includes("*")), "wildcards").toEqual([]);
    expect(actual).toEqual(expected);
  });

  it.each(OVERLAYS)("%s: the role is bound to the control plane's account only; the agent's has no binding and no token", (overlay) => {
    const objects = objectsOf(overlay);
    const bindings = objects.filter((o) => o.kind === "ClusterRoleBinding" || o.kind === "RoleBinding");
    expect(bindings.map((b) => ({ role: field(b, "roleRef.name"), subjects: b.subjects }))).toEqual([{
      role: "bulkhead-controlplane",
      subjects: [{ kind: "ServiceAccount", name: "bulkhead-controlplane", namespace: "bulkhead" }],
    }]);
    expect(podSpec(one(objects, "Deployment", "bulkhead-controlplane")).serviceAccountName).toBe("bulkhead-controlplane");
    const agent = podSpec(one(objects, "DaemonSet", "bulkhead-agent"));
    expect(agent.serviceAccountName).toBe("bulkhead-agent");
    expect(agent.automountServiceAccountToken).toBe(false);
    expect(one(objects, "ServiceAccount", "bulkhead-agent").automountServiceAccountToken).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------

/** The capabilities the agent's container adds, in the order the manifest lists them. */
const AGENT_CAPABILITIES = ["BPF", "NET_ADMIN", "PERFMON"];

describe.each(OVERLAYS)("%s: the agent DaemonSet", (overlay) => {
  const agent = () => podSpec(one(objectsOf(overlay), "DaemonSet", "bulkhead-agent"));
  const container = () => agent().containers[0]!;

  it("runs in the host network, on every node, as system-node-critical, resolving cluster names", () => {
    const spec = agent();
    expect(spec.hostNetwork).toBe(true);
    expect(spec.hostPID).toBeUndefined();
    expect(spec.dnsPolicy).toBe("ClusterFirstWithHostNet");
    expect(spec.priorityClassName).toBe("system-node-critical");
    expect(spec.tolerations).toEqual([{ operator: "Exists" }]);
  });

  it("is not privileged: root with every capability dropped but its own, read-only root, RuntimeDefault seccomp", () => {
    const sc = container().securityContext ?? {};
    expect(sc.privileged).toBe(false);
    expect(sc.capabilities?.drop).toEqual(["ALL"]);
    expect(sc.capabilities?.add).toEqual(AGENT_CAPABILITIES);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.runAsUser).toBe(0);
    expect(agent().securityContext?.seccompProfile?.type).toBe("RuntimeDefault");
  });

  it("mounts the host's bpffs (HostToContainer) and BTF (read-only), and nothing of the host's namespaces", () => {
    const mounts = Object.fromEntries((container().volumeMounts ?? []).map((m) => [m.mountPath, m]));
    const volumes = Object.fromEntries((agent().volumes ?? []).map((v) => [v.name, v]));
    const hostPathOf = (mountPath: string) => volumes[mounts[mountPath]?.name ?? ""]?.hostPath?.path;
    expect(hostPathOf("/sys/fs/bpf")).toBe("/sys/fs/bpf");
    expect(mounts["/sys/fs/bpf"]?.mountPropagation).toBe("HostToContainer");
    expect(hostPathOf("/sys/kernel/btf")).toBe("/sys/kernel/btf");
    expect(mounts["/sys/kernel/btf"]?.readOnly).toBe(true);
    const hostPaths = Object.values(volumes).flatMap((v) => (v.hostPath ? [v.hostPath.path] : [])).sort();
    expect(hostPaths).toEqual(["/sys/fs/bpf", "/sys/kernel/btf"]);
  });

  it("probes /healthz on the metrics port the agent serves, with requests and limits", () => {
    const c = container();
    const metrics = c.ports?.find((p) => p.name === "metrics");
    expect(metrics?.containerPort).toBe(9387);
    for (const probe of [c.livenessProbe, c.readinessProbe]) expect(probe?.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(Object.keys(c.resources?.requests ?? {}).sort()).toEqual(["cpu", "memory"]);
    expect(Object.keys(c.resources?.limits ?? {}).sort()).toEqual(["cpu", "memory"]);
  });

  it("runs Node with the agent's flags (1 MB semi-spaces), the ones the lab and the benches use", () => {
    const env = container().env ?? [];
    expect(env.filter((e) => e.name === "NODE_OPTIONS")).toEqual([{ name: "NODE_OPTIONS", value: AGENT_NODE_FLAGS.join(" ") }]);
    expect(AGENT_NODE_FLAGS).toContain("--max-semi-space-size=1");
  });
});

describe.each(OVERLAYS)("%s: the control plane Deployment", (overlay) => {
  it("meets the restricted Pod Security level and probes /healthz on the UI port", () => {
    const spec = podSpec(one(objectsOf(overlay), "Deployment", "bulkhead-controlplane"));
    const c = spec.containers[0]!;
    expect(spec.securityContext?.runAsNonRoot).toBe(true);
    expect(spec.securityContext?.runAsUser).toBeGreaterThan(0);
    expect(spec.securityContext?.seccompProfile?.type).toBe("RuntimeDefault");
    expect(spec.hostNetwork).toBeUndefined();
    expect((spec.volumes ?? []).filter((v) => v.hostPath)).toEqual([]);
    expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(c.securityContext?.capabilities?.add).toBeUndefined();
    expect(c.ports?.find((p) => p.name === "ui")?.containerPort).toBe(4388);
    // HTTPS where the UI serves TLS (production), else HTTP.
    const scheme = secure(overlay) ? { scheme: "HTTPS" } : {};
    for (const probe of [c.livenessProbe, c.readinessProbe]) expect(probe?.httpGet).toEqual({ path: "/healthz", port: "ui", ...scheme });
  });
});

// ---------------------------------------------------------------------------------------
// The args as the kubelet would pass them: $(VAR) expanded from the container's env, with
// spec.nodeName as "node-a" and configMapKeyRef read from the rendered ConfigMap.

const NODE = "node-a";
/** The node's address as the downward API gives it (status.hostIP). */
const NODE_IP = "192.0.2.21";

function expandedArgs(objects: KubeObject[], workload: KubeObject): string[] {
  const c = podSpec(workload).containers[0]!;
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env.set(e.name, e.value);
    else if (e.valueFrom?.fieldRef?.fieldPath === "spec.nodeName") env.set(e.name, NODE);
    else if (e.valueFrom?.fieldRef?.fieldPath === "status.hostIP") env.set(e.name, NODE_IP);
    else if (e.valueFrom?.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const value = (one(objects, "ConfigMap", ref.name).data as Record<string, string> | undefined)?.[ref.key];
      if (value === undefined) throw new Error(`${workload.metadata.name}: env ${e.name}: ConfigMap ${ref.name} has no key ${ref.key}`);
      env.set(e.name, value);
    } else if (e.valueFrom?.secretKeyRef) {
      // As the kubelet would: the key of the Secret the operator created (files in secretsDir).
      const ref = e.valueFrom.secretKeyRef;
      env.set(e.name, readFileSync(path.join(secretsDir, ref.name, ref.key), "utf8"));
    } else throw new Error(`${workload.metadata.name}: env ${e.name} has a source this test does not model`);
  }
  return (c.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => {
    const v = env.get(name);
    if (v === undefined) throw new Error(`${workload.metadata.name}: ${a} names $(${name}), which its env lacks`);
    return v;
  }));
}

// The Secrets deploy/README.md tells the operator to create, as the files a pod would see:
// certificates from the real `bulkhead certs`, and a token file. A Secret volume's mount path
// in the args is rewritten to its folder here, so the parsers read real files (they load
// and check certificates and tokens at startup).
let secretsDir = "";
const CLICKHOUSE_URL = "clickhouse://clickhouse.clickhouse.svc:8123/bulkhead";
beforeAll(() => {
  secretsDir = mkdtempSync(path.join(os.tmpdir(), "bh-deploy-secrets-"));
  const certs = path.join(secretsDir, "certs");
  execFileSync(process.execPath, [path.join(repoRoot, "dist", "cli", "main.js"), "certs", "--out", certs, "--node", NODE,
    "--host", "bulkhead-controlplane.bulkhead.svc"], { stdio: "pipe" });
  for (const secret of ["bulkhead-controlplane-tls", "bulkhead-agent-tls"]) cpSync(certs, path.join(secretsDir, secret), { recursive: true });
  mkdirSync(path.join(secretsDir, "bulkhead-tokens"));
  writeFileSync(path.join(secretsDir, "bulkhead-tokens", "tokens.yaml"),
    "tokens:\n  - name: ops\n    sha256: " + "ab".repeat(32) + "\n    namespaces: [\"*\"]\n");
  mkdirSync(path.join(secretsDir, "bulkhead-clickhouse"));
  writeFileSync(path.join(secretsDir, "bulkhead-clickhouse", "url"), CLICKHOUSE_URL);
  writeFileSync(path.join(secretsDir, "bulkhead-clickhouse", "credentials"), "bulkhead:s3cret\n");
});
afterAll(() => { if (secretsDir) rmSync(secretsDir, { recursive: true, force: true }); });

function mountedArgs(workload: KubeObject, args: string[]): string[] {
  const spec = podSpec(workload);
  const mounts = (spec.containers[0]!.volumeMounts ?? []).flatMap((m) => {
    const secret = (spec.volumes ?? []).find((v) => v.name === m.name)?.secret?.secretName;
    return secret === undefined ? [] : [{ from: m.mountPath.replace(/\/?$/, "/"), to: path.join(secretsDir, secret) + "/" }];
  });
  return args.map((a) => mounts.reduce((arg, m) => arg.replace(`=${m.from}`, `=${m.to}`), a));
}

describe.each(OVERLAYS)("%s: the manifests' args and the real flag parsers", (overlay) => {
  it("the agent's args parse, name the node, reach the control plane's Service and serve the probed port", () => {
    const objects = objectsOf(overlay);
    const agent = one(objects, "DaemonSet", "bulkhead-agent");
    const config = parseAgentArgs(mountedArgs(agent, expandedArgs(objects, agent)));
    expect(config.node).toBe(NODE);
    const svc = one(objects, "Service", "bulkhead-controlplane");
    const grpcPort = (field(svc, "spec.ports") as { name: string; port: number }[]).find((p) => p.name === "grpc")?.port;
    expect(config.controlplane).toEqual([`${svc.metadata.name}.${svc.metadata.namespace}.svc:${grpcPort}`]);
    // On the node's address only: the agent runs in the host network.
    expect(config.metricsAddr).toEqual({ host: NODE_IP, port: 9387 });
    // Production's agent proves its node with the certificate `bulkhead certs` made for it.
    expect(config.tls !== undefined).toBe(secure(overlay));
  });

  it("the control plane's args parse and listen on the ports the Service and probes use", () => {
    const objects = objectsOf(overlay);
    const cp = one(objects, "Deployment", "bulkhead-controlplane");
    const config = parseControlPlaneArgs(mountedArgs(cp, expandedArgs(objects, cp)));
    expect(config.listen).toEqual(["0.0.0.0:4387"]);
    expect(config.uiListen).toBe("0.0.0.0:4388");
    expect(config.defaultMode).toBe("observe");
    expect(config.tls !== undefined).toBe(secure(overlay));
    expect(config.uiTls !== undefined).toBe(secure(overlay));
    expect(config.tokens !== undefined).toBe(secure(overlay));
    expect(config.allowUnauthenticated).toBe(overlay === "dev");
  });
});

describe("the flow store", () => {
  const deployment = (overlay: string) => one(objectsOf(overlay), "Deployment", "bulkhead-controlplane");

  it.each(["production", "dev"])("%s: one replica, Recreate, the embedded store's claim (ReadWriteOnce) at /var/lib/bulkhead", (overlay) => {
    const d = deployment(overlay);
    expect(field(d, "spec.replicas")).toBe(1);
    expect(field(d, "spec.strategy.type")).toBe("Recreate");
    const spec = podSpec(d);
    const mount = spec.containers[0]!.volumeMounts?.find((m) => m.mountPath === "/var/lib/bulkhead");
    const claim = spec.volumes?.find((v) => v.name === mount?.name)?.persistentVolumeClaim?.claimName;
    expect(claim).toBe("bulkhead-controlplane-data");
    expect(mount?.readOnly).toBeUndefined();
    const pvc = one(objectsOf(overlay), "PersistentVolumeClaim", "bulkhead-controlplane-data");
    expect(field(pvc, "spec.accessModes")).toEqual(["ReadWriteOnce"]);
    // The non-root user writes it through the pod's fsGroup.
    expect((spec.securityContext as { fsGroup?: number } | undefined)?.fsGroup).toBe(65532);
    // And the control plane keeps its history there.
    expect(parseControlPlaneArgs(mountedArgs(d, expandedArgs(objectsOf(overlay), d))).store)
      .toEqual({ kind: "duckdb", dataDir: "/var/lib/bulkhead" });
  });

  it("scale-out: 3 stateless replicas rolled one at a time, ClickHouse URL and credentials from the Secret, none in the args", () => {
    const objects = objectsOf("scale-out");
    const d = deployment("scale-out");
    expect(field(d, "spec.replicas")).toBe(3);
    expect(field(d, "spec.strategy")).toEqual({ type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 1 } });
    expect(field(one(objects, "PodDisruptionBudget", "bulkhead-controlplane"), "spec.minAvailable")).toBe(2);
    const spec = podSpec(d);
    expect(spec.volumes?.filter((v) => v.persistentVolumeClaim)).toEqual([]);
    expect(spec.containers[0]!.volumeMounts?.map((m) => m.mountPath)).not.toContain("/var/lib/bulkhead");
    const args = spec.containers[0]!.args ?? [];
    expect(args.filter((a) => a.startsWith("--data-dir"))).toEqual([]);
    expect(args).toEqual(expect.arrayContaining(["--store=$(STORE_URL)", "--store-credentials=/etc/bulkhead/store/credentials"]));
    expect(spec.containers[0]!.env?.find((e) => e.name === "STORE_URL")?.valueFrom?.secretKeyRef).toEqual({ name: "bulkhead-clickhouse", key: "url" });
    const { store } = parseControlPlaneArgs(mountedArgs(d, expandedArgs(objects, d)));
    expect(store).toMatchObject({ kind: "clickhouse",
      location: { location: CLICKHOUSE_URL, httpUrl: "http://clickhouse.clickhouse.svc:8123", database: "bulkhead", username: "bulkhead", password: "s3cret" } });
    const readme = readFileSync(path.join(repoRoot, "deploy", "README.md"), "utf8");
    expect(readme).toContain("kubectl -n bulkhead create secret generic bulkhead-clickhouse");
  });
});

describe("the overlays' auth", () => {
  const argsOf = (overlay: string, kind: string, name: string) => podSpec(one(objectsOf(overlay), kind, name)).containers[0]!.args ?? [];

  it("production: TLS both ways and tokens, from the Secrets the README names; never --allow-unauthenticated", () => {
    const cp = argsOf("production", "Deployment", "bulkhead-controlplane");
    expect(cp).not.toContain("--allow-unauthenticated");
    expect(cp).toEqual(expect.arrayContaining(["--tls-cert=/etc/bulkhead/tls/controlplane.crt", "--tls-key=/etc/bulkhead/tls/controlplane.key",
      "--tls-client-ca=/etc/bulkhead/tls/ca.crt", "--tokens=/etc/bulkhead/tokens/tokens.yaml",
      "--ui-tls-cert=/etc/bulkhead/tls/controlplane.crt", "--ui-tls-key=/etc/bulkhead/tls/controlplane.key"]));
    // Tokens never cross the network in clear: the UI is HTTPS, and its probes speak it.
    const container = podSpec(one(objectsOf("production"), "Deployment", "bulkhead-controlplane")).containers[0]!;
    expect([container.livenessProbe?.httpGet?.scheme, container.readinessProbe?.httpGet?.scheme]).toEqual(["HTTPS", "HTTPS"]);
    expect(argsOf("production", "DaemonSet", "bulkhead-agent")).toEqual(expect.arrayContaining(["--tls-cert=/etc/bulkhead/tls/node-$(NODE_NAME).crt",
      "--tls-key=/etc/bulkhead/tls/node-$(NODE_NAME).key", "--tls-ca=/etc/bulkhead/tls/ca.crt"]));
    const secrets = (o: KubeObject) => (podSpec(o).volumes ?? []).flatMap((v) => (v.secret ? [v.secret.secretName] : [])).sort();
    const objects = objectsOf("production");
    expect(secrets(one(objects, "Deployment", "bulkhead-controlplane"))).toEqual(["bulkhead-controlplane-tls", "bulkhead-tokens"]);
    expect(secrets(one(objects, "DaemonSet", "bulkhead-agent"))).toEqual(["bulkhead-agent-tls"]);
    const readme = readFileSync(path.join(repoRoot, "deploy", "README.md"), "utf8");
    for (const s of ["bulkhead-controlplane-tls", "bulkhead-tokens", "bulkhead-agent-tls"]) expect(readme).toContain(`kubectl -n bulkhead create secret generic ${s}`);
  });

  it("dev: no TLS, --allow-unauthenticated, debug logs", () => {
    const cp = argsOf("dev", "Deployment", "bulkhead-controlplane");
    expect(cp).toContain("--allow-unauthenticated");
    expect([...cp, ...argsOf("dev", "DaemonSet", "bulkhead-agent")].filter((a) => a.startsWith("--tls"))).toEqual([]);
    const cm = objectsOf("dev").find((o) => o.kind === "ConfigMap");
    expect(cm?.data).toMatchObject({ "agent-log-level": "debug", "controlplane-log-level": "debug" });
  });
});

// ---------------------------------------------------------------------------------------
// The Dockerfile, read line by line (no Dockerfile linter can be installed here).

interface Stage { name: string; from: string; lines: string[] }

function dockerfileStages(text: string): Stage[] {
  const logical = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of logical) {
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) stages.push({ from: from[1]!, name: from[2] ?? String(stages.length), lines: [] });
    else if (stages.length) stages[stages.length - 1]!.lines.push(line);
    else if (!/^ARG\s/i.test(line)) throw new Error(`Dockerfile: "${line}" before the first FROM`);
  }
  return stages;
}

describe("deploy/images/Dockerfile", () => {
  const stages = dockerfileStages(readFileSync(dockerfile, "utf8"));
  const stage = (name: string) => {
    const s = stages.find((x) => x.name === name);
    if (!s) throw new Error(`no stage ${name}`);
    return s;
  };

  it("has a build stage and two runtime targets, each on an exact Debian 12 node image", () => {
    expect(stages.map((s) => s.name)).toEqual(["build", "agent", "controlplane"]);
    expect(stage("build").from).toMatch(/^node:\d+\.\d+\.\d+-bookworm(@sha256:[0-9a-f]{64})?$/);
    for (const s of ["agent", "controlplane"]) expect(stage(s).from).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim(@sha256:[0-9a-f]{64})?$/);
    const nodeVersion = (s: Stage) => /^node:(\d+\.\d+\.\d+)/.exec(s.from)?.[1];
    expect(new Set(stages.map(nodeVersion)).size).toBe(1);
    expect(nodeVersion(stage("build"))?.split(".")[0]).toBe(process.versions.node.split(".")[0]);
  });

  it("builds with scripts/build, as ./scripts/setup does, on a context without .gitignore's files; copies only from the build stage", () => {
    const build = stage("build");
    expect(build.lines.filter((l) => /^COPY\s/.test(l))).toEqual(["COPY . ."]);
    expect(build.lines.filter((l) => /^RUN\s/.test(l) && !l.includes("apt-get"))).toEqual(["RUN scripts/build", "RUN deploy/images/assemble.sh /out"]);
    const setupCommands = readFileSync(path.join(repoRoot, "scripts", "setup"), "utf8").split("\n").map((l) => l.trim());
    expect(setupCommands).toContain("./scripts/build");
    // The context then holds what a fresh clone holds (and untracked files of a working tree).
    const entries = (file: string) => readFileSync(path.join(repoRoot, file), "utf8").split("\n")
      .map((l) => l.trim().replace(/\/$/, "")).filter((l) => l && !l.startsWith("#"));
    const ignored = new Set(entries(".dockerignore"));
    expect(entries(".gitignore").filter((e) => !ignored.has(e))).toEqual([]);
    for (const s of ["agent", "controlplane"]) {
      for (const l of stage(s).lines.filter((x) => /^COPY\s/.test(x))) expect(l, s).toMatch(/^COPY --from=build \/out/);
    }
  });

  it("runs the control plane as a numeric non-root user, the agent as root, each its own subcommand", () => {
    const last = (s: Stage, instr: string) => s.lines.filter((l) => l.startsWith(instr + " ")).at(-1);
    expect(last(stage("controlplane"), "USER")).toMatch(/^USER [1-9][0-9]*:[1-9][0-9]*$/);
    expect(last(stage("agent"), "USER")).toBe("USER 0:0");
    expect(last(stage("agent"), "ENTRYPOINT")).toBe('ENTRYPOINT ["node", "/opt/bulkhead/dist/cli/main.js", "agent"]');
    expect(last(stage("controlplane"), "ENTRYPOINT")).toBe('ENTRYPOINT ["node", "/opt/bulkhead/dist/cli/main.js", "controlplane"]');
  });

  it("the agent stage installs every Debian package the built addon links beyond what node's slim image has", () => {
    const addon = path.join(repoRoot, "native", "addon", "build", "Release", "bulkhead.node");
    const libs = [...execFileSync("ldd", [addon], { encoding: "utf8" }).matchAll(/=>\s+(\/\S+)/g)].map((m) => m[1]!);
    // dpkg knows a merged-/usr library by the path its package ships it under.
    const owner = (lib: string) => {
      for (const p of [lib, lib.replace(/^\/lib/, "/usr/lib")]) {
        try { return execFileSync("dpkg", ["-S", p], { encoding: "utf8", stdio: "pipe" }).split(":")[0]!; } catch { /* next */ }
      }
      throw new Error(`no Debian package owns ${lib}`);
    };
    const packages = new Set(libs.map(owner));
    // What node:*-bookworm-slim carries: the C and C++ runtimes and zlib (Debian's
    // essential set plus node's own needs).
    const inSlim = new Set(["libc6", "libstdc++6", "libgcc-s1", "zlib1g"]);
    const installed = stage("agent").lines.filter((l) => l.startsWith("RUN ")).join(" ");
    const missing = [...packages].filter((p) => !inSlim.has(p) && !new RegExp(`\\s${p}(\\s|$)`).test(installed));
    expect(packages.has("libbpf1"), `ldd: ${libs.join(" ")}`).toBe(true);
    expect(missing).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// The image's runtime tree, assembled by deploy/images/assemble.sh (npm from its cache) from
// the tree ./scripts/setup built with scripts/build, as the Dockerfile's build stage does.
// Then it runs: the CLI, the control plane from exactly what its image stage copies, and
// the agent on the real kernel with exactly the DaemonSet's capabilities.

describe("deploy/images/assemble.sh and the runtime tree", () => {
  const work = mkdtempSync(path.join(os.tmpdir(), "bhdep-test-"));
  const out = path.join(work, "out");
  const netnsNode = `bhdep-${process.pid}-node`;
  const netnsPod = `bhdep-${process.pid}-pod`;
  const bpfDir = (name: string) => `/sys/fs/bpf/bhdep-${process.pid}-${name}`;
  const spawned: Spawned[] = [];

  beforeAll(() => {
    execFileSync(path.join(repoRoot, "deploy", "images", "assemble.sh"), [out, "--offline"], { cwd: work, stdio: ["ignore", "pipe", "pipe"] });
  }, 300_000);

  afterAll(async () => {
    for (const p of spawned) if (p.running) await p.stop().catch(() => undefined);
    for (const ns of [netnsNode, netnsPod]) {
      try { execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" }); } catch { /* not created */ }
    }
    rmSync(work, { recursive: true, force: true });
  });

  it("holds the CLI, the eBPF object, the addon and production dependencies only", () => {
    for (const f of ["dist/cli/main.js", "dist/ui/index.html", "native/build/endpoint.bpf.o", "native/addon/build/Release/bulkhead.node", "proto/bulkhead/v1/agent.proto",
      "node_modules/@grpc/grpc-js/package.json", "node_modules/pino/package.json"]) {
      expect(existsSync(path.join(out, f)), f).toBe(true);
    }
    for (const dev of ["typescript", "vitest", "ts-proto", "node-gyp", "@bufbuild/buf", "kubernetes-models", "vite", "cytoscape", "playwright-core"]) {
      expect(existsSync(path.join(out, "node_modules", dev)), dev).toBe(false);
    }
    expect(existsSync(path.join(out, "dist", "test"))).toBe(false);
    const help = execFileSync(process.execPath, [path.join(out, "dist", "cli", "main.js"), "--help"], { cwd: os.tmpdir(), encoding: "utf8" });
    expect(help).toMatch(/^usage: bulkhead <command>/);
    expect(help).toMatch(/agent\s+run the node agent/);
  });

  it("the control plane starts from what its image stage copies (no addon, no eBPF object)", async () => {
    const cpRoot = path.join(work, "controlplane-image");
    const copies = dockerfileStages(readFileSync(dockerfile, "utf8")).find((s) => s.name === "controlplane")!.lines
      .filter((l) => l.startsWith("COPY --from=build "));
    for (const l of copies) {
      const parts = l.replace("COPY --from=build ", "").split(/\s+/);
      const dest = parts.pop()!.replace("/opt/bulkhead", cpRoot);
      for (const from of parts) cpSync(from.replace(/^\/out/, out), dest.endsWith("/") ? path.join(dest, path.basename(from)) : dest, { recursive: true });
    }
    expect(existsSync(path.join(cpRoot, "native"))).toBe(false);
    expect(existsSync(path.join(cpRoot, "dist", "ui", "index.html")), "the web UI in the control-plane image").toBe(true);
    const manifests = path.join(work, "manifests");
    mkdirSync(manifests);
    const sock = path.join(work, "cp.sock");
    const proc = new Spawned(spawn(process.execPath, [path.join(cpRoot, "dist", "cli", "main.js"), "controlplane", "--manifests", manifests,
      "--listen", `unix://${sock}`, "--allow-unauthenticated"], { cwd: os.tmpdir(), stdio: ["ignore", "pipe", "pipe"] }), "control plane from the image tree");
    spawned.push(proc);
    await poll(async () => existsSync(sock), (v) => v || !proc.running, 30_000, "the control plane's socket");
    expect(proc.running, proc.output()).toBe(true);
    expect(await proc.stop()).toBe(0);
  });

  describe("the agent with exactly the DaemonSet's capabilities, on the real kernel", () => {
    // This file runs beside the kernel project (vitest.config.ts, kernel-own): while its
    // agents' programs and links exist, no file there may be counting the machine's.
    let releaseCensus: (() => Promise<void>) | undefined;
    afterAll(async () => {
      for (const p of spawned) if (p.running) await p.stop().catch(() => undefined);
      await releaseCensus?.();
    });

    beforeAll(async () => {
      releaseCensus = await holdCensusLock();
      const ip = (...a: string[]) => execFileSync("ip", a, { stdio: "pipe" });
      ip("netns", "add", netnsNode);
      ip("netns", "add", netnsPod);
      ip("-n", netnsNode, "link", "add", "bhdep0", "type", "veth", "peer", "name", "eth0", "netns", netnsPod);
      ip("-n", netnsNode, "addr", "add", "10.198.0.1/30", "dev", "bhdep0");
      ip("-n", netnsPod, "addr", "add", "10.198.0.2/30", "dev", "eth0");
      ip("-n", netnsNode, "link", "set", "bhdep0", "up");
      ip("-n", netnsPod, "link", "set", "eth0", "up");
    });

    /** Runs the runtime tree's agent as uid 0 holding only `caps` (as a container with
     * drop ALL + add would), sends pings from the pod, and returns its log and records. */
    async function runAgent(caps: string[], name: string, extraArgs: string[] = []): Promise<{ log: string; records: string }> {
      const set = ["-all", ...caps.map((c) => `+${c.toLowerCase()}`)].join(",");
      const exportFile = path.join(work, `${name}.jsonl`);
      writeFileSync(exportFile, "");
      // nsenter, not `ip netns exec`, which remounts /sys without /sys/fs/bpf (the pins).
      const proc = new Spawned(spawn("nsenter", [`--net=/run/netns/${netnsNode}`, "--", "setpriv", "--bounding-set", set, "--inh-caps", set,
        process.execPath, path.join(out, "dist", "cli", "main.js"), "agent", "--node", NODE, "--metrics-addr", "off",
        "--drain-interval", "200", "--export-file", exportFile, "--bpf-dir", bpfDir(name), ...extraArgs],
        { cwd: os.tmpdir(), stdio: ["ignore", "pipe", "pipe"] }), `agent (${name})`);
      spawned.push(proc);
      try {
        await proc.waitForLine((l) => l.includes('"agent started"') || l.includes('"agent failed to start"'), 30_000);
        execFileSync("ip", ["netns", "exec", netnsPod, "ping", "-c", "3", "-i", "0.2", "-W", "1", "10.198.0.1"], { stdio: "ignore" });
        await poll(async () => readFileSync(exportFile, "utf8") + proc.lines.join("\n"),
          (t) => t.includes("10.198.0.2") || t.includes('"drain failed"') || t.includes('"attach failed"') || !proc.running, 20_000,
          `a record, or a drain or attach failure (${name})`);
      } finally {
        if (proc.running) await proc.stop();
        // A stopped agent leaves its pinned datapath: removed here, as --uninstall would.
        rmSync(bpfDir(name), { recursive: true, force: true });
      }
      return { log: proc.lines.join("\n") + proc.stderr, records: readFileSync(exportFile, "utf8") };
    }

    it("attaches, drains and exports the pod's flow", async () => {
      const caps = podSpec(one(objectsOf("production"), "DaemonSet", "bulkhead-agent")).containers[0]!.securityContext?.capabilities?.add ?? [];
      expect(caps).toEqual(AGENT_CAPABILITIES);
      const { log, records } = await runAgent(caps, "manifest-caps");
      expect(log).toContain('"attached"');
      expect(log).not.toContain('"drain failed"');
      expect(records).toContain('"10.198.0.2"');
    });

    it("without PERFMON the verifier refuses its programs, so PERFMON is needed", async () => {
      const { log, records } = await runAgent(AGENT_CAPABILITIES.filter((c) => c !== "PERFMON"), "no-perfmon");
      expect(log).not.toContain('"attached"');
      expect(log).toMatch(/load .*endpoint\.bpf\.o: Permission denied \(errno 13\).*"agent failed to start"/);
      expect(records).not.toContain("10.198.0.2");
    });

    // The clsact fallback (kernels before 6.6) creates a qdisc over rtnetlink.
    it("attaches with clsact too (kernels before 6.6)", async () => {
      const withIt = await runAgent(AGENT_CAPABILITIES, "clsact", ["--attach-mode", "clsact"]);
      expect(withIt.log).toMatch(/"mode":"clsact","msg":"attached"/);
      expect(withIt.records).toContain('"10.198.0.2"');
    });

    // Without SYS_ADMIN, the kernel wants NET_ADMIN to load tc (sched_cls) programs at all.
    it("without NET_ADMIN its tc programs are refused at load, so NET_ADMIN is needed", async () => {
      const without = await runAgent(AGENT_CAPABILITIES.filter((c) => c !== "NET_ADMIN"), "no-net-admin");
      expect(without.log).toMatch(/load .*endpoint\.bpf\.o: Operation not permitted \(errno 1\).*"agent failed to start"/);
      expect(without.records).not.toContain("10.198.0.2");
    });
  });
});
