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

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>

#define JSON_NOEXCEPTION 1
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
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

// IsHighS: whether the S half of an ES256 signature (32 bytes, big-endian) is above n/2, the
// half of the group order: (r, n - s) verifies wherever (r, s) does, and only the low one is
// accepted, so that a token has one signature.
bool IsHighS(const EC_KEY* key, const uint8_t* s_bytes) {
  const BIGNUM* order = EC_GROUP_get0_order(EC_KEY_get0_group(key));
  BIGNUM* s = BN_bin2bn(s_bytes, 32, nullptr);
  BIGNUM* half = BN_dup(order);
  bool high = s == nullptr || half == nullptr || BN_rshift1(half, half) != 1 || BN_cmp(s, half) > 0;
  BN_free(s);
  BN_free(half);
  return high;
}

enum class Signature { kGood, kBad, kHighS };

Signature VerifyEs256(EVP_PKEY* pkey, absl::string_view signed_part, const std::string& signature) {
  if (signature.size() != 64) {
    return Signature::kBad;  // JWS ES256 is r || s, 32 bytes each (RFC 7518 §3.4)
  }
  const EC_KEY* key = EVP_PKEY_get0_EC_KEY(pkey);
  const auto* raw = reinterpret_cast<const uint8_t*>(signature.data());
  if (IsHighS(key, raw + 32)) {
    return Signature::kHighS;
  }
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(signed_part.data()), signed_part.size(), digest);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  BIGNUM* r = BN_bin2bn(raw, 32, nullptr);
  BIGNUM* s = BN_bin2bn(raw + 32, 32, nullptr);
  ECDSA_SIG_set0(sig, r, s);
  bool ok = ECDSA_do_verify(digest, sizeof(digest), sig, key) == 1;
  ECDSA_SIG_free(sig);
  return ok ? Signature::kGood : Signature::kBad;
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

// StrictBase64Url: decodes one part of a compact JWS, which is canonical base64url (RFC 7515
// §2, RFC 4648 §5): the URL-safe alphabet only (no '=' padding, no white space, no '+' or '/'),
// and the bits after the last whole byte are zero, so that one token has one spelling.
bool StrictBase64Url(absl::string_view text, std::string* out) {
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
      return false;
    }
  }
  if (text.size() % 4 == 1 || !absl::WebSafeBase64Unescape(text, out)) {
    return false;
  }
  return absl::WebSafeBase64Escape(*out) == text;
}

// ParseObject: a JSON object without a repeated member name at any depth, with at most
// kTokenJsonDepthMax objects and arrays nested in one another (nlohmann keeps the last of two equal
// names silently: the callback sees every name as it is read). nullopt otherwise.
std::optional<nlohmann::json> ParseObject(absl::string_view text) {
  std::vector<absl::flat_hash_set<std::string>> names;  // one per open object
  bool refused = false;
  nlohmann::json::parser_callback_t check = [&](int depth, nlohmann::json::parse_event_t event,
                                                nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if ((event == Event::object_start || event == Event::array_start) &&
        depth >= kTokenJsonDepthMax) {
      refused = true;  // depth: the objects and arrays already open around this one
    }
    if (event == Event::object_start) {
      names.emplace_back();
    } else if (event == Event::object_end && !names.empty()) {
      names.pop_back();
    } else if (event == Event::key && !names.empty() &&
               !names.back().insert(parsed.get<std::string>()).second) {
      refused = true;
    }
    return true;
  };
  nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), check, false);
  if (refused || doc.is_discarded() || !doc.is_object()) {
    return std::nullopt;
  }
  return doc;
}

// NumericDate: a time claim (RFC 7519 §2) in whole seconds, rounded down (`up` false) or up;
// nullopt when it is not a number or not within [0, kNumericDateMax]. A double is compared
// before it is converted, never cast out of range.
std::optional<int64_t> NumericDate(const nlohmann::json& value, bool up) {
  if (value.is_number_unsigned()) {
    uint64_t seconds = value.get<uint64_t>();
    return seconds <= static_cast<uint64_t>(kNumericDateMax)
               ? std::optional<int64_t>(static_cast<int64_t>(seconds))
               : std::nullopt;
  }
  if (value.is_number_integer()) {
    int64_t seconds = value.get<int64_t>();
    return seconds >= 0 && seconds <= kNumericDateMax ? std::optional<int64_t>(seconds)
                                                      : std::nullopt;
  }
  if (value.is_number_float()) {
    double seconds = value.get<double>();
    if (!(seconds >= 0 && seconds <= static_cast<double>(kNumericDateMax))) {
      return std::nullopt;  // also NaN
    }
    return static_cast<int64_t>(up ? std::ceil(seconds) : std::floor(seconds));
  }
  return std::nullopt;
}

