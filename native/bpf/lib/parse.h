/* Packet parsing for the endpoint programs: one frame in, a flow key plus the packets
 * and L3 bytes it stands for out. Reads with bpf_skb_load_bytes only, so it works on
 * both TCX ingress and egress, non-linear skbs included, and never changes the packet. */
#ifndef BULKHEAD_LIB_PARSE_H
#define BULKHEAD_LIB_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../endpoint.h"

/* Extension headers followed before giving up on finding the L4 header. */
#define BH_IPV6_MAX_EXT_HEADERS 6

#define BH_IPV4_FRAG_OFFSET 0x1fff  /* fragment offset bits of iphdr.frag_off */
#define BH_IPV6_FRAG_OFFSET 0xfff8  /* fragment offset bits of frag_hdr.frag_off */
#define BH_SCTP_COMMON_HLEN 12
#define BH_GSO_BY_FRAGS 0xffff      /* gso_size of SCTP GSO: segments are not gso_size long */

enum bh_parse_result {
	BH_PARSE_OK = 0,
	BH_PARSE_NOT_IP,
	BH_PARSE_TRUNCATED,
};

struct bh_packet {
	/* The caller fills key.ifindex and key.point. */
	struct bh_flow_key key;
	__u64 packets;   /* wire packets: the GSO segment count, at least 1 */
	__u64 bytes;     /* L3 bytes of those wire packets */
	__u32 tcp_flags; /* TCP flag byte, 0 for other protocols */
	__u32 l4_off;    /* L4 header offset in the frame, 0 when there is none (lib/icmp.h) */
};

/* Where the L3 parse left the L4 header. */
struct bh_l3 {
	__u32 off;       /* L4 header offset from the start of the frame */
	__u32 hdr_len;   /* IP header length, IPv6 extension headers included */
	__u32 bytes;     /* IPv4 total length, or IPv6 payload length + 40 */
	__u8 proto;      /* upper-layer protocol */
	__u8 has_l4;     /* 0 for non-first fragments and unknown extension chains */
};

static __always_inline int bh_parse_ipv4(struct __sk_buff *skb, __u32 off,
					 struct bh_flow_key *key, struct bh_l3 *l3)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
		return BH_PARSE_TRUNCATED;
	/* A malformed header cannot be parsed either; it lands in the same counter. */
	if (ip.version != 4 || ip.ihl < 5)
		return BH_PARSE_TRUNCATED;

	key->family = 4;
	__builtin_memcpy(key->src, &ip.saddr, 4);
	__builtin_memcpy(key->dst, &ip.daddr, 4);
	l3->hdr_len = ip.ihl * 4;
	l3->off = off + l3->hdr_len;
	l3->bytes = bpf_ntohs(ip.tot_len);
	l3->proto = ip.protocol;
	l3->has_l4 = !(ip.frag_off & bpf_htons(BH_IPV4_FRAG_OFFSET));
	return BH_PARSE_OK;
}

static __always_inline int bh_ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH ||
	       nexthdr == IPPROTO_FRAGMENT;
}

static __always_inline int bh_parse_ipv6(struct __sk_buff *skb, __u32 off,
					 struct bh_flow_key *key, struct bh_l3 *l3)
{
	struct ipv6hdr ip6;
	struct ipv6_opt_hdr ext;
	__u8 nexthdr;
	__u32 len = sizeof(ip6);
	int i;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
		return BH_PARSE_TRUNCATED;
	if (ip6.version != 6)
		return BH_PARSE_TRUNCATED;

	key->family = 6;
	__builtin_memcpy(key->src, &ip6.saddr, 16);
	__builtin_memcpy(key->dst, &ip6.daddr, 16);
	l3->bytes = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
	l3->has_l4 = 1;
	nexthdr = ip6.nexthdr;

	for (i = 0; i < BH_IPV6_MAX_EXT_HEADERS; i++) {
		if (!bh_ipv6_is_ext(nexthdr))
			break;
		/* Every one of these starts with next-header and a length (or reserved) byte. */
		if (bpf_skb_load_bytes(skb, off + len, &ext, sizeof(ext)))
			return BH_PARSE_TRUNCATED;
		if (nexthdr == IPPROTO_FRAGMENT) {
			__be16 frag_off;

			if (bpf_skb_load_bytes(skb, off + len + 2, &frag_off, sizeof(frag_off)))
				return BH_PARSE_TRUNCATED;
			nexthdr = ext.nexthdr;
			len += 8;
			if (frag_off & bpf_htons(BH_IPV6_FRAG_OFFSET)) {
				l3->has_l4 = 0;
				break;
			}
			continue;
		}
		if (nexthdr == IPPROTO_AH)
			len += (ext.hdrlen + 2) * 4;
		else
			len += (ext.hdrlen + 1) * 8;
		nexthdr = ext.nexthdr;
	}
	/* Still inside the extension chain after the last header we follow. */
	if (bh_ipv6_is_ext(nexthdr))
		l3->has_l4 = 0;

