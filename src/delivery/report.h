#pragma once

// Failure reports (docs/architecture.md, Delivery: reports). When chute gives up on recipients
// of a message (a 5xx, or give_up_after_s), the sending side is told with an RFC 3464 delivery
// status notification, since an HVE account has no mailbox of its own: it goes to the account's
// Reply-To, else to its tenant's notification address (tenant set --notification-address),
// else nowhere (the dead letter is all there is, as before), and never outside the tenant's
// accepted domains. A message with the null sender (a report itself, among others) gets none.
//
// A report is a message like any other from there on: written durably to
// <data_dir>/reports/<id>.eml and <id>.json (in the dead-letter record's shape) and routed by
// the DeliveryStage; delivered, its files go; dead, it is a dead letter, and no report is made
// about it. Reports not yet delivered when chuted stops are delivered after the next start
// (Reporter::Replay). It carries the original's header section only (text/rfc822-headers), not
// its body: a Reply-To is not always who wrote the message.
//
// Threads: OnFailed from the delivery workers, Replay from the main thread before Start.

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "spool/group_commit.h"
#include "spool/record.h"

namespace chute::trace {
class Writer;
}
namespace chute::spool {
struct SpoolGauges;
}

namespace chute::delivery {

class DeliveryStage;
struct QueuedMessage;

// The original's header section a report carries at most (cut at a line end).
inline constexpr size_t kReportHeadersBytesMax = 64 * 1024;

// A report returns the whole message (RET=FULL) only up to this size; past it, its headers.
inline constexpr size_t kReportFullBytesMax = 1 << 20;
// A Diagnostic-Code value is cut to this, so that its line stays under 998 bytes.
inline constexpr size_t kDiagnosticBytesMax = 900;

enum class ReportAction : uint8_t { kFailed, kDelayed, kDelivered, kRelayed };
absl::string_view ReportActionName(ReportAction action);  // "failed", "delayed", ...

struct FailedRecipient {
  std::string address;
  std::string reply;  // its last reply, or "gave up after N attempts; last reply: ..."
  std::string orcpt;  // ORCPT as the client gave it ("rfc822;ann+40x.test"), "" none
};

struct ReportInput {
  std::string hostname;     // server.hostname: the Reporting-MTA
  std::string report_id;    // the report's own queue id
  std::string original_id;  // the failed message's
  std::string sender;       // its envelope sender
  std::string to;           // where the report goes
  absl::Time received;      // when chute accepted the original
  absl::Time now;
  std::vector<FailedRecipient> recipients;
  absl::string_view original_content;  // the original message
  std::string envid;                   // ENVID as the client gave it (xtext), "" none
  bool return_full = false;            // RET=FULL: the whole message, not its headers
  // What the report says of its recipients: failed (the default), delayed (Will-Retry-Until
  // tells until when), delivered (into its mailbox), or relayed (to a target without DSN).
  ReportAction action = ReportAction::kFailed;
  absl::Time will_retry_until;
  // Random hex in the MIME boundary: the client, who knows the report's id, must not be able
  // to end a part of it with a line of its message (RET=FULL).
  std::string boundary_nonce;
};

// ComposeFailureReport: the whole report message (header and MIME body, CRLF line ends):
// multipart/report; report-type=delivery-status, with a text part, a message/delivery-status
// part (Original-Envelope-Id when the client gave an ENVID; one block per recipient:
// Original-Recipient when it had an ORCPT, Final-Recipient, Action: failed, Status,
// Diagnostic-Code) and the original's header section (text/rfc822-headers), or the whole
// message (message/rfc822) when the client asked RET=FULL and it is at most
// kReportFullBytesMax.
std::string ComposeFailureReport(const ReportInput& input);

// XtextDecoded: RFC 3461 xtext decoded ("ann+40x" -> "ann@x"); a bad escape is kept as is.
std::string XtextDecoded(absl::string_view xtext);

// DelayStatusOf: the status of a deferred recipient: its reply's 4.x.x, else 4.0.0.
std::string DelayStatusOf(absl::string_view reply);

// StatusOf: the RFC 3463 status of a failed recipient's reply: its enhanced code when it has a
// 5.x.x one, 5.4.7 when chute gave up on a transient failure, else 5.0.0.
std::string StatusOf(absl::string_view reply);

// ReportTarget: where a report about a message of (tenant, account) goes (`to`; "" = nowhere,
// and `why`), with the names the trace shows.
struct ReportTarget {
  std::string to;
  std::string why;
  std::string tenant;
  std::string account;
};
using ReportAddress = std::function<ReportTarget(int64_t tenant_id, int64_t account_id)>;

struct ReporterOptions {
  std::string hostname;
  std::string dir;  // <data_dir>/reports
  uint64_t boot_us = 0;
  ReportAddress address;
  // InTenant: whether `address` is in an accepted domain of the tenant now (a report left by
  // an earlier run is checked again: its domain may have moved to another tenant since).
  std::function<bool(int64_t tenant_id, absl::string_view address)> in_tenant;
  spool::SpoolGauges* gauges = nullptr;  // a report is a message outside the spool
  trace::Writer* trace = nullptr;        // may be null
};

// WrittenReport: a report on disk (durably), not yet queued for delivery (Reporter::Queue).
struct WrittenReport {
  std::string id;    // its queue id
  std::string base;  // <dir>/<id>: its .eml and .json
  std::string to;
  int64_t tenant_id = 0;
  int64_t account_id = 0;
  uint64_t size_bytes = 0;
  absl::Time written;
};

class Reporter {
 public:
  explicit Reporter(ReporterOptions options);

