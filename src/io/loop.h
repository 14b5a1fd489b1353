#pragma once

// Loop: one thread's event loop over one io_uring, running many tasks (io::Task) at once
// (docs/architecture.md, Delivery I/O). The delivery stage runs each LMTP/SMTP route's
// connections as tasks on a few of these (server.delivery_io_threads), so that routes x
// connections cost memory, not threads; a thread that only needs to wait for one thing (the
// OAuth key fetcher, a recipient probe, chutectl) runs one task to its end with RunSync.
//
// How a task waits: whatever owns operations in the ring (a net::UringStream) is a Completion;
// it gets a submission entry from Sqe(), and the loop hands it the completion, which it acts
// on and then wakes the task waiting on its Waiter. A task suspends on a Waiter with Sleep(),
// until Wake() or a deadline, whichever comes first. Wakes and deadlines only queue the task:
// tasks resume after the loop has handed out every completion of a batch, never in the middle.
//
// One turn: run what other threads posted, resume the tasks that are ready, then one
// io_uring_enter that submits everything the tasks queued and waits for a completion until the
// nearest deadline. So a turn that moves many connections costs one system call.
//
// Threads: a loop belongs to the thread that made it (its ring is SINGLE_ISSUER); only Post and
// Stop may be called from others.

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "io/ring.h"
#include "io/task.h"

namespace chute::io {

// Submission slots of a loop's ring: a connection has at most a send, a receive and a cancel
// (a connect and its timeout before that) in it; Sqe() submits early when they run out.
inline constexpr unsigned kLoopEntries = 256;
// The longest one turn waits when no deadline is nearer.
inline constexpr absl::Duration kLoopWaitMax = absl::Seconds(1);
// A loop that ends (or a stream given back outside a running loop) waits at most this long for
// the operations still in its ring.
inline constexpr absl::Duration kLoopDrainMax = absl::Seconds(10);

// Completion: what owns operations in a loop's ring; each one's completion comes back here.
class Completion {
 public:
  // OnCompletion: the completion of an operation this owner submitted with Loop::Sqe
  // (io::UserDataOp(cqe.user_data) is its op). May delete the owner, which nothing touches after.
  virtual void OnCompletion(const io_uring_cqe& cqe) = 0;

 protected:
  ~Completion() = default;
};

class Loop;

// Waiter: where one task is suspended, until a Wake or its deadline. Owned by whatever the task
// waits for; must not be destroyed while a task waits on it.
class Waiter {
 public:
  Waiter() = default;
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  bool waiting() const { return static_cast<bool>(handle_); }

 private:
  friend class Loop;
  std::coroutine_handle<> handle_;
  bool timed_ = false;
  std::multimap<absl::Time, Waiter*>::iterator timer_;
};

class Loop final : private Completion {
 public:
  // Create: a loop on a ring of `entries` (a power of two), for the calling thread.
  static absl::StatusOr<std::unique_ptr<Loop>> Create(unsigned entries = kLoopEntries);
  // ForThisThread: the calling thread's own loop, made on first use and kept until the thread
  // ends (for RunSync).
  static absl::StatusOr<Loop*> ForThisThread();
  // Current: the loop whose Run is on this thread's stack (null: none).
  static Loop* Current();
  // ~Loop: every spawned task must have ended; waits (kLoopDrainMax at most) for the
  // operations still in the ring (streams given back while their operations were under way).
  ~Loop();
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Sqe: a submission entry for `owner`'s operation `op` (user_data is set; the completion goes
  // to owner->OnCompletion). Loop thread.
  io_uring_sqe* Sqe(Completion* owner, uint8_t op);
  // Reserve: room for `count` consecutive entries (a linked chain).
  void Reserve(unsigned count) { ring_->Reserve(count); }

  // Sleep: `co_await loop.Sleep(&waiter, until)` suspends the calling task until Wake(&waiter)
  // or `until` (InfiniteFuture: no deadline). Loop thread.
  class SleepAwaiter {
   public:
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> task) { loop_->Suspend(waiter_, task, until_); }
    void await_resume() const noexcept {}

   private:
    friend class Loop;
    SleepAwaiter(Loop* loop, Waiter* waiter, absl::Time until)
        : loop_(loop), waiter_(waiter), until_(until) {}
    Loop* loop_;
    Waiter* waiter_;
    absl::Time until_;
  };
  SleepAwaiter Sleep(Waiter* waiter, absl::Time until) { return SleepAwaiter(this, waiter, until); }
  // Wake: the task waiting on `waiter` resumes in this turn (nothing when none waits). Loop
  // thread.
  void Wake(Waiter* waiter);

  // Spawn: starts `task` now, detached; the loop keeps running while it lives. Loop thread.
  void Spawn(Task<void> task);
  // Post: runs `fn` on the loop's thread at its next turn. Any thread.
  void Post(std::function<void()> fn);
  // Stop: RunUntilStopped returns once every task has ended. Any thread.
  void Stop();

