/* Conntrack: the connections this node's pods take part in, so that only a connection's
 * first packet is judged and its replies always pass. One entry per connection under a
 * key that both directions share (the lower end first), so every packet of a tracked
 * connection costs one lookup; the entry says which end opened it. Entries expire after
 * an idle lifetime (checked on lookup); the LRU map evicts the least recently used when
 * full. */
#ifndef BULKHEAD_LIB_CONNTRACK_H
#define BULKHEAD_LIB_CONNTRACK_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "../endpoint.h"
#include "flow.h"
#include "parse.h"
#include "policy.h"

#define BH_CT_MAX_ENTRIES 262144

#define BH_NS_PER_SEC 1000000000ULL
#define BH_CT_LIFETIME_TCP_NS (6 * 3600 * BH_NS_PER_SEC)
#define BH_CT_LIFETIME_OTHER_NS (60 * BH_NS_PER_SEC)
#define BH_CT_LIFETIME_CLOSING_NS (10 * BH_NS_PER_SEC)
/* last_seen_ns is rewritten at most this often: a store per packet would bounce the
 * entry's cache line between CPUs. */
#define BH_CT_REFRESH_NS BH_NS_PER_SEC

#define BH_TCP_FIN 0x01
#define BH_TCP_RST 0x04

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BH_CT_MAX_ENTRIES);
	__type(key, struct bh_ct_key);
	__type(value, struct bh_ct_value);
} conntrack SEC(".maps");

/* A packet's place in its connection: the shared key, and whether the packet goes from
 * the key's dst end to its src end. */
struct bh_ct_tuple {
	struct bh_ct_key key;
	__u8 from_dst;
};

/* Any total order will do, as long as both directions compute the same one. */
static __always_inline int bh_ct_src_is_higher(const struct bh_flow_key *flow, __u16 sport,
					       __u16 dport)
{
	const __u32 *s = (const __u32 *)flow->src;
	const __u32 *d = (const __u32 *)flow->dst;
	int i;

	for (i = 0; i < 4; i++)
		if (s[i] != d[i])
			return s[i] > d[i];
	return sport > dport;
}

/* Protocols without ports (ICMP's type and code sit in the flow key's ports) track per
 * address pair. */
static __always_inline void bh_ct_tuple_of(const struct bh_flow_key *flow, struct bh_ct_tuple *t)
{
	__u16 sport = 0, dport = 0;

	if (bh_proto_has_ports(flow->proto)) {
		sport = flow->sport;
		dport = flow->dport;
	}
	t->from_dst = bh_ct_src_is_higher(flow, sport, dport);
	if (t->from_dst) {
		__builtin_memcpy(t->key.src, flow->dst, sizeof(t->key.src));
		__builtin_memcpy(t->key.dst, flow->src, sizeof(t->key.dst));
		t->key.sport = dport;
		t->key.dport = sport;
	} else {
		__builtin_memcpy(t->key.src, flow->src, sizeof(t->key.src));
		__builtin_memcpy(t->key.dst, flow->dst, sizeof(t->key.dst));
		t->key.sport = sport;
		t->key.dport = dport;
	}
	t->key.proto = flow->proto;
	t->key.family = flow->family;
	t->key.pad = 0;
}

/* The live entry of the packet's connection, refreshed; NULL when absent or expired. */
static __always_inline struct bh_ct_value *bh_ct_lookup(const struct bh_ct_tuple *t,
							const struct bh_packet *pkt, __u64 now)
{
	struct bh_ct_value *v = bpf_map_lookup_elem(&conntrack, &t->key);
	__u64 lifetime, idle;

	if (!v)
		return 0;
	if (v->flags & BH_CT_CLOSING)
		lifetime = BH_CT_LIFETIME_CLOSING_NS;
	else if (t->key.proto == IPPROTO_TCP)
		lifetime = BH_CT_LIFETIME_TCP_NS;
	else
		lifetime = BH_CT_LIFETIME_OTHER_NS;
	idle = now - v->last_seen_ns;
	if ((__s64)idle > (__s64)lifetime)
		return 0;
	if ((__s64)idle > (__s64)BH_CT_REFRESH_NS)
		v->last_seen_ns = now;
	if ((pkt->tcp_flags & (BH_TCP_FIN | BH_TCP_RST)) && !(v->flags & BH_CT_CLOSING))
		v->flags |= BH_CT_CLOSING;
	return v;
}

/* Whether the packet goes the way the connection's first packet went. */
static __always_inline int bh_ct_is_original(const struct bh_ct_value *v,
					     const struct bh_ct_tuple *t)
{
	return !(v->flags & BH_CT_STARTED_BY_DST) == !t->from_dst;
}

/* Creates (or replaces) the entry of the connection this packet opens; a full map is
 * counted, the packet still passes. */
static __always_inline void bh_ct_create(const struct bh_ct_tuple *t, __u8 verdict, __u8 flags,
					 __u64 now)
{
	struct bh_ct_value v = {
		.last_seen_ns = now,
		.verdict = verdict,
		.flags = flags | (t->from_dst ? BH_CT_STARTED_BY_DST : 0),
	};

	if (bpf_map_update_elem(&conntrack, &t->key, &v, BPF_ANY))
		bh_counter_add(BH_C_CT_FULL, 1);
}

static __always_inline void bh_ct_delete(const struct bh_ct_tuple *t)
{
	bpf_map_delete_elem(&conntrack, &t->key);
}

/* Packets of a tracked connection report ESTABLISHED unless nothing ever judged it. */
static __always_inline __u8 bh_ct_reason(const struct bh_ct_value *v)
{
	return (v->flags & BH_CT_UNJUDGED) ? BH_REASON_NONE : BH_REASON_ESTABLISHED;
}

/* The conntrack clock: coarse (a tick) is plenty for lifetimes of seconds, and cheaper. */
static __always_inline __u64 bh_ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

#endif
