#include "program.h"

#include <bpf/bpf.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "link.h"
#include "tc_attach.h"

namespace bulkhead {
namespace {

struct ProgramInit {
  std::shared_ptr<ObjectState> owner;
  Napi::Object ownerJs;
  struct bpf_program* prog;
};

AttachRequest ParseAttachOptions(Napi::Env env, Napi::Value v) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, "attachTc: options object expected");
  Napi::Object o = v.As<Napi::Object>();
  AttachRequest req;
  Napi::Value iface = o.Get("iface");
  if (iface.IsString()) {
    req.ifaceName = iface.As<Napi::String>();
    if (req.ifaceName.empty()) throw Napi::TypeError::New(env, "attachTc: iface is empty");
  } else if (iface.IsNumber() && iface.As<Napi::Number>().Int64Value() > 0) {
    req.ifindex = iface.As<Napi::Number>().Int32Value();
  } else {
    throw Napi::TypeError::New(env, "attachTc: iface must be a name or a positive ifindex");
  }
  std::string dir = o.Get("direction").IsString() ? o.Get("direction").As<Napi::String>().Utf8Value() : "";
  if (dir == "ingress") req.direction = Direction::kIngress;
  else if (dir == "egress") req.direction = Direction::kEgress;
  else throw Napi::TypeError::New(env, "attachTc: direction must be \"ingress\" or \"egress\"");
  if (o.Get("netns").IsString()) req.netns = o.Get("netns").As<Napi::String>();
  if (o.Get("mode").IsString()) req.mode = o.Get("mode").As<Napi::String>();
  if (req.mode != "auto" && req.mode != "tcx" && req.mode != "clsact")
    throw Napi::TypeError::New(env, "attachTc: mode must be \"auto\", \"tcx\" or \"clsact\"");
  std::string position = o.Get("position").IsString() ? o.Get("position").As<Napi::String>().Utf8Value() : "first";
  if (position == "first") req.position = ChainPosition::kFirst;
  else if (position == "last") req.position = ChainPosition::kLast;
  else throw Napi::TypeError::New(env, "attachTc: position must be \"first\" or \"last\"");
  return req;
}

}  // namespace

Napi::Object NewBpfProgram(Napi::Env env, const std::shared_ptr<ObjectState>& owner,
                           Napi::Object ownerJs, struct bpf_program* prog) {
  ProgramInit init{owner, ownerJs, prog};
  return NewWrapped(Data(env).bpfProgram, &init);
}

Napi::Function BpfProgramWrap::Define(Napi::Env env) {
  return DefineClass(env, "BpfProgram",
                     {
                         InstanceAccessor<&BpfProgramWrap::Name>("name"),
                         InstanceAccessor<&BpfProgramWrap::Fd>("fd"),
                         InstanceAccessor<&BpfProgramWrap::Id>("id"),
                         InstanceAccessor<&BpfProgramWrap::Type>("type"),
                         InstanceMethod<&BpfProgramWrap::AttachTc>("attachTc"),
                         InstanceMethod<&BpfProgramWrap::TestRun>("testRun"),
                         InstanceMethod<&BpfProgramWrap::AdoptLink>("adoptLink"),
                     });
}

BpfProgramWrap::BpfProgramWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  ProgramInit* init = InitFrom<ProgramInit>(info, "BpfProgram");
  owner_ = init->owner;
  ownerJs_ = Napi::Persistent(init->ownerJs);
  prog_ = init->prog;
  name_ = bpf_program__name(prog_);
  const char* t = libbpf_bpf_prog_type_str(bpf_program__type(prog_));
  type_ = t != nullptr ? t : "unknown";
  struct bpf_prog_info pinfo;
  std::memset(&pinfo, 0, sizeof(pinfo));
  uint32_t len = sizeof(pinfo);
  if (bpf_obj_get_info_by_fd(bpf_program__fd(prog_), &pinfo, &len) == 0) id_ = pinfo.id;
}

int BpfProgramWrap::FdFor(Napi::Env env, const std::string& op) const {
  if (!owner_->open()) ThrowClosed(env, op, name_, *owner_);
  return bpf_program__fd(prog_);
}

Napi::Value BpfProgramWrap::Name(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), name_);
}
Napi::Value BpfProgramWrap::Fd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), owner_->open() ? bpf_program__fd(prog_) : -1);
}
Napi::Value BpfProgramWrap::Id(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), id_);
}
Napi::Value BpfProgramWrap::Type(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), type_);
}

Napi::Value BpfProgramWrap::AttachTc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AttachRequest req = ParseAttachOptions(env, info.Length() > 0 ? info[0] : env.Undefined());
  int fd = FdFor(env, "attach");
  std::shared_ptr<LinkState> link = bulkhead::AttachTc(env, fd, req);
  owner_->Adopt(link);
  return NewLink(env, link, ownerJs_.Value());
}

// Swaps this program into the tcx link pinned at `path`; the Link belongs to this
// object from then on (close() detaches and unpins it, release() leaves it).
Napi::Value BpfProgramWrap::AdoptLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  int fd = FdFor(env, "adopt_link");
  std::shared_ptr<LinkState> link = AdoptPinnedTcx(env, fd, path);
  owner_->Adopt(link);
  return NewLink(env, link, ownerJs_.Value());
}

// Runs the program once per repetition on `data` (a whole frame for tc programs).
Napi::Value BpfProgramWrap::TestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto data = BufferArg(info, 0, "packet");
  uint32_t repeat = info.Length() > 1 ? Uint32Option(env, info[1], "repeat", 1) : 1;
  int fd = FdFor(env, "test_run");
  std::vector<uint8_t> out(data.Length() + 4096);
  auto opts = LibbpfOpts<bpf_test_run_opts>();
  opts.data_in = data.Data();
  opts.data_size_in = static_cast<uint32_t>(data.Length());
  opts.data_out = out.data();
  opts.data_size_out = static_cast<uint32_t>(out.size());
  opts.repeat = static_cast<int>(repeat == 0 ? 1 : repeat);
  libbpf_log::Clear();
  int r = bpf_prog_test_run_opts(fd, &opts);
  if (r < 0) ThrowLibbpfError(env, "test_run", name_, PositiveErrno(r));
  Napi::Object res = Napi::Object::New(env);
  res.Set("retval", Napi::Number::New(env, static_cast<int32_t>(opts.retval)));
  res.Set("durationNs", Napi::Number::New(env, opts.duration));
  res.Set("data", Napi::Buffer<uint8_t>::Copy(env, out.data(), opts.data_size_out));
  return res;
}

}  // namespace bulkhead
