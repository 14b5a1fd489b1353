// https_get_test.cc: the URL and response parsers behind HttpsGet: what is taken, what is
// refused, and when more bytes are needed.

#include "net/https_get.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace chute::net {
namespace {

TEST(ParseHttpsUrl, TakesHostPortAndTarget) {
  absl::StatusOr<HttpsUrl> url =
      ParseHttpsUrl("https://Login.Example.TEST/tid/discovery/v2.0/keys?appid=1");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->host, "login.example.test");
  EXPECT_EQ(url->port, 443);
  EXPECT_EQ(url->target, "/tid/discovery/v2.0/keys?appid=1");
  EXPECT_EQ(url->ToString(), "https://login.example.test/tid/discovery/v2.0/keys?appid=1");

  url = ParseHttpsUrl("https://127.0.0.1:8443");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, 8443);
  EXPECT_EQ(url->target, "/");
  EXPECT_EQ(url->ToString(), "https://127.0.0.1:8443/");

  url = ParseHttpsUrl("https://[::1]:9443/keys");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->host, "::1");
  EXPECT_EQ(url->port, 9443);
  EXPECT_EQ(url->ToString(), "https://[::1]:9443/keys");

  url = ParseHttpsUrl("HTTPS://idp.example.test?x=1");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->target, "/?x=1");
}

TEST(ParseHttpsUrl, RefusesWhatIsNotAPlainHttpsUrl) {
  const std::pair<const char*, const char*> cases[] = {
      {"http://idp.example.test/keys", "not an https:// URL"},
      {"idp.example.test/keys", "not an https:// URL"},
      {"https://user:secret@idp.example.test/keys", "user information"},
      {"https://idp.example.test/keys#frag", "fragment"},
      {"https://idp.example.test:0/keys", "1..65535"},
      {"https://idp.example.test:65536/keys", "1..65535"},
      {"https://idp.example.test:/keys", "empty port"},
      {"https://idp.example.test:+443/keys", "1..65535"},
      {"https:///keys", "bad host name"},
      {"https://idp..example/keys", "bad host name"},
      {"https://idp_example/keys", "bad host name"},
      {"https://[::1/keys", "without its ]"},
      {"https://[1.2.3.4]/keys", "bad IPv6"},
      {"https://idp.example.test/a b", "space"},
      {"https://idp.example.test/\xc3\xa9", "non-ASCII"},
  };
  for (const auto& [url, why] : cases) {
    absl::StatusOr<HttpsUrl> parsed = ParseHttpsUrl(url);
    ASSERT_FALSE(parsed.ok()) << url;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), why))
        << url << ": " << parsed.status();
  }
  EXPECT_FALSE(ParseHttpsUrl(absl::StrCat("https://a.example/", std::string(3000, 'x'))).ok());
}

constexpr size_t kMax = 1000;

absl::StatusOr<std::optional<HttpResponse>> Parse(absl::string_view bytes, bool at_eof) {
  return ParseHttpResponse(bytes, kMax, at_eof);
}

TEST(ParseHttpResponse, ContentLengthDelimitsTheBody) {
  std::string response =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
      "{\"keys\":[]}";
  for (size_t cut = 0; cut < response.size(); ++cut) {
    absl::StatusOr<std::optional<HttpResponse>> partial = Parse(response.substr(0, cut), false);
    ASSERT_TRUE(partial.ok()) << cut << ": " << partial.status();
    EXPECT_FALSE(partial->has_value()) << cut;
    EXPECT_FALSE(Parse(response.substr(0, cut), true).ok()) << "truncated at " << cut;
  }
  absl::StatusOr<std::optional<HttpResponse>> whole = Parse(response + "extra", false);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE(whole->has_value());
  EXPECT_EQ((*whole)->status, 200);
  EXPECT_EQ((*whole)->reason, "OK");
  EXPECT_EQ((*whole)->content_type, "application/json");
  EXPECT_EQ((*whole)->body, "{\"keys\":[]}");
}

