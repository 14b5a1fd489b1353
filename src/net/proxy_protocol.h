#pragma once

// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a trusted load balancer
// sends before anything else, carrying the real client's address. Pure parsing; any thread.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "base/net_address.h"

namespace chute::net {

// A v1 header is at most 107 bytes; a v2 header is 16 + its length. We accept v2 headers of
// up to this many bytes in all (addresses plus a modest amount of TLVs).
inline constexpr size_t kProxyHeaderBytesMax = 536;

struct ProxyHeader {
  bool has_address = false;  // false for v1 UNKNOWN and v2 LOCAL: keep the socket's peer
  IpBytes source{};
  uint16_t source_port = 0;
};

enum class ProxyParse { kIncomplete, kDone, kInvalid };

// ParseProxyHeader: looks at the first bytes received. kDone sets *header and *consumed (the
// header's length; what follows is SMTP). kIncomplete: need more bytes. kInvalid: not a
// well-formed header (or too long): close the connection.
ProxyParse ParseProxyHeader(absl::string_view data, ProxyHeader* header, size_t* consumed);

}  // namespace chute::net
