// spool.cc: spool segments: staging, groups, settle marks, reclaim, the lock and replay.

#include "spool/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/check.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "io/ring.h"
#include "spool/group_commit.h"

namespace chute::spool {

void SpoolGauges::CountGroup(size_t records) {
  groups.fetch_add(1, std::memory_order_relaxed);
  records_committed.fetch_add(records, std::memory_order_relaxed);
  size_t bucket = std::min<size_t>(std::bit_width(records) - 1, kGroupSizeBuckets - 1);
  group_sizes[bucket].fetch_add(1, std::memory_order_relaxed);
}

// --- Segment ----------------------------------------------------------------------------------

Segment::Segment(int fd, std::string path, uint64_t size, SpoolGauges* gauges)
    : bytes(size), fd_(fd), path_(std::move(path)), gauges_(gauges) {
  CHECK(gauges_ != nullptr);
}

bool SpoolGauges::Reserve(int64_t size, int64_t count, int64_t bytes_max, int64_t messages_max) {
  int64_t all_bytes = reserved_bytes.fetch_add(size, std::memory_order_relaxed) + size;
  int64_t all_messages = reserved_messages.fetch_add(count, std::memory_order_relaxed) + count;
  return bytes.load(std::memory_order_relaxed) + all_bytes <= bytes_max &&
         messages.load(std::memory_order_relaxed) + all_messages <= messages_max;
}

void SpoolGauges::Unreserve(int64_t size, int64_t count) {
  reserved_bytes.fetch_sub(size, std::memory_order_relaxed);
  reserved_messages.fetch_sub(count, std::memory_order_relaxed);
}

// --- RecordRef --------------------------------------------------------------------------------

absl::StatusOr<std::string> RecordRef::ReadContent() const {
  CHECK(segment != nullptr);
  return segment->Read(content_offset, content_bytes);
}

absl::Status RecordRef::Mark(size_t index, spool::Mark mark) const {
  CHECK(segment != nullptr);
  return segment->SetMark(record_offset, index, mark);
}

absl::Status RecordRef::Settle() {
  CHECK(segment != nullptr);
  absl::Status status = segment->Settle(record_offset);
  segment.reset();
  return status;
}

Segment::~Segment() { close(fd_); }

absl::StatusOr<std::string> Segment::Read(uint64_t offset, uint64_t size) const {
  std::string out(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = pread(fd_, out.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return n == 0 ? absl::DataLossError(absl::StrCat(path_, ": short read at ", offset))
                    : io::ErrnoStatus(errno, absl::StrCat("read ", path_));
    }
    done += static_cast<uint64_t>(n);
  }
  return out;
}

absl::Status Segment::SetMark(uint64_t record_offset, size_t index, Mark mark) {
  char byte = static_cast<char>(mark);
  off_t at = static_cast<off_t>(record_offset + kRecordHeaderBytes + index);
  if (pwrite(fd_, &byte, 1, at) != 1) {
    return io::ErrnoStatus(errno, absl::StrCat("mark in ", path_));
  }
  return absl::OkStatus();
}

absl::Status Segment::Settle(uint64_t record_offset) {
  char byte = static_cast<char>(RecordState::kSettled);
  absl::Status status;
  if (pwrite(fd_, &byte, 1, static_cast<off_t>(record_offset + kStateOffset)) != 1) {
    // The message is settled in memory all the same: at worst a restart delivers it again.
    status = io::ErrnoStatus(errno, absl::StrCat("settle in ", path_));
  }
  live.fetch_sub(1, std::memory_order_acq_rel);
  gauges_->messages.fetch_sub(1, std::memory_order_relaxed);
  return status;
}

// --- SegmentWriter ----------------------------------------------------------------------------

SegmentWriter::SegmentWriter(std::string dir, int dir_fd, int shard, uint64_t boot_us,
                             uint64_t segment_bytes, SpoolGauges* gauges)
    : dir_(std::move(dir)),
      dir_fd_(dir_fd),
      shard_(shard),
      boot_us_(boot_us),
      segment_bytes_(segment_bytes),
      gauges_(gauges) {}

SegmentWriter::~SegmentWriter() = default;

void SegmentWriter::Stage(RecordPrefix prefix, std::span<const iovec> body, uint64_t body_bytes,
                          uint64_t cookie) {
  Staged staged;
  staged.prefix = std::move(prefix);
  staged.body.assign(body.begin(), body.end());
  staged.body_bytes = body_bytes;
  staged.cookie = cookie;
  staged_.push_back(std::move(staged));
}

absl::Status SegmentWriter::OpenSegment() {
  if (current_ != nullptr) {
    current_->retired = true;
  }
  current_.reset();
  std::string name = absl::StrFormat("%016x.%02d.%06d.seg", boot_us_, shard_, next_number_++);
  std::string path = absl::StrCat(dir_, "/", name);
  int fd = openat(dir_fd_, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return io::ErrnoStatus(errno, absl::StrCat("create ", path));
  }
  current_ = std::make_shared<Segment>(fd, std::move(path), 0, gauges_);
  segments_.push_back(current_);
  return absl::OkStatus();
}

absl::StatusOr<const Group*> SegmentWriter::TakeGroup(std::vector<uint64_t>* failed) {
  CHECK(inflight_ == nullptr);
  CHECK(!staged_.empty());
  if (current_ == nullptr || current_->retired || current_->bytes >= segment_bytes_) {
    absl::Status status = OpenSegment();
    if (!status.ok()) {
      for (const Staged& staged : staged_) {
        failed->push_back(staged.cookie);
      }
      staged_.clear();
      gauges_->group_failures.fetch_add(1, std::memory_order_relaxed);
      return status;
    }
  }
  auto group = std::make_unique<Group>();
  group->segment = current_;
  group->fd = current_->fd();
  group->dir_fd = current_->dir_synced ? -1 : dir_fd_;
  group->offset = current_->bytes;
  size_t count = std::min(staged_.size(), kGroupRecordsMax);
  group->entries.reserve(count);  // never reallocated: the iovecs point into the prefixes
  for (size_t i = 0; i < count; ++i) {
    Staged& staged = staged_.front();
    if (!group->entries.empty() && group->iov.size() + 1 + staged.body.size() > kGroupIovMax) {
      break;  // the rest waits for the next group
    }
    Group::Entry& entry = group->entries.emplace_back();
    entry.cookie = staged.cookie;
    entry.record_offset = group->offset + group->bytes;
    uint64_t record_bytes = staged.prefix.bytes.size() + staged.body_bytes;
    entry.content_offset = entry.record_offset + staged.prefix.content_offset;
    entry.content_bytes = record_bytes - staged.prefix.content_offset;
    entry.prefix = std::move(staged.prefix.bytes);
    group->iov.push_back(iovec{entry.prefix.data(), entry.prefix.size()});
    group->iov.insert(group->iov.end(), staged.body.begin(), staged.body.end());
    group->bytes += record_bytes;
    staged_.pop_front();
  }
  current_->bytes += group->bytes;
  gauges_->bytes.fetch_add(static_cast<int64_t>(group->bytes), std::memory_order_relaxed);
  inflight_ = std::move(group);
  return inflight_.get();
}

void SegmentWriter::FinishGroup(const absl::Status& status, std::vector<Committed>* committed,
                                std::vector<uint64_t>* failed) {
  CHECK(inflight_ != nullptr);
  std::unique_ptr<Group> group = std::move(inflight_);
  if (!status.ok()) {
    // The group's records got 451: none may come back at replay, though some may have
    // reached the file whole (a short write, a failed sync). Cut the file back to where the
    // group began; if even that fails, what is left is at least never appended to.
    if (ftruncate(group->fd, static_cast<off_t>(group->offset)) == 0 && fdatasync(group->fd) == 0) {
      group->segment->bytes = group->offset;
      gauges_->bytes.fetch_sub(static_cast<int64_t>(group->bytes), std::memory_order_relaxed);
    } else {
      LOG_ERROR(
          "spool: cannot cut %s back to %d after a failed group (%s): its records may "
          "be delivered after a restart although they got 451",
          group->segment->path(), static_cast<int64_t>(group->offset), std::strerror(errno));
    }
    group->segment->retired = true;
    gauges_->group_failures.fetch_add(1, std::memory_order_relaxed);
    for (const Group::Entry& entry : group->entries) {
      failed->push_back(entry.cookie);
    }
    return;
  }
  if (group->dir_fd >= 0) {
    group->segment->dir_synced = true;
  }
  group->segment->live.fetch_add(static_cast<int64_t>(group->entries.size()),
                                 std::memory_order_acq_rel);
  gauges_->messages.fetch_add(static_cast<int64_t>(group->entries.size()),
                              std::memory_order_relaxed);
  gauges_->CountGroup(group->entries.size());
  for (Group::Entry& entry : group->entries) {
    committed->push_back(
        {entry.cookie,
         {group->segment, entry.record_offset, entry.content_offset, entry.content_bytes}});
  }
}

void SegmentWriter::Adopt(std::shared_ptr<Segment> segment) {
  segment->retired = true;
  segment->dir_synced = true;
  segments_.push_back(std::move(segment));
}

size_t SegmentWriter::Reclaim() {
  if (current_ != nullptr && inflight_ == nullptr && staged_.empty() &&
      current_->live.load(std::memory_order_acquire) == 0 && current_->bytes > 0) {
    current_->retired = true;  // idle and fully settled: the next message starts a new one
    current_.reset();
  }
  size_t removed = 0;
  auto reclaimable = [&](const std::shared_ptr<Segment>& segment) {
    if (!segment->retired || segment->live.load(std::memory_order_acquire) != 0 ||
        (inflight_ != nullptr && inflight_->segment == segment)) {
      return false;
    }
    if (unlink(segment->path().c_str()) != 0 && errno != ENOENT) {
      LOG_WARNING_EVERY(60, "spool: cannot remove %s: %s", segment->path(), std::strerror(errno));
      return false;
    }
    gauges_->bytes.fetch_sub(static_cast<int64_t>(segment->bytes), std::memory_order_relaxed);
    ++removed;
    return true;
  };
  segments_.erase(std::remove_if(segments_.begin(), segments_.end(), reclaimable), segments_.end());
  return removed;
}

}  // namespace chute::spool

