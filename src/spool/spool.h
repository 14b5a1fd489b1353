#pragma once

// The durable spool (docs/architecture.md, Spool): where a byte is fsynced before chute says 250.
//
// Each shard appends records (record.h) to its own segment files under [spool] dir, through a
// SegmentWriter. Records staged since the last sync form a group: the shard writes the group
// with linked pwritev SQEs followed by one fdatasync on its own io_uring (and, for the first
// group of a new segment, an fsync of the directory), and answers 250 to every message of the
// group only when the whole chain completed. A failed or short write or sync fails the whole
// group (451 4.3.0) and retires the segment: nothing after a failure is appended to it.
//
// Settling does not append: delivery writes the record's state byte (and per-recipient marks)
// in place, without a sync, the way Postfix marks recipients done in its queue file. This keeps
// segments independent of each other: a segment is removed (by its shard, on its tick) as soon
// as it is retired and every message in it is settled; no later segment holds acks for it.
// A lost mark after a crash means a redelivery, which the backends make harmless (Maildir
// names are derived from the message id; LMTP/SMTP redeliveries are counted as duplicates).
//
// At start-up Replay() reads every segment before any listener opens: unsettled records whose
// CRC holds go back to delivery; the first record that does not parse ends its segment (a torn
// tail was never acknowledged) and is logged with the segment and offset.
//
// Threads: a SegmentWriter belongs to one shard thread. Segment's marks and reads may be used
// from any thread (pwrite/pread). SpoolGauges are atomics read and written by all.

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "spool/record.h"

namespace chute::spool {

// Records one group may carry; more wait for the next group.
inline constexpr size_t kGroupRecordsMax = 256;
// iovecs one pwritev SQE carries (the kernel's IOV_MAX), and one group carries at most (so a
// group's chain is at most 64 writes and two syncs, well within a shard's ring).
inline constexpr size_t kIovPerWriteMax = 1024;
inline constexpr size_t kGroupIovMax = 64 * kIovPerWriteMax;
// Group sizes are counted in buckets 1, 2-3, 4-7, ... 256+ for /metrics.
inline constexpr size_t kGroupSizeBuckets = 10;

// SpoolGauges: the spool's totals across shards, behind the 452 4.3.1 back-pressure. The spool
// is their one owner: segments, the writer and Replay change `bytes` and `messages` as records
// are committed, settled and removed; a message being received takes its room with Reserve
// and gives it back with Unreserve; a message queued from outside the spool (a dead letter
// requeued) is counted with AddOutside/RemoveOutside. Everyone else only reads them.
struct SpoolGauges {
  std::atomic<int64_t> bytes{0};     // bytes of segment files that exist
  std::atomic<int64_t> messages{0};  // messages committed (or requeued) and not yet settled
  // Room reserved by messages being received (from MAIL to commit or drop), counted against
  // bytes_max and messages_max beside the two above.
  std::atomic<int64_t> reserved_bytes{0};
  std::atomic<int64_t> reserved_messages{0};
  std::atomic<uint64_t> groups{0};
  std::atomic<uint64_t> group_failures{0};
  std::atomic<uint64_t> records_committed{0};
  std::array<std::atomic<uint64_t>, kGroupSizeBuckets> group_sizes{};
  void CountGroup(size_t records);

  // Reserve: takes room for `messages` messages of `bytes` bytes; true when the spool's
  // contents and every reservation, this one included, fit within `bytes_max` and
  // `messages_max`. The room is taken either way: give it back with Unreserve (the caller
  // refuses the message when it is false). Any thread.
  bool Reserve(int64_t bytes, int64_t messages, int64_t bytes_max, int64_t messages_max);
  void Unreserve(int64_t bytes, int64_t messages);
  // AddOutside / RemoveOutside: a message whose content is not in a segment (a dead letter
  // requeued) counted among the spool's messages while it is queued.
  void AddOutside() { messages.fetch_add(1, std::memory_order_relaxed); }
  void RemoveOutside() { messages.fetch_sub(1, std::memory_order_relaxed); }
};

// Segment: one segment file. Shared (shared_ptr) by its shard and by every queued message
// that points into it; the descriptor closes with the last reference.
class Segment {
 public:
  // Segment: the open file `fd` at `path` of `bytes` bytes, whose settles are counted out of
  // `gauges` (which outlive it).
  Segment(int fd, std::string path, uint64_t bytes, SpoolGauges* gauges);
  ~Segment();
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  // ReadContent: the `bytes` bytes at `offset` (a message's content). Any thread.
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t bytes) const;
  // SetMark: marks recipient `index` of the record at `record_offset`, in place, no sync.
  absl::Status SetMark(uint64_t record_offset, size_t index, Mark mark);
  // Settle: marks the record at `record_offset` settled (in place, no sync), then counts it
  // out of `live` and of the spool's gauges. Any thread; at most once per record.
  absl::Status Settle(uint64_t record_offset);

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  std::atomic<int64_t> live{0};  // committed messages in this segment not yet settled
  uint64_t bytes = 0;            // owner's thread only: bytes written or reserved
  bool retired = false;          // owner's thread only: no more appends
  bool dir_synced = false;       // owner's thread only: its directory entry is durable

 private:
  const int fd_;
  const std::string path_;
  SpoolGauges* const gauges_;
};

