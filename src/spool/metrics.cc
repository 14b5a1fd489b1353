// metrics.cc: the spool's series on /metrics, read from SpoolGauges.

#include "spool/metrics.h"

#include <utility>
#include <vector>

namespace chute::spool {

using metrics::Family;
using metrics::Registry;
using metrics::Scrape;

void RegisterMetrics(Registry& registry, const SpoolGauges& gauges) {
  Family bytes = registry.AddGauge("chute_spool_bytes", "Bytes of spool segment files.");
  Family messages = registry.AddGauge("chute_spool_messages",
                                      "Messages committed and not yet settled by delivery.");
  Family failures = registry.AddCounter("chute_spool_group_commit_failures_total",
                                        "Group commits that failed (451 sent).");
  Family reserved = registry.AddGauge(
      "chute_spool_reserved_bytes",
      "Spool room reserved by the messages being received (SIZE=, else message_size_bytes).");
  // SpoolGauges::CountGroup's buckets: bucket i holds groups of up to 2^(i+1) - 1 records.
  std::vector<double> bounds;
  for (size_t i = 0; i + 1 < kGroupSizeBuckets; ++i) {
    bounds.push_back(static_cast<double>((uint64_t{2} << i) - 1));
  }
  Family records = registry.AddHistogram("chute_spool_group_commit_records",
                                         "Records per group commit (one fdatasync each).", {},
                                         std::move(bounds));
  registry.AddCollector([&gauges, bytes, messages, failures, reserved, records](Scrape& scrape) {
    scrape.Add(bytes, {}, gauges.bytes.load());
    scrape.Add(reserved, {}, gauges.reserved_bytes.load());
    scrape.Add(messages, {}, gauges.messages.load());
    scrape.Add(failures, {}, gauges.group_failures.load());
    uint64_t counts[kGroupSizeBuckets];
    for (size_t i = 0; i < kGroupSizeBuckets; ++i) {
      counts[i] = gauges.group_sizes[i].load();
    }
    scrape.AddHistogram(records, {}, counts, gauges.records_committed.load());
  });
}

}  // namespace chute::spool
