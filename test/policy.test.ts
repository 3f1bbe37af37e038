// NetworkPolicy semantics, one rule per test: what the model allows, and that the compiled
// snapshot judged as the kernel will (snapshotAllows) says the same for every query here.
// Also: label selector objects, invalid policies, modes, identities, attribution.
import { describe, expect, it } from "vitest";
import { parseKubeObject, type Namespace, type NetworkPolicy, type NetworkPolicyPeer, type NetworkPolicyPort, type Node, type Pod, type Protocol, type Service } from "../controlplane/metadata/objects.js";
import { PolicyCompiler } from "../controlplane/policy/compile.js";
import { FIRST_IDENTITY, IDENTITY_HOST, IDENTITY_SERVICE, IDENTITY_WORLD } from "../controlplane/policy/identities.js";
import { snapshotAllows, snapshotIdentityOf } from "../controlplane/policy/kernel-view.js";
import { PolicyModel, PolicySet, type NormalizedPolicy, type Peer, type PolicyCluster, type PolicyModelOptions, type Verdict } from "../controlplane/policy/model.js";
import { compileLabelSelector, labelSelectorProblems } from "../controlplane/policy/selector.js";
import { normalizeCnp, type ClusterNetworkPolicy } from "../controlplane/policy/cnp.js";
import { compilePolicy } from "../agent/policy.js";
import { BH_POLICY_DENY, bh_policy_value } from "../native/gen/abi.js";
import { PolicyDirection, PolicyMode } from "../proto/gen/bulkhead/v1/policy.js";

// ---- a small cluster --------------------------------------------------------------------

function parsed<T>(doc: Record<string, unknown>): T {
  const object = parseKubeObject(doc);
  if (!object) throw new Error(`not kept: ${JSON.stringify(doc)}`);
  return object as T;
}

function namespace(name: string, labels: Record<string, string> = {}, annotations: Record<string, string> = {}): Namespace {
  return parsed({ apiVersion: "v1", kind: "Namespace", metadata: { name, labels, annotations } });
}

interface PodSpec {
  ips: string[];
  labels?: Record<string, string>;
  ports?: { name: string; containerPort: number; protocol?: Protocol }[];
  node?: string;
  hostNetwork?: boolean;
}

function pod(key: string, spec: PodSpec): Pod {
  const [ns, name] = key.split("/");
  return parsed({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns, labels: spec.labels ?? {} },
    spec: { nodeName: spec.node ?? "node-1", hostNetwork: spec.hostNetwork ?? false, containers: [{ name: "c", ports: spec.ports ?? [] }] },
    status: { phase: "Running", podIP: spec.ips[0], podIPs: spec.ips.map((ip) => ({ ip })) },
  });
}

function node(name: string, ip: string): Node {
  return parsed({ apiVersion: "v1", kind: "Node", metadata: { name }, status: { addresses: [{ type: "InternalIP", address: ip }] } });
}

/** A policy through the same parser manifests go through (validated, defaulted). */
function np(key: string, spec: Record<string, unknown>): NetworkPolicy {
  const [ns, name] = key.split("/");
  return parsed({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace: ns }, spec: { podSelector: {}, ...spec } });
}

/** A policy object built in code, bypassing the parser: how an invalid one can reach the engine. */
function rawPolicy(key: string, spec: Record<string, unknown>): NetworkPolicy {
  const [ns, name] = key.split("/");
  return {
    kind: "NetworkPolicy",
    apiVersion: "networking.k8s.io/v1",
    metadata: { name: name ?? "", namespace: ns ?? "", uid: "", labels: {}, annotations: {}, ownerReferences: [] },
    spec: { podSelector: { matchLabels: {}, matchExpressions: [] }, policyTypes: [], ingress: [], egress: [], ...spec },
  } as unknown as NetworkPolicy;
}

const HTTP_PORTS = [
  { name: "serve-80-tcp", containerPort: 80 },
  { name: "serve-81-tcp", containerPort: 81 },
  { name: "serve-80-udp", containerPort: 80, protocol: "UDP" as const },
  { name: "serve-80-sctp", containerPort: 80, protocol: "SCTP" as const },
];

const IP: Record<string, string> = {
  "x/a": "10.244.1.10", "x/b": "10.244.2.11", "x/c": "10.244.1.12",
  "y/a": "10.244.2.13", "y/b": "10.244.1.14", "y/c": "10.244.2.15",
  "z/a": "10.244.1.16", "z/b": "10.244.2.17", "z/c": "10.244.1.18",
};
const NODE1 = "172.18.0.2";
const NODE2 = "172.18.0.3";
const WORLD = "8.8.8.8";

function base(policies: NetworkPolicy[] = [], change: (c: { namespaces: Namespace[]; pods: Pod[] }) => void = () => {}): PolicyCluster {
  const namespaces = ["x", "y", "z"].map((n) => namespace(n, { ns: n }));
  const pods = Object.keys(IP).map((key) => pod(key, { ips: [IP[key] ?? ""], labels: { pod: key.slice(2) }, ports: HTTP_PORTS, node: key.endsWith("b") ? "node-2" : "node-1" }));
  const c = { namespaces, pods };
  change(c);
  return { namespaces: c.namespaces, pods: c.pods, nodes: [node("node-1", NODE1), node("node-2", NODE2)], policies };
}

function ipOf(cluster: PolicyCluster, peer: Peer): string {
  if ("pod" in peer) {
    if (peer.ip !== undefined) return peer.ip;
    const p = cluster.pods.find((q) => `${q.metadata.namespace}/${q.metadata.name}` === peer.pod);
    return p?.status.podIPs[0] ?? "";
  }
  return peer.ip;
}

const asPeer = (p: string | Peer): Peer => (typeof p === "string" ? (p.includes("/") ? { pod: p } : { ip: p }) : p);

/** The model's verdict, after checking that the compiled snapshot agrees with it. */
function judge(cluster: PolicyCluster, src: string | Peer, dst: string | Peer, protocol: Protocol | number = "TCP", port = 80, options: PolicyModelOptions = {}): Verdict {
  const s = asPeer(src);
  const d = asPeer(dst);
  const verdict = new PolicyModel(cluster, { defaultMode: "enforce", ...options }).evaluate({ src: s, dst: d, protocol, port });
  const snapshot = new PolicyCompiler({ defaultMode: "enforce", hostExempt: options.hostExempt ?? true }).compile(cluster);
  expect(snapshotAllows(snapshot, ipOf(cluster, s), ipOf(cluster, d), protocol, port), `snapshot vs model for ${JSON.stringify([s, d, protocol, port])}`).toBe(verdict.allowed);
  return verdict;
}

const allowed = (...args: Parameters<typeof judge>) => judge(...args).allowed;

// ---- label selectors ------------------------------------------------------------------------

describe("label selector objects", () => {
  const sel = (s: Record<string, unknown>) => compileLabelSelector({ matchLabels: {}, matchExpressions: [], ...s } as never);

  it("the empty selector matches everything, including no labels", () => {
    expect(sel({}).matches({})).toBe(true);
    expect(sel({}).matchesEverything).toBe(true);
  });

  it("matchLabels needs every pair", () => {
    const s = sel({ matchLabels: { a: "1", b: "2" } });
    expect(s.matches({ a: "1", b: "2", c: "3" })).toBe(true);
    expect(s.matches({ a: "1" })).toBe(false);
    expect(s.matches({ a: "1", b: "3" })).toBe(false);
  });

  it("In needs the key with one of the values; NotIn matches a missing key", () => {
    const inSel = sel({ matchExpressions: [{ key: "env", operator: "In", values: ["a", "b"] }] });
    expect(inSel.matches({ env: "b" })).toBe(true);
    expect(inSel.matches({ env: "c" })).toBe(false);
    expect(inSel.matches({})).toBe(false);
    const notIn = sel({ matchExpressions: [{ key: "env", operator: "NotIn", values: ["a"] }] });
    expect(notIn.matches({})).toBe(true);
    expect(notIn.matches({ env: "b" })).toBe(true);
    expect(notIn.matches({ env: "a" })).toBe(false);
  });

  it("Exists and DoesNotExist look at the key only; DoesNotExist matches a missing key", () => {
    const exists = sel({ matchExpressions: [{ key: "team", operator: "Exists", values: [] }] });
    expect(exists.matches({ team: "" })).toBe(true);
    expect(exists.matches({})).toBe(false);
    const absent = sel({ matchExpressions: [{ key: "team", operator: "DoesNotExist", values: [] }] });
    expect(absent.matches({})).toBe(true);
    expect(absent.matches({ team: "x" })).toBe(false);
  });

  it("keys inherited from Object.prototype are not labels", () => {
    expect(sel({ matchExpressions: [{ key: "constructor", operator: "Exists", values: [] }] }).matches({})).toBe(false);
    expect(sel({ matchExpressions: [{ key: "toString", operator: "DoesNotExist", values: [] }] }).matches({})).toBe(true);
  });

  it("equal selectors written differently have the same key", () => {
    expect(sel({ matchLabels: { a: "1" } }).key).toBe(sel({ matchExpressions: [{ key: "a", operator: "In", values: ["1"] }] }).key);
  });

  it("names every invalid field", () => {
    const problems = labelSelectorProblems({
      matchLabels: { "bad key!": "v", ok: "bad value!" },
      matchExpressions: [
        { key: "a", operator: "Equals", values: ["x"] },
        { key: "b", operator: "In", values: [] },
        { key: "c", operator: "Exists", values: ["x"] },
      ],
    } as never, "spec.podSelector");
    expect(problems.map((p) => p.field)).toEqual([
      'spec.podSelector.matchLabels["bad key!"]', // a key that is not an identifier is quoted
      "spec.podSelector.matchLabels.ok",
      "spec.podSelector.matchExpressions[0].operator",
      "spec.podSelector.matchExpressions[1].values",
      "spec.podSelector.matchExpressions[2].values",
    ]);
  });
});

