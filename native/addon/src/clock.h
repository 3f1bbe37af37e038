// The wall clock against CLOCK_MONOTONIC (bpf_ktime_get_ns()'s clock), to the nanosecond.
#pragma once

#include <napi.h>

namespace bulkhead {

Napi::Value ClockOffsetNs(const Napi::CallbackInfo& info);

}  // namespace bulkhead
