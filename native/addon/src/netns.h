// Network namespaces: the calling (JS main) thread enters a netns for the few syscalls
// that bind to one (if_nametoindex, socket(), BPF_LINK_CREATE, tc netlink) and always
// returns. A socket or link made inside keeps its netns after the thread leaves.
#pragma once

#include <napi.h>

#include <string>

namespace bulkhead {

// "<what>" or "<what> (netns <path>)": the object named in errors.
std::string DescribeInNetns(const std::string& what, const std::string& netnsPath);

// Opens a netns file (O_RDONLY|O_CLOEXEC) and checks that it is one; -1 with errno set.
int OpenNetns(const std::string& path);

// While alive, this thread is in the entered netns; the destructor returns to the one
// the thread was in before (or stops the process: carrying on in a foreign netns would
// silently bind every later socket and link to it).
class NetnsScope {
 public:
  NetnsScope() = default;
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

  // 0 or an errno. An fd of -1 stays in the current netns.
  int EnterFd(int netnsFd);
  // Throws a BpfError (op, object) when `path` cannot be opened or entered; an empty
  // path stays in the current netns.
  void EnterPath(Napi::Env env, const std::string& path, const std::string& op,
                 const std::string& object);

 private:
  int original_ = -1;
};

}  // namespace bulkhead
