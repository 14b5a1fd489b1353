#pragma once

// PasswordVerifier: checks AUTH PLAIN/LOGIN passwords against argon2id hashes on a small pool
// of threads, so a burst of AUTH never stalls a shard's event loop (docs/architecture.md, Auth).
//
// A bounded cache remembers recently verified credentials, so an application that reconnects
// for every message does not pay argon2 every time. Its keys are HMAC-SHA256, under a random
// key made at start-up, of (account id, stored hash, password): never the password itself,
// and a password change (a new stored hash) can never hit an old entry.
//
// An unknown user is checked against a dummy hash of the same cost, so that it gets the same
// answer in about the same time as a wrong password.
//
// Threads: Submit() from any thread; results arrive on pool threads through VerifySink.

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"

namespace chute::auth {

inline constexpr size_t kVerifyQueueMax = 1024;  // beyond: 454 4.7.0, try again later
inline constexpr absl::Duration kCacheTtl = absl::Minutes(15);
inline constexpr int kVerifierThreadsMax = 16;

struct VerifyRequest {
  int64_t account_id = 0;
  std::string password_hash;  // "" for an unknown user or an account without a password
  std::string password;
  uint64_t cookie = 0;        // the submitter's
  bool low_priority = false;  // from an address that failed before: served after the others
};

class VerifySink {
 public:
  virtual ~VerifySink() = default;
  // OnVerified: called on a verifier thread.
  virtual void OnVerified(uint64_t cookie, bool ok) = 0;
};

class PasswordVerifier {
 public:
  // PasswordVerifier: `threads` workers; at most `cache_entries` cached credentials (0: no
  // cache).
  PasswordVerifier(int threads, size_t cache_entries);
  ~PasswordVerifier();
  void Start();
  void Stop();

  // Submit: queues a check. False when the queue is full or stopping (answer 454).
  bool Submit(VerifyRequest request, VerifySink* sink);

  uint64_t cache_hits() const;

 private:
  using Key = std::array<uint8_t, 32>;
  struct Entry {
    VerifyRequest request;
    VerifySink* sink;
  };
  void Work();
  bool Verify(const VerifyRequest& request);
  Key CacheKey(const VerifyRequest& request) const;

  const int threads_count_;
  const size_t cache_entries_max_;
  std::array<uint8_t, 32> cache_secret_{};
  std::string dummy_hash_;
  std::vector<std::thread> threads_;

  std::mutex mu_;                 // guards queue_, low_queue_ and stopping_
  std::condition_variable work_;  // a request was queued, or stopping_ was set
  std::deque<Entry> queue_;       // guarded by mu_
  std::deque<Entry> low_queue_;   // guarded by mu_; VerifyRequest::low_priority
  bool stopping_ = false;         // guarded by mu_

  mutable std::mutex cache_mu_;  // guards cache_, cache_order_ and cache_hits_
  absl::flat_hash_map<std::string, absl::Time> cache_;  // guarded by cache_mu_
  std::deque<std::string> cache_order_;                 // guarded by cache_mu_
  uint64_t cache_hits_ = 0;                             // guarded by cache_mu_
};

}  // namespace chute::auth
