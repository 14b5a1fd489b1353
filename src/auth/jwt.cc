// jwt.cc: verifies XOAUTH2 bearer tokens (RS256/ES256) against a tenant's JWKS.

#include "auth/jwt.h"

#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include <fstream>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace chute::auth {
namespace {

bool Base64Url(absl::string_view text, std::string* out) {
  return absl::WebSafeBase64Unescape(text, out);
}

BIGNUM* BigNumber(const std::string& base64url) {
  std::string bytes;
  if (!Base64Url(base64url, &bytes) || bytes.empty()) {
    return nullptr;
  }
  return BN_bin2bn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), nullptr);
}

EVP_PKEY* RsaKey(const nlohmann::json& jwk) {
  if (!jwk.contains("n") || !jwk.contains("e") || !jwk["n"].is_string() || !jwk["e"].is_string()) {
    return nullptr;
  }
  BIGNUM* n = BigNumber(jwk["n"].get<std::string>());
  BIGNUM* e = BigNumber(jwk["e"].get<std::string>());
  RSA* rsa = RSA_new();
  if (n == nullptr || e == nullptr || rsa == nullptr || RSA_set0_key(rsa, n, e, nullptr) != 1) {
    BN_free(n);
    BN_free(e);
    RSA_free(rsa);
    return nullptr;
  }
  EVP_PKEY* pkey = EVP_PKEY_new();
  EVP_PKEY_assign_RSA(pkey, rsa);
  return pkey;
}

EVP_PKEY* EcKey(const nlohmann::json& jwk) {
  if (!jwk.contains("crv") || jwk["crv"] != "P-256" || !jwk.contains("x") || !jwk.contains("y") ||
      !jwk["x"].is_string() || !jwk["y"].is_string()) {
    return nullptr;
  }
  BIGNUM* x = BigNumber(jwk["x"].get<std::string>());
  BIGNUM* y = BigNumber(jwk["y"].get<std::string>());
  EC_KEY* ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  bool ok = x != nullptr && y != nullptr && ec != nullptr &&
            EC_KEY_set_public_key_affine_coordinates(ec, x, y) == 1;
  BN_free(x);
  BN_free(y);
  if (!ok) {
    EC_KEY_free(ec);
    return nullptr;
  }
  EVP_PKEY* pkey = EVP_PKEY_new();
  EVP_PKEY_assign_EC_KEY(pkey, ec);
  return pkey;
}

bool VerifyRs256(EVP_PKEY* pkey, absl::string_view signed_part, const std::string& signature) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestVerify(ctx, reinterpret_cast<const uint8_t*>(signature.data()),
                             signature.size(), reinterpret_cast<const uint8_t*>(signed_part.data()),
                             signed_part.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

bool VerifyEs256(EVP_PKEY* pkey, absl::string_view signed_part, const std::string& signature) {
  if (signature.size() != 64) {
    return false;  // JWS ES256 is r || s, 32 bytes each (RFC 7518 §3.4)
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(signed_part.data()), signed_part.size(), digest);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const uint8_t*>(signature.data()), 32, nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const uint8_t*>(signature.data()) + 32, 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  bool ok = ECDSA_do_verify(digest, sizeof(digest), sig, EVP_PKEY_get0_EC_KEY(pkey)) == 1;
  ECDSA_SIG_free(sig);
  return ok;
}

bool AudienceMatches(const nlohmann::json& aud, const std::string& expected) {
  if (aud.is_string()) {
    return aud.get<std::string>() == expected;
  }
  if (aud.is_array()) {
    for (const nlohmann::json& value : aud) {
      if (value.is_string() && value.get<std::string>() == expected) {
        return true;
      }
    }
  }
  return false;
}

bool HasPermission(const nlohmann::json& claims) {
  if (claims.contains("roles") && claims["roles"].is_array()) {
    for (const nlohmann::json& role : claims["roles"]) {
      if (role.is_string() && role.get<std::string>() == "SMTP.SendAsApp") {
        return true;
      }
    }
  }
  if (claims.contains("scp") && claims["scp"].is_string()) {
    for (absl::string_view scope : absl::StrSplit(claims["scp"].get<std::string>(), ' ')) {
      if (scope == "SMTP.Send" || scope == "SMTP.SendAsApp") {
        return true;
      }
    }
  }
  return false;
}

// AppId: the application's service principal object id. AllowedApps holds Enterprise
// application object ids, and Microsoft says explicitly not to use the client id, so only
// `oid` counts: `azp`/`appid` (the client id) never match.
std::string AppId(const nlohmann::json& claims) {
  if (claims.contains("oid") && claims["oid"].is_string()) {
    return claims["oid"].get<std::string>();
  }
  return "";
}

TokenVerdict Invalid(std::string* why, absl::string_view reason) {
  if (why != nullptr) {
    *why = std::string(reason);
  }
  return TokenVerdict::kInvalid;
}

}  // namespace

Jwks::~Jwks() {
  for (Key& key : keys_) {
    EVP_PKEY_free(key.pkey);
  }
}

