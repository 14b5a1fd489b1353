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

  // Sign: the ES256 signature (r || s, with s made low as the verifier requires) of
  // `signing_input`; `high_s` gives the other one, (r, n - s), instead.
  std::string Sign(absl::string_view signing_input, bool high_s = false) const {
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(signing_input.data()), signing_input.size(), digest);
    ECDSA_SIG* sig = ECDSA_do_sign(digest, sizeof(digest), key_);
    const BIGNUM* order = EC_GROUP_get0_order(EC_KEY_get0_group(key_));
    BIGNUM* half = BN_dup(order);
    BN_rshift1(half, half);
    bool is_high = BN_cmp(sig->s, half) > 0;
    if (is_high != high_s) {
      BN_sub(sig->s, order, sig->s);
    }
    BN_free(half);
    std::string raw(64, '\0');
    BN_bn2bin_padded(reinterpret_cast<uint8_t*>(raw.data()), 32, sig->r);
    BN_bn2bin_padded(reinterpret_cast<uint8_t*>(raw.data()) + 32, 32, sig->s);
    ECDSA_SIG_free(sig);
    return B64Url(raw);
  }
  // Signed: "header.claims.signature" over the two parts exactly as given (base64url or not).
  std::string Signed(absl::string_view header_part, absl::string_view claims_part) const {
    std::string signing_input = absl::StrCat(header_part, ".", claims_part);
    return absl::StrCat(signing_input, ".", Sign(signing_input));
  }
  // Token: an ES256 JWT with `claims` (a JSON object's members), signed by the test's key.
  std::string Token(absl::string_view claims, absl::string_view alg = "ES256") const {
    return WithHeader(absl::StrCat(R"({"alg":")", alg, R"(","kid":"k1","typ":"JWT"})"), claims);
  }
  std::string WithHeader(absl::string_view header, absl::string_view claims) const {
    return Signed(B64Url(header), B64Url(absl::StrCat("{", claims, "}")));
  }
  std::string Claims(absl::string_view extra) const {
    return absl::StrCat(R"("iss":")", policy_.issuer, R"(","aud":")", policy_.audience,
                        R"(","tid":"tid-1","exp":)", absl::ToUnixSeconds(now_ + absl::Hours(1)),
                        R"(,"nbf":)", absl::ToUnixSeconds(now_ - absl::Minutes(1)), extra);
  }
  // TimedClaims: an app-only token's claims with `times` (exp, nbf, iat: as given) of its own.
  std::string TimedClaims(absl::string_view times) const {
    return absl::StrCat(R"("iss":")", policy_.issuer, R"(","aud":")", policy_.audience,
                        R"(","tid":"tid-1","roles":["SMTP.SendAsApp"],"oid":"app-1",)", times);
  }
  TokenVerdict Verify(const std::string& token, std::string* why = nullptr) const {
    return VerifyToken(token, *jwks_, policy_, now_, &identity_, why);
  }
  // Why: the reason Verify gives for `token` ("" when it is accepted).
  std::string Why(const std::string& token) const {
    std::string why;
    return Verify(token, &why) == TokenVerdict::kOk ? "" : why;
  }
  int64_t Now() const { return absl::ToUnixSeconds(now_); }

  EC_KEY* key_ = nullptr;
  std::shared_ptr<const Jwks> jwks_;
  TokenPolicy policy_;
  mutable TokenIdentity identity_;
  absl::Time now_ = absl::FromUnixSeconds(1'790'000'000);
};

TEST_F(JwtTest, AnAppTokenWithTheSmtpRoleIsAccepted) {
  std::string why;
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1")")), &why),
            TokenVerdict::kOk)
      << why;
}

TEST_F(JwtTest, AnAppTokenSaysWhichAppItIs) {
  ASSERT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.SendAsApp"],"oid":"app-1","azp":"c-1")"))),
            TokenVerdict::kOk);
  EXPECT_FALSE(identity_.delegated);
  EXPECT_EQ(identity_.app_id, "app-1");  // the object id, never the client id (azp)
  EXPECT_EQ(identity_.user, "");
}

