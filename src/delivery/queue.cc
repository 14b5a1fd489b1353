// queue.cc: schedules delivery: batches, workers, retries with backoff, dead letters, control.

#include "delivery/queue.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/check.h"
#include "base/log.h"
#include "base/memory.h"
#include "base/status_macros.h"
#include "delivery/report.h"
#include "io/file.h"
#include "io/loop.h"
#include "io/ring.h"
#include "smtp/parser.h"
#include "spool/group_commit.h"
#include "trace/trace.h"

namespace chute::delivery {
namespace {

// TraceStatus: a recipient's disposition as the message trace names it.
trace::Status TraceStatus(Disposition disposition) {
  switch (disposition) {
    case Disposition::kDelivered:
      return trace::Status::kDelivered;
    case Disposition::kDeferred:
      return trace::Status::kDeferred;
    case Disposition::kFailed:
      return trace::Status::kFailed;
    case Disposition::kDead:
      return trace::Status::kDead;
  }
  return trace::Status::kDeferred;
}

// Jitter: ±10% of `delay`, so that messages deferred together do not retry together.
absl::Duration Jitter(absl::Duration delay) {
  thread_local std::minstd_rand random(std::random_device{}());
  double factor = 0.9 + 0.2 * (static_cast<double>(random() % 1000) / 1000.0);
  return delay * factor;
}

}  // namespace

std::string IsoUtc(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

absl::Duration RetryDelay(uint32_t attempts, absl::Duration initial, absl::Duration max) {
  absl::Duration delay = initial;
  for (uint32_t i = 1; i < attempts && delay < max; ++i) {
    delay *= 2;
  }
  return std::min(delay, max);
}

DeliveryQueue::DeliveryQueue(QueueOptions options)
    : options_(std::move(options)),
      trace_target_(absl::StrCat(options_.route, " ", options_.destination)) {
  CHECK(options_.workers > 0 && options_.workers <= kWorkersMax);
  CHECK(options_.batch_messages_max > 0);
  CHECK(options_.gauges != nullptr);
}

DeliveryQueue::~DeliveryQueue() { Stop(); }

size_t ProducerRingCapacity(size_t routes) {
  size_t capacity = kProducerRingCapacity;
  while (capacity > kProducerRingCapacityMin && routes > 1) {
    capacity /= 2;
    routes = (routes + 1) / 2;
  }
  return capacity;
}

DeliveryQueue::Ring* DeliveryQueue::AddProducer(size_t capacity) {
  CHECK(slots_.empty());
  producers_.push_back(std::make_unique<Ring>(capacity));
  return producers_.back().get();
}

void DeliveryQueue::Notify() {
  // Pairs with the fence in RunSlot(): either the slot sees the pushed item before sleeping,
  // or this sees the slot asleep and wakes it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_relaxed) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    WakeOne();
  }
}

void DeliveryQueue::Enqueue(std::unique_ptr<QueuedMessage> message) {
  std::lock_guard<std::mutex> lock(mu_);
  Insert(std::move(message), absl::Now());
  WakeOne();
}

void DeliveryQueue::WakeOne() {
  if (sleepers_.empty()) {
    return;
  }
  Slot* slot = sleepers_.back();
  sleepers_.pop_back();
  slot->asleep = false;
  sleeping_.store(static_cast<int>(sleepers_.size()), std::memory_order_relaxed);
  Wake(slot);
}

void DeliveryQueue::WakeAll() {
  while (!sleepers_.empty()) {
    WakeOne();
  }
}

void DeliveryQueue::Unlist(Slot* slot) {
  if (!slot->asleep) {
    return;
  }
  sleepers_.erase(std::find(sleepers_.begin(), sleepers_.end(), slot));
  slot->asleep = false;
  sleeping_.store(static_cast<int>(sleepers_.size()), std::memory_order_relaxed);
}

void DeliveryQueue::Wake(Slot* slot) {
  // From another thread (a shard, the admin thread, a slot on another loop) the wake runs on
  // the slot's loop; Join waits for it, so that it never runs after the slot is gone.
  wakes_.Wake(slot->loop, &slot->waiter);
}

void DeliveryQueue::Insert(std::unique_ptr<QueuedMessage> message, absl::Time now) {
  QueuedMessage* raw = message.get();
  auto [it, inserted] = messages_.try_emplace(raw->id, std::move(message));
  if (!inserted) {
    // Ids are unique by construction; a second message with one must not replace the first
    // (pointers to it are in the schedule). It stays in the spool and comes back at restart.
    LOG_ERROR_EVERY(10, "delivery: a second message with id %s; it waits for a restart", raw->id);
    return;
  }
  MakeReady(raw, now);
}

void DeliveryQueue::Start() {
  CHECK(slots_.empty());
  for (int i = 0; i < options_.workers; ++i) {
    auto slot = std::make_unique<Slot>();
    if (!options_.loops.empty()) {
      slot->loop = options_.loops[static_cast<size_t>(i) % options_.loops.size()];
    } else {
      // A slot whose backend blocks (Maildir) has a thread of its own.
      absl::StatusOr<std::unique_ptr<io::LoopThread>> thread =
          io::LoopThread::Start(absl::StrCat("chute-deliver-", i));
      CHECK_MSG(thread.ok(),
                absl::StrCat("delivery: io_uring: ", thread.status().message()).c_str());
      slot->loop = (*thread)->loop();
      own_threads_.push_back(*std::move(thread));
    }
    Slot* raw = slot.get();
    slots_.push_back(std::move(slot));
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++running_;
    }
    raw->loop->Post([this, raw] { raw->loop->Spawn(RunSlot(raw)); });
  }
}

