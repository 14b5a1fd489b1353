#pragma once

// ClientSession: the client side of one SMTP (RFC 5321) or LMTP (RFC 2033) session as a pure
// state machine, the twin of smtp::Session (docs/architecture.md, SMTP core): bytes in
// (OnInput), bytes out (output()), times passed in, no syscalls, no clock. Both of chute's
// clients are this session driven by a transport of their own: the delivery stage's
// (delivery/smtp_client.h, to LMTP servers and smarthosts) and chute-load's
// (tools/chute-load/client_session.h, to chuted).
//
// The session walks greeting -> EHLO/LHLO (HELO when an SMTP server refuses EHLO with a 5xx)
// -> [STARTTLS -> (the transport's handshake) -> EHLO again] -> [AUTH] -> ready. When ready
// it runs one transaction at a time (Begin): MAIL, the RCPTs, then DATA and the dot-stuffed
// content after 354 (or BDAT n LAST with the content), all in one write when the server
// offers PIPELINING (RFC 2920), else one command per reply: a refused MAIL, or no accepted
// recipient, ends a stepwise transaction before its data. A transaction without content is
// a probe (recipient verification): MAIL and RCPT only. Every reply is kept in the
// transaction's Replies, which the owner reads when the session is ready again; it decides
// what they mean for its recipients.
//
// What the session does not decide: whether a refusal ends the connection (Refused: the owner
// sends QUIT or closes), whether a failed transaction is reset (needs_reset: the owner calls
// Reset, or quits), and what a timeout is (waiting() says a reply is owed; the transport owns
// the clocks).
//
// Failures: a reply the server was not asked for, or input the reply parser refuses, is a
// protocol error (kClosed, protocol_error()); a 421 to anything but QUIT means the server is
// closing (kClosed, closing_reply()). Plain text after the 220 to STARTTLS is refused, never
// read as if it had come over TLS (the STARTTLS command injection of CVE-2011-0411).
//
// Observer: told of every reply after the session has acted on it (phase() is already the
// new one), so that it may call Begin, Reset or Quit from there.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "smtp/reply_parser.h"

