// shard.cc: one shard: event loop, accept, admission, transport, TLS, group commit, hand-over.

#include "server/shard.h"

#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "auth/jwt.h"
#include "base/check.h"
#include "base/log.h"
#include "base/memory.h"
#include "net/proxy_protocol.h"
#include "net/socket.h"
#include "policy/admission.h"
#include "policy/hve_policy.h"
#include "server/connection.h"
#include "smtp/parser.h"

namespace chute::server {
namespace {

uint64_t Cookie(const Connection& conn) {
  return (static_cast<uint64_t>(conn.generation & 0xffffff) << 32) | conn.slot;
}

smtp::SessionOptions SessionOptionsFor(const Config& config, const ListenerConfig& listener) {
  smtp::SessionOptions options;
  options.hostname = config.server.hostname;
  options.message_size_bytes = static_cast<uint64_t>(config.limits.message_size_bytes);
  options.recipients_per_message = static_cast<uint32_t>(config.limits.recipients_per_message);
  options.errors_per_session = static_cast<uint32_t>(config.limits.errors_per_session);
  options.auth_failures_per_session =
      static_cast<uint32_t>(config.limits.auth_failures_per_session);
  options.command_timeout = absl::Seconds(config.limits.command_timeout_s);
  options.first_command_timeout = absl::Seconds(config.limits.first_command_timeout_s);
  options.data_rate_min_bytes_per_s =
      static_cast<uint64_t>(config.limits.data_rate_min_bytes_per_s);
  options.data_timeout = absl::Seconds(config.limits.data_timeout_s);
  options.session_timeout = absl::Seconds(config.limits.session_timeout_s);
  options.starttls_offered = listener.tls == TlsMode::kStartTls;
  options.tls_active = listener.tls == TlsMode::kImplicit;
  options.tls_required = listener.tls != TlsMode::kNone;
  options.normalize_bare_lf = listener.bare_lf_normalize;
  return options;
}

}  // namespace

// --- Shard ------------------------------------------------------------------------------------

Shard::Shard(int index, SharedState* shared)
    : index_(index), shared_(shared), boot_us_(shared->boot_us) {
  committer_ = std::make_unique<spool::GroupCommitter>(
      std::make_unique<spool::SegmentWriter>(
          shared->config.spool.dir, shared->spool_dir_fd, index, boot_us_,
          static_cast<uint64_t>(shared->config.spool.segment_bytes), shared->gauges),
      absl::Microseconds(shared->config.spool.group_commit_delay_us),
      spool::QueueIdMinter(boot_us_, index));
  handover_ = shared->queue->AddProducer();
  services_ = SubmissionServices{this, this, this, this, &counters_, &replies_, &now_};
}

void Shard::AdoptSegment(std::shared_ptr<spool::Segment> segment) {
  committer_->Adopt(std::move(segment));
}

Shard::~Shard() {
  Join();
  for (int fd : listener_fds_) {
    if (fd >= 0) {
      close(fd);
    }
  }
  if (wake_fd_ >= 0) {
    close(wake_fd_);
  }
}

absl::Status Shard::OpenListeners() {
  for (const ListenerConfig& listener : shared_->config.listeners) {
    absl::StatusOr<int> fd = net::OpenListener(listener.host_port);
    if (!fd.ok()) {
      return fd.status();
    }
    listener_fds_.push_back(*fd);
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    return io::ErrnoStatus(errno, "eventfd");
  }
  return absl::OkStatus();
}

void Shard::Start() {
  thread_ = std::thread([this] {
    NameThisThread(absl::StrCat("chute-shard-", index_));
    Run();
  });
}

void Shard::RequestStop() {
  stop_requested_.store(true);
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    LOG_WARNING_EVERY(10, "shard %d: cannot wake it: %s", index_, std::strerror(errno));
  }
}

void Shard::Join() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Shard::OnVerified(uint64_t cookie, bool ok) {
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    verified_.emplace_back(cookie, ok);
  }
  Wake();
}

