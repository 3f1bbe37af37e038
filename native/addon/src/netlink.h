// rtnetlink: the RTM_GETLINK dump (listLinks) and its parser shared with the link
// watcher, and the RTM_GETROUTE dump (listRoutes).
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bulkhead {

struct LinkRecord {
  uint16_t msgType = 0;  // RTM_NEWLINK / RTM_DELLINK
  int ifindex = 0;
  std::string name;
  std::string kind;
  bool up = false;
  std::string mac;
  int linkNetnsId = -1;
  int peerIfindex = 0;
};

// Parses every RTM_NEWLINK/RTM_DELLINK in one datagram. Returns false at NLMSG_DONE;
// an NLMSG_ERROR sets *err to its (positive) errno.
bool ParseLinkMessages(const uint8_t* data, size_t len, std::vector<LinkRecord>& out, int* err);

// A NETLINK_ROUTE socket made inside `netns` (empty: the caller's), SOCK_CLOEXEC.
// Throws a BpfError with `op`.
int OpenRouteSocket(Napi::Env env, const std::string& netns, const std::string& op,
                    uint32_t groups, bool nonBlocking);

Napi::Object LinkRecordToJs(Napi::Env env, const LinkRecord& r);

// listLinks(netns?) → LinkInfo[]
Napi::Value ListLinks(const Napi::CallbackInfo& info);

// listRoutes(netns?) → RouteInfo[]
Napi::Value ListRoutes(const Napi::CallbackInfo& info);

}  // namespace bulkhead
