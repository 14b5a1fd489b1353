// stage.cc: routes messages to their routes' queues, splits the ones that span routes, and
// fans queue control out to every route.

#include "delivery/stage.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"
#include "base/log.h"

namespace chute::delivery {

std::vector<RoutedPart> SplitByRoute(std::unique_ptr<QueuedMessage> message,
                                     const std::vector<int>& routes, const Router& router,
                                     size_t* unrouted) {
  CHECK(routes.size() == message->recipients.size());
  std::vector<int> used;  // the routes of pending recipients, in order of first use
  size_t without = 0;
  for (size_t i = 0; i < routes.size(); ++i) {
    if (message->marks[i] != spool::Mark::kPending) {
      continue;
    }
    if (routes[i] == kNoRoute) {
      ++without;
    } else if (std::find(used.begin(), used.end(), routes[i]) == used.end()) {
      used.push_back(routes[i]);
    }
  }
  if (unrouted != nullptr) {
    *unrouted = without;
  }
  std::vector<RoutedPart> parts;
  if (used.size() == 1 && without == 0) {
    parts.push_back(RoutedPart{used[0], std::move(message)});
    return parts;
  }
  if (used.empty()) {
    return parts;  // nothing to deliver now: the record stays in the spool
  }
  auto share = std::make_shared<MessageShare>();
  share->parts_left = used.size() + (without > 0 ? 1 : 0);
  share->marks = message->marks;
  share->replies = message->replies;
  for (int route : routes) {
    share->routes.push_back(route == kNoRoute ? "" : router.route(route).name);
  }
  for (int route : used) {
    auto part = std::make_unique<QueuedMessage>();
    part->id = message->id;
    part->received_unix_us = message->received_unix_us;
    part->tenant_id = message->tenant_id;
    part->account_id = message->account_id;
    part->sender = message->sender;
    part->recipients = message->recipients;
    part->dsn_ret = message->dsn_ret;
    part->envid = message->envid;
    part->notify = message->notify;
    part->orcpt = message->orcpt;
    part->marks = message->marks;
    part->replies = message->replies;
    part->record = message->record;
    part->dead_path = message->dead_path;
    part->replayed = message->replayed;
    part->mine.resize(routes.size());
    for (size_t i = 0; i < routes.size(); ++i) {
      part->mine[i] = routes[i] == route;
    }
    part->share = share;
    parts.push_back(RoutedPart{route, std::move(part)});
  }
  return parts;
}

DeliveryStage::DeliveryStage(Router router, std::vector<std::unique_ptr<DeliveryQueue>> queues,
                             std::string dead_dir, spool::SpoolGauges* gauges,
                             TenantName tenant_name,
                             std::vector<std::unique_ptr<io::LoopThread>> io_threads)
    : router_(std::move(router)),
      queues_(std::move(queues)),
      io_threads_(std::move(io_threads)),
      dead_dir_(std::move(dead_dir)),
      gauges_(gauges),
      tenant_name_(std::move(tenant_name)) {
  CHECK(queues_.size() == router_.size());
  CHECK(gauges_ != nullptr);
  verifiers_.resize(queues_.size());
}

void DeliveryStage::SetVerifier(size_t route, std::unique_ptr<RecipientVerifier> verifier) {
  CHECK(route < verifiers_.size());
  verifiers_[route] = std::move(verifier);
}

DeliveryStage::~DeliveryStage() { Stop(); }

std::vector<DeliveryQueue::Ring*> DeliveryStage::AddProducer() {
  std::vector<DeliveryQueue::Ring*> rings;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    rings.push_back(queue->AddProducer(ProducerRingCapacity(queues_.size())));
  }
  return rings;
}

size_t DeliveryStage::Route(std::unique_ptr<QueuedMessage> message) {
  std::string tenant = tenant_name_ ? tenant_name_(message->tenant_id) : "";
  std::vector<int> routes;
  routes.reserve(message->recipients.size());
  for (const std::string& recipient : message->recipients) {
    routes.push_back(router_.FindAddress(recipient, tenant));
  }
  std::string id = message->id;
  size_t unrouted = 0;
  for (RoutedPart& part : SplitByRoute(std::move(message), routes, router_, &unrouted)) {
    queues_[part.route]->Enqueue(std::move(part.message));
  }
  if (unrouted > 0) {
    LOG_ERROR(
        "delivery: %s: %d recipient(s) in a domain no route serves; they stay in the spool "
        "until a [[delivery.route]] (or default_route) serves it and chuted starts again",
        id, static_cast<int64_t>(unrouted));
  }
  return unrouted;
}

bool DeliveryStage::Routable(const QueuedMessage& message) const {
  std::string tenant = tenant_name_ ? tenant_name_(message.tenant_id) : "";
  return std::all_of(
      message.recipients.begin(), message.recipients.end(),
      [&](const std::string& r) { return router_.FindAddress(r, tenant) != kNoRoute; });
}

void DeliveryStage::StopVerifiers() {
  for (const std::unique_ptr<RecipientVerifier>& verifier : verifiers_) {
    if (verifier != nullptr) {
      verifier->Stop();
    }
  }
}

