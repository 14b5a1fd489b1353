// connection_gate_test.cc: unit tests for the connection caps, including under concurrency.

#include "policy/connection_gate.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

namespace chute::policy {
namespace {

IpBytes Ip(const char* text) { return *ParseIp(text); }

ConnectionGate::Limits SmallLimits(uint64_t per_ip, uint64_t per_tenant) {
  ConnectionGate::Limits limits;
  limits.per_ip = per_ip;
  limits.per_tenant = per_tenant;
  limits.ip_slots = 64;
  limits.tenant_slots = 64;
  return limits;
}

TEST(ConnectionGateTest, PerIpCapAtBelowAndAbove) {
  ConnectionGate gate(SmallLimits(3, 10));
  std::vector<ConnectionGate::Handle> held(3);
  for (auto& handle : held) {
    EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &handle), ConnectionGate::Verdict::kAdmitted);
  }
  ConnectionGate::Handle fourth;
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &fourth), ConnectionGate::Verdict::kOverCap);
  EXPECT_FALSE(fourth.held());
  EXPECT_EQ(gate.refused_ip_cap.load(), 1u);
  ConnectionGate::Handle other;
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.2"), &other), ConnectionGate::Verdict::kAdmitted);
  EXPECT_EQ(gate.IpCount(Ip("192.0.2.1")), 3u);
  held[0].Reset();
  EXPECT_EQ(gate.IpCount(Ip("192.0.2.1")), 2u);
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &fourth), ConnectionGate::Verdict::kAdmitted);
}

TEST(ConnectionGateTest, LoweringACapEvictsNoOneAndRefusesUntilUnder) {
  ConnectionGate gate(SmallLimits(3, 3));
  std::vector<ConnectionGate::Handle> held(3);
  for (auto& handle : held) {
    ASSERT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &handle), ConnectionGate::Verdict::kAdmitted);
  }
  gate.SetCaps(2, 3);
  EXPECT_EQ(gate.IpCount(Ip("192.0.2.1")), 3u);
  ConnectionGate::Handle extra;
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &extra), ConnectionGate::Verdict::kOverCap);
  held[0].Reset();
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &extra), ConnectionGate::Verdict::kOverCap);
  held[1].Reset();
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &extra), ConnectionGate::Verdict::kAdmitted);
  gate.SetCaps(10, 3);
  ConnectionGate::Handle more;
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &more), ConnectionGate::Verdict::kAdmitted);
}

TEST(ConnectionGateTest, ExemptAddressesAreNotCounted) {
  ConnectionGate::Limits limits = SmallLimits(1, 1);
  limits.per_ip_exempt = {*ParseCidr("10.0.0.0/8")};
  ConnectionGate gate(limits);
  ConnectionGate::Handle a;
  ConnectionGate::Handle b;
  EXPECT_EQ(gate.AdmitIp(Ip("10.1.2.3"), &a), ConnectionGate::Verdict::kExempt);
  EXPECT_EQ(gate.AdmitIp(Ip("10.1.2.3"), &b), ConnectionGate::Verdict::kExempt);
  EXPECT_EQ(gate.IpCount(Ip("10.1.2.3")), 0u);
}

TEST(ConnectionGateTest, TenantCapAndHandlesMoveAndReleaseOnce) {
  ConnectionGate gate(SmallLimits(10, 2));
  ConnectionGate::Handle a;
  ConnectionGate::Handle b;
  ASSERT_EQ(gate.AdmitTenant(7, &a), ConnectionGate::Verdict::kAdmitted);
  ASSERT_EQ(gate.AdmitTenant(7, &b), ConnectionGate::Verdict::kAdmitted);
  ConnectionGate::Handle c;
  EXPECT_EQ(gate.AdmitTenant(7, &c), ConnectionGate::Verdict::kOverCap);
  EXPECT_EQ(gate.AdmitTenant(8, &c), ConnectionGate::Verdict::kAdmitted);
  ConnectionGate::Handle moved(std::move(a));
  EXPECT_FALSE(a.held());
  EXPECT_EQ(gate.TenantCount(7), 2u);
  moved.Reset();
  moved.Reset();  // a second Reset gives nothing back twice
  EXPECT_EQ(gate.TenantCount(7), 1u);
}

