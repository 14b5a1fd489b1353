// https_get.cc: one verified HTTPS GET, and the pure URL and response parsers behind it.

#include "net/https_get.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/net_address.h"
#include "base/status_macros.h"
#include "io/loop.h"
#include "io/task.h"
#include "net/socket.h"
#include "net/uring_stream.h"

namespace chute::net {
namespace {

absl::Status BadUrl(absl::string_view url, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("'", url, "': ", why));
}

bool IsHostChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-';
}

absl::Status Malformed(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("malformed HTTP response: ", why));
}

// Request: one asynchronous name resolution (getaddrinfo_a) and what it points to.
struct Request {
  gaicb gai{};
  addrinfo hints{};
  std::string host;
  std::string service;
};

// Framing: how the body of a response is delimited.
struct Framing {
  bool chunked = false;
  std::optional<uint64_t> length;  // Content-Length
};

// DecodeChunks: the chunked body at the start of `bytes` (RFC 9112 §7.1), trailers skipped.
// nullopt when incomplete.
absl::StatusOr<std::optional<std::string>> DecodeChunks(absl::string_view bytes,
                                                        size_t body_bytes_max) {
  std::string body;
  while (true) {
    size_t line_end = bytes.find("\r\n");
    if (line_end == absl::string_view::npos) {
      if (bytes.size() > 1024) {
        return Malformed("a chunk size line longer than 1024 bytes");
      }
      return std::optional<std::string>();
    }
    absl::string_view size_text = bytes.substr(0, line_end);
    size_text = size_text.substr(0, size_text.find(';'));  // chunk extensions are ignored
    size_text = absl::StripAsciiWhitespace(size_text);
    uint64_t size = 0;
    if (size_text.empty() || size_text.size() > 8 || !absl::SimpleHexAtoi(size_text, &size)) {
      return Malformed("a bad chunk size");
    }
    bytes.remove_prefix(line_end + 2);
    if (size == 0) {
      // Trailer fields, then an empty line; no more of them than headers.
      size_t trailers = 0;
      while (true) {
        size_t end = bytes.find("\r\n");
        trailers += end == absl::string_view::npos ? bytes.size() : end + 2;
        if (trailers > kHttpHeaderBytesMax) {
          return Malformed(absl::StrCat("trailers longer than ", kHttpHeaderBytesMax, " bytes"));
        }
        if (end == absl::string_view::npos) {
          return std::optional<std::string>();
        }
        bytes.remove_prefix(end + 2);
        if (end == 0) {
          return std::optional<std::string>(std::move(body));
        }
      }
    }
    if (body.size() + size > body_bytes_max) {
      return absl::InvalidArgumentError(
          absl::StrCat("the response body is larger than ", body_bytes_max, " bytes"));
    }
    if (bytes.size() < size + 2) {
      return std::optional<std::string>();
    }
    if (bytes.substr(size, 2) != "\r\n") {
      return Malformed("a chunk not followed by CRLF");
    }
    body.append(bytes.data(), size);
    bytes.remove_prefix(size + 2);
  }
}

