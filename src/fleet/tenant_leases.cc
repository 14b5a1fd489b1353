// tenant_leases.cc: the fleet-wide tenant cap: leases in Redis taken, renewed and given back by
// one task, and the node's share of the cap while Redis is away.

#include "fleet/tenant_leases.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/log.h"

namespace chute::fleet {
namespace {

// The Redis time in ms, as every script reads it: the nodes' own clocks never decide.
constexpr absl::string_view kNowLua =
    "local t = redis.call('TIME') "
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) ";

// KEYS[1] the tenant's set; ARGV cap, member, lease ms. 1: the member holds a place.
constexpr absl::string_view kAcquireLua =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "local ms = tonumber(ARGV[3]) "
    "if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then "
    "  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end "
    "end "
    "redis.call('ZADD', KEYS[1], now + ms, ARGV[2]) "
    "redis.call('PEXPIRE', KEYS[1], ms * 2) "
    "return 1";

// KEYS[1] the tenant's set; ARGV lease ms, members. The members Redis had lost (put back).
constexpr absl::string_view kRenewLua =
    "local ms = tonumber(ARGV[1]) "
    "local added = 0 "
    "for i = 2, #ARGV do added = added + redis.call('ZADD', KEYS[1], now + ms, ARGV[i]) end "
    "redis.call('PEXPIRE', KEYS[1], ms * 2) "
    "return added";

// KEYS[1] the nodes' set; ARGV member, lease ms. The nodes alive, this one counted.
constexpr absl::string_view kHeartbeatLua =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) "
    "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) "
    "return redis.call('ZCARD', KEYS[1])";

constexpr absl::string_view kNodesKey = "chute:nodes";
enum Script { kAcquire = 0, kRenew = 1, kHeartbeat = 2 };

std::string ScriptText(Script script) {
  switch (script) {
    case kAcquire:
      return absl::StrCat(kNowLua, kAcquireLua);
    case kRenew:
      return absl::StrCat(kNowLua, kRenewLua);
    case kHeartbeat:
      return absl::StrCat(kNowLua, kHeartbeatLua);
  }
  return "";
}

