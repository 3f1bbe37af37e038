// `bulkhead observe`: flows from the control plane, filtered like `hubble observe`.
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import {
  FlowRecord, ObservationPoint, Verdict, VerdictReason, verdictToJSON, type Endpoint,
} from "../proto/gen/bulkhead/v1/flow.js";
import { type FlowFilter, type GetFlowsResponse, GetFlowsRequest } from "../proto/gen/bulkhead/v1/observer.js";
import { FILTER_NAMES, FilterNameError, flowFilterOf, isEmptyFilter } from "../controlplane/store/filter-names.js";
import { ConfigError } from "../config/flags.js";
import { localTime, outputFormat, yamlDocument } from "./output.js";
import { bearerToken, connectionOptions, connectionUsage, connectObserver, describeGrpcError } from "./client.js";
import { parseSince, timestampOfMs } from "../config/time.js";

export const observeUsage = `usage: bulkhead observe [flags]

Flows from the control plane. Flags of different kinds must all match (AND); a flag
given twice matches either value (OR). Without -n, every namespace.

  -n, --namespace NS       an end in NS            -A, --all-namespaces  every namespace
      --pod [NS/]POD       either end is the pod (a trailing * matches a prefix)
      --from-pod [NS/]POD  the source is the pod   --to-pod [NS/]POD   the destination is the pod
  -l, --label SELECTOR     an end matches (kubectl syntax: app=web,tier!=db)
      --from-label S, --to-label S
      --workload [NS/]NAME --from-workload, --to-workload
      --service [NS/]SVC   an end is the Service   --to-service [NS/]SVC
      --ip IP|CIDR         --from-ip, --to-ip
      --verdict V          FORWARDED | DROPPED | AUDIT
      --protocol P         TCP | UDP | SCTP | ICMPv4 | ICMPv6
      --port N             either port           --to-port N
      --node NAME          observed on the node
      --direction D        ingress (entering a pod) | egress (leaving a pod)
      --since D|TIME       e.g. 5m, 7d or 2026-11-28T16:00:00Z     --until D|TIME
      --from TIME, --to TIME  the same as --since and --until (beyond the last hour the
                           control plane reads its durable store)
      --last N             the N newest matching flows (default 20 without a range, as hubble)
      --all                every matching flow (in the range, else the whole history)
  -f, --follow             keep streaming new flows; alone it starts from now, with --last,
                           --since or --all it prints those first
  -o, --output FMT         compact (default) | table | wide (adds interface, addresses, TCP flags,
                           allowing policies) | json (one FlowRecord per line, proto3 JSON) |
                           yaml (the same, one document per record)
${connectionUsage}
A token scoped to namespaces sees only flows with an end in them; -n naming another
namespace is refused.
`;

const multi = { type: "string", multiple: true } as const;

/** What `observe` prints without --last, a range or --all (hubble's default). */
export const DEFAULT_LAST = 20n;

