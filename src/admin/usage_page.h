#pragma once

// The /usage page of the admin listener: HVE's usage report as HTML, a stacked bar chart
// (inline SVG) of recipients or messages per UTC day per account, and a table of the exact
// numbers. No external assets and no JavaScript: the query string selects the view, and a
// plain GET form edits it.
//
//   GET /usage?volume=recipients|messages&days=7|30|90
//   GET /usage?from=YYYY-MM-DD&to=YYYY-MM-DD&tenant=NAME&account=ADDRESS
//   ...&ticket=T   a browser's short-lived pass (admin/access.h); the page's links keep it
//
// The numbers are those of `chutectl report`: the range and the rows come from the same
// functions (directory/usage_report.h). Bounded: at most kUsagePageDaysMax days, at most
// kUsageSeriesMax series in the chart (the smallest accounts are summed as "other"), at most
// kUsageTableRowsMax rows in the table. A bad parameter is a 400 that says which and why.
//
// Stable hooks for tests and scrapers: every table row is `tr.usage-row` with data-day,
// data-tenant and data-account; its numbers are `td.messages` and `td.recipients`; tenant
// totals are `tr.tenant-total` (data-tenant) with the same two cells; the chart's bars are
// `rect.bar` with data-day, data-series and data-value.
//
// Threads: the admin thread. Each request opens its own read connection to the database.

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "admin/admin_server.h"
#include "directory/usage_report.h"

namespace chute::admin {

// Longest range the page draws: a year, leap day included.
inline constexpr int64_t kUsagePageDaysMax = 366;
// Chart series (one per tenant and account): the largest kUsageSeriesMax - 1 by volume in the
// range, and "other" for the rest when there are more.
inline constexpr size_t kUsageSeriesMax = 10;
// Rows of the exact-numbers table; beyond it the page says how many it left out and points
// to `chutectl report --csv`.
inline constexpr size_t kUsageTableRowsMax = 5000;
// Longest accepted value of one query parameter (addresses are at most 254 bytes).
inline constexpr size_t kUsageParameterBytesMax = 320;

enum class UsageVolume { kRecipients, kMessages };

// UsagePageQuery: what the query string selected.
struct UsagePageQuery {
  UsageVolume volume = UsageVolume::kRecipients;
  directory::UsageRange range;
  std::string tenant;   // "" = all tenants
  std::string account;  // "" = all accounts
  std::string days;     // the days= given, "" when none (for the page's links)
  std::string ticket;   // the ticket= that let a browser in (admin/access.h), kept in the links
};

// ParseUsageQuery: the view the query string `query` (after '?', percent-encoded) selects,
// `now` giving today's UTC day. InvalidArgument, with a message naming the parameter, for an
// unknown or repeated parameter, a bad value, a bad encoding or a range over
// kUsagePageDaysMax days.
absl::StatusOr<UsagePageQuery> ParseUsageQuery(absl::string_view query, absl::Time now);

// RenderUsagePage: the whole HTML document for `report` as `query` asked for it.
std::string RenderUsagePage(const UsagePageQuery& query, const directory::UsageReport& report);

// HandleUsageRequest: the answer to `method` `target` (path and query string) when the path
// is /usage, else nothing. Reads the directory database at `database`; 400 for bad
// parameters, 405 for a method other than GET, 500 when the database cannot be read.
std::optional<AdminServer::Answer> HandleUsageRequest(const std::string& database,
                                                      absl::string_view method,
                                                      absl::string_view target);

}  // namespace chute::admin
