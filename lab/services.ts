// Service ClusterIPs as kube-proxy's nftables mode implements them, in table `ip bulkhead_lab`
// of every node netns:
//   prerouting/output (nat)  ClusterIP . l4proto . port  →  per-Service-port chain
//   per-Service-port chain   numgen random mod N        →  per-endpoint chain
//   per-endpoint chain       mark hairpin (pod → its own Service), DNAT to pod IP:targetPort
//   postrouting (nat)        masquerade marked hairpin packets so the reply comes back via the node
//   filter forward/output    a ClusterIP port without endpoints is rejected (TCP RST / ICMP)
// The whole table is replaced in one `nft -f` transaction, so packets never see half a ruleset.
import { SERVICE_CIDR, digest } from "./addressing.js";
import { resolveService } from "./endpoints.js";
import { netnsExecArgv, run } from "./netns.js";
import type { LabState } from "./state.js";
import type { Protocol } from "./topology.js";

export const NFT_TABLE = "bulkhead_lab";
const HAIRPIN_MARK = "0x00004000";

const L4: Record<Protocol, string> = { TCP: "tcp", UDP: "udp", SCTP: "sctp" };

export function renderServiceRules(state: LabState): string {
  const chains: string[] = [];
  const dispatch: string[] = [];
  for (const service of state.services) {
    for (const { port, backends } of resolveService(service, state.pods)) {
      if (backends.length === 0) continue;
      const l4 = L4[port.protocol];
      const chain = chainName(`svc-${service.namespace}-${service.name}-${port.port}-${l4}`);
      dispatch.push(`${service.clusterIP} . ${l4} . ${port.port} : goto ${chain}`);
      const endpointChains = backends.map((b) => ({ name: chainName(`${chain}-ep-${b.pod.ip}-${b.port}`), backend: b }));
      const pick = endpointChains.length === 1
        ? `goto ${endpointChains[0]?.name}`
        : `numgen random mod ${endpointChains.length} vmap { ${endpointChains.map((c, i) => `${i} : goto ${c.name}`).join(", ")} }`;
      chains.push(
        `  chain ${chain} {`,
        `    comment "${[`${service.namespace}/${service.name}`, port.name, `${port.port}/${port.protocol}`].filter(Boolean).join(" ")}"`,
        `    ${pick}`,
        "  }",
      );
      for (const { name, backend } of endpointChains) {
        chains.push(
          `  chain ${name} {`,
          `    comment "${backend.pod.namespace}/${backend.pod.name}"`,
          `    ip saddr ${backend.pod.ip} meta mark set meta mark | ${HAIRPIN_MARK}`,
          `    meta l4proto ${l4} dnat to ${backend.pod.ip}:${backend.port}`,
          "  }",
        );
      }
    }
  }
  return [
    // Create-then-delete makes the delete valid whether or not the table exists; the
    // three statements are one transaction.
    `table ip ${NFT_TABLE} {}`,
    `delete table ip ${NFT_TABLE}`,
    `table ip ${NFT_TABLE} {`,
    `  comment "bulkhead lab: Service ClusterIPs (rewritten whole on every change)"`,
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    "    jump services",
    "  }",
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    "    jump services",
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    meta mark & ${HAIRPIN_MARK} == ${HAIRPIN_MARK} masquerade`,
    "  }",
    "  chain services {",
    ...(dispatch.length > 0 ? [`    ip daddr . meta l4proto . th dport vmap {\n      ${dispatch.join(",\n      ")}\n    }`] : []),
    "  }",
    ...chains,
    "  chain reject-unserved {",
    "    type filter hook forward priority filter; policy accept;",
    `    ip daddr ${SERVICE_CIDR} meta l4proto tcp reject with tcp reset`,
    `    ip daddr ${SERVICE_CIDR} reject`,
    "  }",
    "  chain reject-unserved-local {",
    "    type filter hook output priority filter; policy accept;",
    `    ip daddr ${SERVICE_CIDR} meta l4proto tcp reject with tcp reset`,
    `    ip daddr ${SERVICE_CIDR} reject`,
    "  }",
    "}",
    "",
  ].join("\n");
}

/** nft identifiers: letters, digits, '-', '_', '.'; long names keep a hash for uniqueness. */
function chainName(raw: string): string {
  const name = raw.replace(/[^A-Za-z0-9._-]/g, "_");
  return name.length <= 200 ? name : `${name.slice(0, 180)}-${digest(raw).slice(0, 12)}`;
}

/** Applies the ruleset to every node (in parallel) unless it is unchanged since the last apply. */
export async function applyServiceRules(state: LabState, opts: { force?: boolean } = {}): Promise<void> {
  const rules = renderServiceRules(state);
  const rulesDigest = digest(rules);
  if (!opts.force && rulesDigest === state.rulesDigest) return;
  state.rulesDigest = "";
  await Promise.all(state.nodes.map(async (node) => {
    await run(netnsExecArgv(node.netns, ["nft", "-f", "-"]), { input: rules }).catch((err: Error) => {
      throw new Error(`node ${node.name} (netns ${node.netns}): applying nftables table ${NFT_TABLE}: ${err.message}`);
    });
  }));
  state.rulesDigest = rulesDigest;
}
