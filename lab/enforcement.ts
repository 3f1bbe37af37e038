// Waiting until the lab's datapath enforces what the manifests say. The control plane's
// GetNodes tells, per node, the policy version the node's datapath enforces and the newest
// version the control plane compiled. A change is enforced when the newest version moved
// past the one seen before the change was written (so it was compiled from the new files)
// and every lab node enforces it; it must then stay put for a short settle time, because
// the control plane may have compiled while only some of a change's files were written.
import * as grpc from "@grpc/grpc-js";
import type { ObserverServiceClient, NodeStatus } from "../proto/gen/bulkhead/v1/observer.js";
import { labObserverClient } from "./controlplane.js";

export interface WaitOptions {
  /** The newest version before the change; undefined when nothing changed (convergence only). */
  after?: bigint;
  timeoutMs?: number;
  /** How long the enforced version must stay the newest. */
  settleMs?: number;
}

export const DEFAULT_ENFORCEMENT_TIMEOUT_MS = 10_000;
const DEFAULT_SETTLE_MS = 300;
const POLL_MS = 25;

export class EnforcementWatch {
  private readonly client: ObserverServiceClient;

  /** `ca`: the CA file of a control plane serving TLS (the lab's default). */
  constructor(readonly observer: string, readonly nodes: readonly string[], ca?: string) {
    this.client = labObserverClient({ observer, ca });
  }

  nodeStatus(): Promise<NodeStatus[]> {
    return new Promise((resolve, reject) => {
      this.client.getNodes({}, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err, res) => {
        if (err) reject(new Error(`GetNodes on ${this.observer}: ${err.message}`));
        else resolve(res?.nodes ?? []);
      });
    });
  }

  /** The control plane's newest policy version (the highest any lab node reports). */
  async latest(): Promise<bigint> {
    return newest(this.laggards(await this.nodeStatus(), undefined).statuses);
  }

  /** Resolves with the enforced version; rejects naming every node that lags. */
  async waitEnforced(opts: WaitOptions = {}): Promise<bigint> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_ENFORCEMENT_TIMEOUT_MS;
    const settleMs = opts.settleMs ?? DEFAULT_SETTLE_MS;
    const deadline = Date.now() + timeoutMs;
    let settled: { version: bigint; since: number } | undefined;
    let problems: string[] = [];
    for (;;) {
      let statuses: NodeStatus[] | undefined;
      try {
        statuses = await this.nodeStatus();
      } catch (err) {
        problems = [(err as Error).message];
      }
      if (statuses) {
        const check = this.laggards(statuses, opts.after);
        problems = check.problems;
        if (problems.length === 0) {
          const version = newest(check.statuses);
          if (settled?.version !== version) settled = { version, since: Date.now() };
          if (Date.now() - settled.since >= settleMs) return version;
        } else {
          settled = undefined;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`policy not enforced on every lab node within ${timeoutMs} ms (control plane ${this.observer}): ${problems.join("; ")}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  close(): void {
    this.client.close();
  }

  private laggards(statuses: NodeStatus[], after: bigint | undefined): { statuses: NodeStatus[]; problems: string[] } {
    const mine: NodeStatus[] = [];
    const problems: string[] = [];
    for (const node of this.nodes) {
      const s = statuses.find((x) => x.name === node);
      if (!s) problems.push(`${node}: unknown to the control plane`);
      else {
        mine.push(s);
        if (!s.connected) problems.push(`${node}: agent not connected`);
        else if (s.policyVersion !== s.policyVersionLatest) problems.push(`${node}: enforces version ${s.policyVersion}, latest is ${s.policyVersionLatest}`);
      }
    }
    const latest = newest(mine);
    if (after !== undefined && latest <= after) {
      problems.push(`the newest policy version is still ${latest}, as before the change was written `
        + "(the control plane has not compiled it: is policy compilation wired, and did the change alter the compiled policy?)");
    }
    return { statuses: mine, problems };
  }
}

function newest(statuses: readonly NodeStatus[]): bigint {
  return statuses.reduce((max, s) => (s.policyVersionLatest > max ? s.policyVersionLatest : max), 0n);
}
