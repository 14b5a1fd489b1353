// metrics.cc: the message trace's series on /metrics, read from the trace Writer.

#include "trace/metrics.h"

namespace chute::trace {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const Writer* trace) {
  if (trace == nullptr) {
    return;  // the trace is off (it could not be opened): no trace series at all
  }
  Family written =
      registry.AddCounter("chute_trace_events_written_total", "Message trace events written.");
  Family lost = registry.AddCounter(
      "chute_trace_events_dropped_total",
      "Message trace events dropped (the trace could not keep up or could not write).");
  registry.AddCollector([trace, written, lost](Scrape& scrape) {
    scrape.Add(written, {}, trace->events_written.load());
    scrape.Add(lost, {}, trace->events_dropped.load());
  });
}

}  // namespace chute::trace
