#pragma once

// ClientSession: one SMTP submission client session of chute-load, pure: plaintext bytes in
// (OnInput), plaintext bytes out (output()), times passed in, no syscalls, no clock. The
// protocol is smtp::ClientSession (src/smtp/client_session.h), the client session chuted's
// delivery stage drives too; this class chooses what it sends (jobs from a JobSource, built
// messages) and counts what comes back (Stats). The transport (runner.cc) owns the socket and
// the TLS stream: when the session asks for TLS (wants_tls() after STARTTLS's 220) it runs the
// handshake and calls OnTlsDone(); with implicit TLS it does so before the first byte.
//
// The session walks banner -> EHLO -> [STARTTLS -> EHLO] -> [AUTH] -> ready, then takes jobs
// from its JobSource: MAIL, RCPT x N and DATA (or BDAT n LAST with the message) pipelined
// when the server offers PIPELINING, the message after 354, and counts the 250 (Stats). After
// `messages_max` messages, when the source is exhausted, or when asked to stop (Stop) it sends
// QUIT. Any unexpected reply is counted by phase and code and ends the session with QUIT
// (after the replies still owed to pipelined commands); a 421 ends it at once.
//
// Limits: those of smtp::ReplyParser (kReplyLineBytesMax per reply line, kReplyLinesMax lines
// per reply): beyond them the server is broken and the session ends ("protocol"), as it does
// when the server sends a reply nobody asked for, or plain text after its 220 to STARTTLS.

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "smtp/client_session.h"
#include "tools/chute-load/options.h"
#include "tools/chute-load/schedule.h"
#include "tools/chute-load/stats.h"

namespace chute::load {

using smtp::kReplyLineBytesMax;

class JobSource {
 public:
  virtual ~JobSource() = default;
  // Take: the next due job and its message size; false when none is due now.
  virtual bool Take(int64_t now_us, Job* job, uint64_t* size_bytes) = 0;
  // Exhausted: no job will be due any more (count reached or time up).
  virtual bool Exhausted(int64_t now_us) const = 0;
};

struct SessionConfig {
  TlsMode tls = TlsMode::kNone;
  AuthMech auth = AuthMech::kNone;
  std::string user;
  std::string secret;
  std::string from;
  std::vector<std::string> to;  // templates
  int rcpts = 1;
  std::string ehlo = "chute-load.localdomain";
  bool bdat = false;
  bool pipelining = true;
  uint64_t messages_max = 0;  // per connection; 0 = unlimited
  bool hold = false;          // idle/caps: stop at ready and wait for Stop()
  std::string date;
  std::string run_id;
};

class ClientSession : private smtp::ClientObserver {
 public:
  enum class Phase {
    kBanner,
    kEhlo,
    kStartTls,
    kTls,
    kEhlo2,
    kAuth,
    kReady,
    kMessage,
    kData,
    kQuit,
    kDone
  };

  // ClientSession: `source` and `stats` outlive the session; `config` is copied by reference
  // (it outlives the session too).
  ClientSession(const SessionConfig& config, JobSource* source, Stats* stats);

  // Start: the TCP connect began at `connect_start_us` (for the banner latency).
  void Start(int64_t connect_start_us);
  // OnInput: plaintext from the server.
  void OnInput(absl::string_view bytes, int64_t now_us);
  // OnTlsDone: the handshake the session asked for (or implicit TLS's) completed.
  void OnTlsDone(int64_t now_us);
  // Poke: a ready session takes a due job, or quits when there will be none.
  void Poke(int64_t now_us);
  // Stop: the run is over: a ready session quits; one mid-message finishes it first.
  void Stop(int64_t now_us);
  // OnClosed: the connection ended (peer close, error or timeout, named by `why` for the
  // error key). Counted as an error unless the session had finished or was quitting.
  void OnClosed(absl::string_view why, int64_t now_us);
  // Abandon: the connection ended for a reason the transport already counted (connect, TLS).
  void Abandon();

  std::string* output() { return core_.output(); }
  bool wants_tls() const { return phase_ == Phase::kTls; }
  bool done() const { return phase_ == Phase::kDone; }
  bool ready() const { return phase_ == Phase::kReady; }
  // waiting: a reply (or the handshake) is owed, so the transport's timeout applies.
  bool waiting() const { return phase_ != Phase::kReady && phase_ != Phase::kDone; }
  Phase phase() const { return phase_; }
  static const char* PhaseName(Phase phase);
  uint64_t messages_done() const { return messages_done_; }

 private:
  // smtp::ClientObserver: every reply, after the core session acted on it; phase_ is still
  // the phase it came in.
  void OnReply(smtp::ClientCommand command, const smtp::ServerReply& reply,
               int64_t now_us) override;
  void OnHello(const smtp::ServerReply& reply, int64_t now_us);
  void OnEnvelopeReply(smtp::ClientCommand command, const smtp::ServerReply& reply, int64_t now_us);
  void BecomeReady(int64_t now_us);
  void StartMessage(const Job& job, uint64_t size_bytes, int64_t now_us);
  void FinishMessage(int64_t now_us);
  void Fail(absl::string_view phase, const smtp::ServerReply& reply);
  void Protocol(absl::string_view what);
  void Quit();

  const SessionConfig& config_;
  JobSource* source_;
  Stats* stats_;
  const smtp::ClientConfig core_config_;
  smtp::ClientSession core_;
  Phase phase_ = Phase::kBanner;
  bool stop_ = false;
  bool failed_ = false;       // this message (or session) already had an unexpected reply
  bool mail_failed_ = false;  // this message's MAIL was refused (later refusals follow from it)
  int64_t connect_start_us_ = 0;
  int64_t auth_start_us_ = 0;
  Job job_;
  std::string message_;
  int rcpts_accepted_ = 0;
  uint64_t messages_done_ = 0;
};

}  // namespace chute::load