	l3->hdr_len = len;
	l3->off = off + len;
	l3->proto = nexthdr;
	return BH_PARSE_OK;
}

/* Fills ports and TCP flags; returns the L4 header length, or -1 if it is cut short. */
static __always_inline int bh_parse_l4(struct __sk_buff *skb, const struct bh_l3 *l3,
				       struct bh_packet *pkt)
{
	struct bh_flow_key *key = &pkt->key;

	switch (l3->proto) {
	case IPPROTO_TCP: {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, l3->off, &tcp, sizeof(tcp)) || tcp.doff < 5)
			return -1;
		key->sport = bpf_ntohs(tcp.source);
		key->dport = bpf_ntohs(tcp.dest);
		/* The flag byte follows the data-offset byte; tcphdr has it only as bitfields. */
		pkt->tcp_flags = ((__u8 *)&tcp)[13];
		return tcp.doff * 4;
	}
	case IPPROTO_UDP: {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, l3->off, &udp, sizeof(udp)))
			return -1;
		key->sport = bpf_ntohs(udp.source);
		key->dport = bpf_ntohs(udp.dest);
		return sizeof(udp);
	}
	case IPPROTO_SCTP: {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l3->off, ports, sizeof(ports)))
			return -1;
		key->sport = bpf_ntohs(ports[0]);
		key->dport = bpf_ntohs(ports[1]);
		return BH_SCTP_COMMON_HLEN;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 type_code[2];

		if (bpf_skb_load_bytes(skb, l3->off, type_code, sizeof(type_code)))
			return -1;
		key->sport = type_code[0];
		key->dport = type_code[1];
		return 0;
	}
	default:
		return 0;
	}
}

static __always_inline __u64 bh_wire_packets(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs > 1 ? segs : 1;
}

/* Parses one frame (offset 0 is the Ethernet header on both TCX ingress and egress).
 * pkt->packets is valid whatever the result; the rest only on BH_PARSE_OK. */
static __always_inline int bh_parse(struct __sk_buff *skb, struct bh_packet *pkt)
{
	struct bh_l3 l3 = {};
	struct ethhdr eth;
	__be16 vlan[2];
	__be16 ethertype;
	__u32 l2_len = sizeof(eth);
	__u32 gso_size, segs, l4_len;
	int ret;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->packets = bh_wire_packets(skb);

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return BH_PARSE_NOT_IP;
	ethertype = eth.h_proto;
	if (ethertype == bpf_htons(ETH_P_8021Q) || ethertype == bpf_htons(ETH_P_8021AD)) {
		/* vlan[0] is the tag control word, vlan[1] the encapsulated ethertype. */
		if (bpf_skb_load_bytes(skb, l2_len, vlan, sizeof(vlan)))
			return BH_PARSE_NOT_IP;
		ethertype = vlan[1];
		l2_len += sizeof(vlan);
	}

	if (ethertype == bpf_htons(ETH_P_IP))
		ret = bh_parse_ipv4(skb, l2_len, &pkt->key, &l3);
	else if (ethertype == bpf_htons(ETH_P_IPV6))
		ret = bh_parse_ipv6(skb, l2_len, &pkt->key, &l3);
	else
		return BH_PARSE_NOT_IP;
	if (ret != BH_PARSE_OK)
		return ret;

	pkt->key.proto = l3.proto;
	l4_len = 0;
	if (l3.has_l4) {
		ret = bh_parse_l4(skb, &l3, pkt);
		if (ret < 0)
			return BH_PARSE_TRUNCATED;
		l4_len = ret;
		pkt->l4_off = l3.off;
	}

	gso_size = skb->gso_size;
	if (!gso_size) {
		pkt->bytes = l3.bytes;
		return BH_PARSE_OK;
	}
	/* A GSO skb stands for segments that each repeat the L3+L4 headers, so its own
	 * length undercounts the wire bytes by (segments - 1) header copies. */
	segs = skb->gso_segs;
	if (!segs && gso_size != BH_GSO_BY_FRAGS &&
	    skb->len > l2_len + l3.hdr_len + l4_len)
		/* Untrusted (SKB_GSO_DODGY) GSO skbs may not have gso_segs computed yet. */
		segs = (skb->len - l2_len - l3.hdr_len - l4_len + gso_size - 1) / gso_size;
	if (!segs)
		segs = 1;
	pkt->packets = segs;
	pkt->bytes = (__u64)(skb->len - l2_len) + (__u64)(segs - 1) * (l3.hdr_len + l4_len);
	return BH_PARSE_OK;
}

#endif
