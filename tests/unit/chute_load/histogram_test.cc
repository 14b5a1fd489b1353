// histogram_test.cc: unit tests for chute-load's log-linear latency histogram.

#include "tools/chute-load/histogram.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace chute::load {
namespace {

// Exact nearest-rank percentile of `sorted`.
uint64_t ExactPercentile(const std::vector<uint64_t>& sorted, double q) {
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

void ExpectWithinOnePercent(std::vector<uint64_t> samples) {
  Histogram h;
  for (uint64_t v : samples) {
    h.Record(static_cast<int64_t>(v));
  }
  std::sort(samples.begin(), samples.end());
  ASSERT_EQ(h.count(), samples.size());
  EXPECT_EQ(h.max(), samples.back());
  for (double q : {0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    double exact = static_cast<double>(ExactPercentile(samples, q));
    double got = static_cast<double>(h.Percentile(q));
    EXPECT_LE(std::abs(got - exact), exact * 0.01) << "q=" << q << " exact=" << exact;
  }
}

TEST(HistogramTest, PercentilesOfRandomSamplesAreWithinOnePercent) {
  std::mt19937_64 rng(42);
  std::vector<uint64_t> uniform, lognormal, bimodal;
  std::uniform_int_distribution<uint64_t> u(0, 5'000'000);
  std::lognormal_distribution<double> ln(7.0, 2.0);
  std::normal_distribution<double> fast(300, 30), slow(250'000, 20'000);
  for (int i = 0; i < 100000; ++i) {
    uniform.push_back(u(rng));
    lognormal.push_back(static_cast<uint64_t>(ln(rng)));
    bimodal.push_back(static_cast<uint64_t>(std::max(0.0, i % 100 == 0 ? slow(rng) : fast(rng))));
  }
  ExpectWithinOnePercent(uniform);
  ExpectWithinOnePercent(lognormal);
  ExpectWithinOnePercent(bimodal);
}

TEST(HistogramTest, EveryBucketIsNarrowerThanOneSixtyFourthOfItsValues) {
  for (size_t i = 0; i < Histogram::kBucketCount; ++i) {
    uint64_t low = Histogram::BucketLow(i);
    uint64_t high = Histogram::BucketHigh(i);
    ASSERT_LE(low, high);
    EXPECT_EQ(Histogram::BucketIndex(low), i);
    EXPECT_EQ(Histogram::BucketIndex(high), i);
    if (i + 1 < Histogram::kBucketCount) {
      EXPECT_EQ(Histogram::BucketLow(i + 1), high + 1) << "buckets tile the range";
    }
    if (low >= Histogram::kSubBuckets) {
      EXPECT_LE((high - low + 1) * 64, low) << i;
    } else {
      EXPECT_EQ(low, high) << "small values are exact";
    }
  }
}

TEST(HistogramTest, MergeEqualsRecordingEverythingInOne) {
  Histogram a, b, all;
  for (int64_t v = 0; v < 20000; v += 7) {
    (v % 2 == 0 ? a : b).Record(v * 13);
    all.Record(v * 13);
  }
  a.Merge(b);
  EXPECT_EQ(a.count(), all.count());
  EXPECT_EQ(a.max(), all.max());
  for (double q : {0.5, 0.9, 0.99}) {
    EXPECT_EQ(a.Percentile(q), all.Percentile(q));
  }
}

TEST(HistogramTest, EmptyNegativeAndHugeValues) {
  Histogram h;
  EXPECT_EQ(h.Percentile(0.5), 0u);
  h.Record(-5);
  EXPECT_EQ(h.Percentile(1.0), 0u);
  h.Record(int64_t{1} << 60);  // clamped into the last bucket, the max stays exact
  EXPECT_EQ(h.max(), uint64_t{1} << 60);
  EXPECT_EQ(h.count(), 2u);
}

}  // namespace
}  // namespace chute::load
