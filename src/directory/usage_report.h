#pragma once

// The usage report (docs/architecture.md, Directory): what each HVE account sent per UTC day,
// messages and recipients, with tenant totals, over the last 7/30/90 days or a custom range. One
// implementation for every reader, so that `chutectl report` and the admin listener's /usage
// page show the same numbers: both resolve the range with ResolveUsageRange and read the rows
// with BuildUsageReport (which calls Store::QueryUsage, the one SQL query of the usage table).
//
// Threads: as Store (a Store belongs to one thread).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "directory/directory.h"

namespace chute::directory {

// The "last N days" choices HVE's report offers (and the default when nothing is given).
inline constexpr int kUsageDaysChoices[] = {7, 30, 90};
inline constexpr int kUsageDaysDefault = 7;

// UsageRange: an inclusive range of UTC days, each YYYY-MM-DD.
struct UsageRange {
  std::string from;
  std::string to;
};

// ResolveUsageRange: the range a report covers. Either `days` (one of kUsageDaysChoices: the
// last `days` UTC days, today included, today being `now`'s UTC day), or `from` and `to`
// together (YYYY-MM-DD, from <= to), or none of them (the last kUsageDaysDefault days).
// InvalidArgument, with a message fit for a user, for anything else. `days_flag`,
// `from_flag` and `to_flag` name the options in that message ("--days" or "days").
absl::StatusOr<UsageRange> ResolveUsageRange(const std::optional<std::string>& days,
                                             const std::optional<std::string>& from,
                                             const std::optional<std::string>& to, absl::Time now,
                                             absl::string_view days_flag = "--days",
                                             absl::string_view from_flag = "--from",
                                             absl::string_view to_flag = "--to");

// IsUsageDay: whether `text` is a calendar date written YYYY-MM-DD.
bool IsUsageDay(absl::string_view text);

// UsageDaysIn: how many days [from, to] holds (both valid, from <= to), e.g. 1 when equal.
int64_t UsageDaysIn(const UsageRange& range);

// UsageTenantTotal: one tenant's sums over the report's rows.
struct UsageTenantTotal {
  std::string tenant;
  int64_t messages = 0;
  int64_t recipients = 0;
};

struct UsageReport {
  UsageRange range;
  std::vector<UsageRow> rows;             // ordered by day, tenant, account address
  std::vector<UsageTenantTotal> tenants;  // ordered by tenant name
};

// BuildUsageReport: the rows of `range`, optionally of one tenant (by name, "" = all) and one
// account (`account`: its primary address or display name as the directory knows it now, or
// the address of a removed account; "" = all), with the tenant totals. Internal when the
// database fails.
absl::StatusOr<UsageReport> BuildUsageReport(Store& store, const UsageRange& range,
                                             absl::string_view tenant, absl::string_view account);

}  // namespace chute::directory
