// A loaded BPF object file: openObject() opens it, applies rodata values and max_entries
// overrides, loads it; BpfObject hands out maps and programs and closes everything.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "tc_attach.h"

namespace bulkhead {

// Shared by the BpfObject and every map, program and link taken from it: they check
// `open()` before touching libbpf, so a wrapper that outlives close() throws, not crashes.
struct ObjectState {
  std::string path;
  struct bpf_object* obj = nullptr;
  std::vector<std::shared_ptr<LinkState>> links;
  // openObject({reuseMapsFrom}): whether the pinned maps were reused, and per map
  // "same", "absent" or what differs.
  bool mapsReused = false;
  std::vector<std::pair<std::string, std::string>> pinnedMaps;

  ~ObjectState() { Close(false); }
  bool open() const { return obj != nullptr; }
  // explicitClose: detach every link (pinned ones too); otherwise release them as
  // process exit would.
  void Close(bool explicitClose);
  void Adopt(std::shared_ptr<LinkState> link);
};

// The error for a wrapper used after its BpfObject was closed.
[[noreturn]] void ThrowClosed(Napi::Env env, const std::string& op, const std::string& object,
                              const ObjectState& state);

class BpfObjectWrap : public Napi::ObjectWrap<BpfObjectWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit BpfObjectWrap(const Napi::CallbackInfo& info);
  ~BpfObjectWrap() override;

 private:
  Napi::Value Path(const Napi::CallbackInfo& info);
  Napi::Value Map(const Napi::CallbackInfo& info);
  Napi::Value Program(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Synchronize(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Adoption(const Napi::CallbackInfo& info);

  std::shared_ptr<ObjectState> state_;
};

Napi::Value OpenObject(const Napi::CallbackInfo& info);

}  // namespace bulkhead
