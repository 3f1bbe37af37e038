// Policy compile cost: 5,000 pods in 500 namespaces on 50 nodes, 1,000 NetworkPolicies,
// then the same with 100 ClusterNetworkPolicies (clusterPolicies(): full compile, median of
// 3, and one ClusterNetworkPolicy change, median of 5; wall and CPU time).
// Run after `npm run build:ts` as `node dist/bench/policy-compile.js`.
//
// Method: the cluster is built through the same parser the control plane uses. Each
// namespace runs 5 Deployments × 2 pods (labels app, tier, pod-template-hash, version;
// container ports http 8080, metrics 9090, and grpc 9000 on api pods) and has two
// policies: one isolating every pod for ingress (same namespace, the monitoring namespace
// on the named port "metrics", the ingress namespace on "http"; every 10th namespace also
// admits its team's /24 except one /28 by ipBlock), and one for the api tier with egress
// to the db tier on 5432, to the team's namespaces, and to the world on 443 except
// private ranges. Figures are medians of 5 runs:
// - full: a new PolicyCompiler compiles the whole cluster;
// - pod label change: one pod's `version` label changes (a new identity), compile;
// - policy update: one policy's port changes, compile;
// - ipBlock update: one policy gains an ipBlock no other policy has (every address is
//   re-signed against the ipBlocks: the worst single change), compile.
// Each change is reverted (not timed) before the next run. RSS is read after the runs.
// The first full compile of the process (cold: nothing JIT-compiled yet, as at control
// plane start) is reported on its own; the medians are over 5 runs after it. The load
// average is printed with the figures: on a shared machine it explains most of the spread.
import { availableParallelism, loadavg } from "node:os";
import type { NetworkPolicy, Pod } from "../controlplane/metadata/objects.js";
import { PolicyCompiler } from "../controlplane/policy/compile.js";
import { apiPolicy, largeCluster, namespaceName, namespacePolicy, type LargeCluster } from "../test/harness/large-cluster.js";
import { portPrefixes } from "../agent/policy.js";
import { CNP_API_VERSION, CNP_KIND, type ClusterNetworkPolicy } from "../controlplane/policy/cnp.js";

const NAMESPACES = 500;
const PODS_PER_NAMESPACE = 10;
const NODES = 50;
const RUNS = 5;

function buildCluster(): LargeCluster {
  return largeCluster({ namespaces: NAMESPACES, podsPerNamespace: PODS_PER_NAMESPACE, nodes: NODES });
}

/**
 * 100 ClusterNetworkPolicies: three cluster-wide guardrails (Admin: deny the metadata
 * address, accept monitoring on 9090; Baseline: prod namespaces deny ingress from other
 * teams) and, per team (25), four Admin policies (deny ingress from the next team on a
 * port range, pass the ingress namespace to NetworkPolicy, accept egress within the team,
 * deny egress to the next team's cache pods), with priorities 100-199.
 */
function clusterPolicies(rangeEnd = 6999): ClusterNetworkPolicy[] {
  const cnp = (name: string, spec: Record<string, unknown>): ClusterNetworkPolicy => ({ apiVersion: CNP_API_VERSION, kind: CNP_KIND, metadata: { name }, spec });
  const everyNamespace = { namespaces: {} };
  const out: ClusterNetworkPolicy[] = [
    cnp("deny-metadata", { tier: "Admin", priority: 1, subject: everyNamespace, egress: [{ name: "metadata", action: "Deny", to: [{ networks: ["169.254.169.254/32"] }] }] }),
    cnp("allow-monitoring", { tier: "Admin", priority: 2, subject: everyNamespace, ingress: [{ name: "scrape", action: "Accept", from: [{ namespaces: { matchLabels: { role: "monitoring" } } }], protocols: [{ tcp: { destinationPort: { number: 9090 } } }] }] }),
    cnp("prod-baseline", { tier: "Baseline", priority: 1, subject: { namespaces: { matchLabels: { env: "prod" } } }, ingress: [{ name: "no-strangers", action: "Deny", from: [{ namespaces: { matchExpressions: [{ key: "role", operator: "In", values: ["app"] }] } }] }] }),
  ];
  for (let t = 0; t < 25 && out.length < 100; t++) {
    const team = { namespaces: { matchLabels: { team: `t${t}` } } };
    const next = `t${(t + 1) % 25}`;
    out.push(cnp(`team-${t}-deny-next`, { tier: "Admin", priority: 100 + t * 4, subject: team, ingress: [{ name: "deny-next-team", action: "Deny", from: [{ namespaces: { matchLabels: { team: next } } }], protocols: [{ tcp: { destinationPort: { range: { start: 6000, end: t === 0 ? rangeEnd : 6999 } } } }] }] }));
    out.push(cnp(`team-${t}-pass-ingress`, { tier: "Admin", priority: 101 + t * 4, subject: team, ingress: [{ name: "pass-ingress", action: "Pass", from: [{ namespaces: { matchLabels: { role: "ingress" } } }] }] }));
    out.push(cnp(`team-${t}-own`, { tier: "Admin", priority: 102 + t * 4, subject: team, egress: [{ name: "own-team", action: "Accept", to: [{ namespaces: { matchLabels: { team: `t${t}` } } }] }] }));
    if (out.length < 100) out.push(cnp(`team-${t}-no-next-cache`, { tier: "Admin", priority: 103 + t * 4, subject: team, egress: [{ name: "next-cache", action: "Deny", to: [{ pods: { namespaceSelector: { matchLabels: { team: next } }, podSelector: { matchLabels: { tier: "cache" } } } }] }] }));
  }
  return out;
}

