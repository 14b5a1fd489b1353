// password_policy.cc: checks a new password against its tenant's length and complexity rules.

#include "directory/password_policy.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace chute::directory {
namespace {

// CodePoints: characters in UTF-8 text (continuation bytes are not counted), so that a
// minimum length means what a person counts.
int64_t CodePoints(absl::string_view text) {
  int64_t count = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) {
      ++count;
    }
  }
  return count;
}

}  // namespace

absl::StatusOr<PasswordComplexity> ParseComplexity(absl::string_view text) {
  if (text == "none") {
    return PasswordComplexity::kNone;
  }
  if (text == "3-of-4") {
    return PasswordComplexity::kThreeOfFour;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("password complexity is none or 3-of-4, not '", text, "'"));
}

absl::string_view ComplexityName(PasswordComplexity complexity) {
  return complexity == PasswordComplexity::kNone ? "none" : "3-of-4";
}

absl::Status CheckPasswordRules(const PasswordPolicy& policy, absl::string_view password,
                                absl::string_view tenant) {
  int64_t length = CodePoints(password);
  if (length < policy.min_length) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the password is too short: tenant '", tenant, "' requires at least ", policy.min_length,
        " characters (password-min-length), this one has ", length));
  }
  if (policy.complexity == PasswordComplexity::kThreeOfFour) {
    bool lower = false;
    bool upper = false;
    bool digit = false;
    bool symbol = false;
    for (char c : password) {
      unsigned char u = static_cast<unsigned char>(c);
      lower = lower || absl::ascii_islower(u);
      upper = upper || absl::ascii_isupper(u);
      digit = digit || absl::ascii_isdigit(u);
      symbol = symbol || !absl::ascii_isalnum(u);  // punctuation, space, any non-ASCII
    }
    std::vector<absl::string_view> kinds;
    for (auto [has, name] : {std::pair{lower, "lower-case"}, std::pair{upper, "upper-case"},
                             std::pair{digit, "digit"}, std::pair{symbol, "symbol"}}) {
      if (has) {
        kinds.push_back(name);
      }
    }
    if (kinds.size() < 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the password is not complex enough: tenant '", tenant,
          "' requires at least 3 of the 4 kinds of character (lower-case letter, upper-case "
          "letter, digit, symbol; password-complexity 3-of-4); this one has ",
          kinds.empty() ? "none" : absl::StrJoin(kinds, ", ")));
    }
  }
  return absl::OkStatus();
}

}  // namespace chute::directory
