// report.cc: composes RFC 3464 failure reports and hands them to delivery as messages.

#include "delivery/report.h"

#include <sys/stat.h>

#include <cerrno>
#include <random>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/log.h"
#include "delivery/queue.h"
#include "delivery/stage.h"
#include "io/file.h"
#include "smtp/address.h"
#include "smtp/message_headers.h"
#include "smtp/parser.h"
#include "trace/trace.h"

namespace chute::delivery {
namespace {

// HeaderSection: the message's header section with its closing empty line, at most
// kReportHeadersBytesMax (cut after a whole line).
absl::string_view HeaderSection(absl::string_view content) {
  size_t end = content.find("\r\n\r\n");
  absl::string_view header = end == absl::string_view::npos ? content : content.substr(0, end + 2);
  if (header.size() > kReportHeadersBytesMax) {
    header = header.substr(0, kReportHeadersBytesMax);
    size_t last = header.rfind("\r\n");
    header = last == absl::string_view::npos ? absl::string_view() : header.substr(0, last + 2);
  }
  return header;
}

// AddressType: RFC 3464's address-type of a recipient: rfc822, or utf-8 (RFC 6533) when it is
// not ASCII.
absl::string_view AddressType(absl::string_view address) {
  return smtp::HasNonAscii(address) ? "utf-8" : "rfc822";
}

// DiagnosticOf: the Diagnostic-Code field's value: "smtp; <reply>" for a reply (chute's own
// failures are worded as replies too), "X-Chute; ..." for its give-up note; cut to keep the
// field's line within RFC 5322's 998 bytes.
std::string DiagnosticOf(absl::string_view reply) {
  bool smtp_reply = reply.size() >= 4 &&
                    absl::ascii_isdigit(static_cast<unsigned char>(reply[0])) && reply[3] == ' ';
  std::string text = absl::StrCat(smtp_reply ? "smtp; " : "X-Chute; ", reply);
  if (text.size() > kDiagnosticBytesMax) {
    text.resize(kDiagnosticBytesMax);
  }
  return text;
}

}  // namespace

std::string XtextDecoded(absl::string_view xtext) {
  std::string out;
  for (size_t i = 0; i < xtext.size(); ++i) {
    int value = 0;
    if (xtext[i] == '+' && i + 2 < xtext.size() &&
        absl::SimpleHexAtoi(xtext.substr(i + 1, 2), &value)) {
      out.push_back(static_cast<char>(value));
      i += 2;
    } else {
      out.push_back(xtext[i]);
    }
  }
  return out;
}

namespace {

// EnhancedCodeOf: the enhanced status code of `reply` ("550 5.1.1 text": "5.1.1") when the
// reply's code and the enhanced code are both of class `klass`, else "".
std::string EnhancedCodeOf(absl::string_view reply, char klass) {
  if (reply.size() < 9 || reply[0] != klass || reply[3] != ' ' || reply[4] != klass ||
      reply[5] != '.') {
    return "";
  }
  size_t end = reply.find(' ', 4);
  absl::string_view code = reply.substr(4, end == absl::string_view::npos ? end : end - 4);
  bool digits = std::all_of(code.begin(), code.end(),
                            [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
  bool shaped = digits && std::count(code.begin(), code.end(), '.') == 2 && code.size() <= 11;
  return shaped ? std::string(code) : "";
}

}  // namespace

std::string DelayStatusOf(absl::string_view reply) {
  std::string code = EnhancedCodeOf(reply, '4');
  return code.empty() ? "4.0.0" : code;
}

std::string StatusOf(absl::string_view reply) {
  if (absl::StartsWith(reply, "gave up after ")) {
    return "5.4.7";  // delivery time expired
  }
  std::string code = EnhancedCodeOf(reply, '5');
  return code.empty() ? "5.0.0" : code;
}

absl::string_view ReportActionName(ReportAction action) {
  switch (action) {
    case ReportAction::kFailed:
      return "failed";
    case ReportAction::kDelayed:
      return "delayed";
    case ReportAction::kDelivered:
      return "delivered";
    case ReportAction::kRelayed:
      return "relayed";
  }
  return "failed";
}

std::string ComposeFailureReport(const ReportInput& in) {
  bool delayed = in.action == ReportAction::kDelayed;
  bool failed = in.action == ReportAction::kFailed;
  absl::string_view subject = failed    ? "Undelivered Mail Returned to Sender"
                              : delayed ? "Delayed Mail (still being retried)"
                              : in.action == ReportAction::kDelivered
                                  ? "Successful Mail Delivery Report"
                                  : "Relayed Mail Report";
  std::string what =
      failed ? std::string(
                   "could not be delivered to the recipient(s) below; chute has given "
                   "up on them.\r\n")
      : delayed ? absl::StrCat(
                      "has not been delivered to the recipient(s) below yet; chute "
                      "keeps trying until ",
                      smtp::FormatRfc5322Date(in.will_retry_until), ".\r\n")
      : in.action == ReportAction::kDelivered
          ? std::string("was delivered to the mailbox(es) of the recipient(s) below.\r\n")
          : std::string(
                "was passed on to the recipient(s) below's mail system, which sends no "
                "delivery reports.\r\n");
  // RET=FULL returns the whole message in a failure report only (RFC 3461 §4.3).
  bool full = failed && in.return_full && in.original_content.size() <= kReportFullBytesMax;
  std::string boundary = absl::StrCat("=_", in.report_id, "/", in.boundary_nonce);
  std::string date = smtp::FormatRfc5322Date(in.now);
  std::string out;
  absl::StrAppend(
      &out, "From: Mail Delivery System <MAILER-DAEMON@", in.hostname, ">\r\n", "To: <", in.to,
      ">\r\n", "Subject: ", subject, "\r\n", "Date: ", date, "\r\n", "Message-ID: <", in.report_id,
      "@", in.hostname, ">\r\n", "Auto-Submitted: auto-replied\r\n", "MIME-Version: 1.0\r\n",
      "Content-Type: multipart/report; report-type=delivery-status;\r\n", "\tboundary=\"", boundary,
      "\"\r\n", "\r\n", "This is a MIME-encapsulated message.\r\n", "\r\n");
  // The part a person reads.
  absl::StrAppend(
      &out, "--", boundary, "\r\n", "Content-Type: text/plain; charset=utf-8\r\n", "\r\n",
      "This is the mail system at ", in.hostname, ".\r\n", "\r\n", "A message from <", in.sender,
      "> (queue id ", in.original_id, "), received ", smtp::FormatRfc5322Date(in.received), ",\r\n",
      what, full ? "The message is attached.\r\n" : "The message's header section is attached.\r\n",
      "\r\n");
  for (const FailedRecipient& r : in.recipients) {
    absl::StrAppend(&out, "<", r.address, ">: ", r.reply, "\r\n");
  }
  absl::StrAppend(&out, "\r\n");
  // The part a program reads (RFC 3464 §2.2, §2.3).
  // A non-ASCII address is a utf-8 address-type, which only the global form carries (RFC 6533).
  bool global =
      std::any_of(in.recipients.begin(), in.recipients.end(),
                  [](const FailedRecipient& r) { return !!smtp::HasNonAscii(r.address); });
  absl::StrAppend(&out, "--", boundary, "\r\n", "Content-Type: message/",
                  global ? "global-delivery-status" : "delivery-status", "\r\n", "\r\n",
                  "Reporting-MTA: dns; ", in.hostname, "\r\n", "X-Chute-Queue-ID: ", in.original_id,
                  "\r\n");
  if (!in.envid.empty()) {
    absl::StrAppend(&out, "Original-Envelope-Id: ", in.envid, "\r\n");
  }
  absl::StrAppend(&out, "Arrival-Date: ", smtp::FormatRfc5322Date(in.received), "\r\n");
  for (const FailedRecipient& r : in.recipients) {
    out.append("\r\n");
    size_t semicolon = r.orcpt.find(';');
    if (semicolon != std::string::npos) {
      // Decoded; a control byte (which xtext could carry) would break the field.
      std::string address = XtextDecoded(absl::string_view(r.orcpt).substr(semicolon + 1));
      std::replace_if(
          address.begin(), address.end(),
          [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }, '?');
      absl::StrAppend(&out, "Original-Recipient: ", r.orcpt.substr(0, semicolon), "; ", address,
                      "\r\n");
    }
    absl::StrAppend(&out, "Final-Recipient: ", AddressType(r.address), "; ", r.address, "\r\n",
                    "Action: ", ReportActionName(in.action), "\r\n", "Status: ",
                    failed    ? StatusOf(r.reply)
                    : delayed ? DelayStatusOf(r.reply)
                              : "2.0.0",
                    "\r\n", "Diagnostic-Code: ", DiagnosticOf(r.reply), "\r\n",
                    "Last-Attempt-Date: ", date, "\r\n");
    if (delayed) {
      absl::StrAppend(&out, "Will-Retry-Until: ", smtp::FormatRfc5322Date(in.will_retry_until),
                      "\r\n");
    }
  }
  absl::StrAppend(&out, "\r\n");
  // The original's header section, or all of it.
  absl::string_view header = full ? in.original_content : HeaderSection(in.original_content);
  absl::StrAppend(&out, "--", boundary, "\r\n",
                  full ? "Content-Type: message/rfc822\r\n"
                       : "Content-Type: text/rfc822-headers; charset=utf-8\r\n",
                  "\r\n", header);
  if (!absl::EndsWith(header, "\r\n")) {
    out.append("\r\n");
  }
  absl::StrAppend(&out, "\r\n--", boundary, "--\r\n");
  return out;
}

Reporter::Reporter(ReporterOptions options)
    : options_(std::move(options)),
      // Report ids are queue ids of a start 1 ms before this one's: no shard of this start
      // mints them, and no earlier start can have (it began longer ago than that).
      ids_(options_.boot_us - 1000, 0) {
  CHECK(options_.address != nullptr);
  CHECK(options_.gauges != nullptr);
}

std::optional<WrittenReport> Reporter::WriteFailure(const QueuedMessage& message,
                                                    const std::vector<spool::Mark>& marks,
                                                    const std::vector<std::string>& replies,
                                                    absl::string_view content) {
  CHECK(stage_ != nullptr);
  if (message.sender.empty()) {
    return std::nullopt;  // the null sender: a report itself, or a bounce; nobody to tell
  }
  ReportInput input;
  for (size_t i = 0; i < message.recipients.size(); ++i) {
    uint8_t notify = message.NotifyOf(i);
    // No NOTIFY means FAILURE (RFC 3461 §4.1: failures are reported unless told otherwise).
    bool wanted = notify == 0 || (notify & smtp::kNotifyFailure) != 0;
    if (marks[i] == spool::Mark::kDead && wanted) {
      input.recipients.push_back(FailedRecipient{message.recipients[i], replies[i],
                                                 i < message.orcpt.size() ? message.orcpt[i] : ""});
    }
  }
  return Write(message, std::move(input), content);
}

void Reporter::OnDelayed(const QueuedMessage& message, const std::vector<size_t>& recipients,
                         const std::vector<std::string>& replies, absl::Time will_retry_until,
                         absl::string_view content) {
  CHECK(stage_ != nullptr);
  if (message.sender.empty()) {
    return;
  }
  ReportInput input;
  input.action = ReportAction::kDelayed;
  input.will_retry_until = will_retry_until;
  for (size_t i : recipients) {
    input.recipients.push_back(FailedRecipient{message.recipients[i], replies[i],
                                               i < message.orcpt.size() ? message.orcpt[i] : ""});
  }
  if (std::optional<WrittenReport> written = Write(message, std::move(input), content)) {
    Queue(*std::move(written));
  }
}

void Reporter::OnDelivered(const QueuedMessage& message, const std::vector<size_t>& recipients,
                           const std::vector<std::string>& replies, bool relayed,
                           absl::string_view content) {
  CHECK(stage_ != nullptr);
  if (message.sender.empty()) {
    return;
  }
  ReportInput input;
  input.action = relayed ? ReportAction::kRelayed : ReportAction::kDelivered;
  for (size_t i : recipients) {
    input.recipients.push_back(FailedRecipient{message.recipients[i], replies[i],
                                               i < message.orcpt.size() ? message.orcpt[i] : ""});
  }
  if (std::optional<WrittenReport> written = Write(message, std::move(input), content)) {
    Queue(*std::move(written));
  }
}

std::optional<WrittenReport> Reporter::Write(const QueuedMessage& message, ReportInput input,
                                             absl::string_view content) {
  input.envid = message.envid;
  input.return_full = message.dsn_ret == static_cast<uint8_t>(smtp::DsnRet::kFull);
  if (input.recipients.empty()) {
    return std::nullopt;
  }
  ReportTarget target = options_.address(message.tenant_id, message.account_id);
  if (target.to.empty()) {
    LogEvent(LogLevel::kInfo, "report.none", {{"queue_id", message.id}, {"reason", target.why}});
    return std::nullopt;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    input.report_id = ids_.Next();
  }
  absl::Time now = absl::Now();
  input.hostname = options_.hostname;
  input.original_id = message.id;
  input.sender = message.sender;
  input.to = target.to;
  input.received = absl::FromUnixMicros(message.received_unix_us);
  input.now = now;
  input.original_content = content;
  {
    std::random_device random;
    input.boundary_nonce =
        absl::StrFormat("%08x%08x%08x%08x", random(), random(), random(), random());
  }
  std::string report = ComposeFailureReport(input);

  nlohmann::json record;
  record["id"] = input.report_id;
  record["sender"] = "";
  record["tenant_id"] = message.tenant_id;
  record["account_id"] = message.account_id;
  record["received"] = IsoUtc(now);
  record["report_about"] = message.id;
  record["recipients"] = nlohmann::json::array({{{"address", target.to}}});
  std::string json = record.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  std::string base = absl::StrCat(options_.dir, "/", input.report_id);
  absl::Status status;
  if (mkdir(options_.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    status = io::ErrnoStatus(errno, absl::StrCat("create ", options_.dir));
  }
  if (status.ok()) {
    status = io::WriteFileDurably(base + ".eml", report);
  }
  if (status.ok()) {
    status = io::WriteFileDurably(base + ".json", json);
  }
  if (status.ok()) {
    status = io::SyncDirectory(options_.dir);
  }
  if (!status.ok()) {
    // The dead letter has everything the report would have said.
    LOG_ERROR("report about %s to %s not sent: %s", message.id, target.to, status.message());
    unlink((base + ".eml").c_str());
    unlink((base + ".json").c_str());
    return std::nullopt;
  }
  sent_.fetch_add(1, std::memory_order_relaxed);
  LogEvent(LogLevel::kInfo, "report.queued",
           {{"queue_id", input.report_id},
            {"kind", ReportActionName(input.action)},
            {"about", message.id},
            {"to", target.to},
            {"recipients", static_cast<int64_t>(input.recipients.size())}});
  if (options_.trace != nullptr) {
    std::vector<trace::Event> events;
    int64_t now_us = absl::ToUnixMicros(now);
    for (const FailedRecipient& r : input.recipients) {
      trace::Event& note = events.emplace_back();
      note.kind = trace::Event::Kind::kNote;
      note.time_us = now_us;
      note.queue_id = message.id;
      note.recipient = r.address;
      note.target = "report";
      note.reply = absl::StrCat(input.action == ReportAction::kFailed    ? "failure report "
                                : input.action == ReportAction::kDelayed ? "delay notice "
                                                                         : "success notice ",
                                input.report_id, " to ", target.to);
    }
    trace::Event& received = events.emplace_back();
    received.kind = trace::Event::Kind::kReceived;
    received.time_us = now_us;
    received.queue_id = input.report_id;
    received.tenant = target.tenant;
    received.account = target.account;
    received.message_id = absl::StrCat("<", input.report_id, "@", options_.hostname, ">");
    received.client = absl::StrCat("chute (failure report about ", message.id, ")");
    received.recipients = {target.to};
    received.size_bytes = report.size();
    options_.trace->Submit(events);
  }
  WrittenReport written;
  written.id = input.report_id;
  written.base = base;
  written.to = target.to;
  written.tenant_id = message.tenant_id;
  written.account_id = message.account_id;
  written.size_bytes = report.size();
  written.written = now;
  return written;
}

void Reporter::Queue(WrittenReport report) {
  CHECK(stage_ != nullptr);
  auto queued = std::make_unique<QueuedMessage>();
  queued->recipients = {report.to};
  queued->tenant_id = report.tenant_id;
  if (!stage_->Routable(*queued)) {
    // In the tenant, yet in a domain no route serves (default_route = false): it cannot go.
    LOG_ERROR("report %s not sent: no delivery route serves %s", report.id, report.to);
    unlink((report.base + ".eml").c_str());
    unlink((report.base + ".json").c_str());
    return;
  }
  queued->id = report.id;
  queued->received_unix_us = absl::ToUnixMicros(report.written);
  queued->account_id = report.account_id;
  queued->marks.assign(1, spool::Mark::kPending);
  queued->replies.assign(1, "");
  queued->dead_path = report.base;
  queued->record.content_bytes = report.size_bytes;
  options_.gauges->AddOutside();
  stage_->Route(std::move(queued));
}

size_t Reporter::Replay() {
  CHECK(stage_ != nullptr);
  size_t count = 0;
  for (const DeadEntry& entry : ListDeadLetters(options_.dir)) {
    absl::StatusOr<std::unique_ptr<QueuedMessage>> message = ReadDeadLetter(options_.dir, entry.id);
    if (!message.ok()) {
      LOG_WARNING("report %s in %s cannot be sent: %s", entry.id, options_.dir,
                  message.status().message());
      continue;
    }
    (*message)->sender.clear();  // a report has the null sender, whatever the file says
    bool in_tenant = options_.in_tenant == nullptr ||
                     std::all_of((*message)->recipients.begin(), (*message)->recipients.end(),
                                 [&](const std::string& to) {
                                   return options_.in_tenant((*message)->tenant_id, to);
                                 });
    if (!in_tenant) {
      LOG_WARNING("report %s in %s not sent: its recipient is no longer in its tenant's domains",
                  entry.id, options_.dir);
      unlink(absl::StrCat(options_.dir, "/", entry.id, ".eml").c_str());
      unlink(absl::StrCat(options_.dir, "/", entry.id, ".json").c_str());
      continue;
    }
    if (!stage_->Routable(**message)) {
      LOG_WARNING("report %s in %s cannot be sent: no delivery route serves its recipient",
                  entry.id, options_.dir);
      continue;
    }
    options_.gauges->AddOutside();
    stage_->Route(*std::move(message));
    ++count;
  }
  return count;
}

}  // namespace chute::delivery
