// A program of a loaded object: its identity, attachTc(), and testRun() (BPF_PROG_TEST_RUN).
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <memory>
#include <string>

#include "object.h"

namespace bulkhead {

class BpfProgramWrap : public Napi::ObjectWrap<BpfProgramWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit BpfProgramWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Name(const Napi::CallbackInfo& info);
  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Id(const Napi::CallbackInfo& info);
  Napi::Value Type(const Napi::CallbackInfo& info);
  Napi::Value AttachTc(const Napi::CallbackInfo& info);
  Napi::Value TestRun(const Napi::CallbackInfo& info);
  Napi::Value AdoptLink(const Napi::CallbackInfo& info);

  int FdFor(Napi::Env env, const std::string& op) const;

  std::shared_ptr<ObjectState> owner_;
  Napi::ObjectReference ownerJs_;
  struct bpf_program* prog_ = nullptr;
  std::string name_;
  std::string type_;
  uint32_t id_ = 0;
};

Napi::Object NewBpfProgram(Napi::Env env, const std::shared_ptr<ObjectState>& owner,
                           Napi::Object ownerJs, struct bpf_program* prog);

}  // namespace bulkhead
