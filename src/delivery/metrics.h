#pragma once

// Delivery's series on /metrics (docs/architecture.md, Metrics): recipients delivered,
// deferred and dead, batches and their latency, each labelled with the route, its backend and
// its target; each route's queue depth; the oldest message's age and the dead letters. Read
// from the queues at each scrape.

#include "delivery/stage.h"
#include "metrics/registry.h"

namespace chute::delivery {

// RegisterMetrics: delivery's families; `stage` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, DeliveryStage& stage);

}  // namespace chute::delivery
