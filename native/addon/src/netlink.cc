#include "netlink.h"

#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "addon.h"
#include "errors.h"
#include "netns.h"

namespace bulkhead {
namespace {

std::string FormatMac(const uint8_t* p, size_t n) {
  std::string s;
  char byte[4];
  for (size_t i = 0; i < n; i++) {
    std::snprintf(byte, sizeof(byte), i == 0 ? "%02x" : ":%02x", p[i]);
    s += byte;
  }
  return s;
}

std::string AttrString(const struct rtattr* a) {
  const char* p = static_cast<const char*>(RTA_DATA(a));
  size_t n = RTA_PAYLOAD(a);
  return std::string(p, strnlen(p, n));
}

int32_t AttrS32(const struct rtattr* a) {
  int32_t v = 0;
  if (RTA_PAYLOAD(a) >= sizeof(v)) std::memcpy(&v, RTA_DATA(a), sizeof(v));
  return v;
}

void ParseLinkInfo(const struct rtattr* nest, LinkRecord& r) {
  int len = static_cast<int>(RTA_PAYLOAD(nest));
  for (auto* a = static_cast<const struct rtattr*>(RTA_DATA(nest)); RTA_OK(a, len);
       a = RTA_NEXT(a, len)) {
    if (a->rta_type == IFLA_INFO_KIND) r.kind = AttrString(a);
  }
}

LinkRecord ParseLink(const struct nlmsghdr* h) {
  LinkRecord r;
  r.msgType = h->nlmsg_type;
  auto* ifi = static_cast<const struct ifinfomsg*>(NLMSG_DATA(h));
  r.ifindex = ifi->ifi_index;
  r.up = (ifi->ifi_flags & IFF_UP) != 0;
  int len = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof(*ifi)));
  for (auto* a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    switch (a->rta_type) {
      case IFLA_IFNAME: r.name = AttrString(a); break;
      case IFLA_LINKINFO: ParseLinkInfo(a, r); break;
      case IFLA_LINK_NETNSID: r.linkNetnsId = AttrS32(a); break;
      case IFLA_LINK: r.peerIfindex = AttrS32(a); break;
      case IFLA_ADDRESS:
        r.mac = FormatMac(static_cast<const uint8_t*>(RTA_DATA(a)), RTA_PAYLOAD(a));
        break;
      default: break;
    }
  }
  return r;
}

}  // namespace

namespace {

// Walks one datagram of netlink messages, handing each data message to `visit`. Returns
// false at the end of a dump (NLMSG_DONE) or on NLMSG_ERROR (then *err is set if nonzero).
template <typename Visit>
bool WalkMessages(const uint8_t* data, size_t len, int* err, Visit visit) {
  int remaining = static_cast<int>(len);
  for (auto* h = reinterpret_cast<const struct nlmsghdr*>(data); NLMSG_OK(h, remaining);
       h = NLMSG_NEXT(h, remaining)) {
    if (h->nlmsg_type == NLMSG_DONE) return false;
    if (h->nlmsg_type == NLMSG_ERROR) {
      auto* e = static_cast<const struct nlmsgerr*>(NLMSG_DATA(h));
      if (e->error != 0) *err = -e->error;
      return false;
    }
    visit(h);
  }
  return true;
}

}  // namespace

bool ParseLinkMessages(const uint8_t* data, size_t len, std::vector<LinkRecord>& out, int* err) {
  return WalkMessages(data, len, err, [&](const struct nlmsghdr* h) {
    if ((h->nlmsg_type == RTM_NEWLINK || h->nlmsg_type == RTM_DELLINK) &&
        h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifinfomsg)))
      out.push_back(ParseLink(h));
  });
}

int OpenRouteSocket(Napi::Env env, const std::string& netns, const std::string& op,
                    uint32_t groups, bool nonBlocking) {
  const std::string object = DescribeInNetns("rtnetlink", netns);
  int fd;
  {
    NetnsScope ns;
    ns.EnterPath(env, netns, op, object);
    fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0),
                NETLINK_ROUTE);
    if (fd < 0) ThrowBpfError(env, op, object, errno);
  }
  struct sockaddr_nl addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.nl_family = AF_NETLINK;
  addr.nl_groups = groups;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    ThrowBpfError(env, op, object, err, {"bind"});
  }
  return fd;
}

Napi::Object LinkRecordToJs(Napi::Env env, const LinkRecord& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ifindex", r.ifindex);
  o.Set("name", r.name);
  o.Set("kind", r.kind);
  o.Set("up", r.up);
  o.Set("mac", r.mac);
  o.Set("linkNetnsId", r.linkNetnsId);
  o.Set("peerIfindex", r.peerIfindex);
  return o;
}

namespace {

// Sends one NLM_F_DUMP request (`payload` follows the header) and hands every datagram of
// the answer to `parse`, which returns false at NLMSG_DONE and sets *err on NLMSG_ERROR.
// Throws a BpfError with `op` on any failure.
template <typename Payload, typename Parse>
void Dump(Napi::Env env, const std::string& netns, const std::string& op, uint16_t type,
          const Payload& payload, const char* what, Parse parse) {
  const std::string object = DescribeInNetns("rtnetlink", netns);
  int fd = OpenRouteSocket(env, netns, op, 0, false);

  struct {
    struct nlmsghdr h;
    Payload p;
  } req;
  std::memset(&req, 0, sizeof(req));
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(req.p));
  req.h.nlmsg_type = type;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = 1;
  req.p = payload;
  if (send(fd, &req, req.h.nlmsg_len, 0) < 0) {
    int err = errno;
    close(fd);
    ThrowBpfError(env, op, object, err, {std::string("send ") + what});
  }

