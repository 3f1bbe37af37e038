/* Policy: the allowed or denied (subject, peer, direction, protocol, port) entries, and the double-
 * buffered policy set they form with lib/identity.h's maps. User space writes a whole set
 * into the inactive half, flips flow_state[BH_STATE_ACTIVE_POLICY] and waits an RCU grace
 * period (sync_outer), so a packet sees one version from its first lookup to its last. */
#ifndef BULKHEAD_LIB_POLICY_H
#define BULKHEAD_LIB_POLICY_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../endpoint.h"
#include "flow.h"
#include "identity.h"

#define BH_POLICY_MAX_ENTRIES 262144

struct bh_policy_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BH_POLICY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bh_policy_key);
	__type(value, struct bh_policy_value);
};

struct bh_policy_map policy_0 SEC(".maps");
struct bh_policy_map policy_1 SEC(".maps");

/* One half of the policy set. Always passed as a constant (BH_POLICY_SET(n)) into inlined
 * code, so each lookup's call site sees exactly one map. */
struct bh_policy_set {
	void *ip_identity;
	void *identities;
	void *policy;
};

#define BH_POLICY_SET(n) \
	((struct bh_policy_set){ &ip_identity_##n, &identities_##n, &policy_##n })

/* 0 or 1: the half packets read now. */
static __always_inline __u32 bh_policy_active(void)
{
	__u32 slot = BH_STATE_ACTIVE_POLICY;
	__u32 *active = bpf_map_lookup_elem(&flow_state, &slot);

	return active && *active ? 1 : 0;
}

static __always_inline int bh_proto_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

#define BH_ICMPV6_MLD_QUERY 130
#define BH_ICMPV6_REDIRECT 137
#define BH_ICMPV6_MLD2_REPORT 143

/* Link-local control traffic that no policy judges, as ARP is never judged: ICMPv6
 * neighbour discovery and MLD (the flow key holds the ICMP type in sport). */
static __always_inline int bh_policy_exempt(const struct bh_flow_key *key)
{
	if (key->proto != IPPROTO_ICMPV6)
		return 0;
	return (key->sport >= BH_ICMPV6_MLD_QUERY && key->sport <= BH_ICMPV6_REDIRECT) ||
	       key->sport == BH_ICMPV6_MLD2_REPORT;
}

/* Whether the entries allow it: the most specific entry for the specific peer decides,
 * else the most specific for any peer (0); an entry allows unless it carries
 * BH_POLICY_DENY. No entry: denied (the caller looks up only isolated subjects). `port` is
 * the destination port in host order, 0 for protocols without ports (a rule with a port
 * never matches those: its prefix covers the port bits). Still two lookups at most: the
 * control plane precomputed every tier's decision into the entries. */
static __always_inline int bh_policy_allows(void *policy, __u32 subject, __u32 peer,
					    __u8 direction, __u8 proto, __u16 port)
{
	struct bh_policy_key key = {
		.prefixlen = BH_POLICY_PREFIX_FULL,
		.subject = subject,
		.peer = peer,
		.direction = direction,
		.proto = proto,
		.port = bpf_htons(port),
	};
	struct bh_policy_value *v = bpf_map_lookup_elem(policy, &key);

	if (v)
		return !(v->flags & BH_POLICY_DENY);
	if (peer == BH_IDENTITY_ANY)
		return 0;
	key.peer = BH_IDENTITY_ANY;
	v = bpf_map_lookup_elem(policy, &key);
	return v && !(v->flags & BH_POLICY_DENY);
}

/* The verdict of a judged packet from the strictest mode among the sides that denied it
 * (BH_MODE_OBSERVE when none did). */
static __always_inline __u8 bh_policy_verdict(__u8 deny_mode)
{
	if (deny_mode == BH_MODE_ENFORCE)
		return BH_VERDICT_DROPPED;
	if (deny_mode == BH_MODE_AUDIT)
		return BH_VERDICT_AUDIT;
	return BH_VERDICT_FORWARDED;
}

#endif