absl::StatusOr<std::shared_ptr<const Jwks>> Jwks::Parse(absl::string_view text) {
  nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("keys") || !doc["keys"].is_array()) {
    return absl::InvalidArgumentError("not a JWKS document (an object with a \"keys\" array)");
  }
  if (doc["keys"].size() > kJwksKeysMax) {
    return absl::InvalidArgumentError(absl::StrCat("more than ", kJwksKeysMax, " keys"));
  }
  std::shared_ptr<Jwks> jwks(new Jwks());
  for (const nlohmann::json& jwk : doc["keys"]) {
    if (!jwk.is_object() || !jwk.contains("kty") || !jwk["kty"].is_string()) {
      continue;
    }
    Key key;
    key.kid = jwk.contains("kid") && jwk["kid"].is_string() ? jwk["kid"].get<std::string>() : "";
    if (jwk["kty"] == "RSA") {
      key.pkey = RsaKey(jwk);
    } else if (jwk["kty"] == "EC") {
      key.pkey = EcKey(jwk);
      key.is_ec = true;
    }
    if (key.pkey != nullptr) {
      jwks->keys_.push_back(key);
    }
  }
  if (jwks->keys_.empty()) {
    return absl::InvalidArgumentError("no usable RSA or EC P-256 key");
  }
  return std::shared_ptr<const Jwks>(std::move(jwks));
}

absl::StatusOr<std::shared_ptr<const Jwks>> Jwks::Load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot read the JWKS file"));
  }
  std::string text(kJwksBytesMax + 1, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(file.gcount()));
  if (text.size() > kJwksBytesMax) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": larger than ", kJwksBytesMax, " bytes"));
  }
  absl::StatusOr<std::shared_ptr<const Jwks>> jwks = Parse(text);
  if (!jwks.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", jwks.status().message()));
  }
  return jwks;
}

TokenVerdict VerifyToken(absl::string_view token, const Jwks& jwks, const TokenPolicy& policy,
                         absl::Time now, std::string* why) {
  if (token.size() > kTokenBytesMax) {
    return Invalid(why, "token too long");
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) {
    return Invalid(why, "not a compact JWS");
  }
  std::string header_text;
  std::string claims_text;
  std::string signature;
  if (!Base64Url(parts[0], &header_text) || !Base64Url(parts[1], &claims_text) ||
      !Base64Url(parts[2], &signature)) {
    return Invalid(why, "bad base64url");
  }
  nlohmann::json header = nlohmann::json::parse(header_text, nullptr, false);
  nlohmann::json claims = nlohmann::json::parse(claims_text, nullptr, false);
  if (header.is_discarded() || claims.is_discarded() || !header.is_object() ||
      !claims.is_object() || !header.contains("alg") || !header["alg"].is_string()) {
    return Invalid(why, "bad JSON");
  }
  std::string alg = header["alg"].get<std::string>();
  if (alg != "RS256" && alg != "ES256") {
    return Invalid(why, absl::StrCat("algorithm ", alg, " is not accepted"));
  }
  std::string kid =
      header.contains("kid") && header["kid"].is_string() ? header["kid"].get<std::string>() : "";
  absl::string_view signed_part(parts[0].data(), parts[0].size() + 1 + parts[1].size());
  bool verified = false;
  for (const Jwks::Key& key : jwks.keys()) {
    if ((!kid.empty() && key.kid != kid) || key.is_ec != (alg == "ES256")) {
      continue;  // the key decides the algorithm
    }
    verified = key.is_ec ? VerifyEs256(key.pkey, signed_part, signature)
                         : VerifyRs256(key.pkey, signed_part, signature);
    if (verified) {
      break;
    }
  }
  if (!verified) {
    return Invalid(why, "bad signature");
  }
  if (!claims.contains("iss") || claims["iss"] != policy.issuer) {
    return Invalid(why, "wrong issuer");
  }
  if (!claims.contains("aud") || !AudienceMatches(claims["aud"], policy.audience)) {
    return Invalid(why, "wrong audience");
  }
  if (!policy.tenant_id.empty() && (!claims.contains("tid") || claims["tid"] != policy.tenant_id)) {
    return Invalid(why, "wrong tenant id");
  }
  int64_t now_s = absl::ToUnixSeconds(now);
  int64_t skew_s = absl::ToInt64Seconds(kClockSkew);
  if (claims.contains("nbf") && claims["nbf"].is_number() &&
      claims["nbf"].get<int64_t>() > now_s + skew_s) {
    return Invalid(why, "not yet valid");
  }
  if (!claims.contains("exp") || !claims["exp"].is_number()) {
    return Invalid(why, "no expiry");
  }
  if (claims["exp"].get<int64_t>() <= now_s - skew_s) {
    return TokenVerdict::kExpired;
  }
  if (!HasPermission(claims)) {
    return TokenVerdict::kNoPermission;
  }
  if (!policy.allowed_apps.empty()) {
    std::string app = AppId(claims);
    bool allowed = false;
    for (const std::string& id : policy.allowed_apps) {
      allowed = allowed || (!app.empty() && absl::EqualsIgnoreCase(id, app));
    }
    if (!allowed) {
      return TokenVerdict::kAppNotAllowed;
    }
  }
  return TokenVerdict::kOk;
}

}  // namespace chute::auth
