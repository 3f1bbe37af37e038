// What the kernel holds right now, for leak checks: BPF program, link and map ids.
#pragma once

#include <napi.h>

namespace bulkhead {

Napi::Value PossibleCpus(const Napi::CallbackInfo& info);
Napi::Value KernelObjectCounts(const Napi::CallbackInfo& info);
Napi::Value KernelObjectIds(const Napi::CallbackInfo& info);

}  // namespace bulkhead
