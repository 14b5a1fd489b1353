#pragma once

// The headers chute adds to a message on its way through (docs/architecture.md, Headers chute
// adds): a Received: line always, Date: and Message-ID: when the submitter left them out
// (RFC 6409 §8), and a Reply-To: when the account has one configured. HeaderScanner finds out,
// while the body streams past in slices, which fields the message already has. Pure; any thread.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace chute::smtp {

// HeaderScanner: fed the message's content in slices; looks at the field name of each header
// line until the empty line that ends the header section.
class HeaderScanner {
 public:
  void Reset();
  // Feed: returns how many bytes at the front of `slice` belong to the header section
  // (including the empty line that ends it); the rest, if any, is body.
  size_t Feed(absl::string_view slice);

  bool has_date() const { return has_date_; }
  bool has_message_id() const { return has_message_id_; }
  bool has_reply_to() const { return has_reply_to_; }
  bool header_done() const { return done_; }
  // The From: field: how many there were, and the first one's value (unfolded, CR/LF
  // dropped), unless it was longer than kFromBytesMax (from_overflow()).
  int from_count() const { return from_count_; }
  absl::string_view from_value() const { return from_value_; }
  bool from_overflow() const { return from_overflow_; }
  // The first Message-ID: field's value (unfolded, surrounding blanks dropped), cut at
  // kMessageIdBytesMax: for logs and the message trace, never for a decision.
  absl::string_view message_id() const;

 private:
  void EndOfName();
  void CaptureFrom(char c);
  void CaptureMessageId(char c);

  static constexpr size_t kMessageIdBytesMax = 255;
  bool capturing_message_id_ = false;
  std::string message_id_value_;

  static constexpr size_t kFromBytesMax = 2048;  // a From: longer than this is refused
  int from_count_ = 0;
  bool capturing_from_ = false;
  bool from_overflow_ = false;
  std::string from_value_;

  static constexpr size_t kNameBytesMax = 16;  // longer names are none of the ones we look for
  char name_[kNameBytesMax] = {};
  size_t name_bytes_ = 0;
  bool at_line_start_ = true;
  bool blank_cr_ = false;  // the line began with CR: LF ends the header section
  bool in_name_ = true;
  bool done_ = false;
  bool has_date_ = false;
  bool has_message_id_ = false;
  bool has_reply_to_ = false;
};

// FromAddresses: the addr-specs of a From: field value (RFC 5322 mailbox-list: "Name
// <a@b>", "a@b", "a@b (comment)", several separated by commas, quoted display names with
// commas or brackets in them). Empty when there is none.
std::vector<std::string> FromAddresses(absl::string_view value);

// FormatRfc5322Date: "Thu, 26 Nov 2026 23:59:59 +0000".
std::string FormatRfc5322Date(absl::Time time);

struct TraceInfo {
  absl::string_view helo;       // the client's EHLO/HELO name
  absl::string_view client_ip;  // its address
  absl::string_view hostname;   // ours
  absl::string_view protocol;   // "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" (RFC 3848)
  absl::string_view id;         // the message id
  absl::string_view recipient;  // "" unless there is exactly one
  absl::Time time;
};

// ReceivedProtocol: the "with" of Received: (RFC 3848, RFC 6531): ESMTP or, for an SMTPUTF8
// transaction, UTF8SMTP; then S when TLS protected it and A when it was authenticated with
// AUTH ("ESMTPSA", "UTF8SMTPA", ...).
absl::string_view ReceivedProtocol(bool smtputf8, bool tls, bool auth);

// AppendAddedHeaders: appends Received:, and Date:/Message-ID: when `scanner` saw none, to
// `out`, each line ending in CR LF.
void AppendAddedHeaders(const TraceInfo& trace, const HeaderScanner& scanner, std::string* out);

// AppendWithoutField: appends `header` (a header section) to `out` without any field named
// `name` (any case), folded continuation lines included.
void AppendWithoutField(absl::string_view header, absl::string_view name, std::string* out);

}  // namespace chute::smtp
