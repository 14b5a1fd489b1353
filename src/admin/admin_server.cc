#include "admin/admin_server.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "net/socket.h"

namespace chute::admin {
namespace {

constexpr size_t kRequestBytesMax = 8192;
constexpr int kRequestTimeoutMs = 2000;
constexpr int kPollIntervalMs = 200;

void WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string Response(int status, absl::string_view reason, absl::string_view type,
                     absl::string_view body) {
  return absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace

AdminServer::AdminServer(Render metrics, Route routes)
    : metrics_(std::move(metrics)), routes_(std::move(routes)) {}

AdminServer::~AdminServer() { Stop(); }

absl::Status AdminServer::Start(const HostPort& address) {
  absl::StatusOr<int> fd = net::OpenListener(address);
  if (!fd.ok()) {
    return fd.status();
  }
  listen_fd_ = *fd;
  thread_ = std::thread([this] { Serve(); });
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

void AdminServer::Serve() {
  while (!stopping_.load()) {
    pollfd pfd{listen_fd_, POLLIN, 0};
    if (poll(&pfd, 1, kPollIntervalMs) <= 0) {
      continue;
    }
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the listener stays readable, so retrying at once would spin.
        LOG_WARNING_EVERY(10, "admin: accept: %s; pausing", std::strerror(errno));
        poll(nullptr, 0, kPollIntervalMs);
      }
      continue;
    }
    timeval timeout{kRequestTimeoutMs / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    Handle(fd);
    close(fd);
  }
}

void AdminServer::Handle(int fd) {
  std::string request;
  char buffer[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kRequestBytesMax) {
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) {
      return;
    }
    request.append(buffer, static_cast<size_t>(n));
  }
  absl::string_view line(request);
  line = line.substr(0, line.find("\r\n"));
  if (absl::StartsWith(line, "GET /metrics ") || line == "GET /metrics") {
    WriteAll(fd, Response(200, "OK", "text/plain; version=0.0.4", metrics_()));
  } else if (absl::StartsWith(line, "GET /healthz")) {
    WriteAll(fd, Response(200, "OK", "text/plain", "ok\n"));
  } else {
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ');
    std::optional<Answer> answer;
    if (routes_ != nullptr && words.size() == 3) {
      answer = routes_(words[0], words[1]);
    }
    if (answer.has_value()) {
      absl::string_view reason = answer->status == 200 ? "OK"
                                 : answer->status == 404 ? "Not Found"
                                 : answer->status == 409 ? "Conflict"
                                                         : "Bad Request";
      WriteAll(fd, Response(answer->status, reason, "application/json", answer->body));
    } else {
      WriteAll(fd, Response(404, "Not Found", "text/plain", "not found\n"));
    }
  }
}

}  // namespace chute::admin
