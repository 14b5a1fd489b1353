#pragma once

// DeliveryQueue: the delivery stage's scheduler and worker pool (docs/architecture.md, Delivery).
//
// Shards hand over messages that are committed to the spool through one lock-free SPSC ring
// each (AddProducer/Notify); nothing on a shard's loop waits for delivery. Workers (their own
// threads, never a shard's) take batches of up to `batch_messages_max` ready messages, waiting
// up to `batch_delay` for a batch to fill, read each message's content back from its spool
// segment (page cache), and give the batch to their own Backend instance (Maildir, or the
// pooled LMTP/SMTP client: one connection per slot, so `workers` bounds the connections to
// the target). Slots are tasks (io::Task) on loops: an LMTP/SMTP route's slots share the
// delivery I/O threads' loops (QueueOptions::loops) with every other route's, and a Maildir
// route's slots, whose file I/O blocks, have a thread each. One queue per route (stage.h).
//
// Per recipient: 2xx settles it (its mark is written in place); 4xx, timeouts and refused
// connections are retried after retry_initial·2^(attempt-1), capped at retry_max, with ±10%
// jitter (scheduling is apart from the connections: a message waiting for its retry holds no
// worker); 5xx, or a transient failure older than give_up_after, goes to the dead-letter area
// (<dead_dir>/<id>.eml with the message and <id>.json with the reason and last reply,
// fsynced). A message is settled in the spool when no recipient is left pending.
//
// The scheduler state is behind one mutex (mu_), taken by a slot once per batch and by the
// admin thread for queue control; shards never take it (Notify wakes only a sleeping slot,
// at most once per committed group, by posting to its loop). No slot suspends holding it.
//
// Threads: AddProducer/Enqueue before Start from the main thread; Notify from the producer;
// control calls from any thread; Start/Stop from the main thread.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/histogram.h"
#include "base/spsc_ring.h"
#include "delivery/backend.h"
#include "io/loop.h"
#include "io/task.h"
#include "spool/spool.h"

namespace chute::trace {
class Writer;
}

