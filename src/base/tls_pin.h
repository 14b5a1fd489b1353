#pragma once

// TLS public-key pins as the configuration writes them ([delivery] tls_pins): the SHA-256 of
// a certificate's DER SubjectPublicKeyInfo, written "sha256/" + its standard base64 (44
// characters, one "=" of padding), as HPKP's pin-sha256 and Chrome's static pins spell it.
// The same key keeps its pin across certificate renewals that reuse the key. Pure functions;
// any thread.

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute {

using TlsPin = std::array<uint8_t, 32>;

// kTlsPinPrefix: the only digest pins may use.
inline constexpr absl::string_view kTlsPinPrefix = "sha256/";

// ParseTlsPin: "sha256/<base64 of 32 bytes>" in its one canonical spelling (standard
// alphabet, padded). InvalidArgument saying what is wrong otherwise.
absl::StatusOr<TlsPin> ParseTlsPin(absl::string_view text);

// FormatTlsPin: the text ParseTlsPin reads back.
std::string FormatTlsPin(const TlsPin& pin);

}  // namespace chute
