// The record layout is written once, in native/bpf/endpoint.h; the agent's decoder
// mirrors it. These tests fail if either side changes without the other.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  COUNTER, COUNTER_COUNT, EVENT, EVENT_TYPE, FLOW_KEY, FLOW_VALUE, POINT, UNJUDGED_BASE, UNJUDGED_CAUSES, UNJUDGED_VERDICTS,
  unjudgedCounter,
} from "../agent/records.js";
import { bpfObjectDir } from "../native/index.js";
import { repoRoot } from "../config/install.js";

interface BtfMember { name: string; bits_offset: number }
interface BtfType { kind: string; name?: string; size?: number; members?: BtfMember[] }

function btfStruct(object: string, name: string): { size: number; offsets: Record<string, number> } {
  const dump = JSON.parse(execFileSync("bpftool", ["-j", "btf", "dump", "file", object, "format", "raw"], { encoding: "utf8" })) as { types: BtfType[] };
  const t = dump.types.find((x) => x.kind === "STRUCT" && x.name === name);
  if (!t?.members || t.size === undefined) throw new Error(`${object} has no BTF for struct ${name}`);
  return { size: t.size, offsets: Object.fromEntries(t.members.map((m) => [m.name, m.bits_offset / 8])) };
}

describe("flow record layout", () => {
  const object = path.join(bpfObjectDir, "endpoint.bpf.o");

  it("flow key offsets in the agent match the compiled program's BTF", () => {
    const k = btfStruct(object, "bh_flow_key");
    expect(k.size).toBe(FLOW_KEY.size);
    expect(k.offsets).toMatchObject({
      src: FLOW_KEY.src, dst: FLOW_KEY.dst, sport: FLOW_KEY.sport, dport: FLOW_KEY.dport,
      ifindex: FLOW_KEY.ifindex, proto: FLOW_KEY.proto, family: FLOW_KEY.family, point: FLOW_KEY.point,
      verdict: FLOW_KEY.verdict, reason: FLOW_KEY.reason,
    });
  });

  it("flow value offsets in the agent match the compiled program's BTF", () => {
    const v = btfStruct(object, "bh_flow_value");
    expect(v.size).toBe(FLOW_VALUE.size);
    expect(v.offsets).toMatchObject({
      packets: FLOW_VALUE.packets, bytes: FLOW_VALUE.bytes, first_seen_ns: FLOW_VALUE.firstSeen,
      last_seen_ns: FLOW_VALUE.lastSeen, tcp_flags: FLOW_VALUE.tcpFlags,
    });
  });

  it("event layout and enum values match endpoint.h as a C compiler sees them", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bh-layout-"));
    try {
      const src = path.join(dir, "probe.c");
      fs.writeFileSync(src, `#include <stdio.h>
#include <stddef.h>
#include "endpoint.h"
int main(void) {
  printf("{\\"eventSize\\":%zu,\\"eventType\\":%zu,\\"eventTs\\":%zu,\\"eventKey\\":%zu,", sizeof(struct bh_event),
    offsetof(struct bh_event, type), offsetof(struct bh_event, ts_ns), offsetof(struct bh_event, key));
  printf("\\"newFlow\\":%d,\\"fromPod\\":%d,\\"toPod\\":%d,", BH_EVENT_NEW_FLOW, BH_POINT_FROM_POD, BH_POINT_TO_POD);
  printf("\\"counters\\":[%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d],\\"max\\":%d,", BH_C_PACKETS, BH_C_NOT_IP,
    BH_C_NEW_FLOWS, BH_C_MAP_FULL_PACKETS, BH_C_MAP_FULL_BYTES, BH_C_RING_FULL, BH_C_CT_FULL, BH_C_CT_CREATED, BH_C_CT_CONFIRMED,
    BH_C_CT_LOST, BH_C_CT_REJUDGED, BH_C_ICMP_RELATED, BH_C_MAX);
  printf("\\"unjudgedBase\\":%d,\\"causes\\":[%d,%d,%d,%d,%d,%d,%d,%d],\\"causeCount\\":%d,", BH_C_UNJUDGED,
    BH_U_L2, BH_U_VLAN, BH_U_ETHERTYPE, BH_U_IPV4, BH_U_IPV6, BH_U_IPV6_EXT, BH_U_L4, BH_U_FRAGMENT, BH_U_MAX);
  printf("\\"verdicts\\":[%d,%d,%d],", BH_VERDICT_FORWARDED, BH_VERDICT_DROPPED, BH_VERDICT_AUDIT);
  printf("\\"droppedFragment\\":%d}", BH_C_UNJUDGED + BH_VERDICT_DROPPED * BH_U_MAX + BH_U_FRAGMENT);
  return 0;
}
`);
      const bin = path.join(dir, "probe");
      execFileSync("cc", ["-I", path.join(repoRoot, "native", "bpf"), "-o", bin, src]);
      const c = JSON.parse(execFileSync(bin, { encoding: "utf8" })) as Record<string, number | number[]>;
      expect(c).toEqual({
        eventSize: EVENT.size, eventType: EVENT.type, eventTs: EVENT.ts, eventKey: EVENT.key,
        newFlow: EVENT_TYPE.newFlow, fromPod: POINT.fromPod, toPod: POINT.toPod,
        counters: [COUNTER.packets, COUNTER.notIp, COUNTER.newFlows, COUNTER.mapFullPackets,
          COUNTER.mapFullBytes, COUNTER.ringFull, COUNTER.ctFull, COUNTER.ctCreated, COUNTER.ctConfirmed,
          COUNTER.ctLost, COUNTER.ctRejudged, COUNTER.icmpRelated],
        max: COUNTER_COUNT,
        // enum bh_unjudged in the order of UNJUDGED_CAUSES; enum bh_verdict in that of UNJUDGED_VERDICTS.
        unjudgedBase: UNJUDGED_BASE, causes: UNJUDGED_CAUSES.map((_, i) => i), causeCount: UNJUDGED_CAUSES.length,
        verdicts: [UNJUDGED_VERDICTS.indexOf("forwarded"), UNJUDGED_VERDICTS.indexOf("dropped"), UNJUDGED_VERDICTS.indexOf("audit")],
        droppedFragment: unjudgedCounter("dropped", "fragment"),
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