void Shard::Wake() {
  uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    LOG_WARNING_EVERY(10, "shard %d: cannot wake it: %s", index_, std::strerror(errno));
  }
}

absl::Status Shard::Setup() {
  absl::StatusOr<std::unique_ptr<io::Ring>> ring = io::Ring::Create(kRingEntries);
  if (!ring.ok()) {
    return ring.status();
  }
  ring_ = std::move(*ring);
  if (index_ == 0) {
    LOG_INFO("io_uring set up as %s", ring_->Mode());
  }
  const ServerConfig& server = shared_->config.server;
  absl::StatusOr<std::unique_ptr<io::BufferRing>> buffers =
      io::BufferRing::Create(*ring_, 0, static_cast<uint32_t>(server.recv_buffers),
                             static_cast<uint32_t>(server.recv_buffer_bytes));
  if (!buffers.ok()) {
    return buffers.status();
  }
  buffers_ = std::move(*buffers);
  buffer_refs_.assign(buffers_->count(), 0);
  for (size_t i = 0; i < listener_fds_.size(); ++i) {
    ArmAccept(i);
  }
  ArmWake();
  ArmTick();
  return absl::OkStatus();
}

void Shard::Run() {
  absl::Status status = Setup();
  if (!status.ok()) {
    LOG_ERROR("shard %d: cannot start: %s", index_, status.ToString());
    failed_.store(true);
    return;
  }
  now_ = absl::Now();
  int64_t busy_since_us = MonotonicMicros();
  while (!(stopping_ && live_connections_ == 0)) {
    counters_.loop_turns.Add(1);  // the watchdog's heartbeat (chuted's service notifier)
    int64_t waiting_since_us = MonotonicMicros();
    counters_.busy_us.Add(waiting_since_us - busy_since_us);
    int rc = ring_->SubmitAndWait(1);
    busy_since_us = MonotonicMicros();
    if (rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY) {
      LOG_ERROR("shard %d: io_uring_submit_and_wait: %s", index_, std::strerror(-rc));
      failed_.store(true);
      break;
    }
    now_ = absl::Now();  // one clock read per batch of completions
    ring_->ForEachCqe([this](const io_uring_cqe& cqe) { Dispatch(cqe); });
    if (stop_requested_.load(std::memory_order_relaxed) && !stopping_) {
      BeginStop();
    }
    MaybeCommit();
    FlushHandOver();
  }
  shared_->usage.Merge(usage_);
  HandOverTrace();
  // Everything has ended; anything still in the ring dies with it.
}

void Shard::Dispatch(const io_uring_cqe& cqe) {
  uint64_t cookie = io::UserDataCookie(cqe.user_data);
  switch (io::UserDataOp(cqe.user_data)) {
    case kOpAccept:
      return OnAccept(static_cast<size_t>(cookie), cqe);
    case kOpWake:
      return OnWake();
    case kOpTick:
      return OnTick();
    case kOpRecv:
      if (Connection* conn = Lookup(cookie)) {
        OnRecv(*conn, cqe);
      }
      return;
    case kOpSend:
      if (Connection* conn = Lookup(cookie)) {
        OnSend(*conn, cqe);
      }
      return;
    case kOpSpool:
      return OnSpoolCqe(cqe);
    case kOpAcceptRetry:
      if (!stopping_) {
        ArmAccept(static_cast<size_t>(cookie));
      }
      return;
    case kOpCommitTimer:
      commit_timer_armed_ = false;
      return;
    default:
      return;
  }
}

Connection* Shard::Lookup(uint64_t cookie) {
  uint32_t slot = static_cast<uint32_t>(cookie & 0xffffffff);
  uint32_t generation = static_cast<uint32_t>(cookie >> 32);
  if (slot >= connections_.size()) {
    return nullptr;
  }
  Connection* conn = connections_[slot].get();
  return conn->in_use && (conn->generation & 0xffffff) == generation ? conn : nullptr;
}

