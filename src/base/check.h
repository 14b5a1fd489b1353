#pragma once

// CHECK / DCHECK: assertions for invariants, i.e. for our own bugs, never for peer input.
// Debian's abseil (20220623) has no absl/log, so chute carries its own. A failed CHECK writes
// "<2>CHECK failed: file:line: condition: message" to stderr and aborts. CHECK is always on;
// DCHECK is compiled out in NDEBUG builds and is meant for hot paths.

#include <cstdlib>

#include "absl/base/optimization.h"

namespace chute::base_internal {

// CheckFailed: reports the failure on stderr and aborts. Never returns; any thread may call it.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const char* message);

}  // namespace chute::base_internal

#define CHECK_MSG(condition, message)                                                 \
  do {                                                                                \
    if (ABSL_PREDICT_FALSE(!(condition))) {                                           \
      ::chute::base_internal::CheckFailed(__FILE__, __LINE__, #condition, (message)); \
    }                                                                                 \
  } while (false)

#define CHECK(condition) CHECK_MSG(condition, "")

#ifdef NDEBUG
#define DCHECK(condition) \
  do {                    \
    if (false) {          \
      (void)(condition);  \
    }                     \
  } while (false)
#define DCHECK_MSG(condition, message) DCHECK(condition)
#else
#define DCHECK(condition) CHECK(condition)
#define DCHECK_MSG(condition, message) CHECK_MSG(condition, message)
#endif