TEST(ConnectionGateTest, AFullTableRefusesNewcomersAndNeverEvictsALiveEntry) {
  ConnectionGate gate(SmallLimits(1, 1));  // 64 words, probe window 32
  std::vector<ConnectionGate::Handle> held;
  int admitted = 0;
  int full = 0;
  for (int i = 0; i < 200; ++i) {
    IpBytes ip = Ip("198.51.100.0");
    ip[15] = static_cast<uint8_t>(i);
    ip[14] = static_cast<uint8_t>(i >> 8);
    ConnectionGate::Handle handle;
    ConnectionGate::Verdict verdict = gate.AdmitIp(ip, &handle);
    admitted += verdict == ConnectionGate::Verdict::kAdmitted;
    full += verdict == ConnectionGate::Verdict::kTableFull;
    held.push_back(std::move(handle));
  }
  EXPECT_LE(admitted, 64);
  EXPECT_EQ(admitted + full, 200);
  EXPECT_EQ(gate.refused_table_full.load(), static_cast<uint64_t>(full));
  for (int i = 0; i < 200; ++i) {  // every admitted address still counts exactly one
    IpBytes ip = Ip("198.51.100.0");
    ip[15] = static_cast<uint8_t>(i);
    ip[14] = static_cast<uint8_t>(i >> 8);
    EXPECT_EQ(gate.IpCount(ip), held[static_cast<size_t>(i)].held() ? 1u : 0u) << i;
  }
  held.clear();  // all released: the words are reusable by anyone
  ConnectionGate::Handle late;
  EXPECT_EQ(gate.AdmitIp(Ip("203.0.113.9"), &late), ConnectionGate::Verdict::kAdmitted);
}

TEST(ConnectionGateTest, IpKeysAreExactForIpv4AndStableForIpv6) {
  ConnectionGate gate(SmallLimits(1, 1));
  uint64_t key = gate.IpKey(Ip("127.0.0.2"));
  EXPECT_EQ(FormatIp(*ConnectionGate::KeyToIp(key)), "127.0.0.2");
  EXPECT_EQ(gate.IpKey(Ip("2001:db8::1")), gate.IpKey(Ip("2001:db8::1")));
  EXPECT_NE(gate.IpKey(Ip("2001:db8::1")), gate.IpKey(Ip("2001:db8:0:1::1")));
  EXPECT_FALSE(ConnectionGate::KeyToIp(gate.IpKey(Ip("2001:db8::1"))).has_value());
}

TEST(ConnectionGateTest, Ipv6IsCountedPerPrefixIpv4PerAddress) {
  // Was: each IPv6 address had its own count, so one /64 (2^64 addresses for its owner to
  // pick from) opened 100 connections per address.
  ConnectionGate gate(SmallLimits(3, 10));  // the default prefix: /64
  std::vector<ConnectionGate::Handle> held(3);
  const char* same_64[] = {"2001:db8:1:2::1", "2001:db8:1:2::2",
                           "2001:db8:1:2:ffff:ffff:ffff:ffff"};
  for (size_t i = 0; i < held.size(); ++i) {
    EXPECT_EQ(gate.AdmitIp(Ip(same_64[i]), &held[i]), ConnectionGate::Verdict::kAdmitted);
  }
  ConnectionGate::Handle fourth;
  EXPECT_EQ(gate.AdmitIp(Ip("2001:db8:1:2:abcd::9"), &fourth), ConnectionGate::Verdict::kOverCap);
  EXPECT_EQ(gate.IpCount(Ip("2001:db8:1:2::77")), 3u);
  EXPECT_EQ(gate.AdmitIp(Ip("2001:db8:1:3::1"), &fourth), ConnectionGate::Verdict::kAdmitted);
  fourth.Reset();
  // IPv4 stays per address, neighbours apart.
  std::vector<ConnectionGate::Handle> v4(3);
  for (auto& handle : v4) {
    EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.1"), &handle), ConnectionGate::Verdict::kAdmitted);
  }
  EXPECT_EQ(gate.AdmitIp(Ip("192.0.2.2"), &fourth), ConnectionGate::Verdict::kAdmitted);
  held[0].Reset();
  EXPECT_EQ(gate.IpCount(Ip("2001:db8:1:2::1")), 2u);
}

