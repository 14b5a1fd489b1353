// libFuzzer target for smtp::Session: arbitrary bytes in arbitrary splits, with the handler's
// answers (accept or refuse, at once or later) also drawn from the input. Invariants checked:
// - no crash, no UB (built with ASan+UBSan);
// - at most one final reply per command line or BDAT command, plus the greeting and one
//   closing 421;
// - body bytes handed over never exceed the bytes fed, nor the message size limit;
// - every reply line is well formed: three digits, ' ' or '-', text, CR LF;
// - body slices point into the input that was fed.
//
// Build and run: tools/fuzz.sh [SECONDS] (preset "fuzz", clang).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "smtp/session.h"

namespace {

using chute::smtp::AuthRequest;
using chute::smtp::MailArgs;
using chute::smtp::RcptArgs;
using chute::smtp::Reply;
using chute::smtp::Session;
using chute::smtp::SessionHandler;
using chute::smtp::SessionOptions;

#define FUZZ_CHECK(condition)                                                     \
  do {                                                                            \
    if (!(condition)) {                                                           \
      __builtin_printf("invariant failed: %s (line %d)\n", #condition, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (false)

// Choices: a byte source for the harness's own decisions, taken from the input's front.
class Choices {
 public:
  Choices(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Next() { return pos_ < size_ ? data_[pos_++] : 0; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

class FuzzHandler : public SessionHandler {
 public:
  explicit FuzzHandler(Choices* choices) : choices_(choices) {}

  std::optional<Reply> OnAuth(const AuthRequest&) override {
    return Pick(chute::smtp::kReplyAuthOk, chute::smtp::kReplyAuthFailed);
  }
  std::optional<Reply> OnMail(const MailArgs&) override {
    return Pick(chute::smtp::kReplySenderOk, chute::smtp::kReplySendAsDenied);
  }
  std::optional<Reply> OnRcpt(const RcptArgs&) override {
    return Pick(chute::smtp::kReplyRecipientOk, chute::smtp::kReplyRelayDenied);
  }
  void OnBodyBegin() override { message_bytes = 0; }
  void OnBodySlice(absl::string_view slice) override {
    FUZZ_CHECK(slice.data() >= fed_begin && slice.data() + slice.size() <= fed_end);
    body_bytes += slice.size();
    message_bytes += slice.size();
  }
  std::optional<Reply> OnBodyEnd() override {
    return Pick(chute::smtp::kReplyMessageAccepted, chute::smtp::kReplyStorageFull);
  }
  void OnTransactionAbort() override {}
  void OnStartTls() override {}

  std::optional<Reply> deferred;
  uint64_t body_bytes = 0;
  uint64_t message_bytes = 0;
  const char* fed_begin = nullptr;
  const char* fed_end = nullptr;

 private:
  std::optional<Reply> Pick(Reply yes, Reply no) {
    uint8_t c = choices_->Next();
    Reply reply = (c & 1) ? no : yes;
    if (c & 2) {
      deferred = reply;
      return std::nullopt;
    }
    return reply;
  }
  Choices* choices_;
};

void CheckReplies(absl::string_view out) {
  while (!out.empty()) {
    size_t end = out.find("\r\n");
    FUZZ_CHECK(end != absl::string_view::npos);
    absl::string_view line = out.substr(0, end);
    FUZZ_CHECK(line.size() >= 4);
    for (int i = 0; i < 3; ++i) {
      FUZZ_CHECK(line[i] >= '0' && line[i] <= '9');
    }
    FUZZ_CHECK(line[3] == ' ' || line[3] == '-');
    out.remove_prefix(end + 2);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first 16 bytes steer the harness: options, splits, answers.
  size_t steer_bytes = size < 16 ? size : 16;
  Choices choices(data, steer_bytes);
  absl::string_view input(reinterpret_cast<const char*>(data) + steer_bytes, size - steer_bytes);

  uint8_t mode = choices.Next();
  SessionOptions options;
  options.hostname = "fuzz.test";
  options.tls_active = mode & 1;
  options.starttls_offered = mode & 2;
  options.tls_required = mode & 4;
  options.message_size_bytes = (mode & 8) ? 64 : 4096;
  options.recipients_per_message = (mode & 16) ? 2 : 50;
  options.errors_per_session = (mode & 32) ? 3 : 1000;
  options.auth_failures_per_session = 2;

  FuzzHandler handler(&choices);
  Session session(options, &handler);
  if (mode & 64) {
    session.MarkAuthenticated();
  }
  session.Start(absl::UnixEpoch());

  std::string out;
  std::string chunk;
  size_t fed_bytes = 0;
  size_t pos = 0;
  while (pos < input.size() && !session.closed()) {
    size_t piece = 1 + choices.Next() % 64;
    piece = std::min(piece, input.size() - pos);
    absl::string_view pending = input.substr(pos, piece);
    handler.fed_begin = pending.data();
    handler.fed_end = pending.data() + pending.size();
    for (int rounds = 0; !pending.empty() && rounds < 100000; ++rounds) {
      size_t consumed = session.Feed(pending, absl::UnixEpoch());
      FUZZ_CHECK(consumed <= pending.size());
      fed_bytes += consumed;
      pending.remove_prefix(consumed);
      session.SwapOutput(chunk);
      out += chunk;
      chunk.clear();
      Session::Blocked blocked = session.blocked();
      if (blocked == Session::Blocked::kAwaitingAnswer) {
        FUZZ_CHECK(handler.deferred.has_value());
        Reply answer = *handler.deferred;
        handler.deferred.reset();
        session.Answer(answer);
      } else if (blocked == Session::Blocked::kTlsHandshake) {
        session.TlsStarted(absl::UnixEpoch());
        break;  // the rest of this read was plaintext after STARTTLS: gone
      } else if (blocked == Session::Blocked::kClosed) {
        break;
      } else if (consumed == 0 && blocked == Session::Blocked::kNo) {
        FUZZ_CHECK(false && "no progress while not blocked");
      }
    }
    pos += piece;
    if ((choices.Next() & 7) == 0) {
      session.OnDeadline(absl::UnixEpoch() + absl::Hours(2));
    }
  }
  session.SwapOutput(chunk);
  out += chunk;

  CheckReplies(out);
  FUZZ_CHECK(handler.body_bytes <= fed_bytes);
  FUZZ_CHECK(handler.message_bytes <= options.message_size_bytes);
  // One final reply per command at most, plus the greeting and a closing 421 (errors, auth
  // failures or the timeout probe above).
  FUZZ_CHECK(session.replies() <= session.commands() + 2);
  return 0;
}
