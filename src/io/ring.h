#pragma once

// Ring: one io_uring, owned by one thread (docs/architecture.md, I/O). Set up with SINGLE_ISSUER |
// DEFER_TASKRUN where the kernel has them, else COOP_TASKRUN, else plain; Mode() says which.
// BufferRing: a provided-buffer ring for multishot receive: the kernel picks a buffer for each
// completion; the owner gives it back with Recycle() once nothing refers to it.
//
// A CQE's -errno becomes an absl::Status only through ErrnoStatus(), here.
//
// user_data layout used by chute: bits 56..63 the operation, 0..55 the owner's cookie.

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::io {

// ErrnoStatus: the Status for a negative errno from a CQE (or a positive errno).
absl::Status ErrnoStatus(int error, absl::string_view what);

inline uint64_t PackUserData(uint8_t op, uint64_t cookie) {
  return (static_cast<uint64_t>(op) << 56) | (cookie & ((uint64_t{1} << 56) - 1));
}
inline uint8_t UserDataOp(uint64_t user_data) { return static_cast<uint8_t>(user_data >> 56); }
inline uint64_t UserDataCookie(uint64_t user_data) { return user_data & ((uint64_t{1} << 56) - 1); }

class Ring {
 public:
  // Create: a ring of `entries` submission slots (a power of two). Call from the thread that
  // will use it (SINGLE_ISSUER binds the ring to its creator's task).
  static absl::StatusOr<std::unique_ptr<Ring>> Create(unsigned entries);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Sqe: a free submission entry; submits what is queued first when the queue is full.
  io_uring_sqe* Sqe();
  // Reserve: makes room for `count` consecutive SQEs (submitting what is queued when needed),
  // so that a linked chain is never split across two submissions.
  void Reserve(unsigned count);
  // SubmitAndWait: submits queued entries and waits for at least `wait_nr` completions.
  // Returns -errno on failure (EINTR and ETIME are normal).
  int SubmitAndWait(unsigned wait_nr);

  // ForEachCqe: calls `f(const io_uring_cqe&)` for every ready completion, then marks them
  // seen. Returns how many.
  template <typename F>
  unsigned ForEachCqe(F&& f) {
    unsigned head;
    unsigned count = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      f(*cqe);
      ++count;
    }
    io_uring_cq_advance(&ring_, count);
    return count;
  }

  io_uring* raw() { return &ring_; }
  const char* Mode() const { return mode_; }

 private:
  Ring() = default;
  io_uring ring_{};
  const char* mode_ = "";
};

class BufferRing {
 public:
  // Create: `count` buffers (a power of two, at most 32768) of `size_bytes` each, registered
  // as buffer group `group_id` of `ring`, all handed to the kernel.
  static absl::StatusOr<std::unique_ptr<BufferRing>> Create(Ring& ring, uint16_t group_id,
                                                            uint32_t count, uint32_t size_bytes);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  char* Buffer(uint16_t id) { return memory_ + static_cast<size_t>(id) * size_bytes_; }
  // Recycle: gives buffer `id` back to the kernel.
  void Recycle(uint16_t id);

  uint16_t group_id() const { return group_id_; }
  uint32_t count() const { return count_; }
  uint32_t size_bytes() const { return size_bytes_; }

 private:
  BufferRing() = default;
  Ring* ring_ = nullptr;
  io_uring_buf_ring* br_ = nullptr;
  size_t ring_bytes_ = 0;
  char* memory_ = nullptr;
  size_t memory_bytes_ = 0;
  uint16_t group_id_ = 0;
  uint32_t count_ = 0;
  uint32_t size_bytes_ = 0;
};

}  // namespace chute::io
