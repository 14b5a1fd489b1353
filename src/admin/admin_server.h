#pragma once

// AdminServer: the admin HTTP listener (docs/architecture.md, Admin): GET /metrics (Prometheus text
// exposition), GET /healthz, GET /usage (the usage report page, admin/usage_page.h), POST
// /usage/ticket (a browser's pass to /usage), and the routes it is given (queue control,
// admin/queue_api.h). It serves a loopback TCP address and a unix socket; who may ask what is
// admin/access.h, checked on every request before anything else.
// Control plane: one thread with a small poll() loop, up to 256 clients at once, one request
// per connection, each bounded in size (8 KiB) and time (2 s); a slow or idle client delays
// no one. The content comes from the callbacks it is given, so this module knows nothing of
// the server.

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "admin/access.h"
#include "base/net_address.h"

namespace chute::admin {

class AdminServer {
 public:
  using Render = std::function<std::string()>;
  // Route: answers a request (method, path) with a status and a JSON body, or returns nothing
  // when the path is not its own.
  struct Answer {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
  };
  using Route =
      std::function<std::optional<Answer>(absl::string_view method, absl::string_view path)>;

  // AdminServer: `metrics` renders /metrics; `routes` answers the other paths (queue control).
  // Both are called on the admin thread. `keys` are the tokens and the listener's name.
  AdminServer(AccessKeys keys, Render metrics, Route routes = nullptr);
  ~AdminServer();

  // Start: listens on `address` (none: the socket only) and on the unix socket `socket_path`,
  // and serves on its own thread. Fails when it cannot bind either.
  absl::Status Start(const std::optional<HostPort>& address, const std::string& socket_path);
  // Stop: closes the listener and joins the thread.
  void Stop();
  // ServeUsage: also answer GET /usage (admin/usage_page.h) from the directory database at
  // `database`. Call before Start.
  void ServeUsage(std::string database) { usage_database_ = std::move(database); }
  // set_node: the answers of the queue, the dead letters and /usage say which node answered,
  // as X-Chute-Node: each node of a fleet has its own queue (chutectl queue prints it). Call
  // before Start.
  void set_node(std::string node) { node_ = std::move(node); }

 private:
  void Serve();
  // Respond: the whole HTTP response to `request` (its head, at least the request line) from
  // `peer`.
  std::string Respond(absl::string_view request, Peer peer);

  AccessKeys keys_;
  Render metrics_;
  std::string node_;
  Route routes_;
  std::string usage_database_;  // "" = no /usage page
  int listen_fd_ = -1;          // TCP; -1 = none
  int socket_fd_ = -1;          // unix
  std::string socket_path_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace chute::admin
