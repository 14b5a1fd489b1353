// submission.cc: the HVE session handler: AUTH, MAIL/RCPT policy, body slices, staging, 250.

#include "server/submission.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/histogram.h"
#include "base/log.h"
#include "directory/domain_name.h"
#include "policy/hve_policy.h"
#include "server/server.h"
#include "smtp/parser.h"

namespace chute::server {

Submission::Submission(const SubmissionServices* services, SessionControl* control)
    : services_(*services), control_(control) {
  CHECK(services->sink != nullptr && services->buffers != nullptr);
  CHECK(services->tenant_cap != nullptr && services->auth != nullptr);
  CHECK(services->counters != nullptr && services->replies != nullptr);
  CHECK(services->now != nullptr);
  CHECK(control != nullptr);
}

Submission::~Submission() = default;

void Submission::Begin(uint64_t cookie, const IpBytes& peer, std::string peer_text,
                       const ListenerConfig* listener, std::shared_ptr<const Config> config,
                       std::shared_ptr<const directory::Snapshot> snapshot) {
  cookie_ = cookie;
  peer_ = peer;
  peer_text_ = std::move(peer_text);
  listener_ = listener;
  config_ = std::move(config);
  snapshot_ = std::move(snapshot);
}

void Submission::End() {
  CHECK(!busy());
  ReleaseMessage();
  LeaveTenant();
  session_ = nullptr;
  snapshot_.reset();
  config_.reset();
  listener_ = nullptr;
  account_ = nullptr;
  auth_candidate_ = nullptr;
  auth_user_.clear();
  auth_reason_ = "";
  auth_detail_.clear();
  auth_attempting_ = false;
  delayed_answer_.reset();
  delayed_due_ = absl::InfiniteFuture();
  feeding_buffer_ = -1;
}

void Submission::ActAs(const directory::Account* account) {
  CHECK(account != nullptr);
  account_ = account;
}

void Submission::LeaveTenant() {
  services_.tenant_cap->Leave(tenant_place_.lease);
  tenant_place_.lease = 0;
  tenant_place_.local.Reset();
}

void Submission::Answer(const smtp::Reply& reply) {
  if (session_ != nullptr && session_->blocked() == smtp::Session::Blocked::kAwaitingAnswer) {
    session_->Answer(reply);
  }
}

// --- AUTH ---------------------------------------------------------------------------------

std::optional<smtp::Reply> Submission::OnAuth(const smtp::AuthRequest& request) {
  auth_attempting_ = true;
  auth_mechanism_ = request.mechanism;
  auth_user_ = request.username;  // for the log line of a refusal too
  auth_reason_ = "";
  auth_detail_.clear();
  auth::AuthThrottle::Verdict verdict =
      services_.auth->CheckThrottle(peer_, request.username, now(), &auth_reason_);
  if (verdict == auth::AuthThrottle::Verdict::kBlocked) {
    services_.counters->auth_failures.Add(1);
    return smtp::kReplyAuthThrottled;  // no argon2 spent on a guesser
  }
  if (request.mechanism == smtp::Mechanism::kXoauth2) {
    std::optional<smtp::Reply> reply = OnXoauth2(request);
    return reply.has_value() && reply->code >= 500 ? AuthFailed(*reply) : reply;
  }
  // Every password is verified, whatever the account and its policy: a disabled account is
  // verified as an unknown one (against a dummy hash) and answered as a wrong password, and
  // the basic-auth policy (5.7.139) is told only to a client that gave the right password. So
  // neither the reply nor its timing says whether an account exists, is disabled or has basic
  // auth off (docs/operations.md, Authentication policy).
  const directory::Account* candidate = snapshot_->FindAccount(request.username);
  if (candidate != nullptr && !candidate->enabled) {
    auth_reason_ = "account disabled";
    candidate = nullptr;
  }
  if (!request.authzid.empty() && request.authzid != request.username) {
    candidate = nullptr;  // acting for someone else is not a thing HVE accounts do
  }
  auth::VerifyRequest verify;
  verify.account_id = candidate != nullptr ? candidate->id : 0;
  verify.password_hash = candidate != nullptr ? candidate->password_hash : std::string();
  verify.password = request.secret;
  verify.cookie = cookie_;
  verify.low_priority = verdict == auth::AuthThrottle::Verdict::kSuspect;
  // An unknown user is verified too (against a dummy hash): same answer, same time.
  if (!services_.auth->VerifyPassword(std::move(verify))) {
    return smtp::kReplyAuthUnavailable;  // the verifier queue is at its bound
  }
  auth_inflight_ = true;
  auth_candidate_ = candidate;
  return std::nullopt;  // answered by OnVerified
}

std::optional<smtp::Reply> Submission::AdmitAuthenticated(const directory::Account* candidate) {
  // The credentials are good; the tenant's cap decides (454 leaves the session unauthenticated).
  services_.auth->RecordSuccess(peer_, auth_user_, now());
  switch (services_.tenant_cap->Admit(*candidate, cookie_, &tenant_place_)) {
    case TenantCap::Verdict::kOverCap:
      return smtp::kReplyTenantCap;
    case TenantCap::Verdict::kPending:
      tenant_waiting_ = Waiting::kAuth;
      tenant_candidate_ = candidate;
      return std::nullopt;  // OnTenantAdmitted
    case TenantCap::Verdict::kAdmitted:
      break;
  }
  return Authenticated(candidate);
}

void Submission::OnTenantAdmitted(bool admitted, uint64_t lease) {
  CHECK(tenant_waiting_ != Waiting::kNone);
  Waiting waiting = tenant_waiting_;
  tenant_waiting_ = Waiting::kNone;
  if (admitted) {
    tenant_place_.lease = lease;
  } else {
    tenant_place_.local.Reset();
  }
  const directory::Account* candidate = tenant_candidate_;
  tenant_candidate_ = nullptr;
  if (session_ == nullptr || session_->blocked() != smtp::Session::Blocked::kAwaitingAnswer) {
    return;  // the client left meanwhile; End gives the place back
  }
  smtp::Reply reply;
  if (waiting == Waiting::kAuth) {
    reply = admitted ? Authenticated(candidate) : smtp::kReplyTenantCap;
  } else {
    reply = admitted ? AcceptMail(tenant_mail_) : smtp::kReplyTenantCapAtMail;
    if (!reply.IsPositive()) {
      LogMailRefused(tenant_mail_.address, reply);
    }
  }
  session_->Answer(reply);
}

smtp::Reply Submission::Authenticated(const directory::Account* candidate) {
  account_ = candidate;
  services_.counters->auth_successes.Add(1);
  auth_attempting_ = false;
  LogEvent(LogLevel::kInfo, "auth.ok",
           {{"client", peer_text_},
            {"account", account_->primary_address},
            {"tenant", account_->tenant_name},
            {"mechanism", smtp::MechanismName(auth_mechanism_)}});
  return smtp::kReplyAuthOk;
}

std::optional<smtp::Reply> Submission::OnXoauth2(const smtp::AuthRequest& request) {
  // user= names the account; its tenant must trust an issuer and have its keys loaded; the
  // token must be good, and then it must be the account's (policy::CheckTokenAccount).
  const directory::Account* candidate = snapshot_->FindAccount(request.username);
  if (candidate != nullptr && !candidate->enabled) {
    auth_reason_ = "account disabled";  // answered as an unknown account: 535 5.7.3
    candidate = nullptr;
  }
  const directory::Tenant* tenant =
      candidate != nullptr ? snapshot_->FindTenant(candidate->tenant_id) : nullptr;
  if (tenant == nullptr || tenant->oauth_issuer.empty()) {
    if (tenant != nullptr) {
      auth_reason_ = "the tenant trusts no OAuth issuer";
    }
    services_.counters->auth_failures.Add(1);
    return smtp::kReplyAuthFailed;
  }
  auth::TokenPolicy policy{tenant->oauth_issuer, tenant->oauth_audience, tenant->oauth_tenant_id};
  auth::TokenIdentity identity;
  std::string why;
  std::optional<smtp::Reply> refusal;
  switch (services_.auth->VerifyToken(tenant->id, request.secret, policy, now(), &identity, &why)) {
    case auth::TokenVerdict::kOk:
      refusal = policy::CheckTokenAccount(*tenant, *candidate, identity, &why);
      if (refusal.has_value()) {
        auth_reason_ = "the token is not the account's";
      }
      break;
    case auth::TokenVerdict::kExpired:
      refusal = smtp::kReplyTokenExpired;
      break;
    case auth::TokenVerdict::kNoPermission:
      refusal = smtp::kReplyTokenNoPermission;
      break;
    case auth::TokenVerdict::kInvalid:
      refusal = smtp::kReplyAuthFailed;
      break;
  }
  if (!refusal.has_value()) {
    return AdmitAuthenticated(candidate);
  }
  services_.counters->auth_failures.Add(1);
  if (auth_reason_.empty()) {
    auth_reason_ = "token refused";
  }
  auth_detail_ = std::move(why);  // OnRefusal logs it
  return *refusal;
}

void Submission::OnVerified(bool ok) {
  auth_inflight_ = false;
  const directory::Account* candidate = auth_candidate_;
  auth_candidate_ = nullptr;
  std::optional<smtp::Reply> reply;
  const directory::Tenant* tenant =
      candidate != nullptr ? snapshot_->FindTenant(candidate->tenant_id) : nullptr;
  if (ok && tenant != nullptr && !directory::BasicAuthAllowed(*candidate, *tenant)) {
    // The right password, but the account's policy (or its tenant's) refuses basic auth:
    // counted as a failure, like every 535.
    services_.counters->auth_failures.Add(1);
    auth_reason_ = "basic authentication disabled for the account";
    reply = AuthFailed(smtp::kReplyBasicAuthDisabled);
  } else if (ok && candidate != nullptr) {
    reply = AdmitAuthenticated(candidate);
  } else {
    services_.counters->auth_failures.Add(1);
    reply = AuthFailed(smtp::kReplyAuthFailed);
  }
  if (reply.has_value()) {
    Answer(*reply);
  }
}

std::optional<smtp::Reply> Submission::AuthFailed(const smtp::Reply& reply) {
  absl::Duration delay = services_.auth->RecordFailure(peer_, auth_user_, now());
  if (delay <= absl::ZeroDuration()) {
    return reply;
  }
  delayed_answer_ = reply;
  delayed_due_ = now() + delay;
  return std::nullopt;  // the shard's tick answers it (AnswerDelayed), to the second
}

bool Submission::AnswerDelayed(bool stopping) {
  if (!delayed_answer_.has_value() || (now() < delayed_due_ && !stopping)) {
    return false;
  }
  smtp::Reply reply = *delayed_answer_;
  delayed_answer_.reset();
  delayed_due_ = absl::InfiniteFuture();
  if (session_ == nullptr || session_->blocked() != smtp::Session::Blocked::kAwaitingAnswer) {
    return false;
  }
  session_->Answer(reply);
  return true;
}

void Submission::OnRefusal(const smtp::Reply& reply) {
  if (control_->PeerGone()) {
    return;  // the 421 that closes a session whose client left: nobody was refused
  }
  services_.replies->Count(reply.code, reply.text);
  if (auth_attempting_) {
    auth_attempting_ = false;
    // The user name as the client gave it (bounded by the session's line limit); never the
    // secret. A refused token's reason ends with what was wrong with it.
    absl::string_view reason =
        auth_reason_.empty() ? absl::string_view("wrong credentials") : auth_reason_;
    LogEvent(LogLevel::kWarning, "auth.failed",
             {{"client", peer_text_},
              {"user", auth_user_},
              {"mechanism", smtp::MechanismName(auth_mechanism_)},
              {"code", reply.code},
              {"reply", reply.text},
              {"reason", auth_detail_.empty() ? std::string(reason)
                                              : absl::StrCat(reason, ": ", auth_detail_)}});
  }
}

void Submission::OnStartTls() { control_->StartTls(); }

// --- MAIL and RCPT ------------------------------------------------------------------------

std::optional<smtp::Reply> Submission::OnMail(const smtp::MailArgs& mail) {
  std::optional<smtp::Reply> reply = DecideMail(mail);
  if (reply.has_value() && !reply->IsPositive()) {
    LogMailRefused(mail.address, *reply);
  }
  return reply;
}

void Submission::LogMailRefused(absl::string_view sender, const smtp::Reply& reply) {
  LogEvent(LogLevel::kInfo, "mail.refused",
           {{"client", peer_text_},
            {"account", account_ != nullptr ? account_->primary_address : ""},
            {"sender", sender},
            {"code", reply.code},
            {"reply", reply.text}});
}

std::optional<smtp::Reply> Submission::DecideMail(const smtp::MailArgs& mail) {
  if (account_ == nullptr) {
    return smtp::kReplyNotAuthenticated;
  }
  if (std::optional<smtp::Reply> refusal = policy::CheckSender(*account_, mail.address)) {
    return refusal;
  }
  MailRequest request{std::string(mail.address), mail.size, mail.ret, std::string(mail.envid)};
  if (listener_->tls == TlsMode::kNone && !tenant_place_.held()) {
    // A trusted session's place, taken at its first MAIL.
    switch (services_.tenant_cap->Admit(*account_, cookie_, &tenant_place_)) {
      case TenantCap::Verdict::kOverCap:
        return smtp::kReplyTenantCapAtMail;
      case TenantCap::Verdict::kPending:
        tenant_waiting_ = Waiting::kMail;
        tenant_mail_ = std::move(request);
        return std::nullopt;  // OnTenantAdmitted
      case TenantCap::Verdict::kAdmitted:
        break;
    }
  }
  return AcceptMail(request);
}

smtp::Reply Submission::AcceptMail(const MailRequest& mail) {
  ReleaseMessage();
  // Memory: the bodies being received, all sessions together, stay under a bound; past it new
  // mail waits (a body already begun is read to its end and refused the same way).
  if (services_.buffers->BodyMemoryFull(config_->limits.receiving_bytes_max)) {
    services_.counters->body_memory_full.Add(1);
    return smtp::kReplyReceivingFull;
  }
  // Back-pressure: a full spool (bytes or messages waiting for delivery, and the room every
  // message in progress reserved) refuses new mail until delivery drains it. The room is
  // SIZE= when given, else the largest message allowed.
  uint64_t reserve = std::min<uint64_t>(
      mail.size.value_or(static_cast<uint64_t>(config_->limits.message_size_bytes)),
      static_cast<uint64_t>(config_->limits.message_size_bytes));
  if (!services_.sink->ReserveSpool(config_->spool, reserve, 1)) {
    services_.counters->spool_full.Add(1);
    return smtp::kReplyStorageFull;
  }
  message_.spool_reserved = reserve;
  message_.spool_reserved_message = true;
  message_.active = true;
  message_.receiving = true;
  services_.sink->NoteReceiving(+1);
  // Spelled as the recipients are (its domain as its A-label): the sender the spool, the
  // downstream's MAIL FROM, the trace and the logs see.
  message_.sender = directory::EnvelopeAddress(mail.address);
  message_.dsn_ret = static_cast<uint8_t>(mail.ret);
  message_.envid = mail.envid;
  return smtp::kReplySenderOk;
}

void Submission::LogRcptRefused(absl::string_view address, const smtp::Reply& reply,
                                absl::string_view why) {
  LogEvent(reply.code >= 500 ? LogLevel::kInfo : LogLevel::kWarning, "rcpt.refused",
           {{"client", peer_text_},
            {"account", account_->primary_address},
            {"sender", message_.sender},
            {"recipient", address},
            {"code", reply.code},
            {"reply", reply.text},
            {"why", why}});
}

std::optional<smtp::Reply> Submission::OnRcpt(const smtp::RcptArgs& rcpt) {
  absl::string_view address = rcpt.address;
  std::string deliver_to;
  if (std::optional<smtp::Reply> refusal =
          policy::CheckRecipient(*snapshot_, *account_, address, &deliver_to)) {
    LogRcptRefused(address, *refusal);
    return refusal;
  }
  std::vector<std::string>& recipients = message_.recipients;
  if (std::find(recipients.begin(), recipients.end(), deliver_to) != recipients.end()) {
    return smtp::kReplyRecipientOk;  // a repeated RCPT delivers once
  }
  int route = services_.router->FindAddress(deliver_to, account_->tenant_name);
  if (route == delivery::kNoRoute) {
    LogRcptRefused(address, smtp::kReplyNoRoute);
    return smtp::kReplyNoRoute;
  }
  rcpt_address_ = std::string(address);
  rcpt_deliver_to_ = std::move(deliver_to);
  rcpt_route_ = route;
  rcpt_notify_ = rcpt.notify;
  rcpt_orcpt_ = std::string(rcpt.orcpt);
  std::optional<delivery::RecipientVerdict> verdict =
      services_.recipients->VerifyRecipient(route, rcpt_deliver_to_, cookie_);
  if (!verdict.has_value()) {
    rcpt_inflight_ = true;
    return std::nullopt;  // the probe's answer: OnRecipientVerified
  }
  return DecideRecipient(*verdict);
}

void Submission::OnRecipientVerified(const delivery::RecipientVerdict& verdict) {
  CHECK(rcpt_inflight_);
  rcpt_inflight_ = false;
  if (session_ == nullptr || session_->blocked() != smtp::Session::Blocked::kAwaitingAnswer) {
    return;  // the client left meanwhile: its transaction is gone
  }
  smtp::Reply reply = DecideRecipient(verdict);
  session_->Answer(reply);
}

smtp::Reply Submission::DecideRecipient(const delivery::RecipientVerdict& verdict) {
  using Kind = delivery::RecipientVerdict::Kind;
  const delivery::Route& route = services_.router->route(static_cast<size_t>(rcpt_route_));
  if (verdict.kind == Kind::kUnknown) {
    smtp::Reply reply = smtp::kReplyNoSuchMailbox;
    if (route.settings.backend != DeliveryBackend::kMaildir) {
      // The target's own reason: "550 5.1.1 <ann@x>: Recipient address rejected: ...".
      absl::string_view text(verdict.reply);
      uint16_t code = 550;
      if (text.size() > 4 && text[0] == '5' && text[3] == ' ') {
        code =
            static_cast<uint16_t>((text[0] - '0') * 100 + (text[1] - '0') * 10 + (text[2] - '0'));
        text.remove_prefix(4);
      }
      bool enhanced = text.size() > 5 && text[0] == '5' && text[1] == '.';
      rcpt_reply_ = absl::StrCat(enhanced ? "" : "5.1.1 ", text.substr(0, kTargetReplyBytesMax));
      reply = smtp::Reply{code >= 550 && code <= 559 ? code : uint16_t{550}, rcpt_reply_};
    }
    LogRcptRefused(rcpt_address_, reply,
                   verdict.cached ? "unknown downstream (cached)" : "unknown downstream");
    return reply;
  }
  if (verdict.kind == Kind::kUnreachable &&
      route.settings.verify_unreachable == VerifyUnreachable::kDefer) {
    LogRcptRefused(rcpt_address_, smtp::kReplyRecipientUnverified, verdict.reply);
    return smtp::kReplyRecipientUnverified;
  }
  if (verdict.kind == Kind::kUnreachable) {
    LogEvent(LogLevel::kWarning, "rcpt.unverified",
             {{"client", peer_text_},
              {"account", account_->primary_address},
              {"recipient", rcpt_address_},
              {"route", route.name},
              {"reason", verdict.reply},
              {"result", "accepted (verify_unreachable = accept)"}});
  }
  message_.recipients.push_back(std::move(rcpt_deliver_to_));
  message_.routes.push_back(rcpt_route_);
  message_.notify.push_back(rcpt_notify_);
  message_.orcpt.push_back(std::move(rcpt_orcpt_));
  return smtp::kReplyRecipientOk;
}

// --- The body -----------------------------------------------------------------------------

void Submission::OnBodyBegin() {
  message_.headers.Reset();
  message_.pieces.clear();
  message_.body_dropped = false;
  message_.header_copy.clear();
  message_.rewrite_header = account_ != nullptr && !account_->reply_to.empty();
}

void Submission::OnBodySlice(absl::string_view slice) {
  size_t header_bytes = message_.headers.Feed(slice);
  if (message_.rewrite_header && header_bytes > 0) {
    message_.header_copy.append(slice.data(), header_bytes);
    slice.remove_prefix(header_bytes);
    if (slice.empty()) {
      return;
    }
  }
  if (!KeepBody(slice.size())) {
    return;
  }
  // Plaintext from TLS lives in the connection's own buffer, which is reused: it goes to the
  // arena like the overflow of a message with too many pinned receive buffers. Zero copy
  // while the shard's pinned buffers stay under their budget: past it, bodies are copied so
  // that receive buffers go straight back to the ring (no connection starves).
  uint16_t buffer = static_cast<uint16_t>(feeding_buffer_);
  bool zero_copy = feeding_buffer_ >= 0 && message_.pieces.size() < kBodyPiecesMax &&
                   services_.buffers->MayPin();
  bool pinned = zero_copy && !message_.pinned.empty() && message_.pinned.back() == buffer;
  if (!pinned && zero_copy && message_.pinned.size() < kPinnedBuffersPerMessageMax) {
    services_.buffers->Pin(buffer);
    message_.pinned.push_back(buffer);
    pinned = true;
  }
  if (pinned) {
    message_.pieces.push_back(BodyPiece{slice.data(), slice.size()});
    return;
  }
  AppendToArena(slice);
}

bool Submission::KeepBody(size_t bytes) {
  if (message_.body_dropped) {
    return false;
  }
  if (message_.body_held + bytes > message_.body_charged) {
    size_t want = message_.body_held + bytes - message_.body_charged;
    size_t step = (want + kBodyChargeStep - 1) / kBodyChargeStep * kBodyChargeStep;
    if (!services_.buffers->ChargeBody(step, config_->limits.receiving_bytes_max)) {
      DropBody();
      return false;
    }
    message_.body_charged += step;
  }
  message_.body_held += bytes;
  return true;
}

// DropBody: the message cannot be kept within receiving_bytes_max: what it holds goes now,
// the rest of its body is read and dropped, and its end of data is refused (452 4.3.1).
void Submission::DropBody() {
  for (uint16_t buffer : message_.pinned) {
    services_.buffers->Unpin(buffer);
  }
  message_.pinned.clear();
  message_.pieces.clear();
  message_.arena.clear();
  message_.header_copy.clear();
  services_.buffers->UnchargeBody(message_.body_charged);
  message_.body_charged = 0;
  message_.body_held = 0;
  message_.body_dropped = true;
}

void Submission::AppendToArena(absl::string_view slice) {
  // Too many buffers pinned already: copy into the arena, in blocks that never move.
  std::deque<std::string>& arena = message_.arena;
  while (!slice.empty()) {
    if (arena.empty() || arena.back().size() == kArenaBlockBytes) {
      arena.emplace_back();
      arena.back().reserve(kArenaBlockBytes);
    }
    std::string& block = arena.back();
    size_t take = std::min(slice.size(), kArenaBlockBytes - block.size());
    const char* at = block.data() + block.size();
    block.append(slice.data(), take);
    if (!message_.pieces.empty() &&
        message_.pieces.back().data + message_.pieces.back().length == at) {
      message_.pieces.back().length += take;
    } else {
      message_.pieces.push_back(BodyPiece{at, take});
    }
    slice.remove_prefix(take);
  }
}

void Submission::ReleaseMessage() {
  for (uint16_t buffer : message_.pinned) {
    services_.buffers->Unpin(buffer);
  }
  message_.pinned.clear();
  services_.buffers->UnchargeBody(message_.body_charged);
  message_.body_charged = 0;
  message_.body_held = 0;
  message_.body_dropped = false;
  if (message_.spool_reserved > 0 || message_.spool_reserved_message) {
    services_.sink->ReleaseSpool(message_.spool_reserved, message_.spool_reserved_message ? 1 : 0);
    message_.spool_reserved = 0;
    message_.spool_reserved_message = false;
  }
  message_.pieces.clear();
  message_.arena.clear();
  message_.recipients.clear();
  message_.routes.clear();
  message_.dsn_ret = 0;
  message_.envid.clear();
  message_.notify.clear();
  message_.orcpt.clear();
  message_.added_headers.clear();
  message_.header_copy.clear();
  message_.rewrite_header = false;
  message_.active = false;
  if (message_.receiving) {
    message_.receiving = false;
    services_.sink->NoteReceiving(-1);
  }
}

void Submission::OnTransactionAbort() {
  if (!committing_) {
    ReleaseMessage();
  }
}

std::optional<smtp::Reply> Submission::OnBodyEnd() {
  if (message_.body_dropped) {
    LogEvent(LogLevel::kWarning, "message.refused",
             {{"client", peer_text_},
              {"account", account_->primary_address},
              {"sender", message_.sender},
              {"code", smtp::kReplyReceivingFull.code},
              {"reply", "receiving_bytes_max reached while the body arrived"}});
    ReleaseMessage();
    services_.counters->body_memory_full.Add(1);
    services_.counters->messages_failed.Add(1);
    return smtp::kReplyReceivingFull;
  }
  // The spool room reserved at MAIL is checked again against what arrived (SIZE= is a
  // promise the client may break).
  if (message_.body_held > message_.spool_reserved) {
    uint64_t more = message_.body_held - message_.spool_reserved;
    if (!services_.sink->ReserveSpool(config_->spool, more, 0)) {
      ReleaseMessage();
      services_.counters->spool_full.Add(1);
      services_.counters->messages_failed.Add(1);
      return smtp::kReplyStorageFull;
    }
    message_.spool_reserved += more;
  }
  const smtp::HeaderScanner& scanned = message_.headers;
  if (std::optional<smtp::Reply> refusal = policy::CheckHeaderFrom(
          *account_, scanned.from_count(), smtp::FromAddresses(scanned.from_value()),
          scanned.from_overflow())) {
    LogEvent(LogLevel::kInfo, "message.refused",
             {{"client", peer_text_},
              {"account", account_->primary_address},
              {"sender", message_.sender},
              {"code", refusal->code},
              {"reply", refusal->text}});
    ReleaseMessage();
    services_.counters->messages_failed.Add(1);
    return refusal;
  }
  message_.id = services_.sink->NextQueueId();
  AddHeaders();
  return StageMessage();
}

void Submission::AddHeaders() {
  smtp::TraceInfo trace;
  trace.helo = session_->helo_name();
  trace.client_ip = peer_text_;
  trace.hostname = config_->server.hostname;
  trace.protocol = smtp::ReceivedProtocol(session_->smtputf8(), session_->tls_active(),
                                          listener_->tls != TlsMode::kNone);
  trace.id = message_.id;
  trace.recipient = message_.recipients.size() == 1 ? absl::string_view(message_.recipients[0])
                                                    : absl::string_view();
  trace.time = now();
  smtp::AppendAddedHeaders(trace, message_.headers, &message_.added_headers);
  if (message_.rewrite_header) {
    // Exactly one Reply-To: the account's (docs/architecture.md, Headers chute adds).
    absl::StrAppend(&message_.added_headers, "Reply-To: ", account_->reply_to, "\r\n");
    smtp::AppendWithoutField(message_.header_copy, "Reply-To", &message_.added_headers);
  }
}

std::optional<smtp::Reply> Submission::StageMessage() {
  spool::Envelope envelope;
  envelope.id = message_.id;
  envelope.received_unix_us = absl::ToUnixMicros(now());
  envelope.tenant_id = account_->tenant_id;
  envelope.account_id = account_->id;
  envelope.client = peer_text_;
  envelope.listener = listener_->address;
  envelope.sender = message_.sender;
  envelope.recipients = std::move(message_.recipients);  // lent to the encoder, given back below
  envelope.dsn_ret = message_.dsn_ret;
  envelope.envid = message_.envid;
  envelope.notify = std::move(message_.notify);
  envelope.orcpt = std::move(message_.orcpt);
  message_.body_iov.clear();
  message_.body_iov.reserve(message_.pieces.size());
  uint64_t body_bytes = 0;
  for (const BodyPiece& piece : message_.pieces) {
    message_.body_iov.push_back(iovec{const_cast<char*>(piece.data), piece.length});
    body_bytes += piece.length;
  }
  absl::StatusOr<spool::RecordPrefix> prefix =
      spool::EncodeRecordPrefix(envelope, message_.added_headers, message_.body_iov);
  message_.recipients = std::move(envelope.recipients);
  message_.notify = std::move(envelope.notify);
  message_.orcpt = std::move(envelope.orcpt);
  if (!prefix.ok()) {
    LOG_ERROR("%s: message %s cannot be spooled: %s", peer_text_, message_.id,
              prefix.status().message());
    ReleaseMessage();
    services_.counters->messages_failed.Add(1);
    return smtp::kReplySpoolFailed;
  }
  message_.received_unix_us = envelope.received_unix_us;
  message_.body_end_us = MonotonicMicros();
  // The body stays where it is (pinned receive buffers, the arena) until the group commit
  // that carries it completes: OnCommitted.
  services_.sink->Stage(*std::move(prefix), message_.body_iov, body_bytes, cookie_);
  message_.receiving = false;
  services_.sink->NoteReceiving(-1);
  committing_ = true;
  return std::nullopt;  // answered by OnCommitted
}

// --- The commit's outcome -----------------------------------------------------------------

void Submission::OnCommitted(const spool::Committed* committed) {
  CHECK(committing_);
  committing_ = false;
  smtp::Reply reply = smtp::kReplySpoolFailed;
  std::string text;
  services_.counters->end_of_data_latency.Observe(MonotonicMicros() - message_.body_end_us);
  if (committed != nullptr) {
    text = absl::StrCat("2.0.0 OK queued as ", message_.id);
    reply = smtp::Reply{250, text};
    services_.counters->messages_accepted.Add(1);
    services_.sink->CountUsage(*account_, message_.recipients.size());
    ReportAccepted(*committed);
    // The envelope moves to delivery (ReleaseMessage below empties it anyway): no copies.
    spool::Envelope envelope;
    envelope.id = message_.id;
    envelope.received_unix_us = message_.received_unix_us;
    envelope.tenant_id = account_->tenant_id;
    envelope.account_id = account_->id;
    envelope.sender = std::move(message_.sender);
    envelope.recipients = std::move(message_.recipients);
    envelope.dsn_ret = message_.dsn_ret;
    envelope.envid = std::move(message_.envid);
    envelope.notify = std::move(message_.notify);
    envelope.orcpt = std::move(message_.orcpt);
    services_.sink->Accepted(
        delivery::QueuedFrom(std::move(envelope), {}, committed->ref, /*replayed=*/false),
        message_.routes);
  } else {
    services_.counters->messages_failed.Add(1);
    LogEvent(LogLevel::kWarning, "message.failed",
             {{"queue_id", message_.id},
              {"client", peer_text_},
              {"account", account_->primary_address},
              {"code", reply.code},
              {"reply", reply.text}});
  }
  ReleaseMessage();
  Answer(reply);
}

void Submission::ReportAccepted(const spool::Committed& committed) {
  // The Message-ID: the submitter's, or the one chute added (AppendAddedHeaders).
  std::string message_id = message_.headers.has_message_id()
                               ? std::string(message_.headers.message_id())
                               : absl::StrCat("<", message_.id, "@", config_->server.hostname, ">");
  LogEvent(LogLevel::kInfo, "message.accepted",
           {{"queue_id", message_.id},
            {"message_id", message_id},
            {"account", account_->primary_address},
            {"tenant", account_->tenant_name},
            {"sender", message_.sender},
            {"recipients", message_.recipients.size()},
            {"size", committed.ref.content_bytes},
            {"tls", control_->TlsVersion()},
            {"client", peer_text_}});
  if (!services_.sink->Tracing()) {
    return;
  }
  trace::Event e;
  e.kind = trace::Event::Kind::kReceived;
  e.time_us = message_.received_unix_us;
  e.queue_id = message_.id;
  e.tenant = account_->tenant_name;
  e.account = account_->primary_address;
  e.sender = message_.sender;
  e.message_id = std::move(message_id);
  e.client = peer_text_;
  e.recipients = message_.recipients;
  e.size_bytes = committed.ref.content_bytes;
  services_.sink->Trace(std::move(e));
}

}  // namespace chute::server