// ParseHead: the status line and the headers (without the empty line that ends them).
absl::Status ParseHead(absl::string_view head, HttpResponse* out, Framing* framing) {
  for (size_t i = 0; i < head.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(head[i]);
    bool line_break = c == '\r' && i + 1 < head.size() && head[i + 1] == '\n';
    if (line_break) {
      ++i;
    } else if ((c < 0x20 && c != '\t') || c >= 0x7f) {
      // What the head says reaches the log: a bare LF or an escape sequence there could
      // forge a line.
      return Malformed("a control character or a non-ASCII byte in the status line or headers");
    }
  }
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  absl::string_view status_line = lines[0];
  if (!absl::ConsumePrefix(&status_line, "HTTP/1.") || status_line.size() < 5 ||
      (status_line[0] != '0' && status_line[0] != '1') || status_line[1] != ' ') {
    return Malformed("not an HTTP/1.x status line");
  }
  absl::string_view code = status_line.substr(2, 3);
  if (!absl::SimpleAtoi(code, &out->status) || out->status < 100 || out->status > 599 ||
      !absl::ascii_isdigit(static_cast<unsigned char>(code[0])) ||
      (status_line.size() > 5 && status_line[5] != ' ')) {
    return Malformed("a bad status code");
  }
  if (out->status < 200) {
    return Malformed(absl::StrCat("an interim ", out->status, " response to a GET"));
  }
  out->reason = std::string(absl::StripAsciiWhitespace(status_line.substr(5)));
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line.empty() || line[0] == ' ' || line[0] == '\t') {
      return Malformed("a folded or empty header line");
    }
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return Malformed("a header line without a name");
    }
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (name == "content-length") {
      uint64_t length = 0;
      if (value.empty() || value.size() > 19 || !absl::SimpleAtoi(value, &length) ||
          !absl::ascii_isdigit(static_cast<unsigned char>(value[0])) ||
          (framing->length && *framing->length != length)) {
        return Malformed("a bad or repeated Content-Length");
      }
      framing->length = length;
    } else if (name == "transfer-encoding") {
      if (!absl::EqualsIgnoreCase(value, "chunked") || framing->chunked) {
        return Malformed(absl::StrCat("Transfer-Encoding ", value, " (only chunked is read)"));
      }
      framing->chunked = true;
    } else if (name == "content-encoding") {
      if (!absl::EqualsIgnoreCase(value, "identity")) {
        return Malformed(absl::StrCat("Content-Encoding ", value, " (none was asked for)"));
      }
    } else if (name == "content-type") {
      out->content_type = std::string(value);
    } else if (name == "location") {
      out->location = std::string(value);
    }
  }
  if (framing->chunked && framing->length) {
    // RFC 9112 §6.3: a message with both may be a smuggling attempt.
    return Malformed("both Transfer-Encoding and Content-Length");
  }
  return absl::OkStatus();
}

// Each address is given at least this long to connect (unless less is left in all).
constexpr absl::Duration kConnectMin = absl::Seconds(1);

// Abandoned: the lookups given up on that the resolver could not cancel: it still writes
// into them. Each is freed by the next Resolve that finds it done.
class Abandoned {
 public:
  static Abandoned& Get() {
    static Abandoned* abandoned =
        new Abandoned;  // never destroyed: resolver threads may outlive main
    return *abandoned;
  }
  // Reap: frees those that ended; how many are still under way.
  size_t Reap() {
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(requests_, [](Request* request) {
      int state = gai_error(&request->gai);
      if (state == EAI_INPROGRESS) {
        return false;
      }
      if (state == 0) {
        freeaddrinfo(request->gai.ar_result);
      }
      delete request;
      return true;
    });
    return requests_.size();
  }
  void Add(Request* request) {
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(request);
  }

 private:
  std::mutex mu_;
  std::vector<Request*> requests_;  // guarded by mu_
};