std::string InstanceId() {
  std::random_device random;
  return absl::StrFormat("%08x", static_cast<uint32_t>(random()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TenantLeases>> TenantLeases::Start(LeaseOptions options) {
  CHECK(options.local_count != nullptr);
  CHECK(!options.redis.empty());
  std::unique_ptr<TenantLeases> leases(new TenantLeases(std::move(options)));
  absl::StatusOr<std::unique_ptr<io::LoopThread>> thread = io::LoopThread::Start("chute-fleet");
  if (!thread.ok()) {
    return thread.status();
  }
  leases->thread_ = *std::move(thread);
  leases->loop_ = leases->thread_->loop();
  {
    std::lock_guard<std::mutex> lock(leases->mu_);
    leases->running_ = true;
  }
  TenantLeases* self = leases.get();
  self->loop_->Post([self] { self->loop_->Spawn(self->Run()); });
  return leases;
}

TenantLeases::TenantLeases(LeaseOptions options)
    : options_(std::move(options)),
      prefix_(absl::StrCat(options_.node_id, ":", InstanceId(), ":")),
      cap_(options_.cap) {}

TenantLeases::~TenantLeases() { Stop(); }

uint64_t TenantLeases::Share() const {
  uint64_t nodes = std::max<uint64_t>(1, counters_.nodes_alive.load(std::memory_order_relaxed));
  return std::max<uint64_t>(1, cap_.load(std::memory_order_relaxed) / nodes);
}

std::string TenantLeases::Member(uint64_t lease) const { return absl::StrCat(prefix_, lease); }

void TenantLeases::WakeLocked() {
  if (!asleep_) {
    return;
  }
  asleep_ = false;
  wakes_.Wake(loop_, &waiter_);
}

std::optional<LeaseAnswer> TenantLeases::Acquire(int64_t tenant_id, absl::string_view tenant,
                                                 uint64_t cookie, LeaseSink* sink) {
  Request request{tenant_id, absl::StrCat("chute:tenant:", tenant, ":sessions"),
                  next_lease_.fetch_add(1, std::memory_order_relaxed), cookie, sink};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (up_ && !stopping_ && queue_.size() < kLeaseQueueMax) {
      queue_.push_back(std::move(request));
      WakeLocked();
      return std::nullopt;
    }
  }
  return DecideByShare(request);
}

LeaseAnswer TenantLeases::DecideByShare(const Request& request) {
  // The in-process count already holds the session asking: it may go when it is within the
  // node's share.
  bool admitted = options_.local_count(request.tenant_id) <= Share();
  LeaseAnswer answer{admitted, admitted ? request.lease : 0, true};
  if (admitted) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.emplace(request.lease, Held{request.tenant_id, request.key});
    counters_.leases.store(live_.size(), std::memory_order_relaxed);
  }
  (admitted ? counters_.fallback_admitted : counters_.fallback_refused)
      .fetch_add(1, std::memory_order_relaxed);
  return answer;
}

void TenantLeases::AnswerByShare(std::vector<Request> requests, bool sent) {
  for (const Request& request : requests) {
    LeaseAnswer answer = DecideByShare(request);
    if (sent && !answer.admitted) {
      // Redis may have run the script before the exchange failed: the member is taken out
      // once Redis answers again, instead of holding a place until it expires.
      std::lock_guard<std::mutex> lock(mu_);
      if (releases_.size() < kPendingReleasesMax) {
        releases_.push_back(Gone{request.key, request.lease});
      }
    }
    request.sink->OnLeased(request.cookie, answer);
  }
}

void TenantLeases::Release(uint64_t lease) {
  if (lease == 0) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(lease);
  if (it == live_.end()) {
    return;
  }
  if (releases_.size() < kPendingReleasesMax) {
    releases_.push_back(Gone{std::move(it->second.key), lease});
  }  // else it expires by itself within the lease time
  live_.erase(it);
  counters_.leases.store(live_.size(), std::memory_order_relaxed);
  if (up_) {
    WakeLocked();
  }
}

void TenantLeases::Stop() {
  std::vector<Request> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (loop_ == nullptr) {
      return;
    }
    stopping_ = true;
    waiting.swap(queue_);
    WakeLocked();
  }
  AnswerByShare(std::move(waiting), /*sent=*/false);
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return !running_; });
  }
  wakes_.WaitForPosted();
  thread_.reset();
  loop_ = nullptr;
}

io::Task<void> TenantLeases::Run() {
  while (true) {
    absl::Time now = absl::Now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        break;
      }
    }
    if (connection_ == nullptr && now >= next_connect_) {
      co_await Connect();
    }
    Batch batch;
    absl::Time until = next_connect_;
    if (connection_ != nullptr) {
      batch = TakeBatch(now);
      until = next_renew_;
    }
    if (!batch.empty()) {
      co_await Send(std::move(batch));
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || (connection_ != nullptr && (!queue_.empty() || !releases_.empty()))) {
        continue;  // came in meanwhile
      }
      asleep_ = true;
    }
    co_await loop_->Sleep(&waiter_, until);
    std::lock_guard<std::mutex> lock(mu_);
    asleep_ = false;
  }
  co_await Leave();
  connection_.reset();
  std::lock_guard<std::mutex> lock(mu_);
  running_ = false;
  done_.notify_all();
}

io::Task<void> TenantLeases::Connect() {
  next_connect_ = absl::Now() + kRedisRetryInterval;
  absl::StatusOr<std::unique_ptr<RedisConnection>> opened = co_await RedisConnection::Open(
      loop_, options_.redis, options_.password, options_.timeout, &stop_at_unix_ms_);
  if (!opened.ok()) {
    GoDown(opened.status(), {}, {});
    co_return;
  }
  std::string commands;
  for (Script script : {kAcquire, kRenew, kHeartbeat}) {
    AppendCommand(&commands, {"SCRIPT", "LOAD", ScriptText(script)});
  }
  absl::StatusOr<std::vector<RespValue>> shas =
      co_await (*opened)->Exchange(std::move(commands), 3, options_.timeout);
  if (shas.ok()) {
    for (size_t i = 0; i < 3; ++i) {
      if ((*shas)[i].type != RespValue::Type::kString) {
        shas = absl::FailedPreconditionError(
            absl::StrCat("redis ", options_.redis, " refused SCRIPT LOAD: ", (*shas)[i].str));
        break;
      }
      shas_[i] = (*shas)[i].str;
    }
  }
  if (!shas.ok()) {
    GoDown(shas.status(), {}, {});
    co_return;
  }
  connection_ = *std::move(opened);
  next_renew_ = absl::InfinitePast();  // the first batch puts every live session back
  bool was_up = counters_.redis_up.exchange(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    up_ = true;
  }
  if (!was_up) {
    LogEvent(LogLevel::kInfo, "fleet.redis_up",
             {{"redis", options_.redis}, {"node", prefix_.substr(0, prefix_.size() - 1)}});
  }
}

