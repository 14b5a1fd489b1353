#pragma once

// smtp::Session: one SMTP server session as a sans-I/O state machine
// (docs/architecture.md, Session).
//
// Bytes go in through Feed(), in any split down to one byte at a time; replies come out in
// order through the output buffer; decisions that belong to the layers above (AUTH, MAIL, RCPT,
// end of message) and the body itself leave through a SessionHandler. The session makes no
// syscall and reads no clock: the caller passes the time in.
//
// Asynchronous answers. A handler may answer a decision at once (return a Reply) or later
// (return std::nullopt, then call Answer()). While an answer is outstanding the session
// consumes nothing more: Feed() returns how much it consumed and the caller keeps the rest of
// the input (pipelined commands, the buffers they live in) and feeds it again after Answer().
// So pipelined input is never lost or reordered, and never copied to be held.
//
// The body path. Message content reaches OnBodySlice() as slices of the very input given to
// Feed(): for DATA one slice per input piece plus one per stuffed dot; for BDAT one per piece.
// The caller keeps those bytes alive as long as it holds slices (zero-copy receive:
// docs/architecture.md, The path of one message).
//
// STARTTLS. After "220 Ready to start TLS" the session discards the rest of that input (the
// CVE-2011-0411 defence: nothing sent in plaintext after STARTTLS is ever acted on) and waits
// for TlsStarted(); then it starts over and requires EHLO again.
//
// Limits, each with its reply in smtp/reply.h: command line 512 octets (AUTH and SASL lines
// 12288), recipients per message, message size (SIZE= at MAIL, the body after its end, never
// buffered), text lines of 1000 octets, protocol errors per session, AUTH failures per session,
// and the output buffer (kOutputBytesMax: Feed() stops reading commands until it is drained).
//
// Threading: a Session belongs to one thread (its shard); nothing in it is synchronized.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "smtp/body_scanner.h"
#include "smtp/parser.h"
#include "smtp/reply.h"

namespace chute::smtp {

// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CR LF.
inline constexpr size_t kCommandLineBytesMax = 512;
// RFC 4954 §4: AUTH lines may be longer; 12288 holds an XOAUTH2 bearer token with room.
inline constexpr size_t kAuthLineBytesMax = 12288;
// Replies waiting to be sent; past this Feed() reads no further command.
inline constexpr size_t kOutputBytesMax = 64 * 1024;
static_assert(kOutputBytesMax > kAuthLineBytesMax, "one reply always fits");

struct SessionOptions {
  std::string hostname = "localhost";  // in the greeting and the EHLO reply
  uint64_t message_size_bytes = 10485760;
  uint32_t recipients_per_message = 50;
  uint32_t errors_per_session = 10;
  uint32_t auth_failures_per_session = 3;
  absl::Duration command_timeout = absl::Seconds(300);
  // Until the first command line: a connection that says nothing is dropped sooner.
  absl::Duration first_command_timeout = absl::Seconds(30);
  absl::Duration data_timeout = absl::Seconds(600);
  absl::Duration session_timeout = absl::Seconds(3600);
  bool starttls_offered = true;    // the listener can do STARTTLS
  bool tls_active = false;         // implicit TLS: the session starts inside TLS
  bool tls_required = true;        // AUTH, MAIL, RCPT, DATA and BDAT need TLS
  bool normalize_bare_lf = false;  // DATA: a bare LF becomes CR LF instead of 550 5.5.2
  // A message body must arrive at least this fast, measured over kDataRateWindow; 0 = off.
  uint64_t data_rate_min_bytes_per_s = 500;
};

inline constexpr absl::Duration kDataRateWindow = absl::Seconds(30);

struct AuthRequest {
  Mechanism mechanism = Mechanism::kPlain;
  std::string authzid;   // PLAIN only; "" when absent
  std::string username;  // PLAIN authcid, LOGIN username, XOAUTH2 user=
  std::string secret;    // the password, or the XOAUTH2 bearer token
};

// SessionHandler: the layer above a Session (policy, auth, spool). Called only from inside
// Session methods, on the session's thread. A decision returns its Reply, or std::nullopt to
// answer later through Session::Answer(). A 421 answer closes the session.
class SessionHandler {
 public:
  virtual ~SessionHandler() = default;

