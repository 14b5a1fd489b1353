// message.cc: builds chute-load's test messages.

#include "tools/chute-load/message.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace chute::load {
namespace {

// Body lines are kLineBytes long plus CRLF; every kDotEvery-th starts with a dot.
constexpr size_t kLineBytes = 76;
constexpr uint64_t kDotEvery = 7;

}  // namespace

std::string BuildMessage(const MessageHeaders& headers, uint64_t seq, uint64_t size_bytes) {
  std::string out = absl::StrCat(
      "From: <", headers.from, ">\r\nTo: ",
      absl::StrJoin(headers.to, ", ",
                    [](std::string* o, const std::string& a) { absl::StrAppend(o, "<", a, ">"); }),
      "\r\nSubject: chute-load ", headers.run_id, " #", seq, "\r\nDate: ", headers.date,
      "\r\nMessage-ID: <", seq, ".", headers.run_id, "@chute-load>\r\nMIME-Version: 1.0\r\n",
      "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
  out.reserve(size_bytes + kLineBytes + 2);
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  uint64_t line = 0;
  while (out.size() + 2 < size_bytes) {
    size_t room = static_cast<size_t>(size_bytes - out.size() - 2);
    size_t length = std::min(kLineBytes, room);
    std::string text(length, 'x');
    for (size_t i = 0; i < length; ++i) {
      text[i] = kAlphabet[(line + i) % (sizeof(kAlphabet) - 1)];
    }
    if (line % kDotEvery == 0 && length > 0) {
      text[0] = '.';
    }
    absl::StrAppend(&out, text, "\r\n");
    ++line;
  }
  if (line == 0) {
    out += "chute-load\r\n";  // a body of at least one line
  }
  return out;
}

}  // namespace chute::load
