// file_test.cc: WatchedFile notices a file deleted or replaced under it, and only then.

#include "io/file.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace chute::io {
namespace {

class WatchedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/chute-file-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/db";
    Write(path_);
  }
  void TearDown() override {
    unlink(path_.c_str());
    unlink((path_ + ".new").c_str());
    rmdir(dir_.c_str());
  }
  static void Write(const std::string& path) { std::ofstream(path) << "x"; }
  static ino_t Inode(const std::string& path) {
    struct stat st {};
    return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(WatchedFileTest, TheSameFileIsNotReopened) {
  WatchedFile file(path_);
  int calls = 0;
  absl::StatusOr<bool> reopened = file.ReopenIfReplaced([&](const WatchedFile::Found&) {
    ++calls;
    return absl::OkStatus();
  });
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE(*reopened);
  EXPECT_EQ(calls, 0);
}

TEST_F(WatchedFileTest, AReplacedFileIsReopenedOnceAndRemembered) {
  WatchedFile file(path_);
  ino_t was = Inode(path_);
  Write(path_ + ".new");
  ASSERT_EQ(rename((path_ + ".new").c_str(), path_.c_str()), 0);  // a restore from backup
  WatchedFile::Found seen;
  auto reopen = [&](const WatchedFile::Found& found) {
    seen = found;
    return absl::OkStatus();
  };
  absl::StatusOr<bool> reopened = file.ReopenIfReplaced(reopen);
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE(*reopened);
  EXPECT_EQ(seen.error, 0);
  EXPECT_EQ(seen.was, was);
  EXPECT_EQ(seen.inode, Inode(path_));
  reopened = file.ReopenIfReplaced(reopen);
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE(*reopened);  // the new file is the one open now
}

TEST_F(WatchedFileTest, AMissingFileIsReportedAndAFailedReopenIsTriedAgain) {
  WatchedFile file(path_);
  ASSERT_EQ(unlink(path_.c_str()), 0);
  WatchedFile::Found seen;
  absl::StatusOr<bool> reopened = file.ReopenIfReplaced([&](const WatchedFile::Found& found) {
    seen = found;
    return absl::NotFoundError("gone");
  });
  EXPECT_EQ(reopened.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(seen.error, ENOENT);
  // Made again (as the trace does): reopened, and the made file is the one remembered.
  reopened = file.ReopenIfReplaced([&](const WatchedFile::Found&) {
    Write(path_);
    return absl::OkStatus();
  });
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE(*reopened);
  reopened = file.ReopenIfReplaced([](const WatchedFile::Found&) { return absl::OkStatus(); });
  ASSERT_TRUE(reopened.ok());
  EXPECT_FALSE(*reopened);
}

}  // namespace
}  // namespace chute::io
