// delivery_test.cc: unit tests for added headers, the header scanner and Maildir delivery.

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "delivery/maildir.h"
#include "io/loop.h"

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

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream content;
  content << in.rdbuf();
  return content.str();
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
  DeliverNow(backend, {&m});
  ASSERT_EQ(m.results.size(), 2u);
  EXPECT_EQ(m.results[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(m.results[1].outcome, Outcome::kDelivered);
  EXPECT_EQ(List(root + "/example.test/bob/new").size(), 1u);
  EXPECT_EQ(List(root + "/example.test/carol/new").size(), 1u);
  EXPECT_TRUE(List(root + "/example.test/bob/tmp").empty());
  // The same message again (a retry) renames over the same name: still one copy.
  DeliverNow(backend, {&m});
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
  DeliverNow(backend, {&m});
  std::string dir = root + "/example.test/bob";
  std::string name = List(dir + "/new")[0];
  ASSERT_EQ(rename((dir + "/new/" + name).c_str(), (dir + "/cur/" + name + ":2,S").c_str()), 0);
  m.replayed = true;
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[0].outcome, Outcome::kDelivered);
  EXPECT_TRUE(List(dir + "/new").empty());
  EXPECT_EQ(List(dir + "/cur").size(), 1u);
}

TEST(MaildirBackendTest, MailboxRemovedWhileRunningIsMadeAgain) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID3", {"bob@example.test"});
  DeliverNow(backend, {&m});
  ASSERT_EQ(system(("rm -rf " + root + "/example.test/bob").c_str()), 0);
  OutboundMessage again = Sample("ID4", {"bob@example.test"});
  DeliverNow(backend, {&again});
  EXPECT_EQ(again.results[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(List(root + "/example.test/bob/new").size(), 1u);
}

TEST(MaildirBackendTest, MoreMailboxesThanStayOpenAreAllDeliveredAndNoDescriptorLeaks) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  std::vector<std::string> recipients;
  for (size_t i = 0; i < 3 * kMailboxesOpenMax + 1; ++i) {
    recipients.push_back("user" + std::to_string(i) + "@example.test");
  }
  OutboundMessage first = Sample("ID10", recipients);
  std::reverse(recipients.begin(), recipients.end());  // mailboxes let go, then needed again
  OutboundMessage second = Sample("ID11", recipients);
  ASSERT_TRUE(io::Loop::ForThisThread().ok());  // the thread's loop (ring, eventfd) stays
  size_t descriptors = List("/proc/self/fd").size();
  DeliverNow(backend, {&first, &second});
  EXPECT_EQ(List("/proc/self/fd").size(), descriptors);
  for (const OutboundMessage* m : {&first, &second}) {
    for (const RecipientResult& r : m->results) {
      EXPECT_EQ(r.outcome, Outcome::kDelivered) << r.reply;
    }
  }
  for (const std::string& r : recipients) {
    EXPECT_EQ(List(MaildirPath(root, r) + "/new").size(), 2u) << r;
  }
}

// CopiesOf: (inode, link count) of every file in the new/ folders of `addresses`.
std::vector<std::pair<ino_t, nlink_t>> CopiesOf(const std::string& root,
                                                const std::vector<std::string>& addresses) {
  std::vector<std::pair<ino_t, nlink_t>> out;
  for (const std::string& address : addresses) {
    std::string dir = MaildirPath(root, address) + "/new";
    for (const std::string& name : List(dir)) {
      struct stat st {};
      EXPECT_EQ(lstat((dir + "/" + name).c_str(), &st), 0);
      out.emplace_back(st.st_ino, st.st_nlink);
    }
  }
  return out;
}

TEST(MaildirBackendTest, ACopyPerRecipientIsOneFileHardLinked) {
  // Was: a file per recipient (a 2 MB message to 50 recipients took 101 MB).
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  std::vector<std::string> to = {"a@example.test", "b@example.test", "c@other.test",
                                 "A@example.test"};  // A@ and a@ share a mailbox
  OutboundMessage m = Sample("ID12", to);
  OutboundMessage other = Sample("ID13", {"a@example.test", "b@example.test"});
  other.content = "Subject: other\r\n\r\nbye\r\n";
  DeliverNow(backend, {&m, &other});
  for (const RecipientResult& r : m.results) {
    EXPECT_EQ(r.reply, "250 2.0.0 delivered to maildir");
  }
  std::vector<std::pair<ino_t, nlink_t>> copies =
      CopiesOf(root, {"b@example.test", "c@other.test"});
  std::vector<std::pair<ino_t, nlink_t>> in_a = CopiesOf(root, {"a@example.test"});
  ASSERT_EQ(in_a.size(), 3u);  // m twice (two recipients, one mailbox) and `other` once
  copies.insert(copies.end(), in_a.begin(), in_a.end());
  std::map<ino_t, nlink_t> inodes(copies.begin(), copies.end());
  ASSERT_EQ(inodes.size(), 2u);  // one file per message
  std::vector<nlink_t> links;
  for (const auto& [inode, count] : inodes) {
    links.push_back(count);
  }
  std::sort(links.begin(), links.end());
  EXPECT_EQ(links, (std::vector<nlink_t>{2, 4}));
  for (const char* r : {"b@example.test", "c@other.test"}) {
    std::string dir = MaildirPath(root, r);
    std::vector<std::string> names = List(dir + "/new");
    std::sort(names.begin(), names.end());
    EXPECT_EQ(ReadAll(dir + "/new/" + names[0]), m.content);
    EXPECT_TRUE(List(dir + "/tmp").empty());
  }
  // A retry renames over the same names: still one file for m.
  DeliverNow(backend, {&m});
  EXPECT_EQ(List(MaildirPath(root, "b@example.test") + "/new").size(), 2u);
}

