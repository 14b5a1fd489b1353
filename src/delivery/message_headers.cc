#include "delivery/message_headers.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chute::delivery {

void HeaderScanner::Reset() { *this = HeaderScanner(); }

void HeaderScanner::EndOfName() {
  absl::string_view name(name_, name_bytes_);
  has_date_ |= absl::EqualsIgnoreCase(name, "date");
  has_message_id_ |= absl::EqualsIgnoreCase(name, "message-id");
  has_reply_to_ |= absl::EqualsIgnoreCase(name, "reply-to");
  in_name_ = false;
}

void HeaderScanner::Feed(absl::string_view slice) {
  for (char c : slice) {
    if (done_) {
      return;
    }
    if (at_line_start_) {
      at_line_start_ = false;
      name_bytes_ = 0;
      // A line starting with CR is the empty line ending the header; with space or tab, a
      // folded continuation of the previous field.
      if (c == '\r') {
        done_ = true;
        return;
      }
      in_name_ = c != ' ' && c != '\t';
    }
    if (c == '\n') {
      at_line_start_ = true;
      continue;
    }
    if (!in_name_) {
      continue;
    }
    if (c == ':') {
      EndOfName();
    } else if (name_bytes_ < kNameBytesMax) {
      name_[name_bytes_++] = c;
    } else {
      in_name_ = false;  // too long to be one of ours
    }
  }
}

std::string FormatRfc5322Date(absl::Time time) {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", time, absl::UTCTimeZone());
}

void AppendAddedHeaders(const TraceInfo& trace, const HeaderScanner& scanner, std::string* out) {
  std::string date = FormatRfc5322Date(trace.time);
  absl::StrAppend(out, "Received: from ", trace.helo, " ([", trace.client_ip, "])\r\n\tby ",
                  trace.hostname, " (chute) with ", trace.protocol, " id ", trace.id);
  if (!trace.recipient.empty()) {
    absl::StrAppend(out, "\r\n\tfor <", trace.recipient, ">");
  }
  absl::StrAppend(out, "; ", date, "\r\n");
  if (!scanner.has_date()) {
    absl::StrAppend(out, "Date: ", date, "\r\n");
  }
  if (!scanner.has_message_id()) {
    absl::StrAppend(out, "Message-ID: <", trace.id, "@", trace.hostname, ">\r\n");
  }
}

}  // namespace chute::delivery