namespace chute::delivery {

class Reporter;

// Messages a producer's ring holds; a full ring makes the shard keep the message until the
// next turn of its loop (and MAIL is refused first, by spool.messages_max). With several
// routes each of a shard's rings is smaller (ProducerRingCapacity), so that a shard's rings
// together take about what one does (1 MiB), whatever the number of routes.
inline constexpr size_t kProducerRingCapacity = 1 << 16;
inline constexpr size_t kProducerRingCapacityMin = 1 << 12;
size_t ProducerRingCapacity(size_t routes);
inline constexpr int kWorkersMax = 1024;
// A worker reads a batch's messages into memory: a batch holds at most this many content
// bytes (a single larger message still goes alone), so workers x this bounds the memory.
inline constexpr uint64_t kBatchBytesMax = 32 << 20;
// The longest a sleeping worker waits before looking again, whatever it expects.
inline constexpr absl::Duration kWorkerWaitMax = absl::Seconds(1);

// MessageShare: what the parts of one message (its recipients on different routes, one
// QueuedMessage per route) share: the record's one Settle, and every recipient's mark and
// reply, so that the last part to finish writes one dead letter for them all.
struct MessageShare {
  std::mutex mu;
  size_t parts_left = 0;             // guarded by mu
  std::vector<spool::Mark> marks;    // guarded by mu; per envelope recipient
  std::vector<std::string> replies;  // guarded by mu
  std::vector<std::string> routes;   // each recipient's route name (for the dead letter)
};

// QueuedMessage: a message (or, when its recipients go by several routes, its part for one
// route) waiting for delivery: its envelope, where its content is, which recipients are done,
// and its schedule.
struct QueuedMessage {
  std::string id;
  int64_t received_unix_us = 0;
  int64_t tenant_id = 0;
  int64_t account_id = 0;
  std::string sender;
  std::vector<std::string> recipients;
  std::vector<spool::Mark> marks;    // one per recipient
  std::vector<std::string> replies;  // the last reply per recipient ("" before any attempt)
  // DSN (RFC 3461, spool::Envelope): RET, ENVID, and per recipient NOTIFY and ORCPT (empty
  // vectors: none), passed to a target that offers DSN and read by failure reports.
  uint8_t dsn_ret = 0;
  std::string envid;
  std::vector<uint8_t> notify;
  std::vector<std::string> orcpt;
  uint8_t NotifyOf(size_t i) const { return i < notify.size() ? notify[i] : 0; }
  // The recipients a delay notice went out for (in memory: after a restart one may go again).
  std::vector<bool> delay_noticed;
  // A part: `mine` says which recipients are this part's (the others' marks and replies here
  // are not looked at); `share` is common to the parts. Both empty: the message's only part.
  std::vector<bool> mine;
  std::shared_ptr<MessageShare> share;
  bool Mine(size_t i) const { return mine.empty() || mine[i]; }
  // Content: in a spool record (`record`, through which it is read, marked and settled), or
  // (requeued from the dead-letter area: `record` refers to no segment) in `dead_path`.
  spool::RecordRef record;
  uint64_t content_bytes() const { return record.content_bytes; }
  std::string dead_path;
  bool replayed = false;
  // Scheduling (behind the queue's mutex).
  uint32_t attempts = 0;
  absl::Time next_attempt = absl::InfinitePast();
  absl::Time ready_since = absl::InfinitePast();
  bool held = false;
  bool in_flight = false;
  bool deleted = false;
  bool retry_now = false;  // `queue retry` while in flight: ready again when the attempt ends
};

// QueuedFrom: the one way a spool record becomes a message for delivery, whether committed
// just now or found unsettled at start-up (`replayed`): its envelope, its recipients' marks
// (empty: all pending) and where it is.
std::unique_ptr<QueuedMessage> QueuedFrom(spool::Envelope envelope, std::vector<spool::Mark> marks,
                                          spool::RecordRef where, bool replayed);

// QueueEntry: what `queue list` shows of a message (of its part on one route).
struct QueueEntry {
  std::string id;
  std::string route;
  int64_t received_unix_us = 0;
  int64_t tenant_id = 0;
  int64_t account_id = 0;
  std::string sender;
  std::vector<std::string> pending;  // recipients not yet settled
  std::vector<std::string> replies;  // their last replies
  uint32_t attempts = 0;
  absl::Time next_attempt;
  bool held = false;
  bool in_flight = false;
  uint64_t size_bytes = 0;
};

// DeadEntry: what `queue dead` shows of a dead letter (its <id>.json).
struct DeadEntry {
  std::string id;
  std::string json;
};

struct QueueCounters {
  std::atomic<uint64_t> recipients_delivered{0};
  std::atomic<uint64_t> recipients_deferred{0};
  std::atomic<uint64_t> recipients_dead{0};
  std::atomic<uint64_t> messages_settled{0};
  std::atomic<uint64_t> messages_dead{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> attempts{0};
  // How long the backend took over each batch (chute_delivery_seconds).
  LatencyHistogram batch_latency;
};

struct QueueOptions {
  BackendFactory backend;
  std::string route = "default";  // the route's name, in logs, the trace and queue listings
  std::string destination;        // for logs: "maildir:/var/lib/chute/mail", "lmtp:127.0.0.1:24"
  int workers = 4;                // connection slots (and so connections, for LMTP/SMTP)
  // The loops the slots run on, slot i on loops[i % size] (they outlive the queue; each runs
  // until the queue has stopped). Empty: each slot has a thread and loop of its own (Maildir,
  // whose backend blocks).
  std::vector<io::Loop*> loops;
  size_t batch_messages_max = 64;
  absl::Duration batch_delay = absl::Milliseconds(2);
  absl::Duration retry_initial = absl::Seconds(60);
  absl::Duration retry_max = absl::Seconds(3600);
  absl::Duration give_up_after = absl::Hours(48);
  // A deferred recipient whose RCPT asked NOTIFY=DELAY gets one delay notice once its message
  // is this old (Reporter::OnDelayed); zero: never.
  absl::Duration delay_notice_after = absl::Hours(4);
  // Whether a 2xx from the backend is final delivery (Maildir, LMTP: "delivered") or a relay
  // (SMTP: "relayed"), for NOTIFY=SUCCESS notices.
  bool final_delivery = true;
  std::string dead_dir;
  // The spool's gauges, for a requeued dead letter (SpoolGauges::AddOutside); records are
  // settled through their RecordRef, which counts them out itself.
  spool::SpoolGauges* gauges = nullptr;
  // Set by Stop() to the end of the drain (Unix ms); backends that wait on the network share
  // it (SmtpClientOptions::stop_at_unix_ms) so that no wait outlasts the drain.
  std::shared_ptr<std::atomic<int64_t>> stop_at_unix_ms;
  // The message trace, fed every delivery result (null: no trace).
  trace::Writer* trace = nullptr;
  // Told of every message finished with recipients given up, to send a failure report (null:
  // none).
  Reporter* reporter = nullptr;
};

// The dead-letter area (<dead_dir>/<id>.eml and <id>.json), common to every route's queue.
// ListDeadLetters: what `queue dead` shows; CountDeadLetters: how many (for metrics).
std::vector<DeadEntry> ListDeadLetters(const std::string& dead_dir);
size_t CountDeadLetters(const std::string& dead_dir);
// ReadDeadLetter: the dead letter `id` as a message to deliver again (its dead recipients,
// all pending; received now, so that give_up_after starts again). InvalidArgument unless `id`
// is a queue id (spool::IsQueueId), checked before any file is named by it; NotFound and
// DataLoss (a damaged dead letter) say what went wrong without a path, which the log line has:
// the message goes to admin clients.
absl::StatusOr<std::unique_ptr<QueuedMessage>> ReadDeadLetter(const std::string& dead_dir,
                                                              const std::string& id);

// IsoUtc: "2026-11-27T08:00:00Z", the time format of dead letters and queue listings.
std::string IsoUtc(absl::Time t);

// RetryDelay: the backoff before attempt `attempts + 1` after `attempts` failed ones, without
// jitter: initial·2^(attempts-1), capped at `max`.
absl::Duration RetryDelay(uint32_t attempts, absl::Duration initial, absl::Duration max);

class DeliveryQueue {
 public:
  explicit DeliveryQueue(QueueOptions options);
  ~DeliveryQueue();