void TenantLeases::GoDown(const absl::Status& why, std::vector<Request> requests,
                          std::vector<Gone> releases) {
  counters_.redis_failures.fetch_add(1, std::memory_order_relaxed);
  connection_.reset();
  next_connect_ = std::max(next_connect_, absl::Now() + kRedisRetryInterval);
  std::vector<Request> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    up_ = false;
    waiting.swap(queue_);
    for (Gone& gone : releases) {
      if (releases_.size() < kPendingReleasesMax) {
        releases_.push_back(std::move(gone));  // sent once Redis is back
      }
    }
  }
  if (counters_.redis_up.exchange(false)) {
    LogEvent(LogLevel::kWarning, "fleet.redis_down",
             {{"redis", options_.redis},
              {"error", why.message()},
              {"share", static_cast<int64_t>(Share())},
              {"nodes_alive", static_cast<int64_t>(counters_.nodes_alive.load())}});
  } else {
    LOG_WARNING_EVERY(60, "fleet: Redis %s still unreachable (%s); each tenant's share here: %llu",
                      options_.redis.c_str(), std::string(why.message()).c_str(),
                      static_cast<unsigned long long>(Share()));
  }
  AnswerByShare(std::move(requests), /*sent=*/true);
  AnswerByShare(std::move(waiting), /*sent=*/false);
}

TenantLeases::Batch TenantLeases::TakeBatch(absl::Time now) {
  Batch batch;
  std::lock_guard<std::mutex> lock(mu_);
  if (now >= next_renew_) {
    batch.renew = true;
    absl::flat_hash_map<absl::string_view, size_t> index;
    for (const auto& [lease, held] : live_) {
      auto [it, fresh] = index.try_emplace(held.key, batch.renewals.size());
      if (fresh || batch.renewals[it->second].second.size() >= kLeaseMembersPerCall) {
        it->second = batch.renewals.size();
        batch.renewals.emplace_back(held.key, std::vector<uint64_t>());
      }
      batch.renewals[it->second].second.push_back(lease);
    }
  }
  batch.releases.swap(releases_);
  size_t take = std::min(queue_.size(), kLeaseBatchMax);
  batch.requests.assign(std::make_move_iterator(queue_.begin()),
                        std::make_move_iterator(queue_.begin() + static_cast<ptrdiff_t>(take)));
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<ptrdiff_t>(take));
  return batch;
}

size_t TenantLeases::AppendCommands(const Batch& batch, std::string* out) const {
  size_t count = 0;
  std::string lease_ms = absl::StrCat(absl::ToInt64Milliseconds(options_.lease));
  if (batch.renew) {
    std::string node = prefix_.substr(0, prefix_.size() - 1);
    AppendCommand(out, {"EVALSHA", shas_[kHeartbeat], "1", kNodesKey, node, lease_ms});
    ++count;
    for (const auto& [key, leases] : batch.renewals) {
      std::vector<std::string> members;
      members.reserve(leases.size());
      for (uint64_t lease : leases) {
        members.push_back(Member(lease));
      }
      std::vector<absl::string_view> args = {"EVALSHA", shas_[kRenew], "1", key, lease_ms};
      args.insert(args.end(), members.begin(), members.end());
      AppendCommand(out, args);
      ++count;
    }
  }
  for (const Gone& gone : batch.releases) {
    AppendCommand(out, {"ZREM", gone.key, Member(gone.lease)});
    ++count;
  }
  std::string cap = absl::StrCat(cap_.load(std::memory_order_relaxed));
  for (const Request& request : batch.requests) {
    AppendCommand(
        out, {"EVALSHA", shas_[kAcquire], "1", request.key, cap, Member(request.lease), lease_ms});
    ++count;
  }
  return count;
}