bool HasString(const nlohmann::json& list, absl::string_view wanted) {
  if (!list.is_array()) {
    return false;
  }
  for (const nlohmann::json& item : list) {
    if (item.is_string() && item.get<std::string>() == wanted) {
      return true;
    }
  }
  return false;
}

// Identify: whom the claims speak for, and whether they carry the SMTP permission of their
// kind: a delegated token (`scp`) the scope SMTP.Send, an app-only token the role
// SMTP.SendAsApp (Microsoft's names).
bool Identify(const nlohmann::json& claims, TokenIdentity* identity) {
  *identity = TokenIdentity();
  if (claims.contains("scp")) {
    identity->delegated = true;
    for (const char* name : {"upn", "preferred_username", "unique_name"}) {
      if (claims.contains(name) && claims[name].is_string()) {
        identity->user = claims[name].get<std::string>();
        identity->user_claim = name;
        break;
      }
    }
    if (!claims["scp"].is_string()) {
      return false;
    }
    for (absl::string_view scope : absl::StrSplit(claims["scp"].get<std::string>(), ' ')) {
      if (scope == "SMTP.Send") {
        return true;
      }
    }
    return false;
  }
  if (claims.contains("oid") && claims["oid"].is_string()) {
    identity->app_id = claims["oid"].get<std::string>();
  }
  return claims.contains("roles") && HasString(claims["roles"], "SMTP.SendAsApp");
}

TokenVerdict Invalid(std::string* why, absl::string_view reason) {
  if (why != nullptr) {
    *why = std::string(reason);
  }
  return TokenVerdict::kInvalid;
}

// Compact: a compact JWS taken apart: the decoded header, claims and signature, and the part
// the signature covers.
struct Compact {
  nlohmann::json header;
  nlohmann::json claims;
  std::string signature;
  absl::string_view signed_part;
};

// Split: `token` into its parts, with the hygiene of the header comment (base64url, JSON);
// the reason for the log when it fails.
std::optional<absl::string_view> Split(absl::string_view token, Compact* out) {
  if (token.size() > kTokenBytesMax) {
    return "token too long";
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) {
    return "not a compact JWS";
  }
  std::string header_text;
  std::string claims_text;
  if (!StrictBase64Url(parts[0], &header_text) || !StrictBase64Url(parts[1], &claims_text) ||
      !StrictBase64Url(parts[2], &out->signature)) {
    return "not canonical base64url";
  }
  std::optional<nlohmann::json> header = ParseObject(header_text);
  std::optional<nlohmann::json> claims = ParseObject(claims_text);
  if (!header.has_value() || !claims.has_value()) {
    return "not a JSON object, a repeated member name, or nested too deep";
  }
  out->header = std::move(*header);
  out->claims = std::move(*claims);
  out->signed_part = absl::string_view(parts[0].data(), parts[0].size() + 1 + parts[1].size());
  return std::nullopt;
}

