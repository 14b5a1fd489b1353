// smtp_client.cc: delivers batches over LMTP or SMTP on one pooled connection per worker.

#include "delivery/smtp_client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/check.h"
#include "base/log.h"
#include "base/net_address.h"
#include "base/status_macros.h"
#include "net/socket.h"
#include "net/tls.h"
#include "net/uring_stream.h"
#include "smtp/address.h"
#include "smtp/client_session.h"
#include "smtp/parser.h"

namespace chute::delivery {
namespace {

// Plaintext is read at most this much at a time (the session cuts what it parses itself).
constexpr size_t kReadChunkBytes = smtp::kReplyFeedBytesMax;

// LocalFailure: a failure chute describes itself. Its message is the whole reply a recipient
// gets ("451 4.4.1 connect to 127.0.0.1:24: Connection refused"); RFC 3463 codes: 4.4.1 no
// answer from host, 4.4.2 bad connection, 4.5.0 protocol error, 4.7.5 cryptographic failure.
absl::Status LocalFailure(absl::string_view enhanced_code, absl::string_view text) {
  return absl::UnavailableError(absl::StrCat("451 ", enhanced_code, " ", text));
}

Outcome OutcomeOf(const ServerReply& reply) {
  if (reply.Class() == 2) {
    return Outcome::kDelivered;
  }
  return reply.Class() == 5 ? Outcome::kPermanent : Outcome::kTransient;
}

// HasLineBreakOrNul: such an address would smuggle a command into the session. chute's own
// SMTP parser never accepts one, so this only guards against a damaged spool record.
bool HasLineBreakOrNul(absl::string_view address) {
  return address.find_first_of(absl::string_view("\r\n\0", 3)) != absl::string_view::npos;
}

using smtp::HasNonAscii;

// ServerName: the name `target`'s certificate must carry (SmtpClientOptions::tls_server_name).
std::string ServerName(const SmtpClientOptions& options, const std::string& target) {
  if (!options.tls_server_name.empty()) {
    absl::StatusOr<IpBytes> ip = ParseIp(options.tls_server_name);
    // A name is compared and sent (SNI, RFC 6066 §3) without the root's trailing dot.
    return ip.ok() ? FormatIp(*ip) : std::string(absl::StripSuffix(options.tls_server_name, "."));
  }
  absl::StatusOr<HostPort> address = ParseHostPort(target);
  return address.ok() ? FormatIp(address->ip) : "";
}

}  // namespace

// Connection: one stream to the target, plain or TLS, on the client's io_uring
// (net::UringStream), and the client session on it (smtp::ClientSession, which does the
// protocol). Every wait is bounded by io_timeout;
// every failure is a LocalFailure naming the peer.
class SmtpClient::Connection : public smtp::ClientObserver {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  static io::Task<absl::StatusOr<std::unique_ptr<Connection>>> Open(
      io::Loop* loop, std::string target, smtp::ClientConfig config, absl::Duration io_timeout,
      const std::atomic<int64_t>* stop_at_unix_ms);
  smtp::ClientSession& session() { return session_; }
  // Run: sends what the session has to send and feeds it the server's replies until it owes
  // nothing (ready, refused, waiting for the handshake, or closed). Each reply must come
  // within io_timeout of the one before it, or of the last write if that ended later. A 421
  // is a failure whose message is the reply: the server is closing the connection (RFC 5321
  // §3.8).
  io::Task<absl::Status> Run();
  // StartTls: the client handshake, after the server's 220 to STARTTLS, expecting a
  // certificate for `server_name` (net::TlsStream::NewClient).
  io::Task<absl::Status> StartTls(std::shared_ptr<net::TlsContext> context,
                                  absl::string_view server_name) {
    absl::Status status =
        co_await stream_->StartTls(std::move(context), server_name, "reading reply from");
    co_return Local(status);
  }
  // tls: the TLS stream once StartTls was called, else null.
  const net::TlsStream* tls() const { return stream_->tls(); }
  // HasUnreadInput: the server sent something nobody asked for (a 421 on idle, or EOF).
  bool HasUnreadInput() const { return !session_.idle() || stream_->HasUnreadInput(); }
  void set_io_timeout(absl::Duration io_timeout) {
    io_timeout_ = io_timeout;
    stream_->set_io_timeout(io_timeout);
  }

