#include "link.h"

#include <cerrno>

#include "addon.h"
#include "errors.h"

namespace bulkhead {
namespace {

struct LinkInit {
  std::shared_ptr<LinkState> link;
  Napi::Object ownerJs;
};

}  // namespace

Napi::Object NewLink(Napi::Env env, const std::shared_ptr<LinkState>& link, Napi::Object ownerJs) {
  LinkInit init{link, ownerJs};
  return NewWrapped(Data(env).link, &init);
}

Napi::Function LinkWrap::Define(Napi::Env env) {
  return DefineClass(env, "Link",
                     {
                         InstanceAccessor<&LinkWrap::Mode>("mode"),
                         InstanceAccessor<&LinkWrap::Ifindex>("ifindex"),
                         InstanceAccessor<&LinkWrap::Direction>("direction"),
                         InstanceAccessor<&LinkWrap::Id>("id"),
                         InstanceAccessor<&LinkWrap::Attached>("attached"),
                         InstanceMethod<&LinkWrap::Detach>("detach"),
                         InstanceMethod<&LinkWrap::Pin>("pin"),
                     });
}

LinkWrap::LinkWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  LinkInit* init = InitFrom<LinkInit>(info, "Link");
  link_ = init->link;
  ownerJs_ = Napi::Persistent(init->ownerJs);
}

Napi::Value LinkWrap::Mode(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), link_->mode == AttachMode::kTcx ? "tcx" : "clsact");
}
Napi::Value LinkWrap::Ifindex(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), link_->ifindex);
}
Napi::Value LinkWrap::Direction(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), DirectionName(link_->direction));
}
Napi::Value LinkWrap::Id(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), link_->id);
}
Napi::Value LinkWrap::Attached(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), link_->attached());
}

Napi::Value LinkWrap::Detach(const Napi::CallbackInfo& info) {
  int err = link_->Detach();
  if (err != 0) ThrowBpfError(info.Env(), "detach", link_->object, err, {"", true});
  return info.Env().Undefined();
}

Napi::Value LinkWrap::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  if (!link_->attached())
    ThrowBpfError(env, "link_pin", link_->object, EBADF,
                  {link_->closedWithObject ? "the link was detached when its BpfObject was closed"
                                           : "the link is detached"});
  int err = link_->Pin(path);
  if (err == EOPNOTSUPP)
    ThrowBpfError(env, "link_pin", link_->object, err, {"a clsact filter cannot be pinned"});
  if (err != 0) ThrowBpfError(env, "link_pin", link_->object + " at " + path, err, {"", true});
  return env.Undefined();
}

Napi::Value CleanupClsactJs(const Napi::CallbackInfo& info) {
  std::string iface = StringArg(info, 0, "iface");
  std::string netns = info.Length() > 1 && info[1].IsString()
                          ? std::string(info[1].As<Napi::String>()) : "";
  return Napi::Number::New(info.Env(), CleanupClsact(info.Env(), iface, netns));
}

Napi::Value RemovePinnedLinkJs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "pin path");
  return Napi::Boolean::New(info.Env(), RemovePinnedLink(info.Env(), path));
}

Napi::Value PinnedLinkJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info, 0, "pin path");
  PinnedTcxInfo p;
  int err = ReadPinnedTcx(path, &p);
  if (err == ENOENT) return env.Null();
  if (err != 0) ThrowBpfError(env, "pinned_link", path, err, {err == EINVAL ? "not a tcx link on a bpf filesystem" : ""});
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", p.id);
  o.Set("programId", p.progId);
  o.Set("ifindex", p.ifindex);
  o.Set("direction", DirectionName(p.direction));
  return o;
}

}  // namespace bulkhead
