/* Structs and enums shared by endpoint.bpf.c and user space: flow keys and values,
 * ring-buffer events, counter indices, the policy maps' keys and values. TypeScript never
 * copies them: native/bpf/gen-abi.mjs generates native/gen/abi.ts from the BTF of
 * abi.bpf.c (which names every type listed here that user space reads or writes), so
 * constants user space needs are enums here, never #defines (BTF has no macros). */
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
	__u8 verdict;   /* enum bh_verdict: forwarded and dropped packets aggregate apart */
	__u8 reason;    /* enum bh_reason */
	__u8 pad[3];
};

/* bytes counts L3 bytes: the IPv4 total length, or the IPv6 payload length plus its
 * 40-byte fixed header. Times are bpf_ktime_get_ns() (CLOCK_MONOTONIC). */
struct bh_flow_value {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u32 tcp_flags; /* OR of every TCP flag byte seen (FIN=0x01 … CWR=0x80) */
	/* The programs' own: a packet of an observed connection whose conntrack entry was
	 * checked lately (lib/flow.h, bh_ct_mark), so that the next ones skip the lookup.
	 * 0: none. User space ignores it. */
	__u32 ct_mark;
};

enum bh_verdict {
	BH_VERDICT_FORWARDED = 0,
	BH_VERDICT_DROPPED = 1,
	BH_VERDICT_AUDIT = 2, /* forwarded; enforce mode would have dropped it */
};

enum bh_reason {
	BH_REASON_NONE = 0,        /* observe mode: nothing judged */
	BH_REASON_POLICY = 1,      /* judged by policy (allowed or denied) */
	BH_REASON_ESTABLISHED = 2, /* part of, or a reply to, a connection already seen */
	BH_REASON_SPOOFED = 3,     /* source address is not the pod's own */
};

enum bh_event_type {
	BH_EVENT_NEW_FLOW = 1,
};

/* Ring-buffer record, one per flow entry created, only when emit_new_flow_events is set
 * at load (lib/flow.h; the agent leaves it off and counts BH_C_NEW_FLOWS instead). */
struct bh_event {
	__u32 type; /* enum bh_event_type */
	__u32 pad;
	__u64 ts_ns;
	struct bh_flow_key key;
};

/* Why a frame could not be judged (native/bpf/README.md, "Fail closed"). Such a frame
 * gets the verdict of its pod's own mode (dropped in enforce) and no flow record. */
enum bh_unjudged {
	BH_U_L2 = 0,       /* Ethernet or VLAN header cut short */
	BH_U_VLAN = 1,     /* more VLAN tags than the parser follows (BH_VLAN_MAX_TAGS) */
	BH_U_ETHERTYPE = 2,/* not IPv4, IPv6 or ARP */
	BH_U_IPV4 = 3,     /* IPv4 header cut short or inconsistent (version, ihl, tot_len) */
	BH_U_IPV6 = 4,     /* IPv6 header or extension header cut short, payload beyond the frame */
	BH_U_IPV6_EXT = 5, /* extension chain longer than the parser follows */
	BH_U_L4 = 6,       /* TCP/UDP/SCTP/ICMP header cut short, or TCP data offset < 5 */
	BH_U_FRAGMENT = 7, /* a later fragment whose first fragment was not seen (lib/fragment.h) */
	BH_U_MAX = 8,
};

/* Indices into the per-CPU `counters` array. Every way a packet can go uncounted has
 * its own index, so that sent = counted + lost holds exactly. */
enum bh_counter {
	BH_C_PACKETS = 0,          /* packets the program ran on */
	BH_C_NOT_IP = 1,           /* ARP: passes unjudged, no flow, not a loss */
	/* Flow entries created (one per record the agent drains, map_full aside). Index 2 was
	 * TRUNCATED once (now by cause in BH_C_UNJUDGED), before any datapath was pinned. */
	BH_C_NEW_FLOWS = 2,
	BH_C_MAP_FULL_PACKETS = 3, /* new flow, flow map full: packets lost to aggregation */
	BH_C_MAP_FULL_BYTES = 4,
	BH_C_RING_FULL = 5,        /* new-flow event dropped: ring buffer full */
	BH_C_CT_FULL = 6,          /* connection not tracked: a conntrack insert refused */
	/* Conntrack (lib/conntrack.h): every connection opens in the unconfirmed table and
	 * moves to the confirmed one when its peer answers, so a flood of unanswered
	 * openings churns only the unconfirmed table. */
	BH_C_CT_CREATED = 7,       /* connections entered in the unconfirmed table */
	BH_C_CT_CONFIRMED = 8,     /* connections moved to the confirmed table (peer answered) */
	/* A TCP packet without SYN or RST that matched no entry: its connection was evicted or
	 * expired (or began before the programs ran); it is judged as new. */
	BH_C_CT_LOST = 9,
	BH_C_CT_REJUDGED = 10,     /* tracked connections judged again after a policy change */
	BH_C_ICMP_RELATED = 11,    /* ICMP errors given the verdict of the connection they quote */
	/* Frames not judged, no flow: BH_C_UNJUDGED + verdict * BH_U_MAX + cause, with the
	 * verdict they got (enum bh_verdict) and their cause (enum bh_unjudged). */
	BH_C_UNJUDGED = 12,
	BH_C_MAX = BH_C_UNJUDGED + 3 * BH_U_MAX,
};