  // smtp::ClientObserver: each reply gives the next one io_timeout again.
  void OnReply(smtp::ClientCommand, const ServerReply&, int64_t) override {
    deadline_ = absl::Now() + io_timeout_;
  }

 private:
  Connection(net::UringStream::Ptr stream, smtp::ClientConfig config, absl::Duration io_timeout)
      : stream_(std::move(stream)),
        io_timeout_(io_timeout),
        config_(std::move(config)),
        session_(config_, this) {}
  // Local: a stream failure as the reply its recipients get: 4.4.1 when the connection could
  // not be made, 4.7.5 a TLS failure, 4.4.2 any other.
  absl::Status Local(absl::Status status) const;

  net::UringStream::Ptr stream_;
  absl::Duration io_timeout_;
  absl::Time deadline_;
  const smtp::ClientConfig config_;
  smtp::ClientSession session_;
};

io::Task<absl::StatusOr<std::unique_ptr<SmtpClient::Connection>>> SmtpClient::Connection::Open(
    io::Loop* loop, std::string target, smtp::ClientConfig config, absl::Duration io_timeout,
    const std::atomic<int64_t>* stop_at_unix_ms) {
  absl::StatusOr<net::SocketAddress> address = net::ParseConnectTarget(target);
  if (!address.ok()) {
    co_return LocalFailure("4.3.5",
                           absl::StrCat("bad target ", target, ": ", address.status().message()));
  }
  net::StreamOptions options;
  options.io_timeout = io_timeout;
  options.stop_at_unix_ms = stop_at_unix_ms;
  absl::StatusOr<net::UringStream::Ptr> stream =
      co_await net::UringStream::Connect(loop, address->storage, address->length, target, options);
  if (!stream.ok()) {
    co_return LocalFailure("4.4.1", stream.status().message());
  }
  co_return std::unique_ptr<Connection>(
      new Connection(*std::move(stream), std::move(config), io_timeout));
}

absl::Status SmtpClient::Connection::Local(absl::Status status) const {
  if (status.ok()) {
    return status;
  }
  switch (stream_->failure()) {
    case net::StreamFailure::kConnect:
      return LocalFailure("4.4.1", status.message());
    case net::StreamFailure::kTls:
      return LocalFailure("4.7.5", status.message());
    case net::StreamFailure::kNone:
    case net::StreamFailure::kIo:
      break;
  }
  return LocalFailure("4.4.2", status.message());
}

io::Task<absl::Status> SmtpClient::Connection::Run() {
  deadline_ = absl::Now() + io_timeout_;
  std::string plaintext;
  while (true) {
    std::string* output = session_.output();
    if (!output->empty()) {
      // The last piece goes with the wait for the reply: one io_uring_enter for both.
      absl::Status wrote = co_await stream_->Write(*output, /*wait=*/false);
      CO_RETURN_IF_ERROR(Local(wrote));
      output->clear();
      // The reply is owed from when the commands (or the content) went: a large message
      // may take longer than io_timeout to send as a whole.
      deadline_ = absl::Now() + io_timeout_;
    }
    if (session_.closed()) {
      if (session_.closing_reply().has_value()) {
        co_return absl::UnavailableError(session_.closing_reply()->ToString(kResultReplyBytesMax));
      }
      if (!session_.protocol_error().empty()) {
        co_return LocalFailure("4.5.0", absl::StrCat("protocol error from ", stream_->peer(), ": ",
                                                     session_.protocol_error()));
      }
      co_return absl::OkStatus();  // QUIT answered
    }
    if (!session_.waiting()) {
      absl::Status flushed = co_await stream_->Flush();
      co_return Local(flushed);
    }
    plaintext.clear();
    absl::Status read = co_await stream_->Read(&plaintext, kReadChunkBytes, deadline_, nullptr,
                                               "reading reply from");
    CO_RETURN_IF_ERROR(Local(read));
    session_.OnInput(plaintext, absl::ToUnixMicros(absl::Now()));
  }
}

// Attempt: the state of one message's transaction: which recipients have their result.
struct SmtpClient::Attempt {
  explicit Attempt(OutboundMessage* m)
      : message(m), settled(m->recipients.size(), false), unsettled(m->recipients.size()) {
    message->results.assign(m->recipients.size(), RecipientResult());
  }