namespace chute::smtp {

// ClientCommand: what a reply answers.
enum class ClientCommand : uint8_t {
  kGreeting,
  kHello,  // EHLO or LHLO
  kHelo,
  kStartTls,
  kAuth,  // AUTH and each response to a 334 challenge
  kMail,
  kRcpt,
  kData,       // DATA (354 expected)
  kDataEnd,    // the content's final "." (LMTP: one reply per accepted recipient)
  kDataAbort,  // an empty message after a 354 with no recipient accepted
  kBdat,       // BDAT n LAST with the content
  kRset,
  kQuit,
};

enum class ClientAuth : uint8_t { kNone, kPlain, kLogin, kXoauth2 };
enum class ClientTls : uint8_t {
  kOff,        // never STARTTLS
  kIfOffered,  // STARTTLS when the server offers it; not offered or refused: plain text
  kRequired,   // STARTTLS; not offered or refused: Refused
};

struct ClientConfig {
  bool lmtp = false;      // LHLO, and one reply per accepted recipient after the data
  std::string helo_name;  // our name in EHLO/LHLO/HELO
  ClientTls tls = ClientTls::kOff;
  bool pipelining = true;  // pipeline when offered (false: one command per reply, always)
  // SMTP: when the server refuses EHLO with a 5xx, try HELO (an old server without ESMTP).
  bool helo_fallback = true;
  // Stepwise: a refused RCPT ends the transaction there, without the next RCPT or DATA
  // (chute-load, which counts the refusal and quits); false: the other recipients go on.
  bool stepwise_stops_at_refusal = false;
  // Refused (command kHello, why "CHUNKING not offered") when the final EHLO reply lacks
  // CHUNKING (chute-load --bdat).
  bool require_chunking = false;
  ClientAuth auth = ClientAuth::kNone;
  std::string user;
  std::string secret;  // the password, or XOAUTH2's token
};

// ClientTransaction: what Begin sends. The owner builds the commands (it knows the
// capabilities, and which parameters to pass on), without CRLF.
struct ClientTransaction {
  std::string mail;                // "MAIL FROM:<a@b> SIZE=123"
  std::vector<std::string> rcpts;  // "RCPT TO:<c@d> NOTIFY=FAILURE", at least one
  // The message as it is stored: CRLF lines, not dot-stuffed, without the final ".". Absent:
  // a probe (no DATA). The owner keeps it alive until the transaction is over.
  std::optional<absl::string_view> content;
  bool bdat = false;  // BDAT n LAST instead of DATA (SMTP only; the server must offer CHUNKING)
};

// ClientReplies: a transaction's replies as they came; a reply not (yet) received is absent.
struct ClientReplies {
  std::optional<ServerReply> mail;
  std::vector<std::optional<ServerReply>> rcpts;  // one per ClientTransaction::rcpts entry
  std::optional<ServerReply> data;                // DATA's (354 or a refusal)
  // After the content: the one reply to "." or BDAT (SMTP), or one per accepted recipient in
  // RCPT order (LMTP DATA).
  std::vector<ServerReply> final;
  bool content_sent = false;  // the content (or BDAT's) went into output()
  int64_t content_sent_us = 0;
  bool MailAccepted() const { return mail.has_value() && mail->IsPositiveCompletion(); }
  // Accepted: the indexes of the recipients the server accepted (after an accepted MAIL).
  std::vector<size_t> Accepted() const;
};

// ClientRefusal: why the session could not become ready (a reply, or in its own words when
// the server failed to offer something required).
struct ClientRefusal {
  ClientCommand command = ClientCommand::kGreeting;
  std::optional<ServerReply> reply;
  std::string why;  // when there is no reply: "STARTTLS not offered"
};

class ClientObserver {
 public:
  virtual ~ClientObserver() = default;
  virtual void OnReply(ClientCommand command, const ServerReply& reply, int64_t now_us) = 0;
};

class ClientSession {
 public:
  enum class Phase : uint8_t {
    kGreeting,     // waiting for the 220
    kHello,        // EHLO/LHLO/HELO sent
    kStartTls,     // STARTTLS sent
    kTls,          // the server said 220 to STARTTLS: the transport does the handshake
    kAuth,         // AUTH under way
    kReady,        // a transaction may Begin
    kTransaction,  // one is under way
    kRefused,      // setup failed (refusal()); only Quit makes sense
    kQuit,         // QUIT sent
    kClosed,       // QUIT answered, a 421, or a protocol error: the transport closes
  };

  // ClientSession: `config` and `observer` (null: none) outlive the session.
  ClientSession(const ClientConfig& config, ClientObserver* observer = nullptr);
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // OnInput: plaintext from the server, split anywhere.
  void OnInput(absl::string_view bytes, int64_t now_us);
  // OnTlsDone: the handshake asked for by kTls completed; EHLO goes again (RFC 3207 §4.2:
  // what was learnt before TLS is forgotten).
  void OnTlsDone();

  // Begin: a transaction (kReady only; its replies replace the last one's).
  void Begin(ClientTransaction transaction, int64_t now_us);
  // needs_reset: after a transaction: MAIL was accepted and the transaction did not end with
  // its data: RSET before the next one (Reset), or QUIT.
  bool needs_reset() const { return needs_reset_; }
  // Reset: RSET (kReady only); kReady again on 250, else kRefused (command kRset).
  void Reset();
  // Quit: QUIT (any phase but kQuit and kClosed); kClosed when answered. With replies still
  // owed it goes once they have come, and nothing else is sent meanwhile; a 354 that comes
  // then is not answered (the session closes: a message must not go out by accident).
  void Quit();

