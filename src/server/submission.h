#pragma once

// Submission: the HVE side of one SMTP session, its smtp::SessionHandler (docs/architecture.md,
// Submission). It answers AUTH against the directory snapshot and the auth service, MAIL and
// RCPT with the HVE policy (src/policy), gathers the body as slices of receive buffers (pinned
// within the shard's budget) or copies, adds the headers chute adds, and stages the record for
// the group commit; the commit's outcome (OnCommitted) answers 250 or 451 and hands the message
// to delivery.
//
// It talks only to the narrow interfaces below, which the shard implements over its own state
// and SharedState; it never sees the shard, the ring or the connection's transport, so it is
// unit-tested alone (tests/unit/server/submission_test.cc).
//
// Lifecycle: Begin when a session starts on a connection slot, End when the slot is freed; one
// Submission object serves every connection of its slot in turn. Threads: the shard's only.

#include <sys/uio.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "auth/jwt.h"
#include "auth/throttle.h"
#include "auth/verifier.h"
#include "base/config.h"
#include "base/net_address.h"
#include "delivery/queue.h"
#include "delivery/router.h"
#include "delivery/verifier.h"
#include "directory/directory.h"
#include "policy/connection_gate.h"
#include "smtp/message_headers.h"
#include "smtp/session.h"
#include "spool/record.h"
#include "spool/spool.h"
#include "trace/trace.h"

