// ring.cc: sets up io_uring rings and provided-buffer rings; turns -errno into Status.

#include "io/ring.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace chute::io {

absl::Status ErrnoStatus(int error, absl::string_view what) {
  int code = error < 0 ? -error : error;
  std::string message = absl::StrCat(what, ": ", std::strerror(code));
  switch (code) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOSPC:
    case EDQUOT:
    case ENOBUFS:
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case ECANCELED:
      return absl::CancelledError(message);
    case ETIME:
    case ETIMEDOUT:
      return absl::DeadlineExceededError(message);
    case EADDRINUSE:
      return absl::FailedPreconditionError(message);
    default:
      return absl::UnavailableError(message);
  }
}

absl::StatusOr<std::unique_ptr<Ring>> Ring::Create(unsigned entries) {
  std::unique_ptr<Ring> ring(new Ring());
  struct Attempt {
    unsigned flags;
    const char* mode;
  };
  static constexpr Attempt kAttempts[] = {
      {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN, "single_issuer+defer_taskrun"},
      {IORING_SETUP_COOP_TASKRUN, "coop_taskrun"},
      {0, "plain"},
  };
  int rc = -EINVAL;
  for (const Attempt& attempt : kAttempts) {
    io_uring_params params{};
    params.flags = attempt.flags | IORING_SETUP_CQSIZE;
    params.cq_entries = entries * 4;  // multishot operations complete more than they submit
    rc = io_uring_queue_init_params(entries, &ring->ring_, &params);
    if (rc == 0) {
      ring->mode_ = attempt.mode;
      return ring;
    }
  }
  return ErrnoStatus(rc, "io_uring_queue_init");
}

Ring::~Ring() { io_uring_queue_exit(&ring_); }

io_uring_sqe* Ring::Sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    io_uring_submit(&ring_);
    sqe = io_uring_get_sqe(&ring_);
  }
  CHECK_MSG(sqe != nullptr, "no submission entry even after submitting");
  return sqe;
}

void Ring::Reserve(unsigned count) {
  CHECK_MSG(count <= ring_.sq.ring_entries, "more SQEs than the ring holds");
  if (io_uring_sq_space_left(&ring_) < count) {
    io_uring_submit(&ring_);
  }
}

int Ring::SubmitAndWait(unsigned wait_nr) { return io_uring_submit_and_wait(&ring_, wait_nr); }

absl::StatusOr<std::unique_ptr<BufferRing>> BufferRing::Create(Ring& ring, uint16_t group_id,
                                                               uint32_t count,
                                                               uint32_t size_bytes) {
  CHECK(count > 0 && count <= 32768 && (count & (count - 1)) == 0);
  std::unique_ptr<BufferRing> buffers(new BufferRing());
  buffers->ring_ = &ring;
  buffers->group_id_ = group_id;
  buffers->count_ = count;
  buffers->size_bytes_ = size_bytes;
  buffers->ring_bytes_ = count * sizeof(io_uring_buf);
  void* ring_memory = mmap(nullptr, buffers->ring_bytes_, PROT_READ | PROT_WRITE,
                           MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (ring_memory == MAP_FAILED) {
    return ErrnoStatus(errno, "mmap buffer ring");
  }
  buffers->br_ = static_cast<io_uring_buf_ring*>(ring_memory);
  buffers->memory_bytes_ = static_cast<size_t>(count) * size_bytes;
  void* memory = mmap(nullptr, buffers->memory_bytes_, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (memory == MAP_FAILED) {
    return ErrnoStatus(errno, "mmap receive buffers");
  }
  buffers->memory_ = static_cast<char*>(memory);
  io_uring_buf_ring_init(buffers->br_);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buffers->br_);
  reg.ring_entries = count;
  reg.bgid = group_id;
  int rc = io_uring_register_buf_ring(ring.raw(), &reg, 0);
  if (rc != 0) {
    return ErrnoStatus(rc, "io_uring_register_buf_ring");
  }
  int mask = io_uring_buf_ring_mask(count);
  for (uint32_t id = 0; id < count; ++id) {
    io_uring_buf_ring_add(buffers->br_, buffers->Buffer(static_cast<uint16_t>(id)), size_bytes,
                          static_cast<uint16_t>(id), mask, static_cast<int>(id));
  }
  io_uring_buf_ring_advance(buffers->br_, static_cast<int>(count));
  return buffers;
}

BufferRing::~BufferRing() {
  if (br_ != nullptr) {
    io_uring_unregister_buf_ring(ring_->raw(), group_id_);
    munmap(br_, ring_bytes_);
  }
  if (memory_ != nullptr) {
    munmap(memory_, memory_bytes_);
  }
}

void BufferRing::Recycle(uint16_t id) {
  DCHECK(id < count_);
  io_uring_buf_ring_add(br_, Buffer(id), size_bytes_, id, io_uring_buf_ring_mask(count_), 0);
  io_uring_buf_ring_advance(br_, 1);
}

}  // namespace chute::io
