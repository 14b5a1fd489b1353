#pragma once

// Who may ask the admin listener what (docs/operations.md, "The admin listener's security").
// Decided from the request head and where the request came from; pure apart from the clock it
// is given, any thread.
//
//   /healthz                   open to anyone who can reach the listener
//   /metrics                   the admin token, the metrics token, or anyone when metrics_open
//   GET /usage                 the admin token, or a ticket (a browser's short-lived pass,
//                              POST /usage/ticket makes one; it opens GET /usage and nothing else)
//   everything else            the admin token (queue, dead letters, tickets)
//   the unix socket            root and chuted's own user (SO_PEERCRED), without a token: the
//                              way chutectl comes in
//
// Credentials travel only in `Authorization: Bearer` (or a ticket in the URL of GET /usage):
// nothing a browser sends by itself (cookies, cached Basic credentials) ever counts. Against
// a web page in the operator's browser, besides: the Host header must name this listener (the
// configured host, `localhost` or a loopback literal: DNS rebinding), and a request the browser
// marks cross-site or same-site (`Sec-Fetch-Site`) or that carries a foreign `Origin` is
// refused, whatever its credentials.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace chute::admin {

// Longest ticket lifetime: a ticket is for the browser tab the operator is about to open.
inline constexpr absl::Duration kTicketLifetime = absl::Minutes(15);
// Header lines of one request (the request is at most 8 KiB anyway).
inline constexpr size_t kRequestHeadersMax = 64;

// RequestHead: the request line and header fields of one HTTP/1.x request.
struct RequestHead {
  std::string method;
  std::string target;  // path and query, as sent
  struct Field {
    std::string name;  // lower case
    std::string value;
  };
  std::vector<Field> fields;

  absl::string_view path() const;
  absl::string_view query() const;  // after '?', "" when none
  // Header: the value of the field `name` (lower case), nullptr when absent.
  const std::string* Header(absl::string_view name) const;
};

// ParseRequestHead: `request` up to the blank line. InvalidArgument for a malformed request
// line or field, more than kRequestHeadersMax fields, or Host, Authorization, Origin or
// Sec-Fetch-Site given twice (two values the checks below could read differently).
absl::StatusOr<RequestHead> ParseRequestHead(absl::string_view request);

// Where the request came from.
enum class Peer {
  kTcp,        // the loopback HTTP listener: credentials in the request
  kLocalUser,  // the unix socket, peer uid root or chuted's own (checked at accept)
};

struct AccessKeys {
  std::string admin_token;         // never ""
  std::string metrics_token;       // "" = none
  bool metrics_open = false;       // /metrics without a token
  std::string listener_host;       // the configured address's host: "127.0.0.1", "[::1]"
  std::string listener_authority;  // host:port as configured, for Origin
};

struct AccessVerdict {
  bool allowed = false;
  int status = 0;      // when refused: 401, 403 or 421
  std::string reason;  // when refused: one sentence for the client and the log
};

// CheckAccess: whether `head` from `peer` may be answered.
AccessVerdict CheckAccess(const RequestHead& head, Peer peer, const AccessKeys& keys,
                          absl::Time now);

// MakeTicket: a ticket for GET /usage, valid until `expiry` (at most kTicketLifetime from
// now; CheckAccess refuses a longer one). "<unix seconds>.<hex HMAC-SHA256 under the admin
// token>"; changing the token voids every ticket.
std::string MakeTicket(absl::string_view admin_token, absl::Time expiry);

// NewToken: 32 random bytes as 64 hex digits.
std::string NewToken();

}  // namespace chute::admin
