#pragma once

// Declarations shared by the server's .cc files (server.cc, compose.cc, reload.cc,
// preflight.cc). Not the room's interface: that is server.h.

#include "absl/status/status.h"
#include "auth/throttle.h"
#include "base/config.h"
#include "directory/directory.h"

namespace chute::server {

// CheckListenerAccounts (preflight.cc): every listener's authenticate_as is an account in
// `snapshot`.
absl::Status CheckListenerAccounts(const Config& config, const directory::Snapshot& snapshot);

// ThrottleLimitsFor (reload.cc): the failed-AUTH throttle's limits as `limits` set them; at
// start and on each reload.
auth::ThrottleLimits ThrottleLimitsFor(const LimitsConfig& limits);

// ShardCount (compose.cc): server.shards, or one shard per online CPU when it is 0.
int ShardCount(const Config& config);

}  // namespace chute::server
