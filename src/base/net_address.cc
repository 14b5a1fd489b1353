// net_address.cc: parses and formats IP addresses, host:port pairs and CIDR blocks.

#include "base/net_address.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace chute {
namespace {

constexpr size_t kAddressTextBytesMax = 64;
constexpr int kIpv4MappedPrefixBits = 96;

bool IsMappedIpv4(const IpBytes& ip) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip.data(), kPrefix, sizeof(kPrefix)) == 0;
}

}  // namespace

absl::StatusOr<IpBytes> ParseIp(absl::string_view text) {
  if (text.empty() || text.size() >= kAddressTextBytesMax) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an IP address"));
  }
  char buffer[kAddressTextBytesMax];
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpBytes ip{};
  in_addr v4;
  if (inet_pton(AF_INET, buffer, &v4) == 1) {
    ip[10] = 0xff;
    ip[11] = 0xff;
    std::memcpy(ip.data() + 12, &v4, 4);
    return ip;
  }
  if (inet_pton(AF_INET6, buffer, ip.data()) == 1) {
    return ip;
  }
  return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an IP address"));
}

bool IsLoopback(const IpBytes& ip) {
  static constexpr uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static constexpr uint8_t kV6Loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (std::equal(ip.begin(), ip.begin() + 12, kMappedPrefix)) {
    return ip[12] == 127;
  }
  return std::equal(ip.begin(), ip.end(), kV6Loopback);
}

std::string FormatIp(const IpBytes& ip) {
  char buffer[INET6_ADDRSTRLEN];
  if (IsMappedIpv4(ip)) {
    inet_ntop(AF_INET, ip.data() + 12, buffer, sizeof(buffer));
  } else {
    inet_ntop(AF_INET6, ip.data(), buffer, sizeof(buffer));
  }
  return buffer;
}

absl::StatusOr<HostPort> ParseHostPort(absl::string_view text) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' is not an address: ", why, " (expected \"a.b.c.d:port\" or \"[v6]:port\")"));
  };
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos) {
    return bad("no port");
  }
  absl::string_view host = text.substr(0, colon);
  absl::string_view port_text = text.substr(colon + 1);
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']') {
      return bad("unbalanced brackets");
    }
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != absl::string_view::npos) {
    return bad("IPv6 addresses need brackets");
  }
  uint32_t port = 0;
  if (port_text.empty() || port_text.size() > 5 || !absl::SimpleAtoi(port_text, &port) ||
      port_text.find_first_not_of("0123456789") != absl::string_view::npos || port == 0 ||
      port > 65535) {
    return bad("port must be 1..65535");
  }
  absl::StatusOr<IpBytes> ip = ParseIp(host);
  if (!ip.ok()) {
    return bad("the host must be an IP address");
  }
  return HostPort{*ip, static_cast<uint16_t>(port)};
}

bool Cidr::Contains(const IpBytes& ip) const {
  int full_bytes = prefix_bits / 8;
  if (std::memcmp(ip.data(), network.data(), static_cast<size_t>(full_bytes)) != 0) {
    return false;
  }
  int rest_bits = prefix_bits % 8;
  if (rest_bits == 0) {
    return true;
  }
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest_bits));
  return (ip[static_cast<size_t>(full_bytes)] & mask) == network[static_cast<size_t>(full_bytes)];
}

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  size_t slash = text.find('/');
  absl::StatusOr<IpBytes> ip = ParseIp(text.substr(0, slash));
  if (!ip.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a CIDR block"));
  }
  bool v4 = IsMappedIpv4(*ip);
  int family_bits = v4 ? 32 : 128;
  int prefix = family_bits;
  if (slash != absl::string_view::npos) {
    absl::string_view prefix_text = text.substr(slash + 1);
    if (prefix_text.empty() || prefix_text.size() > 3 ||
        prefix_text.find_first_not_of("0123456789") != absl::string_view::npos ||
        !absl::SimpleAtoi(prefix_text, &prefix) || prefix > family_bits) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "': prefix length must be 0..", family_bits));
    }
  }
  Cidr cidr{*ip, v4 ? prefix + kIpv4MappedPrefixBits : prefix};
  // Clear the host bits, then insist they were clear: "10.1.2.3/8" is almost always a typo.
  IpBytes masked{};
  for (int bit = 0; bit < cidr.prefix_bits; ++bit) {
    size_t byte = static_cast<size_t>(bit / 8);
    uint8_t mask = static_cast<uint8_t>(0x80 >> (bit % 8));
    masked[byte] |= static_cast<uint8_t>((*ip)[byte] & mask);
  }
  if (masked != *ip) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' has host bits set below its prefix length"));
  }
  cidr.network = masked;
  return cidr;
}

}  // namespace chute
