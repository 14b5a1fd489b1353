// verifier.cc: checks passwords on the verifier threads, behind a keyed-hash credential cache.

#include "auth/verifier.h"

#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include "absl/time/clock.h"
#include "auth/password.h"
#include "base/check.h"
#include "base/log.h"

namespace chute::auth {

PasswordVerifier::PasswordVerifier(int threads, size_t cache_entries)
    : threads_count_(threads), cache_entries_max_(cache_entries) {
  CHECK(threads_count_ > 0 && threads_count_ <= kVerifierThreadsMax);
  CHECK(getrandom(cache_secret_.data(), cache_secret_.size(), 0) ==
        static_cast<ssize_t>(cache_secret_.size()));
  absl::StatusOr<std::string> dummy = HashPassword("chute dummy password for unknown users");
  CHECK_MSG(dummy.ok(), "cannot hash the dummy password");
  dummy_hash_ = *dummy;
}

PasswordVerifier::~PasswordVerifier() { Stop(); }

void PasswordVerifier::Start() {
  for (int i = 0; i < threads_count_; ++i) {
    threads_.emplace_back([this] {
      NameThisThread("chute-verify");
      Work();
    });
  }
}

void PasswordVerifier::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_all();
  for (std::thread& thread : threads_) {
    thread.join();
  }
  threads_.clear();
}

bool PasswordVerifier::Submit(VerifyRequest request, VerifySink* sink) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() + low_queue_.size() >= kVerifyQueueMax) {
      return false;
    }
    bool low = request.low_priority;
    (low ? low_queue_ : queue_).push_back(Entry{std::move(request), sink});
  }
  work_.notify_one();
  return true;
}

uint64_t PasswordVerifier::cache_hits() const {
  std::lock_guard<std::mutex> lock(cache_mu_);
  return cache_hits_;
}

PasswordVerifier::Key PasswordVerifier::CacheKey(const VerifyRequest& request) const {
  HMAC_CTX ctx;
  HMAC_CTX_init(&ctx);
  HMAC_Init_ex(&ctx, cache_secret_.data(), cache_secret_.size(), EVP_sha256(), nullptr);
  HMAC_Update(&ctx, reinterpret_cast<const uint8_t*>(&request.account_id),
              sizeof(request.account_id));
  uint64_t hash_bytes = request.password_hash.size();
  HMAC_Update(&ctx, reinterpret_cast<const uint8_t*>(&hash_bytes), sizeof(hash_bytes));
  HMAC_Update(&ctx, reinterpret_cast<const uint8_t*>(request.password_hash.data()),
              request.password_hash.size());
  HMAC_Update(&ctx, reinterpret_cast<const uint8_t*>(request.password.data()),
              request.password.size());
  Key key;
  unsigned int length = 0;
  HMAC_Final(&ctx, key.data(), &length);
  HMAC_CTX_cleanup(&ctx);
  return key;
}

bool PasswordVerifier::Verify(const VerifyRequest& request) {
  if (request.password_hash.empty()) {
    VerifyPassword(dummy_hash_, request.password);  // the same work as a real check
    return false;
  }
  std::string key;
  absl::Time now = absl::Now();
  if (cache_entries_max_ > 0) {
    Key raw = CacheKey(request);
    key.assign(reinterpret_cast<const char*>(raw.data()), raw.size());
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && it->second > now) {
      ++cache_hits_;
      return true;
    }
  }
  if (!VerifyPassword(request.password_hash, request.password)) {
    return false;  // failures are never cached
  }
  if (cache_entries_max_ > 0) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= cache_entries_max_) {
      cache_.erase(cache_order_.front());  // the oldest goes first
      cache_order_.pop_front();
    }
    if (cache_.insert_or_assign(key, now + kCacheTtl).second) {
      cache_order_.push_back(key);
    }
  }
  return true;
}

void PasswordVerifier::Work() {
  while (true) {
    Entry entry;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [this] { return stopping_ || !queue_.empty() || !low_queue_.empty(); });
      std::deque<Entry>& from = !queue_.empty() ? queue_ : low_queue_;
      if (from.empty()) {
        return;
      }
      entry = std::move(from.front());
      from.pop_front();
    }
    bool ok = Verify(entry.request);
    entry.sink->OnVerified(entry.request.cookie, ok);
  }
}

}  // namespace chute::auth