// ---- isolation and policyTypes -----------------------------------------------------------------

describe("isolation", () => {
  it("with no policy everything is allowed and nothing is isolated", () => {
    const v = judge(base(), "x/a", "y/b");
    expect(v.allowed).toBe(true);
    expect(v.egress.isolated).toBe(false);
    expect(v.ingress.isolated).toBe(false);
  });

  it("podSelector {} selects every pod of the policy's namespace and no other", () => {
    const c = base([np("x/deny", { policyTypes: ["Ingress"], ingress: [] })]);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
    expect(allowed(c, "y/a", "x/c")).toBe(false);
    expect(allowed(c, "x/a", "y/b")).toBe(true);
  });

  it("podSelector with labels selects only matching pods", () => {
    const c = base([np("x/deny-a", { podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Ingress"] })]);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
    expect(allowed(c, "y/a", "x/b")).toBe(true);
  });

  it("an empty ingress list with the Ingress type denies all ingress; egress stays open", () => {
    const c = base([np("x/deny", { policyTypes: ["Ingress"], ingress: [] })]);
    const v = judge(c, "x/b", "x/a");
    expect(v.allowed).toBe(false);
    expect(v.ingress).toMatchObject({ isolated: true, allowed: false, isolatedBy: ["x/deny"], allowedBy: [] });
    expect(v.egress.isolated).toBe(false);
    expect(allowed(c, "x/a", WORLD)).toBe(true);
  });

  it("a rule {} (no from, no ports) allows everything, from the world too", () => {
    const c = base([np("x/all", { policyTypes: ["Ingress"], ingress: [{}] })]);
    expect(allowed(c, "y/a", "x/a", "UDP", 5353)).toBe(true);
    expect(allowed(c, WORLD, "x/a", "SCTP", 9)).toBe(true);
  });

  it("policyTypes defaults to Ingress when the policy has no egress rules", () => {
    const c = base([np("x/default", { podSelector: { matchLabels: { pod: "a" } } })]);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
    expect(allowed(c, "x/a", "y/a")).toBe(true);
  });

  it("policyTypes defaults to Ingress and Egress when egress rules exist", () => {
    const c = base([np("x/both", { podSelector: { matchLabels: { pod: "a" } }, egress: [{ to: [{ podSelector: { matchLabels: { pod: "b" } } }] }] })]);
    expect(allowed(c, "x/a", "x/b")).toBe(true);
    expect(allowed(c, "x/a", "y/b")).toBe(false);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
  });

  it("the defaulting also applies to policies built in code with an empty policyTypes", () => {
    const c = base([rawPolicy("x/raw", { podSelector: { matchLabels: { pod: "a" }, matchExpressions: [] }, egress: [{ to: [], ports: [] }] })]);
    const v = judge(c, "y/a", "x/a");
    expect(v.ingress.isolated).toBe(true);
    expect(judge(c, "x/a", "y/a").egress).toMatchObject({ isolated: true, allowed: true });
  });

  it("policyTypes [Egress] alone leaves ingress open even if ingress rules are written", () => {
    const c = base([np("x/eg", { policyTypes: ["Egress"], ingress: [{ from: [{ podSelector: { matchLabels: { pod: "zzz" } } }] }], egress: [] })]);
    expect(allowed(c, "y/a", "x/a")).toBe(true);
    expect(allowed(c, "x/a", "y/a")).toBe(false);
  });

  it("names each rule that allows, by policy, direction and index", () => {
    const c = base([np("x/two", { podSelector: { matchLabels: { pod: "a" } }, ingress: [
      { from: [{ podSelector: { matchLabels: { pod: "c" } } }] },
      { from: [{ podSelector: { matchLabels: { pod: "b" } } }] },
      { from: [{ podSelector: {} }], ports: [{ port: 80 }] },
    ] })]);
    expect(judge(c, "x/b", "x/a").ingress.allowingRules).toEqual(["x/two ingress[1]", "x/two ingress[2]"]);
    expect(judge(c, "y/b", "x/a").ingress.allowingRules).toEqual([]);
  });

  it("policies are a union: each selecting policy can allow, all are named", () => {
    const c = base([
      np("x/from-b", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: "b" } } }] }] }),
      np("x/from-c", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: "c" } } }] }] }),
    ]);
    const v = judge(c, "x/b", "x/a");
    expect(v.allowed).toBe(true);
    expect(v.ingress.allowedBy).toEqual(["x/from-b"]);
    expect(v.ingress.isolatedBy).toEqual(["x/from-b", "x/from-c"]);
    expect(v.ingress.allowingRules).toEqual(["x/from-b ingress[0]"]);
    expect(allowed(c, "x/c", "x/a")).toBe(true);
    expect(allowed(c, "y/b", "x/a")).toBe(false);
  });

  it("a connection needs the source's egress AND the destination's ingress", () => {
    const c = base([
      np("x/a-egress-to-y", { podSelector: { matchLabels: { pod: "a" } }, policyTypes: ["Egress"], egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: "y" } } }] }] }),
      np("y/b-ingress-none", { podSelector: { matchLabels: { pod: "b" } }, policyTypes: ["Ingress"] }),
    ]);
    const toYa = judge(c, "x/a", "y/a");
    expect(toYa.allowed).toBe(true);
    const toYb = judge(c, "x/a", "y/b");
    expect(toYb.egress.allowed).toBe(true);
    expect(toYb.ingress.allowed).toBe(false);
    expect(toYb.allowed).toBe(false);
    const toZa = judge(c, "x/a", "z/a");
    expect(toZa.egress.allowed).toBe(false);
    expect(toZa.ingress.isolated).toBe(false);
    expect(toZa.allowed).toBe(false);
  });

  it("a pod can always reach itself", () => {
    const c = base([np("x/deny-all", { policyTypes: ["Ingress", "Egress"] })]);
    const v = judge(c, "x/a", "x/a");
    expect(v.allowed).toBe(true);
    expect(v.ingress.exemption).toBe("self");
  });
});

// ---- peers -----------------------------------------------------------------------------------

