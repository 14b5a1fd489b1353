// backend.cc: what every delivery backend shares: the idle and shutdown defaults, and running
// one delivery to its end on the calling thread.

#include "delivery/backend.h"

#include <string>

#include "base/check.h"
#include "io/loop.h"

namespace chute::delivery {

io::Task<void> Backend::CloseIdle(absl::Time now) {
  (void)now;
  co_return;
}

io::Task<void> Backend::Shutdown() { co_return; }

void DeliverNow(Backend& backend, const std::vector<OutboundMessage*>& batch,
                const MessageDone& done) {
  absl::StatusOr<io::Loop*> loop = io::Loop::ForThisThread();
  CHECK_MSG(loop.ok(), std::string(loop.status().message()).c_str());
  io::RunSync(**loop, backend.Deliver(batch, done));
}

}  // namespace chute::delivery
