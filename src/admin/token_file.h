#pragma once

// The admin listener's token files (docs/operations.md, "The admin listener's security").
// Blocking file I/O, at start-up, on the main thread.

#include <string>

#include "absl/status/statusor.h"

namespace chute::admin {

// Shortest token accepted from a file: a guessable token is no lock.
inline constexpr size_t kTokenBytesMin = 32;

// LoadOrCreateAdminToken: the token in `path`, made (64 hex digits, mode 0600) when there is no
// file. Refused (FailedPrecondition naming the file and what to do): a file others or the
// group may read, one that another user owns, a symlink, or a token shorter than
// kTokenBytesMin or with spaces or control characters in it.
absl::StatusOr<std::string> LoadOrCreateAdminToken(const std::string& path);

// LoadMetricsToken: the token in `path`, which the operator makes and Prometheus reads too:
// group-readable is fine, world-readable is refused, as are the other faults above.
absl::StatusOr<std::string> LoadMetricsToken(const std::string& path);

}  // namespace chute::admin
