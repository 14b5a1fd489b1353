#pragma once

// Passwords of HVE accounts: argon2id (RFC 9106) in the PHC string format, as libargon2
// encodes it ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"). The parameters live in the
// string, so raising the cost later does not invalidate stored hashes. Any thread may call.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::auth {

struct PasswordCost {
  uint32_t memory_kib = 19456;  // OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane
  uint32_t passes = 2;
  uint32_t lanes = 1;
};

// Passwords are 1..kPasswordBytesMax bytes.
inline constexpr size_t kPasswordBytesMax = 1024;

// HashPassword: a fresh random salt and the argon2id hash. InvalidArgument for an empty or
// over-long password, Internal when the system has no randomness or memory.
absl::StatusOr<std::string> HashPassword(absl::string_view password, PasswordCost cost = {});

// VerifyPassword: whether `password` matches `encoded`. False for a malformed hash.
bool VerifyPassword(absl::string_view encoded, absl::string_view password);

}  // namespace chute::auth