void DeliveryQueue::Stop(absl::Duration drain) {
  RequestStop(drain);
  Join();
}

void DeliveryQueue::RequestStop(absl::Duration drain) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    drain_deadline_ = absl::Now() + drain;
    if (options_.stop_at_unix_ms != nullptr) {
      options_.stop_at_unix_ms->store(absl::ToUnixMillis(drain_deadline_));
    }
    WakeAll();
  }
}

void DeliveryQueue::Join() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return running_ == 0; });
  }
  wakes_.WaitForPosted();
  own_threads_.clear();  // each ends, its one slot having ended
  slots_.clear();
}

void DeliveryQueue::MakeReady(QueuedMessage* message, absl::Time now) {
  if (message->in_flight || message->held || message->deleted ||
      message->ready_since != absl::InfinitePast()) {
    return;
  }
  scheduled_.erase({message->next_attempt, message});
  message->next_attempt = now;
  message->ready_since = now;
  ready_.push_back(message);
}

void DeliveryQueue::DrainProducers() {
  absl::Time now = absl::Now();
  for (const std::unique_ptr<Ring>& ring : producers_) {
    while (std::optional<std::unique_ptr<QueuedMessage>> item = ring->TryPop()) {
      Insert(std::move(*item), now);
    }
  }
}

void DeliveryQueue::PromoteDue(absl::Time now) {
  while (!scheduled_.empty() && scheduled_.begin()->first <= now) {
    QueuedMessage* message = scheduled_.begin()->second;
    scheduled_.erase(scheduled_.begin());
    message->next_attempt = now;
    message->ready_since = now;
    ready_.push_back(message);
  }
}

bool DeliveryQueue::TakeBatch(absl::Time now, std::vector<QueuedMessage*>* batch) {
  // Skip what was held, deleted or retried twice since it became ready.
  while (!ready_.empty() &&
         (ready_.front()->held || ready_.front()->deleted || ready_.front()->in_flight)) {
    ready_.front()->ready_since = absl::InfinitePast();
    ready_.pop_front();
  }
  if (ready_.empty()) {
    return false;
  }
  bool full = ready_.size() >= options_.batch_messages_max;
  bool waited = now - ready_.front()->ready_since >= options_.batch_delay || stopping_;
  if (!full && !waited) {
    return false;
  }
  uint64_t batch_bytes = 0;
  while (!ready_.empty() && batch->size() < options_.batch_messages_max) {
    QueuedMessage* message = ready_.front();
    if (!batch->empty() && batch_bytes + message->content_bytes() > kBatchBytesMax) {
      break;  // a worker holds a batch's content in memory: large messages make small batches
    }
    ready_.pop_front();
    message->ready_since = absl::InfinitePast();
    if (message->held || message->deleted || message->in_flight) {
      continue;
    }
    message->in_flight = true;
    batch_bytes += message->content_bytes();
    batch->push_back(message);
  }
  return !batch->empty();
}

absl::Time DeliveryQueue::NextWake(absl::Time now) {
  absl::Time wake = now + kWorkerWaitMax;
  if (!ready_.empty()) {
    wake = std::min(wake, ready_.front()->ready_since + options_.batch_delay);
  }
  if (!scheduled_.empty()) {
    wake = std::min(wake, scheduled_.begin()->first);
  }
  return wake;
}