describe("peers", () => {
  it("podSelector alone means pods of the policy's namespace", () => {
    const c = base([np("x/from-b", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: "b" } } }] }] })]);
    expect(allowed(c, "x/b", "x/a")).toBe(true);
    expect(allowed(c, "y/b", "x/a")).toBe(false);
  });

  it("podSelector {} alone means every pod of the policy's namespace only", () => {
    const c = base([np("x/same-ns", { ingress: [{ from: [{ podSelector: {} }] }] })]);
    expect(allowed(c, "x/b", "x/a")).toBe(true);
    expect(allowed(c, "y/b", "x/a")).toBe(false);
    expect(allowed(c, WORLD, "x/a")).toBe(false);
  });

  it("namespaceSelector alone means every pod of matching namespaces (not the world)", () => {
    const c = base([np("x/from-y", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }] }] })]);
    expect(allowed(c, "y/a", "x/a")).toBe(true);
    expect(allowed(c, "y/c", "x/b")).toBe(true);
    expect(allowed(c, "z/a", "x/a")).toBe(false);
    expect(allowed(c, "x/b", "x/a")).toBe(false);
    expect(allowed(c, WORLD, "x/a")).toBe(false);
  });

  it("namespaceSelector {} means every pod in every namespace", () => {
    const c = base([np("x/from-pods", { ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
    expect(allowed(c, "z/c", "x/a")).toBe(true);
    expect(allowed(c, WORLD, "x/a")).toBe(false);
  });

  it("both selectors in one peer must both match (AND)", () => {
    const c = base([np("x/yb", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } }, podSelector: { matchLabels: { pod: "b" } } }] }] })]);
    expect(allowed(c, "y/b", "x/a")).toBe(true);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
    expect(allowed(c, "x/b", "x/a")).toBe(false);
  });

  it("two peers in one rule are alternatives (OR)", () => {
    const c = base([np("x/y-or-b", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }, { podSelector: { matchLabels: { pod: "b" } } }] }] })]);
    expect(allowed(c, "y/a", "x/a")).toBe(true);
    expect(allowed(c, "x/b", "x/a")).toBe(true);
    expect(allowed(c, "x/c", "x/a")).toBe(false);
    expect(allowed(c, "z/b", "x/a")).toBe(false);
  });

  it("namespaces always carry kubernetes.io/metadata.name, even when their object lacks it", () => {
    const c = base([np("x/from-z", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "z" } } }] }] })]);
    expect(c.namespaces.find((n) => n.metadata.name === "z")?.metadata.labels["kubernetes.io/metadata.name"]).toBeUndefined();
    expect(allowed(c, "z/a", "x/a")).toBe(true);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
  });

  it("selector peers follow label changes of pods and namespaces", () => {
    const policy = np("x/from-team", { ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: "team", operator: "Exists" }] }, podSelector: { matchLabels: { role: "client" } } }] }] });
    expect(allowed(base([policy]), "z/a", "x/a")).toBe(false);
    const labelled = base([policy], (c) => {
      c.namespaces = c.namespaces.map((n) => (n.metadata.name === "z" ? namespace("z", { ns: "z", team: "blue" }) : n));
      c.pods = c.pods.map((p) => (p.metadata.namespace === "z" && p.metadata.name === "a" ? pod("z/a", { ips: [IP["z/a"] ?? ""], labels: { pod: "a", role: "client" } }) : p));
    });
    expect(allowed(labelled, "z/a", "x/a")).toBe(true);
    expect(allowed(labelled, "z/b", "x/a")).toBe(false);
  });

  it("ipBlock matches pod addresses (after DNAT) and outside addresses, minus except", () => {
    const c = base([np("x/cidr", {
      podSelector: { matchLabels: { pod: "a" } },
      policyTypes: ["Egress"],
      egress: [{ to: [{ ipBlock: { cidr: "10.244.0.0/16", except: ["10.244.2.0/24"] } }, { ipBlock: { cidr: "8.8.0.0/16" } }] }],
    })]);
    expect(allowed(c, "x/a", "y/b")).toBe(true); // 10.244.1.14
    expect(allowed(c, "x/a", "y/a")).toBe(false); // 10.244.2.13: in except
    expect(allowed(c, "x/a", WORLD)).toBe(true);
    expect(allowed(c, "x/a", "9.9.9.9")).toBe(false);
    expect(allowed(c, "x/a", "10.244.7.7")).toBe(true);
    expect(allowed(c, "x/a", "10.244.2.99")).toBe(false);
  });

  it("ipBlock on ingress judges the source address; a /32 of one pod admits that pod only", () => {
    const c = base([np("x/from-yb", { ingress: [{ from: [{ ipBlock: { cidr: `${IP["y/b"]}/32` } }] }] })]);
    expect(allowed(c, "y/b", "x/a")).toBe(true);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
  });

  it("an ipBlock cidr with host bits set means its network", () => {
    const c = base([rawPolicy("x/hostbits", { policyTypes: ["Ingress"], ingress: [{ from: [{ ipBlock: { cidr: "10.244.1.77/24", except: [] } }], ports: [] }] })]);
    expect(allowed(c, "y/b", "x/a")).toBe(true);
    expect(allowed(c, "y/a", "x/a")).toBe(false);
  });

  it("an empty from admits outside addresses; a selector-only from does not", () => {
    const open = base([np("x/open", { ingress: [{ ports: [{ port: 80 }] }] })]);
    expect(allowed(open, WORLD, "x/a")).toBe(true);
    const pods = base([np("x/pods", { ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
    expect(allowed(pods, WORLD, "x/a")).toBe(false);
  });

  it("IPv4 ipBlocks do not match IPv6 addresses of a dual-stack pod", () => {
    const c = base([np("x/v4-only", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8" } }] }] })], (cl) => {
      cl.pods = cl.pods.map((p) => (p.metadata.name === "b" && p.metadata.namespace === "y" ? pod("y/b", { ips: [IP["y/b"] ?? "", "fd00::14"], labels: { pod: "b" } }) : p));
    });
    expect(allowed(c, { pod: "y/b" }, "x/a")).toBe(true);
    expect(allowed(c, { pod: "y/b", ip: "fd00::14" }, "x/a")).toBe(false);
    const v6 = base([np("x/v6", { ingress: [{ from: [{ ipBlock: { cidr: "fd00::/64" } }] }] })], (cl) => {
      cl.pods = cl.pods.map((p) => (p.metadata.name === "b" && p.metadata.namespace === "y" ? pod("y/b", { ips: [IP["y/b"] ?? "", "fd00::14"], labels: { pod: "b" } }) : p));
    });
    expect(allowed(v6, { pod: "y/b", ip: "fd00::14" }, "x/a")).toBe(true);
    expect(allowed(v6, { pod: "y/b" }, "x/a")).toBe(false);
  });
});

// ---- ports -------------------------------------------------------------------------------------

describe("ports", () => {
  const only = (ports: unknown[]) => base([np("x/ports", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ ports }] })]);

  it("no ports means every port of every protocol", () => {
    const c = base([np("x/any", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ podSelector: {} }] }] })]);
    expect(allowed(c, "x/b", "x/a", "TCP", 1)).toBe(true);
    expect(allowed(c, "x/b", "x/a", "UDP", 65535)).toBe(true);
    expect(allowed(c, "x/b", "x/a", "SCTP", 80)).toBe(true);
    expect(allowed(c, "x/b", "x/a", 1, 0)).toBe(true); // ICMP
  });

  it("a port number defaults to TCP", () => {
    const c = only([{ port: 80 }]);
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 81)).toBe(false);
    expect(allowed(c, "y/a", "x/a", "UDP", 80)).toBe(false);
  });

  it("UDP and SCTP ports match only their protocol", () => {
    const c = only([{ port: 80, protocol: "UDP" }, { port: 80, protocol: "SCTP" }]);
    expect(allowed(c, "y/a", "x/a", "UDP", 80)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "SCTP", 80)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(false);
    expect(allowed(c, "y/a", "x/a", 1, 0)).toBe(false);
  });

  it("a protocol without a port means every port of that protocol", () => {
    const c = only([{ protocol: "UDP" }]);
    expect(allowed(c, "y/a", "x/a", "UDP", 1)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "UDP", 65535)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(false);
  });

  it("endPort makes an inclusive range", () => {
    const c = only([{ port: 81, endPort: 83 }]);
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(false);
    expect(allowed(c, "y/a", "x/a", "TCP", 81)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 83)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 84)).toBe(false);
  });

  it("an ingress named port resolves on each selected pod's own container ports", () => {
    const c = base([np("x/http", { ingress: [{ ports: [{ port: "http" }] }] })], (cl) => {
      cl.pods = cl.pods.map((p) => {
        if (p.metadata.namespace !== "x") return p;
        const port = p.metadata.name === "a" ? 80 : p.metadata.name === "b" ? 81 : undefined;
        return pod(`x/${p.metadata.name}`, { ips: p.status.podIPs, labels: p.metadata.labels, ports: port === undefined ? [] : [{ name: "http", containerPort: port }] });
      });
    });
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(true);
    expect(allowed(c, "y/a", "x/a", "TCP", 81)).toBe(false);
    expect(allowed(c, "y/a", "x/b", "TCP", 81)).toBe(true);
    expect(allowed(c, "y/a", "x/b", "TCP", 80)).toBe(false);
    expect(allowed(c, "y/a", "x/c", "TCP", 80)).toBe(false);
    expect(allowed(c, WORLD, "x/a", "TCP", 80)).toBe(true);
  });

  it("a named port needs the container port's protocol to be the rule's", () => {
    const c = only([{ port: "serve-80-udp" }]); // protocol defaults to TCP; the container port is UDP
    expect(allowed(c, "y/a", "x/a", "TCP", 80)).toBe(false);
    expect(allowed(c, "y/a", "x/a", "UDP", 80)).toBe(false);
    const udp = only([{ port: "serve-80-udp", protocol: "UDP" }]);
    expect(allowed(udp, "y/a", "x/a", "UDP", 80)).toBe(true);
  });

  it("an egress named port resolves on the destination pod, and never matches an address that is not a pod", () => {
    const c = base([np("x/egress-http", {
      podSelector: { matchLabels: { pod: "a" } },
      policyTypes: ["Egress"],
      egress: [{ ports: [{ port: "http" }] }, { to: [{ ipBlock: { cidr: "0.0.0.0/0" } }], ports: [{ port: "web" }] }],
    })], (cl) => {
      cl.pods = cl.pods.map((p) => (p.metadata.namespace === "y" && p.metadata.name === "a"
        ? pod("y/a", { ips: p.status.podIPs, labels: p.metadata.labels, ports: [{ name: "http", containerPort: 8080 }, { name: "web", containerPort: 9000 }] }) : p));
    });
    expect(allowed(c, "x/a", "y/a", "TCP", 8080)).toBe(true);
    expect(allowed(c, "x/a", "y/a", "TCP", 80)).toBe(false);
    expect(allowed(c, "x/a", "y/b", "TCP", 8080)).toBe(false);
    expect(allowed(c, "x/a", "y/a", "TCP", 9000)).toBe(true); // ipBlock peer that is a pod with "web"
    expect(allowed(c, "x/a", WORLD, "TCP", 8080)).toBe(false);
    expect(allowed(c, "x/a", WORLD, "TCP", 9000)).toBe(false);
  });
});

