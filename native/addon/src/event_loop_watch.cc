#include "event_loop_watch.h"

namespace bulkhead {
namespace {

struct WatchState {
  std::function<void()> onReadable;
  std::function<void()> release;
};

void OnPoll(uv_poll_t* handle, int status, int events) {
  auto* state = static_cast<WatchState*>(handle->data);
  // An error status (EBADF…) repeats forever if left active; the owner learns through
  // its own next read, so just report readability and let the read fail.
  if (state->onReadable) state->onReadable();
}

void OnClosed(uv_handle_t* handle) {
  auto* state = static_cast<WatchState*>(handle->data);
  if (state->release) state->release();
  delete state;
  delete reinterpret_cast<uv_poll_t*>(handle);
}

}  // namespace

int ReadableWatch::Start(Napi::Env env, int fd, std::function<void()> onReadable,
                         std::function<void()> release) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    if (release) release();
    return UV_EINVAL;
  }
  auto* handle = new uv_poll_t;
  int rc = uv_poll_init(loop, handle, fd);
  if (rc != 0) {
    delete handle;
    if (release) release();
    return rc;
  }
  handle->data = new WatchState{std::move(onReadable), std::move(release)};
  handle_ = handle;
  rc = uv_poll_start(handle, UV_READABLE, OnPoll);
  if (rc != 0) Stop();
  return rc;
}

void ReadableWatch::Stop() {
  if (handle_ == nullptr) return;
  auto* state = static_cast<WatchState*>(handle_->data);
  state->onReadable = nullptr;
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(handle_)))
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), OnClosed);
  handle_ = nullptr;
}

ReadableWatch::~ReadableWatch() { Stop(); }

void CallFromLoop(Napi::Env env, const Napi::FunctionReference& fn, Napi::Object recv,
                  const std::initializer_list<napi_value>& args,
                  const Napi::AsyncContext& context) {
  try {
    fn.MakeCallback(recv, args, context);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

}  // namespace bulkhead
