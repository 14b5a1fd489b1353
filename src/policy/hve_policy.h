#pragma once

// The HVE envelope rules (docs/architecture.md, Policy), as pure functions of a directory snapshot
// and the account a session acts as. Each returns std::nullopt to accept, or the reply to refuse
// with. Any thread (snapshots are immutable).

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "auth/jwt.h"
#include "base/net_address.h"
#include "directory/directory.h"
#include "smtp/reply.h"

namespace chute::policy {

// CheckSender: MAIL FROM must be the account's primary address or one of its aliases
// (any case); otherwise 550 5.7.60.
std::optional<smtp::Reply> CheckSender(const directory::Account& account,
                                       absl::string_view address);

// CheckHeaderFrom: every address of the message's From: field must be the account's primary
// address or an alias (any case), as HVE enforces: otherwise 550 5.6.241. `from_fields` is
// how many From: fields the header had (none: accepted; more than one: refused, RFC 5322
// allows one); `addresses` are the first one's addr-specs; `unreadable` is a field too long
// to check.
std::optional<smtp::Reply> CheckHeaderFrom(const directory::Account& account, int from_fields,
                                           const std::vector<std::string>& addresses,
                                           bool unreadable);

// CheckRecipient: the recipient's domain must be an accepted domain of the account's tenant
// (550 5.7.54) and it must not be an HVE account (550 5.1.10). `postmaster` without a domain
// means postmaster@<the account's domain>. *deliver_to gets the address to deliver to: the
// local part as given, the domain as the A-label it was accepted as
// (directory::EnvelopeAddress), so that bob@ followed by corp.test in fullwidth letters is
// delivered to bob@corp.test.
std::optional<smtp::Reply> CheckRecipient(const directory::Snapshot& snapshot,
                                          const directory::Account& account,
                                          absl::string_view address, std::string* deliver_to);

// CheckTokenAccount: whether a verified XOAUTH2 token (auth::VerifyToken's kOk and identity)
// may authenticate `account` of `tenant` (docs/operations.md, "XOAUTH2: which account a
// token may authenticate"):
// - a delegated token only the account its user claim names: the primary address or an alias,
//   any case, the domain in either IDN form. Otherwise 535 5.7.3, the reply of every invalid
//   token, so that a token for someone else tells nothing about the account. Where an
//   application list applies (the account's AllowedApps is not empty, or the tenant's app
//   access is `listed`) it is refused with 550 5.7.240: it names its app by client id only,
//   never by the object id AllowedApps holds.
// - an app-only token only an account whose AllowedApps has its `oid` (any case); an empty
//   list lets any app of the tenant in, unless the tenant's app access is `listed`. Otherwise
//   550 5.7.240.
// `why` gets the reason for the log when it refuses.
std::optional<smtp::Reply> CheckTokenAccount(const directory::Tenant& tenant,
                                             const directory::Account& account,
                                             const auth::TokenIdentity& identity, std::string* why);

// IsAllowedNetwork: whether `ip` lies in one of `networks`.
bool IsAllowedNetwork(const std::vector<Cidr>& networks, const IpBytes& ip);

}  // namespace chute::policy
