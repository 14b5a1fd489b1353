#pragma once

// AdminServer: the admin HTTP listener (DESIGN.md §2): GET /metrics (Prometheus text
// exposition) and GET /healthz. Control plane only: one thread, blocking sockets, one request
// per connection, each bounded in size (8 KiB) and time (2 s). The content comes from the
// callbacks it is given, so this module knows nothing of the server.

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "base/net_address.h"

namespace chute::admin {

class AdminServer {
 public:
  using Render = std::function<std::string()>;

  // AdminServer: `metrics` renders /metrics; it is called on the admin thread.
  explicit AdminServer(Render metrics);
  ~AdminServer();

  // Start: listens on `address` and serves on its own thread. Fails when it cannot bind.
  absl::Status Start(const HostPort& address);
  // Stop: closes the listener and joins the thread.
  void Stop();

 private:
  void Serve();
  void Handle(int fd);

  Render metrics_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace chute::admin
