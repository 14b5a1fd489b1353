#pragma once

// A tenant's password policy: minimum length, complexity and history, as Microsoft's HVE
// documentation asks of an HVE account's password ("must comply with the organization's
// password length, complexity and history requirements"). chutectl enforces it when it sets
// a password; the history is checked against stored argon2id hashes, never plaintext.
//
// Any thread may call these.

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::directory {

enum class PasswordComplexity {
  kNone,        // any characters
  kThreeOfFour  // at least three of: lower-case letter, upper-case letter, digit, symbol
};

// The ranges of the three settings. 24 remembered passwords is Windows' own maximum for
// "Enforce password history"; the stored previous hashes are bounded by it.
inline constexpr int64_t kPasswordMinLengthMin = 1;
inline constexpr int64_t kPasswordMinLengthMax = 256;
inline constexpr int64_t kPasswordHistoryMax = 24;

struct PasswordPolicy {
  int64_t min_length = 12;  // characters (UTF-8 code points)
  PasswordComplexity complexity = PasswordComplexity::kThreeOfFour;
  int64_t history = 5;  // the new password may not be any of the last N (the current included)
};

// ParseComplexity: "none" or "3-of-4". InvalidArgument otherwise.
absl::StatusOr<PasswordComplexity> ParseComplexity(absl::string_view text);
absl::string_view ComplexityName(PasswordComplexity complexity);

// CheckPasswordRules: OK when `password` has the length and complexity `policy` asks for;
// otherwise InvalidArgument naming the rule broken and the tenant whose rule it is. (History
// needs the stored hashes: the caller checks it.)
absl::Status CheckPasswordRules(const PasswordPolicy& policy, absl::string_view password,
                                absl::string_view tenant);

}  // namespace chute::directory
