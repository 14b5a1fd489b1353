// status_test.cc: unit tests for the status macros, CHECK's abort and log line priorities.

#include <gtest/gtest.h>

#include "base/check.h"
#include "base/log.h"
#include "base/status_macros.h"

namespace chute {
namespace {

absl::Status FailIf(bool fail) { return fail ? absl::InternalError("boom") : absl::OkStatus(); }

absl::StatusOr<int> ValueOr(bool fail) {
  if (fail) {
    return absl::NotFoundError("none");
  }
  return 7;
}

absl::Status UsesReturnIfError(bool fail, int* steps) {
  RETURN_IF_ERROR(FailIf(fail));
  ++*steps;
  return absl::OkStatus();
}

absl::StatusOr<int> UsesAssignOrReturn(bool fail) {
  ASSIGN_OR_RETURN(int value, ValueOr(fail));
  return value * 2;
}

TEST(StatusMacrosTest, ReturnIfError) {
  int steps = 0;
  EXPECT_TRUE(UsesReturnIfError(false, &steps).ok());
  EXPECT_EQ(steps, 1);
  EXPECT_EQ(UsesReturnIfError(true, &steps).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(steps, 1);
}

TEST(StatusMacrosTest, AssignOrReturn) {
  EXPECT_EQ(*UsesAssignOrReturn(false), 14);
  EXPECT_EQ(UsesAssignOrReturn(true).status().code(), absl::StatusCode::kNotFound);
}

TEST(CheckDeathTest, CheckAbortsWithFileLineAndMessage) {
  EXPECT_DEATH(CHECK_MSG(1 + 1 == 3, "arithmetic"),
               "<2>CHECK failed: .*status_test.cc:[0-9]+: 1 \\+ 1 == 3: arithmetic");
  CHECK(true);
}

TEST(LogDeathTest, LinesCarryTheSyslogPriority) {
  EXPECT_EXIT(
      {
        LOG_ERROR("disk %s", "full");
        LOG_WARNING("w");
        LOG_INFO("i %d", 1);
        LOG_DEBUG("hidden at the default level");
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "<3>disk full\n<4>w\n<6>i 1\n$");
}

}  // namespace
}  // namespace chute
