#pragma once

// Mailbox addresses as values: splitting "local@domain" into its parts. Pure string work with
// no grammar check (smtp/parser.h validates); the directory, the policy and chutectl use it
// without depending on the command parser.

#include "absl/strings/string_view.h"

namespace chute::smtp {

// SplitAddress: the local part and the domain of "local@domain" (split at the last '@').
// The domain is empty for "postmaster". The parts point into `address`.
struct AddressParts {
  absl::string_view local;
  absl::string_view domain;
};
AddressParts SplitAddress(absl::string_view address);

// HasNonAscii: whether `text` has a byte of 0x80 or above (an SMTPUTF8 address, 8-bit content).
bool HasNonAscii(absl::string_view text);

}  // namespace chute::smtp
