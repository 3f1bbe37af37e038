// `bulkhead policy what-if`: what a draft of (Cluster)NetworkPolicies would change for the flows the
// control plane recorded, asked of its Observer API (PolicyWhatIf): the edges whose verdict
// changes, before → after, with records, packets, first and last seen and what decides
// after. A CI gate: exit 0 when nothing forwarded would be dropped, 3 when something would.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { Verdict } from "../proto/gen/bulkhead/v1/flow.js";
import { PolicyWhatIfResponse, type WhatIfSide } from "../proto/gen/bulkhead/v1/observer.js";
import { ConfigError } from "../config/flags.js";
import { localTime, outputFormat, yamlDocument } from "./output.js";
import { DraftError, parseDrafts, type DraftFile } from "../controlplane/policy/draft.js";
import { POLICY_MODES } from "../controlplane/policy/model.js";
import { bearerToken, connectionOptions, connectionUsage, connectObserver, describeGrpcError } from "./client.js";
import { parseSince, timestampOfMs } from "../config/time.js";
import { formatTable } from "./observe.js";

export const whatIfUsage = `usage: bulkhead policy what-if -f DRAFT [-f DRAFT…] [--since 24h | --from TIME --to TIME]
                              [-n NS] [--mode observe|audit|enforce] [-o table|json] [--server ADDR]

Replays the flows the control plane recorded against the policies in force and against
them with the draft applied, each flow with the labels, namespace and pod its ends had
then, and lists every edge whose verdict would change: before → after (FORWARDED,
DROPPED, AUDIT), records and packets, first and last seen, and the rule or policy that
decides after. Exit 0 when nothing forwarded (or audited) would be dropped, 3 when
something would, 1 on errors (a bad draft: file, document and field; nothing replayed),
2 on a bad flag.

  -f, --filename FILE   a draft: YAML or JSON NetworkPolicies and ClusterNetworkPolicies
                        to create or replace; a policy annotated bulkhead.io/draft: delete
                        (its name, and namespace, are enough) is deleted. Repeat for several
                        files. ClusterNetworkPolicies need a token of every namespace
  --since D|TIME        replay flows from this far back (default 24h) or this time
  --from TIME, --to TIME  an absolute range (RFC 3339)
  -n, --namespace NS    only flows with an end in NS
  --mode MODE           judge as if every namespace were in MODE (enforce: what switching
                        to enforce would break); default each namespace's own mode
  -o table|json|yaml    output (default table)
${connectionUsage}`;

function unary<Res>(start: (cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => start((err, res) => (err || res === undefined ? reject(err) : resolve(res))));
}

const VERDICT_NAME: Record<number, string> = { [Verdict.VERDICT_FORWARDED]: "FORWARDED", [Verdict.VERDICT_DROPPED]: "DROPPED", [Verdict.VERDICT_AUDIT]: "AUDIT" };

function endName(id: string): string {
  const m = /^workload:([^/]+)\/([^/]+)\/(.+)$/.exec(id);
  return m ? `${m[1]}/${m[3]}` : id;
}

function decidedBy(e: { egress?: WhatIfSide | undefined; ingress?: WhatIfSide | undefined; allowedAfter: boolean }): string {
  const parts: string[] = [];
  for (const [name, s] of [["egress", e.egress], ["ingress", e.ingress]] as const) {
    if (s === undefined) continue;
    if (!s.allowed) parts.push(`${name} denied: isolated by ${s.isolatedBy.join(", ")}`);
    else if (s.allowedBy.length > 0) parts.push(`${name} allowed by ${s.allowedBy.join(", ")}`);
    else if (s.exemption !== "") parts.push(`${name} exempt (${s.exemption})`);
  }
  return parts.length > 0 ? parts.join("; ") : "no policy isolates either end";
}

const seenAt = (ts: { seconds: bigint; nanos: number } | undefined) => ts === undefined ? "" : localTime(Number(ts.seconds) * 1000 + ts.nanos / 1e6);