  void Settle(size_t index, Outcome outcome, std::string reply) {
    CHECK(index < settled.size());
    if (settled[index]) {
      return;
    }
    settled[index] = true;
    --unsettled;
    message->results[index] = RecipientResult{outcome, std::move(reply)};
  }
  void SettleWith(size_t index, const ServerReply& reply) {
    Settle(index, OutcomeOf(reply), reply.ToString(kResultReplyBytesMax));
  }
  void SettleRest(Outcome outcome, absl::string_view reply) {
    for (size_t i = 0; i < settled.size(); ++i) {
      Settle(i, outcome, std::string(reply));
    }
  }

  OutboundMessage* message;
  std::vector<bool> settled;
  size_t unsettled;
  std::vector<size_t> sendable;  // recipients whose RCPT goes out, in order
};

absl::Status ValidateSmtpClientOptions(const SmtpClientOptions& options) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError("no target");
  }
  for (const std::string& target : options.targets) {
    absl::StatusOr<net::SocketAddress> address = net::ParseConnectTarget(target);
    if (!address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("target \"", target, "\": ", address.status().message()));
    }
    if (options.tls == DeliveryTls::kRequired && ServerName(options, target).empty()) {
      return absl::InvalidArgumentError(
          "tls = required with a unix: target needs tls_server_name (the certificate's name)");
    }
  }
  if (options.helo_name.empty() ||
      absl::string_view(options.helo_name).find_first_of(absl::string_view(" \t\r\n\0", 5)) !=
          absl::string_view::npos) {
    return absl::InvalidArgumentError("helo_name must be one non-empty word");
  }
  if (options.messages_per_connection_max == 0) {
    return absl::InvalidArgumentError("messages_per_connection_max must be at least 1");
  }
  if (options.idle_timeout <= absl::ZeroDuration() || options.io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("idle_timeout and io_timeout must be positive");
  }
  if (absl::string_view(options.tls_server_name).find_first_of(absl::string_view(" \t\r\n\0", 5)) !=
      absl::string_view::npos) {
    return absl::InvalidArgumentError("tls_server_name must be one word");
  }
  return absl::OkStatus();
}

SmtpClient::SmtpClient(SmtpClientOptions options, std::shared_ptr<net::TlsContext> tls_context)
    : options_(std::move(options)), tls_context_(std::move(tls_context)) {
  absl::Status valid = ValidateSmtpClientOptions(options_);
  CHECK_MSG(valid.ok(), std::string(valid.message()).c_str());
  health_ = options_.health != nullptr ? options_.health
                                       : std::make_shared<TargetHealth>(options_.targets.size());
  CHECK(health_->down_until_ms.size() == options_.targets.size());
  target_ = options_.targets[0];
  server_name_ = ServerName(options_, target_);
  CHECK(options_.tls == DeliveryTls::kOff || tls_context_ != nullptr);
}

SmtpClient::~SmtpClient() {
  if (connection_ == nullptr) {
    return;
  }
  if (io::Loop::Current() == nullptr) {
    io::RunSync(*loop_, Close(/*quit=*/true));
    return;
  }
  Drop();  // inside a task: whoever owned the client should have awaited Shutdown()
}

void SmtpClient::Drop() {
  connection_.reset();
  capabilities_ = Capabilities();
}

io::Task<void> SmtpClient::Close(bool quit) {
  if (connection_ == nullptr) {
    co_return;
  }
  if (quit) {
    // A courtesy to the server; its answer changes nothing, so the wait is kept short.
    connection_->set_io_timeout(std::min(options_.io_timeout, kQuitTimeoutMax));
    connection_->session().Quit();
    absl::Status quitted = co_await connection_->Run();
    (void)quitted;
  }
  Drop();
}

io::Task<void> SmtpClient::CloseIdle(absl::Time now) {
  if (connection_ != nullptr && now - last_used_ >= options_.idle_timeout) {
    co_await Close(/*quit=*/true);
  }
}

io::Task<void> SmtpClient::Shutdown() { co_await Close(/*quit=*/true); }

