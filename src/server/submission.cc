// The submission glue: what a Connection (connection.h) answers to its smtp::Session. It asks
// the directory and auth for AUTH, the HVE policy (src/policy) for MAIL and RCPT, and the
// spool for the end of a message; the shard (shard.cc) is only the transport under it.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/jwt.h"
#include "auth/throttle.h"
#include "base/check.h"
#include "base/log.h"
#include "policy/hve_policy.h"
#include "server/connection.h"
#include "server/shard.h"
#include "smtp/parser.h"

namespace chute::server {

// --- Connection: the HVE session handler ------------------------------------------------------

std::optional<smtp::Reply> Connection::OnAuth(const smtp::AuthRequest& request) {
  auth_attempting = true;
  auth_mechanism = request.mechanism;
  auth::AuthThrottle::Verdict verdict =
      shard->shared_->throttle->Check(peer, request.username, shard->now_);
  if (verdict == auth::AuthThrottle::Verdict::kBlocked) {
    shard->counters_.auth_failures.Add(1);
    return smtp::kReplyAuthThrottled;  // no argon2 spent on a guesser
  }
  auth_user = request.username;
  if (request.mechanism == smtp::Mechanism::kXoauth2) {
    smtp::Reply reply = OnXoauth2(request);
    return reply.code >= 500 ? AuthFailed(reply) : std::optional<smtp::Reply>(reply);
  }
  const directory::Account* candidate = snapshot->FindAccount(request.username);
  if (candidate != nullptr) {
    const directory::Tenant* tenant = snapshot->FindTenant(candidate->tenant_id);
    if (tenant != nullptr && !tenant->basic_auth) {
      return smtp::kReplyBasicAuthDisabled;
    }
  }
  if (!request.authzid.empty() && request.authzid != request.username) {
    candidate = nullptr;  // acting for someone else is not a thing HVE accounts do
  }
  auth::VerifyRequest verify;
  verify.account_id = candidate != nullptr ? candidate->id : 0;
  verify.password_hash = candidate != nullptr ? candidate->password_hash : std::string();
  verify.password = request.secret;
  verify.cookie = cookie();
  verify.low_priority = verdict == auth::AuthThrottle::Verdict::kSuspect;
  // An unknown user is verified too (against a dummy hash): same answer, same time.
  if (!shard->shared_->verifier->Submit(std::move(verify), shard)) {
    return smtp::kReplyAuthUnavailable;  // the verifier queue is at its bound
  }
  auth_inflight = true;
  auth_candidate = candidate;
  return std::nullopt;  // answered by OnVerified
}

smtp::Reply Connection::AdmitAuthenticated(const directory::Account* candidate) {
  // The credentials are good; the tenant's cap decides (454 leaves the session unauthenticated).
  if (shard->shared_->gate->AdmitTenant(candidate->tenant_id, &tenant_slot) !=
      policy::ConnectionGate::Verdict::kAdmitted) {
    return smtp::kReplyTenantCap;
  }
  account = candidate;
  shard->counters_.auth_successes.Add(1);
  auth_attempting = false;
  LogEvent(LogLevel::kInfo, "auth.ok",
           {{"client", peer_text},
            {"account", account->primary_address},
            {"tenant", account->tenant_name},
            {"mechanism", smtp::MechanismName(auth_mechanism)}});
  return smtp::kReplyAuthOk;
}

smtp::Reply Connection::OnXoauth2(const smtp::AuthRequest& request) {
  // user= must name the account; its tenant must trust an issuer and have its keys loaded.
  const directory::Account* candidate = snapshot->FindAccount(request.username);
  const directory::Tenant* tenant =
      candidate != nullptr ? snapshot->FindTenant(candidate->tenant_id) : nullptr;
  std::shared_ptr<const SharedState::JwksByTenant> jwks = shard->shared_->jwks.load();
  const auth::Jwks* keys = nullptr;
  if (tenant != nullptr && jwks != nullptr) {
    auto it = jwks->find(tenant->id);
    keys = it != jwks->end() ? it->second.get() : nullptr;
  }
  if (tenant == nullptr || tenant->oauth_issuer.empty() || keys == nullptr) {
    shard->counters_.auth_failures.Add(1);
    return smtp::kReplyAuthFailed;
  }
  auth::TokenPolicy policy{tenant->oauth_issuer, tenant->oauth_audience, tenant->oauth_tenant_id,
                           candidate->allowed_apps};
  std::string why;
  auth::TokenVerdict verdict = auth::VerifyToken(request.secret, *keys, policy, shard->now_, &why);
  if (verdict != auth::TokenVerdict::kOk) {
    shard->counters_.auth_failures.Add(1);
    LOG_DEBUG("%s: XOAUTH2 for %s refused: %s", peer_text, request.username, why);
  }
  switch (verdict) {
    case auth::TokenVerdict::kOk:
      return AdmitAuthenticated(candidate);
    case auth::TokenVerdict::kExpired:
      return smtp::kReplyTokenExpired;
    case auth::TokenVerdict::kNoPermission:
      return smtp::kReplyTokenNoPermission;
    case auth::TokenVerdict::kAppNotAllowed:
      return smtp::kReplyAppNotAllowed;
    case auth::TokenVerdict::kInvalid:
      return smtp::kReplyAuthFailed;
  }
  return smtp::kReplyAuthFailed;
}

void Connection::OnVerified(bool ok) {
  auth_inflight = false;
  const directory::Account* candidate = auth_candidate;
  auth_candidate = nullptr;
  std::optional<smtp::Reply> reply;
  if (ok && candidate != nullptr) {
    reply = AdmitAuthenticated(candidate);
  } else {
    shard->counters_.auth_failures.Add(1);
    reply = AuthFailed(smtp::kReplyAuthFailed);
  }
  if (reply.has_value() && session != nullptr &&
      session->blocked() == smtp::Session::Blocked::kAwaitingAnswer) {
    session->Answer(*reply);
  }
}

std::optional<smtp::Reply> Connection::AuthFailed(const smtp::Reply& reply) {
  absl::Duration delay = shard->shared_->throttle->RecordFailure(peer, auth_user, shard->now_);
  if (delay <= absl::ZeroDuration()) {
    return reply;
  }
  delayed_answer = reply;
  delayed_due = shard->now_ + delay;
  return std::nullopt;  // the shard's tick answers it (to the second)
}

void Connection::OnRefusal(const smtp::Reply& reply) {
  if (peer_eof) {
    return;  // the 421 that closes a session whose client left: nobody was refused
  }
  shard->replies_.Count(reply.code, reply.text);
  if (auth_attempting) {
    auth_attempting = false;
    // The user name as the client gave it (bounded by the session's line limit); never the
    // secret.
    LogEvent(LogLevel::kWarning, "auth.failed",
             {{"client", peer_text},
              {"user", auth_user},
              {"mechanism", smtp::MechanismName(auth_mechanism)},
              {"code", reply.code},
              {"reply", reply.text}});
  }
}

std::optional<smtp::Reply> Connection::OnMail(const smtp::MailArgs& mail) {
  std::optional<smtp::Reply> reply = DecideMail(mail);
  if (reply.has_value() && !reply->IsPositive()) {
    LogEvent(LogLevel::kInfo, "mail.refused",
             {{"client", peer_text},
              {"account", account != nullptr ? account->primary_address : ""},
              {"sender", mail.address},
              {"code", reply->code},
              {"reply", reply->text}});
  }
  return reply;
}

std::optional<smtp::Reply> Connection::DecideMail(const smtp::MailArgs& mail) {
  if (account == nullptr) {
    return smtp::kReplyNotAuthenticated;
  }
  if (std::optional<smtp::Reply> refusal = policy::CheckSender(*account, mail.address)) {
    return refusal;
  }
  if (listener->tls == TlsMode::kNone && !tenant_slot.held() &&
      shard->shared_->gate->AdmitTenant(account->tenant_id, &tenant_slot) !=
          policy::ConnectionGate::Verdict::kAdmitted) {
    return smtp::kReplyTenantCapAtMail;  // a trusted session's place, taken at its first MAIL
  }
  // Back-pressure: a full spool (bytes or messages waiting for delivery) refuses new mail
  // until delivery drains it.
  const spool::SpoolGauges& gauges = *shard->shared_->gauges;
  if (gauges.bytes.load(std::memory_order_relaxed) >= config->spool.bytes_max ||
      gauges.messages.load(std::memory_order_relaxed) >= config->spool.messages_max) {
    shard->counters_.spool_full.Add(1);
    return smtp::kReplyStorageFull;
  }
  ReleaseMessage();
  message.active = true;
  message.sender = std::string(mail.address);
  return smtp::kReplySenderOk;
}

std::optional<smtp::Reply> Connection::OnRcpt(absl::string_view address) {
  std::string deliver_to;
  if (std::optional<smtp::Reply> refusal =
          policy::CheckRecipient(*snapshot, *account, address, &deliver_to)) {
    LogEvent(LogLevel::kInfo, "rcpt.refused",
             {{"client", peer_text},
              {"account", account->primary_address},
              {"sender", message.sender},
              {"recipient", address},
              {"code", refusal->code},
              {"reply", refusal->text}});
    return refusal;
  }
  if (std::find(message.recipients.begin(), message.recipients.end(), deliver_to) ==
      message.recipients.end()) {
    message.recipients.push_back(std::move(deliver_to));  // a repeated RCPT delivers once
  }
  return smtp::kReplyRecipientOk;
}

void Connection::OnBodyBegin() {
  message.headers.Reset();
  message.pieces.clear();
  message.header_copy.clear();
  message.rewrite_header = account != nullptr && !account->reply_to.empty();
}

void Connection::OnBodySlice(absl::string_view slice) {
  size_t header_bytes = message.headers.Feed(slice);
  if (message.rewrite_header && header_bytes > 0) {
    message.header_copy.append(slice.data(), header_bytes);
    slice.remove_prefix(header_bytes);
    if (slice.empty()) {
      return;
    }
  }
  // Plaintext from TLS lives in the connection's own buffer, which is reused: it goes to the
  // arena like the overflow of a message with too many pinned receive buffers.
  uint16_t buffer = static_cast<uint16_t>(feeding_buffer);
  // Zero copy while the shard's pinned buffers stay under their budget: past it, bodies are
  // copied so that receive buffers go straight back to the ring (no connection starves).
  bool zero_copy = feeding_buffer >= 0 && message.pieces.size() < kBodyPiecesMax && shard->MayPin();
  bool pinned = zero_copy && !message.pinned.empty() && message.pinned.back() == buffer;
  if (!pinned && zero_copy && message.pinned.size() < kPinnedBuffersPerMessageMax) {
    shard->Ref(buffer);
    ++shard->message_pins_;
    message.pinned.push_back(buffer);
    pinned = true;
  }
  if (pinned) {
    message.pieces.push_back(BodyPiece{slice.data(), slice.size()});
    return;
  }
  // Too many buffers pinned already: copy into the arena, in blocks that never move.
  while (!slice.empty()) {
    if (message.arena.empty() || message.arena.back().size() == kArenaBlockBytes) {
      message.arena.emplace_back();
      message.arena.back().reserve(kArenaBlockBytes);
    }
    std::string& block = message.arena.back();
    size_t take = std::min(slice.size(), kArenaBlockBytes - block.size());
    const char* at = block.data() + block.size();
    block.append(slice.data(), take);
    if (!message.pieces.empty() &&
        message.pieces.back().data + message.pieces.back().length == at) {
      message.pieces.back().length += take;
    } else {
      message.pieces.push_back(BodyPiece{at, take});
    }
    slice.remove_prefix(take);
  }
}

void Connection::ReleaseMessage() {
  for (uint16_t buffer : message.pinned) {
    --shard->message_pins_;
    shard->Unref(buffer);
  }
  message.pinned.clear();
  message.pieces.clear();
  message.arena.clear();
  message.recipients.clear();
  message.added_headers.clear();
  message.header_copy.clear();
  message.rewrite_header = false;
  message.active = false;
}

void Connection::OnTransactionAbort() {
  if (!delivery_inflight) {
    ReleaseMessage();
  }
}

void Connection::OnStartTls() { shard->StartTls(*this); }

}  // namespace chute::server

