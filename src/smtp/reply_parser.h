#pragma once

// ReplyParser: the replies of an SMTP or LMTP server, as the client session (client_session.h)
// reads them for the delivery stage and for chute-load. Pure: no syscalls, no clock. Bytes go in
// with Feed() split anywhere; complete replies come out of Next() in the order the server sent
// them.
//
// What it accepts (RFC 5321 §4.2, RFC 2033 §4.2): lines "ddd-text" continue a reply, a line
// "ddd text" or "ddd" ends it; every line of one reply carries the same code. Lines end in
// CRLF; a bare LF is tolerated, because refusing a working server over it would only turn
// mail into retries. An enhanced status code (RFC 3463, RFC 2034) at the start of the first
// line is split off when its class matches the reply code.
//
// Bounds: a line (its CRLF included) longer than kReplyLineBytesMax, a reply of more than
// kReplyLinesMax lines, or more than kRepliesQueuedMax replies waiting in Next() is a protocol
// error: the parser stops, keeps what it has, and says why in error(). The caller drops the
// connection. Nothing inside grows without bound.
//
// Capabilities: ParseCapabilities() reads the keywords of an EHLO or LHLO reply.
//
// One ReplyParser belongs to one connection and one thread.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace chute::smtp {

// RFC 5321 §4.5.3.1.5 allows 512 bytes per reply line; servers in the field send longer
// EHLO and error lines, so chute allows eight times that before calling it an error.
inline constexpr size_t kReplyLineBytesMax = 4096;
// An EHLO reply of a busy MTA lists about 20 keywords; no sane reply needs more than this.
inline constexpr size_t kReplyLinesMax = 128;
// A client feeds at most this much per Feed() (ClientSession cuts its input), and the
// shortest complete reply is 4 bytes ("250\n"), so a well-behaved server never has more than
// this many replies waiting in one Feed() even with every command pipelined.
inline constexpr size_t kReplyFeedBytesMax = 16384;
inline constexpr size_t kReplyBytesMin = 4;
inline constexpr size_t kRepliesQueuedMax = kReplyFeedBytesMax / kReplyBytesMin;
static_assert(kReplyLineBytesMax >= 512, "RFC 5321 reply lines must fit");
static_assert(kRepliesQueuedMax * kReplyBytesMin >= kReplyFeedBytesMax);

// ServerReply: one complete reply.
struct ServerReply {
  uint16_t code = 0;          // 100..599: the first digit is 1..5
  std::string enhanced_code;  // "5.1.1", or "" when the first line carries none
  // The text of each line after "ddd-" / "ddd ", with the enhanced code removed where it
  // repeats the first line's. Control bytes (other than HTAB) are replaced by '?', so a reply
  // can be logged and stored as one line.
  std::vector<std::string> lines;

  int Class() const { return code / 100; }
  bool IsPositiveCompletion() const { return Class() == 2; }
  // Text: the non-empty lines joined by single spaces.
  std::string Text() const;
  // ToString: "550 5.1.1 text of all lines" on one line, at most `bytes_max` bytes.
  std::string ToString(size_t bytes_max = kReplyLineBytesMax) const;
};

// ReplyError: what kind of input the parser refused (error() says it in words).
enum class ReplyError : uint8_t {
  kNone,
  kLineTooLong,    // a line of kReplyLineBytesMax bytes or more
  kMalformed,      // no three-digit code, or neither ' ' nor '-' after it
  kCodeChanged,    // the code changes within a multi-line reply
  kTooManyLines,   // more than kReplyLinesMax lines
  kTooManyQueued,  // more than kRepliesQueuedMax replies waiting
};

class ReplyParser {
 public:
  // Feed: parses `bytes`. Complete replies wait for Next(). After an error, input is ignored.
  void Feed(absl::string_view bytes);
  // Next: moves the oldest complete reply into `out`; false when none is complete.
  bool Next(ServerReply* out);
  // has_reply: whether Next() would return true.
  bool has_reply() const { return !queued_.empty(); }
  // idle: no queued reply and no partial line or reply: the server said nothing unanswered.
  bool idle() const { return queued_.empty() && line_.empty() && current_.lines.empty(); }
  bool failed() const { return !error_.empty(); }
  // error: why the input was refused ("" while there is no error).
  const std::string& error() const { return error_; }
  ReplyError error_kind() const { return error_kind_; }

 private:
  void ParseLine(absl::string_view line);
  void FinishReply();
  void Fail(ReplyError kind, absl::string_view why);

  std::string line_;  // the unterminated last line, at most kReplyLineBytesMax bytes
  ServerReply current_;
  std::deque<ServerReply> queued_;
  std::string error_;
  ReplyError error_kind_ = ReplyError::kNone;
};

// Capabilities: what an EHLO/LHLO reply announced (RFC 5321 §4.1.1.1 and the extensions').
struct Capabilities {
  bool pipelining = false;  // RFC 2920
  bool chunking = false;    // RFC 3030 BDAT
  bool starttls = false;    // RFC 3207
  bool eight_bit_mime = false;
  bool smtputf8 = false;  // RFC 6531
  bool dsn = false;       // RFC 3461
  bool enhanced_status_codes = false;
  bool size = false;
  // SIZE n: the largest message the server takes; 0 when it named none (or SIZE 0: no limit).
  uint64_t size_bytes_max = 0;
};

// ParseCapabilities: the keywords of `reply` (the lines after the first, which names the
// server). Keywords are case-insensitive; unknown ones are ignored. A SIZE argument that is
// not a number counts as no limit; one too large for uint64 saturates.
Capabilities ParseCapabilities(const ServerReply& reply);

}  // namespace chute::smtp
