// chutectl report: usage per account per UTC day, as chuted counted it (HVE's usage report).

#include <cstdio>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "directory/usage_report.h"
#include "tools/chutectl/admin_client.h"
#include "tools/chutectl/commands.h"

namespace chute::ctl {
namespace {

constexpr absl::string_view kHelp = R"(Usage report (what chuted counted per account per UTC day):
  report [--tenant NAME] [--account ID] [--days 7|30|90 | --from YYYY-MM-DD --to YYYY-MM-DD]
         [--volume recipients|messages] [--csv]       (default: the last 7 days; --csv and
                                                       --json exclude each other)
  report --link [--days ...|--from ... --to ...] [--tenant NAME] [--account ADDRESS]
         [--volume ...]       a link to the /usage page (the chart) for a browser on this
                              machine: it opens GET /usage for 15 minutes and nothing else
                              (through the running chuted, as root or chuted's user)
)";

struct Columns {
  bool messages = true;
  bool recipients = true;
};

void PrintJsonReport(const directory::UsageReport& report, Columns columns) {
  nlohmann::json out{{"from", report.range.from},
                     {"to", report.range.to},
                     {"rows", nlohmann::json::array()},
                     {"tenants", nlohmann::json::array()}};
  for (const directory::UsageRow& row : report.rows) {
    nlohmann::json item{{"day", row.day}, {"tenant", row.tenant}, {"account", row.address}};
    if (columns.messages) {
      item["messages"] = row.messages;
    }
    if (columns.recipients) {
      item["recipients"] = row.recipients;
    }
    out["rows"].push_back(item);
  }
  for (const directory::UsageTenantTotal& total : report.tenants) {
    nlohmann::json item{{"tenant", total.tenant}};
    if (columns.messages) {
      item["messages"] = total.messages;
    }
    if (columns.recipients) {
      item["recipients"] = total.recipients;
    }
    out["tenants"].push_back(item);
  }
  PrintJson(out);
}

void PrintCsv(const std::vector<directory::UsageRow>& rows, Columns columns) {
  std::cout << "day,tenant,account" << (columns.messages ? ",messages" : "")
            << (columns.recipients ? ",recipients" : "") << "\n";
  for (const directory::UsageRow& row : rows) {
    // An address may hold a comma or a quote in its quoted local part.
    std::cout << row.day << "," << CsvField(row.tenant) << "," << CsvField(row.address);
    if (columns.messages) {
      std::cout << "," << row.messages;
    }
    if (columns.recipients) {
      std::cout << "," << row.recipients;
    }
    std::cout << "\n";
  }
}

void PrintTable(const directory::UsageReport& report, Columns columns) {
  std::cout << "Usage from " << report.range.from << " to " << report.range.to << " (UTC days)\n";
  Printf("%-10s  %-20s  %-32s%s%s\n", "DAY", "TENANT", "ACCOUNT",
         columns.messages ? "  MESSAGES" : "", columns.recipients ? "  RECIPIENTS" : "");
  for (const directory::UsageRow& row : report.rows) {
    Printf("%-10s  %-20s  %-32s", row.day.c_str(), row.tenant.c_str(), row.address.c_str());
    if (columns.messages) {
      Printf("  %8lld", static_cast<long long>(row.messages));
    }
    if (columns.recipients) {
      Printf("  %10lld", static_cast<long long>(row.recipients));
    }
    Printf("\n");
  }
  std::cout << "Tenant totals:\n";
  for (const directory::UsageTenantTotal& total : report.tenants) {
    Printf("  %-20s", total.tenant.c_str());
    if (columns.messages) {
      Printf("  messages %lld", static_cast<long long>(total.messages));
    }
    if (columns.recipients) {
      Printf("  recipients %lld", static_cast<long long>(total.recipients));
    }
    Printf("\n");
  }
}

// AccountAddress: the address whose usage --account asks for: a current account's primary
// address, or an address that usage was recorded for (a removed account). NotFound otherwise,
// so that a typo is not answered with an empty report.
absl::StatusOr<std::string> AccountAddress(directory::Store& store, const std::string& id) {
  absl::StatusOr<std::shared_ptr<const directory::Snapshot>> snapshot = store.LoadSnapshot();
  if (!snapshot.ok()) {
    return snapshot.status();
  }
  bool ambiguous = false;
  if (const directory::Account* account = (*snapshot)->FindAccountByIdentity(id, &ambiguous)) {
    return account->primary_address;
  }
  if (ambiguous) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", id, "' names several accounts; use the address"));
  }
  absl::StatusOr<bool> known = store.HasUsage(id);
  if (!known.ok()) {
    return known.status();
  }
  if (!*known) {
    return absl::NotFoundError(
        absl::StrCat("no account '", id, "', and no usage was ever recorded for that address"));
  }
  return id;
}

// UrlEncode: `text` as a query-string value.
std::string UrlEncode(absl::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// PrintLink: a ticket from the running chuted, and the /usage link with the view `args` asks for.
int PrintLink(Context& context, const Args& args) {
  if (args.Has("--csv")) {
    return context.Usage("report --link draws the page; --csv is for the table");
  }
  absl::StatusOr<AdminAnswer> answer = AdminRequest(context.config(), "POST", "/usage/ticket");
  if (!answer.ok()) {
    return context.Fail(absl::StrCat(answer.status().message(), context.ConfigHint()));
  }
  nlohmann::json body = nlohmann::json::parse(answer->body, nullptr, false);
  if (answer->status != 200 || !body.is_object() || !body["url"].is_string() ||
      !body["expires"].is_string()) {
    return context.Fail(body.is_object() && body["error"].is_string()
                            ? body["error"].get<std::string>()
                            : std::string("chuted made no ticket"));
  }
  std::string url = body["url"].get<std::string>();
  if (absl::StartsWith(url, "http:///")) {
    return context.Fail("[admin] address is \"\": the /usage page needs the admin listener's port");
  }
  for (const char* option : {"--days", "--from", "--to", "--tenant", "--account", "--volume"}) {
    if (std::optional<std::string> value = args.Get(option)) {
      absl::StrAppend(&url, "&", absl::string_view(option).substr(2), "=", UrlEncode(*value));
    }
  }
  if (context.json()) {
    PrintJson(nlohmann::json{{"url", url}, {"expires", body["expires"]}});
  } else {
    std::cout << url << "\n(opens the usage page until " << body["expires"].get<std::string>()
              << "; anyone with the link can read it until then)\n";
  }
  return kExitOk;
}

int Run(Context& context, const std::vector<std::string>& words) {
  Args args;
  if (std::optional<std::string> error =
          ParseArgs(words, 1, {"--csv", "--link"},
                    {"--tenant", "--account", "--days", "--from", "--to", "--volume"}, &args)) {
    return context.Usage(*error);
  }
  if (!args.positional.empty()) {
    return context.Usage("report takes options only");
  }
  if (args.Has("--csv") && context.json()) {
    return context.Usage("report prints --csv or --json, not both");
  }
  if (args.Has("--link")) {
    return PrintLink(context, args);
  }
  absl::StatusOr<directory::UsageRange> range = directory::ResolveUsageRange(
      args.Get("--days"), args.Get("--from"), args.Get("--to"), absl::Now());
  if (!range.ok()) {
    return context.Usage(range.status().message());
  }
  std::string volume = args.Get("--volume").value_or("");
  if (!volume.empty() && volume != "messages" && volume != "recipients") {
    return context.Usage("--volume is messages or recipients");
  }
  Columns columns{volume != "recipients", volume != "messages"};
  directory::Store* store = context.Store();
  if (store == nullptr) {
    return kExitFailure;
  }
  std::string address;
  if (std::optional<std::string> id = args.Get("--account")) {
    absl::StatusOr<std::string> found = AccountAddress(*store, *id);
    if (!found.ok()) {
      return context.Fail(found.status());
    }
    address = *found;
  }
  std::string tenant = args.Get("--tenant").value_or("");
  // The same rows and totals as the admin listener's /usage page (usage_report.h).
  absl::StatusOr<directory::UsageReport> report =
      directory::BuildUsageReport(*store, *range, tenant, address);
  if (!report.ok()) {
    return context.Fail(report.status());
  }
  if (context.json()) {
    PrintJsonReport(*report, columns);
  } else if (args.Has("--csv")) {
    PrintCsv(report->rows, columns);
  } else {
    PrintTable(*report, columns);
  }
  return kExitOk;
}

}  // namespace

extern const CommandGroup kReportGroup{"report", Run, kHelp};

}  // namespace chute::ctl
