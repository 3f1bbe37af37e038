// Every failure leaves the addon as one JS Error shape (BpfError in native/index.ts):
// message "<op> <object>: <strerror> (errno N) [libbpf: <last libbpf line>]" plus the
// fields op, object, errno, code, libbpfMessage, libbpfLog.
#pragma once

#include <napi.h>

#include <cstring>
#include <string>

namespace bulkhead {

// libbpf reports through a print callback, not through errno. We capture what it says
// during one operation so the error can carry it (the verifier log of a failed load too).
namespace libbpf_log {
void Install();
// Forget earlier messages: call before each libbpf operation that may fail.
void Clear();
std::string LastLine();
std::string All();
}  // namespace libbpf_log

std::string ErrnoName(int err);
std::string ErrnoText(int err);

struct ErrorDetail {
  // Extra words in square brackets after the errno, e.g. which size was expected.
  std::string note;
  // Attach what libbpf logged since libbpf_log::Clear().
  bool libbpf = false;
};

Napi::Error MakeBpfError(Napi::Env env, const std::string& op, const std::string& object,
                         int err, const ErrorDetail& detail = {});

[[noreturn]] void ThrowBpfError(Napi::Env env, const std::string& op,
                                const std::string& object, int err,
                                const ErrorDetail& detail = {});

// Same, for a libbpf call that just failed (libbpf's message attached).
[[noreturn]] inline void ThrowLibbpfError(Napi::Env env, const std::string& op,
                                          const std::string& object, int err) {
  ThrowBpfError(env, op, object, err, ErrorDetail{"", true});
}

// libbpf 1.x returns -errno and also sets errno; normalise either to a positive errno.
inline int PositiveErrno(int ret) {
  if (ret < 0) return -ret;
  return errno != 0 ? errno : EIO;
}

// Zeroed libbpf "opts" struct with its size field set (LIBBPF_OPTS is C-only).
template <typename T>
T LibbpfOpts() {
  T opts;
  std::memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  return opts;
}

}  // namespace bulkhead
