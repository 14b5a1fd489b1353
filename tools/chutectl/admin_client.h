#pragma once

// chutectl's way into the running chuted: one HTTP request over the admin socket ([admin]
// socket, <data_dir>/admin.sock by default). chuted lets root and its own user in without a
// token (SO_PEERCRED); chutectl, in turn, talks only to a socket served by root or by the owner
// of the data directory, so a process of another user that got there first is not believed.
// Every request has one overall deadline, however the server drips its answer.

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/config.h"

namespace chute::ctl {

inline constexpr absl::Duration kAdminDeadline = absl::Seconds(10);
inline constexpr size_t kAdminResponseBytesMax = 64 << 20;

struct AdminAnswer {
  int status = 0;
  std::string body;
  std::string node;  // X-Chute-Node: the node that answered ("" when it did not say)
};

// AdminRequest: `method` `path` to chuted; the status and body. Unavailable (with what to
// do) when nothing answers, PermissionDenied when this user may not reach the socket or the
// socket's server is not chuted's user, DeadlineExceeded past `deadline`.
absl::StatusOr<AdminAnswer> AdminRequest(const Config& config, absl::string_view method,
                                         absl::string_view path,
                                         absl::Duration deadline = kAdminDeadline);

}  // namespace chute::ctl
