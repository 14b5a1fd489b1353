#pragma once

// LatencyHistogram: a Prometheus histogram of durations with fixed buckets from 50 µs to
// 60 s (roughly 1-2.5-5 per decade), lock-free. Observe from any thread (a relaxed atomic add
// per call: give each shard its own to keep the cache line local); AddTo from any thread. The
// exposition (cumulative buckets, le labels, seconds) is metrics/registry.h's: Scrape::AddLatency.

#include <atomic>
#include <cstdint>

namespace chute {

class LatencyHistogram {
 public:
  static constexpr double kBoundsS[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                        0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
                                        2.5,     5,      10,      30,     60};
  static constexpr size_t kBuckets = sizeof(kBoundsS) / sizeof(kBoundsS[0]) + 1;  // + +Inf

  void Observe(int64_t micros) {
    double seconds = static_cast<double>(micros) / 1e6;
    size_t i = 0;
    while (i + 1 < kBuckets && seconds > kBoundsS[i]) {
      ++i;
    }
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<uint64_t>(micros < 0 ? 0 : micros), std::memory_order_relaxed);
  }

  // Merge: adds this histogram's counts into `totals` (kBuckets entries) and `sum_us`.
  void AddTo(uint64_t* totals, uint64_t* sum_us) const {
    for (size_t i = 0; i < kBuckets; ++i) {
      totals[i] += counts_[i].load(std::memory_order_relaxed);
    }
    *sum_us += sum_us_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> counts_[kBuckets] = {};
  std::atomic<uint64_t> sum_us_{0};
};

// MonotonicMicros: CLOCK_MONOTONIC in microseconds (vDSO: no system call).
int64_t MonotonicMicros();

}  // namespace chute
