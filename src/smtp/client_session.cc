// client_session.cc: the pure SMTP/LMTP client session shared by delivery and chute-load.

#include "smtp/client_session.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace chute::smtp {

std::vector<size_t> ClientReplies::Accepted() const {
  std::vector<size_t> accepted;
  if (!MailAccepted()) {
    return accepted;
  }
  for (size_t i = 0; i < rcpts.size(); ++i) {
    if (rcpts[i].has_value() && rcpts[i]->IsPositiveCompletion()) {
      accepted.push_back(i);
    }
  }
  return accepted;
}

const char* ClientCommandName(ClientCommand command) {
  switch (command) {
    case ClientCommand::kGreeting:
      return "greeting";
    case ClientCommand::kHello:
      return "ehlo";
    case ClientCommand::kHelo:
      return "helo";
    case ClientCommand::kStartTls:
      return "starttls";
    case ClientCommand::kAuth:
      return "auth";
    case ClientCommand::kMail:
      return "mail";
    case ClientCommand::kRcpt:
      return "rcpt";
    case ClientCommand::kData:
      return "data";
    case ClientCommand::kDataEnd:
      return "end-of-data";
    case ClientCommand::kDataAbort:
      return "data-abort";
    case ClientCommand::kBdat:
      return "bdat";
    case ClientCommand::kRset:
      return "rset";
    case ClientCommand::kQuit:
      return "quit";
  }
  return "?";
}

ClientSession::ClientSession(const ClientConfig& config, ClientObserver* observer)
    : config_(config), observer_(observer) {}

void ClientSession::Send(absl::string_view line, ClientCommand expect) {
  absl::StrAppend(&out_, line, "\r\n");
  awaiting_.push_back(expect);
}

void ClientSession::OnInput(absl::string_view bytes, int64_t now_us) {
  while (!bytes.empty() && phase_ != Phase::kClosed) {
    if (phase_ == Phase::kTls) {
      // The server spoke after its 220 to STARTTLS: those bytes would be read as if they had
      // come over TLS.
      return Protocol(ReplyError::kNone, "data after the 220 to STARTTLS");
    }
    // At most kReplyFeedBytesMax at a time, drained after each, bounds what the parser queues.
    absl::string_view chunk = bytes.substr(0, kReplyFeedBytesMax);
    bytes.remove_prefix(chunk.size());
    parser_.Feed(chunk);
    ServerReply reply;
    while (phase_ != Phase::kClosed && parser_.Next(&reply)) {
      if (phase_ == Phase::kTls) {
        return Protocol(ReplyError::kNone, "data after the 220 to STARTTLS");
      }
      OnReply(reply, now_us);
    }
    if (phase_ == Phase::kTls && !parser_.idle()) {
      return Protocol(ReplyError::kNone, "data after the 220 to STARTTLS");
    }
    if (parser_.failed() && phase_ != Phase::kClosed) {
      return Protocol(parser_.error_kind(), parser_.error());
    }
  }
}

void ClientSession::OnReply(const ServerReply& reply, int64_t now_us) {
  if (awaiting_.empty()) {
    return Protocol(ReplyError::kNone, "reply without a command");
  }
  ClientCommand command = awaiting_.front();
  awaiting_.pop_front();
  if (reply.code == 421 && command != ClientCommand::kQuit) {
    // The server is closing the connection (RFC 5321 §3.8): nothing more will be answered.
    closing_ = reply;
    awaiting_.clear();
    phase_ = Phase::kClosed;
  } else if (phase_ == Phase::kQuit && command != ClientCommand::kQuit) {
    // Quitting: a reply still owed changes nothing, but what it says is kept.
    if (command == ClientCommand::kData && reply.code == 354) {
      awaiting_.clear();  // never "." (it would deliver an empty message): the end
      phase_ = Phase::kClosed;
    } else if (command == ClientCommand::kMail || command == ClientCommand::kRcpt ||
               command == ClientCommand::kData || command == ClientCommand::kDataEnd ||
               command == ClientCommand::kBdat) {
      OnTransactionReply(command, reply, now_us);
    }
    if (quit_owed_ && awaiting_.empty() && phase_ == Phase::kQuit) {
      quit_owed_ = false;
      Send("QUIT", ClientCommand::kQuit);
    }
  } else {
    Act(command, reply, now_us);
  }
  if (observer_ != nullptr) {
    observer_->OnReply(command, reply, now_us);
  }
}