export function buildRequest(argv: string[]): { request: GetFlowsRequest; output: string; server: string | undefined; tlsCa: string | undefined; token: string | undefined } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        ...Object.fromEntries(FILTER_NAMES.map((name) => [name, multi])),
        namespace: { ...multi, short: "n" }, "all-namespaces": { type: "boolean", short: "A" },
        label: { ...multi, short: "l" },
        since: { type: "string" }, until: { type: "string" }, from: { type: "string" }, to: { type: "string" }, last: { type: "string" },
        follow: { type: "boolean", short: "f" }, all: { type: "boolean" }, output: { type: "string", short: "o" }, ...connectionOptions,
      },
    });
  } catch (err) {
    throw new ConfigError(`observe: ${(err as Error).message}`);
  }
  const v = parsed.values;
  if (parsed.positionals.length) throw new ConfigError(`observe: unexpected argument "${parsed.positionals[0]}"`);
  const output = outputFormat("observe", v.output, ["compact", "table", "wide", "json", "yaml"]);
  // -A wins over -n: every namespace.
  const pairs: [string, string][] = [];
  for (const name of FILTER_NAMES) {
    if (name === "namespace" && v["all-namespaces"]) continue;
    const values: unknown = (v as Record<string, unknown>)[name];
    if (Array.isArray(values)) for (const value of values) pairs.push([name, String(value)]);
  }
  let filter: FlowFilter;
  try {
    filter = flowFilterOf(pairs);
  } catch (err) {
    if (err instanceof FilterNameError) throw new ConfigError(`--${err.message}`);
    throw err;
  }
  const empty = isEmptyFilter(filter);
  let last = 0n;
  if (v.last !== undefined) {
    if (!/^[0-9]+$/.test(v.last)) throw new ConfigError(`--last: "${v.last}" is not a whole number`);
    last = BigInt(v.last);
  }
  if (v.since !== undefined && v.from !== undefined) throw new ConfigError("--from: the same as --since; give one of them");
  if (v.until !== undefined && v.to !== undefined) throw new ConfigError("--to: the same as --until; give one of them");
  const since = v.since !== undefined ? ["--since", v.since] as const : v.from !== undefined ? ["--from", v.from] as const : undefined;
  const until = v.until !== undefined ? ["--until", v.until] as const : v.to !== undefined ? ["--to", v.to] as const : undefined;
  if (v.all && v.last !== undefined) throw new ConfigError("--all: every matching flow, --last: the newest N; give one of them");
  // Hubble's habits: without a range or a count, the newest 20, and a follow starts now.
  const unbounded = v.last === undefined && since === undefined && until === undefined && !v.all;
  if (unbounded && !v.follow) last = DEFAULT_LAST;
  const sinceTime = since ? parseSince(since[0], since[1]) : unbounded && v.follow ? new Date() : undefined;
  const request = GetFlowsRequest.fromPartial({
    allow: empty ? [] : [filter],
    since: sinceTime ? timestampOfMs(sinceTime.getTime()) : undefined,
    until: until ? timestampOfMs(parseSince(until[0], until[1]).getTime()) : undefined,
    last,
    follow: v.follow ?? false,
  });
  return { request, output, server: v.server, tlsCa: v["tls-ca"], token: bearerToken(v) };
}

export function endpointName(e: Endpoint | undefined, ip: string): string {
  if (!e) return ip;
  if (e.podName) return `${e.namespace}/${e.podName}`;
  if (e.service) return `${e.service} (svc)`;
  if (e.node) return `host:${e.node}`;
  if (e.world) return `world:${ip}`;
  return ip;
}

