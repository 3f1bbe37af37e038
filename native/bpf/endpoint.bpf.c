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
#include "lib/icmp.h"

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

/* The verdict on a connection from `client` to `server` (identities): the server's
 * ingress, and the client's egress when the client is a pod; a side in observe mode is
 * not judged. *judged = 0 when neither side was. The stricter denying mode decides. */
static __always_inline __u8 bh_judge_connection(struct bh_policy_set set, __u32 client,
						struct bh_identity_info c, __u32 server,
						struct bh_identity_info s, __u8 proto, __u16 port,
						int *judged)
{
	int ingress = s.mode != BH_MODE_OBSERVE;
	int egress = (c.flags & BH_ID_ENDPOINT) && c.mode != BH_MODE_OBSERVE;
	__u8 deny = BH_MODE_OBSERVE;

	*judged = ingress || egress;
	if (ingress && (s.flags & BH_ID_INGRESS_ISOLATED) &&
	    !bh_policy_allows(set.policy, server, client, BH_DIR_INGRESS, proto, port))
		deny = s.mode;
	if (egress && (c.flags & BH_ID_EGRESS_ISOLATED) && c.mode > deny &&
	    !bh_policy_allows(set.policy, client, server, BH_DIR_EGRESS, proto, port))
		deny = c.mode;
	return bh_policy_verdict(deny);
}

/* Gives a tracked connection the verdict `verdict` under policy `version`. */
static __always_inline void bh_ct_set_verdict(struct bh_ct_value *v, __u8 verdict, int judged,
					      __u32 version)
{
	v->verdict = verdict;
	v->flags = (v->flags & ~(BH_CT_DEFERRED | BH_CT_UNJUDGED)) | (judged ? 0 : BH_CT_UNJUDGED);
	v->policy_version = version;
}

/* A tracked connection met after a policy change (a mode switch included): its original
 * direction is judged again under the active policy, as its first packet would be now.
 * A connection that policy drops keeps its entry with verdict DROPPED, so that its packets
 * in either direction keep being dropped: without the entry, the first packet of whichever
 * end spoke next would be judged as a new connection from that end (a server's packet as
 * a connection from the server), which policy may allow. The entry expires with its idle
 * lifetime, or is let through again by a later policy that allows it. */
static __always_inline void bh_ct_rejudge(const struct bh_ct_tuple *t, struct bh_ct_value *v,
					 __u32 version, struct bh_policy_set set)
{
	int by_dst = (v->flags & BH_CT_STARTED_BY_DST) != 0;
	const __u8 *client_ip = by_dst ? t->key.dst : t->key.src;
	const __u8 *server_ip = by_dst ? t->key.src : t->key.dst;
	__u16 port = by_dst ? t->key.sport : t->key.dport;
	__u32 client = bh_ip_identity(set.ip_identity, client_ip, t->key.family);
	__u32 server = bh_ip_identity(set.ip_identity, server_ip, t->key.family);
	int judged;
	__u8 verdict = bh_judge_connection(set, client, bh_identity(set.identities, client),
					   server, bh_identity(set.identities, server),
					   t->key.proto, port, &judged);

	bh_counter_add(BH_C_CT_REJUDGED, 1);
	bh_ct_set_verdict(v, verdict, judged, version);
}

/* Cold paths are subprograms (__noinline): each is in the object once, out of the way of
 * the established packet's path, instead of inlined at every call site and once per
 * policy half. */
static __noinline void bh_ct_rejudge_active(const struct bh_ct_tuple *t, struct bh_ct_value *v,
					    __u32 version)
{
	if (bh_policy_active())
		bh_ct_rejudge(t, v, version, BH_POLICY_SET(1));
	else
		bh_ct_rejudge(t, v, version, BH_POLICY_SET(0));
}

/* A packet of a tracked connection: the entry's verdict (after judging the connection
 * again if the policy changed since), reason ESTABLISHED, or POLICY for a connection a
 * policy change denied. `progress`: the packet is part of the connection (not an ICMP
 * error about it), so it can confirm it. A connection deferred to its destination's
 * to_pod is not judged here. */
static __always_inline void bh_tracked(struct bh_packet *pkt, const struct bh_ct_tuple *ct,
				       struct bh_ct_value *v, int confirmed, __u32 version,
				       int progress)
{
	if (v->policy_version != version && !(v->flags & BH_CT_DEFERRED))
		bh_ct_rejudge_active(ct, v, version);
	if (v->verdict == BH_VERDICT_DROPPED) {
		bh_judged(pkt, BH_VERDICT_DROPPED, BH_REASON_POLICY);
		return;
	}
	bh_judged(pkt, v->verdict, bh_ct_reason(v));
	if (progress)
		bh_ct_progress(ct, v, confirmed, pkt);
}

