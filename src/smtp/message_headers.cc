// message_headers.cc: scans a message's header as it streams in; builds the headers chute adds.

#include "smtp/message_headers.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace chute::smtp {

void HeaderScanner::Reset() { *this = HeaderScanner(); }

void HeaderScanner::EndOfName() {
  absl::string_view name(name_, name_bytes_);
  has_date_ |= absl::EqualsIgnoreCase(name, "date");
  if (absl::EqualsIgnoreCase(name, "message-id")) {
    capturing_message_id_ = !has_message_id_;
    has_message_id_ = true;
  }
  has_reply_to_ |= absl::EqualsIgnoreCase(name, "reply-to");
  if (absl::EqualsIgnoreCase(name, "from")) {
    capturing_from_ = ++from_count_ == 1;
  }
  in_name_ = false;
}

void HeaderScanner::CaptureFrom(char c) {
  if (c == '\r' || c == '\n') {
    return;
  }
  if (from_value_.size() >= kFromBytesMax) {
    from_overflow_ = true;
    return;
  }
  from_value_.push_back(c);
}

void HeaderScanner::CaptureMessageId(char c) {
  if (c == '\r' || c == '\n' || message_id_value_.size() >= kMessageIdBytesMax) {
    return;
  }
  message_id_value_.push_back(c);
}

absl::string_view HeaderScanner::message_id() const {
  return absl::StripAsciiWhitespace(message_id_value_);
}

size_t HeaderScanner::Feed(absl::string_view slice) {
  for (size_t i = 0; i < slice.size(); ++i) {
    char c = slice[i];
    if (done_) {
      return i;
    }
    if (blank_cr_) {
      done_ = c == '\n';  // CR LF on its own: the end of the header section
      blank_cr_ = false;
      if (done_) {
        return i + 1;
      }
    }
    if (at_line_start_) {
      at_line_start_ = false;
      name_bytes_ = 0;
      // A line starting with CR is the empty line ending the header; with space or tab, a
      // folded continuation of the previous field.
      if (c == '\r') {
        blank_cr_ = true;
        capturing_from_ = false;
        capturing_message_id_ = false;
        continue;
      }
      in_name_ = c != ' ' && c != '\t';
      capturing_from_ &= !in_name_;  // a folded line continues the field; a new name ends it
      capturing_message_id_ &= !in_name_;
    }
    if (c == '\n') {
      at_line_start_ = true;
      continue;
    }
    if (!in_name_) {
      if (capturing_from_) {
        CaptureFrom(c);
      } else if (capturing_message_id_) {
        CaptureMessageId(c);
      }
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
  return done_ ? 0 : slice.size();
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

void AppendWithoutField(absl::string_view header, absl::string_view name, std::string* out) {
  bool dropping = false;
  while (!header.empty()) {
    size_t end = header.find('\n');
    absl::string_view line =
        header.substr(0, end == absl::string_view::npos ? header.size() : end + 1);
    header.remove_prefix(line.size());
    bool continuation = line.front() == ' ' || line.front() == '\t';
    if (!continuation) {
      size_t colon = line.find(':');
      dropping =
          colon != absl::string_view::npos &&
          absl::EqualsIgnoreCase(absl::StripTrailingAsciiWhitespace(line.substr(0, colon)), name);
    }
    if (!dropping) {
      out->append(line.data(), line.size());
    }
  }
}

absl::string_view ReceivedProtocol(bool smtputf8, bool tls, bool auth) {
  static constexpr absl::string_view kNames[2][2][2] = {
      {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
      {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}}};
  return kNames[smtputf8][tls][auth];
}

std::vector<std::string> FromAddresses(absl::string_view value) {
  std::vector<std::string> out;
  std::string bare;
  std::string angle;
  bool in_angle = false;
  bool got_angle = false;
  bool in_quote = false;
  int comment_depth = 0;
  auto finish = [&] {
    std::string address(absl::StripAsciiWhitespace(got_angle ? angle : bare));
    if (!address.empty()) {
      out.push_back(std::move(address));
    }
    bare.clear();
    angle.clear();
    got_angle = false;
  };
  for (size_t i = 0; i < value.size(); ++i) {
    char c = value[i];
    if (in_quote) {
      i += c == '\\' ? 1 : 0;  // a quoted pair
      in_quote = c != '"';
      continue;
    }
    if (comment_depth > 0) {
      i += c == '\\' ? 1 : 0;
      comment_depth += c == '(' ? 1 : c == ')' ? -1 : 0;
      continue;
    }
    if (in_angle) {
      if (c == '>') {
        in_angle = false;
        got_angle = true;
      } else {
        angle.push_back(c);
      }
      continue;
    }
    switch (c) {
      case '"':
        in_quote = true;  // a display name: not part of any address
        break;
      case '(':
        comment_depth = 1;
        break;
      case '<':
        in_angle = true;
        angle.clear();
        break;
      case ',':
      case ';':
        finish();
        break;
      case ':':
        bare.clear();  // a group's display name ("team: a@b, c@d;")
        break;
      default:
        bare.push_back(c);
    }
  }
  finish();
  return out;
}

}  // namespace chute::smtp
