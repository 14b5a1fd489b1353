// throttle.cc: counts failed AUTHs per address and user name; delays 535s, blocks guessers.

#include "auth/throttle.h"

#include <algorithm>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace chute::auth {
namespace {

std::string IpKey(const IpBytes& ip) {
  return absl::StrCat("i", absl::string_view(reinterpret_cast<const char*>(ip.data()), ip.size()));
}

// UserKey: a fixed-size key for a user name of any length (a guesser's 9 KB names must not
// cost 9 KB each); a collision only merges two names' failure counts.
std::string UserKey(absl::string_view user) {
  uint64_t hash = absl::HashOf(absl::AsciiStrToLower(user));
  return absl::StrCat("u", absl::string_view(reinterpret_cast<const char*>(&hash), 8));
}

}  // namespace

int64_t AuthThrottle::Failures(const std::string& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end() || now - it->second.window_start >= limits_.window) {
    return 0;
  }
  return it->second.failures;
}

int64_t AuthThrottle::Add(const std::string& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= limits_.entries_max && now >= next_sweep_) {
      // At most one sweep a second: a flood of new keys cannot make every AUTH a full scan.
      next_sweep_ = now + absl::Seconds(1);
      absl::erase_if(
          entries_, [&](const auto& kv) { return now - kv.second.window_start >= limits_.window; });
    }
    if (entries_.size() >= limits_.entries_max) {
      return 0;  // full of live entries: not tracked (fail open, never grow)
    }
    it = entries_.emplace(key, Entry{now, 0}).first;
  }
  if (now - it->second.window_start >= limits_.window) {
    it->second = Entry{now, 0};
  }
  return ++it->second.failures;
}

AuthThrottle::Verdict AuthThrottle::Check(const IpBytes& ip, absl::string_view user,
                                          absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t ip_failures = Failures(IpKey(ip), now);
  if (ip_failures == 0) {
    return Verdict::kClean;
  }
  if (ip_failures >= limits_.failures_per_ip) {
    refused_ip.fetch_add(1, std::memory_order_relaxed);
    return Verdict::kBlocked;
  }
  if (Failures(UserKey(user), now) >= limits_.failures_per_account) {
    refused_account.fetch_add(1, std::memory_order_relaxed);
    return Verdict::kBlocked;
  }
  return Verdict::kSuspect;
}

absl::Duration AuthThrottle::RecordFailure(const IpBytes& ip, absl::string_view user,
                                           absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t ip_failures = Add(IpKey(ip), now);
  Add(UserKey(user), now);
  if (ip_failures == 0) {
    return absl::ZeroDuration();
  }
  delayed.fetch_add(1, std::memory_order_relaxed);
  int64_t shift = std::min<int64_t>(ip_failures - 1, 30);
  return std::min(absl::Seconds(int64_t{1} << shift), limits_.delay_max);
}

void AuthThrottle::SetLimits(ThrottleLimits limits) {
  std::lock_guard<std::mutex> lock(mu_);
  limits_ = limits;
}

}  // namespace chute::auth
