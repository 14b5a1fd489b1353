// libFuzzer target for smtp::ReplyParser and ParseCapabilities: a server's replies as
// arbitrary bytes. The first byte chooses where the rest is split. Invariants checked:
// - no crash, no UB (built with ASan+UBSan);
// - the split does not matter: fed whole and fed in pieces, the same replies come out and the
//   same error (or none);
// - every reply is bounded: a code 100..599, 1..kReplyLinesMax lines, each shorter than
//   kReplyLineBytesMax, no control bytes but HTAB; no more than kRepliesQueuedMax wait at once;
// - an enhanced code, when split off, has the reply's class;
// - ToString() respects its bound.
//
// Build and run: tools/fuzz.sh [SECONDS] reply_fuzz (preset "fuzz", clang).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "smtp/reply_parser.h"

namespace {

using chute::smtp::kRepliesQueuedMax;
using chute::smtp::kReplyLineBytesMax;
using chute::smtp::kReplyLinesMax;
using chute::smtp::ParseCapabilities;
using chute::smtp::ReplyParser;
using chute::smtp::ServerReply;

#define FUZZ_CHECK(condition)                                                     \
  do {                                                                            \
    if (!(condition)) {                                                           \
      __builtin_printf("invariant failed: %s (line %d)\n", #condition, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (false)

void CheckReply(const ServerReply& reply) {
  FUZZ_CHECK(reply.code >= 100 && reply.code <= 599);
  FUZZ_CHECK(!reply.lines.empty() && reply.lines.size() <= kReplyLinesMax);
  for (const std::string& line : reply.lines) {
    FUZZ_CHECK(line.size() < kReplyLineBytesMax);
    for (char c : line) {
      unsigned char byte = static_cast<unsigned char>(c);
      FUZZ_CHECK((byte >= 0x20 && byte != 0x7f) || byte == '\t');
    }
  }
  if (!reply.enhanced_code.empty()) {
    FUZZ_CHECK(reply.enhanced_code[0] - '0' == reply.Class());
  }
  FUZZ_CHECK(reply.ToString(64).size() <= 64);
  (void)ParseCapabilities(reply);
}

// Drain: takes the waiting replies, checking each.
void Drain(ReplyParser* parser, std::vector<std::string>* out) {
  ServerReply reply;
  size_t taken = 0;
  while (parser->Next(&reply)) {
    CheckReply(reply);
    out->push_back(reply.ToString());
    ++taken;
  }
  FUZZ_CHECK(taken <= kRepliesQueuedMax);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) {
    return 0;
  }
  size_t piece = static_cast<size_t>(data[0] % 16) + 1;
  absl::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);

  ReplyParser whole;
  whole.Feed(input);
  std::vector<std::string> whole_replies;
  Drain(&whole, &whole_replies);

  ReplyParser split;
  std::vector<std::string> split_replies;
  for (size_t pos = 0; pos < input.size(); pos += piece) {
    split.Feed(input.substr(pos, piece));
    Drain(&split, &split_replies);
  }
  // Draining between pieces never lets replies pile up, so only the whole feed can overflow
  // the queue; up to that point both saw the same replies.
  bool whole_overflowed = whole.error().rfind("more than", 0) == 0;
  if (whole_overflowed) {
    FUZZ_CHECK(whole_replies.size() == kRepliesQueuedMax);
    FUZZ_CHECK(split_replies.size() >= whole_replies.size());
    split_replies.resize(whole_replies.size());
  } else {
    FUZZ_CHECK(whole.error() == split.error());
  }
  FUZZ_CHECK(whole_replies == split_replies);
  return 0;
}
