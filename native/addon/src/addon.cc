// Module entry: registers the classes (constructible only from C++) and the functions
// that native/index.ts types as NativeAddon.
#include "addon.h"

#include "clock.h"
#include "errors.h"
#include "kernel_objects.h"
#include "link.h"
#include "link_watcher.h"
#include "map.h"
#include "netlink.h"
#include "object.h"
#include "pinned_map.h"
#include "program.h"
#include "raw_socket.h"
#include "ringbuf.h"

namespace bulkhead {

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>();
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsBuffer())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

Napi::Function FunctionArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsFunction())
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a function");
  return info[i].As<Napi::Function>();
}

uint32_t Uint32Option(Napi::Env env, Napi::Value v, const char* what, uint32_t dflt) {
  if (v.IsUndefined()) return dflt;
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 4294967295.0 || d != static_cast<double>(static_cast<uint32_t>(d)))
    throw Napi::RangeError::New(env, std::string(what) + " must be an integer in 0..2^32-1");
  return static_cast<uint32_t>(d);
}

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  libbpf_log::Install();
  auto* data = new AddonData();
  data->bpfObject = Napi::Persistent(BpfObjectWrap::Define(env));
  data->bpfMap = Napi::Persistent(BpfMapWrap::Define(env));
  data->bpfProgram = Napi::Persistent(BpfProgramWrap::Define(env));
  data->link = Napi::Persistent(LinkWrap::Define(env));
  data->ringBuffer = Napi::Persistent(RingBufferWrap::Define(env));
  data->linkWatcher = Napi::Persistent(LinkWatcherWrap::Define(env));
  data->rawSocket = Napi::Persistent(RawSocketWrap::Define(env));
  data->pinnedMap = Napi::Persistent(PinnedMapWrap::Define(env));
  env.SetInstanceData(data);

  exports.Set("openObject", Napi::Function::New(env, OpenObject, "openObject"));
  exports.Set("ringBuffer", Napi::Function::New(env, NewRingBuffer, "ringBuffer"));
  exports.Set("listLinks", Napi::Function::New(env, ListLinks, "listLinks"));
  exports.Set("listRoutes", Napi::Function::New(env, ListRoutes, "listRoutes"));
  exports.Set("watchLinks", Napi::Function::New(env, WatchLinks, "watchLinks"));
  exports.Set("rawSocket", Napi::Function::New(env, NewRawSocket, "rawSocket"));
  exports.Set("possibleCpus", Napi::Function::New(env, PossibleCpus, "possibleCpus"));
  exports.Set("clockOffsetNs", Napi::Function::New(env, ClockOffsetNs, "clockOffsetNs"));
  exports.Set("kernelObjectCounts", Napi::Function::New(env, KernelObjectCounts, "kernelObjectCounts"));
  exports.Set("kernelObjectIds", Napi::Function::New(env, KernelObjectIds, "kernelObjectIds"));
  exports.Set("cleanupClsact", Napi::Function::New(env, CleanupClsactJs, "cleanupClsact"));
  exports.Set("removePinnedLink", Napi::Function::New(env, RemovePinnedLinkJs, "removePinnedLink"));
  exports.Set("pinnedLink", Napi::Function::New(env, PinnedLinkJs, "pinnedLink"));
  exports.Set("openPinnedMap", Napi::Function::New(env, OpenPinnedMap, "openPinnedMap"));
  return exports;
}

}  // namespace
}  // namespace bulkhead

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return bulkhead::Init(env, exports);
}

NODE_API_MODULE(bulkhead, InitModule)
