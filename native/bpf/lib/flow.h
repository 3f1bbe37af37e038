/* Flow aggregation: the flow maps, the loss counters, the new-flow events, and the
 * maps user space needs to drain the flow maps without racing the programs.
 *
 * Drain protocol (user space): flip flow_state[BH_STATE_ACTIVE_MAP], update sync_outer
 * slot 0 with any 1-entry u32 array fd (the kernel runs synchronize_rcu() before the
 * update returns, so every program that read the old index has finished), then batch
 * lookup-and-delete the now inactive map: nothing writes it any more. */
#ifndef BULKHEAD_LIB_FLOW_H
#define BULKHEAD_LIB_FLOW_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "../endpoint.h"
#include "parse.h"

/* User space may override max_entries before load; it must give both maps the same. */
#define BH_FLOW_MAX_ENTRIES 65536
#define BH_EVENTS_BYTES (256 * 1024)

/* A plain hash, not LRU: an LRU map evicts live flows early and hides the loss. */
struct bh_flow_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BH_FLOW_MAX_ENTRIES);
	__type(key, struct bh_flow_key);
	__type(value, struct bh_flow_value);
};

struct bh_flow_map flows_0 SEC(".maps");
struct bh_flow_map flows_1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BH_STATE_MAX);
	__type(key, __u32);
	__type(value, __u32);
} flow_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BH_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BH_EVENTS_BYTES);
} events SEC(".maps");

/* The programs never touch these two; they exist for the drain's RCU grace period. */
struct bh_sync_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

struct bh_sync_map sync_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct bh_sync_map);
} sync_outer SEC(".maps") = {
	.values = { [0] = &sync_inner },
};

/* Set to 1 before load for an event per new flow in `events`. Off by default: the agent
 * only counted them, and the reserve/submit cost about half a reference packet per new
 * flow (bench/README.md, enforce-cost); counters[BH_C_NEW_FLOWS] counts new flows. */
const volatile __u32 emit_new_flow_events = 0;

static __always_inline void bh_counter_add(__u32 index, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &index);

	if (c)
		*c += n;
}

/* What one event takes in the ring: the record and its 8-byte header, 8-byte aligned. */
#define BH_EVENT_SLOT ((sizeof(struct bh_event) + 8 + 7) & ~7UL)

