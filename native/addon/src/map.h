// A map of a loaded object: single-key operations, batch drain/dump, pin/unpin.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <memory>
#include <string>

#include "map_batch.h"
#include "object.h"

namespace bulkhead {

class BpfMapWrap : public Napi::ObjectWrap<BpfMapWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit BpfMapWrap(const Napi::CallbackInfo& info);

  // The map fd, or a thrown "closed" error naming `op`.
  int FdFor(Napi::Env env, const std::string& op) const;
  enum bpf_map_type mapType() const { return type_; }
  const std::string& name() const { return name_; }

 private:
  Napi::Value Name(const Napi::CallbackInfo& info);
  Napi::Value Type(const Napi::CallbackInfo& info);
  Napi::Value KeySize(const Napi::CallbackInfo& info);
  Napi::Value ValueSize(const Napi::CallbackInfo& info);
  Napi::Value MaxEntries(const Napi::CallbackInfo& info);
  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value Drain(const Napi::CallbackInfo& info);
  Napi::Value Dump(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Unpin(const Napi::CallbackInfo& info);

  void CheckKey(Napi::Env env, const std::string& op, const Napi::Buffer<uint8_t>& key) const;
  Napi::Value Batch(const Napi::CallbackInfo& info, bool andDelete);

  std::shared_ptr<ObjectState> owner_;
  Napi::ObjectReference ownerJs_;  // keeps the BpfObject (and so the fd) alive
  struct bpf_map* map_ = nullptr;
  std::string name_;
  enum bpf_map_type type_ = BPF_MAP_TYPE_UNSPEC;
  uint32_t keySize_ = 0;
  uint32_t valueSize_ = 0;
  uint32_t valueBytes_ = 0;  // per entry in user space (percpu: nCpus * roundUp(size, 8))
  uint32_t maxEntries_ = 0;
};

Napi::Object NewBpfMap(Napi::Env env, const std::shared_ptr<ObjectState>& owner,
                       Napi::Object ownerJs, struct bpf_map* map);

bool IsPercpu(enum bpf_map_type type);

// A batch read as JavaScript ({keys, values, count}); on a failure part-way, throws a
// BpfError naming `op` and `object` that carries what was read (drained entries are gone
// from the kernel) as .partial. Entries read in place (res.inPlace) come back as views of
// `into`'s own Buffers, valid until the caller reuses them.
Napi::Value BatchToJs(Napi::Env env, const BatchResult& res, const std::string& op, const std::string& object,
                      Napi::Object into = Napi::Object());

}  // namespace bulkhead
