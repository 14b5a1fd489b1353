// trace.cc: the message trace: its SQLite store, its queries, and the thread that writes it.

#include "trace/trace.h"

#include <time.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "db/sqlite.h"
#include "io/file.h"

namespace chute::trace {
namespace {

constexpr int64_t kMicrosPerDay = int64_t{86400} * 1000 * 1000;
// Pruning runs at most this often, a bounded number of messages at a time, so that a large
// backlog of old rows never holds the writer for long.
constexpr int64_t kPruneIntervalUs = int64_t{600} * 1000 * 1000;
constexpr int64_t kPruneMessagesPerPass = 20000;
// The writer waits this long for more events before committing a small batch.
constexpr absl::Duration kBatchDelay = absl::Milliseconds(200);

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS messages (
  queue_id TEXT PRIMARY KEY,
  received_us INTEGER NOT NULL,
  tenant TEXT NOT NULL,
  account TEXT NOT NULL,
  sender TEXT NOT NULL,
  message_id TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  client TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_received ON messages(received_us);
CREATE INDEX IF NOT EXISTS messages_sender ON messages(sender COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS messages_message_id ON messages(message_id);
CREATE TABLE IF NOT EXISTS recipients (
  queue_id TEXT NOT NULL,
  recipient TEXT NOT NULL,
  status TEXT NOT NULL,
  reply TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0,
  updated_us INTEGER NOT NULL,
  PRIMARY KEY (queue_id, recipient)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_recipient ON recipients(recipient COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS events (
  queue_id TEXT NOT NULL,
  time_us INTEGER NOT NULL,
  recipient TEXT NOT NULL,
  event TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_queue_id ON events(queue_id);
)sql";

int64_t NowUs() { return absl::ToUnixMicros(absl::Now()); }

}  // namespace

absl::string_view StatusName(Status status) {
  switch (status) {
    case Status::kPending:
      return "pending";
    case Status::kDelivered:
      return "delivered";
    case Status::kDeferred:
      return "deferred";
    case Status::kFailed:
      return "failed";
    case Status::kDead:
      return "dead";
  }
  return "pending";
}

std::optional<Status> ParseStatus(absl::string_view name) {
  for (Status status :
       {Status::kPending, Status::kDelivered, Status::kDeferred, Status::kFailed, Status::kDead}) {
    if (StatusName(status) == name) {
      return status;
    }
  }
  return std::nullopt;
}

Store::Store(std::unique_ptr<db::Database> db, std::string path)
    : db_(std::move(db)), path_(std::move(path)) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path, bool create) {
  absl::StatusOr<std::unique_ptr<db::Database>> db = db::Database::Open(path, create);
  if (!db.ok()) {
    return db.status();
  }
  // The trace is history, not mail: a crash may lose its last commits (WAL with NORMAL syncs
  // at checkpoints only), never corrupt it.
  absl::Status status = (*db)->Exec("PRAGMA synchronous=NORMAL;");
  if (status.ok() && create) {
    status = (*db)->Exec(kSchema);
  }
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  }
  return std::unique_ptr<Store>(new Store(*std::move(db), path));
}

absl::Status Store::Append(const std::vector<Event>& events) {
  absl::Status status = db_->Exec("BEGIN");
  if (!status.ok()) {
    return status;
  }
  absl::StatusOr<db::Statement> message =
      db_->Prepare("INSERT OR IGNORE INTO messages VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  absl::StatusOr<db::Statement> recipient = db_->Prepare(
      "INSERT OR IGNORE INTO recipients (queue_id, recipient, status, updated_us) "
      "VALUES (?1, ?2, 'pending', ?3)");
  // A delivery result may arrive before its message's received event (shards hand theirs over
  // once a second; delivery is faster): it creates the row, and the received event's
  // INSERT OR IGNORE then leaves the newer status alone. Out-of-order results keep the newest.
  absl::StatusOr<db::Statement> update = db_->Prepare(
      "INSERT INTO recipients (queue_id, recipient, status, reply, attempts, updated_us) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (queue_id, recipient) DO UPDATE SET "
      "status = excluded.status, reply = excluded.reply, "
      "attempts = MAX(recipients.attempts, excluded.attempts), updated_us = excluded.updated_us "
      "WHERE excluded.updated_us >= recipients.updated_us");
  absl::StatusOr<db::Statement> event =
      db_->Prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const absl::Status& prepared :
       {message.status(), recipient.status(), update.status(), event.status()}) {
    if (!prepared.ok()) {
      (void)db_->Exec("ROLLBACK");
      return prepared;
    }
  }
  for (const Event& e : events) {
    if (e.kind == Event::Kind::kReceived) {
      message->Bind(1, e.queue_id).Bind(2, e.time_us).Bind(3, e.tenant).Bind(4, e.account);
      message->Bind(5, e.sender).Bind(6, e.message_id);
      message->Bind(7, static_cast<int64_t>(e.size_bytes)).Bind(8, e.client);
      status.Update(message->Run());
      message->Reset();
      for (const std::string& to : e.recipients) {
        recipient->Bind(1, e.queue_id).Bind(2, to).Bind(3, e.time_us);
        status.Update(recipient->Run());
        recipient->Reset();
      }
      event->Bind(1, e.queue_id).Bind(2, e.time_us).Bind(3, "").Bind(4, "received");
      event->Bind(5, absl::StrCat("from ", e.client, " as ", e.account));
    } else if (e.kind == Event::Kind::kNote) {
      event->Bind(1, e.queue_id).Bind(2, e.time_us).Bind(3, e.recipient);
      event->Bind(4, e.target).Bind(5, e.reply);
    } else {
      update->Bind(1, e.queue_id).Bind(2, e.recipient).Bind(3, StatusName(e.status));
      update->Bind(4, e.reply).Bind(5, static_cast<int64_t>(e.attempt)).Bind(6, e.time_us);
      status.Update(update->Run());
      update->Reset();
      event->Bind(1, e.queue_id).Bind(2, e.time_us).Bind(3, e.recipient);
      event->Bind(4, StatusName(e.status));
      event->Bind(5, e.target.empty() ? e.reply : absl::StrCat(e.target, ": ", e.reply));
    }
    status.Update(event->Run());
    event->Reset();
    if (!status.ok()) {
      break;
    }
  }
  if (!status.ok()) {
    (void)db_->Exec("ROLLBACK");
    return status;
  }
  return db_->Exec("COMMIT");
}

absl::StatusOr<std::vector<Row>> Store::Find(const Query& query) {
  std::string sql =
      "SELECT m.received_us, m.queue_id, m.message_id, m.tenant, m.account, m.sender, "
      "r.recipient, m.size_bytes, m.client, r.status, r.reply, r.attempts, r.updated_us "
      "FROM messages m JOIN recipients r ON r.queue_id = m.queue_id "
      "WHERE m.received_us >= ?1 AND m.received_us <= ?2";
  if (!query.sender.empty()) {
    sql += " AND m.sender = ?3 COLLATE NOCASE";
  }
  if (!query.recipient.empty()) {
    sql += " AND r.recipient = ?4 COLLATE NOCASE";
  }
  if (!query.message_id.empty()) {
    sql += " AND (m.message_id = ?5 OR m.message_id = '<' || ?5 || '>')";
  }
  if (!query.queue_id.empty()) {
    sql += " AND m.queue_id = ?6";
  }
  if (query.status.has_value()) {
    sql += " AND r.status = ?7";
  }
  sql += " ORDER BY m.received_us DESC, m.queue_id, r.recipient LIMIT ?8";
  absl::StatusOr<db::Statement> stmt = db_->Prepare(sql);
  if (!stmt.ok()) {
    return stmt.status();
  }
  stmt->Bind(1, query.from_us).Bind(2, query.to_us);
  if (!query.sender.empty()) {
    stmt->Bind(3, query.sender);
  }
  if (!query.recipient.empty()) {
    stmt->Bind(4, query.recipient);
  }
  if (!query.message_id.empty()) {
    stmt->Bind(5, query.message_id);
  }
  if (!query.queue_id.empty()) {
    stmt->Bind(6, query.queue_id);
  }
  if (query.status.has_value()) {
    stmt->Bind(7, StatusName(*query.status));
  }
  stmt->Bind(8, std::clamp<int64_t>(query.limit, 1, kQueryRowsMax));
  std::vector<Row> rows;
  while (true) {
    absl::StatusOr<bool> more = stmt->Step();
    if (!more.ok()) {
      return more.status();
    }
    if (!*more) {
      return rows;
    }
    Row row;
    row.received_us = stmt->Int(0);
    row.queue_id = stmt->Text(1);
    row.message_id = stmt->Text(2);
    row.tenant = stmt->Text(3);
    row.account = stmt->Text(4);
    row.sender = stmt->Text(5);
    row.recipient = stmt->Text(6);
    row.size_bytes = static_cast<uint64_t>(stmt->Int(7));
    row.client = stmt->Text(8);
    row.status = ParseStatus(stmt->Text(9)).value_or(Status::kPending);
    row.reply = stmt->Text(10);
    row.attempts = stmt->Int(11);
    row.updated_us = stmt->Int(12);
    rows.push_back(std::move(row));
  }
}

absl::StatusOr<std::vector<EventRow>> Store::Events(absl::string_view queue_id) {
  absl::StatusOr<db::Statement> stmt = db_->Prepare(
      "SELECT time_us, recipient, event, detail FROM events WHERE queue_id = ?1 "
      "ORDER BY time_us, rowid");
  if (!stmt.ok()) {
    return stmt.status();
  }
  stmt->Bind(1, queue_id);
  std::vector<EventRow> rows;
  while (true) {
    absl::StatusOr<bool> more = stmt->Step();
    if (!more.ok()) {
      return more.status();
    }
    if (!*more) {
      return rows;
    }
    rows.push_back(EventRow{stmt->Int(0), stmt->Text(1), stmt->Text(2), stmt->Text(3)});
  }
}

absl::StatusOr<int64_t> Store::Prune(int64_t before_us, int64_t messages_max) {
  absl::Status status = db_->Exec("BEGIN");
  if (!status.ok()) {
    return status;
  }
  // The oldest messages first; their recipients and events go with them.
  absl::StatusOr<db::Statement> mark = db_->Prepare(
      "CREATE TEMP TABLE IF NOT EXISTS doomed (queue_id TEXT PRIMARY KEY) WITHOUT ROWID");
  if (mark.ok()) {
    status.Update(mark->Run());
  } else {
    status.Update(mark.status());
  }
  status.Update(db_->Exec("DELETE FROM doomed"));
  absl::StatusOr<db::Statement> pick = db_->Prepare(
      "INSERT INTO doomed SELECT queue_id FROM messages WHERE received_us < ?1 "
      "ORDER BY received_us LIMIT ?2");
  if (pick.ok()) {
    pick->Bind(1, before_us).Bind(2, messages_max);
    status.Update(pick->Run());
  } else {
    status.Update(pick.status());
  }
  int64_t pruned = 0;
  if (status.ok()) {
    status.Update(
        db_->Exec("DELETE FROM events WHERE queue_id IN (SELECT queue_id FROM doomed);"
                  "DELETE FROM recipients WHERE queue_id IN (SELECT queue_id FROM doomed);"
                  "DELETE FROM messages WHERE queue_id IN (SELECT queue_id FROM doomed);"));
    pruned = db_->Changes();
  }
  if (!status.ok()) {
    (void)db_->Exec("ROLLBACK");
    return status;
  }
  status = db_->Exec("COMMIT");
  if (!status.ok()) {
    return status;
  }
  return pruned;
}

Writer::Writer(std::unique_ptr<Store> store, int64_t retention_days)
    : store_(std::move(store)), file_(store_->path()), retention_days_(retention_days) {
  thread_ = std::thread([this] {
    NameThisThread("chute-trace");
    Run();
  });
}

Writer::~Writer() { Stop(); }

bool Writer::Submit(std::vector<Event>& events) {
  if (events.empty()) {
    return true;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_.size() + events.size() > kPendingEventsMax) {
    events_dropped.fetch_add(events.size(), std::memory_order_relaxed);
    events.clear();
    return false;
  }
  if (pending_.empty()) {
    pending_ = std::move(events);
    wake_.notify_one();
  } else {
    std::move(events.begin(), events.end(), std::back_inserter(pending_));
  }
  events.clear();
  return true;
}

void Writer::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
    wake_.notify_one();
  }
  thread_.join();
}