void ClientSession::Act(ClientCommand command, const ServerReply& reply, int64_t now_us) {
  switch (command) {
    case ClientCommand::kGreeting:
      if (reply.code != 220) {
        return Refuse(command, &reply, "");
      }
      return Hello();
    case ClientCommand::kHello:
      if (reply.code == 250) {
        capabilities_ = ParseCapabilities(reply);
        return AfterHello();
      }
      if (!config_.lmtp && config_.helo_fallback && reply.Class() == 5) {
        // An old server without ESMTP: plain SMTP has no extensions to use.
        return Send(absl::StrCat("HELO ", config_.helo_name), ClientCommand::kHelo);
      }
      return Refuse(command, &reply, "");
    case ClientCommand::kHelo:
      if (reply.code != 250) {
        return Refuse(command, &reply, "");
      }
      capabilities_ = Capabilities();
      return AfterHello();
    case ClientCommand::kStartTls:
      if (reply.code == 220) {
        phase_ = Phase::kTls;
        return;
      }
      tls_refused_ = true;
      if (config_.tls == ClientTls::kRequired) {
        return Refuse(command, &reply, "");
      }
      tls_done_ = true;  // opportunistic: the session goes on in plain text
      return AfterHello();
    case ClientCommand::kAuth:
      return OnAuthReply(reply);
    case ClientCommand::kRset:
      if (!reply.IsPositiveCompletion()) {
        return Refuse(command, &reply, "");
      }
      needs_reset_ = false;
      phase_ = Phase::kReady;
      return;
    case ClientCommand::kQuit:
      awaiting_.clear();
      phase_ = Phase::kClosed;
      return;
    case ClientCommand::kMail:
    case ClientCommand::kRcpt:
    case ClientCommand::kData:
    case ClientCommand::kDataEnd:
    case ClientCommand::kDataAbort:
    case ClientCommand::kBdat:
      return OnTransactionReply(command, reply, now_us);
  }
}

void ClientSession::Hello() {
  phase_ = Phase::kHello;
  capabilities_ = Capabilities();
  Send(absl::StrCat(config_.lmtp ? "LHLO " : "EHLO ", config_.helo_name), ClientCommand::kHello);
}

void ClientSession::AfterHello() {
  if (config_.tls != ClientTls::kOff && !tls_done_) {
    if (capabilities_.starttls) {
      phase_ = Phase::kStartTls;
      return Send("STARTTLS", ClientCommand::kStartTls);
    }
    if (config_.tls == ClientTls::kRequired) {
      return Refuse(ClientCommand::kStartTls, nullptr, "STARTTLS not offered");
    }
    tls_done_ = true;
  }
  if (config_.require_chunking && !capabilities_.chunking) {
    return Refuse(ClientCommand::kHello, nullptr, "CHUNKING not offered");
  }
  if (config_.auth != ClientAuth::kNone) {
    return SendAuth();
  }
  phase_ = Phase::kReady;
}

void ClientSession::OnTlsDone() {
  CHECK(phase_ == Phase::kTls);
  tls_done_ = true;
  Hello();
}

void ClientSession::SendAuth() {
  phase_ = Phase::kAuth;
  auth_step_ = 0;
  auth_failing_ = false;
  switch (config_.auth) {
    case ClientAuth::kPlain:
      return Send(absl::StrCat("AUTH PLAIN ", absl::Base64Escape(absl::StrCat(
                                                  absl::string_view("\0", 1), config_.user,
                                                  absl::string_view("\0", 1), config_.secret))),
                  ClientCommand::kAuth);
    case ClientAuth::kLogin:
      return Send("AUTH LOGIN", ClientCommand::kAuth);
    case ClientAuth::kXoauth2:
      return Send(absl::StrCat("AUTH XOAUTH2 ",
                               absl::Base64Escape(absl::StrCat("user=", config_.user,
                                                               "\x01"
                                                               "auth=Bearer ",
                                                               config_.secret, "\x01\x01"))),
                  ClientCommand::kAuth);
    case ClientAuth::kNone:
      phase_ = Phase::kReady;
      return;
  }
}

void ClientSession::OnAuthReply(const ServerReply& reply) {
  if (reply.code == 235 && !auth_failing_) {
    phase_ = Phase::kReady;
    return;
  }
  if (reply.code == 334 && config_.auth == ClientAuth::kLogin && auth_step_ < 2) {
    ++auth_step_;
    return Send(absl::Base64Escape(auth_step_ == 1 ? config_.user : config_.secret),
                ClientCommand::kAuth);
  }
  if (reply.code == 334 && config_.auth == ClientAuth::kXoauth2 && !auth_failing_) {
    // XOAUTH2's error challenge: the client answers with an empty line to get the final code.
    auth_failing_ = true;
    return Send("", ClientCommand::kAuth);
  }
  Refuse(ClientCommand::kAuth, &reply, "");
}

void ClientSession::Begin(ClientTransaction transaction, int64_t now_us) {
  CHECK(phase_ == Phase::kReady);
  CHECK(!transaction.rcpts.empty());
  transaction_ = std::move(transaction);
  replies_ = ClientReplies();
  replies_.rcpts.resize(transaction_.rcpts.size());
  pipelined_ = config_.pipelining && capabilities_.pipelining;
  next_rcpt_ = 0;
  rcpts_replied_ = 0;
  data_unsent_ = transaction_.content.has_value();
  aborted_ = false;
  ended_by_data_ = false;
  final_owed_ = 0;
  needs_reset_ = false;
  phase_ = Phase::kTransaction;
  Send(transaction_.mail, ClientCommand::kMail);
  if (pipelined_) {
    while (next_rcpt_ < transaction_.rcpts.size()) {
      Send(transaction_.rcpts[next_rcpt_++], ClientCommand::kRcpt);
    }
    if (data_unsent_) {
      SendData(now_us);
    }
  }
}

