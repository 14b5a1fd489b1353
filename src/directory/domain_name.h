#pragma once

// Domain names as the directory stores and looks them up: an internationalized domain (IDN)
// and its "xn--" form are one domain, so every domain, and the domain of every address, is
// turned into its A-label form (RFC 5890: ASCII, lower case; libidn2, IDNA2008 with UTS #46
// non-transitional mapping) before it is stored or compared. The local part of an address
// is kept as given.
//
// Any thread may call these.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::directory {

// NormalizeDomain: the A-label form of `domain` (any case, U-labels or A-labels).
// InvalidArgument, naming the domain, when it is not a valid host name.
absl::StatusOr<std::string> NormalizeDomain(absl::string_view domain);

// NormalizeAddress: "local@" + NormalizeDomain(domain). InvalidArgument when `address` is not
// an email address or its domain is not valid.
absl::StatusOr<std::string> NormalizeAddress(absl::string_view address);

// IsSingleLabel: whether a (normalized) domain has one label only ("localhost", "corp"),
// which no tenant may own: such names are not globally unique and mail to them never
// leaves one host.
bool IsSingleLabel(absl::string_view domain);

// DomainKey / AddressKey: the keys lookups use. Never fail: input that does not normalize
// (it cannot have been stored) is lower-cased, so it simply finds nothing. ASCII input takes
// a fast path without libidn2 (the SMTP hot path: RCPT and AUTH look-ups).
std::string DomainKey(absl::string_view domain);
std::string AddressKey(absl::string_view address);

// EnvelopeAddress: `address` as chute files and passes it on once it is accepted: the local
// part as given, "@", DomainKey(domain). A lookalike spelling that maps to an accepted domain
// (fullwidth letters, U+FF0E for the dot) is then the domain itself in Maildir paths,
// downstream MAIL/RCPT commands, the trace and the logs, never a second spelling of it. An
// address without '@' is returned as it is.
std::string EnvelopeAddress(absl::string_view address);

// SameAddress: whether `given` (as a client typed it: MAIL FROM, a From: header) is the
// stored address `stored`, case-insensitively and with the domain in either IDN form. ASCII
// input costs one case-insensitive comparison, as before.
bool SameAddress(absl::string_view given, absl::string_view stored);

}  // namespace chute::directory
