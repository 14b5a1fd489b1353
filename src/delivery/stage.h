#pragma once

// DeliveryStage: the delivery stage as the rest of chuted sees it (docs/architecture.md,
// Delivery routes): the Router, one DeliveryQueue per route (its own workers, connections,
// retries and backlog, so that a route whose target is down fills only its own queue), and
// the dead-letter area they share.
//
// A message whose recipients go by one route (the usual case) is one QueuedMessage in that
// route's queue. One whose recipients go by several is split into parts, one per route, that
// share the spool record (MessageShare): each part marks its own recipients, and the last part
// to finish writes the message's one dead letter and settles the record.
//
// Queue control takes a queue id and acts on every part of that message.
//
// Threads: AddProducer/Enqueue before Start from the main thread; Enqueue and control calls
// from any thread; Start/Stop from the main thread.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "delivery/queue.h"
#include "delivery/router.h"
#include "delivery/verifier.h"
#include "io/loop.h"

namespace chute::delivery {

// RoutedPart: one part of a message and the index of the route it goes by.
struct RoutedPart {
  int route = 0;
  std::unique_ptr<QueuedMessage> message;
};

// SplitByRoute: the parts of `message` whose recipients' routes are `routes` (one per
// recipient, kNoRoute allowed). Recipients settled already (replayed marks) belong to no part.
// One part holding the whole message when every pending recipient has the same route; none
// when none has a route. Pending recipients without a route keep the record unsettled (their
// share counts one part more that never finishes): they stay in the spool, and the next start
// routes them again. `unrouted` (optional) counts them.
std::vector<RoutedPart> SplitByRoute(std::unique_ptr<QueuedMessage> message,
                                     const std::vector<int>& routes, const Router& router,
                                     size_t* unrouted = nullptr);

class DeliveryStage {
 public:
  // TenantName: a tenant's name from its id ("" when unknown), to route replayed and
  // requeued messages by tenant.
  using TenantName = std::function<std::string(int64_t tenant_id)>;

  // DeliveryStage: `queues[i]` delivers route `router.route(i)`. `io_threads` are the loops
  // the LMTP/SMTP queues' slots run on (QueueOptions::loops); the stage stops them after the
  // queues.
  DeliveryStage(Router router, std::vector<std::unique_ptr<DeliveryQueue>> queues,
                std::string dead_dir, spool::SpoolGauges* gauges, TenantName tenant_name,
                std::vector<std::unique_ptr<io::LoopThread>> io_threads = {});
  ~DeliveryStage();

  const Router& router() const { return router_; }
  size_t routes() const { return queues_.size(); }
  DeliveryQueue& queue(size_t route) { return *queues_[route]; }
  // The recipient verifier of an LMTP/SMTP route with verify_recipients (null otherwise). Set
  // before Start; started and stopped with the stage (stopped before its queues).
  void SetVerifier(size_t route, std::unique_ptr<RecipientVerifier> verifier);
  RecipientVerifier* verifier(size_t route) { return verifiers_[route].get(); }

  // AddProducer: one ring per route for one producer (a shard), indexed by route. Before Start.
  std::vector<DeliveryQueue::Ring*> AddProducer();
  // Route: routes `message` by its recipients' domains and its tenant, and queues its parts
  // (replay at start-up; requeue). Returns the number of pending recipients without a route.
  size_t Route(std::unique_ptr<QueuedMessage> message);
  // Routable: whether every recipient of `message` has a route now.
  bool Routable(const QueuedMessage& message) const;
  // StopVerifiers: the recipient verifiers answer what waits and end (before the shards stop:
  // a session waiting for a probe must not hold their drain).
  void StopVerifiers();

  void Start();
  // Stop: every route's queue drains at once, for at most `drain`.
  void Stop(absl::Duration drain = absl::ZeroDuration());

  // Queue control (chutectl queue). NotFound when no route has that id.
  std::vector<QueueEntry> List();
  absl::StatusOr<QueueEntry> Show(const std::string& id);  // every part's pending recipients
  absl::Status Retry(const std::string& id);
  size_t RetryAll();
  absl::Status Hold(const std::string& id);
  absl::Status Release(const std::string& id);
  absl::Status Delete(const std::string& id);
  std::vector<DeadEntry> Dead();
  // Requeue: the dead letter `id` back to delivery, routed again (ReadDeadLetter's errors;
  // AlreadyExists when it is queued; FailedPrecondition when a recipient has no route now).
  absl::Status Requeue(const std::string& id);

  size_t queued();  // messages (parts) in every route's queue
  int64_t OldestReceivedUnixUs();
  size_t DeadCount();
  const std::string& dead_dir() const { return dead_dir_; }

 private:
  // ForEachHolding: `action` on every queue that holds `id`; NotFound when none does.
  absl::Status ForEachHolding(const std::string& id,
                              const std::function<absl::Status(DeliveryQueue&)>& action);

  const Router router_;
  std::vector<std::unique_ptr<DeliveryQueue>> queues_;
  std::vector<std::unique_ptr<io::LoopThread>> io_threads_;    // after the queues have stopped
  std::vector<std::unique_ptr<RecipientVerifier>> verifiers_;  // per route; null: none
  const std::string dead_dir_;
  spool::SpoolGauges* const gauges_;
  const TenantName tenant_name_;
};

}  // namespace chute::delivery
