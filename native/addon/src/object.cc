#include "object.h"

#include <bpf/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "map.h"
#include "program.h"

namespace bulkhead {

void ObjectState::Close(bool explicitClose) {
  for (auto& link : links) {
    if (explicitClose) {
      if (link->Detach() != 0) link->Release();
    } else {
      link->Release();
    }
    link->closedWithObject = true;
  }
  links.clear();
  if (obj != nullptr) bpf_object__close(obj);
  obj = nullptr;
}

void ObjectState::Adopt(std::shared_ptr<LinkState> link) {
  std::vector<std::shared_ptr<LinkState>> live;
  for (auto& l : links)
    if (l->attached()) live.push_back(l);
  live.push_back(std::move(link));
  links.swap(live);
}

void ThrowClosed(Napi::Env env, const std::string& op, const std::string& object,
                 const ObjectState& state) {
  ThrowBpfError(env, op, object, EBADF, {"its BpfObject " + state.path + " was closed"});
}

Napi::Function BpfObjectWrap::Define(Napi::Env env) {
  return DefineClass(env, "BpfObject",
                     {
                         InstanceAccessor<&BpfObjectWrap::Path>("path"),
                         InstanceMethod<&BpfObjectWrap::Map>("map"),
                         InstanceMethod<&BpfObjectWrap::Program>("program"),
                         InstanceMethod<&BpfObjectWrap::Maps>("maps"),
                         InstanceMethod<&BpfObjectWrap::Programs>("programs"),
                         InstanceMethod<&BpfObjectWrap::Synchronize>("synchronize"),
                         InstanceMethod<&BpfObjectWrap::Close>("close"),
                         InstanceMethod<&BpfObjectWrap::Release>("release"),
                         InstanceAccessor<&BpfObjectWrap::Adoption>("adoption"),
                     });
}

BpfObjectWrap::BpfObjectWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  state_ = *InitFrom<std::shared_ptr<ObjectState>>(info, "BpfObject");
}

// Garbage collection of an unclosed object releases it the way process exit would.
BpfObjectWrap::~BpfObjectWrap() { state_->Close(false); }

Napi::Value BpfObjectWrap::Path(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), state_->path);
}

Napi::Value BpfObjectWrap::Map(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "map name");
  if (!state_->open()) ThrowClosed(info.Env(), "map", name, *state_);
  struct bpf_map* map = bpf_object__find_map_by_name(state_->obj, name.c_str());
  if (map == nullptr) ThrowBpfError(info.Env(), "map", name, ENOENT, {"not in " + state_->path});
  return NewBpfMap(info.Env(), state_, Value(), map);
}

Napi::Value BpfObjectWrap::Program(const Napi::CallbackInfo& info) {
  std::string name = StringArg(info, 0, "program name");
  if (!state_->open()) ThrowClosed(info.Env(), "program", name, *state_);
  struct bpf_program* prog = bpf_object__find_program_by_name(state_->obj, name.c_str());
  if (prog == nullptr)
    ThrowBpfError(info.Env(), "program", name, ENOENT, {"not in " + state_->path});
  return NewBpfProgram(info.Env(), state_, Value(), prog);
}

Napi::Value BpfObjectWrap::Maps(const Napi::CallbackInfo& info) {
  if (!state_->open()) ThrowClosed(info.Env(), "maps", state_->path, *state_);
  Napi::Array names = Napi::Array::New(info.Env());
  struct bpf_map* map;
  uint32_t i = 0;
  bpf_object__for_each_map(map, state_->obj) names.Set(i++, bpf_map__name(map));
  return names;
}

Napi::Value BpfObjectWrap::Programs(const Napi::CallbackInfo& info) {
  if (!state_->open()) ThrowClosed(info.Env(), "programs", state_->path, *state_);
  Napi::Array names = Napi::Array::New(info.Env());
  struct bpf_program* prog;
  uint32_t i = 0;
  bpf_object__for_each_program(prog, state_->obj) names.Set(i++, bpf_program__name(prog));
  return names;
}

