#pragma once

// Connection: one accepted socket on a shard, its smtp::Session, and the message in progress.
// It is the SessionHandler: the HVE policy answers MAIL and RCPT, and the end of a message
// becomes a delivery job whose completion answers the session. Shard-owned; never shared.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/config.h"
#include "base/net_address.h"
#include "directory/directory.h"
#include "net/tls.h"
#include "policy/connection_gate.h"
#include "smtp/message_headers.h"
#include "smtp/session.h"
#include "spool/spool.h"

namespace chute::server {

class Shard;

struct InputChunk {
  uint16_t buffer;
  uint32_t offset;
  uint32_t length;
};

// A piece of message body: inside a pinned receive buffer, or inside the arena.
struct BodyPiece {
  const char* data;
  size_t length;
};

struct Message {
  bool active = false;
  std::string sender;
  std::vector<std::string> recipients;  // as accepted, deduplicated
  std::vector<BodyPiece> pieces;
  std::vector<iovec> body_iov;  // the pieces as the spool writes them
  int64_t received_unix_us = 0;
  std::vector<uint16_t> pinned;   // distinct receive buffers the pieces point into
  std::deque<std::string> arena;  // blocks of kArenaBlockBytes capacity, never reallocated
  smtp::HeaderScanner headers;
  // When the account has a ReplyTo, the header section is kept here (a copy) so that any
  // Reply-To the submitter wrote can be left out; the configured one replaces it.
  bool rewrite_header = false;
  std::string header_copy;
  std::string added_headers;
  std::string id;
  int64_t body_end_us = 0;  // monotonic time of the end of data
};

struct Connection : public smtp::SessionHandler {
  Connection(Shard* shard, uint32_t slot) : shard(shard), slot(slot) {}

  // SessionHandler
  std::optional<smtp::Reply> OnAuth(const smtp::AuthRequest& request) override;
  std::optional<smtp::Reply> OnMail(const smtp::MailArgs& mail) override;
  std::optional<smtp::Reply> OnRcpt(absl::string_view address) override;
  void OnBodyBegin() override;
  void OnBodySlice(absl::string_view slice) override;
  std::optional<smtp::Reply> OnBodyEnd() override;
  void OnTransactionAbort() override;
  void OnStartTls() override;
  void OnRefusal(const smtp::Reply& reply) override;

  // ReleaseMessage: drops the message and every receive buffer it pinned.
  void ReleaseMessage();
  // OnCommitted: the group commit that carried this connection's message finished: on disk
  // (`committed`, then 250 and the message goes to delivery) or failed (null, then 451).
  void OnCommitted(const spool::Committed* committed);
  // CountUsage: the accepted message in the account's usage of the day.
  void CountUsage();
  // ReportAccepted: the "message.accepted" log line and the message's trace event.
  void ReportAccepted(const spool::Committed& committed);
  // DecideMail: OnMail's answer (OnMail logs a refusal).
  std::optional<smtp::Reply> DecideMail(const smtp::MailArgs& mail);
  // cookie: names this connection (slot and generation) in completions that come back later.
  uint64_t cookie() const { return (static_cast<uint64_t>(generation & 0xffffff) << 32) | slot; }
  // AdmitAuthenticated: good credentials for `candidate`: takes a place in its tenant's cap
  // and authenticates the session (235), or answers 454 when the tenant is at its cap.
  smtp::Reply AdmitAuthenticated(const directory::Account* candidate);
  // OnXoauth2: verifies an XOAUTH2 bearer token at once (a signature check, no argon2).
  smtp::Reply OnXoauth2(const smtp::AuthRequest& request);
  // OnVerified: the password check of this connection's AUTH finished.
  void OnVerified(bool ok);
  // AuthFailed: counts a failed AUTH with the throttle and answers `reply` after its delay.
  std::optional<smtp::Reply> AuthFailed(const smtp::Reply& reply);

  Shard* const shard;
  const uint32_t slot;
  uint32_t generation = 0;
  bool in_use = false;
  int fd = -1;
  IpBytes peer{};
  std::string peer_text;
  const ListenerConfig* listener = nullptr;
  std::shared_ptr<const Config> config;  // the live configuration when the session started
  std::shared_ptr<const directory::Snapshot> snapshot;
  const directory::Account* account = nullptr;  // the account the session acts as
  std::unique_ptr<smtp::Session> session;
  std::deque<InputChunk> input;
  int32_t feeding_buffer = -1;  // the receive buffer being fed to the session right now
  absl::Time starved_since;     // when its receive last stopped for want of buffers

  // Bytes came in or went out since the shard's last tick; a connection that stays quiet for
  // a whole tick gives back its buffers (Shard::ReleaseIdleBuffers), once per quiet spell
  // (`idle` until it is active again).
  bool active = false;
  bool idle = false;
  bool recv_armed = false;
  bool recv_cancelling = false;
  bool send_inflight = false;
  bool shut_down = false;          // shutdown(2) done: waiting for the receive to end
  bool peer_eof = false;           // the peer finished sending; never receive again
  bool awaiting_proxy = false;     // a proxy_protocol listener: no session before the header
  std::string proxy_header;        // the header's bytes so far (bounded)
  bool delivery_inflight = false;  // its message is in a spool group commit
  bool counted = false;            // holds one of SharedState::connections_open
  policy::ConnectionGate::Handle ip_slot;      // this connection's place in the per-IP cap
  policy::ConnectionGate::Handle tenant_slot;  // its place in its tenant's cap, once authenticated
  bool auth_inflight = false;                  // a password check is out on the verifier pool
  const directory::Account* auth_candidate = nullptr;  // whom that check is for
  std::string auth_user;  // the user name of the AUTH in progress (for the throttle)
  // The AUTH in progress, for its log line: set by OnAuth, cleared by its answer.
  bool auth_attempting = false;
  smtp::Mechanism auth_mechanism = smtp::Mechanism::kPlain;
  // A failed AUTH's answer held back by the throttle until `delayed_due` (the shard's tick
  // gives it).
  std::optional<smtp::Reply> delayed_answer;
  absl::Time delayed_due = absl::InfiniteFuture();

  // Output: bytes queued (out_queue) and the buffer being sent (sending, never touched while
  // a send is in flight).
  std::string out_queue;
  std::string sending;
  size_t send_offset = 0;
  absl::Time send_started = absl::InfiniteFuture();  // of the send in flight
  std::string scratch;  // the session's replies on their way to out_queue

  // TLS (implicit, or after STARTTLS). Plaintext decrypted but not yet taken by the session
  // waits in plain_in[plain_offset..].
  std::unique_ptr<net::TlsStream> tls;
  absl::Time handshake_deadline = absl::InfiniteFuture();
  std::string plain_in;
  size_t plain_offset = 0;

  Message message;
};

}  // namespace chute::server
