#pragma once

// The caps' series on /metrics (docs/architecture.md, Metrics): refusals by reason, the
// connections counted per client address and the authenticated sessions per tenant, read from
// the ConnectionGate at each scrape. Registered by the composition root.

#include <atomic>
#include <memory>

#include "directory/directory.h"
#include "metrics/registry.h"
#include "policy/connection_gate.h"

namespace chute::policy {

// RegisterMetrics: the gate's families. `gate` and `snapshot` (the directory in force: tenants
// are named from it) must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const ConnectionGate& gate,
                     const std::atomic<std::shared_ptr<const directory::Snapshot>>& snapshot);

}  // namespace chute::policy