io::Task<void> DeliveryQueue::RunSlot(Slot* slot) {
  std::unique_ptr<Backend> backend = options_.backend();
  std::vector<QueuedMessage*> batch;
  absl::Time idle_since = absl::Now();
  while (true) {
    absl::Time wake = absl::InfinitePast();
    bool stop = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      DrainProducers();
      absl::Time now = absl::Now();
      if (stopping_ && (now >= drain_deadline_ || ready_.empty())) {
        stop = true;
      } else {
        PromoteDue(now);
        if (TakeBatch(now, &batch)) {
          if (!ready_.empty()) {
            WakeOne();  // more than one batch is ready: another slot takes the next
          }
        } else {
          wake = NextWake(now);
          slot->asleep = true;
          sleepers_.push_back(slot);
          sleeping_.store(static_cast<int>(sleepers_.size()), std::memory_order_relaxed);
        }
      }
    }
    if (stop) {
      break;
    }
    if (!batch.empty()) {
      co_await Attempt(*backend, batch);
      batch.clear();
      idle_since = absl::Now();
      continue;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool pending = std::any_of(producers_.begin(), producers_.end(),
                               [](const std::unique_ptr<Ring>& r) { return !r->Empty(); });
    if (!pending) {
      co_await slot->loop->Sleep(&slot->waiter, wake);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      Unlist(slot);
    }
    absl::Time now = absl::Now();
    if (now - idle_since >= kWorkerWaitMax) {
      co_await backend->CloseIdle(now);
      // A quiet thread gives back what the last messages took, once a second however many
      // slots it runs.
      thread_local absl::Time released = absl::InfinitePast();
      if (absl::Now() - released >= kWorkerWaitMax) {
        ReleaseIdleMemory();
        released = absl::Now();
      }
      idle_since = absl::Now();
    }
  }
  co_await backend->Shutdown();
  backend.reset();
  std::lock_guard<std::mutex> lock(mu_);
  --running_;
  done_.notify_all();
}

io::Task<void> DeliveryQueue::Attempt(Backend& backend, const std::vector<QueuedMessage*>& batch) {
  // The messages are in flight: only this worker touches their marks until they are back.
  std::vector<OutboundMessage> out(batch.size());
  std::vector<bool> unreadable(batch.size(), false);  // its content could not be read
  std::vector<OutboundMessage*> deliverable;
  for (size_t m = 0; m < batch.size(); ++m) {
    QueuedMessage& message = *batch[m];
    OutboundMessage& o = out[m];
    o.id = message.id;
    o.received_unix_s = message.received_unix_us / 1'000'000;
    o.sender = message.sender;
    o.replayed = message.replayed;
    o.dsn_ret = message.dsn_ret;
    o.envid = message.envid;
    for (size_t i = 0; i < message.recipients.size(); ++i) {
      if (message.Mine(i) && message.marks[i] == spool::Mark::kPending) {
        o.recipients.push_back(message.recipients[i]);
        o.recipient_indexes.push_back(static_cast<uint32_t>(i));
        o.notify.push_back(message.NotifyOf(i));
        o.orcpt.push_back(i < message.orcpt.size() ? message.orcpt[i] : std::string());
      }
    }
    absl::StatusOr<std::string> content = message.record.in_spool()
                                              ? message.record.ReadContent()
                                              : io::ReadFile(message.dead_path + ".eml");
    if (!content.ok()) {
      unreadable[m] = true;
      o.results.assign(
          o.recipients.size(),
          RecipientResult{Outcome::kTransient, absl::StrCat("451 4.3.0 cannot read the message: ",
                                                            content.status().message())});
      continue;
    }
    o.content = std::move(*content);
    deliverable.push_back(&o);
  }
  // A message is concluded (marked, settled) as soon as the backend says it is done with it,
  // so that a crash in the middle of a batch redelivers as little as possible.
  std::vector<int8_t> finished(batch.size(), -1);  // -1 not concluded yet, else 0/1
  auto conclude = [&](size_t m) {
    if (finished[m] < 0) {
      finished[m] = Conclude(*batch[m], out[m], unreadable[m], absl::Now()) ? 1 : 0;
    }
  };
  if (!deliverable.empty()) {
    std::vector<size_t> index_of(deliverable.size());
    for (size_t d = 0, m = 0; m < batch.size(); ++m) {
      if (d < deliverable.size() && deliverable[d] == &out[m]) {
        index_of[d++] = m;
      }
    }
    int64_t started_us = MonotonicMicros();
    MessageDone done = [&](size_t d) { conclude(index_of[d]); };
    co_await backend.Deliver(deliverable, done);
    counters_.batch_latency.Observe(MonotonicMicros() - started_us);
  }
  counters_.batches.fetch_add(1, std::memory_order_relaxed);
  for (size_t m = 0; m < batch.size(); ++m) {
    conclude(m);
  }
  absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t m = 0; m < batch.size(); ++m) {
    Reschedule(batch[m], finished[m] == 1, now);
  }
}

