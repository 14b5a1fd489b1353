// usage_page.cc: renders the /usage page: the usage report as an SVG bar chart and a table.

#include "admin/usage_page.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "directory/directory.h"

namespace chute::admin {
namespace {

// Chart geometry (SVG user units; the SVG scales to the page width).
constexpr int kChartWidth = 960;
constexpr int kChartHeight = 360;
constexpr int kPlotLeft = 72;
constexpr int kPlotRight = 16;
constexpr int kPlotTop = 16;
constexpr int kPlotBottom = 56;
constexpr int kPlotWidth = kChartWidth - kPlotLeft - kPlotRight;
constexpr int kPlotHeight = kChartHeight - kPlotTop - kPlotBottom;
constexpr int kYTicksWanted = 5;
constexpr int kXLabelsMax = 12;
static_assert(kPlotWidth > 0 && kPlotHeight > 0);

// Observable's 10-colour categorical palette (distinct in colour and lightness); "other" is
// the last, grey.
constexpr const char* kPalette[] = {"#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951",
                                    "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e", "#9498a0"};
static_assert(std::size(kPalette) >= kUsageSeriesMax);

constexpr absl::string_view kOtherSeries = "other";

std::string Html(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// PercentDecode: application/x-www-form-urlencoded ('+' is a space). Nothing when an escape
// is broken or decodes to a control character (no name or address holds one).
std::optional<std::string> PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (i + 2 >= text.size()) {
        return std::nullopt;
      }
      int high = HexValue(text[i + 1]);
      int low = HexValue(text[i + 2]);
      if (high < 0 || low < 0) {
        return std::nullopt;
      }
      c = static_cast<char>(high * 16 + low);
      i += 2;
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return std::nullopt;
    }
    out += c;
  }
  return out;
}

std::string UrlEncode(absl::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '@') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

absl::string_view VolumeName(UsageVolume volume) {
  return volume == UsageVolume::kMessages ? "messages" : "recipients";
}

int64_t VolumeOf(const directory::UsageRow& row, UsageVolume volume) {
  return volume == UsageVolume::kMessages ? row.messages : row.recipients;
}

// A link to this page with `query`'s filters and the given view.
std::string Link(const UsagePageQuery& query, UsageVolume volume, absl::string_view days) {
  std::string link = absl::StrCat("/usage?volume=", VolumeName(volume));
  if (!days.empty()) {
    absl::StrAppend(&link, "&days=", days);
  } else {
    absl::StrAppend(&link, "&from=", query.range.from, "&to=", query.range.to);
  }
  if (!query.tenant.empty()) {
    absl::StrAppend(&link, "&tenant=", UrlEncode(query.tenant));
  }
  if (!query.account.empty()) {
    absl::StrAppend(&link, "&account=", UrlEncode(query.account));
  }
  if (!query.ticket.empty()) {
    absl::StrAppend(&link, "&ticket=", UrlEncode(query.ticket));
  }
  return link;
}

struct Series {
  std::string key;    // tenant "\x1f" account, or "other"
  std::string label;  // what the legend shows
  int64_t total = 0;
  std::string colour;
};

std::string SeriesKey(const directory::UsageRow& row) {
  return absl::StrCat(row.tenant, "\x1f", row.address);
}

// Chart: the series (largest first, "other" last) and each day's value per series.
struct Chart {
  std::vector<std::string> days;
  std::vector<Series> series;
  absl::flat_hash_map<std::string, size_t> series_of_key;  // row key -> index in series
  std::vector<std::vector<int64_t>> values;                // [day][series]
  int64_t day_max = 0;
};

std::vector<std::string> DaysOf(const directory::UsageRange& range) {
  std::vector<std::string> days;
  absl::Time day;
  std::string error;
  absl::ParseTime("%Y-%m-%d", range.from, absl::UTCTimeZone(), &day, &error);
  int64_t count = directory::UsageDaysIn(range);
  for (int64_t i = 0; i < count; ++i) {
    days.push_back(absl::FormatTime("%Y-%m-%d", day + absl::Hours(24 * i), absl::UTCTimeZone()));
  }
  return days;
}