void Shard::ArmAccept(size_t listener) {
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_multishot_accept(sqe, listener_fds_[listener], nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpAccept, listener));
}

void Shard::ArmAcceptRetry(size_t listener) {
  accept_pause_.tv_sec = 0;
  accept_pause_.tv_nsec = absl::ToInt64Nanoseconds(kAcceptPause);
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_timeout(sqe, &accept_pause_, 0, 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpAcceptRetry, listener));
}

void Shard::ArmWake() {
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_read(sqe, wake_fd_, &wake_value_, sizeof(wake_value_), 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpWake, 0));
}

void Shard::ArmTick() {
  tick_.tv_sec = absl::ToInt64Seconds(kTickInterval);
  tick_.tv_nsec = 0;
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_timeout(sqe, &tick_, 0, 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpTick, 0));
}

void Shard::OnWake() {
  std::vector<std::pair<uint64_t, bool>> verified;
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    verified.swap(verified_);
  }
  for (const auto& [cookie, ok] : verified) {
    Connection* conn = Lookup(cookie);
    CHECK_MSG(conn != nullptr, "a password check finished for a connection that is gone");
    conn->submission.OnVerified(ok);
    Process(*conn);
    MaybeFree(*conn);
  }
  ArmWake();
}

void Shard::RearmStarved() {
  // A safety net: every connection still waiting for a buffer tries again.
  std::deque<uint32_t> starved;
  starved.swap(starved_);
  for (uint32_t slot : starved) {
    Connection& conn = *connections_[slot];
    if (conn.in_use && !conn.shut_down && conn.input.size() < kInputChunksMax) {
      NoteStarvedWait(conn);
      ArmRecv(conn);
    }
  }
}

void Shard::NoteStarvedWait(Connection& conn) {
  if (conn.session != nullptr) {
    conn.session->RestartDataRateWindow(now_);
  }
  uint64_t waited_ms = static_cast<uint64_t>(
      std::max<int64_t>(absl::ToInt64Milliseconds(now_ - conn.starved_since), 0));
  uint64_t longest = counters_.recv_starved_max_ms.Get();
  if (waited_ms > longest) {
    counters_.recv_starved_max_ms.Add(static_cast<int64_t>(waited_ms - longest));
  }
}

void Shard::OnTick() {
  committer_->Reclaim();
  RearmStarved();
  ReleaseIdleMemory();
  if (!usage_.empty()) {
    shared_->usage.Merge(usage_);
  }
  HandOverTrace();
  absl::Duration send_timeout = absl::Seconds(shared_->live.load()->limits.command_timeout_s);
  for (const std::unique_ptr<Connection>& conn : connections_) {
    if (conn->in_use && conn->shut_down) {
      MaybeFree(*conn);  // a connection shut down here earlier whose operations have ended
      continue;
    }
    if (!conn->in_use) {
      continue;
    }
    // A peer that stops reading cannot hold a connection: a send that makes no progress for
    // a command timeout ends it (the shutdown completes the send with an error).
    if (conn->send_inflight && now_ - conn->send_started > send_timeout) {
      Shutdown(*conn);
      MaybeFree(*conn);
      continue;
    }
    if (conn->awaiting_proxy) {
      if (now_ >= conn->handshake_deadline || stopping_) {
        Shutdown(*conn);  // no PROXY header in time
        MaybeFree(*conn);
      }
      continue;
    }
    if (conn->session == nullptr) {
      continue;  // a refused connection: its one reply is on its way
    }
    if (conn->tls != nullptr && !conn->tls->handshake_done() && now_ >= conn->handshake_deadline) {
      counters_.tls_failures.Add(1);
      Shutdown(*conn);  // a handshake that does not finish in time
      MaybeFree(*conn);
      continue;
    }
    if (conn->submission.AnswerDelayed(stopping_)) {
      Process(*conn);
    }
    conn->session->OnDeadline(now_);
    if (stopping_ && now_ >= drain_deadline_ && !conn->submission.committing()) {
      LOG_WARNING("shard %d: %s still busy after the drain timeout; closing", index_,
                  conn->peer_text);
      Shutdown(*conn);
      MaybeFree(*conn);
      continue;
    }
    Flush(*conn);
    if (conn->active) {
      conn->active = false;
      conn->idle = false;
    } else if (!conn->idle) {
      conn->idle = ReleaseIdleBuffers(*conn);
    }
  }
  ArmTick();
}

