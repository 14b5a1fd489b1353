// file.cc: blocking file helpers (write all, read, fsync a directory) for threads that may block.

#include "io/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "io/ring.h"

namespace chute::io {

absl::Status WriteAll(int fd, absl::string_view bytes, absl::string_view what) {
  while (!bytes.empty()) {
    ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return ErrnoStatus(n < 0 ? errno : EIO, absl::StrCat("write ", what));
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("open ", path));
  }
  std::string out;
  char buffer[65536];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      absl::Status status = ErrnoStatus(errno, absl::StrCat("read ", path));
      close(fd);
      return status;
    }
    if (n == 0) {
      break;
    }
    out.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

absl::Status SyncDirectory(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("open ", path));
  }
  int rc = fsync(fd);
  int error = errno;
  close(fd);
  return rc == 0 ? absl::OkStatus() : ErrnoStatus(error, absl::StrCat("fsync ", path));
}

}  // namespace chute::io
