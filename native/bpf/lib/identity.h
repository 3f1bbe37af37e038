/* Identities: which identity an address belongs to (ip_identity_N, longest prefix), how
 * an identity is judged (identities_N: mode and isolation), and which pod is behind each
 * host-side veth on this node (endpoints). The _0/_1 maps are halves of the double-
 * buffered policy set (lib/policy.h selects one per packet); endpoints is node-local and
 * written entry by entry. */
#ifndef BULKHEAD_LIB_IDENTITY_H
#define BULKHEAD_LIB_IDENTITY_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../endpoint.h"

#define BH_IP_IDENTITY_MAX_ENTRIES 65536
#define BH_IDENTITIES_MAX_ENTRIES 65536
/* Overridable (-D) so that test/restart.test.ts can build an object with another map
 * layout (make -C native/bpf layout-variant). */
#ifndef BH_ENDPOINTS_MAX_ENTRIES
#define BH_ENDPOINTS_MAX_ENTRIES 4096
#endif

/* LPM tries must be created with BPF_F_NO_PREALLOC. */
struct bh_ip_identity_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, BH_IP_IDENTITY_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bh_ip_key);
	__type(value, struct bh_ip_value);
};

struct bh_ip_identity_map ip_identity_0 SEC(".maps");
struct bh_ip_identity_map ip_identity_1 SEC(".maps");

struct bh_identities_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BH_IDENTITIES_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct bh_identity_value);
};

struct bh_identities_map identities_0 SEC(".maps");
struct bh_identities_map identities_1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BH_ENDPOINTS_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct bh_endpoint_value);
} endpoints SEC(".maps");

/* How an identity is judged; an identity missing from the map is observed. */
struct bh_identity_info {
	__u8 mode;  /* enum bh_mode */
	__u8 flags; /* enum bh_identity_flags */
};

static __always_inline struct bh_endpoint_value *bh_endpoint(__u32 ifindex)
{
	return bpf_map_lookup_elem(&endpoints, &ifindex);
}

static __always_inline struct bh_identity_info bh_identity(void *identities, __u32 id)
{
	struct bh_identity_value *v = bpf_map_lookup_elem(identities, &id);
	struct bh_identity_info info = { .mode = BH_MODE_OBSERVE, .flags = 0 };

	if (v) {
		info.mode = v->mode;
		info.flags = v->flags;
	}
	return info;
}

/* The identity of an address (a flow key's src or dst); no matching prefix → world. */
static __always_inline __u32 bh_ip_identity(void *ip_identity, const __u8 *addr, __u8 family)
{
	struct bh_ip_key key = { .prefixlen = 128 };
	struct bh_ip_value *v;

	if (family == 4) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], addr, 4);
	} else {
		__builtin_memcpy(key.addr, addr, 16);
	}
	v = bpf_map_lookup_elem(ip_identity, &key);
	return v ? v->identity : BH_IDENTITY_WORLD;
}

/* Whether the source of a packet leaving the pod is not one of the pod's own addresses.
 * IPv6 link-local (fe80::/10, neighbour discovery) and unspecified (::, DAD) sources are
 * the pod's too. */
static __always_inline int bh_source_spoofed(const struct bh_endpoint_value *ep,
					     const struct bh_flow_key *key)
{
	const __u32 *src = (const __u32 *)key->src;

	if (key->family == 4)
		return !ep->has_ip4 || src[0] != *(const __u32 *)ep->ip4;
	if (key->src[0] == 0xfe && (key->src[1] & 0xc0) == 0x80)
		return 0;
	if (!(src[0] | src[1] | src[2] | src[3]))
		return 0;
	if (!ep->has_ip6)
		return 1;
	{
		const __u32 *own = (const __u32 *)ep->ip6;

		return ((src[0] ^ own[0]) | (src[1] ^ own[1]) | (src[2] ^ own[2]) |
			(src[3] ^ own[3])) != 0;
	}
}

#endif