// Resolve: the host's addresses (the caller frees them), within the deadline and the stop
// flag: getaddrinfo itself would wait as long as the resolver's own timeouts.
absl::StatusOr<addrinfo*> Resolve(const HttpsUrl& url, absl::Time deadline,
                                  const std::atomic<int64_t>* stop_at_unix_ms) {
  if (Abandoned::Get().Reap() >= kAbandonedLookupsMax) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", url.host, ": ",
                                               kAbandonedLookupsMax,
                                               " earlier name lookups are still under way (is "
                                               "the resolver answering?)"));
  }
  auto request = std::make_unique<Request>();
  request->host = url.host;
  request->service = absl::StrCat(url.port);
  request->hints.ai_family = AF_UNSPEC;
  request->hints.ai_socktype = SOCK_STREAM;
  request->hints.ai_flags = AI_ADDRCONFIG;
  request->gai.ar_name = request->host.c_str();
  request->gai.ar_service = request->service.c_str();
  request->gai.ar_request = &request->hints;
  gaicb* list[] = {&request->gai};
  int started = getaddrinfo_a(GAI_NOWAIT, list, 1, nullptr);
  if (started != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", url.host, ": ", gai_strerror(started)));
  }
  while (true) {
    int state = gai_error(&request->gai);
    if (state != EAI_INPROGRESS) {
      if (state != 0) {
        return absl::UnavailableError(
            absl::StrCat("cannot resolve ", url.host, ": ", gai_strerror(state)));
      }
      return request->gai.ar_result;
    }
    absl::Time now = absl::Now();
    int64_t stop_at = stop_at_unix_ms != nullptr ? stop_at_unix_ms->load() : 0;
    if (now >= deadline || (stop_at != 0 && absl::ToUnixMillis(now) >= stop_at)) {
      int cancelled = gai_cancel(&request->gai);
      if (cancelled == EAI_NOTCANCELED) {
        Abandoned::Get().Add(request.release());  // the resolver still writes into it
      } else if (cancelled == EAI_ALLDONE && gai_error(&request->gai) == 0) {
        freeaddrinfo(request->gai.ar_result);
      }
      return absl::UnavailableError(absl::StrCat(
          now >= deadline ? "timeout resolving " : "chuted is stopping: gave up resolving ",
          url.host));
    }
    absl::Duration wait = std::min(deadline - now, kStreamStopCheckInterval);
    timespec timeout = absl::ToTimespec(wait);
    const gaicb* waiting[] = {&request->gai};
    gai_suspend(waiting, 1, &timeout);
  }
}

}  // namespace

std::string HttpsUrl::ToString() const {
  std::string shown = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  if (port != 443) {
    absl::StrAppend(&shown, ":", port);
  }
  return absl::StrCat("https://", shown, target);
}

absl::StatusOr<HttpsUrl> ParseHttpsUrl(absl::string_view url) {
  if (url.size() > kUrlBytesMax) {
    return BadUrl(url.substr(0, 64), absl::StrCat("longer than ", kUrlBytesMax, " bytes"));
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return BadUrl(url, "a space, a control character or a non-ASCII byte (percent-encode it)");
    }
  }
  absl::string_view rest = url;
  if (rest.size() < 8 || !absl::EqualsIgnoreCase(rest.substr(0, 8), "https://")) {
    return BadUrl(url, "not an https:// URL");
  }
  rest.remove_prefix(8);
  if (rest.find('#') != absl::string_view::npos) {
    return BadUrl(url, "a URL with a fragment (#)");
  }
  size_t authority_end = rest.find_first_of("/?");
  absl::string_view authority = rest.substr(0, authority_end);
  absl::string_view target =
      authority_end == absl::string_view::npos ? "" : rest.substr(authority_end);
  if (authority.find('@') != absl::string_view::npos) {
    return BadUrl(url, "a URL with user information (user@); credentials do not go in URLs");
  }
  HttpsUrl out;
  absl::string_view port_text;
  if (absl::ConsumePrefix(&authority, "[")) {
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return BadUrl(url, "an IPv6 address without its ]");
    }
    absl::StatusOr<IpBytes> ip = ParseIp(authority.substr(0, close));
    if (!ip.ok() || !absl::StrContains(authority.substr(0, close), ':')) {
      return BadUrl(url, "a bad IPv6 address");
    }
    out.host = std::string(authority.substr(0, close));
    authority.remove_prefix(close + 1);
    if (!authority.empty() && !absl::ConsumePrefix(&authority, ":")) {
      return BadUrl(url, "something after the IPv6 address that is not a port");
    }
    port_text = authority;
  } else {
    size_t colon = authority.find(':');
    absl::string_view host = authority.substr(0, colon);
    if (host.empty() || !std::all_of(host.begin(), host.end(), IsHostChar) || host.front() == '.' ||
        host.front() == '-' || absl::StrContains(host, "..")) {
      return BadUrl(url, "a bad host name");
    }
    out.host = absl::AsciiStrToLower(absl::StripSuffix(host, "."));
    port_text = colon == absl::string_view::npos ? "" : authority.substr(colon + 1);
    if (colon != absl::string_view::npos && port_text.empty()) {
      return BadUrl(url, "an empty port");
    }
  }
  if (!port_text.empty()) {
    uint32_t port = 0;
    if (port_text.size() > 5 || !absl::SimpleAtoi(port_text, &port) || port < 1 || port > 65535 ||
        !absl::ascii_isdigit(static_cast<unsigned char>(port_text[0]))) {
      return BadUrl(url, "a port is 1..65535");
    }
    out.port = static_cast<uint16_t>(port);
  }
  out.target = target.empty() || target[0] == '?' ? absl::StrCat("/", target) : std::string(target);
  return out;
}

