#pragma once

// Histogram: a log-linear histogram of non-negative integer values (microseconds here), as
// HdrHistogram lays it out: values below kSubBuckets are counted exactly; above, each power of
// two is split into kSubBuckets / 2 equal buckets, so a bucket's width is at most 1/64 of its
// lower bound. A percentile is reported as the midpoint of its bucket: relative error below
// 1/128 (< 1%), whatever the range. The exact maximum is kept beside. Fixed memory
// (kBucketCount counters), no allocation after construction; one thread owns one; Merge()
// combines the per-thread ones at the end.

#include <array>
#include <cstddef>
#include <cstdint>

namespace chute::load {

class Histogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;  // 128
  // Values up to 2^kMagnitudeMaxBits - 1 (about 9 hours in microseconds) are counted; larger
  // ones are clamped to that (a run is bounded far below it).
  static constexpr int kMagnitudeMaxBits = 45;
  static constexpr size_t kBucketCount =
      kSubBuckets + (kMagnitudeMaxBits - kSubBucketBits) * (kSubBuckets / 2);

  // Record: counts `value` (negative counts as 0).
  void Record(int64_t value);
  // Merge: adds `other`'s counts to this one.
  void Merge(const Histogram& other);
  // Percentile: the value at quantile `q` in [0, 1] (nearest rank); 0 when empty.
  uint64_t Percentile(double q) const;
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }

  // BucketIndex / BucketLow / BucketHigh: exposed for the accuracy tests.
  static size_t BucketIndex(uint64_t value);
  static uint64_t BucketLow(size_t index);
  static uint64_t BucketHigh(size_t index);  // inclusive

 private:
  std::array<uint64_t, kBucketCount> counts_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = UINT64_MAX;
};

}  // namespace chute::load
