// admin_server.cc: the admin HTTP listener: /metrics, /healthz, /usage and the queue routes.

#include "admin/admin_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "admin/usage_page.h"
#include "base/log.h"
#include "net/socket.h"

namespace chute::admin {
namespace {

constexpr size_t kRequestBytesMax = 8192;
// Admin clients served at once; more wait in the listen backlog.
constexpr size_t kConnectionsMax = 256;
constexpr int kRequestTimeoutMs = 2000;
constexpr int kPollIntervalMs = 200;

absl::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 421:
      return "Misdirected Request";
    case 500:
      return "Internal Server Error";
    default:
      return "Bad Request";
  }
}

std::string Response(int status, absl::string_view type, absl::string_view body,
                     absl::string_view node = "") {
  // Pages (/usage) load nothing from anywhere, run no script and are never framed: say so to
  // the browser, and keep the ticket in their links out of other sites' Referer.
  absl::string_view page =
      absl::StartsWith(type, "text/html")
          ? "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; form-action 'self'; frame-ancestors 'none'\r\n"
            "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
          : "";
  absl::string_view challenge =
      status == 401 ? "WWW-Authenticate: Bearer realm=\"chute admin\"\r\n" : "";
  std::string node_field = node.empty() ? "" : absl::StrCat("X-Chute-Node: ", node, "\r\n");
  return absl::StrCat("HTTP/1.1 ", status, " ", Reason(status), "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\n", page, challenge, node_field,
                      "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                      "Connection: close\r\n\r\n",
                      body);
}

std::string JsonError(absl::string_view message) {
  nlohmann::json body = {{"error", message}};
  return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// TrustedPeer: the unix socket's client is root or chuted's own user.
bool TrustedPeer(int fd, uint32_t* uid) {
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
    return false;
  }
  *uid = credentials.uid;
  return credentials.uid == 0 || credentials.uid == geteuid();
}

}  // namespace

AdminServer::AdminServer(AccessKeys keys, Render metrics, Route routes)
    : keys_(std::move(keys)), metrics_(std::move(metrics)), routes_(std::move(routes)) {}

AdminServer::~AdminServer() { Stop(); }

absl::Status AdminServer::Start(const std::optional<HostPort>& address,
                                const std::string& socket_path) {
  if (address.has_value()) {
    absl::StatusOr<int> fd = net::OpenSoleListener(*address);  // one admin listener per address
    if (!fd.ok()) {
      return fd.status();
    }
    listen_fd_ = *fd;
    // Non-blocking: Serve() accepts until the backlog is empty.
    fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  }
  absl::StatusOr<int> socket = net::OpenUnixListener(socket_path);
  if (!socket.ok()) {
    if (listen_fd_ >= 0) {
      close(listen_fd_);
      listen_fd_ = -1;
    }
    return socket.status();
  }
  socket_fd_ = *socket;
  socket_path_ = socket_path;
  thread_ = std::thread([this] {
    NameThisThread("chute-admin");
    Serve();
  });
  return absl::OkStatus();
}

void AdminServer::Stop() {
  stopping_.store(true);
  if (thread_.joinable()) {
    thread_.join();
  }
  if (listen_fd_ >= 0) {
    close(listen_fd_);
    listen_fd_ = -1;
  }
  if (socket_fd_ >= 0) {
    close(socket_fd_);
    socket_fd_ = -1;
    unlink(socket_path_.c_str());
  }
}

