// address.cc: splits a mailbox address into its local part and domain.
#include "smtp/address.h"

#include <algorithm>

namespace chute::smtp {

AddressParts SplitAddress(absl::string_view address) {
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos) {
    return {address, {}};
  }
  return {address.substr(0, at), address.substr(at + 1)};
}

bool HasNonAscii(absl::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

}  // namespace chute::smtp
