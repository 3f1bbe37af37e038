/* The endpoint programs, attached on the host side of every pod's veth: from_pod on
 * TCX ingress (packets leaving the pod), to_pod on TCX egress (packets entering it).
 * Every IP packet is counted into a flow with its verdict and reason; a packet is dropped
 * only when its pod's identity is in enforce mode and policy (or anti-spoofing) denies it,
 * or when it is a frame the programs cannot judge (fail closed: lib/parse.h, counted by
 * cause, no flow). Everything else continues unchanged to the next program (TCX_NEXT).
 *
 * Who judges what: a connection to a pod or a Service is judged at the destination's
 * to_pod, after any DNAT in the node (the destination's ingress and the source pod's
 * egress together); a connection to anything else (world, host, address ranges) at the
 * source's from_pod (its egress). Conntrack lets every later packet and every reply pass
 * after one lookup. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "endpoint.h"
#include "lib/parse.h"
#include "lib/flow.h"
#include "lib/identity.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/fragment.h"

/* Not in the 6.1 uapi headers; equal to TC_ACT_UNSPEC so legacy clsact works too. */
#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

/* Parses and counts ARP (which passes); the result is bh_parse's. A later fragment
 * whose first fragment was not seen here comes back as BH_PARSE_UNJUDGED; one whose first
 * was seen comes back with the first's ports, verdict and reason in pkt->key. */
static __always_inline int bh_parse_counted(struct __sk_buff *skb, struct bh_packet *pkt,
					    __u8 point)
{
	int ret = bh_parse(skb, pkt);

	bh_counter_add(BH_C_PACKETS, pkt->packets);
	if (ret == BH_PARSE_NOT_IP)
		bh_counter_add(BH_C_NOT_IP, pkt->packets);
	if (ret != BH_PARSE_OK)
		return ret;
	pkt->key.ifindex = skb->ifindex;
	pkt->key.point = point;
	if (pkt->frag == BH_FRAG_LATER && !bh_frag_follow(pkt)) {
		pkt->cause = BH_U_FRAGMENT;
		return BH_PARSE_UNJUDGED;
	}
	return BH_PARSE_OK;
}

static __always_inline void bh_judged(struct bh_packet *pkt, __u8 verdict, __u8 reason)
{
	pkt->key.verdict = verdict;
	pkt->key.reason = reason;
}

/* Records the packet under its verdict and reason (one call site per program keeps the
 * inlined aggregation from being copied per outcome) and returns what the packet gets. */
static __always_inline int bh_finish(struct bh_packet *pkt)
{
	bh_flow_record(pkt);
	return pkt->key.verdict == BH_VERDICT_DROPPED ? TC_ACT_SHOT : TCX_NEXT;
}

static __always_inline __u16 bh_policy_port(const struct bh_flow_key *key)
{
	return bh_proto_has_ports(key->proto) ? key->dport : 0;
}

/* A spoofed source is denied in the pod's own mode: dropped, audited, or only flagged. */
static __always_inline __u8 bh_spoof_verdict(const struct bh_endpoint_value *ep)
{
	struct bh_identity_info self = bh_policy_active()
		? bh_identity(&identities_1, ep->identity)
		: bh_identity(&identities_0, ep->identity);

	return bh_policy_verdict(self.mode);
}

/* A frame the programs cannot judge: what the mode of the pod behind the veth says for a
 * denied packet (no endpoint: observed), counted by cause and verdict; no flow record. */
static __always_inline int bh_unjudged(const struct bh_packet *pkt,
				       const struct bh_endpoint_value *ep)
{
	__u8 verdict = ep ? bh_spoof_verdict(ep) : BH_VERDICT_FORWARDED;

	bh_counter_add(BH_C_UNJUDGED + verdict * BH_U_MAX + (pkt->cause % BH_U_MAX), pkt->packets);
	return verdict == BH_VERDICT_DROPPED ? TC_ACT_SHOT : TCX_NEXT;
}

/* First packet of a connection leaving pod `ep`. */
static __always_inline void bh_from_pod_new(struct bh_packet *pkt,
					   const struct bh_endpoint_value *ep,
					   const struct bh_ct_tuple *ct, __u64 now,
					   struct bh_policy_set set)
{
	__u32 peer = bh_ip_identity(set.ip_identity, pkt->key.dst, pkt->key.family);
	struct bh_identity_info dst = bh_identity(set.identities, peer);
	struct bh_identity_info self = bh_identity(set.identities, ep->identity);
	__u8 unjudged = self.mode == BH_MODE_OBSERVE ? BH_CT_UNJUDGED : 0;
	__u8 verdict = BH_VERDICT_FORWARDED;

	/* A pod or a ClusterIP: its to_pod judges both ends, after DNAT. */
	if (dst.flags & (BH_ID_ENDPOINT | BH_ID_SERVICE)) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_DEFERRED | unjudged, now);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	/* Tracked all the same, so that a later switch to enforce keeps the connection. */
	if (unjudged) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_UNJUDGED, now);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	if ((self.flags & BH_ID_EGRESS_ISOLATED) &&
	    !bh_policy_allows(set.policy, ep->identity, peer, BH_DIR_EGRESS, pkt->key.proto,
			      bh_policy_port(&pkt->key)))
		verdict = bh_policy_verdict(self.mode);
	if (verdict != BH_VERDICT_DROPPED)
		bh_ct_create(ct, verdict, 0, now);
	bh_judged(pkt, verdict, BH_REASON_POLICY);
}

/* First packet of a connection entering pod `ep`: its ingress, and the egress of the
 * source when the source is a pod. `deferred`: the entry its from_pod made on this node. */
