#pragma once

// The message trace (Exchange's Get-MessageTraceV2 for chute): what happened to each message,
// kept for [trace] retention_days in its own SQLite database (<data_dir>/trace.db), and
// searched by `chutectl trace`.
//
// Writing never slows acceptance: shards and delivery workers hand events to the Writer,
// whose own thread commits them to SQLite in batches (one transaction per batch, WAL,
// synchronous=NORMAL: no fsync per commit). The Writer's queue is bounded
// (kPendingEventsMax); when the disk cannot keep up, events are dropped and counted
// (chute_trace_events_dropped_total), never waited for. The trace is a record of what the
// spool and delivery did, not a second copy of their state: losing its last second in a crash
// loses no mail.
//
// Schema: messages (one row per accepted message), recipients (one per message and recipient,
// with its latest status and reply), events (every received/attempt/dead event, for the
// details of one message).

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "io/file.h"

namespace chute::db {
class Database;
}

namespace chute::trace {

// Status: a recipient's state as the trace shows it. pending: accepted, no attempt yet;
// deferred: the last attempt failed transiently and it will be retried; delivered: 2xx;
// failed: a permanent (5xx) refusal, dead-lettered; dead: given up after give_up_after_s or
// deleted by an operator, dead-lettered.
enum class Status : uint8_t { kPending, kDelivered, kDeferred, kFailed, kDead };

absl::string_view StatusName(Status status);
std::optional<Status> ParseStatus(absl::string_view name);

struct Event {
  // kNote: an event in a recipient's history that changes nothing of its state (a failure
  // report sent about it): `reply` is the detail, `target` the event's name.
  enum class Kind : uint8_t { kReceived, kAttempt, kNote };
  Kind kind = Kind::kReceived;
  int64_t time_us = 0;
  std::string queue_id;
  // kReceived
  std::string tenant;
  std::string account;
  std::string sender;
  std::string message_id;
  std::string client;
  std::vector<std::string> recipients;
  uint64_t size_bytes = 0;
  // kAttempt: one recipient's result
  std::string recipient;
  Status status = Status::kPending;
  std::string reply;   // the reply, or why it went to the dead letters
  std::string target;  // where delivery went: "maildir", "lmtp:host:port", ...
  uint32_t attempt = 0;
};

// Query: every field empty / unset matches all. Times are the message's reception time.
struct Query {
  std::string sender;
  std::string recipient;
  std::string message_id;
  std::string queue_id;
  std::optional<Status> status;
  int64_t from_us = 0;
  int64_t to_us = INT64_MAX;
  int64_t limit = 1000;
};

inline constexpr int64_t kQueryRowsMax = 5000;  // as Get-MessageTraceV2's -ResultSize

// Row: one message and recipient.
struct Row {
  int64_t received_us = 0;
  std::string queue_id;
  std::string message_id;
  std::string tenant;
  std::string account;
  std::string sender;
  std::string recipient;
  uint64_t size_bytes = 0;
  std::string client;
  Status status = Status::kPending;
  std::string reply;
  int64_t attempts = 0;
  int64_t updated_us = 0;
};

// EventRow: one event of a message (details).
struct EventRow {
  int64_t time_us = 0;
  std::string recipient;  // "" for received
  std::string event;      // "received", or the status after an attempt
  std::string detail;     // the reply, the target
};

// Store: the trace database. One per thread (SQLite connection); the Writer owns the
// server's, chutectl opens its own to read.
class Store {
 public:
  // Open: opens `path`, creating it (and its tables) when `create`. NotFound when it does not
  // exist and !create.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path, bool create);
  ~Store();

  // Append: writes `events` in one transaction.
  absl::Status Append(const std::vector<Event>& events);
  // Find: the rows matching `query`, newest first, at most query.limit (≤ kQueryRowsMax).
  absl::StatusOr<std::vector<Row>> Find(const Query& query);
  // Events: every event of the message `queue_id`, oldest first.
  absl::StatusOr<std::vector<EventRow>> Events(absl::string_view queue_id);
  // Prune: deletes up to `messages_max` messages received before `before_us` with their
  // recipients and events; returns how many messages went.
  absl::StatusOr<int64_t> Prune(int64_t before_us, int64_t messages_max);
  const std::string& path() const { return path_; }

 private:
  Store(std::unique_ptr<db::Database> db, std::string path);
  std::unique_ptr<db::Database> db_;
  std::string path_;
};

// Writer: the server's trace thread. Submit from any thread.
class Writer {
 public:
  // kPendingEventsMax: events waiting for the thread; beyond it Submit drops.
  static constexpr size_t kPendingEventsMax = 1 << 20;
  // kBatchEventsMax: events per transaction.
  static constexpr size_t kBatchEventsMax = 16384;

  Writer(std::unique_ptr<Store> store, int64_t retention_days);
  ~Writer();

  // Submit: hands `events` over (moved from; the vector is left empty). False when they were
  // dropped because the queue is at its bound.
  bool Submit(std::vector<Event>& events);
  // SetRetentionDays: applies a reloaded [trace] retention_days.
  void SetRetentionDays(int64_t days) { retention_days_.store(days); }
  // Stop: writes what is queued and joins the thread.
  void Stop();

  std::atomic<uint64_t> events_written{0};
  std::atomic<uint64_t> events_dropped{0};
  std::atomic<uint64_t> write_failures{0};
  std::atomic<uint64_t> messages_pruned{0};

 private:
  void Run();
  void PruneIfDue(int64_t now_us);
  // ReopenIfReplaced: a trace.db deleted or restored under the running server is opened (or
  // made) again before the next batch, instead of writing on into the unlinked file.
  void ReopenIfReplaced();

  std::unique_ptr<Store> store_;
  // The trace.db that store_ has open: a file deleted or restored under it is noticed
  // (writing on would go to a file nobody can read).
  io::WatchedFile file_;
  std::atomic<int64_t> retention_days_;
  // std::mutex, not absl::Mutex: Debian's abseil is not built for ThreadSanitizer.
  std::mutex mu_;  // guards pending_ and stopping_
  std::condition_variable wake_;
  std::vector<Event> pending_;  // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  int64_t next_prune_us_ = 0;   // Run's thread only
  std::thread thread_;
};

}  // namespace chute::trace