// Serve: a small poll() loop over the TCP listener, the unix socket and the clients. Each
// client reads its request (bounded in bytes and time), gets its answer, and is closed once
// the answer is written; idle or slow clients never delay others (they only hold one of
// kConnectionsMax places, and lose it at their deadline).
void AdminServer::Serve() {
  struct Client {
    int fd = -1;
    Peer peer = Peer::kTcp;
    std::string in;
    std::string out;
    size_t sent = 0;
    absl::Time deadline;
  };
  std::vector<Client> clients;
  std::vector<pollfd> fds;
  absl::Time accept_paused_until = absl::InfinitePast();
  constexpr size_t kListeners = 2;
  while (!stopping_.load()) {
    absl::Time now = absl::Now();
    fds.clear();
    bool accepting = clients.size() < kConnectionsMax && now >= accept_paused_until;
    int16_t listen_events = static_cast<int16_t>(accepting ? POLLIN : 0);
    fds.push_back(pollfd{listen_fd_, listen_events, 0});  // fd -1: ignored by poll
    fds.push_back(pollfd{socket_fd_, listen_events, 0});
    for (const Client& c : clients) {
      fds.push_back(pollfd{c.fd, static_cast<int16_t>(c.out.empty() ? POLLIN : POLLOUT), 0});
    }
    poll(fds.data(), fds.size(), kPollIntervalMs);
    now = absl::Now();
    for (size_t i = 0; i < clients.size(); ++i) {
      Client& c = clients[i];
      int16_t ready = fds[i + kListeners].revents;
      bool finished = false;
      bool progressed = false;  // the deadline is for a client that stalls, not for our pace
      if ((ready & (POLLIN | POLLHUP | POLLERR)) && c.out.empty()) {
        char buffer[2048];
        ssize_t n = recv(c.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (n > 0) {
          progressed = true;
          c.in.append(buffer, static_cast<size_t>(n));
          if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kRequestBytesMax) {
            c.out = Respond(c.in, c.peer);
            c.deadline = absl::Now() + absl::Milliseconds(kRequestTimeoutMs);  // to write it
          }
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
          finished = true;
        }
      }
      if (!finished && !c.out.empty() && (ready & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t n =
            send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
          progressed = true;
          c.sent += static_cast<size_t>(n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          finished = true;
        }
        finished |= c.sent == c.out.size();
      }
      finished |= !progressed && now >= c.deadline;
      if (finished) {
        close(c.fd);
        c.fd = -1;
      }
    }
    clients.erase(
        std::remove_if(clients.begin(), clients.end(), [](const Client& c) { return c.fd < 0; }),
        clients.end());
    for (size_t l = 0; l < kListeners && accepting; ++l) {
      if ((fds[l].revents & POLLIN) == 0) {
        continue;
      }
      Peer peer = l == 0 ? Peer::kTcp : Peer::kLocalUser;
      while (clients.size() < kConnectionsMax) {
        int fd = accept4(fds[l].fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE) {
            // Out of descriptors: the listener stays readable; retrying at once would spin.
            LOG_WARNING_EVERY(10, "admin: accept: %s; pausing", std::strerror(errno));
            accept_paused_until = now + absl::Milliseconds(kPollIntervalMs);
          }
          break;
        }
        Client client{fd, peer, "", "", 0, now + absl::Milliseconds(kRequestTimeoutMs)};
        uint32_t uid = 0;
        if (peer == Peer::kLocalUser && !TrustedPeer(fd, &uid)) {
          // Another local user reached the socket (its directory should not let them): the
          // answer says why, and nothing is read.
          LOG_WARNING_EVERY(10, "admin: refused uid %d on %s: only root and chuted's user", uid,
                            socket_path_);
          client.out = Response(403, "application/json",
                                JsonError("the admin socket serves root and chuted's user only"));
        }
        clients.push_back(std::move(client));
      }
    }
  }
  for (Client& c : clients) {
    close(c.fd);
  }
}

std::string AdminServer::Respond(absl::string_view request, Peer peer) {
  absl::StatusOr<RequestHead> head = ParseRequestHead(request);
  if (!head.ok()) {
    return Response(400, "application/json", JsonError(head.status().message()));
  }
  AccessVerdict access = CheckAccess(*head, peer, keys_, absl::Now());
  if (!access.allowed) {
    LOG_WARNING_EVERY(10, "admin: refused %s %s (%s): %d %s", head->method,
                      head->path().substr(0, 80), peer == Peer::kTcp ? "tcp" : "socket",
                      access.status, access.reason);
    return Response(access.status, "application/json", JsonError(access.reason));
  }
  absl::string_view path = head->path();
  if (path == "/metrics" && head->method == "GET") {
    return Response(200, "text/plain; version=0.0.4", metrics_());
  }
  if (path == "/healthz" && head->method == "GET") {
    return Response(200, "text/plain", "ok\n");
  }
  std::optional<Answer> answer;
  if (!usage_database_.empty() && path == "/usage/ticket") {
    if (head->method != "POST") {
      answer = Answer{405, JsonError("POST /usage/ticket makes a ticket")};
    } else {
      absl::Time expiry = absl::Now() + kTicketLifetime;
      std::string ticket = MakeTicket(keys_.admin_token, expiry);
      nlohmann::json body = {
          {"ticket", ticket},
          {"url", absl::StrCat("http://", keys_.listener_authority, "/usage?ticket=", ticket)},
          {"expires", absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", expiry, absl::UTCTimeZone())}};
      answer = Answer{200, body.dump() + "\n"};
    }
  }
  if (!answer.has_value() && !usage_database_.empty()) {
    answer = HandleUsageRequest(usage_database_, head->method, head->target);
  }
  if (!answer.has_value() && routes_ != nullptr) {
    answer = routes_(head->method, head->target);
  }
  if (!answer.has_value()) {
    return Response(404, "text/plain", "not found\n");
  }
  return Response(answer->status, answer->content_type, answer->body, node_);
}

}  // namespace chute::admin
