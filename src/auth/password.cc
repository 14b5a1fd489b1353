// password.cc: hashes and verifies HVE account passwords with argon2id (PHC strings).

#include "auth/password.h"

#include <argon2.h>
#include <sys/random.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace chute::auth {
namespace {

constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;
constexpr size_t kEncodedBytesMax = 256;

}  // namespace

absl::StatusOr<std::string> HashPassword(absl::string_view password, PasswordCost cost) {
  if (password.empty() || password.size() > kPasswordBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("a password is 1..", kPasswordBytesMax, " bytes"));
  }
  uint8_t salt[kSaltBytes];
  if (getrandom(salt, sizeof(salt), 0) != static_cast<ssize_t>(sizeof(salt))) {
    return absl::InternalError("getrandom failed: no salt for the password hash");
  }
  char encoded[kEncodedBytesMax];
  int rc = argon2id_hash_encoded(cost.passes, cost.memory_kib, cost.lanes, password.data(),
                                 password.size(), salt, sizeof(salt), kHashBytes, encoded,
                                 sizeof(encoded));
  if (rc != ARGON2_OK) {
    return absl::InternalError(absl::StrCat("argon2id: ", argon2_error_message(rc)));
  }
  return std::string(encoded);
}

bool VerifyPassword(absl::string_view encoded, absl::string_view password) {
  if (encoded.empty() || encoded.size() >= kEncodedBytesMax ||
      password.size() > kPasswordBytesMax) {
    return false;
  }
  std::string encoded_z(encoded);  // argon2 wants a NUL-terminated string
  return argon2id_verify(encoded_z.c_str(), password.data(), password.size()) == ARGON2_OK;
}

}  // namespace chute::auth
