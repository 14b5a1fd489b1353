#pragma once

// AuthThrottle: the brake on password guessing and spraying (docs/architecture.md, Caps and
// limits) that does not lock a whole office out. Failed AUTHs are counted over a window per
// (client address, user name) pair, per user name from all addresses, per address, and as
// the number of distinct failing user names per address. A user name that has authenticated
// from an address is "known-good" there for kKnownGoodFor.
//
// Check refuses (550 5.2.251, without an argon2 check) only:
//   - guessing: a user name that failed failures_per_ip times from this address;
//   - an account under attack: a user name that failed failures_per_account times from all
//     addresses, asked for by an address where it failed too;
//   - spraying: a user name not known-good at an address where users_per_ip distinct user
//     names failed.
// So a correct password for an account that is not itself under attack is never refused
// because other accounts failed from the same address (a NAT or an application server), and
// an address with no failure for an account gets in even while the account is under attack.
// Each failure from an address makes its next 535 wait longer (1 s, 2 s, 4 s, ... up to
// delay_max); a success is never delayed. Addresses in `exempt` are never counted, delayed or
// refused.
//
// Bounded: at most `entries_max` tracked keys; when full, expired entries are dropped, and if
// it is still full a new key is not tracked (it is treated as clean).
// Threads: any; one mutex, taken once per AUTH and once per success.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/net_address.h"

namespace chute::auth {

// How long a user name that authenticated from an address stays exempt from that address's
// spraying refusal: a day, so that an application that sends hourly or daily is still known.
inline constexpr absl::Duration kKnownGoodFor = absl::Hours(24);

struct ThrottleLimits {
  int64_t failures_per_ip = 10;       // for one user name from one address
  int64_t failures_per_account = 30;  // for one user name from all addresses
  int64_t users_per_ip = 10;          // distinct failing user names from one address
  absl::Duration window = absl::Minutes(15);
  absl::Duration delay_max = absl::Seconds(8);
  size_t entries_max = 65536;
  std::vector<Cidr> exempt;
};

class AuthThrottle {
 public:
  enum class Verdict {
    kClean,    // no failure from this address in the window, or a known-good user name
    kSuspect,  // failed before: verify at the back of the queue
    kBlocked,  // refuse at once (550 5.2.251)
  };

  explicit AuthThrottle(ThrottleLimits limits) : limits_(std::move(limits)) {}

  // Check: what to do with an AUTH from `ip` for `user` at `now`; *reason says why a
  // kBlocked was refused (a static text, for the log).
  Verdict Check(const IpBytes& ip, absl::string_view user, absl::Time now,
                absl::string_view* reason);
  // RecordFailure: counts a failed AUTH; returns how long to wait before the 535.
  absl::Duration RecordFailure(const IpBytes& ip, absl::string_view user, absl::Time now);
  // RecordSuccess: `user` authenticated from `ip`: known-good there, its failures there
  // forgotten.
  void RecordSuccess(const IpBytes& ip, absl::string_view user, absl::Time now);
  // SetLimits: new limits (a configuration reload); counts are kept.
  void SetLimits(ThrottleLimits limits);

  std::atomic<uint64_t> refused_ip{0};       // guessing from one address
  std::atomic<uint64_t> refused_account{0};  // an account under attack
  std::atomic<uint64_t> refused_spray{0};    // many user names from one address
  std::atomic<uint64_t> delayed{0};

 private:
  struct Entry {
    absl::Time window_start;
    int64_t failures = 0;
    absl::Time good_until = absl::InfinitePast();  // pair keys only
  };
  // With mu_ held: Failures, the count in the window; Track, the entry for `key` (made when
  // new), nullptr when the table is full; Add, one more failure (0 when not tracked).
  int64_t Failures(const std::string& key, absl::Time now);
  Entry* Track(const std::string& key, absl::Time now);
  int64_t Add(const std::string& key, absl::Time now);
  bool Exempt(const IpBytes& ip) const;

  std::mutex mu_;                                    // guards limits_, entries_ and next_sweep_
  ThrottleLimits limits_;                            // guarded by mu_
  absl::flat_hash_map<std::string, Entry> entries_;  // guarded by mu_
  absl::Time next_sweep_ = absl::InfinitePast();     // guarded by mu_
};

}  // namespace chute::auth
