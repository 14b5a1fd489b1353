// address.cc: splits a mailbox address into its local part and domain.
#include "smtp/address.h"

namespace chute::smtp {

AddressParts SplitAddress(absl::string_view address) {
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos) {
    return {address, {}};
  }
  return {address.substr(0, at), address.substr(at + 1)};
}

}  // namespace chute::smtp