namespace chute::spool {
namespace {

absl::Status SyncFd(int fd, bool data_only, const char* what) {
  int rc = data_only ? fdatasync(fd) : fsync(fd);
  return rc == 0 ? absl::OkStatus() : io::ErrnoStatus(errno, what);
}

}  // namespace

absl::Status WriteGroupNow(const Group& group) {
  for (const GroupWrite& w : PlanWrites(group)) {
    ssize_t wrote =
        pwritev(group.fd, w.iov, static_cast<int>(w.count), static_cast<off_t>(w.offset));
    if (wrote < 0) {
      return io::ErrnoStatus(errno, "spool write");
    }
    if (static_cast<uint64_t>(wrote) != w.bytes) {
      return absl::DataLossError("spool write: short write");
    }
  }
  RETURN_IF_ERROR(SyncFd(group.fd, true, "spool fdatasync"));
  if (group.dir_fd >= 0) {
    RETURN_IF_ERROR(SyncFd(group.dir_fd, false, "spool directory fsync"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> LockSpool(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return io::ErrnoStatus(errno, absl::StrCat("create the spool directory ", dir));
  }
  int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return io::ErrnoStatus(errno, absl::StrCat("open the spool directory ", dir));
  }
  std::string lock_path = absl::StrCat(dir, "/lock");
  int lock_fd = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) {
    close(dir_fd);
    return io::ErrnoStatus(errno, absl::StrCat("open ", lock_path));
  }
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int error = errno;
    char holder[32] = {};
    ssize_t n = pread(lock_fd, holder, sizeof(holder) - 1, 0);
    close(lock_fd);
    close(dir_fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("the spool ", dir, " is in use by another chuted (pid ",
                       n > 0 ? absl::StripAsciiWhitespace(holder) : "unknown",
                       "); two servers must never share a spool"));
    }
    return io::ErrnoStatus(error, absl::StrCat("lock ", lock_path));
  }
  std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(lock_fd, 0) != 0 || pwrite(lock_fd, pid.data(), pid.size(), 0) < 0) {
    LOG_WARNING("spool: cannot write the pid to %s: %s", lock_path, std::strerror(errno));
  }
  return dir_fd;  // lock_fd stays open (and locked) until the process ends
}

