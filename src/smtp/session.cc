// session.cc: the sans-I/O SMTP server session: commands, replies, SASL, STARTTLS, limits.

#include "smtp/session.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"

namespace chute::smtp {
namespace {

enum class Verb : uint8_t {
  kUnknown,
  kHelo,
  kEhlo,
  kMail,
  kRcpt,
  kData,
  kBdat,
  kRset,
  kNoop,
  kQuit,
  kVrfy,
  kExpn,
  kHelp,
  kStartTls,
  kAuth,
  kHttp,
};

struct VerbName {
  absl::string_view name;
  Verb verb;
};

constexpr VerbName kVerbs[] = {
    {"MAIL", Verb::kMail},
    {"RCPT", Verb::kRcpt},
    {"BDAT", Verb::kBdat},
    {"DATA", Verb::kData},
    {"EHLO", Verb::kEhlo},
    {"HELO", Verb::kHelo},
    {"RSET", Verb::kRset},
    {"NOOP", Verb::kNoop},
    {"QUIT", Verb::kQuit},
    {"AUTH", Verb::kAuth},
    {"STARTTLS", Verb::kStartTls},
    {"VRFY", Verb::kVrfy},
    {"EXPN", Verb::kExpn},
    {"HELP", Verb::kHelp},
    // An HTTP request on the SMTP port is a cross-protocol attack or a lost browser: close.
    {"GET", Verb::kHttp},
    {"POST", Verb::kHttp},
    {"HEAD", Verb::kHttp},
    {"PUT", Verb::kHttp},
    {"CONNECT", Verb::kHttp},
};

Verb LookupVerb(absl::string_view word) {
  for (const VerbName& entry : kVerbs) {
    if (absl::EqualsIgnoreCase(word, entry.name)) {
      return entry.verb;
    }
  }
  return Verb::kUnknown;
}

bool HasControl(absl::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 32 || c == 127; });
}

}  // namespace

Session::Session(SessionOptions options, SessionHandler* handler)
    : options_(std::move(options)), handler_(handler), tls_active_(options_.tls_active) {
  CHECK(handler_ != nullptr);
  CHECK(options_.recipients_per_message > 0);
  CHECK(options_.errors_per_session > 0);
  CHECK(options_.auth_failures_per_session > 0);
}

void Session::Start(absl::Time now) {
  started_ = now;
  last_input_ = now;
  command_clock_ = now;
  absl::StrAppend(&output_, "220 ", options_.hostname, " ESMTP chute\r\n");
  ++replies_;
}

Session::Blocked Session::blocked() const {
  switch (phase_) {
    case Phase::kAwaiting:
      return Blocked::kAwaitingAnswer;
    case Phase::kTlsHandshake:
      return Blocked::kTlsHandshake;
    case Phase::kClosed:
      return Blocked::kClosed;
    default:
      return output_.size() >= kOutputBytesMax ? Blocked::kOutputFull : Blocked::kNo;
  }
}

size_t Session::Feed(absl::string_view input, absl::Time now) {
  last_input_ = now;
  feed_time_ = now;
  size_t pos = 0;
  while (pos < input.size()) {
    absl::string_view rest = input.substr(pos);
    if (phase_ == Phase::kData || phase_ == Phase::kBdatChunk) {
      size_t before = pos;
      pos += phase_ == Phase::kData ? ConsumeDataBytes(rest) : ConsumeBdatBytes(rest);
      data_window_bytes_ += pos - before;
      continue;
    }
    switch (phase_) {
      case Phase::kCommand:
      case Phase::kSasl:
        if (output_.size() >= kOutputBytesMax) {
          return pos;
        }
        pos += ConsumeCommandBytes(rest);
        break;
      case Phase::kData:
        pos += ConsumeDataBytes(rest);
        break;
      case Phase::kBdatChunk:
        pos += ConsumeBdatBytes(rest);
        break;
      case Phase::kAwaiting:
        return pos;
      case Phase::kTlsHandshake:  // plaintext after STARTTLS is never acted on
      case Phase::kClosed:
        return input.size();
    }
  }
  return pos;
}

size_t Session::LineLimit(absl::string_view line_start) const {
  if (phase_ == Phase::kSasl ||
      (line_start.size() >= 5 && absl::EqualsIgnoreCase(line_start.substr(0, 5), "AUTH "))) {
    return kAuthLineBytesMax;
  }
  return kCommandLineBytesMax;
}

