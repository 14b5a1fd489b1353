// socket.cc: opens SO_REUSEPORT listening sockets and converts socket addresses.

#include "net/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "io/ring.h"

namespace chute::net {
namespace {

bool IsMappedIpv4(const IpBytes& ip) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.data(), kPrefix, sizeof(kPrefix)) == 0;
}

// BindSocket: a TCP socket of `address`'s family bound to it, with SO_REUSEADDR (a socket in
// TIME_WAIT does not count) and, when `reuse_port`, SO_REUSEPORT. The bind's errno on failure.
absl::StatusOr<int> BindSocket(const HostPort& address, bool reuse_port, int* bind_errno) {
  bool v4 = IsMappedIpv4(address.ip);
  int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return io::ErrnoStatus(errno, "socket");
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  }
  if (!v4) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  sockaddr_storage storage{};
  socklen_t length = ToSockaddr(address, &storage);
  if (bind(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    *bind_errno = errno;
    close(fd);
    return io::ErrnoStatus(*bind_errno,
                           absl::StrCat("bind ", FormatIp(address.ip), ":", address.port));
  }
  return fd;
}

// Listen: BindSocket, then listen(2).
absl::StatusOr<int> Listen(const HostPort& address, bool reuse_port) {
  int bind_errno = 0;
  absl::StatusOr<int> fd = BindSocket(address, reuse_port, &bind_errno);
  if (!fd.ok()) {
    return fd.status();
  }
  if (listen(*fd, kListenBacklog) != 0) {
    int error = errno;
    close(*fd);
    return io::ErrnoStatus(error, absl::StrCat("listen ", FormatIp(address.ip), ":", address.port));
  }
  return *fd;
}

}  // namespace

absl::Status CheckAddressFree(const HostPort& address) {
  if (address.port == 0) {
    return absl::OkStatus();
  }
  // Without SO_REUSEPORT: a listening socket of another process makes the bind fail.
  int bind_errno = 0;
  absl::StatusOr<int> fd = BindSocket(address, /*reuse_port=*/false, &bind_errno);
  if (fd.ok()) {
    close(*fd);
    return absl::OkStatus();
  }
  if (bind_errno == EADDRINUSE) {
    return absl::FailedPreconditionError(absl::StrCat(
        "listener ", FormatIp(address.ip), ":", address.port,
        ": the address is in use by another process (another chuted, or another mail server); "
        "stop it or choose another address (see: ss -ltnp 'sport = :",
        address.port, "')"));
  }
  return fd.status();
}

absl::StatusOr<int> OpenListener(const HostPort& address) {
  return Listen(address, /*reuse_port=*/true);
}

absl::StatusOr<int> OpenSoleListener(const HostPort& address) {
  return Listen(address, /*reuse_port=*/false);
}

namespace {

// WithUnixAddress: calls `use` with the sockaddr_un for `path`. A path too long for sun_path is
// spelled /proc/self/fd/N/NAME with N an O_PATH descriptor of its directory, which both bind()
// and connect() resolve like the original.
template <typename Use>
absl::StatusOr<int> WithUnixAddress(const std::string& path, Use use) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  int dir_fd = -1;
  std::string spelled = path;
  if (path.size() >= sizeof(address.sun_path)) {
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : path.substr(0, std::max<size_t>(slash, 1));
    dir_fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot open"));
    }
    spelled = absl::StrCat("/proc/self/fd/", dir_fd, "/",
                           slash == std::string::npos ? path : path.substr(slash + 1));
    if (spelled.size() >= sizeof(address.sun_path)) {
      close(dir_fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": the socket's name is too long"));
    }
  }
  std::memcpy(address.sun_path, spelled.data(), spelled.size());
  absl::StatusOr<int> result = use(reinterpret_cast<sockaddr*>(&address),
                                   static_cast<socklen_t>(sizeof(sa_family_t) + spelled.size()));
  if (dir_fd >= 0) {
    close(dir_fd);
  }
  return result;
}

}  // namespace

absl::StatusOr<int> ConnectUnix(const std::string& path) {
  return WithUnixAddress(path,
                         [&](const sockaddr* address, socklen_t length) -> absl::StatusOr<int> {
                           int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                           if (fd < 0) {
                             return absl::ErrnoToStatus(errno, "socket");
                           }
                           if (connect(fd, address, length) != 0) {
                             int error = errno;
                             close(fd);
                             return absl::ErrnoToStatus(error, path);
                           }
                           return fd;
                         });
}

absl::StatusOr<int> OpenUnixListener(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " exists and is not a socket; move it away"));
    }
    absl::StatusOr<int> live = ConnectUnix(path);
    if (live.ok()) {
      close(*live);
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": another server answers on this socket (another chuted?)"));
    }
    unlink(path.c_str());  // left by a chuted that is gone
  }
  return WithUnixAddress(
      path, [&](const sockaddr* address, socklen_t length) -> absl::StatusOr<int> {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
          return absl::ErrnoToStatus(errno, "socket");
        }
        // 0600 (the server checks each peer's uid as well: a connection in the moment between
        // bind and chmod is still refused).
        if (bind(fd, address, length) != 0 || chmod(path.c_str(), 0600) != 0 ||
            listen(fd, 64) != 0) {
          int error = errno;
          close(fd);
          return absl::ErrnoToStatus(error, absl::StrCat(path, ": cannot listen"));
        }
        return fd;
      });
}

absl::StatusOr<SocketAddress> ParseConnectTarget(absl::string_view target) {
  SocketAddress out;
  if (absl::ConsumePrefix(&target, "unix:")) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    if (target.empty() || target.size() >= sizeof(un->sun_path)) {
      return absl::InvalidArgumentError(
          absl::StrCat("a unix socket path must have 1 to ", sizeof(un->sun_path) - 1, " bytes"));
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, target.data(), target.size());
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + target.size() + 1);
    return out;
  }
  ASSIGN_OR_RETURN(HostPort address, ParseHostPort(target));
  out.length = ToSockaddr(address, &out.storage);
  return out;
}

socklen_t ToSockaddr(const HostPort& address, sockaddr_storage* out) {
  *out = sockaddr_storage{};
  if (IsMappedIpv4(address.ip)) {
    auto* sin = reinterpret_cast<sockaddr_in*>(out);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(address.port);
    std::memcpy(&sin->sin_addr, address.ip.data() + 12, 4);
    return sizeof(sockaddr_in);
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(out);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(address.port);
  std::memcpy(&sin6->sin6_addr, address.ip.data(), 16);
  return sizeof(sockaddr_in6);
}

IpBytes IpFromSockaddr(const sockaddr_storage& address) {
  IpBytes ip{};
  if (address.ss_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&address);
    ip[10] = 0xff;
    ip[11] = 0xff;
    std::memcpy(ip.data() + 12, &sin->sin_addr, 4);
  } else if (address.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&address);
    std::memcpy(ip.data(), &sin6->sin6_addr, 16);
  }
  return ip;
}

}  // namespace chute::net
