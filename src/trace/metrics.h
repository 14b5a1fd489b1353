#pragma once

// The message trace's series on /metrics (docs/architecture.md, Metrics): events written and
// dropped. Read from the trace Writer.

#include "metrics/registry.h"
#include "trace/trace.h"

namespace chute::trace {

// RegisterMetrics: the trace's families; none when `trace` is null (the trace is off).
// `trace` must outlive `registry`'s scrapes.
void RegisterMetrics(metrics::Registry& registry, const Writer* trace);

}  // namespace chute::trace