void ChooseSeries(const directory::UsageReport& report, UsageVolume volume, Chart* chart) {
  std::map<std::string, Series> by_key;
  for (const directory::UsageRow& row : report.rows) {
    Series& series = by_key[SeriesKey(row)];
    series.key = SeriesKey(row);
    series.label = absl::StrCat(row.address, " (", row.tenant, ")");
    series.total += VolumeOf(row, volume);
  }
  std::vector<Series> all;
  for (auto& [key, series] : by_key) {
    all.push_back(std::move(series));
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const Series& a, const Series& b) { return a.total > b.total; });
  size_t kept = all.size() <= kUsageSeriesMax ? all.size() : kUsageSeriesMax - 1;
  for (size_t i = 0; i < all.size(); ++i) {
    if (i < kept) {
      all[i].colour = kPalette[i];
      chart->series_of_key[all[i].key] = i;
      chart->series.push_back(std::move(all[i]));
      continue;
    }
    if (chart->series.size() == kept) {
      chart->series.push_back(Series{std::string(kOtherSeries),
                                     absl::StrCat("other (", all.size() - kept, " accounts)"), 0,
                                     kPalette[kUsageSeriesMax - 1]});
    }
    chart->series[kept].total += all[i].total;
    chart->series_of_key[all[i].key] = kept;
  }
}

Chart BuildChart(const directory::UsageReport& report, UsageVolume volume) {
  Chart chart;
  chart.days = DaysOf(report.range);
  ChooseSeries(report, volume, &chart);
  chart.values.assign(chart.days.size(), std::vector<int64_t>(chart.series.size(), 0));
  absl::flat_hash_map<std::string, size_t> day_index;
  for (size_t i = 0; i < chart.days.size(); ++i) {
    day_index[chart.days[i]] = i;
  }
  for (const directory::UsageRow& row : report.rows) {
    auto day = day_index.find(row.day);
    if (day != day_index.end()) {
      chart.values[day->second][chart.series_of_key[SeriesKey(row)]] += VolumeOf(row, volume);
    }
  }
  for (const std::vector<int64_t>& day : chart.values) {
    int64_t sum = 0;
    for (int64_t value : day) {
      sum += value;
    }
    chart.day_max = std::max(chart.day_max, sum);
  }
  return chart;
}

// NiceStep: a 1, 2 or 5 times a power of ten step so that about kYTicksWanted ticks cover
// `max` (counts: never below 1).
int64_t NiceStep(int64_t max) {
  double raw = static_cast<double>(std::max<int64_t>(max, 1)) / kYTicksWanted;
  double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    if (factor * magnitude >= raw) {
      return std::max<int64_t>(1, static_cast<int64_t>(std::llround(factor * magnitude)));
    }
  }
  return std::max<int64_t>(1, static_cast<int64_t>(std::llround(10 * magnitude)));
}

void AppendAxes(const Chart& chart, int64_t axis_max, int64_t step, absl::string_view volume,
                std::string* svg) {
  for (int64_t tick = 0; tick <= axis_max; tick += step) {
    double y = kPlotTop + kPlotHeight - static_cast<double>(tick) * kPlotHeight / axis_max;
    absl::StrAppendFormat(svg,
                          "<line class=\"grid\" x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>"
                          "<text class=\"tick\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\" "
                          "dominant-baseline=\"middle\">%d</text>\n",
                          kPlotLeft, kPlotLeft + kPlotWidth, y, y, kPlotLeft - 6, y, tick);
  }
  size_t every = (chart.days.size() + kXLabelsMax - 1) / kXLabelsMax;
  double slot = static_cast<double>(kPlotWidth) / static_cast<double>(chart.days.size());
  for (size_t i = 0; i < chart.days.size(); i += std::max<size_t>(every, 1)) {
    absl::StrAppendFormat(svg,
                          "<text class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s"
                          "</text>\n",
                          kPlotLeft + slot * (static_cast<double>(i) + 0.5),
                          kPlotTop + kPlotHeight + 18, chart.days[i].substr(5));
  }
  absl::StrAppendFormat(svg,
                        "<line class=\"axis\" x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\"/>"
                        "<text class=\"label\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">UTC day "
                        "(%s to %s)</text>"
                        "<text class=\"label\" transform=\"rotate(-90)\" x=\"%d\" y=\"16\" "
                        "text-anchor=\"middle\">%s per day</text>\n",
                        kPlotLeft, kPlotLeft + kPlotWidth, kPlotTop + kPlotHeight,
                        kPlotTop + kPlotHeight, kPlotLeft + kPlotWidth / 2, kChartHeight - 10,
                        chart.days.front(), chart.days.back(), -(kPlotTop + kPlotHeight / 2),
                        volume);
}

