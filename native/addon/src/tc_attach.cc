#include "tc_attach.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "errors.h"
#include "netns.h"

namespace bulkhead {
namespace {

// Not named in libbpf 1.1's uapi copy.
constexpr int kBpfTcxIngress = 46;
constexpr int kBpfTcxEgress = 47;
constexpr uint32_t kBpfFBefore = 1U << 3;
constexpr int kEnotsupp = 524;

// BPF_LINK_CREATE's attributes for a tcx link, laid out as the kernel's union bpf_attr
// (link_create with its tcx member), which libbpf 1.1's bpf_link_create cannot fill.
// A shorter attr is fine: the kernel zero-fills what the caller did not pass.
struct TcxLinkCreate {
  uint32_t prog_fd;
  uint32_t target_ifindex;
  uint32_t attach_type;
  uint32_t flags;
  uint32_t relative_fd;  // 0 with BPF_F_BEFORE: before every program, the head
  uint32_t pad;
  uint64_t expected_revision;  // 0: any
};
static_assert(sizeof(TcxLinkCreate) == 32, "link_create.tcx layout");

int TcxLinkCreateAt(int progFd, int ifindex, int attachType, ChainPosition position) {
  TcxLinkCreate attr;
  std::memset(&attr, 0, sizeof(attr));
  attr.prog_fd = static_cast<uint32_t>(progFd);
  attr.target_ifindex = static_cast<uint32_t>(ifindex);
  attr.attach_type = static_cast<uint32_t>(attachType);
  attr.flags = position == ChainPosition::kFirst ? kBpfFBefore : 0;
  int fd = static_cast<int>(syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr)));
  return fd < 0 ? -errno : fd;
}

bool IsBpfLinkFd(int fd) {
  char target[64] = {0};
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(proc.c_str(), target, sizeof(target) - 1);
  // The kernel names a new link "bpf_link" but one reopened from a pin "bpf-link".
  return n > 0 && (std::strcmp(target, "anon_inode:bpf_link") == 0 ||
                   std::strcmp(target, "anon_inode:bpf-link") == 0);
}

bool OnBpffs(const std::string& path) {
  std::string dir = path.substr(0, path.find_last_of('/') + 1);
  struct statfs fs;
  return statfs(dir.empty() ? "." : dir.c_str(), &fs) == 0 && fs.f_type == BPF_FS_MAGIC;
}

// The link id pinned at `path`, 0 if none (or not a link).
uint32_t PinnedLinkId(const std::string& path) {
  if (!OnBpffs(path)) return 0;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return 0;
  uint32_t id = 0;
  if (IsBpfLinkFd(fd)) {
    struct bpf_link_info info;
    std::memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) id = info.id;
  }
  close(fd);
  return id;
}

bool Gone(int err) { return err == ENOENT || err == ENODEV || err == EINVAL; }

int TcDetach(int ifindex, Direction direction, uint32_t priority) {
  auto hook = LibbpfOpts<bpf_tc_hook>();
  hook.ifindex = ifindex;
  hook.attach_point = direction == Direction::kIngress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  auto opts = LibbpfOpts<bpf_tc_opts>();
  opts.handle = kClsactHandle;
  opts.priority = priority;
  int r = bpf_tc_detach(&hook, &opts);
  return r < 0 ? -r : 0;
}

int ResolveIfindex(Napi::Env env, const AttachRequest& req, const std::string& op,
                   const std::string& object) {
  if (req.ifaceName.empty()) return req.ifindex;
  unsigned idx = if_nametoindex(req.ifaceName.c_str());
  if (idx == 0) ThrowBpfError(env, op, object, errno == 0 ? ENODEV : errno, {"no such interface"});
  return static_cast<int>(idx);
}

}  // namespace

const char* DirectionName(Direction d) { return d == Direction::kIngress ? "ingress" : "egress"; }

int LinkState::DetachClsact() {
  NetnsScope ns;
  int err = ns.EnterFd(netnsFd);
  if (err == 0) err = TcDetach(ifindex, direction, priority);
  if (err != 0 && !Gone(err)) return err;
  close(netnsFd);
  netnsFd = -1;
  return 0;
}

