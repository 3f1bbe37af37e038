// Policy from the control plane to the datapath: the local endpoints and every policy
// snapshot that arrive on the agent's stream (connection.ts) go to the agent, which writes
// them into the policy maps (policy.ts). A snapshot that fails to apply must never take the
// stream down with it: records keep flowing and the next snapshot gets its chance.
import type { Logger } from "pino";
import type { LocalEndpoint } from "../../proto/gen/bulkhead/v1/agent.js";
import type { PolicySnapshot } from "../../proto/gen/bulkhead/v1/policy.js";
import type { ControlPlaneConnection } from "./connection.js";

export interface PolicyReceiver {
  /** The control plane's view of the pods on this node. */
  onEndpoints(endpoints: LocalEndpoint[]): void;
  /** A new policy snapshot to enforce; errors are the callee's to handle and count. */
  onPolicy(snapshot: PolicySnapshot): void;
}

export function receivePolicy(connection: ControlPlaneConnection, receiver: PolicyReceiver, log: Logger): void {
  connection.on("endpoints", (endpoints) => receiver.onEndpoints(endpoints));
  connection.on("policy", (snapshot) => {
    try {
      receiver.onPolicy(snapshot);
    } catch (err) {
      log.error({ version: String(snapshot.version), err: (err as Error).message }, "policy snapshot not applied");
    }
  });
}
