// openObject(): open → rodata values and max_entries overrides → adoption of pinned maps
// → load.
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "map_compat.h"
#include "object.h"

namespace bulkhead {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The internal map libbpf made for the ".rodata" section: "<obj name prefix>.rodata".
struct bpf_map* RodataMap(struct bpf_object* obj) {
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map) && EndsWith(bpf_map__name(map), ".rodata")) return map;
  }
  return nullptr;
}

// Writes each value at its variable's offset in the .rodata image, found through the
// .rodata DATASEC of the object's BTF. Sizes must match exactly: a short value would
// leave stale bytes, a long one would spill into the next variable.
void ApplyRodata(Napi::Env env, struct bpf_object* obj, const std::string& path,
                 Napi::Object values) {
  Napi::Array names = values.GetPropertyNames();
  if (names.Length() == 0) return;
  struct btf* btf = bpf_object__btf(obj);
  struct bpf_map* map = RodataMap(obj);
  int secId = btf != nullptr ? btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC) : -ENOENT;
  if (map == nullptr || secId < 0)
    ThrowBpfError(env, "rodata", path, ENOENT, {"the object has no .rodata section with BTF"});
  size_t imageSize = 0;
  auto* image = static_cast<uint8_t*>(const_cast<void*>(bpf_map__initial_value(map, &imageSize)));
  if (image == nullptr) ThrowBpfError(env, "rodata", path, EINVAL, {"no initial value for .rodata"});
  const struct btf_type* sec = btf__type_by_id(btf, secId);
  const struct btf_var_secinfo* vars = btf_var_secinfos(sec);
  const int nVars = btf_vlen(sec);

  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).As<Napi::String>();
    Napi::Value v = values.Get(name);
    if (!v.IsBuffer())
      throw Napi::TypeError::New(env, "openObject: rodata." + name + " must be a Buffer");
    auto buf = v.As<Napi::Buffer<uint8_t>>();
    const struct btf_var_secinfo* found = nullptr;
    for (int j = 0; j < nVars && found == nullptr; j++) {
      const struct btf_type* var = btf__type_by_id(btf, vars[j].type);
      if (var != nullptr && name == btf__name_by_offset(btf, var->name_off)) found = &vars[j];
    }
    if (found == nullptr)
      ThrowBpfError(env, "rodata", name, ENOENT, {"no const volatile variable of that name in " + path});
    if (buf.Length() != found->size)
      ThrowBpfError(env, "rodata", name, EINVAL,
                    {"value is " + std::to_string(buf.Length()) + " bytes, the variable " +
                     std::to_string(found->size)});
    if (static_cast<size_t>(found->offset) + found->size > imageSize)
      ThrowBpfError(env, "rodata", name, EINVAL, {"variable lies outside the .rodata image"});
    std::memcpy(image + found->offset, buf.Data(), found->size);
  }
}

void ApplyMaxEntries(Napi::Env env, struct bpf_object* obj, Napi::Object values) {
  Napi::Array names = values.GetPropertyNames();
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string name = names.Get(i).As<Napi::String>();
    uint32_t n = Uint32Option(env, values.Get(name), ("maxEntries." + name).c_str(), 0);
    struct bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (map == nullptr) ThrowBpfError(env, "max_entries", name, ENOENT, {"no such map"});
    libbpf_log::Clear();
    int r = bpf_map__set_max_entries(map, n);
    if (r < 0) ThrowLibbpfError(env, "max_entries", name, -r);
  }
}

// Compares every map of the object (internal ones aside: .rodata is a per-load constant,
// not state) with `<dir>/<name>`, and reuses the pinned maps only when all of them are
// there and the same: programs of one load then see one consistent set of maps, never a
// mix of an old map and a new one that expect different things of each other.
void AdoptPinnedMaps(struct bpf_object* obj, const std::string& dir, ObjectState& state) {
  struct Found {
    struct bpf_map* map;
    int fd;
  };
  std::vector<Found> found;
  bool all = true;
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (bpf_map__is_internal(map)) continue;
    const std::string name = bpf_map__name(map);
    int fd = bpf_obj_get((dir + "/" + name).c_str());
    if (fd < 0) {
      state.pinnedMaps.push_back({name, "absent"});
      all = false;
      continue;
    }
    std::string diff = MapDifference(obj, map, fd);
    state.pinnedMaps.push_back({name, diff.empty() ? "same" : diff});
    if (!diff.empty()) all = false;
    found.push_back({map, fd});
  }
  for (auto& f : found) {
    if (all && bpf_map__reuse_fd(f.map, f.fd) != 0) all = false;  // dups fd on success
    close(f.fd);
  }
  if (!all) {
    // A partial reuse must not survive: reopening is simpler than undoing reuse_fd, and
    // the caller only gets here before anything was created.
    state.mapsReused = false;
    return;
  }
  state.mapsReused = true;
}

// The verifier gives up with EAGAIN when a signal is pending on the loading thread, and
// libbpf retries a few times only: under `node --cpu-prof` (SIGPROF every millisecond) every
// load of endpoint.bpf.o (~0.5 s of verification) failed. The thread's asynchronous signals
// are held for the load and delivered after it; faults stay unblocked.
class SignalsHeld {
 public:
  SignalsHeld() {
    sigset_t all;
    sigfillset(&all);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&all, fault);
    held_ = pthread_sigmask(SIG_BLOCK, &all, &previous_) == 0;
  }
  ~SignalsHeld() {
    if (held_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SignalsHeld(const SignalsHeld&) = delete;
  SignalsHeld& operator=(const SignalsHeld&) = delete;

 private:
  sigset_t previous_;
  bool held_ = false;
};

}  // namespace

Napi::Value OpenObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "object path");
  Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>()
                                                               : Napi::Object::New(env);
  libbpf_log::Clear();
  errno = 0;
  struct bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
  if (obj == nullptr) ThrowLibbpfError(env, "open", path, PositiveErrno(0));

  auto state = std::make_shared<ObjectState>();
  state->path = path;
  state->obj = obj;  // from here the state closes it on any throw
  if (opts.Has("rodata") && opts.Get("rodata").IsObject())
    ApplyRodata(env, obj, path, opts.Get("rodata").As<Napi::Object>());
  if (opts.Has("maxEntries") && opts.Get("maxEntries").IsObject())
    ApplyMaxEntries(env, obj, opts.Get("maxEntries").As<Napi::Object>());

  if (opts.Has("reuseMapsFrom") && opts.Get("reuseMapsFrom").IsString()) {
    AdoptPinnedMaps(obj, opts.Get("reuseMapsFrom").As<Napi::String>(), *state);
    if (!state->mapsReused && !state->pinnedMaps.empty()) {
      // reuse_fd may have been applied to some maps before one failed: start again clean.
      bpf_object__close(obj);
      state->obj = nullptr;
      obj = bpf_object__open_file(path.c_str(), nullptr);
      if (obj == nullptr) ThrowLibbpfError(env, "open", path, PositiveErrno(0));
      state->obj = obj;
      if (opts.Has("rodata") && opts.Get("rodata").IsObject())
        ApplyRodata(env, obj, path, opts.Get("rodata").As<Napi::Object>());
      if (opts.Has("maxEntries") && opts.Get("maxEntries").IsObject())
        ApplyMaxEntries(env, obj, opts.Get("maxEntries").As<Napi::Object>());
    }
  }

  libbpf_log::Clear();
  int r;
  {
    SignalsHeld held;
    r = bpf_object__load(obj);
  }
  if (r < 0) ThrowLibbpfError(env, "load", path, -r);
  return NewWrapped(Data(env).bpfObject, &state);
}

}  // namespace bulkhead
