// access_test.cc: the admin listener's access rules, request by request.

#include "admin/access.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace chute::admin {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

AccessKeys Keys() {
  AccessKeys keys;
  keys.admin_token = std::string(64, 'a');
  keys.metrics_token = std::string(40, 'm');
  keys.listener_host = "127.0.0.1";
  keys.listener_authority = "127.0.0.1:9587";
  return keys;
}

RequestHead Head(absl::string_view text) {
  absl::StatusOr<RequestHead> head = ParseRequestHead(text);
  EXPECT_TRUE(head.ok()) << head.status();
  return head.ok() ? *head : RequestHead{};
}

std::string Request(absl::string_view line, absl::string_view fields) {
  return absl::StrCat(line, " HTTP/1.1\r\n", fields, "\r\n");
}

int Status(absl::string_view line, absl::string_view fields, Peer peer = Peer::kTcp,
           const AccessKeys& keys = Keys()) {
  AccessVerdict verdict = CheckAccess(Head(Request(line, fields)), peer, keys, kNow);
  return verdict.allowed ? 200 : verdict.status;
}

const std::string kHost = "Host: 127.0.0.1:9587\r\n";
const std::string kBearer = absl::StrCat("Authorization: Bearer ", std::string(64, 'a'), "\r\n");

TEST(ParseRequestHead, ReadsTheLineAndFields) {
  RequestHead head = Head("GET /usage?days=7 HTTP/1.1\r\nHOST: x\r\nX-A:  b \r\n\r\n");
  EXPECT_EQ(head.method, "GET");
  EXPECT_EQ(head.path(), "/usage");
  EXPECT_EQ(head.query(), "days=7");
  ASSERT_NE(head.Header("host"), nullptr);
  EXPECT_EQ(*head.Header("host"), "x");
  EXPECT_EQ(*head.Header("x-a"), "b");
  EXPECT_EQ(head.Header("origin"), nullptr);
}

TEST(ParseRequestHead, RefusesWhatTwoReadersCouldReadDifferently) {
  for (absl::string_view bad :
       {"GET /queue HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /queue HTTP/1.1\r\nAuthorization: x\r\nauthorization: y\r\n\r\n",
        "GET /queue HTTP/1.1\r\nOrigin : x\r\n\r\n", "GET /queue HTTP/1.1\r\nno colon\r\n\r\n",
        "GET queue HTTP/1.1\r\n\r\n", "GET /queue\r\n\r\n", "GET /queue HTTP/1.1 x\r\n\r\n"}) {
    EXPECT_FALSE(ParseRequestHead(bad).ok()) << bad;
  }
  std::string many = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i <= kRequestHeadersMax; ++i) {
    absl::StrAppend(&many, "X-", i, ": y\r\n");
  }
  EXPECT_FALSE(ParseRequestHead(absl::StrCat(many, "\r\n")).ok());
}

TEST(CheckAccess, HealthzIsOpenAndTheRestNeedsTheToken) {
  EXPECT_EQ(Status("GET /healthz", ""), 200);
  EXPECT_EQ(Status("GET /queue", kHost), 401);
  EXPECT_EQ(Status("GET /queue", kHost + kBearer), 200);
  EXPECT_EQ(Status("DELETE /queue/X", kHost + kBearer), 200);
  EXPECT_EQ(Status("GET /queue", kHost + "Authorization: Bearer " + std::string(64, 'b') + "\r\n"),
            401);
  EXPECT_EQ(Status("GET /queue", kHost + "Authorization: Bearer " + std::string(63, 'a') + "\r\n"),
            401);
  EXPECT_EQ(Status("GET /queue", kHost + "Authorization: Basic YTph\r\n"), 401);
  EXPECT_EQ(Status("GET /queue", kHost + "Cookie: token=" + std::string(64, 'a') + "\r\n"), 401);
}

TEST(CheckAccess, TheMetricsTokenReadsMetricsOnly) {
  std::string metrics = absl::StrCat("Authorization: Bearer ", std::string(40, 'm'), "\r\n");
  EXPECT_EQ(Status("GET /metrics", kHost), 401);
  EXPECT_EQ(Status("GET /metrics", kHost + metrics), 200);
  EXPECT_EQ(Status("GET /metrics", kHost + kBearer), 200);
  EXPECT_EQ(Status("GET /queue", kHost + metrics), 403);
  AccessKeys open = Keys();
  open.metrics_open = true;
  EXPECT_EQ(Status("GET /metrics", kHost, Peer::kTcp, open), 200);
  EXPECT_EQ(Status("GET /queue", kHost, Peer::kTcp, open), 401);
  AccessKeys none = Keys();
  none.metrics_token = "";
  EXPECT_EQ(Status("GET /metrics", kHost + "Authorization: Bearer \r\n", Peer::kTcp, none), 401);
}

