#pragma once

// Auth's series on /metrics (docs/architecture.md, Metrics): AUTHs the failure throttle
// refused, by reason, and failed AUTHs whose 535 was held back (read from AuthThrottle); the
// OAuth key fetches and how many tenants have keys (read from KeyStore).

#include "auth/key_store.h"
#include "auth/throttle.h"
#include "metrics/registry.h"

namespace chute::auth {

// RegisterMetrics: the throttle's and the key store's families; both must outlive
// `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const AuthThrottle& throttle,
                     const KeyStore& keys);

}  // namespace chute::auth