void DeliveryStage::Start() {
  for (const std::unique_ptr<RecipientVerifier>& verifier : verifiers_) {
    if (verifier != nullptr) {
      verifier->Start();
    }
  }
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    queue->Start();
  }
}

void DeliveryStage::Stop(absl::Duration drain) {
  StopVerifiers();
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    queue->RequestStop(drain);
  }
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    queue->Join();
  }
  io_threads_.clear();  // each ends once the slots it ran have
}

std::vector<QueueEntry> DeliveryStage::List() {
  std::vector<QueueEntry> entries;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    std::vector<QueueEntry> some = queue->List();
    entries.insert(entries.end(), std::make_move_iterator(some.begin()),
                   std::make_move_iterator(some.end()));
  }
  std::stable_sort(entries.begin(), entries.end(), [](const QueueEntry& a, const QueueEntry& b) {
    return a.received_unix_us < b.received_unix_us;
  });
  return entries;
}

absl::StatusOr<QueueEntry> DeliveryStage::Show(const std::string& id) {
  std::optional<QueueEntry> merged;
  std::vector<std::string> routes;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    absl::StatusOr<QueueEntry> entry = queue->Show(id);
    if (!entry.ok()) {
      continue;
    }
    routes.push_back(entry->route);
    if (!merged.has_value()) {
      merged = *std::move(entry);
      continue;
    }
    merged->pending.insert(merged->pending.end(), entry->pending.begin(), entry->pending.end());
    merged->replies.insert(merged->replies.end(), entry->replies.begin(), entry->replies.end());
    merged->attempts = std::max(merged->attempts, entry->attempts);
    merged->next_attempt = std::min(merged->next_attempt, entry->next_attempt);
    merged->held = merged->held || entry->held;
    merged->in_flight = merged->in_flight || entry->in_flight;
  }
  if (!merged.has_value()) {
    return absl::NotFoundError(absl::StrCat("no queued message ", id));
  }
  merged->route = absl::StrJoin(routes, ",");
  return *std::move(merged);
}

absl::Status DeliveryStage::ForEachHolding(
    const std::string& id, const std::function<absl::Status(DeliveryQueue&)>& action) {
  bool found = false;
  absl::Status first_error;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    absl::Status status = action(*queue);
    if (status.ok()) {
      found = true;
    } else if (!absl::IsNotFound(status) && first_error.ok()) {
      first_error = status;
    }
  }
  if (!first_error.ok()) {
    return first_error;
  }
  return found ? absl::OkStatus() : absl::NotFoundError(absl::StrCat("no queued message ", id));
}

absl::Status DeliveryStage::Retry(const std::string& id) {
  return ForEachHolding(id, [&](DeliveryQueue& q) { return q.Retry(id); });
}

size_t DeliveryStage::RetryAll() {
  size_t count = 0;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    count += queue->RetryAll();
  }
  return count;
}

absl::Status DeliveryStage::Hold(const std::string& id) {
  return ForEachHolding(id, [&](DeliveryQueue& q) { return q.Hold(id); });
}

absl::Status DeliveryStage::Release(const std::string& id) {
  return ForEachHolding(id, [&](DeliveryQueue& q) { return q.Release(id); });
}

absl::Status DeliveryStage::Delete(const std::string& id) {
  return ForEachHolding(id, [&](DeliveryQueue& q) { return q.Delete(id); });
}

std::vector<DeadEntry> DeliveryStage::Dead() { return ListDeadLetters(dead_dir_); }

absl::Status DeliveryStage::Requeue(const std::string& id) {
  absl::StatusOr<std::unique_ptr<QueuedMessage>> message = ReadDeadLetter(dead_dir_, id);
  if (!message.ok()) {
    return message.status();
  }
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    if (queue->Contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat(id, " is already queued"));
    }
  }
  std::string tenant = tenant_name_ ? tenant_name_((*message)->tenant_id) : "";
  for (const std::string& recipient : (*message)->recipients) {
    if (router_.FindAddress(recipient, tenant) == kNoRoute) {
      return absl::FailedPreconditionError(
          absl::StrCat("no delivery route serves ", recipient, " (see [[delivery.route]])"));
    }
  }
  gauges_->AddOutside();
  LOG_INFO("queue: %s requeued from the dead-letter area", id);
  Route(*std::move(message));
  return absl::OkStatus();
}

size_t DeliveryStage::queued() {
  size_t count = 0;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    count += queue->queued();
  }
  return count;
}

int64_t DeliveryStage::OldestReceivedUnixUs() {
  int64_t oldest = 0;
  for (const std::unique_ptr<DeliveryQueue>& queue : queues_) {
    int64_t q = queue->OldestReceivedUnixUs();
    if (q != 0 && (oldest == 0 || q < oldest)) {
      oldest = q;
    }
  }
  return oldest;
}

size_t DeliveryStage::DeadCount() { return CountDeadLetters(dead_dir_); }

}  // namespace chute::delivery