  // output: bytes to send; the transport takes them (clear or erase what went).
  std::string* output() { return &out_; }
  Phase phase() const { return phase_; }
  bool ready() const { return phase_ == Phase::kReady; }
  bool wants_tls() const { return phase_ == Phase::kTls; }
  bool closed() const { return phase_ == Phase::kClosed; }
  // waiting: a reply is owed (the transport's reply timeout applies).
  bool waiting() const { return !awaiting_.empty(); }
  // idle: nothing owed and nothing received unanswered (a partial reply counts).
  bool idle() const { return awaiting_.empty() && parser_.idle(); }

  // capabilities: from the last EHLO/LHLO reply (none after HELO).
  const Capabilities& capabilities() const { return capabilities_; }
  bool tls_refused() const { return tls_refused_; }
  const ClientTransaction& transaction() const { return transaction_; }
  const ClientReplies& replies() const { return replies_; }
  const ClientRefusal& refusal() const { return refusal_; }
  // closing_reply: the 421 that closed the session, if one did.
  const std::optional<ServerReply>& closing_reply() const { return closing_; }
  // protocol_error: what the server sent that is not SMTP ("" when nothing was wrong) and
  // its kind (kNone for a reply nobody asked for).
  const std::string& protocol_error() const { return protocol_error_; }
  ReplyError protocol_error_kind() const { return protocol_error_kind_; }

 private:
  void Send(absl::string_view line, ClientCommand expect);
  void OnReply(const ServerReply& reply, int64_t now_us);
  void Act(ClientCommand command, const ServerReply& reply, int64_t now_us);
  void OnHello(const ServerReply& reply);
  void OnAuthReply(const ServerReply& reply);
  void OnTransactionReply(ClientCommand command, const ServerReply& reply, int64_t now_us);
  void SendNext(int64_t now_us);
  void SendContent(int64_t now_us);
  void MaybeFinish();
  void Refuse(ClientCommand command, const ServerReply* reply, absl::string_view why);
  void Protocol(ReplyError kind, absl::string_view what);
  void Hello();
  void AfterHello();
  void SendAuth();
  void SendData(int64_t now_us);

  const ClientConfig& config_;
  ClientObserver* observer_;
  Phase phase_ = Phase::kGreeting;
  ReplyParser parser_;
  std::string out_;
  // What each reply still owed answers, in order.
  std::deque<ClientCommand> awaiting_{ClientCommand::kGreeting};
  Capabilities capabilities_;
  bool tls_done_ = false;
  bool tls_refused_ = false;
  int auth_step_ = 0;
  bool auth_failing_ = false;
  bool quit_owed_ = false;  // Quit was called with replies owed
  ClientRefusal refusal_;
  std::optional<ServerReply> closing_;
  std::string protocol_error_;
  ReplyError protocol_error_kind_ = ReplyError::kNone;

  // The transaction under way (or the last one).
  ClientTransaction transaction_;
  ClientReplies replies_;
  bool pipelined_ = false;
  size_t next_rcpt_ = 0;  // stepwise: the next RCPT to send
  size_t rcpts_replied_ = 0;
  bool data_unsent_ = false;  // stepwise: DATA/BDAT still to send
  bool aborted_ = false;
  bool ended_by_data_ = false;
  size_t final_owed_ = 0;
  bool needs_reset_ = false;
};

const char* ClientCommandName(ClientCommand command);

// AppendDotStuffed: `content` as it goes after DATA: each line that starts with "." gets
// another one, a CRLF is added when the content does not end with one, then ".\r\n" (RFC 5321
// §4.5.2). Appends to `out`.
void AppendDotStuffed(absl::string_view content, std::string* out);
// AppendBdat: "BDAT n LAST" and `content` (RFC 3030), with a CRLF added as for DATA when the
// content does not end with one.
void AppendBdat(absl::string_view content, std::string* out);

}  // namespace chute::smtp
