#include "map.h"

#include <bpf/bpf.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "addon.h"
#include "errors.h"
#include "map_batch.h"

namespace bulkhead {
namespace {

struct MapInit {
  std::shared_ptr<ObjectState> owner;
  Napi::Object ownerJs;
  struct bpf_map* map;
};

constexpr uint32_t kDefaultBatch = 4096;

}  // namespace

bool IsPercpu(enum bpf_map_type type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

Napi::Object NewBpfMap(Napi::Env env, const std::shared_ptr<ObjectState>& owner,
                       Napi::Object ownerJs, struct bpf_map* map) {
  MapInit init{owner, ownerJs, map};
  return NewWrapped(Data(env).bpfMap, &init);
}

Napi::Function BpfMapWrap::Define(Napi::Env env) {
  return DefineClass(env, "BpfMap",
                     {
                         InstanceAccessor<&BpfMapWrap::Name>("name"),
                         InstanceAccessor<&BpfMapWrap::Type>("type"),
                         InstanceAccessor<&BpfMapWrap::KeySize>("keySize"),
                         InstanceAccessor<&BpfMapWrap::ValueSize>("valueSize"),
                         InstanceAccessor<&BpfMapWrap::MaxEntries>("maxEntries"),
                         InstanceAccessor<&BpfMapWrap::Fd>("fd"),
                         InstanceMethod<&BpfMapWrap::Lookup>("lookup"),
                         InstanceMethod<&BpfMapWrap::Update>("update"),
                         InstanceMethod<&BpfMapWrap::Delete>("delete"),
                         InstanceMethod<&BpfMapWrap::Drain>("drain"),
                         InstanceMethod<&BpfMapWrap::Dump>("dump"),
                         InstanceMethod<&BpfMapWrap::Pin>("pin"),
                         InstanceMethod<&BpfMapWrap::Unpin>("unpin"),
                     });
}

BpfMapWrap::BpfMapWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  MapInit* init = InitFrom<MapInit>(info, "BpfMap");
  owner_ = init->owner;
  ownerJs_ = Napi::Persistent(init->ownerJs);
  map_ = init->map;
  name_ = bpf_map__name(map_);
  type_ = bpf_map__type(map_);
  keySize_ = bpf_map__key_size(map_);
  valueSize_ = bpf_map__value_size(map_);
  maxEntries_ = bpf_map__max_entries(map_);
  valueBytes_ = valueSize_;
  if (IsPercpu(type_)) {
    int cpus = libbpf_num_possible_cpus();
    valueBytes_ = static_cast<uint32_t>(std::max(cpus, 1)) * ((valueSize_ + 7) / 8 * 8);
  }
}

int BpfMapWrap::FdFor(Napi::Env env, const std::string& op) const {
  if (!owner_->open()) ThrowClosed(env, op, name_, *owner_);
  return bpf_map__fd(map_);
}

Napi::Value BpfMapWrap::Name(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), name_);
}
Napi::Value BpfMapWrap::Type(const Napi::CallbackInfo& info) {
  const char* s = libbpf_bpf_map_type_str(type_);
  return Napi::String::New(info.Env(), s != nullptr ? s : "unknown");
}
Napi::Value BpfMapWrap::KeySize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), keySize_);
}
Napi::Value BpfMapWrap::ValueSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), valueSize_);
}
Napi::Value BpfMapWrap::MaxEntries(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), maxEntries_);
}
Napi::Value BpfMapWrap::Fd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), owner_->open() ? bpf_map__fd(map_) : -1);
}

void BpfMapWrap::CheckKey(Napi::Env env, const std::string& op,
                          const Napi::Buffer<uint8_t>& key) const {
  if (key.Length() != keySize_)
    ThrowBpfError(env, op, name_, EINVAL,
                  {"key is " + std::to_string(key.Length()) + " bytes, the map's " +
                   std::to_string(keySize_)});
}

Napi::Value BpfMapWrap::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  int fd = FdFor(env, "map_lookup");
  CheckKey(env, "map_lookup", key);
  auto value = Napi::Buffer<uint8_t>::New(env, valueBytes_);
  int r = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (r < 0) {
    int err = PositiveErrno(r);
    if (err == ENOENT) return env.Null();
    ThrowBpfError(env, "map_lookup", name_, err);
  }
  return value;
}

Napi::Value BpfMapWrap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  auto value = BufferArg(info, 1, "value");
  uint32_t flags = info.Length() > 2 ? Uint32Option(env, info[2], "flags", 0) : 0;
  int fd = FdFor(env, "map_update");
  CheckKey(env, "map_update", key);
  if (value.Length() != valueBytes_)
    ThrowBpfError(env, "map_update", name_, EINVAL,
                  {"value is " + std::to_string(value.Length()) + " bytes, the map's " +
                   std::to_string(valueBytes_)});
  int r = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
  if (r < 0) ThrowBpfError(env, "map_update", name_, PositiveErrno(r));
  return env.Undefined();
}