/* An ICMP error that quotes a packet of a tracked connection: judged and recorded as a
 * packet of that connection in the error's direction (lib/icmp.h). 0 when it quotes
 * nothing tracked: it is then judged as ICMP traffic of its own, as any packet is. */
static __noinline int bh_icmp_related(struct __sk_buff *skb, struct bh_packet *pkt,
				       __u64 now, __u32 version)
{
	struct bh_flow_key inner, related;
	struct bh_ct_value *v;
	struct bh_ct_tuple ct;
	int confirmed = 0;

	if (!bh_icmp_quoted(skb, pkt, &inner) || !bh_icmp_as_related(&pkt->key, &inner, &related))
		return 0;
	bh_ct_tuple_of(&inner, &ct);
	v = bh_ct_lookup(&ct, pkt, now, &confirmed);
	if (!v)
		return 0;
	__builtin_memcpy(&pkt->key, &related, sizeof(related));
	bh_counter_add(BH_C_ICMP_RELATED, pkt->packets);
	bh_tracked(pkt, &ct, v, confirmed, version, 0);
	return 1;
}

/* After a connection's first packet was judged: unless denied (a denied connection is
 * not tracked, so each of its packets comes this way and finds its flow), its flow is new
 * in all likelihood. */
static __always_inline void bh_opened(struct bh_packet *pkt)
{
	pkt->opened = pkt->key.verdict != BH_VERDICT_DROPPED;
}

/* A TCP packet without SYN that opens nothing: its connection's entry is gone. (A RST
 * is the normal answer to a stray packet and says nothing about a lost entry.) */
static __always_inline void bh_count_lost(const struct bh_packet *pkt)
{
	if (pkt->key.proto == IPPROTO_TCP && !(pkt->tcp_flags & (BH_TCP_SYN | BH_TCP_RST)))
		bh_counter_add(BH_C_CT_LOST, pkt->packets);
}

/* First packet of a connection leaving pod `ep`. */
static __always_inline void bh_from_pod_new(struct bh_packet *pkt,
					   const struct bh_endpoint_value *ep,
					   const struct bh_ct_tuple *ct, __u64 now, __u32 version,
					   struct bh_policy_set set)
{
	__u32 peer = bh_ip_identity(set.ip_identity, pkt->key.dst, pkt->key.family);
	struct bh_identity_info dst = bh_identity(set.identities, peer);
	struct bh_identity_info self = bh_identity(set.identities, ep->identity);
	__u8 unjudged = self.mode == BH_MODE_OBSERVE ? BH_CT_UNJUDGED : 0;
	__u8 verdict = BH_VERDICT_FORWARDED;

	/* A pod or a ClusterIP: its to_pod judges both ends, after DNAT. */
	if (dst.flags & (BH_ID_ENDPOINT | BH_ID_SERVICE)) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_DEFERRED | unjudged, now, version);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	/* Tracked all the same, so that a later switch to enforce judges the connection. */
	if (unjudged) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_UNJUDGED, now, version);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	if ((self.flags & BH_ID_EGRESS_ISOLATED) &&
	    !bh_policy_allows(set.policy, ep->identity, peer, BH_DIR_EGRESS, pkt->key.proto,
			      bh_policy_port(&pkt->key)))
		verdict = bh_policy_verdict(self.mode);
	if (verdict != BH_VERDICT_DROPPED)
		bh_ct_create(ct, verdict, 0, now, version);
	bh_judged(pkt, verdict, BH_REASON_POLICY);
}

/* First packet of a connection entering pod `ep`: its ingress, and the egress of the
 * source when the source is a pod. `deferred`: the entry its from_pod made on this node. */
