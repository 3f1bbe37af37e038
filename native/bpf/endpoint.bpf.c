/* The endpoint programs, attached on the host side of every pod's veth: from_pod on
 * TCX ingress (packets leaving the pod), to_pod on TCX egress (packets entering it).
 * They observe only: every packet continues unchanged to the next program. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "endpoint.h"
#include "lib/parse.h"
#include "lib/flow.h"

/* Not in the 6.1 uapi headers; equal to TC_ACT_UNSPEC so legacy clsact works too. */
#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

static __always_inline int bh_observe(struct __sk_buff *skb, __u8 point)
{
	struct bh_packet pkt;
	int ret = bh_parse(skb, &pkt);

	bh_counter_add(BH_C_PACKETS, pkt.packets);
	if (ret == BH_PARSE_NOT_IP) {
		bh_counter_add(BH_C_NOT_IP, pkt.packets);
		return TCX_NEXT;
	}
	if (ret != BH_PARSE_OK) {
		bh_counter_add(BH_C_TRUNCATED, pkt.packets);
		return TCX_NEXT;
	}
	pkt.key.ifindex = skb->ifindex;
	pkt.key.point = point;
	bh_flow_record(&pkt);
	return TCX_NEXT;
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	return bh_observe(skb, BH_POINT_FROM_POD);
}

SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	return bh_observe(skb, BH_POINT_TO_POD);
}

char LICENSE[] SEC("license") = "GPL";