void Writer::Run() {
  std::vector<Event> batch;
  while (true) {
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // A quiet minute ends the wait with nothing pending: then look at pruning.
      wake_.wait_for(lock, std::chrono::seconds(60),
                     [this] { return !pending_.empty() || stopping_; });
      stopping = stopping_;
      batch.swap(pending_);
    }
    ReopenIfReplaced();
    for (size_t begin = 0; begin < batch.size(); begin += kBatchEventsMax) {
      std::vector<Event> part;
      size_t end = std::min(batch.size(), begin + kBatchEventsMax);
      if (begin == 0 && end == batch.size()) {
        part.swap(batch);
      } else {
        part.assign(std::make_move_iterator(batch.begin() + begin),
                    std::make_move_iterator(batch.begin() + end));
      }
      absl::Status status = store_->Append(part);
      if (status.ok()) {
        events_written.fetch_add(part.size(), std::memory_order_relaxed);
      } else {
        write_failures.fetch_add(1, std::memory_order_relaxed);
        events_dropped.fetch_add(part.size(), std::memory_order_relaxed);
        LOG_ERROR_EVERY(60, "message trace: %d event(s) not written: %s",
                        static_cast<int>(part.size()), status.message());
      }
    }
    batch.clear();
    PruneIfDue(NowUs());
    if (stopping) {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_.empty()) {
        return;
      }
      continue;
    }
    // Let a batch gather: fewer, larger transactions.
    absl::SleepFor(kBatchDelay);
  }
}