bool DeliveryQueue::Conclude(QueuedMessage& message, const OutboundMessage& out, bool unreadable,
                             absl::Time now) {
  // While a message is in flight only this worker writes its marks, replies and attempts, so
  // it reads them freely; it writes them under mu_, since queue control reads them under it.
  CHECK_MSG(out.results.size() == out.recipients.size(), "a backend left results short");
  absl::Time received = absl::FromUnixMicros(message.received_unix_us);
  // A message whose content could not be read is never given up: a dead letter of it would
  // be empty, and settling it would lose it.
  bool too_old = !unreadable && now - received >= options_.give_up_after;
  uint32_t attempts = message.attempts + 1;
  std::vector<spool::Mark> marks = message.marks;
  std::vector<std::string> replies = message.replies;
  std::vector<size_t> delayed;    // recipients due a delay notice now
  std::vector<size_t> succeeded;  // delivered recipients that asked for a success notice
  counters_.attempts.fetch_add(1, std::memory_order_relaxed);
  for (size_t k = 0; k < out.recipients.size(); ++k) {
    size_t i = out.recipient_indexes[k];
    const RecipientResult& result = out.results[k];
    replies[i] = result.reply;
    if (result.outcome == Outcome::kDelivered) {
      marks[i] = spool::Mark::kDelivered;
      counters_.recipients_delivered.fetch_add(1, std::memory_order_relaxed);
      if ((message.NotifyOf(i) & smtp::kNotifySuccess) != 0 && !out.dsn_passed) {
        succeeded.push_back(i);
      }
    } else if (result.outcome == Outcome::kPermanent || too_old) {
      marks[i] = spool::Mark::kDead;
      if (result.outcome != Outcome::kPermanent) {
        replies[i] =
            absl::StrCat("gave up after ", attempts, " attempts; last reply: ", result.reply);
      }
      counters_.recipients_dead.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.recipients_deferred.fetch_add(1, std::memory_order_relaxed);
      if (options_.delay_notice_after > absl::ZeroDuration() &&
          now - received >= options_.delay_notice_after &&
          (message.NotifyOf(i) & smtp::kNotifyDelay) != 0 &&
          (i >= message.delay_noticed.size() || !message.delay_noticed[i])) {
        delayed.push_back(i);  // only this worker touches delay_noticed while in flight
        message.delay_noticed.resize(message.recipients.size());
        message.delay_noticed[i] = true;
      }
    }
  }
  if (!succeeded.empty() && options_.reporter != nullptr) {
    options_.reporter->OnDelivered(message, succeeded, replies, !options_.final_delivery,
                                   out.content);
  }
  if (!delayed.empty() && options_.reporter != nullptr) {
    options_.reporter->OnDelayed(message, delayed, replies, received + options_.give_up_after,
                                 out.content);
  }
  bool pending = false;
  for (size_t i = 0; i < marks.size(); ++i) {
    pending |= message.Mine(i) && marks[i] == spool::Mark::kPending;
  }
  // A message whose content could not be read is never concluded (a part with no recipient
  // left, retried to write the message's dead letter, must not write an empty one).
  pending |= unreadable;
  Report(message, out, marks, replies, attempts, now);
  {
    std::lock_guard<std::mutex> lock(mu_);
    message.attempts = attempts;
    message.replies = replies;
    message.marks = marks;
  }
  if (pending) {
    // Marks of recipients settled this time, so that a restart does not try them again.
    for (size_t k = 0; k < out.recipients.size() && message.record.in_spool(); ++k) {
      size_t i = out.recipient_indexes[k];
      if (marks[i] != spool::Mark::kPending) {
        (void)message.record.Mark(i, marks[i]);
      }
    }
    return false;
  }
  // This part is done. The last part of a message (or its only one) writes the dead letter
  // for every dead recipient of the message and settles the record.
  std::unique_lock<std::mutex> share_lock;
  if (message.share != nullptr) {
    MessageShare& share = *message.share;
    share_lock = std::unique_lock<std::mutex>(share.mu);
    for (size_t i = 0; i < marks.size(); ++i) {
      if (message.Mine(i)) {
        share.marks[i] = marks[i];
        share.replies[i] = replies[i];
      }
    }
    if (share.parts_left > 1) {
      --share.parts_left;
      for (size_t i = 0; i < marks.size() && message.record.in_spool(); ++i) {
        if (message.Mine(i)) {
          (void)message.record.Mark(i, marks[i]);
        }
      }
      return true;
    }
    marks = share.marks;
    replies = share.replies;
  }
  bool any_dead = std::count(marks.begin(), marks.end(), spool::Mark::kDead) > 0;
  if (any_dead) {
    absl::Status status = WriteDeadLetter(message, marks, replies, out.content, now);
    if (!status.ok()) {
      // Not settled: the spool keeps it, and the next attempt tries the dead letter again.
      LOG_ERROR_EVERY(10, "delivery: %s: cannot write the dead letter: %s", message.id,
                      status.ToString());
      // The lock order is mu_, then a share's mu (Drop): the share's is let go first.
      for (size_t i = 0; i < marks.size() && message.share != nullptr; ++i) {
        if (message.Mine(i) && marks[i] == spool::Mark::kDead) {
          message.share->marks[i] = spool::Mark::kPending;
        }
      }
      if (share_lock.owns_lock()) {
        share_lock.unlock();
      }
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = 0; i < message.marks.size(); ++i) {
        if (message.Mine(i) && message.marks[i] == spool::Mark::kDead) {
          message.marks[i] = spool::Mark::kPending;
        }
      }
      return false;
    }
  }
  // The report is written before the record is settled (a crash in between repeats it) and
  // queued once the share's lock is let go (Route takes a queue's mu_: the lock order).
  std::optional<WrittenReport> report;
  if (any_dead && options_.reporter != nullptr) {
    report = options_.reporter->WriteFailure(message, marks, replies, out.content);
  }
  Settle(message, any_dead);
  if (share_lock.owns_lock()) {
    share_lock.unlock();
  }
  if (report.has_value()) {
    options_.reporter->Queue(*std::move(report));
  }
  return true;
}

