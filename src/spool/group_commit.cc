// group_commit.cc: a shard's group commit: queue ids, staging, when to write, the SQE chain.

#include "spool/group_commit.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_format.h"
#include "base/check.h"
#include "base/histogram.h"

namespace chute::spool {

std::string QueueIdMinter::Next() {
  return absl::StrFormat("%011X%02X%010X", (boot_us_ / 1000) & 0xfffffffffff, shard_ & 0xff,
                         ++counter_ & 0xffffffffff);
}

bool IsQueueId(absl::string_view text) {
  if (text.size() != kQueueIdDigits && text.size() != kQueueIdDigitsBefore) {
    return false;
  }
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); });
}

std::vector<GroupWrite> PlanWrites(const Group& group) {
  std::vector<GroupWrite> writes;
  writes.reserve((group.iov.size() + kIovPerWriteMax - 1) / kIovPerWriteMax);
  uint64_t offset = group.offset;
  for (size_t i = 0; i < group.iov.size(); i += kIovPerWriteMax) {
    GroupWrite& w = writes.emplace_back();
    w.iov = &group.iov[i];
    w.count = std::min(kIovPerWriteMax, group.iov.size() - i);
    w.offset = offset;
    for (size_t j = 0; j < w.count; ++j) {
      w.bytes += w.iov[j].iov_len;
    }
    offset += w.bytes;
  }
  CHECK(offset == group.offset + group.bytes);
  return writes;
}

GroupCommitter::GroupCommitter(std::unique_ptr<SegmentWriter> writer, absl::Duration delay,
                               QueueIdMinter ids)
    : writer_(std::move(writer)), delay_(delay), ids_(ids) {}

void GroupCommitter::Stage(RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
                           uint64_t cookie, absl::Time now) {
  writer_->Stage(std::move(prefix), body, body_bytes, cookie);
  if (first_staged_ == absl::InfiniteFuture()) {
    first_staged_ = now;
  }
}

GroupCommitter::Decision GroupCommitter::Decide(absl::Time now, size_t receiving,
                                                bool stopping) const {
  using Kind = Decision::Kind;
  if (writer_->staged() == 0 || group_inflight()) {
    return {Kind::kNothing, absl::ZeroDuration()};  // in flight: the staged ride the next one
  }
  absl::Duration waited = now - first_staged_;
  if (delay_ <= absl::ZeroDuration() || waited >= delay_ || stopping || receiving == 0 ||
      writer_->staged() >= kGroupRecordsMax) {
    return {Kind::kIssue, absl::ZeroDuration()};
  }
  return {Kind::kWait, delay_ - waited};
}

absl::Status GroupCommitter::Issue(io::Ring& ring, uint8_t op, absl::Time now,
                                   std::vector<uint64_t>* failed) {
  CHECK(!group_inflight());
  absl::StatusOr<const Group*> taken = writer_->TakeGroup(failed);
  first_staged_ = writer_->staged() > 0 ? now : absl::InfiniteFuture();
  if (!taken.ok()) {
    return taken.status();
  }
  const Group& group = **taken;
  // One chain: the writes, then fdatasync, then (a new segment) the directory's fsync. A link
  // breaks at the first failure, and every later SQE completes with -ECANCELED.
  std::vector<GroupWrite> writes = PlanWrites(group);
  size_t sqes = writes.size() + 1 + (group.dir_fd >= 0 ? 1 : 0);
  ring.Reserve(static_cast<unsigned>(sqes));
  expected_res_.clear();
  chain_status_ = absl::OkStatus();
  for (const GroupWrite& w : writes) {
    io_uring_sqe* sqe = ring.Sqe();
    io_uring_prep_writev(sqe, group.fd, w.iov, static_cast<unsigned>(w.count), w.offset);
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe_set_data64(sqe, io::PackUserData(op, expected_res_.size()));
    expected_res_.push_back(w.bytes);
  }
  io_uring_sqe* sync = ring.Sqe();
  io_uring_prep_fsync(sync, group.fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(sync, io::PackUserData(op, expected_res_.size()));
  expected_res_.push_back(0);
  if (group.dir_fd >= 0) {
    sync->flags |= IOSQE_IO_LINK;
    io_uring_sqe* dir_sync = ring.Sqe();
    io_uring_prep_fsync(dir_sync, group.dir_fd, 0);
    io_uring_sqe_set_data64(dir_sync, io::PackUserData(op, expected_res_.size()));
    expected_res_.push_back(0);
  }
  CHECK(expected_res_.size() == sqes);
  pending_cqes_ = sqes;
  issued_us_ = MonotonicMicros();
  return absl::OkStatus();
}

bool GroupCommitter::OnCompletion(uint64_t index, int32_t res, Outcome* outcome) {
  CHECK(pending_cqes_ > 0);
  CHECK(index < expected_res_.size());
  if (chain_status_.ok()) {
    if (res < 0) {
      chain_status_ = io::ErrnoStatus(-res, "spool write or sync");
    } else if (static_cast<uint64_t>(res) != expected_res_[index]) {
      chain_status_ = absl::DataLossError("spool write: short write");
    }
  }
  if (--pending_cqes_ > 0) {
    return false;
  }
  outcome->latency_us = MonotonicMicros() - issued_us_;
  outcome->status = chain_status_;
  writer_->FinishGroup(chain_status_, &outcome->committed, &outcome->failed);
  return true;
}

}  // namespace chute::spool
