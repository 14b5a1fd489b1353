// loop_test.cc: io::Loop's sleeps, wakes and posts, and RemoteWakes across threads.

#include "io/loop.h"

#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace chute::io {
namespace {

TEST(LoopTest, ASleepEndsAtItsDeadlineOrAtAWakeWhicheverComesFirst) {
  absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  Waiter timed, woken;
  bool timed_done = false, woken_done = false;
  absl::Time start = absl::Now();
  (*loop)->Spawn([](Loop* l, Waiter* w, bool* done) -> Task<void> {
    co_await l->Sleep(w, absl::Now() + absl::Milliseconds(50));
    *done = true;
  }(loop->get(), &timed, &timed_done));
  (*loop)->Spawn([](Loop* l, Waiter* w, bool* done) -> Task<void> {
    co_await l->Sleep(w, absl::InfiniteFuture());
    *done = true;
  }(loop->get(), &woken, &woken_done));
  (*loop)->Post([&] { (*loop)->Wake(&woken); });
  (*loop)->Run();
  EXPECT_TRUE(timed_done);
  EXPECT_TRUE(woken_done);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  EXPECT_EQ((*loop)->tasks(), 0u);
}

// A LoopThread stopped while its loop is awake (its last task ending at that moment) could end
// and free its loop while Stop was still writing the loop's eventfd: a use after free that
// ThreadSanitizer reported in the fleet's tests (chute-fleet's task ends, then
// TenantLeases::Stop stops its thread). Meaningful under the sanitizer presets, where the
// race is reported; in a release build it only exercises the path.
TEST(LoopThreadTest, StoppedAsItsLastTaskEndsItNeverOutlivesItsStop) {
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<std::unique_ptr<LoopThread>> thread = LoopThread::Start("loop-test");
    ASSERT_TRUE(thread.ok()) << thread.status();
    Loop* loop = (*thread)->loop();
    auto waiter = std::make_shared<Waiter>();
    absl::Duration nap = absl::Microseconds(50 * (i % 20));
    loop->Post([loop, waiter, nap] {
      loop->Spawn([](Loop* l, std::shared_ptr<Waiter> w, absl::Duration d) -> Task<void> {
        co_await l->Sleep(w.get(), absl::Now() + d);
      }(loop, waiter, nap));
    });
    absl::SleepFor(absl::Microseconds(50 * (i % 23)));
    thread->reset();  // Stop, then join
  }
}

TEST(RemoteWakesTest, AWakeFromAnotherThreadRunsOnTheLoopAndIsWaitedFor) {
  absl::StatusOr<std::unique_ptr<LoopThread>> thread = LoopThread::Start("loop-test");
  ASSERT_TRUE(thread.ok()) << thread.status();
  Loop* loop = (*thread)->loop();
  auto waiter = std::make_unique<Waiter>();
  absl::Notification asleep;
  absl::Notification resumed;
  std::atomic<bool> on_loop{false};
  loop->Post([&] {
    loop->Spawn([](Loop* l, Waiter* w, absl::Notification* asleep, absl::Notification* resumed,
                   std::atomic<bool>* on_loop) -> Task<void> {
      asleep->Notify();
      co_await l->Sleep(w, absl::InfiniteFuture());
      on_loop->store(Loop::Current() == l);
      resumed->Notify();
    }(loop, waiter.get(), &asleep, &resumed, &on_loop));
  });
  asleep.WaitForNotification();
  RemoteWakes wakes;
  wakes.Wake(loop, waiter.get());  // from this thread: posted
  wakes.WaitForPosted();           // the wake has run: the waiter may go once the task is off it
  EXPECT_TRUE(resumed.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(on_loop.load());
  EXPECT_FALSE(waiter->waiting());
  thread->reset();
}

TEST(RemoteWakesTest, OnTheLoopsOwnThreadTheWakeIsImmediate) {
  absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok()) << loop.status();
  Waiter waiter;
  RemoteWakes wakes;
  int turns_after_wake = -1;
  (*loop)->Spawn([](Loop* l, Waiter* w) -> Task<void> {
    co_await l->Sleep(w, absl::InfiniteFuture());
  }(loop->get(), &waiter));
  ASSERT_TRUE(waiter.waiting());
  (*loop)->Spawn([](RemoteWakes* wakes, Loop* l, Waiter* w, int* turns) -> Task<void> {
    wakes->Wake(l, w);  // a task of this loop: no post
    *turns = w->waiting() ? 1 : 0;
    co_return;
  }(&wakes, loop->get(), &waiter, &turns_after_wake));
  EXPECT_EQ(turns_after_wake, 0);  // taken off its waiter at once, to resume in this turn
  (*loop)->Run();
  EXPECT_EQ((*loop)->tasks(), 0u);
  wakes.WaitForPosted();  // nothing was posted: returns at once
}

}  // namespace
}  // namespace chute::io
