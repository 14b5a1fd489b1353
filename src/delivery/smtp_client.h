#pragma once

// SmtpClient: the one SMTP/LMTP client of the delivery stage (docs/architecture.md, Delivery). It
// hands messages to a downstream LMTP server (RFC 2033, e.g. Dovecot) or an SMTP smarthost (RFC
// 5321, e.g. Postfix); the two differ only in the greeting (LHLO vs EHLO) and in LMTP's one reply
// per recipient after the data, as in Postfix's single smtp/lmtp program.
//
// Design:
// - The protocol is smtp::ClientSession (src/smtp/client_session.h), the sans-I/O session
//   chute-load drives too; this file is its transport (connect, read, write, TLS), the choice
//   of targets, the commands' parameters, and what the replies mean for each recipient.
// - One instance = one connection slot of a route's queue = at most one persistent connection,
//   reused across Deliver() calls; it is replaced after messages_per_connection_max messages,
//   when the server closed it, or after any network or protocol error. CloseIdle() and
//   Shutdown() end it politely (QUIT).
// - Every operation is a task (io::Task) on the io::Loop that runs it, many clients to a loop:
//   a delivery I/O thread runs every connection slot of every LMTP/SMTP route given to it, so
//   that routes x connections cost memory, not threads. The bytes go through net::UringStream
//   (net::Transport, as the shards move theirs); each turn of the loop submits every
//   connection's commands and receives in one io_uring_enter. A client's connections stay on
//   the loop of its first one. Every wait is bounded by io_timeout: a reply must come within
//   io_timeout of the one before; a write must make progress at least once per io_timeout (a
//   large message may take longer as a whole). Sends use MSG_NOSIGNAL, so a closed peer is an
//   error, never SIGPIPE. ProbeNow and DeliverNow (backend.h) run one operation on the calling
//   thread's own loop (recipient probes, chutectl, tests).
// - STARTTLS (RFC 3207) through net::TlsStream (memory BIOs), client side of net::Transport.
//   The server's certificate is verified against tls_ca_file, for the name tls_server_name
//   (default: the target's address; a DNS name also goes out as SNI), and against tls_pins.
//   tls = opportunistic: used when offered, whatever the certificate (the verdict is logged,
//   event delivery.tls); a refused STARTTLS continues in plain text, a failed handshake is
//   retried once in plain text. It protects against passive eavesdropping only.
//   tls = required: no STARTTLS, no handshake, or a certificate that does not verify =
//   transient "451 4.7.5" saying why ("... certificate verify failed: self signed
//   certificate ...", "... name mismatch: certificate is for evil.invalid, expected ...").
// - Per message: MAIL, the RCPTs and DATA (or, SMTP only, BDAT n LAST with the content) go in
//   one write when the server offers PIPELINING (RFC 2920), else one command per round trip.
//   Each recipient gets exactly one result: its RCPT refusal, the MAIL refusal, the (SMTP) one
//   or (LMTP) its own reply after the data, or chute's own transient reply when the network or
//   the protocol failed ("451 4.4.2 timeout reading reply from 127.0.0.1:24"). A 421 from the
//   server settles the rest as transient and drops the connection.
// - If no recipient was accepted, or a transaction fails before its data was sent, RSET ends
//   it; a completed transaction needs none.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/config.h"
#include "base/tls_pin.h"
#include "delivery/backend.h"
#include "io/loop.h"
#include "io/task.h"
#include "smtp/client_session.h"
#include "smtp/reply_parser.h"

namespace chute::net {
class TlsContext;
class TlsStream;
}  // namespace chute::net

