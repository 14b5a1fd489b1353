#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/synchronization/notification.h"
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
  AppendWithoutField(
      "From: a\r\nreply-to: x@y,\r\n\tz@w\r\nSubject: s\r\nReply-To : q\r\n\r\n", "Reply-To",
      &out);
  EXPECT_EQ(out, "From: a\r\nSubject: s\r\n\r\n");
}

TEST(AddedHeadersTest, ReceivedAlwaysDateAndMessageIdWhenMissing) {
  HeaderScanner scanner;
  scanner.Feed("Subject: x\r\n\r\n");
  TraceInfo trace{"client.test", "192.0.2.1", "relay.test", "ESMTP", "ABC123", "bob@x.test",
                  absl::FromUnixSeconds(1795737361)};
  std::string out;
  AppendAddedHeaders(trace, scanner, &out);
  EXPECT_EQ(out,
            "Received: from client.test ([192.0.2.1])\r\n\tby relay.test (chute) with ESMTP id "
            "ABC123\r\n\tfor <bob@x.test>; Thu, 26 Nov 2026 23:56:01 +0000\r\n"
            "Date: Thu, 26 Nov 2026 23:56:01 +0000\r\nMessage-ID: <ABC123@relay.test>\r\n");
}

TEST(MaildirPathTest, LocalPartsCannotEscapeTheRoot) {
  EXPECT_EQ(MaildirPath("/m", {"x.test", "Bob"}), "/m/x.test/Bob");
  EXPECT_EQ(MaildirPath("/m", {"x.test", "a/b"}), "/m/x.test/a%2Fb");
  EXPECT_EQ(MaildirPath("/m", {"x.test", ".."}), "/m/x.test/%2E.");
  EXPECT_EQ(MaildirPath("/m", {"x.test", "\"../x\""}), "/m/x.test/\"..%2Fx\"");
  EXPECT_EQ(MaildirPath("/m", {"x.test", "100%"}), "/m/x.test/100%25");
}

class Sink : public CompletionSink {
 public:
  void OnDelivered(std::unique_ptr<Job> job) override {
    result = job->result;
    done.Notify();
  }
  absl::Notification done;
  absl::Status result;
};

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

TEST(MaildirDeliveryTest, WritesEachRecipientOnceAndIdempotently) {
  char root[] = "/tmp/chute-maildir-XXXXXX";
  ASSERT_NE(mkdtemp(root), nullptr);
  MaildirDelivery delivery(root, "relay.test", 2, 8);
  delivery.Start();
  std::string head = "Received: x\r\n";
  std::string body = "Subject: t\r\n\r\nhello\r\n";
  for (int attempt = 0; attempt < 2; ++attempt) {  // the same job twice: still one copy each
    auto job = std::make_unique<Job>();
    job->id = "00AA";
    job->content = {iovec{head.data(), head.size()}, iovec{body.data(), body.size()}};
    job->recipients = {{"x.test", "bob"}, {"y.test", "Carol"}};
    Sink sink;
    ASSERT_TRUE(delivery.Submit(std::move(job), &sink));
    sink.done.WaitForNotification();
    ASSERT_TRUE(sink.result.ok()) << sink.result;
  }
  delivery.Stop();
  std::string bob = std::string(root) + "/x.test/bob";
  std::vector<std::string> names = List(bob + "/new");
  ASSERT_LE(names.size(), 2u);  // the name carries the second: a retry in another second may add one
  ASSERT_GE(names.size(), 1u);
  EXPECT_TRUE(List(bob + "/tmp").empty());
  EXPECT_TRUE(List(bob + "/cur").empty());
  std::ifstream file(bob + "/new/" + names[0]);
  std::stringstream content;
  content << file.rdbuf();
  EXPECT_EQ(content.str(), head + body);
  EXPECT_EQ(List(std::string(root) + "/y.test/Carol/new").size(), names.size());
  std::string command = std::string("rm -rf '") + root + "'";
  ASSERT_EQ(std::system(command.c_str()), 0);
}

TEST(MaildirDeliveryTest, UnwritableRootFailsTheJob) {
  MaildirDelivery delivery("/proc/chute-cannot-write-here", "relay.test", 1, 4);
  delivery.Start();
  std::string body = "x\r\n";
  auto job = std::make_unique<Job>();
  job->id = "01";
  job->content = {iovec{body.data(), body.size()}};
  job->recipients = {{"x.test", "bob"}};
  Sink sink;
  ASSERT_TRUE(delivery.Submit(std::move(job), &sink));
  sink.done.WaitForNotification();
  EXPECT_FALSE(sink.result.ok());
  delivery.Stop();
  auto late = std::make_unique<Job>();
  EXPECT_FALSE(delivery.Submit(std::move(late), &sink));  // stopped: refused, not lost silently
}

}  // namespace
}  // namespace chute::delivery
