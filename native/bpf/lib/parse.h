/* Packet parsing for the endpoint programs: one frame in, a flow key plus the packets
 * and L3 bytes it stands for out. Reads with bpf_skb_load_bytes only, so it works on
 * both TCX ingress and egress, non-linear skbs included, and never changes the packet.
 *
 * Fail closed: a frame is either an IP packet whose flow key is exact (BH_PARSE_OK), ARP
 * (BH_PARSE_NOT_IP: passes unjudged), or something the programs cannot judge
 * (BH_PARSE_UNJUDGED, with its cause in pkt->cause: enum bh_unjudged). A header that is
 * cut short or inconsistent is never guessed at: what the receiver's stack would make of
 * it is what we cannot know. */
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
/* VLAN tags followed, the one the kernel may already have moved into skb metadata
 * (skb->vlan_present, on receive) included: 802.1ad + 802.1Q. */
#define BH_VLAN_MAX_TAGS 2

#define BH_IPV4_FRAG_OFFSET 0x1fff  /* fragment offset bits of iphdr.frag_off */
#define BH_IPV4_FRAG_MF 0x2000      /* more fragments */
#define BH_IPV6_FRAG_OFFSET 0xfff8  /* fragment offset bits of frag_hdr.frag_off */
#define BH_IPV6_FRAG_MF 0x0001
#define BH_ICMP_HLEN 8              /* ICMP and ICMPv6: type, code, checksum, 4 more */
#define BH_SCTP_COMMON_HLEN 12
#define BH_GSO_BY_FRAGS 0xffff      /* gso_size of SCTP GSO: segments are not gso_size long */

enum bh_parse_result {
	BH_PARSE_OK = 0,
	BH_PARSE_NOT_IP,    /* ARP: passes unjudged in every mode */
	BH_PARSE_UNJUDGED,  /* pkt->cause says why */
};

/* Where a packet sits in an IP datagram. */
enum bh_frag {
	BH_FRAG_NONE = 0,  /* a whole datagram (an IPv6 atomic fragment included) */
	BH_FRAG_FIRST = 1, /* offset 0, more to come: carries the L4 header */
	BH_FRAG_LATER = 2, /* offset > 0: no L4 header, judged by its first (lib/fragment.h) */
};

struct bh_packet {
	/* The caller fills key.ifindex and key.point. */
	struct bh_flow_key key;
	__u64 packets;   /* wire packets: the GSO segment count, at least 1 */
	__u64 bytes;     /* L3 bytes of those wire packets */
	__u32 tcp_flags; /* TCP flag byte, 0 for other protocols */
	__u32 frag_id;   /* IPv4 identification or IPv6 fragment header identification */
	__u8 frag;       /* enum bh_frag */
	__u8 frag_proto; /* IPv6: the fragment header's next header (the reassembly key has none) */
	__u8 cause;      /* enum bh_unjudged, on BH_PARSE_UNJUDGED */
	__u8 opened;     /* set by the judge: this packet opened a tracked connection, so its
			  * flow is most likely new (lib/flow.h inserts before looking up) */
	__u32 l4_off;    /* L4 header offset in the frame, 0 when there is none (lib/icmp.h) */
	__u32 ct_mark;   /* set by the judge: the flow's bh_flow_value.ct_mark (lib/flow.h) */
};

/* Where the L3 parse left the L4 header. */
struct bh_l3 {
	__u32 off;       /* L4 header offset from the start of the frame */
	__u32 end;       /* end of the IP packet in the frame (Ethernet padding excluded) */
	__u32 hdr_len;   /* IP header length, IPv6 extension headers included */
	__u32 bytes;     /* IPv4 total length, or IPv6 payload length + 40 */
	__u8 proto;      /* upper-layer protocol */
	__u8 has_l4;     /* 0 for non-first fragments */
};

/* Stops the parse: the frame cannot be judged, for `cause`. */
static __always_inline int bh_unjudgeable(struct bh_packet *pkt, __u8 cause)
{
	pkt->cause = cause;
	return BH_PARSE_UNJUDGED;
}

/* Where the IP packet that starts at `off` and claims `len` bytes ends in the frame; 0 if
 * the frame is shorter than that. A GSO skb's length fields may be 0 or stand for one
 * segment (BIG TCP, UDP GSO), so there the frame itself is the bound. */
static __always_inline __u32 bh_l3_end(struct __sk_buff *skb, __u32 off, __u32 len)
{
	if (skb->gso_size)
		return skb->len;
	if (off + len > skb->len)
		return 0;
	return off + len;
}

static __always_inline int bh_parse_ipv4(struct __sk_buff *skb, __u32 off,
					 struct bh_packet *pkt, struct bh_l3 *l3)
{
	struct bh_flow_key *key = &pkt->key;
	struct iphdr ip;
	__u16 frag_off;

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
		return bh_unjudgeable(pkt, BH_U_IPV4);
	if (ip.version != 4 || ip.ihl < 5)
		return bh_unjudgeable(pkt, BH_U_IPV4);

