// net_address_test.cc: unit tests for IP, host:port and CIDR parsing and formatting.

#include "base/net_address.h"

#include <gtest/gtest.h>

namespace chute {
namespace {

TEST(NetAddressTest, ParseAndFormatIp) {
  absl::StatusOr<IpBytes> v4 = ParseIp("192.0.2.7");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(FormatIp(*v4), "192.0.2.7");
  absl::StatusOr<IpBytes> v6 = ParseIp("2001:db8::1");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(FormatIp(*v6), "2001:db8::1");
  EXPECT_FALSE(ParseIp("300.1.1.1").ok());
  EXPECT_FALSE(ParseIp("").ok());
  EXPECT_FALSE(ParseIp("example.test").ok());
}

TEST(NetAddressTest, HostPort) {
  absl::StatusOr<HostPort> hp = ParseHostPort("127.0.0.1:2525");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->port, 2525);
  EXPECT_TRUE(ParseHostPort("[::1]:587").ok());
  EXPECT_FALSE(ParseHostPort("::1:587").ok());
  EXPECT_FALSE(ParseHostPort("127.0.0.1").ok());
  EXPECT_FALSE(ParseHostPort("127.0.0.1:65536").ok());
  EXPECT_FALSE(ParseHostPort("127.0.0.1:+25").ok());
  EXPECT_FALSE(ParseHostPort("[::1:587").ok());
}

TEST(NetAddressTest, CidrContains) {
  absl::StatusOr<Cidr> loopback = ParseCidr("127.0.0.0/8");
  ASSERT_TRUE(loopback.ok());
  EXPECT_TRUE(loopback->Contains(*ParseIp("127.255.0.1")));
  EXPECT_FALSE(loopback->Contains(*ParseIp("128.0.0.1")));
  EXPECT_FALSE(loopback->Contains(*ParseIp("::1")));
  absl::StatusOr<Cidr> odd = ParseCidr("10.0.0.0/9");
  ASSERT_TRUE(odd.ok());
  EXPECT_TRUE(odd->Contains(*ParseIp("10.127.1.1")));
  EXPECT_FALSE(odd->Contains(*ParseIp("10.128.1.1")));
  absl::StatusOr<Cidr> host = ParseCidr("::1");
  ASSERT_TRUE(host.ok());
  EXPECT_TRUE(host->Contains(*ParseIp("::1")));
  absl::StatusOr<Cidr> everything = ParseCidr("0.0.0.0/0");
  ASSERT_TRUE(everything.ok());
  EXPECT_TRUE(everything->Contains(*ParseIp("203.0.113.9")));
  EXPECT_FALSE(everything->Contains(*ParseIp("2001:db8::1")));
  EXPECT_FALSE(ParseCidr("10.0.0.1/8").ok());
  EXPECT_FALSE(ParseCidr("10.0.0.0/33").ok());
  EXPECT_FALSE(ParseCidr("10.0.0.0/").ok());
  EXPECT_FALSE(ParseCidr("2001:db8::/129").ok());
}

}  // namespace
}  // namespace chute
