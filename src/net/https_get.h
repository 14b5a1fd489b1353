#pragma once

// HttpsGet: one HTTP/1.1 GET over verified TLS, for the OAuth key fetcher (auth/key_store.h):
// the certificate chain against the client context's CA file, the URL's host name (sent as
// SNI), each read and the whole request bounded in time, the response bounded in size. No
// redirect is followed (a JWKS that moved is a configuration to change, not a hop to trust),
// no proxy, no cookies, no compression. Blocking: for a thread that may block, never a
// shard's loop (docs/architecture.md, Network and TLS).
//
// ParseHttpsUrl and ParseHttpResponse are pure; HttpsGet resolves the host with getaddrinfo
// and talks through net::UringStream.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "net/tls.h"

namespace chute::net {

// The status line and headers of a response take at most this much.
inline constexpr size_t kHttpHeaderBytesMax = 16 * 1024;
inline constexpr size_t kUrlBytesMax = 2048;
// Name lookups given up on (past their deadline) that the resolver could not cancel and still
// works on; past this many, HttpsGet refuses to start another until they end ("too many name
// lookups still under way"), so that a resolver that hangs cannot make chuted grow.
inline constexpr size_t kAbandonedLookupsMax = 16;

struct HttpsUrl {
  std::string host;  // a DNS name (lower-cased), an IPv4 address, or an IPv6 one without []
  uint16_t port = 443;
  std::string target;  // the path and query, starting with "/"
  // ToString: https://host[:port]/target, as it is shown in logs.
  std::string ToString() const;
};

// ParseHttpsUrl: an absolute https URL without user information or fragment. InvalidArgument
// saying what is wrong otherwise ("not an https:// URL", "a port is 1..65535").
absl::StatusOr<HttpsUrl> ParseHttpsUrl(absl::string_view url);

struct HttpResponse {
  int status = 0;            // 200, 404, ...
  std::string reason;        // "OK"
  std::string content_type;  // the header's value, "" when absent
  std::string location;      // a redirect's Location, "" when absent
  std::string body;          // decoded from chunks when it came chunked
};

// ParseHttpResponse: the response in `bytes`, the first bytes received. nullopt when more are
// needed (and may come: !at_eof). The body is delimited by Content-Length, by chunked
// transfer coding, or by the end of the connection. InvalidArgument when the response is
// malformed, truncated (at_eof), or larger than kHttpHeaderBytesMax + `body_bytes_max`.
absl::StatusOr<std::optional<HttpResponse>> ParseHttpResponse(absl::string_view bytes,
                                                              size_t body_bytes_max, bool at_eof);

struct HttpsGetOptions {
  // tls: a verifying client context (TlsContext::NewClient with enforce = true).
  std::shared_ptr<TlsContext> tls;
  // timeout: the whole request, from resolving the name to the last byte.
  absl::Duration timeout = absl::Seconds(10);
  size_t body_bytes_max = 1 << 20;
  const std::atomic<int64_t>* stop_at_unix_ms = nullptr;  // see StreamOptions
  std::string user_agent = "chute";
};

// HttpsGet: GET `url`. Any status is returned as a response; the caller decides what a 404
// means. Unavailable naming the URL when the name does not resolve, no address connects in
// time, the certificate does not verify, or the response is malformed or too large.
absl::StatusOr<HttpResponse> HttpsGet(const HttpsUrl& url, const HttpsGetOptions& options);

}  // namespace chute::net