void AppendBars(const Chart& chart, int64_t axis_max, absl::string_view volume, std::string* svg) {
  double slot = static_cast<double>(kPlotWidth) / static_cast<double>(chart.days.size());
  double width = std::max(slot * 0.8, 0.5);
  for (size_t d = 0; d < chart.days.size(); ++d) {
    int64_t sum = 0;
    for (int64_t value : chart.values[d]) {
      sum += value;
    }
    double x = kPlotLeft + slot * static_cast<double>(d) + (slot - width) / 2;
    absl::StrAppendFormat(svg,
                          "<g class=\"day\" data-day=\"%s\" data-total=\"%d\"><title>%s: %d %s"
                          "</title>\n",
                          chart.days[d], sum, chart.days[d], sum, volume);
    double base = kPlotTop + kPlotHeight;
    for (size_t s = 0; s < chart.series.size(); ++s) {
      int64_t value = chart.values[d][s];
      if (value == 0) {
        continue;
      }
      double height = static_cast<double>(value) * kPlotHeight / static_cast<double>(axis_max);
      base -= height;
      absl::StrAppendFormat(svg,
                            "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" "
                            "height=\"%.2f\" fill=\"%s\" data-day=\"%s\" data-series=\"%s\" "
                            "data-value=\"%d\"><title>%s, %s: %d %s</title></rect>\n",
                            x, base, width, height, chart.series[s].colour, chart.days[d],
                            Html(chart.series[s].label), value, chart.days[d],
                            Html(chart.series[s].label), value, volume);
    }
    svg->append("</g>\n");
  }
}

std::string RenderChart(const Chart& chart, UsageVolume volume, const UsagePageQuery& query) {
  absl::string_view volume_name = VolumeName(volume);
  int64_t step = NiceStep(chart.day_max);
  int64_t axis_max = std::max<int64_t>(step, (chart.day_max + step - 1) / step * step);
  std::string svg = absl::StrFormat(
      "<svg class=\"chart\" role=\"img\" aria-labelledby=\"chart-title chart-desc\" "
      "viewBox=\"0 0 %d %d\" xmlns=\"http://www.w3.org/2000/svg\">\n"
      "<title id=\"chart-title\">%s per UTC day, %s to %s</title>\n"
      "<desc id=\"chart-desc\">Stacked bars, one per day, one colour per account; the table "
      "below has the exact numbers.</desc>\n",
      kChartWidth, kChartHeight, volume == UsageVolume::kMessages ? "Messages" : "Recipients",
      query.range.from, query.range.to);
  AppendAxes(chart, axis_max, step, volume_name, &svg);
  AppendBars(chart, axis_max, volume_name, &svg);
  if (chart.series.empty()) {
    absl::StrAppendFormat(&svg,
                          "<text class=\"empty\" x=\"%d\" y=\"%d\" text-anchor=\"middle\">No "
                          "usage in this range</text>\n",
                          kPlotLeft + kPlotWidth / 2, kPlotTop + kPlotHeight / 2);
  }
  svg.append("</svg>\n");
  return svg;
}

std::string RenderLegend(const Chart& chart) {
  std::string out = "<ul class=\"legend\" aria-label=\"Legend\">\n";
  for (const Series& series : chart.series) {
    absl::StrAppendFormat(&out,
                          "<li data-series=\"%s\"><svg width=\"12\" height=\"12\" "
                          "aria-hidden=\"true\"><rect width=\"12\" height=\"12\" fill=\"%s\"/>"
                          "</svg> %s <span class=\"series-total\">%d</span></li>\n",
                          Html(series.label), series.colour, Html(series.label), series.total);
  }
  out.append("</ul>\n");
  return out;
}

