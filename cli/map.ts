// `bulkhead map` and `bulkhead status`: the flow map of a namespace and the health of the
// pipeline, from the control plane.
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import {
  GetFlowMapResponse, GetStatusResponse, GetNodesResponse, MapNodeKind, type MapNode,
} from "../proto/gen/bulkhead/v1/observer.js";
import { ConfigError } from "../config/flags.js";
import { MAX_STORED_MAP_WINDOW_MS } from "../config/wire.js";
import { outputFormat, yamlDocument } from "./output.js";
import { bearerToken, connectionOptions, connectionUsage, connectObserver, describeGrpcError } from "./client.js";
import { parseDurationMs } from "../config/time.js";
import { formatTable } from "./observe.js";

export const mapUsage = `usage: bulkhead map (-n NS | -A) [-o table|json|yaml|dot] [--window 5m] [--server ADDR] [--token-file FILE]

The flow map: who talks to whom, as workloads, Services, other namespaces' workloads,
hosts and world peers, with protocol/port, flows, packets, bytes and verdicts. With a
token scoped to namespaces, -A shows only edges with an end in them.

${connectionUsage}`;

export const statusUsage = `usage: bulkhead status [-o table|json|yaml] [--server ADDR] [--token-file FILE]

Agents, record rates and every loss counter: cluster-wide, so a token scoped to
namespaces is refused.

${connectionUsage}`;

function unary<Res>(start: (cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => start((err, res) => (err || res === undefined ? reject(err) : resolve(res))));
}

function nodeLabel(n: MapNode | undefined, id: string): string {
  if (!n) return id;
  switch (n.kind) {
    case MapNodeKind.MAP_NODE_KIND_WORKLOAD: return `${n.namespace}/${n.name}`;
    case MapNodeKind.MAP_NODE_KIND_SERVICE: return `${n.namespace}/${n.name} (svc)`;
    case MapNodeKind.MAP_NODE_KIND_HOST: return `host:${n.name}`;
    case MapNodeKind.MAP_NODE_KIND_WORLD: return `world:${n.name}`;
    default: return id;
  }
}

export function mapToDot(map: GetFlowMapResponse): string {
  const q = (s: string) => JSON.stringify(s);
  const lines = ["digraph bulkhead {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"];
  for (const n of map.nodes) {
    const shape = n.kind === MapNodeKind.MAP_NODE_KIND_SERVICE ? "ellipse"
      : n.kind === MapNodeKind.MAP_NODE_KIND_WORLD ? "diamond" : "box";
    lines.push(`  ${q(n.id)} [label=${q(nodeLabel(n, n.id))}, shape=${shape}];`);
  }
  for (const e of map.edges) {
    const color = e.dropped > 0n ? "red" : e.audit > 0n ? "orange" : "black";
    lines.push(`  ${q(e.source)} -> ${q(e.destination)} [label=${q(`${e.protocol}/${e.port} ${e.packets} pkts`)}, color=${color}];`);
  }
  lines.push("}");
  return lines.join("\n") + "\n";
}

export function mapToTable(map: GetFlowMapResponse): string {
  const byId = new Map(map.nodes.map((n) => [n.id, n]));
  const rows = [["SOURCE", "DESTINATION", "PROTO/PORT", "FLOWS", "PACKETS", "BYTES", "FORWARDED", "DROPPED", "AUDIT"]];
  for (const e of map.edges) {
    rows.push([nodeLabel(byId.get(e.source), e.source), nodeLabel(byId.get(e.destination), e.destination),
      `${e.protocol}/${e.port}`, String(e.flows), String(e.packets), String(e.bytes),
      String(e.forwarded), String(e.dropped), String(e.audit)]);
  }
  return formatTable(rows);
}

export async function runMap(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) { process.stdout.write(mapUsage); return 0; }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: {
      namespace: { type: "string", short: "n" }, "all-namespaces": { type: "boolean", short: "A" },
      output: { type: "string", short: "o" }, window: { type: "string" }, ...connectionOptions,
    } });
  } catch (err) {
    throw new ConfigError(`map: ${(err as Error).message}`);
  }
  const v = parsed.values;
  if (!v.namespace && !v["all-namespaces"]) throw new ConfigError("map: give -n NAMESPACE or -A");
  const output = outputFormat("map", v.output, ["table", "json", "yaml", "dot"]);
  const windowMs = v.window ? parseDurationMs("--window", v.window) : 5 * 60_000;
  // What the server accepts with a durable store (without one, it answers that 1 h is the most).
  if (!(windowMs > 0) || windowMs > MAX_STORED_MAP_WINDOW_MS) throw new ConfigError(`--window: "${v.window}" is outside (0, 366d]`);
  const { address, client } = connectObserver({ server: v.server, tlsCa: v["tls-ca"], token: bearerToken(v) });
  try {
    const request = {
      namespace: v["all-namespaces"] ? "" : v.namespace ?? "",
      window: { seconds: BigInt(Math.floor(windowMs / 1000)), nanos: (windowMs % 1000) * 1e6 },
    };
    const map = await unary<GetFlowMapResponse>((cb) => client.getFlowMap(request, cb));
    if (output === "json") process.stdout.write(JSON.stringify(GetFlowMapResponse.toJSON(map), null, 2) + "\n");
    else if (output === "yaml") process.stdout.write(yamlDocument(GetFlowMapResponse.toJSON(map)));
    else if (output === "dot") process.stdout.write(mapToDot(map));
    else process.stdout.write(mapToTable(map));
    return 0;
  } catch (err) {
    process.stderr.write(`bulkhead map: ${describeGrpcError(address, err as grpc.ServiceError)}\n`);
    return 1;
  } finally {
    client.close();
  }
}