TEST(MaildirBackendTest, ReplayLinksOnlyTheCopiesNotYetInTheMailbox) {
  std::string root = TempRoot() + "/mail";
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID14", {"a@example.test", "b@example.test", "c@example.test"});
  DeliverNow(backend, {&m});
  // b's copy was read (moved to cur/), c's lost (as if the crash came before its rename).
  std::string b = MaildirPath(root, "b@example.test");
  std::string name_b = List(b + "/new")[0];
  ASSERT_EQ(rename((b + "/new/" + name_b).c_str(), (b + "/cur/" + name_b + ":2,S").c_str()), 0);
  std::string c = MaildirPath(root, "c@example.test");
  ASSERT_EQ(unlink((c + "/new/" + List(c + "/new")[0]).c_str()), 0);
  m.replayed = true;
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[0].reply, "250 2.0.0 already in the mailbox");
  EXPECT_EQ(m.results[1].reply, "250 2.0.0 already in the mailbox");
  EXPECT_EQ(m.results[2].reply, "250 2.0.0 delivered to maildir");
  EXPECT_TRUE(List(b + "/new").empty());
  EXPECT_EQ(ReadAll(c + "/new/" + List(c + "/new")[0]), m.content);
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

// Outside: a folder beside the Maildir root holding one file, `precious`, with "keep me".
std::string Outside(const std::string& base) {
  std::string outside = base + "/outside";
  EXPECT_EQ(mkdir(outside.c_str(), 0700), 0);
  std::ofstream(outside + "/precious") << "keep me";
  return outside;
}

TEST(MaildirSymlinkTest, CleanTmpDoesNotFollowLinkedFolders) {
  // tmp/ (and a mailbox, and a domain) planted as links to a folder outside the root, which
  // holds a file named like a crash leftover of ours and an old one: the clean-up used to
  // follow tmp/ and delete them.
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  std::string own = "1790000000.6613C92C8C6B7000000001R0.relay.test";
  std::ofstream(outside + "/" + own) << "x";
  ASSERT_EQ(system(("mkdir -p " + root + "/example.test/bob").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/example.test/bob/tmp").c_str()), 0);
  ASSERT_EQ(
      system(
          ("mkdir -p " + base + "/box/tmp && cp " + outside + "/* " + base + "/box/tmp").c_str()),
      0);
  ASSERT_EQ(symlink((base + "/box").c_str(), (root + "/example.test/carol").c_str()), 0);
  ASSERT_EQ(symlink((base + "/box").c_str(), (root + "/linked.test").c_str()), 0);
  EXPECT_EQ(CleanMaildirTmp(root, "relay.test", absl::Now() + absl::Hours(37)), 0u);
  EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
  EXPECT_EQ(ReadAll(outside + "/" + own), "x");
  EXPECT_EQ(List(base + "/box/tmp").size(), 2u);
}

TEST(MaildirSymlinkTest, CleanTmpRemovesALinkInTmpNotItsTarget) {
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  std::string tmp = root + "/example.test/bob/tmp";
  ASSERT_EQ(system(("mkdir -p " + tmp).c_str()), 0);
  ASSERT_EQ(symlink((outside + "/precious").c_str(),
                    (tmp + "/1790000000.6613C92C8C6B7000000001R0.relay.test").c_str()),
            0);
  EXPECT_EQ(CleanMaildirTmp(root, "relay.test", absl::Now() + absl::Hours(37)), 0u);
  EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
}

TEST(MaildirSymlinkTest, LinkedFoldersFailTheCopyWithoutWritingOutside) {
  for (const char* folder : {"tmp", "new", "cur"}) {
    SCOPED_TRACE(folder);
    std::string base = TempRoot();
    std::string root = base + "/mail";
    std::string outside = Outside(base);
    std::string box = root + "/example.test/bob";
    ASSERT_EQ(system(("mkdir -p " + box + "/tmp " + box + "/new " + box + "/cur").c_str()), 0);
    ASSERT_EQ(rmdir((box + "/" + folder).c_str()), 0);
    ASSERT_EQ(symlink(outside.c_str(), (box + "/" + folder).c_str()), 0);
    MaildirBackend backend(root, "relay.test");
    OutboundMessage m = Sample("ID6", {"bob@example.test", "carol@example.test"});
    DeliverNow(backend, {&m});
    ASSERT_EQ(m.results.size(), 2u);
    EXPECT_EQ(m.results[0].outcome, Outcome::kTransient);
    EXPECT_EQ(m.results[0].reply, absl::StrCat("451 4.3.0 maildir: open example.test/bob/", folder,
                                               ": Too many levels of symbolic links"));
    EXPECT_EQ(m.results[1].outcome, Outcome::kDelivered);  // its neighbour is not affected
    EXPECT_EQ(List(outside), std::vector<std::string>{"precious"});
    EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
  }
}

TEST(MaildirSymlinkTest, LinkedDomainOrMailboxFailsTheCopy) {
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  ASSERT_EQ(system(("mkdir -p " + root + "/example.test").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/linked.test").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/example.test/bob").c_str()), 0);
  MaildirBackend backend(root, "relay.test");
  OutboundMessage m = Sample("ID7", {"bob@example.test", "ann@linked.test"});
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[0].outcome, Outcome::kTransient);
  EXPECT_NE(m.results[0].reply.find("open example.test/bob: Too many levels"), std::string::npos);
  EXPECT_EQ(m.results[1].outcome, Outcome::kTransient);
  EXPECT_NE(m.results[1].reply.find("open linked.test: Too many levels"), std::string::npos);
  EXPECT_EQ(List(outside), std::vector<std::string>{"precious"});
}

