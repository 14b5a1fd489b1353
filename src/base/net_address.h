#pragma once

// Textual socket addresses and CIDR blocks as the configuration writes them. Every address is
// held as 16 bytes, IPv4 mapped into IPv6 (::ffff:a.b.c.d), so that one table and one compare
// serve both families. Pure functions; any thread.

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute {

using IpBytes = std::array<uint8_t, 16>;

// ParseIp: "192.0.2.1" or "2001:db8::1" (no brackets). InvalidArgument otherwise.
absl::StatusOr<IpBytes> ParseIp(absl::string_view text);

// FormatIp: the conventional text of an address: dotted quad for mapped IPv4, RFC 5952 else.
std::string FormatIp(const IpBytes& ip);

// IsLoopback: 127.0.0.0/8 (mapped) or ::1.
bool IsLoopback(const IpBytes& ip);

struct HostPort {
  IpBytes ip;
  uint16_t port = 0;
};

// ParseHostPort: "a.b.c.d:port" or "[v6]:port", port 1..65535. InvalidArgument otherwise.
absl::StatusOr<HostPort> ParseHostPort(absl::string_view text);

struct Cidr {
  IpBytes network;        // host bits cleared
  int prefix_bits = 128;  // counted in the 128-bit mapped space

  // Contains: whether `ip` lies inside this block.
  bool Contains(const IpBytes& ip) const;
};

// ParseCidr: "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). A prefix longer
// than the family allows, or host bits set below the prefix, is InvalidArgument.
absl::StatusOr<Cidr> ParseCidr(absl::string_view text);

}  // namespace chute
