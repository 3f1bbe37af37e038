#include "errors.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace bulkhead {
namespace libbpf_log {
namespace {

// libbpf prints from the calling thread, and each JS thread makes its own calls.
thread_local std::string captured;
constexpr size_t kMaxCaptured = 256 * 1024;  // a verifier log can be long; keep the tail
bool debug = false;

int OnPrint(enum libbpf_print_level level, const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  if (debug) vfprintf(stderr, format, copy);
  va_end(copy);
  if (level == LIBBPF_DEBUG) return 0;
  char line[4096];
  int n = vsnprintf(line, sizeof(line), format, args);
  if (n <= 0) return 0;
  captured.append(line, std::min<size_t>(static_cast<size_t>(n), sizeof(line) - 1));
  if (captured.size() > kMaxCaptured) captured.erase(0, captured.size() - kMaxCaptured);
  return 0;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

void Install() {
  const char* env = std::getenv("BULKHEAD_LIBBPF_DEBUG");
  debug = env != nullptr && env[0] != '\0' && env[0] != '0';
  libbpf_set_print(OnPrint);
}

void Clear() { captured.clear(); }

std::vector<std::string> Lines() {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < captured.size()) {
    size_t nl = captured.find('\n', start);
    if (nl == std::string::npos) nl = captured.size();
    std::string line = Trim(captured.substr(start, nl - start));
    const std::string prefix = "libbpf: ";
    if (line.compare(0, prefix.size(), prefix) == 0) line.erase(0, prefix.size());
    if (!line.empty()) lines.push_back(line);
    start = nl + 1;
  }
  return lines;
}

bool StartsWith(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// The line that says what went wrong: for a verifier rejection the verdict at the end of
// the program's load log (not libbpf's generic "failed to load object" trailer).
std::string LastLine() {
  std::vector<std::string> lines = Lines();
  for (size_t i = lines.size(); i-- > 0;) {
    if (lines[i].find("-- END PROG LOAD LOG --") == std::string::npos) continue;
    std::string prog;
    for (size_t j = i; j-- > 0;) {
      if (lines[j].find("-- BEGIN PROG LOAD LOG --") != std::string::npos) {
        prog = lines[j].substr(0, lines[j].find("-- BEGIN"));
        break;
      }
    }
    for (size_t j = i; j-- > 0;) {
      if (StartsWith(lines[j], "processed ") || StartsWith(lines[j], "verification time")) continue;
      if (lines[j].find("-- BEGIN PROG LOAD LOG --") != std::string::npos) break;
      return prog + lines[j];
    }
  }
  for (size_t i = lines.size(); i-- > 0;) {
    if (StartsWith(lines[i], "failed to load object")) continue;
    return lines[i];
  }
  return "";
}

std::string All() { return Trim(captured); }

}  // namespace libbpf_log

std::string ErrnoName(int err) {
  if (err == 524) return "ENOTSUPP";  // kernel-internal, seen by BPF syscalls
  static const char* const kLibbpf[] = {
      "LIBBPF_ERRNO__LIBELF", "LIBBPF_ERRNO__FORMAT",  "LIBBPF_ERRNO__KVERSION",
      "LIBBPF_ERRNO__ENDIAN", "LIBBPF_ERRNO__INTERNAL", "LIBBPF_ERRNO__RELOC",
      "LIBBPF_ERRNO__LOAD",   "LIBBPF_ERRNO__VERIFY",  "LIBBPF_ERRNO__PROG2BIG",
      "LIBBPF_ERRNO__KVER",   "LIBBPF_ERRNO__PROGTYPE", "LIBBPF_ERRNO__WRNGPID",
      "LIBBPF_ERRNO__INVSEQ", "LIBBPF_ERRNO__NLPARSE"};
  if (err >= LIBBPF_ERRNO__LIBELF && err < __LIBBPF_ERRNO__END)
    return kLibbpf[err - LIBBPF_ERRNO__LIBELF];
  const char* name = strerrorname_np(err);
  return name != nullptr ? name : "E" + std::to_string(err);
}

std::string ErrnoText(int err) {
  if (err == 524) return "Operation not supported by this kernel or program type";
  char buf[256];
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return std::strerror(err);
}

Napi::Error MakeBpfError(Napi::Env env, const std::string& op, const std::string& object,
                         int err, const ErrorDetail& detail) {
  if (err <= 0) err = EIO;
  std::string message =
      op + " " + object + ": " + ErrnoText(err) + " (errno " + std::to_string(err) + ")";
  if (!detail.note.empty()) message += " [" + detail.note + "]";
  std::string last, all;
  if (detail.libbpf) {
    last = libbpf_log::LastLine();
    all = libbpf_log::All();
    if (!last.empty()) message += " [libbpf: " + last + "]";
  }
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object fields = error.Value();
  fields.Set("op", op);
  fields.Set("object", object);
  fields.Set("errno", err);
  fields.Set("code", ErrnoName(err));
  if (!last.empty()) fields.Set("libbpfMessage", last);
  if (!all.empty() && all != last) fields.Set("libbpfLog", all);
  return error;
}

void ThrowBpfError(Napi::Env env, const std::string& op, const std::string& object, int err,
                   const ErrorDetail& detail) {
  throw MakeBpfError(env, op, object, err, detail);
}

}  // namespace bulkhead
