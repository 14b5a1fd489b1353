// verifier.cc: probes recipients at a route's target, one at a time as a task on a loop, and
// caches the answers.

#include "delivery/verifier.h"

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/log.h"
#include "base/memory.h"

namespace chute::delivery {

RecipientVerifier::RecipientVerifier(VerifierOptions options) : options_(std::move(options)) {
  CHECK(options_.client != nullptr);
}

RecipientVerifier::~RecipientVerifier() { Stop(); }

void RecipientVerifier::Start() {
  CHECK(loop_ == nullptr);
  loop_ = options_.loop;
  if (loop_ == nullptr) {
    absl::StatusOr<std::unique_ptr<io::LoopThread>> thread =
        io::LoopThread::Start(absl::StrCat("chute-verify-", options_.route));
    CHECK_MSG(thread.ok(), absl::StrCat("verify: io_uring: ", thread.status().message()).c_str());
    own_thread_ = *std::move(thread);
    loop_ = own_thread_->loop();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_ = true;
  }
  loop_->Post([this] { loop_->Spawn(Run()); });
}

void RecipientVerifier::WakeLocked() {
  if (!asleep_) {
    return;
  }
  asleep_ = false;
  wakes_.Wake(loop_, &waiter_);
}

void RecipientVerifier::Stop() {
  std::vector<std::pair<Waiter, std::string>> refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (const std::string& address : queue_) {
      for (const Waiter& waiter : waiting_[address]) {
        refused.emplace_back(waiter, address);
      }
      waiting_.erase(address);
    }
    queue_.clear();
    WakeLocked();
  }
  for (const auto& [waiter, address] : refused) {
    counters_.probes_unreachable.fetch_add(1, std::memory_order_relaxed);
    waiter.sink->OnProbed(waiter.cookie, RecipientVerdict{RecipientVerdict::Kind::kUnreachable,
                                                          "421 4.3.2 chute is stopping", false});
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return !running_; });
  }
  wakes_.WaitForPosted();
  own_thread_.reset();
}

std::optional<RecipientVerdict> RecipientVerifier::Cached(absl::string_view address,
                                                          absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(address);
  if (it == cache_.end() || it->second.expires <= now) {
    return std::nullopt;
  }
  counters_.cache_hits.fetch_add(1, std::memory_order_relaxed);
  RecipientVerdict verdict = it->second.verdict;
  verdict.cached = true;
  return verdict;
}

void RecipientVerifier::Submit(const std::string& address, uint64_t cookie, ProbeSink* sink) {
  std::string refusal;  // set only when the address cannot wait for a probe
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = waiting_.find(address);
    if (it != waiting_.end()) {
      it->second.push_back(Waiter{cookie, sink});  // asked already: one probe answers both
      return;
    }
    if (absl::Now() < down_until_) {
      refusal = down_reply_;  // found down a moment ago: not asked again yet
    } else if (!stopping_ && queue_.size() < kVerifyQueueMax) {
      waiting_[address].push_back(Waiter{cookie, sink});
      queue_.push_back(address);
      WakeLocked();
      return;
    } else {
      refusal = stopping_ ? "421 4.3.2 chute is stopping"
                          : "451 4.3.2 too many recipients waiting to be verified";
    }
  }
  counters_.probes_unreachable.fetch_add(1, std::memory_order_relaxed);
  sink->OnProbed(cookie,
                 RecipientVerdict{RecipientVerdict::Kind::kUnreachable, std::move(refusal), false});
}

void RecipientVerifier::Remember(const std::string& address, const RecipientVerdict& verdict,
                                 absl::Time now) {
  if (verdict.kind == RecipientVerdict::Kind::kUnreachable) {
    return;
  }
  if (cache_.size() >= kVerifyCacheEntriesMax) {
    absl::erase_if(cache_, [now](const auto& entry) { return entry.second.expires <= now; });
    if (cache_.size() >= kVerifyCacheEntriesMax) {
      cache_.clear();
    }
  }
  absl::Duration lifetime =
      verdict.kind == RecipientVerdict::Kind::kExists ? options_.positive : options_.negative;
  cache_[address] = Entry{verdict, now + lifetime};
}

io::Task<void> RecipientVerifier::Run() {
  std::unique_ptr<SmtpClient> client = options_.client();
  while (true) {
    std::string address;
    bool stop = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        stop = true;
      } else if (!queue_.empty()) {
        address = std::move(queue_.front());
        queue_.pop_front();
      } else {
        asleep_ = true;
      }
    }
    if (stop) {
      break;
    }
    if (address.empty()) {
      absl::Time until = absl::Now() + options_.idle_close;
      co_await loop_->Sleep(&waiter_, until);
      bool idle = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        idle = asleep_;  // nobody woke it: the time ran out
        asleep_ = false;
      }
      if (idle) {
        co_await client->CloseIdle(absl::Now());
      }
      continue;
    }
    co_await Probe(*client, std::move(address));
  }
  co_await client->Shutdown();  // QUIT
  client.reset();
  std::lock_guard<std::mutex> lock(mu_);
  running_ = false;
  done_.notify_all();
}

io::Task<void> RecipientVerifier::Probe(SmtpClient& client, std::string address) {
  RecipientResult result = co_await client.Probe(address);
  RecipientVerdict verdict;
  switch (result.outcome) {
    case Outcome::kDelivered:
      verdict.kind = RecipientVerdict::Kind::kExists;
      counters_.probes_exists.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::kPermanent:
      verdict.kind = RecipientVerdict::Kind::kUnknown;
      counters_.probes_unknown.fetch_add(1, std::memory_order_relaxed);
      break;
    case Outcome::kTransient:
      verdict.kind = RecipientVerdict::Kind::kUnreachable;
      counters_.probes_unreachable.fetch_add(1, std::memory_order_relaxed);
      break;
  }
  verdict.reply = std::move(result.reply);
  LogEvent(LogLevel::kDebug, "rcpt.verified",
           {{"route", options_.route},
            {"recipient", address},
            {"result", verdict.kind == RecipientVerdict::Kind::kExists    ? "exists"
                       : verdict.kind == RecipientVerdict::Kind::kUnknown ? "unknown"
                                                                          : "unreachable"},
            {"reply", verdict.reply}});
  std::vector<Waiter> waiters;
  size_t others = 0;  // waiters for other addresses, answered with this one (the route is down)
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Time now = absl::Now();
    Remember(address, verdict, now);
    auto it = waiting_.find(address);
    if (it != waiting_.end()) {
      waiters = std::move(it->second);
      waiting_.erase(it);
    }
    if (result.target_down) {
      down_until_ = now + options_.down_hold;
      down_reply_ = verdict.reply;
      size_t own = waiters.size();
      for (const std::string& queued : queue_) {
        auto q = waiting_.find(queued);
        if (q != waiting_.end()) {
          waiters.insert(waiters.end(), q->second.begin(), q->second.end());
          waiting_.erase(q);
        }
      }
      queue_.clear();
      others = waiters.size() - own;
    }
  }
  if (others > 0) {
    counters_.probes_unreachable.fetch_add(others, std::memory_order_relaxed);
    LogEvent(
        LogLevel::kWarning, "rcpt.verify_down",
        {{"route", options_.route}, {"waiting", absl::StrCat(others)}, {"reply", verdict.reply}});
  }
  for (const Waiter& waiter : waiters) {
    waiter.sink->OnProbed(waiter.cookie, verdict);
  }
}

}  // namespace chute::delivery
