// rawSocket(): a SOCK_RAW IPv4/IPv6 socket for one protocol (SCTP probes in the lab),
// optionally made inside a netns, sending L4 payloads and receiving them on the loop.
#pragma once

#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "event_loop_watch.h"

namespace bulkhead {

class RawSocketWrap : public Napi::ObjectWrap<RawSocketWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit RawSocketWrap(const Napi::CallbackInfo& info);
  ~RawSocketWrap() override;

 private:
  Napi::Value Send(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void OnReadable();

  int fd_ = -1;
  int family_ = 4;
  int protocol_ = 0;
  ReadableWatch watch_;
  Napi::FunctionReference onPacket_;
  std::unique_ptr<Napi::AsyncContext> async_;
  std::vector<uint8_t> buf_;
  bool receiving_ = false;
};

// rawSocket(family, protocol, onPacket?, netns?)
Napi::Value NewRawSocket(const Napi::CallbackInfo& info);

}  // namespace bulkhead