size_t Session::ConsumeCommandBytes(absl::string_view input) {
  const void* newline = std::memchr(input.data(), '\n', input.size());
  size_t take = newline == nullptr
                    ? input.size()
                    : static_cast<size_t>(static_cast<const char*>(newline) - input.data()) + 1;
  absl::string_view piece = input.substr(0, take);
  if (discarding_line_) {
    if (newline != nullptr) {
      discarding_line_ = false;
      ++commands_;
      command_clock_ = feed_time_;
      SendError(kReplyLineTooLong);
    }
    return take;
  }
  // The common case, a whole line inside one input, is parsed in place without a copy.
  if (line_.empty() && newline != nullptr && piece.size() <= LineLimit(piece)) {
    OnLine(piece);
    return take;
  }
  absl::string_view start = line_.empty() ? piece : absl::string_view(line_);
  if (line_.size() + piece.size() > LineLimit(start)) {
    line_.clear();
    if (newline != nullptr) {
      ++commands_;
      command_clock_ = feed_time_;
      SendError(kReplyLineTooLong);
    } else {
      discarding_line_ = true;
    }
    return take;
  }
  line_.append(piece.data(), piece.size());
  if (newline != nullptr) {
    OnLine(line_);
    line_.clear();
  }
  return take;
}

void Session::OnLine(absl::string_view line) {
  ++commands_;
  command_clock_ = feed_time_;  // a whole line came: the next one has its own deadline
  DCHECK(!line.empty() && line.back() == '\n');
  line.remove_suffix(1);
  bool bare = line.empty() || line.back() != '\r';
  if (!bare) {
    line.remove_suffix(1);
    bare = FindLineSpecial(line.data(), line.size()) != line.size();
  }
  if (bare) {
    if (phase_ == Phase::kSasl) {
      phase_ = Phase::kCommand;
    }
    SendError(kReplyBareLineEnding);
    return;
  }
  if (phase_ == Phase::kSasl) {
    OnSaslLine(line);
  } else {
    Dispatch(line);
  }
}

void Session::Dispatch(absl::string_view line) {
  size_t space = line.find(' ');
  absl::string_view word = line.substr(0, space);
  absl::string_view args =
      space == absl::string_view::npos ? absl::string_view() : line.substr(space + 1);
  switch (LookupVerb(word)) {
    case Verb::kHelo:
      return DoHelo(args, false);
    case Verb::kEhlo:
      return DoHelo(args, true);
    case Verb::kMail:
      return DoMail(args);
    case Verb::kRcpt:
      return DoRcpt(args);
    case Verb::kData:
      return DoData(args);
    case Verb::kBdat:
      return DoBdat(args);
    case Verb::kAuth:
      return DoAuth(args);
    case Verb::kStartTls:
      return DoStartTls(args);
    case Verb::kRset:
      if (!args.empty()) {
        return SendError(kReplySyntax);
      }
      ResetTransaction(true);
      return Send(kReplyResetOk);
    case Verb::kNoop:
      return Send(kReplyOk);
    case Verb::kQuit:
      Send(kReplyBye);
      return Close();
    case Verb::kVrfy:
      return args.empty() ? SendError(kReplySyntax) : Send(kReplyVrfy);
    case Verb::kExpn:
      return SendError(kReplyNotImplemented);
    case Verb::kHelp:
      return Send(kReplyHelp);
    case Verb::kHttp:
      return SendAndClose(kReplyHttpRefused);
    case Verb::kUnknown:
      return SendError(kReplyCommandUnrecognized);
  }
}

void Session::DoHelo(absl::string_view args, bool extended) {
  args = absl::StripAsciiWhitespace(args);
  if (args.empty()) {
    return SendError(kReplyHeloSyntax);
  }
  // EHLO or HELO in the middle of a session resets it like RSET (RFC 5321 §4.1.4).
  ResetTransaction(true);
  greeted_ = true;
  helo_.assign(args.data(), args.size());
  if (extended) {
    return SendEhlo();
  }
  absl::StrAppend(&output_, "250 ", options_.hostname, "\r\n");
  ++replies_;
}

