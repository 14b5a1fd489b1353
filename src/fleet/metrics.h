#pragma once

// The fleet's series on /metrics (docs/fleet.md): whether Redis answers, the nodes alive, this
// node's leases and share, and the lease answers by how they were decided. Registered by the
// composition root when [fleet] redis is set.

#include "fleet/tenant_leases.h"
#include "metrics/registry.h"

namespace chute::fleet {

// RegisterMetrics: `leases` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const TenantLeases& leases);

}  // namespace chute::fleet
