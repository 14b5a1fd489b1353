// metrics.cc: delivery's series on /metrics, read from the DeliveryQueue.

#include "delivery/metrics.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/time/clock.h"

namespace chute::delivery {
namespace {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

// A delivery counter, labelled with the backend and its target.
struct QueueCounterSeries {
  const char* name;
  const char* help;
  std::atomic<uint64_t> QueueCounters::*counter;
};

constexpr QueueCounterSeries kQueueCounterSeries[] = {
    {"chute_delivery_recipients_delivered_total", "Recipients delivered (2xx).",
     &QueueCounters::recipients_delivered},
    {"chute_delivery_recipients_deferred_total",
     "Recipient attempts that failed transiently (retried with backoff).",
     &QueueCounters::recipients_deferred},
    {"chute_delivery_recipients_dead_total", "Recipients that went to the dead-letter area.",
     &QueueCounters::recipients_dead},
    {"chute_delivery_messages_dead_total", "Dead letters written.", &QueueCounters::messages_dead},
    {"chute_delivery_batches_total", "Batches handed to the backend.", &QueueCounters::batches},
};

}  // namespace

void RegisterMetrics(Registry& registry, DeliveryQueue& queue, const DeliveryConfig& config) {
  // backend: the kind (a small set, for dashboards); target: where it goes (host:port, a
  // socket path, the Maildir root).
  std::string backend(DeliveryBackendName(config.backend));
  std::string target =
      config.backend == DeliveryBackend::kMaildir ? config.maildir_root : config.target;
  std::vector<Family> counters;
  for (const QueueCounterSeries& series : kQueueCounterSeries) {
    counters.push_back(registry.AddCounter(series.name, series.help, {"backend", "target"}));
  }
  Family queued = registry.AddGauge("chute_delivery_queued_messages",
                                    "Messages in the delivery queue.", {"backend", "target"});
  Family latency = registry.AddHistogram("chute_delivery_seconds",
                                         "How long the delivery backend took over one batch.",
                                         {"backend", "target"}, metrics::LatencyBounds());
  Family oldest =
      registry.AddGauge("chute_queue_oldest_age_seconds",
                        "Age of the oldest message waiting for delivery (0 when none).");
  Family dead =
      registry.AddGauge("chute_dead_letters", "Dead letters in the dead-letter area now.");
  registry.AddCollector([&queue, backend, target, counters, queued, latency, oldest,
                         dead](Scrape& scrape) {
    const QueueCounters& q = queue.counters();
    for (size_t i = 0; i < counters.size(); ++i) {
      scrape.Add(counters[i], {backend, target}, (q.*kQueueCounterSeries[i].counter).load());
    }
    scrape.Add(queued, {backend, target}, queue.queued());
    scrape.AddLatency(latency, {backend, target}, q.batch_latency);
    int64_t oldest_us = queue.OldestReceivedUnixUs();
    double age_s =
        oldest_us == 0
            ? 0.0
            : std::max(0.0, static_cast<double>(absl::ToUnixMicros(absl::Now()) - oldest_us) / 1e6);
    scrape.Add(oldest, {}, age_s);
    scrape.Add(dead, {}, queue.DeadCount());
  });
}

}  // namespace chute::delivery
