// client_session.cc: chute-load's client session: smtp::ClientSession with jobs and counts.

#include "tools/chute-load/client_session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "tools/chute-load/message.h"

namespace chute::load {
namespace {

using smtp::ClientCommand;
using smtp::ServerReply;

smtp::ClientConfig CoreConfig(const SessionConfig& config) {
  smtp::ClientConfig core;
  core.helo_name = config.ehlo;
  // With implicit TLS the transport's handshake comes before the banner: no STARTTLS.
  core.tls = config.tls == TlsMode::kStartTls ? smtp::ClientTls::kRequired : smtp::ClientTls::kOff;
  core.pipelining = config.pipelining;
  core.helo_fallback = false;  // a refused EHLO is counted, not worked around
  core.stepwise_stops_at_refusal = true;
  core.require_chunking = config.bdat;
  switch (config.auth) {
    case AuthMech::kNone:
      core.auth = smtp::ClientAuth::kNone;
      break;
    case AuthMech::kPlain:
      core.auth = smtp::ClientAuth::kPlain;
      break;
    case AuthMech::kLogin:
      core.auth = smtp::ClientAuth::kLogin;
      break;
    case AuthMech::kXoauth2:
      core.auth = smtp::ClientAuth::kXoauth2;
      break;
  }
  core.user = config.user;
  core.secret = config.secret;
  return core;
}

// ProtocolName: the error key of what the core session refused (as chute-load always named it).
std::string ProtocolName(const smtp::ClientSession& core) {
  switch (core.protocol_error_kind()) {
    case smtp::ReplyError::kLineTooLong:
      return "reply line too long";
    case smtp::ReplyError::kMalformed:
      return "malformed reply";
    case smtp::ReplyError::kCodeChanged:
      return "reply code changed inside a multi-line reply";
    case smtp::ReplyError::kTooManyLines:
      return "too many reply lines";
    case smtp::ReplyError::kTooManyQueued:
      return "too many replies";
    case smtp::ReplyError::kNone:
      break;
  }
  return core.protocol_error();
}

}  // namespace

const char* ClientSession::PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kBanner:
      return "banner";
    case Phase::kEhlo:
    case Phase::kEhlo2:
      return "ehlo";
    case Phase::kStartTls:
      return "starttls";
    case Phase::kTls:
      return "tls";
    case Phase::kAuth:
      return "auth";
    case Phase::kReady:
      return "ready";
    case Phase::kMessage:
      return "envelope";
    case Phase::kData:
      return "data";
    case Phase::kQuit:
      return "quit";
    case Phase::kDone:
      return "done";
  }
  return "?";
}

ClientSession::ClientSession(const SessionConfig& config, JobSource* source, Stats* stats)
    : config_(config),
      source_(source),
      stats_(stats),
      core_config_(CoreConfig(config)),
      core_(core_config_, this) {}

void ClientSession::Start(int64_t connect_start_us) {
  connect_start_us_ = connect_start_us;
  phase_ = Phase::kBanner;
}

void ClientSession::OnInput(absl::string_view bytes, int64_t now_us) {
  if (phase_ == Phase::kDone) {
    return;  // whatever a server sends after the end is of no interest
  }
  core_.OnInput(bytes, now_us);
  if (phase_ != Phase::kDone && core_.closed() && !core_.protocol_error().empty()) {
    Protocol(ProtocolName(core_));
  }
}

void ClientSession::OnReply(ClientCommand command, const ServerReply& reply, int64_t now_us) {
  if (phase_ == Phase::kDone) {
    return;
  }
  if (reply.code == 421 && command != ClientCommand::kQuit) {
    // The server is closing the connection: count it and stop at once.
    Fail(PhaseName(phase_), reply);
    if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
      stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    }
    phase_ = Phase::kDone;
    return;
  }
  switch (command) {
    case ClientCommand::kGreeting:
      if (reply.code != 220) {
        Fail("banner", reply);
        return Quit();
      }
      ++stats_->banners;
      stats_->banner_us.Record(now_us - connect_start_us_);
      phase_ = Phase::kEhlo;
      return;
    case ClientCommand::kHello:
    case ClientCommand::kHelo:
      return OnHello(reply, now_us);
    case ClientCommand::kStartTls:
      if (reply.code != 220) {
        Fail("starttls", reply);
        return Quit();
      }
      phase_ = Phase::kTls;
      return;
    case ClientCommand::kAuth:
      if (core_.ready()) {
        ++stats_->auths;
        stats_->auth_us.Record(now_us - auth_start_us_);
        return BecomeReady(now_us);
      }
      if (core_.phase() != smtp::ClientSession::Phase::kAuth) {
        Fail("auth", reply);
        return Quit();
      }
      return;  // a challenge answered
    case ClientCommand::kQuit:
      phase_ = Phase::kDone;
      return;
    case ClientCommand::kRset:
      return;  // never sent: a failed message ends the session
    default:
      return OnEnvelopeReply(command, reply, now_us);
  }
}

void ClientSession::OnTlsDone(int64_t now_us) {
  ++stats_->tls_handshakes;
  if (phase_ != Phase::kTls) {
    return;  // implicit TLS: the banner comes next
  }
  phase_ = Phase::kEhlo2;
  core_.OnTlsDone();
  (void)now_us;
}

void ClientSession::OnHello(const ServerReply& reply, int64_t now_us) {
  if (reply.code != 250) {
    Fail("ehlo", reply);
    return Quit();
  }
  using CorePhase = smtp::ClientSession::Phase;
  if (core_.phase() == CorePhase::kStartTls) {
    phase_ = Phase::kStartTls;
    return;
  }
  if (core_.phase() == CorePhase::kRefused) {
    return Protocol(core_.refusal().command == ClientCommand::kStartTls
                        ? "STARTTLS not offered"
                        : "CHUNKING not offered (--bdat)");
  }
  if (core_.phase() == CorePhase::kAuth) {
    phase_ = Phase::kAuth;
    auth_start_us_ = now_us;
    return;
  }
  BecomeReady(now_us);
}

