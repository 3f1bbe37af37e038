/* Benchmark baseline for endpoint.bpf.c: the same parser followed by exactly one hash
 * map update per IP packet, so the endpoint's per-packet cost can be read as a multiple
 * of "one hash-map update". Not part of the product. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../endpoint.h"
#include "../lib/parse.h"

#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bh_flow_key);
	__type(value, __u64);
} ref_flows SEC(".maps");

SEC("tc")
int reference(struct __sk_buff *skb)
{
	struct bh_packet pkt;
	__u64 one = 1;

	if (bh_parse(skb, &pkt) != BH_PARSE_OK)
		return TCX_NEXT;
	pkt.key.ifindex = skb->ifindex;
	pkt.key.point = BH_POINT_FROM_POD;
	bpf_map_update_elem(&ref_flows, &pkt.key, &one, BPF_ANY);
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
