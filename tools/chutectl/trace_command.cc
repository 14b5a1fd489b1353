// chutectl trace: the message trace (what happened to each message: received, each
// recipient's delivery result), read from the trace database chuted keeps in
// <data_dir>/trace.db for [trace] retention_days. Get-MessageTraceV2 is an alias.

#include <sys/stat.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <optional>

#include "tools/chutectl/commands.h"

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "trace/trace.h"

namespace chute::ctl {
namespace {

constexpr const char* kTraceUsage = R"(trace: what happened to each message (Get-MessageTraceV2)
  trace [--sender ADDR] [--recipient ADDR] [--message-id ID] [--queue-id ID]
        [--status pending|delivered|deferred|failed|dead] [--from TIME] [--to TIME]
        [--limit N] [--details] [--json | --csv]
  One row per message and recipient, newest first: when chute received it, its sender and
  recipient, the recipient's status and last reply, the queue id and the Message-ID.
  TIME is 2026-11-27, 2026-11-27T08:00:00Z (RFC 3339, any offset) or relative: 30m, 2h, 7d
  ago. Without --from/--to: the last 48 hours, or the whole retention period when
  --queue-id or --message-id is given. --limit: 1..5000 rows (default 1000). --details adds
  every event of each message (received, each attempt with its reply and target).
  Statuses: pending (no attempt yet), deferred (will be retried), delivered, failed (refused
  permanently), dead (given up); failed and dead messages are in the dead-letter area
  (chutectl queue dead).
  Get-MessageTraceV2 -SenderAddress A -RecipientAddress A -MessageId ID -StartDate T
        -EndDate T -Status Delivered|Failed|Pending -ResultSize N   (the same, cmdlet words;
        Failed = failed and dead, Pending = pending and deferred)
)";

constexpr absl::Duration kDefaultWindow = absl::Hours(48);

struct TraceArgs {
  trace::Query query;
  std::vector<trace::Status> statuses;  // empty: any
  bool details = false;
  bool csv = false;
  bool json = false;
  std::optional<absl::Time> from;
  std::optional<absl::Time> to;
  bool cmdlet = false;
};

// ParseTime: absolute (a date, RFC 3339) or relative to `now` ("30m", "2h", "7d": ago).
std::optional<absl::Time> ParseTime(const std::string& text, absl::Time now) {
  absl::Time t;
  std::string err;
  if (absl::ParseTime("%Y-%m-%d", text, absl::UTCTimeZone(), &t, &err) ||
      absl::ParseTime(absl::RFC3339_full, text, &t, &err) ||
      absl::ParseTime("%Y-%m-%dT%H:%M", text, absl::UTCTimeZone(), &t, &err) ||
      absl::ParseTime("%Y-%m-%d %H:%M:%S", text, absl::UTCTimeZone(), &t, &err) ||
      absl::ParseTime("%Y-%m-%d %H:%M", text, absl::UTCTimeZone(), &t, &err)) {
    return t;
  }
  if (text.size() >= 2) {
    int64_t n = 0;
    char unit = text.back();
    if (absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1), &n) && n >= 0 &&
        n <= 100000) {
      switch (unit) {
        case 'm':
          return now - absl::Minutes(n);
        case 'h':
          return now - absl::Hours(n);
        case 'd':
          return now - absl::Hours(24 * n);
        default:
          break;
      }
    }
  }
  return std::nullopt;
}

// The cmdlet's words for the native ones (Get-MessageTraceV2 parameters), case-insensitive;
// "-Name:value" works as PowerShell writes it.
const std::map<std::string, std::string>& CmdletParameters() {
  static const auto* map = new std::map<std::string, std::string>{
      {"-senderaddress", "--sender"}, {"-recipientaddress", "--recipient"},
      {"-messageid", "--message-id"}, {"-startdate", "--from"},
      {"-enddate", "--to"},           {"-status", "--status"},
      {"-resultsize", "--limit"},     {"-messagetraceid", "--queue-id"}};
  return *map;
}