  // Run: turns until every spawned task has ended. Not while this loop runs already.
  void Run();
  // RunUntilStopped: turns until Stop() was called and every task has ended (a loop thread).
  void RunUntilStopped();
  // Turn: one turn, waiting at most `wait_max` for a completion.
  void Turn(absl::Duration wait_max);
  // running: a task of this loop is on the stack (Turn or Spawn): RunSync may not be called.
  bool running() const { return running_; }
  size_t tasks() const { return tasks_; }

 private:
  explicit Loop(std::unique_ptr<Ring> ring);
  void Suspend(Waiter* waiter, std::coroutine_handle<> task, absl::Time until);
  void OnCompletion(const io_uring_cqe& cqe) override;  // the wake-up eventfd
  void ArmWakeup();
  void RunPosted();
  // PostLocked: Post's work, with post_mu_ held.
  void PostLocked(std::function<void()> fn);
  void RunReady();
  void FireTimers(absl::Time now);
  // RunDetached: a spawned task's root, which counts it out when it ends.
  struct Detached {
    struct promise_type {
      Detached get_return_object() { return {}; }
      std::suspend_never initial_suspend() noexcept { return {}; }
      std::suspend_never final_suspend() noexcept { return {}; }
      void return_void() {}
      void unhandled_exception() noexcept { std::abort(); }
    };
  };
  static Detached RunDetached(Loop* loop, Task<void> task);

  std::unique_ptr<Ring> ring_;
  int wakeup_fd_ = -1;
  uint64_t wakeup_value_ = 0;  // what reading the eventfd takes
  bool wakeup_armed_ = false;
  size_t pending_ = 0;  // operations in the ring (every owner's)
  size_t tasks_ = 0;    // spawned tasks not yet ended
  bool running_ = false;
  std::deque<std::coroutine_handle<>> ready_;
  std::multimap<absl::Time, Waiter*> timers_;

  std::atomic<bool> stop_{false};
  std::mutex post_mu_;
  std::vector<std::function<void()>> posted_;  // guarded by post_mu_
  bool wakeup_written_ = false;                // guarded by post_mu_
};

// RunSync: runs `task` to its end on `loop` (which is not running) and returns its result.
template <typename T>
T RunSync(Loop& loop, Task<T> task);

namespace internal {
template <typename T>
Task<void> Capture(Task<T> task, std::optional<T>* out) {
  out->emplace(co_await task);
}
inline Task<void> Capture(Task<void> task, bool* done) {
  co_await task;
  *done = true;
}
}  // namespace internal

template <typename T>
T RunSync(Loop& loop, Task<T> task) {
  std::optional<T> result;
  loop.Spawn(internal::Capture(std::move(task), &result));
  loop.Run();
  return std::move(*result);
}

template <>
inline void RunSync<void>(Loop& loop, Task<void> task) {
  bool done = false;
  loop.Spawn(internal::Capture(std::move(task), &done));
  loop.Run();
}

// RemoteWakes: wakes a task waiting on a Waiter of `loop` from any thread: on the loop's own
// thread at once, from another by a Post. The owner of the waiters calls WaitForPosted before
// they go, so that no posted wake runs after them. Each owner that wakes across threads (the
// delivery queue's slots, the recipient verifier) has one.
class RemoteWakes {
 public:
  RemoteWakes() = default;
  ~RemoteWakes() { WaitForPosted(); }
  RemoteWakes(const RemoteWakes&) = delete;
  RemoteWakes& operator=(const RemoteWakes&) = delete;

  // Wake: Loop::Wake(waiter), on `loop`'s thread. Any thread.
  void Wake(Loop* loop, Waiter* waiter);
  // WaitForPosted: returns once every wake posted so far has run. Not on a loop it posted to.
  void WaitForPosted();

 private:
  std::mutex mu_;
  std::condition_variable done_;
  int posted_ = 0;  // guarded by mu_: posted, not yet run
};

// LoopThread: a thread running a loop until stopped (the delivery stage's I/O threads, and a
// Maildir route's writer threads, each running its tasks).
class LoopThread {
 public:
  // Start: a thread named `name` with its loop made and running; the loop's creation error.
  static absl::StatusOr<std::unique_ptr<LoopThread>> Start(std::string name);
  // ~LoopThread: Stop, then waits for the thread (its tasks end first).
  ~LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  Loop* loop() const { return loop_; }
  // Stop: the thread ends once every task on its loop has ended. Any thread.
  void Stop();

 private:
  LoopThread() = default;
  std::thread thread_;
  Loop* loop_ = nullptr;  // the thread's; valid until Stop lets the thread end
  bool stopped_ = false;
};

}  // namespace chute::io
