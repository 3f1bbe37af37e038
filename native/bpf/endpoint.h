/* Structs shared by endpoint.bpf.c and user space: flow keys and values, ring-buffer
 * events and counter indices. The TypeScript decoder (agent/records.ts) reads the same
 * layout; test/layout.test.ts checks it against this object's BTF. */
#ifndef BULKHEAD_ENDPOINT_H
#define BULKHEAD_ENDPOINT_H

#ifndef __KERNEL__
#include <linux/types.h>
#endif

/* Where on the host-side veth a packet was seen. TCX ingress on the host side is the
 * pod's egress (the packet leaves the pod); TCX egress is the pod's ingress. */
enum bh_point {
	BH_POINT_FROM_POD = 1,
	BH_POINT_TO_POD = 2,
};

/* One aggregation bucket. Addresses are in network byte order; IPv4 uses the first four
 * bytes of src/dst and zeroes the rest. Ports are host byte order; for ICMP and ICMPv6
 * sport holds the type and dport the code. */
struct bh_flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
	__u8 proto;     /* IPPROTO_* */
	__u8 family;    /* 4 or 6 */
	__u8 point;     /* enum bh_point */
	__u8 pad;
};

/* bytes counts L3 bytes: the IPv4 total length, or the IPv6 payload length plus its
 * 40-byte fixed header. Times are bpf_ktime_get_ns() (CLOCK_MONOTONIC). */
struct bh_flow_value {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u32 tcp_flags; /* OR of every TCP flag byte seen (FIN=0x01 … CWR=0x80) */
	__u32 pad;
};

enum bh_event_type {
	BH_EVENT_NEW_FLOW = 1,
};

/* Ring-buffer record: rare events only, never one per packet. */
struct bh_event {
	__u32 type; /* enum bh_event_type */
	__u32 pad;
	__u64 ts_ns;
	struct bh_flow_key key;
};

/* Indices into the per-CPU `counters` array. Every way a packet can go uncounted has
 * its own index, so that sent = counted + lost holds exactly. */
enum bh_counter {
	BH_C_PACKETS = 0,          /* packets the program ran on */
	BH_C_NOT_IP = 1,           /* not IPv4/IPv6: no flow, not a loss */
	BH_C_TRUNCATED = 2,        /* IP packet too short to parse: counted here, no flow */
	BH_C_MAP_FULL_PACKETS = 3, /* new flow, flow map full: packets lost to aggregation */
	BH_C_MAP_FULL_BYTES = 4,
	BH_C_RING_FULL = 5,        /* new-flow event dropped: ring buffer full */
	BH_C_MAX = 6,
};

/* Slots of the `flow_state` array. */
enum bh_state {
	BH_STATE_ACTIVE_MAP = 0, /* 0: the program writes flows_0, else flows_1 */
	BH_STATE_MAX = 1,
};

#endif