void Shard::BeginStop() {
  stopping_ = true;
  drain_deadline_ = now_ + kDrainTimeout;
  for (int& fd : listener_fds_) {
    // Closing the socket ends its multishot accept; no new connections from here on.
    shutdown(fd, SHUT_RDWR);
  }
  for (const std::unique_ptr<Connection>& conn : connections_) {
    if (conn->in_use && conn->session != nullptr && !conn->shut_down) {
      conn->session->Shutdown();
      Flush(*conn);
    }
  }
}

void Shard::OnAccept(size_t listener_index, const io_uring_cqe& cqe) {
  if (cqe.res == -EMFILE || cqe.res == -ENFILE) {
    // Out of descriptors: accepting again at once would spin (and log) as fast as the CPU
    // goes. Pause this listener; the kernel keeps the backlog meanwhile.
    counters_.accept_pauses.Add(1);
    LOG_WARNING_EVERY(10, "shard %d: accept: %s; pausing accepts for %d ms", index_,
                      std::strerror(-cqe.res),
                      static_cast<int64_t>(absl::ToInt64Milliseconds(kAcceptPause)));
    if (!(cqe.flags & IORING_CQE_F_MORE) && !stopping_) {
      ArmAcceptRetry(listener_index);
    }
    return;
  }
  if (!(cqe.flags & IORING_CQE_F_MORE) && !stopping_) {
    ArmAccept(listener_index);
  }
  if (cqe.res < 0) {
    if (cqe.res != -EINVAL && cqe.res != -ECANCELED) {
      LOG_WARNING_EVERY(10, "shard %d: accept: %s", index_, std::strerror(-cqe.res));
    }
    return;
  }
  int fd = cqe.res;
  if (stopping_) {
    close(fd);
    return;
  }
  if (free_slots_.empty()) {
    if (connections_.size() >= kConnectionsPerShardMax) {
      close(fd);
      counters_.connections_refused.Add(1);
      return;
    }
    connections_.push_back(
        std::make_unique<Connection>(this, static_cast<uint32_t>(connections_.size()), &services_));
    free_slots_.push_back(static_cast<uint32_t>(connections_.size() - 1));
  }
  Connection& conn = *connections_[free_slots_.back()];
  free_slots_.pop_back();
  ++live_connections_;
  conn.in_use = true;
  ++conn.generation;
  conn.fd = fd;
  conn.listener = &shared_->config.listeners[listener_index];
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length);
  conn.peer = net::IpFromSockaddr(peer);
  conn.peer_text = FormatIp(conn.peer);
  counters_.connections_accepted.Add(1);
  counters_.connections_open.Add(1);
  if (conn.listener->proxy_protocol) {
    // Only a trusted proxy may speak first, and it must, before any banner.
    if (!policy::IsAllowedNetwork(conn.listener->trusted_proxies, conn.peer)) {
      counters_.connections_refused.Add(1);
      LOG_DEBUG("%s: not a trusted proxy; closed", conn.peer_text);
      Shutdown(conn);
      MaybeFree(conn);
      return;
    }
    conn.awaiting_proxy = true;
    conn.handshake_deadline = now_ + kProxyHeaderTimeout;
    ArmRecv(conn);
    return;
  }
  StartSession(conn);
}

