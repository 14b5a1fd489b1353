// runner.cc: one chute-load thread: an io_uring driving its connections and schedule.

#include "tools/chute-load/runner.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/histogram.h"
#include "net/socket.h"

namespace chute::load {
namespace {

enum Op : uint8_t { kOpConnect = 1, kOpRecv = 2, kOpSend = 3, kOpLinkTimeout = 4 };

// The cookie: the slot index (low 24 bits) and its generation, so that a completion for a
// slot's previous connection is never taken for the current one.
constexpr int kIndexBits = 24;
static_assert((1 << kIndexBits) > 100000, "kConnectionsMax must fit the index bits");

uint64_t Cookie(size_t index, uint32_t generation) {
  return (static_cast<uint64_t>(generation) << kIndexBits) | index;
}

std::string ErrnoName(int error) {
  const char* name = strerrorname_np(error);
  return name != nullptr ? name : absl::StrCat("errno ", error);
}

unsigned RingEntries(int connections) {
  unsigned entries = 64;
  while (entries < kRingEntriesMax && entries < static_cast<unsigned>(connections) * 2) {
    entries *= 2;
  }
  return entries;
}

}  // namespace

// Conn: one connection slot. Its bytes go through a net::Transport, the stream chuted's shards
// use, which reads from recv_buffer (buffer 0, the connection's only one, received into again
// once the transport gave it back) and feeds the session.
struct Runner::Conn : public net::ReceiveBuffers, public net::TransportReader {
  // Replies are short: decrypting kRecvBytes at a time spares clearing a larger buffer each
  // time (TlsStream::ReadPlaintext), which chute-load, the busier end, would feel.
  Conn() : transport(this, kRecvBytes) {}

  // net::ReceiveBuffers
  const char* Data(uint16_t /*buffer*/) const override { return recv_buffer; }
  void Unref(uint16_t /*buffer*/) override {}
  std::string& PlaintextSpare() override { return plaintext; }
  // net::TransportReader: the session takes everything it is given.
  bool Reading() const override { return session != nullptr; }
  size_t Feed(absl::string_view bytes, int /*buffer*/, absl::Time now) override {
    session->OnInput(bytes, absl::ToUnixMicros(now));
    return bytes.size();
  }
  // TakeStartTls: asked only while the transport is plain, so once per STARTTLS.
  bool TakeStartTls() override { return session->wants_tls(); }