// The fd of this object's map with kernel id `id`, or -1. Re-inserting an inner map the
// object owns needs no BPF_MAP_GET_FD_BY_ID, which the kernel allows only with
// CAP_SYS_ADMIN: the agent then runs with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN alone.
static int OwnMapFd(struct bpf_object* obj, uint32_t id) {
  struct bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    int fd = bpf_map__fd(m);
    if (fd < 0) continue;
    struct bpf_map_info mapInfo = {};
    uint32_t len = sizeof(mapInfo);
    if (bpf_obj_get_info_by_fd(fd, &mapInfo, &len) == 0 && mapInfo.id == id) return fd;
  }
  return -1;
}

// The kernel runs synchronize_rcu() after every successful update of a map-in-map, so
// rewriting one populated slot with the map it already holds waits for a grace period
// without changing what any program sees.
Napi::Value BpfObjectWrap::Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = StringArg(info, 0, "outer map name");
  if (!state_->open()) ThrowClosed(env, "synchronize", name, *state_);
  struct bpf_map* map = bpf_object__find_map_by_name(state_->obj, name.c_str());
  if (map == nullptr) ThrowBpfError(env, "synchronize", name, ENOENT, {"not in " + state_->path});
  enum bpf_map_type type = bpf_map__type(map);
  if (type != BPF_MAP_TYPE_ARRAY_OF_MAPS && type != BPF_MAP_TYPE_HASH_OF_MAPS)
    ThrowBpfError(env, "synchronize", name, EINVAL, {"needs an array_of_maps or hash_of_maps"});
  int fd = bpf_map__fd(map);
  std::vector<uint8_t> key(bpf_map__key_size(map)), next(key.size());
  const void* prev = nullptr;
  for (uint32_t seen = 0; seen <= bpf_map__max_entries(map); seen++) {
    if (bpf_map_get_next_key(fd, prev, next.data()) != 0) break;
    key.swap(next);
    prev = key.data();
    uint32_t innerId = 0;
    if (bpf_map_lookup_elem(fd, key.data(), &innerId) != 0) continue;  // empty array slot
    int ownFd = OwnMapFd(state_->obj, innerId);
    int innerFd = ownFd >= 0 ? ownFd : bpf_map_get_fd_by_id(innerId);
    if (innerFd < 0) continue;  // replaced meanwhile
    // Arrays of maps accept only BPF_ANY; for a hash, BPF_EXIST never re-creates a key
    // deleted meanwhile.
    int r = bpf_map_update_elem(fd, key.data(), &innerFd,
                                type == BPF_MAP_TYPE_HASH_OF_MAPS ? BPF_EXIST : BPF_ANY);
    int err = r < 0 ? PositiveErrno(r) : 0;
    if (ownFd < 0) close(innerFd);
    if (r == 0) return env.Undefined();
    if (err != ENOENT) ThrowBpfError(env, "synchronize", name, err);
  }
  ThrowBpfError(env, "synchronize", name, ENOENT,
                {"needs at least one populated slot (initialize one statically)"});
}

Napi::Value BpfObjectWrap::Close(const Napi::CallbackInfo& info) {
  state_->Close(true);
  return info.Env().Undefined();
}

// What process exit does: every fd closed; pinned links (and the programs and maps they
// hold) stay attached, unpinned ones go.
Napi::Value BpfObjectWrap::Release(const Napi::CallbackInfo& info) {
  state_->Close(false);
  return info.Env().Undefined();
}

Napi::Value BpfObjectWrap::Adoption(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("reused", Napi::Boolean::New(env, state_->mapsReused));
  Napi::Object maps = Napi::Object::New(env);
  for (const auto& [name, status] : state_->pinnedMaps) maps.Set(name, status);
  out.Set("maps", maps);
  return out;
}

}  // namespace bulkhead
