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
#include "net/stream.h"
#include "net/tls.h"
#include "smtp/address.h"
#include "smtp/parser.h"

namespace chute::delivery {
namespace {

// Plaintext is read at most this much at a time, which bounds what one Feed() hands the reply
// parser and so how many replies can wait in it (reply_parser.h).
constexpr size_t kReadChunkBytes = kReplyFeedBytesMax;
static_assert(kReadChunkBytes / kReplyBytesMin <= kRepliesQueuedMax);

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

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

absl::StatusOr<SocketAddress> ParseTarget(absl::string_view target) {
  SocketAddress out;
  if (absl::ConsumePrefix(&target, "unix:")) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    if (target.empty() || target.size() >= sizeof(un->sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a unix socket path must have 1 to ", sizeof(un->sun_path) - 1, " bytes"));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, target.data(), target.size());
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + target.size() + 1);
    return out;
  }
  ASSIGN_OR_RETURN(HostPort address, ParseHostPort(target));
  out.length = net::ToSockaddr(address, &out.storage);
  return out;
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

// AppendBdat: the one chunk of a message (RFC 3030), ending in CRLF like DATA's content.
void AppendBdat(absl::string_view content, std::string* out) {
  bool add_crlf = !content.empty() && !absl::EndsWith(content, "\r\n");
  absl::StrAppend(out, "BDAT ", content.size() + (add_crlf ? 2 : 0), " LAST\r\n");
  out->append(content.data(), content.size());
  if (add_crlf) {
    out->append("\r\n");
  }
}

}  // namespace

// Connection: one stream to the target, plain or TLS (net::Stream), and the parser of its
// replies. Every wait is bounded by io_timeout; every failure is a LocalFailure naming the peer.
class SmtpClient::Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  static absl::StatusOr<std::unique_ptr<Connection>> Open(
      const std::string& target, absl::Duration io_timeout,
      const std::atomic<int64_t>* stop_at_unix_ms);
  // Write: sends all of `bytes` (encrypted once TLS is on).
  absl::Status Write(absl::string_view bytes) { return Local(stream_->Write(bytes)); }
  // ReadReply: the next reply. A 421 is returned as a failure whose message is the reply: the
  // server is closing the connection (RFC 5321 §3.8).
  absl::StatusOr<ServerReply> ReadReply();
  // StartTls: the client handshake, after the server's 220 to STARTTLS, expecting a
  // certificate for `server_name` (net::TlsStream::NewClient).
  absl::Status StartTls(std::shared_ptr<net::TlsContext> context, absl::string_view server_name) {
    return Local(stream_->StartTls(std::move(context), server_name, "reading reply from"));
  }
  // tls: the TLS stream once StartTls was called, else null.
  const net::TlsStream* tls() const { return stream_->tls(); }
  // HasUnreadInput: the server sent something nobody asked for (a 421 on idle, or EOF).
  bool HasUnreadInput() const { return !parser_.idle() || stream_->HasUnreadInput(); }
  bool reply_parser_idle() const { return parser_.idle(); }
  void set_io_timeout(absl::Duration io_timeout) {
    io_timeout_ = io_timeout;
    stream_->set_io_timeout(io_timeout);
  }

 private:
  Connection(std::unique_ptr<net::Stream> stream, absl::Duration io_timeout)
      : stream_(std::move(stream)), io_timeout_(io_timeout) {}
  // Local: a stream failure as the reply its recipients get: 4.4.1 when the connection could
  // not be made, 4.7.5 a TLS failure, 4.4.2 any other.
  absl::Status Local(absl::Status status) const;

