// Unit tests for the spool: record encoding, CRC and torn tails, group commit, marks,
// segment reclaim, replay and the lock.

#include "spool/spool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "base/crc32c.h"
#include "base/spsc_ring.h"
#include "gtest/gtest.h"
#include "spool/record.h"

namespace chute::spool {
namespace {

Envelope SampleEnvelope(const std::string& id, size_t recipients = 2) {
  Envelope e;
  e.id = id;
  e.received_unix_us = 1'790'000'000'000'000;
  e.tenant_id = 7;
  e.account_id = 42;
  e.client = "127.0.0.1";
  e.listener = "127.0.0.1:2525";
  e.sender = "app@example.test";
  for (size_t i = 0; i < recipients; ++i) {
    e.recipients.push_back("user" + std::to_string(i) + "@example.test");
  }
  return e;
}

std::vector<iovec> Body(std::vector<std::string>& pieces) {
  std::vector<iovec> iov;
  for (std::string& p : pieces) {
    iov.push_back(iovec{p.data(), p.size()});
  }
  return iov;
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/chute-spool-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(Crc32c, KnownVector) {
  EXPECT_EQ(Crc32cExtend(0, "123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32cExtend(Crc32cExtend(0, "1234"), "56789"), 0xE3069283u);
  EXPECT_EQ(Crc32cExtend(0, ""), 0u);
}

TEST(SpscRing, FifoAndFull) {
  SpscRing<int> ring(4);
  for (int i = 0; i < 4; ++i) {
    int v = i;
    EXPECT_TRUE(ring.TryPush(v));
  }
  int extra = 9;
  EXPECT_FALSE(ring.TryPush(extra));
  for (int i = 0; i < 4; ++i) {
    std::optional<int> v = ring.TryPop();
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(*v, i);
  }
  EXPECT_FALSE(ring.TryPop().has_value());
}

TEST(Record, EncodeDecodeRoundTrip) {
  std::vector<std::string> pieces = {"Subject: hi\r\n\r\n", "line one\r\n", ".dot\r\n"};
  std::vector<iovec> body = Body(pieces);
  absl::StatusOr<RecordPrefix> prefix =
      EncodeRecordPrefix(SampleEnvelope("ID1", 3), "Received: x\r\n", body);
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  std::string record = prefix->bytes;
  for (const std::string& p : pieces) {
    record += p;
  }
  EXPECT_EQ(PeekRecordBytes(record), record.size());
  DecodedRecord decoded;
  ASSERT_EQ(DecodeRecord(record, &decoded), DecodeResult::kOk);
  EXPECT_EQ(decoded.envelope.id, "ID1");
  EXPECT_EQ(decoded.envelope.tenant_id, 7);
  EXPECT_EQ(decoded.envelope.account_id, 42);
  EXPECT_EQ(decoded.envelope.sender, "app@example.test");
  ASSERT_EQ(decoded.envelope.recipients.size(), 3u);
  EXPECT_EQ(decoded.envelope.recipients[2], "user2@example.test");
  EXPECT_EQ(decoded.state, RecordState::kLive);
  EXPECT_EQ(decoded.marks, std::vector<Mark>(3, Mark::kPending));
  EXPECT_EQ(decoded.content_offset, prefix->content_offset);
  EXPECT_EQ(record.substr(decoded.content_offset, decoded.content_bytes),
            "Received: x\r\nSubject: hi\r\n\r\nline one\r\n.dot\r\n");
}

TEST(Record, DsnParametersMakeAVersion2RecordAndComeBack) {
  std::vector<std::string> pieces = {"Subject: hi\r\n\r\nbody\r\n"};
  std::vector<iovec> body = Body(pieces);
  Envelope plain = SampleEnvelope("ID4", 2);
  std::string v1 = EncodeRecordPrefix(plain, "", body)->bytes;
  EXPECT_EQ(static_cast<uint8_t>(v1[4]), kRecordVersion);  // readable by earlier versions
  Envelope dsn = SampleEnvelope("ID5", 2);
  dsn.dsn_ret = 2;
  dsn.envid = "QQ314159";
  dsn.notify = {0, 4 | 8};
  dsn.orcpt = {"", "rfc822;user1+40example.test"};
  absl::StatusOr<RecordPrefix> prefix = EncodeRecordPrefix(dsn, "X: y\r\n", body);
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(static_cast<uint8_t>(prefix->bytes[4]), kRecordVersionDsn);
  std::string record = prefix->bytes + pieces[0];
  DecodedRecord decoded;
  ASSERT_EQ(DecodeRecord(record, &decoded), DecodeResult::kOk);
  EXPECT_EQ(decoded.envelope.dsn_ret, 2);
  EXPECT_EQ(decoded.envelope.envid, "QQ314159");
  EXPECT_EQ(decoded.envelope.notify, (std::vector<uint8_t>{0, 12}));
  EXPECT_EQ(decoded.envelope.orcpt, (std::vector<std::string>{"", "rfc822;user1+40example.test"}));
  EXPECT_EQ(record.substr(decoded.content_offset, decoded.content_bytes),
            "X: y\r\nSubject: hi\r\n\r\nbody\r\n");
  DecodedRecord old;
  ASSERT_EQ(DecodeRecord(v1 + pieces[0], &old), DecodeResult::kOk);
  EXPECT_TRUE(old.envelope.notify.empty());
  EXPECT_FALSE(old.envelope.has_dsn());
}

TEST(Record, MarksAndStateAreOutsideTheCrc) {
  std::vector<std::string> pieces = {"body\r\n"};
  std::vector<iovec> body = Body(pieces);
  std::string record = EncodeRecordPrefix(SampleEnvelope("ID2"), "", body)->bytes + pieces[0];
  record[kStateOffset] = 1;
  record[kRecordHeaderBytes + 1] = 1;
  DecodedRecord decoded;
  ASSERT_EQ(DecodeRecord(record, &decoded), DecodeResult::kOk);
  EXPECT_EQ(decoded.state, RecordState::kSettled);
  EXPECT_EQ(decoded.marks[0], Mark::kPending);
  EXPECT_EQ(decoded.marks[1], Mark::kDelivered);
}

TEST(Record, CrcMismatchIsCorrupt) {
  std::vector<std::string> pieces = {"body\r\n"};
  std::vector<iovec> body = Body(pieces);
  std::string record = EncodeRecordPrefix(SampleEnvelope("ID3"), "", body)->bytes + pieces[0];
  record[record.size() - 3] ^= 0x20;  // one flipped bit in the body
  DecodedRecord decoded;
  EXPECT_EQ(DecodeRecord(record, &decoded), DecodeResult::kCorrupt);
}

TEST(Record, TornTailIsIncompleteAtEveryLength) {
  std::vector<std::string> pieces = {"body\r\n"};
  std::vector<iovec> body = Body(pieces);
  std::string record = EncodeRecordPrefix(SampleEnvelope("ID4"), "", body)->bytes + pieces[0];
  for (size_t n = 0; n < record.size(); ++n) {
    DecodedRecord decoded;
    EXPECT_NE(DecodeRecord(absl::string_view(record).substr(0, n), &decoded), DecodeResult::kOk)
        << n;
  }
}

TEST(Record, BoundsAreChecked) {
  std::vector<iovec> none;
  Envelope e = SampleEnvelope("ID5", 0);
  EXPECT_FALSE(EncodeRecordPrefix(e, "", none).ok());
  e = SampleEnvelope("ID5", 1);
  e.sender = std::string(kFieldBytesMax + 1, 'a');
  EXPECT_FALSE(EncodeRecordPrefix(e, "", none).ok());
  std::string garbage(kRecordHeaderBytes, 'x');
  EXPECT_EQ(PeekRecordBytes(garbage), 0u);
}

// Commits `count` records of `body` through a writer, synchronously.
std::vector<Committed> CommitSome(SegmentWriter& writer, int count, const std::string& body,
                                  int first_id = 0) {
  std::vector<Committed> committed;
  std::vector<uint64_t> failed;
  std::vector<std::string> pieces = {body};
  for (int i = 0; i < count; ++i) {
    std::vector<iovec> iov = Body(pieces);
    writer.Stage(*EncodeRecordPrefix(SampleEnvelope("M" + std::to_string(first_id + i)), "", iov),
                 iov, body.size(), static_cast<uint64_t>(first_id + i));
  }
  while (writer.staged() > 0) {
    absl::StatusOr<const Group*> group = writer.TakeGroup(&failed);
    EXPECT_TRUE(group.ok());
    writer.FinishGroup(WriteGroupNow(**group), &committed, &failed);
  }
  EXPECT_TRUE(failed.empty());
  return committed;
}

TEST(SegmentWriter, GroupCommitAndReadBack) {
  TempDir dir;
  absl::StatusOr<int> dir_fd = LockSpool(dir.path());
  ASSERT_TRUE(dir_fd.ok());
  SpoolGauges gauges;
  SegmentWriter writer(dir.path(), *dir_fd, 0, 1, 1 << 20, &gauges);
  std::vector<Committed> committed = CommitSome(writer, 5, "Subject: x\r\n\r\nhello\r\n");
  ASSERT_EQ(committed.size(), 5u);
  EXPECT_EQ(gauges.messages.load(), 5);
  EXPECT_EQ(gauges.groups.load(), 1u);  // five staged records ride one group
  EXPECT_EQ(committed[3].cookie, 3u);
  absl::StatusOr<std::string> content = committed[3].ref.segment->Read(
      committed[3].ref.content_offset, committed[3].ref.content_bytes);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "Subject: x\r\n\r\nhello\r\n");
}

TEST(RecordRef, ReadsMarksAndSettlesTheRecordItRefersTo) {
  TempDir dir;
  int dir_fd = *LockSpool(dir.path());
  SpoolGauges gauges;
  SegmentWriter writer(dir.path(), dir_fd, 0, 1, 1 << 20, &gauges);
  std::vector<Committed> committed = CommitSome(writer, 2, "Subject: r\r\n\r\nref\r\n");
  RecordRef ref = committed[1].ref;
  EXPECT_TRUE(ref.in_spool());
  EXPECT_EQ(ref.ReadContent().value(), "Subject: r\r\n\r\nref\r\n");
  ASSERT_TRUE(ref.Mark(0, Mark::kDelivered).ok());
  std::shared_ptr<Segment> segment = ref.segment;
  EXPECT_EQ(segment->live.load(), 2);
  ASSERT_TRUE(ref.Settle().ok());
  // Settled through the reference: counted out of the segment and the spool's gauges by the
  // spool itself, and the reference lets go of the segment.
  EXPECT_FALSE(ref.in_spool());
  EXPECT_EQ(segment->live.load(), 1);
  EXPECT_EQ(gauges.messages.load(), 1);
  ASSERT_TRUE(committed[0].ref.Settle().ok());
  EXPECT_EQ(gauges.messages.load(), 0);
  segment.reset();
  committed.clear();
  EXPECT_EQ(writer.Reclaim(), 1u);
  EXPECT_EQ(gauges.bytes.load(), 0);
  // Replay finds nothing live: both records were settled in place.
  std::vector<std::string> replayed;
  absl::StatusOr<std::vector<std::shared_ptr<Segment>>> kept = Replay(
      dir.path(), &gauges, [&](ReplayedRecord r) { replayed.push_back(r.record.envelope.id); });
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(replayed.empty());
}

TEST(SpoolGauges, AReservationCountsAgainstTheBoundsUntilItIsGivenBack) {
  SpoolGauges gauges;
  gauges.bytes = 600;
  gauges.messages = 1;
  EXPECT_TRUE(gauges.Reserve(300, 1, 1000, 3));
  // The second does not fit beside the first (600 + 300 + 300 > 1000); its room is taken all
  // the same, and given back by the caller that refuses.
  EXPECT_FALSE(gauges.Reserve(300, 1, 1000, 3));
  EXPECT_EQ(gauges.reserved_bytes.load(), 600);
  gauges.Unreserve(300, 1);
  EXPECT_FALSE(gauges.Reserve(100, 2, 1000, 3));  // 1 + 1 + 2 messages > 3
  gauges.Unreserve(100, 2);
  gauges.Unreserve(300, 1);
  EXPECT_EQ(gauges.reserved_bytes.load(), 0);
  EXPECT_EQ(gauges.reserved_messages.load(), 0);
  EXPECT_TRUE(gauges.Reserve(400, 2, 1000, 3));  // exactly at both bounds
  gauges.AddOutside();
  EXPECT_EQ(gauges.messages.load(), 2);
  gauges.RemoveOutside();
  EXPECT_EQ(gauges.messages.load(), 1);
}

TEST(SegmentWriter, SettledSegmentsAreReclaimed) {
  TempDir dir;
  int dir_fd = *LockSpool(dir.path());
  SpoolGauges gauges;
  // Tiny segments: every group starts a new one.
  SegmentWriter writer(dir.path(), dir_fd, 0, 1, 1 << 20, &gauges);
  std::vector<Committed> a = CommitSome(writer, 2, std::string(1 << 20, 'a'), 0);
  std::vector<Committed> b = CommitSome(writer, 1, "b\r\n", 10);
  EXPECT_EQ(writer.segments(), 2u);
  EXPECT_EQ(writer.Reclaim(), 0u);  // nothing settled yet
  ASSERT_TRUE(a[0].ref.segment->Settle(a[0].ref.record_offset).ok());
  EXPECT_EQ(writer.Reclaim(), 0u);  // one message of the first segment is still live
  ASSERT_TRUE(a[1].ref.segment->Settle(a[1].ref.record_offset).ok());
  EXPECT_EQ(writer.Reclaim(), 1u);
  EXPECT_FALSE(std::filesystem::exists(a[0].ref.segment->path()));
  ASSERT_TRUE(b[0].ref.segment->Settle(b[0].ref.record_offset).ok());
  EXPECT_EQ(writer.Reclaim(), 1u);  // the current one, idle and settled, is retired too
  EXPECT_EQ(gauges.bytes.load(), 0);
  EXPECT_EQ(gauges.messages.load(), 0);
}

TEST(Replay, UnsettledRecordsComeBackWithTheirMarks) {
  TempDir dir;
  {
    int dir_fd = *LockSpool(dir.path() + "/s");
    SpoolGauges gauges;
    SegmentWriter writer(dir.path() + "/s", dir_fd, 1, 2, 1 << 20, &gauges);
    std::vector<Committed> c = CommitSome(writer, 3, "x\r\n");
    ASSERT_TRUE(c[0].ref.segment->Settle(c[0].ref.record_offset).ok());
    ASSERT_TRUE(c[1].ref.segment->SetMark(c[1].ref.record_offset, 1, Mark::kDelivered).ok());
    close(dir_fd);
  }
  SpoolGauges gauges;
  std::vector<ReplayedRecord> replayed;
  absl::StatusOr<std::vector<std::shared_ptr<Segment>>> kept = Replay(
      dir.path() + "/s", &gauges, [&](ReplayedRecord r) { replayed.push_back(std::move(r)); });
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(replayed.size(), 2u);
  EXPECT_EQ(replayed[0].record.envelope.id, "M1");
  EXPECT_EQ(replayed[0].record.marks[0], Mark::kPending);
  EXPECT_EQ(replayed[0].record.marks[1], Mark::kDelivered);
  EXPECT_EQ(replayed[1].record.envelope.id, "M2");
  ASSERT_EQ(kept->size(), 1u);
  EXPECT_EQ((*kept)[0]->live.load(), 2);
  EXPECT_EQ(gauges.messages.load(), 2);
}

TEST(Replay, TornTailIsDroppedAndEarlierRecordsKept) {
  TempDir dir;
  std::string path;
  {
    int dir_fd = *LockSpool(dir.path());
    SpoolGauges gauges;
    SegmentWriter writer(dir.path(), dir_fd, 0, 3, 1 << 20, &gauges);
    std::vector<Committed> c = CommitSome(writer, 2, "hello\r\n");
    path = c[0].ref.segment->path();
    close(dir_fd);
  }
  // A crash in the middle of a third record: half of it reached the file.
  std::vector<std::string> pieces = {"torn body\r\n"};
  std::vector<iovec> iov = Body(pieces);
  std::string third = EncodeRecordPrefix(SampleEnvelope("M2"), "", iov)->bytes + pieces[0];
  int fd = open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_EQ(write(fd, third.data(), third.size() / 2), static_cast<ssize_t>(third.size() / 2));
  close(fd);
  SpoolGauges gauges;
  std::vector<std::string> ids;
  ASSERT_TRUE(Replay(dir.path(), &gauges, [&](ReplayedRecord r) {
                ids.push_back(r.record.envelope.id);
              }).ok());
  EXPECT_EQ(ids, (std::vector<std::string>{"M0", "M1"}));
}

TEST(Replay, ARecordOfANewerVersionStopsTheStartInsteadOfBeingDropped) {
  TempDir dir;
  std::string path;
  {
    int dir_fd = *LockSpool(dir.path());
    SpoolGauges gauges;
    SegmentWriter writer(dir.path(), dir_fd, 0, 3, 1 << 20, &gauges);
    std::vector<Committed> c = CommitSome(writer, 1, "hello\r\n");
    path = c[0].ref.segment->path();
    close(dir_fd);
  }
  // What a later chute may write: the same magic, version 3.
  std::vector<std::string> pieces = {"later\r\n"};
  std::vector<iovec> iov = Body(pieces);
  std::string newer = EncodeRecordPrefix(SampleEnvelope("M9"), "", iov)->bytes + pieces[0];
  newer[4] = 3;
  int fd = open(path.c_str(), O_WRONLY | O_APPEND);
  ASSERT_EQ(write(fd, newer.data(), newer.size()), static_cast<ssize_t>(newer.size()));
  close(fd);
  SpoolGauges gauges;
  absl::StatusOr<std::vector<std::shared_ptr<Segment>>> replayed =
      Replay(dir.path(), &gauges, [&](ReplayedRecord) {});
  ASSERT_FALSE(replayed.ok());
  EXPECT_EQ(replayed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(replayed.status().message(), "written by a newer chuted"));
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), 0);  // the segment is still there
}

TEST(SegmentWriter, AFailedGroupIsCutOffSoThatReplayNeverDeliversIt) {
  // A short write or a failed sync: the group's records got 451, and some may have reached the
  // file whole. None of them may come back at the next start.
  TempDir dir;
  std::string path;
  {
    int dir_fd = *LockSpool(dir.path());
    SpoolGauges gauges;
    SegmentWriter writer(dir.path(), dir_fd, 0, 5, 1 << 20, &gauges);
    std::vector<Committed> good = CommitSome(writer, 1, "kept\r\n");
    path = good[0].ref.segment->path();
    std::vector<std::string> pieces = {"failed\r\n"};
    std::vector<iovec> iov = Body(pieces);
    writer.Stage(*EncodeRecordPrefix(SampleEnvelope("F1"), "", iov), iov, pieces[0].size(), 7);
    std::vector<uint64_t> failed;
    const Group* group = *writer.TakeGroup(&failed);
    ASSERT_TRUE(WriteGroupNow(*group).ok());  // the bytes are there, whole...
    std::vector<Committed> committed;
    writer.FinishGroup(absl::DataLossError("the sync failed"), &committed, &failed);  // ...but 451
    EXPECT_EQ(failed, std::vector<uint64_t>{7});
    EXPECT_EQ(gauges.messages.load(), 1);
    close(dir_fd);
  }
  SpoolGauges gauges;
  std::vector<std::string> ids;
  ASSERT_TRUE(Replay(dir.path(), &gauges, [&](ReplayedRecord r) {
                ids.push_back(r.record.envelope.id);
              }).ok());
  EXPECT_EQ(ids, std::vector<std::string>{"M0"});
}

TEST(Replay, FullySettledSegmentsAreRemoved) {
  TempDir dir;
  std::string path;
  {
    int dir_fd = *LockSpool(dir.path());
    SpoolGauges gauges;
    SegmentWriter writer(dir.path(), dir_fd, 0, 4, 1 << 20, &gauges);
    std::vector<Committed> c = CommitSome(writer, 1, "x\r\n");
    ASSERT_TRUE(c[0].ref.segment->Settle(c[0].ref.record_offset).ok());
    path = c[0].ref.segment->path();
    close(dir_fd);
  }
  SpoolGauges gauges;
  absl::StatusOr<std::vector<std::shared_ptr<Segment>>> kept =
      Replay(dir.path(), &gauges, [](ReplayedRecord) { FAIL() << "nothing is unsettled"; });
  ASSERT_TRUE(kept.ok());
  EXPECT_TRUE(kept->empty());
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(LockSpool, SecondHolderIsRefused) {
  TempDir dir;
  absl::StatusOr<int> first = LockSpool(dir.path());
  ASSERT_TRUE(first.ok());
  // flock locks belong to the open file description: a second open in the same process is
  // refused just like another process would be.
  absl::StatusOr<int> second = LockSpool(dir.path());
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by another chuted"), std::string::npos);
}

}  // namespace
}  // namespace chute::spool
