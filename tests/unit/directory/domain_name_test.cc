// domain_name_test.cc: unit tests for IDN normalisation and address comparison.

#include "directory/domain_name.h"

#include <gtest/gtest.h>

namespace chute::directory {
namespace {

TEST(DomainNameTest, UnicodeAndALabelFormsNormalizeToTheSameALabels) {
  EXPECT_EQ(*NormalizeDomain("Bücher.Example"), "xn--bcher-kva.example");
  EXPECT_EQ(*NormalizeDomain("BÜCHER.example"), "xn--bcher-kva.example");
  EXPECT_EQ(*NormalizeDomain("XN--BCHER-KVA.example"), "xn--bcher-kva.example");
  EXPECT_EQ(*NormalizeDomain("Contoso.COM"), "contoso.com");
}

TEST(DomainNameTest, InvalidNamesAreRefused) {
  for (const char* bad : {"", "no_way", "a..b", "[127.0.0.1]", "contoso.com.", "xn--a.example",
                          "xn--bcher-kv.example", "-lead.example"}) {
    absl::StatusOr<std::string> result = NormalizeDomain(bad);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(DomainNameTest, AddressesKeepTheirLocalPart) {
  EXPECT_EQ(*NormalizeAddress("Info@Bücher.example"), "Info@xn--bcher-kva.example");
  EXPECT_FALSE(NormalizeAddress("no-at-sign").ok());
  EXPECT_FALSE(NormalizeAddress("x@xn--a.example").ok());
}

TEST(DomainNameTest, KeysMatchWhateverTheSpelling) {
  EXPECT_EQ(AddressKey("Info@BÜCHER.example"), "info@xn--bcher-kva.example");
  EXPECT_EQ(AddressKey("INFO@XN--bcher-kva.example"), "info@xn--bcher-kva.example");
  EXPECT_EQ(DomainKey("Bücher.example"), "xn--bcher-kva.example");
  EXPECT_EQ(DomainKey("\xff.example"), "\xff.example");  // not a name: finds nothing
}

TEST(DomainNameTest, SameAddressAcceptsEitherIdnSpelling) {
  EXPECT_TRUE(SameAddress("INFO@Contoso.com", "info@contoso.com"));
  EXPECT_TRUE(SameAddress("info@bücher.example", "Info@xn--bcher-kva.example"));
  EXPECT_FALSE(SameAddress("info@bucher.example", "info@xn--bcher-kva.example"));
  EXPECT_FALSE(SameAddress("other@bücher.example", "info@xn--bcher-kva.example"));
}

TEST(DomainNameTest, EnvelopeAddressIsTheLocalPartAsGivenAtTheALabelDomain) {
  // Lookalikes that UTS #46 maps onto corp.test: fullwidth letters, a fullwidth full stop
  // (U+FF0E), an ideographic one (U+3002), upper case.
  EXPECT_EQ(EnvelopeAddress("Bob@\uff43\uff4f\uff52\uff50.test"), "Bob@corp.test");
  EXPECT_EQ(EnvelopeAddress("bob@corp\uff0etest"), "bob@corp.test");
  EXPECT_EQ(EnvelopeAddress("bob@corp\u3002test"), "bob@corp.test");
  EXPECT_EQ(EnvelopeAddress("Bob@CORP.Test"), "Bob@corp.test");
  EXPECT_EQ(EnvelopeAddress("Info@B\u00fccher.example"), "Info@xn--bcher-kva.example");
  EXPECT_EQ(EnvelopeAddress("postmaster"), "postmaster");
}

TEST(DomainNameTest, SingleLabel) {
  EXPECT_TRUE(IsSingleLabel("localhost"));
  EXPECT_FALSE(IsSingleLabel("contoso.com"));
}

}  // namespace
}  // namespace chute::directory