void Shard::StartSession(Connection& conn) {
  std::shared_ptr<const Config> config = shared_->live.load();
  std::shared_ptr<const directory::Snapshot> snapshot = shared_->snapshot.load();
  conn.submission.Begin(conn.cookie(), conn.peer, conn.peer_text, conn.listener, config, snapshot);
  conn.session =
      std::make_unique<smtp::Session>(SessionOptionsFor(*config, *conn.listener), &conn.submission);
  conn.submission.set_session(conn.session.get());
  conn.session->Start(now_);
  std::optional<smtp::Reply> refusal = AdmitConnection(conn, *config, *snapshot);
  if (refusal) {
    // Instead of the greeting: the refusal, then the connection closes. On an implicit-TLS
    // listener the client expects a handshake, and plaintext would be garbage to it (and no
    // handshake is spent on a refusal): the connection just closes.
    counters_.connections_refused.Add(1);
    if (conn.listener->tls != TlsMode::kImplicit) {
      conn.out_queue = absl::StrCat(refusal->code, " ", refusal->text, "\r\n");
    }
    replies_.Count(refusal->code, refusal->text);
    LogEvent(LogLevel::kInfo, "connection.refused",
             {{"client", conn.peer_text},
              {"listener", conn.listener->address},
              {"code", refusal->code},
              {"reply", refusal->text}});
    conn.submission.set_session(nullptr);
    conn.session.reset();
  } else {
    LogEvent(LogLevel::kInfo, "connection.accepted",
             {{"client", conn.peer_text}, {"listener", conn.listener->address}, {"shard", index_}});
    if (conn.listener->tls == TlsMode::kImplicit) {
      conn.tls = std::make_unique<net::TlsStream>(shared_->tls_context.load());
      conn.handshake_deadline = now_ + kTlsHandshakeTimeout;
    }
  }
  ArmRecv(conn);
  Flush(conn);
}

void Shard::OnProxyHeader(Connection& conn, absl::string_view bytes) {
  size_t room = net::kProxyHeaderBytesMax - conn.proxy_header.size();
  conn.proxy_header.append(bytes.data(), std::min(bytes.size(), room));
  net::ProxyHeader header;
  size_t consumed = 0;
  net::ProxyParse parse = net::ParseProxyHeader(conn.proxy_header, &header, &consumed);
  if (parse == net::ProxyParse::kIncomplete &&
      conn.proxy_header.size() < net::kProxyHeaderBytesMax) {
    return;
  }
  if (parse != net::ProxyParse::kDone) {
    LOG_DEBUG("%s: malformed PROXY header; closed", conn.peer_text);
    counters_.connections_refused.Add(1);
    return Shutdown(conn);
  }
  conn.awaiting_proxy = false;
  conn.handshake_deadline = absl::InfiniteFuture();
  if (header.has_address) {
    conn.peer = header.source;  // from here on, caps, networks and logs see the real client
    conn.peer_text = FormatIp(conn.peer);
  }
  std::string early = conn.proxy_header.substr(consumed);
  conn.proxy_header.clear();
  StartSession(conn);
  if (!early.empty() && conn.session != nullptr && conn.tls == nullptr) {
    // A client that spoke before the greeting: taken as it is, like pipelined input.
    size_t taken = conn.session->Feed(early, now_);
    TakeUpStartTls(conn);
    if (taken < early.size()) {
      LOG_DEBUG("%s: %d bytes sent before the greeting were dropped", conn.peer_text,
                static_cast<int>(early.size() - taken));
    }
    Flush(conn);
  }
}

