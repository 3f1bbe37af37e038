/* The kernel ABI that user space shares, for BTF only: this object is never loaded.
 * Every struct and enum that TypeScript reads or writes is a member of bh_abi below, so
 * that the compiler emits its BTF (a type only named in code, such as an enum whose
 * constants are used as values, leaves no BTF); gen-abi.mjs turns that BTF into
 * native/gen/abi.ts. Kept apart from endpoint.bpf.c so the loaded object gains no
 * variable (a global would become a .bss map the agent creates and pins).
 * Add a member here when user space needs a new type from endpoint.h. */
#include <linux/types.h>

#include "endpoint.h"

struct bh_abi {
	/* map keys and values, ring-buffer records */
	struct bh_flow_key flow_key;
	struct bh_flow_value flow_value;
	struct bh_event event;
	struct bh_ip_key ip_key;
	struct bh_ip_value ip_value;
	struct bh_identity_value identity_value;
	struct bh_policy_key policy_key;
	struct bh_policy_value policy_value;
	struct bh_endpoint_value endpoint_value;
	struct bh_ct_key ct_key;
	struct bh_ct_value ct_value;
	/* values */
	enum bh_point point;
	enum bh_verdict verdict;
	enum bh_reason reason;
	enum bh_event_type event_type;
	enum bh_unjudged unjudged;
	enum bh_counter counter;
	enum bh_state state;
	enum bh_mode mode;
	enum bh_identity_flags identity_flags;
	enum bh_identity_reserved identity_reserved;
	enum bh_direction direction;
	enum bh_policy_prefix policy_prefix;
	enum bh_policy_flags policy_flags;
	enum bh_ct_flags ct_flags;
};

struct bh_abi bh_abi __attribute__((used));
