// proxy_protocol.cc: parses PROXY protocol v1 and v2 headers from a trusted load balancer.

#include "net/proxy_protocol.h"

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace chute::net {
namespace {

constexpr char kV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                   '\n', 'Q',  'U',  'I',  'T',  '\n'};
constexpr size_t kV1BytesMax = 107;

ProxyParse ParseV1(absl::string_view data, ProxyHeader* header, size_t* consumed) {
  size_t end = data.find("\r\n");
  if (end == absl::string_view::npos) {
    return data.size() >= kV1BytesMax ? ProxyParse::kInvalid : ProxyParse::kIncomplete;
  }
  if (end + 2 > kV1BytesMax) {
    return ProxyParse::kInvalid;
  }
  std::vector<absl::string_view> words = absl::StrSplit(data.substr(0, end), ' ');
  *consumed = end + 2;
  if (words.size() >= 2 && words[0] == "PROXY" && words[1] == "UNKNOWN") {
    header->has_address = false;
    return ProxyParse::kDone;
  }
  if (words.size() != 6 || words[0] != "PROXY" || (words[1] != "TCP4" && words[1] != "TCP6")) {
    return ProxyParse::kInvalid;
  }
  absl::StatusOr<IpBytes> source = ParseIp(words[2]);
  absl::StatusOr<IpBytes> destination = ParseIp(words[3]);
  uint32_t source_port = 0;
  uint32_t destination_port = 0;
  bool v4 = words[1] == "TCP4";
  if (!source.ok() || !destination.ok() || (words[2].find(':') == absl::string_view::npos) != v4 ||
      !absl::SimpleAtoi(words[4], &source_port) || !absl::SimpleAtoi(words[5], &destination_port) ||
      source_port > 65535 || destination_port > 65535) {
    return ProxyParse::kInvalid;
  }
  header->has_address = true;
  header->source = *source;
  header->source_port = static_cast<uint16_t>(source_port);
  return ProxyParse::kDone;
}

ProxyParse ParseV2(absl::string_view data, ProxyHeader* header, size_t* consumed) {
  if (data.size() < 16) {
    return ProxyParse::kIncomplete;
  }
  uint8_t version_command = static_cast<uint8_t>(data[12]);
  uint8_t family = static_cast<uint8_t>(data[13]);
  size_t length = (static_cast<uint8_t>(data[14]) << 8) | static_cast<uint8_t>(data[15]);
  if ((version_command >> 4) != 2 || 16 + length > kProxyHeaderBytesMax) {
    return ProxyParse::kInvalid;
  }
  if (data.size() < 16 + length) {
    return ProxyParse::kIncomplete;
  }
  *consumed = 16 + length;
  uint8_t command = version_command & 0x0f;
  if (command == 0) {  // LOCAL: a health check from the proxy itself
    header->has_address = false;
    return ProxyParse::kDone;
  }
  if (command != 1) {
    return ProxyParse::kInvalid;
  }
  const uint8_t* body = reinterpret_cast<const uint8_t*>(data.data()) + 16;
  IpBytes source{};
  if (family == 0x11 && length >= 12) {  // TCP over IPv4
    source[10] = 0xff;
    source[11] = 0xff;
    std::memcpy(source.data() + 12, body, 4);
    header->source_port = static_cast<uint16_t>((body[8] << 8) | body[9]);
  } else if (family == 0x21 && length >= 36) {  // TCP over IPv6
    std::memcpy(source.data(), body, 16);
    header->source_port = static_cast<uint16_t>((body[32] << 8) | body[33]);
  } else if (family == 0x00) {  // UNSPEC
    header->has_address = false;
    return ProxyParse::kDone;
  } else {
    return ProxyParse::kInvalid;
  }
  header->has_address = true;
  header->source = source;
  return ProxyParse::kDone;
}

}  // namespace

ProxyParse ParseProxyHeader(absl::string_view data, ProxyHeader* header, size_t* consumed) {
  size_t signature = std::min(data.size(), sizeof(kV2Signature));
  if (std::memcmp(data.data(), kV2Signature, signature) == 0) {
    return signature < sizeof(kV2Signature) ? ProxyParse::kIncomplete
                                            : ParseV2(data, header, consumed);
  }
  static constexpr absl::string_view kV1Prefix = "PROXY ";
  size_t prefix = std::min(data.size(), kV1Prefix.size());
  if (data.substr(0, prefix) != kV1Prefix.substr(0, prefix)) {
    return ProxyParse::kInvalid;
  }
  return prefix < kV1Prefix.size() ? ProxyParse::kIncomplete : ParseV1(data, header, consumed);
}

}  // namespace chute::net