function formatBytes(n: bigint): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export async function runStatus(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) { process.stdout.write(statusUsage); return 0; }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { output: { type: "string", short: "o" }, ...connectionOptions } });
  } catch (err) {
    throw new ConfigError(`status: ${(err as Error).message}`);
  }
  const output = outputFormat("status", parsed.values.output, ["table", "json", "yaml"]);
  const { address, client } = connectObserver({ server: parsed.values.server, tlsCa: parsed.values["tls-ca"], token: bearerToken(parsed.values) });
  try {
    const status = await unary<GetStatusResponse>((cb) => client.getStatus({}, cb));
    const nodes = await unary<GetNodesResponse>((cb) => client.getNodes({}, cb));
    if (output !== "table") {
      const json = { status: GetStatusResponse.toJSON(status), nodes: GetNodesResponse.toJSON(nodes) };
      process.stdout.write(output === "json" ? JSON.stringify(json, null, 2) + "\n" : yamlDocument(json));
      return 0;
    }
    const store = status.store;
    const lines = [
      `Agents: ${status.agentsConnected}/${status.agentsKnown} connected`,
      `Flows: ${status.recordsTotal} records received, ${status.recordsPerSecond.toFixed(1)}/s; ${status.flowsStored}/${status.storeCapacity} in memory`,
      ...(store === undefined ? [] : [
        `Store: ${store.kind}${store.location ? ` ${store.location}` : " (lost on restart)"}: ${store.records} records, ${formatBytes(store.bytes)}; `
          + `retention dropped ${store.retentionDroppedRecords} records, ${store.retentionDroppedPartitions} partitions`,
        ...(store.error ? [`Store error: ${store.error} (batches are not acknowledged; agents buffer them)`] : []),
      ]),
      "",
    ];
    process.stdout.write(lines.join("\n"));
    process.stdout.write(formatTable([["NODE", "CONNECTED", "VERSION", "RECORDS", "POLICY", "CAPABILITIES"],
      ...nodes.nodes.map((n) => [n.name, n.connected ? "yes" : "no", n.version, String(n.records),
        n.policyVersion === n.policyVersionLatest ? `v${n.policyVersion}` : `v${n.policyVersion} (latest v${n.policyVersionLatest})`,
        n.capabilities.join(",")])]));
    const losses = status.losses.filter((l) => l.count > 0n);
    process.stdout.write(losses.length === 0 ? "\nLosses: none\n"
      : "\n" + formatTable([["NODE", "CAUSE", "UNIT", "LOST"], ...losses.map((l) => [l.node, l.cause, l.unit, String(l.count)])]));
    // Not losses: frames the datapath could not judge, dropped in enforce (native/bpf/README.md).
    const unjudged = status.unjudged.filter((u) => u.packets > 0n);
    process.stdout.write(unjudged.length === 0 ? "Unjudged frames: none\n"
      : "\nUnjudged frames:\n" + formatTable([["NODE", "CAUSE", "VERDICT", "PACKETS"],
        ...unjudged.map((u) => [u.node, u.cause, u.verdict, String(u.packets)])]));
    // Records an agent sent naming a pod it may not (GetStatusResponse.refused).
    const refused = status.refused.filter((r) => r.records > 0n);
    if (refused.length > 0) {
      process.stdout.write("\nRefused records:\n" + formatTable([["NODE", "CAUSE", "RECORDS"], ...refused.map((r) => [r.node, r.cause, String(r.records)])]));
    }
    // Agents' clocks against the control plane's (records moved past 1 s of skew).
    const skewed = status.clocks.filter((c) => c.recordsCorrected > 0n || c.skewMs > 1000n || c.skewMs < -1000n);
    if (skewed.length > 0) {
      process.stdout.write("\nClock skew:\n" + formatTable([["NODE", "SKEW MS", "RECORDS CORRECTED"],
        ...skewed.map((c) => [c.node, String(c.skewMs), String(c.recordsCorrected)])]));
    }
    for (const e of status.metadataErrors) process.stdout.write(`metadata error: ${e}\n`);
    for (const w of status.policyWarnings) process.stdout.write(`policy warning: ${w}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`bulkhead status: ${describeGrpcError(address, err as grpc.ServiceError)}\n`);
    return 1;
  } finally {
    client.close();
  }
}