namespace chute::server {

struct ShardCounters;
class ReplyCounts;

// Receive buffers one message may keep pinned; past it, its body is copied to an arena.
inline constexpr size_t kPinnedBuffersPerMessageMax = 8;
inline constexpr size_t kArenaBlockBytes = 64 * 1024;
// Pieces one message may point to (each stuffed dot splits a slice); past it, the body goes to
// the arena, where consecutive pieces merge: a body of dotted lines cannot grow the list.
inline constexpr size_t kBodyPiecesMax = 4096;
// A message's body memory is charged to the shared bound (BodyBuffers::ChargeBody) in steps of
// this much, so that the shared counter is touched a few times per message, not per slice.
inline constexpr size_t kBodyChargeStep = 256 * 1024;
// A refusal passed on from a route's target (recipient verification) keeps at most this much
// of its text, so that the reply line stays within RFC 5321's 512 bytes.
inline constexpr size_t kTargetReplyBytesMax = 400;
static_assert(kBodyPiecesMax + 1 <= spool::kGroupIovMax, "one message always fits a group");

// SubmitSink: where accepted mail goes (the shard: its group commit, hand-over, usage, trace).
class SubmitSink {
 public:
  virtual ~SubmitSink() = default;
  // ReserveSpool: room in the spool for one more message of up to `bytes`, held from MAIL
  // until the message is committed or dropped, so that sessions in progress together cannot
  // take the spool past `limits` (the session's configuration). False, and nothing
  // reserved, when the spool's bytes or messages with every reservation would pass a bound:
  // 452 4.3.1. `messages` is 1 at MAIL, 0 when a body grows past its reservation.
  virtual bool ReserveSpool(const SpoolConfig& limits, uint64_t bytes, int messages) = 0;
  virtual void ReleaseSpool(uint64_t bytes, int messages) = 0;
  // NextQueueId: a fresh queue id (spool::QueueIdMinter).
  virtual std::string NextQueueId() = 0;
  // NoteReceiving: a message passed MAIL (+1), or was staged or dropped (-1): the group commit
  // waits for company only while some are receiving.
  virtual void NoteReceiving(int delta) = 0;
  // Stage: the record for the next group commit; `body` stays valid until OnCommitted.
  virtual void Stage(spool::RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
                     uint64_t cookie) = 0;
  // Accepted: a committed message for delivery (`routes`: each recipient's route), its usage
  // count and its trace event.
  virtual void Accepted(std::unique_ptr<delivery::QueuedMessage> message,
                        const std::vector<int>& routes) = 0;
  virtual void CountUsage(const directory::Account& account, size_t recipients) = 0;
  // Tracing: whether the message trace is on (when it is off, no event is built at all).
  virtual bool Tracing() const = 0;
  virtual void Trace(trace::Event event) = 0;
};

// BodyBuffers: the shard's budget of receive buffers that message bodies may pin.
class BodyBuffers {
 public:
  virtual ~BodyBuffers() = default;
  // MayPin: whether one more buffer may be pinned (a share of the ring at most).
  virtual bool MayPin() const = 0;
  // Pin / Unpin: one message's hold on a receive buffer; the buffer goes back to the kernel
  // when its last hold (pin or unread input) ends.
  virtual void Pin(uint16_t buffer) = 0;
  virtual void Unpin(uint16_t buffer) = 0;
  // ChargeBody: `bytes` more message body held in memory (pinned or copied) by the messages
  // being received, all shards together; false, and nothing charged, when that would pass
  // `max` (limits.receiving_bytes_max). UnchargeBody gives them back.
  virtual bool ChargeBody(size_t bytes, int64_t max) = 0;
  virtual void UnchargeBody(size_t bytes) = 0;
  // BodyMemoryFull: whether the bodies being received are at `max` already.
  virtual bool BodyMemoryFull(int64_t max) const = 0;
};

// TenantPlace: one session's place in its tenant's cap: in this process (the ConnectionGate's
// handle) and, in a fleet, its lease in Redis (fleet::TenantLeases; 0: none).
struct TenantPlace {
  policy::ConnectionGate::Handle local;
  uint64_t lease = 0;
  bool held() const { return local.held(); }
};

// TenantCap: the 250 authenticated connections per tenant: in process (policy::ConnectionGate)
// and, when [fleet] redis is set, across every node (fleet::TenantLeases).
class TenantCap {
 public:
  enum class Verdict { kAdmitted, kOverCap, kPending };
  virtual ~TenantCap() = default;
  // Admit: a place for a new authenticated session of `account`'s tenant. kAdmitted: `place`
  // holds it; kOverCap: the tenant is at its cap (nothing held); kPending: the fleet was asked
  // and its answer comes to Submission::OnTenantAdmitted for the connection `cookie` (`place`
  // holds the in-process place meanwhile).
  virtual Verdict Admit(const directory::Account& account, uint64_t cookie, TenantPlace* place) = 0;
  // Leave: the fleet lease `lease` (from an admitted answer; 0: none) is given back.
  virtual void Leave(uint64_t lease) = 0;
};

// RecipientCheck: recipient verification at RCPT (delivery/verifier.h), for the route of
// each recipient.
class RecipientCheck {
 public:
  virtual ~RecipientCheck() = default;
  // VerifyRecipient: the verdict on `address` (routed by `route`) now: kExists at once when the
  // route does not verify; a Maildir lookup; a cached answer. std::nullopt: a probe was asked
  // for, and its answer comes to Submission::OnRecipientVerified for the connection `cookie`.
  virtual std::optional<delivery::RecipientVerdict> VerifyRecipient(int route,
                                                                    const std::string& address,
                                                                    uint64_t cookie) = 0;
};

// AuthService: password checks (off the event loop), bearer tokens and the throttle.
class AuthService {
 public:
  virtual ~AuthService() = default;
  // CheckThrottle: the throttle's verdict; *reason says why a kBlocked was refused.
  virtual auth::AuthThrottle::Verdict CheckThrottle(const IpBytes& peer, absl::string_view user,
                                                    absl::Time now, absl::string_view* reason) = 0;
  // RecordFailure: how long the failure's answer is held back.
  virtual absl::Duration RecordFailure(const IpBytes& peer, absl::string_view user,
                                       absl::Time now) = 0;
  // RecordSuccess: `user` authenticated from `peer` (known-good there for the throttle).
  virtual void RecordSuccess(const IpBytes& peer, absl::string_view user, absl::Time now) = 0;
  // VerifyPassword: queues the check; false when the verifier queue is at its bound. The
  // result comes back as Submission::OnVerified (through the shard, by the request's cookie).
  virtual bool VerifyPassword(auth::VerifyRequest request) = 0;
  // VerifyToken: checks an XOAUTH2 bearer token with the tenant's keys (kInvalid, with `why`,
  // when the tenant has none loaded).
  virtual auth::TokenVerdict VerifyToken(int64_t tenant_id, absl::string_view token,
                                         const auth::TokenPolicy& policy, absl::Time now,
                                         auth::TokenIdentity* identity, std::string* why) = 0;
};

// SessionControl: what a submission asks of the connection under it.
class SessionControl {
 public:
  virtual ~SessionControl() = default;
  virtual void StartTls() = 0;
  virtual absl::string_view TlsVersion() const = 0;  // "none" in plaintext
  virtual bool PeerGone() const = 0;                 // the client finished sending
};

// SubmissionServices: the interfaces, the shard's counters and its clock (read once per batch
// of completions).
struct SubmissionServices {
  SubmitSink* sink = nullptr;
  BodyBuffers* buffers = nullptr;
  TenantCap* tenant_cap = nullptr;
  AuthService* auth = nullptr;
  ShardCounters* counters = nullptr;
  ReplyCounts* replies = nullptr;
  const absl::Time* now = nullptr;
  const delivery::Router* router = nullptr;  // which route serves a recipient
  RecipientCheck* recipients = nullptr;
};

// A piece of message body: inside a pinned receive buffer, or inside the arena.
struct BodyPiece {
  const char* data;
  size_t length;
};

class Submission : public smtp::SessionHandler {
 public:
  // Submission: `services` (the shard's, which outlives its connections) and `control` stay
  // valid for the Submission's life.
  Submission(const SubmissionServices* services, SessionControl* control);
  ~Submission() override;

