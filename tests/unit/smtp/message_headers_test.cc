// message_headers_test.cc: the header scanner and the headers chute adds (Received, Date,
// Message-ID, Reply-To).
#include "smtp/message_headers.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/time/clock.h"

namespace chute::smtp {
namespace {

TEST(HeaderScannerTest, FindsFieldsAcrossSlicesAndStopsAtTheBody) {
  std::string message =
      "From: a@b\r\nDATE: now\r\nSubject: x\r\n folded Message-ID: no\r\n\r\nMessage-ID: body\r\n";
  for (size_t piece : {1, 2, 5, 100}) {
    HeaderScanner scanner;
    for (size_t pos = 0; pos < message.size(); pos += piece) {
      scanner.Feed(absl::string_view(message).substr(pos, piece));
    }
    EXPECT_TRUE(scanner.has_date()) << piece;
    EXPECT_FALSE(scanner.has_message_id()) << piece;  // folded text and the body do not count
    EXPECT_TRUE(scanner.header_done());
  }
}

TEST(HeaderScannerTest, FeedSaysWhereTheHeaderEnds) {
  HeaderScanner scanner;
  EXPECT_EQ(scanner.Feed("A: 1\r\nB: 2\r"), 11u);
  EXPECT_EQ(scanner.Feed("\n\r"), 2u);
  EXPECT_FALSE(scanner.header_done());
  EXPECT_EQ(scanner.Feed("\nbody\r\n"), 1u);
  EXPECT_TRUE(scanner.header_done());
  EXPECT_EQ(scanner.Feed("more"), 0u);
}

TEST(AppendWithoutFieldTest, DropsEveryInstanceWithItsFoldedLines) {
  std::string out;
  AppendWithoutField("From: a\r\nreply-to: x@y,\r\n\tz@w\r\nSubject: s\r\nReply-To : q\r\n\r\n",
                     "Reply-To", &out);
  EXPECT_EQ(out, "From: a\r\nSubject: s\r\n\r\n");
}

TEST(AddedHeadersTest, ReceivedAlwaysDateAndMessageIdWhenMissing) {
  HeaderScanner scanner;
  scanner.Feed("Subject: x\r\n\r\n");
  TraceInfo trace{"client.test",
                  "192.0.2.1",
                  "relay.test",
                  "ESMTP",
                  "ABC123",
                  "bob@x.test",
                  absl::FromUnixSeconds(1795737361)};
  std::string out;
  AppendAddedHeaders(trace, scanner, &out);
  EXPECT_EQ(out,
            "Received: from client.test ([192.0.2.1])\r\n\tby relay.test (chute) with ESMTP id "
            "ABC123\r\n\tfor <bob@x.test>; Thu, 26 Nov 2026 23:56:01 +0000\r\n"
            "Date: Thu, 26 Nov 2026 23:56:01 +0000\r\nMessage-ID: <ABC123@relay.test>\r\n");
}

TEST(HeaderScannerTest, CapturesTheFromFieldUnfoldedAcrossSlices) {
  HeaderScanner scanner;
  std::string header =
      "Subject: x\r\nFrom: \"App, Inc\" \r\n <app@example.test>\r\nTo: b@c\r\n\r\n";
  for (char c : header) {
    scanner.Feed(absl::string_view(&c, 1));
  }
  EXPECT_EQ(scanner.from_count(), 1);
  EXPECT_EQ(scanner.from_value(), " \"App, Inc\"  <app@example.test>");
  EXPECT_EQ(FromAddresses(scanner.from_value()), std::vector<std::string>{"app@example.test"});
}

TEST(FromAddressesTest, MailboxListForms) {
  using V = std::vector<std::string>;
  EXPECT_EQ(FromAddresses(" a@b.test"), V{"a@b.test"});
  EXPECT_EQ(FromAddresses(" Name <a@b.test>"), V{"a@b.test"});
  EXPECT_EQ(FromAddresses(" a@b.test (the app)"), V{"a@b.test"});
  EXPECT_EQ(FromAddresses(" \"x <evil@o.test>, y\" <a@b.test>"), V{"a@b.test"});
  EXPECT_EQ(FromAddresses(" a@b.test, Other <c@d.test>"), (V{"a@b.test", "c@d.test"}));
  EXPECT_EQ(FromAddresses(" team: a@b.test, c@d.test;"), (V{"a@b.test", "c@d.test"}));
  EXPECT_EQ(FromAddresses("  "), V{});
}

TEST(ReceivedProtocolTest, Rfc3848AndRfc6531Names) {
  EXPECT_EQ(ReceivedProtocol(false, false, false), "ESMTP");
  EXPECT_EQ(ReceivedProtocol(false, true, true), "ESMTPSA");
  EXPECT_EQ(ReceivedProtocol(false, false, true), "ESMTPA");
  EXPECT_EQ(ReceivedProtocol(true, false, true), "UTF8SMTPA");
  EXPECT_EQ(ReceivedProtocol(true, true, true), "UTF8SMTPSA");
  EXPECT_EQ(ReceivedProtocol(true, true, false), "UTF8SMTPS");
}

}  // namespace
}  // namespace chute::smtp