io::Task<absl::Status> SmtpClient::Connect() {
  // The targets in order of preference, those that failed lately last (each is still tried:
  // when every target failed lately, the most preferred goes first again).
  std::vector<std::atomic<int64_t>>& down_until = health_->down_until_ms;
  int64_t now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<size_t> order;
  for (size_t i = 0; i < options_.targets.size(); ++i) {
    if (down_until[i].load(std::memory_order_relaxed) <= now_ms) {
      order.push_back(i);
    }
  }
  for (size_t i = 0; i < options_.targets.size(); ++i) {
    if (down_until[i].load(std::memory_order_relaxed) > now_ms) {
      order.push_back(i);
    }
  }
  absl::Status status;
  std::vector<std::string> failures;
  for (size_t i : order) {
    target_ = options_.targets[i];
    server_name_ = ServerName(options_, target_);
    status = co_await ConnectTarget();
    if (status.ok()) {
      down_until[i].store(0, std::memory_order_relaxed);
      co_return status;
    }
    int64_t failed_ms = absl::ToUnixMillis(absl::Now());
    int64_t was = down_until[i].exchange(failed_ms + absl::ToInt64Milliseconds(kTargetDownFor),
                                         std::memory_order_relaxed);
    if (options_.targets.size() > 1 && was <= failed_ms) {
      // Once per target going down, not per worker that finds it so.
      LogEvent(LogLevel::kWarning, "delivery.target_down",
               {{"target", target_}, {"reason", status.message()}});
    }
    failures.emplace_back(status.message());
    int64_t stop_at =
        options_.stop_at_unix_ms != nullptr ? options_.stop_at_unix_ms->load() : int64_t{0};
    if (stop_at != 0 && failed_ms >= stop_at) {
      break;  // the drain is over: no time for the next target
    }
  }
  if (failures.size() > 1) {
    // Every target failed: the reply names each (the first one's code stands for all).
    std::string joined = absl::StrJoin(failures, "; ");
    if (joined.size() > kResultReplyBytesMax) {
      joined.resize(kResultReplyBytesMax);
    }
    co_return absl::Status(status.code(), joined);
  }
  co_return status;
}

io::Task<absl::Status> SmtpClient::ConnectTarget() {
  bool handshake_failed = false;
  absl::Status status = co_await OpenSession(options_.tls != DeliveryTls::kOff, &handshake_failed);
  if (!status.ok() && handshake_failed && options_.tls == DeliveryTls::kOpportunistic) {
    // Opportunistic TLS must not make a server that cannot finish a handshake unreachable.
    status = co_await OpenSession(/*try_tls=*/false, &handshake_failed);
  }
  co_return status;
}

io::Task<absl::Status> SmtpClient::OpenSession(bool try_tls, bool* handshake_failed) {
  CHECK(connection_ == nullptr);
  smtp::ClientConfig config;
  config.lmtp = options_.lmtp;
  config.helo_name = options_.helo_name;
  config.tls = !try_tls                                 ? smtp::ClientTls::kOff
               : options_.tls == DeliveryTls::kRequired ? smtp::ClientTls::kRequired
                                                        : smtp::ClientTls::kIfOffered;
  // The loop running this task: every connection of the client stays on it.
  io::Loop* loop = io::Loop::Current();
  CHECK_MSG(loop != nullptr, "a delivery client runs as a task on an io::Loop");
  CHECK(loop_ == nullptr || loop_ == loop);
  loop_ = loop;
  absl::StatusOr<std::unique_ptr<Connection>> opened = co_await Connection::Open(
      loop_, target_, std::move(config), options_.io_timeout, options_.stop_at_unix_ms.get());
  if (!opened.ok()) {
    co_return opened.status();
  }
  connection_ = *std::move(opened);
  ++connections_opened_;
  messages_on_connection_ = 0;
  absl::Status status = co_await Greet(handshake_failed);
  if (!status.ok()) {
    Drop();
  }
  co_return status;
}

