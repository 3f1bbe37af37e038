// watchLinks(): an RTMGRP_LINK subscription in one netns, read on the event loop, one JS
// call per readable event with every link message that arrived.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "event_loop_watch.h"

namespace bulkhead {

class LinkWatcherWrap : public Napi::ObjectWrap<LinkWatcherWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LinkWatcherWrap(const Napi::CallbackInfo& info);
  ~LinkWatcherWrap() override;

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  void OnReadable();

  int fd_ = -1;
  ReadableWatch watch_;
  Napi::FunctionReference onEvents_;
  std::unique_ptr<Napi::AsyncContext> async_;
  std::vector<uint8_t> buf_;
  bool open_ = false;
};

// watchLinks(onEvents, netns?)
Napi::Value WatchLinks(const Napi::CallbackInfo& info);

}  // namespace bulkhead
