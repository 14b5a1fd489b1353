// shard_io.cc: a connection's I/O on the shard's ring: receives into its transport, the
// transport pumped into the session, output to the socket, shutdown.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/log.h"
#include "server/connection.h"
#include "server/shard.h"

namespace chute::server {

void Shard::ArmRecv(Connection& conn) {
  if (conn.recv_armed || conn.shut_down || conn.peer_eof) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_recv_multishot(sqe, conn.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = buffers_->group_id();
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpRecv, conn.cookie()));
  conn.recv_armed = true;
  conn.recv_cancelling = false;
}

void Shard::CancelRecv(Connection& conn) {
  if (!conn.recv_armed || conn.recv_cancelling) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_cancel64(sqe, io::PackUserData(kOpRecv, conn.cookie()), 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpIgnore, 0));
  conn.recv_cancelling = true;
}

void Shard::OnRecv(Connection& conn, const io_uring_cqe& cqe) {
  bool more = cqe.flags & IORING_CQE_F_MORE;
  if (!more) {
    conn.recv_armed = false;
  }
  if (cqe.res > 0) {
    CHECK(cqe.flags & IORING_CQE_F_BUFFER);
    uint16_t buffer = static_cast<uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    Ref(buffer);
    conn.active = true;
    counters_.bytes_in.Add(cqe.res);
    if (conn.awaiting_proxy && !conn.shut_down) {
      OnProxyHeader(conn,
                    absl::string_view(buffers_->Buffer(buffer), static_cast<size_t>(cqe.res)));
      Unref(buffer);
    } else if (conn.session == nullptr || conn.shut_down) {
      Unref(buffer);  // a refused or closing connection: nothing to read any more
    } else {
      conn.transport.Received(buffer, static_cast<uint32_t>(cqe.res));  // takes the reference
      Process(conn);
    }
  } else if (cqe.res == -ENOBUFS) {
    // Back-pressure, not an error: receive again once buffers come back. If they came back
    // already (between the kernel's failure and this completion), no later return would wake
    // this connection: it receives again at once.
    counters_.recv_starved.Add(1);
    conn.starved_since = now_;
    if (buffers_out_ < buffers_->count()) {
      if (!conn.transport.input_full()) {
        ArmRecv(conn);
      }
    } else {
      starved_.push_back(conn.slot);
    }
  } else if (cqe.res == 0) {
    // The peer finished sending. Replies still owed (221 after a pipelined QUIT, say) go out
    // first; a session that did not end gets 421 and closes once its work is answered.
    conn.peer_eof = true;
    if (conn.session != nullptr && !conn.session->closed()) {
      conn.session->PeerGone();  // a body in progress ends here, not at data_timeout_s
    }
    if (conn.awaiting_proxy) {
      Shutdown(conn);  // gone before its PROXY header
    }
    Flush(conn);
  } else if (cqe.res < 0 && cqe.res != -ECANCELED) {
    conn.peer_eof = true;  // reset or another error: nothing more can be said either way
    if (conn.session != nullptr && !conn.session->closed()) {
      conn.session->PeerGone();
    }
    Shutdown(conn);
  }
  if (!conn.recv_armed && !conn.shut_down && cqe.res != -ENOBUFS && !conn.transport.input_full()) {
    ArmRecv(conn);
  }
  MaybeFree(conn);
}

