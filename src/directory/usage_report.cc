// usage_report.cc: resolves a usage report's day range and reads its rows and tenant totals.

#include "directory/usage_report.h"

#include <map>
#include <memory>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace chute::directory {
namespace {

constexpr absl::string_view kDayFormat = "%Y-%m-%d";

std::optional<absl::Time> ParseDay(absl::string_view text) {
  absl::Time time;
  std::string error;
  if (text.size() != 10 ||
      !absl::ParseTime(kDayFormat, std::string(text), absl::UTCTimeZone(), &time, &error)) {
    return std::nullopt;
  }
  return time;
}

std::string FormatDay(absl::Time time) {
  return absl::FormatTime(kDayFormat, time, absl::UTCTimeZone());
}

}  // namespace

bool IsUsageDay(absl::string_view text) { return ParseDay(text).has_value(); }

int64_t UsageDaysIn(const UsageRange& range) {
  std::optional<absl::Time> from = ParseDay(range.from);
  std::optional<absl::Time> to = ParseDay(range.to);
  if (!from || !to || *from > *to) {
    return 0;
  }
  return absl::ToInt64Hours(*to - *from) / 24 + 1;
}

absl::StatusOr<UsageRange> ResolveUsageRange(const std::optional<std::string>& days,
                                             const std::optional<std::string>& from,
                                             const std::optional<std::string>& to, absl::Time now,
                                             absl::string_view days_flag,
                                             absl::string_view from_flag,
                                             absl::string_view to_flag) {
  if (from || to) {
    if (days || !from || !to) {
      return absl::InvalidArgumentError(
          absl::StrCat("give ", from_flag, " and ", to_flag, " together, or ", days_flag));
    }
    std::optional<absl::Time> first = ParseDay(*from);
    std::optional<absl::Time> last = ParseDay(*to);
    if (!first || !last || *first > *last) {
      return absl::InvalidArgumentError(absl::StrCat(from_flag, " and ", to_flag,
                                                     " are dates YYYY-MM-DD, ", from_flag,
                                                     " not after ", to_flag));
    }
    return UsageRange{*from, *to};
  }
  int count = kUsageDaysDefault;
  if (days) {
    int parsed = 0;
    bool offered = false;
    if (absl::SimpleAtoi(*days, &parsed)) {
      for (int choice : kUsageDaysChoices) {
        offered |= parsed == choice;
      }
    }
    if (!offered) {
      return absl::InvalidArgumentError(absl::StrCat(days_flag, " is 7, 30 or 90"));
    }
    count = parsed;
  }
  return UsageRange{FormatDay(now - absl::Hours(24 * (count - 1))), FormatDay(now)};
}

absl::StatusOr<UsageReport> BuildUsageReport(Store& store, const UsageRange& range,
                                             absl::string_view tenant, absl::string_view account) {
  std::string address;
  if (!account.empty()) {
    absl::StatusOr<std::shared_ptr<const Snapshot>> snapshot = store.LoadSnapshot();
    if (!snapshot.ok()) {
      return snapshot.status();
    }
    bool ambiguous = false;
    const Account* found = (*snapshot)->FindAccountByIdentity(account, &ambiguous);
    // A removed account's history stays in the usage table under its address.
    address = found != nullptr ? found->primary_address : std::string(account);
  }
  absl::StatusOr<std::vector<UsageRow>> rows =
      store.QueryUsage(range.from, range.to, tenant, address);
  if (!rows.ok()) {
    return rows.status();
  }
  UsageReport report{range, std::move(*rows), {}};
  std::map<std::string, UsageTenantTotal> totals;
  for (const UsageRow& row : report.rows) {
    UsageTenantTotal& total = totals[row.tenant];
    total.tenant = row.tenant;
    total.messages += row.messages;
    total.recipients += row.recipients;
  }
  for (auto& [name, total] : totals) {
    report.tenants.push_back(std::move(total));
  }
  return report;
}

}  // namespace chute::directory