void ClientSession::SendData(int64_t now_us) {
  data_unsent_ = false;
  if (transaction_.bdat && !config_.lmtp) {
    AppendBdat(*transaction_.content, &out_);
    awaiting_.push_back(ClientCommand::kBdat);
    replies_.content_sent = true;
    replies_.content_sent_us = now_us;
    return;
  }
  Send("DATA", ClientCommand::kData);
}

void ClientSession::OnTransactionReply(ClientCommand command, const ServerReply& reply,
                                       int64_t now_us) {
  switch (command) {
    case ClientCommand::kMail:
      replies_.mail = reply;
      if (!reply.IsPositiveCompletion()) {
        // Stepwise: nothing more goes (pipelined: the RCPTs' 503s follow).
        next_rcpt_ = transaction_.rcpts.size();
        data_unsent_ = false;
      }
      break;
    case ClientCommand::kRcpt:
      CHECK(rcpts_replied_ < replies_.rcpts.size());
      replies_.rcpts[rcpts_replied_++] = reply;
      if (!reply.IsPositiveCompletion() && config_.stepwise_stops_at_refusal) {
        aborted_ = true;
      }
      break;
    case ClientCommand::kData: {
      replies_.data = reply;
      if (reply.code != 354) {
        break;
      }
      ended_by_data_ = true;
      std::vector<size_t> accepted = replies_.Accepted();
      if (accepted.empty()) {
        // RFC 2920 §3.1 says a server refuses a pipelined DATA without valid recipients; one
        // that does not gets an empty message, which ends the transaction.
        out_.append(".\r\n");
        awaiting_.push_back(ClientCommand::kDataAbort);
        break;
      }
      SendContent(now_us);
      final_owed_ = config_.lmtp ? accepted.size() : 1;
      for (size_t i = 0; i < final_owed_; ++i) {
        awaiting_.push_back(ClientCommand::kDataEnd);
      }
      break;
    }
    case ClientCommand::kDataEnd:
      replies_.final.push_back(reply);
      break;
    case ClientCommand::kBdat:
      replies_.final.push_back(reply);
      // RFC 3030 §2: after a refused BDAT the transaction is over but must be reset.
      ended_by_data_ = reply.IsPositiveCompletion();
      break;
    default:  // kDataAbort: the answer to an empty message changes nothing
      break;
  }
  if (phase_ != Phase::kTransaction) {
    return;  // quitting: the replies still owed are only recorded (OnReply)
  }
  if (!pipelined_ && awaiting_.empty()) {
    SendNext(now_us);
  }
  MaybeFinish();
}

void ClientSession::SendContent(int64_t now_us) {
  AppendDotStuffed(*transaction_.content, &out_);
  replies_.content_sent = true;
  replies_.content_sent_us = now_us;
}

void ClientSession::SendNext(int64_t now_us) {
  if (aborted_ || !replies_.MailAccepted()) {
    return;
  }
  if (next_rcpt_ < transaction_.rcpts.size()) {
    return Send(transaction_.rcpts[next_rcpt_++], ClientCommand::kRcpt);
  }
  if (data_unsent_ && !replies_.Accepted().empty()) {
    return SendData(now_us);
  }
  data_unsent_ = false;
}

void ClientSession::MaybeFinish() {
  if (phase_ != Phase::kTransaction || !awaiting_.empty()) {
    return;
  }
  needs_reset_ = replies_.MailAccepted() && !ended_by_data_;
  phase_ = Phase::kReady;
}

void ClientSession::Reset() {
  CHECK(phase_ == Phase::kReady);
  phase_ = Phase::kTransaction;  // until the 250 (Act, kRset)
  Send("RSET", ClientCommand::kRset);
}

void ClientSession::Quit() {
  if (phase_ == Phase::kQuit || phase_ == Phase::kClosed) {
    return;
  }
  phase_ = Phase::kQuit;
  if (awaiting_.empty()) {
    Send("QUIT", ClientCommand::kQuit);
  } else {
    quit_owed_ = true;
  }
}

void ClientSession::Refuse(ClientCommand command, const ServerReply* reply, absl::string_view why) {
  refusal_.command = command;
  refusal_.reply.reset();
  if (reply != nullptr) {
    refusal_.reply = *reply;
  }
  refusal_.why = std::string(why);
  phase_ = Phase::kRefused;
}

void ClientSession::Protocol(ReplyError kind, absl::string_view what) {
  protocol_error_ = std::string(what);
  protocol_error_kind_ = kind;
  awaiting_.clear();
  phase_ = Phase::kClosed;
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

void AppendBdat(absl::string_view content, std::string* out) {
  bool add_crlf = !content.empty() && !absl::EndsWith(content, "\r\n");
  absl::StrAppend(out, "BDAT ", content.size() + (add_crlf ? 2 : 0), " LAST\r\n");
  out->append(content.data(), content.size());
  if (add_crlf) {
    out->append("\r\n");
  }
}

}  // namespace chute::smtp