  // OnAuth: credentials decoded from a well-formed AUTH exchange. Answer 235 to authenticate,
  // 535/454/550 (see reply.h) to refuse.
  virtual std::optional<Reply> OnAuth(const AuthRequest& request) = 0;
  // OnMail: a syntactically valid MAIL FROM within the limits. 2xx starts a transaction.
  virtual std::optional<Reply> OnMail(const MailArgs& mail) = 0;
  // OnRcpt: a syntactically valid RCPT TO below the recipient limit. 2xx accepts it.
  virtual std::optional<Reply> OnRcpt(const RcptArgs& rcpt) = 0;
  // OnBodyBegin: DATA was accepted (354 sent) or the first BDAT chunk of a transaction began.
  virtual void OnBodyBegin() = 0;
  // OnBodySlice: the next piece of content; points into the input given to Feed().
  virtual void OnBodySlice(absl::string_view slice) = 0;
  // OnBodyEnd: the whole message arrived intact and within the limits. The 2xx answer promises
  // the message is safe (docs/architecture.md, Group commit) and ends the transaction either way.
  virtual std::optional<Reply> OnBodyEnd() = 0;
  // OnTransactionAbort: the transaction begun by an accepted MAIL ended without OnBodyEnd
  // (RSET, EHLO, a dropped body, STARTTLS). Whatever was kept for it can go.
  virtual void OnTransactionAbort() = 0;
  // OnStartTls: "220 Ready to start TLS" is in the output; after sending it, run the handshake
  // and call TlsStarted(). Input already received is discarded by the session.
  virtual void OnStartTls() = 0;
  // OnRefusal: a 4xx or 5xx reply was just put in the output (for metrics and logs; no
  // decision). The default does nothing.
  virtual void OnRefusal(const Reply& reply) { (void)reply; }
};

class Session {
 public:
  // Why Feed() stopped before the end of its input.
  enum class Blocked : uint8_t {
    kNo,
    kAwaitingAnswer,  // call Answer()
    kOutputFull,      // send the output, then Feed() again
    kTlsHandshake,    // call TlsStarted() once the handshake is done
    kClosed,          // send the output, then close the connection
  };

  // Session: `handler` must outlive the session.
  Session(SessionOptions options, SessionHandler* handler);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Start: queues the 220 greeting. Call once, before Feed().
  void Start(absl::Time now);

  // Feed: processes input; returns the number of bytes consumed. It consumes everything unless
  // blocked(): then the caller must keep input[consumed..] and feed it again once unblocked.
  // After STARTTLS or close the rest is discarded (consumed).
  size_t Feed(absl::string_view input, absl::Time now);

  // Answer: the handler's later answer to the outstanding decision. Only while
  // blocked() == kAwaitingAnswer.
  void Answer(const Reply& reply);

  // TlsStarted: the TLS handshake after STARTTLS succeeded: the session starts over (no
  // greeting is sent), EHLO is required again and STARTTLS is no longer offered.
  void TlsStarted(absl::Time now);

  // MarkAuthenticated: the session acts as an account without AUTH (a trusted listener).
  void MarkAuthenticated() { authenticated_ = true; }

  // Deadline: when OnDeadline() must be called if no input arrives before it (command or DATA
  // timeout, whichever applies, and the whole-session timeout).
  absl::Time Deadline() const;
  // OnDeadline: at or after Deadline(): queues 421 4.4.2 and closes. Earlier calls do nothing.
  void OnDeadline(absl::Time now);

  // RestartDataRateWindow: the server itself stopped reading for a while (no receive buffer):
  // that time does not count against the client's minimum data rate.
  void RestartDataRateWindow(absl::Time now) {
    data_window_start_ = now;
    data_window_bytes_ = 0;
  }

  // PeerGone: the peer closed its side or reset the connection: nothing more will arrive. A
  // message body, a SASL exchange or a handshake in progress can never finish, so the session
  // closes at once and drops the transaction (a body's memory and the connection's places go
  // with it); otherwise it ends as Shutdown() does, after the replies it owes.
  void PeerGone();

  // Shutdown: the server is stopping. An idle session gets 421 4.3.2 and closes at once; a
  // session inside a message body finishes that message, then gets 421 4.3.2.
  void Shutdown();

  // The replies not yet sent. SwapOutput exchanges the buffer with `other` (pass an empty
  // string that keeps its capacity) so the caller can send it while the session goes on.
  absl::string_view output() const { return output_; }
  void SwapOutput(std::string& other) { output_.swap(other); }