io::Task<absl::Status> SmtpClient::Greet(bool* handshake_failed) {
  smtp::ClientSession& session = connection_->session();
  CO_RETURN_IF_ERROR(co_await connection_->Run());
  if (session.wants_tls()) {
    CO_RETURN_IF_ERROR(co_await Handshake(handshake_failed));
    session.OnTlsDone();  // EHLO again: what was learnt before TLS is forgotten
    CO_RETURN_IF_ERROR(co_await connection_->Run());
  }
  if (session.phase() == smtp::ClientSession::Phase::kRefused) {
    const smtp::ClientRefusal& refusal = session.refusal();
    std::string reply =
        refusal.reply.has_value() ? refusal.reply->ToString(kResultReplyBytesMax) : "";
    switch (refusal.command) {
      case smtp::ClientCommand::kGreeting:
        co_return LocalFailure("4.4.0", absl::StrCat("greeting from ", target_, ": ", reply));
      case smtp::ClientCommand::kStartTls:
        if (!refusal.reply.has_value()) {
          co_await Close(/*quit=*/true);
          co_return LocalFailure("4.7.5", absl::StrCat(target_, ": STARTTLS not offered"));
        }
        co_return LocalFailure("4.7.5", absl::StrCat("STARTTLS refused by ", target_, ": ", reply));
      default:
        co_return LocalFailure("4.4.0",
                               absl::StrCat(refusal.command == smtp::ClientCommand::kHelo ? "HELO"
                                            : options_.lmtp                               ? "LHLO"
                                                                                          : "EHLO",
                                            " refused by ", target_, ": ", reply));
    }
  }
  if (!session.ready()) {
    co_return LocalFailure("4.5.0", absl::StrCat("protocol error from ", target_,
                                                 ": the session did not become ready"));
  }
  capabilities_ = session.capabilities();
  co_return absl::OkStatus();
}

io::Task<absl::Status> SmtpClient::Handshake(bool* handshake_failed) {
  absl::Status handshake = co_await connection_->StartTls(tls_context_, server_name_);
  const net::TlsStream& tls = *connection_->tls();
  // An enforcing context (MakeSmtpClientFactory's for tls = required) fails the handshake
  // itself; a client given another one must not deliver over an unverified session either.
  bool unverified_required =
      handshake.ok() && options_.tls == DeliveryTls::kRequired && !tls.PeerUnverified().empty();
  bool refused = unverified_required || (!handshake.ok() && tls.RefusedCertificate());
  if (handshake.ok() || refused) {
    LogTls(tls, refused);
  }
  if (!handshake.ok()) {
    *handshake_failed = true;
    co_return handshake;
  }
  if (unverified_required) {
    co_return LocalFailure("4.7.5", absl::StrCat("TLS with ", target_, ": ", tls.PeerUnverified()));
  }
  co_return absl::OkStatus();
}

void SmtpClient::LogTls(const net::TlsStream& tls, bool refused) const {
  const std::string& unverified = tls.PeerUnverified();
  if (refused) {
    LogEvent(LogLevel::kWarning, "delivery.tls",
             {{"target", target_},
              {"server_name", server_name_},
              {"verified", "no"},
              {"reason", unverified},
              {"result", "refused"}});
    return;
  }
  LogEvent(LogLevel::kInfo, "delivery.tls",
           {{"target", target_},
            {"server_name", server_name_},
            {"version", tls.Version()},
            {"cipher", tls.Cipher()},
            {"verified", unverified.empty() ? "yes" : "no"},
            {"reason", unverified},
            {"result", "continued"}});
}

io::Task<void> SmtpClient::Deliver(const std::vector<OutboundMessage*>& batch,
                                   const MessageDone& done) {
  absl::Status setup = absl::OkStatus();
  for (size_t index = 0; index < batch.size(); ++index) {
    co_await DeliverNext(batch[index], &setup);
    if (done != nullptr) {
      done(index);
    }
  }
  last_used_ = absl::Now();
}

io::Task<void> SmtpClient::DeliverNext(OutboundMessage* message, absl::Status* setup) {
  if (message->recipients.empty()) {
    message->results.clear();
    co_return;
  }
  if (!setup->ok()) {
    Attempt(message).SettleRest(Outcome::kTransient, setup->message());
    co_return;
  }
  if (connection_ != nullptr && connection_->HasUnreadInput()) {
    Drop();  // closed by the server, or it said something unasked: start over
  }
  if (connection_ == nullptr) {
    *setup = co_await Connect();
    if (!setup->ok()) {
      Attempt(message).SettleRest(Outcome::kTransient, setup->message());
      co_return;
    }
  }
  message->via = absl::StrCat(options_.lmtp ? "lmtp:" : "smtp:", target_);
  message->dsn_passed = capabilities_.dsn;
  co_await DeliverOne(message);
  if (connection_ != nullptr && messages_on_connection_ >= options_.messages_per_connection_max) {
    co_await Close(/*quit=*/true);
  }
}

