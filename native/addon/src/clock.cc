#include "clock.h"

#include <cerrno>
#include <cstdint>
#include <ctime>

#include "errors.h"

namespace bulkhead {

namespace {

int64_t Nanoseconds(const timespec& t) {
  return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

}  // namespace

// CLOCK_REALTIME minus CLOCK_MONOTONIC: the realtime reading between two monotonic ones,
// against their midpoint. JavaScript's Date.now() is whole milliseconds, so an offset built
// from it put every converted time up to 1 ms early.
Napi::Value ClockOffsetNs(const Napi::CallbackInfo& info) {
  timespec before{}, wall{}, after{};
  if (clock_gettime(CLOCK_MONOTONIC, &before) != 0 || clock_gettime(CLOCK_REALTIME, &wall) != 0
      || clock_gettime(CLOCK_MONOTONIC, &after) != 0) {
    ThrowBpfError(info.Env(), "clock_gettime", "CLOCK_REALTIME and CLOCK_MONOTONIC", errno);
  }
  const int64_t mono = Nanoseconds(before) + (Nanoseconds(after) - Nanoseconds(before)) / 2;
  return Napi::BigInt::New(info.Env(), Nanoseconds(wall) - mono);
}

}  // namespace bulkhead