void Session::SendEhlo() {
  std::string size_line = absl::StrCat("SIZE ", options_.message_size_bytes);
  absl::string_view lines[11];
  size_t count = 0;
  lines[count++] = options_.hostname;
  lines[count++] = size_line;
  lines[count++] = "PIPELINING";
  lines[count++] = "ENHANCEDSTATUSCODES";
  lines[count++] = "8BITMIME";
  lines[count++] = "SMTPUTF8";
  lines[count++] = "CHUNKING";
  lines[count++] = "DSN";
  if (options_.starttls_offered && !tls_active_) {
    lines[count++] = "STARTTLS";
  }
  if (tls_active_ && !authenticated_) {
    lines[count++] = "AUTH PLAIN LOGIN XOAUTH2";
  }
  for (size_t i = 0; i < count; ++i) {
    absl::StrAppend(&output_, i + 1 < count ? "250-" : "250 ", lines[i], "\r\n");
  }
  ++replies_;
}

std::optional<Reply> Session::CheckMayTransact() const {
  if (options_.tls_required && !tls_active_) {
    return kReplyStartTlsFirst;
  }
  if (!greeted_) {
    return kReplyHeloFirst;
  }
  if (!authenticated_) {
    return kReplyNotAuthenticated;
  }
  return std::nullopt;
}

void Session::DoMail(absl::string_view args) {
  if (std::optional<Reply> refusal = CheckMayTransact()) {
    return SendError(*refusal);
  }
  if (mail_accepted_) {
    return SendError(kReplyNestedMail);
  }
  MailArgs mail;
  if (std::optional<Reply> error = ParseMailArgs(args, &mail)) {
    return SendError(*error);
  }
  if (mail.size.has_value() && *mail.size > options_.message_size_bytes) {
    return Send(kReplyMessageTooBig);
  }
  smtputf8_ = mail.smtputf8;
  Decide(Pending::kMail, handler_->OnMail(mail));
}

void Session::DoRcpt(absl::string_view args) {
  if (std::optional<Reply> refusal = CheckMayTransact()) {
    return SendError(*refusal);
  }
  if (!mail_accepted_) {
    return SendError(kReplyNeedMail);
  }
  if (body_started_) {
    return SendError(kReplyBadSequence);  // RCPT between BDAT chunks
  }
  RcptArgs rcpt;
  if (std::optional<Reply> error = ParseRcptArgs(args, smtputf8_, &rcpt)) {
    return SendError(*error);
  }
  if (recipients_ >= options_.recipients_per_message) {
    return Send(kReplyTooManyRecipients);
  }
  Decide(Pending::kRcpt, handler_->OnRcpt(rcpt));
}

void Session::DoData(absl::string_view args) {
  if (!args.empty()) {
    return SendError(kReplySyntax);
  }
  if (std::optional<Reply> refusal = CheckMayTransact()) {
    return SendError(*refusal);
  }
  if (!mail_accepted_) {
    return SendError(kReplyNeedMail);
  }
  if (used_bdat_) {
    return SendError(kReplyDataAfterBdat);
  }
  if (recipients_ == 0) {
    return SendError(kReplyNoValidRecipients);
  }
  Send(kReplyStartData);
  phase_ = Phase::kData;
  scanner_.Reset(BodyScanner::Mode::kData, options_.normalize_bare_lf);
  body_started_ = true;
  data_window_start_ = feed_time_;
  data_window_bytes_ = 0;
  body_bytes_ = 0;
  body_oversize_ = false;
  handler_->OnBodyBegin();
}

void Session::DoBdat(absl::string_view args) {
  BdatArgs bdat;
  if (std::optional<Reply> error = ParseBdatArgs(args, &bdat)) {
    return SendError(*error);  // the chunk's length is unknown: its bytes will read as commands
  }
  // From here on the chunk is always read, whatever the reply: its octets are never commands.
  bdat_remaining_bytes_ = bdat.size_bytes;
  bdat_chunk_bytes_ = bdat.size_bytes;
  bdat_last_ = bdat.last;
  bdat_refusal_ = CheckMayTransact();
  if (!bdat_refusal_.has_value() && !mail_accepted_) {
    bdat_refusal_ = kReplyNeedMail;
  } else if (!bdat_refusal_.has_value() && recipients_ == 0) {
    bdat_refusal_ = kReplyNeedRcpt;
  }
  if (!bdat_refusal_.has_value()) {
    if (!body_started_) {
      used_bdat_ = true;
      body_started_ = true;
      data_window_start_ = feed_time_;
      data_window_bytes_ = 0;
      body_bytes_ = 0;
      body_oversize_ = false;
      scanner_.Reset(BodyScanner::Mode::kChunk);
      handler_->OnBodyBegin();
    }
    if (bdat.size_bytes > options_.message_size_bytes - body_bytes_) {
      body_oversize_ = true;  // known now; the chunk is still read to its end
    }
  }
  phase_ = Phase::kBdatChunk;
  if (bdat_remaining_bytes_ == 0) {
    FinishBdatChunk();
  }
}

