#pragma once

// OAuth bearer tokens for XOAUTH2 (docs/architecture.md, Auth): JWTs signed RS256 or ES256,
// verified with BoringSSL against the tenant's JWKS. The algorithm is taken from the key, never
// from the token alone: "none" and HS* are refused, and an RSA key only verifies RS256, a P-256 key
// only ES256.
//
// Hygiene: a token is refused (kInvalid) unless each of its three parts is canonical base64url
// (the URL-safe alphabet only: no padding, no white space, no stray bits), its header and claims
// are JSON objects without a repeated member name at any depth (a parser that keeps the first
// and one that keeps the last would read two different tokens) nested at most
// kTokenJsonDepthMax deep, the header names no `crit` extension (chute implements none, and RFC
// 7515 §4.1.11 says a token with one it does not understand is invalid), an ES256 signature has
// a low S (s <= n/2: of the two signatures (r, s) and (r, n - s) of the same token only one is
// accepted), and exp, nbf and iat are NumericDates within [0, kNumericDateMax]. A NumericDate
// may have a fraction (RFC 7519 §2); it is rounded towards the stricter side: exp down, nbf and
// iat up.
//
// Jwks: the public keys of one JWKS file, immutable once loaded. VerifyToken: pure apart from
// the signature check; any thread.

#include <openssl/base.h>

#include <cstdint>
#include <memory>
#include <optional>
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
// The header and the claims nest objects and arrays at most this deep (Entra's: 2).
inline constexpr int kTokenJsonDepthMax = 16;
// The largest NumericDate accepted: 9999-12-31T23:59:59Z. Anything later (exp = 1e30) is not a
// time a token can mean, and converting it to an integer would overflow.
inline constexpr int64_t kNumericDateMax = 253'402'300'799;
static_assert(kNumericDateMax < (int64_t{1} << 53), "every NumericDate is exact as a double");

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

// What the tenant trusts (from the directory).
struct TokenPolicy {
  std::string issuer;
  std::string audience;
  std::string tenant_id;  // "" = not checked
};

enum class TokenVerdict {
  kOk,
  kInvalid,       // malformed, bad signature, wrong iss/aud/tid, not yet valid: 535 5.7.3
  kExpired,       // 535 5.7.143
  kNoPermission,  // a delegated token without scope SMTP.Send, an app-only token without
                  // role SMTP.SendAsApp: 535 5.7.144
};

// TokenIdentity: whom a verified token speaks for. Which account it may then authenticate is
// the policy's decision (policy/hve_policy.h: CheckTokenAccount).
struct TokenIdentity {
  // A token with an `scp` claim is delegated (a user signed in to an app, which acts for that
  // user); one without is app-only (the app acts as itself, with an application permission).
  bool delegated = false;
  // Delegated: the user's name: `upn`, else `preferred_username`, else `unique_name` (the
  // first of them the token has; "" when it has none). `user_claim` names the claim.
  std::string user;
  std::string user_claim;
  // App-only: the app's service principal object id, `oid` ("" when absent). AllowedApps
  // holds Enterprise application object ids, and Microsoft says explicitly not to use the
  // client id, so `azp`/`appid` never count.
  std::string app_id;
};

// VerifyToken: checks the hygiene above, the signature, iss, aud, tid, nbf, iat and exp (with
// kClockSkew; an iat later than now + kClockSkew is invalid), and the permission: a delegated
// token's `scp` must include SMTP.Send, an app-only token's `roles` SMTP.SendAsApp. On kOk,
// `identity` gets whom the token speaks for. `why` (may be null) gets a short reason for the
// log.
TokenVerdict VerifyToken(absl::string_view token, const Jwks& jwks, const TokenPolicy& policy,
                         absl::Time now, TokenIdentity* identity, std::string* why);

// UnknownKeyId: the key id (`kid`) the token's header names when `jwks` has no key with it,
// else nullopt (no kid, a known one, or a header that does not parse). A token refused for
// this may be signed with a key the identity provider published after `jwks` was fetched
// (auth/key_store.h: KeyNotFound).
std::optional<std::string> UnknownKeyId(absl::string_view token, const Jwks& jwks);

}  // namespace chute::auth
