// Unit tests for the group committer: when a group is written (the adaptive wait), the SQE
// chain on a real io_uring, completions, failures, write planning and queue ids.

#include "spool/group_commit.h"

#include <unistd.h>

#include <deque>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "io/ring.h"
#include "spool/record.h"
#include "spool/spool.h"

namespace chute::spool {
namespace {

constexpr uint8_t kOp = 7;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/chute-group-commit-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

Envelope SampleEnvelope(const std::string& id) {
  Envelope e;
  e.id = id;
  e.received_unix_us = 1'790'000'000'000'000;
  e.tenant_id = 7;
  e.account_id = 42;
  e.client = "127.0.0.1";
  e.listener = "127.0.0.1:2525";
  e.sender = "app@example.test";
  e.recipients = {"ann@example.test"};
  return e;
}

// A committer over a fresh spool directory, with the bodies it stages kept alive.
class GroupCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> dir_fd = LockSpool(dir_.path());
    ASSERT_TRUE(dir_fd.ok());
    dir_fd_ = *dir_fd;
    committer_ = std::make_unique<GroupCommitter>(
        std::make_unique<SegmentWriter>(dir_.path(), dir_fd_, 0, 1, 1 << 20, &gauges_), kDelay,
        QueueIdMinter(1'790'000'000'000'000, 3));
    absl::StatusOr<std::unique_ptr<io::Ring>> ring = io::Ring::Create(64);
    if (!ring.ok()) {
      GTEST_SKIP() << "io_uring is not available: " << ring.status();
    }
    ring_ = *std::move(ring);
  }
  void TearDown() override {
    if (dir_fd_ >= 0) {
      close(dir_fd_);
    }
  }

  void StageOne(uint64_t cookie, absl::Time now) {
    bodies_.push_back("Subject: " + std::to_string(cookie) + "\r\n\r\nhello\r\n");
    iovec iov{bodies_.back().data(), bodies_.back().size()};
    absl::StatusOr<RecordPrefix> prefix =
        EncodeRecordPrefix(SampleEnvelope(committer_->NextQueueId()), "", {&iov, 1});
    ASSERT_TRUE(prefix.ok());
    committer_->Stage(*std::move(prefix), {&iov, 1}, iov.iov_len, cookie, now);
  }

  // RunChain: submits what Issue queued and hands every completion back until the group ends.
  GroupCommitter::Outcome RunChain() {
    GroupCommitter::Outcome outcome;
    bool done = false;
    while (!done) {
      EXPECT_GE(ring_->SubmitAndWait(1), 0);
      ring_->ForEachCqe([&](const io_uring_cqe& cqe) {
        EXPECT_EQ(io::UserDataOp(cqe.user_data), kOp);
        done =
            committer_->OnCompletion(io::UserDataCookie(cqe.user_data), cqe.res, &outcome) || done;
      });
    }
    return outcome;
  }

  static constexpr absl::Duration kDelay = absl::Microseconds(500);
  TempDir dir_;
  int dir_fd_ = -1;
  SpoolGauges gauges_;
  std::unique_ptr<GroupCommitter> committer_;
  std::unique_ptr<io::Ring> ring_;
  std::deque<std::string> bodies_;  // never moves what it holds
  const absl::Time t0_ = absl::FromUnixSeconds(1'790'000'000);
};

using Kind = GroupCommitter::Decision::Kind;

TEST_F(GroupCommitTest, NothingStagedNothingToDo) {
  EXPECT_EQ(committer_->Decide(t0_, 0, false).kind, Kind::kNothing);
}

TEST_F(GroupCommitTest, ALoneMessageIsWrittenAtOnce) {
  // Nothing else on the shard is receiving a message: waiting for company only adds latency.
  StageOne(1, t0_);
  EXPECT_EQ(committer_->Decide(t0_, 0, false).kind, Kind::kIssue);
}

TEST_F(GroupCommitTest, UnderLoadTheOldestWaitsAtMostTheDelay) {
  StageOne(1, t0_);
  GroupCommitter::Decision d = committer_->Decide(t0_ + absl::Microseconds(100), 3, false);
  EXPECT_EQ(d.kind, Kind::kWait);
  EXPECT_EQ(d.wait, absl::Microseconds(400));
  StageOne(2, t0_ + absl::Microseconds(200));  // a younger record does not restart the clock
  EXPECT_EQ(committer_->Decide(t0_ + absl::Microseconds(499), 3, false).kind, Kind::kWait);
  EXPECT_EQ(committer_->Decide(t0_ + kDelay, 3, false).kind, Kind::kIssue);
}

TEST_F(GroupCommitTest, StoppingWritesAtOnce) {
  StageOne(1, t0_);
  EXPECT_EQ(committer_->Decide(t0_, 5, true).kind, Kind::kIssue);
}

TEST_F(GroupCommitTest, AFullGroupIsWrittenAtOnce) {
  for (size_t i = 0; i < kGroupRecordsMax; ++i) {
    StageOne(i, t0_);
  }
  EXPECT_EQ(committer_->Decide(t0_, 5, false).kind, Kind::kIssue);
}

TEST_F(GroupCommitTest, ChainCommitsEveryStagedRecordAndTheStagedMeanwhileRideTheNext) {
  StageOne(1, t0_);
  StageOne(2, t0_);
  std::vector<uint64_t> failed;
  ASSERT_TRUE(committer_->Issue(*ring_, kOp, t0_, &failed).ok());
  EXPECT_TRUE(committer_->group_inflight());
  StageOne(3, t0_);  // staged while the group is in flight
  EXPECT_EQ(committer_->Decide(t0_ + absl::Seconds(1), 0, false).kind, Kind::kNothing);
  GroupCommitter::Outcome first = RunChain();
  ASSERT_TRUE(first.status.ok()) << first.status;
  ASSERT_EQ(first.committed.size(), 2u);
  EXPECT_EQ(first.committed[0].cookie, 1u);
  EXPECT_EQ(first.committed[1].cookie, 2u);
  EXPECT_TRUE(first.failed.empty());
  EXPECT_FALSE(committer_->group_inflight());
  absl::StatusOr<std::string> content = first.committed[1].ref.segment->Read(
      first.committed[1].ref.content_offset, first.committed[1].ref.content_bytes);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "Subject: 2\r\n\r\nhello\r\n");

  EXPECT_EQ(committer_->Decide(t0_, 0, false).kind, Kind::kIssue);
  ASSERT_TRUE(committer_->Issue(*ring_, kOp, t0_, &failed).ok());
  GroupCommitter::Outcome second = RunChain();
  ASSERT_EQ(second.committed.size(), 1u);
  EXPECT_EQ(second.committed[0].cookie, 3u);
  EXPECT_EQ(gauges_.messages.load(), 3);
  EXPECT_EQ(gauges_.groups.load(), 2u);
}

TEST_F(GroupCommitTest, AFailedCompletionFailsTheWholeGroup) {
  StageOne(1, t0_);
  StageOne(2, t0_);
  std::vector<uint64_t> failed;
  ASSERT_TRUE(committer_->Issue(*ring_, kOp, t0_, &failed).ok());
  // Hand the committer made-up completions instead of the ring's: a short write, then the
  // rest of the chain cancelled, as a broken link completes.
  GroupCommitter::Outcome outcome;
  EXPECT_FALSE(committer_->OnCompletion(0, 3, &outcome));
  EXPECT_FALSE(committer_->OnCompletion(1, -ECANCELED, &outcome));
  EXPECT_TRUE(committer_->OnCompletion(2, -ECANCELED, &outcome));  // the directory's fsync
  EXPECT_FALSE(outcome.status.ok());
  EXPECT_TRUE(outcome.committed.empty());
  EXPECT_EQ(outcome.failed, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(gauges_.group_failures.load(), 1u);
  // Drain the real completions so that the ring is left quiet.
  ring_->SubmitAndWait(0);
}

TEST(PlanWrites, SplitsAtTheIovLimitAndCoversEveryByte) {
  std::string byte = "x";
  Group group;
  group.offset = 100;
  for (size_t i = 0; i < kIovPerWriteMax * 2 + 5; ++i) {
    group.iov.push_back(iovec{byte.data(), 1});
  }
  group.bytes = group.iov.size();
  std::vector<GroupWrite> writes = PlanWrites(group);
  ASSERT_EQ(writes.size(), 3u);
  EXPECT_EQ(writes[0].count, kIovPerWriteMax);
  EXPECT_EQ(writes[0].offset, 100u);
  EXPECT_EQ(writes[1].offset, 100u + kIovPerWriteMax);
  EXPECT_EQ(writes[2].count, 5u);
  EXPECT_EQ(writes[2].offset + writes[2].bytes, group.offset + group.bytes);
}

TEST(QueueIdMinter, UniqueFixedWidthAndNamesTheShard) {
  QueueIdMinter minter(1'790'000'000'123'456, 0x2a);
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    std::string id = minter.Next();
    EXPECT_EQ(id.size(), 23u);
    EXPECT_EQ(id.substr(11, 2), "2A");
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000u);
  // A later start of the same shard never repeats an earlier start's ids.
  QueueIdMinter later(1'790'000'001'123'456, 0x2a);
  EXPECT_EQ(ids.count(later.Next()), 0u);
}

}  // namespace
}  // namespace chute::spool