absl::StatusOr<std::optional<HttpResponse>> ParseHttpResponse(absl::string_view bytes,
                                                              size_t body_bytes_max, bool at_eof) {
  size_t head_end = bytes.find("\r\n\r\n");
  if (head_end == absl::string_view::npos || head_end + 4 > kHttpHeaderBytesMax) {
    if (head_end != absl::string_view::npos || bytes.size() > kHttpHeaderBytesMax) {
      return absl::InvalidArgumentError(
          absl::StrCat("the response's status line and headers are longer than ",
                       kHttpHeaderBytesMax, " bytes"));
    }
    if (at_eof) {
      return Malformed(bytes.empty() ? "the server closed the connection without answering"
                                     : "the connection closed within the headers");
    }
    return std::optional<HttpResponse>();
  }
  HttpResponse response;
  Framing framing;
  RETURN_IF_ERROR(ParseHead(bytes.substr(0, head_end), &response, &framing));
  absl::string_view body = bytes.substr(head_end + 4);
  if (response.status == 204 || response.status == 304) {
    return std::optional<HttpResponse>(std::move(response));
  }
  auto too_large = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("the response body is larger than ", body_bytes_max, " bytes"));
  };
  if (framing.chunked) {
    ASSIGN_OR_RETURN(std::optional<std::string> decoded, DecodeChunks(body, body_bytes_max));
    if (!decoded.has_value()) {
      if (at_eof) {
        return Malformed("the connection closed within the chunked body");
      }
      return std::optional<HttpResponse>();
    }
    response.body = *std::move(decoded);
    return std::optional<HttpResponse>(std::move(response));
  }
  if (framing.length) {
    if (*framing.length > body_bytes_max) {
      return too_large();
    }
    if (body.size() < *framing.length) {
      if (at_eof) {
        return Malformed(absl::StrCat("the connection closed after ", body.size(), " of ",
                                      *framing.length, " body bytes"));
      }
      return std::optional<HttpResponse>();
    }
    response.body = std::string(body.substr(0, *framing.length));
    return std::optional<HttpResponse>(std::move(response));
  }
  if (body.size() > body_bytes_max) {
    return too_large();
  }
  if (!at_eof) {
    return std::optional<HttpResponse>();
  }
  response.body = std::string(body);
  return std::optional<HttpResponse>(std::move(response));
}