std::string RenderTables(const directory::UsageReport& report, UsageVolume volume) {
  std::string out =
      "<h2>Per account per day</h2>\n<table class=\"usage\">\n<thead><tr><th scope=\"col\">Day"
      "</th><th scope=\"col\">Tenant</th><th scope=\"col\">Account</th><th scope=\"col\">"
      "Messages</th><th scope=\"col\">Recipients</th></tr></thead>\n<tbody>\n";
  size_t shown = std::min(report.rows.size(), kUsageTableRowsMax);
  for (size_t i = 0; i < shown; ++i) {
    const directory::UsageRow& row = report.rows[i];
    absl::StrAppendFormat(&out,
                          "<tr class=\"usage-row\" data-day=\"%s\" data-tenant=\"%s\" "
                          "data-account=\"%s\"><td>%s</td><td>%s</td><td>%s</td>"
                          "<td class=\"messages num\">%d</td><td class=\"recipients num\">%d</td>"
                          "</tr>\n",
                          row.day, Html(row.tenant), Html(row.address), row.day, Html(row.tenant),
                          Html(row.address), row.messages, row.recipients);
  }
  out.append("</tbody>\n</table>\n");
  if (shown < report.rows.size()) {
    absl::StrAppendFormat(
        &out,
        "<p class=\"truncated\" data-rows-omitted=\"%d\">%d more rows not "
        "shown: narrow the range or use <code>chutectl report --csv</code>.</p>\n",
        report.rows.size() - shown, report.rows.size() - shown);
  }
  out.append(
      "<h2>Tenant totals</h2>\n<table class=\"totals\">\n<thead><tr><th scope=\"col\">Tenant</th>"
      "<th scope=\"col\">Messages</th><th scope=\"col\">Recipients</th></tr></thead>\n<tbody>\n");
  for (const directory::UsageTenantTotal& total : report.tenants) {
    absl::StrAppendFormat(&out,
                          "<tr class=\"tenant-total\" data-tenant=\"%s\"><td>%s</td>"
                          "<td class=\"messages num\">%d</td><td class=\"recipients num\">%d</td>"
                          "</tr>\n",
                          Html(total.tenant), Html(total.tenant), total.messages, total.recipients);
  }
  out.append("</tbody>\n</table>\n");
  (void)volume;
  return out;
}

std::string RenderControls(const UsagePageQuery& query) {
  std::string out = "<nav>\n<p>Volume: ";
  for (UsageVolume volume : {UsageVolume::kRecipients, UsageVolume::kMessages}) {
    absl::StrAppendFormat(&out, "<a href=\"%s\"%s>%s</a> ", Html(Link(query, volume, query.days)),
                          volume == query.volume ? " aria-current=\"page\"" : "",
                          VolumeName(volume));
  }
  out.append("&middot; Last: ");
  for (int days : directory::kUsageDaysChoices) {
    std::string text = absl::StrCat(days);
    absl::StrAppendFormat(&out, "<a href=\"%s\"%s>%d days</a> ",
                          Html(Link(query, query.volume, text)),
                          query.days == text ? " aria-current=\"page\"" : "", days);
  }
  absl::StrAppendFormat(
      &out,
      "</p>\n<form method=\"get\" action=\"/usage\">\n"
      "<input type=\"hidden\" name=\"volume\" value=\"%s\">\n%s"
      "<label>From <input type=\"date\" name=\"from\" value=\"%s\" required></label>\n"
      "<label>To <input type=\"date\" name=\"to\" value=\"%s\" required></label>\n"
      "<label>Tenant <input type=\"text\" name=\"tenant\" value=\"%s\"></label>\n"
      "<label>Account <input type=\"text\" name=\"account\" value=\"%s\"></label>\n"
      "<button type=\"submit\">Show</button>\n</form>\n</nav>\n",
      VolumeName(query.volume),
      query.ticket.empty() ? std::string()
                           : absl::StrCat("<input type=\"hidden\" name=\"ticket\" value=\"",
                                          Html(query.ticket), "\">\n"),
      query.range.from, query.range.to, Html(query.tenant), Html(query.account));
  return out;
}

constexpr absl::string_view kStyle = R"css(
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1e23; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
nav form { margin: .5em 0; } nav label { margin-right: .8em; }
a[aria-current] { font-weight: bold; color: inherit; }
svg.chart { width: 100%; max-width: 960px; height: auto; display: block; }
.grid { stroke: #e3e5e8; } .axis { stroke: #5d6470; }
.tick { font-size: 11px; fill: #5d6470; } .label { font-size: 12px; fill: #1b1e23; }
.empty { font-size: 16px; fill: #5d6470; }
ul.legend { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4em 1.2em; }
.series-total { color: #5d6470; }
table { border-collapse: collapse; margin-top: .5em; }
th, td { border-bottom: 1px solid #e3e5e8; padding: .2em .8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
)css";

absl::StatusOr<std::string> TakeValue(absl::string_view name, absl::string_view raw,
                                      std::optional<std::string>* slot) {
  if (slot->has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " is given twice"));
  }
  if (raw.size() > kUsageParameterBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", name, " is longer than ", kUsageParameterBytesMax, " bytes"));
  }
  std::optional<std::string> value = PercentDecode(raw);
  if (!value) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", name, " is badly encoded (or holds a control character)"));
  }
  *slot = *value;
  return *value;
}

}  // namespace

