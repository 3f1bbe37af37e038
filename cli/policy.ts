// `bulkhead policy explain` (what-if: policy-whatif.ts): which policies select each end of a connection, which of their
// rules allow it, and what the datapath does with it in each mode (`cilium policy trace`
// for bulkhead). It reads the cluster from a manifests folder, as `controlplane
// --manifests` does (for a live cluster: `kubectl get ns,pods,nodes,networkpolicies -A
// -o yaml > DIR/cluster.yaml`), and judges with the policy model the datapath is proved
// against (controlplane/policy/explain.ts).
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { ConfigError } from "../config/flags.js";
import { outputFormat, yamlDocument } from "./output.js";
import { isIP } from "node:net";
import { FolderSource } from "../controlplane/metadata/folder.js";
import { ClusterState } from "../controlplane/cluster/state.js";
import { clusterOf, POLICY_MODES, PolicyModel, type Peer, type PolicyModeName } from "../controlplane/policy/model.js";
import { explain, formatExplanation } from "../controlplane/policy/explain.js";
import type { Protocol } from "../controlplane/metadata/objects.js";
import { runWhatIf, whatIfUsage } from "./policy-whatif.js";
import { connectionOptions, connectionUsage, connectObserver, describeGrpcError } from "./client.js";
import { buildRequest, compact } from "./observe.js";
import { type FlowRecord, ObservationPoint, Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import type { GetFlowsResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { runSuggest, suggestUsage } from "./policy-suggest.js";

export const explainUsage = `usage: bulkhead policy explain --manifests DIR --from NS/POD|IP --to NS/POD|IP --port N[/TCP|UDP|SCTP]
                              [--default-mode observe|audit|enforce] [-o text|json|yaml]
                              [--flows [--since D|TIME] [--server ADDR] ...]

Why a connection is allowed or denied: the policies that select the source (egress) and
the destination (ingress), the rules that allow it ("ns/policy ingress[0]"), exemptions,
and what the datapath does with it: with the namespaces' modes as they are, and in each
mode. Judged by the policy model the datapath is proved against.

  --manifests DIR       the cluster: Namespaces, Pods, Nodes and NetworkPolicies as YAML or
                        JSON files (what \`controlplane --manifests\` reads); for a live cluster,
                        kubectl get ns,pods,nodes,networkpolicies -A -o yaml > DIR/cluster.yaml
  --from, --to          a pod (NS/POD) or an address; a Service is judged at its backend pods
  --port N[/PROTO]      destination port; protocol TCP (default), UDP or SCTP
  --default-mode MODE   mode of namespaces without a bulkhead.io/mode annotation (default
                        observe, as the control plane's)
  -o text|json|yaml     output (default text)
  --flows               also the flows the control plane recorded for this pair (source,
                        destination, port and protocol): packets by verdict at each end and
                        the newest records, with the policies that denied them
  --since D|TIME        how far back --flows looks (default 1h; as observe --since)
${connectionUsage}`;

const PROTOCOLS: readonly Protocol[] = ["TCP", "UDP", "SCTP"];
const CONNECTION_FLAGS = Object.keys(connectionOptions) as (keyof typeof connectionOptions)[];

function end(flag: string, raw: string | undefined): Peer {
  if (raw === undefined || raw === "") throw new ConfigError(`--${flag}: required (NS/POD or an IP address)`);
  if (isIP(raw) !== 0) return { ip: raw };
  const parts = raw.split("/");
  if (parts.length !== 2 || parts[0] === "" || parts[1] === "") throw new ConfigError(`--${flag}: "${raw}" is neither NS/POD nor an IP address`);
  return { pod: raw };
}

function portOf(raw: string | undefined): { port: number; protocol: Protocol } {
  const m = /^([0-9]{1,5})(?:\/([A-Za-z]+))?$/.exec(raw ?? "");
  const port = Number(m?.[1]);
  const protocol = (m?.[2] ?? "TCP").toUpperCase() as Protocol;
  if (!m || port < 1 || port > 65535) throw new ConfigError(`--port: "${raw ?? ""}" is not a port 1-65535, optionally /TCP, /UDP or /SCTP`);
  if (!PROTOCOLS.includes(protocol)) throw new ConfigError(`--port: protocol "${m[2]}" is not TCP, UDP or SCTP`);
  return { port, protocol };
}

export const policyUsage = `${explainUsage}
${whatIfUsage}
${suggestUsage}`;

export async function runPolicy(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || ((argv.includes("--help") || argv.includes("-h")) && !["explain", "what-if", "suggest"].includes(sub))) {
    (sub === undefined ? process.stderr : process.stdout).write(policyUsage);
    return sub === undefined ? 2 : 0;
  }
  if (sub === "what-if") return runWhatIf(rest);
  if (sub === "suggest") return runSuggest(rest);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(explainUsage);
    return 0;
  }
  if (sub !== "explain") throw new ConfigError(`policy: unknown command "${sub}" (policy explain, policy what-if, policy suggest)`);
  let v;
  try {
    v = parseArgs({
      args: rest, strict: true,
      options: {
        manifests: { type: "string" }, from: { type: "string" }, to: { type: "string" }, port: { type: "string" },
        "default-mode": { type: "string" }, output: { type: "string", short: "o" },
        flows: { type: "boolean" }, since: { type: "string" }, ...connectionOptions,
      },
    }).values;
  } catch (err) {
    throw new ConfigError(`policy explain: ${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}`);
  }
  if (v.manifests === undefined) throw new ConfigError("--manifests: required (a folder of Kubernetes manifests)");
  const from = end("from", v.from);
  const to = end("to", v.to);
  const { port, protocol } = portOf(v.port);
  const defaultMode = (v["default-mode"] ?? "observe") as PolicyModeName;
  if (!POLICY_MODES.includes(defaultMode)) throw new ConfigError(`--default-mode: "${v["default-mode"]}" is not observe, audit or enforce`);
  const output = outputFormat("policy explain", v.output, ["text", "json", "yaml"]);
  if (!v.flows) {
    for (const flag of ["since", ...CONNECTION_FLAGS] as const) {
      if (v[flag] !== undefined) throw new ConfigError(`--${flag}: only with --flows (the flows seen for the pair)`);
    }
  }
  // The same filter observe builds from these flags, checked before anything is judged.
  const flowsRequest = v.flows ? buildRequest([
    ...endFilter("from", from), ...endFilter("to", to), "--to-port", String(port), "--protocol", protocol, "--since", v.since ?? "1h",
    ...CONNECTION_FLAGS.flatMap((flag) => (v[flag] === undefined ? [] : [`--${flag}`, v[flag]])),
  ]) : undefined;

  const state = new ClusterState();
  const source = new FolderSource({ dir: v.manifests });
  try {
    await source.start(state);
  } finally {
    await source.stop();
  }
  // As the control plane does: a bad file is named and left out, the rest is judged.
  for (const e of source.errors()) process.stderr.write(`bulkhead policy explain: ${e.file === undefined ? "" : `${e.file}: `}${e.message}\n`);
  const model = new PolicyModel(clusterOf(state), { defaultMode });
  for (const p of model.errors()) process.stderr.write(`bulkhead policy explain: ${p.object}: ${p.message}\n`);
  let explanation;
  try {
    explanation = explain(model, { from, to, protocol, port });
  } catch (err) {
    process.stderr.write(`bulkhead policy explain: ${(err as Error).message} in ${v.manifests}\n`);
    return 1;
  }
  let seen: FlowsSeen | undefined;
  if (flowsRequest !== undefined) {
    const { address, client } = connectObserver({ server: flowsRequest.server, tlsCa: flowsRequest.tlsCa, token: flowsRequest.token });
    try {
      seen = flowsSeen(await new Promise<FlowRecord[]>((resolve, reject) => {
        const records: FlowRecord[] = [];
        const call = client.getFlows(flowsRequest.request);
        call.on("data", (res: GetFlowsResponse) => { if (res.flow) records.push(res.flow); });
        call.on("error", reject);
        call.on("end", () => resolve(records));
      }), v.since ?? "1h");
    } catch (err) {
      process.stderr.write(`bulkhead policy explain: the flows seen: ${describeGrpcError(address, err as grpc.ServiceError)}\n`);
      return 1;
    } finally {
      client.close();
    }
  }
  const result = seen === undefined ? explanation : { ...explanation, seen };
  process.stdout.write(output === "json" ? `${JSON.stringify(result, null, 2)}\n`
    : output === "yaml" ? yamlDocument(result) : formatExplanation(explanation) + (seen === undefined ? "" : formatSeen(seen)));
  return 0;
}

