// domain_name.cc: normalises domains and addresses to A-labels and compares them (libidn2).

#include "directory/domain_name.h"

#include <idn2.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "smtp/address.h"
#include "smtp/parser.h"

namespace chute::directory {
namespace {

// RFC 1035: at most 253 octets in the presentation form (255 on the wire).
constexpr size_t kDomainBytesMax = 253;

bool IsAscii(absl::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// ToALabels: libidn2's lookup conversion; nullopt when it refuses the name.
std::optional<std::string> ToALabels(absl::string_view domain) {
  std::string input(domain);
  uint8_t* output = nullptr;
  int rc = idn2_lookup_u8(reinterpret_cast<const uint8_t*>(input.c_str()), &output,
                          IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc != IDN2_OK) {
    return std::nullopt;
  }
  std::string result(reinterpret_cast<const char*>(output));
  idn2_free(output);
  return absl::AsciiStrToLower(result);
}

// HasValidALabels: every "xn--" label of a lower-cased ASCII domain decodes, and encodes back
// to itself through the same IDNA2008 lookup that U-labels take (a mistyped or disallowed
// A-label is not a domain, and would never match its U-label spelling).
bool HasValidALabels(const std::string& domain) {
  if (!absl::StrContains(domain, "xn--")) {
    return true;
  }
  char* unicode = nullptr;
  int rc = idn2_to_unicode_8z8z(domain.c_str(), &unicode, 0);
  if (rc != IDN2_OK) {
    idn2_free(unicode);
    return false;
  }
  std::optional<std::string> again = ToALabels(unicode);
  idn2_free(unicode);
  return again.has_value() && *again == domain;
}

}  // namespace

absl::StatusOr<std::string> NormalizeDomain(absl::string_view domain) {
  auto invalid = [&] {
    return absl::InvalidArgumentError(absl::StrCat("'", domain, "' is not a domain name"));
  };
  if (domain.empty() || domain.front() == '[' || domain.back() == '.') {
    return invalid();
  }
  std::string normalized;
  if (IsAscii(domain)) {
    normalized = absl::AsciiStrToLower(domain);
    if (!HasValidALabels(normalized)) {
      return invalid();
    }
  } else {
    std::optional<std::string> converted = ToALabels(domain);
    if (!converted.has_value()) {
      return invalid();
    }
    normalized = std::move(*converted);
  }
  // The host-name syntax check is the one RCPT uses, on the ASCII form.
  if (normalized.size() > kDomainBytesMax ||
      !smtp::IsValidMailbox(absl::StrCat("x@", normalized))) {
    return invalid();
  }
  return normalized;
}

absl::StatusOr<std::string> NormalizeAddress(absl::string_view address) {
  if (!smtp::IsValidMailbox(address)) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not an email address"));
  }
  smtp::AddressParts parts = smtp::SplitAddress(address);
  absl::StatusOr<std::string> domain = NormalizeDomain(parts.domain);
  if (!domain.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not an email address: ", domain.status().message()));
  }
  return absl::StrCat(parts.local, "@", *domain);
}

bool SameAddress(absl::string_view given, absl::string_view stored) {
  if (absl::EqualsIgnoreCase(given, stored)) {
    return true;
  }
  return !IsAscii(given) && AddressKey(given) == AddressKey(stored);
}

bool IsSingleLabel(absl::string_view domain) { return !absl::StrContains(domain, '.'); }

std::string DomainKey(absl::string_view domain) {
  if (IsAscii(domain)) {
    return absl::AsciiStrToLower(domain);
  }
  std::optional<std::string> converted = ToALabels(domain);
  return converted.has_value() ? *converted : absl::AsciiStrToLower(domain);
}

std::string AddressKey(absl::string_view address) {
  if (IsAscii(address)) {
    return absl::AsciiStrToLower(address);
  }
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos) {
    return absl::AsciiStrToLower(address);
  }
  return absl::StrCat(absl::AsciiStrToLower(address.substr(0, at + 1)),
                      DomainKey(address.substr(at + 1)));
}

std::string EnvelopeAddress(absl::string_view address) {
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos) {
    return std::string(address);
  }
  return absl::StrCat(address.substr(0, at + 1), DomainKey(address.substr(at + 1)));
}

}  // namespace chute::directory
