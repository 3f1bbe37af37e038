// The Node flags the agent runs with, wherever it runs: the DaemonSet's NODE_OPTIONS
// (deploy/kustomize/base/agent-daemonset.yaml; test/deploy.test.ts holds the two equal),
// the lab's agents and the benches' (bench/testbed.ts AgentProcess).

/**
 * 1 MB semi-spaces: the agent's garbage is short-lived drain pieces, and V8's default
 * young generation (up to 16 MB a semi-space on 64-bit) kept ~12 MiB of RSS for nothing:
 * 80.1 → 68.2 MiB at 50k flows / 200k pps with no CPU cost seen (bench/README.md,
 * agent-load).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1"];