std::optional<int> ParseTraceArgs(const Context& context, const std::vector<std::string>& words,
                                  absl::Time now, TraceArgs* args) {
  auto UsageError = [&](const std::string& message) { return context.Usage(message); };
  args->cmdlet = absl::EqualsIgnoreCase(words[0], "Get-MessageTraceV2");
  for (size_t i = 1; i < words.size(); ++i) {
    std::string word = words[i];
    std::string value;
    bool has_value = false;
    if (args->cmdlet && absl::StartsWith(word, "-") && !absl::StartsWith(word, "--")) {
      size_t colon = word.find(':');
      std::string name = absl::AsciiStrToLower(word.substr(0, colon));
      auto it = CmdletParameters().find(name);
      if (it == CmdletParameters().end()) {
        return UsageError(absl::StrCat("Get-MessageTraceV2: unknown parameter ",
                                       word.substr(0, colon),
                                       " (known: -SenderAddress, "
                                       "-RecipientAddress, -MessageId, -StartDate, -EndDate, "
                                       "-Status, -ResultSize, -MessageTraceId)"));
      }
      if (colon != std::string::npos) {
        value = word.substr(colon + 1);
        has_value = true;
      }
      word = it->second;
    }
    if (word == "--help" || word == "-h") {
      std::cout << kTraceUsage;
      return kExitOk;
    }
    if (word == "--details") {
      args->details = true;
      continue;
    }
    if (word == "--csv") {
      args->csv = true;
      continue;
    }
    if (word == "--json") {
      args->json = true;
      continue;
    }
    static const char* const kWithValue[] = {"--sender",   "--recipient", "--message-id",
                                             "--queue-id", "--status",    "--from",
                                             "--to",       "--limit"};
    if (std::find_if(std::begin(kWithValue), std::end(kWithValue),
                     [&](const char* k) { return word == k; }) == std::end(kWithValue)) {
      return UsageError(absl::StrCat("trace: unknown argument '", words[i], "'"));
    }
    if (!has_value) {
      if (i + 1 >= words.size()) {
        return UsageError(absl::StrCat(words[i], " needs a value"));
      }
      value = words[++i];
    }
    if (word == "--sender") {
      args->query.sender = value;
    } else if (word == "--recipient") {
      args->query.recipient = value;
    } else if (word == "--message-id") {
      args->query.message_id = value;
    } else if (word == "--queue-id") {
      args->query.queue_id = absl::AsciiStrToUpper(value);
    } else if (word == "--status") {
      std::string status = absl::AsciiStrToLower(value);
      if (args->cmdlet && status == "failed") {
        args->statuses = {trace::Status::kFailed, trace::Status::kDead};
      } else if (args->cmdlet && status == "pending") {
        args->statuses = {trace::Status::kPending, trace::Status::kDeferred};
      } else if (std::optional<trace::Status> s = trace::ParseStatus(status)) {
        args->statuses = {*s};
      } else {
        return UsageError(absl::StrCat("trace: ", value, " is not a status (",
                                       args->cmdlet ? "Delivered, Failed, Pending"
                                                    : "pending, delivered, deferred, failed, dead",
                                       ")"));
      }
    } else if (word == "--from" || word == "--to") {
      std::optional<absl::Time> t = ParseTime(value, now);
      if (!t.has_value()) {
        return UsageError(absl::StrCat("trace: '", value,
                                       "' is not a time (2026-11-27, 2026-11-27T08:00:00Z, "
                                       "or 30m / 2h / 7d ago)"));
      }
      (word == "--from" ? args->from : args->to) = *t;
    } else if (word == "--limit") {
      if (!absl::SimpleAtoi(value, &args->query.limit) || args->query.limit < 1 ||
          args->query.limit > trace::kQueryRowsMax) {
        return UsageError(absl::StrCat("trace: ", args->cmdlet ? "-ResultSize" : "--limit",
                                       " must be 1..", trace::kQueryRowsMax));
      }
    }
  }
  if (args->csv && args->json) {
    return UsageError("trace: --csv and --json cannot be used together");
  }
  bool by_id = !args->query.queue_id.empty() || !args->query.message_id.empty();
  absl::Time to = args->to.value_or(now);
  absl::Time from = args->from.value_or(by_id ? absl::UnixEpoch() : to - kDefaultWindow);
  if (from > to) {
    return UsageError("trace: --from is after --to");
  }
  args->query.from_us = absl::ToUnixMicros(from);
  args->query.to_us = absl::ToUnixMicros(to);
  return std::nullopt;
}

std::string Iso(int64_t us) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMicros(us), absl::UTCTimeZone());
}

nlohmann::json RowJson(const trace::Row& row) {
  return nlohmann::json{{"received", Iso(row.received_us)},
                        {"queue_id", row.queue_id},
                        {"message_id", row.message_id},
                        {"tenant", row.tenant},
                        {"account", row.account},
                        {"sender", row.sender},
                        {"recipient", row.recipient},
                        {"status", std::string(trace::StatusName(row.status))},
                        {"reply", row.reply},
                        {"attempts", row.attempts},
                        {"updated", Iso(row.updated_us)},
                        {"size_bytes", row.size_bytes},
                        {"client", row.client}};
}