namespace {

absl::Status Failed(absl::string_view shown, absl::string_view why) {
  return absl::UnavailableError(absl::StrCat("GET ", shown, ": ", why));
}

// Fetch: the request over the first of `found` that connects, as a task on `loop`.
io::Task<absl::StatusOr<HttpResponse>> Fetch(io::Loop* loop, const addrinfo* found,
                                             const HttpsUrl& url, const HttpsGetOptions& options,
                                             absl::Time deadline) {
  std::string shown = url.ToString();
  int count = 0;
  for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
    ++count;
  }
  UringStream::Ptr stream;
  std::string errors;
  for (const addrinfo* a = found; a != nullptr && stream == nullptr; a = a->ai_next, --count) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration() || a->ai_addrlen > sizeof(sockaddr_storage)) {
      break;
    }
    sockaddr_storage address{};
    std::memcpy(&address, a->ai_addr, a->ai_addrlen);
    std::string ip = FormatIp(IpFromSockaddr(address));
    std::string peer =
        absl::StrCat(absl::StrContains(ip, ':') ? absl::StrCat("[", ip, "]") : ip, ":", url.port);
    StreamOptions stream_options;
    // A share of what is left, so that an address that swallows packets (a broken IPv6
    // route) leaves time for the next one; the last gets all that is left.
    stream_options.io_timeout =
        count > 1 ? std::max(left / count, std::min(left, kConnectMin)) : left;
    stream_options.stop_at_unix_ms = options.stop_at_unix_ms;
    absl::StatusOr<UringStream::Ptr> connected = co_await UringStream::Connect(
        loop, address, a->ai_addrlen, std::move(peer), stream_options);
    if (connected.ok()) {
      stream = *std::move(connected);
    } else {
      absl::StrAppend(&errors, errors.empty() ? "" : "; ", connected.status().message());
    }
  }
  if (stream == nullptr) {
    co_return Failed(shown, errors.empty() ? "timed out before connecting" : errors);
  }
  stream->set_io_timeout(std::max(deadline - absl::Now(), absl::Milliseconds(1)));
  absl::Status status = co_await stream->StartTls(options.tls, url.host);
  std::string request;
  if (status.ok()) {
    absl::string_view authority = shown;
    authority.remove_prefix(8);  // "https://"
    authority.remove_suffix(url.target.size());
    request = absl::StrCat("GET ", url.target, " HTTP/1.1\r\nHost: ", authority,
                           "\r\nUser-Agent: ", options.user_agent,
                           "\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    status = co_await stream->Write(request);
  }
  std::string received;
  // Chunk framing may add to the body, but not without bound: a response that never ends
  // ends here.
  const size_t received_max = kHttpHeaderBytesMax + 2 * options.body_bytes_max + 64 * 1024;
  while (status.ok()) {
    if (received.size() > received_max) {
      co_return Failed(shown, absl::StrCat("the response is larger than ", received_max, " bytes"));
    }
    bool closed = false;
    status = co_await stream->Read(&received, 16 * 1024, deadline, &closed);
    if (!status.ok()) {
      break;
    }
    absl::StatusOr<std::optional<HttpResponse>> parsed =
        ParseHttpResponse(received, options.body_bytes_max, closed);
    if (!parsed.ok()) {
      co_return Failed(shown, parsed.status().message());
    }
    if (parsed->has_value()) {
      co_return **std::move(parsed);
    }
  }
  co_return Failed(shown, status.message());
}

}  // namespace

absl::StatusOr<HttpResponse> HttpsGet(const HttpsUrl& url, const HttpsGetOptions& options) {
  std::string shown = url.ToString();
  auto failed = [&](absl::string_view why) {
    return absl::UnavailableError(absl::StrCat("GET ", shown, ": ", why));
  };
  absl::Time deadline = absl::Now() + options.timeout;
  absl::StatusOr<addrinfo*> found = Resolve(url, deadline, options.stop_at_unix_ms);
  if (!found.ok()) {
    return failed(found.status().message());
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(*found, freeaddrinfo);
  // The calling thread's own loop (the key fetcher's thread waits for the answer).
  absl::StatusOr<io::Loop*> loop = io::Loop::ForThisThread();
  if (!loop.ok()) {
    return failed(absl::StrCat("io_uring: ", loop.status().message()));
  }
  return io::RunSync(**loop, Fetch(*loop, addresses.get(), url, options, deadline));
}

}  // namespace chute::net
