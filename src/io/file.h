#pragma once

// Blocking file helpers for the threads that may block (delivery workers, start-up, tools),
// never for a shard's loop. Each failure is a Status naming the file, made by ErrnoStatus.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::io {

// WriteAll: writes all of `bytes` to `fd`, resuming after short writes and EINTR.
absl::Status WriteAll(int fd, absl::string_view bytes, absl::string_view what);
// ReadFile: the whole file at `path`.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// SyncDirectory: fsyncs the directory `path`, so that entries made or renamed in it survive a
// crash.
absl::Status SyncDirectory(const std::string& path);

}  // namespace chute::io
