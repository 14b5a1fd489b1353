// memory.cc: lets idle threads hand freed memory back to the system through the installed hook.

#include "base/memory.h"

#include <atomic>

namespace chute {
namespace {

std::atomic<MemoryReleaser> releaser{nullptr};

}  // namespace

void SetMemoryReleaser(MemoryReleaser fn) { releaser.store(fn, std::memory_order_release); }

void ReleaseIdleMemory() {
  if (MemoryReleaser fn = releaser.load(std::memory_order_acquire)) {
    fn();
  }
}

}  // namespace chute