  // Begin: a session starts for the client `peer` on `listener`, under the live `config` and
  // directory `snapshot`; `cookie` names it in completions that come back later.
  void Begin(uint64_t cookie, const IpBytes& peer, std::string peer_text,
             const ListenerConfig* listener, std::shared_ptr<const Config> config,
             std::shared_ptr<const directory::Snapshot> snapshot);
  // set_session: the session this handler answers (for answers that come later).
  void set_session(smtp::Session* session) { session_ = session; }
  // End: releases the message, the tenant's place and the session's state. Not while busy().
  void End();

  // ActAs: a trusted listener's session acts as `account` (of the session's snapshot)
  // without AUTH.
  void ActAs(const directory::Account* account);

  // FeedingFrom: the receive buffer whose bytes the session is being fed (-1: copied bytes,
  // e.g. TLS plaintext): body slices pin it.
  void FeedingFrom(int32_t buffer) { feeding_buffer_ = buffer; }

  // OnVerified: the password check of this session's AUTH finished.
  void OnVerified(bool ok);
  // OnTenantAdmitted: the fleet answered this session's request for a place in its tenant's
  // cap (TenantCap::kPending): `lease` when admitted.
  void OnTenantAdmitted(bool admitted, uint64_t lease);
  // OnRecipientVerified: the probe of this session's RCPT finished.
  void OnRecipientVerified(const delivery::RecipientVerdict& verdict);
  // OnCommitted: the group commit that carried this message finished: on disk (`committed`:
  // 250, and the message goes to delivery) or not (null: 451).
  void OnCommitted(const spool::Committed* committed);
  // AnswerDelayed: gives a throttled AUTH failure its answer once due (or when stopping);
  // true when it answered.
  bool AnswerDelayed(bool stopping);

  // busy: a commit, a password check, a probe or a fleet lease is out; the slot may not be
  // freed until it returns.
  bool busy() const {
    return committing_ || auth_inflight_ || rcpt_inflight_ || tenant_waiting_ != Waiting::kNone;
  }
  bool committing() const { return committing_; }
  const directory::Account* account() const { return account_; }

  // smtp::SessionHandler
  std::optional<smtp::Reply> OnAuth(const smtp::AuthRequest& request) override;
  std::optional<smtp::Reply> OnMail(const smtp::MailArgs& mail) override;
  std::optional<smtp::Reply> OnRcpt(const smtp::RcptArgs& rcpt) override;
  void OnBodyBegin() override;
  void OnBodySlice(absl::string_view slice) override;
  std::optional<smtp::Reply> OnBodyEnd() override;
  void OnTransactionAbort() override;
  void OnStartTls() override;
  void OnRefusal(const smtp::Reply& reply) override;

 private:
  struct Message {
    bool active = false;
    bool receiving = false;       // past MAIL, not yet staged (SubmitSink::NoteReceiving)
    uint64_t spool_reserved = 0;  // SubmitSink::ReserveSpool bytes (with one message) held
    bool spool_reserved_message = false;
    size_t body_held = 0;       // body bytes kept (pinned pieces and arena)
    size_t body_charged = 0;    // charged to BodyBuffers::ChargeBody, >= body_held
    bool body_dropped = false;  // past receiving_bytes_max: the rest is read and dropped
    std::string id;
    std::string sender;
    std::vector<std::string> recipients;  // as accepted, deduplicated
    std::vector<int> routes;              // each one's delivery route (delivery::Router)
    // DSN (RFC 3461) as the client gave them: MAIL's RET and ENVID; each recipient's NOTIFY
    // bits and ORCPT (beside `recipients`).
    uint8_t dsn_ret = 0;
    std::string envid;
    std::vector<uint8_t> notify;
    std::vector<std::string> orcpt;
    std::vector<BodyPiece> pieces;
    std::vector<iovec> body_iov;    // the pieces as the spool writes them
    std::vector<uint16_t> pinned;   // distinct receive buffers the pieces point into
    std::deque<std::string> arena;  // blocks of kArenaBlockBytes capacity, never reallocated
    smtp::HeaderScanner headers;
    // When the account has a ReplyTo, the header section is kept here (a copy) so that any
    // Reply-To the submitter wrote can be left out; the configured one replaces it.
    bool rewrite_header = false;
    std::string header_copy;
    std::string added_headers;
    int64_t received_unix_us = 0;
    int64_t body_end_us = 0;  // monotonic time of the end of data
  };