void Writer::ReopenIfReplaced() {
  auto reopen = [&](const io::WatchedFile::Found&) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Store>> fresh = Store::Open(file_.path(), true);
    if (!fresh.ok()) {
      return fresh.status();
    }
    store_ = *std::move(fresh);
    return absl::OkStatus();
  };
  absl::StatusOr<bool> reopened = file_.ReopenIfReplaced(reopen);
  if (!reopened.ok()) {
    LOG_ERROR_EVERY(60, "message trace: %s was removed or replaced and cannot be made again: %s",
                    file_.path(), reopened.status().message());
    return;  // the old file takes the events meanwhile; the next batch tries again
  }
  if (*reopened) {
    LOG_WARNING("message trace: %s was removed or replaced; writing to it anew", file_.path());
  }
}

void Writer::PruneIfDue(int64_t now_us) {
  if (now_us < next_prune_us_) {
    return;
  }
  next_prune_us_ = now_us + kPruneIntervalUs;
  int64_t before_us = now_us - retention_days_.load() * kMicrosPerDay;
  absl::StatusOr<int64_t> pruned = store_->Prune(before_us, kPruneMessagesPerPass);
  if (!pruned.ok()) {
    LOG_ERROR_EVERY(3600, "message trace: pruning failed: %s", pruned.status().message());
    return;
  }
  messages_pruned.fetch_add(static_cast<uint64_t>(*pruned), std::memory_order_relaxed);
  if (*pruned == kPruneMessagesPerPass) {
    next_prune_us_ = now_us;  // more to do: again after the next batch
  }
}

}  // namespace chute::trace
