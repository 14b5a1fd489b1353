// access.cc: the admin listener's access rules: request heads, tokens, tickets, Host and Origin.

#include "admin/access.h"

#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/net_address.h"

namespace chute::admin {
namespace {

constexpr absl::string_view kTicketContext = "chute admin ticket: GET /usage\n";

bool SameSecret(absl::string_view given, absl::string_view secret) {
  return !secret.empty() && given.size() == secret.size() &&
         CRYPTO_memcmp(given.data(), secret.data(), secret.size()) == 0;
}

std::string TicketMac(absl::string_view admin_token, int64_t expiry_seconds) {
  std::string message = absl::StrCat(kTicketContext, expiry_seconds);
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), admin_token.data(), admin_token.size(),
       reinterpret_cast<const uint8_t*>(message.data()), message.size(), mac, &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(mac), static_cast<size_t>(length)));
}

// HostIsOurs: `host` (a Host header or an Origin's authority, port allowed) names this
// listener: the configured host, localhost, or a loopback address literal.
bool HostIsOurs(absl::string_view authority, const AccessKeys& keys) {
  std::string host = absl::AsciiStrToLower(authority);
  absl::string_view h = host;
  if (absl::StartsWith(h, "[")) {
    size_t close = h.find(']');
    if (close == absl::string_view::npos) {
      return false;
    }
    absl::string_view rest = h.substr(close + 1);
    if (!rest.empty() && !absl::StartsWith(rest, ":")) {
      return false;
    }
    h = h.substr(0, close + 1);
  } else if (size_t colon = h.rfind(':'); colon != absl::string_view::npos) {
    h = h.substr(0, colon);
  }
  if (h.empty()) {
    return false;
  }
  if (h == "localhost" || h == absl::AsciiStrToLower(keys.listener_host)) {
    return true;
  }
  absl::string_view literal = h;
  if (absl::ConsumePrefix(&literal, "[") && !absl::ConsumeSuffix(&literal, "]")) {
    return false;
  }
  absl::StatusOr<IpBytes> ip = ParseIp(literal);
  return ip.ok() && IsLoopback(*ip);
}

// TicketQuery: the value of ticket= in `query`, "" when none.
std::string TicketOf(absl::string_view query) {
  for (absl::string_view pair : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&pair, "ticket=")) {
      return std::string(pair);
    }
  }
  return "";
}

bool TicketValid(absl::string_view ticket, const AccessKeys& keys, absl::Time now) {
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(ticket, absl::MaxSplits('.', 1));
  int64_t expiry = 0;
  if (!absl::SimpleAtoi(parts.first, &expiry) || expiry <= absl::ToUnixSeconds(now) ||
      absl::FromUnixSeconds(expiry) > now + kTicketLifetime + absl::Seconds(1)) {
    return false;
  }
  return SameSecret(parts.second, TicketMac(keys.admin_token, expiry));
}

AccessVerdict Refuse(int status, std::string reason) {
  return AccessVerdict{false, status, std::move(reason)};
}

}  // namespace

absl::string_view RequestHead::path() const {
  absl::string_view t = target;
  return t.substr(0, t.find('?'));
}

absl::string_view RequestHead::query() const {
  absl::string_view t = target;
  size_t question = t.find('?');
  return question == absl::string_view::npos ? "" : t.substr(question + 1);
}

const std::string* RequestHead::Header(absl::string_view name) const {
  for (const Field& field : fields) {
    if (field.name == name) {
      return &field.value;
    }
  }
  return nullptr;
}