static __always_inline void bh_emit_new_flow(const struct bh_flow_key *key, __u64 now)
{
	struct bh_event *e;
	__u64 avail;

	if (!emit_new_flow_events)
		return;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		bh_counter_add(BH_C_RING_FULL, 1);
		return;
	}
	e->type = BH_EVENT_NEW_FLOW;
	e->pad = 0;
	e->ts_ns = now;
	__builtin_memcpy(&e->key, key, sizeof(*key));
	/* A wakeup per event costs more than the flow (an IPI, a VM exit here): the agent
	 * reads the ring on its drain tick, and is woken once when the unread data crosses a
	 * quarter of the ring (this record took it across). Waking on every event above the
	 * quarter, as before, cost an IPI per new flow whenever flows came faster than the
	 * agent read them (enforce-cost, new connections). A wakeup missed in a race between
	 * CPUs only delays the read to the next tick; a full ring counts RING_FULL. */
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	bpf_ringbuf_submit(e, avail >= BH_EVENTS_BYTES / 4 && avail < BH_EVENTS_BYTES / 4 + BH_EVENT_SLOT
			   ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* An observed connection's packets skip conntrack between checks. A packet of an
 * observed pod (from_pod) costs, besides its flow, a conntrack hit that is a cold hash
 * lookup of its own (about one reference packet, bench/README.md, enforce-cost), and its
 * outcome cannot change while the policy version stays the same: an entry that is
 * UNJUDGED (neither end judged under the active version), not DEFERRED (no to_pod will
 * replace it) and confirmed (no packet of this direction can confirm it) gives every
 * packet FORWARDED / NONE until the next policy change. So the judge marks the flow of a
 * packet that found such an entry with the version and the time (bh_flow_value.ct_mark),
 * and a later packet of that flow (same key, same active flow map) whose pod is still in
 * observe mode skips the conntrack lookup while the mark is at most
 * BH_CT_MARK_FRESH ticks old and of the active version: it only adds to its flow.
 *
 * What that keeps: a policy change (a switch to enforce included) invalidates every mark
 * (the version differs), so the next packet is judged again as before; a TCP SYN, FIN or
 * RST, a fragment, an ICMP error and any packet of an unconfirmed connection take the
 * full path; the entry is still looked up (refreshed, its LRU reference bit set) at least
 * once per ~1 s of traffic, far within its shortest lifetime (10 s), so it neither expires
 * nor ages out under a flowing connection; and a drain empties the marks with the flows.
 * The version is compared on its low 16 bits: a policy change 65,536 versions apart
 * within the mark's second would skip one re-judgement for that second. */
#define BH_CT_MARK_VALID 0x8000u
#define BH_CT_MARK_TICK_SHIFT 24 /* ticks of 2^24 ns, 16.8 ms */
#define BH_CT_MARK_TICKS 0x7fffu
#define BH_CT_MARK_FRESH 60 /* ticks: ~1 s */

static __always_inline __u32 bh_ct_mark(__u32 version, __u64 now)
{
	return (version << 16) | BH_CT_MARK_VALID | ((__u32)(now >> BH_CT_MARK_TICK_SHIFT) & BH_CT_MARK_TICKS);
}

static __always_inline int bh_ct_mark_fresh(__u32 mark, __u32 version, __u64 now)
{
	__u32 ticks = ((__u32)(now >> BH_CT_MARK_TICK_SHIFT) - mark) & BH_CT_MARK_TICKS;

	return (mark & BH_CT_MARK_VALID) && (mark >> 16) == (version & 0xffff) &&
	       ticks < BH_CT_MARK_FRESH;
}

/* Called once per flow map so each call site sees one map: the verifier refuses
 * to inline a lookup whose map pointer may be either of two maps. The first packet of a
 * connection skips the lookup and inserts at once: its flow key (reason POLICY, or NONE
 * in observe mode) rarely exists yet, and a lookup that misses cost a cold bucket read
 * per new connection (bench/README.md, enforce-cost); the insert finds an existing entry
 * itself (-EEXIST), and the packet is then added to it as to any other. */
static __always_inline void bh_flow_account(void *flows, const struct bh_packet *pkt,
					    __u64 now)
{
	struct bh_flow_value *v = pkt->opened ? 0 : bpf_map_lookup_elem(flows, &pkt->key);

	if (!v) {
		struct bh_flow_value fresh = {
			.packets = pkt->packets,
			.bytes = pkt->bytes,
			.first_seen_ns = now,
			.last_seen_ns = now,
			.tcp_flags = pkt->tcp_flags,
			.ct_mark = pkt->ct_mark,
		};
		long err = bpf_map_update_elem(flows, &pkt->key, &fresh, BPF_NOEXIST);

		if (!err) {
			bh_counter_add(BH_C_NEW_FLOWS, 1);
			bh_emit_new_flow(&pkt->key, now);
			return;
		}
		/* -EEXIST: another CPU inserted the same flow between our lookup and update. */
		if (err == -EEXIST)
			v = bpf_map_lookup_elem(flows, &pkt->key);
		if (!v) {
			bh_counter_add(BH_C_MAP_FULL_PACKETS, pkt->packets);
			bh_counter_add(BH_C_MAP_FULL_BYTES, pkt->bytes);
			return;
		}
	}
	__sync_fetch_and_add(&v->packets, pkt->packets);
	__sync_fetch_and_add(&v->bytes, pkt->bytes);
	v->last_seen_ns = now;
	if (pkt->tcp_flags)
		__sync_fetch_and_or(&v->tcp_flags, pkt->tcp_flags);
	if (v->ct_mark != pkt->ct_mark)
		v->ct_mark = pkt->ct_mark;
}

/* The shortcut of an observed packet (see bh_ct_mark): 1 when the packet was added to
 * its flow, whose mark is fresh; 0 when it must be judged (and recorded) in full. */
static __always_inline int bh_flow_observed(void *flows, const struct bh_packet *pkt,
					    __u32 version, __u64 now)
{
	struct bh_flow_value *v = bpf_map_lookup_elem(flows, &pkt->key);

	if (!v || !bh_ct_mark_fresh(v->ct_mark, version, now))
		return 0;
	__sync_fetch_and_add(&v->packets, pkt->packets);
	__sync_fetch_and_add(&v->bytes, pkt->bytes);
	v->last_seen_ns = now;
	if (pkt->tcp_flags)
		__sync_fetch_and_or(&v->tcp_flags, pkt->tcp_flags);
	return 1;
}

/* bh_flow_observed on the active flow map; pkt->key must be FORWARDED / NONE. */
static __always_inline int bh_flow_record_observed(const struct bh_packet *pkt, __u32 version)
{
	__u32 slot = BH_STATE_ACTIVE_MAP;
	__u32 *active = bpf_map_lookup_elem(&flow_state, &slot);
	__u64 now = bpf_ktime_get_ns();

	if (active && *active)
		return bh_flow_observed(&flows_1, pkt, version, now);
	return bh_flow_observed(&flows_0, pkt, version, now);
}

/* Adds one parsed packet (key.ifindex and key.point set) to the active flow map. */
static __always_inline void bh_flow_record(const struct bh_packet *pkt)
{
	__u32 slot = BH_STATE_ACTIVE_MAP;
	__u32 *active = bpf_map_lookup_elem(&flow_state, &slot);
	__u64 now = bpf_ktime_get_ns();

	if (active && *active)
		bh_flow_account(&flows_1, pkt, now);
	else
		bh_flow_account(&flows_0, pkt, now);
}

#endif