/* Slots of the `flow_state` array. */
enum bh_state {
	BH_STATE_ACTIVE_MAP = 0,    /* 0: the program writes flows_0, else flows_1 */
	BH_STATE_ACTIVE_POLICY = 1, /* 0: the program reads the *_0 policy maps, else *_1 */
	BH_STATE_POLICY_VERSION = 2,/* version of the active policy set (low 32 bits) */
	BH_STATE_MAX = 3,
};

/* ---- segmentation -------------------------------------------------------------------
 * Policy is per identity (see proto/bulkhead/v1/policy.proto). Three maps form one
 * policy set, written whole into the inactive set and switched with BH_STATE_ACTIVE_POLICY
 * (then an RCU grace period), so packets never see a half-applied policy:
 *   ip_identity_N   LPM_TRIE  bh_ip_key → bh_ip_value      address → identity
 *   identities_N    HASH      __u32 id → bh_identity_value   mode, isolation
 *   policy_N        LPM_TRIE  bh_policy_key → bh_policy_value allowed or denied (subject, peer, dir, proto, port)
 * and, node-local, written entry by entry:
 *   endpoints       HASH      __u32 ifindex → bh_endpoint_value (the pod behind each veth)
 *   conntrack_new   LRU_HASH  bh_ct_key → bh_ct_value      unconfirmed connections
 *   conntrack       LRU_HASH  bh_ct_key → bh_ct_value      confirmed (the peer answered)
 */

enum bh_mode {
	BH_MODE_OBSERVE = 0, /* also: identity unknown (no policy yet) */
	BH_MODE_AUDIT = 1,
	BH_MODE_ENFORCE = 2,
};

enum bh_identity_flags {
	BH_ID_INGRESS_ISOLATED = 1,
	BH_ID_EGRESS_ISOLATED = 2,
	BH_ID_ENDPOINT = 4, /* a pod judged at its own veth (to_pod): egress to it is deferred there */
	BH_ID_SERVICE = 8,  /* a ClusterIP: judged after DNAT at the backend's to_pod */
};

/* Reserved identities (an enum, not #defines, so that BTF carries them to TypeScript). */
enum bh_identity_reserved {
	BH_IDENTITY_ANY = 0,   /* as a rule's peer: any peer */
	BH_IDENTITY_HOST = 1,
	BH_IDENTITY_WORLD = 2, /* an address no ip_identity prefix covers */
};

/* IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d), prefixlen 96 + the v4 length. */
struct bh_ip_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct bh_ip_value {
	__u32 identity;
};

struct bh_identity_value {
	__u8 mode;  /* enum bh_mode */
	__u8 flags; /* enum bh_identity_flags */
	__u16 pad;
};

enum bh_direction {
	BH_DIR_INGRESS = 1,
	BH_DIR_EGRESS = 2,
};

/* LPM key, fields in prefix order. Any peer is peer 0 (a second lookup); any protocol is a
 * prefix ending after `direction` (72 bits); any port, after `proto` (80 bits); a port
 * range is covered by prefixes into `port`, which is big-endian for that reason. */
struct bh_policy_key {
	__u32 prefixlen;
	__u32 subject;
	__u32 peer;
	__u8 direction; /* enum bh_direction */
	__u8 proto;
	__u16 port;     /* network byte order */
} __attribute__((packed));

/* bh_policy_key prefix lengths: data bits (after prefixlen) up to and including
 * direction, proto, port. */
enum bh_policy_prefix {
	BH_POLICY_PREFIX_ANY_PROTO = 72,
	BH_POLICY_PREFIX_ANY_PORT = 80,
	BH_POLICY_PREFIX_FULL = 96,
};

enum bh_policy_flags {
	/* The entry denies (ClusterNetworkPolicy tiers); without it, it allows. */
	BH_POLICY_DENY = 1,
};

/* The most specific entry for the peer decides, then the most specific for peer 0; with
 * none, the subject's isolation flag does. A subject with deny entries has complete entries
 * (one for any protocol at least) for every peer it names and for peer 0. */
struct bh_policy_value {
	__u32 flags; /* enum bh_policy_flags */
};

struct bh_endpoint_value {
	__u32 identity;
	__u8 has_ip4;
	__u8 has_ip6;
	__u16 pad;
	__u8 ip4[4];
	__u8 ip6[16];
};

/* A connection, keyed the same from both directions: the lower (address, port) end is
 * src, so one lookup finds the entry for a packet and for its reply alike; the entry's
 * BH_CT_STARTED_BY_DST says which end opened it (which direction is the reply). */
struct bh_ct_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

enum bh_ct_flags {
	/* Made by from_pod for a peer judged at its own to_pod: nothing judged it here yet.
	 * A to_pod that meets it as the original direction judges it (same-node traffic). */
	BH_CT_DEFERRED = 1,
	/* Neither end was judged (observe mode): its packets carry reason NONE. */
	BH_CT_UNJUDGED = 2,
	/* A TCP FIN or RST was seen: the entry expires soon. */
	BH_CT_CLOSING = 4,
	/* The connection's first packet came from the key's dst end (see bh_ct_key). */
	BH_CT_STARTED_BY_DST = 8,
	/* The peer answered (a reply-direction packet that is not a TCP RST was seen). */
	BH_CT_REPLIED = 16,
};

struct bh_ct_value {
	__u64 last_seen_ns;
	__u8 verdict; /* enum bh_verdict of the connection under policy_version */
	__u8 flags;   /* enum bh_ct_flags */
	__u16 pad;
	/* flow_state[BH_STATE_POLICY_VERSION] when the connection was judged: a packet that
	 * finds another version active judges the connection again (once per change). */
	__u32 policy_version;
};

#endif