size_t Session::ConsumeDataBytes(absl::string_view input) {
  size_t consumed = scanner_.Scan(input, [this](absl::string_view slice) { BodySlice(slice); });
  if (scanner_.done()) {
    FinishBody();
  }
  return consumed;
}

size_t Session::ConsumeBdatBytes(absl::string_view input) {
  size_t take = static_cast<size_t>(std::min<uint64_t>(input.size(), bdat_remaining_bytes_));
  if (!bdat_refusal_.has_value()) {
    scanner_.Scan(input.substr(0, take), [this](absl::string_view slice) { BodySlice(slice); });
  }
  bdat_remaining_bytes_ -= take;
  if (bdat_remaining_bytes_ == 0) {
    FinishBdatChunk();
  }
  return take;
}

void Session::BodySlice(absl::string_view slice) {
  if (body_oversize_) {
    return;
  }
  if (slice.size() > options_.message_size_bytes - body_bytes_) {
    body_oversize_ = true;  // read on to the end, keep nothing more
    return;
  }
  body_bytes_ += slice.size();
  handler_->OnBodySlice(slice);
}

void Session::FinishBdatChunk() {
  phase_ = Phase::kCommand;
  if (bdat_refusal_.has_value()) {
    Reply refusal = *bdat_refusal_;
    bdat_refusal_.reset();
    return SendError(refusal);
  }
  if (bdat_last_) {
    scanner_.Finish();
    return FinishBody();
  }
  if (FailBodyIfBad()) {
    return;  // RFC 3030 §2: a failed chunk fails the transaction; later chunks get 503
  }
  char text[64];
  absl::SNPrintF(text, sizeof(text), "2.0.0 %d octets received", bdat_chunk_bytes_);
  Send(Reply{250, text});
}

bool Session::FailBodyIfBad() {
  BodyScanner::Fault fault = scanner_.fault();
  bool oversize = body_oversize_;
  if (fault == BodyScanner::Fault::kNone && !oversize) {
    return false;
  }
  phase_ = Phase::kCommand;
  ResetTransaction(true);
  if (fault == BodyScanner::Fault::kBareLineEnding) {
    SendError(kReplyBareLineEnding);
  } else if (oversize) {
    Send(kReplyMessageTooBig);
  } else {
    Send(kReplyTextLineTooLong);
  }
  MaybeFinishDrain();
  return true;
}

void Session::FinishBody() {
  phase_ = Phase::kCommand;
  if (FailBodyIfBad()) {
    return;
  }
  Decide(Pending::kBodyEnd, handler_->OnBodyEnd());
}

void Session::DoAuth(absl::string_view args) {
  if (authenticated_) {
    return SendError(kReplyAlreadyAuthenticated);
  }
  if (!tls_active_) {
    return SendError(options_.starttls_offered ? kReplyStartTlsFirst : kReplyAuthNotOffered);
  }
  if (!greeted_) {
    return SendError(kReplyHeloFirst);
  }
  if (mail_accepted_) {
    return SendError(kReplyAuthInTransaction);
  }
  size_t space = args.find(' ');
  std::optional<Mechanism> mechanism = ParseMechanism(args.substr(0, space));
  if (!mechanism.has_value()) {
    return SendError(args.empty() ? kReplySyntax : kReplyUnknownMechanism);
  }
  sasl_mechanism_ = *mechanism;
  sasl_step_ = SaslStep::kInitial;
  sasl_username_.clear();
  if (space != absl::string_view::npos) {
    return OnSaslResponse(args.substr(space + 1));  // the initial response (RFC 4954 §4)
  }
  Send(sasl_mechanism_ == Mechanism::kLogin ? kReplyAuthUsername : kReplyAuthContinue);
  phase_ = Phase::kSasl;
}

void Session::OnSaslLine(absl::string_view line) {
  phase_ = Phase::kCommand;
  if (line == "*") {
    return Send(kReplyAuthCancelled);  // RFC 4954 §4: the client gave up
  }
  OnSaslResponse(line);
}