TEST(CheckAccess, HostMustNameThisListener) {
  for (absl::string_view host : {"127.0.0.1:9587", "127.0.0.1", "localhost:9587", "LOCALHOST",
                                 "127.9.9.9:1", "[::1]:9587", "[::1]"}) {
    EXPECT_EQ(Status("GET /queue", absl::StrCat("Host: ", host, "\r\n", kBearer)), 200) << host;
  }
  for (absl::string_view host : {"rebind.evil.example:9587", "10.0.0.1:9587", "", "[::2]:9587",
                                 "[::1", "localhost.evil.example", "127.0.0.1.evil.example"}) {
    EXPECT_EQ(Status("GET /queue", absl::StrCat("Host: ", host, "\r\n", kBearer)), 421) << host;
  }
  EXPECT_EQ(Status("GET /queue", kBearer), 421);  // none at all
  // The unix socket has no Host to speak of; chutectl sends localhost anyway.
  EXPECT_EQ(Status("GET /queue", "", Peer::kLocalUser), 200);
}

TEST(CheckAccess, ABrowsersCrossSiteRequestIsRefusedWhateverItCarries) {
  for (absl::string_view field :
       {"Origin: https://evil.example", "Origin: null", "Origin: http://127.0.0.1.evil.example",
        "Origin: https://127.0.0.1:9587", "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-site"}) {
    EXPECT_EQ(Status("POST /queue/X/hold", absl::StrCat(kHost, kBearer, field, "\r\n")), 403)
        << field;
    EXPECT_EQ(Status("POST /queue/X/hold", absl::StrCat(field, "\r\n"), Peer::kLocalUser), 403)
        << field;
  }
  EXPECT_EQ(
      Status("POST /queue/X/hold",
             kHost + kBearer + "Origin: http://127.0.0.1:9587\r\nSec-Fetch-Site: same-origin\r\n"),
      200);
  EXPECT_EQ(Status("GET /usage", kHost + kBearer + "Sec-Fetch-Site: none\r\n"), 200);
}

TEST(CheckAccess, ATicketOpensTheUsagePageForItsLifeOnly) {
  std::string ticket = MakeTicket(Keys().admin_token, kNow + kTicketLifetime);
  EXPECT_EQ(Status(absl::StrCat("GET /usage?days=7&ticket=", ticket), kHost), 200);
  EXPECT_EQ(Status(absl::StrCat("GET /usage?ticket=", ticket, "&days=7"), kHost), 200);
  EXPECT_EQ(Status(absl::StrCat("GET /queue?ticket=", ticket), kHost), 401);
  EXPECT_EQ(Status(absl::StrCat("POST /usage?ticket=", ticket), kHost), 401);
  // Expired, too long-lived, forged, under another token.
  std::string old = MakeTicket(Keys().admin_token, kNow - absl::Seconds(1));
  EXPECT_EQ(Status(absl::StrCat("GET /usage?ticket=", old), kHost), 401);
  std::string forever = MakeTicket(Keys().admin_token, kNow + absl::Hours(24));
  EXPECT_EQ(Status(absl::StrCat("GET /usage?ticket=", forever), kHost), 401);
  std::string other = MakeTicket(std::string(64, 'z'), kNow + absl::Minutes(5));
  EXPECT_EQ(Status(absl::StrCat("GET /usage?ticket=", other), kHost), 401);
  std::string moved =
      absl::StrCat(absl::ToUnixSeconds(kNow) + 600, ticket.substr(ticket.find('.')));
  EXPECT_EQ(Status(absl::StrCat("GET /usage?ticket=", moved), kHost), 401);
  EXPECT_EQ(Status("GET /usage?ticket=garbage", kHost), 401);
}

TEST(NewToken, Is64HexDigitsAndDifferentEachTime) {
  std::string a = NewToken();
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, NewToken());
}

}  // namespace
}  // namespace chute::admin
