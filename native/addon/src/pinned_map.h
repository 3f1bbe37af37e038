// A map opened from its bpffs pin (bpf_obj_get), with no object around it: what an agent
// uses to read and retire the maps an earlier agent pinned (drain its flow maps, copy its
// conntrack, wait out its programs) before it replaces them.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <string>

namespace bulkhead {

class PinnedMapWrap : public Napi::ObjectWrap<PinnedMapWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit PinnedMapWrap(const Napi::CallbackInfo& info);
  ~PinnedMapWrap() override;

 private:
  Napi::Value Path(const Napi::CallbackInfo& info);
  Napi::Value Type(const Napi::CallbackInfo& info);
  Napi::Value KeySize(const Napi::CallbackInfo& info);
  Napi::Value ValueSize(const Napi::CallbackInfo& info);
  Napi::Value MaxEntries(const Napi::CallbackInfo& info);
  Napi::Value Id(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  Napi::Value Dump(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  int FdFor(Napi::Env env, const std::string& op) const;
  void CheckSize(Napi::Env env, const std::string& op, const char* what, size_t got, size_t want) const;
  Napi::Value Batch(const Napi::CallbackInfo& info, bool andDelete);

  std::string path_;
  int fd_ = -1;
  uint32_t type_ = 0;
  uint32_t keySize_ = 0;
  uint32_t valueSize_ = 0;
  uint32_t valueBytes_ = 0;
  uint32_t maxEntries_ = 0;
  uint32_t id_ = 0;
};

// openPinnedMap(path) → PinnedMap; ENOENT when nothing is pinned there, EINVAL when the
// pin holds no map.
Napi::Value OpenPinnedMap(const Napi::CallbackInfo& info);

}  // namespace bulkhead
