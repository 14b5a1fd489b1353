#pragma once

// TenantLeases: authenticated_connections_per_tenant across a fleet of nodes, through leases in
// Redis (docs/fleet.md, "The tenant cap across the fleet").
//
// Each authenticated session of a node holds a lease: a member "<node>:<instance>:<lease id>"
// of its tenant's sorted set `chute:tenant:<id>:sessions`, scored with the Redis time (ms) at
// which it expires. A Lua script takes a place atomically (drop the expired, count, add when
// under the cap), so the cap holds whichever nodes ask at once. The node renews its leases every
// third of `lease` (and puts back any Redis lost: a Redis restarted empty gets every live
// session back at the next renewal), and releases each when its session ends. A node that dies
// stops renewing: its places are free again within `lease`. Every node also keeps a member in
// `chute:nodes`, renewed the same way, so that each knows how many nodes are alive.
//
// Redis unreachable (a connect that fails, an exchange that passes `timeout`): the node falls
// back to its share of the cap, cap / (the nodes it last saw alive), judged on its own count of
// the tenant's sessions (`local_count`, the in-process ConnectionGate, which a node keeps in
// every state); it logs the change and says so in /metrics; it tries Redis again every second,
// and once back puts its live sessions back before it asks for new places.
//
// The shards never wait on the network: Acquire answers at once when the node is on its share,
// else queues the request; the fleet's task sends what is queued as one pipeline and the answer
// comes back to the LeaseSink (the shard's mailbox). Every Acquire gets exactly one answer.
// Bounds: kLeaseQueueMax requests wait at most (past it: the share decides at once); a
// pipeline carries kLeaseBatchMax requests.
//
// Threads: Acquire, Release, SetCap and the counters from any thread; Start and Stop from one
// (the main thread). The task runs on a loop of its own (thread `chute-fleet`).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "fleet/redis.h"
#include "io/loop.h"
#include "io/task.h"

namespace chute::fleet {

inline constexpr size_t kLeaseQueueMax = 10000;
inline constexpr size_t kLeaseBatchMax = 512;
// Members renewed or released by one script call (one tenant's at a time).
inline constexpr size_t kLeaseMembersPerCall = 256;
// Releases remembered while Redis is away, to be sent when it is back (past it, they expire).
inline constexpr size_t kPendingReleasesMax = 100000;
inline constexpr absl::Duration kRedisRetryInterval = absl::Seconds(1);

struct LeaseAnswer {
  bool admitted = false;
  uint64_t lease = 0;     // the lease to Release when the session ends; 0 when refused
  bool fallback = false;  // decided by the node's share, not by Redis
};

class LeaseSink {
 public:
  virtual ~LeaseSink() = default;
  // OnLeased: the answer to Acquire(..., cookie, this), on the fleet's thread.
  virtual void OnLeased(uint64_t cookie, LeaseAnswer answer) = 0;
};

struct LeaseOptions {
  std::string node_id;  // names the node in its members (with a random instance id)
  std::string redis;    // "host:port" or "unix:/path"
  std::string password;
  absl::Duration lease = absl::Seconds(30);
  absl::Duration timeout = absl::Milliseconds(500);
  uint64_t cap = 250;
  // local_count: this node's sessions of a tenant (counting the one asking); any thread.
  std::function<uint64_t(int64_t tenant_id)> local_count;
};

struct LeaseCounters {
  std::atomic<uint64_t> admitted{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> fallback_admitted{0};
  std::atomic<uint64_t> fallback_refused{0};
  std::atomic<uint64_t> redis_failures{0};  // connects and exchanges that failed
  std::atomic<uint64_t> put_back{0};        // leases Redis had lost, put back by a renewal
  std::atomic<bool> redis_up{false};
  std::atomic<uint64_t> nodes_alive{1};  // as last seen in Redis (this node counted)
  std::atomic<uint64_t> leases{0};       // this node's live leases
};

class TenantLeases {
 public:
  // Start: the fleet's thread and task; the first connection is made there (until it is, the
  // node is on its share). An error only when the thread or its ring cannot be made.
  static absl::StatusOr<std::unique_ptr<TenantLeases>> Start(LeaseOptions options);
  // ~TenantLeases: Stop.
  ~TenantLeases();
  TenantLeases(const TenantLeases&) = delete;
  TenantLeases& operator=(const TenantLeases&) = delete;

