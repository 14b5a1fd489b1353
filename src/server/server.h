#pragma once

// Server: chuted's engine (docs/architecture.md, Server). N shards, each one thread with one
// io_uring and its own SO_REUSEPORT listening sockets, accept connections and run smtp::Session for
// them; a shard answers 250 once the message is fsynced in its spool segment, and hands it to the
// delivery stage (Maildir, LMTP or SMTP), which settles it in the spool when delivered. The
// directory snapshot is shared read-only and swapped atomically on reload.
//
// Threads: Start/Stop/Reload/Wait from the main thread; everything else happens on shard and
// delivery threads.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "base/config.h"
#include "base/histogram.h"
#include "directory/directory.h"

namespace chute::delivery {
class DeliveryStage;
class Reporter;
class Router;
}  // namespace chute::delivery
namespace chute::spool {
struct SpoolGauges;
}
namespace chute::auth {
class AuthThrottle;
class PasswordVerifier;
class KeyStore;
}  // namespace chute::auth
namespace chute::net {
class TlsContext;
}
namespace chute::fleet {
class TenantLeases;
}
namespace chute::policy {
class ConnectionGate;
}
namespace chute::admin {
class AdminServer;
}
namespace chute::trace {
class Writer;
}

namespace chute::spool {
class Segment;
}
namespace chute::metrics {
class Registry;
}
namespace chute::io {
class WatchedFile;
}

namespace chute::server {

class Shard;

// ShardCounter: written by one shard's thread only, read by others (metrics). A relaxed
// load and store, never a locked read-modify-write: on x86 this is a plain add.
class ShardCounter {
 public:
  void Add(int64_t n) {
    value_.store(value_.load(std::memory_order_relaxed) + static_cast<uint64_t>(n),
                 std::memory_order_relaxed);
  }
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

struct ShardCounters {
  ShardCounter connections_accepted;
  ShardCounter connections_open;
  ShardCounter connections_refused;
  ShardCounter bytes_in;
  ShardCounter bytes_out;
  ShardCounter messages_accepted;
  ShardCounter messages_failed;
  ShardCounter tls_handshakes;
  ShardCounter tls_failures;
  ShardCounter auth_successes;
  ShardCounter auth_failures;
  ShardCounter spool_full;
  ShardCounter body_memory_full;     // 452 4.3.1 for limits.receiving_bytes_max
  ShardCounter accept_pauses;        // accepts paused for want of file descriptors
  ShardCounter recv_starved;         // receives that found no free buffer (ENOBUFS)
  ShardCounter recv_starved_max_ms;  // the longest a connection waited for a buffer
  ShardCounter busy_us;              // time the loop spent handling completions (not waiting)
  // End of data to the final reply (250 or 451): mostly the group commit's wait and sync.
  LatencyHistogram end_of_data_latency;
  // A group commit, from its write SQEs to the last completion (writes, fdatasync).
  LatencyHistogram spool_commit_latency;
  // Turns of the shard's event loop: the systemd watchdog's heartbeat. An idle shard still
  // turns once per tick (kTickInterval), so a value that stops moving means a stuck loop.
  ShardCounter loop_turns;
};

// ReplyCounts: how many of each refusal (4xx/5xx reply code and enhanced status code) a shard
// sent. One writer (the shard's thread), read by metrics from any thread: a fixed table whose
// entries are published by `size_` (release) before they are counted. Past kKindsMax distinct
// kinds the rest are counted under code 0 ("other").
class ReplyCounts {
 public:
  static constexpr size_t kKindsMax = 96;
  static constexpr size_t kEnhancedBytesMax = 11;  // "5.123.123"
  // Count: one reply sent with `code` and `text` ("5.7.60 ...": its enhanced code, if any).
  void Count(uint16_t code, absl::string_view text);
  // ForEach: f(code, enhanced, count) for each kind seen so far.
  template <typename F>
  void ForEach(F f) const {
    size_t size = size_.load(std::memory_order_acquire);
    for (size_t i = 0; i < size; ++i) {
      f(kinds_[i].code, absl::string_view(kinds_[i].enhanced, kinds_[i].enhanced_bytes),
        kinds_[i].count.Get());
    }
  }

 private:
  struct Kind {
    uint16_t code = 0;
    uint8_t enhanced_bytes = 0;
    char enhanced[kEnhancedBytesMax] = {};
    ShardCounter count;
  };
  Kind kinds_[kKindsMax];
  std::atomic<size_t> size_{0};
};

// UsageLog: usage counts on their way from the shards (which add to their own maps and hand
// them over once a second) to SQLite (which the main thread writes every few seconds).
class UsageLog {
 public:
  using Key = std::pair<int64_t, std::string>;  // account id, UTC day
  using Map = absl::flat_hash_map<Key, directory::UsageRow>;
  // Merge: adds `rows` (a shard's) to the pending counts and empties it. Any thread.
  void Merge(Map& rows);
  // Take: the pending counts, as rows, leaving none.
  std::vector<directory::UsageRow> Take();
  // TenantTotals: messages and recipients accepted per tenant name since start (metrics).
  struct Totals {
    uint64_t messages = 0;
    uint64_t recipients = 0;
  };
  absl::flat_hash_map<std::string, Totals> TenantTotals() const;

