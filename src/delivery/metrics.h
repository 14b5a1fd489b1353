#pragma once

// Delivery's series on /metrics (docs/architecture.md, Metrics): recipients delivered,
// deferred and dead, batches and their latency, labelled with the backend and its target; the
// queue's depth, its oldest message's age and the dead letters. Read from the queue at each
// scrape.

#include "base/config.h"
#include "delivery/queue.h"
#include "metrics/registry.h"

namespace chute::delivery {

// RegisterMetrics: delivery's families; `queue` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, DeliveryQueue& queue,
                     const DeliveryConfig& config);

}  // namespace chute::delivery
