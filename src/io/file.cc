// file.cc: blocking file helpers (write all, read, fsync a directory, notice a replaced file)
// for threads that may block.

#include "io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

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

absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) {
  std::string tmp = absl::StrCat(path, ".tmp");
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("create ", tmp));
  }
  absl::Status status = WriteAll(fd, bytes, tmp);
  if (status.ok() && fdatasync(fd) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("fdatasync ", tmp));
  }
  close(fd);
  if (status.ok() && rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoStatus(errno, absl::StrCat("rename to ", path));
  }
  if (!status.ok()) {
    unlink(tmp.c_str());
  }
  return status;
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

WatchedFile::WatchedFile(std::string path) : path_(std::move(path)) { Remember(); }

void WatchedFile::Remember() {
  struct stat st {};
  if (stat(path_.c_str(), &st) == 0) {
    device_ = st.st_dev;
    inode_ = st.st_ino;
  } else {
    device_ = 0;
    inode_ = 0;
  }
}

absl::StatusOr<bool> WatchedFile::ReopenIfReplaced(
    absl::FunctionRef<absl::Status(const Found&)> reopen) {
  struct stat st {};
  Found found;
  found.was = inode_;
  if (stat(path_.c_str(), &st) != 0) {
    found.error = errno;
  } else if (st.st_dev == device_ && st.st_ino == inode_) {
    return false;
  } else {
    found.inode = st.st_ino;
  }
  absl::Status status = reopen(found);
  if (!status.ok()) {
    return status;
  }
  // The file just opened (reopen may have made it), not the one stat(2) saw a moment before.
  Remember();
  return true;
}

}  // namespace chute::io