void Shard::Process(Connection& conn) {
  if (conn.session == nullptr) {
    return;
  }
  for (;;) {
    net::PumpResult pumped = conn.transport.Pump(conn, now_);
    if (pumped.handshake_failed) {
      counters_.tls_failures.Add(1);
      LOG_DEBUG("%s: TLS handshake failed: %s", conn.peer_text, conn.transport.TlsError());
      Flush(conn);  // the alert, if any
      return Shutdown(conn);
    }
    if (pumped.peer_closed) {
      conn.peer_eof = true;  // close_notify or a broken record: nothing more will come
      conn.session->PeerGone();
    }
    if (pumped.handshake_done) {
      counters_.tls_handshakes.Add(1);
      if (conn.session->blocked() == smtp::Session::Blocked::kTlsHandshake) {
        conn.session->TlsStarted(now_);  // STARTTLS: the session starts over
      }
      continue;  // what came with the handshake's last flight is read now
    }
    if (pumped.starttls) {
      StartTls(conn);
      continue;  // the rest of the input is the handshake
    }
    break;
  }
  if (conn.session == nullptr || conn.shut_down) {
    return;
  }
  if (conn.session->closed()) {
    conn.transport.DropInput();
  }
  if (conn.transport.input_full()) {
    CancelRecv(conn);  // enough unread input held; the kernel keeps the rest in the socket
  } else if (!conn.recv_armed && !conn.session->closed()) {
    ArmRecv(conn);
  }
  Flush(conn);
}

bool Shard::ReleaseIdleBuffers(Connection& conn) {
  if (conn.send_inflight || !conn.transport.ReleaseIdle()) {
    return false;
  }
  std::string().swap(conn.scratch);
  if (conn.session != nullptr && conn.session->output().empty()) {
    std::string empty;
    conn.session->SwapOutput(empty);  // the session's old buffer leaves with `empty`
  }
  return true;
}

void Shard::TakeUpStartTls(Connection& conn) {
  if (conn.TakeStartTls()) {
    StartTls(conn);
  }
}

void Shard::StartTls(Connection& conn) {
  // The 220 goes out in plaintext; everything after it is TLS.
  MoveOutput(conn);
  conn.transport.StartTls(std::make_unique<net::TlsStream>(shared_->tls_context.load()),
                          now_ + kTlsHandshakeTimeout);
}

void Shard::MoveOutput(Connection& conn) {
  if (conn.session == nullptr || conn.session->output().empty() ||
      !conn.transport.accepts_output()) {
    return;  // implicit TLS: the greeting waits for the handshake
  }
  conn.scratch.clear();
  conn.session->SwapOutput(conn.scratch);
  if (!conn.transport.Write(conn.scratch)) {
    LOG_DEBUG("%s: TLS write failed: %s", conn.peer_text, conn.transport.TlsError());
  }
}

void Shard::Flush(Connection& conn) {
  if (conn.send_inflight || conn.fd < 0 || conn.shut_down || conn.awaiting_proxy) {
    return;
  }
  MoveOutput(conn);
  absl::string_view next = conn.transport.NextSend();
  if (next.empty()) {
    if (conn.session == nullptr || conn.session->closed()) {
      Shutdown(conn);  // everything said; the session is over
    }
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_send(sqe, conn.fd, next.data(), next.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpSend, conn.cookie()));
  conn.send_inflight = true;
  conn.send_started = now_;
}

void Shard::OnSend(Connection& conn, const io_uring_cqe& cqe) {
  conn.send_inflight = false;
  if (cqe.res < 0) {
    conn.transport.DropOutput();
    if (conn.session != nullptr && !conn.session->closed()) {
      conn.session->Shutdown();
    }
    Shutdown(conn);
    MaybeFree(conn);
    return;
  }
  counters_.bytes_out.Add(cqe.res);
  conn.active = true;
  conn.transport.Sent(static_cast<size_t>(cqe.res));
  conn.send_started = absl::InfiniteFuture();
  if (conn.transport.sent_all()) {
    Process(conn);  // input may have waited for the output to drain
  }
  Flush(conn);
  MaybeFree(conn);
}

void Shard::Shutdown(Connection& conn) {
  if (conn.shut_down) {
    return;
  }
  conn.shut_down = true;
  // Ends the multishot receive (it completes without F_MORE); the slot is freed once every
  // operation on it has completed.
  shutdown(conn.fd, SHUT_RDWR);
  CancelRecv(conn);
}

}  // namespace chute::server
