#include "ringbuf.h"

#include <cerrno>
#include <cstring>

#include "addon.h"
#include "errors.h"
#include "map.h"

namespace bulkhead {
namespace {

// Returned by the sample callback when the batch is full. libbpf 1.1 stops consuming
// only on a negative return and has already advanced past that record (which we kept),
// so nothing is lost; the rest stays in the ring, and the epoll fd stays readable
// (level-triggered) for the next loop turn.
constexpr int kBatchFull = -ECANCELED;

struct RingInit {
  Napi::Object mapJs;
  Napi::Function onBatch;
  uint32_t maxPerBatch;
};

}  // namespace

Napi::Value NewRingBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() ||
      !info[0].As<Napi::Object>().InstanceOf(Data(env).bpfMap.Value()))
    throw Napi::TypeError::New(env, "ringBuffer: the first argument must be a BpfMap");
  RingInit init{info[0].As<Napi::Object>(), FunctionArg(info, 1, "onBatch"), 4096};
  if (info.Length() > 2 && info[2].IsObject()) {
    Napi::Value m = info[2].As<Napi::Object>().Get("maxPerBatch");
    if (!m.IsUndefined()) init.maxPerBatch = Uint32Option(env, m, "maxPerBatch", 4096);
    if (init.maxPerBatch == 0) throw Napi::RangeError::New(env, "ringBuffer: maxPerBatch must be >= 1");
  }
  return NewWrapped(Data(env).ringBuffer, &init);
}

Napi::Function RingBufferWrap::Define(Napi::Env env) {
  return DefineClass(env, "RingBuffer", {InstanceMethod<&RingBufferWrap::Close>("close"),
                                         InstanceMethod<&RingBufferWrap::Consume>("consume")});
}

RingBufferWrap::RingBufferWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  Napi::Env env = info.Env();
  RingInit* init = InitFrom<RingInit>(info, "RingBuffer");
  BpfMapWrap* map = BpfMapWrap::Unwrap(init->mapJs);
  int mapFd = map->FdFor(env, "ring_buffer");
  if (map->mapType() != BPF_MAP_TYPE_RINGBUF)
    ThrowBpfError(env, "ring_buffer", map->name(), EINVAL, {"not a ringbuf map"});
  libbpf_log::Clear();
  rb_ = ring_buffer__new(mapFd, &RingBufferWrap::OnSample, this, nullptr);
  if (rb_ == nullptr) ThrowLibbpfError(env, "ring_buffer", map->name(), PositiveErrno(0));
  maxPerBatch_ = init->maxPerBatch;
  onBatch_ = Napi::Persistent(init->onBatch);
  mapJs_ = Napi::Persistent(init->mapJs);
  async_ = std::make_unique<Napi::AsyncContext>(env, "bulkhead:RingBuffer");
  struct ring_buffer* rb = rb_;
  int rc = watch_.Start(
      env, ring_buffer__epoll_fd(rb_), [this] { OnReadable(); },
      [rb] { ring_buffer__free(rb); });
  if (rc != 0) {
    rb_ = nullptr;
    ThrowBpfError(env, "ring_buffer", map->name(), -rc, {"uv_poll_start"});
  }
  open_ = true;
  Ref();  // an active reader is reachable from the event loop, not only from JS
}

RingBufferWrap::~RingBufferWrap() {
  watch_.Stop();
}

int RingBufferWrap::OnSample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RingBufferWrap*>(ctx);
  const uint32_t len = static_cast<uint32_t>(size);
  const size_t at = self->batch_.size();
  self->batch_.resize(at + ((4 + size_t(len) + 7) & ~size_t(7)), 0);
  uint8_t* p = self->batch_.data() + at;
  p[0] = len & 0xff;
  p[1] = (len >> 8) & 0xff;
  p[2] = (len >> 16) & 0xff;
  p[3] = (len >> 24) & 0xff;
  std::memcpy(p + 4, data, len);
  self->count_++;
  return self->count_ >= self->maxPerBatch_ ? kBatchFull : 0;
}

void RingBufferWrap::OnReadable() {
  if (!open_) return;
  batch_.clear();
  count_ = 0;
  ring_buffer__consume(rb_);  // ≥ 0 records, or kBatchFull: both are fine
  if (count_ == 0) return;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  auto records = Napi::Buffer<uint8_t>::Copy(env, batch_.data(), batch_.size());
  uint32_t count = count_;
  batch_.clear();
  CallFromLoop(env, onBatch_, Value(), {records, Napi::Number::New(env, count)}, *async_);
}

void RingBufferWrap::Stop() {
  if (!open_) return;
  open_ = false;
  watch_.Stop();  // frees the ring once libuv has closed the handle
  rb_ = nullptr;
  Unref();
}

// Reads what producers submitted without a wakeup (BPF_RB_NO_WAKEUP), in bounded batches,
// each delivered to the batch callback as on a wakeup.
Napi::Value RingBufferWrap::Consume(const Napi::CallbackInfo& info) {
  uint32_t total = 0;
  while (open_) {
    OnReadable();
    total += count_;
    if (count_ < maxPerBatch_) break;
  }
  return Napi::Number::New(info.Env(), total);
}

Napi::Value RingBufferWrap::Close(const Napi::CallbackInfo& info) {
  Stop();
  return info.Env().Undefined();
}

}  // namespace bulkhead
