#pragma once

// Server: chuted's engine (DESIGN.md §2). N shards, each one thread with one io_uring and its
// own SO_REUSEPORT listening sockets, accept connections and run smtp::Session for them; the
// Maildir delivery stage writes accepted messages and the shard answers 250 once they are on
// disk. The directory snapshot is shared read-only and swapped atomically on reload.
//
// Threads: Start/Stop/Reload/Wait from the main thread; everything else happens on shard and
// delivery threads.

#include <atomic>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "base/config.h"
#include "directory/directory.h"

namespace chute::delivery {
class MaildirDelivery;
}

namespace chute::server {

class Shard;

// Counters of one shard: written by its thread only, read (racily, for reports) by others.
struct ShardCounters {
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_open{0};
  std::atomic<uint64_t> connections_refused{0};
  std::atomic<uint64_t> bytes_in{0};
  std::atomic<uint64_t> bytes_out{0};
  std::atomic<uint64_t> messages_accepted{0};
  std::atomic<uint64_t> messages_failed{0};
};

// SharedState: what all shards read. The snapshot is swapped whole; connections_open is the
// global count behind limits.connections_max.
struct SharedState {
  Config config;
  std::atomic<std::shared_ptr<const directory::Snapshot>> snapshot;
  std::atomic<int64_t> connections_open{0};
  delivery::MaildirDelivery* delivery = nullptr;
};

class Server {
 public:
  explicit Server(Config config);
  ~Server();

  // Start: loads the directory, checks what the configuration refers to, opens every
  // listening socket (so a port in use fails here, loudly), starts delivery and the shards.
  absl::Status Start();
  // ReloadDirectory: loads a fresh snapshot when the database changed (or `force`). Sessions
  // in progress keep the one they started with.
  absl::Status ReloadDirectory(bool force);
  // Stop: graceful: no new connections, idle sessions get 421 4.3.2, messages in progress
  // finish (within the drain timeout); returns when every shard and delivery are done.
  void Stop();
  // Failed: whether a shard died (its error was logged).
  bool Failed() const;

  int shard_count() const { return static_cast<int>(shards_.size()); }
  const ShardCounters& counters(int shard) const;

 private:
  SharedState shared_;
  std::unique_ptr<directory::Store> store_;
  int64_t data_version_ = -1;
  std::unique_ptr<delivery::MaildirDelivery> delivery_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace chute::server