io::Task<void> TenantLeases::Send(Batch batch) {
  std::string commands;
  size_t count = AppendCommands(batch, &commands);
  absl::StatusOr<std::vector<RespValue>> replies =
      co_await connection_->Exchange(std::move(commands), count, options_.timeout);
  if (!replies.ok()) {
    GoDown(replies.status(), std::move(batch.requests), std::move(batch.releases));
    co_return;
  }
  if (batch.renew) {
    next_renew_ = absl::Now() + options_.lease / 3;
  }
  Apply(batch, *replies);
}

void TenantLeases::Apply(const Batch& batch, const std::vector<RespValue>& replies) {
  // A script's error (NOSCRIPT after a SCRIPT FLUSH, a key of another type, a read-only
  // replica) means this connection cannot keep the leases: the requests it answered so are
  // decided by the share, and the connection is made again (which loads the scripts again).
  // Renewals that fail count too: otherwise live sessions' leases would expire unseen.
  std::string broken;
  size_t i = 0;
  if (batch.renew) {
    const RespValue& heartbeat = replies[i++];
    if (heartbeat.type == RespValue::Type::kInteger && heartbeat.integer > 0) {
      counters_.nodes_alive.store(static_cast<uint64_t>(heartbeat.integer));
    } else {
      broken = absl::StrCat("the heartbeat was answered ", heartbeat.str);
    }
    for (size_t r = 0; r < batch.renewals.size(); ++r) {
      const RespValue& renewed = replies[i++];
      if (renewed.type == RespValue::Type::kInteger) {
        counters_.put_back.fetch_add(static_cast<uint64_t>(std::max<int64_t>(renewed.integer, 0)));
      } else {
        broken = absl::StrCat("a renewal was answered ", renewed.str);
      }
    }
  }
  i += batch.releases.size();  // a ZREM's count says nothing the node needs
  std::vector<Request> undecided;
  for (const Request& request : batch.requests) {
    const RespValue& reply = replies[i++];
    if (reply.type != RespValue::Type::kInteger) {
      broken = absl::StrCat("a lease was answered ", reply.str);
      undecided.push_back(request);
      continue;
    }
    bool admitted = reply.integer == 1;
    if (admitted) {
      std::lock_guard<std::mutex> lock(mu_);
      live_.emplace(request.lease, Held{request.tenant_id, request.key});
      counters_.leases.store(live_.size(), std::memory_order_relaxed);
    }
    (admitted ? counters_.admitted : counters_.refused).fetch_add(1, std::memory_order_relaxed);
    request.sink->OnLeased(request.cookie, LeaseAnswer{admitted, admitted ? request.lease : 0});
  }
  if (!broken.empty()) {
    if (batch.renew) {
      next_renew_ = absl::InfinitePast();  // the next connection renews at once
    }
    GoDown(absl::InternalError(absl::StrCat("Redis ", options_.redis, ": ", broken)),
           std::move(undecided), {});
  }
}

io::Task<void> TenantLeases::Leave() {
  if (connection_ == nullptr) {
    co_return;
  }
  // A stopping node gives its places back at once rather than after the lease time.
  stop_at_unix_ms_.store(absl::ToUnixMillis(absl::Now() + options_.timeout));
  std::string commands;
  size_t count = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [lease, held] : live_) {
      releases_.push_back(Gone{held.key, lease});
    }
    live_.clear();
    for (const Gone& gone : releases_) {
      AppendCommand(&commands, {"ZREM", gone.key, Member(gone.lease)});
      ++count;
    }
    releases_.clear();
  }
  AppendCommand(&commands, {"ZREM", kNodesKey, prefix_.substr(0, prefix_.size() - 1)});
  ++count;
  absl::StatusOr<std::vector<RespValue>> replies =
      co_await connection_->Exchange(std::move(commands), count, options_.timeout);
  if (!replies.ok()) {
    LOG_WARNING("fleet: could not give the leases back (%s); they expire within lease_s",
                std::string(replies.status().message()).c_str());
  }
}

}  // namespace chute::fleet
