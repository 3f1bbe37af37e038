// Flow records drained straight from a Datapath in the test's own process, each with a
// "VERDICT/REASON" label, for the datapath tests (enforce, conntrack, fail-closed).
import type { Datapath } from "../../agent/datapath.js";
import { decodeKey, type FlowKey } from "../../agent/records.js";
import { bh_flow_key, bh_flow_value } from "../../native/gen/abi.js";
import { Verdict, VerdictReason } from "../../proto/gen/bulkhead/v1/flow.js";

export interface Rec extends FlowKey { packets: bigint; label: string }

const VERDICT_NAME: Partial<Record<Verdict, string>> = {
  [Verdict.VERDICT_FORWARDED]: "FORWARDED", [Verdict.VERDICT_DROPPED]: "DROPPED", [Verdict.VERDICT_AUDIT]: "AUDIT",
};
const REASON_NAME: Partial<Record<VerdictReason, string>> = {
  [VerdictReason.VERDICT_REASON_UNSPECIFIED]: "NONE", [VerdictReason.VERDICT_REASON_POLICY]: "POLICY",
  [VerdictReason.VERDICT_REASON_ESTABLISHED]: "ESTABLISHED", [VerdictReason.VERDICT_REASON_SPOOFED]: "SPOOFED",
};

/** Every record counted since the previous drain. */
export function drainRecords(datapath: Datapath): Rec[] {
  const d = datapath.drain();
  const out: Rec[] = [];
  for (let i = 0; i < d.count; i++) {
    const k = decodeKey(d.keys, i * bh_flow_key.size);
    out.push({ ...k, packets: d.values.readBigUInt64LE(i * bh_flow_value.size + bh_flow_value.packets),
      label: `${VERDICT_NAME[k.verdict] ?? k.verdict}/${REASON_NAME[k.reason] ?? k.reason}` });
  }
  return out;
}
