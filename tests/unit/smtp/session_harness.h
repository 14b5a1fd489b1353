#pragma once

// A SessionHandler that records what the session asked and answers from a script, and a
// driver that feeds input in chosen splits. Shared by the session tests, the golden
// transcripts and the fuzzer.

#include <deque>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "smtp/session.h"

namespace chute::smtp::testing {

inline absl::Time TestTime() { return absl::FromUnixSeconds(1'800'000'000); }

class RecordingHandler : public SessionHandler {
 public:
  // When true, decisions return std::nullopt; the reply they would have given waits in
  // `deferred` for the driver to pass to Session::Answer().
  bool async = false;
  std::optional<Reply> deferred;
  // Slices seen, as pointers, to check that they point into the fed input.
  std::vector<absl::string_view> slice_views;
  // Replies to give, in order, for each kind; when a queue is empty the default applies.
  std::deque<Reply> auth_replies, mail_replies, rcpt_replies, end_replies;

  std::vector<std::string> events;    // "AUTH PLAIN user pass", "MAIL <a>", "RCPT <b>", ...
  std::string body;                   // concatenated slices of the current/last message
  std::vector<std::string> messages;  // bodies handed over by OnBodyEnd
  size_t slices = 0;

  std::optional<Reply> OnAuth(const AuthRequest& r) override {
    events.push_back(absl::StrCat("AUTH ", MechanismName(r.mechanism), " ", r.authzid, "|",
                                  r.username, "|", r.secret));
    return Decide(auth_replies, kReplyAuthOk);
  }
  std::optional<Reply> OnMail(const MailArgs& m) override {
    events.push_back(absl::StrCat("MAIL <", m.address, ">", m.size ? " SIZE" : "",
                                  m.smtputf8 ? " SMTPUTF8" : ""));
    return Decide(mail_replies, kReplySenderOk);
  }
  std::optional<Reply> OnRcpt(const RcptArgs& rcpt) override {
    events.push_back(absl::StrCat("RCPT <", rcpt.address, ">"));
    return Decide(rcpt_replies, kReplyRecipientOk);
  }
  void OnBodyBegin() override {
    events.push_back("BODY");
    body.clear();
  }
  void OnBodySlice(absl::string_view slice) override {
    ++slices;
    slice_views.push_back(slice);
    body.append(slice.data(), slice.size());
  }
  std::optional<Reply> OnBodyEnd() override {
    events.push_back("END");
    messages.push_back(body);
    return Decide(end_replies, kReplyMessageAccepted);
  }
  void OnTransactionAbort() override { events.push_back("ABORT"); }
  void OnStartTls() override { events.push_back("STARTTLS"); }

 private:
  std::optional<Reply> Decide(std::deque<Reply>& queue, Reply fallback) {
    Reply reply = fallback;
    if (!queue.empty()) {
      reply = queue.front();
      queue.pop_front();
    }
    if (async) {
      deferred = reply;
      return std::nullopt;
    }
    return reply;
  }
};

// Drive: feeds `input` in pieces of `piece_bytes` (0 = all at once), answering asynchronous
// decisions with what the handler deferred and completing STARTTLS handshakes at once, exactly as
// an engine would: unconsumed input is kept and fed again. Returns all output.
inline std::string Drive(Session& session, RecordingHandler& handler, absl::string_view input,
                         size_t piece_bytes = 0) {
  std::string out;
  std::string pending;  // received but not consumed
  size_t pos = 0;
  auto drain = [&] {
    std::string chunk;
    session.SwapOutput(chunk);
    out += chunk;
  };
  while (true) {
    if (pos < input.size()) {
      size_t n = piece_bytes == 0 ? input.size() - pos : std::min(piece_bytes, input.size() - pos);
      pending.append(input.data() + pos, n);
      pos += n;
    }
    // Feed until no progress.
    while (true) {
      size_t consumed = session.Feed(pending, TestTime());
      pending.erase(0, consumed);
      drain();
      Session::Blocked blocked = session.blocked();
      if (blocked == Session::Blocked::kAwaitingAnswer) {
        Reply answer = handler.deferred.value_or(kReplyOk);
        handler.deferred.reset();
        session.Answer(answer);
        continue;
      }
      if (blocked == Session::Blocked::kTlsHandshake) {
        pending.clear();  // whatever came in plaintext after STARTTLS is gone
        session.TlsStarted(TestTime());
        break;
      }
      if (consumed > 0 && !pending.empty()) {
        continue;  // e.g. the output was full and has just been drained
      }
      break;
    }
    if (session.closed() || pos >= input.size()) {
      break;
    }
  }
  return out;
}

}  // namespace chute::smtp::testing