int LinkState::Detach() {
  if (mode == AttachMode::kClsact) return netnsFd >= 0 ? DetachClsact() : 0;
  if (fd < 0) return 0;
  if (!pinPath.empty()) {
    // A pin keeps the link alive past our fd: detach it explicitly, then drop the pin
    // if it is still ours.
    bpf_link_detach(fd);
    if (PinnedLinkId(pinPath) == id) unlink(pinPath.c_str());
    pinPath.clear();
  }
  close(fd);
  fd = -1;
  return 0;
}

void LinkState::Release() {
  if (mode == AttachMode::kClsact) {
    if (netnsFd >= 0 && DetachClsact() != 0) {
      close(netnsFd);
      netnsFd = -1;
    }
    return;
  }
  if (fd >= 0) close(fd);
  fd = -1;
}

int LinkState::Pin(const std::string& path) {
  if (mode != AttachMode::kTcx) return EOPNOTSUPP;
  if (fd < 0) return EBADF;
  libbpf_log::Clear();
  int r = bpf_obj_pin(fd, path.c_str());
  if (r < 0) return PositiveErrno(r);
  pinPath = path;
  return 0;
}

std::shared_ptr<LinkState> AttachTc(Napi::Env env, int progFd, const AttachRequest& req) {
  const std::string label = req.ifaceName.empty() ? "ifindex " + std::to_string(req.ifindex)
                                                  : req.ifaceName;
  const std::string object = DescribeInNetns(label, req.netns);
  NetnsScope ns;
  ns.EnterPath(env, req.netns, "attach", object);
  int ifindex = ResolveIfindex(env, req, "attach", object);

  if (req.mode != "clsact") {
    libbpf_log::Clear();
    int type = req.direction == Direction::kIngress ? kBpfTcxIngress : kBpfTcxEgress;
    int fd = TcxLinkCreateAt(progFd, ifindex, type, req.position);
    if (fd >= 0) {
      auto link = std::make_shared<LinkState>(AttachMode::kTcx, req.direction, ifindex, object);
      link->fd = fd;
      struct bpf_link_info info;
      std::memset(&info, 0, sizeof(info));
      uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) link->id = info.id;
      return link;
    }
    int err = PositiveErrno(fd);
    bool noTcx = err == EINVAL || err == EOPNOTSUPP || err == kEnotsupp;
    if (req.mode == "tcx" || !noTcx)
      ThrowBpfError(env, "attach", object, err,
                    {std::string("tcx ") + DirectionName(req.direction), true});
  }

  libbpf_log::Clear();
  auto hook = LibbpfOpts<bpf_tc_hook>();
  hook.ifindex = ifindex;
  hook.attach_point = req.direction == Direction::kIngress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  int r = bpf_tc_hook_create(&hook);
  if (r < 0 && r != -EEXIST)
    ThrowBpfError(env, "attach", object, -r, {"creating the clsact qdisc", true});
  auto opts = LibbpfOpts<bpf_tc_opts>();
  opts.prog_fd = progFd;
  opts.handle = kClsactHandle;
  opts.priority = req.position == ChainPosition::kFirst ? kClsactPriority : kClsactLastPriority;
  // A filter of ours already there was left by a process that died (a live agent's links
  // are tcx or its own): replace it in place, so the interface is never without one.
  opts.flags = BPF_TC_F_REPLACE;
  r = bpf_tc_attach(&hook, &opts);
  if (r < 0) ThrowBpfError(env, "attach", object, -r, {std::string("clsact ") + DirectionName(req.direction), true});
  auto link = std::make_shared<LinkState>(AttachMode::kClsact, req.direction, ifindex, object);
  link->priority = opts.priority;
  // Still inside the target netns: this fd lets detach() find the filter later even if
  // the netns path is gone by then.
  link->netnsFd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (link->netnsFd < 0) {
    int err = errno;
    TcDetach(ifindex, req.direction, link->priority);
    ThrowBpfError(env, "attach", object, err, {"cannot keep a handle on the netns"});
  }
  return link;
}