  // Acquire: a place for a new authenticated session of the tenant `tenant_id` named
  // `tenant` (the name keys it in Redis: the same on every node, whichever store numbered it).
  // The answer now, when the node is on its share (Redis away, the queue full, stopping); else
  // std::nullopt and it comes to sink->OnLeased(cookie, ...).
  std::optional<LeaseAnswer> Acquire(int64_t tenant_id, absl::string_view tenant, uint64_t cookie,
                                     LeaseSink* sink);
  // Release: the session holding `lease` (from an admitted answer) ended. 0 is ignored.
  void Release(uint64_t lease);
  // SetCap: the cap for new places (a configuration reload).
  void SetCap(uint64_t cap) { cap_.store(cap, std::memory_order_relaxed); }
  // Stop: answers what waits (by the share), gives back every live lease and the node's
  // member in Redis (one exchange, within the timeout), and ends the task.
  void Stop();

  const LeaseCounters& counters() const { return counters_; }
  // Share: this node's part of the cap while Redis is away.
  uint64_t Share() const;
  const std::string& member_prefix() const { return prefix_; }

 private:
  struct Request {
    int64_t tenant_id;
    std::string key;  // the tenant's sorted set
    uint64_t lease;
    uint64_t cookie;
    LeaseSink* sink;
  };
  struct Held {
    int64_t tenant_id;
    std::string key;
  };
  struct Gone {
    std::string key;
    uint64_t lease;
  };
  // Batch: what one pipeline carries, in this order: the heartbeat and the renewals (when
  // due), the releases, the requests.
  struct Batch {
    bool renew = false;
    std::vector<std::pair<std::string, std::vector<uint64_t>>> renewals;  // key, leases
    std::vector<Gone> releases;
    std::vector<Request> requests;
    bool empty() const { return !renew && releases.empty() && requests.empty(); }
  };

  explicit TenantLeases(LeaseOptions options);
  LeaseAnswer DecideByShare(const Request& request);
  void WakeLocked();
  io::Task<void> Run();
  io::Task<void> Connect();
  io::Task<void> Send(Batch batch);
  io::Task<void> Leave();
  Batch TakeBatch(absl::Time now);
  size_t AppendCommands(const Batch& batch, std::string* out) const;
  void Apply(const Batch& batch, const std::vector<RespValue>& replies);
  void GoDown(const absl::Status& why, std::vector<Request> requests, std::vector<Gone> releases);
  // AnswerByShare: `requests` decided by the share; `sent`: they were in an exchange that
  // failed (Redis may hold their members).
  void AnswerByShare(std::vector<Request> requests, bool sent);
  std::string Member(uint64_t lease) const;

  const LeaseOptions options_;
  std::string prefix_;  // "<node>:<instance>:"
  std::atomic<uint64_t> cap_;
  std::atomic<uint64_t> next_lease_{1};
  LeaseCounters counters_;
  std::unique_ptr<io::LoopThread> thread_;
  io::Loop* loop_ = nullptr;
  io::RemoteWakes wakes_;
  io::Waiter waiter_;
  std::atomic<int64_t> stop_at_unix_ms_{0};
  std::unique_ptr<RedisConnection> connection_;   // the task's
  std::string shas_[3];                           // the scripts' SHA1s on connection_'s server
  absl::Time next_renew_ = absl::InfinitePast();  // the task's
  absl::Time next_connect_ = absl::InfinitePast();

  std::mutex mu_;  // guards what follows
  std::condition_variable done_;
  bool up_ = false;  // a connection works: Acquire queues
  bool stopping_ = false;
  bool running_ = false;
  bool asleep_ = false;
  std::vector<Request> queue_;
  std::vector<Gone> releases_;
  absl::flat_hash_map<uint64_t, Held> live_;  // what renewals carry
};

}  // namespace chute::fleet
