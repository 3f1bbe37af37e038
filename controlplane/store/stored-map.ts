// GetFlowMap windows longer than the live maps keep (1 h): the map is built afresh from the
// durable store's records of the window, through the same FlowMapStore (same counting
// rule, same edges), with buckets sized to the window. Only records with an end in the
// namespace are read (the map of a namespace is made of its workloads, Services and their
// peers, and every edge has such an end).

import { FlowFilter, type GetFlowMapResponse } from "../../proto/gen/bulkhead/v1/observer.js";
import type { FlowStore } from "./durable.js";
import { FlowMapStore } from "./flowmap.js";
import { timestampOfMs } from "../../config/time.js";

/** About this many buckets cover a window; fewer would blur first/last seen, more cost memory. */
const BUCKETS_PER_WINDOW = 240;

export async function flowMapFromStore(store: FlowStore, query: { namespace?: string; windowMs: number; nowMs: number }): Promise<GetFlowMapResponse> {
  const { namespace, windowMs, nowMs } = query;
  const bucketMs = Math.max(60_000, Math.ceil(windowMs / BUCKETS_PER_WINDOW / 60_000) * 60_000);
  const map = new FlowMapStore({
    now: () => nowMs, fineBucketMs: bucketMs, fineWindowMs: bucketMs, coarseBucketMs: bucketMs, retentionMs: windowMs + bucketMs,
  });
  const allow = namespace === undefined ? [] : [FlowFilter.fromPartial({ namespace: [namespace] })];
  for await (const records of store.query({ since: timestampOfMs(nowMs - windowMs - bucketMs), until: timestampOfMs(nowMs), allow, deny: [], predicate: () => true })) {
    map.add(records);
  }
  return map.getMap({ ...(namespace !== undefined ? { namespace } : {}), windowMs });
}
