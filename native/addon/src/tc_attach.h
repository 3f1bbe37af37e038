// Attaching a SCHED_CLS program to an interface: a tcx link (kernel >= 6.6, owned by its
// fd, released when the process dies) or, as fallback, a clsact filter (outlives the
// process, so it carries a fixed handle/priority that marks it as bulkhead's).
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>

namespace bulkhead {

enum class AttachMode { kTcx, kClsact };
enum class Direction { kIngress, kEgress };

// The mark of a bulkhead clsact filter, so a later start can find (and replace) what a
// crashed process left behind. Priority 1 runs before any other filter: a CNI's filter
// that ends processing (Cilium's, Calico's) must not keep bulkhead from seeing packets.
constexpr uint32_t kClsactHandle = 0xb1c;
constexpr uint32_t kClsactPriority = 1;
// For position "last" (and what versions before 0.2 used for every filter).
constexpr uint32_t kClsactLastPriority = 0xb1c;

// Where a new tcx link goes in the interface's chain. bulkhead's programs go first and
// pass every packet they do not drop on to the next program (TCX_NEXT), so a CNI's program
// that ends the chain still runs, after them. kLast exists for tests that put stand-in
// CNI programs behind.
enum class ChainPosition { kFirst, kLast };

struct AttachRequest {
  std::string ifaceName;  // empty: use ifindex
  int ifindex = 0;
  Direction direction = Direction::kIngress;
  std::string netns;       // empty: the caller's
  std::string mode = "auto";  // "auto" | "tcx" | "clsact"
  ChainPosition position = ChainPosition::kFirst;
};

// One attachment. Owned jointly by the JS Link and by the object whose program it runs
// (which detaches it on close).
class LinkState {
 public:
  LinkState(AttachMode mode, Direction direction, int ifindex, std::string object)
      : mode(mode), direction(direction), ifindex(ifindex), object(std::move(object)) {}
  ~LinkState() { Release(); }
  LinkState(const LinkState&) = delete;
  LinkState& operator=(const LinkState&) = delete;

  // Removes the attachment, pinned or not. Idempotent; 0 or the errno of a failure that
  // left it attached. A vanished interface (or netns) counts as detached.
  int Detach();
  // What process exit would do: closes the fd (a pinned tcx link survives), removes a
  // clsact filter. For finalizers; never fails.
  void Release();
  // 0 or errno; tcx only.
  int Pin(const std::string& path);

  bool attached() const { return fd >= 0 || netnsFd >= 0; }

  const AttachMode mode;
  const Direction direction;
  const int ifindex;
  const std::string object;  // "<iface> (netns <path>)", for errors
  uint32_t id = 0;           // kernel link id (tcx)
  int fd = -1;               // tcx link fd
  int netnsFd = -1;          // clsact: the netns whose filter we own
  uint32_t priority = kClsactPriority;  // clsact
  std::string pinPath;
  bool closedWithObject = false;

 private:
  int DetachClsact();
};

// Throws a BpfError with op "attach" and object "<iface> (netns <path>)".
std::shared_ptr<LinkState> AttachTc(Napi::Env env, int progFd, const AttachRequest& req);

// Removes bulkhead's clsact filters (both directions) from an interface; returns how
// many were there. Throws when the interface or netns does not exist.
int CleanupClsact(Napi::Env env, const std::string& iface, const std::string& netns);

// Detaches and unpins a link pinned by an earlier process. False when nothing is pinned
// at `path`.
bool RemovePinnedLink(Napi::Env env, const std::string& path);

// A tcx link pinned by an earlier process, as the kernel describes it.
struct PinnedTcxInfo {
  uint32_t id = 0;
  uint32_t progId = 0;
  int ifindex = 0;  // 0: defunct, its interface is gone
  Direction direction = Direction::kIngress;
};

// 0 and `out` filled, ENOENT when nothing is pinned at `path`, EINVAL when the pin is not
// a tcx link, or another errno.
int ReadPinnedTcx(const std::string& path, PinnedTcxInfo* out);

// Puts `progFd` into the tcx link pinned at `path` (BPF_LINK_UPDATE: the interface never
// runs without a program) and returns it as a LinkState that owns a fd of it and knows its
// pin. Throws ENOENT (nothing pinned), ENOLINK (defunct: the interface is gone), EINVAL.
std::shared_ptr<LinkState> AdoptPinnedTcx(Napi::Env env, int progFd, const std::string& path);

const char* DirectionName(Direction d);

}  // namespace bulkhead
