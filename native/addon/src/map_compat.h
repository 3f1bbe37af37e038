// Whether a map pinned by an earlier process can stand in for a map of an object about to
// be loaded: the same definition and the same key/value layout (see native/addon/README.md
// "Adopting pinned maps" for what "the same layout" means).
#pragma once

#include <bpf/libbpf.h>

#include <string>

namespace bulkhead {

// "" when the pinned map (fd) matches `map` of `obj` (opened, not yet loaded); otherwise
// what differs, e.g. "max_entries 262144 vs 131072" or "value layout: member verdict at
// byte 8 vs 9".
std::string MapDifference(struct bpf_object* obj, struct bpf_map* map, int pinnedFd);

}  // namespace bulkhead