	key->family = 4;
	__builtin_memcpy(key->src, &ip.saddr, 4);
	__builtin_memcpy(key->dst, &ip.daddr, 4);
	l3->hdr_len = ip.ihl * 4;
	l3->off = off + l3->hdr_len;
	l3->bytes = bpf_ntohs(ip.tot_len);
	l3->proto = ip.protocol;
	/* Options cut short, or a total length shorter than the header or longer than the
	 * frame: the receiver drops it or reads it differently. */
	l3->end = bh_l3_end(skb, off, l3->bytes);
	if (!l3->end || l3->off > l3->end || (!skb->gso_size && l3->bytes < l3->hdr_len))
		return bh_unjudgeable(pkt, BH_U_IPV4);

	frag_off = bpf_ntohs(ip.frag_off);
	l3->has_l4 = !(frag_off & BH_IPV4_FRAG_OFFSET);
	if (frag_off & BH_IPV4_FRAG_OFFSET)
		pkt->frag = BH_FRAG_LATER;
	else if (frag_off & BH_IPV4_FRAG_MF)
		pkt->frag = BH_FRAG_FIRST;
	pkt->frag_id = bpf_ntohs(ip.id);
	pkt->frag_proto = ip.protocol;
	return BH_PARSE_OK;
}

static __always_inline int bh_ipv6_is_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_AH ||
	       nexthdr == IPPROTO_FRAGMENT;
}

/* struct frag_hdr (net/ipv6.h is not uapi). */
struct bh_ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

static __always_inline int bh_parse_ipv6(struct __sk_buff *skb, __u32 off,
					 struct bh_packet *pkt, struct bh_l3 *l3)
{
	struct bh_flow_key *key = &pkt->key;
	struct ipv6hdr ip6;
	struct ipv6_opt_hdr ext;
	__u8 nexthdr;
	__u32 len = sizeof(ip6);
	int i;

	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)))
		return bh_unjudgeable(pkt, BH_U_IPV6);
	if (ip6.version != 6)
		return bh_unjudgeable(pkt, BH_U_IPV6);

	key->family = 6;
	__builtin_memcpy(key->src, &ip6.saddr, 16);
	__builtin_memcpy(key->dst, &ip6.daddr, 16);
	l3->bytes = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
	/* A payload longer than the frame (no jumbograms on a pod's veth). */
	l3->end = bh_l3_end(skb, off, l3->bytes);
	if (!l3->end)
		return bh_unjudgeable(pkt, BH_U_IPV6);
	l3->has_l4 = 1;
	nexthdr = ip6.nexthdr;

	for (i = 0; i < BH_IPV6_MAX_EXT_HEADERS; i++) {
		if (!bh_ipv6_is_ext(nexthdr))
			break;
		/* Every one of these starts with next-header and a length (or reserved) byte. */
		if (bpf_skb_load_bytes(skb, off + len, &ext, sizeof(ext)))
			return bh_unjudgeable(pkt, BH_U_IPV6);
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct bh_ipv6_frag_hdr fh;
			__u16 frag_off;

			if (bpf_skb_load_bytes(skb, off + len, &fh, sizeof(fh)))
				return bh_unjudgeable(pkt, BH_U_IPV6);
			nexthdr = fh.nexthdr;
			len += sizeof(fh);
			frag_off = bpf_ntohs(fh.frag_off);
			pkt->frag_id = bpf_ntohl(fh.identification);
			pkt->frag_proto = fh.nexthdr;
			if (frag_off & BH_IPV6_FRAG_OFFSET) {
				/* The rest of the chain and the L4 header are in the first fragment. */
				pkt->frag = BH_FRAG_LATER;
				l3->has_l4 = 0;
				break;
			}
			/* Offset 0 without M is an atomic fragment: a whole datagram (RFC 6946). */
			if (frag_off & BH_IPV6_FRAG_MF)
				pkt->frag = BH_FRAG_FIRST;
			continue;
		}
		if (nexthdr == IPPROTO_AH)
			len += (ext.hdrlen + 2) * 4;
		else
			len += (ext.hdrlen + 1) * 8;
		nexthdr = ext.nexthdr;
	}
	/* Still inside the extension chain after the last header we follow: the L4 header,
	 * ports and all, is somewhere we do not look. */
	if (l3->has_l4 && bh_ipv6_is_ext(nexthdr))
		return bh_unjudgeable(pkt, BH_U_IPV6_EXT);

	l3->hdr_len = len;
	l3->off = off + len;
	if (l3->off > l3->end)
		return bh_unjudgeable(pkt, BH_U_IPV6);
	l3->proto = nexthdr;
	return BH_PARSE_OK;
}

/* Whether `len` bytes of L4 header fit in the IP packet (not only in the frame: Ethernet
 * padding is not a header). */
static __always_inline int bh_l4_fits(const struct bh_l3 *l3, __u32 len)
{
	return l3->off + len <= l3->end;
}

/* Fills ports and TCP flags; returns the L4 header length, or -1 if it is cut short or
 * malformed (a first fragment must carry the whole L4 header: RFC 1858, RFC 7112). */
