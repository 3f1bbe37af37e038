// An ingest worker thread (workers.ts starts it): a cluster model and policy compiler of its
// own, fed the same metadata events as the control plane's, admits and attributes the
// agents' columnar batches off the control plane's thread and answers with numbers per row
// (ids of endpoints, addresses and attributions it sends once; wire.ts).
import { parentPort, workerData } from "node:worker_threads";
import { ClusterState } from "../cluster/state.js";
import { Enricher } from "../cluster/enrich.js";
import { PolicyCompiler } from "../policy/compile.js";
import { clusterOf, type PolicyModeName } from "../policy/model.js";
import { ColumnAttribution } from "./attribution.js";
import { WireIds, type ToWorker } from "./wire.js";

const port = parentPort;
if (port === null) throw new Error("controlplane/ingest/worker.js runs as a worker thread (controlplane/ingest/workers.ts)");
const { defaultMode } = workerData as { defaultMode: PolicyModeName };
const state = new ClusterState();
const enricher = new Enricher(state);
const policy = new PolicyCompiler({ defaultMode });
const attribution = new ColumnAttribution(policy);
const ids = new WireIds();

port.on("message", (message: ToWorker) => {
  if (message.kind === "apply") {
    state.apply(message.events, message.observedAtNs);
    return;
  }
  if (message.kind === "compile") {
    policy.compile(clusterOf(state));
    attribution.compiled();
    return;
  }
  try {
    const admitted = enricher.admitColumns(message.node, message.columns, message.shiftMs);
    attribution.attribute(admitted);
    const answer = ids.answer(message.id, admitted);
    port.postMessage(answer, ids.transfers(answer));
  } catch (err) {
    port.postMessage({ kind: "failed", id: message.id, message: (err as Error).message });
  }
});
