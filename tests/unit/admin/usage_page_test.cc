// usage_page_test.cc: unit tests for the /usage page: query parsing, escaping, grouping.

#include "admin/usage_page.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chute::admin {
namespace {

absl::Time Now() {
  absl::Time time;
  std::string error;
  EXPECT_TRUE(absl::ParseTime("%Y-%m-%d", "2026-11-27", absl::UTCTimeZone(), &time, &error));
  return time + absl::Hours(12);
}

std::string Error(absl::string_view query) {
  absl::StatusOr<UsagePageQuery> parsed = ParseUsageQuery(query, Now());
  EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << query;
  return std::string(parsed.status().message());
}

int Count(absl::string_view text, absl::string_view needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != absl::string_view::npos;
       at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST(ParseUsageQueryTest, Defaults) {
  absl::StatusOr<UsagePageQuery> query = ParseUsageQuery("", Now());
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_EQ(query->volume, UsageVolume::kRecipients);
  EXPECT_EQ(query->range.from, "2026-11-21");
  EXPECT_EQ(query->range.to, "2026-11-27");
  EXPECT_EQ(query->days, "7");
}

TEST(ParseUsageQueryTest, DecodesValues) {
  absl::StatusOr<UsagePageQuery> query = ParseUsageQuery(
      "volume=messages&from=2024-01-01&to=2024-12-31&tenant=a+b&account=x%40y.test", Now());
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_EQ(query->volume, UsageVolume::kMessages);
  EXPECT_EQ(query->tenant, "a b");
  EXPECT_EQ(query->account, "x@y.test");
  EXPECT_EQ(query->days, "");
}

TEST(ParseUsageQueryTest, RefusesBadParameters) {
  EXPECT_EQ(Error("days=5"), "days is 7, 30 or 90");
  EXPECT_EQ(Error("volume=bytes"), "volume is recipients or messages");
  EXPECT_EQ(Error("from=2026-01-01"), "give from and to together, or days");
  EXPECT_EQ(Error("from=2026-02-30&to=2026-03-01"),
            "from and to are dates YYYY-MM-DD, from not after to");
  EXPECT_TRUE(absl::StrContains(Error("from=2024-01-01&to=2025-01-01"), "longer than 366 days"));
  EXPECT_EQ(Error("days=7&days=30"), "parameter days is given twice");
  EXPECT_TRUE(absl::StartsWith(Error("colour=red"), "unknown parameter 'colour'"));
  EXPECT_TRUE(absl::StrContains(Error("tenant=%zz"), "badly encoded"));
  EXPECT_TRUE(absl::StrContains(Error("tenant=%4"), "badly encoded"));
  EXPECT_TRUE(absl::StrContains(Error("tenant=%0A"), "control character"));
  EXPECT_TRUE(
      absl::StrContains(Error(absl::StrCat("account=", std::string(400, 'a'))), "longer than"));
}

TEST(RenderUsagePageTest, EscapesNames) {
  absl::StatusOr<UsagePageQuery> query = ParseUsageQuery("tenant=%3Ci%3E", Now());
  ASSERT_TRUE(query.ok());
  directory::UsageReport report;
  report.range = query->range;
  report.rows.push_back({1, "2026-11-27", "\"<script>\"@x.test", "t&co", 1, 2});
  report.tenants.push_back({"t&co", 1, 2});
  std::string page = RenderUsagePage(*query, report);
  EXPECT_FALSE(absl::StrContains(page, "<script>"));
  EXPECT_FALSE(absl::StrContains(page, "<i>"));
  EXPECT_TRUE(absl::StrContains(page, "&quot;&lt;script&gt;&quot;@x.test"));
  EXPECT_TRUE(absl::StrContains(page, "data-tenant=\"t&amp;co\""));
  EXPECT_TRUE(absl::StrContains(page, "&lt;i&gt;"));
}

TEST(RenderUsagePageTest, GroupsSmallAccountsAsOther) {
  absl::StatusOr<UsagePageQuery> query = ParseUsageQuery("days=7", Now());
  ASSERT_TRUE(query.ok());
  directory::UsageReport report;
  report.range = query->range;
  int64_t total = 0;
  for (int i = 0; i < 15; ++i) {  // account i sent i + 1 recipients
    report.rows.push_back(
        {i, "2026-11-26", absl::StrCat("a", i, "@x.test"), "t", 1, static_cast<int64_t>(i + 1)});
    total += i + 1;
  }
  std::string page = RenderUsagePage(*query, report);
  EXPECT_EQ(Count(page, "<li data-series="), static_cast<int>(kUsageSeriesMax));
  // The 9 largest (a14..a6) keep their own series; a0..a5 (1+..+6 = 21) are "other".
  EXPECT_TRUE(absl::StrContains(page, "data-series=\"a6@x.test (t)\""));
  EXPECT_FALSE(absl::StrContains(page, "data-series=\"a5@x.test (t)\""));
  EXPECT_TRUE(absl::StrContains(page, "data-series=\"other (6 accounts)\" data-value=\"21\""));
  EXPECT_EQ(Count(page, "<rect class=\"bar\""), static_cast<int>(kUsageSeriesMax));
  EXPECT_TRUE(
      absl::StrContains(page, absl::StrCat("data-day=\"2026-11-26\" data-total=\"", total)));
  // The table still has every row, with the exact numbers.
  EXPECT_EQ(Count(page, "<tr class=\"usage-row\""), 15);
}

TEST(RenderUsagePageTest, EmptyRangeSaysSo) {
  absl::StatusOr<UsagePageQuery> query = ParseUsageQuery("days=90", Now());
  ASSERT_TRUE(query.ok());
  directory::UsageReport report;
  report.range = query->range;
  std::string page = RenderUsagePage(*query, report);
  EXPECT_TRUE(absl::StrContains(page, "No usage in this range"));
  EXPECT_EQ(Count(page, "<g class=\"day\""), 90);
}

TEST(HandleUsageRequestTest, OnlyItsPath) {
  EXPECT_FALSE(HandleUsageRequest("/nonexistent.db", "GET", "/queue").has_value());
  EXPECT_FALSE(HandleUsageRequest("/nonexistent.db", "GET", "/usagex").has_value());
  std::optional<AdminServer::Answer> answer =
      HandleUsageRequest("/nonexistent.db", "POST", "/usage");
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 405);
  answer = HandleUsageRequest("/nonexistent.db", "GET", "/usage?days=3");
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 400);
  answer = HandleUsageRequest("/nonexistent/dir/d.db", "GET", "/usage");
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 500);
}

}  // namespace
}  // namespace chute::admin
