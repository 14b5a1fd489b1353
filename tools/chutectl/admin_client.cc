// admin_client.cc: one request to chuted over the admin socket, with the server's uid checked.

#include "tools/chutectl/admin_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "net/socket.h"

namespace chute::ctl {
namespace {

// Wait: poll `fd` for `events` until `deadline`; false when the deadline passed.
bool Wait(int fd, int16_t events, absl::Time deadline) {
  while (true) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return false;
    }
    pollfd pfd{fd, events, 0};
    int ready =
        poll(&pfd, 1, static_cast<int>(std::max<int64_t>(absl::ToInt64Milliseconds(left), 1)));
    if (ready > 0) {
      return true;
    }
    if (ready < 0 && errno != EINTR) {
      return false;
    }
  }
}

// CheckServer: the socket's server is root or the owner of the data directory.
absl::Status CheckServer(int fd, const Config& config) {
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return absl::ErrnoToStatus(errno, "SO_PEERCRED");
  }
  struct stat data_dir {};
  bool owner = stat(config.server.data_dir.c_str(), &data_dir) == 0 && peer.uid == data_dir.st_uid;
  if (peer.uid == 0 || owner) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat(config.admin.socket, " is served by uid ", peer.uid, " (pid ", peer.pid,
                   "), which is neither root nor the owner of ", config.server.data_dir,
                   ": that is not chuted, and chutectl does not talk to it"));
}

}  // namespace

absl::StatusOr<AdminAnswer> AdminRequest(const Config& config, absl::string_view method,
                                         absl::string_view path, absl::Duration deadline_in) {
  absl::Time deadline = absl::Now() + deadline_in;
  const std::string& socket_path = config.admin.socket;
  absl::StatusOr<int> connected = net::ConnectUnix(socket_path);
  if (!connected.ok()) {
    if (absl::IsPermissionDenied(connected.status())) {
      return absl::PermissionDeniedError(
          absl::StrCat(socket_path,
                       ": permission denied; chutectl reaches chuted as root or as chuted's "
                       "user (sudo chutectl ...)"));
    }
    return absl::UnavailableError(absl::StrCat("cannot reach chuted at ", socket_path, " (",
                                               connected.status().message(),
                                               "; is chuted running with this configuration?)"));
  }
  int fd = *connected;
  absl::Status server = CheckServer(fd, config);
  if (!server.ok()) {
    close(fd);
    return server;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string request = absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: localhost\r\n",
                                     "Content-Length: 0\r\nConnection: close\r\n\r\n");
  auto timeout = [&] {
    close(fd);
    return absl::DeadlineExceededError(absl::StrCat("no whole answer from chuted in ",
                                                    absl::FormatDuration(deadline_in), " (",
                                                    socket_path, ")"));
  };
  size_t sent = 0;
  while (sent < request.size()) {
    if (!Wait(fd, POLLOUT, deadline)) {
      return timeout();
    }
    ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      close(fd);
      return absl::UnavailableError("chuted closed the admin connection");
    }
    sent += n > 0 ? static_cast<size_t>(n) : 0;
  }
  std::string response;
  char buffer[65536];
  while (response.size() < kAdminResponseBytesMax) {
    if (!Wait(fd, POLLIN, deadline)) {
      return timeout();
    }
    ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    response.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  size_t head_end = response.find("\r\n\r\n");
  int status = 0;
  if (head_end == std::string::npos || response.size() < 12 ||
      !absl::StartsWith(response, "HTTP/1.") || !absl::SimpleAtoi(response.substr(9, 3), &status)) {
    return absl::DataLossError("a malformed answer from chuted's admin socket");
  }
  AdminAnswer answer{status, response.substr(head_end + 4), ""};
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(response).substr(0, head_end), "\r\n")) {
    if (absl::ConsumePrefix(&line, "X-Chute-Node: ")) {
      answer.node = std::string(line.substr(0, 255));
    }
  }
  return answer;
}

}  // namespace chute::ctl