absl::StatusOr<RequestHead> ParseRequestHead(absl::string_view request) {
  size_t end = request.find("\r\n\r\n");
  absl::string_view head = request.substr(0, end);
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  std::vector<absl::string_view> words = absl::StrSplit(lines[0], ' ');
  if (words.size() != 3 || words[0].empty() || !absl::StartsWith(words[1], "/") ||
      !absl::StartsWith(words[2], "HTTP/1.")) {
    return absl::InvalidArgumentError("a malformed request line");
  }
  RequestHead out;
  out.method = std::string(words[0]);
  out.target = std::string(words[1]);
  if (lines.size() - 1 > kRequestHeadersMax) {
    return absl::InvalidArgumentError("too many header fields");
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos || colon == 0 ||
        absl::ascii_isspace(static_cast<unsigned char>(lines[i][colon - 1]))) {
      return absl::InvalidArgumentError("a malformed header field");
    }
    std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    for (absl::string_view single : {"host", "authorization", "origin", "sec-fetch-site"}) {
      if (name == single && out.Header(name) != nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("the ", name, " field is given twice"));
      }
    }
    out.fields.push_back(RequestHead::Field{
        std::move(name), std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)))});
  }
  return out;
}

AccessVerdict CheckAccess(const RequestHead& head, Peer peer, const AccessKeys& keys,
                          absl::Time now) {
  absl::string_view path = head.path();
  if (path == "/healthz") {
    return AccessVerdict{true, 0, ""};
  }
  // A web page the operator visits: DNS rebinding gives it a name that resolves here, and a
  // form or fetch() from it is marked by the browser.
  if (peer == Peer::kTcp) {
    const std::string* host = head.Header("host");
    if (host == nullptr || !HostIsOurs(*host, keys)) {
      return Refuse(421, absl::StrCat("Host '", host == nullptr ? "" : host->substr(0, 100),
                                      "' is not this admin listener (use ", keys.listener_authority,
                                      " or localhost)"));
    }
  }
  if (const std::string* site = head.Header("sec-fetch-site");
      site != nullptr && (*site == "cross-site" || *site == "same-site")) {
    return Refuse(403, absl::StrCat("a ", *site, " request from a web page"));
  }
  if (const std::string* origin = head.Header("origin"); origin != nullptr) {
    absl::string_view authority = *origin;
    if (!absl::ConsumePrefix(&authority, "http://") || !HostIsOurs(authority, keys)) {
      return Refuse(403,
                    absl::StrCat("a request from the web origin '", origin->substr(0, 100), "'"));
    }
  }
  if (peer == Peer::kLocalUser) {
    return AccessVerdict{true, 0, ""};
  }
  bool metrics = path == "/metrics";
  if (metrics && keys.metrics_open) {
    return AccessVerdict{true, 0, ""};
  }
  const std::string* authorization = head.Header("authorization");
  if (authorization == nullptr) {
    if (head.method == "GET" && path == "/usage") {
      std::string ticket = TicketOf(head.query());
      if (!ticket.empty()) {
        return TicketValid(ticket, keys, now)
                   ? AccessVerdict{true, 0, ""}
                   : Refuse(401,
                            "the ticket is expired or not this chuted's (chutectl report "
                            "--link makes a new one)");
      }
    }
    return Refuse(401,
                  "this needs the admin token (Authorization: Bearer; chutectl comes in "
                  "through the admin socket)");
  }
  absl::string_view given = *authorization;
  if (!absl::ConsumePrefix(&given, "Bearer ") && !absl::ConsumePrefix(&given, "bearer ")) {
    return Refuse(401, "only Authorization: Bearer is accepted");
  }
  given = absl::StripAsciiWhitespace(given);
  if (SameSecret(given, keys.admin_token)) {
    return AccessVerdict{true, 0, ""};
  }
  if (SameSecret(given, keys.metrics_token)) {
    return metrics ? AccessVerdict{true, 0, ""}
                   : Refuse(403, "the metrics token reads /metrics and nothing else");
  }
  return Refuse(401, "a wrong token");
}

std::string MakeTicket(absl::string_view admin_token, absl::Time expiry) {
  int64_t seconds = absl::ToUnixSeconds(expiry);
  return absl::StrCat(seconds, ".", TicketMac(admin_token, seconds));
}

std::string NewToken() {
  uint8_t bytes[32];
  RAND_bytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), 32));
}

}  // namespace chute::admin
