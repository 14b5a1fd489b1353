#pragma once

// SpscRing: a bounded single-producer single-consumer queue without locks; the shards hand
// spooled messages to delivery this way (docs/architecture.md, The path of one message). One
// thread only ever pushes, one other thread only ever pops; the head and tail sit on their own
// cache lines, and each side keeps a cached copy of the other's index so that a push or pop
// touches the shared line only when the ring looks full or empty.

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <utility>

#include "base/check.h"

namespace chute {

template <typename T>
class SpscRing {
 public:
  // SpscRing: room for `capacity` items (a power of two).
  explicit SpscRing(size_t capacity)
      : mask_(capacity - 1), slots_(std::make_unique<std::optional<T>[]>(capacity)) {
    CHECK_MSG(capacity >= 2 && (capacity & (capacity - 1)) == 0, "capacity: a power of two");
  }
  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  // TryPush: producer only. False (and `item` untouched) when the ring is full.
  bool TryPush(T& item) {
    size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_cache_ > mask_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (tail - head_cache_ > mask_) {
        return false;
      }
    }
    slots_[tail & mask_].emplace(std::move(item));
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // TryPop: consumer only. The oldest item, or nothing when the ring is empty.
  std::optional<T> TryPop() {
    size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (head == tail_cache_) {
        return std::nullopt;
      }
    }
    std::optional<T>& slot = slots_[head & mask_];
    std::optional<T> item = std::move(slot);
    slot.reset();
    head_.store(head + 1, std::memory_order_release);
    return item;
  }

  // Empty: a hint, from either side.
  bool Empty() const {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }
  size_t capacity() const { return mask_ + 1; }

 private:
  const size_t mask_;
  std::unique_ptr<std::optional<T>[]> slots_;
  alignas(64) std::atomic<size_t> head_{0};  // next to pop (consumer writes)
  size_t tail_cache_ = 0;                    // consumer's copy of tail_
  alignas(64) std::atomic<size_t> tail_{0};  // next to fill (producer writes)
  size_t head_cache_ = 0;                    // producer's copy of head_
};

}  // namespace chute