bool Shard::TakeConnectionPlace(const Config& config) {
  // connections_max: a CAS loop, so the count never passes the cap even for a moment.
  int64_t open = shared_->connections_open.load();
  do {
    if (open >= std::min(config.limits.connections_max, shared_->connections_fd_cap)) {
      shared_->refused_connections_max.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!shared_->connections_open.compare_exchange_weak(open, open + 1));
  return true;
}

std::optional<smtp::Reply> Shard::AdmitConnection(Connection& conn, const Config& config,
                                                  const directory::Snapshot& snapshot) {
  // The places in the caps are taken here (released in MaybeFree, on every path); the
  // verdict is policy::Admit's.
  policy::AdmissionFacts facts;
  facts.peer = conn.peer;
  facts.under_connections_max = TakeConnectionPlace(config);
  if (facts.under_connections_max) {
    conn.counted = true;
    facts.ip = shared_->gate->AdmitIp(conn.peer, &conn.ip_slot);
  }
  policy::AdmissionVerdict verdict = policy::Admit(facts, *conn.listener, snapshot);
  if (verdict.refusal.has_value() &&
      verdict.refusal->text == smtp::kReplyListenerMisconfigured.text) {
    LOG_ERROR("listener %s: authenticate_as %s is not in the directory", conn.listener->address,
              conn.listener->authenticate_as);
  }
  if (verdict.refusal.has_value() || verdict.acting_as == nullptr) {
    return verdict.refusal;
  }
  // A trusted session acts as its account, but takes a place in the tenant's cap only at its
  // first MAIL (submission.cc): idle connections to the trusted port lock no one out.
  conn.submission.ActAs(verdict.acting_as);
  conn.session->MarkAuthenticated();
  return std::nullopt;
}

void Shard::ArmRecv(Connection& conn) {
  if (conn.recv_armed || conn.shut_down || conn.peer_eof) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_recv_multishot(sqe, conn.fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = buffers_->group_id();
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpRecv, Cookie(conn)));
  conn.recv_armed = true;
  conn.recv_cancelling = false;
  conn.starttls_pending = false;
}

void Shard::CancelRecv(Connection& conn) {
  if (!conn.recv_armed || conn.recv_cancelling) {
    return;
  }
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_prep_cancel64(sqe, io::PackUserData(kOpRecv, Cookie(conn)), 0);
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpIgnore, 0));
  conn.recv_cancelling = true;
}

void Shard::Unref(uint16_t buffer) {
  DCHECK(buffer_refs_[buffer] > 0);
  if (--buffer_refs_[buffer] == 0) {
    --buffers_out_;
    buffers_->Recycle(buffer);
    // A returned buffer may let a connection that ran dry receive again.
    if (!starved_.empty()) {
      uint32_t slot = starved_.front();
      starved_.pop_front();
      Connection& conn = *connections_[slot];
      if (conn.in_use && !conn.shut_down) {
        NoteStarvedWait(conn);
        ArmRecv(conn);
      }
    }
  }
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
  io_uring_sqe_set_data64(sqe, io::PackUserData(kOpSend, Cookie(conn)));
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

void Shard::MaybeFree(Connection& conn) {
  if (!conn.in_use || !conn.shut_down || conn.recv_armed || conn.send_inflight ||
      conn.submission.busy()) {
    return;
  }
  while (!conn.input.empty()) {
    uint16_t buffer = conn.input.front().buffer;
    conn.input.pop_front();
    Unref(buffer);
  }
  conn.submission.End();
  conn.ip_slot.Reset();
  close(conn.fd);
  conn.fd = -1;
  conn.session.reset();
  std::string().swap(conn.sending);  // a slot waiting for its next connection keeps nothing
  std::string().swap(conn.out_queue);
  conn.send_offset = 0;
  conn.tls.reset();
  conn.handshake_deadline = absl::InfiniteFuture();
  ReturnPlaintextBuffer(conn);
  conn.shut_down = false;
  conn.peer_eof = false;
  conn.awaiting_proxy = false;
  conn.proxy_header.clear();
  conn.recv_cancelling = false;
  conn.active = false;
  conn.idle = false;
  conn.in_use = false;
  if (conn.counted) {
    shared_->connections_open.fetch_sub(1);
    conn.counted = false;
  }
  counters_.connections_open.Add(-1);
  free_slots_.push_back(conn.slot);
  --live_connections_;
}

}  // namespace chute::server
