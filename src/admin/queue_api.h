#pragma once

// The queue-control endpoints of the admin listener (JSON over HTTP), which `chutectl queue`
// and scripts use:
//
//   GET    /queue                   every queued message (id, age, tenant, account, sender,
//                                   recipients pending, attempts, next attempt, last replies)
//   GET    /queue/ID                one message
//   POST   /queue/ID/retry          attempt it now           POST /queue/retry  all of them
//   POST   /queue/ID/hold           no attempts until release
//   POST   /queue/ID/release
//   DELETE /queue/ID                drop it for good (logged)
//   GET    /dead                    the dead-letter area: each message's reason record
//   POST   /dead/ID/requeue         back to delivery (after the cause is fixed)
//
// Answers: 200 with a JSON body; 404 {"error": ...} for an unknown id; 400 for a bad request.
// Threads: the admin thread; the queue does its own locking.

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "admin/admin_server.h"
#include "delivery/stage.h"

namespace chute::admin {

using HttpAnswer = AdminServer::Answer;

// HandleQueueRequest: the answer for `method` `path`, or nothing when the path is not one of
// the queue's.
std::optional<HttpAnswer> HandleQueueRequest(delivery::DeliveryStage& queue,
                                             absl::string_view method, absl::string_view path);

}  // namespace chute::admin