TEST_F(JwtTest, ADelegatedTokenWithTheSmtpScopeIsAcceptedAndNamesItsUser) {
  ASSERT_EQ(
      Verify(Token(Claims(R"(,"scp":"openid SMTP.Send","oid":"user-1","upn":"hve@contoso.test",)"
                          R"("preferred_username":"other@contoso.test")"))),
      TokenVerdict::kOk);
  EXPECT_TRUE(identity_.delegated);
  EXPECT_EQ(identity_.user, "hve@contoso.test");  // upn first
  EXPECT_EQ(identity_.user_claim, "upn");
  EXPECT_EQ(identity_.app_id, "");  // a delegated token's oid is its user's
  ASSERT_EQ(Verify(Token(Claims(
                R"(,"scp":"SMTP.Send","preferred_username":"p@contoso.test","unique_name":"u")"))),
            TokenVerdict::kOk);
  EXPECT_EQ(identity_.user, "p@contoso.test");
  EXPECT_EQ(identity_.user_claim, "preferred_username");
  ASSERT_EQ(Verify(Token(Claims(R"(,"scp":"SMTP.Send","unique_name":"u@contoso.test")"))),
            TokenVerdict::kOk);
  EXPECT_EQ(identity_.user_claim, "unique_name");
  ASSERT_EQ(Verify(Token(Claims(R"(,"scp":"SMTP.Send")"))), TokenVerdict::kOk);
  EXPECT_TRUE(identity_.delegated);
  EXPECT_EQ(identity_.user, "");  // names no one: the policy binds it to no account
}

TEST_F(JwtTest, WithoutThePermissionOfItsKindItIsNoPermission) {
  EXPECT_EQ(Verify(Token(Claims(R"(,"scp":"Mail.Read","oid":"app-1")"))),
            TokenVerdict::kNoPermission);
  // A token with scp is delegated: an application role does not make it an app's token.
  EXPECT_EQ(Verify(Token(Claims(R"(,"scp":"Mail.Read","roles":["SMTP.SendAsApp"])"))),
            TokenVerdict::kNoPermission);
  // SMTP.SendAsApp is an application permission, not a delegated scope.
  EXPECT_EQ(Verify(Token(Claims(R"(,"scp":"SMTP.SendAsApp")"))), TokenVerdict::kNoPermission);
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":"SMTP.SendAsApp")"))), TokenVerdict::kNoPermission);
  EXPECT_EQ(Verify(Token(Claims(R"(,"roles":["SMTP.Send"])"))), TokenVerdict::kNoPermission);
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

TEST_F(JwtTest, AKidTheKeysDoNotHaveIsNamed) {
  std::string claims = Claims(R"(,"roles":["SMTP.SendAsApp"])");
  std::string rotated = WithHeader(R"({"alg":"ES256","kid":"k2"})", claims);
  EXPECT_EQ(Why(rotated), "no key with kid k2");
  EXPECT_EQ(UnknownKeyId(rotated, *jwks_), std::optional<std::string>("k2"));
  EXPECT_EQ(UnknownKeyId(WithHeader(R"({"alg":"ES256","kid":"k1"})", claims), *jwks_),
            std::nullopt);
  EXPECT_EQ(UnknownKeyId(WithHeader(R"({"alg":"ES256"})", claims), *jwks_), std::nullopt);
  EXPECT_EQ(UnknownKeyId("not.a.token", *jwks_), std::nullopt);
}

// --- Hygiene ---------------------------------------------------------------------------------

TEST_F(JwtTest, ACritHeaderIsRefused) {
  std::string claims = Claims(R"(,"roles":["SMTP.SendAsApp"])");
  EXPECT_EQ(Why(WithHeader(R"({"alg":"ES256","kid":"k1"})", claims)), "");
  EXPECT_EQ(Why(WithHeader(R"({"alg":"ES256","kid":"k1","crit":["exp"],"exp":1})", claims)),
            "a crit header (no extension is understood)");
  EXPECT_EQ(Why(WithHeader(R"({"alg":"ES256","kid":"k1","crit":[]})", claims)),
            "a crit header (no extension is understood)");
  EXPECT_EQ(Why(WithHeader(R"({"alg":"ES256","kid":7})", claims)), "a kid that is not a string");
}