void Session::OnSaslResponse(absl::string_view response) {
  std::string decoded;
  bool base64_ok = DecodeBase64(response, &decoded);
  if (sasl_mechanism_ == Mechanism::kXoauth2) {
    SaslXoauth2 xoauth2;
    if (!base64_ok || !ParseXoauth2(decoded, &xoauth2)) {
      return SendError(kReplyXoauth2Malformed);
    }
    return SubmitAuth(
        AuthRequest{Mechanism::kXoauth2, "", std::move(xoauth2.user), std::move(xoauth2.token)});
  }
  if (!base64_ok) {
    return SendError(kReplyAuthBadData);
  }
  if (sasl_mechanism_ == Mechanism::kPlain) {
    SaslPlain plain;
    if (!ParsePlain(decoded, &plain)) {
      return SendError(kReplyAuthBadData);
    }
    if (HasControl(plain.authzid) || HasControl(plain.authcid)) {
      return SendError(kReplyControlInParameter);
    }
    return SubmitAuth(AuthRequest{Mechanism::kPlain, std::move(plain.authzid),
                                  std::move(plain.authcid), std::move(plain.password)});
  }
  // LOGIN: the username, then the password, each in its own 334 round.
  if (sasl_step_ == SaslStep::kInitial) {
    if (decoded.empty() || HasControl(decoded)) {
      return SendError(decoded.empty() ? kReplyAuthBadData : kReplyControlInParameter);
    }
    sasl_username_ = std::move(decoded);
    sasl_step_ = SaslStep::kLoginPassword;
    Send(kReplyAuthPassword);
    phase_ = Phase::kSasl;
    return;
  }
  if (decoded.empty() || decoded.find('\0') != std::string::npos) {
    return SendError(decoded.empty() ? kReplyAuthBadData : kReplyControlInParameter);
  }
  SubmitAuth(AuthRequest{Mechanism::kLogin, "", std::move(sasl_username_), std::move(decoded)});
}

void Session::SubmitAuth(AuthRequest request) { Decide(Pending::kAuth, handler_->OnAuth(request)); }

void Session::DoStartTls(absl::string_view args) {
  if (!args.empty()) {
    return SendError(kReplySyntax);
  }
  if (tls_active_) {
    return SendError(kReplyTlsAlreadyActive);
  }
  if (!options_.starttls_offered) {
    return SendError(kReplyTlsNotOffered);
  }
  Send(kReplyReadyForTls);
  ResetTransaction(true);
  greeted_ = false;
  line_.clear();
  phase_ = Phase::kTlsHandshake;
  handler_->OnStartTls();
}

void Session::TlsStarted(absl::Time now) {
  CHECK(phase_ == Phase::kTlsHandshake);
  tls_active_ = true;
  greeted_ = false;
  phase_ = Phase::kCommand;
  last_input_ = now;
  command_clock_ = now;
}

void Session::Decide(Pending pending, std::optional<Reply> reply) {
  if (phase_ == Phase::kClosed) {
    return;  // the handler closed us meanwhile (it may not, but nothing is lost if it does)
  }
  if (!reply.has_value()) {
    phase_ = Phase::kAwaiting;
    pending_ = pending;
    return;
  }
  Resolve(pending, *reply);
}

void Session::Answer(const Reply& reply) {
  CHECK(phase_ == Phase::kAwaiting);
  CHECK(pending_ != Pending::kNone);
  Pending pending = pending_;
  pending_ = Pending::kNone;
  phase_ = Phase::kCommand;
  Resolve(pending, reply);
}

void Session::Resolve(Pending pending, const Reply& reply) {
  switch (pending) {
    case Pending::kMail:
      mail_accepted_ = reply.IsPositive();
      recipients_ = 0;
      smtputf8_ = smtputf8_ && mail_accepted_;
      // A refusal counts toward errors_per_session, like a syntax error (Postfix's hard
      // error limit): 20,000 refused recipients must not get 20,000 replies.
      reply.IsPositive() ? Send(reply) : SendError(reply);
      break;
    case Pending::kRcpt:
      if (reply.IsPositive()) {
        ++recipients_;
      }
      reply.IsPositive() ? Send(reply) : SendError(reply);
      break;
    case Pending::kAuth:
      Send(reply);
      if (reply.IsPositive()) {
        authenticated_ = true;
      } else if (reply.code >= 500 && ++auth_failures_ >= options_.auth_failures_per_session) {
        SendAndClose(kReplyTooManyErrors);
      }
      break;
    case Pending::kBodyEnd:
      ResetTransaction(false);  // the handler owns the outcome, whatever it answered
      Send(reply);
      break;
    case Pending::kNone:
      CHECK_MSG(false, "Resolve without a pending decision");
  }
  MaybeFinishDrain();
}

