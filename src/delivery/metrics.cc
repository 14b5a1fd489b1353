// metrics.cc: delivery's series on /metrics, per route, read from each route's DeliveryQueue.

#include "delivery/metrics.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
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

void RegisterMetrics(Registry& registry, DeliveryStage& stage) {
  // route: the route's name; backend: the kind (a small set, for dashboards); target: where it
  // goes (host:port, several joined by commas, a socket path, the Maildir root).
  std::vector<std::vector<std::string>> labels;
  for (size_t r = 0; r < stage.routes(); ++r) {
    const DeliveryConfig& settings = stage.router().route(r).settings;
    std::string target = settings.backend == DeliveryBackend::kMaildir
                             ? settings.maildir_root
                             : absl::StrJoin(settings.targets, ",");
    labels.push_back(
        {stage.router().route(r).name, std::string(DeliveryBackendName(settings.backend)), target});
  }
  const std::vector<std::string> names = {"route", "backend", "target"};
  std::vector<Family> counters;
  for (const QueueCounterSeries& series : kQueueCounterSeries) {
    counters.push_back(registry.AddCounter(series.name, series.help, names));
  }
  Family queued = registry.AddGauge("chute_delivery_queued_messages",
                                    "Messages in the route's delivery queue (a message whose "
                                    "recipients go by several routes is in each of their queues).",
                                    names);
  Family latency = registry.AddHistogram("chute_delivery_seconds",
                                         "How long the delivery backend took over one batch.",
                                         names, metrics::LatencyBounds());
  Family oldest =
      registry.AddGauge("chute_queue_oldest_age_seconds",
                        "Age of the oldest message waiting for delivery (0 when none).");
  Family dead =
      registry.AddGauge("chute_dead_letters", "Dead letters in the dead-letter area now.");
  Family verified = registry.AddCounter(
      "chute_recipient_verifications_total",
      "Recipients verified at RCPT by an LMTP/SMTP route's target (verify_recipients), by "
      "result: exists, unknown (refused), unreachable (could not be asked), cached (answered "
      "from the cache without a probe).",
      {"route", "result"});
  registry.AddCollector([&stage, labels, counters, queued, latency, oldest, dead,
                         verified](Scrape& scrape) {
    for (size_t r = 0; r < stage.routes(); ++r) {
      DeliveryQueue& queue = stage.queue(r);
      const QueueCounters& q = queue.counters();
      const std::vector<std::string>& l = labels[r];
      for (size_t i = 0; i < counters.size(); ++i) {
        scrape.Add(counters[i], {l[0], l[1], l[2]}, (q.*kQueueCounterSeries[i].counter).load());
      }
      scrape.Add(queued, {l[0], l[1], l[2]}, queue.queued());
      scrape.AddLatency(latency, {l[0], l[1], l[2]}, q.batch_latency);
      if (RecipientVerifier* verifier = stage.verifier(r)) {
        const VerifierCounters& v = verifier->counters();
        scrape.Add(verified, {l[0], "exists"}, v.probes_exists.load());
        scrape.Add(verified, {l[0], "unknown"}, v.probes_unknown.load());
        scrape.Add(verified, {l[0], "unreachable"}, v.probes_unreachable.load());
        scrape.Add(verified, {l[0], "cached"}, v.cache_hits.load());
      }
    }
    int64_t oldest_us = stage.OldestReceivedUnixUs();
    double age_s =
        oldest_us == 0
            ? 0.0
            : std::max(0.0, static_cast<double>(absl::ToUnixMicros(absl::Now()) - oldest_us) / 1e6);
    scrape.Add(oldest, {}, age_s);
    scrape.Add(dead, {}, stage.DeadCount());
  });
}

}  // namespace chute::delivery