static __always_inline void bh_to_pod_new(struct bh_packet *pkt,
					 const struct bh_endpoint_value *ep,
					 const struct bh_ct_tuple *ct, int deferred, __u64 now,
					 struct bh_policy_set set)
{
	__u32 peer = bh_ip_identity(set.ip_identity, pkt->key.src, pkt->key.family);
	struct bh_identity_info src = bh_identity(set.identities, peer);
	struct bh_identity_info self = bh_identity(set.identities, ep->identity);
	int ingress = self.mode != BH_MODE_OBSERVE;
	int egress = (src.flags & BH_ID_ENDPOINT) && src.mode != BH_MODE_OBSERVE;
	__u16 port = bh_policy_port(&pkt->key);
	__u8 deny = BH_MODE_OBSERVE;
	__u8 verdict;

	if (!ingress && !egress) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_UNJUDGED, now);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	if (ingress && (self.flags & BH_ID_INGRESS_ISOLATED) &&
	    !bh_policy_allows(set.policy, ep->identity, peer, BH_DIR_INGRESS, pkt->key.proto, port))
		deny = self.mode;
	if (egress && (src.flags & BH_ID_EGRESS_ISOLATED) && src.mode > deny &&
	    !bh_policy_allows(set.policy, peer, ep->identity, BH_DIR_EGRESS, pkt->key.proto, port))
		deny = src.mode;
	verdict = bh_policy_verdict(deny);
	if (verdict != BH_VERDICT_DROPPED)
		bh_ct_create(ct, verdict, 0, now);
	else if (deferred)
		/* Denied: replies must not find the from_pod entry of a refused connection. */
		bh_ct_delete(ct);
	bh_judged(pkt, verdict, BH_REASON_POLICY);
}

/* The verdict of a packet leaving pod `ep`, into pkt->key. */
static __always_inline void bh_from_pod_judge(struct bh_packet *pkt,
					      const struct bh_endpoint_value *ep)
{
	struct bh_ct_value *v;
	struct bh_ct_tuple ct;
	__u64 now;

	if (bh_source_spoofed(ep, &pkt->key)) {
		bh_judged(pkt, bh_spoof_verdict(ep), BH_REASON_SPOOFED);
		return;
	}
	if (bh_policy_exempt(&pkt->key))
		return;

	now = bh_ct_now();
	bh_ct_tuple_of(&pkt->key, &ct);
	/* A packet of a connection the pod opened, or a reply of one it accepted. */
	v = bh_ct_lookup(&ct, pkt, now);
	if (v) {
		bh_judged(pkt, v->verdict, bh_ct_reason(v));
		return;
	}
	if (bh_policy_active())
		bh_from_pod_new(pkt, ep, &ct, now, BH_POLICY_SET(1));
	else
		bh_from_pod_new(pkt, ep, &ct, now, BH_POLICY_SET(0));
}

/* The verdict of a packet entering pod `ep`, into pkt->key. */
static __always_inline void bh_to_pod_judge(struct bh_packet *pkt,
					    const struct bh_endpoint_value *ep)
{
	struct bh_ct_value *v;
	struct bh_ct_tuple ct;
	__u64 now;

	if (bh_policy_exempt(&pkt->key))
		return;

	now = bh_ct_now();
	bh_ct_tuple_of(&pkt->key, &ct);
	v = bh_ct_lookup(&ct, pkt, now);
	/* A reply of a connection the pod opened (even one only its from_pod has seen), or
	 * a packet of a connection judged already. */
	if (v && (!(v->flags & BH_CT_DEFERRED) || !bh_ct_is_original(v, &ct))) {
		bh_judged(pkt, v->verdict, bh_ct_reason(v));
		return;
	}
	/* New, or opened by a pod on this node whose from_pod deferred it to here. */
	if (bh_policy_active())
		bh_to_pod_new(pkt, ep, &ct, v != 0, now, BH_POLICY_SET(1));
	else
		bh_to_pod_new(pkt, ep, &ct, v != 0, now, BH_POLICY_SET(0));
}

/* Packets of interfaces without a known endpoint are only observed (FORWARDED, NONE:
 * bh_parse zeroes the key). */
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct bh_packet pkt;
	struct bh_endpoint_value *ep;
	int ret = bh_parse_counted(skb, &pkt, BH_POINT_FROM_POD);

	if (ret == BH_PARSE_NOT_IP)
		return TCX_NEXT;
	ep = bh_endpoint(skb->ifindex);
	if (ret != BH_PARSE_OK)
		return bh_unjudged(&pkt, ep);
	/* A later fragment already has its first fragment's verdict. */
	if (ep && pkt.frag != BH_FRAG_LATER)
		bh_from_pod_judge(&pkt, ep);
	if (pkt.frag == BH_FRAG_FIRST)
		bh_frag_remember(&pkt);
	return bh_finish(&pkt);
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct bh_packet pkt;
	struct bh_endpoint_value *ep;
	int ret = bh_parse_counted(skb, &pkt, BH_POINT_TO_POD);

	if (ret == BH_PARSE_NOT_IP)
		return TCX_NEXT;
	ep = bh_endpoint(skb->ifindex);
	if (ret != BH_PARSE_OK)
		return bh_unjudged(&pkt, ep);
	if (ep && pkt.frag != BH_FRAG_LATER)
		bh_to_pod_judge(&pkt, ep);
	if (pkt.frag == BH_FRAG_FIRST)
		bh_frag_remember(&pkt);
	return bh_finish(&pkt);
}

char LICENSE[] SEC("license") = "GPL";
