#pragma once

// Blocking file helpers for the threads that may block (delivery workers, start-up, tools),
// never for a shard's loop. Each failure is a Status naming the file, made by ErrnoStatus.

#include <sys/types.h>

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::io {

// WriteAll: writes all of `bytes` to `fd`, resuming after short writes and EINTR.
absl::Status WriteAll(int fd, absl::string_view bytes, absl::string_view what);
// ReadFile: the whole file at `path`.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// WriteFileDurably: `bytes` at `path`, mode 0600, atomically: a temporary file beside it
// (`path`.tmp), fdatasync, rename. A reader sees the old file or the new one, never a part.
// The rename itself survives a crash once the directory is synced (SyncDirectory).
absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes);
// SyncDirectory: fsyncs the directory `path`, so that entries made or renamed in it survive a
// crash.
absl::Status SyncDirectory(const std::string& path);

// WatchedFile: a path and the file (device, inode) that was at it when it was opened, to
// notice that file deleted or replaced under a running process (an operator's restore from
// backup): what was opened goes on reading, or writing, the old copy that nobody sees.
class WatchedFile {
 public:
  // WatchedFile: remembers the file at `path` now (none, when there is none: then any file
  // found there later counts as a replacement).
  explicit WatchedFile(std::string path);
  const std::string& path() const { return path_; }

  // Found: what ReopenIfReplaced found at the path.
  struct Found {
    int error = 0;    // stat(2)'s errno when no file is there, else 0
    ino_t inode = 0;  // the file there now
    ino_t was = 0;    // the file remembered
  };
  // ReopenIfReplaced: when the file at the path is gone or another one than remembered,
  // calls `reopen(found)`, which opens the path anew (or refuses, e.g. for a file gone);
  // when it succeeds, remembers the file at the path then. Returns whether it reopened, or
  // reopen's error (the file remembered unchanged). One stat(2) when nothing changed.
  absl::StatusOr<bool> ReopenIfReplaced(absl::FunctionRef<absl::Status(const Found&)> reopen);

 private:
  void Remember();
  std::string path_;
  dev_t device_ = 0;
  ino_t inode_ = 0;
};

}  // namespace chute::io
