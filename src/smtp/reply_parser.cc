// reply_parser.cc: parses a downstream SMTP/LMTP server's replies and EHLO capabilities.

#include "smtp/reply_parser.h"

#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/check.h"

namespace chute::smtp {
namespace {

// A reply code is three digits "xyz" with x in 1..5 (RFC 5321 §4.2.1).
bool ParseCode(absl::string_view line, uint16_t* code) {
  if (line.size() < 3) {
    return false;
  }
  for (size_t i = 0; i < 3; ++i) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(line[i]))) {
      return false;
    }
  }
  if (line[0] < '1' || line[0] > '5') {
    return false;
  }
  *code = static_cast<uint16_t>((line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0'));
  return true;
}

// Digits: the length (1..3) of the run of digits at `pos`, 0 if there is none or it is longer.
size_t DigitRun(absl::string_view text, size_t pos) {
  size_t end = pos;
  while (end < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[end]))) {
    ++end;
  }
  size_t length = end - pos;
  return length <= 3 ? length : 0;
}

// EnhancedCodeLength: the length of "c.sss.ddd" at the start of `text` when it is followed by
// a space or the end and its class is `reply_class` (RFC 3463 §2, RFC 2034 §4); else 0.
size_t EnhancedCodeLength(absl::string_view text, int reply_class) {
  if (text.size() < 5 || text[0] != static_cast<char>('0' + reply_class) || text[1] != '.') {
    return 0;
  }
  if (reply_class != 2 && reply_class != 4 && reply_class != 5) {
    return 0;
  }
  size_t subject = DigitRun(text, 2);
  if (subject == 0 || 2 + subject >= text.size() || text[2 + subject] != '.') {
    return 0;
  }
  size_t detail_pos = 3 + subject;
  size_t detail = DigitRun(text, detail_pos);
  size_t end = detail_pos + detail;
  if (detail == 0 || (end < text.size() && text[end] != ' ')) {
    return 0;
  }
  return end;
}

// Sanitized: `text` with control bytes (other than HTAB) replaced, so that it stays one line
// wherever it is logged or stored.
std::string Sanitized(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    unsigned char byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && byte != '\t') || byte == 0x7f) {
      c = '?';
    }
  }
  return out;
}

}  // namespace

std::string ServerReply::Text() const {
  std::string text;
  for (const std::string& line : lines) {
    if (line.empty()) {
      continue;
    }
    if (!text.empty()) {
      text.push_back(' ');
    }
    text.append(line);
  }
  return text;
}

std::string ServerReply::ToString(size_t bytes_max) const {
  std::string out = absl::StrCat(code);
  if (!enhanced_code.empty()) {
    absl::StrAppend(&out, " ", enhanced_code);
  }
  std::string text = Text();
  if (!text.empty()) {
    absl::StrAppend(&out, " ", text);
  }
  if (out.size() > bytes_max) {
    out.resize(bytes_max);
  }
  return out;
}

void ReplyParser::Feed(absl::string_view bytes) {
  while (!bytes.empty() && error_.empty()) {
    const char* newline = static_cast<const char*>(std::memchr(bytes.data(), '\n', bytes.size()));
    size_t take = newline == nullptr ? bytes.size() : static_cast<size_t>(newline - bytes.data());
    // The limit counts the line with its LF: a line may have kReplyLineBytesMax - 1 bytes
    // before the LF (CR included).
    if (line_.size() + take + 1 > kReplyLineBytesMax) {
      Fail(ReplyError::kLineTooLong,
           absl::StrCat("a reply line is longer than ", kReplyLineBytesMax, " bytes"));
      return;
    }
    line_.append(bytes.data(), take);
    if (newline == nullptr) {
      return;
    }
    bytes.remove_prefix(take + 1);
    absl::string_view line(line_);
    if (absl::EndsWith(line, "\r")) {
      line.remove_suffix(1);
    }
    ParseLine(line);
    line_.clear();
  }
}