// ---- host and modes -------------------------------------------------------------------------------

describe("node addresses", () => {
  const denyAll = () => base([np("x/deny-all", { policyTypes: ["Ingress", "Egress"] })]);

  it("traffic between a pod and node addresses is allowed even when the pod is isolated", () => {
    const c = denyAll();
    const inbound = judge(c, NODE1, "x/a");
    expect(inbound.allowed).toBe(true);
    expect(inbound.ingress.exemption).toBe("host");
    expect(inbound.src.kind).toBe("host");
    expect(allowed(c, "x/a", NODE2)).toBe(true);
    expect(allowed(c, WORLD, "x/a")).toBe(false);
  });

  it("with hostExempt off, node addresses are plain addresses for ipBlocks", () => {
    const off = { hostExempt: false };
    expect(allowed(denyAll(), NODE1, "x/a", "TCP", 80, off)).toBe(false);
    const c = base([np("x/from-nodes", { ingress: [{ from: [{ ipBlock: { cidr: "172.18.0.2/32" } }] }] })]);
    expect(allowed(c, NODE1, "x/a", "TCP", 80, off)).toBe(true);
    expect(allowed(c, NODE2, "x/a", "TCP", 80, off)).toBe(false);
  });

  it("hostNetwork pods are their node's address, not endpoints", () => {
    const c = base([np("x/deny", { policyTypes: ["Ingress"] })], (cl) => {
      cl.pods.push(pod("x/agent", { ips: [NODE1], hostNetwork: true, labels: { pod: "agent" } }));
    });
    const v = judge(c, "x/agent", "x/a");
    expect(v.src.kind).toBe("host");
    expect(v.allowed).toBe(true);
    expect(judge(c, "y/a", { ip: NODE1 }).ingress.isolated).toBe(false);
  });
});

describe("modes", () => {
  it("each namespace's bulkhead.io/mode annotation sets its pods' identity mode; others get the compiler's default", () => {
    const c = base([np("x/deny", {})], (cl) => {
      cl.namespaces = [namespace("x", { ns: "x" }, { "bulkhead.io/mode": "enforce" }), namespace("y", { ns: "y" }, { "bulkhead.io/mode": "audit" }), namespace("z", { ns: "z" })];
    });
    for (const [defaultMode, expectedZ] of [["observe", PolicyMode.POLICY_MODE_OBSERVE], ["audit", PolicyMode.POLICY_MODE_AUDIT]] as const) {
      const snapshot = new PolicyCompiler({ defaultMode }).compile(c);
      const modeOf = (key: string) => snapshot.identities.find((i) => i.id === snapshotIdentityOf(snapshot, IP[key] ?? ""))?.mode;
      expect(modeOf("x/a")).toBe(PolicyMode.POLICY_MODE_ENFORCE);
      expect(modeOf("y/a")).toBe(PolicyMode.POLICY_MODE_AUDIT);
      expect(modeOf("z/a")).toBe(expectedZ);
      expect(snapshot.identities.find((i) => i.id === IDENTITY_WORLD)?.mode).toBe(PolicyMode.POLICY_MODE_OBSERVE);
      expect(snapshot.identities.find((i) => i.id === IDENTITY_HOST)?.mode).toBe(PolicyMode.POLICY_MODE_OBSERVE);
    }
    expect(new PolicyModel(c).modeOf("z")).toBe("observe");
    expect(new PolicyModel(c, { defaultMode: "enforce" }).modeOf("z")).toBe("enforce");
  });

  it("an annotation that is not a mode is reported and the default applies", () => {
    const c = base([], (cl) => {
      cl.namespaces = [namespace("x", {}, { "bulkhead.io/mode": "block" })];
    });
    const model = new PolicyModel(c, { defaultMode: "audit" });
    expect(model.modeOf("x")).toBe("audit");
    expect(model.errors().map((e) => e.text)).toEqual([expect.stringContaining("Namespace x: metadata.annotations.bulkhead.io/mode: expected one of observe, audit, enforce, got \"block\"")]);
  });
});

// ---- invalid policies ---------------------------------------------------------------------------