TEST(ConnectionGateTest, Ipv6PrefixLengthIsConfigurable) {
  ConnectionGate::Limits limits = SmallLimits(1, 1);
  limits.ipv6_prefix_bits = 128;  // each address alone
  ConnectionGate whole(limits);
  EXPECT_NE(whole.IpKey(Ip("2001:db8::1")), whole.IpKey(Ip("2001:db8::2")));
  limits.ipv6_prefix_bits = 48;
  ConnectionGate site(limits);
  EXPECT_EQ(site.IpKey(Ip("2001:db8:1:2::1")), site.IpKey(Ip("2001:db8:1:ffff::1")));
  EXPECT_NE(site.IpKey(Ip("2001:db8:1::1")), site.IpKey(Ip("2001:db8:2::1")));
  limits.ipv6_prefix_bits = 60;  // not on a byte boundary
  ConnectionGate odd(limits);
  EXPECT_EQ(odd.IpKey(Ip("2001:db8:1:20::1")), odd.IpKey(Ip("2001:db8:1:2f::1")));
  EXPECT_NE(odd.IpKey(Ip("2001:db8:1:20::1")), odd.IpKey(Ip("2001:db8:1:30::1")));
  // IPv4 (mapped) is never cut, whatever the IPv6 prefix.
  EXPECT_NE(site.IpKey(Ip("192.0.2.1")), site.IpKey(Ip("192.0.2.2")));
}

// Many threads on few keys: the number of handles held at once never exceeds the cap, and
// everything returns to zero. Run under TSan too (preset tsan).
TEST(ConnectionGateTest, ConcurrentAcquireReleaseNeverOvershootsAndEndsAtZero) {
  constexpr uint64_t kCap = 5;
  constexpr int kThreads = 8;
  constexpr int kRounds = 20000;
  constexpr int kKeys = 3;
  ConnectionGate::Limits limits = SmallLimits(kCap, kCap);
  limits.ip_slots = 32;  // one window: every key contends for the same words
  ConnectionGate gate(limits);
  std::atomic<int64_t> held[kKeys] = {};
  std::atomic<int64_t> worst{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 random(static_cast<uint32_t>(t));
      std::vector<std::pair<int, ConnectionGate::Handle>> mine;
      for (int round = 0; round < kRounds; ++round) {
        if (mine.size() < 4 && (random() & 1)) {
          int k = static_cast<int>(random() % kKeys);
          IpBytes ip = Ip("192.0.2.0");
          ip[15] = static_cast<uint8_t>(k);
          ConnectionGate::Handle handle;
          if (gate.AdmitIp(ip, &handle) == ConnectionGate::Verdict::kAdmitted) {
            int64_t now = held[k].fetch_add(1) + 1;
            int64_t seen = worst.load();
            while (now > seen && !worst.compare_exchange_weak(seen, now)) {
            }
            mine.emplace_back(k, std::move(handle));
          }
        } else if (!mine.empty()) {
          held[mine.back().first].fetch_sub(1);
          mine.pop_back();  // the handle releases its word
        }
      }
      for (auto& [k, handle] : mine) {
        held[k].fetch_sub(1);
      }
    });
  }
  for (std::thread& thread : threads) {
    thread.join();
  }
  EXPECT_LE(worst.load(), static_cast<int64_t>(kCap));
  for (int k = 0; k < kKeys; ++k) {
    IpBytes ip = Ip("192.0.2.0");
    ip[15] = static_cast<uint8_t>(k);
    EXPECT_EQ(gate.IpCount(ip), 0u);
  }
}

}  // namespace
}  // namespace chute::policy