TEST(ParseHttpResponse, DecodesChunks) {
  std::string response =
      "HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n"
      "5;ext=1\r\n{\"key\r\n6\r\ns\":[]}\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t cut = 0; cut < response.size(); ++cut) {
    absl::StatusOr<std::optional<HttpResponse>> partial = Parse(response.substr(0, cut), false);
    ASSERT_TRUE(partial.ok()) << cut << ": " << partial.status();
    EXPECT_FALSE(partial->has_value()) << cut;
  }
  absl::StatusOr<std::optional<HttpResponse>> whole = Parse(response, false);
  ASSERT_TRUE(whole.ok()) << whole.status();
  ASSERT_TRUE(whole->has_value());
  EXPECT_EQ((*whole)->body, "{\"keys\":[]}");
  EXPECT_FALSE(Parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false).ok());
  EXPECT_FALSE(
      Parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", false)
          .ok());
}

TEST(ParseHttpResponse, WithoutLengthTheCloseEndsTheBody) {
  std::string response = "HTTP/1.0 200 OK\r\n\r\n{\"keys\":[]}";
  absl::StatusOr<std::optional<HttpResponse>> open = Parse(response, false);
  ASSERT_TRUE(open.ok());
  EXPECT_FALSE(open->has_value());
  absl::StatusOr<std::optional<HttpResponse>> closed = Parse(response, true);
  ASSERT_TRUE(closed.ok()) << closed.status();
  ASSERT_TRUE(closed->has_value());
  EXPECT_EQ((*closed)->body, "{\"keys\":[]}");
}

TEST(ParseHttpResponse, ARedirectKeepsItsLocation) {
  absl::StatusOr<std::optional<HttpResponse>> moved = Parse(
      "HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.test/keys\r\n"
      "Content-Length: 0\r\n\r\n",
      false);
  ASSERT_TRUE(moved.ok()) << moved.status();
  ASSERT_TRUE(moved->has_value());
  EXPECT_EQ((*moved)->status, 301);
  EXPECT_EQ((*moved)->location, "https://elsewhere.test/keys");
}

TEST(ParseHttpResponse, RefusesWhatItCannotReadSafely) {
  const std::pair<std::string, const char*> cases[] = {
      {"HTTP/2 200\r\n\r\n", "status line"},
      {"SMTP/1.1 200 OK\r\n\r\n", "status line"},
      {"HTTP/1.1 20 OK\r\n\r\n", "status code"},
      {"HTTP/1.1 2000 OK\r\n\r\n", "status code"},
      {"HTTP/1.1 100 Continue\r\n\r\n", "interim"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length"},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", "both"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "only chunked"},
      {"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n", "Content-Encoding"},
      {"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", "folded"},
      {"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "without a name"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n", "larger than 1000"},
      {"HTTP/1.1 404 Not\nFound <6>forged log line\r\n\r\n", "control character"},
      {"HTTP/1.1 301 Moved\r\nLocation: https://x.test/\x1b[2J\r\n\r\n", "control character"},
      {"HTTP/1.1 200 \xc3\xa9\r\n\r\n", "non-ASCII"},
      {absl::StrCat("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ",
                    std::string(kHttpHeaderBytesMax, 'x')),
       "trailers longer"},
  };
  for (const auto& [response, why] : cases) {
    absl::StatusOr<std::optional<HttpResponse>> parsed = Parse(response, false);
    ASSERT_FALSE(parsed.ok()) << response;
    EXPECT_TRUE(absl::StrContains(parsed.status().message(), why))
        << response << ": " << parsed.status();
  }
  EXPECT_FALSE(
      Parse(absl::StrCat("HTTP/1.1 200 OK\r\n\r\n", std::string(kMax + 1, 'x')), false).ok());
  EXPECT_FALSE(Parse(absl::StrCat("HTTP/1.1 200 OK\r\nX: ", std::string(kHttpHeaderBytesMax, 'x'),
                                  "\r\n\r\n"),
                     false)
                   .ok());
  EXPECT_FALSE(Parse(std::string(kHttpHeaderBytesMax + 1, 'x'), false).ok());
  absl::StatusOr<std::optional<HttpResponse>> nothing = Parse("", true);
  ASSERT_FALSE(nothing.ok());
  EXPECT_TRUE(absl::StrContains(nothing.status().message(), "without answering"));
}

}  // namespace
}  // namespace chute::net