  std::vector<uint8_t> buf(64 * 1024);
  int err = 0;
  for (bool more = true; more;) {
    // Peek the size first: a datagram larger than the buffer would be cut silently.
    ssize_t n = recv(fd, buf.data(), 0, MSG_PEEK | MSG_TRUNC);
    if (n > static_cast<ssize_t>(buf.size())) buf.resize(static_cast<size_t>(n));
    if (n >= 0) n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (n == 0) break;
    more = parse(buf.data(), static_cast<size_t>(n), &err);
  }
  close(fd);
  if (err != 0) ThrowBpfError(env, op, object, err);
}

struct RouteRecord {
  int family = 0;  // 4 or 6
  std::string dst;
  int prefixLen = 0;
  int oif = 0;
  uint32_t table = 0;
  uint8_t type = 0;  // RTN_*
};

const char* RouteTypeName(uint8_t type) {
  switch (type) {
    case RTN_UNICAST: return "unicast";
    case RTN_LOCAL: return "local";
    case RTN_BROADCAST: return "broadcast";
    case RTN_ANYCAST: return "anycast";
    case RTN_MULTICAST: return "multicast";
    case RTN_BLACKHOLE: return "blackhole";
    case RTN_UNREACHABLE: return "unreachable";
    case RTN_PROHIBIT: return "prohibit";
    case RTN_THROW: return "throw";
    default: return "other";
  }
}

RouteRecord ParseRoute(const struct nlmsghdr* h) {
  RouteRecord r;
  auto* rtm = static_cast<const struct rtmsg*>(NLMSG_DATA(h));
  r.family = rtm->rtm_family == AF_INET6 ? 6 : 4;
  r.prefixLen = rtm->rtm_dst_len;
  r.table = rtm->rtm_table;
  r.type = rtm->rtm_type;
  // A route without RTA_DST is the default route of its family.
  uint8_t addr[16] = {};
  int len = static_cast<int>(h->nlmsg_len) - static_cast<int>(NLMSG_LENGTH(sizeof(*rtm)));
  for (auto* a = RTM_RTA(rtm); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
    switch (a->rta_type) {
      case RTA_DST:
        if (RTA_PAYLOAD(a) <= sizeof(addr)) std::memcpy(addr, RTA_DATA(a), RTA_PAYLOAD(a));
        break;
      case RTA_OIF: r.oif = AttrS32(a); break;
      case RTA_TABLE: r.table = static_cast<uint32_t>(AttrS32(a)); break;
      default: break;
    }
  }
  char text[INET6_ADDRSTRLEN];
  if (inet_ntop(r.family == 6 ? AF_INET6 : AF_INET, addr, text, sizeof(text))) r.dst = text;
  return r;
}

bool ParseRouteMessages(const uint8_t* data, size_t len, std::vector<RouteRecord>& out, int* err) {
  return WalkMessages(data, len, err, [&](const struct nlmsghdr* h) {
    if (h->nlmsg_type != RTM_NEWROUTE || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct rtmsg))) return;
    auto* rtm = static_cast<const struct rtmsg*>(NLMSG_DATA(h));
    if (rtm->rtm_family == AF_INET || rtm->rtm_family == AF_INET6) out.push_back(ParseRoute(h));
  });
}

}  // namespace

Napi::Value ListLinks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = info.Length() > 0 && info[0].IsString()
                          ? std::string(info[0].As<Napi::String>()) : "";
  struct ifinfomsg ifi;
  std::memset(&ifi, 0, sizeof(ifi));
  ifi.ifi_family = AF_UNSPEC;
  std::vector<LinkRecord> links;
  Dump(env, netns, "list_links", RTM_GETLINK, ifi, "RTM_GETLINK",
       [&links](const uint8_t* data, size_t len, int* err) {
         return ParseLinkMessages(data, len, links, err);
       });

  Napi::Array out = Napi::Array::New(env, links.size());
  for (size_t i = 0; i < links.size(); i++) out.Set(static_cast<uint32_t>(i), LinkRecordToJs(env, links[i]));
  return out;
}

Napi::Value ListRoutes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns = info.Length() > 0 && info[0].IsString()
                          ? std::string(info[0].As<Napi::String>()) : "";
  struct rtmsg rtm;
  std::memset(&rtm, 0, sizeof(rtm));
  rtm.rtm_family = AF_UNSPEC;  // both families, every table
  std::vector<RouteRecord> routes;
  Dump(env, netns, "list_routes", RTM_GETROUTE, rtm, "RTM_GETROUTE",
       [&routes](const uint8_t* data, size_t len, int* err) {
         return ParseRouteMessages(data, len, routes, err);
       });

  Napi::Array out = Napi::Array::New(env, routes.size());
  for (size_t i = 0; i < routes.size(); i++) {
    const RouteRecord& r = routes[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("family", r.family);
    o.Set("dst", r.dst);
    o.Set("prefixLen", r.prefixLen);
    o.Set("oif", r.oif);
    o.Set("table", r.table);
    o.Set("type", RouteTypeName(r.type));
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

}  // namespace bulkhead
