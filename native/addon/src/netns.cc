#include "netns.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "errors.h"

namespace bulkhead {

std::string DescribeInNetns(const std::string& what, const std::string& netnsPath) {
  return netnsPath.empty() ? what : what + " (netns " + netnsPath + ")";
}

int OpenNetns(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0 || fs.f_type != NSFS_MAGIC) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  return fd;
}

int NetnsScope::EnterFd(int netnsFd) {
  if (netnsFd < 0 || original_ >= 0) return netnsFd < 0 ? 0 : EBUSY;
  // thread-self: setns moves only this thread, so "self" (the thread group leader) is
  // the wrong reference if this ever runs off the main thread.
  int original = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (original < 0) return errno;
  if (setns(netnsFd, CLONE_NEWNET) != 0) {
    int err = errno;
    close(original);
    return err;
  }
  original_ = original;
  return 0;
}

void NetnsScope::EnterPath(Napi::Env env, const std::string& path, const std::string& op,
                           const std::string& object) {
  if (path.empty()) return;
  int target = OpenNetns(path);
  if (target < 0) {
    int err = errno;
    ThrowBpfError(env, op, object, err,
                  {err == EINVAL ? path + " is not a network namespace file"
                                 : "cannot open network namespace " + path});
  }
  int err = EnterFd(target);
  close(target);
  if (err != 0) ThrowBpfError(env, op, object, err, {"cannot enter network namespace " + path});
}

NetnsScope::~NetnsScope() {
  if (original_ < 0) return;
  if (setns(original_, CLONE_NEWNET) != 0) {
    std::perror("bulkhead: cannot return to the original network namespace");
    std::abort();
  }
  close(original_);
}

}  // namespace bulkhead