  using Ring = SpscRing<std::unique_ptr<QueuedMessage>>;
  // AddProducer: a ring of `capacity` (a power of two) for one producer (a shard). Before
  // Start; the queue owns it.
  Ring* AddProducer(size_t capacity = kProducerRingCapacity);
  // Notify: the producer pushed; wakes a sleeping worker. Producer's thread; lock-free unless
  // a worker sleeps.
  void Notify();
  // Enqueue: adds a message directly (replay at start-up, requeue). Any thread.
  void Enqueue(std::unique_ptr<QueuedMessage> message);

  void Start();
  // Stop: workers deliver what is ready now (not future retries) for at most `drain`, then
  // end; what is still queued stays in the spool for the next start. RequestStop and Join
  // are its two halves (so that several queues drain at once).
  void Stop(absl::Duration drain = absl::ZeroDuration());
  void RequestStop(absl::Duration drain);
  void Join();

  // Queue control (chutectl queue, through the admin listener). Any thread. NotFound when no
  // queued message (or dead letter) has that id.
  std::vector<QueueEntry> List();
  absl::StatusOr<QueueEntry> Show(const std::string& id);
  absl::Status Retry(const std::string& id);  // attempt now
  size_t RetryAll();
  absl::Status Hold(const std::string& id);
  absl::Status Release(const std::string& id);
  absl::Status Delete(const std::string& id);  // dropped for good, logged
  // Contains: whether a message (or part) with this id is queued here.
  bool Contains(const std::string& id);

  size_t queued();
  // OldestReceivedUnixUs: when the oldest message in the queue was accepted (0 when empty).
  // O(queued); for metrics.
  int64_t OldestReceivedUnixUs();
  const QueueCounters& counters() const { return counters_; }
  const std::string& destination() const { return options_.destination; }
  const std::string& route() const { return options_.route; }