static __always_inline void bh_to_pod_new(struct bh_packet *pkt,
					 const struct bh_endpoint_value *ep,
					 const struct bh_ct_tuple *ct, int deferred, __u64 now,
					 __u32 version, struct bh_policy_set set)
{
	__u32 peer = bh_ip_identity(set.ip_identity, pkt->key.src, pkt->key.family);
	int judged;
	__u8 verdict = bh_judge_connection(set, peer, bh_identity(set.identities, peer),
					   ep->identity, bh_identity(set.identities, ep->identity),
					   pkt->key.proto, bh_policy_port(&pkt->key), &judged);

	if (!judged) {
		bh_ct_create(ct, BH_VERDICT_FORWARDED, BH_CT_UNJUDGED, now, version);
		bh_judged(pkt, BH_VERDICT_FORWARDED, BH_REASON_NONE);
		return;
	}
	if (verdict != BH_VERDICT_DROPPED)
		bh_ct_create(ct, verdict, 0, now, version);
	else if (deferred)
		/* Denied: replies must not find the from_pod entry of a refused connection. */
		bh_ct_delete(ct);
	bh_judged(pkt, verdict, BH_REASON_POLICY);
}

/* The first reply entering pod `ep` through an entry its from_pod deferred to a pod whose
 * to_pod is on another node (on this node that to_pod has replaced the entry): nothing
 * here knows whether that to_pod let the connection in, so the connection is judged here
 * as the destination judged it (its ingress and ep's egress; the policy is cluster-wide)
 * before any reply passes. Otherwise a denied peer could answer a refused connection.
 * ClusterIP entries keep passing replies: the backend is not known here. */
static __always_inline void bh_to_pod_deferred_reply(struct bh_packet *pkt,
						    const struct bh_endpoint_value *ep,
						    const struct bh_ct_tuple *ct,
						    struct bh_ct_value *v, int confirmed,
						    __u32 version, struct bh_policy_set set)
{
	__u32 peer = bh_ip_identity(set.ip_identity, pkt->key.src, pkt->key.family);
	struct bh_identity_info dst = bh_identity(set.identities, peer);
	int judged;
	__u8 verdict;

	if (dst.flags & BH_ID_ENDPOINT) {
		verdict = bh_judge_connection(set, ep->identity,
					      bh_identity(set.identities, ep->identity), peer, dst,
					      pkt->key.proto,
					      bh_proto_has_ports(pkt->key.proto) ? pkt->key.sport : 0,
					      &judged);
		if (verdict == BH_VERDICT_DROPPED) {
			bh_ct_delete(ct);
			bh_judged(pkt, BH_VERDICT_DROPPED, BH_REASON_POLICY);
			return;
		}
		bh_ct_set_verdict(v, verdict, judged, version);
	}
	bh_judged(pkt, v->verdict, bh_ct_reason(v));
	bh_ct_progress(ct, v, confirmed, pkt);
}

static __noinline void bh_from_pod_new_active(struct bh_packet *pkt,
					      const struct bh_endpoint_value *ep,
					      const struct bh_ct_tuple *ct, __u64 now, __u32 version)
{
	if (bh_policy_active())
		bh_from_pod_new(pkt, ep, ct, now, version, BH_POLICY_SET(1));
	else
		bh_from_pod_new(pkt, ep, ct, now, version, BH_POLICY_SET(0));
}

/* (At most five arguments: the clock is read again.) */
static __noinline void bh_to_pod_new_active(struct bh_packet *pkt,
					    const struct bh_endpoint_value *ep,
					    const struct bh_ct_tuple *ct, int deferred, __u32 version)
{
	__u64 now = bh_ct_now();

	if (bh_policy_active())
		bh_to_pod_new(pkt, ep, ct, deferred, now, version, BH_POLICY_SET(1));
	else
		bh_to_pod_new(pkt, ep, ct, deferred, now, version, BH_POLICY_SET(0));
}

/* (At most five arguments: the version is read again; a newer one only costs a second
 * judgement later.) */
static __noinline void bh_to_pod_deferred_reply_active(struct bh_packet *pkt,
						       const struct bh_endpoint_value *ep,
						       const struct bh_ct_tuple *ct,
						       struct bh_ct_value *v, int confirmed)
{
	__u32 version = bh_policy_version();

	if (bh_policy_active())
		bh_to_pod_deferred_reply(pkt, ep, ct, v, confirmed, version, BH_POLICY_SET(1));
	else
		bh_to_pod_deferred_reply(pkt, ep, ct, v, confirmed, version, BH_POLICY_SET(0));
}

