/* IP fragments follow the verdict of their datagram. Only the first fragment carries the
 * L4 header, so it alone is judged (like any packet); its ports, protocol, verdict and
 * reason are remembered here under the datagram's reassembly key, and every later
 * fragment seen at the same observation point takes them over: it passes or drops with
 * its datagram and is counted in the same flow record. A later fragment whose first was
 * not seen here (lost, expired, evicted, or sent out of order) cannot be judged: the
 * caller treats it as BH_U_FRAGMENT (dropped in enforce). A TC program cannot hold a
 * packet back until its first fragment comes, and Linux sends fragments in order. */
#ifndef BULKHEAD_LIB_FRAGMENT_H
#define BULKHEAD_LIB_FRAGMENT_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../endpoint.h"
#include "parse.h"

#define BH_FRAG_MAX_ENTRIES 16384
/* Longer than any reassembly timeout (Linux: 30 s IPv4, 60 s IPv6): a fragment later
 * than that is useless to the receiver anyway. */
#define BH_FRAG_LIFETIME_NS (60ULL * 1000000000ULL)

/* The datagram at one observation point (so that the sender's from_pod and the
 * receiver's to_pod each keep their own verdict). IPv4 reassembles by (src, dst, proto,
 * id); IPv6 by (src, dst, id), so proto is 0 there. */
struct bh_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u32 ifindex;
	__u8 family;
	__u8 proto;
	__u8 point;
	__u8 pad;
};

struct bh_frag_value {
	__u64 first_seen_ns;
	__u16 sport;
	__u16 dport;
	__u8 proto;   /* the L4 protocol (IPv6: after the whole extension chain) */
	__u8 verdict; /* enum bh_verdict of the first fragment */
	__u8 reason;  /* enum bh_reason of the first fragment */
	__u8 pad;
};

/* LRU: an entry nobody needs any more (the datagram is complete) simply ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, BH_FRAG_MAX_ENTRIES);
	__type(key, struct bh_frag_key);
	__type(value, struct bh_frag_value);
} fragments SEC(".maps");

static __always_inline void bh_frag_key_of(const struct bh_packet *pkt, struct bh_frag_key *k)
{
	__builtin_memcpy(k->src, pkt->key.src, sizeof(k->src));
	__builtin_memcpy(k->dst, pkt->key.dst, sizeof(k->dst));
	k->id = pkt->frag_id;
	k->ifindex = pkt->key.ifindex;
	k->family = pkt->key.family;
	k->proto = pkt->key.family == 4 ? pkt->frag_proto : 0;
	k->point = pkt->key.point;
	k->pad = 0;
}

/* A first fragment, judged: remembers what its datagram's later fragments get. */
static __always_inline void bh_frag_remember(const struct bh_packet *pkt)
{
	struct bh_frag_key k;
	struct bh_frag_value v = {
		.first_seen_ns = bpf_ktime_get_coarse_ns(),
		.sport = pkt->key.sport,
		.dport = pkt->key.dport,
		.proto = pkt->key.proto,
		.verdict = pkt->key.verdict,
		.reason = pkt->key.reason,
	};

	bh_frag_key_of(pkt, &k);
	/* An LRU map makes room rather than fail; should it fail, the later fragments are
	 * counted as BH_U_FRAGMENT. */
	bpf_map_update_elem(&fragments, &k, &v, BPF_ANY);
}

/* A later fragment: gives it its datagram's ports, protocol, verdict and reason; 0 when
 * its first fragment was not seen here (or too long ago). */
static __always_inline int bh_frag_follow(struct bh_packet *pkt)
{
	struct bh_frag_key k;
	struct bh_frag_value *v;

	bh_frag_key_of(pkt, &k);
	v = bpf_map_lookup_elem(&fragments, &k);
	if (!v || bpf_ktime_get_coarse_ns() - v->first_seen_ns > BH_FRAG_LIFETIME_NS)
		return 0;
	pkt->key.sport = v->sport;
	pkt->key.dport = v->dport;
	pkt->key.proto = v->proto;
	pkt->key.verdict = v->verdict;
	pkt->key.reason = v->reason;
	return 1;
}

#endif