void DeliveryQueue::Drop(QueuedMessage& message) {
  if (message.share != nullptr) {
    MessageShare& share = *message.share;
    std::lock_guard<std::mutex> share_lock(share.mu);
    for (size_t i = 0; i < message.marks.size(); ++i) {
      if (message.Mine(i) && share.marks[i] == spool::Mark::kPending) {
        // Not to be delivered: marked done, so that a restart does not deliver it either.
        share.marks[i] = spool::Mark::kDelivered;
        if (share.parts_left > 1 && message.record.in_spool()) {
          (void)message.record.Mark(i, spool::Mark::kDelivered);
        }
      }
    }
    if (share.parts_left > 1) {
      --share.parts_left;
      return;
    }
  }
  // A deleted message writes no dead letter: the operator dropped it, whatever became of it.
  Settle(message, /*dead_again=*/false);
}

void DeliveryQueue::Report(const QueuedMessage& message, const OutboundMessage& out,
                           const std::vector<spool::Mark>& marks,
                           const std::vector<std::string>& replies, uint32_t attempts,
                           absl::Time now) {
  std::vector<trace::Event> events;
  int64_t now_us = absl::ToUnixMicros(now);
  std::string delay_s =
      absl::StrFormat("%.3f", static_cast<double>(now_us - message.received_unix_us) / 1e6);
  const std::string& target = out.via.empty() ? options_.destination : out.via;
  for (size_t k = 0; k < out.recipients.size(); ++k) {
    size_t i = out.recipient_indexes[k];
    Disposition disposition = Disposition::kDeferred;
    if (marks[i] == spool::Mark::kDelivered) {
      disposition = Disposition::kDelivered;
    } else if (marks[i] == spool::Mark::kDead) {
      disposition =
          out.results[k].outcome == Outcome::kPermanent ? Disposition::kFailed : Disposition::kDead;
    }
    LogEvent(disposition == Disposition::kDelivered || disposition == Disposition::kDeferred
                 ? LogLevel::kInfo
                 : LogLevel::kWarning,
             "delivery",
             {{"queue_id", message.id},
              {"recipient", message.recipients[i]},
              {"route", options_.route},
              {"target", target},
              {"status", DispositionName(disposition)},
              {"reply", replies[i]},
              {"attempt", attempts},
              {"delay_s", delay_s}});
    if (options_.trace != nullptr) {
      trace::Event& e = events.emplace_back();
      e.kind = trace::Event::Kind::kAttempt;
      e.time_us = now_us;
      e.queue_id = message.id;
      e.recipient = message.recipients[i];
      e.status = TraceStatus(disposition);
      e.reply = replies[i];
      e.target = out.via.empty() ? trace_target_ : absl::StrCat(options_.route, " ", out.via);
      e.attempt = attempts;
    }
  }
  if (options_.trace != nullptr) {
    options_.trace->Submit(events);
  }
}

