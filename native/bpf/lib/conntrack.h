/* Conntrack: the connections this node's pods take part in, so that only a connection's
 * first packet is judged and its replies always pass. One entry per connection under a
 * key that both directions share (the lower end first), so every packet of a tracked
 * connection costs one lookup; the entry says which end opened it.
 *
 * Two tables, so that one pod cannot churn out the others' connections: a connection
 * opens in `conntrack_new` (unconfirmed) and moves to `conntrack` (confirmed) once its
 * peer has answered (TCP: the opener's first ACK after a reply that was not a RST; other
 * protocols: the first reply). A flood of SYNs or of unanswered datagrams only churns the
 * unconfirmed table; the confirmed one fills only at the rate peers accept connections.
 * Both are LRU maps (an insert never fails for want of room, it evicts the least recently
 * used); lifetimes are by state, checked on lookup: unconfirmed (half-open TCP,
 * unanswered UDP/ICMP) 30 s, confirmed TCP 6 h, other confirmed 60 s, after a FIN or RST
 * 10 s. */
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
#define BH_CT_NEW_MAX_ENTRIES 65536

#define BH_NS_PER_SEC 1000000000ULL
#define BH_CT_LIFETIME_TCP_NS (6 * 3600 * BH_NS_PER_SEC)
#define BH_CT_LIFETIME_OTHER_NS (60 * BH_NS_PER_SEC)
#define BH_CT_LIFETIME_CLOSING_NS (10 * BH_NS_PER_SEC)
#define BH_CT_LIFETIME_UNCONFIRMED_NS (30 * BH_NS_PER_SEC)
/* last_seen_ns is rewritten at most this often: a store per packet would bounce the
 * entry's cache line between CPUs. */
#define BH_CT_REFRESH_NS BH_NS_PER_SEC

#define BH_TCP_FIN 0x01
#define BH_TCP_SYN 0x02
#define BH_TCP_RST 0x04
#define BH_TCP_ACK 0x10

/* Confirmed connections: the peer answered. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BH_CT_MAX_ENTRIES);
	__type(key, struct bh_ct_key);
	__type(value, struct bh_ct_value);
} conntrack SEC(".maps");

/* Unconfirmed connections: opened, not answered yet. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BH_CT_NEW_MAX_ENTRIES);
	__type(key, struct bh_ct_key);
	__type(value, struct bh_ct_value);
} conntrack_new SEC(".maps");

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

/* Whether an entry is still alive `now`, by its table and state. */
static __always_inline int bh_ct_live(const struct bh_ct_value *v, __u8 proto, int confirmed,
				      __u64 now)
{
	__u64 lifetime;

	if (v->flags & BH_CT_CLOSING)
		lifetime = BH_CT_LIFETIME_CLOSING_NS;
	else if (!confirmed)
		lifetime = BH_CT_LIFETIME_UNCONFIRMED_NS;
	else if (proto == IPPROTO_TCP)
		lifetime = BH_CT_LIFETIME_TCP_NS;
	else
		lifetime = BH_CT_LIFETIME_OTHER_NS;
	return (__s64)(now - v->last_seen_ns) <= (__s64)lifetime;
}

static __always_inline void bh_ct_touch(struct bh_ct_value *v, const struct bh_packet *pkt,
					__u64 now)
{
	if ((__s64)(now - v->last_seen_ns) > (__s64)BH_CT_REFRESH_NS)
		v->last_seen_ns = now;
	if ((pkt->tcp_flags & (BH_TCP_FIN | BH_TCP_RST)) && !(v->flags & BH_CT_CLOSING))
		v->flags |= BH_CT_CLOSING;
}

/* The live entry of the packet's connection, refreshed; NULL when absent or expired.
 * *confirmed says which table it is in. The confirmed table is looked up first: that is
 * where an established connection's packets find their entry, in one lookup. A TCP SYN
 * without ACK opens a connection (or repeats an opening): only the unconfirmed table can
 * hold it, so it skips the confirmed one (a lookup that would miss). */
