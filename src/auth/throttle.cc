// throttle.cc: counts failed AUTHs per address, user name and pair; delays 535s, refuses
// guessers and sprayers, never a known-good account for its neighbours' failures.

#include "auth/throttle.h"

#include <algorithm>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace chute::auth {
namespace {

absl::string_view IpView(const IpBytes& ip) {
  return absl::string_view(reinterpret_cast<const char*>(ip.data()), ip.size());
}

// UserHash: a fixed-size key for a user name of any length (a guesser's 9 KB names must not
// cost 9 KB each); a collision only merges two names' failure counts.
std::string UserHash(absl::string_view user) {
  uint64_t hash = absl::HashOf(absl::AsciiStrToLower(user));
  return std::string(reinterpret_cast<const char*>(&hash), 8);
}

std::string IpKey(const IpBytes& ip) { return absl::StrCat("i", IpView(ip)); }
std::string NamesKey(const IpBytes& ip) { return absl::StrCat("n", IpView(ip)); }
std::string UserKey(absl::string_view user) { return absl::StrCat("u", UserHash(user)); }
std::string PairKey(const IpBytes& ip, absl::string_view user) {
  return absl::StrCat("p", IpView(ip), UserHash(user));
}

}  // namespace

bool AuthThrottle::Exempt(const IpBytes& ip) const {
  return std::any_of(limits_.exempt.begin(), limits_.exempt.end(),
                     [&](const Cidr& cidr) { return cidr.Contains(ip); });
}

int64_t AuthThrottle::Failures(const std::string& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end() || now - it->second.window_start >= limits_.window) {
    return 0;
  }
  return it->second.failures;
}

AuthThrottle::Entry* AuthThrottle::Track(const std::string& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= limits_.entries_max && now >= next_sweep_) {
      // At most one sweep a second: a flood of new keys cannot make every AUTH a full scan.
      next_sweep_ = now + absl::Seconds(1);
      absl::erase_if(entries_, [&](const auto& kv) {
        return now - kv.second.window_start >= limits_.window && kv.second.good_until <= now;
      });
    }
    if (entries_.size() >= limits_.entries_max) {
      return nullptr;  // full of live entries: not tracked (fail open, never grow)
    }
    it = entries_.emplace(key, Entry{now, 0}).first;
  }
  if (now - it->second.window_start >= limits_.window) {
    it->second.window_start = now;
    it->second.failures = 0;
  }
  return &it->second;
}

int64_t AuthThrottle::Add(const std::string& key, absl::Time now) {
  Entry* entry = Track(key, now);
  return entry == nullptr ? 0 : ++entry->failures;
}

AuthThrottle::Verdict AuthThrottle::Check(const IpBytes& ip, absl::string_view user, absl::Time now,
                                          absl::string_view* reason) {
  std::lock_guard<std::mutex> lock(mu_);
  *reason = "";
  if (Exempt(ip)) {
    return Verdict::kClean;
  }
  std::string pair = PairKey(ip, user);
  int64_t pair_failures = Failures(pair, now);
  if (pair_failures >= limits_.failures_per_ip) {
    refused_ip.fetch_add(1, std::memory_order_relaxed);
    *reason = "guessing: this user name failed too often from this address";
    return Verdict::kBlocked;
  }
  if (pair_failures > 0 && Failures(UserKey(user), now) >= limits_.failures_per_account) {
    refused_account.fetch_add(1, std::memory_order_relaxed);
    *reason = "account under attack: this user name failed too often from all addresses";
    return Verdict::kBlocked;
  }
  auto it = entries_.find(pair);
  bool known_good = it != entries_.end() && it->second.good_until > now;
  if (known_good) {
    return Verdict::kClean;
  }
  if (Failures(NamesKey(ip), now) >= limits_.users_per_ip) {
    refused_spray.fetch_add(1, std::memory_order_relaxed);
    *reason = "spraying: too many user names failed from this address";
    return Verdict::kBlocked;
  }
  return Failures(IpKey(ip), now) == 0 ? Verdict::kClean : Verdict::kSuspect;
}

absl::Duration AuthThrottle::RecordFailure(const IpBytes& ip, absl::string_view user,
                                           absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Exempt(ip)) {
    return absl::ZeroDuration();
  }
  if (Add(PairKey(ip, user), now) == 1) {
    Add(NamesKey(ip), now);  // the first failure of this name from this address
  }
  Add(UserKey(user), now);
  int64_t ip_failures = Add(IpKey(ip), now);
  if (ip_failures == 0) {
    return absl::ZeroDuration();
  }
  delayed.fetch_add(1, std::memory_order_relaxed);
  int64_t shift = std::min<int64_t>(ip_failures - 1, 30);
  return std::min(absl::Seconds(int64_t{1} << shift), limits_.delay_max);
}

void AuthThrottle::RecordSuccess(const IpBytes& ip, absl::string_view user, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Exempt(ip)) {
    return;
  }
  Entry* entry = Track(PairKey(ip, user), now);
  if (entry != nullptr) {
    entry->failures = 0;
    entry->good_until = now + kKnownGoodFor;
  }
}

void AuthThrottle::SetLimits(ThrottleLimits limits) {
  std::lock_guard<std::mutex> lock(mu_);
  limits_ = std::move(limits);
}

}  // namespace chute::auth
