// proxy_protocol_test.cc: unit tests for PROXY protocol v1/v2 parsing, split and malformed.

#include "net/proxy_protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace chute::net {
namespace {

const std::string kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);

std::string V2Ipv4(uint8_t command) {
  std::string header = kV2Signature;
  header += static_cast<char>(0x20 | command);
  header += static_cast<char>(0x11);
  header += std::string("\x00\x0c", 2);
  header += std::string("\xc0\x00\x02\x07", 4);  // 192.0.2.7
  header += std::string("\x7f\x00\x00\x01", 4);
  header += std::string("\x9c\x40\x00\x19", 4);  // 40000, 25
  return header;
}

TEST(ProxyProtocolTest, V1Tcp4AndTheBytesAfterIt) {
  ProxyHeader header;
  size_t consumed = 0;
  std::string data = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\nEHLO x\r\n";
  ASSERT_EQ(ParseProxyHeader(data, &header, &consumed), ProxyParse::kDone);
  EXPECT_EQ(consumed, data.find("EHLO"));
  EXPECT_TRUE(header.has_address);
  EXPECT_EQ(FormatIp(header.source), "192.0.2.7");
  EXPECT_EQ(header.source_port, 40000);
}

TEST(ProxyProtocolTest, V1Tcp6AndUnknown) {
  ProxyHeader header;
  size_t consumed = 0;
  EXPECT_EQ(ParseProxyHeader("PROXY TCP6 2001:db8::1 ::1 1 2\r\n", &header, &consumed),
            ProxyParse::kDone);
  EXPECT_EQ(FormatIp(header.source), "2001:db8::1");
  EXPECT_EQ(ParseProxyHeader("PROXY UNKNOWN\r\n", &header, &consumed), ProxyParse::kDone);
  EXPECT_FALSE(header.has_address);
}

TEST(ProxyProtocolTest, IncompleteThenInvalid) {
  ProxyHeader header;
  size_t consumed = 0;
  std::string full = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n";
  for (size_t i = 1; i < full.size(); ++i) {
    EXPECT_EQ(ParseProxyHeader(full.substr(0, i), &header, &consumed), ProxyParse::kIncomplete)
        << i;
  }
  for (const char* bad :
       {"EHLO x\r\n", "PROXY TCP4 192.0.2.7 127.0.0.1 40000\r\n", "PROXY TCP4 ::1 ::1 1 2\r\n",
        "PROXY TCP6 192.0.2.1 127.0.0.1 1 2\r\n", "PROXY TCP4 192.0.2.7 127.0.0.1 70000 25\r\n",
        "PROXY UDP4 a b 1 2\r\n"}) {
    EXPECT_EQ(ParseProxyHeader(bad, &header, &consumed), ProxyParse::kInvalid) << bad;
  }
  EXPECT_EQ(ParseProxyHeader("PROXY " + std::string(200, 'x'), &header, &consumed),
            ProxyParse::kInvalid);
}

TEST(ProxyProtocolTest, V2ProxyLocalAndSplits) {
  ProxyHeader header;
  size_t consumed = 0;
  std::string proxy = V2Ipv4(1);
  for (size_t i = 1; i < proxy.size(); ++i) {
    EXPECT_EQ(ParseProxyHeader(proxy.substr(0, i), &header, &consumed), ProxyParse::kIncomplete);
  }
  ASSERT_EQ(ParseProxyHeader(proxy + "EHLO", &header, &consumed), ProxyParse::kDone);
  EXPECT_EQ(consumed, proxy.size());
  EXPECT_EQ(FormatIp(header.source), "192.0.2.7");
  EXPECT_EQ(header.source_port, 40000);
  ASSERT_EQ(ParseProxyHeader(V2Ipv4(0), &header, &consumed), ProxyParse::kDone);
  EXPECT_FALSE(header.has_address);
  std::string bad_version = V2Ipv4(1);
  bad_version[12] = 0x31;
  EXPECT_EQ(ParseProxyHeader(bad_version, &header, &consumed), ProxyParse::kInvalid);
  std::string huge = kV2Signature + std::string("\x21\x11\xff\xff", 4);
  EXPECT_EQ(ParseProxyHeader(huge, &header, &consumed), ProxyParse::kInvalid);
}

}  // namespace
}  // namespace chute::net