describe("invalid policies", () => {
  const invalid: [string, Record<string, unknown>, string, RegExp][] = [
    ["bad operator", { podSelector: { matchLabels: {}, matchExpressions: [{ key: "pod", operator: "Equals", values: ["a"] }] } }, "spec.podSelector.matchExpressions[0].operator", /expected one of In, NotIn, Exists, DoesNotExist/],
    ["In without values", { ingress: [{ from: [{ podSelector: { matchLabels: {}, matchExpressions: [{ key: "pod", operator: "In", values: [] }] } }], ports: [] }] }, "spec.ingress[0].from[0].podSelector.matchExpressions[0].values", /needs at least one value/],
    ["endPort without port", { ingress: [{ from: [], ports: [{ protocol: "TCP", endPort: 90 }] }] }, "spec.ingress[0].ports[0].endPort", /needs port/],
    ["endPort below port", { egress: [{ to: [], ports: [{ protocol: "TCP", port: 90, endPort: 80 }] }], policyTypes: ["Egress"] }, "spec.egress[0].ports[0].endPort", /at least port 90/],
    ["named port with endPort", { ingress: [{ from: [], ports: [{ protocol: "TCP", port: "http", endPort: 90 }] }] }, "spec.ingress[0].ports[0].endPort", /named port/],
    ["bad CIDR", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/33", except: [] } }], ports: [] }] }, "spec.ingress[0].from[0].ipBlock.cidr", /expected a CIDR/],
    ["except outside cidr", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/16", except: ["10.1.0.0/24"] } }], ports: [] }] }, "spec.ingress[0].from[0].ipBlock.except[0]", /strict subset of cidr 10.0.0.0\/16/],
    ["except equal to cidr", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/16", except: ["10.0.0.0/16"] } }], ports: [] }] }, "spec.ingress[0].from[0].ipBlock.except[0]", /strict subset/],
    ["except of the other family", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["fd00::/64"] } }], ports: [] }] }, "spec.ingress[0].from[0].ipBlock.except[0]", /strict subset/],
    ["ipBlock with a selector", { ingress: [{ from: [{ ipBlock: { cidr: "10.0.0.0/8", except: [] }, podSelector: { matchLabels: {}, matchExpressions: [] } }], ports: [] }] }, "spec.ingress[0].from[0]", /cannot be combined/],
    ["empty peer", { ingress: [{ from: [{}], ports: [] }] }, "spec.ingress[0].from[0]", /expected podSelector, namespaceSelector or ipBlock/],
    ["bad protocol", { ingress: [{ from: [], ports: [{ protocol: "ICMP", port: 1 }] }] }, "spec.ingress[0].ports[0].protocol", /TCP, UDP, SCTP/],
    ["port 0", { ingress: [{ from: [], ports: [{ protocol: "TCP", port: 0 }] }] }, "spec.ingress[0].ports[0].port", /1-65535/],
    ["bad policy type", { policyTypes: ["Ingres"] }, "spec.policyTypes[0]", /Ingress or Egress/],
    ["bad label value", { podSelector: { matchLabels: { pod: "not valid!" }, matchExpressions: [] } }, "spec.podSelector.matchLabels.pod", /invalid label value/],
  ];

  for (const [what, spec, field, message] of invalid) {
    it(`${what}: reported with policy and field, failing closed (x's pods isolated, admitting nothing), others still in force`, () => {
      const c = base([rawPolicy("x/bad", spec), np("y/deny", { policyTypes: ["Ingress"] })]);
      const model = new PolicyModel(c, { defaultMode: "enforce" });
      const errors = model.errors();
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ object: "NetworkPolicy x/bad", policy: "x/bad", field, keptPrevious: false });
      expect(errors[0]?.message).toMatch(message);
      expect(errors[0]?.text).toContain(`NetworkPolicy x/bad: ${field}: `);
      expect(errors[0]?.text).toMatch(/until it is fixed, the pods it selects are isolated, admitting nothing\)$/);
      // x/bad selects every pod of x (its own selector, or all of x when that is what is
      // invalid) in the directions it names (Egress only in one case).
      const egressOnly = JSON.stringify(spec.policyTypes) === JSON.stringify(["Egress"]);
      const [src, dst] = egressOnly ? ["x/a", "z/a"] : ["z/a", "x/a"];
      const verdict = model.evaluate({ src: { pod: src }, dst: { pod: dst }, protocol: "TCP", port: 80 });
      expect((egressOnly ? verdict.egress : verdict.ingress).isolatedBy).toEqual(["x/bad"]);
      expect(allowed(c, src, dst)).toBe(false);
      // Policy types it cannot read: both directions.
      expect(allowed(c, egressOnly ? "z/a" : "x/a", egressOnly ? "x/a" : "z/a"), "the other direction").toBe(what !== "bad policy type");
      expect(allowed(c, "z/a", "y/a")).toBe(false);
      expect(allowed(c, "z/a", "z/b")).toBe(true);
      const compiler = new PolicyCompiler();
      compiler.compile(c);
      expect(compiler.errors().map((e) => e.field)).toEqual([field]);
      expect(compiler.stats()).toMatchObject({ policies: 2, invalidPolicies: 1 });
    });
  }

  it("a policy updated to an invalid version keeps its last valid version in force until fixed or deleted", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const good = base([np("x/deny", { policyTypes: ["Ingress"] })]);
    const first = compiler.compile(good);
    expect(snapshotAllows(first, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    const broken = base([rawPolicy("x/deny", { policyTypes: ["Ingress"], ingress: [{ from: [{}], ports: [] }] })]);
    const second = compiler.compile(broken);
    expect(compiler.errors()).toEqual([expect.objectContaining({ policy: "x/deny", field: "spec.ingress[0].from[0]", keptPrevious: true })]);
    expect(compiler.errors()[0]?.text).toContain("previous valid version stays in force");
    expect(snapshotAllows(second, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    const deleted = compiler.compile(base([]));
    expect(snapshotAllows(deleted, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(true);
    // Invalid from its first version: it fails closed.
    compiler.compile(broken);
    expect(compiler.errors()[0]?.keptPrevious).toBe(false);
    expect(snapshotAllows(compiler.current(), IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    expect(snapshotAllows(compiler.current(), IP["x/a"] ?? "", IP["y/a"] ?? "", "TCP", 80)).toBe(true);
  });
});

// ---- the compiled snapshot ------------------------------------------------------------------------

describe("snapshot", () => {
  const policies = [
    np("x/web", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }], ports: [{ port: 80 }, { port: 81 }, { port: 80 }] }] }),
    np("x/web-again", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }], ports: [{ port: 80 }] }] }),
    np("x/cidr", { podSelector: { matchLabels: { pod: "b" } }, policyTypes: ["Egress"], egress: [{ to: [{ ipBlock: { cidr: "10.0.0.0/8", except: ["10.244.2.0/24"] } }] }] }),
  ];

  it("reserves 1 for host and 2 for world, allocates from 256, maps pods, nodes, ipBlocks and 0/0", () => {
    const snapshot = new PolicyCompiler().compile(base(policies));
    const cidrs = new Map(snapshot.ipIdentities.map((e) => [e.cidr, e.identity]));
    expect(cidrs.get("0.0.0.0/0")).toBe(IDENTITY_WORLD);
    expect(cidrs.get("::/0")).toBe(IDENTITY_WORLD);
    expect(cidrs.get(`${NODE1}/32`)).toBe(IDENTITY_HOST);
    expect(cidrs.get("10.0.0.0/8")).toBeGreaterThanOrEqual(FIRST_IDENTITY);
    expect(cidrs.get("10.244.2.0/24")).toBe(IDENTITY_WORLD);
    for (const key of Object.keys(IP)) expect(cidrs.get(`${IP[key]}/32`)).toBeGreaterThanOrEqual(FIRST_IDENTITY);
    const xa = snapshot.identities.find((i) => i.id === cidrs.get(`${IP["x/a"]}/32`));
    expect(xa).toMatchObject({ namespace: "x", labels: { pod: "a" }, endpoint: true, ingressIsolated: true, egressIsolated: false });
    expect(snapshot.identities.find((i) => i.id === IDENTITY_WORLD)).toMatchObject({ endpoint: false, ingressIsolated: false, egressIsolated: false });
  });

  it("pods that policy cannot tell apart share an identity; ipBlock membership splits them", () => {
    const snapshot = new PolicyCompiler().compile(base(policies, (c) => {
      c.pods.push(pod("x/a2", { ips: ["10.244.1.40"], labels: { pod: "a" }, ports: HTTP_PORTS }));
      c.pods.push(pod("x/a3", { ips: ["10.244.2.41"], labels: { pod: "a" }, ports: HTTP_PORTS }));
    }));
    const id = (ip: string) => snapshotIdentityOf(snapshot, ip);
    expect(id("10.244.1.40")).toBe(id(IP["x/a"] ?? ""));
    expect(id("10.244.2.41")).not.toBe(id(IP["x/a"] ?? "")); // inside the except: another ipBlock set
    expect(id(IP["x/c"] ?? "")).not.toBe(id(IP["x/a"] ?? ""));
    expect(id(IP["y/a"] ?? "")).not.toBe(id(IP["x/a"] ?? ""));
    expect(id("10.9.9.9")).toBe(snapshot.ipIdentities.find((e) => e.cidr === "10.0.0.0/8")?.identity);
    expect(id("11.0.0.1")).toBe(IDENTITY_WORLD);
  });

  it("named container ports split identities only when some policy uses the name", () => {
    const withPorts = (policy: NetworkPolicy[]) => base(policy, (c) => {
      c.pods = c.pods.map((p) => (p.metadata.namespace === "x" && p.metadata.name === "c" ? pod("x/c", { ips: p.status.podIPs, labels: { pod: "a" }, ports: [{ name: "http", containerPort: 81 }] }) : p));
      c.pods = c.pods.map((p) => (p.metadata.namespace === "x" && p.metadata.name === "a" ? pod("x/a", { ips: p.status.podIPs, labels: { pod: "a" }, ports: [{ name: "http", containerPort: 80 }] }) : p));
    });
    const unused = new PolicyCompiler().compile(withPorts([np("x/deny", {})]));
    expect(snapshotIdentityOf(unused, IP["x/a"] ?? "")).toBe(snapshotIdentityOf(unused, IP["x/c"] ?? ""));
    const used = new PolicyCompiler().compile(withPorts([np("x/http", { ingress: [{ ports: [{ port: "http" }] }] })]));
    expect(snapshotIdentityOf(used, IP["x/a"] ?? "")).not.toBe(snapshotIdentityOf(used, IP["x/c"] ?? ""));
  });

  it("rules are deduplicated and merged: one range for 80-81 from each y identity", () => {
    const snapshot = new PolicyCompiler().compile(base(policies));
    const xa = snapshotIdentityOf(snapshot, IP["x/a"] ?? "");
    const rules = snapshot.rules.filter((r) => r.subject === xa && r.direction === PolicyDirection.POLICY_DIRECTION_INGRESS);
    const peers = ["y/a", "y/b", "y/c"].map((k) => snapshotIdentityOf(snapshot, IP[k] ?? ""));
    const hostRules = rules.filter((r) => r.peer === IDENTITY_HOST);
    expect(hostRules).toEqual([{ subject: xa, direction: PolicyDirection.POLICY_DIRECTION_INGRESS, peer: IDENTITY_HOST, protocol: 0, port: 0, endPort: 0, deny: false }]);
    const podRules = rules.filter((r) => r.peer !== IDENTITY_HOST);
    expect(podRules).toHaveLength(new Set(peers).size);
    for (const r of podRules) expect(r).toMatchObject({ protocol: 6, port: 80, endPort: 81 });
    const keys = snapshot.rules.map((r) => JSON.stringify(r));
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("a peer's port range that only partly overlaps the any-peer ranges is kept whole", () => {
    const c = base([np("x/mix", {
      podSelector: { matchLabels: { pod: "a" } },
      ingress: [{ ports: [{ port: 80, endPort: 81 }] }, { from: [{ podSelector: { matchLabels: { pod: "b" } } }], ports: [{ port: 81, endPort: 85 }] }],
    })]);
    expect(allowed(c, "x/b", "x/a", "TCP", 85)).toBe(true);
    expect(allowed(c, "x/b", "x/a", "TCP", 80)).toBe(true);
    expect(allowed(c, "x/c", "x/a", "TCP", 85)).toBe(false);
    expect(allowed(c, "x/c", "x/a", "TCP", 81)).toBe(true);
  });

  it("Service ClusterIPs map to one identity flagged service, which snapshotAllows refuses to judge before DNAT", () => {
    const service = parsed<Service>({ apiVersion: "v1", kind: "Service", metadata: { name: "s-x-a", namespace: "x" }, spec: { clusterIP: "10.96.0.10", selector: { pod: "a" }, ports: [{ port: 80 }] } });
    const snapshot = new PolicyCompiler().compile({ ...base(policies), services: [service] });
    const id = snapshotIdentityOf(snapshot, "10.96.0.10");
    expect(snapshot.identities.find((i) => i.id === id)).toMatchObject({ service: true, endpoint: false, ingressIsolated: false, egressIsolated: false });
    expect(id).toBe(IDENTITY_SERVICE);
    expect(snapshot.identities.find((i) => i.id === id)?.labels).toEqual({ "bulkhead.io/reserved": "service" });
    expect(() => snapshotAllows(snapshot, IP["y/a"] ?? "", "10.96.0.10", "TCP", 80)).toThrow(/ClusterIP.*after DNAT/);
  });

  it("the same input gives the same snapshot (same version); ids are stable across changes", () => {
    const compiler = new PolicyCompiler();
    const c = base(policies);
    const first = compiler.compile(c);
    expect(compiler.compile(c)).toBe(first);
    expect(compiler.compile(base(policies))).toBe(first); // equal objects rebuilt by the caller
    // A policy edit that allows nothing new (a duplicate port) is no new version.
    const edited = [...policies];
    edited[1] = np("x/web-again", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }], ports: [{ port: 80 }, { port: 81 }] }] });
    expect(compiler.compile(base(edited))).toBe(first);
    expect(compiler.compile(c)).toBe(first);
    const xa = snapshotIdentityOf(first, IP["x/a"] ?? "");
    const relabelled = base(policies, (cl) => {
      cl.pods = cl.pods.map((p) => (p.metadata.namespace === "x" && p.metadata.name === "a" ? pod("x/a", { ips: p.status.podIPs, labels: { pod: "a", v: "2" }, ports: HTTP_PORTS }) : p));
    });
    const second = compiler.compile(relabelled);
    expect(second.version).toBe(first.version + 1n);
    expect(snapshotIdentityOf(second, IP["x/a"] ?? "")).not.toBe(xa);
    expect(snapshotIdentityOf(second, IP["x/b"] ?? "")).toBe(snapshotIdentityOf(first, IP["x/b"] ?? ""));
    const third = compiler.compile(c);
    expect(snapshotIdentityOf(third, IP["x/a"] ?? "")).toBe(xa);
  });

  it("a policy added later sees namespaces relabelled or created since an earlier policy used the same namespaceSelector", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const blue = { namespaceSelector: { matchLabels: { team: "blue" } } };
    const first = np("x/from-blue", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [blue] }] });
    compiler.compile(base([first]));
    const second = np("y/from-blue", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [blue] }] });
    const relabelled = base([first, second], (c) => {
      c.namespaces = c.namespaces.map((n) => (n.metadata.name === "z" ? namespace("z", { ns: "z", team: "blue" }) : n));
      c.namespaces.push(namespace("w", { team: "blue" })); // no pods yet
    });
    let snapshot = compiler.compile(relabelled);
    expect(snapshotAllows(snapshot, IP["z/b"] ?? "", IP["y/a"] ?? "", "TCP", 80)).toBe(true);
    expect(snapshotAllows(snapshot, IP["x/b"] ?? "", IP["y/a"] ?? "", "TCP", 80)).toBe(false);
    const third = np("z/from-blue", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [blue] }] });
    const created = base([first, second, third], (c) => {
      c.namespaces = c.namespaces.map((n) => (n.metadata.name === "z" ? namespace("z", { ns: "z", team: "blue" }) : n));
      c.namespaces.push(namespace("w", { team: "blue" }));
      c.pods.push(pod("w/a", { ips: ["10.244.3.3"], labels: { pod: "a" } }));
    });
    snapshot = compiler.compile(created);
    expect(snapshotAllows(snapshot, "10.244.3.3", IP["z/a"] ?? "", "TCP", 80)).toBe(true);
    expect(snapshotAllows(snapshot, "10.244.3.3", IP["x/a"] ?? "", "TCP", 80)).toBe(true);
    expect(snapshotAllows(snapshot, IP["y/b"] ?? "", IP["z/a"] ?? "", "TCP", 80)).toBe(false);
  });

  it("an incremental compile equals a fresh compile of the same state", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const states = [
      base(policies),
      base([...policies, np("y/deny", { policyTypes: ["Ingress", "Egress"], egress: [{ to: [{ podSelector: { matchLabels: { pod: "b" } } }], ports: [{ port: "serve-81-tcp" }] }] })]),
      base(policies.slice(1), (c) => { c.namespaces = c.namespaces.map((n) => (n.metadata.name === "z" ? namespace("z", { ns: "y" }) : n)); }),
      base([np("x/egress-named", { policyTypes: ["Egress"], egress: [{ ports: [{ port: "serve-80-udp", protocol: "UDP" }] }] })], (c) => { c.pods = c.pods.filter((p) => p.metadata.name !== "c"); }),
      base(policies),
    ];
    for (const state of states) {
      const incremental = compiler.compile(state);
      const fresh = new PolicyCompiler({ defaultMode: "enforce" }).compile(state);
      expect(incremental.rules.length).toBe(fresh.rules.length);
      expect(incremental.ipIdentities.map((e) => e.cidr)).toEqual(fresh.ipIdentities.map((e) => e.cidr));
      const addresses = [...state.pods.map((p) => p.status.podIPs[0] ?? ""), NODE1, WORLD, "10.1.2.3", "10.244.2.200"];
      for (const s of addresses) {
        for (const d of addresses) {
          for (const [proto, port] of [["TCP", 80], ["TCP", 81], ["UDP", 80], ["SCTP", 80]] as const) {
            expect(snapshotAllows(incremental, s, d, proto, port), `${s} > ${d} ${proto}/${port}`).toBe(snapshotAllows(fresh, s, d, proto, port));
          }
        }
      }
    }
  });
});