void Session::ResetTransaction(bool notify) {
  bool had_mail = mail_accepted_;
  mail_accepted_ = false;
  smtputf8_ = false;
  body_started_ = false;
  used_bdat_ = false;
  body_oversize_ = false;
  recipients_ = 0;
  if (notify && had_mail) {
    handler_->OnTransactionAbort();
  }
}

absl::Time Session::Deadline() const {
  absl::Time session_end = started_ + options_.session_timeout;
  switch (phase_) {
    case Phase::kClosed:
      return absl::InfiniteFuture();
    case Phase::kAwaiting:
      // The wait is ours, not the client's. The end of a message waits for the spool's
      // commit, which always answers (250 or 451) within moments: cutting it short would
      // lose the 250 of a stored message and make the client send it again.
      return pending_ == Pending::kBodyEnd ? absl::InfiniteFuture() : session_end;
    case Phase::kData:
    case Phase::kBdatChunk:
      return std::min(session_end, last_input_ + options_.data_timeout);
    default:
      if (commands_ == 0) {
        return std::min(session_end, started_ + std::min(options_.first_command_timeout,
                                                         options_.command_timeout));
      }
      // A deadline per command line (Postfix's smtpd_per_record_deadline): bytes of a line
      // that never ends do not push it back.
      return std::min(session_end, command_clock_ + options_.command_timeout);
  }
}

void Session::OnDeadline(absl::Time now) {
  if (phase_ == Phase::kClosed) {
    return;
  }
  bool in_body = phase_ == Phase::kData || phase_ == Phase::kBdatChunk;
  if (in_body && options_.data_rate_min_bytes_per_s > 0 &&
      now - data_window_start_ >= kDataRateWindow) {
    // A minimum DATA rate over a window: a byte every few minutes cannot hold a connection
    // for data_timeout_s after data_timeout_s.
    if (data_window_bytes_ < options_.data_rate_min_bytes_per_s *
                                 static_cast<uint64_t>(absl::ToInt64Seconds(kDataRateWindow))) {
      return SendAndClose(kReplyTimeout);
    }
    data_window_start_ = now;
    data_window_bytes_ = 0;
  }
  if (now < Deadline()) {
    return;
  }
  SendAndClose(kReplyTimeout);
}

void Session::PeerGone() {
  if (phase_ == Phase::kData || phase_ == Phase::kBdatChunk || phase_ == Phase::kSasl ||
      phase_ == Phase::kTlsHandshake) {
    return Close();
  }
  Shutdown();
}

void Session::Shutdown() {
  draining_ = true;
  if (phase_ == Phase::kTlsHandshake) {
    return Close();  // nothing can be said in the middle of a handshake
  }
  MaybeFinishDrain();
}

void Session::MaybeFinishDrain() {
  bool idle = phase_ == Phase::kCommand || phase_ == Phase::kSasl;
  if (draining_ && idle && !body_started_) {
    SendAndClose(kReplyShuttingDown);
  }
}

void Session::Send(const Reply& reply) {
  char code[4] = {static_cast<char>('0' + reply.code / 100 % 10),
                  static_cast<char>('0' + reply.code / 10 % 10),
                  static_cast<char>('0' + reply.code % 10), ' '};
  absl::StrAppend(&output_, absl::string_view(code, 4), reply.text, "\r\n");
  if (reply.code < 300 || reply.code >= 400) {
    ++replies_;  // 334 and 354 are intermediate: the command's final reply comes later
  }
  if (reply.code >= 400) {
    handler_->OnRefusal(reply);
  }
  if (reply.ClosesSession()) {
    Close();
  }
}

void Session::SendError(const Reply& reply) {
  Send(reply);
  if (phase_ != Phase::kClosed && ++errors_ >= options_.errors_per_session) {
    SendAndClose(kReplyTooManyErrors);
  }
}

void Session::SendAndClose(const Reply& reply) {
  if (phase_ == Phase::kClosed) {
    return;
  }
  Send(reply);
  Close();
}

void Session::Close() {
  if (phase_ == Phase::kClosed) {
    return;
  }
  phase_ = Phase::kClosed;
  ResetTransaction(true);
}

}  // namespace chute::smtp