export function whatIfTable(r: PolicyWhatIfResponse): string {
  const rows = [["SOURCE", "DESTINATION", "PROTO/PORT", "BEFORE", "AFTER", "RECORDS", "PACKETS", "FIRST SEEN", "LAST SEEN", "DECIDED AFTER BY"]];
  for (const e of r.edges) {
    const change = (v: Verdict, allowed: boolean) => `${VERDICT_NAME[v] ?? v}${v === Verdict.VERDICT_FORWARDED && !allowed ? " (denied, observe)" : ""}`;
    rows.push([endName(e.source), endName(e.destination), `${e.protocol}/${e.port}`, change(e.before, e.allowedBefore), change(e.after, e.allowedAfter),
      String(e.records), String(e.packets), seenAt(e.firstSeen), seenAt(e.lastSeen), decidedBy(e)]);
  }
  const head = `${r.edges.length} edge${r.edges.length === 1 ? "" : "s"} would change`
    + ` (${r.replayed} of ${r.records} records replayed, ${r.evaluated} distinct evaluated, ${seenAt(r.since)} to ${seenAt(r.until)})`;
  const verdict = r.breaks ? "something forwarded today would be DROPPED" : "nothing forwarded today would be dropped";
  return `${head}\n${r.edges.length > 0 ? formatTable(rows) : ""}${r.notes.map((n) => `note: ${n}\n`).join("")}${verdict}\n`;
}

export async function runWhatIf(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) { process.stdout.write(whatIfUsage); return 0; }
  let v;
  try {
    v = parseArgs({ args: argv, strict: true, options: {
      filename: { type: "string", short: "f", multiple: true }, since: { type: "string" }, from: { type: "string" }, to: { type: "string" },
      namespace: { type: "string", short: "n" }, mode: { type: "string" }, output: { type: "string", short: "o" }, ...connectionOptions,
    } }).values;
  } catch (err) {
    throw new ConfigError(`policy what-if: ${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}`);
  }
  const files = v.filename ?? [];
  if (files.length === 0) throw new ConfigError("policy what-if: -f DRAFT: required (a YAML file of NetworkPolicies)");
  if (v.since !== undefined && (v.from !== undefined || v.to !== undefined)) throw new ConfigError("policy what-if: give --since or --from/--to, not both");
  if (v.to !== undefined && v.from === undefined) throw new ConfigError("policy what-if: --to needs --from");
  const output = outputFormat("policy what-if", v.output, ["table", "json", "yaml"]);
  if (v.mode !== undefined && !(POLICY_MODES as readonly string[]).includes(v.mode)) throw new ConfigError(`--mode: "${v.mode}" is not observe, audit or enforce`);
  const now = Date.now();
  const since = v.from !== undefined ? parseSince("--from", v.from, now) : parseSince("--since", v.since ?? "24h", now);
  const until = v.to !== undefined ? parseSince("--to", v.to, now) : new Date(now);
  const drafts: DraftFile[] = [];
  for (const name of files) {
    try {
      drafts.push({ name, content: readFileSync(name, "utf8") });
    } catch (err) {
      process.stderr.write(`bulkhead policy what-if: cannot read ${name}: ${(err as Error).message}\n`);
      return 1;
    }
  }
  // Checked here first: a bad draft is named without a round trip (the server checks again).
  try {
    parseDrafts(drafts);
  } catch (err) {
    if (!(err instanceof DraftError)) throw err;
    process.stderr.write(`bulkhead policy what-if: bad draft, nothing replayed:\n${err.message}\n`);
    return 1;
  }
  const { address, client } = connectObserver({ server: v.server, tlsCa: v["tls-ca"], token: bearerToken(v) });
  try {
    const response = await unary<PolicyWhatIfResponse>((cb) => client.policyWhatIf({
      drafts, since: timestampOfMs(since.getTime()), until: timestampOfMs(until.getTime()), namespace: v.namespace ?? "", mode: v.mode ?? "",
    }, cb));
    process.stdout.write(output === "json" ? `${JSON.stringify(PolicyWhatIfResponse.toJSON(response), null, 2)}\n`
      : output === "yaml" ? yamlDocument(PolicyWhatIfResponse.toJSON(response)) : whatIfTable(response));
    return response.breaks ? 3 : 0;
  } catch (err) {
    process.stderr.write(`bulkhead policy what-if: ${describeGrpcError(address, err as grpc.ServiceError)}\n`);
    return 1;
  } finally {
    client.close();
  }
}
