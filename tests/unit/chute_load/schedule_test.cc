// schedule_test.cc: unit tests for chute-load's open- and closed-loop schedules.

#include "tools/chute-load/schedule.h"

#include "gtest/gtest.h"

namespace chute::load {
namespace {

TEST(ScheduleTest, OpenLoopSendTimesAreFixedInAdvance) {
  // 100 messages/s from t = 1 s: message i is due at 1 s + 10 ms * i.
  Schedule s(1'000'000, 100'000'000, 0, 100, 0, 1);
  Job job;
  EXPECT_FALSE(s.Take(999'999, &job)) << "nothing before the start";
  ASSERT_TRUE(s.Take(1'000'000, &job));
  EXPECT_EQ(job.scheduled_us, 1'000'000);
  EXPECT_FALSE(s.Take(1'009'999, &job)) << "the next is due 10 ms later";
  EXPECT_EQ(s.NextDueUs(1'005'000), 1'010'000);
}

TEST(ScheduleTest, AStallAccumulatesABacklogMeasuredFromTheScheduledTimes) {
  Schedule s(0, 100'000'000, 0, 1000, 0, 1);  // one per millisecond
  Job job;
  ASSERT_TRUE(s.Take(0, &job));
  // The server stalls for 50 ms: 50 messages fell due meanwhile.
  EXPECT_EQ(s.Behind(50'000), 50u);
  EXPECT_EQ(s.Available(50'000), 50u);
  for (int i = 1; i <= 50; ++i) {
    ASSERT_TRUE(s.Take(50'000, &job));
    // Latency is measured from when each was due, not from when it could be sent.
    EXPECT_EQ(job.scheduled_us, i * 1000);
  }
  EXPECT_FALSE(s.Take(50'000, &job));
  EXPECT_EQ(s.Behind(50'000), 0u);
}

TEST(ScheduleTest, ClosedLoopTakesAtOnceAndStampsTheTakeTime) {
  Schedule s(0, 100'000'000, 3, 0, 0, 1);
  Job job;
  EXPECT_EQ(s.Available(0), 3u);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s.Take(500 + i, &job));
    EXPECT_EQ(job.scheduled_us, 500 + i);
  }
  EXPECT_FALSE(s.Take(600, &job)) << "the count bounds the run";
  EXPECT_EQ(s.Available(600), 0u);
  EXPECT_TRUE(s.Exhausted(600));
}

TEST(ScheduleTest, EndTimeBoundsTheRunAndSequencesStrideAcrossThreads) {
  Schedule s(0, 1'000, 0, 0, 2, 4);  // thread 2 of 4
  Job job;
  ASSERT_TRUE(s.Take(0, &job));
  EXPECT_EQ(job.seq, 2u);
  ASSERT_TRUE(s.Take(10, &job));
  EXPECT_EQ(job.seq, 6u);
  EXPECT_FALSE(s.Take(1'000, &job));
  EXPECT_TRUE(s.Exhausted(1'000));
}

}  // namespace
}  // namespace chute::load