  // What a MAIL left to do once its trusted session's place is taken: its arguments, kept.
  struct MailRequest {
    std::string address;
    std::optional<uint64_t> size;
    smtp::DsnRet ret = smtp::DsnRet::kUnspecified;
    std::string envid;
  };
  // What waits for the fleet's answer on the tenant's place.
  enum class Waiting : uint8_t { kNone, kAuth, kMail };

  absl::Time now() const { return *services_.now; }
  std::optional<smtp::Reply> DecideMail(const smtp::MailArgs& mail);
  smtp::Reply AcceptMail(const MailRequest& mail);
  void LogMailRefused(absl::string_view sender, const smtp::Reply& reply);
  // DecideRecipient: the RCPT's answer once its recipient is verified (or needs not be); adds
  // it to the message when accepted.
  smtp::Reply DecideRecipient(const delivery::RecipientVerdict& verdict);
  void LogRcptRefused(absl::string_view address, const smtp::Reply& reply,
                      absl::string_view why = "");
  // AdmitAuthenticated: good credentials; the tenant's cap decides (std::nullopt: the fleet
  // was asked, OnTenantAdmitted answers).
  std::optional<smtp::Reply> AdmitAuthenticated(const directory::Account* candidate);
  smtp::Reply Authenticated(const directory::Account* account);
  std::optional<smtp::Reply> OnXoauth2(const smtp::AuthRequest& request);
  void LeaveTenant();
  std::optional<smtp::Reply> AuthFailed(const smtp::Reply& reply);
  void AppendToArena(absl::string_view slice);
  // KeepBody: charges room for `bytes` more body; false when the shared bound says no (then
  // what the message held is given back and the rest of it is dropped).
  bool KeepBody(size_t bytes);
  void DropBody();
  // AddHeaders: the Received line and what else chute adds, into message_.added_headers.
  void AddHeaders();
  // StageMessage: encodes the record and stages it; the refusal when it cannot be spooled.
  std::optional<smtp::Reply> StageMessage();
  void ReportAccepted(const spool::Committed& committed);
  void ReleaseMessage();
  void Answer(const smtp::Reply& reply);

  const SubmissionServices& services_;  // a reference: 8 bytes per connection slot
  SessionControl* const control_;
  smtp::Session* session_ = nullptr;
  uint64_t cookie_ = 0;
  IpBytes peer_{};
  std::string peer_text_;
  const ListenerConfig* listener_ = nullptr;
  std::shared_ptr<const Config> config_;  // the live configuration when the session started
  std::shared_ptr<const directory::Snapshot> snapshot_;
  const directory::Account* account_ = nullptr;           // the account the session acts as
  TenantPlace tenant_place_;                              // its place in its tenant's cap
  Waiting tenant_waiting_ = Waiting::kNone;               // a fleet lease is out for it
  const directory::Account* tenant_candidate_ = nullptr;  // kAuth: whom it is for
  MailRequest tenant_mail_;                               // kMail: the MAIL it holds
  int32_t feeding_buffer_ = -1;
  bool committing_ = false;     // its message is in a spool group commit
  bool auth_inflight_ = false;  // a password check is out on the verifier pool
  // A recipient's probe is out (RecipientCheck): what its RCPT asked, for the answer.
  bool rcpt_inflight_ = false;
  std::string rcpt_address_;     // as the client gave it
  std::string rcpt_deliver_to_;  // as it is delivered to
  int rcpt_route_ = 0;
  uint8_t rcpt_notify_ = 0;
  std::string rcpt_orcpt_;
  std::string rcpt_reply_;  // the text of a refusal built from the target's reply
  const directory::Account* auth_candidate_ = nullptr;  // whom that check is for
  std::string auth_user_;          // the user name of the AUTH in progress (for the throttle)
  absl::string_view auth_reason_;  // why the AUTH in progress was refused (static text, log)
  std::string auth_detail_;        // what was wrong with a refused XOAUTH2 token (log)
  // The AUTH in progress, for its log line: set by OnAuth, cleared by its answer.
  bool auth_attempting_ = false;
  smtp::Mechanism auth_mechanism_ = smtp::Mechanism::kPlain;
  // A failed AUTH's answer held back by the throttle until `delayed_due_`.
  std::optional<smtp::Reply> delayed_answer_;
  absl::Time delayed_due_ = absl::InfiniteFuture();
  Message message_;
};

}  // namespace chute::server
