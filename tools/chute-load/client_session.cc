// client_session.cc: chute-load's pure client session: EHLO, STARTTLS, AUTH, messages, QUIT.

#include "tools/chute-load/client_session.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tools/chute-load/message.h"

namespace chute::load {
namespace {

// EnhancedCode: the "x.y.z" that starts `text`, if any (RFC 3463).
std::string EnhancedCode(absl::string_view text) {
  size_t end = text.find(' ');
  absl::string_view token = text.substr(0, end);
  int dots = 0;
  for (char c : token) {
    if (c == '.') {
      ++dots;
    } else if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return "";
    }
  }
  return dots == 2 && token.size() >= 5 ? std::string(token) : "";
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
    : config_(config), source_(source), stats_(stats) {}

void ClientSession::Start(int64_t connect_start_us) {
  connect_start_us_ = connect_start_us;
  phase_ = Phase::kBanner;
  awaiting_.push_back(Expect::kBanner);
}

void ClientSession::Send(absl::string_view line, Expect expect) {
  absl::StrAppend(&out_, line, "\r\n");
  awaiting_.push_back(expect);
}

void ClientSession::OnInput(absl::string_view bytes, int64_t now_us) {
  if (phase_ == Phase::kDone) {
    return;  // whatever a server sends after the end is of no interest
  }
  in_.append(bytes.data(), bytes.size());
  size_t start = 0;
  while (phase_ != Phase::kDone && phase_ != Phase::kTls) {
    size_t newline = in_.find('\n', start);
    if (newline == std::string::npos) {
      break;
    }
    absl::string_view line(in_.data() + start, newline - start);
    start = newline + 1;
    if (absl::EndsWith(line, "\r")) {
      line.remove_suffix(1);
    }
    if (line.size() > kReplyLineBytesMax) {
      return Protocol("reply line too long");
    }
    if (line.size() < 3 || !absl::ascii_isdigit(line[0]) || !absl::ascii_isdigit(line[1]) ||
        !absl::ascii_isdigit(line[2]) || (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      return Protocol("malformed reply");
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (!partial_.lines.empty() && code != partial_.code) {
      return Protocol("reply code changed inside a multi-line reply");
    }
    partial_.code = code;
    absl::string_view text = line.size() > 4 ? line.substr(4) : absl::string_view();
    if (partial_.lines.size() >= kReplyLinesMax) {
      return Protocol("too many reply lines");
    }
    partial_.lines.emplace_back(text);
    if (line.size() > 3 && line[3] == '-') {
      continue;
    }
    partial_.enhanced = EnhancedCode(partial_.lines.front());
    Reply reply = std::move(partial_);
    partial_ = Reply();
    OnReply(reply, now_us);
  }
  if (phase_ == Phase::kTls) {
    in_.clear();  // plaintext after STARTTLS's 220 would be an injection: never read it
    return;
  }
  in_.erase(0, start);
  if (in_.size() > kInputBytesMax) {
    Protocol("reply line too long");
  }
}

void ClientSession::OnReply(const Reply& reply, int64_t now_us) {
  if (awaiting_.empty()) {
    return Protocol("reply without a command");
  }
  Expect expect = awaiting_.front();
  awaiting_.pop_front();
  if (reply.code == 421 && expect != Expect::kQuit) {
    // The server is closing the connection: count it and stop at once.
    Fail(PhaseName(phase_), reply);
    if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
      stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    }
    awaiting_.clear();
    phase_ = Phase::kDone;
    return;
  }
  switch (expect) {
    case Expect::kBanner:
      if (reply.code != 220) {
        Fail("banner", reply);
        return Quit();
      }
      ++stats_->banners;
      stats_->banner_us.Record(now_us - connect_start_us_);
      phase_ = Phase::kEhlo;
      return Send(absl::StrCat("EHLO ", config_.ehlo), Expect::kEhlo);
    case Expect::kEhlo:
      return OnEhlo(reply, now_us);
    case Expect::kStartTls:
      if (reply.code != 220) {
        Fail("starttls", reply);
        return Quit();
      }
      phase_ = Phase::kTls;
      return;
    case Expect::kAuth:
    case Expect::kAuthStep:
      return OnAuthReply(reply, now_us);
    case Expect::kQuit:
      phase_ = Phase::kDone;
      return;
    default:
      return OnEnvelopeReply(expect, reply, now_us);
  }
}

void ClientSession::OnTlsDone(int64_t now_us) {
  ++stats_->tls_handshakes;
  if (phase_ != Phase::kTls) {
    return;  // implicit TLS: the banner comes next
  }
  phase_ = Phase::kEhlo2;
  Send(absl::StrCat("EHLO ", config_.ehlo), Expect::kEhlo);
  (void)now_us;
}

void ClientSession::OnEhlo(const Reply& reply, int64_t now_us) {
  if (reply.code != 250) {
    Fail("ehlo", reply);
    return Quit();
  }
  server_pipelining_ = server_chunking_ = server_starttls_ = false;
  for (size_t i = 1; i < reply.lines.size(); ++i) {
    std::string keyword = absl::AsciiStrToUpper(reply.lines[i].substr(0, reply.lines[i].find(' ')));
    server_pipelining_ |= keyword == "PIPELINING";
    server_chunking_ |= keyword == "CHUNKING";
    server_starttls_ |= keyword == "STARTTLS";
  }
  if (phase_ == Phase::kEhlo && config_.tls == TlsMode::kStartTls) {
    if (!server_starttls_) {
      return Protocol("STARTTLS not offered");
    }
    phase_ = Phase::kStartTls;
    return Send("STARTTLS", Expect::kStartTls);
  }
  if (config_.bdat && !server_chunking_) {
    return Protocol("CHUNKING not offered (--bdat)");
  }
  if (config_.auth != AuthMech::kNone) {
    return SendAuth(now_us);
  }
  BecomeReady(now_us);
}

void ClientSession::SendAuth(int64_t now_us) {
  phase_ = Phase::kAuth;
  auth_start_us_ = now_us;
  auth_step_ = 0;
  switch (config_.auth) {
    case AuthMech::kPlain:
      return Send(absl::StrCat("AUTH PLAIN ", absl::Base64Escape(absl::StrCat(
                                                  absl::string_view("\0", 1), config_.user,
                                                  absl::string_view("\0", 1), config_.secret))),
                  Expect::kAuth);
    case AuthMech::kLogin:
      return Send("AUTH LOGIN", Expect::kAuthStep);
    case AuthMech::kXoauth2:
      return Send(absl::StrCat("AUTH XOAUTH2 ",
                               absl::Base64Escape(absl::StrCat("user=", config_.user,
                                                               "\x01"
                                                               "auth=Bearer ",
                                                               config_.secret, "\x01\x01"))),
                  Expect::kAuth);
    case AuthMech::kNone:
      return BecomeReady(now_us);
  }
}

void ClientSession::OnAuthReply(const Reply& reply, int64_t now_us) {
  if (reply.code == 235 && !failed_) {
    ++stats_->auths;
    stats_->auth_us.Record(now_us - auth_start_us_);
    return BecomeReady(now_us);
  }
  if (reply.code == 334 && config_.auth == AuthMech::kLogin && auth_step_ < 2) {
    ++auth_step_;
    return Send(absl::Base64Escape(auth_step_ == 1 ? config_.user : config_.secret),
                auth_step_ == 1 ? Expect::kAuthStep : Expect::kAuth);
  }
  if (reply.code == 334 && config_.auth == AuthMech::kXoauth2 && !failed_) {
    // XOAUTH2's error challenge: the client answers with an empty line to get the final code.
    failed_ = true;
    return Send("", Expect::kAuth);
  }
  Fail("auth", reply);
  Quit();
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
  unsent_.clear();
  unsent_.emplace_back(absl::StrCat("MAIL FROM:<", config_.from, ">"), Expect::kMail);
  for (const std::string& to : headers.to) {
    unsent_.emplace_back(absl::StrCat("RCPT TO:<", to, ">"), Expect::kRcpt);
  }
  if (config_.bdat) {
    unsent_.emplace_back(absl::StrCat("BDAT ", message_.size(), " LAST"), Expect::kBdat);
  } else {
    unsent_.emplace_back("DATA", Expect::kData);
  }
  bool pipeline = server_pipelining_ && config_.pipelining;
  do {
    SendNextUnpipelined();
  } while (pipeline && !unsent_.empty());
  eod_us_ = now_us;  // BDAT carries the message with its command; DATA sets it after 354
}

void ClientSession::SendNextUnpipelined() {
  auto [line, expect] = std::move(unsent_.front());
  unsent_.pop_front();
  Send(line, expect);
  if (expect == Expect::kBdat) {
    out_ += message_;
  }
}

void ClientSession::OnEnvelopeReply(Expect expect, const Reply& reply, int64_t now_us) {
  switch (expect) {
    case Expect::kMail:
      if (reply.code != 250) {
        Fail("mail", reply);
        mail_failed_ = true;
      }
      break;
    case Expect::kRcpt:
      if (reply.code == 250 || reply.code == 251) {
        ++rcpts_accepted_;
      } else if (!mail_failed_) {  // after a refused MAIL the 503s are its consequence
        Fail("rcpt", reply);
      }
      break;
    case Expect::kData:
      if (reply.code != 354) {
        if (!mail_failed_ && rcpts_accepted_ > 0) {  // else the consequence of a refusal
          Fail("data", reply);
        }
        failed_ = true;
      } else if (mail_failed_ || rcpts_accepted_ == 0) {
        // Nobody to deliver to: end the data at once. (With some recipients accepted the
        // message goes in full: an empty one would be delivered as such.)
        out_ += ".\r\n";
        awaiting_.push_back(Expect::kDataAbort);
      } else {
        phase_ = Phase::kData;
        out_ += DotStuff(message_);
        eod_us_ = now_us;
        awaiting_.push_back(Expect::kDataEnd);
      }
      break;
    case Expect::kBdat:
    case Expect::kDataEnd:
      if (reply.code == 250) {
        FinishMessage(now_us);
      } else if (expect == Expect::kDataEnd || (!mail_failed_ && rcpts_accepted_ > 0)) {
        Fail(expect == Expect::kBdat ? "bdat" : "end-of-data", reply);
      } else {
        failed_ = true;
      }
      break;
    default:  // kDataAbort: the server's answer to an empty message is of no interest
      break;
  }
  if (failed_) {
    unsent_.clear();
  }
  if (!unsent_.empty()) {
    if (awaiting_.empty()) {
      SendNextUnpipelined();
      if (config_.bdat && unsent_.empty()) {
        eod_us_ = now_us;
      }
    }
    return;
  }
  if (!awaiting_.empty()) {
    return;
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
  stats_->data_us.Record(now_us - eod_us_);
  stats_->message_us.Record(now_us - job_.scheduled_us);
  ++messages_done_;
}

void ClientSession::Fail(absl::string_view phase, const Reply& reply) {
  stats_->AddError(reply.enhanced.empty()
                       ? absl::StrCat(phase, " ", reply.code)
                       : absl::StrCat(phase, " ", reply.code, " ", reply.enhanced));
  failed_ = true;
}

void ClientSession::Protocol(absl::string_view what) {
  stats_->AddError(absl::StrCat("protocol ", what));
  if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
    stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  awaiting_.clear();
  phase_ = Phase::kDone;
}

void ClientSession::Quit() {
  if (phase_ == Phase::kDone || phase_ == Phase::kQuit) {
    return;
  }
  phase_ = Phase::kQuit;
  Send("QUIT", Expect::kQuit);
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
  awaiting_.clear();
  phase_ = Phase::kDone;
}

}  // namespace chute::load

namespace chute::load {

void ClientSession::Abandon() {
  if (phase_ == Phase::kMessage || phase_ == Phase::kData) {
    stats_->in_flight.fetch_sub(1, std::memory_order_relaxed);
  }
  awaiting_.clear();
  phase_ = Phase::kDone;
}

}  // namespace chute::load