TEST_F(JwtTest, AnIatInTheFutureBeyondTheSkewIsRefused) {
  std::string exp = absl::StrCat(R"("exp":)", Now() + 7200);
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"iat":)", Now() + 299)))), "");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"iat":)", Now() + 301)))),
            "iat is in the future");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"iat":"now")")))),
            "iat is not a NumericDate in range");
}

TEST_F(JwtTest, ARepeatedMemberNameIsRefusedInTheHeaderAndTheClaims) {
  const std::string refused = "not a JSON object, a repeated member name, or nested too deep";
  std::string claims = Claims(R"(,"roles":["SMTP.SendAsApp"])");
  EXPECT_EQ(Why(WithHeader(R"({"alg":"ES256","kid":"k1","kid":"k1"})", claims)), refused);
  EXPECT_EQ(Why(WithHeader(R"({"alg":"HS256","kid":"k1","alg":"ES256"})", claims)), refused);
  // nlohmann keeps the last of two: a token that expired long ago, read as valid.
  std::string twice = absl::StrCat(claims, R"(,"exp":)", Now() - 86400);
  std::string last_wins = absl::StrCat(R"("exp":)", Now() - 86400, ",", claims);
  EXPECT_EQ(Why(Token(twice)), refused);
  EXPECT_EQ(Why(Token(last_wins)), refused);
  // The same name spelled with an escape is the same name.
  EXPECT_EQ(Why(Token(absl::StrCat(claims, R"(,"ex\u0070":1)"))), refused);
  // At any depth, and in an object inside an array.
  EXPECT_EQ(Why(Token(absl::StrCat(claims, R"(,"x":{"a":1,"a":2})"))), refused);
  EXPECT_EQ(Why(Token(absl::StrCat(claims, R"(,"x":[{"a":1},{"a":1,"b":{"a":1}}])"))), "");
  EXPECT_EQ(Why(Token(absl::StrCat(claims, R"(,"x":[{"a":1,"a":1}])"))), refused);
}

TEST_F(JwtTest, NestingIsBoundedByTokenJsonDepthMax) {
  std::string claims = Claims(R"(,"roles":["SMTP.SendAsApp"])");
  auto nested = [&](int arrays) {
    return absl::StrCat(claims, R"(,"x":)", std::string(arrays, '['), std::string(arrays, ']'));
  };
  // The claims object itself is one of the kTokenJsonDepthMax.
  EXPECT_EQ(Why(Token(nested(kTokenJsonDepthMax - 1))), "");
  EXPECT_EQ(Why(Token(nested(kTokenJsonDepthMax))),
            "not a JSON object, a repeated member name, or nested too deep");
}

TEST_F(JwtTest, AHighSEs256SignatureIsRefused) {
  std::string header = B64Url(R"({"alg":"ES256","kid":"k1"})");
  std::string claims = B64Url(absl::StrCat("{", Claims(R"(,"roles":["SMTP.SendAsApp"])"), "}"));
  std::string signing_input = absl::StrCat(header, ".", claims);
  EXPECT_EQ(Why(absl::StrCat(signing_input, ".", Sign(signing_input))), "");
  // (r, n - s) is a valid ECDSA signature of the same token too: only the low one counts.
  EXPECT_EQ(Why(absl::StrCat(signing_input, ".", Sign(signing_input, /*high_s=*/true))),
            "an ES256 signature with a high S");
}