/** observe's filter flags for one end: a pod by name, else its address. */
function endFilter(side: "from" | "to", peer: Peer): string[] {
  return "pod" in peer && peer.pod !== undefined ? [`--${side}-pod`, peer.pod] : [`--${side}-ip`, (peer as { ip: string }).ip];
}

/** How many packets each end's veth recorded, by verdict. */
interface PacketsByVerdict { forwarded: number; dropped: number; audit: number }

/** What the control plane recorded for the pair: the datapath's own account of the connection. */
interface FlowsSeen {
  since: string;
  records: number;
  /** At the source's veth (egress) and at the destination's (ingress); an end outside the cluster has none. */
  egress: PacketsByVerdict;
  ingress: PacketsByVerdict;
  /** The newest records (at most 10), as observe prints them. */
  newest: string[];
}

const NEWEST = 10;

function flowsSeen(records: readonly FlowRecord[], since: string): FlowsSeen {
  const tally = (): PacketsByVerdict => ({ forwarded: 0, dropped: 0, audit: 0 });
  const seen: FlowsSeen = { since, records: records.length, egress: tally(), ingress: tally(), newest: [] };
  for (const r of records) {
    const side = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? seen.egress : seen.ingress;
    const packets = Number(r.packets);
    if (r.verdict === Verdict.VERDICT_FORWARDED) side.forwarded += packets;
    else if (r.verdict === Verdict.VERDICT_DROPPED) side.dropped += packets;
    else if (r.verdict === Verdict.VERDICT_AUDIT) side.audit += packets;
  }
  // GetFlows answers oldest first.
  seen.newest = records.slice(-NEWEST).map(compact);
  return seen;
}

function formatSeen(s: FlowsSeen): string {
  const packets = (p: PacketsByVerdict) => `${p.forwarded} forwarded, ${p.dropped} dropped, ${p.audit} audit`;
  const lines = ["", `seen since ${s.since}: ${s.records} records`];
  if (s.records > 0) {
    lines.push(`  leaving the source (egress):       ${packets(s.egress)} packets`, `  entering the destination (ingress): ${packets(s.ingress)} packets`,
      `  newest${s.records > s.newest.length ? ` ${s.newest.length}` : ""}:`, ...s.newest.map((line) => `    ${line}`));
  }
  return `${lines.join("\n")}\n`;
}