 private:
  struct Attempt;
  // Slot: one connection slot, a task on `loop` with a Backend of its own (RunSlot).
  struct Slot {
    io::Loop* loop = nullptr;
    io::Waiter waiter;    // where the slot sleeps; its loop's thread only
    bool asleep = false;  // guarded by mu_: it is in sleepers_
  };
  io::Task<void> RunSlot(Slot* slot);
  // WakeOne, WakeAll, Unlist, Wake: with mu_ held. WakeOne: a sleeping slot, if any, looks
  // for work; Unlist: a slot that woke by itself leaves sleepers_.
  void WakeOne();
  void WakeAll();
  void Unlist(Slot* slot);
  void Wake(Slot* slot);
  // DrainProducers, Insert, PromoteDue, TakeBatch, NextWake, Reschedule, Find and MakeReady:
  // with mu_ held.
  void DrainProducers();
  void Insert(std::unique_ptr<QueuedMessage> message, absl::Time now);
  void PromoteDue(absl::Time now);
  bool TakeBatch(absl::Time now, std::vector<QueuedMessage*>* batch);
  absl::Time NextWake(absl::Time now);
  io::Task<void> Attempt(Backend& backend, const std::vector<QueuedMessage*>& batch);
  // Conclude: after an attempt (no lock held): marks, dead letters and settling; returns
  // whether the message is finished.
  bool Conclude(QueuedMessage& message, const OutboundMessage& out, bool unreadable,
                absl::Time now);
  void Reschedule(QueuedMessage* message, bool finished, absl::Time now);
  // WriteDeadLetter: <id>.eml and <id>.json with every recipient `marks` says is dead.
  absl::Status WriteDeadLetter(const QueuedMessage& message, const std::vector<spool::Mark>& marks,
                               const std::vector<std::string>& replies, absl::string_view content,
                               absl::Time now);
  // Report: one log line and one trace event per recipient attempted.
  void Report(const QueuedMessage& message, const OutboundMessage& out,
              const std::vector<spool::Mark>& marks, const std::vector<std::string>& replies,
              uint32_t attempts, absl::Time now);
  // Settle: the message is done with (`dead_again`: some recipient of it is dead now).
  void Settle(QueuedMessage& message, bool dead_again);
  // Drop: a deleted part lets go of its recipients (its share's last part settles).
  void Drop(QueuedMessage& message);
  QueueEntry EntryFor(const QueuedMessage& message) const;
  QueuedMessage* Find(const std::string& id);
  void MakeReady(QueuedMessage* message, absl::Time now);

  const QueueOptions options_;
  const std::string trace_target_;  // "<route> <destination>"
  QueueCounters counters_;
  std::vector<std::unique_ptr<Ring>> producers_;
  std::vector<std::unique_ptr<Slot>> slots_;                  // from Start to Join
  std::vector<std::unique_ptr<io::LoopThread>> own_threads_;  // no options_.loops: one per slot
  io::RemoteWakes wakes_;         // a sleeping slot woken from another thread (Join waits for them)
  std::atomic<int> sleeping_{0};  // sleepers_.size()

  // std::mutex, not absl::Mutex: Debian's abseil is not built for ThreadSanitizer.
  // mu_ guards stopping_, drain_deadline_, messages_, ready_ and scheduled_ (and the queue
  // control fields of each QueuedMessage; see Conclude).
  std::mutex mu_;
  std::condition_variable done_;  // Join: running_ went down
  std::vector<Slot*> sleepers_;   // guarded by mu_: slots asleep, waiting for work
  int running_ = 0;               // guarded by mu_: slots started and not ended
  bool stopping_ = false;         // guarded by mu_
  absl::Time drain_deadline_ = absl::InfiniteFuture();                         // guarded by mu_
  absl::flat_hash_map<std::string, std::unique_ptr<QueuedMessage>> messages_;  // guarded by mu_
  std::deque<QueuedMessage*> ready_;                                           // guarded by mu_
  std::set<std::pair<absl::Time, QueuedMessage*>> scheduled_;                  // guarded by mu_
};

}  // namespace chute::delivery