namespace chute::delivery {

using smtp::Capabilities;
using smtp::ServerReply;

// A reply chute stores for a recipient is at most this long (the server's text is cut).
inline constexpr size_t kResultReplyBytesMax = 1024;
// A target that could not be reached (or greeted) goes to the back of the order this long.
inline constexpr absl::Duration kTargetDownFor = absl::Seconds(60);
// QUIT is a courtesy: its reply is awaited at most this long (or io_timeout, if shorter).
inline constexpr absl::Duration kQuitTimeoutMax = absl::Seconds(5);

// TargetHealth: until when each target of a route is tried last (Unix ms; 0: it answered
// lately), shared by the route's clients (its workers and its probe), so that a target that is
// down costs one failed attempt per kTargetDownFor, not one per worker.
struct TargetHealth {
  explicit TargetHealth(size_t targets) : down_until_ms(targets) {}
  std::vector<std::atomic<int64_t>> down_until_ms;
};

struct SmtpClientOptions {
  bool lmtp = false;  // LMTP (LHLO, one reply per recipient) instead of SMTP
  // "a.b.c.d:port", "[v6]:port" or "unix:/path", in order of preference: a connection goes to
  // the first that answers (one that failed is tried last for kTargetDownFor).
  std::vector<std::string> targets;
  std::string helo_name;  // our name in EHLO/LHLO/HELO
  DeliveryTls tls = DeliveryTls::kOpportunistic;
  // How the certificate is verified when tls is not off (see the file comment).
  std::string tls_ca_file = "/etc/ssl/certs/ca-certificates.crt";
  std::string tls_server_name;  // a DNS name or an IP address; "" = the target's address
  std::vector<TlsPin> tls_pins;
  size_t messages_per_connection_max = 1000;        // then QUIT and reconnect; at least 1
  absl::Duration idle_timeout = absl::Seconds(30);  // CloseIdle() closes after this
  absl::Duration io_timeout = absl::Seconds(300);   // per reply, per stalled write, connect
  // Optional: when it holds a time (Unix ms, not 0), every wait ends by then with a transient
  // failure; the delivery queue sets it when chuted stops, so that a stalled server cannot
  // hold the stop for io_timeout.
  std::shared_ptr<const std::atomic<int64_t>> stop_at_unix_ms;
  // Optional: shared with other clients of the same targets (null: MakeSmtpClientMaker makes
  // one for its clients; a client made directly keeps its own).
  std::shared_ptr<TargetHealth> health;
};

// ClientOptionsFor: the client options of a route's settings `d` (lmtp/smtp), greeting as
// `helo_name` (server.hostname).
SmtpClientOptions ClientOptionsFor(const DeliveryConfig& d, const std::string& helo_name);

// ValidateSmtpClientOptions: InvalidArgument naming the problem when `options` cannot work
// (a target that is not an address or a too long unix path, a zero limit or timeout, tls =
// required with no name to check: a unix: target without tls_server_name).
absl::Status ValidateSmtpClientOptions(const SmtpClientOptions& options);

class SmtpClient : public Backend {
 public:
  // SmtpClient: `options` must be valid (CHECKed; see ValidateSmtpClientOptions). `tls_context`
  // is a client context (net::TlsContext::NewClient(), enforcing when options.tls is
  // required), shared by all clients of a factory; it may be null when options.tls is off.
  // Does not connect yet.
  SmtpClient(SmtpClientOptions options, std::shared_ptr<net::TlsContext> tls_context);
  // ~SmtpClient: outside a running loop, QUITs and closes an open connection (bounded by
  // kQuitTimeoutMax); inside one (a task that did not await Shutdown) only closes it.
  ~SmtpClient() override;
  SmtpClient(const SmtpClient&) = delete;
  SmtpClient& operator=(const SmtpClient&) = delete;

  // Deliver: see Backend. Connects when there is no usable connection. When connecting fails,
  // every message of the batch from there on gets the same transient result without another
  // attempt; a failure during one message drops the connection and the next one reconnects.
  io::Task<void> Deliver(const std::vector<OutboundMessage*>& batch,
                         const MessageDone& done) override;
  // CloseIdle: QUIT and close when the last Deliver() ended at least idle_timeout before `now`.
  io::Task<void> CloseIdle(absl::Time now) override;
  // Shutdown: QUIT and close.
  io::Task<void> Shutdown() override;

  // Probe: whether the target would take mail for `recipient` (recipient verification):
  // MAIL FROM:<>, RCPT TO:<recipient> (pipelined when offered), RSET, over the client's
  // connection (made when there is none, kept for the next probe; a kept one that breaks is
  // tried once more on a new one, so a stale connection never looks like a target that is
  // down, at the price of a second io_timeout when a target hangs mid-probe). kDelivered: it would;
  // kPermanent: its 5xx (the reply); kTransient: a 4xx, or it could not be asked (the reply
  // says why: the connection, a refused null sender, a non-ASCII address without SMTPUTF8;
  // target_down when it was the connection).
  io::Task<RecipientResult> Probe(std::string recipient);

