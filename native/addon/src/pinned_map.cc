#include "pinned_map.h"

#include <bpf/bpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "map.h"
#include "map_batch.h"

namespace bulkhead {
namespace {

struct PinnedInit {
  std::string path;
  int fd;
  struct bpf_map_info info;
};

}  // namespace

Napi::Function PinnedMapWrap::Define(Napi::Env env) {
  return DefineClass(env, "PinnedMap",
                     {
                         InstanceAccessor<&PinnedMapWrap::Path>("path"),
                         InstanceAccessor<&PinnedMapWrap::Type>("type"),
                         InstanceAccessor<&PinnedMapWrap::KeySize>("keySize"),
                         InstanceAccessor<&PinnedMapWrap::ValueSize>("valueSize"),
                         InstanceAccessor<&PinnedMapWrap::MaxEntries>("maxEntries"),
                         InstanceAccessor<&PinnedMapWrap::Id>("id"),
                         InstanceMethod<&PinnedMapWrap::Lookup>("lookup"),
                         InstanceMethod<&PinnedMapWrap::Update>("update"),
                         InstanceMethod<&PinnedMapWrap::Delete>("delete"),
                         InstanceMethod<&PinnedMapWrap::Drain>("drain"),
                         InstanceMethod<&PinnedMapWrap::Dump>("dump"),
                         InstanceMethod<&PinnedMapWrap::Synchronize>("synchronize"),
                         InstanceMethod<&PinnedMapWrap::Close>("close"),
                     });
}

PinnedMapWrap::PinnedMapWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  PinnedInit* init = InitFrom<PinnedInit>(info, "PinnedMap");
  path_ = init->path;
  fd_ = init->fd;
  type_ = init->info.type;
  keySize_ = init->info.key_size;
  valueSize_ = init->info.value_size;
  maxEntries_ = init->info.max_entries;
  id_ = init->info.id;
  valueBytes_ = valueSize_;
  if (IsPercpu(static_cast<enum bpf_map_type>(type_))) {
    int cpus = libbpf_num_possible_cpus();
    valueBytes_ = static_cast<uint32_t>(std::max(cpus, 1)) * ((valueSize_ + 7) / 8 * 8);
  }
}

PinnedMapWrap::~PinnedMapWrap() {
  if (fd_ >= 0) close(fd_);
}

int PinnedMapWrap::FdFor(Napi::Env env, const std::string& op) const {
  if (fd_ < 0) ThrowBpfError(env, op, path_, EBADF, {"the pinned map was closed"});
  return fd_;
}

void PinnedMapWrap::CheckSize(Napi::Env env, const std::string& op, const char* what, size_t got,
                              size_t want) const {
  if (got != want)
    ThrowBpfError(env, op, path_, EINVAL,
                  {std::string(what) + " is " + std::to_string(got) + " bytes, the map's " +
                   std::to_string(want)});
}

Napi::Value PinnedMapWrap::Path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }
Napi::Value PinnedMapWrap::Type(const Napi::CallbackInfo& info) {
  const char* s = libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(type_));
  return Napi::String::New(info.Env(), s != nullptr ? s : "unknown");
}
Napi::Value PinnedMapWrap::KeySize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), keySize_); }
Napi::Value PinnedMapWrap::ValueSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), valueSize_); }
Napi::Value PinnedMapWrap::MaxEntries(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), maxEntries_); }
Napi::Value PinnedMapWrap::Id(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), id_); }

Napi::Value PinnedMapWrap::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  int fd = FdFor(env, "map_lookup");
  CheckSize(env, "map_lookup", "key", key.Length(), keySize_);
  auto value = Napi::Buffer<uint8_t>::New(env, valueBytes_);
  int r = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (r < 0) {
    int err = PositiveErrno(r);
    if (err == ENOENT) return env.Null();
    ThrowBpfError(env, "map_lookup", path_, err);
  }
  return value;
}

Napi::Value PinnedMapWrap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  auto value = BufferArg(info, 1, "value");
  uint32_t flags = info.Length() > 2 ? Uint32Option(env, info[2], "flags", 0) : 0;
  int fd = FdFor(env, "map_update");
  CheckSize(env, "map_update", "key", key.Length(), keySize_);
  CheckSize(env, "map_update", "value", value.Length(), valueBytes_);
  int r = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
  if (r < 0) ThrowBpfError(env, "map_update", path_, PositiveErrno(r));
  return env.Undefined();
}