TEST(MaildirSymlinkTest, ALinkPlantedAtTheCopysNameIsReplacedNotWrittenThrough) {
  // The name of a copy is predictable (the queue id is in Received:): a link planted in tmp/
  // at that name used to be opened with O_TRUNC, writing the message over its target.
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  std::string box = root + "/example.test/bob";
  ASSERT_EQ(system(("mkdir -p " + box + "/tmp " + box + "/new " + box + "/cur").c_str()), 0);
  OutboundMessage m = Sample("ID8", {"bob@example.test"});
  std::string name = "1790000000.ID8R0.relay.test";
  ASSERT_EQ(symlink((outside + "/precious").c_str(), (box + "/tmp/" + name).c_str()), 0);
  MaildirBackend backend(root, "relay.test");
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[0].outcome, Outcome::kDelivered);
  EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
  struct stat st {};
  ASSERT_EQ(lstat((box + "/new/" + name).c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(ReadAll(box + "/new/" + name), m.content);
}

TEST(MaildirSymlinkTest, ALinkPlantedAtAHardLinkedCopysNameIsReplaced) {
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  std::string box = root + "/example.test/bob";
  ASSERT_EQ(system(("mkdir -p " + box + "/tmp " + box + "/new " + box + "/cur").c_str()), 0);
  OutboundMessage m = Sample("ID15", {"ann@example.test", "bob@example.test"});
  std::string name = "1790000000.ID15R1.relay.test";  // bob's: a link to ann's copy
  ASSERT_EQ(symlink((outside + "/precious").c_str(), (box + "/tmp/" + name).c_str()), 0);
  MaildirBackend backend(root, "relay.test");
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[1].outcome, Outcome::kDelivered);
  EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
  EXPECT_EQ(ReadAll(box + "/new/" + name), m.content);
}

TEST(MaildirSymlinkTest, ReplayDoesNotTakeALinkInNewForTheCopy) {
  std::string base = TempRoot();
  std::string root = base + "/mail";
  std::string outside = Outside(base);
  std::string box = root + "/example.test/bob";
  ASSERT_EQ(system(("mkdir -p " + box + "/tmp " + box + "/new " + box + "/cur").c_str()), 0);
  OutboundMessage m = Sample("ID9", {"bob@example.test"});
  m.replayed = true;
  std::string name = "1790000000.ID9R0.relay.test";
  ASSERT_EQ(symlink((outside + "/precious").c_str(), (box + "/new/" + name).c_str()), 0);
  MaildirBackend backend(root, "relay.test");
  DeliverNow(backend, {&m});
  EXPECT_EQ(m.results[0].reply, "250 2.0.0 delivered to maildir");  // not "already there"
  EXPECT_EQ(ReadAll(box + "/new/" + name), m.content);
  EXPECT_EQ(ReadAll(outside + "/precious"), "keep me");
}

TEST(MaildirBackendTest, UnwritableRootIsATransientFailure) {
  MaildirBackend backend("/proc/chute-cannot-write-here", "relay.test");
  OutboundMessage m = Sample("ID5", {"bob@example.test"});
  DeliverNow(backend, {&m});
  ASSERT_EQ(m.results.size(), 1u);
  EXPECT_EQ(m.results[0].outcome, Outcome::kTransient);
  EXPECT_NE(m.results[0].reply.find("451 4.3.0"), std::string::npos);
}

}  // namespace
}  // namespace chute::delivery