namespace {

// ReplaySegment: the unsettled records of one segment file, in order, to `sink`.
absl::StatusOr<int64_t> ReplaySegment(const std::shared_ptr<Segment>& segment,
                                      const std::function<void(ReplayedRecord)>& sink) {
  int64_t live = 0;
  uint64_t offset = 0;
  while (offset < segment->bytes) {
    uint64_t left = segment->bytes - offset;
    if (left < kRecordHeaderBytes) {
      LOG_WARNING(
          "spool: %s: %d bytes of a torn record at offset %d dropped (never "
          "acknowledged)",
          segment->path(), static_cast<int64_t>(left), static_cast<int64_t>(offset));
      break;
    }
    ASSIGN_OR_RETURN(std::string header, segment->Read(offset, kRecordHeaderBytes));
    uint64_t record_bytes = PeekRecordBytes(header);
    if (IsNewerRecord(header)) {
      // Dropping it (and what follows) would lose acknowledged mail: a newer chute wrote it.
      return absl::FailedPreconditionError(absl::StrCat(
          segment->path(), ": a record of spool version ", static_cast<int>(header[4]),
          " at offset ", offset,
          ", written by a newer chuted; this one reads versions 1 and 2 only and will not start "
          "rather than drop it (start the newer chuted, which delivers it)"));
    }
    if (record_bytes == 0 || record_bytes > left) {
      LOG_WARNING(
          "spool: %s: %s at offset %d; the %d bytes from there are dropped (never "
          "acknowledged)",
          segment->path(), record_bytes == 0 ? "no record header" : "a torn record",
          static_cast<int64_t>(offset), static_cast<int64_t>(left));
      break;
    }
    ASSIGN_OR_RETURN(std::string bytes, segment->Read(offset, record_bytes));
    ReplayedRecord replayed;
    if (DecodeRecord(bytes, &replayed.record) != DecodeResult::kOk) {
      LOG_WARNING(
          "spool: %s: record at offset %d fails its CRC; the %d bytes from there are "
          "dropped (never acknowledged)",
          segment->path(), static_cast<int64_t>(offset), static_cast<int64_t>(left));
      break;
    }
    if (replayed.record.state == RecordState::kLive) {
      ++live;
      replayed.ref = {segment, offset, offset + replayed.record.content_offset,
                      replayed.record.content_bytes};
      sink(std::move(replayed));
    }
    offset += record_bytes;
  }
  return live;
}

}  // namespace

