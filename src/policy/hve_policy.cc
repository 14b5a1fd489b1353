// hve_policy.cc: the HVE rules: send-as, accepted-domain recipients, header From, networks.

#include "policy/hve_policy.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "directory/domain_name.h"
#include "smtp/address.h"

namespace chute::policy {

std::optional<smtp::Reply> CheckSender(const directory::Account& account,
                                       absl::string_view address) {
  // Stored domains are A-labels; a sender may spell its domain as U-labels (SMTPUTF8).
  if (directory::SameAddress(address, account.primary_address)) {
    return std::nullopt;
  }
  for (const std::string& alias : account.aliases) {
    if (directory::SameAddress(address, alias)) {
      return std::nullopt;
    }
  }
  return smtp::kReplySendAsDenied;
}

std::optional<smtp::Reply> CheckHeaderFrom(const directory::Account& account, int from_fields,
                                           const std::vector<std::string>& addresses,
                                           bool unreadable) {
  if (from_fields == 0) {
    return std::nullopt;
  }
  if (from_fields > 1 || unreadable || addresses.empty()) {
    return smtp::kReplyFromMismatch;
  }
  for (const std::string& address : addresses) {
    if (CheckSender(account, address).has_value()) {
      return smtp::kReplyFromMismatch;
    }
  }
  return std::nullopt;
}

std::optional<smtp::Reply> CheckRecipient(const directory::Snapshot& snapshot,
                                          const directory::Account& account,
                                          absl::string_view address, std::string* deliver_to) {
  smtp::AddressParts parts = smtp::SplitAddress(address);
  if (parts.domain.empty()) {
    // RFC 5321 §4.5.1: <postmaster> must be accepted; it is the postmaster of the sending
    // account's own domain.
    std::string qualified =
        absl::StrCat(parts.local, "@", smtp::SplitAddress(account.primary_address).domain);
    return CheckRecipient(snapshot, account, qualified, deliver_to);
  }
  if (!snapshot.IsAcceptedDomain(account.tenant_id, parts.domain)) {
    return smtp::kReplyRelayDenied;
  }
  if (snapshot.FindAccount(address) != nullptr) {
    return smtp::kReplyRecipientIsHve;
  }
  // Filed and passed on under the domain it was accepted as (its A-label), whatever spelling
  // of it the client used.
  *deliver_to = directory::EnvelopeAddress(address);
  return std::nullopt;
}

bool IsAllowedNetwork(const std::vector<Cidr>& networks, const IpBytes& ip) {
  for (const Cidr& cidr : networks) {
    if (cidr.Contains(ip)) {
      return true;
    }
  }
  return false;
}

}  // namespace chute::policy
