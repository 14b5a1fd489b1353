// shard.cc: one shard's event loop, op dispatch, ticks, stop, connection slots and buffers.

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
#include "net/socket.h"
#include "policy/hve_policy.h"
#include "server/connection.h"
#include "smtp/parser.h"

namespace chute::server {

Shard::Shard(int index, SharedState* shared)
    : index_(index), shared_(shared), boot_us_(shared->boot_us) {
  committer_ = std::make_unique<spool::GroupCommitter>(
      std::make_unique<spool::SegmentWriter>(
          shared->config.spool.dir, shared->spool_dir_fd, index, boot_us_,
          static_cast<uint64_t>(shared->config.spool.segment_bytes), shared->gauges),
      absl::Microseconds(shared->config.spool.group_commit_delay_us),
      spool::QueueIdMinter(boot_us_, index));
  handover_ = shared->delivery->AddProducer();
  handed_over_.assign(handover_.size(), false);
  services_ = SubmissionServices{
      this, this, this, this, &counters_, &replies_, &now_, &shared->delivery->router(), this};
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

void Shard::OnProbed(uint64_t cookie, delivery::RecipientVerdict verdict) {
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    probed_.emplace_back(cookie, std::move(verdict));
  }
  Wake();
}

void Shard::OnLeased(uint64_t cookie, fleet::LeaseAnswer answer) {
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    leased_.emplace_back(cookie, answer);
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
  std::vector<std::pair<uint64_t, delivery::RecipientVerdict>> probed;
  std::vector<std::pair<uint64_t, fleet::LeaseAnswer>> leased;
  {
    std::lock_guard<std::mutex> lock(mailbox_mu_);
    verified.swap(verified_);
    probed.swap(probed_);
    leased.swap(leased_);
  }
  for (const auto& [cookie, answer] : leased) {
    Connection* conn = Lookup(cookie);
    CHECK_MSG(conn != nullptr, "a fleet lease came for a connection that is gone");
    conn->submission.OnTenantAdmitted(answer.admitted, answer.lease);
    Process(*conn);
    MaybeFree(*conn);
  }
  for (const auto& [cookie, verdict] : probed) {
    Connection* conn = Lookup(cookie);
    CHECK_MSG(conn != nullptr, "a recipient probe finished for a connection that is gone");
    conn->submission.OnRecipientVerified(verdict);
    Process(*conn);
    MaybeFree(*conn);
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
    if (conn.in_use && !conn.shut_down && !conn.transport.input_full()) {
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
      if (now_ >= conn->proxy_deadline || stopping_) {
        Shutdown(*conn);  // no PROXY header in time
        MaybeFree(*conn);
      }
      continue;
    }
    if (conn->session == nullptr) {
      continue;  // a refused connection: its one reply is on its way
    }
    if (conn->transport.HandshakeOverdue(now_)) {
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

void Shard::MaybeFree(Connection& conn) {
  if (!conn.in_use || !conn.shut_down || conn.recv_armed || conn.send_inflight ||
      conn.submission.busy()) {
    return;
  }
  conn.transport.Reset();  // its receive buffers go back before the slot is reused
  conn.submission.End();
  conn.ip_slot.Reset();
  close(conn.fd);
  conn.fd = -1;
  conn.session.reset();
  std::string().swap(conn.scratch);  // a slot waiting for its next connection keeps nothing
  conn.starttls_pending = false;
  conn.proxy_deadline = absl::InfiniteFuture();
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