void PrintText(const std::vector<trace::Row>& rows) {
  if (rows.empty()) {
    std::cout << "No messages match.\n";
    return;
  }
  Printf("%-24s %-9s %-23s %-30s %-30s %s\n", "RECEIVED (UTC)", "STATUS", "QUEUE ID", "SENDER",
         "RECIPIENT", "MESSAGE-ID");
  for (const trace::Row& row : rows) {
    Printf("%-24s %-9s %-23s %-30s %-30s %s\n", Iso(row.received_us).c_str(),
           std::string(trace::StatusName(row.status)).c_str(), row.queue_id.c_str(),
           row.sender.c_str(), row.recipient.c_str(), row.message_id.c_str());
    if (!row.reply.empty()) {
      Printf("%-24s %s (attempt %lld)\n", "", row.reply.c_str(),
             static_cast<long long>(row.attempts));
    }
  }
  Printf("%zu row(s)\n", rows.size());
}

int Run(Context& context, const std::vector<std::string>& words) {
  const Config& config = context.config();
  TraceArgs args;
  args.json = context.json();
  if (std::optional<int> exit = ParseTraceArgs(context, words, absl::Now(), &args)) {
    return *exit;
  }
  std::string path = absl::StrCat(config.server.data_dir, "/trace.db");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return context.Fail(absl::StrCat("no message trace at ", path,
                                     " (chuted creates it when it starts; is [server] data_dir "
                                     "right?)",
                                     context.ConfigHint()));
  }
  absl::StatusOr<std::unique_ptr<trace::Store>> store = trace::Store::Open(path, false);
  if (!store.ok()) {
    return context.Fail(store.status());
  }
  // One status or a pair (the cmdlet's Failed, Pending): a query per status, merged.
  std::vector<trace::Row> rows;
  std::vector<std::optional<trace::Status>> statuses;
  if (args.statuses.empty()) {
    statuses.push_back(std::nullopt);
  }
  for (trace::Status s : args.statuses) {
    statuses.push_back(s);
  }
  for (const std::optional<trace::Status>& status : statuses) {
    trace::Query query = args.query;
    query.status = status;
    absl::StatusOr<std::vector<trace::Row>> found = (*store)->Find(query);
    if (!found.ok()) {
      return context.Fail(absl::StrCat(path, ": ", found.status().message()));
    }
    rows.insert(rows.end(), found->begin(), found->end());
  }
  std::stable_sort(rows.begin(), rows.end(), [](const trace::Row& a, const trace::Row& b) {
    return a.received_us > b.received_us;
  });
  if (static_cast<int64_t>(rows.size()) > args.query.limit) {
    rows.resize(static_cast<size_t>(args.query.limit));
  }
  std::map<std::string, std::vector<trace::EventRow>> events;
  if (args.details) {
    for (const trace::Row& row : rows) {
      if (events.count(row.queue_id) == 0) {
        absl::StatusOr<std::vector<trace::EventRow>> e = (*store)->Events(row.queue_id);
        if (!e.ok()) {
          return context.Fail(absl::StrCat(path, ": ", e.status().message()));
        }
        events[row.queue_id] = *std::move(e);
      }
    }
  }
  if (args.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const trace::Row& row : rows) {
      nlohmann::json j = RowJson(row);
      if (args.details) {
        nlohmann::json list = nlohmann::json::array();
        for (const trace::EventRow& e : events[row.queue_id]) {
          if (e.recipient.empty() || e.recipient == row.recipient) {
            list.push_back({{"time", Iso(e.time_us)}, {"event", e.event}, {"detail", e.detail}});
          }
        }
        j["events"] = std::move(list);
      }
      out.push_back(std::move(j));
    }
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  if (args.csv) {
    std::cout << "received,status,queue_id,message_id,tenant,account,sender,recipient,reply,"
                 "attempts,size_bytes,client\n";
    for (const trace::Row& row : rows) {
      std::cout << Iso(row.received_us) << "," << trace::StatusName(row.status) << ","
                << row.queue_id << "," << CsvField(row.message_id) << "," << CsvField(row.tenant)
                << "," << CsvField(row.account) << "," << CsvField(row.sender) << ","
                << CsvField(row.recipient) << "," << CsvField(row.reply) << "," << row.attempts
                << "," << row.size_bytes << "," << row.client << "\n";
    }
    return 0;
  }
  PrintText(rows);
  if (args.details) {
    for (const auto& [queue_id, list] : events) {
      Printf("\n%s:\n", queue_id.c_str());
      for (const trace::EventRow& e : list) {
        Printf("  %s  %-9s %s%s%s\n", Iso(e.time_us).c_str(), e.event.c_str(), e.recipient.c_str(),
               e.recipient.empty() ? "" : "  ", e.detail.c_str());
      }
    }
  }
  return 0;
}

}  // namespace

extern const CommandGroup kTraceGroup{"trace Get-MessageTraceV2", Run, kTraceUsage};

}  // namespace chute::ctl