int CleanupClsact(Napi::Env env, const std::string& iface, const std::string& netns) {
  const std::string object = DescribeInNetns(iface, netns);
  NetnsScope ns;
  ns.EnterPath(env, netns, "cleanup_clsact", object);
  AttachRequest req;
  req.ifaceName = iface;
  int ifindex = ResolveIfindex(env, req, "cleanup_clsact", object);
  int removed = 0;
  for (Direction d : {Direction::kIngress, Direction::kEgress}) {
    for (uint32_t priority : {kClsactPriority, kClsactLastPriority}) {
      libbpf_log::Clear();
      int err = TcDetach(ifindex, d, priority);
      if (err == 0) {
        removed++;
      } else if (!Gone(err)) {
        ThrowBpfError(env, "cleanup_clsact", object, err, {DirectionName(d), true});
      }
    }
  }
  return removed;
}

bool RemovePinnedLink(Napi::Env env, const std::string& path) {
  if (!OnBpffs(path)) ThrowBpfError(env, "remove_pinned_link", path, EINVAL, {"not on a bpf filesystem"});
  libbpf_log::Clear();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    int err = PositiveErrno(fd);
    if (err == ENOENT) return false;
    ThrowBpfError(env, "remove_pinned_link", path, err, {"", true});
  }
  if (!IsBpfLinkFd(fd)) {
    close(fd);
    ThrowBpfError(env, "remove_pinned_link", path, EINVAL, {"the pinned object is not a link"});
  }
  bpf_link_detach(fd);  // fails when the interface is gone: then it is detached already
  close(fd);
  if (unlink(path.c_str()) != 0 && errno != ENOENT)
    ThrowBpfError(env, "remove_pinned_link", path, errno);
  return true;
}

namespace {

// Not in libbpf 1.1's uapi copy: BPF_LINK_TYPE_TCX, and bpf_link_info.tcx, which sits
// where .netns does (first u32 the ifindex, then the attach type).
constexpr uint32_t kBpfLinkTypeTcx = 11;

int OpenPinnedTcx(const std::string& path, PinnedTcxInfo* out) {
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) return -PositiveErrno(fd);
  if (!IsBpfLinkFd(fd)) {
    close(fd);
    return -EINVAL;
  }
  struct bpf_link_info info;
  std::memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  int r = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (r < 0 || info.type != kBpfLinkTypeTcx) {
    int err = r < 0 ? PositiveErrno(r) : EINVAL;
    close(fd);
    return -err;
  }
  out->id = info.id;
  out->progId = info.prog_id;
  out->ifindex = static_cast<int>(info.netns.netns_ino);
  out->direction = static_cast<int>(info.netns.attach_type) == kBpfTcxEgress ? Direction::kEgress
                                                                               : Direction::kIngress;
  return fd;
}

}  // namespace

int ReadPinnedTcx(const std::string& path, PinnedTcxInfo* out) {
  if (!OnBpffs(path)) return EINVAL;
  int fd = OpenPinnedTcx(path, out);
  if (fd < 0) return -fd;
  close(fd);
  return 0;
}

std::shared_ptr<LinkState> AdoptPinnedTcx(Napi::Env env, int progFd, const std::string& path) {
  if (!OnBpffs(path)) ThrowBpfError(env, "adopt_link", path, EINVAL, {"not on a bpf filesystem"});
  PinnedTcxInfo pinned;
  libbpf_log::Clear();
  int fd = OpenPinnedTcx(path, &pinned);
  if (fd < 0) ThrowBpfError(env, "adopt_link", path, -fd, {-fd == EINVAL ? "the pin holds no tcx link" : ""});
  if (pinned.ifindex == 0) {
    close(fd);
    ThrowBpfError(env, "adopt_link", path, ENOLINK, {"the link is defunct: its interface is gone"});
  }
  int r = bpf_link_update(fd, progFd, nullptr);
  if (r < 0) {
    int err = PositiveErrno(r);
    close(fd);
    ThrowBpfError(env, "adopt_link", path, err, {"BPF_LINK_UPDATE", true});
  }
  auto link = std::make_shared<LinkState>(AttachMode::kTcx, pinned.direction, pinned.ifindex,
                                          "ifindex " + std::to_string(pinned.ifindex) + " (pinned at " + path + ")");
  link->fd = fd;
  link->id = pinned.id;
  link->pinPath = path;
  return link;
}

}  // namespace bulkhead