  // target: the target of the open connection (or of the last attempt).
  const std::string& target() const { return target_; }
  // connected: whether a connection is open (for tests and metrics).
  bool connected() const { return connection_ != nullptr; }
  // connections_opened: how many connections this client has opened since it was made.
  uint64_t connections_opened() const { return connections_opened_; }

 private:
  class Connection;
  struct Attempt;

  // Connect: a session with the first target that gives one (see `targets`).
  io::Task<absl::Status> Connect();
  io::Task<absl::Status> ConnectTarget();
  io::Task<absl::Status> OpenSession(bool try_tls, bool* handshake_failed);
  // Greet: runs the session to ready (greeting, EHLO/LHLO, STARTTLS and the handshake).
  io::Task<absl::Status> Greet(bool* handshake_failed);
  // Handshake: TLS after the server's 220 to STARTTLS, and the verdict on its certificate;
  // `*handshake_failed` is set when the handshake did not complete.
  io::Task<absl::Status> Handshake(bool* handshake_failed);
  // LogTls: the delivery.tls event: the handshake's verdict on the server's certificate.
  void LogTls(const net::TlsStream& tls, bool refused) const;
  // Close: QUIT first when `quit`; Drop: at once, without a word (a failed connection).
  io::Task<void> Close(bool quit);
  void Drop();
  // DeliverNext: one message of a batch; `setup` carries a failure to connect to the rest.
  io::Task<void> DeliverNext(OutboundMessage* message, absl::Status* setup);
  io::Task<void> DeliverOne(OutboundMessage* message);
  bool CheckEnvelope(Attempt* attempt);
  // Apply: settles the recipients a transaction's replies (or those that came before it
  // failed) decide; an error when the server answered DATA with neither 354, 4xx nor 5xx.
  absl::Status Apply(const smtp::ClientReplies& replies, Attempt* attempt) const;
  io::Task<absl::Status> Reset();
  // MailCommand, RcptCommand: the command lines (without CRLF), with the parameters the
  // target's capabilities allow.
  std::string MailCommand(const OutboundMessage& message) const;
  std::string RcptCommand(const OutboundMessage& message, size_t index) const;
  bool UseBdat() const;

  const SmtpClientOptions options_;
  const std::shared_ptr<net::TlsContext> tls_context_;
  std::string target_;       // the target connected to (or last tried)
  std::string server_name_;  // the name its certificate must carry; "" = none
  std::shared_ptr<TargetHealth> health_;
  io::Loop* loop_ = nullptr;  // the loop of the first connection (every one is on it)
  std::unique_ptr<Connection> connection_;
  Capabilities capabilities_;
  size_t messages_on_connection_ = 0;
  uint64_t connections_opened_ = 0;
  absl::Time last_used_ = absl::InfinitePast();
};

// MakeSmtpClientFactory: a factory of SmtpClients sharing one client TLS context. CHECKs that
// `options` are valid (the config loader has checked them at start-up); InvalidArgument
// naming the file when tls is on and tls_ca_file cannot be loaded.
absl::StatusOr<BackendFactory> MakeSmtpClientFactory(SmtpClientOptions options);
// MakeSmtpClientMaker: the same, making SmtpClients as such (recipient verification probes).
using SmtpClientMaker = std::function<std::unique_ptr<SmtpClient>()>;
absl::StatusOr<SmtpClientMaker> MakeSmtpClientMaker(SmtpClientOptions options);

// ProbeNow, CloseIdleNow: Probe and CloseIdle run to their end on the calling thread's own loop
// (io::Loop::ForThisThread), for a thread that waits for the answer (a route's recipient
// probe thread, chutectl). Not from inside a task. A thread whose loop cannot be made gets the
// probe's transient "451 4.3.0 io_uring: ..." result.
RecipientResult ProbeNow(SmtpClient& client, const std::string& recipient);
void CloseIdleNow(SmtpClient& client, absl::Time now);

}  // namespace chute::delivery
