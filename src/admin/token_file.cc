// token_file.cc: reads the admin and metrics tokens, and makes the admin token at first start.

#include "admin/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "admin/access.h"
#include "io/file.h"

namespace chute::admin {
namespace {

constexpr size_t kTokenFileBytesMax = 4096;

absl::StatusOr<std::string> ReadToken(const std::string& path, mode_t forbidden_mode) {
  int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open the token file"));
  }
  struct stat st {};
  fstat(fd, &st);
  std::string text(kTokenFileBytesMax + 1, '\0');
  ssize_t n = S_ISREG(st.st_mode) ? read(fd, text.data(), text.size()) : -1;
  close(fd);
  if (!S_ISREG(st.st_mode) || n < 0) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a readable regular file"));
  }
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": owned by uid ", st.st_uid, ", not by chuted's user or root"));
  }
  if ((st.st_mode & forbidden_mode) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: mode %04o lets other users read the token; chmod %s it", path,
                        st.st_mode & 07777, forbidden_mode == 077 ? "600" : "640"));
  }
  text.resize(static_cast<size_t>(n));
  absl::string_view token = absl::StripAsciiWhitespace(text);
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": the token has spaces or control characters in it"));
    }
  }
  if (token.size() < kTokenBytesMin || text.size() > kTokenFileBytesMax) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, ": a token is ", kTokenBytesMin, " to ", kTokenFileBytesMax,
        " characters (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')"));
  }
  return std::string(token);
}

}  // namespace

absl::StatusOr<std::string> LoadOrCreateAdminToken(const std::string& path) {
  std::string token = NewToken();
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return ReadToken(path, 077);
    }
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot make the admin token file"));
  }
  absl::Status written = io::WriteAll(fd, absl::StrCat(token, "\n"), path);
  if (written.ok() && fsync(fd) != 0) {
    written = absl::ErrnoToStatus(errno, "fsync");
  }
  close(fd);
  if (!written.ok()) {
    unlink(path.c_str());
    return absl::Status(written.code(), absl::StrCat(path, ": ", written.message()));
  }
  return token;
}

absl::StatusOr<std::string> LoadMetricsToken(const std::string& path) {
  return ReadToken(path, 007);
}

}  // namespace chute::admin