io::Task<void> SmtpClient::DeliverOne(OutboundMessage* message) {
  Attempt attempt(message);
  if (!CheckEnvelope(&attempt)) {
    co_return;
  }
  ++messages_on_connection_;
  smtp::ClientTransaction transaction;
  transaction.mail = MailCommand(*message);
  for (size_t index : attempt.sendable) {
    transaction.rcpts.push_back(RcptCommand(*message, index));
  }
  transaction.content = absl::string_view(message->content);
  transaction.bdat = UseBdat();
  smtp::ClientSession& session = connection_->session();
  session.Begin(std::move(transaction), absl::ToUnixMicros(absl::Now()));
  absl::Status status = co_await connection_->Run();
  // What came settles its recipients, also when the connection failed before the rest did.
  absl::Status replies = Apply(session.replies(), &attempt);
  if (status.ok()) {
    status = replies;
  }
  if (status.ok() && session.needs_reset()) {
    status = co_await Reset();
  }
  if (!status.ok()) {
    attempt.SettleRest(Outcome::kTransient, status.message());
    Drop();
  }
  CHECK_MSG(attempt.unsettled == 0, "every recipient gets exactly one result");
}

absl::Status SmtpClient::Apply(const smtp::ClientReplies& replies, Attempt* attempt) const {
  const std::vector<size_t>& sendable = attempt->sendable;
  if (!replies.mail.has_value()) {
    return absl::OkStatus();
  }
  if (!replies.MailAccepted()) {
    for (size_t index : sendable) {
      attempt->SettleWith(index, *replies.mail);
    }
    return absl::OkStatus();
  }
  std::vector<size_t> accepted;  // indexes into `sendable`
  for (size_t k = 0; k < replies.rcpts.size(); ++k) {
    if (!replies.rcpts[k].has_value()) {
      continue;
    }
    if (replies.rcpts[k]->IsPositiveCompletion()) {
      accepted.push_back(k);
    } else {
      attempt->SettleWith(sendable[k], *replies.rcpts[k]);
    }
  }
  if (accepted.empty()) {
    return absl::OkStatus();
  }
  if (UseBdat() || (replies.data.has_value() && replies.data->code == 354)) {
    if (options_.lmtp) {
      // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
      for (size_t j = 0; j < replies.final.size() && j < accepted.size(); ++j) {
        attempt->SettleWith(sendable[accepted[j]], replies.final[j]);
      }
    } else if (!replies.final.empty()) {
      for (size_t k : accepted) {
        attempt->SettleWith(sendable[k], replies.final[0]);
      }
    }
    return absl::OkStatus();
  }
  if (!replies.data.has_value()) {
    return absl::OkStatus();
  }
  const ServerReply& data = *replies.data;
  if (data.Class() != 4 && data.Class() != 5) {
    return LocalFailure("4.5.0", absl::StrCat("unexpected reply to DATA from ", target_, ": ",
                                              data.ToString(kResultReplyBytesMax)));
  }
  for (size_t k : accepted) {
    attempt->SettleWith(sendable[k], data);
  }
  return absl::OkStatus();
}

bool SmtpClient::CheckEnvelope(Attempt* attempt) {
  const OutboundMessage& message = *attempt->message;
  if (HasLineBreakOrNul(message.sender)) {
    attempt->SettleRest(Outcome::kPermanent, "501 5.1.7 the sender address contains CR, LF or NUL");
    return false;
  }
  if (capabilities_.size_bytes_max != 0 && message.content.size() > capabilities_.size_bytes_max) {
    attempt->SettleRest(Outcome::kPermanent,
                        absl::StrCat("552 5.3.4 message of ", message.content.size(),
                                     " bytes exceeds the limit of ", target_, " (",
                                     capabilities_.size_bytes_max, " bytes)"));
    return false;
  }
  for (size_t i = 0; i < message.recipients.size(); ++i) {
    if (HasLineBreakOrNul(message.recipients[i])) {
      attempt->Settle(i, Outcome::kPermanent, "501 5.1.3 the address contains CR, LF or NUL");
    } else {
      attempt->sendable.push_back(i);
    }
  }
  return !attempt->sendable.empty();
}