// CheckSignature: the header's algorithm, kid and crit, and the signature with the keys the
// header may name. The key decides the algorithm: an RSA key verifies RS256 only, an EC key
// ES256 only.
std::optional<std::string> CheckSignature(const Compact& token, const Jwks& jwks) {
  const nlohmann::json& header = token.header;
  if (!header.contains("alg") || !header["alg"].is_string()) {
    return "no algorithm";
  }
  std::string alg = header["alg"].get<std::string>();
  if (alg != "RS256" && alg != "ES256") {
    return absl::StrCat("algorithm ", alg, " is not accepted");
  }
  if (header.contains("crit")) {
    return "a crit header (no extension is understood)";
  }
  if (header.contains("kid") && !header["kid"].is_string()) {
    return "a kid that is not a string";
  }
  std::string kid = header.contains("kid") ? header["kid"].get<std::string>() : "";
  bool high_s = false;
  for (const Jwks::Key& key : jwks.keys()) {
    if ((!kid.empty() && key.kid != kid) || key.is_ec != (alg == "ES256")) {
      continue;
    }
    if (!key.is_ec && VerifyRs256(key.pkey, token.signed_part, token.signature)) {
      return std::nullopt;
    }
    if (key.is_ec) {
      Signature verdict = VerifyEs256(key.pkey, token.signed_part, token.signature);
      if (verdict == Signature::kGood) {
        return std::nullopt;
      }
      high_s = high_s || verdict == Signature::kHighS;
    }
  }
  if (!kid.empty() && std::none_of(jwks.keys().begin(), jwks.keys().end(),
                                   [&](const Jwks::Key& key) { return key.kid == kid; })) {
    // Said in the log: at most 64 bytes of what any client may write.
    return absl::StrCat("no key with kid ", kid.size() > 64 ? kid.substr(0, 64) + "..." : kid);
  }
  return high_s ? "an ES256 signature with a high S" : "bad signature";
}

// CheckTimes: nbf and iat (when present) not after now + kClockSkew, exp (required) not
// before now - kClockSkew; each a NumericDate in range.
TokenVerdict CheckTimes(const nlohmann::json& claims, absl::Time now, std::string* why) {
  int64_t now_s = absl::ToUnixSeconds(now);
  int64_t skew_s = absl::ToInt64Seconds(kClockSkew);
  for (const char* name : {"nbf", "iat"}) {
    if (!claims.contains(name)) {
      continue;
    }
    std::optional<int64_t> at = NumericDate(claims[name], /*up=*/true);
    if (!at.has_value()) {
      return Invalid(why, absl::StrCat(name, " is not a NumericDate in range"));
    }
    if (*at > now_s + skew_s) {
      return Invalid(why, absl::StrCat(name, " is in the future"));
    }
  }
  if (!claims.contains("exp")) {
    return Invalid(why, "no expiry");
  }
  std::optional<int64_t> exp = NumericDate(claims["exp"], /*up=*/false);
  if (!exp.has_value()) {
    return Invalid(why, "exp is not a NumericDate in range");
  }
  if (*exp <= now_s - skew_s) {
    return TokenVerdict::kExpired;
  }
  return TokenVerdict::kOk;
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
                         absl::Time now, TokenIdentity* identity, std::string* why) {
  Compact parts;
  if (std::optional<absl::string_view> malformed = Split(token, &parts)) {
    return Invalid(why, *malformed);
  }
  if (std::optional<std::string> refused = CheckSignature(parts, jwks)) {
    return Invalid(why, *refused);
  }
  const nlohmann::json& claims = parts.claims;
  if (!claims.contains("iss") || claims["iss"] != policy.issuer) {
    return Invalid(why, "wrong issuer");
  }
  if (!claims.contains("aud") || !AudienceMatches(claims["aud"], policy.audience)) {
    return Invalid(why, "wrong audience");
  }
  if (!policy.tenant_id.empty() && (!claims.contains("tid") || claims["tid"] != policy.tenant_id)) {
    return Invalid(why, "wrong tenant id");
  }
  if (TokenVerdict times = CheckTimes(claims, now, why); times != TokenVerdict::kOk) {
    return times;
  }
  if (!Identify(claims, identity)) {
    return TokenVerdict::kNoPermission;
  }
  return TokenVerdict::kOk;
}

std::optional<std::string> UnknownKeyId(absl::string_view token, const Jwks& jwks) {
  Compact parts;
  if (Split(token, &parts).has_value() || !parts.header.contains("kid") ||
      !parts.header["kid"].is_string()) {
    return std::nullopt;
  }
  std::string kid = parts.header["kid"].get<std::string>();
  if (kid.empty()) {
    return std::nullopt;
  }
  for (const Jwks::Key& key : jwks.keys()) {
    if (key.kid == kid) {
      return std::nullopt;
    }
  }
  return kid;
}

}  // namespace chute::auth
