#pragma once

// Connection: one accepted socket on a shard: its net::Transport (receive chunks pinned in
// the shard's buffer ring, output, TLS), its smtp::Session, and the Submission that answers
// the session (submission.h). Shard-owned; never shared.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/config.h"
#include "base/net_address.h"
#include "directory/directory.h"
#include "net/tls.h"
#include "net/transport.h"
#include "policy/connection_gate.h"
#include "server/submission.h"
#include "smtp/session.h"
#include "spool/spool.h"

namespace chute::server {

class Shard;

// Connection: the shard's slot for one accepted socket: its transport, the admission's hold
// on the per-IP cap, and the Submission that answers its session. It is the Submission's
// SessionControl and the transport's reader (it feeds the session).
struct Connection : public SessionControl, public net::TransportReader {
  Connection(Shard* shard, uint32_t slot, const SubmissionServices* services,
             net::ReceiveBuffers* buffers)
      : shard(shard), slot(slot), transport(buffers), submission(services, this) {}

  // SessionControl: STARTTLS is taken up by the shard once the session's Feed returns (the
  // 220 goes out in plaintext first).
  void StartTls() override { starttls_pending = true; }
  absl::string_view TlsVersion() const override { return transport.TlsVersion(); }
  bool PeerGone() const override { return peer_eof; }

  // net::TransportReader: the session reads; a body may pin the receive buffer it lies in.
  bool Reading() const override {
    return session != nullptr && session->blocked() == smtp::Session::Blocked::kNo;
  }
  size_t Feed(absl::string_view bytes, int buffer, absl::Time now) override {
    submission.FeedingFrom(buffer);
    size_t consumed = session->Feed(bytes, now);
    submission.FeedingFrom(-1);
    return consumed;
  }
  bool TakeStartTls() override { return std::exchange(starttls_pending, false); }

  // cookie: names this connection (slot and generation) in completions that come back later.
  uint64_t cookie() const { return (static_cast<uint64_t>(generation & 0xffffff) << 32) | slot; }

  Shard* const shard;
  const uint32_t slot;
  uint32_t generation = 0;
  bool in_use = false;
  int fd = -1;
  IpBytes peer{};
  std::string peer_text;
  const ListenerConfig* listener = nullptr;
  std::unique_ptr<smtp::Session> session;
  net::Transport transport;
  absl::Time starved_since;  // when its receive last stopped for want of buffers

  // Bytes came in or went out since the shard's last tick; a connection that stays quiet for
  // a whole tick gives back its buffers (Shard::ReleaseIdleBuffers), once per quiet spell
  // (`idle` until it is active again).
  bool active = false;
  bool idle = false;
  bool recv_armed = false;
  bool recv_cancelling = false;
  bool send_inflight = false;
  bool shut_down = false;       // shutdown(2) done: waiting for the receive to end
  bool peer_eof = false;        // the peer finished sending; never receive again
  bool awaiting_proxy = false;  // a proxy_protocol listener: no session before the header
  absl::Time proxy_deadline = absl::InfiniteFuture();  // when the header must be in
  std::string proxy_header;                            // the header's bytes so far (bounded)
  bool counted = false;                                // holds one of SharedState::connections_open
  policy::ConnectionGate::Handle ip_slot;              // this connection's place in the per-IP cap
  absl::Time send_started = absl::InfiniteFuture();    // of the send in flight
  std::string scratch;  // the session's replies on their way to the transport

  bool starttls_pending = false;  // the session accepted STARTTLS during its Feed

  Submission submission;
};

}  // namespace chute::server