 private:
  mutable std::mutex mu_;                                   // guards pending_ and tenant_totals_
  Map pending_;                                             // guarded by mu_
  absl::flat_hash_map<std::string, Totals> tenant_totals_;  // guarded by mu_
};

// SharedState: what all shards read. The snapshot is swapped whole; connections_open is the
// global count behind limits.connections_max.
struct SharedState {
  Config config;  // as started: listeners, paths, table sizes (what needs a restart)
  // The configuration in force for new sessions: SIGHUP swaps it when only keys that can
  // change live (hostname, limits, certificate paths) changed. Sessions keep the one they
  // started with.
  std::atomic<std::shared_ptr<const Config>> live;
  std::atomic<std::shared_ptr<const directory::Snapshot>> snapshot;
  std::atomic<int64_t> connections_open{0};
  // Message body bytes held in memory by the messages being received, all shards
  // (Submission's charges; limits.receiving_bytes_max).
  std::atomic<int64_t> receiving_bytes{0};
  // connections_max as the descriptor limit allows it: RLIMIT_NOFILE less what the spool,
  // delivery, the admin listener and the rings need, so that accepting (even to refuse) never
  // runs out of descriptors. Set at start.
  int64_t connections_fd_cap = INT64_MAX;
  // The per-IP and per-tenant caps, shared by all shards (lock-free).
  std::unique_ptr<policy::ConnectionGate> gate;
  // The per-tenant cap across the fleet ([fleet] redis); null when the node is alone.
  fleet::TenantLeases* leases = nullptr;
  UsageLog usage;
  // The message trace (null when it could not be opened: mail flows without it).
  trace::Writer* trace = nullptr;
  // The spool: its directory (locked by this process), the totals behind back-pressure, and
  // the delivery stage that shards hand committed messages to.
  int spool_dir_fd = -1;
  uint64_t boot_us = 0;
  spool::SpoolGauges* gauges = nullptr;
  delivery::DeliveryStage* delivery = nullptr;
  auth::PasswordVerifier* verifier = nullptr;
  std::unique_ptr<auth::AuthThrottle> throttle;
  // The OAuth signing keys of each tenant that trusts an issuer, kept current by their
  // fetcher; its sources are set with each directory snapshot.
  auth::KeyStore* keys = nullptr;
  // The certificate in force; swapped whole on SIGHUP, connections keep theirs.
  std::atomic<std::shared_ptr<net::TlsContext>> tls_context;
};

// CheckReferences: what the configuration refers to, checked without starting anything: the
// delivery backend is supported, the TLS certificate and key load (when a listener needs TLS),
// delivery's tls_ca_file loads (when delivery uses TLS), the directory database exists, and every
// authenticate_as names an account in it.
// `report` (optional) gets one line per accepted domain naming its route and destination.
absl::Status CheckReferences(const Config& config, std::string* report = nullptr);
// CheckRoutes: every accepted domain of `snapshot` has a route (FailedPrecondition naming the
// ones that have none); `report` as above, with a warning for a route naming an unknown tenant.
absl::Status CheckRoutes(const delivery::Router& router, const directory::Snapshot& snapshot,
                         std::string* report);

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
  // ReloadTls: loads the certificate and key again; on failure the old ones stay in force.
  absl::Status ReloadTls();
  // ReloadConfig: reads the configuration file again. Keys that can change live take effect
  // for new sessions; for the others a warning says a restart is needed, and they keep their
  // running values. A file that does not load changes nothing (the error is returned).
  absl::Status ReloadConfig(const std::string& path);
  // FlushUsage: writes the usage counts gathered so far to the directory database.
  absl::Status FlushUsage();
  // MetricsText: the Prometheus text exposition of every series (server/metrics.cc); empty
  // before Start. Any thread.
  std::string MetricsText() const;
  // Stop: graceful: no new connections, idle sessions get 421 4.3.2, messages in progress
  // finish (within the drain timeout); returns when every shard and delivery are done.
  void Stop();
  // Failed: whether a shard died (its error was logged).
  bool Failed() const;

  int shard_count() const { return static_cast<int>(shards_.size()); }
  // connections_open, queued_messages: for the service status line. Any thread.
  int64_t connections_open() const { return shared_.connections_open.load(); }
  int64_t queued_messages() const;
  const ShardCounters& counters(int shard) const;

 private:
  SharedState shared_;
  std::unique_ptr<directory::Store> store_;
  int64_t data_version_ = -1;
  // The directory database file the store has open, to notice a replaced file.
  std::unique_ptr<io::WatchedFile> database_file_;
  absl::Status ReopenIfReplaced(bool* reopened);
  // The steps of Start, in its order (compose.cc): each builds one part and puts it in
  // shared_ (or a member) for the next ones.
  absl::Status LoadTls();
  absl::Status OpenDirectory();
  absl::Status MakeKeyStore();
  void MakeGate();
  absl::Status StartFleet();
  void LimitConnectionsToDescriptors(int shards);
  absl::Status StartSpoolAndDelivery(int shards);
  void MakeAuth();
  absl::Status OpenShards(int shards);
  absl::Status StartAdmin();
  // Declared before the queue and the shards, which write to it: destroyed after them.
  std::unique_ptr<trace::Writer> trace_;
  std::unique_ptr<spool::SpoolGauges> gauges_;
  std::unique_ptr<delivery::Reporter> reporter_;  // used by the stage's workers: outlives it
  std::unique_ptr<delivery::DeliveryStage> delivery_;
  std::vector<std::shared_ptr<spool::Segment>> replayed_segments_;
  std::unique_ptr<auth::PasswordVerifier> verifier_;
  std::unique_ptr<auth::KeyStore> keys_;
  std::unique_ptr<fleet::TenantLeases> leases_;
  std::unique_ptr<admin::AdminServer> admin_;
  void StartTrace();
  std::vector<std::unique_ptr<Shard>> shards_;
  // RegisterMetrics (server/metrics.cc): every series /metrics shows, once the parts exist.
  // Declared after what its collectors read; the admin thread that scrapes stops in Stop().
  void RegisterMetrics();
  std::unique_ptr<metrics::Registry> metrics_;
};

}  // namespace chute::server
