#pragma once

// Auth's series on /metrics (docs/architecture.md, Metrics): AUTHs the failure throttle
// refused, by reason, and failed AUTHs whose 535 was held back. Read from AuthThrottle.

#include "auth/throttle.h"
#include "metrics/registry.h"

namespace chute::auth {

// RegisterMetrics: the throttle's families; `throttle` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const AuthThrottle& throttle);

}  // namespace chute::auth