static __always_inline int bh_parse_l4(struct __sk_buff *skb, const struct bh_l3 *l3,
				       struct bh_packet *pkt)
{
	struct bh_flow_key *key = &pkt->key;

	switch (l3->proto) {
	case IPPROTO_TCP: {
		struct tcphdr tcp;

		if (!bh_l4_fits(l3, sizeof(tcp)) ||
		    bpf_skb_load_bytes(skb, l3->off, &tcp, sizeof(tcp)) || tcp.doff < 5 ||
		    !bh_l4_fits(l3, tcp.doff * 4))
			return -1;
		key->sport = bpf_ntohs(tcp.source);
		key->dport = bpf_ntohs(tcp.dest);
		/* The flag byte follows the data-offset byte; tcphdr has it only as bitfields. */
		pkt->tcp_flags = ((__u8 *)&tcp)[13];
		return tcp.doff * 4;
	}
	case IPPROTO_UDP: {
		struct udphdr udp;

		if (!bh_l4_fits(l3, sizeof(udp)) ||
		    bpf_skb_load_bytes(skb, l3->off, &udp, sizeof(udp)))
			return -1;
		key->sport = bpf_ntohs(udp.source);
		key->dport = bpf_ntohs(udp.dest);
		return sizeof(udp);
	}
	case IPPROTO_SCTP: {
		__be16 ports[2];

		if (!bh_l4_fits(l3, BH_SCTP_COMMON_HLEN) ||
		    bpf_skb_load_bytes(skb, l3->off, ports, sizeof(ports)))
			return -1;
		key->sport = bpf_ntohs(ports[0]);
		key->dport = bpf_ntohs(ports[1]);
		return BH_SCTP_COMMON_HLEN;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 type_code[2];

		if (!bh_l4_fits(l3, BH_ICMP_HLEN) ||
		    bpf_skb_load_bytes(skb, l3->off, type_code, sizeof(type_code)))
			return -1;
		key->sport = type_code[0];
		key->dport = type_code[1];
		return 0;
	}
	default:
		/* Judged by protocol alone: policy cannot name a port for it. */
		return 0;
	}
}

static __always_inline __u64 bh_wire_packets(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs > 1 ? segs : 1;
}

static __always_inline int bh_is_vlan(__be16 ethertype)
{
	return ethertype == bpf_htons(ETH_P_8021Q) || ethertype == bpf_htons(ETH_P_8021AD);
}

/* Parses one frame (offset 0 is the Ethernet header on both TCX ingress and egress).
 * pkt->packets is valid whatever the result; pkt->cause on BH_PARSE_UNJUDGED; the rest
 * only on BH_PARSE_OK. */
static __always_inline int bh_parse(struct __sk_buff *skb, struct bh_packet *pkt)
{
	struct bh_l3 l3 = {};
	struct ethhdr eth;
	__be16 vlan[2];
	__be16 ethertype;
	__u32 l2_len = sizeof(eth);
	__u32 gso_size, segs, l4_len;
	/* On receive the kernel moves the outer tag into skb metadata before TC runs, and
	 * strips priority tags (VLAN 0) after it, however many: every tag counts. */
	__u32 tags = skb->vlan_present ? 1 : 0;
	int i, ret;

	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->packets = bh_wire_packets(skb);

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return bh_unjudgeable(pkt, BH_U_L2);
	ethertype = eth.h_proto;
	for (i = 0; i < BH_VLAN_MAX_TAGS; i++) {
		if (!bh_is_vlan(ethertype) || tags >= BH_VLAN_MAX_TAGS)
			break;
		/* vlan[0] is the tag control word, vlan[1] the encapsulated ethertype. */
		if (bpf_skb_load_bytes(skb, l2_len, vlan, sizeof(vlan)))
			return bh_unjudgeable(pkt, BH_U_L2);
		ethertype = vlan[1];
		l2_len += sizeof(vlan);
		tags++;
	}
	if (bh_is_vlan(ethertype))
		return bh_unjudgeable(pkt, BH_U_VLAN);

	if (ethertype == bpf_htons(ETH_P_IP))
		ret = bh_parse_ipv4(skb, l2_len, pkt, &l3);
	else if (ethertype == bpf_htons(ETH_P_IPV6))
		ret = bh_parse_ipv6(skb, l2_len, pkt, &l3);
	else if (ethertype == bpf_htons(ETH_P_ARP))
		/* IPv4 neighbour resolution: needed to reach anything, judged by nothing. */
		return BH_PARSE_NOT_IP;
	else
		/* A pod on a veth speaks IPv4, IPv6 and ARP (neighbour discovery and MLD are
		 * ICMPv6); anything else (MPLS, PPPoE, LLC, ...) may carry IP we would not see. */
		return bh_unjudgeable(pkt, BH_U_ETHERTYPE);
	if (ret != BH_PARSE_OK)
		return ret;

	pkt->key.proto = l3.proto;
	l4_len = 0;
	if (l3.has_l4) {
		ret = bh_parse_l4(skb, &l3, pkt);
		if (ret < 0)
			return bh_unjudgeable(pkt, BH_U_L4);
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
