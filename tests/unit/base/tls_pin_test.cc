// tls_pin_test.cc: unit tests for "sha256/<base64>" public-key pins: the one accepted spelling.

#include "base/tls_pin.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace chute {
namespace {

constexpr const char* kZeros = "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

TEST(TlsPinTest, ParsesAndFormatsBackTheSameText) {
  absl::StatusOr<TlsPin> pin = ParseTlsPin(kZeros);
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(*pin, TlsPin{});
  EXPECT_EQ(FormatTlsPin(*pin), kZeros);
  TlsPin bytes;
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<uint8_t>(0xf0 + i);  // '+' and '/' in the base64
  }
  std::string text = FormatTlsPin(bytes);
  EXPECT_EQ(text.size(), 7u + 44u);
  absl::StatusOr<TlsPin> back = ParseTlsPin(text);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, bytes);
}

TEST(TlsPinTest, RefusesEverythingElse) {
  for (const char* text : {
           "", "sha256/",
           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",          // no prefix
           "sha1/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",     // another digest
           "SHA256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",   // the prefix is lower case
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",    // padding missing
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",   // 33 bytes' worth
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",   // non-zero unused bits
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= ",  // trailing space
           "sha256/ AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  // inner space
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",   // 31 bytes
           "sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA-_",   // URL-safe alphabet
       }) {
    absl::StatusOr<TlsPin> pin = ParseTlsPin(text);
    EXPECT_FALSE(pin.ok()) << "\"" << text << "\"";
    EXPECT_TRUE(absl::IsInvalidArgument(pin.status())) << text;
  }
  EXPECT_TRUE(absl::StrContains(ParseTlsPin("sha1/x").status().message(), "starts with"));
}

}  // namespace
}  // namespace chute