io::Task<RecipientResult> SmtpClient::Probe(std::string recipient) {
  last_used_ = absl::Now();
  auto unreachable = [](absl::string_view why) {
    return RecipientResult{Outcome::kTransient, std::string(why)};
  };
  auto down = [](absl::string_view why) {
    return RecipientResult{Outcome::kTransient, std::string(why), /*target_down=*/true};
  };
  if (absl::string_view(recipient).find_first_of(absl::string_view("\r\n\0<>", 5)) !=
      absl::string_view::npos) {
    co_return RecipientResult{Outcome::kPermanent, "501 5.1.3 bad recipient address syntax"};
  }
  bool utf8 = HasNonAscii(recipient);
  // A pooled connection that breaks may only have gone stale (the target closed it as the
  // probe went): one more try, on a new connection, before the route counts as down.
  for (bool retried = false;; retried = true) {
    if (connection_ != nullptr && connection_->HasUnreadInput()) {
      Drop();
    }
    bool reused = connection_ != nullptr;
    if (!reused) {
      absl::Status status = co_await Connect();
      if (!status.ok()) {
        co_return down(status.message());
      }
    }
    if (utf8 && !capabilities_.smtputf8) {
      co_return unreachable(absl::StrCat("451 4.6.7 ", target_,
                                         " does not offer SMTPUTF8: a non-ASCII address cannot "
                                         "be verified there"));
    }
    ++messages_on_connection_;
    smtp::ClientTransaction transaction;
    transaction.mail = absl::StrCat("MAIL FROM:<>", utf8 ? " SMTPUTF8" : "");
    transaction.rcpts.push_back(absl::StrCat("RCPT TO:<", recipient, ">"));
    connection_->session().Begin(std::move(transaction), absl::ToUnixMicros(absl::Now()));
    absl::Status status = co_await connection_->Run();
    if (status.ok()) {
      break;
    }
    Drop();
    if (!reused || retried) {
      co_return down(status.message());
    }
  }
  smtp::ClientSession& session = connection_->session();
  const smtp::ClientReplies& replies = session.replies();
  RecipientResult result;
  if (!replies.MailAccepted()) {
    // A target that refuses the null sender cannot be asked this way.
    result = unreachable(absl::StrCat("451 4.4.3 ", target_, " refused MAIL FROM:<>: ",
                                      replies.mail->ToString(kResultReplyBytesMax)));
  } else if (replies.rcpts[0].has_value()) {
    const ServerReply& rcpt = *replies.rcpts[0];
    result = RecipientResult{OutcomeOf(rcpt), rcpt.ToString(kResultReplyBytesMax)};
  } else {
    result = unreachable(absl::StrCat("451 4.5.0 no reply to RCPT from ", target_));
  }
  // RSET after an accepted MAIL; any failure drops the connection.
  absl::Status reset = absl::OkStatus();
  if (session.needs_reset()) {
    reset = co_await Reset();
  }
  if (!reset.ok() || messages_on_connection_ >= options_.messages_per_connection_max) {
    co_await Close(/*quit=*/reset.ok());
  }
  co_return result;
}

std::string SmtpClient::MailCommand(const OutboundMessage& message) const {
  std::string command = absl::StrCat("MAIL FROM:<", message.sender, ">");
  if (capabilities_.size) {
    absl::StrAppend(&command, " SIZE=", message.content.size());
  }
  if (capabilities_.eight_bit_mime && HasNonAscii(message.content)) {
    absl::StrAppend(&command, " BODY=8BITMIME");
  }
  bool utf8_addresses = HasNonAscii(message.sender) ||
                        std::any_of(message.recipients.begin(), message.recipients.end(),
                                    [](const std::string& r) { return HasNonAscii(r); });
  if (capabilities_.smtputf8 && utf8_addresses) {
    absl::StrAppend(&command, " SMTPUTF8");
  }
  if (capabilities_.dsn && message.dsn_ret != 0) {
    absl::StrAppend(&command, message.dsn_ret == 1 ? " RET=FULL" : " RET=HDRS");
  }
  if (capabilities_.dsn && !message.envid.empty()) {
    absl::StrAppend(&command, " ENVID=", message.envid);
  }
  return command;
}

