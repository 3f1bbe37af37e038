// `bulkhead policy suggest`: least-privilege NetworkPolicies for a namespace from the flows
// the control plane recorded (Observer API SuggestPolicies), as YAML to review and apply,
// or JSON; each policy carries the flows that justify its rules (bulkhead.io/justification).
import { parseArgs } from "node:util";
import type * as grpc from "@grpc/grpc-js";
import { stringify } from "yaml";
import type { SuggestPoliciesResponse } from "../proto/gen/bulkhead/v1/observer.js";
import { ConfigError } from "../config/flags.js";
import { outputFormat } from "./output.js";
import { bearerToken, connectionOptions, connectionUsage, connectObserver, describeGrpcError } from "./client.js";
import { parseSince, timestampOfMs } from "../config/time.js";

export const suggestUsage = `usage: bulkhead policy suggest -n NS [--since 24h | --from TIME --to TIME] [-o yaml|json]
                              [--min-prefix-v4 24] [--min-prefix-v6 64] [--server ADDR]

Least-privilege NetworkPolicies for the workloads of a namespace, learned from the flows
the control plane recorded (forwarded ones only): per workload a policy selecting it by
its stable labels (never pod-template-hash and other per-rollout labels), one rule per
peer it was seen to talk to (namespaceSelector + podSelector; outside addresses as
ipBlocks of the minimum prefix), ports as observed (by name where the pod names them),
DNS egress, and a default deny for the namespace, so traffic never observed is denied.
Every rule is justified by its flows (annotation bulkhead.io/justification: records,
packets, first and last seen). Before it is printed, the suggestion is checked: the
same history replayed against it in enforce drops nothing. Exit 0, 1 on errors.

  -n, --namespace NS    the namespace (required)
  --since D|TIME        learn from flows this far back (default 24h) or since this time
  --from TIME, --to TIME  an absolute range (RFC 3339)
  --min-prefix-v4 N     outside IPv4 peers as ipBlocks of /N (default 24; 32: each address)
  --min-prefix-v6 N     outside IPv6 peers as ipBlocks of /N (default 64)
  -o yaml|json          output (default yaml, one document per policy)
${connectionUsage}`;

function prefix(flag: string, raw: string | undefined, max: number): number {
  if (raw === undefined) return 0;
  const n = Number(raw);
  if (!/^[0-9]+$/.test(raw) || n > max) throw new ConfigError(`--${flag}: "${raw}" is not a prefix length 0-${max}`);
  return n;
}

export async function runSuggest(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) { process.stdout.write(suggestUsage); return 0; }
  let v;
  try {
    v = parseArgs({ args: argv, strict: true, options: {
      namespace: { type: "string", short: "n" }, since: { type: "string" }, from: { type: "string" }, to: { type: "string" },
      output: { type: "string", short: "o" }, "min-prefix-v4": { type: "string" }, "min-prefix-v6": { type: "string" }, ...connectionOptions,
    } }).values;
  } catch (err) {
    throw new ConfigError(`policy suggest: ${(err as Error).message.replace(/\. To specify a positional.*$/s, "")}`);
  }
  if (v.namespace === undefined || v.namespace === "") throw new ConfigError("policy suggest: -n NAMESPACE: required");
  if (v.since !== undefined && (v.from !== undefined || v.to !== undefined)) throw new ConfigError("policy suggest: give --since or --from/--to, not both");
  if (v.to !== undefined && v.from === undefined) throw new ConfigError("policy suggest: --to needs --from");
  const output = outputFormat("policy suggest", v.output, ["yaml", "json"]);
  const minPrefixV4 = prefix("min-prefix-v4", v["min-prefix-v4"], 32), minPrefixV6 = prefix("min-prefix-v6", v["min-prefix-v6"], 128);
  const now = Date.now();
  const since = v.from !== undefined ? parseSince("--from", v.from, now) : parseSince("--since", v.since ?? "24h", now);
  const until = v.to !== undefined ? parseSince("--to", v.to, now) : new Date(now);
  const { address, client } = connectObserver({ server: v.server, tlsCa: v["tls-ca"], token: bearerToken(v) });
  try {
    const response = await new Promise<SuggestPoliciesResponse>((resolve, reject) => client.suggestPolicies(
      { namespace: v.namespace ?? "", since: timestampOfMs(since.getTime()), until: timestampOfMs(until.getTime()), minPrefixV4, minPrefixV6 },
      (err, res) => (err || res === undefined ? reject(err) : resolve(res))));
    const policies = response.policies.map((p) => JSON.parse(p) as unknown);
    if (output === "json") {
      process.stdout.write(`${JSON.stringify({ records: Number(response.records), notes: response.notes, policies }, null, 2)}\n`);
    } else {
      const head = [`# bulkhead policy suggest -n ${v.namespace}: learned from ${response.records} records`, ...response.notes.map((n) => `# note: ${n}`)];
      process.stdout.write(`${head.join("\n")}\n${policies.map((p) => stringify(p)).join("---\n")}`);
    }
    return 0;
  } catch (err) {
    process.stderr.write(`bulkhead policy suggest: ${describeGrpcError(address, err as grpc.ServiceError)}\n`);
    return 1;
  } finally {
    client.close();
  }
}