TEST_F(JwtTest, EachPartMustBeCanonicalBase64Url) {
  const std::string refused = "not canonical base64url";
  // A header of 26 bytes: 35 base64url characters, whose last one carries 2 unused bits.
  std::string header_json = R"({"alg":"ES256","kid":"k1"})";
  ASSERT_EQ(header_json.size() % 3, 2u);
  std::string header = B64Url(header_json);
  std::string claims = B64Url(absl::StrCat("{", Claims(R"(,"roles":["SMTP.SendAsApp"])"), "}"));
  EXPECT_EQ(Why(Signed(header, claims)), "");
  EXPECT_EQ(Why(Signed(header + "=", claims)), refused);  // padding
  EXPECT_EQ(Why(Signed(header, claims + "==")), refused);
  EXPECT_EQ(Why(Signed(" " + header, claims)), refused);  // white space
  EXPECT_EQ(Why(Signed(header, claims.substr(0, 10) + "\n" + claims.substr(10))), refused);
  EXPECT_EQ(Why(Signed(header, claims.substr(0, 10) + "\t" + claims.substr(10))), refused);
  std::string plus = header;
  plus[plus.find('-') != std::string::npos ? plus.find('-') : 0] = '+';  // base64, not url
  EXPECT_EQ(Why(Signed(plus, claims)), refused);
  // The same bytes with a non-zero unused bit in the last character.
  std::string stray = header;
  stray.back() = static_cast<char>(stray.back() + 1);
  std::string decoded;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(stray, &decoded));
  ASSERT_EQ(decoded, header_json);
  EXPECT_EQ(Why(Signed(stray, claims)), refused);
  // And in the signature.
  std::string token = Signed(header, claims);
  EXPECT_EQ(Why(token + "="), refused);
  EXPECT_EQ(Why(token + " "), refused);
}

TEST_F(JwtTest, TimesAreNumericDatesInRange) {
  std::string exp = absl::StrCat(R"("exp":)", Now() + 3600);
  // nbf = 1e30 was accepted: a NumericDate past kNumericDateMax is no time at all.
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"nbf":1e30)")))),
            "nbf is not a NumericDate in range");
  // exp = 1e30 went through an undefined conversion to int64.
  for (absl::string_view huge :
       {"1e30", "9223372036854775808", "18446744073709551615", "100000000000000000000000000000",
        "253402300800", "-1", "\"2030-01-01\"", "true", "null", "[1]"}) {
    EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(R"("exp":)", huge)))),
              "exp is not a NumericDate in range")
        << huge;
  }
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"nbf":"0")")))),
            "nbf is not a NumericDate in range");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(R"("exp":)", kNumericDateMax)))), "");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(R"("exp":)", Now() + 3600, ".0")))), "");
}

TEST_F(JwtTest, AFractionalTimeIsRoundedTowardsTheStricterSide) {
  int64_t skew = absl::ToInt64Seconds(kClockSkew);
  std::string exp = absl::StrCat(R"("exp":)", Now() + 3600);
  // exp rounds down: half a second past the last accepted second is already expired.
  EXPECT_EQ(Verify(Token(TimedClaims(absl::StrCat(R"("exp":)", Now() - skew + 1, ".5")))),
            TokenVerdict::kOk);
  EXPECT_EQ(Verify(Token(TimedClaims(absl::StrCat(R"("exp":)", Now() - skew, ".5")))),
            TokenVerdict::kExpired);
  // nbf and iat round up.
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"nbf":)", Now() + skew - 1, ".5")))), "");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"nbf":)", Now() + skew, ".5")))),
            "nbf is in the future");
  EXPECT_EQ(Why(Token(TimedClaims(absl::StrCat(exp, R"(,"iat":)", Now() + skew, ".25")))),
            "iat is in the future");
}

TEST(JwksTest, NoUsableKeyIsAnError) {
  EXPECT_FALSE(Jwks::Parse("not json").ok());
  EXPECT_FALSE(Jwks::Parse(R"({"keys":[]})").ok());
  EXPECT_FALSE(Jwks::Parse(R"({"keys":[{"kty":"oct","k":"c2VjcmV0"}]})").ok());
}

}  // namespace
}  // namespace chute::auth