// ---- attribution ------------------------------------------------------------------------------------

describe("attribution", () => {
  it("names the policies that isolate and allow each side, with the snapshot's version", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const c = base([
      np("x/allow-y", { podSelector: { matchLabels: { pod: "a" } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }] }] }),
      np("x/deny", { policyTypes: ["Ingress"] }),
      np("y/egress", { policyTypes: ["Egress"], egress: [{ ports: [{ port: 80 }] }] }),
    ]);
    const snapshot = compiler.compile(c);
    const a = compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", 6, 80);
    expect(a).toEqual({
      policyVersion: snapshot.version,
      egressIsolated: true,
      egressAllowedBy: ["y/egress"],
      egressIsolatedBy: ["y/egress"],
      ingressIsolated: true,
      ingressAllowedBy: ["x/allow-y"],
      ingressIsolatedBy: ["x/allow-y", "x/deny"],
      egressDecidedBy: "NetworkPolicy",
      ingressDecidedBy: "NetworkPolicy",
      egressTierRules: [],
      ingressTierRules: [],
    });
    const denied = compiler.attribution(IP["y/a"] ?? "", IP["x/b"] ?? "", "TCP", 81);
    expect(denied).toMatchObject({ egressAllowedBy: [], egressIsolatedBy: ["y/egress"], ingressAllowedBy: [], ingressIsolatedBy: ["x/deny"] });
    const world = compiler.attribution(WORLD, IP["z/a"] ?? "", "TCP", 80);
    expect(world).toMatchObject({ egressIsolated: false, ingressIsolated: false, egressIsolatedBy: [], ingressIsolatedBy: [] });
  });

  it("is cached per identity pair and dropped when the policy changes", () => {
    const compiler = new PolicyCompiler();
    compiler.compile(base([np("x/deny", { policyTypes: ["Ingress"] })]));
    const first = compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80);
    expect(compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(first);
    // The same rules under another name: no new snapshot version, but new names.
    const renamed = compiler.compile(base([np("x/other", { policyTypes: ["Ingress"] })]));
    const second = compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80);
    expect(second.ingressIsolatedBy).toEqual(["x/other"]);
    expect(second.policyVersion).toBe(renamed.version);
    compiler.compile(base([np("x/other", { policyTypes: ["Ingress"], ingress: [{ from: [{ namespaceSelector: {} }] }] })]));
    const third = compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80);
    expect(third).toMatchObject({ ingressAllowedBy: ["x/other"], policyVersion: first.policyVersion + 1n });
  });

  it("keeps cached answers apart by protocol and port", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    compiler.compile(base([np("y/egress", { policyTypes: ["Egress"], egress: [{ ports: [{ port: 80 }] }] })]));
    const ask = (protocol: "TCP" | "UDP" | number, port: number) => compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", protocol, port).egressAllowedBy;
    // Each pair twice, interleaved, so that the second answer of each comes from the cache.
    for (let round = 0; round < 2; round++) {
      expect(ask("TCP", 80)).toEqual(["y/egress"]);
      expect(ask("TCP", 81)).toEqual([]);
      expect(ask(6, 80)).toEqual(["y/egress"]);
      expect(ask(6, 65_535)).toEqual([]);
    }
    // An unusual key (no such port) is answered, not cached under a neighbour's.
    expect(compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", 6, 65_616).egressAllowedBy).toEqual([]);
    expect(ask(6, 80)).toEqual(["y/egress"]);
  });

  it("hands out one object for equal attributions of different ports, so stored rows do not keep a copy each", () => {
    const compiler = new PolicyCompiler();
    compiler.compile(base([np("x/deny", { policyTypes: ["Ingress"] })]));
    const onPort = (port: number) => compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", port);
    const first = onPort(40_000);
    for (let port = 40_001; port < 40_100; port++) expect(onPort(port)).toBe(first);
    expect(compiler.attribution(IP["y/a"] ?? "", IP["y/b"] ?? "", "TCP", 80)).not.toEqual(first);
  });
});

