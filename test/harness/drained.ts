// Flow records drained straight from a Datapath in the test's own process, each with a
// "VERDICT/REASON" label, for the datapath tests (enforce, conntrack, fail-closed).
import type { Datapath } from "../../agent/datapath.js";
import { decodeKey, type FlowKey } from "../../agent/records.js";
import { bh_flow_key, bh_flow_value } from "../../native/gen/abi.js";
import { Verdict, VerdictReason } from "../../proto/gen/bulkhead/v1/flow.js";

export interface Rec extends FlowKey {
  packets: bigint;
  label: string;
  /** bh_flow_value.ct_mark, the programs' own (lib/flow.h, bh_ct_mark); 0: none. */
  ctMark: number;
}

const VERDICT_NAME: Partial<Record<Verdict, string>> = {
  [Verdict.VERDICT_FORWARDED]: "FORWARDED", [Verdict.VERDICT_DROPPED]: "DROPPED", [Verdict.VERDICT_AUDIT]: "AUDIT",
};
const REASON_NAME: Partial<Record<VerdictReason, string>> = {
  [VerdictReason.VERDICT_REASON_UNSPECIFIED]: "NONE", [VerdictReason.VERDICT_REASON_POLICY]: "POLICY",
  [VerdictReason.VERDICT_REASON_ESTABLISHED]: "ESTABLISHED", [VerdictReason.VERDICT_REASON_SPOOFED]: "SPOOFED",
};

function records(d: { keys: Buffer; values: Buffer; count: number }): Rec[] {
  const out: Rec[] = [];
  for (let i = 0; i < d.count; i++) {
    const k = decodeKey(d.keys, i * bh_flow_key.size);
    const v = i * bh_flow_value.size;
    out.push({ ...k, packets: d.values.readBigUInt64LE(v + bh_flow_value.packets),
      label: `${VERDICT_NAME[k.verdict] ?? k.verdict}/${REASON_NAME[k.reason] ?? k.reason}`,
      ctMark: d.values.readUInt32LE(v + bh_flow_value.ct_mark) });
  }
  return out;
}

/** Every record counted since the previous drain. */
export function drainRecords(datapath: Datapath): Rec[] {
  return records(datapath.drain());
}

/** Every record counted since the previous drain, read without a drain: the flow maps
 * stay as they are (no flip of the active map), so a packet after this call still finds
 * the flow entries (and their conntrack marks) of the packets before it. */
export function peekRecords(datapath: Datapath): Rec[] {
  return [0, 1].flatMap((n) => records(datapath.object.map(`flows_${n}`).dump()));
}