/** native/bpf/lib/policy.h BH_POLICY_MAX_ENTRIES. */
const BH_POLICY_MAX_ENTRIES = 262_144;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

function timed(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * CPU time (user + system, every thread of the process: the garbage collector's helpers
 * too) of the last timedCpu call: on a shared machine, wall time also counts the time the
 * process waited for a CPU, which CPU time does not.
 */
let lastCpuMs = 0;
function timedCpu(f: () => void): number {
  const c0 = process.cpuUsage();
  const wall = timed(f);
  const c = process.cpuUsage(c0);
  lastCpuMs = (c.user + c.system) / 1000;
  return wall;
}

function main(): void {
  const cluster = buildCluster();
  const full: number[] = [];
  let compiler = new PolicyCompiler({ defaultMode: "enforce" });
  const cold = timed(() => compiler.compile(cluster));
  for (let run = 0; run < RUNS; run++) {
    compiler = new PolicyCompiler({ defaultMode: "enforce" });
    full.push(timed(() => compiler.compile(cluster)));
  }
  const stats = compiler.stats();

  const labelChange: number[] = [];
  const policyUpdate: number[] = [];
  const blockUpdate: number[] = [];
  let recomputedLabel = 0;
  let recomputedPolicy = 0;
  let recomputedBlock = 0;
  for (let run = 0; run < RUNS; run++) {
    // One pod's label.
    const podIndex = 1234 + run * 17;
    const original = cluster.pods[podIndex] as Pod;
    const relabelled: Pod = { ...original, metadata: { ...original.metadata, labels: { ...original.metadata.labels, version: `v${run + 2}` } } };
    const pods = [...cluster.pods];
    pods[podIndex] = relabelled;
    labelChange.push(timed(() => compiler.compile({ ...cluster, pods })));
    recomputedLabel = compiler.stats().recomputedSubjects;
    compiler.compile(cluster);

    // One policy's port.
    const policyIndex = 2 * (100 + run * 37) + 1;
    const old = cluster.policies[policyIndex] as NetworkPolicy;
    const policies = [...cluster.policies];
    policies[policyIndex] = apiPolicy(old.metadata.namespace, String(cluster.namespaces.find((n) => n.metadata.name === old.metadata.namespace)?.metadata.labels.team), 6000 + run);
    policyUpdate.push(timed(() => compiler.compile({ ...cluster, policies })));
    recomputedPolicy = compiler.stats().recomputedSubjects;
    compiler.compile(cluster);

    // One policy gains a new ipBlock.
    const nsIndex = 200 + run;
    const withBlock = [...cluster.policies];
    withBlock[2 * nsIndex] = namespacePolicy(nsIndex, namespaceName(nsIndex), `10.244.${run + 3}.128/25`);
    blockUpdate.push(timed(() => compiler.compile({ ...cluster, policies: withBlock })));
    recomputedBlock = compiler.stats().recomputedSubjects;
    compiler.compile(cluster);
  }
  // With 100 ClusterNetworkPolicies (3 runs: the machine is shared).
  const withCnps = { ...cluster, clusterNetworkPolicies: clusterPolicies() };
  const cnpFull: number[] = [];
  const cnpChange: number[] = [];
  const cnpFullCpu: number[] = [];
  const cnpChangeCpu: number[] = [];
  let cnpCompiler = new PolicyCompiler({ defaultMode: "enforce" });
  for (let run = 0; run < 3; run++) {
    cnpCompiler = new PolicyCompiler({ defaultMode: "enforce" });
    cnpFull.push(timedCpu(() => cnpCompiler.compile(withCnps)));
    cnpFullCpu.push(lastCpuMs);
  }
  const cnpStats = cnpCompiler.stats();
  let recomputedCnp = 0;
  for (let run = 0; run < 5; run++) {
    // One team policy's port range.
    const changed = { ...cluster, clusterNetworkPolicies: clusterPolicies(6100 + run) };
    cnpChange.push(timedCpu(() => cnpCompiler.compile(changed)));
    cnpChangeCpu.push(lastCpuMs);
    recomputedCnp = cnpCompiler.stats().recomputedSubjects;
    cnpCompiler.compile(withCnps);
  }
  const memory = process.memoryUsage();
  const mib = (n: number) => (n / 1024 / 1024).toFixed(0);
  console.log(`policy compile: ${cluster.pods.length} pods, ${cluster.namespaces.length} namespaces, ${cluster.nodes.length} nodes, ${cluster.policies.length} policies`);
  console.log(`snapshot: ${stats.identities} identities, ${stats.ipIdentities} ip_identities, ${stats.rules} rules`);
  console.log(`load average: ${loadavg().map((l) => l.toFixed(1)).join(" ")} on ${availableParallelism()} CPUs`);
  console.log(`first compile (cold):  ${cold.toFixed(1)} ms`);
  console.log(`full compile:          median ${median(full).toFixed(1)} ms  (runs: ${full.map((t) => t.toFixed(0)).join(", ")})`);
  console.log(`pod label change:      median ${median(labelChange).toFixed(1)} ms  (runs: ${labelChange.map((t) => t.toFixed(1)).join(", ")}; ${recomputedLabel} identities' rules recomputed)`);
  console.log(`policy update:         median ${median(policyUpdate).toFixed(1)} ms  (runs: ${policyUpdate.map((t) => t.toFixed(1)).join(", ")}; ${recomputedPolicy} recomputed)`);
  console.log(`new ipBlock (worst):   median ${median(blockUpdate).toFixed(1)} ms  (runs: ${blockUpdate.map((t) => t.toFixed(1)).join(", ")}; ${recomputedBlock} recomputed)`);
  const kernelEntries = (rules: readonly { protocol: number; port: number; endPort: number }[]) =>
    rules.reduce((n, r) => n + (r.protocol === 0 || r.port === 0 ? 1 : portPrefixes(r.port, r.endPort || r.port).length), 0);
  console.log(`kernel policy entries (port ranges split into prefixes): ${kernelEntries(compiler.current().rules)} without ClusterNetworkPolicies, ${kernelEntries(cnpCompiler.current().rules)} with (map holds ${BH_POLICY_MAX_ENTRIES})`);
  console.log(`with ${cnpStats.clusterPolicies} ClusterNetworkPolicies: ${cnpStats.rules} rules, ${cnpStats.tieredSubjects} subject directions compiled as tiers`);
  console.log(`  full compile:        median ${median(cnpFull).toFixed(1)} ms  (runs: ${cnpFull.map((t) => t.toFixed(0)).join(", ")})`);
  console.log(`  one CNP change:      median ${median(cnpChange).toFixed(1)} ms  (runs: ${cnpChange.map((t) => t.toFixed(1)).join(", ")}; ${recomputedCnp} recomputed)`);
  console.log(`  cpu time:            full median ${median(cnpFullCpu).toFixed(0)} ms, one CNP change median ${median(cnpChangeCpu).toFixed(1)} ms (user + system, all threads)`);
  console.log(`SUMMARY policy-compile: with ${cnpStats.clusterPolicies} ClusterNetworkPolicies full compile median ${median(cnpFull).toFixed(0)} ms (target ≤ 1000), one CNP change median ${median(cnpChange).toFixed(1)} ms (target ≤ 50), ${cnpStats.rules} rules (${stats.rules} without); load average ${loadavg()[0]?.toFixed(1)}`);
  console.log(`memory: rss ${mib(memory.rss)} MiB, heap used ${mib(memory.heapUsed)} MiB`);
}

main();