Napi::Value PinnedMapWrap::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  int fd = FdFor(env, "map_delete");
  CheckSize(env, "map_delete", "key", key.Length(), keySize_);
  int r = bpf_map_delete_elem(fd, key.Data());
  if (r < 0) {
    int err = PositiveErrno(r);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpfError(env, "map_delete", path_, err);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value PinnedMapWrap::Batch(const Napi::CallbackInfo& info, bool andDelete) {
  Napi::Env env = info.Env();
  const std::string op = andDelete ? "map_lookup_and_delete_batch" : "map_lookup_batch";
  BatchSpec spec;
  spec.fd = FdFor(env, op);
  spec.keySize = keySize_;
  spec.valueBytes = valueBytes_;
  spec.batchSize = std::min<uint32_t>(4096, std::max<uint32_t>(maxEntries_, 1));
  spec.andDelete = andDelete;
  return BatchToJs(env, ReadBatches(spec), op, path_);
}

Napi::Value PinnedMapWrap::Drain(const Napi::CallbackInfo& info) { return Batch(info, true); }
Napi::Value PinnedMapWrap::Dump(const Napi::CallbackInfo& info) { return Batch(info, false); }

// As BpfObject.synchronize(): rewriting a populated slot of a map-in-map with the map it
// holds returns only after an RCU grace period. The inner map comes from its own pin when
// one is named (BPF_MAP_GET_FD_BY_ID, the fallback, needs CAP_SYS_ADMIN).
Napi::Value PinnedMapWrap::Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdFor(env, "synchronize");
  if (type_ != BPF_MAP_TYPE_ARRAY_OF_MAPS && type_ != BPF_MAP_TYPE_HASH_OF_MAPS)
    ThrowBpfError(env, "synchronize", path_, EINVAL, {"needs an array_of_maps or hash_of_maps"});
  std::string innerPath = info.Length() > 0 && info[0].IsString() ? std::string(info[0].As<Napi::String>()) : "";
  std::vector<uint8_t> key(keySize_), next(keySize_);
  const void* prev = nullptr;
  for (uint32_t seen = 0; seen <= maxEntries_; seen++) {
    if (bpf_map_get_next_key(fd, prev, next.data()) != 0) break;
    key.swap(next);
    prev = key.data();
    uint32_t innerId = 0;
    if (bpf_map_lookup_elem(fd, key.data(), &innerId) != 0) continue;
    int innerFd = -1;
    if (!innerPath.empty()) {
      innerFd = bpf_obj_get(innerPath.c_str());
      struct bpf_map_info inner;
      std::memset(&inner, 0, sizeof(inner));
      uint32_t len = sizeof(inner);
      if (innerFd >= 0 && (bpf_obj_get_info_by_fd(innerFd, &inner, &len) != 0 || inner.id != innerId)) {
        close(innerFd);
        innerFd = -1;
      }
    }
    if (innerFd < 0) innerFd = bpf_map_get_fd_by_id(innerId);
    if (innerFd < 0) continue;
    int r = bpf_map_update_elem(fd, key.data(), &innerFd,
                                type_ == BPF_MAP_TYPE_HASH_OF_MAPS ? BPF_EXIST : BPF_ANY);
    int err = r < 0 ? PositiveErrno(r) : 0;
    close(innerFd);
    if (r == 0) return env.Undefined();
    if (err != ENOENT) ThrowBpfError(env, "synchronize", path_, err);
  }
  ThrowBpfError(env, "synchronize", path_, ENOENT, {"no populated slot"});
}

Napi::Value PinnedMapWrap::Close(const Napi::CallbackInfo& info) {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  return info.Env().Undefined();
}

Napi::Value OpenPinnedMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  libbpf_log::Clear();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowBpfError(env, "open_pinned_map", path, PositiveErrno(fd));
  char target[64] = {0};
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (readlink(proc.c_str(), target, sizeof(target) - 1) <= 0 || std::strcmp(target, "anon_inode:bpf-map") != 0) {
    close(fd);
    ThrowBpfError(env, "open_pinned_map", path, EINVAL, {"the pin holds no map"});
  }
  PinnedInit init{path, fd, {}};
  std::memset(&init.info, 0, sizeof(init.info));
  uint32_t len = sizeof(init.info);
  int r = bpf_obj_get_info_by_fd(fd, &init.info, &len);
  if (r < 0 || init.info.type == BPF_MAP_TYPE_UNSPEC) {
    close(fd);
    ThrowBpfError(env, "open_pinned_map", path, r < 0 ? PositiveErrno(r) : EINVAL, {"the pin holds no map"});
  }
  return NewWrapped(Data(env).pinnedMap, &init);
}

}  // namespace bulkhead
