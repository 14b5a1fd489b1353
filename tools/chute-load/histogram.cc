// histogram.cc: chute-load's log-linear latency histogram: record, merge, percentiles.

#include "tools/chute-load/histogram.h"

#include <algorithm>
#include <cmath>

namespace chute::load {
namespace {

constexpr uint64_t kValueMax = (uint64_t{1} << Histogram::kMagnitudeMaxBits) - 1;
constexpr uint64_t kHalf = Histogram::kSubBuckets / 2;

// Magnitude: floor(log2(value)) for value > 0.
int Magnitude(uint64_t value) { return 63 - __builtin_clzll(value); }

}  // namespace

size_t Histogram::BucketIndex(uint64_t value) {
  value = std::min(value, kValueMax);
  if (value < kSubBuckets) {
    return static_cast<size_t>(value);
  }
  // value in [2^m, 2^(m+1)), m >= kSubBucketBits: kHalf buckets of width 2^(m - 6).
  int m = Magnitude(value);
  int shift = m - (kSubBucketBits - 1);
  uint64_t sub = (value >> shift) - kHalf;  // 0..kHalf-1
  return static_cast<size_t>(kSubBuckets + static_cast<uint64_t>(m - kSubBucketBits) * kHalf + sub);
}

uint64_t Histogram::BucketLow(size_t index) {
  if (index < kSubBuckets) {
    return index;
  }
  uint64_t rest = index - kSubBuckets;
  int m = static_cast<int>(rest / kHalf) + kSubBucketBits;
  uint64_t sub = rest % kHalf;
  int shift = m - (kSubBucketBits - 1);
  return (kHalf + sub) << shift;
}

uint64_t Histogram::BucketHigh(size_t index) {
  if (index < kSubBuckets) {
    return index;
  }
  uint64_t rest = index - kSubBuckets;
  int m = static_cast<int>(rest / kHalf) + kSubBucketBits;
  int shift = m - (kSubBucketBits - 1);
  return BucketLow(index) + (uint64_t{1} << shift) - 1;
}

void Histogram::Record(int64_t value) {
  uint64_t v = value < 0 ? 0 : static_cast<uint64_t>(value);
  ++counts_[BucketIndex(v)];
  ++count_;
  max_ = std::max(max_, v);
  min_ = std::min(min_, v);
}

void Histogram::Merge(const Histogram& other) {
  for (size_t i = 0; i < kBucketCount; ++i) {
    counts_[i] += other.counts_[i];
  }
  count_ += other.count_;
  max_ = std::max(max_, other.max_);
  min_ = std::min(min_, other.min_);
}

uint64_t Histogram::Percentile(double q) const {
  if (count_ == 0) {
    return 0;
  }
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least ceil(q * count) values at or below it.
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::clamp<uint64_t>(rank, 1, count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBucketCount; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      uint64_t mid = BucketLow(i) + (BucketHigh(i) - BucketLow(i)) / 2;
      // The extremes are known exactly; never report beyond them.
      return std::clamp(mid, min(), max_);
    }
  }
  return max_;
}

}  // namespace chute::load
