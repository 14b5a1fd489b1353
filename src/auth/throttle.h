#pragma once

// AuthThrottle: the brake on password guessing (docs/architecture.md, Caps and limits). Failed
// AUTHs are counted per client address and per attempted user name over a window. Each failure from
// an address makes the next 535 wait longer (1 s, 2 s, 4 s, ... up to delay_max); an address over
// its limit, or an address that has failed before trying an account that is over its limit, is
// refused at once for the rest of the window (550 5.2.251), without an argon2 check. An
// address with no failure is never slowed: a correct password from elsewhere gets in even
// while an account is under attack. Addresses that have failed are verified at the back of
// the verifier's queue.
//
// Bounded: at most `entries_max` tracked keys; when full, expired entries are dropped, and if
// it is still full a new key is not tracked (it is treated as clean).
// Threads: any; one mutex, taken once per AUTH.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/net_address.h"

namespace chute::auth {

struct ThrottleLimits {
  int64_t failures_per_ip = 10;
  int64_t failures_per_account = 30;
  absl::Duration window = absl::Minutes(15);
  absl::Duration delay_max = absl::Seconds(8);
  size_t entries_max = 65536;
};

class AuthThrottle {
 public:
  enum class Verdict {
    kClean,    // no failure from this address in the window
    kSuspect,  // failed before: verify at the back of the queue
    kBlocked,  // refuse at once (550 5.2.251)
  };

  explicit AuthThrottle(ThrottleLimits limits) : limits_(limits) {}

  // Check: what to do with an AUTH from `ip` for `user` at `now`.
  Verdict Check(const IpBytes& ip, absl::string_view user, absl::Time now);
  // RecordFailure: counts a failed AUTH; returns how long to wait before the 535.
  absl::Duration RecordFailure(const IpBytes& ip, absl::string_view user, absl::Time now);
  // SetLimits: new limits (a configuration reload); counts are kept.
  void SetLimits(ThrottleLimits limits);

  std::atomic<uint64_t> refused_ip{0};
  std::atomic<uint64_t> refused_account{0};
  std::atomic<uint64_t> delayed{0};

 private:
  struct Entry {
    absl::Time window_start;
    int64_t failures = 0;
  };
  // Failures, Add: with mu_ held.
  int64_t Failures(const std::string& key, absl::Time now);
  int64_t Add(const std::string& key, absl::Time now);

  std::mutex mu_;                                    // guards limits_, entries_ and next_sweep_
  ThrottleLimits limits_;                            // guarded by mu_
  absl::flat_hash_map<std::string, Entry> entries_;  // guarded by mu_
  absl::Time next_sweep_ = absl::InfinitePast();     // guarded by mu_
};

}  // namespace chute::auth
