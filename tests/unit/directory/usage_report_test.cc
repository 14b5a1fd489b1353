// usage_report_test.cc: unit tests for usage report ranges, rows and filters.

#include "directory/usage_report.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace chute::directory {
namespace {

absl::Time Noon(const char* day) {
  absl::Time time;
  std::string error;
  EXPECT_TRUE(absl::ParseTime("%Y-%m-%d %H:%M", std::string(day) + " 12:00", absl::UTCTimeZone(),
                              &time, &error));
  return time;
}

TEST(ResolveUsageRangeTest, LastDaysEndToday) {
  absl::Time now = Noon("2026-11-27");
  absl::StatusOr<UsageRange> range =
      ResolveUsageRange(std::nullopt, std::nullopt, std::nullopt, now);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->from, "2026-11-21");
  EXPECT_EQ(range->to, "2026-11-27");
  range = ResolveUsageRange(std::string("30"), std::nullopt, std::nullopt, now);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(range->from, "2026-10-29");
  EXPECT_EQ(UsageDaysIn(*range), 30);
  range = ResolveUsageRange(std::string("90"), std::nullopt, std::nullopt, now);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(UsageDaysIn(*range), 90);
}

TEST(ResolveUsageRangeTest, RefusesWhatChutectlRefuses) {
  absl::Time now = Noon("2026-11-27");
  auto message = [&](std::optional<std::string> days, std::optional<std::string> from,
                     std::optional<std::string> to) {
    absl::StatusOr<UsageRange> range = ResolveUsageRange(days, from, to, now);
    EXPECT_TRUE(absl::IsInvalidArgument(range.status()));
    return std::string(range.status().message());
  };
  EXPECT_EQ(message("5", std::nullopt, std::nullopt), "--days is 7, 30 or 90");
  EXPECT_EQ(message("7x", std::nullopt, std::nullopt), "--days is 7, 30 or 90");
  EXPECT_EQ(message(std::nullopt, "2026-01-01", std::nullopt),
            "give --from and --to together, or --days");
  EXPECT_EQ(message("7", "2026-01-01", "2026-01-02"), "give --from and --to together, or --days");
  EXPECT_EQ(message(std::nullopt, "2026-02-30", "2026-03-01"),
            "--from and --to are dates YYYY-MM-DD, --from not after --to");
  EXPECT_EQ(message(std::nullopt, "2026-03-02", "2026-03-01"),
            "--from and --to are dates YYYY-MM-DD, --from not after --to");
  EXPECT_EQ(message(std::nullopt, "2026-1-01", "2026-03-01"),
            "--from and --to are dates YYYY-MM-DD, --from not after --to");
}

TEST(ResolveUsageRangeTest, CustomRange) {
  absl::StatusOr<UsageRange> range = ResolveUsageRange(std::nullopt, std::string("2024-01-01"),
                                                       std::string("2024-12-31"), absl::Now());
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(UsageDaysIn(*range), 366);  // a leap year
  EXPECT_EQ(UsageDaysIn(UsageRange{"2026-03-01", "2026-03-01"}), 1);
}

class UsageReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-usage-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir_ + "/d.db", true);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ASSERT_TRUE(store_->AddTenant("contoso", {"contoso.test"}).ok());
    ASSERT_TRUE(
        store_->AddAccount(NewAccount{"contoso", "Billing", "billing@contoso.test", ""}, 100).ok());
    ASSERT_TRUE(store_
                    ->RecordUsage({{1, "2026-11-20", "billing@contoso.test", "contoso", 3, 7},
                                   {1, "2026-11-21", "billing@contoso.test", "contoso", 1, 1},
                                   {2, "2026-11-21", "gone@contoso.test", "contoso", 2, 2},
                                   {3, "2026-11-21", "app@fabrikam.test", "fabrikam", 5, 50},
                                   {3, "2026-11-22", "app@fabrikam.test", "fabrikam", 9, 9}})
                    .ok());
  }
  void TearDown() override {
    store_.reset();
    std::string command = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(command.c_str()), 0);
  }
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(UsageReportTest, RowsAndTenantTotals) {
  absl::StatusOr<UsageReport> report =
      BuildUsageReport(*store_, UsageRange{"2026-11-20", "2026-11-21"}, "", "");
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->rows.size(), 4u);  // 2026-11-22 is outside the range
  EXPECT_EQ(report->rows[0].day, "2026-11-20");
  ASSERT_EQ(report->tenants.size(), 2u);
  EXPECT_EQ(report->tenants[0].tenant, "contoso");
  EXPECT_EQ(report->tenants[0].messages, 6);
  EXPECT_EQ(report->tenants[0].recipients, 10);
  EXPECT_EQ(report->tenants[1].tenant, "fabrikam");
  EXPECT_EQ(report->tenants[1].recipients, 50);
}

TEST_F(UsageReportTest, FiltersByTenantAndAccount) {
  UsageRange range{"2026-11-01", "2026-11-30"};
  absl::StatusOr<UsageReport> report = BuildUsageReport(*store_, range, "fabrikam", "");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->rows.size(), 2u);
  // By display name, resolved to the primary address.
  report = BuildUsageReport(*store_, range, "", "Billing");
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->rows.size(), 2u);
  // A removed account's history, by its address (any case).
  report = BuildUsageReport(*store_, range, "", "Gone@contoso.test");
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->rows.size(), 1u);
  EXPECT_EQ(report->rows[0].messages, 2);
}

}  // namespace
}  // namespace chute::directory
