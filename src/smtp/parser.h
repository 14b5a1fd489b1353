#pragma once

// Pure parsers for the arguments of SMTP commands and SASL responses. Inputs are one command
// line without its CR LF, already checked free of CR, LF and NUL. Outputs point into the input
// (string_view) unless they had to be decoded. No allocation except for decoded SASL data.

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "smtp/reply.h"

namespace chute::smtp {

// RFC 5321 §4.5.3.1: size limits of a path and its parts.
inline constexpr size_t kLocalPartBytesMax = 64;
inline constexpr size_t kDomainBytesMax = 255;
inline constexpr size_t kPathBytesMax = 256;
// A SIZE= value has at most this many digits (uint64 holds 19 without overflow).
inline constexpr size_t kSizeDigitsMax = 19;

enum class BodyType : uint8_t { kUnspecified, k7Bit, k8BitMime };

// DSN (RFC 3461): what a failure report returns of the message (RET=), and when one is asked
// for (NOTIFY=, a set of these bits; 0 when the RCPT had no NOTIFY).
enum class DsnRet : uint8_t { kUnspecified, kFull, kHeaders };
inline constexpr uint8_t kNotifyNever = 1;
inline constexpr uint8_t kNotifySuccess = 2;
inline constexpr uint8_t kNotifyFailure = 4;
inline constexpr uint8_t kNotifyDelay = 8;
// RFC 3461 §4.4: ENVID is at most 100 characters; ORCPT's address, as an xtext, at most 500.
inline constexpr size_t kEnvidBytesMax = 100;
inline constexpr size_t kOrcptBytesMax = 500;

struct MailArgs {
  absl::string_view address;     // "" for the null reverse-path <>
  std::optional<uint64_t> size;  // SIZE=; saturates at UINT64_MAX when too long
  BodyType body = BodyType::kUnspecified;
  bool smtputf8 = false;
  absl::string_view auth;  // AUTH= as sent (xtext), "" when absent
  DsnRet ret = DsnRet::kUnspecified;
  absl::string_view envid;  // ENVID= as sent (xtext), "" when absent
};

struct RcptArgs {
  absl::string_view address;  // "postmaster" is returned as given, without a domain
  uint8_t notify = 0;         // NOTIFY= bits; 0: not given
  absl::string_view orcpt;    // ORCPT= as sent ("rfc822;a+40b.test"), "" when absent
};

struct BdatArgs {
  uint64_t size_bytes = 0;
  bool last = false;
};

// Each parser returns std::nullopt on success and the reply to send on failure.

// ParseMailArgs: `args` is what follows "MAIL " ("FROM:<a@b> SIZE=10").
std::optional<Reply> ParseMailArgs(absl::string_view args, MailArgs* out);

// ParseRcptArgs: `args` is what follows "RCPT " ("TO:<a@b>"). `smtputf8` allows non-ASCII.
std::optional<Reply> ParseRcptArgs(absl::string_view args, bool smtputf8, RcptArgs* out);

// ParseBdatArgs: `args` is what follows "BDAT " ("1024 LAST"). Digits only; no overflow.
std::optional<Reply> ParseBdatArgs(absl::string_view args, BdatArgs* out);

// IsValidMailbox: "local@domain" as RCPT TO would accept it (non-ASCII allowed), without the
// angle brackets. For configuration and administration input.
bool IsValidMailbox(absl::string_view address);

// SASL (RFC 4954) ---------------------------------------------------------------------------

enum class Mechanism : uint8_t { kPlain, kLogin, kXoauth2 };

absl::string_view MechanismName(Mechanism mechanism);
// ParseMechanism: case-insensitive; nullopt for anything chute does not offer.
std::optional<Mechanism> ParseMechanism(absl::string_view name);

// DecodeBase64: RFC 4648 base64 of a SASL response; "=" alone is the empty string (RFC 4954).
// False on malformed input.
bool DecodeBase64(absl::string_view text, std::string* out);

struct SaslPlain {
  std::string authzid;
  std::string authcid;
  std::string password;
};
// ParsePlain: RFC 4616 "authzid NUL authcid NUL password" (already base64-decoded).
bool ParsePlain(absl::string_view decoded, SaslPlain* out);

struct SaslXoauth2 {
  std::string user;
  std::string token;
};
// ParseXoauth2: "user=" U ^A "auth=Bearer " T ^A ^A (already base64-decoded).
bool ParseXoauth2(absl::string_view decoded, SaslXoauth2* out);

}  // namespace chute::smtp
