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