// RecordRef: where a record is: its segment (kept open while referred to), the record's
// offset (for its marks and its state byte) and its content's place. The one spelling of
// "where a record is", and the one handle through which a record's content is read, its
// recipients marked and the record settled. A RecordRef without a segment refers to nothing
// (a message whose content is elsewhere); its operations must not be called then.
struct RecordRef {
  std::shared_ptr<Segment> segment;
  uint64_t record_offset = 0;
  uint64_t content_offset = 0;  // absolute, in the segment file
  uint64_t content_bytes = 0;

  bool in_spool() const { return segment != nullptr; }
  // ReadContent: the message's content. Any thread.
  absl::StatusOr<std::string> ReadContent() const;
  // Mark: recipient `index`'s mark, in place, no sync. Any thread.
  absl::Status Mark(size_t index, spool::Mark mark) const;
  // Settle: the record is settled (Segment::Settle) and this reference lets go of its
  // segment. Any thread; once.
  absl::Status Settle();
};

// Committed: a record that is on disk, with where to find it again.
struct Committed {
  uint64_t cookie = 0;  // the submitter's
  RecordRef ref;
};

// Group: what one commit writes: the iovecs at `offset` of `fd`, then fdatasync, then an
// fsync of `dir_fd` when it is not -1 (a new segment's directory entry).
struct Group {
  int fd = -1;
  int dir_fd = -1;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  std::vector<iovec> iov;
  struct Entry {
    std::string prefix;  // owns the record's bytes up to the body
    uint64_t cookie = 0;
    uint64_t record_offset = 0;
    uint64_t content_offset = 0;
    uint64_t content_bytes = 0;
  };
  std::vector<Entry> entries;
  std::shared_ptr<Segment> segment;
};

class SegmentWriter {
 public:
  // SegmentWriter: appends to segments named "<boot_us>.<shard>.<n>.seg" in `dir` (which
  // exists), starting a new one past `segment_bytes`.
  SegmentWriter(std::string dir, int dir_fd, int shard, uint64_t boot_us, uint64_t segment_bytes,
                SpoolGauges* gauges);
  ~SegmentWriter();

  // Stage: queues a record for the next group. `prefix` is from EncodeRecordPrefix; `body`
  // must stay valid and unchanged until the group that carries it has finished.
  void Stage(RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
             uint64_t cookie);
  size_t staged() const { return staged_.size(); }
  bool group_inflight() const { return inflight_ != nullptr; }

  // TakeGroup: the staged records (at most kGroupRecordsMax) as the group to write now; opens
  // a new segment first when needed. Only one group is in flight at a time. On failure (a
  // segment cannot be created) the staged records are failed: their cookies are returned in
  // `failed` and no group is in flight.
  absl::StatusOr<const Group*> TakeGroup(std::vector<uint64_t>* failed);
  // FinishGroup: the outcome of the group in flight. Ok: its records are committed (appended
  // to `committed`). Not ok: its cookies go to `failed` and its segment is retired.
  void FinishGroup(const absl::Status& status, std::vector<Committed>* committed,
                   std::vector<uint64_t>* failed);

  // Adopt: a segment found at start-up (retired: never appended to again).
  void Adopt(std::shared_ptr<Segment> segment);
  // Reclaim: removes retired segments whose messages are all settled, and retires the
  // current one when it is idle and fully settled. Returns how many files were removed.
  size_t Reclaim();

  size_t segments() const { return segments_.size(); }

 private:
  struct Staged {
    RecordPrefix prefix;
    std::vector<iovec> body;
    uint64_t body_bytes = 0;
    uint64_t cookie = 0;
  };
  absl::Status OpenSegment();

  const std::string dir_;
  const int dir_fd_;
  const int shard_;
  const uint64_t boot_us_;
  const uint64_t segment_bytes_;
  SpoolGauges* const gauges_;
  uint64_t next_number_ = 0;
  std::shared_ptr<Segment> current_;
  std::vector<std::shared_ptr<Segment>> segments_;  // every segment file this writer owns
  std::deque<Staged> staged_;
  std::unique_ptr<Group> inflight_;
};

// WriteGroupNow: writes and syncs `group` with blocking calls (tests, tools), split into
// writes as GroupCommitter::Issue splits them on a ring (PlanWrites, group_commit.h).
absl::Status WriteGroupNow(const Group& group);

// LockSpool: creates `dir` (0700) if needed and takes an exclusive lock on `dir`/lock for the
// life of the process; FailedPrecondition naming the holder's pid when another chuted has it.
// Returns the directory's descriptor (for directory fsyncs); the lock's descriptor is kept
// open, on purpose, until exit.
absl::StatusOr<int> LockSpool(const std::string& dir);

// ReplayedRecord: an unsettled record found at start-up.
struct ReplayedRecord {
  DecodedRecord record;
  RecordRef ref;
};

// Replay: reads every "*.seg" file of `dir` in name order. Unsettled records go to `sink`;
// segments with none are removed; the others are returned (retired, `live` counted) for
// the shards to adopt. Gauges are credited with what remains.
absl::StatusOr<std::vector<std::shared_ptr<Segment>>> Replay(
    const std::string& dir, SpoolGauges* gauges, const std::function<void(ReplayedRecord)>& sink);

}  // namespace chute::spool