void ClientSession::BecomeReady(int64_t now_us) {
  phase_ = Phase::kReady;
  failed_ = false;
  ++stats_->sessions_ready;
  Poke(now_us);
}

void ClientSession::Poke(int64_t now_us) {
  if (phase_ != Phase::kReady) {
    return;
  }
  if (stop_ || (config_.messages_max != 0 && messages_done_ >= config_.messages_max)) {
    return Quit();
  }
  if (config_.hold) {
    return;
  }
  Job job;
  uint64_t size_bytes = 0;
  if (source_->Take(now_us, &job, &size_bytes)) {
    return StartMessage(job, size_bytes, now_us);
  }
  if (source_->Exhausted(now_us)) {
    Quit();
  }
}

void ClientSession::Stop(int64_t now_us) {
  stop_ = true;
  Poke(now_us);
}

void ClientSession::StartMessage(const Job& job, uint64_t size_bytes, int64_t now_us) {
  phase_ = Phase::kMessage;
  job_ = job;
  failed_ = false;
  mail_failed_ = false;
  rcpts_accepted_ = 0;
  stats_->in_flight.fetch_add(1, std::memory_order_relaxed);
  MessageHeaders headers{config_.from, {}, config_.date, config_.run_id};
  for (int k = 0; k < config_.rcpts; ++k) {
    headers.to.push_back(
        ExpandAddress(config_.to[static_cast<size_t>(k) % config_.to.size()],
                      job.seq * static_cast<uint64_t>(config_.rcpts) + static_cast<uint64_t>(k)));
  }
  message_ = BuildMessage(headers, job.seq, size_bytes);
  smtp::ClientTransaction transaction;
  transaction.mail = absl::StrCat("MAIL FROM:<", config_.from, ">");
  for (const std::string& to : headers.to) {
    transaction.rcpts.push_back(absl::StrCat("RCPT TO:<", to, ">"));
  }
  transaction.content = absl::string_view(message_);
  transaction.bdat = config_.bdat;
  core_.Begin(std::move(transaction), now_us);
}

void ClientSession::OnEnvelopeReply(ClientCommand command, const ServerReply& reply,
                                    int64_t now_us) {
  switch (command) {
    case ClientCommand::kMail:
      if (reply.code != 250) {
        Fail("mail", reply);
        mail_failed_ = true;
      }
      break;
    case ClientCommand::kRcpt:
      if (reply.code == 250 || reply.code == 251) {
        ++rcpts_accepted_;
      } else if (!mail_failed_) {  // after a refused MAIL the 503s are its consequence
        Fail("rcpt", reply);
      }
      break;
    case ClientCommand::kData:
      if (reply.code != 354) {
        if (!mail_failed_ && rcpts_accepted_ > 0) {  // else the consequence of a refusal
          Fail("data", reply);
        }
        failed_ = true;
      } else if (core_.replies().content_sent) {
        phase_ = Phase::kData;
      }
      // (With nobody to deliver to, the core ended the data at once: an empty message.)
      break;
    case ClientCommand::kBdat:
    case ClientCommand::kDataEnd:
      if (reply.code == 250) {
        FinishMessage(now_us);
      } else if (command == ClientCommand::kDataEnd || (!mail_failed_ && rcpts_accepted_ > 0)) {
        Fail(command == ClientCommand::kBdat ? "bdat" : "end-of-data", reply);
      } else {
        failed_ = true;
      }
      break;
    default:  // kDataAbort: the server's answer to an empty message is of no interest
      break;
  }
  if (!core_.ready()) {
    return;  // more replies are owed
  }
  stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  message_.clear();
  if (failed_) {
    return Quit();
  }
  phase_ = Phase::kReady;
  Poke(now_us);
}

void ClientSession::FinishMessage(int64_t now_us) {
  stats_->messages.fetch_add(1, std::memory_order_relaxed);
  stats_->recipients += static_cast<uint64_t>(rcpts_accepted_);
  stats_->message_bytes += message_.size();
  stats_->data_us.Record(now_us - core_.replies().content_sent_us);
  stats_->message_us.Record(now_us - job_.scheduled_us);
  ++messages_done_;
}

void ClientSession::Fail(absl::string_view phase, const ServerReply& reply) {
  stats_->AddError(reply.enhanced_code.empty()
                       ? absl::StrCat(phase, " ", reply.code)
                       : absl::StrCat(phase, " ", reply.code, " ", reply.enhanced_code));
  failed_ = true;
}

void ClientSession::Protocol(absl::string_view what) {
  stats_->AddError(absl::StrCat("protocol ", what));
  if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
    stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  phase_ = Phase::kDone;
}

void ClientSession::Quit() {
  if (phase_ == Phase::kDone || phase_ == Phase::kQuit) {
    return;
  }
  phase_ = Phase::kQuit;
  core_.Quit();
}

void ClientSession::OnClosed(absl::string_view why, int64_t /*now_us*/) {
  if (phase_ == Phase::kDone || phase_ == Phase::kQuit) {
    phase_ = Phase::kDone;
    return;
  }
  stats_->AddError(absl::StrCat(PhaseName(phase_), " ", why));
  if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
    stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  phase_ = Phase::kDone;
}

void ClientSession::Abandon() {
  if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
    stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  phase_ = Phase::kDone;
}

}  // namespace chute::load