// ---- ClusterNetworkPolicy ------------------------------------------------------------------------------

function cnp(name: string, spec: Record<string, unknown>): ClusterNetworkPolicy {
  return { apiVersion: "policy.networking.k8s.io/v1alpha2", kind: "ClusterNetworkPolicy", metadata: { name }, spec };
}

function withCnps(cluster: PolicyCluster, cnps: ClusterNetworkPolicy[]): PolicyCluster {
  return { ...cluster, clusterNetworkPolicies: cnps };
}

const X = { namespaces: { matchLabels: { ns: "x" } } };
const FROM_Y = [{ namespaces: { matchLabels: { ns: "y" } } }];

describe("ClusterNetworkPolicy", () => {
  const invalid: [string, Record<string, unknown>, RegExp][] = [
    ["a priority above 1000", { tier: "Admin", priority: 1001, subject: X }, /spec\.priority: expected an integer 0-1000, got 1001/],
    ["an unknown tier", { tier: "Developer", priority: 1, subject: X }, /spec\.tier: expected Admin or Baseline/],
    ["a subject with both kinds", { tier: "Admin", priority: 1, subject: { ...X, pods: { podSelector: {} } } }, /spec\.subject: expected exactly one of namespaces, pods, got namespaces and pods/],
    ["an unknown action", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Allow", from: FROM_Y }] }, /spec\.ingress\[0\]\.action: expected Accept, Deny or Pass/],
    ["a rule without peers", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Deny", from: [] }] }, /spec\.ingress\[0\]\.from: expected a list of 1-100 peers/],
    ["networks in an ingress peer", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Deny", from: [{ networks: ["10.0.0.0/8"] }] }] }, /spec\.ingress\[0\]\.from\[0\]\.networks: unknown field/],
    ["a bad CIDR", { tier: "Admin", priority: 1, subject: X, egress: [{ action: "Deny", to: [{ networks: ["10.0.0.300/8"] }] }] }, /spec\.egress\[0\]\.to\[0\]\.networks\[0\]: expected a CIDR/],
    ["an empty port range", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Deny", from: FROM_Y, protocols: [{ tcp: { destinationPort: { range: { start: 81, end: 80 } } } }] }] }, /destinationPort\.range: start \(81\) must be less than end \(80\)/],
    ["a protocol entry with two kinds", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Deny", from: FROM_Y, protocols: [{ tcp: {}, udp: {} }] }] }, /protocols\[0\]: expected exactly one of tcp, udp, sctp, destinationNamedPort, got tcp and udp/],
    ["two rules with one name", { tier: "Admin", priority: 1, subject: X, ingress: [{ name: "r", action: "Deny", from: FROM_Y }, { name: "r", action: "Pass", from: FROM_Y }] }, /spec\.ingress\[1\]\.name: another ingress rule is named "r"/],
    ["a nodes peer (node addresses are exempt from policy)", { tier: "Admin", priority: 1, subject: X, egress: [{ action: "Deny", to: [{ nodes: {} }] }] }, /spec\.egress\[0\]\.to\[0\]\.nodes: nodes peers are not supported: bulkhead exempts traffic between pods and every node address/],
    ["a domainNames peer", { tier: "Admin", priority: 1, subject: X, egress: [{ action: "Accept", to: [{ domainNames: ["example.com"] }] }] }, /spec\.egress\[0\]\.to\[0\]\.domainNames: domainNames peers are not supported/],
  ];
  for (const [what, spec, message] of invalid) {
    it(`refuses ${what}, naming the field`, () => {
      const result = normalizeCnp(cnp("c", spec));
      expect(result.problems?.map((p) => p.text).join("\n")).toMatch(message);
    });
  }

  it("an invalid update keeps the previous valid version in force (model and snapshot), and says so", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const deny = cnp("guard", { tier: "Admin", priority: 1, subject: X, ingress: [{ name: "no-y", action: "Deny", from: FROM_Y }] });
    let snapshot = compiler.compile(withCnps(base(), [deny]));
    expect(snapshotAllows(snapshot, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    snapshot = compiler.compile(withCnps(base(), [cnp("guard", { tier: "Admin", priority: 5000, subject: X, ingress: [] })]));
    expect(compiler.errors().map((p) => p.text)).toEqual(["ClusterNetworkPolicy guard: spec.priority: expected an integer 0-1000, got 5000 (its previous valid version stays in force)"]);
    expect(snapshotAllows(snapshot, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    expect(compiler.model().evaluate({ src: { pod: "y/a" }, dst: { pod: "x/a" }, protocol: "TCP", port: 80 }).allowed).toBe(false);
    // Never valid: ignored (a ClusterNetworkPolicy isolates nothing by itself).
    const fresh = new PolicyCompiler({ defaultMode: "enforce" });
    expect(snapshotAllows(fresh.compile(withCnps(base(), [cnp("bad", { tier: "Admin", priority: -1, subject: X })])), IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(true);
  });

  it("says which tier, policy and rule decided each side, including a Pass followed by the NetworkPolicy that decided", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    compiler.compile(withCnps(base([np("x/allow-y", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "y" } } }] }] })]), [
      cnp("pass-y", { tier: "Admin", priority: 5, subject: X, ingress: [{ name: "to-np", action: "Pass", from: FROM_Y }] }),
      cnp("deny-z", { tier: "Admin", priority: 6, subject: X, ingress: [{ action: "Deny", from: [{ namespaces: { matchLabels: { ns: "z" } } }] }] }),
      cnp("base", { tier: "Baseline", priority: 1, subject: { namespaces: { matchLabels: { ns: "y" } } }, egress: [{ name: "no-x", action: "Deny", to: [{ pods: { namespaceSelector: { matchLabels: { ns: "x" } }, podSelector: { matchLabels: { pod: "c" } } } }] }] }),
    ]));
    expect(compiler.attribution(IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toMatchObject({
      ingressDecidedBy: "NetworkPolicy", ingressTierRules: ["Admin pass-y to-np: Pass"], ingressAllowedBy: ["x/allow-y"],
      egressDecidedBy: "none", egressTierRules: [],
    });
    expect(compiler.attribution(IP["z/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toMatchObject({ ingressDecidedBy: "Admin", ingressTierRules: ["Admin deny-z ingress[0]: Deny"] });
    expect(compiler.attribution(IP["y/a"] ?? "", IP["x/c"] ?? "", "TCP", 80)).toMatchObject({ egressDecidedBy: "Baseline", egressTierRules: ["Baseline base no-x: Deny"] });
    expect(compiler.attribution(WORLD, IP["x/a"] ?? "", "TCP", 80)).toMatchObject({ egressDecidedBy: "", ingressDecidedBy: "NetworkPolicy" });
  });

  it("never blocks a pod's node nor the pod itself, as for NetworkPolicy (hostExempt)", () => {
    const c = withCnps(base(), [cnp("deny-all", { tier: "Admin", priority: 1, subject: { namespaces: {} },
      ingress: [{ action: "Deny", from: [{ namespaces: {} }] }], egress: [{ action: "Deny", to: [{ networks: ["0.0.0.0/0"] }] }] })]);
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    const snapshot = compiler.compile(c);
    const model = compiler.model();
    for (const [src, dst, allowed] of [[NODE1, IP["x/a"], true], [IP["x/a"], NODE2, true], [IP["x/a"], IP["x/a"], true], [IP["x/a"], IP["y/a"], false], [IP["x/a"], WORLD, false]] as const) {
      expect(snapshotAllows(snapshot, src ?? "", dst ?? "", "TCP", 80), `${src} > ${dst}`).toBe(allowed);
      expect(model.evaluate({ src: { ip: src ?? "" }, dst: { ip: dst ?? "" }, protocol: "TCP", port: 80 }).allowed, `${src} > ${dst}`).toBe(allowed);
    }
  });

  it("compiles a tiered subject into complete entries per peer: the kernel never falls back to peer 0 for a peer a rule names", () => {
    const compiler = new PolicyCompiler({ defaultMode: "enforce" });
    // Admin denies y on TCP 80 only; Baseline denies z. For y the entries must say "allow" for
    // everything but TCP 80 themselves: y's lookup finds them and never reaches peer 0.
    const snapshot = compiler.compile(withCnps(base(), [
      cnp("admin", { tier: "Admin", priority: 1, subject: X, ingress: [{ action: "Deny", from: FROM_Y, protocols: [{ tcp: { destinationPort: { number: 80 } } }] }] }),
      cnp("baseline", { tier: "Baseline", priority: 1, subject: X, ingress: [{ action: "Deny", from: [{ namespaces: { matchLabels: { ns: "z" } } }] }] }),
    ]));
    const xa = snapshotIdentityOf(snapshot, IP["x/a"] ?? "");
    const ya = snapshotIdentityOf(snapshot, IP["y/a"] ?? "");
    const entries = snapshot.rules.filter((r) => r.subject === xa && r.direction === PolicyDirection.POLICY_DIRECTION_INGRESS);
    expect(entries.filter((r) => r.peer === ya)).toEqual([
      { subject: xa, direction: PolicyDirection.POLICY_DIRECTION_INGRESS, peer: ya, protocol: 0, port: 0, endPort: 0, deny: false },
      { subject: xa, direction: PolicyDirection.POLICY_DIRECTION_INGRESS, peer: ya, protocol: 6, port: 80, endPort: 0, deny: true },
    ]);
    expect(entries.filter((r) => r.peer === 0)).toEqual([{ subject: xa, direction: PolicyDirection.POLICY_DIRECTION_INGRESS, peer: 0, protocol: 0, port: 0, endPort: 0, deny: false }]);
    expect(snapshotAllows(snapshot, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 80)).toBe(false);
    expect(snapshotAllows(snapshot, IP["y/a"] ?? "", IP["x/a"] ?? "", "TCP", 81)).toBe(true);
    expect(snapshotAllows(snapshot, IP["z/a"] ?? "", IP["x/a"] ?? "", "UDP", 80)).toBe(false);
    expect(snapshotAllows(snapshot, IP["y/a"] ?? "", IP["z/a"] ?? "", "TCP", 80)).toBe(true);
  });

  it("reports two policies of one tier at the same priority whose subjects hold a common pod, not those that share none", () => {
    const compiler = new PolicyCompiler();
    compiler.compile(withCnps(base(), [
      cnp("b-deny", { tier: "Admin", priority: 7, subject: X, ingress: [{ action: "Deny", from: FROM_Y }] }),
      cnp("a-accept", { tier: "Admin", priority: 7, subject: { pods: { podSelector: { matchLabels: { pod: "a" } } } }, ingress: [{ action: "Accept", from: FROM_Y }] }),
      cnp("y-only", { tier: "Admin", priority: 7, subject: { namespaces: { matchLabels: { ns: "y" } } }, ingress: [{ action: "Accept", from: FROM_Y }] }),
      cnp("baseline", { tier: "Baseline", priority: 7, subject: X, ingress: [{ action: "Accept", from: FROM_Y }] }),
    ]));
    expect(compiler.samePriorityOverlaps()).toEqual([
      "ClusterNetworkPolicies a-accept and b-deny: both Admin priority 7 with subjects holding pods of namespace x; their order is implementation-defined (bulkhead evaluates a-accept first, by name)",
      "ClusterNetworkPolicies a-accept and y-only: both Admin priority 7 with subjects holding pods of namespace y; their order is implementation-defined (bulkhead evaluates a-accept first, by name)",
    ]);
  });

  it("the agent writes a deny entry with BH_POLICY_DENY in its value, and refuses one key both allowed and denied", () => {
    const rule = (deny: boolean) => ({ subject: 300, direction: PolicyDirection.POLICY_DIRECTION_INGRESS, peer: 0, protocol: 6, port: 80, endPort: 0, deny });
    const snapshot = { version: 1n, identities: [], ipIdentities: [], rules: [rule(true)] };
    const values = [...compilePolicy(snapshot).policy.values()];
    expect(values.map((v) => v.readUInt32LE(bh_policy_value.flags))).toEqual([BH_POLICY_DENY]);
    expect(() => compilePolicy({ ...snapshot, rules: [rule(true), rule(false)] })).toThrow(/the opposite \(allow and deny\)/);
  });
});

// ---- shared rule parts ------------------------------------------------------------------
// Peers and ports shared by many rules (suggest.ts builds its policies that way) are read
// once per PolicySet update: the same normalized rules as when every rule has its own copy,
// and a shared part that is invalid is still reported at every field that holds it.

function sharedPartsPolicy(name: string, peers: NetworkPolicyPeer[], ports: NetworkPolicyPort[]): NetworkPolicy {
  const p = parseKubeObject({ apiVersion: "networking.k8s.io/v1", kind: "NetworkPolicy", metadata: { name, namespace: "shop" },
    spec: { podSelector: {}, policyTypes: ["Ingress", "Egress"], ingress: [], egress: [] } }) as NetworkPolicy;
  // Rules built in code around shared objects, as suggest.ts does.
  p.spec.ingress = peers.map((peer) => ({ from: [peer], ports }));
  p.spec.egress = peers.map((peer) => ({ to: [peer], ports: [ports[0]!] }));
  return p;
}

function described(p: NormalizedPolicy): unknown {
  const rules = (list: NormalizedPolicy["ingress"]) => list?.map((r) => ({
    peers: r.peers?.map((x) => (x.kind === "ipBlock" ? x.block.key : `${x.namespaceSelector?.key ?? "own"} ${x.podSelector.key}`)), ports: r.ports,
  }));
  return { key: p.key, contentKey: p.contentKey, ingress: rules(p.ingress), egress: rules(p.egress) };
}

const peerParts = (): NetworkPolicyPeer[] => [
  { podSelector: { matchLabels: { app: "a" }, matchExpressions: [] } },
  { namespaceSelector: { matchLabels: { team: "x" }, matchExpressions: [] }, podSelector: { matchLabels: { app: "b" }, matchExpressions: [] } },
  { ipBlock: { cidr: "10.1.0.0/16", except: ["10.1.2.0/24"] } },
] as NetworkPolicyPeer[];
const portParts = (): NetworkPolicyPort[] => [{ protocol: "TCP", port: 8080 }, { protocol: "UDP", port: "dns" }] as NetworkPolicyPort[];

describe("normalizing shared rule parts", () => {
  it("gives the same rules as a copy per rule", () => {
    const peers = peerParts(), ports = portParts();
    const shared = [sharedPartsPolicy("p1", peers, ports), sharedPartsPolicy("p2", [...peers].reverse(), ports)];
    const copies = [sharedPartsPolicy("p1", peerParts(), portParts()), sharedPartsPolicy("p2", peerParts().reverse(), portParts())];
    const a = new PolicySet().update(shared), b = new PolicySet().update(copies);
    expect(a.problems).toEqual([]);
    expect(a.inForce.map(described)).toEqual(b.inForce.map(described));
    expect(a.inForce[0]!.ingress).toHaveLength(3);
  });

  it("reports an invalid shared part at each field that holds it", () => {
    // A bad except still reads as a block (with a problem): the case where a cache of what was read would hide it.
    const bad = { ipBlock: { cidr: "10.1.0.0/16", except: ["10.2.0.0/24"] } } as NetworkPolicyPeer, badPort = { protocol: "TCP", port: 70000 } as NetworkPolicyPort;
    const good = peerParts()[0]!;
    const result = new PolicySet().update([sharedPartsPolicy("p1", [good, bad], [badPort]), sharedPartsPolicy("p2", [bad, good], [badPort])]);
    expect(result.problems.map((p) => `${p.policy} ${p.field}`).sort()).toEqual([
      "shop/p1 spec.egress[0].ports[0].port", "shop/p1 spec.egress[1].ports[0].port", "shop/p1 spec.egress[1].to[0].ipBlock.except[0]",
      "shop/p1 spec.ingress[0].ports[0].port", "shop/p1 spec.ingress[1].from[0].ipBlock.except[0]", "shop/p1 spec.ingress[1].ports[0].port",
      "shop/p2 spec.egress[0].ports[0].port", "shop/p2 spec.egress[0].to[0].ipBlock.except[0]", "shop/p2 spec.egress[1].ports[0].port",
      "shop/p2 spec.ingress[0].from[0].ipBlock.except[0]", "shop/p2 spec.ingress[0].ports[0].port", "shop/p2 spec.ingress[1].ports[0].port",
    ]);
  });
});
