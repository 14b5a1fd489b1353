// Unit tests for the failed-AUTH throttle: growing delays, guessing (one name from one
// address), an account under attack, spraying (many names from one address), known-good
// names never refused for their neighbours' failures, exempt networks, the window, and the
// bound on tracked keys.

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

AuthThrottle::Verdict CheckOf(AuthThrottle& throttle, const IpBytes& ip, absl::string_view user,
                              absl::Time now) {
  absl::string_view reason;
  return throttle.Check(ip, user, now, &reason);
}

TEST(AuthThrottleTest, DelaysGrowThenTheGuessedNameIsRefusedFromThatAddress) {
  ThrottleLimits limits;
  limits.failures_per_ip = 4;
  limits.delay_max = absl::Seconds(4);
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  EXPECT_EQ(CheckOf(throttle, Ip(1), "a@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::Seconds(1));
  EXPECT_EQ(CheckOf(throttle, Ip(1), "a@x", now), AuthThrottle::Verdict::kSuspect);
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::Seconds(2));
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "A@x", now), absl::Seconds(4));
  EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::Seconds(4));  // capped
  absl::string_view reason;
  EXPECT_EQ(throttle.Check(Ip(1), "a@x", now, &reason), AuthThrottle::Verdict::kBlocked);
  EXPECT_NE(reason.find("guessing"), absl::string_view::npos);
  EXPECT_EQ(throttle.refused_ip.load(), 1u);
  // Another name from the same address is not refused (it is verified, at the back).
  EXPECT_EQ(CheckOf(throttle, Ip(1), "b@x", now), AuthThrottle::Verdict::kSuspect);
  EXPECT_EQ(CheckOf(throttle, Ip(2), "a@x", now), AuthThrottle::Verdict::kClean);
  // The window ends: the address starts over.
  EXPECT_EQ(CheckOf(throttle, Ip(1), "a@x", now + limits.window), AuthThrottle::Verdict::kClean);
}

TEST(AuthThrottleTest, OneFailingAppBehindANatLocksOutNoOtherAccount) {
  // Was: 10 failures from one address refused every account behind it for the window.
  ThrottleLimits limits;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  throttle.RecordSuccess(Ip(1), "good@x", now);
  for (int i = 0; i < 50; ++i) {
    throttle.RecordFailure(Ip(1), "misconfigured@x", now);
  }
  EXPECT_EQ(CheckOf(throttle, Ip(1), "misconfigured@x", now), AuthThrottle::Verdict::kBlocked);
  EXPECT_EQ(CheckOf(throttle, Ip(1), "good@x", now), AuthThrottle::Verdict::kClean);
  // Even a name that never authenticated from there: one failing name is no spray.
  EXPECT_EQ(CheckOf(throttle, Ip(1), "new@x", now), AuthThrottle::Verdict::kSuspect);
}

TEST(AuthThrottleTest, ASprayingAddressIsRefusedNewNamesButNotKnownGoodOnes) {
  ThrottleLimits limits;
  limits.users_per_ip = 5;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  throttle.RecordSuccess(Ip(1), "Good@x", now);
  for (int i = 0; i < 5; ++i) {
    throttle.RecordFailure(Ip(1), "user" + std::to_string(i) + "@x", now);
  }
  absl::string_view reason;
  EXPECT_EQ(throttle.Check(Ip(1), "user9@x", now, &reason), AuthThrottle::Verdict::kBlocked);
  EXPECT_NE(reason.find("spraying"), absl::string_view::npos);
  EXPECT_EQ(throttle.refused_spray.load(), 1u);
  EXPECT_EQ(CheckOf(throttle, Ip(1), "good@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(CheckOf(throttle, Ip(2), "user9@x", now), AuthThrottle::Verdict::kClean);
  // Known-good lasts longer than the failure window, but not for ever.
  EXPECT_EQ(CheckOf(throttle, Ip(1), "good@x", now + kKnownGoodFor - absl::Seconds(1)),
            AuthThrottle::Verdict::kClean);
}

TEST(AuthThrottleTest, ASuccessForgetsThatPairsFailures) {
  ThrottleLimits limits;
  limits.failures_per_ip = 3;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  throttle.RecordFailure(Ip(1), "a@x", now);
  throttle.RecordFailure(Ip(1), "a@x", now);
  throttle.RecordSuccess(Ip(1), "a@x", now);  // the password was fixed
  throttle.RecordFailure(Ip(1), "a@x", now);
  EXPECT_NE(CheckOf(throttle, Ip(1), "a@x", now), AuthThrottle::Verdict::kBlocked);
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
  EXPECT_EQ(CheckOf(throttle, Ip(1), "victim@x", now), AuthThrottle::Verdict::kBlocked);
  EXPECT_EQ(CheckOf(throttle, Ip(9), "victim@x", now), AuthThrottle::Verdict::kClean);
  // An address that failed only for other names is not refused this one.
  throttle.RecordFailure(Ip(8), "other@x", now);
  EXPECT_EQ(CheckOf(throttle, Ip(8), "victim@x", now), AuthThrottle::Verdict::kSuspect);
  EXPECT_EQ(throttle.refused_account.load(), 1u);
}

TEST(AuthThrottleTest, ExemptNetworksAreNeitherCountedNorDelayedNorRefused) {
  ThrottleLimits limits;
  limits.failures_per_ip = 2;
  limits.exempt = {*ParseCidr("192.0.0.0/30")};  // Ip(1..3)
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(throttle.RecordFailure(Ip(1), "a@x", now), absl::ZeroDuration());
  }
  EXPECT_EQ(CheckOf(throttle, Ip(1), "a@x", now), AuthThrottle::Verdict::kClean);
  throttle.RecordFailure(Ip(4), "a@x", now);
  throttle.RecordFailure(Ip(4), "a@x", now);
  EXPECT_EQ(CheckOf(throttle, Ip(4), "a@x", now), AuthThrottle::Verdict::kBlocked);
}

TEST(AuthThrottleTest, TrackedKeysAreBounded) {
  ThrottleLimits limits;
  limits.entries_max = 16;
  AuthThrottle throttle(limits);
  absl::Time now = absl::FromUnixSeconds(1000);
  for (uint8_t i = 1; i <= 10; ++i) {
    throttle.RecordFailure(Ip(i), "u@x", now);  // 3 keys per address, and one for the name
  }
  // Full of live entries: later addresses are not tracked (treated as clean), nothing grows.
  EXPECT_EQ(CheckOf(throttle, Ip(10), "u@x", now), AuthThrottle::Verdict::kClean);
  EXPECT_EQ(CheckOf(throttle, Ip(1), "u@x", now), AuthThrottle::Verdict::kSuspect);
  // Once the window passed, expired entries make room again.
  throttle.RecordFailure(Ip(10), "u@x", now + limits.window);
  EXPECT_EQ(CheckOf(throttle, Ip(10), "u@x", now + limits.window), AuthThrottle::Verdict::kSuspect);
}

}  // namespace
}  // namespace chute::auth
