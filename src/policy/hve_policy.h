#pragma once

// The HVE envelope rules (docs/architecture.md, Policy), as pure functions of a directory snapshot
// and the account a session acts as. Each returns std::nullopt to accept, or the reply to refuse
// with. Any thread (snapshots are immutable).

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
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

// IsAllowedNetwork: whether `ip` lies in one of `networks`.
bool IsAllowedNetwork(const std::vector<Cidr>& networks, const IpBytes& ip);

}  // namespace chute::policy
