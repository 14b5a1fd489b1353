#pragma once

// Plain socket set-up for the shards (creating listeners happens once, at start-up, so it uses
// ordinary syscalls; the data path goes through io_uring).

#include <sys/socket.h>

#include "absl/status/statusor.h"
#include "base/net_address.h"

namespace chute::net {

// ListenerBacklog: pending connections per listening socket.
inline constexpr int kListenBacklog = 4096;

// OpenListener: a TCP socket bound to `address` with SO_REUSEPORT (one per shard, the kernel
// spreads connections across them) and listening. Returns the fd; the caller closes it.
absl::StatusOr<int> OpenListener(const HostPort& address);
// OpenSoleListener: the same without SO_REUSEPORT, for a socket that must be the only one on
// its address (the admin listener): another process's socket there makes it fail.
absl::StatusOr<int> OpenSoleListener(const HostPort& address);

// CheckAddressFree: whether another socket (another chuted, Postfix) already listens on
// `address`. SO_REUSEPORT would otherwise let a second server bind the same address and
// quietly take a share of the connections, so the server probes each listener address once
// with a socket that does not share the port before opening its own. OK when free or when
// the port is 0; FailedPrecondition naming the address when in use.
absl::Status CheckAddressFree(const HostPort& address);

// OpenUnixListener: a unix stream socket at `path`, mode 0600, listening. A socket file left
// there by a chuted that is gone is replaced; FailedPrecondition when a live server answers
// on it, or when something that is not a socket is there. Paths longer than sun_path are
// reached through the directory's /proc/self/fd entry.
absl::StatusOr<int> OpenUnixListener(const std::string& path);
// ConnectUnix: a connected unix stream socket to `path` (blocking, close-on-exec), or the
// errno of the failure.
absl::StatusOr<int> ConnectUnix(const std::string& path);

// SocketAddress: an address to connect a stream socket to.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
};
// ParseConnectTarget: "a.b.c.d:port", "[v6]:port" or "unix:/path" (the delivery targets, the
// fleet's Redis). InvalidArgument saying what is wrong otherwise.
absl::StatusOr<SocketAddress> ParseConnectTarget(absl::string_view target);

// ToSockaddr: `address` as a sockaddr_in (IPv4-mapped) or sockaddr_in6; returns its length.
socklen_t ToSockaddr(const HostPort& address, sockaddr_storage* out);

// IpFromSockaddr: the peer address as 16 bytes (IPv4 mapped).
IpBytes IpFromSockaddr(const sockaddr_storage& address);

}  // namespace chute::net