  std::unique_ptr<net::Stream> stream_;
  absl::Duration io_timeout_;
  ReplyParser parser_;
};

absl::StatusOr<std::unique_ptr<SmtpClient::Connection>> SmtpClient::Connection::Open(
    const std::string& target, absl::Duration io_timeout,
    const std::atomic<int64_t>* stop_at_unix_ms) {
  absl::StatusOr<SocketAddress> address = ParseTarget(target);
  if (!address.ok()) {
    return LocalFailure("4.3.5",
                        absl::StrCat("bad target ", target, ": ", address.status().message()));
  }
  net::StreamOptions options;
  options.io_timeout = io_timeout;
  options.stop_at_unix_ms = stop_at_unix_ms;
  absl::StatusOr<std::unique_ptr<net::Stream>> stream =
      net::Stream::Connect(address->storage, address->length, target, options);
  if (!stream.ok()) {
    return LocalFailure("4.4.1", stream.status().message());
  }
  return std::unique_ptr<Connection>(new Connection(*std::move(stream), io_timeout));
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

absl::StatusOr<ServerReply> SmtpClient::Connection::ReadReply() {
  absl::Time deadline = absl::Now() + io_timeout_;
  ServerReply reply;
  while (!parser_.Next(&reply)) {
    if (parser_.failed()) {
      return LocalFailure(
          "4.5.0", absl::StrCat("protocol error from ", stream_->peer(), ": ", parser_.error()));
    }
    std::string plaintext;
    RETURN_IF_ERROR(
        Local(stream_->Read(&plaintext, kReadChunkBytes, deadline, nullptr, "reading reply from")));
    parser_.Feed(plaintext);
  }
  if (reply.code == 421) {
    return absl::UnavailableError(reply.ToString(kResultReplyBytesMax));
  }
  return reply;
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
  std::vector<size_t> accepted;  // recipients the server accepted at RCPT, in order
  bool mail_accepted = false;
};

absl::Status ValidateSmtpClientOptions(const SmtpClientOptions& options) {
  if (options.targets.empty()) {
    return absl::InvalidArgumentError("no target");
  }
  for (const std::string& target : options.targets) {
    absl::StatusOr<SocketAddress> address = ParseTarget(target);
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

SmtpClient::~SmtpClient() { Close(/*quit=*/true); }

void SmtpClient::Close(bool quit) {
  if (connection_ == nullptr) {
    return;
  }
  if (quit) {
    // A courtesy to the server; its answer changes nothing, so the wait is kept short.
    connection_->set_io_timeout(std::min(options_.io_timeout, kQuitTimeoutMax));
    if (connection_->Write("QUIT\r\n").ok()) {
      (void)connection_->ReadReply();
    }
  }
  connection_.reset();
  capabilities_ = Capabilities();
}

void SmtpClient::CloseIdle(absl::Time now) {
  if (connection_ != nullptr && now - last_used_ >= options_.idle_timeout) {
    Close(/*quit=*/true);
  }
}

absl::Status SmtpClient::Connect() {
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
    status = ConnectTarget();
    if (status.ok()) {
      down_until[i].store(0, std::memory_order_relaxed);
      return status;
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
    return absl::Status(status.code(), joined);
  }
  return status;
}

absl::Status SmtpClient::ConnectTarget() {
  bool handshake_failed = false;
  absl::Status status = OpenSession(options_.tls != DeliveryTls::kOff, &handshake_failed);
  if (!status.ok() && handshake_failed && options_.tls == DeliveryTls::kOpportunistic) {
    // Opportunistic TLS must not make a server that cannot finish a handshake unreachable.
    status = OpenSession(/*try_tls=*/false, &handshake_failed);
  }
  return status;
}

absl::Status SmtpClient::OpenSession(bool try_tls, bool* handshake_failed) {
  CHECK(connection_ == nullptr);
  ASSIGN_OR_RETURN(connection_,
                   Connection::Open(target_, options_.io_timeout, options_.stop_at_unix_ms.get()));
  ++connections_opened_;
  messages_on_connection_ = 0;
  absl::Status status = Greet(try_tls, handshake_failed);
  if (!status.ok()) {
    Close(/*quit=*/false);
  }
  return status;
}

absl::Status SmtpClient::Greet(bool try_tls, bool* handshake_failed) {
  ASSIGN_OR_RETURN(ServerReply greeting, connection_->ReadReply());
  if (greeting.code != 220) {
    return LocalFailure("4.4.0", absl::StrCat("greeting from ", target_, ": ",
                                              greeting.ToString(kResultReplyBytesMax)));
  }
  RETURN_IF_ERROR(Hello());
  if (!try_tls || !capabilities_.starttls) {
    if (options_.tls == DeliveryTls::kRequired) {
      Close(/*quit=*/true);
      return LocalFailure("4.7.5", absl::StrCat(target_, ": STARTTLS not offered"));
    }
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(connection_->Write("STARTTLS\r\n"));
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (reply.code != 220) {
    if (options_.tls == DeliveryTls::kRequired) {
      return LocalFailure("4.7.5", absl::StrCat("STARTTLS refused by ", target_, ": ",
                                                reply.ToString(kResultReplyBytesMax)));
    }
    return absl::OkStatus();  // opportunistic: the session goes on in plain text
  }
  if (!connection_->reply_parser_idle()) {
    // Plain text after the 220 would be taken as if it came over TLS (CVE-2011-0411's twin).
    return LocalFailure(
        "4.5.0", absl::StrCat("protocol error from ", target_, ": data after the 220 to STARTTLS"));
  }
  RETURN_IF_ERROR(Handshake(handshake_failed));
  return Hello();  // RFC 3207 §4.2: forget what was learnt before TLS
}

absl::Status SmtpClient::Handshake(bool* handshake_failed) {
  absl::Status handshake = connection_->StartTls(tls_context_, server_name_);
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
    return handshake;
  }
  if (unverified_required) {
    return LocalFailure("4.7.5", absl::StrCat("TLS with ", target_, ": ", tls.PeerUnverified()));
  }
  return absl::OkStatus();
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

absl::Status SmtpClient::Hello() {
  capabilities_ = Capabilities();
  absl::string_view verb = options_.lmtp ? "LHLO" : "EHLO";
  RETURN_IF_ERROR(connection_->Write(absl::StrCat(verb, " ", options_.helo_name, "\r\n")));
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (reply.code == 250) {
    capabilities_ = ParseCapabilities(reply);
    return absl::OkStatus();
  }
  if (!options_.lmtp && reply.Class() == 5) {
    // An old server without ESMTP: plain SMTP has no extensions to use.
    RETURN_IF_ERROR(connection_->Write(absl::StrCat("HELO ", options_.helo_name, "\r\n")));
    ASSIGN_OR_RETURN(reply, connection_->ReadReply());
    if (reply.code == 250) {
      return absl::OkStatus();
    }
    verb = "HELO";
  }
  return LocalFailure("4.4.0", absl::StrCat(verb, " refused by ", target_, ": ",
                                            reply.ToString(kResultReplyBytesMax)));
}

void SmtpClient::Deliver(const std::vector<OutboundMessage*>& batch, const MessageDone& done) {
  absl::Status setup = absl::OkStatus();
  for (size_t index = 0; index < batch.size(); ++index) {
    DeliverNext(batch[index], &setup);
    if (done != nullptr) {
      done(index);
    }
  }
  last_used_ = absl::Now();
}

void SmtpClient::DeliverNext(OutboundMessage* message, absl::Status* setup) {
  if (message->recipients.empty()) {
    message->results.clear();
    return;
  }
  if (!setup->ok()) {
    Attempt(message).SettleRest(Outcome::kTransient, setup->message());
    return;
  }
  if (connection_ != nullptr && connection_->HasUnreadInput()) {
    Close(/*quit=*/false);  // closed by the server, or it said something unasked: start over
  }
  if (connection_ == nullptr) {
    *setup = Connect();
    if (!setup->ok()) {
      Attempt(message).SettleRest(Outcome::kTransient, setup->message());
      return;
    }
  }
  message->via = absl::StrCat(options_.lmtp ? "lmtp:" : "smtp:", target_);
  message->dsn_passed = capabilities_.dsn;
  DeliverOne(message);
  if (connection_ != nullptr && messages_on_connection_ >= options_.messages_per_connection_max) {
    Close(/*quit=*/true);
  }
}

void SmtpClient::DeliverOne(OutboundMessage* message) {
  Attempt attempt(message);
  if (!CheckEnvelope(&attempt)) {
    return;
  }
  ++messages_on_connection_;
  absl::Status status = capabilities_.pipelining ? SendPipelined(&attempt) : SendStepwise(&attempt);
  if (!status.ok()) {
    attempt.SettleRest(Outcome::kTransient, status.message());
    Close(/*quit=*/false);
  }
  CHECK_MSG(attempt.unsettled == 0, "every recipient gets exactly one result");
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

RecipientResult SmtpClient::Probe(const std::string& recipient) {
  last_used_ = absl::Now();
  auto unreachable = [](absl::string_view why) {
    return RecipientResult{Outcome::kTransient, std::string(why)};
  };
  if (absl::string_view(recipient).find_first_of(absl::string_view("\r\n\0<>", 5)) !=
      absl::string_view::npos) {
    return RecipientResult{Outcome::kPermanent, "501 5.1.3 bad recipient address syntax"};
  }
  if (connection_ != nullptr && connection_->HasUnreadInput()) {
    Close(/*quit=*/false);
  }
  if (connection_ == nullptr) {
    absl::Status status = Connect();
    if (!status.ok()) {
      return unreachable(status.message());
    }
  }
  bool utf8 = HasNonAscii(recipient);
  if (utf8 && !capabilities_.smtputf8) {
    return unreachable(absl::StrCat("451 4.6.7 ", target_,
                                    " does not offer SMTPUTF8: a non-ASCII address cannot be "
                                    "verified there"));
  }
  ++messages_on_connection_;
  std::string mail = absl::StrCat("MAIL FROM:<>", utf8 ? " SMTPUTF8" : "", "\r\n");
  std::string rcpt = absl::StrCat("RCPT TO:<", recipient, ">\r\n");
  // The answer, then RSET (after an accepted MAIL); any failure drops the connection.
  auto finish = [&](RecipientResult result, bool mail_accepted) {
    absl::Status reset = mail_accepted && connection_ != nullptr ? Reset() : absl::OkStatus();
    if (!reset.ok() || messages_on_connection_ >= options_.messages_per_connection_max) {
      Close(/*quit=*/reset.ok());
    }
    return result;
  };
  auto failed = [&](const absl::Status& status) {
    Close(/*quit=*/false);
    return unreachable(status.message());
  };
  absl::Status status =
      connection_->Write(capabilities_.pipelining ? absl::StrCat(mail, rcpt) : mail);
  if (!status.ok()) {
    return failed(status);
  }
  absl::StatusOr<ServerReply> mail_reply = connection_->ReadReply();
  if (!mail_reply.ok()) {
    return failed(mail_reply.status());
  }
  bool mail_accepted = mail_reply->IsPositiveCompletion();
  if (!mail_accepted && !capabilities_.pipelining) {
    // A target that refuses the null sender cannot be asked this way.
    return finish(unreachable(absl::StrCat("451 4.4.3 ", target_, " refused MAIL FROM:<>: ",
                                           mail_reply->ToString(kResultReplyBytesMax))),
                  false);
  }
  if (!capabilities_.pipelining) {
    status = connection_->Write(rcpt);
    if (!status.ok()) {
      return failed(status);
    }
  }
  absl::StatusOr<ServerReply> rcpt_reply = connection_->ReadReply();
  if (!rcpt_reply.ok()) {
    return failed(rcpt_reply.status());
  }
  if (!mail_accepted) {
    return finish(unreachable(absl::StrCat("451 4.4.3 ", target_, " refused MAIL FROM:<>: ",
                                           mail_reply->ToString(kResultReplyBytesMax))),
                  false);
  }
  return finish(RecipientResult{OutcomeOf(*rcpt_reply), rcpt_reply->ToString(kResultReplyBytesMax)},
                true);
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
  command.append("\r\n");
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
  command.append("\r\n");
  return command;
}

bool SmtpClient::UseBdat() const { return !options_.lmtp && capabilities_.chunking; }

absl::Status SmtpClient::SendPipelined(Attempt* attempt) {
  const OutboundMessage& message = *attempt->message;
  std::string commands = MailCommand(message);
  for (size_t index : attempt->sendable) {
    absl::StrAppend(&commands, RcptCommand(message, index));
  }
  bool bdat = UseBdat();
  if (bdat) {
    AppendBdat(message.content, &commands);
  } else {
    commands.append("DATA\r\n");
  }
  RETURN_IF_ERROR(connection_->Write(commands));
  commands = std::string();
  RETURN_IF_ERROR(OnMailReply(attempt));
  for (size_t index : attempt->sendable) {
    RETURN_IF_ERROR(OnRcptReply(attempt, index));
  }
  return bdat ? FinishBdat(attempt) : FinishData(attempt);
}

absl::Status SmtpClient::SendStepwise(Attempt* attempt) {
  const OutboundMessage& message = *attempt->message;
  RETURN_IF_ERROR(connection_->Write(MailCommand(message)));
  RETURN_IF_ERROR(OnMailReply(attempt));
  if (!attempt->mail_accepted) {
    return absl::OkStatus();
  }
  for (size_t index : attempt->sendable) {
    RETURN_IF_ERROR(connection_->Write(RcptCommand(message, index)));
    RETURN_IF_ERROR(OnRcptReply(attempt, index));
  }
  if (attempt->accepted.empty()) {
    return Reset();
  }
  if (UseBdat()) {
    std::string chunk;
    AppendBdat(message.content, &chunk);
    RETURN_IF_ERROR(connection_->Write(chunk));
    return FinishBdat(attempt);
  }
  RETURN_IF_ERROR(connection_->Write("DATA\r\n"));
  return FinishData(attempt);
}

absl::Status SmtpClient::OnMailReply(Attempt* attempt) {
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (reply.IsPositiveCompletion()) {
    attempt->mail_accepted = true;
  } else {
    for (size_t index : attempt->sendable) {
      attempt->SettleWith(index, reply);
    }
  }
  return absl::OkStatus();
}

absl::Status SmtpClient::OnRcptReply(Attempt* attempt, size_t index) {
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (!attempt->mail_accepted) {
    return absl::OkStatus();  // pipelined after a refused MAIL: already settled by its reply
  }
  if (reply.IsPositiveCompletion()) {
    attempt->accepted.push_back(index);
  } else {
    attempt->SettleWith(index, reply);
  }
  return absl::OkStatus();
}

// FinishData: after DATA went out (pipelined or not).
absl::Status SmtpClient::FinishData(Attempt* attempt) {
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (reply.code == 354) {
    if (attempt->accepted.empty()) {
      // RFC 2920 §3.1 says a server refuses a pipelined DATA without valid recipients; one
      // that does not gets an empty message, which ends the transaction.
      RETURN_IF_ERROR(connection_->Write(".\r\n"));
      return connection_->ReadReply().status();
    }
    std::string data;
    AppendDotStuffed(attempt->message->content, &data);
    RETURN_IF_ERROR(connection_->Write(data));
    return ReadDataReplies(attempt);
  }
  if (attempt->accepted.empty()) {
    return attempt->mail_accepted ? Reset() : absl::OkStatus();
  }
  if (reply.Class() != 4 && reply.Class() != 5) {
    return LocalFailure("4.5.0", absl::StrCat("unexpected reply to DATA from ", target_, ": ",
                                              reply.ToString(kResultReplyBytesMax)));
  }
  for (size_t index : attempt->accepted) {
    attempt->SettleWith(index, reply);
  }
  return Reset();
}

absl::Status SmtpClient::ReadDataReplies(Attempt* attempt) {
  if (options_.lmtp) {
    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
    for (size_t index : attempt->accepted) {
      ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
      attempt->SettleWith(index, reply);
    }
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  for (size_t index : attempt->accepted) {
    attempt->SettleWith(index, reply);
  }
  return absl::OkStatus();
}

// FinishBdat: after BDAT n LAST and the content went out (pipelined or not).
absl::Status SmtpClient::FinishBdat(Attempt* attempt) {
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (attempt->accepted.empty()) {
    return attempt->mail_accepted ? Reset() : absl::OkStatus();
  }
  for (size_t index : attempt->accepted) {
    attempt->SettleWith(index, reply);
  }
  // RFC 3030 §2: after a refused BDAT the transaction is over but must be reset.
  return reply.IsPositiveCompletion() ? absl::OkStatus() : Reset();
}

absl::Status SmtpClient::Reset() {
  RETURN_IF_ERROR(connection_->Write("RSET\r\n"));
  ASSIGN_OR_RETURN(ServerReply reply, connection_->ReadReply());
  if (!reply.IsPositiveCompletion()) {
    return LocalFailure("4.5.0", absl::StrCat("RSET refused by ", target_, ": ",
                                              reply.ToString(kResultReplyBytesMax)));
  }
  return absl::OkStatus();
}

void AppendDotStuffed(absl::string_view content, std::string* out) {
  out->reserve(out->size() + content.size() + content.size() / 64 + 5);
  if (!content.empty() && content.front() == '.') {
    out->push_back('.');
  }
  size_t start = 0;
  while (true) {
    size_t hit = content.find("\n.", start);
    if (hit == absl::string_view::npos) {
      out->append(content.data() + start, content.size() - start);
      break;
    }
    out->append(content.data() + start, hit + 1 - start);
    out->push_back('.');
    start = hit + 1;
  }
  if (!content.empty() && !absl::EndsWith(content, "\r\n")) {
    out->append("\r\n");
  }
  out->append(".\r\n");
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

}  // namespace chute::delivery
