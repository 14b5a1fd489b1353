#pragma once

// Backend: how a delivery worker hands a batch of messages to a destination
// (docs/architecture.md, Delivery). One implementation per file: Maildir (maildir.h), and one
// SMTP/LMTP client (smtp_client.h) that differs only in its greeting. The scheduler (queue.h)
// owns retries and dead-letters; a backend only tries once and says, per recipient, what
// happened.
//
// Asynchronous: every call is a task (io::Task) that the queue's connection slot awaits on its
// loop. The LMTP/SMTP client suspends while it waits for the network, so that one delivery
// I/O thread runs many connections; Maildir's work is blocking file I/O and never suspends, so
// each of its slots has a thread (and a loop) of its own.
//
// Threads: each connection slot owns its own Backend instance (made by a BackendFactory), so a
// backend needs no locks; the factory may be called from any thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "io/task.h"

namespace chute::delivery {

// Outcome of one recipient's attempt: 2xx settles it, 4xx (and timeouts, refused
// connections) is retried with backoff, 5xx goes to the dead-letter area.
enum class Outcome : uint8_t { kDelivered, kTransient, kPermanent };

// Disposition: where a recipient stands after an attempt, in delivery's own words (its log
// line's status=; the trace maps it to its own Status): delivered; deferred (retried with
// backoff); failed (a 5xx: permanent, to the dead-letter area); dead (gave up after
// give_up_after_s, to the dead-letter area).
enum class Disposition : uint8_t { kDelivered, kDeferred, kFailed, kDead };
absl::string_view DispositionName(Disposition disposition);

// RecipientResult: a DSN-style result: the outcome and the reply that decided it, as the
// remote server said it ("550 5.1.1 <bob@x>: user unknown") or as chute describes a local
// failure ("451 4.4.1 connect to 127.0.0.1:24: Connection refused").
struct RecipientResult {
  Outcome outcome = Outcome::kTransient;
  std::string reply;
  // target_down (a probe's kTransient only): no target could be asked at all (none could be
  // reached, or the connection broke or timed out), as opposed to a target's own answer.
  bool target_down = false;
};

// OutboundMessage: one message as a backend sees it.
struct OutboundMessage {
  std::string id;                           // the queue id: names Maildir files, logged
  int64_t received_unix_s = 0;              // when chute accepted it
  std::string sender;                       // envelope sender (may be empty: null sender)
  std::vector<std::string> recipients;      // the recipients to attempt now, byte for byte
  std::vector<uint32_t> recipient_indexes;  // each one's index in the original envelope
  // DSN (RFC 3461) as the client gave them: RET (0 none, 1 FULL, 2 HDRS), ENVID (xtext), and
  // per entry of `recipients` NOTIFY bits (0: none) and ORCPT ("" none). Passed on to a target
  // that offers DSN.
  uint8_t dsn_ret = 0;
  std::string envid;
  std::vector<uint8_t> notify;
  std::vector<std::string> orcpt;
  // The whole message as it is to be delivered: the headers chute added, then what the client
  // sent after DATA/BDAT, dot-unstuffed, CRLF line endings, without the terminating ".".
  std::string content;
  // Set when this is a redelivery after a restart: the backend must not create a second copy
  // of something an earlier run may have delivered (Maildir checks new/ and cur/).
  bool replayed = false;
  // Filled by the backend: exactly one per entry of `recipients`, in the same order.
  std::vector<RecipientResult> results;
  // Filled by a backend with several targets: the one it tried ("smtp:10.0.0.6:25"); empty:
  // the route's destination says where.
  std::string via;
  // Filled by the LMTP/SMTP backend: the target offered DSN, so the NOTIFY requests went to
  // it and it reports what follows itself (RFC 3461 §4.2).
  bool dsn_passed = false;
};

// MessageDone: told the index (in the batch) of a message whose results are final.
using MessageDone = std::function<void(size_t index)>;

class Backend {
 public:
  virtual ~Backend() = default;
  // Deliver: tries every message of `batch` once and fills each one's `results`. Never
  // throws, never leaves `results` short: a failure it cannot attribute to one recipient
  // (a refused connection, a timeout) is the same transient result for each. A backend that
  // finishes messages one by one (LMTP/SMTP) calls `done` for each as soon as its results are
  // final, so that the caller can settle it at once (a crash then redelivers less); `done`
  // may be null, and the caller settles after Deliver returns whatever it was not told of.
  // `batch` and `done` must outlive the task.
  virtual io::Task<void> Deliver(const std::vector<OutboundMessage*>& batch,
                                 const MessageDone& done) = 0;
  // CloseIdle: the slot has nothing to do at `now`; a backend with a pooled connection closes
  // it when it has been idle long enough (QUIT, then close).
  virtual io::Task<void> CloseIdle(absl::Time now);
  // Shutdown: the slot ends; a pooled connection is closed politely (QUIT).
  virtual io::Task<void> Shutdown();
};

using BackendFactory = std::function<std::unique_ptr<Backend>()>;

// DeliverNow: `backend.Deliver(batch, done)` run to its end on the calling thread's own loop
// (io::Loop::ForThisThread), for a caller that waits (tests, tools). Not from inside a task.
// CHECK-fails when the thread's loop cannot be made (io_uring is required for delivery).
void DeliverNow(Backend& backend, const std::vector<OutboundMessage*>& batch,
                const MessageDone& done = nullptr);

}  // namespace chute::delivery
