#pragma once

// OAuth bearer tokens for XOAUTH2 (docs/architecture.md, Auth): JWTs signed RS256 or ES256,
// verified with BoringSSL against the tenant's JWKS. The algorithm is taken from the key, never
// from the token alone: "none" and HS* are refused, and an RSA key only verifies RS256, a P-256 key
// only ES256.
//
// Jwks: the public keys of one JWKS file, immutable once loaded. VerifyToken: pure apart from
// the signature check; any thread.

#include <openssl/base.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace chute::auth {

inline constexpr size_t kTokenBytesMax = 8192;
inline constexpr size_t kJwksBytesMax = 1 << 20;
inline constexpr size_t kJwksKeysMax = 64;
inline constexpr absl::Duration kClockSkew = absl::Minutes(5);

class Jwks {
 public:
  // Parse: a JWKS document. RSA keys (n, e) and EC P-256 keys (x, y); other keys are skipped.
  // InvalidArgument when it is not JSON, has no usable key, or has too many.
  static absl::StatusOr<std::shared_ptr<const Jwks>> Parse(absl::string_view json);
  // Load: Parse() of the file at `path`.
  static absl::StatusOr<std::shared_ptr<const Jwks>> Load(const std::string& path);
  ~Jwks();

  struct Key {
    std::string kid;
    bool is_ec = false;
    EVP_PKEY* pkey = nullptr;  // owned
  };
  const std::vector<Key>& keys() const { return keys_; }

 private:
  Jwks() = default;
  std::vector<Key> keys_;
};

// What the tenant trusts and what the account allows (from the directory).
struct TokenPolicy {
  std::string issuer;
  std::string audience;
  std::string tenant_id;                  // "" = not checked
  std::vector<std::string> allowed_apps;  // empty = any application
};

enum class TokenVerdict {
  kOk,
  kInvalid,        // malformed, bad signature, wrong iss/aud/tid, not yet valid: 535 5.7.3
  kExpired,        // 535 5.7.143
  kNoPermission,   // neither role SMTP.SendAsApp nor scope SMTP.Send: 535 5.7.144
  kAppNotAllowed,  // the app id is not in AllowedApps: 550 5.7.240
};

// VerifyToken: checks signature, iss, aud, exp/nbf (with kClockSkew), tid, role or scope, and
// the app id (the service principal object id `oid` only) against the policy. `why` (may be
// null) gets a short reason for the log.
TokenVerdict VerifyToken(absl::string_view token, const Jwks& jwks, const TokenPolicy& policy,
                         absl::Time now, std::string* why);

}  // namespace chute::auth
