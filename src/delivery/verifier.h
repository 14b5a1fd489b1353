#pragma once

// RecipientVerifier: recipient verification at RCPT for one LMTP/SMTP route
// (docs/configuration.md, "Recipient verification"; docs/architecture.md, Delivery routes).
//
// A shard asks Cached() first, on its own thread: an address probed lately is answered from
// the cache (positive for verify_positive_s, negative for verify_negative_s) without a wait.
// Otherwise it Submit()s the address with its connection's cookie and the answer comes back
// later to its ProbeSink (on the verifier's loop thread; the shard hands it over through its
// mailbox). The verifier is one task (Run) on a delivery I/O loop (VerifierOptions::loop, shared
// with the delivery connections; none: a thread and loop of its own) that probes one address at
// a time over its own pooled connection to the route's targets (SmtpClient::Probe: MAIL
// FROM:<>, RCPT, RSET), so a burst of new addresses costs one probe per distinct address
// (addresses waiting already are not asked twice) and never more than one connection per
// route. An address the target could not be asked about is not cached.
//
// A route that is down is not asked again and again: when a probe finds no target it can ask
// (RecipientResult::target_down: none reachable, or the connection broke or timed out), every
// address waiting gets that answer too, and so does every address submitted for `down_hold`
// after (verify_timeout_s), at once. Otherwise a message to 50 new addresses behind a target
// that black-holes connections would wait 50 times verify_timeout_s at RCPT.
//
// Bounds: kVerifyQueueMax addresses wait at most (past it, and once stopping, Submit answers
// kUnreachable at once); the cache keeps kVerifyCacheEntriesMax addresses (past it, the
// expired go, then all). Every Submit gets exactly one answer.
//
// Threads: Cached/Submit from any thread (the shards); Start/Stop from the main thread. The
// task is woken by a post to its loop (never while it holds mu_ across a wait: it holds none).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "delivery/smtp_client.h"
#include "io/loop.h"
#include "io/task.h"

namespace chute::delivery {

inline constexpr size_t kVerifyQueueMax = 10000;
inline constexpr size_t kVerifyCacheEntriesMax = 200000;

struct RecipientVerdict {
  enum class Kind : uint8_t { kExists, kUnknown, kUnreachable };
  Kind kind = Kind::kUnreachable;
  // kUnknown: the target's refusal ("550 5.1.1 <x@y>: User unknown"); kUnreachable: why it
  // could not be asked ("451 4.4.1 connect to 127.0.0.1:24: Connection refused").
  std::string reply;
  bool cached = false;  // answered from the cache
};

class ProbeSink {
 public:
  virtual ~ProbeSink() = default;
  // OnProbed: the answer to Submit(address, cookie, this), on the verifier's thread (or on the
  // submitting thread, when it could not be queued).
  virtual void OnProbed(uint64_t cookie, RecipientVerdict verdict) = 0;
};

struct VerifierCounters {
  std::atomic<uint64_t> cache_hits{0};
  std::atomic<uint64_t> probes_exists{0};
  std::atomic<uint64_t> probes_unknown{0};
  std::atomic<uint64_t> probes_unreachable{0};  // including refused submissions
};

struct VerifierOptions {
  std::string route;
  SmtpClientMaker client;  // the probe connection's client (io_timeout: verify_timeout_s)
  absl::Duration positive = absl::Seconds(3600);
  absl::Duration negative = absl::Seconds(300);
  absl::Duration idle_close = absl::Seconds(30);  // the probe connection is closed after this
  // down_hold: after a probe that found the route down, how long addresses are answered
  // kUnreachable without a probe (verify_timeout_s).
  absl::Duration down_hold = absl::Seconds(10);
  // The loop the verifier's task runs on (it outlives the verifier); null: a thread of its own.
  io::Loop* loop = nullptr;
};

class RecipientVerifier {
 public:
  explicit RecipientVerifier(VerifierOptions options);
  ~RecipientVerifier();

  void Start();
  // Stop: what waits is answered kUnreachable, the probe under way finishes (its client's
  // timeouts bound it), the task ends (and its own thread, if it has one).
  void Stop();

  // Cached: the cached verdict on `address` at `now`, if any.
  std::optional<RecipientVerdict> Cached(absl::string_view address, absl::Time now);
  // Submit: probes `address`; the answer goes to `sink` (see ProbeSink).
  void Submit(const std::string& address, uint64_t cookie, ProbeSink* sink);

  const VerifierCounters& counters() const { return counters_; }
  const std::string& route() const { return options_.route; }

 private:
  struct Waiter {
    uint64_t cookie;
    ProbeSink* sink;
  };
  struct Entry {
    RecipientVerdict verdict;
    absl::Time expires;
  };
  io::Task<void> Run();
  // Probe: one address, answered to everyone waiting for it.
  io::Task<void> Probe(SmtpClient& client, std::string address);
  void Remember(const std::string& address, const RecipientVerdict& verdict, absl::Time now);
  // WakeLocked: with mu_ held: the task, if asleep, looks again.
  void WakeLocked();

  const VerifierOptions options_;
  VerifierCounters counters_;
  std::unique_ptr<io::LoopThread> own_thread_;  // options_.loop null: the task's thread
  io::Loop* loop_ = nullptr;                    // where the task runs
  io::Waiter waiter_;                           // where it sleeps; the loop's thread only
  io::RemoteWakes wakes_;                       // wakes from the shards (Stop waits for them)

  // std::mutex, not absl::Mutex: Debian's abseil is not built for ThreadSanitizer.
  std::mutex mu_;                 // guards everything below
  std::condition_variable done_;  // Stop: running_ went down
  bool running_ = false;          // the task was started and has not ended
  bool asleep_ = false;           // it waits on waiter_ for work
  bool stopping_ = false;
  absl::Time down_until_ = absl::InfinitePast();  // the route was found down: no probe before
  std::string down_reply_;                        // why, as the last probe found it
  std::deque<std::string> queue_;                 // addresses to probe
  absl::flat_hash_map<std::string, std::vector<Waiter>> waiting_;  // by address
  absl::flat_hash_map<std::string, Entry> cache_;
};

}  // namespace chute::delivery
