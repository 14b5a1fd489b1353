// tls_pin.cc: parses and formats "sha256/<base64>" public-key pins.

#include "base/tls_pin.h"

#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace chute {

absl::StatusOr<TlsPin> ParseTlsPin(absl::string_view text) {
  absl::string_view encoded = text;
  if (!absl::ConsumePrefix(&encoded, kTlsPinPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pin starts with \"", kTlsPinPrefix, "\" (the SHA-256 of the key)"));
  }
  std::string digest;
  // absl's decoder also takes a missing "=", so the text must be what encoding gives back:
  // one spelling per pin, and no byte of the text is ignored.
  if (!absl::Base64Unescape(encoded, &digest) || digest.size() != TlsPin().size() ||
      absl::Base64Escape(digest) != encoded) {
    return absl::InvalidArgumentError(
        absl::StrCat("after \"", kTlsPinPrefix,
                     "\" a pin is the base64 of 32 bytes (44 characters ending in \"=\")"));
  }
  TlsPin pin;
  std::memcpy(pin.data(), digest.data(), pin.size());
  return pin;
}

std::string FormatTlsPin(const TlsPin& pin) {
  return absl::StrCat(kTlsPinPrefix, absl::Base64Escape(absl::string_view(
                                         reinterpret_cast<const char*>(pin.data()), pin.size())));
}

}  // namespace chute
