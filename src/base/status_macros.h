#pragma once

// RETURN_IF_ERROR / ASSIGN_OR_RETURN: Debian's abseil (20220623) ships neither.
//
//   RETURN_IF_ERROR(WriteHeader(fd));
//   ASSIGN_OR_RETURN(Config config, ParseConfig(text, path));

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CHUTE_STATUS_CONCAT_INNER(a, b) a##b
#define CHUTE_STATUS_CONCAT(a, b) CHUTE_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status chute_status_ = (expr);         \
    if (ABSL_PREDICT_FALSE(!chute_status_.ok())) { \
      return chute_status_;                        \
    }                                              \
  } while (false)

// CO_RETURN_IF_ERROR: the same in a coroutine (io::Task); `expr` may be a co_await.
#define CO_RETURN_IF_ERROR(expr)                   \
  do {                                             \
    ::absl::Status chute_status_ = (expr);         \
    if (ABSL_PREDICT_FALSE(!chute_status_.ok())) { \
      co_return chute_status_;                     \
    }                                              \
  } while (false)

#define CHUTE_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                                \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {              \
    return std::move(statusor).status();                 \
  }                                                      \
  lhs = std::move(statusor).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  CHUTE_ASSIGN_OR_RETURN_IMPL(CHUTE_STATUS_CONCAT(chute_statusor_, __LINE__), lhs, expr)
