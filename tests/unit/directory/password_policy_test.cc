// password_policy_test.cc: unit tests for tenant password length and complexity rules.

#include "directory/password_policy.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace chute::directory {
namespace {

absl::Status Check(const PasswordPolicy& policy, absl::string_view password) {
  return CheckPasswordRules(policy, password, "contoso");
}

TEST(PasswordPolicyTest, DefaultsAreTwelveCharactersThreeOfFourHistoryFive) {
  PasswordPolicy policy;
  EXPECT_EQ(policy.min_length, 12);
  EXPECT_EQ(policy.complexity, PasswordComplexity::kThreeOfFour);
  EXPECT_EQ(policy.history, 5);
}

TEST(PasswordPolicyTest, LengthAtBelowAndAboveTheMinimum) {
  PasswordPolicy policy;
  EXPECT_TRUE(Check(policy, "Abcdefghij-1").ok());        // 12
  absl::Status short_one = Check(policy, "Abcdefghij1");  // 11
  EXPECT_EQ(short_one.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(short_one.message(), "at least 12 characters")) << short_one;
  EXPECT_TRUE(absl::StrContains(short_one.message(), "tenant 'contoso'")) << short_one;
}

TEST(PasswordPolicyTest, LengthCountsCharactersNotBytes) {
  PasswordPolicy policy;
  policy.min_length = 4;
  policy.complexity = PasswordComplexity::kNone;
  EXPECT_FALSE(Check(policy, "äöü").ok());  // 6 bytes, 3 characters
  EXPECT_TRUE(Check(policy, "äöüß").ok());
}

TEST(PasswordPolicyTest, ThreeOfFourKinds) {
  PasswordPolicy policy;
  policy.min_length = 1;
  EXPECT_TRUE(Check(policy, "abcDEF123").ok());   // lower, upper, digit
  EXPECT_TRUE(Check(policy, "abc-DEF").ok());     // lower, upper, symbol
  EXPECT_TRUE(Check(policy, "abc 123").ok());     // a space is a symbol
  EXPECT_TRUE(Check(policy, "ABC123ü").ok());     // non-ASCII is a symbol
  absl::Status two = Check(policy, "abcdef123");  // lower, digit
  EXPECT_EQ(two.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(two.message(), "3-of-4")) << two;
  EXPECT_TRUE(absl::StrContains(two.message(), "this one has lower-case, digit")) << two;
  policy.complexity = PasswordComplexity::kNone;
  EXPECT_TRUE(Check(policy, "abcdef123").ok());
}

TEST(PasswordPolicyTest, ComplexityNames) {
  EXPECT_EQ(*ParseComplexity("none"), PasswordComplexity::kNone);
  EXPECT_EQ(*ParseComplexity("3-of-4"), PasswordComplexity::kThreeOfFour);
  EXPECT_FALSE(ParseComplexity("3of4").ok());
  EXPECT_EQ(ComplexityName(PasswordComplexity::kThreeOfFour), "3-of-4");
  EXPECT_EQ(ComplexityName(PasswordComplexity::kNone), "none");
}

}  // namespace
}  // namespace chute::directory
