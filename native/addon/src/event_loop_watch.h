// One fd watched for readability on the Node event loop (uv_poll). Shared by the ring
// buffer, the link watcher and the raw socket. libuv may touch the handle until its close
// callback, so whatever owns the fd is released there, never before.
#pragma once

#include <napi.h>
#include <uv.h>

#include <functional>

namespace bulkhead {

class ReadableWatch {
 public:
  ReadableWatch() = default;
  ~ReadableWatch();
  ReadableWatch(const ReadableWatch&) = delete;
  ReadableWatch& operator=(const ReadableWatch&) = delete;

  // Calls `onReadable` on the loop thread each time `fd` is readable (level-triggered).
  // `release` runs once libuv has let go of the handle: close the fd there. Returns 0 or a
  // negative libuv error (then `release` runs too, now or on a later loop turn).
  int Start(Napi::Env env, int fd, std::function<void()> onReadable,
            std::function<void()> release);
  // Stops at once; `release` runs on a later loop turn. Idempotent.
  void Stop();
  bool active() const { return handle_ != nullptr; }

 private:
  uv_poll_t* handle_ = nullptr;
};

// Calls a JS callback from a libuv callback: a thrown JS error becomes an uncaught
// exception of the process (as from an EventEmitter), never a C++ crash.
void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, Napi::Object recv,
                  const std::initializer_list<napi_value>& args,
                  const Napi::AsyncContext& context);

}  // namespace bulkhead
