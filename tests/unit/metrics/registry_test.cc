// registry_test.cc: the exposition's escaping, number formats, histograms and sample order.

#include "metrics/registry.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace chute::metrics {
namespace {

std::string Format(Value value) {
  std::string out;
  value.AppendTo(&out);
  return out;
}

TEST(RegistryTest, HostileLabelValuesAreEscaped) {
  Registry registry;
  Family f = registry.AddGauge("x_tenant_connections", "Sessions per tenant.", {"tenant"});
  registry.AddCollector([&](Scrape& scrape) {
    scrape.Add(f, {"a\"b"}, 1);
    scrape.Add(f, {"back\\slash"}, 2);
    scrape.Add(f, {"new\nline"}, 3);
    scrape.Add(f, {"\"} 99\nevil_total 1\n# "}, 4);
  });
  EXPECT_EQ(registry.Text(),
            "# HELP x_tenant_connections Sessions per tenant.\n"
            "# TYPE x_tenant_connections gauge\n"
            "x_tenant_connections{tenant=\"a\\\"b\"} 1\n"
            "x_tenant_connections{tenant=\"back\\\\slash\"} 2\n"
            "x_tenant_connections{tenant=\"new\\nline\"} 3\n"
            "x_tenant_connections{tenant=\"\\\"} 99\\nevil_total 1\\n# \"} 4\n");
}

TEST(RegistryTest, HelpEscapesBackslashAndNewlineOnly) {
  Registry registry;
  registry.AddCounter("x_total", "Says \"hi\"\\ and\nmore.");
  EXPECT_EQ(registry.Text(),
            "# HELP x_total Says \"hi\"\\\\ and\\nmore.\n"
            "# TYPE x_total counter\n");
}

TEST(RegistryTest, FamilyWithoutSamplesPrintsItsHelpAndType) {
  Registry registry;
  registry.AddCounter("x_replies_total", "Replies.", {"code"});
  registry.AddGauge("x_open", "Open.");
  EXPECT_EQ(registry.Text(),
            "# HELP x_replies_total Replies.\n# TYPE x_replies_total counter\n"
            "# HELP x_open Open.\n# TYPE x_open gauge\n");
}

TEST(RegistryTest, IntegersPrintExactlyWithoutExponent) {
  EXPECT_EQ(Format(uint64_t{0}), "0");
  EXPECT_EQ(Format(std::numeric_limits<uint64_t>::max()), "18446744073709551615");
  EXPECT_EQ(Format(int64_t{-42}), "-42");
  EXPECT_EQ(Format(std::numeric_limits<int64_t>::min()), "-9223372036854775808");
  EXPECT_EQ(Format(size_t{1000000}), "1000000");
  EXPECT_EQ(Format(1'000'000'000.0), "1000000000");  // a double holding an integer
}

TEST(RegistryTest, DoublesPrintShortestAndInfinities) {
  EXPECT_EQ(Format(0.5), "0.5");
  EXPECT_EQ(Format(0.00005), "5e-05");
  EXPECT_EQ(Format(0.0005), "0.0005");  // %g's style: fixed from 1e-4 up
  EXPECT_EQ(Format(1234567.891), "1234567.891");
  EXPECT_EQ(Format(0.1 + 0.2), "0.30000000000000004");  // reads back the same double
  EXPECT_EQ(Format(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(Format(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(Format(std::nan("")), "NaN");
  EXPECT_EQ(Format(1e300), "1e+300");
}

TEST(RegistryTest, ValuesAddExactlyWithinAKind) {
  Value v = uint64_t{std::numeric_limits<uint64_t>::max() - 1};
  v += uint64_t{1};
  EXPECT_EQ(Format(v), "18446744073709551615");
  Value mixed = uint64_t{1};
  mixed += 0.5;
  EXPECT_EQ(Format(mixed), "1.5");
}

TEST(RegistryTest, CounterAndGaugeLinesWithAndWithoutLabels) {
  Registry registry;
  Family accepted = registry.AddCounter("x_accepted_total", "Accepted.", {"shard"});
  Family age = registry.AddGauge("x_age_seconds", "Age.");
  registry.AddCollector([&](Scrape& scrape) {
    scrape.Add(accepted, {"0"}, uint64_t{7});
    scrape.Add(accepted, {"1"}, uint64_t{0});
    scrape.Add(age, {}, 2.25);
  });
  EXPECT_EQ(registry.Text(),
            "# HELP x_accepted_total Accepted.\n# TYPE x_accepted_total counter\n"
            "x_accepted_total{shard=\"0\"} 7\nx_accepted_total{shard=\"1\"} 0\n"
            "# HELP x_age_seconds Age.\n# TYPE x_age_seconds gauge\nx_age_seconds 2.25\n");
}

TEST(RegistryTest, OrderIsRegistrationThenFirstAddAndSameLabelsSum) {
  Registry registry;
  Family b = registry.AddCounter("x_b_total", "B.", {"code", "enhanced"});
  Family a = registry.AddCounter("x_a_total", "A.");
  // Two collectors (two shards) add to the same series; a's collector runs first.
  registry.AddCollector([&](Scrape& scrape) {
    scrape.Add(a, {}, 1);
    scrape.Add(b, {"550", "5.7.54"}, uint64_t{2});
    scrape.Add(b, {"451", "4.3.0"}, uint64_t{1});
  });
  registry.AddCollector([&](Scrape& scrape) {
    scrape.Add(b, {"451", "4.3.0"}, uint64_t{5});
    scrape.Add(b, {"421", ""}, uint64_t{1});
    scrape.Add(a, {}, 1);
  });
  std::string text = registry.Text();
  EXPECT_EQ(text,
            "# HELP x_b_total B.\n# TYPE x_b_total counter\n"
            "x_b_total{code=\"550\",enhanced=\"5.7.54\"} 2\n"
            "x_b_total{code=\"451\",enhanced=\"4.3.0\"} 6\n"
            "x_b_total{code=\"421\",enhanced=\"\"} 1\n"
            "# HELP x_a_total A.\n# TYPE x_a_total counter\nx_a_total 2\n");
  EXPECT_EQ(registry.Text(), text);  // every scrape starts afresh, in the same order
}

TEST(RegistryTest, LabelValuesCannotFakeAnotherSeries) {
  // "a" + "bc" and "ab" + "c" are two series, whatever the key is made of.
  Registry registry;
  Family f = registry.AddCounter("x_total", "X.", {"p", "q"});
  registry.AddCollector([&](Scrape& scrape) {
    scrape.Add(f, {"a", "bc"}, 1);
    scrape.Add(f, {"ab", "c"}, 1);
  });
  EXPECT_EQ(registry.Text(),
            "# HELP x_total X.\n# TYPE x_total counter\n"
            "x_total{p=\"a\",q=\"bc\"} 1\nx_total{p=\"ab\",q=\"c\"} 1\n");
}

TEST(RegistryTest, HistogramBucketsAreCumulativeWithLeLast) {
  Registry registry;
  Family f = registry.AddHistogram("x_records", "Records.", {"backend"}, {1, 3, 7});
  registry.AddCollector([&](Scrape& scrape) {
    const uint64_t counts[] = {2, 0, 1, 1};
    scrape.AddHistogram(f, {"smtp"}, counts, uint64_t{16});
    scrape.AddHistogram(f, {"smtp"}, counts, uint64_t{16});  // a second shard's
  });
  EXPECT_EQ(registry.Text(),
            "# HELP x_records Records.\n# TYPE x_records histogram\n"
            "x_records_bucket{backend=\"smtp\",le=\"1\"} 4\n"
            "x_records_bucket{backend=\"smtp\",le=\"3\"} 4\n"
            "x_records_bucket{backend=\"smtp\",le=\"7\"} 6\n"
            "x_records_bucket{backend=\"smtp\",le=\"+Inf\"} 8\n"
            "x_records_sum{backend=\"smtp\"} 32\n"
            "x_records_count{backend=\"smtp\"} 8\n");
}

TEST(RegistryTest, LatencyHistogramInSeconds) {
  // The buckets of base/histogram.h, as chute_end_of_data_to_reply_seconds prints them.
  LatencyHistogram h;
  h.Observe(40);          // 40 µs: the first bucket (≤ 50 µs)
  h.Observe(1000);        // exactly 1 ms: the ≤ 0.001 bucket
  h.Observe(90'000'000);  // 90 s: only +Inf
  Registry registry;
  Family f = registry.AddHistogram("x_seconds", "Latency.", {}, LatencyBounds());
  registry.AddCollector([&](Scrape& scrape) { scrape.AddLatency(f, {}, h); });
  std::string out = registry.Text();
  EXPECT_NE(out.find("\nx_seconds_bucket{le=\"5e-05\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\nx_seconds_bucket{le=\"0.0005\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("\nx_seconds_bucket{le=\"0.001\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("\nx_seconds_bucket{le=\"60\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("\nx_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("\nx_seconds_sum 90.00104\nx_seconds_count 3\n"), std::string::npos) << out;
}

TEST(RegistryTest, EmptyHistogramFamilyAndZeroSeries) {
  Registry registry;
  Family f = registry.AddHistogram("x_seconds", "Latency.", {"backend"}, {0.5});
  registry.AddHistogram("x_unused_seconds", "Unused.", {}, {0.5});
  registry.AddCollector([&](Scrape& scrape) {
    const uint64_t counts[] = {0, 0};
    scrape.AddHistogram(f, {"maildir"}, counts, 0.0);
  });
  EXPECT_EQ(registry.Text(),
            "# HELP x_seconds Latency.\n# TYPE x_seconds histogram\n"
            "x_seconds_bucket{backend=\"maildir\",le=\"0.5\"} 0\n"
            "x_seconds_bucket{backend=\"maildir\",le=\"+Inf\"} 0\n"
            "x_seconds_sum{backend=\"maildir\"} 0\nx_seconds_count{backend=\"maildir\"} 0\n"
            "# HELP x_unused_seconds Unused.\n# TYPE x_unused_seconds histogram\n");
}

TEST(RegistryDeathTest, BadNamesAndTwiceRegisteredFamiliesAreBugs) {
  Registry registry;
  registry.AddCounter("x_total", "X.");
  EXPECT_DEATH(registry.AddCounter("x_total", "Again."), "x_total");
  EXPECT_DEATH(registry.AddGauge("0x", "Digit first."), "CHECK failed");
  EXPECT_DEATH(registry.AddGauge("x-y", "Dash."), "CHECK failed");
  EXPECT_DEATH(registry.AddGauge("x_y", "Label.", {"__reserved"}), "CHECK failed");
  EXPECT_DEATH(registry.AddHistogram("x_h", "Le.", {"le"}, {1}), "CHECK failed");
  EXPECT_DEATH(registry.AddHistogram("x_h", "Unsorted.", {}, {2, 1}), "CHECK failed");
}

}  // namespace
}  // namespace chute::metrics
