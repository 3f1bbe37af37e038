// A ring buffer map read on the event loop: bounded consumption per readable event and
// one JS call per batch (a Buffer of length-prefixed records), never one per event.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <cstdint>
#include <vector>

#include "event_loop_watch.h"

namespace bulkhead {

class RingBufferWrap : public Napi::ObjectWrap<RingBufferWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit RingBufferWrap(const Napi::CallbackInfo& info);
  ~RingBufferWrap() override;

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Consume(const Napi::CallbackInfo& info);
  void OnReadable();
  void Stop();
  static int OnSample(void* ctx, void* data, size_t size);

  struct ring_buffer* rb_ = nullptr;
  ReadableWatch watch_;
  Napi::FunctionReference onBatch_;
  Napi::ObjectReference mapJs_;  // the map and its object stay alive while we read
  std::unique_ptr<Napi::AsyncContext> async_;
  uint32_t maxPerBatch_ = 4096;
  std::vector<uint8_t> batch_;
  uint32_t count_ = 0;
  bool open_ = false;
};

// ringBuffer(map, onBatch, { maxPerBatch })
Napi::Value NewRingBuffer(const Napi::CallbackInfo& info);

}  // namespace bulkhead