  Blocked blocked() const;
  bool closed() const { return phase_ == Phase::kClosed; }
  bool authenticated() const { return authenticated_; }
  bool tls_active() const { return tls_active_; }
  bool in_transaction() const { return mail_accepted_; }
  // smtputf8: the transaction's MAIL carried SMTPUTF8 (RFC 6531).
  bool smtputf8() const { return smtputf8_; }
  // helo_name: the argument of the last EHLO/HELO ("" before one).
  absl::string_view helo_name() const { return helo_; }

  // Counters for tests, the fuzzer and metrics.
  uint64_t commands() const { return commands_; }      // command and SASL lines, BDAT chunks
  uint64_t replies() const { return replies_; }        // final replies (a multi-line one once)
  uint64_t body_bytes() const { return body_bytes_; }  // content of the current/last message
  uint32_t errors() const { return errors_; }
  uint32_t recipients() const { return recipients_; }

 private:
  enum class Phase : uint8_t {
    kCommand,
    kSasl,       // waiting for a SASL response line
    kData,       // inside DATA content
    kBdatChunk,  // inside a BDAT chunk
    kAwaiting,   // a handler decision is outstanding
    kTlsHandshake,
    kClosed,
  };
  enum class Pending : uint8_t { kNone, kAuth, kMail, kRcpt, kBodyEnd };
  enum class SaslStep : uint8_t { kInitial, kLoginPassword };

  size_t ConsumeCommandBytes(absl::string_view input);
  size_t ConsumeDataBytes(absl::string_view input);
  size_t ConsumeBdatBytes(absl::string_view input);
  size_t LineLimit(absl::string_view line_start) const;
  void OnLine(absl::string_view line);
  void Dispatch(absl::string_view line);

  void DoHelo(absl::string_view args, bool extended);
  void DoMail(absl::string_view args);
  void DoRcpt(absl::string_view args);
  void DoData(absl::string_view args);
  void DoBdat(absl::string_view args);
  void DoAuth(absl::string_view args);
  void DoStartTls(absl::string_view args);
  void OnSaslLine(absl::string_view line);
  void OnSaslResponse(absl::string_view response);
  void SubmitAuth(AuthRequest request);
  std::optional<Reply> CheckMayTransact() const;

  void Decide(Pending pending, std::optional<Reply> reply);
  void Resolve(Pending pending, const Reply& reply);
  void FinishBody();
  bool FailBodyIfBad();
  void MaybeFinishDrain();
  void FinishBdatChunk();
  void BodySlice(absl::string_view slice);
  void ResetTransaction(bool notify);

  void Send(const Reply& reply);
  void SendError(const Reply& reply);
  void SendAndClose(const Reply& reply);
  void SendEhlo();
  void Close();

  SessionOptions options_;
  SessionHandler* handler_;
  Phase phase_ = Phase::kCommand;
  Pending pending_ = Pending::kNone;
  std::string output_;
  std::string line_;              // a command line split across inputs
  bool discarding_line_ = false;  // an over-long line: skip to its LF, then reply

  std::string helo_;  // bounded by the command line limit
  bool greeted_ = false;
  bool tls_active_ = false;
  bool authenticated_ = false;
  bool draining_ = false;

  // SASL exchange in progress.
  Mechanism sasl_mechanism_ = Mechanism::kPlain;
  SaslStep sasl_step_ = SaslStep::kInitial;
  std::string sasl_username_;  // LOGIN: the username, while the password is asked for

  // The transaction.
  bool mail_accepted_ = false;
  bool smtputf8_ = false;
  bool body_started_ = false;  // OnBodyBegin() was called
  bool used_bdat_ = false;
  uint32_t recipients_ = 0;
  uint64_t body_bytes_ = 0;
  bool body_oversize_ = false;
  BodyScanner scanner_;

  // The BDAT chunk being read.
  uint64_t bdat_remaining_bytes_ = 0;
  bool bdat_last_ = false;
  uint64_t bdat_chunk_bytes_ = 0;
  std::optional<Reply> bdat_refusal_;  // the chunk is read and discarded, then this is sent

  uint32_t errors_ = 0;
  uint32_t auth_failures_ = 0;
  uint64_t commands_ = 0;
  uint64_t replies_ = 0;
  absl::Time started_;
  absl::Time last_input_;
  absl::Time feed_time_;      // the time given to the Feed() in progress
  absl::Time command_clock_;  // when the wait for the current command line began
  absl::Time data_window_start_;
  uint64_t data_window_bytes_ = 0;  // body bytes since data_window_start_
};

}  // namespace chute::smtp
