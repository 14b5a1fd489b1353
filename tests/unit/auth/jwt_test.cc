// jwt_test.cc: XOAUTH2 bearer tokens against a JWKS: a P-256 key made by the test signs ES256
// tokens, and each claim the verifier checks is broken in turn.

#include "auth/jwt.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <openssl/sha.h>

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace chute::auth {
namespace {

std::string B64Url(absl::string_view bytes) { return absl::WebSafeBase64Escape(bytes); }

std::string Coordinate(const BIGNUM* n) {
  std::string out(32, '\0');
  BN_bn2bin_padded(reinterpret_cast<uint8_t*>(out.data()), out.size(), n);
  return B64Url(out);
}

class JwtTest : public ::testing::Test {
 protected:
  void SetUp() override {
    key_ = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    ASSERT_NE(key_, nullptr);
    ASSERT_EQ(EC_KEY_generate_key(key_), 1);
    BIGNUM* x = BN_new();
    BIGNUM* y = BN_new();
    ASSERT_EQ(EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(key_),
                                                  EC_KEY_get0_public_key(key_), x, y, nullptr),
              1);
    std::string jwks = absl::StrCat(R"({"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":")",
                                    Coordinate(x), R"(","y":")", Coordinate(y), R"("}]})");
    BN_free(x);
    BN_free(y);
    absl::StatusOr<std::shared_ptr<const Jwks>> parsed = Jwks::Parse(jwks);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    jwks_ = *parsed;
    policy_.issuer = "https://login.example.test/tid-1/v2.0";
    policy_.audience = "https://outlook.office.com";
    policy_.tenant_id = "tid-1";
  }
  void TearDown() override { EC_KEY_free(key_); }

  // Token: an ES256 JWT with `claims` (a JSON object's members), signed by the test's key.
  std::string Token(absl::string_view claims, absl::string_view alg = "ES256") {
    std::string header = absl::StrCat(R"({"alg":")", alg, R"(","kid":"k1","typ":"JWT"})");
    std::string signing_input =
        absl::StrCat(B64Url(header), ".", B64Url(absl::StrCat("{", claims, "}")));
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(signing_input.data()), signing_input.size(), digest);
    ECDSA_SIG* sig = ECDSA_do_sign(digest, sizeof(digest), key_);
    std::string raw(64, '\0');
    BN_bn2bin_padded(reinterpret_cast<uint8_t*>(raw.data()), 32, sig->r);
    BN_bn2bin_padded(reinterpret_cast<uint8_t*>(raw.data()) + 32, 32, sig->s);
    ECDSA_SIG_free(sig);
    return absl::StrCat(signing_input, ".", B64Url(raw));
  }
  std::string Claims(absl::string_view extra) const {
    return absl::StrCat(R"("iss":")", policy_.issuer, R"(","aud":")", policy_.audience,
                        R"(","tid":"tid-1","exp":)", absl::ToUnixSeconds(now_ + absl::Hours(1)),
                        R"(,"nbf":)", absl::ToUnixSeconds(now_ - absl::Minutes(1)), extra);
  }
  TokenVerdict Verify(const std::string& token, std::string* why = nullptr) const {
    return VerifyToken(token, *jwks_, policy_, now_, why);
  }

  EC_KEY* key_ = nullptr;
  std::shared_ptr<const Jwks> jwks_;
  TokenPolicy policy_;
  absl::Time now_ = absl::FromUnixSeconds(1'790'000'000);
};

TEST_F(JwtTest, AnAppTokenWithTheSmtpRoleIsAccepted) {
  std::string why;
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1")")), &why),
            TokenVerdict::kOk)
      << why;
}

TEST_F(JwtTest, ADelegatedTokenWithTheSmtpScopeIsAccepted) {
  EXPECT_EQ(Verify(Token(Claims(R"(,"scp":"openid SMTP.Send","oid":"user-1")"))),
            TokenVerdict::kOk);
}

TEST_F(JwtTest, WithoutTheRoleOrScopeItIsNoPermission) {
  EXPECT_EQ(Verify(Token(Claims(R"(,"scp":"Mail.Read","oid":"app-1")"))),
            TokenVerdict::kNoPermission);
}

TEST_F(JwtTest, ExpiredBeyondTheSkewIsExpired) {
  std::string token = Token(Claims(R"(,"roles":["SMTP.SendAsApp"])"));  // exp: in an hour
  now_ += absl::Hours(1) + kClockSkew - absl::Seconds(1);
  EXPECT_EQ(Verify(token), TokenVerdict::kOk);  // within the skew
  now_ += absl::Seconds(2);
  EXPECT_EQ(Verify(token), TokenVerdict::kExpired);
}

TEST_F(JwtTest, WrongIssuerAudienceOrTenantIsInvalid) {
  std::string token = Token(Claims(R"(,"roles":["SMTP.SendAsApp"])"));
  TokenPolicy good = policy_;
  policy_.issuer = "https://evil.example.test/";
  EXPECT_EQ(Verify(token), TokenVerdict::kInvalid);
  policy_ = good;
  policy_.audience = "api://other";
  EXPECT_EQ(Verify(token), TokenVerdict::kInvalid);
  policy_ = good;
  policy_.tenant_id = "tid-2";
  EXPECT_EQ(Verify(token), TokenVerdict::kInvalid);
}

TEST_F(JwtTest, AnAppOutsideAllowedAppsIsRefused) {
  policy_.allowed_apps = {"app-2"};
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1")"))),
            TokenVerdict::kAppNotAllowed);
  policy_.allowed_apps = {"app-1"};
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1")"))),
            TokenVerdict::kOk);
}

TEST_F(JwtTest, ATamperedPayloadFailsTheSignature) {
  std::string token = Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1")"));
  size_t first = token.find('.');
  size_t second = token.find('.', first + 1);
  std::string forged_claims = Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-9")");
  std::string forged =
      absl::StrCat(token.substr(0, first + 1), B64Url(absl::StrCat("{", forged_claims, "}")),
                   token.substr(second));
  EXPECT_EQ(Verify(forged), TokenVerdict::kInvalid);
}

TEST_F(JwtTest, AlgorithmNoneAndHmacAreRefused) {
  std::string claims = Claims(R"(,"roles":["SMTP.SendAsApp"])");
  std::string none = absl::StrCat(B64Url(R"({"alg":"none","kid":"k1"})"), ".",
                                  B64Url(absl::StrCat("{", claims, "}")), ".");
  EXPECT_EQ(Verify(none), TokenVerdict::kInvalid);
  EXPECT_EQ(Verify(Token(claims, "HS256")), TokenVerdict::kInvalid);
  EXPECT_EQ(Verify(Token(claims, "RS256")), TokenVerdict::kInvalid);  // an EC key: ES256 only
}

TEST_F(JwtTest, GarbageAndOversizedTokensAreInvalid) {
  EXPECT_EQ(Verify(""), TokenVerdict::kInvalid);
  EXPECT_EQ(Verify("a.b"), TokenVerdict::kInvalid);
  EXPECT_EQ(Verify("!!!.???.***"), TokenVerdict::kInvalid);
  EXPECT_EQ(Verify(std::string(kTokenBytesMax + 1, 'a')), TokenVerdict::kInvalid);
}

TEST(JwksTest, NoUsableKeyIsAnError) {
  EXPECT_FALSE(Jwks::Parse("not json").ok());
  EXPECT_FALSE(Jwks::Parse(R"({"keys":[]})").ok());
  EXPECT_FALSE(Jwks::Parse(R"({"keys":[{"kty":"oct","k":"c2VjcmV0"}]})").ok());
}

}  // namespace
}  // namespace chute::auth