  size_t index = 0;
  uint32_t generation = 0;
  bool in_use = false;
  bool closing = false;
  int fd = -1;
  int pending = 0;  // operations in the ring
  bool recv_armed = false;
  bool send_armed = false;
  int64_t tls_start_us = 0;
  int64_t deadline_us = 0;
  __kernel_timespec connect_timeout{};
  sockaddr_storage address{};
  socklen_t address_length = 0;
  std::unique_ptr<ClientSession> session;
  net::Transport transport;
  std::string plaintext;  // the transport's plaintext buffer (PlaintextSpare)
  char recv_buffer[kRecvBytes];
};

Runner::Runner(RunnerConfig config, Schedule schedule)
    : config_(std::move(config)), schedule_(schedule), rng_(config_.seed) {}

Runner::~Runner() {
  for (auto& conn : conns_) {
    if (conn->fd >= 0) {
      close(conn->fd);
    }
  }
}

bool Runner::Take(int64_t now_us, Job* job, uint64_t* size_bytes) {
  if (stopping_ || !schedule_.Take(now_us, job)) {
    return false;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  *size_bytes = PickSize(config_.sizes, uniform(rng_));
  return true;
}

bool Runner::Exhausted(int64_t now_us) const { return stopping_ || schedule_.Exhausted(now_us); }

absl::Status Runner::Run() {
  absl::StatusOr<std::unique_ptr<io::Ring>> ring =
      io::Ring::Create(RingEntries(config_.connections));
  if (!ring.ok()) {
    return ring.status();
  }
  ring_ = std::move(*ring);
  stats_.run_errors = config_.run_errors;
  if (config_.tls != TlsMode::kNone) {
    tls_context_ = net::TlsContext::NewUnverifiedClient();
  }
  conns_.reserve(static_cast<size_t>(config_.connections));
  for (int i = 0; i < config_.connections; ++i) {
    conns_.push_back(std::make_unique<Conn>());
    conns_.back()->index = static_cast<size_t>(i);
    free_.push_back(static_cast<size_t>(config_.connections - 1 - i));
  }
  int64_t now_us = MonotonicMicros();
  last_sweep_us_ = now_us;
  for (;;) {
    Maintain(now_us);
    if (active_ == 0 && !MayOpenMore(now_us)) {
      break;
    }
    // Wait for a completion, or (open loop) until the next message falls due. A message that
    // is due already waits for a connection to come free, which a completion announces:
    // waiting 0 µs for it would spin (it did: 2-3 s of system time per 5,000 messages with
    // two threads in closed loop, where every message is "due").
    int64_t wait_us = kTickUs;
    if (!stopping_ && schedule_.open_loop() && !schedule_.Exhausted(now_us)) {
      int64_t due_in_us = schedule_.NextDueUs(now_us) - now_us;
      if (due_in_us > 0) {
        wait_us = std::min(due_in_us, kTickUs);
      }
    }
    __kernel_timespec ts{wait_us / 1'000'000, (wait_us % 1'000'000) * 1000};
    io_uring_cqe* cqe = nullptr;
    int ret = io_uring_submit_and_wait_timeout(ring_->raw(), &cqe, 1, &ts, nullptr);
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY) {
      return io::ErrnoStatus(ret, "io_uring_submit_and_wait_timeout");
    }
    now_us = MonotonicMicros();
    ring_->ForEachCqe([&](const io_uring_cqe& c) { OnCompletion(c.user_data, c.res, now_us); });
  }
  return absl::OkStatus();
}

bool Runner::MayOpenMore(int64_t now_us) const {
  if (stopping_ || schedule_.Exhausted(now_us)) {
    return false;
  }
  if (config_.connections_total != 0 && opened_ >= config_.connections_total) {
    return false;
  }
  if (opened_ >= static_cast<uint64_t>(config_.connections) && !config_.reopen) {
    return false;
  }
  return true;
}

size_t Runner::OnTheWay() const {
  size_t on_the_way = 0;
  for (const auto& conn : conns_) {
    if (conn->in_use && !conn->closing && conn->session->messages_done() == 0 &&
        conn->session->phase() < ClientSession::Phase::kMessage) {
      ++on_the_way;
    }
  }
  return on_the_way;
}

bool Runner::WantsNewConnection(int64_t now_us, size_t on_the_way) const {
  if (free_.empty() || !MayOpenMore(now_us)) {
    return false;
  }
  // On demand: only as many connections on their way as there are messages for them.
  return !config_.on_demand || schedule_.Available(now_us) > on_the_way;
}

void Runner::Maintain(int64_t now_us) {
  if (!stopping_ && config_.errors_max != 0 && config_.run_errors != nullptr &&
      config_.run_errors->load(std::memory_order_relaxed) >= config_.errors_max) {
    // The error budget is spent: no new messages or connections; sessions finish and quit.
    stopping_ = true;
    for (auto& conn : conns_) {
      if (conn->in_use && !conn->closing) {
        conn->session->Stop(now_us);
        Pump(*conn, now_us);
      }
    }
  }
  // Counted once per pass (a scan), then kept up to date as connections open.
  size_t on_the_way = config_.on_demand ? OnTheWay() : 0;
  while (WantsNewConnection(now_us, on_the_way)) {
    size_t index = free_.back();
    free_.pop_back();
    Open(index, now_us);
    ++on_the_way;
  }
  // Ready sessions wait only for an open-loop message to fall due or for the end (in closed
  // loop a session takes its next message itself as soon as it is free).
  bool due = (schedule_.open_loop() && schedule_.NextDueUs(now_us) <= now_us) || Exhausted(now_us);
  bool sweep = now_us - last_sweep_us_ >= 10 * kTickUs;
  if (!due && !sweep && !(config_.session.hold && !quiescent_called_)) {
    return;
  }
  if (sweep) {
    last_sweep_us_ = now_us;
  }
  bool all_quiet = true;
  for (auto& conn_ptr : conns_) {
    Conn& conn = *conn_ptr;
    if (!conn.in_use || conn.closing) {
      continue;
    }
    if (due && conn.session->ready()) {
      conn.session->Poke(now_us);
      Pump(conn, now_us);
    }
    if (conn.in_use && !conn.closing && conn.session->waiting()) {
      all_quiet = false;
      if (now_us > conn.deadline_us) {
        conn.session->OnClosed("timeout", now_us);
        Close(conn, "timeout", now_us);
      }
    }
  }
  if (config_.session.hold && !quiescent_called_ && all_quiet &&
      (opened_ >= static_cast<uint64_t>(config_.connections) || !MayOpenMore(now_us))) {
    quiescent_called_ = true;
    if (config_.on_quiescent) {
      config_.on_quiescent();
    }
    stopping_ = true;
    int64_t later_us = MonotonicMicros();
    for (auto& conn : conns_) {
      if (conn->in_use && !conn->closing) {
        conn->session->Stop(later_us);
        Pump(*conn, later_us);
      }
    }
  }
}

void Runner::Open(size_t index, int64_t now_us) {
  Conn& conn = *conns_[index];
  ++opened_;
  ++active_;
  ++stats_.connections_started;
  conn.in_use = true;
  conn.closing = false;
  ++conn.generation;
  conn.session = std::make_unique<ClientSession>(config_.session, this, &stats_);
  conn.session->Start(now_us);
  conn.deadline_us = now_us + config_.timeout_us;
  conn.address_length = net::ToSockaddr(config_.target, &conn.address);
  conn.fd = socket(conn.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (conn.fd < 0) {
    stats_.AddError(absl::StrCat("connect ", ErrnoName(errno)));
    conn.session->Abandon();
    Close(conn, "socket", now_us);
    return MaybeFree(conn);
  }
  int one = 1;
  setsockopt(conn.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (!config_.sources.empty()) {
    size_t per = static_cast<size_t>(std::max(1, config_.per_source_max));
    size_t source = std::min((opened_ - 1) / per, config_.sources.size() - 1);
    sockaddr_storage local{};
    socklen_t length = net::ToSockaddr(HostPort{config_.sources[source], 0}, &local);
    if (bind(conn.fd, reinterpret_cast<sockaddr*>(&local), length) != 0) {
      stats_.AddError(absl::StrCat("connect bind ", ErrnoName(errno)));
      conn.session->Abandon();
      Close(conn, "bind", now_us);
      return MaybeFree(conn);
    }
  }
  // The connect carries a linked timeout: a SYN that is never answered ends as -ECANCELED.
  ring_->Reserve(2);
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_connect(sqe, conn.fd, reinterpret_cast<sockaddr*>(&conn.address),
                        conn.address_length);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpConnect, Cookie(index, conn.generation)));
  sqe->flags |= IOSQE_IO_LINK;
  conn.connect_timeout = {config_.timeout_us / 1'000'000, (config_.timeout_us % 1'000'000) * 1000};
  io_uring_sqe* timeout = ring_->Sqe();
  io_uring_prep_link_timeout(timeout, &conn.connect_timeout, 0);
  io_uring_sqe_set_data64(timeout,
                          io::PackUserData(kOpLinkTimeout, Cookie(index, conn.generation)));
  conn.pending += 2;
}

void Runner::OnCompletion(uint64_t user_data, int res, int64_t now_us) {
  uint64_t cookie = io::UserDataCookie(user_data);
  size_t index = cookie & ((uint64_t{1} << kIndexBits) - 1);
  uint32_t generation = static_cast<uint32_t>(cookie >> kIndexBits);
  if (index >= conns_.size()) {
    return;
  }
  Conn& conn = *conns_[index];
  if (conn.generation != generation) {
    return;  // cannot happen: a slot is reused only once its operations are all back
  }
  --conn.pending;
  switch (io::UserDataOp(user_data)) {
    case kOpLinkTimeout:
      break;
    case kOpConnect:
      if (res < 0) {
        stats_.AddError(absl::StrCat("connect ", ErrnoName(-res)));
        conn.session->Abandon();
        Close(conn, "connect", now_us);
        break;
      }
      ++stats_.connections_established;
      if (config_.tls == TlsMode::kImplicit) {
        StartTls(conn, now_us);
      }
      if (!conn.closing) {
        ArmRecv(conn);
        Pump(conn, now_us);
      }
      break;
    case kOpRecv:
      conn.recv_armed = false;
      if (conn.closing) {
        break;
      }
      if (res <= 0) {
        std::string why = res == 0 ? "closed" : absl::StrCat("recv ", ErrnoName(-res));
        conn.session->OnClosed(why, now_us);
        Close(conn, why, now_us);
        break;
      }
      conn.deadline_us = now_us + config_.timeout_us;
      conn.transport.Received(0, static_cast<uint32_t>(res));
      Pump(conn, now_us);
      if (!conn.closing) {
        ArmRecv(conn);
      }
      break;
    case kOpSend:
      conn.send_armed = false;
      if (conn.closing) {
        break;
      }
      if (res < 0) {
        std::string why = absl::StrCat("send ", ErrnoName(-res));
        conn.session->OnClosed(why, now_us);
        Close(conn, why, now_us);
        break;
      }
      conn.transport.Sent(static_cast<size_t>(res));
      Pump(conn, now_us);
      break;
  }
  MaybeFree(conn);
}

void Runner::StartTls(Conn& conn, int64_t now_us) {
  conn.tls_start_us = now_us;
  conn.transport.StartTls(net::TlsStream::NewClient(tls_context_),
                          absl::FromUnixMicros(conn.deadline_us));
}

void Runner::Pump(Conn& conn, int64_t now_us) {
  if (conn.closing) {
    return;
  }
  for (;;) {
    net::PumpResult pumped = conn.transport.Pump(conn, absl::FromUnixMicros(now_us));
    if (pumped.handshake_failed) {
      stats_.AddError("tls handshake failed");
      conn.session->Abandon();
      return Close(conn, "tls", now_us);
    }
    if (pumped.peer_closed) {
      std::string why = pumped.close_notify ? "closed" : "tls error";
      conn.session->OnClosed(why, now_us);
      return Close(conn, why, now_us);
    }
    if (pumped.handshake_done) {
      stats_.tls_us.Record(now_us - conn.tls_start_us);
      conn.session->OnTlsDone(now_us);
      continue;
    }
    if (pumped.starttls) {
      conn.deadline_us = now_us + config_.timeout_us;  // implicit TLS keeps the connect's
      StartTls(conn, now_us);                          // the ClientHello goes out at the next Pump
      continue;
    }
    break;
  }
  std::string* out = conn.session->output();
  if (!out->empty() && conn.transport.accepts_output()) {
    conn.transport.Write(*out);
    out->clear();
    conn.deadline_us = now_us + config_.timeout_us;
  }
  ArmSend(conn);
  if (conn.session->done() && conn.transport.NextSend().empty()) {
    Close(conn, "done", now_us);
  }
}

void Runner::ArmRecv(Conn& conn) {
  // recv_buffer is received into again only once the transport has read all of it.
  if (conn.recv_armed || conn.closing || conn.transport.has_input()) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_recv(sqe, conn.fd, conn.recv_buffer, kRecvBytes, 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpRecv, Cookie(conn.index, conn.generation)));
  conn.recv_armed = true;
  ++conn.pending;
}

void Runner::ArmSend(Conn& conn) {
  if (conn.send_armed || conn.closing) {
    return;
  }
  absl::string_view next = conn.transport.NextSend();
  if (next.empty()) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_send(sqe, conn.fd, next.data(), next.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpSend, Cookie(conn.index, conn.generation)));
  conn.send_armed = true;
  ++conn.pending;
}

void Runner::Close(Conn& conn, absl::string_view /*why*/, int64_t /*now_us*/) {
  if (conn.closing) {
    return;
  }
  conn.closing = true;
  if (conn.fd >= 0) {
    // Wakes the receive still in the ring; the slot is freed once every operation is back.
    shutdown(conn.fd, SHUT_RDWR);
  }
}

void Runner::MaybeFree(Conn& conn) {
  if (!conn.closing || conn.pending != 0 || !conn.in_use) {
    return;
  }
  if (conn.fd >= 0) {
    close(conn.fd);
    conn.fd = -1;
  }
  conn.session.reset();
  conn.transport.Reset();
  conn.recv_armed = conn.send_armed = false;
  conn.in_use = false;
  conn.closing = false;
  --active_;
  free_.push_back(conn.index);
}

}  // namespace chute::load