function time(r: FlowRecord): string {
  const t = r.endTime ?? r.startTime;
  if (!t) return "-";
  return localTime(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

function withPort(name: string, port: number | undefined): string {
  return port ? `${name}:${port}` : name;
}

function flags(r: FlowRecord): string {
  const l4 = r.l4;
  if (!l4) return "";
  if (l4.tcpFlags) return Object.entries(l4.tcpFlags).filter(([, on]) => on).map(([f]) => f.toUpperCase()).join(",");
  if (l4.protocol === 1 || l4.protocol === 58) return `type ${l4.icmpType} code ${l4.icmpCode}`;
  return "";
}

/** Why a flow was dropped, or would be in enforce mode (AUDIT): a forged source address,
 * or policy, with the side that denied it and the policies isolating that side ("" for
 * forwarded flows). Hubble's "Policy denied", naming what to look at. */
export function denial(r: FlowRecord): string {
  if (r.verdict !== Verdict.VERDICT_DROPPED && r.verdict !== Verdict.VERDICT_AUDIT) return "";
  if (r.verdictReason === VerdictReason.VERDICT_REASON_SPOOFED) return "spoofed source address";
  const a = r.attribution;
  const sides: string[] = [];
  if (a) {
    for (const [side, decidedBy, tierRules, isolated, allowedBy, isolatedBy] of [
      ["egress", a.egressDecidedBy, a.egressTierRules, a.egressIsolated, a.egressAllowedBy, a.egressIsolatedBy],
      ["ingress", a.ingressDecidedBy, a.ingressTierRules, a.ingressIsolated, a.ingressAllowedBy, a.ingressIsolatedBy],
    ] as const) {
      const deciding = tierRules.at(-1);
      if ((decidedBy === "Admin" || decidedBy === "Baseline") && deciding?.endsWith(": Deny")) {
        sides.push(`${side} denied by ${deciding.slice(0, -": Deny".length)}`);
      } else if (isolated && allowedBy.length === 0) {
        sides.push(`${side} isolated by ${isolatedBy.join(", ") || "?"}, no rule allows`);
      }
    }
  }
  const what = r.verdictReason === VerdictReason.VERDICT_REASON_ESTABLISHED ? "connection denied by policy" : "policy denied";
  return sides.length > 0 ? `${what}: ${sides.join("; ")}` : what;
}

export function compact(r: FlowRecord): string {
  const src = withPort(endpointName(r.source, r.ip?.source ?? "?"), r.l4?.sourcePort);
  const dst = withPort(endpointName(r.destination, r.ip?.destination ?? "?"), r.l4?.destinationPort);
  const point = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? "from-pod" : "to-pod";
  const verdict = verdictToJSON(r.verdict).replace("VERDICT_", "");
  const f = flags(r);
  const why = denial(r);
  return `${time(r)} [${r.node} ${point}] ${src} -> ${dst} ${r.l4?.protocolName ?? "?"}${f ? ` ${f}` : ""} `
    + `${verdict}${why ? ` (${why})` : ""} ${r.packets} pkts ${r.bytes} B`;
}

const TABLE_HEADER = ["TIME", "NODE", "POINT", "SOURCE", "DESTINATION", "PROTO", "VERDICT", "PACKETS", "BYTES", "DENIED"];
const WIDE_HEADER = ["TIME", "NODE", "POINT", "INTERFACE", "SOURCE", "SOURCE IP", "DESTINATION", "DESTINATION IP", "PROTO", "FLAGS",
  "VERDICT", "PACKETS", "BYTES", "ALLOWED BY", "DENIED"];

/** Flows as a table (`-o table`, or `wide`), with the header unless a followed row goes alone. */
export function flowTable(records: readonly FlowRecord[], wide: boolean, header = true): string {
  return formatTable([...(header ? [wide ? WIDE_HEADER : TABLE_HEADER] : []), ...records.map((r) => tableRow(r, wide))]);
}

function tableRow(r: FlowRecord, wide: boolean): string[] {
  const point = r.point === ObservationPoint.OBSERVATION_POINT_FROM_POD ? "from-pod" : "to-pod";
  const src = withPort(endpointName(r.source, r.ip?.source ?? "?"), r.l4?.sourcePort);
  const dst = withPort(endpointName(r.destination, r.ip?.destination ?? "?"), r.l4?.destinationPort);
  const proto = r.l4?.protocolName ?? "?";
  const verdict = verdictToJSON(r.verdict).replace("VERDICT_", "");
  if (!wide) return [time(r), r.node, point, src, dst, proto, verdict, String(r.packets), String(r.bytes), denial(r)];
  const a = r.attribution;
  const allowedBy = a === undefined ? [] : [...new Set([...a.egressAllowedBy, ...a.ingressAllowedBy])];
  return [time(r), r.node, point, r.interface || "-", src, r.ip?.source ?? "?", dst, r.ip?.destination ?? "?", proto, flags(r) || "-",
    verdict, String(r.packets), String(r.bytes), allowedBy.join(",") || "-", denial(r)];
}

export function formatTable(rows: string[][]): string {
  const widths = rows.reduce((w, row) => row.map((c, i) => Math.max(w[i] ?? 0, c.length)), [] as number[]);
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ")).join("\n") + "\n";
}

export async function runObserve(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(observeUsage);
    return 0;
  }
  const { request, output, server, tlsCa, token } = buildRequest(argv);
  const { address, client } = connectObserver({ server, tlsCa, token });
  const wide = output === "wide";
  const rows: FlowRecord[] = [];
  return await new Promise<number>((resolve) => {
    const call = client.getFlows(request);
    call.on("data", (res: GetFlowsResponse) => {
      const r = res.flow;
      if (!r) return;
      if (output === "json") process.stdout.write(JSON.stringify(FlowRecord.toJSON(r)) + "\n");
      else if (output === "yaml") process.stdout.write(yamlDocument(FlowRecord.toJSON(r)));
      else if (output === "compact") process.stdout.write(compact(r) + "\n");
      // A table's columns fit what it holds; followed, each row is its own.
      else if (!request.follow) rows.push(r);
      else process.stdout.write(flowTable([r], wide, false));
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (err.code === 1 /* CANCELLED by our own signal handler */) { resolve(0); return; }
      process.stderr.write(`bulkhead observe: ${describeGrpcError(address, err)}\n`);
      resolve(1);
    });
    call.on("end", () => {
      if ((output === "table" || output === "wide") && !request.follow) process.stdout.write(flowTable(rows, wide));
      client.close();
      resolve(0);
    });
    const stop = () => call.cancel();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}