namespace chute::server {

std::optional<smtp::Reply> Connection::OnBodyEnd() {
  Shard& s = *shard;
  const smtp::HeaderScanner& scanned = message.headers;
  if (std::optional<smtp::Reply> refusal = policy::CheckHeaderFrom(
          *account, scanned.from_count(), smtp::FromAddresses(scanned.from_value()),
          scanned.from_overflow())) {
    LogEvent(LogLevel::kInfo, "message.refused",
             {{"client", peer_text},
              {"account", account->primary_address},
              {"sender", message.sender},
              {"code", refusal->code},
              {"reply", refusal->text}});
    ReleaseMessage();
    s.counters_.messages_failed.Add(1);
    return refusal;
  }
  // Unique across restarts and over a long run: the start time in milliseconds (44 bits),
  // the shard, and a 40-bit counter (a trillion messages per shard per start).
  message.id = absl::StrFormat("%011X%02X%010X", (s.boot_us_ / 1000) & 0xfffffffffff,
                               s.index_ & 0xff, ++s.message_counter_ & 0xffffffffff);
  smtp::TraceInfo trace;
  trace.helo = session->helo_name();
  trace.client_ip = peer_text;
  trace.hostname = config->server.hostname;
  trace.protocol = smtp::ReceivedProtocol(session->smtputf8(), session->tls_active(),
                                          listener->tls != TlsMode::kNone);
  trace.id = message.id;
  trace.recipient = message.recipients.size() == 1 ? absl::string_view(message.recipients[0])
                                                   : absl::string_view();
  trace.time = s.now_;
  smtp::AppendAddedHeaders(trace, message.headers, &message.added_headers);
  if (message.rewrite_header) {
    // Exactly one Reply-To: the account's (docs/architecture.md, Headers chute adds).
    absl::StrAppend(&message.added_headers, "Reply-To: ", account->reply_to, "\r\n");
    smtp::AppendWithoutField(message.header_copy, "Reply-To", &message.added_headers);
  }

  spool::Envelope envelope;
  envelope.id = message.id;
  envelope.received_unix_us = absl::ToUnixMicros(s.now_);
  envelope.tenant_id = account->tenant_id;
  envelope.account_id = account->id;
  envelope.client = peer_text;
  envelope.listener = listener->address;
  envelope.sender = message.sender;
  envelope.recipients = std::move(message.recipients);  // lent to the encoder, given back below
  message.body_iov.clear();
  message.body_iov.reserve(message.pieces.size());
  uint64_t body_bytes = 0;
  for (const BodyPiece& piece : message.pieces) {
    message.body_iov.push_back(iovec{const_cast<char*>(piece.data), piece.length});
    body_bytes += piece.length;
  }
  absl::StatusOr<spool::RecordPrefix> prefix =
      spool::EncodeRecordPrefix(envelope, message.added_headers, message.body_iov);
  message.recipients = std::move(envelope.recipients);
  if (!prefix.ok()) {
    LOG_ERROR("%s: message %s cannot be spooled: %s", peer_text, message.id,
              prefix.status().message());
    ReleaseMessage();
    s.counters_.messages_failed.Add(1);
    return smtp::kReplySpoolFailed;
  }
  message.received_unix_us = envelope.received_unix_us;
  message.body_end_us = MonotonicMicros();
  // The body stays where it is (pinned receive buffers, the arena) until the group commit
  // that carries it completes: OnCommitted.
  s.writer_->Stage(*std::move(prefix), message.body_iov, body_bytes, cookie());
  s.NoteStaged();
  delivery_inflight = true;
  return std::nullopt;  // answered by OnCommitted
}

void Connection::OnCommitted(const spool::Committed* committed) {
  delivery_inflight = false;
  smtp::Reply reply = smtp::kReplySpoolFailed;
  std::string text;
  shard->counters_.end_of_data_latency.Observe(MonotonicMicros() - message.body_end_us);
  if (committed != nullptr) {
    text = absl::StrCat("2.0.0 OK queued as ", message.id);
    reply = smtp::Reply{250, text};
    shard->counters_.messages_accepted.Add(1);
    CountUsage();
    ReportAccepted(*committed);
    // The envelope moves to delivery (ReleaseMessage below empties it anyway): no copies.
    auto queued = std::make_unique<delivery::QueuedMessage>();
    queued->id = message.id;
    queued->received_unix_us = message.received_unix_us;
    queued->tenant_id = account->tenant_id;
    queued->account_id = account->id;
    queued->marks.assign(message.recipients.size(), spool::Mark::kPending);
    queued->replies.assign(message.recipients.size(), std::string());
    queued->sender = std::move(message.sender);
    queued->recipients = std::move(message.recipients);
    queued->segment = committed->segment;
    queued->record_offset = committed->record_offset;
    queued->content_offset = committed->content_offset;
    queued->content_bytes = committed->content_bytes;
    shard->HandOver(std::move(queued));
  } else {
    shard->counters_.messages_failed.Add(1);
    LogEvent(LogLevel::kWarning, "message.failed",
             {{"queue_id", message.id},
              {"client", peer_text},
              {"account", account->primary_address},
              {"code", reply.code},
              {"reply", reply.text}});
  }
  ReleaseMessage();
  if (session != nullptr && session->blocked() == smtp::Session::Blocked::kAwaitingAnswer) {
    session->Answer(reply);
  }
}

void Connection::ReportAccepted(const spool::Committed& committed) {
  // The Message-ID: the submitter's, or the one chute added (AppendAddedHeaders).
  std::string message_id = message.headers.has_message_id()
                               ? std::string(message.headers.message_id())
                               : absl::StrCat("<", message.id, "@", config->server.hostname, ">");
  absl::string_view tls_version = tls != nullptr ? tls->Version() : "none";
  LogEvent(LogLevel::kInfo, "message.accepted",
           {{"queue_id", message.id},
            {"message_id", message_id},
            {"account", account->primary_address},
            {"tenant", account->tenant_name},
            {"sender", message.sender},
            {"recipients", message.recipients.size()},
            {"size", committed.content_bytes},
            {"tls", tls_version},
            {"client", peer_text}});
  if (shard->shared_->trace == nullptr) {
    return;
  }
  trace::Event& e = shard->trace_pending_.emplace_back();
  e.kind = trace::Event::Kind::kReceived;
  e.time_us = message.received_unix_us;
  e.queue_id = message.id;
  e.tenant = account->tenant_name;
  e.account = account->primary_address;
  e.sender = message.sender;
  e.message_id = std::move(message_id);
  e.client = peer_text;
  e.recipients = message.recipients;
  e.size_bytes = committed.content_bytes;
  if (shard->trace_pending_.size() >= kTraceHandOverEvents) {
    shard->HandOverTrace();
  }
}

void Connection::CountUsage() {
  std::string day = absl::FormatTime("%Y-%m-%d", shard->now_, absl::UTCTimeZone());
  directory::UsageRow& row = shard->usage_[{account->id, day}];
  if (row.day.empty()) {
    row =
        directory::UsageRow{account->id, day, account->primary_address, account->tenant_name, 0, 0};
  }
  row.messages += 1;
  row.recipients += static_cast<int64_t>(message.recipients.size());
}

}  // namespace chute::server
