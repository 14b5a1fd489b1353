// accept.cc: a new connection on a shard: accept, the PROXY header, admission, the session.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "base/log.h"
#include "net/proxy_protocol.h"
#include "net/socket.h"
#include "policy/admission.h"
#include "policy/hve_policy.h"
#include "server/connection.h"
#include "server/shard.h"

namespace chute::server {
namespace {

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
    connections_.push_back(std::make_unique<Connection>(
        this, static_cast<uint32_t>(connections_.size()), &services_, this));
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
    conn.proxy_deadline = now_ + kProxyHeaderTimeout;
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
      conn.transport.Write(absl::StrCat(refusal->code, " ", refusal->text, "\r\n"));
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
      conn.transport.StartTls(std::make_unique<net::TlsStream>(shared_->tls_context.load()),
                              now_ + kTlsHandshakeTimeout);
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
  conn.proxy_deadline = absl::InfiniteFuture();
  if (header.has_address) {
    conn.peer = header.source;  // from here on, caps, networks and logs see the real client
    conn.peer_text = FormatIp(conn.peer);
  }
  std::string early = conn.proxy_header.substr(consumed);
  conn.proxy_header.clear();
  StartSession(conn);
  if (!early.empty() && conn.session != nullptr && !conn.transport.tls()) {
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
      shared_->gate->refused_connections_max.fetch_add(1, std::memory_order_relaxed);
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

}  // namespace chute::server
