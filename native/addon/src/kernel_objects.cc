#include "kernel_objects.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <vector>

#include "errors.h"

namespace bulkhead {
namespace {

using NextId = int (*)(__u32, __u32*);

std::vector<uint32_t> Ids(Napi::Env env, NextId next, const char* what) {
  std::vector<uint32_t> ids;
  __u32 id = 0;
  for (;;) {
    int r = next(id, &id);
    if (r == 0) {
      ids.push_back(id);
      continue;
    }
    int err = PositiveErrno(r);
    if (err == ENOENT) return ids;
    ThrowBpfError(env, "get_next_id", what, err);
  }
}

Napi::Array ToArray(Napi::Env env, const std::vector<uint32_t>& ids) {
  Napi::Array a = Napi::Array::New(env, ids.size());
  for (size_t i = 0; i < ids.size(); i++) a.Set(static_cast<uint32_t>(i), ids[i]);
  return a;
}

}  // namespace

Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowBpfError(info.Env(), "possible_cpus", "/sys/devices/system/cpu/possible", -n);
  return Napi::Number::New(info.Env(), n);
}

Napi::Value KernelObjectCounts(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("programs", Ids(env, bpf_prog_get_next_id, "programs").size());
  o.Set("links", Ids(env, bpf_link_get_next_id, "links").size());
  o.Set("maps", Ids(env, bpf_map_get_next_id, "maps").size());
  return o;
}

Napi::Value KernelObjectIds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("programs", ToArray(env, Ids(env, bpf_prog_get_next_id, "programs")));
  o.Set("links", ToArray(env, Ids(env, bpf_link_get_next_id, "links")));
  o.Set("maps", ToArray(env, Ids(env, bpf_map_get_next_id, "maps")));
  return o;
}

}  // namespace bulkhead
