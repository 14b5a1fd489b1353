#pragma once

// The spool's series on /metrics (docs/architecture.md, Metrics): its bytes and messages, the
// room reserved by messages being received, group-commit failures and records per group.
// Registered by the composition root, read from SpoolGauges at each scrape.

#include "metrics/registry.h"
#include "spool/spool.h"

namespace chute::spool {

// RegisterMetrics: the spool's families; `gauges` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const SpoolGauges& gauges);

}  // namespace chute::spool