void ReplyParser::ParseLine(absl::string_view line) {
  uint16_t code = 0;
  if (!ParseCode(line, &code)) {
    Fail(ReplyError::kMalformed, "a reply line does not start with a three-digit code");
    return;
  }
  bool last = line.size() == 3 || line[3] == ' ';
  if (!last && line[3] != '-') {
    Fail(ReplyError::kMalformed, "a reply code is followed by neither a space nor '-'");
    return;
  }
  if (!current_.lines.empty() && code != current_.code) {
    Fail(ReplyError::kCodeChanged, "the code changes within a multi-line reply");
    return;
  }
  if (current_.lines.size() == kReplyLinesMax) {
    Fail(ReplyError::kTooManyLines,
         absl::StrCat("a reply has more than ", kReplyLinesMax, " lines"));
    return;
  }
  current_.code = code;
  current_.lines.push_back(Sanitized(line.size() > 4 ? line.substr(4) : absl::string_view()));
  if (last) {
    FinishReply();
  }
}

void ReplyParser::FinishReply() {
  CHECK(!current_.lines.empty());
  size_t length = EnhancedCodeLength(current_.lines[0], current_.Class());
  if (length != 0) {
    current_.enhanced_code = current_.lines[0].substr(0, length);
    // Servers repeat the enhanced code on each line of a multi-line reply; it is said once.
    for (std::string& text : current_.lines) {
      if (absl::StartsWith(text, current_.enhanced_code) &&
          (text.size() == length || text[length] == ' ')) {
        text.erase(0, text.size() == length ? length : length + 1);
      }
    }
  }
  if (queued_.size() == kRepliesQueuedMax) {
    Fail(ReplyError::kTooManyQueued,
         absl::StrCat("more than ", kRepliesQueuedMax, " replies arrived unasked"));
    return;
  }
  queued_.push_back(std::move(current_));
  current_ = ServerReply();
}

bool ReplyParser::Next(ServerReply* out) {
  if (queued_.empty()) {
    return false;
  }
  *out = std::move(queued_.front());
  queued_.pop_front();
  return true;
}

void ReplyParser::Fail(ReplyError kind, absl::string_view why) {
  if (error_.empty()) {
    error_ = std::string(why);
    error_kind_ = kind;
  }
}

Capabilities ParseCapabilities(const ServerReply& reply) {
  Capabilities caps;
  for (size_t i = 1; i < reply.lines.size(); ++i) {
    absl::string_view line = reply.lines[i];
    size_t space = line.find(' ');
    std::string keyword = absl::AsciiStrToUpper(line.substr(0, space));
    absl::string_view argument =
        space == absl::string_view::npos ? absl::string_view() : line.substr(space + 1);
    if (keyword == "PIPELINING") {
      caps.pipelining = true;
    } else if (keyword == "CHUNKING") {
      caps.chunking = true;
    } else if (keyword == "STARTTLS") {
      caps.starttls = true;
    } else if (keyword == "8BITMIME") {
      caps.eight_bit_mime = true;
    } else if (keyword == "SMTPUTF8") {
      caps.smtputf8 = true;
    } else if (keyword == "DSN") {
      caps.dsn = true;
    } else if (keyword == "ENHANCEDSTATUSCODES") {
      caps.enhanced_status_codes = true;
    } else if (keyword == "SIZE") {
      caps.size = true;
      caps.size_bytes_max = 0;
      argument = absl::StripAsciiWhitespace(argument);
      for (char c : argument) {
        if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
          caps.size_bytes_max = 0;  // not a number: no limit known
          break;
        }
        uint64_t digit = static_cast<uint64_t>(c - '0');
        caps.size_bytes_max = caps.size_bytes_max > (UINT64_MAX - digit) / 10
                                  ? UINT64_MAX
                                  : caps.size_bytes_max * 10 + digit;
      }
    }
  }
  return caps;
}

}  // namespace chute::smtp
