// delivery_test.cc: unit tests for added headers, the header scanner and Maildir delivery.

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/time/clock.h"
#include "delivery/maildir.h"

namespace chute::delivery {
namespace {

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
