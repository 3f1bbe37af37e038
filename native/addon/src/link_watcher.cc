#include "link_watcher.h"

#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "errors.h"
#include "netlink.h"

namespace bulkhead {
namespace {

struct WatcherInit {
  Napi::Function onEvents;
  std::string netns;
};

// Datagrams read per readable event, so a storm cannot starve the loop.
constexpr int kMaxDatagramsPerTurn = 256;
// A deep receive queue makes overruns rare; when one happens we say so ("resync").
constexpr int kReceiveBuffer = 4 * 1024 * 1024;

}  // namespace

Napi::Value WatchLinks(const Napi::CallbackInfo& info) {
  WatcherInit init{FunctionArg(info, 0, "onEvents"),
                   info.Length() > 1 && info[1].IsString()
                       ? std::string(info[1].As<Napi::String>()) : ""};
  return NewWrapped(Data(info.Env()).linkWatcher, &init);
}

Napi::Function LinkWatcherWrap::Define(Napi::Env env) {
  return DefineClass(env, "LinkWatcher", {InstanceMethod<&LinkWatcherWrap::Close>("close")});
}

LinkWatcherWrap::LinkWatcherWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  Napi::Env env = info.Env();
  WatcherInit* init = InitFrom<WatcherInit>(info, "LinkWatcher");
  fd_ = OpenRouteSocket(env, init->netns, "watch_links", RTMGRP_LINK, true);
  int size = kReceiveBuffer;
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) != 0)
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  onEvents_ = Napi::Persistent(init->onEvents);
  async_ = std::make_unique<Napi::AsyncContext>(env, "bulkhead:LinkWatcher");
  buf_.resize(64 * 1024);
  int fd = fd_;
  int rc = watch_.Start(env, fd_, [this] { OnReadable(); }, [fd] { close(fd); });
  if (rc != 0) {
    fd_ = -1;
    ThrowBpfError(env, "watch_links", "rtnetlink", -rc, {"uv_poll_start"});
  }
  open_ = true;
  Ref();
}

LinkWatcherWrap::~LinkWatcherWrap() { watch_.Stop(); }

void LinkWatcherWrap::OnReadable() {
  if (!open_) return;
  std::vector<LinkRecord> records;
  bool overrun = false;
  for (int i = 0; i < kMaxDatagramsPerTurn; i++) {
    ssize_t n = recv(fd_, buf_.data(), buf_.size(), MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // the kernel dropped messages: the listener must re-list
        overrun = true;
        continue;
      }
      break;  // EAGAIN: drained
    }
    if (static_cast<size_t>(n) > buf_.size()) {  // cut datagram: grow, report, resync
      buf_.resize(static_cast<size_t>(n));
      overrun = true;
      continue;
    }
    int err = 0;
    ParseLinkMessages(buf_.data(), static_cast<size_t>(n), records, &err);
  }
  if (records.empty() && !overrun) return;

  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Array events = Napi::Array::New(env);
  uint32_t i = 0;
  if (overrun) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("type", "resync");
    e.Set("ifindex", 0);
    e.Set("name", "");
    events.Set(i++, e);
  }
  for (const LinkRecord& r : records) {
    Napi::Object e = LinkRecordToJs(env, r);
    e.Set("type", r.msgType == RTM_DELLINK ? "del" : "new");
    events.Set(i++, e);
  }
  CallFromLoop(env, onEvents_, Value(), {events}, *async_);
}

Napi::Value LinkWatcherWrap::Close(const Napi::CallbackInfo& info) {
  if (open_) {
    open_ = false;
    watch_.Stop();
    fd_ = -1;
    Unref();
  }
  return info.Env().Undefined();
}

}  // namespace bulkhead