absl::Status DeliveryQueue::WriteDeadLetter(const QueuedMessage& message,
                                            const std::vector<spool::Mark>& marks,
                                            const std::vector<std::string>& replies,
                                            absl::string_view content, absl::Time now) {
  if (mkdir(options_.dead_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return io::ErrnoStatus(errno, absl::StrCat("create ", options_.dead_dir));
  }
  std::string base = absl::StrCat(options_.dead_dir, "/", message.id);
  nlohmann::json reason;
  reason["id"] = message.id;
  reason["sender"] = message.sender;
  reason["tenant_id"] = message.tenant_id;
  reason["account_id"] = message.account_id;
  reason["received"] = IsoUtc(absl::FromUnixMicros(message.received_unix_us));
  reason["dead_at"] = IsoUtc(now);
  reason["attempts"] = message.attempts;
  reason["destination"] = options_.destination;
  if (message.dsn_ret != 0) {
    reason["dsn_ret"] = message.dsn_ret;
  }
  if (!message.envid.empty()) {
    reason["envid"] = message.envid;
  }
  nlohmann::json recipients = nlohmann::json::array();
  for (size_t i = 0; i < message.recipients.size(); ++i) {
    if (marks[i] == spool::Mark::kDead) {
      std::string route = message.share != nullptr && i < message.share->routes.size()
                              ? message.share->routes[i]
                              : options_.route;
      nlohmann::json r{{"address", message.recipients[i]}, {"reply", replies[i]}, {"route", route}};
      if (message.NotifyOf(i) != 0) {
        r["notify"] = message.NotifyOf(i);
      }
      if (i < message.orcpt.size() && !message.orcpt[i].empty()) {
        r["orcpt"] = message.orcpt[i];
      }
      recipients.push_back(std::move(r));
    }
  }
  reason["recipients"] = recipients;
  std::string json = reason.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  json.push_back('\n');
  RETURN_IF_ERROR(io::WriteFileDurably(base + ".eml", content));
  RETURN_IF_ERROR(io::WriteFileDurably(base + ".json", json));
  RETURN_IF_ERROR(io::SyncDirectory(options_.dead_dir));
  counters_.messages_dead.fetch_add(1, std::memory_order_relaxed);
  LOG_WARNING("delivery: %s dead-lettered (%d recipient(s)) in %s.json", message.id,
              static_cast<int64_t>(recipients.size()), base);
  return absl::OkStatus();
}

void DeliveryQueue::Settle(QueuedMessage& message, bool dead_again) {
  counters_.messages_settled.fetch_add(1, std::memory_order_relaxed);
  if (message.record.in_spool()) {
    absl::Status status = message.record.Settle();
    if (!status.ok()) {
      LOG_WARNING_EVERY(10, "delivery: %s: %s (it may be delivered again after a restart)",
                        message.id, status.ToString());
    }
    return;
  }
  // Requeued from the dead-letter area (or a failure report): its files go once nothing of it
  // is dead any more; a report given up is in the dead-letter area now, its files go too.
  options_.gauges->RemoveOutside();
  if (!dead_again || message.dead_path != absl::StrCat(options_.dead_dir, "/", message.id)) {
    unlink((message.dead_path + ".eml").c_str());
    unlink((message.dead_path + ".json").c_str());
  }
}

void DeliveryQueue::Reschedule(QueuedMessage* message, bool finished, absl::Time now) {
  message->in_flight = false;
  if (finished || message->deleted) {
    if (!finished) {
      Drop(*message);  // deleted while it was being tried
    }
    messages_.erase(message->id);
    return;
  }
  if (message->retry_now && !message->held) {
    message->retry_now = false;
    MakeReady(message, now);  // `queue retry` came while it was being tried
    WakeOne();
    return;
  }
  message->next_attempt =
      now + Jitter(RetryDelay(message->attempts, options_.retry_initial, options_.retry_max));
  if (!message->held) {
    scheduled_.insert({message->next_attempt, message});
  }
}

QueueEntry DeliveryQueue::EntryFor(const QueuedMessage& message) const {
  QueueEntry entry;
  entry.id = message.id;
  entry.route = options_.route;
  entry.received_unix_us = message.received_unix_us;
  entry.tenant_id = message.tenant_id;
  entry.account_id = message.account_id;
  entry.sender = message.sender;
  for (size_t i = 0; i < message.recipients.size(); ++i) {
    if (message.Mine(i) && message.marks[i] == spool::Mark::kPending) {
      entry.pending.push_back(message.recipients[i]);
      entry.replies.push_back(message.replies[i]);
    }
  }
  entry.attempts = message.attempts;
  entry.next_attempt = message.next_attempt;
  entry.held = message.held;
  entry.in_flight = message.in_flight;
  entry.size_bytes = message.content_bytes();
  return entry;
}

QueuedMessage* DeliveryQueue::Find(const std::string& id) {
  auto it = messages_.find(id);
  return it == messages_.end() || it->second->deleted ? nullptr : it->second.get();
}

std::vector<QueueEntry> DeliveryQueue::List() {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  std::vector<QueueEntry> entries;
  for (const auto& [id, message] : messages_) {
    if (!message->deleted) {
      entries.push_back(EntryFor(*message));
    }
  }
  std::sort(entries.begin(), entries.end(), [](const QueueEntry& a, const QueueEntry& b) {
    return a.received_unix_us < b.received_unix_us;
  });
  return entries;
}

int64_t DeliveryQueue::OldestReceivedUnixUs() {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t oldest = 0;
  for (const auto& [id, message] : messages_) {
    if (!message->deleted && (oldest == 0 || message->received_unix_us < oldest)) {
      oldest = message->received_unix_us;
    }
  }
  return oldest;
}

size_t CountDeadLetters(const std::string& dead_dir) {
  size_t count = 0;
  DIR* d = opendir(dead_dir.c_str());
  if (d == nullptr) {
    return 0;
  }
  while (dirent* entry = readdir(d)) {
    count += absl::EndsWith(entry->d_name, ".json") ? 1 : 0;
  }
  closedir(d);
  return count;
}

size_t DeliveryQueue::queued() {
  std::lock_guard<std::mutex> lock(mu_);
  return messages_.size();
}

absl::StatusOr<QueueEntry> DeliveryQueue::Show(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  QueuedMessage* message = Find(id);
  if (message == nullptr) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  return EntryFor(*message);
}

absl::Status DeliveryQueue::Retry(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  QueuedMessage* message = Find(id);
  if (message == nullptr) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  message->held = false;
  // Being tried right now: it is tried again as soon as this attempt ends, not after backoff.
  message->retry_now = message->in_flight;
  MakeReady(message, absl::Now());
  WakeOne();
  return absl::OkStatus();
}

size_t DeliveryQueue::RetryAll() {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  absl::Time now = absl::Now();
  size_t count = 0;
  for (auto& [id, message] : messages_) {
    if (!message->held && !message->deleted && !message->in_flight) {
      MakeReady(message.get(), now);
      ++count;
    }
  }
  WakeAll();
  return count;
}

absl::Status DeliveryQueue::Hold(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  QueuedMessage* message = Find(id);
  if (message == nullptr) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  message->held = true;
  scheduled_.erase({message->next_attempt, message});
  LOG_INFO("queue: %s held", id);
  return absl::OkStatus();
}

absl::Status DeliveryQueue::Release(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  QueuedMessage* message = Find(id);
  if (message == nullptr) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  if (message->held) {
    message->held = false;
    MakeReady(message, absl::Now());
    WakeOne();
    LOG_INFO("queue: %s released", id);
  }
  return absl::OkStatus();
}

absl::Status DeliveryQueue::Delete(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  QueuedMessage* message = Find(id);
  if (message == nullptr) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  message->deleted = true;
  int64_t pending = 0;
  for (size_t i = 0; i < message->marks.size(); ++i) {
    pending += message->Mine(i) && message->marks[i] == spool::Mark::kPending ? 1 : 0;
  }
  LOG_WARNING("queue: %s deleted by the operator (%d recipient(s) of route %s not delivered)", id,
              pending, options_.route);
  if (!message->in_flight) {
    scheduled_.erase({message->next_attempt, message});
    ready_.erase(std::remove(ready_.begin(), ready_.end(), message), ready_.end());
    Drop(*message);
    messages_.erase(id);
  }
  return absl::OkStatus();
}

std::vector<DeadEntry> ListDeadLetters(const std::string& dead_dir) {
  std::vector<DeadEntry> entries;
  DIR* d = opendir(dead_dir.c_str());
  if (d == nullptr) {
    return entries;
  }
  std::vector<std::string> ids;
  while (dirent* entry = readdir(d)) {
    absl::string_view name(entry->d_name);
    if (absl::ConsumeSuffix(&name, ".json")) {
      ids.emplace_back(name);
    }
  }
  closedir(d);
  std::sort(ids.begin(), ids.end());
  for (const std::string& id : ids) {
    absl::StatusOr<std::string> json = io::ReadFile(absl::StrCat(dead_dir, "/", id, ".json"));
    if (json.ok()) {
      entries.push_back(DeadEntry{id, *json});
    }
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<QueuedMessage>> ReadDeadLetter(const std::string& dead_dir,
                                                              const std::string& id) {
  // The id comes from an admin request: it names files only once it is a queue id, and what
  // goes wrong is told to the client without a path (the log has the details).
  if (!spool::IsQueueId(id)) {
    return absl::InvalidArgumentError("not a queue id");
  }
  std::string base = absl::StrCat(dead_dir, "/", id);
  auto unreadable = [&](const absl::Status& status) {
    LOG_WARNING("queue: dead letter %s cannot be requeued: %s", id, status.ToString());
    if (absl::IsNotFound(status)) {
      return absl::NotFoundError(absl::StrCat("no dead letter ", id));
    }
    return absl::DataLossError(absl::StrCat("dead letter ", id, " cannot be read (see the log)"));
  };
  absl::StatusOr<std::string> json = io::ReadFile(base + ".json");
  if (!json.ok()) {
    return unreadable(json.status());
  }
  nlohmann::json reason = nlohmann::json::parse(*json, nullptr, false);
  if (reason.is_discarded() || !reason.is_object() || !reason["recipients"].is_array()) {
    return unreadable(absl::DataLossError(absl::StrCat(base, ".json is not a dead-letter record")));
  }
  struct stat st {};
  if (stat((base + ".eml").c_str(), &st) != 0) {
    // A reason without its message is damaged, not missing.
    return unreadable(
        absl::DataLossError(io::ErrnoStatus(errno, absl::StrCat("stat ", base, ".eml")).message()));
  }
  auto message = std::make_unique<QueuedMessage>();
  message->id = id;
  // A hand-edited or damaged file may hold anything: a field of the wrong type is absent.
  auto text = [](const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto number = [](const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? it->get<int64_t>() : int64_t{0};
  };
  message->sender = text(reason, "sender");
  message->tenant_id = number(reason, "tenant_id");
  message->account_id = number(reason, "account_id");
  message->received_unix_us = absl::ToUnixMicros(absl::Now());  // give_up_after starts again
  message->dead_path = base;
  message->record.content_bytes = static_cast<uint64_t>(st.st_size);
  message->dsn_ret = static_cast<uint8_t>(number(reason, "dsn_ret") & 3);
  message->envid = text(reason, "envid");
  for (const nlohmann::json& r : reason["recipients"]) {
    if (r.is_object() && r["address"].is_string()) {
      message->recipients.push_back(r["address"].get<std::string>());
      message->notify.push_back(static_cast<uint8_t>(number(r, "notify") & 0x0f));
      message->orcpt.push_back(text(r, "orcpt"));
    }
  }
  if (message->recipients.empty()) {
    return unreadable(absl::DataLossError(absl::StrCat(base, ".json names no recipient")));
  }
  message->marks.assign(message->recipients.size(), spool::Mark::kPending);
  message->replies.assign(message->recipients.size(), "");
  return message;
}

bool DeliveryQueue::Contains(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  DrainProducers();
  return messages_.contains(id);
}

std::unique_ptr<QueuedMessage> QueuedFrom(spool::Envelope envelope, std::vector<spool::Mark> marks,
                                          spool::RecordRef where, bool replayed) {
  auto message = std::make_unique<QueuedMessage>();
  message->id = std::move(envelope.id);
  message->received_unix_us = envelope.received_unix_us;
  message->tenant_id = envelope.tenant_id;
  message->account_id = envelope.account_id;
  message->sender = std::move(envelope.sender);
  message->recipients = std::move(envelope.recipients);
  message->dsn_ret = envelope.dsn_ret;
  message->envid = std::move(envelope.envid);
  message->notify = std::move(envelope.notify);
  message->orcpt = std::move(envelope.orcpt);
  if (marks.empty()) {
    marks.assign(message->recipients.size(), spool::Mark::kPending);
  }
  CHECK(marks.size() == message->recipients.size());
  message->marks = std::move(marks);
  message->replies.assign(message->recipients.size(), std::string());
  message->record = std::move(where);
  message->replayed = replayed;
  return message;
}

absl::string_view DispositionName(Disposition disposition) {
  switch (disposition) {
    case Disposition::kDelivered:
      return "delivered";
    case Disposition::kDeferred:
      return "deferred";
    case Disposition::kFailed:
      return "failed";
    case Disposition::kDead:
      return "dead";
  }
  return "deferred";
}

}  // namespace chute::delivery
