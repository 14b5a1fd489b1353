// transport.cc: a connection's bytes: receive, plain or TLS into the session, output, send.

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
  conn.starttls_pending = false;
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
      conn.input.push_back(InputChunk{buffer, 0, static_cast<uint32_t>(cqe.res)});
      Process(conn);
    }
  } else if (cqe.res == -ENOBUFS) {
    // Back-pressure, not an error: receive again once buffers come back. If they came back
    // already (between the kernel's failure and this completion), no later return would wake
    // this connection: it receives again at once.
    counters_.recv_starved.Add(1);
    conn.starved_since = now_;
    if (buffers_out_ < buffers_->count()) {
      if (conn.input.size() < kInputChunksMax) {
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
  if (!conn.recv_armed && !conn.shut_down && cqe.res != -ENOBUFS &&
      conn.input.size() < kInputChunksMax) {
    ArmRecv(conn);
  }
  MaybeFree(conn);
}

void Shard::Process(Connection& conn) {
  if (conn.session == nullptr) {
    return;
  }
  if (conn.tls != nullptr) {
    ProcessTls(conn);
  } else {
    ProcessPlain(conn);
  }
  if (conn.session == nullptr || conn.shut_down) {
    return;
  }
  if (conn.session->closed()) {
    while (!conn.input.empty()) {
      uint16_t buffer = conn.input.front().buffer;
      conn.input.pop_front();
      Unref(buffer);
    }
  }
  if (conn.input.size() >= kInputChunksMax) {
    CancelRecv(conn);  // enough unread input held; the kernel keeps the rest in the socket
  } else if (!conn.recv_armed && !conn.session->closed()) {
    ArmRecv(conn);
  }
  Flush(conn);
}

void Shard::ProcessPlain(Connection& conn) {
  smtp::Session& session = *conn.session;
  while (!conn.input.empty() && session.blocked() == smtp::Session::Blocked::kNo) {
    InputChunk& chunk = conn.input.front();
    absl::string_view view(buffers_->Buffer(chunk.buffer) + chunk.offset, chunk.length);
    conn.submission.FeedingFrom(chunk.buffer);
    size_t consumed = session.Feed(view, now_);
    conn.submission.FeedingFrom(-1);
    TakeUpStartTls(conn);
    chunk.offset += static_cast<uint32_t>(consumed);
    chunk.length -= static_cast<uint32_t>(consumed);
    if (chunk.length == 0) {
      uint16_t buffer = chunk.buffer;
      conn.input.pop_front();
      Unref(buffer);
    } else if (consumed == 0) {
      break;
    }
    if (conn.tls != nullptr) {
      // STARTTLS was accepted: what followed it in plaintext was discarded by the session,
      // and everything from here on is TLS.
      return ProcessTls(conn);
    }
  }
}

void Shard::ProcessTls(Connection& conn) {
  net::TlsStream& tls = *conn.tls;
  // Ciphertext from the receive buffers into the TLS stream, a bounded amount ahead.
  while (!conn.input.empty() && tls.pending_ciphertext() < kTlsCiphertextMax) {
    InputChunk chunk = conn.input.front();
    conn.input.pop_front();
    tls.PutCiphertext(
        absl::string_view(buffers_->Buffer(chunk.buffer) + chunk.offset, chunk.length));
    Unref(chunk.buffer);
  }
  if (!tls.handshake_done()) {
    net::TlsStream::Result result = tls.Handshake();
    tls.TakeCiphertext(&conn.out_queue);
    if (result == net::TlsStream::Result::kError || result == net::TlsStream::Result::kClosed) {
      counters_.tls_failures.Add(1);
      LOG_DEBUG("%s: TLS handshake failed: %s", conn.peer_text, tls.Error());
      Flush(conn);  // the alert, if any
      return Shutdown(conn);
    }
    if (result == net::TlsStream::Result::kWantMore) {
      return;
    }
    counters_.tls_handshakes.Add(1);
    conn.handshake_deadline = absl::InfiniteFuture();
    if (conn.session->blocked() == smtp::Session::Blocked::kTlsHandshake) {
      conn.session->TlsStarted(now_);  // STARTTLS: the session starts over
    }
  }
  smtp::Session& session = *conn.session;
  while (session.blocked() == smtp::Session::Blocked::kNo) {
    if (conn.plain_offset == conn.plain_in.size()) {
      BorrowPlaintextBuffer(conn);
      net::TlsStream::Result result = tls.ReadPlaintext(&conn.plain_in, kTlsPlaintextChunkBytes);
      if (result == net::TlsStream::Result::kWantMore) {
        break;
      }
      if (result != net::TlsStream::Result::kOk) {
        conn.peer_eof = true;  // close_notify or a broken record: nothing more will come
        session.PeerGone();
        break;
      }
    }
    absl::string_view view(conn.plain_in);
    size_t consumed = session.Feed(view.substr(conn.plain_offset), now_);
    conn.plain_offset += consumed;
    if (consumed == 0) {
      break;
    }
  }
  if (conn.plain_offset == conn.plain_in.size()) {
    ReturnPlaintextBuffer(conn);
  }
}

bool Shard::ReleaseIdleBuffers(Connection& conn) {
  if (conn.send_inflight || !conn.input.empty() || conn.send_offset != conn.sending.size() ||
      !conn.out_queue.empty()) {
    return false;
  }
  std::string().swap(conn.sending);
  conn.send_offset = 0;
  std::string().swap(conn.out_queue);
  std::string().swap(conn.scratch);
  if (conn.session != nullptr && conn.session->output().empty()) {
    std::string empty;
    conn.session->SwapOutput(empty);  // the session's old buffer leaves with `empty`
  }
  if (conn.tls != nullptr) {
    conn.tls->ReleaseBuffers();
  }
  return true;
}

void Shard::BorrowPlaintextBuffer(Connection& conn) {
  if (conn.plain_in.capacity() < plain_spare_.capacity()) {
    conn.plain_in.swap(plain_spare_);
  }
  conn.plain_in.clear();
  conn.plain_offset = 0;
}

void Shard::ReturnPlaintextBuffer(Connection& conn) {
  conn.plain_in.clear();
  conn.plain_offset = 0;
  if (plain_spare_.capacity() < conn.plain_in.capacity()) {
    conn.plain_in.swap(plain_spare_);
  } else {
    std::string().swap(conn.plain_in);  // the shard has one already: this one goes back
  }
}

void Shard::TakeUpStartTls(Connection& conn) {
  if (conn.starttls_pending) {
    conn.starttls_pending = false;
    StartTls(conn);
  }
}

void Shard::StartTls(Connection& conn) {
  // The 220 goes out in plaintext; everything after it is TLS.
  MoveOutput(conn);
  conn.tls = std::make_unique<net::TlsStream>(shared_->tls_context.load());
  conn.handshake_deadline = now_ + kTlsHandshakeTimeout;
}

void Shard::MoveOutput(Connection& conn) {
  if (conn.session == nullptr || conn.session->output().empty()) {
    return;
  }
  if (conn.tls != nullptr && !conn.tls->handshake_done()) {
    return;  // implicit TLS: the greeting waits for the handshake
  }
  conn.scratch.clear();
  conn.session->SwapOutput(conn.scratch);
  if (conn.tls == nullptr) {
    conn.out_queue.append(conn.scratch);
  } else if (conn.tls->Write(conn.scratch) != net::TlsStream::Result::kOk) {
    LOG_DEBUG("%s: TLS write failed: %s", conn.peer_text, conn.tls->Error());
  }
}

void Shard::Flush(Connection& conn) {
  if (conn.send_inflight || conn.fd < 0 || conn.shut_down || conn.awaiting_proxy) {
    return;
  }
  MoveOutput(conn);
  if (conn.tls != nullptr) {
    conn.tls->TakeCiphertext(&conn.out_queue);
  }
  if (conn.send_offset == conn.sending.size()) {
    conn.sending.clear();
    conn.send_offset = 0;
    conn.sending.swap(conn.out_queue);
  }
  if (conn.sending.empty()) {
    if (conn.session == nullptr || conn.session->closed()) {
      Shutdown(conn);  // everything said; the session is over
    }
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_send(sqe, conn.fd, conn.sending.data() + conn.send_offset,
                     conn.sending.size() - conn.send_offset, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpSend, conn.cookie()));
  conn.send_inflight = true;
  conn.send_started = now_;
}

void Shard::OnSend(Connection& conn, const io_uring_cqe& cqe) {
  conn.send_inflight = false;
  if (cqe.res < 0) {
    conn.sending.clear();
    conn.out_queue.clear();
    conn.send_offset = 0;
    if (conn.session != nullptr && !conn.session->closed()) {
      conn.session->Shutdown();
    }
    Shutdown(conn);
    MaybeFree(conn);
    return;
  }
  counters_.bytes_out.Add(cqe.res);
  conn.active = true;
  conn.send_offset += static_cast<size_t>(cqe.res);
  conn.send_started = absl::InfiniteFuture();
  if (conn.send_offset == conn.sending.size()) {
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
