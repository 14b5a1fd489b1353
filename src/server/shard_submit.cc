// shard_submit.cc: the shard's side of submission: the group commit's I/O, the hand-over to
// delivery, usage and trace batching, the receive-buffer budget, and the caps and auth the
// Submission asks for (submission.h's interfaces, implemented over this shard and SharedState).

#include <algorithm>
#include <utility>

#include "absl/time/time.h"
#include "auth/jwt.h"
#include "auth/key_store.h"
#include "base/check.h"
#include "base/log.h"
#include "delivery/maildir.h"
#include "server/connection.h"
#include "server/shard.h"

namespace chute::server {

// --- The spool's group commit -----------------------------------------------------------------

void Shard::MaybeCommit() {
  spool::GroupCommitter::Decision decision = committer_->Decide(now_, receiving_, stopping_);
  switch (decision.kind) {
    case spool::GroupCommitter::Decision::Kind::kNothing:
      return;
    case spool::GroupCommitter::Decision::Kind::kWait:
      return ArmCommitTimer(decision.wait);
    case spool::GroupCommitter::Decision::Kind::kIssue:
      return IssueGroup();
  }
}

void Shard::ArmCommitTimer(absl::Duration wait) {
  if (commit_timer_armed_) {
    return;
  }
  commit_wait_.tv_sec = absl::ToInt64Seconds(wait);
  commit_wait_.tv_nsec = absl::ToInt64Nanoseconds(wait - absl::Seconds(commit_wait_.tv_sec));
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_timeout(sqe, &commit_wait_, 0, 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpCommitTimer, 0));
  commit_timer_armed_ = true;
}

void Shard::IssueGroup() {
  std::vector<uint64_t> failed;
  absl::Status status = committer_->Issue(*ring_, kOpSpool, now_, &failed);
  if (!status.ok()) {
    LOG_ERROR_EVERY(10, "shard %d: spool: %s", index_, status.ToString());
    for (uint64_t cookie : failed) {
      AnswerCommit(cookie, nullptr);
    }
  }
}

void Shard::OnSpoolCqe(const io_uring_cqe& cqe) {
  spool::GroupCommitter::Outcome outcome;
  if (!committer_->OnCompletion(io::UserDataCookie(cqe.user_data), cqe.res, &outcome)) {
    return;
  }
  counters_.spool_commit_latency.Observe(outcome.latency_us);
  if (!outcome.status.ok()) {
    LOG_ERROR_EVERY(10, "shard %d: spool group commit failed, its messages get 451: %s", index_,
                    outcome.status.ToString());
  }
  for (const spool::Committed& c : outcome.committed) {
    AnswerCommit(c.cookie, &c);
  }
  for (uint64_t cookie : outcome.failed) {
    AnswerCommit(cookie, nullptr);
  }
}

void Shard::AnswerCommit(uint64_t cookie, const spool::Committed* committed) {
  // The connection waits for this answer (delivery_inflight keeps it), even if its peer left.
  Connection* conn = Lookup(cookie);
  CHECK_MSG(conn != nullptr, "a spool commit ended for a connection that is gone");
  conn->submission.OnCommitted(committed);
  Process(*conn);
  MaybeFree(*conn);
}

void Shard::HandOverTrace() {
  if (!trace_pending_.empty() && shared_->trace != nullptr) {
    shared_->trace->Submit(trace_pending_);  // empties it, whether taken or dropped
  }
  trace_pending_.clear();
}

// --- SubmitSink -------------------------------------------------------------------------------

bool Shard::ReserveSpool(const SpoolConfig& limits, uint64_t bytes, int messages) {
  // Taken first, checked after: two shards racing for the last room both see each other's
  // reservation (one may be refused needlessly, neither passes the bound).
  bool fits = shared_->gauges->Reserve(static_cast<int64_t>(bytes), messages, limits.bytes_max,
                                       limits.messages_max);
  if (!fits) {
    ReleaseSpool(bytes, messages);
  }
  return fits;
}

void Shard::ReleaseSpool(uint64_t bytes, int messages) {
  shared_->gauges->Unreserve(static_cast<int64_t>(bytes), messages);
}

void Shard::NoteReceiving(int delta) {
  CHECK(delta == 1 || delta == -1);
  CHECK(delta > 0 || receiving_ > 0);
  receiving_ += delta;
}

void Shard::Stage(spool::RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
                  uint64_t cookie) {
  committer_->Stage(std::move(prefix), body, body_bytes, cookie, now_);
}

void Shard::CountUsage(const directory::Account& account, size_t recipients) {
  std::string day = absl::FormatTime("%Y-%m-%d", now_, absl::UTCTimeZone());
  directory::UsageRow& row = usage_[{account.id, day}];
  if (row.day.empty()) {
    row = directory::UsageRow{account.id, day, account.primary_address, account.tenant_name, 0, 0};
  }
  row.messages += 1;
  row.recipients += static_cast<int64_t>(recipients);
}

void Shard::Trace(trace::Event event) {
  if (shared_->trace == nullptr) {
    return;
  }
  trace_pending_.push_back(std::move(event));
  if (trace_pending_.size() >= kTraceHandOverEvents) {
    HandOverTrace();
  }
}

