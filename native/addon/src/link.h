// The JS Link: one tc attachment (tcx link or clsact filter), detach() and pin().
#pragma once

#include <napi.h>

#include <memory>

#include "tc_attach.h"

namespace bulkhead {

class LinkWrap : public Napi::ObjectWrap<LinkWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit LinkWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Mode(const Napi::CallbackInfo& info);
  Napi::Value Ifindex(const Napi::CallbackInfo& info);
  Napi::Value Direction(const Napi::CallbackInfo& info);
  Napi::Value Id(const Napi::CallbackInfo& info);
  Napi::Value Attached(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);

  std::shared_ptr<LinkState> link_;
  Napi::ObjectReference ownerJs_;  // the BpfObject: its close() detaches this link too
};

Napi::Object NewLink(Napi::Env env, const std::shared_ptr<LinkState>& link, Napi::Object ownerJs);

// cleanupClsact(iface, netns?) → number of bulkhead filters removed.
Napi::Value CleanupClsactJs(const Napi::CallbackInfo& info);
// removePinnedLink(path) → false when nothing was pinned there.
Napi::Value RemovePinnedLinkJs(const Napi::CallbackInfo& info);
// pinnedLink(path) → { id, programId, ifindex, direction } or null when nothing is pinned.
Napi::Value PinnedLinkJs(const Napi::CallbackInfo& info);

}  // namespace bulkhead
