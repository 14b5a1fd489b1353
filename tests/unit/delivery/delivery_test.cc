// delivery_test.cc: unit tests for added headers, the header scanner and Maildir delivery.

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"
#include "delivery/maildir.h"
#include "delivery/message_headers.h"

namespace chute::delivery {
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

TEST(MaildirPathTest, LocalPartsCannotEscapeTheRoot) {
  EXPECT_EQ(MaildirPath("/m", "bob@x.test"), "/m/x.test/bob");
  EXPECT_EQ(MaildirPath("/m", "a/b@x.test"), "/m/x.test/a%2Fb");
  EXPECT_EQ(MaildirPath("/m", "..@x.test"), "/m/x.test/%2E.");
  EXPECT_EQ(MaildirPath("/m", "\"../x\"@x.test"), "/m/x.test/\"..%2Fx\"");
  EXPECT_EQ(MaildirPath("/m", "100%@x.test"), "/m/x.test/100%25");
}

TEST(MaildirPathTest, MailboxFoldersAreCaseInsensitive) {
  EXPECT_EQ(MaildirPath("/m", "Alice@Example.TEST"), MaildirPath("/m", "alice@example.test"));
}

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') {
        names.push_back(e->d_name);
      }
    }
    closedir(d);
  }
  return names;
}

std::string TempRoot() {
  char tmpl[] = "/tmp/chute-maildir-XXXXXX";
  return std::string(mkdtemp(tmpl));
}

OutboundMessage Sample(const std::string& id, std::vector<std::string> recipients) {
  OutboundMessage m;
  m.id = id;
  m.received_unix_s = 1790000000;
  m.sender = "app@example.test";
  for (size_t i = 0; i < recipients.size(); ++i) {
    m.recipient_indexes.push_back(static_cast<uint32_t>(i));
  }
  m.recipients = std::move(recipients);
  m.content = "Subject: t\r\n\r\nhello\r\n";
  return m;
}

TEST(MaildirBackendTest, WritesEachRecipientOnceAndIdempotently) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID1", {"bob@example.test", "Carol@Example.test"});
  backend.Deliver({&m});
  ASSERT_EQ(m.results.size(), 2u);
  EXPECT_EQ(m.results[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(m.results[1].outcome, Outcome::kDelivered);
  EXPECT_EQ(List(root + "/example.test/bob/new").size(), 1u);
  EXPECT_EQ(List(root + "/example.test/carol/new").size(), 1u);
  EXPECT_TRUE(List(root + "/example.test/bob/tmp").empty());
  // The same message again (a retry) renames over the same name: still one copy.
  backend.Deliver({&m});
  EXPECT_EQ(List(root + "/example.test/bob/new").size(), 1u);
  std::ifstream in(root + "/example.test/bob/new/" + List(root + "/example.test/bob/new")[0]);
  std::stringstream content;
  content << in.rdbuf();
  EXPECT_EQ(content.str(), m.content);
}

TEST(MaildirBackendTest, ReplayDoesNotDuplicateWhatAReaderMovedToCur) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID2", {"bob@example.test"});
  backend.Deliver({&m});
  std::string dir = root + "/example.test/bob";
  std::string name = List(dir + "/new")[0];
  ASSERT_EQ(rename((dir + "/new/" + name).c_str(), (dir + "/cur/" + name + ":2,S").c_str()), 0);
  m.replayed = true;
  backend.Deliver({&m});
  EXPECT_EQ(m.results[0].outcome, Outcome::kDelivered);
  EXPECT_TRUE(List(dir + "/new").empty());
  EXPECT_EQ(List(dir + "/cur").size(), 1u);
}

TEST(MaildirBackendTest, MailboxRemovedWhileRunningIsMadeAgain) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID3", {"bob@example.test"});
  backend.Deliver({&m});
  ASSERT_EQ(system(("rm -rf " + root + "/example.test/bob").c_str()), 0);
  OutboundMessage again = Sample("ID4", {"bob@example.test"});
  backend.Deliver({&again});
  EXPECT_EQ(again.results[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(List(root + "/example.test/bob/new").size(), 1u);
}

TEST(MaildirBackendTest, CleanTmpRemovesOwnLeftoversAndOldForeignFiles) {
  std::string root = TempRoot() + "/mail";
  std::string tmp = root + "/example.test/bob/tmp";
  ASSERT_EQ(system(("mkdir -p " + tmp).c_str()), 0);
  auto touch = [&](const std::string& name) { std::ofstream(tmp + "/" + name) << "x"; };
  touch("1790000000.6613C92C8C6B7000000001R0.relay.test");  // ours: a crash leftover
  touch("1790000000.6613C92C8C6B7000000001R0.other.test");  // another host's: young
  touch("1790000000.M1P2.mua");                             // a mail reader's: young
  EXPECT_EQ(CleanMaildirTmp(root, "relay.test", absl::Now()), 1u);
  EXPECT_EQ(List(tmp).size(), 2u);
  EXPECT_EQ(CleanMaildirTmp(root, "relay.test", absl::Now() + absl::Hours(37)), 2u);
  EXPECT_TRUE(List(tmp).empty());
}

TEST(MaildirBackendTest, UnwritableRootIsATransientFailure) {
  MaildirBackend backend("/proc/chute-cannot-write-here", "relay.test");
  OutboundMessage m = Sample("ID5", {"bob@example.test"});
  backend.Deliver({&m});
  ASSERT_EQ(m.results.size(), 1u);
  EXPECT_EQ(m.results[0].outcome, Outcome::kTransient);
  EXPECT_NE(m.results[0].reply.find("451 4.3.0"), std::string::npos);
}

}  // namespace
}  // namespace chute::delivery