Napi::Value BpfMapWrap::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = BufferArg(info, 0, "key");
  int fd = FdFor(env, "map_delete");
  CheckKey(env, "map_delete", key);
  int r = bpf_map_delete_elem(fd, key.Data());
  if (r < 0) {
    int err = PositiveErrno(r);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpfError(env, "map_delete", name_, err);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value BpfMapWrap::Batch(const Napi::CallbackInfo& info, bool andDelete) {
  Napi::Env env = info.Env();
  const std::string op = andDelete ? "map_lookup_and_delete_batch" : "map_lookup_batch";
  BatchSpec spec;
  spec.fd = FdFor(env, op);
  spec.keySize = keySize_;
  spec.valueBytes = valueBytes_;
  spec.batchSize = info.Length() > 0 && !info[0].IsUndefined()
                       ? Uint32Option(env, info[0], "batchSize", kDefaultBatch)
                       : std::min(kDefaultBatch, std::max<uint32_t>(maxEntries_, 1));
  if (spec.batchSize == 0) throw Napi::RangeError::New(env, "batchSize must be at least 1");
  spec.andDelete = andDelete;
  Napi::Object into;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    const std::string what = std::string(andDelete ? "drain" : "dump") + " into";
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, what + " must be { keys: Buffer, values: Buffer }");
    into = info[1].As<Napi::Object>();
    Napi::Value keys = into.Get("keys"), values = into.Get("values");
    if (!keys.IsBuffer()) throw Napi::TypeError::New(env, what + ".keys must be a Buffer");
    if (!values.IsBuffer()) throw Napi::TypeError::New(env, what + ".values must be a Buffer");
    auto k = keys.As<Napi::Buffer<uint8_t>>();
    auto v = values.As<Napi::Buffer<uint8_t>>();
    spec.keysInto = k.Data();
    spec.keysIntoBytes = k.Length();
    spec.valuesInto = v.Data();
    spec.valuesIntoBytes = v.Length();
    Napi::Value stop = into.Get("stopWhenFull");
    spec.stopWhenFull = stop.IsBoolean() && stop.As<Napi::Boolean>().Value();
    Napi::Value from = into.Get("from");
    if (!from.IsUndefined()) {
      const size_t tokenSize = BatchTokenSize(keySize_);
      if (!from.IsBuffer() || from.As<Napi::Buffer<uint8_t>>().Length() != tokenSize) {
        throw Napi::TypeError::New(env, what + ".from must be the " + std::to_string(tokenSize) +
                                            "-byte Buffer an earlier " + (andDelete ? "drain" : "dump") +
                                            " of " + name_ + " returned as .next");
      }
      spec.from = from.As<Napi::Buffer<uint8_t>>().Data();
    }
  }
  return BatchToJs(env, ReadBatches(spec), op, name_, into);
}

Napi::Value BatchToJs(Napi::Env env, const BatchResult& res, const std::string& op, const std::string& object,
                      Napi::Object into) {
  Napi::Object out = Napi::Object::New(env);
  if (res.inPlace && !into.IsEmpty()) {
    auto view = [&](const char* name, size_t bytes) {
      Napi::Object buf = into.Get(name).As<Napi::Object>();
      return buf.Get("subarray").As<Napi::Function>().Call(
          buf, {Napi::Number::New(env, 0), Napi::Number::New(env, static_cast<double>(bytes))});
    };
    out.Set("keys", view("keys", size_t(res.count) * res.keySize));
    out.Set("values", view("values", size_t(res.count) * res.valueBytes));
  } else {
    out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, res.keys.data(), res.keys.size()));
    out.Set("values", Napi::Buffer<uint8_t>::Copy(env, res.values.data(), res.values.size()));
  }
  out.Set("count", res.count);
  if (!res.next.empty()) out.Set("next", Napi::Buffer<uint8_t>::Copy(env, res.next.data(), res.next.size()));
  if (res.err != 0) {
    // Entries already deleted must not vanish with the exception.
    Napi::Error e = MakeBpfError(env, op, object, res.err,
                                 {res.count > 0 ? "entries read before the failure are in .partial" : ""});
    e.Value().Set("partial", out);
    throw e;
  }
  return out;
}

Napi::Value BpfMapWrap::Drain(const Napi::CallbackInfo& info) { return Batch(info, true); }
Napi::Value BpfMapWrap::Dump(const Napi::CallbackInfo& info) { return Batch(info, false); }

Napi::Value BpfMapWrap::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  int fd = FdFor(env, "map_pin");
  libbpf_log::Clear();
  int r = bpf_obj_pin(fd, path.c_str());
  if (r < 0) ThrowLibbpfError(env, "map_pin", name_ + " at " + path, PositiveErrno(r));
  return env.Undefined();
}

// Removes the pin only if it is on a bpf filesystem and holds this very map: unpin must
// never delete an unrelated file.
Napi::Value BpfMapWrap::Unpin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  int fd = FdFor(env, "map_unpin");
  const std::string object = name_ + " at " + path;
  struct statfs fs;
  if (statfs(path.c_str(), &fs) != 0) ThrowBpfError(env, "map_unpin", object, errno);
  if (fs.f_type != BPF_FS_MAGIC)
    ThrowBpfError(env, "map_unpin", object, EINVAL, {"not on a bpf filesystem"});
  struct bpf_map_info mine, pinned;
  uint32_t len = sizeof(mine);
  std::memset(&mine, 0, sizeof(mine));
  std::memset(&pinned, 0, sizeof(pinned));
  int r = bpf_obj_get_info_by_fd(fd, &mine, &len);
  if (r < 0) ThrowBpfError(env, "map_unpin", object, PositiveErrno(r));
  int pfd = bpf_obj_get(path.c_str());
  if (pfd < 0) ThrowBpfError(env, "map_unpin", object, PositiveErrno(pfd));
  len = sizeof(pinned);
  r = bpf_obj_get_info_by_fd(pfd, &pinned, &len);
  close(pfd);
  if (r < 0 || pinned.id != mine.id)
    ThrowBpfError(env, "map_unpin", object, EINVAL, {"the pin holds another object"});
  if (unlink(path.c_str()) != 0) ThrowBpfError(env, "map_unpin", object, errno);
  return env.Undefined();
}

}  // namespace bulkhead