std::optional<delivery::RecipientVerdict> Shard::VerifyRecipient(int route,
                                                                 const std::string& address,
                                                                 uint64_t cookie) {
  using Kind = delivery::RecipientVerdict::Kind;
  const DeliveryConfig& settings =
      shared_->delivery->router().route(static_cast<size_t>(route)).settings;
  if (!settings.verify_recipients) {
    return delivery::RecipientVerdict{Kind::kExists, "", false};
  }
  if (settings.backend == DeliveryBackend::kMaildir) {
    // A lookup of a few directory entries (the kernel's dentry cache answers it): on the loop.
    // A mailbox that cannot be told (a link, a permission) is accepted; delivery says why.
    bool missing =
        delivery::FindMailbox(settings.maildir_root, address) == delivery::MailboxState::kMissing;
    return delivery::RecipientVerdict{missing ? Kind::kUnknown : Kind::kExists, "", false};
  }
  delivery::RecipientVerifier* verifier = shared_->delivery->verifier(static_cast<size_t>(route));
  CHECK(verifier != nullptr);
  if (std::optional<delivery::RecipientVerdict> cached = verifier->Cached(address, now_)) {
    return cached;
  }
  verifier->Submit(address, cookie, this);
  return std::nullopt;
}

void Shard::Accepted(std::unique_ptr<delivery::QueuedMessage> message,
                     const std::vector<int>& routes) {
  for (delivery::RoutedPart& part :
       delivery::SplitByRoute(std::move(message), routes, shared_->delivery->router())) {
    if (handover_backlog_.empty() && handover_[part.route]->TryPush(part.message)) {
      handed_over_[part.route] = true;
      continue;
    }
    handover_backlog_.push_back(std::move(part));
  }
}

void Shard::FlushHandOver() {
  while (!handover_backlog_.empty()) {
    delivery::RoutedPart& front = handover_backlog_.front();
    if (!handover_[front.route]->TryPush(front.message)) {
      break;
    }
    handed_over_[front.route] = true;
    handover_backlog_.pop_front();
  }
  for (size_t route = 0; route < handed_over_.size(); ++route) {
    if (handed_over_[route]) {
      handed_over_[route] = false;
      shared_->delivery->queue(route).Notify();  // once per turn of the loop, not per message
    }
  }
}

}  // namespace chute::server

namespace chute::server {

// --- BodyBuffers -------------------------------------------------------------------------------

void Shard::Pin(uint16_t buffer) {
  Ref(buffer);
  ++message_pins_;
}

void Shard::Unpin(uint16_t buffer) {
  CHECK(message_pins_ > 0);
  --message_pins_;
  Unref(buffer);
}

bool Shard::ChargeBody(size_t bytes, int64_t max) {
  auto size = static_cast<int64_t>(bytes);
  int64_t held = shared_->receiving_bytes.fetch_add(size, std::memory_order_relaxed) + size;
  if (held > max) {
    shared_->receiving_bytes.fetch_sub(size, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void Shard::UnchargeBody(size_t bytes) {
  shared_->receiving_bytes.fetch_sub(static_cast<int64_t>(bytes), std::memory_order_relaxed);
}

bool Shard::BodyMemoryFull(int64_t max) const {
  return shared_->receiving_bytes.load(std::memory_order_relaxed) >= max;
}

// --- TenantCap and AuthService, over SharedState -----------------------------------------------

TenantCap::Verdict Shard::Admit(const directory::Account& account, uint64_t cookie,
                                TenantPlace* place) {
  // This node's own count first: it is exact, and a node's count is what its share is judged
  // on while Redis is away (fleet/tenant_leases.h).
  if (shared_->gate->AdmitTenant(account.tenant_id, &place->local) !=
      policy::ConnectionGate::Verdict::kAdmitted) {
    return Verdict::kOverCap;
  }
  if (shared_->leases == nullptr) {
    return Verdict::kAdmitted;
  }
  std::optional<fleet::LeaseAnswer> answer =
      shared_->leases->Acquire(account.tenant_id, account.tenant_name, cookie, this);
  if (!answer.has_value()) {
    return Verdict::kPending;  // OnLeased
  }
  if (!answer->admitted) {
    place->local.Reset();
    return Verdict::kOverCap;
  }
  place->lease = answer->lease;
  return Verdict::kAdmitted;
}

void Shard::Leave(uint64_t lease) {
  if (lease != 0 && shared_->leases != nullptr) {
    shared_->leases->Release(lease);
  }
}

auth::AuthThrottle::Verdict Shard::CheckThrottle(const IpBytes& peer, absl::string_view user,
                                                 absl::Time now, absl::string_view* reason) {
  return shared_->throttle->Check(peer, user, now, reason);
}

void Shard::RecordSuccess(const IpBytes& peer, absl::string_view user, absl::Time now) {
  shared_->throttle->RecordSuccess(peer, user, now);
}

absl::Duration Shard::RecordFailure(const IpBytes& peer, absl::string_view user, absl::Time now) {
  return shared_->throttle->RecordFailure(peer, user, now);
}

bool Shard::VerifyPassword(auth::VerifyRequest request) {
  return shared_->verifier->Submit(std::move(request), this);
}

auth::TokenVerdict Shard::VerifyToken(int64_t tenant_id, absl::string_view token,
                                      const auth::TokenPolicy& policy, absl::Time now,
                                      auth::TokenIdentity* identity, std::string* why) {
  std::shared_ptr<const auth::Jwks> jwks = shared_->keys->Find(tenant_id);
  if (jwks == nullptr) {
    *why = "the tenant has no OAuth keys loaded";
    return auth::TokenVerdict::kInvalid;
  }
  auth::TokenVerdict verdict = auth::VerifyToken(token, *jwks, policy, now, identity, why);
  // An unknown kid: perhaps a key the identity provider has just started to sign with.
  if (verdict == auth::TokenVerdict::kInvalid && auth::UnknownKeyId(token, *jwks).has_value() &&
      shared_->keys->KeyNotFound(tenant_id)) {
    absl::StrAppend(why, " (the tenant's keys will be fetched again)");
  }
  return verdict;
}

}  // namespace chute::server
