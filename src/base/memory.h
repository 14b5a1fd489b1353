#pragma once

// ReleaseIdleMemory: lets the process's allocator give memory freed by this thread back to the
// system. mimalloc returns freed pages lazily, the next time the thread allocates; a shard or
// delivery worker that goes quiet after large messages would otherwise keep them resident
// (50 MB of bodies left 63 MB resident). chuted installs mimalloc's collector at start; tests
// and tools leave it unset, and then this does nothing. Threads call it when idle or about
// once a second; any thread.

namespace chute {

using MemoryReleaser = void (*)();

// SetMemoryReleaser: at start, before other threads run.
void SetMemoryReleaser(MemoryReleaser releaser);
void ReleaseIdleMemory();

}  // namespace chute
