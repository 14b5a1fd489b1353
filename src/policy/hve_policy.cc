// hve_policy.cc: the HVE rules: send-as, accepted-domain recipients, header From, which account
// an OAuth token may act as, networks.

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

std::optional<smtp::Reply> CheckTokenAccount(const directory::Tenant& tenant,
                                             const directory::Account& account,
                                             const auth::TokenIdentity& identity,
                                             std::string* why) {
  bool listed_only = tenant.oauth_app_access == directory::AppAccess::kListed;
  if (identity.delegated) {
    if (identity.user.empty() || CheckSender(account, identity.user).has_value()) {
      *why = identity.user.empty()
                 ? std::string("a delegated token that names no user")
                 : absl::StrCat("the token's ", identity.user_claim, " is ", identity.user);
      return smtp::kReplyAuthFailed;
    }
    if (!account.allowed_apps.empty() || listed_only) {
      *why = "a delegated token, and the account allows listed applications only";
      return smtp::kReplyAppNotAllowed;
    }
    return std::nullopt;
  }
  if (account.allowed_apps.empty() && !listed_only) {
    return std::nullopt;  // any application of the tenant, as HVE documents
  }
  for (const std::string& id : account.allowed_apps) {
    if (!identity.app_id.empty() && absl::EqualsIgnoreCase(id, identity.app_id)) {
      return std::nullopt;
    }
  }
  *why = absl::StrCat("the application ", identity.app_id.empty() ? "(no oid)" : identity.app_id,
                      " is not in the account's AllowedApps");
  return smtp::kReplyAppNotAllowed;
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
