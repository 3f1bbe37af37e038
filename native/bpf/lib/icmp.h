/* ICMP and ICMPv6 errors: the packet an error quotes. An error (destination unreachable,
 * fragmentation needed / packet too big, time exceeded, parameter problem) carries the IP
 * header and at least the first 8 L4 bytes of the packet that caused it, so it can be
 * matched to that packet's connection and follow its verdict (RELATED, as netfilter calls
 * it) instead of being judged as traffic of its own: path-MTU discovery then works through
 * isolated pods, and errors make no edges of their own. */
#ifndef BULKHEAD_LIB_ICMP_H
#define BULKHEAD_LIB_ICMP_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../endpoint.h"
#include "parse.h"
#include "policy.h"

#define BH_ICMP_DEST_UNREACH 3
#define BH_ICMP_TIME_EXCEEDED 11
#define BH_ICMP_PARAMETERPROB 12
#define BH_ICMPV6_DEST_UNREACH 1
#define BH_ICMPV6_PKT_TOOBIG 2
#define BH_ICMPV6_TIME_EXCEED 3
#define BH_ICMPV6_PARAMPROB 4
#define BH_ICMP_HLEN 8 /* type, code, checksum, and 4 bytes (unused / MTU / pointer) */

/* Whether the packet is an ICMP error (the flow key holds the type in sport). */
static __always_inline int bh_icmp_is_error(const struct bh_packet *pkt)
{
	__u16 type = pkt->key.sport;

	if (!pkt->l4_off)
		return 0;
	if (pkt->key.proto == IPPROTO_ICMP)
		return type == BH_ICMP_DEST_UNREACH || type == BH_ICMP_TIME_EXCEEDED ||
		       type == BH_ICMP_PARAMETERPROB;
	if (pkt->key.proto == IPPROTO_ICMPV6)
		return type >= BH_ICMPV6_DEST_UNREACH && type <= BH_ICMPV6_PARAMPROB;
	return 0;
}

/* The flow key of the packet an error quotes (addresses, ports or ICMP type/code,
 * protocol, family), into `inner`; 0 if the quote cannot be read: cut short, a fragment
 * past the first, an IPv6 extension header before the L4 header, or another family. */
static __always_inline int bh_icmp_quoted(struct __sk_buff *skb, const struct bh_packet *pkt,
					  struct bh_flow_key *inner)
{
	__u32 off = pkt->l4_off + BH_ICMP_HLEN;
	__u8 l4[4];

	__builtin_memset(inner, 0, sizeof(*inner));
	if (pkt->key.family == 4) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5 ||
		    (ip.frag_off & bpf_htons(BH_IPV4_FRAG_OFFSET)))
			return 0;
		inner->family = 4;
		__builtin_memcpy(inner->src, &ip.saddr, 4);
		__builtin_memcpy(inner->dst, &ip.daddr, 4);
		inner->proto = ip.protocol;
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) || ip6.version != 6 ||
		    bh_ipv6_is_ext(ip6.nexthdr))
			return 0;
		inner->family = 6;
		__builtin_memcpy(inner->src, &ip6.saddr, 16);
		__builtin_memcpy(inner->dst, &ip6.daddr, 16);
		inner->proto = ip6.nexthdr;
		off += sizeof(ip6);
	}
	if (inner->proto == IPPROTO_ICMP || inner->proto == IPPROTO_ICMPV6) {
		if (bpf_skb_load_bytes(skb, off, l4, 2))
			return 0;
		inner->sport = l4[0];
		inner->dport = l4[1];
	} else if (bh_proto_has_ports(inner->proto)) {
		if (bpf_skb_load_bytes(skb, off, l4, 4))
			return 0;
		inner->sport = ((__u16)l4[0] << 8) | l4[1];
		inner->dport = ((__u16)l4[2] << 8) | l4[3];
	}
	return 1;
}

/* The error as a packet of the quoted connection, in the error's direction: from the
 * quoted packet's destination back to its source. Only an error addressed to the quoted
 * packet's source qualifies (that is where errors go); the error's own source may be any
 * router on the path. */
static __always_inline int bh_icmp_as_related(const struct bh_flow_key *error,
					      const struct bh_flow_key *inner,
					      struct bh_flow_key *related)
{
	const __u32 *a = (const __u32 *)error->dst;
	const __u32 *b = (const __u32 *)inner->src;

	if ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]))
		return 0;
	__builtin_memcpy(related, error, sizeof(*related));
	__builtin_memcpy(related->src, inner->dst, sizeof(related->src));
	__builtin_memcpy(related->dst, inner->src, sizeof(related->dst));
	/* ICMP quoting ICMP (an echo): type and code stay as they were. */
	related->sport = bh_proto_has_ports(inner->proto) ? inner->dport : inner->sport;
	related->dport = bh_proto_has_ports(inner->proto) ? inner->sport : inner->dport;
	related->proto = inner->proto;
	return 1;
}

#endif
