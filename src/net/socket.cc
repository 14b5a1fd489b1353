// socket.cc: opens SO_REUSEPORT listening sockets and converts socket addresses.

#include "net/socket.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
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
