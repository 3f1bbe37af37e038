#include "raw_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "addon.h"
#include "errors.h"
#include "netns.h"

namespace bulkhead {
namespace {

struct RawInit {
  int family;
  int protocol;
  Napi::Value onPacket;  // function or undefined
  std::string netns;
};

constexpr int kMaxPacketsPerTurn = 256;

}  // namespace

Napi::Value NewRawSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t family = info.Length() > 0 ? Uint32Option(env, info[0], "family", 0) : 0;
  if (family != 4 && family != 6) throw Napi::TypeError::New(env, "rawSocket: family must be 4 or 6");
  uint32_t protocol = info.Length() > 1 ? Uint32Option(env, info[1], "protocol", 0) : 0;
  if (protocol == 0 || protocol > 255)
    throw Napi::TypeError::New(env, "rawSocket: protocol must be 1..255");
  Napi::Value onPacket = info.Length() > 2 ? info[2] : env.Undefined();
  if (!onPacket.IsUndefined() && !onPacket.IsNull() && !onPacket.IsFunction())
    throw Napi::TypeError::New(env, "rawSocket: onPacket must be a function");
  RawInit init{static_cast<int>(family), static_cast<int>(protocol), onPacket,
               info.Length() > 3 && info[3].IsString() ? std::string(info[3].As<Napi::String>()) : ""};
  return NewWrapped(Data(env).rawSocket, &init);
}

Napi::Function RawSocketWrap::Define(Napi::Env env) {
  return DefineClass(env, "RawSocket",
                     {InstanceMethod<&RawSocketWrap::Send>("send"),
                      InstanceMethod<&RawSocketWrap::Close>("close")});
}

RawSocketWrap::RawSocketWrap(const Napi::CallbackInfo& info) : ObjectWrap(info) {
  Napi::Env env = info.Env();
  RawInit* init = InitFrom<RawInit>(info, "RawSocket");
  family_ = init->family;
  protocol_ = init->protocol;
  const std::string object =
      DescribeInNetns("raw IPv" + std::to_string(family_) + " protocol " + std::to_string(protocol_),
                      init->netns);
  {
    NetnsScope ns;
    ns.EnterPath(env, init->netns, "raw_socket", object);
    fd_ = socket(family_ == 4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 protocol_);
    if (fd_ < 0) ThrowBpfError(env, "raw_socket", object, errno);
  }
  if (init->onPacket.IsFunction()) {
    onPacket_ = Napi::Persistent(init->onPacket.As<Napi::Function>());
    async_ = std::make_unique<Napi::AsyncContext>(env, "bulkhead:RawSocket");
    buf_.resize(65536);
    int fd = fd_;
    int rc = watch_.Start(env, fd_, [this] { OnReadable(); }, [fd] { close(fd); });
    if (rc != 0) {
      fd_ = -1;
      ThrowBpfError(env, "raw_socket", object, -rc, {"uv_poll_start"});
    }
    receiving_ = true;
    Ref();
  } else {
    // Nothing reads it: shrink the queue so unsolicited packets of the protocol cost little.
    int size = 1;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
}

RawSocketWrap::~RawSocketWrap() {
  if (watch_.active()) {
    watch_.Stop();
  } else if (fd_ >= 0) {
    close(fd_);
  }
}

Napi::Value RawSocketWrap::Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dst = StringArg(info, 0, "destination address");
  auto payload = BufferArg(info, 1, "payload");
  if (fd_ < 0) ThrowBpfError(env, "raw_send", dst, EBADF, {"the socket is closed"});
  struct sockaddr_storage ss;
  std::memset(&ss, 0, sizeof(ss));
  socklen_t len;
  if (family_ == 4) {
    auto* sin = reinterpret_cast<struct sockaddr_in*>(&ss);
    sin->sin_family = AF_INET;
    if (inet_pton(AF_INET, dst.c_str(), &sin->sin_addr) != 1)
      ThrowBpfError(env, "raw_send", dst, EINVAL, {"not an IPv4 address"});
    len = sizeof(*sin);
  } else {
    auto* sin6 = reinterpret_cast<struct sockaddr_in6*>(&ss);
    sin6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, dst.c_str(), &sin6->sin6_addr) != 1)
      ThrowBpfError(env, "raw_send", dst, EINVAL, {"not an IPv6 address"});
    len = sizeof(*sin6);
  }
  ssize_t n;
  do {
    n = sendto(fd_, payload.Data(), payload.Length(), 0, reinterpret_cast<struct sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) ThrowBpfError(env, "raw_send", dst, errno);
  return env.Undefined();
}

void RawSocketWrap::OnReadable() {
  if (!receiving_) return;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Array packets = Napi::Array::New(env);
  uint32_t count = 0;
  for (int i = 0; i < kMaxPacketsPerTurn; i++) {
    struct sockaddr_storage from;
    socklen_t fromLen = sizeof(from);
    ssize_t n = recvfrom(fd_, buf_.data(), buf_.size(), 0,
                         reinterpret_cast<struct sockaddr*>(&from), &fromLen);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: drained
    }
    size_t offset = 0;
    char src[INET6_ADDRSTRLEN] = {0};
    if (family_ == 4) {
      // IPv4 raw sockets see the IP header; IPv6 ones do not.
      if (n < 20) continue;
      offset = static_cast<size_t>(buf_[0] & 0x0f) * 4;
      if (offset < 20 || offset > static_cast<size_t>(n)) continue;
      inet_ntop(AF_INET, &reinterpret_cast<struct sockaddr_in*>(&from)->sin_addr, src, sizeof(src));
    } else {
      inet_ntop(AF_INET6, &reinterpret_cast<struct sockaddr_in6*>(&from)->sin6_addr, src, sizeof(src));
    }
    Napi::Object p = Napi::Object::New(env);
    p.Set("src", src);
    p.Set("payload", Napi::Buffer<uint8_t>::Copy(env, buf_.data() + offset, static_cast<size_t>(n) - offset));
    packets.Set(count++, p);
  }
  if (count == 0) return;
  CallFromLoop(env, onPacket_, Value(), {packets}, *async_);
}

Napi::Value RawSocketWrap::Close(const Napi::CallbackInfo& info) {
  if (receiving_) {
    receiving_ = false;
    watch_.Stop();
    fd_ = -1;
    Unref();
  } else if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  return info.Env().Undefined();
}

}  // namespace bulkhead