absl::StatusOr<UsagePageQuery> ParseUsageQuery(absl::string_view query, absl::Time now) {
  std::optional<std::string> volume, days, from, to, tenant, account, ticket;
  const std::pair<absl::string_view, std::optional<std::string>*> known[] = {
      {"volume", &volume}, {"days", &days},       {"from", &from},    {"to", &to},
      {"tenant", &tenant}, {"account", &account}, {"ticket", &ticket}};
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(pair, absl::MaxSplits('=', 1));
    std::optional<std::string>* slot = nullptr;
    for (const auto& [name, target] : known) {
      if (parts.first == name) {
        slot = target;
      }
    }
    if (slot == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown parameter '", parts.first.substr(0, 40),
                       "' (known: volume, days, from, to, tenant, account, ticket)"));
    }
    absl::StatusOr<std::string> value = TakeValue(parts.first, parts.second, slot);
    if (!value.ok()) {
      return value.status();
    }
  }
  UsagePageQuery out;
  if (volume && *volume != "recipients" && *volume != "messages") {
    return absl::InvalidArgumentError("volume is recipients or messages");
  }
  out.volume = volume && *volume == "messages" ? UsageVolume::kMessages : UsageVolume::kRecipients;
  absl::StatusOr<directory::UsageRange> range =
      directory::ResolveUsageRange(days, from, to, now, "days", "from", "to");
  if (!range.ok()) {
    return range.status();
  }
  out.range = *range;
  if (directory::UsageDaysIn(out.range) > kUsagePageDaysMax) {
    return absl::InvalidArgumentError(absl::StrCat("the range from ", out.range.from, " to ",
                                                   out.range.to, " is longer than ",
                                                   kUsagePageDaysMax, " days"));
  }
  out.tenant = tenant.value_or("");
  out.account = account.value_or("");
  out.ticket = ticket.value_or("");
  out.days = days.value_or(from ? "" : absl::StrCat(directory::kUsageDaysDefault));
  return out;
}

std::string RenderUsagePage(const UsagePageQuery& query, const directory::UsageReport& report) {
  Chart chart = BuildChart(report, query.volume);
  std::string filters;
  if (!query.tenant.empty()) {
    absl::StrAppend(&filters, ", tenant ", Html(query.tenant));
  }
  if (!query.account.empty()) {
    absl::StrAppend(&filters, ", account ", Html(query.account));
  }
  std::string title =
      absl::StrCat("Usage from ", query.range.from, " to ", query.range.to, " (UTC days)", filters);
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>chute: ",
      title, "</title>\n<style>", kStyle, "</style>\n</head>\n<body>\n<h1 data-from=\"",
      query.range.from, "\" data-to=\"", query.range.to, "\" data-volume=\"",
      VolumeName(query.volume), "\">", title, "</h1>\n", RenderControls(query),
      RenderChart(chart, query.volume, query), RenderLegend(chart),
      RenderTables(report, query.volume), "</body>\n</html>\n");
}

std::optional<AdminServer::Answer> HandleUsageRequest(const std::string& database,
                                                      absl::string_view method,
                                                      absl::string_view target) {
  size_t question = target.find('?');
  absl::string_view path = target.substr(0, question);
  if (path != "/usage") {
    return std::nullopt;
  }
  constexpr absl::string_view kText = "text/plain; charset=utf-8";
  if (method != "GET") {
    return AdminServer::Answer{405, "/usage answers GET only\n", std::string(kText)};
  }
  absl::string_view query = question == absl::string_view::npos ? "" : target.substr(question + 1);
  absl::StatusOr<UsagePageQuery> parsed = ParseUsageQuery(query, absl::Now());
  if (!parsed.ok()) {
    return AdminServer::Answer{400, absl::StrCat("bad request: ", parsed.status().message(), "\n"),
                               std::string(kText)};
  }
  absl::StatusOr<std::unique_ptr<directory::Store>> store = directory::Store::Open(database, false);
  absl::StatusOr<directory::UsageReport> report =
      store.ok()
          ? directory::BuildUsageReport(**store, parsed->range, parsed->tenant, parsed->account)
          : absl::StatusOr<directory::UsageReport>(store.status());
  if (!report.ok()) {
    return AdminServer::Answer{
        500, absl::StrCat("the usage table cannot be read: ", report.status().message(), "\n"),
        std::string(kText)};
  }
  return AdminServer::Answer{200, RenderUsagePage(*parsed, *report), "text/html; charset=utf-8"};
}

}  // namespace chute::admin
