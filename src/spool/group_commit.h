#pragma once

// GroupCommitter: one shard's whole group commit (docs/architecture.md, Spool). It mints the
// queue ids, stages the records that connections hand it, decides when a group is written,
// puts the group's chain of SQEs on the shard's ring (pwritev..., fdatasync, and for the first
// group of a segment an fsync of the spool directory), takes the chain's completions back and
// says which records are on disk and which failed. The shard only submits what it is given and
// passes the completions back: it never sees a Group's iovecs, offsets or byte counts.
//
// When a group is written (Decide): at once when nothing else on the shard is receiving a
// message (no company is coming, so waiting only adds latency), when the oldest staged record
// has waited `delay`, when the group is full, or while stopping; otherwise the shard arms a
// timer for what is left of `delay`. Only one group is in flight; what is staged meanwhile
// rides the next one, so under load groups form without any waiting.
//
// Threads: the owning shard's thread only.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "io/ring.h"
#include "spool/record.h"
#include "spool/spool.h"

namespace chute::spool {

// QueueIdMinter: queue ids unique across restarts and over a long run: the start time in
// milliseconds (44 bits, hex), the shard (8 bits) and a 40-bit counter (a trillion messages
// per shard per start), 23 hex digits.
class QueueIdMinter {
 public:
  QueueIdMinter(uint64_t boot_us, int shard) : boot_us_(boot_us), shard_(shard) {}
  std::string Next();

 private:
  const uint64_t boot_us_;
  const int shard_;
  uint64_t counter_ = 0;
};

// IsQueueId: whether `text` has the syntax of a queue id: the 23 upper-case hex digits
// QueueIdMinter makes, or the 22 that chute made before (a dead letter may be older than the
// running chuted). Nothing else is one: not a path, "..", nor a percent-encoded name. Check it
// before a queue id that came from outside names a file. Any thread.
inline constexpr size_t kQueueIdDigits = 23;
inline constexpr size_t kQueueIdDigitsBefore = 22;
bool IsQueueId(absl::string_view text);

// GroupWrite: one pwritev of a group's chain: `count` iovecs from `iov`, at `offset`, which
// must write `bytes`. PlanWrites splits a group into them (kIovPerWriteMax iovecs each); the
// ring and WriteGroupNow both write a group this way.
struct GroupWrite {
  const iovec* iov = nullptr;
  size_t count = 0;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};
std::vector<GroupWrite> PlanWrites(const Group& group);

class GroupCommitter {
 public:
  // GroupCommitter: commits through `writer`, waiting at most `delay` for company.
  GroupCommitter(std::unique_ptr<SegmentWriter> writer, absl::Duration delay, QueueIdMinter ids);

  // NextQueueId: a fresh queue id for a message about to be staged.
  std::string NextQueueId() { return ids_.Next(); }

  // Stage: queues a record for the next group (SegmentWriter::Stage); `body` must stay valid
  // until the group that carries it has finished (OnCompletion said so for `cookie`).
  void Stage(RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes, uint64_t cookie,
             absl::Time now);

  struct Decision {
    enum class Kind { kNothing, kIssue, kWait } kind = Kind::kNothing;
    absl::Duration wait;  // kWait: how long, at most, until Decide says kIssue
  };
  // Decide: what the shard does now. `receiving` is how many messages of the shard are past
  // MAIL and not yet staged (possible company for this group).
  Decision Decide(absl::Time now, size_t receiving, bool stopping) const;

  // Issue: takes the staged records as a group and puts its chain on `ring` (reserved in one
  // piece, so it is never split across two submissions); every SQE's user data is `op` and
  // the SQE's index in the chain. Ok: the chain is queued (OnCompletion follows). Not ok (no
  // segment could be made): nothing is queued and the records' cookies are in `failed`.
  absl::Status Issue(io::Ring& ring, uint8_t op, absl::Time now, std::vector<uint64_t>* failed);

  // Outcome: a finished group. `committed` are on disk (answer 250), `failed` are not (451).
  struct Outcome {
    absl::Status status;
    std::vector<Committed> committed;
    std::vector<uint64_t> failed;
    int64_t latency_us = 0;  // from Issue to the last completion
  };
  // OnCompletion: one CQE of the chain in flight (its index from the user data, its res).
  // Returns true when it was the last one; `outcome` is then filled in.
  bool OnCompletion(uint64_t index, int32_t res, Outcome* outcome);

  bool group_inflight() const { return pending_cqes_ > 0; }
  size_t staged() const { return writer_->staged(); }
  // Adopt, Reclaim: SegmentWriter's, for the shard's start-up and tick.
  void Adopt(std::shared_ptr<Segment> segment) { writer_->Adopt(std::move(segment)); }
  size_t Reclaim() { return writer_->Reclaim(); }

 private:
  std::unique_ptr<SegmentWriter> writer_;
  const absl::Duration delay_;
  QueueIdMinter ids_;
  absl::Time first_staged_ = absl::InfiniteFuture();  // when the oldest staged record came
  std::vector<uint64_t> expected_res_;                // what each SQE of the chain must return
  size_t pending_cqes_ = 0;                           // CQEs of the chain still to come
  absl::Status chain_status_;
  int64_t issued_us_ = 0;  // monotonic time the group in flight was issued
};

}  // namespace chute::spool
