// Unit tests for the failed-AUTH throttle: growing delays, the per-address and per-account
// limits, clean addresses never slowed, the window, and the bound on tracked keys.

#include "auth/throttle.h"

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace chute::auth {
namespace {

IpBytes Ip(uint8_t last) {
  IpBytes ip{};
  ip[10] = 0xff;
  ip[11] = 0xff;
  ip[12] = 192;
  ip[15] = last;
  return ip;
}

TEST(AuthThrottleTest, DelaysGrowThenTheAddressIsRefused) {
  ThrottleLimits limits;
  limits.failures_per_ip = 4;
  limits.delay_max = absl::Seconds(4);
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  EXPECT_EQ(throttle.Check(Ip(1), "a@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::Seconds(1));
  EXPECT_EQ(throttle.Check(Ip(1), "a@x", now), AuthThrottle::Verdict::kSuspect);
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::Seconds(2));
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "b@x", now), absl::Seconds(4));
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "c@x", now), absl::Seconds(4));  // capped
  EXPECT_EQ(throttle.Check(Ip(1), "anyone@x", now), AuthThrottle::Verdict::kBlocked);
  EXPECT_EQ(throttle.Check(Ip(2), "a@x", now), AuthThrottle::Verdict::kClean);
  // The window ends: the address starts over.
  EXPECT_EQ(throttle.Check(Ip(1), "a@x", now + limits.window), AuthThrottle::Verdict::kClean);
}

TEST(AuthThrottleTest, AnAccountUnderAttackStaysOpenToCleanAddresses) {
  ThrottleLimits limits;
  limits.failures_per_ip = 100;
  limits.failures_per_account = 3;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  for (uint8_t i = 1; i <= 3; ++i) {
    throttle.RecordFailure(Ip(i), "Victim@x", now);  // three addresses, one failure each
  }
  EXPECT_EQ(throttle.Check(Ip(1), "victim@x", now), AuthThrottle::Verdict::kBlocked);
  EXPECT_EQ(throttle.Check(Ip(9), "victim@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(throttle.refused_account.load(), 1u);
}

TEST(AuthThrottleTest, TrackedKeysAreBounded) {
  ThrottleLimits limits;
  limits.entries_max = 4;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  for (uint8_t i = 1; i <= 10; ++i) {
    throttle.RecordFailure(Ip(i), "u@x", now);
  }
  // Full of live entries: later addresses are not tracked (treated as clean), nothing grows.
  EXPECT_EQ(throttle.Check(Ip(10), "u@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(throttle.Check(Ip(1), "u@x", now), AuthThrottle::Verdict::kSuspect);
  // Once the window passed, expired entries make room again.
  throttle.RecordFailure(Ip(10), "u@x", now + limits.window);
  EXPECT_EQ(throttle.Check(Ip(10), "u@x", now + limits.window), AuthThrottle::Verdict::kSuspect);
}

}  // namespace
}  // namespace chute::auth