/* The verdict of a packet leaving pod `ep`, into pkt->key. */
static __always_inline void bh_from_pod_judge(struct __sk_buff *skb, struct bh_packet *pkt,
					      const struct bh_endpoint_value *ep)
{
	struct bh_ct_value *v;
	struct bh_ct_tuple ct;
	int confirmed = 0;
	__u32 version;
	__u64 now;

	if (bh_source_spoofed(ep, &pkt->key)) {
		bh_judged(pkt, bh_spoof_verdict(ep), BH_REASON_SPOOFED);
		return;
	}
	if (bh_policy_exempt(&pkt->key))
		return;

	now = bh_ct_now();
	version = bh_policy_version();
	if (bh_icmp_is_error(pkt) && bh_icmp_related(skb, pkt, now, version))
		return;
	bh_ct_tuple_of(&pkt->key, &ct);
	/* A packet of a connection the pod opened, or a reply of one it accepted. */
	v = bh_ct_lookup(&ct, pkt, now, &confirmed);
	if (v) {
		bh_tracked(pkt, &ct, v, confirmed, version, 1);
		if (confirmed && (v->flags & (BH_CT_UNJUDGED | BH_CT_DEFERRED)) == BH_CT_UNJUDGED &&
		    pkt->key.verdict == BH_VERDICT_FORWARDED && pkt->key.reason == BH_REASON_NONE &&
		    !(pkt->tcp_flags & (BH_TCP_SYN | BH_TCP_FIN | BH_TCP_RST)))
			pkt->ct_mark = bh_ct_mark(version, now);
		return;
	}
	bh_count_lost(pkt);
	bh_from_pod_new_active(pkt, ep, &ct, now, version);
	bh_opened(pkt);
}

/* The verdict of a packet entering pod `ep`, into pkt->key. */
static __always_inline void bh_to_pod_judge(struct __sk_buff *skb, struct bh_packet *pkt,
					    const struct bh_endpoint_value *ep)
{
	struct bh_ct_value *v;
	struct bh_ct_tuple ct;
	int confirmed = 0;
	__u32 version;
	__u64 now;

	if (bh_policy_exempt(&pkt->key))
		return;

	now = bh_ct_now();
	version = bh_policy_version();
	if (bh_icmp_is_error(pkt) && bh_icmp_related(skb, pkt, now, version))
		return;
	bh_ct_tuple_of(&pkt->key, &ct);
	v = bh_ct_lookup(&ct, pkt, now, &confirmed);
	/* A packet of a connection judged already, or a reply of one the pod opened. */
	if (v && !(v->flags & BH_CT_DEFERRED)) {
		bh_tracked(pkt, &ct, v, confirmed, version, 1);
		return;
	}
	if (v && !bh_ct_is_original(v, &ct)) {
		bh_to_pod_deferred_reply_active(pkt, ep, &ct, v, confirmed);
		return;
	}
	if (!v)
		bh_count_lost(pkt);
	/* New, or opened by a pod on this node whose from_pod deferred it to here. */
	bh_to_pod_new_active(pkt, ep, &ct, v != 0, version);
	bh_opened(pkt);
}

/* A packet leaving an observed pod, of a flow whose conntrack entry was checked lately
 * (lib/flow.h, bh_ct_mark): added to its flow (FORWARDED, NONE) without a conntrack
 * lookup. 0: the packet takes the full path. Anything that can change the outcome or the
 * entry takes the full path: a spoofed source, ND/MLD, an ICMP error, a TCP SYN, FIN or
 * RST, a fragment. */
static __always_inline int bh_from_pod_observed(const struct bh_packet *pkt,
						const struct bh_endpoint_value *ep)
{
	struct bh_identity_info self;

	if (pkt->frag != BH_FRAG_NONE || (pkt->tcp_flags & (BH_TCP_SYN | BH_TCP_FIN | BH_TCP_RST)))
		return 0;
	/* The mode first: a judged pod's packets pay only this lookup (a hot one) here. */
	self = bh_policy_active() ? bh_identity(&identities_1, ep->identity)
				  : bh_identity(&identities_0, ep->identity);
	if (self.mode != BH_MODE_OBSERVE || bh_source_spoofed(ep, &pkt->key) ||
	    bh_policy_exempt(&pkt->key) || bh_icmp_is_error(pkt))
		return 0;
	return bh_flow_record_observed(pkt, bh_policy_version());
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
	if (ep && bh_from_pod_observed(&pkt, ep))
		return TCX_NEXT;
	/* A later fragment already has its first fragment's verdict. */
	if (ep && pkt.frag != BH_FRAG_LATER)
		bh_from_pod_judge(skb, &pkt, ep);
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
		bh_to_pod_judge(skb, &pkt, ep);
	if (pkt.frag == BH_FRAG_FIRST)
		bh_frag_remember(&pkt);
	return bh_finish(&pkt);
}

char LICENSE[] SEC("license") = "GPL";