  // set_stage: where reports are routed. Before any OnFailed or Replay.
  void set_stage(DeliveryStage* stage) { stage_ = stage; }
  // WriteFailure: `message` is finished and its recipients whose `marks` are dead were given
  // up (their `replies` say why); `content` is the message. Writes the report when one is
  // due, for Queue. The queue writes it before it settles the message, so that a crash in
  // between repeats the report (the message is tried again) rather than losing it; it queues
  // it once its locks are let go (routing takes a queue's lock).
  std::optional<WrittenReport> WriteFailure(const QueuedMessage& message,
                                            const std::vector<spool::Mark>& marks,
                                            const std::vector<std::string>& replies,
                                            absl::string_view content);
  // Queue: a written report goes to delivery (or, when no route serves its address now, is
  // removed again, and logged).
  void Queue(WrittenReport report);
  // OnDelayed: `recipients` (indexes) of `message`, deferred, asked for delay notices and its
  // age passed delay_notice_after_s: one notice about them, written and queued at once.
  void OnDelayed(const QueuedMessage& message, const std::vector<size_t>& recipients,
                 const std::vector<std::string>& replies, absl::Time will_retry_until,
                 absl::string_view content);
  // OnDelivered: `recipients` (indexes) of `message` were delivered (`relayed`: to a target
  // that does not do DSN, so that it will report nothing) and asked NOTIFY=SUCCESS: one
  // notice about them.
  void OnDelivered(const QueuedMessage& message, const std::vector<size_t>& recipients,
                   const std::vector<std::string>& replies, bool relayed,
                   absl::string_view content);
  // Replay: the reports a previous run left undelivered, routed again. Returns how many.
  size_t Replay();

  uint64_t reports_sent() const { return sent_; }

 private:
  // Write: the report `input` (its recipients filled) about `message`, to its target, on
  // disk; nothing when there are no recipients, no target, or the write failed (logged).
  std::optional<WrittenReport> Write(const QueuedMessage& message, ReportInput input,
                                     absl::string_view content);

  const ReporterOptions options_;
  DeliveryStage* stage_ = nullptr;
  std::mutex mu_;             // guards ids_
  spool::QueueIdMinter ids_;  // guarded by mu_
  std::atomic<uint64_t> sent_{0};
};

}  // namespace chute::delivery