std::string SmtpClient::RcptCommand(const OutboundMessage& message, size_t index) const {
  std::string command = absl::StrCat("RCPT TO:<", message.recipients[index], ">");
  // The client's DSN requests go on when the target takes them (RFC 3461 §4: it then reports
  // what it cannot deliver itself); otherwise chute keeps them and reports what it gives up.
  uint8_t notify = index < message.notify.size() ? message.notify[index] : 0;
  if (capabilities_.dsn && notify != 0) {
    std::vector<absl::string_view> words;
    const std::pair<uint8_t, absl::string_view> kWords[] = {{smtp::kNotifyNever, "NEVER"},
                                                            {smtp::kNotifySuccess, "SUCCESS"},
                                                            {smtp::kNotifyFailure, "FAILURE"},
                                                            {smtp::kNotifyDelay, "DELAY"}};
    for (const auto& [bit, word] : kWords) {
      if ((notify & bit) != 0) {
        words.push_back(word);
      }
    }
    absl::StrAppend(&command, " NOTIFY=", absl::StrJoin(words, ","));
  }
  if (capabilities_.dsn && index < message.orcpt.size() && !message.orcpt[index].empty()) {
    absl::StrAppend(&command, " ORCPT=", message.orcpt[index]);
  }
  return command;
}

bool SmtpClient::UseBdat() const { return !options_.lmtp && capabilities_.chunking; }

io::Task<absl::Status> SmtpClient::Reset() {
  smtp::ClientSession& session = connection_->session();
  session.Reset();
  CO_RETURN_IF_ERROR(co_await connection_->Run());
  if (!session.ready()) {
    const smtp::ClientRefusal& refusal = session.refusal();
    co_return LocalFailure("4.5.0", absl::StrCat("RSET refused by ", target_, ": ",
                                                 refusal.reply.has_value()
                                                     ? refusal.reply->ToString(kResultReplyBytesMax)
                                                     : std::string()));
  }
  co_return absl::OkStatus();
}

SmtpClientOptions ClientOptionsFor(const DeliveryConfig& d, const std::string& helo_name) {
  SmtpClientOptions options;
  options.lmtp = d.backend == DeliveryBackend::kLmtp;
  options.targets = d.targets;
  options.helo_name = helo_name;
  options.tls = d.tls;
  options.tls_ca_file = d.tls_ca_file;
  options.tls_server_name = d.tls_server_name;
  options.tls_pins = d.tls_pins;
  options.messages_per_connection_max = static_cast<size_t>(d.messages_per_connection_max);
  options.idle_timeout = absl::Seconds(d.connection_idle_s);
  options.io_timeout = absl::Seconds(d.timeout_s);
  return options;
}

absl::StatusOr<SmtpClientMaker> MakeSmtpClientMaker(SmtpClientOptions options) {
  absl::Status valid = ValidateSmtpClientOptions(options);
  CHECK_MSG(valid.ok(), std::string(valid.message()).c_str());
  if (options.health == nullptr) {
    options.health = std::make_shared<TargetHealth>(options.targets.size());
  }
  std::shared_ptr<net::TlsContext> tls_context;
  if (options.tls != DeliveryTls::kOff) {
    net::TlsClientOptions verify;
    verify.ca_file = options.tls_ca_file;
    verify.pins = options.tls_pins;
    verify.enforce = options.tls == DeliveryTls::kRequired;
    absl::StatusOr<std::shared_ptr<net::TlsContext>> context = net::TlsContext::NewClient(verify);
    if (!context.ok()) {
      return absl::Status(context.status().code(),
                          absl::StrCat("tls_ca_file ", context.status().message()));
    }
    tls_context = *std::move(context);
  }
  return [options = std::move(options), tls_context]() -> std::unique_ptr<SmtpClient> {
    return std::make_unique<SmtpClient>(options, tls_context);
  };
}

absl::StatusOr<BackendFactory> MakeSmtpClientFactory(SmtpClientOptions options) {
  absl::StatusOr<SmtpClientMaker> maker = MakeSmtpClientMaker(std::move(options));
  if (!maker.ok()) {
    return maker.status();
  }
  return [maker = *std::move(maker)]() -> std::unique_ptr<Backend> { return maker(); };
}

RecipientResult ProbeNow(SmtpClient& client, const std::string& recipient) {
  absl::StatusOr<io::Loop*> loop = io::Loop::ForThisThread();
  if (!loop.ok()) {
    return RecipientResult{Outcome::kTransient,
                           absl::StrCat("451 4.3.0 io_uring: ", loop.status().message())};
  }
  return io::RunSync(**loop, client.Probe(recipient));
}

void CloseIdleNow(SmtpClient& client, absl::Time now) {
  absl::StatusOr<io::Loop*> loop = io::Loop::ForThisThread();
  if (loop.ok()) {
    io::RunSync(**loop, client.CloseIdle(now));
  }
}

}  // namespace chute::delivery
