// admin_server.cc: the admin HTTP listener: /metrics, /healthz, /usage and the queue routes.

#include "admin/admin_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

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

std::string Response(int status, absl::string_view reason, absl::string_view type,
                     absl::string_view body) {
  // Pages (/usage) load nothing from anywhere and run no script: say so to the browser.
  absl::string_view policy =
      absl::StartsWith(type, "text/html")
          ? "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:; form-action 'self'\r\nX-Content-Type-Options: nosniff\r\n"
          : "";
  return absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\n", policy,
                      "Connection: close\r\n\r\n", body);
}

}  // namespace

AdminServer::AdminServer(Render metrics, Route routes)
    : metrics_(std::move(metrics)), routes_(std::move(routes)) {}

AdminServer::~AdminServer() { Stop(); }

absl::Status AdminServer::Start(const HostPort& address) {
  absl::StatusOr<int> fd = net::OpenSoleListener(address);  // one admin listener per address
  if (!fd.ok()) {
    return fd.status();
  }
  listen_fd_ = *fd;
  // Non-blocking: Serve() accepts until the backlog is empty.
  fcntl(listen_fd_, F_SETFL, fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
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
}

// Serve: a small poll() loop. Each client connection reads its request (bounded in bytes
// and time), gets its answer, and is closed once the answer is written; idle or slow clients
// never delay others (they only hold one of kConnectionsMax places, and lose it at their
// deadline).
void AdminServer::Serve() {
  struct Client {
    int fd = -1;
    std::string in;
    std::string out;
    size_t sent = 0;
    absl::Time deadline;
  };
  std::vector<Client> clients;
  std::vector<pollfd> fds;
  absl::Time accept_paused_until = absl::InfinitePast();
  while (!stopping_.load()) {
    absl::Time now = absl::Now();
    fds.clear();
    bool accepting = clients.size() < kConnectionsMax && now >= accept_paused_until;
    fds.push_back(pollfd{listen_fd_, static_cast<int16_t>(accepting ? POLLIN : 0), 0});
    for (const Client& c : clients) {
      fds.push_back(pollfd{c.fd, static_cast<int16_t>(c.out.empty() ? POLLIN : POLLOUT), 0});
    }
    poll(fds.data(), fds.size(), kPollIntervalMs);
    now = absl::Now();
    for (size_t i = 0; i < clients.size(); ++i) {
      Client& c = clients[i];
      int16_t ready = fds[i + 1].revents;
      bool finished = false;
      bool progressed = false;  // the deadline is for a client that stalls, not for our pace
      if ((ready & (POLLIN | POLLHUP | POLLERR)) && c.out.empty()) {
        char buffer[2048];
        ssize_t n = recv(c.fd, buffer, sizeof(buffer), MSG_DONTWAIT);
        if (n > 0) {
          progressed = true;
          c.in.append(buffer, static_cast<size_t>(n));
          if (c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kRequestBytesMax) {
            c.out = Respond(c.in);
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
    if (accepting && (fds[0].revents & POLLIN)) {
      while (clients.size() < kConnectionsMax) {
        int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
          if (errno == EMFILE || errno == ENFILE) {
            // Out of descriptors: the listener stays readable; retrying at once would spin.
            LOG_WARNING_EVERY(10, "admin: accept: %s; pausing", std::strerror(errno));
            accept_paused_until = now + absl::Milliseconds(kPollIntervalMs);
          }
          break;
        }
        clients.push_back(Client{fd, "", "", 0, now + absl::Milliseconds(kRequestTimeoutMs)});
      }
    }
  }
  for (Client& c : clients) {
    close(c.fd);
  }
}

std::string AdminServer::Respond(absl::string_view request) {
  absl::string_view line = request.substr(0, request.find("\r\n"));
  if (absl::StartsWith(line, "GET /metrics ") || line == "GET /metrics") {
    return Response(200, "OK", "text/plain; version=0.0.4", metrics_());
  }
  if (absl::StartsWith(line, "GET /healthz")) {
    return Response(200, "OK", "text/plain", "ok\n");
  }
  std::vector<absl::string_view> words = absl::StrSplit(line, ' ');
  std::optional<Answer> answer;
  if (!usage_database_.empty() && words.size() == 3) {
    answer = HandleUsageRequest(usage_database_, words[0], words[1]);
  }
  if (!answer.has_value() && routes_ != nullptr && words.size() == 3) {
    answer = routes_(words[0], words[1]);
  }
  if (!answer.has_value()) {
    return Response(404, "Not Found", "text/plain", "not found\n");
  }
  absl::string_view reason = answer->status == 200   ? "OK"
                             : answer->status == 404 ? "Not Found"
                             : answer->status == 405 ? "Method Not Allowed"
                             : answer->status == 409 ? "Conflict"
                             : answer->status == 500 ? "Internal Server Error"
                                                     : "Bad Request";
  return Response(answer->status, reason, answer->content_type, answer->body);
}

}  // namespace chute::admin