absl::StatusOr<std::vector<std::shared_ptr<Segment>>> Replay(
    const std::string& dir, SpoolGauges* gauges, const std::function<void(ReplayedRecord)>& sink) {
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return io::ErrnoStatus(errno, absl::StrCat("open the spool directory ", dir));
  }
  while (dirent* entry = readdir(d)) {
    absl::string_view name(entry->d_name);
    if (name.size() > 4 && absl::EndsWith(name, ".seg")) {
      names.emplace_back(name);
    }
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  std::vector<std::shared_ptr<Segment>> kept;
  for (const std::string& name : names) {
    std::string path = absl::StrCat(dir, "/", name);
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
      absl::Status status = io::ErrnoStatus(errno, absl::StrCat("open ", path));
      if (fd >= 0) {
        close(fd);
      }
      return status;
    }
    auto segment = std::make_shared<Segment>(fd, path, static_cast<uint64_t>(st.st_size), gauges);
    ASSIGN_OR_RETURN(int64_t live, ReplaySegment(segment, sink));
    if (live == 0) {
      if (unlink(path.c_str()) != 0) {
        LOG_WARNING("spool: cannot remove %s: %s", path, std::strerror(errno));
      }
      continue;
    }
    segment->live.store(live);
    gauges->bytes.fetch_add(static_cast<int64_t>(segment->bytes));
    gauges->messages.fetch_add(live);
    kept.push_back(std::move(segment));
  }
  return kept;
}

}  // namespace chute::spool