static __always_inline struct bh_ct_value *bh_ct_lookup(const struct bh_ct_tuple *t,
							const struct bh_packet *pkt, __u64 now,
							int *confirmed)
{
	struct bh_ct_value *v = 0;

	if (t->key.proto != IPPROTO_TCP || (pkt->tcp_flags & (BH_TCP_SYN | BH_TCP_ACK)) != BH_TCP_SYN)
		v = bpf_map_lookup_elem(&conntrack, &t->key);
	if (v && bh_ct_live(v, t->key.proto, 1, now)) {
		*confirmed = 1;
		bh_ct_touch(v, pkt, now);
		return v;
	}
	v = bpf_map_lookup_elem(&conntrack_new, &t->key);
	if (!v || !bh_ct_live(v, t->key.proto, 0, now))
		return 0;
	*confirmed = 0;
	bh_ct_touch(v, pkt, now);
	return v;
}

/* Whether the packet goes the way the connection's first packet went. */
static __always_inline int bh_ct_is_original(const struct bh_ct_value *v,
					     const struct bh_ct_tuple *t)
{
	return !(v->flags & BH_CT_STARTED_BY_DST) == !t->from_dst;
}

/* Moves an answered connection to the confirmed table. A refused insert is counted and
 * the connection stays unconfirmed (it still works, with the shorter lifetime). */
static __always_inline void bh_ct_confirm(const struct bh_ct_tuple *t,
					  const struct bh_ct_value *v)
{
	struct bh_ct_value c = *v;
	long err;

	c.flags |= BH_CT_REPLIED;
	err = bpf_map_update_elem(&conntrack, &t->key, &c, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		bh_counter_add(BH_C_CT_FULL, 1);
		return;
	}
	bpf_map_delete_elem(&conntrack_new, &t->key);
	if (!err)
		bh_counter_add(BH_C_CT_CONFIRMED, 1);
}

/* A passing packet of an unconfirmed connection: a reply marks it answered (and confirms
 * it, except for TCP); for TCP the opener's ACK after an answer confirms it. A TCP RST
 * in reply (a closed port, or the kernel of a SYN flooder answering a SYN-ACK) answers
 * nothing. */
static __always_inline void bh_ct_progress(const struct bh_ct_tuple *t, struct bh_ct_value *v,
					   int confirmed, const struct bh_packet *pkt)
{
	if (confirmed)
		return;
	if (!bh_ct_is_original(v, t)) {
		if (pkt->tcp_flags & BH_TCP_RST)
			return;
		if (t->key.proto != IPPROTO_TCP) {
			bh_ct_confirm(t, v);
			return;
		}
		if (!(v->flags & BH_CT_REPLIED))
			v->flags |= BH_CT_REPLIED;
		return;
	}
	if (t->key.proto == IPPROTO_TCP && (v->flags & BH_CT_REPLIED) &&
	    (pkt->tcp_flags & (BH_TCP_SYN | BH_TCP_RST | BH_TCP_ACK)) == BH_TCP_ACK)
		bh_ct_confirm(t, v);
}

/* Creates (or replaces) the unconfirmed entry of the connection this packet opens; a
 * refused insert is counted, the packet still passes. */
static __always_inline void bh_ct_create(const struct bh_ct_tuple *t, __u8 verdict, __u8 flags,
					 __u64 now, __u32 version)
{
	struct bh_ct_value v = {
		.last_seen_ns = now,
		.verdict = verdict,
		.flags = flags | (t->from_dst ? BH_CT_STARTED_BY_DST : 0),
		.policy_version = version,
	};

	if (bpf_map_update_elem(&conntrack_new, &t->key, &v, BPF_ANY))
		bh_counter_add(BH_C_CT_FULL, 1);
	else
		bh_counter_add(BH_C_CT_CREATED, 1);
}

/* Forgets a connection, whichever table holds it. */
static __always_inline void bh_ct_delete(const struct bh_ct_tuple *t)
{
	bpf_map_delete_elem(&conntrack_new, &t->key);
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

/* The version of the active policy set (flow_state[BH_STATE_POLICY_VERSION]). User space
 * writes it after the active index, so a packet that sees a version sees its policy (or
 * a newer one, which only costs a second judgement). */
static __always_inline __u32 bh_policy_version(void)
{
	__u32 slot = BH_STATE_POLICY_VERSION;
	__u32 *version = bpf_map_lookup_elem(&flow_state, &slot);

	return version ? *version : 0;
}

#endif
