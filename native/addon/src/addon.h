// Per-environment state of the addon: the JS constructors of the wrapped classes, which
// only C++ may call (each takes an External carrying its init data).
#pragma once

#include <napi.h>

namespace bulkhead {

struct AddonData {
  Napi::FunctionReference bpfObject;
  Napi::FunctionReference bpfMap;
  Napi::FunctionReference bpfProgram;
  Napi::FunctionReference link;
  Napi::FunctionReference ringBuffer;
  Napi::FunctionReference linkWatcher;
  Napi::FunctionReference rawSocket;
  Napi::FunctionReference pinnedMap;
};

AddonData& Data(Napi::Env env);

// Builds a wrapped instance from C++: `init` is read synchronously by the constructor.
template <typename Init>
Napi::Object NewWrapped(Napi::FunctionReference& ctor, Init* init) {
  return ctor.New({Napi::External<Init>::New(ctor.Env(), init)});
}

// The constructor side: the init data, or a TypeError for `new X()` from JavaScript.
template <typename Init>
Init* InitFrom(const Napi::CallbackInfo& info, const char* className) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), std::string(className) +
                                               " is made by the addon, not with new");
  return info[0].As<Napi::External<Init>>().Data();
}

// Argument helpers: a TypeError naming the function and argument.
std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what);
Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* what);
Napi::Function FunctionArg(const Napi::CallbackInfo& info, size_t i, const char* what);
uint32_t Uint32Option(Napi::Env env, Napi::Value v, const char* what, uint32_t dflt);

}  // namespace bulkhead
