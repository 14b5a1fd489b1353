// loop.cc: a thread's io_uring event loop that runs many tasks, and the thread that runs one.

#include "io/loop.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>

#include "absl/time/clock.h"
#include "base/check.h"
#include "base/log.h"

namespace chute::io {
namespace {

constexpr uint8_t kOpWakeup = 1;
constexpr uint8_t kOpWakeupCancel = 2;

thread_local Loop* current_loop = nullptr;

__kernel_timespec Timespec(absl::Duration d) {
  int64_t ns = std::max<int64_t>(absl::ToInt64Nanoseconds(d), 0);
  return __kernel_timespec{ns / 1'000'000'000, ns % 1'000'000'000};
}

}  // namespace

Waiter::~Waiter() { CHECK_MSG(!handle_, "a waiter destroyed while a task waits on it"); }

absl::StatusOr<std::unique_ptr<Loop>> Loop::Create(unsigned entries) {
  absl::StatusOr<std::unique_ptr<Ring>> ring = Ring::Create(entries);
  if (!ring.ok()) {
    return ring.status();
  }
  std::unique_ptr<Loop> loop(new Loop(*std::move(ring)));
  loop->wakeup_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (loop->wakeup_fd_ < 0) {
    return ErrnoStatus(errno, "eventfd");
  }
  loop->ArmWakeup();
  return loop;
}

Loop::Loop(std::unique_ptr<Ring> ring) : ring_(std::move(ring)) {}

absl::StatusOr<Loop*> Loop::ForThisThread() {
  thread_local std::unique_ptr<Loop> own;
  if (own == nullptr) {
    absl::StatusOr<std::unique_ptr<Loop>> made = Create(kLoopEntries);
    if (!made.ok()) {
      return made.status();
    }
    own = *std::move(made);
  }
  return own.get();
}

Loop* Loop::Current() { return current_loop; }

Loop::~Loop() {
  CHECK_MSG(tasks_ == 0, "a loop destroyed with tasks alive");
  CHECK(!running_);
  if (wakeup_armed_) {
    io_uring_sqe* sqe = Sqe(this, kOpWakeupCancel);
    io_uring_prep_cancel_fd(sqe, wakeup_fd_, 0);
  }
  absl::Time until = absl::Now() + kLoopDrainMax;
  while (pending_ > 0 && absl::Now() < until) {
    Turn(absl::Milliseconds(100));
  }
  if (pending_ > 0) {
    // Their buffers may still be written by the kernel: the ring's memory goes with it, and
    // whoever owns them must have left them (net::UringStream does).
    LOG_ERROR("io loop: %d operation(s) never completed", static_cast<int64_t>(pending_));
  }
  std::lock_guard<std::mutex> lock(post_mu_);  // a Post still writing finishes first (Post)
  if (wakeup_fd_ >= 0) {
    close(wakeup_fd_);
  }
}

io_uring_sqe* Loop::Sqe(Completion* owner, uint8_t op) {
  io_uring_sqe* sqe = ring_->Sqe();
  io_uring_sqe_set_data64(sqe, PackUserData(op, reinterpret_cast<uintptr_t>(owner)));
  ++pending_;
  return sqe;
}

void Loop::ArmWakeup() {
  // A poll, not a read: a read of a non-blocking eventfd may complete at once with -EAGAIN
  // where the kernel cannot wait for it, which would spin the loop.
  io_uring_sqe* sqe = Sqe(this, kOpWakeup);
  io_uring_prep_poll_add(sqe, wakeup_fd_, POLLIN);
  wakeup_armed_ = true;
}

void Loop::OnCompletion(const io_uring_cqe& cqe) {
  if (UserDataOp(cqe.user_data) != kOpWakeup) {
    return;  // the cancel of the wake-up read, at the end
  }
  wakeup_armed_ = false;
  if (cqe.res == -ECANCELED) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    wakeup_written_ = false;
    ssize_t got = read(wakeup_fd_, &wakeup_value_, sizeof(wakeup_value_));  // resets it
    (void)got;  // EAGAIN: nothing was written since the last read
  }
  ArmWakeup();
}

void Loop::Suspend(Waiter* waiter, std::coroutine_handle<> task, absl::Time until) {
  CHECK_MSG(!waiter->handle_, "two tasks wait on one waiter");
  waiter->handle_ = task;
  if (until != absl::InfiniteFuture()) {
    waiter->timer_ = timers_.emplace(until, waiter);
    waiter->timed_ = true;
  }
}

void Loop::Wake(Waiter* waiter) {
  if (!waiter->handle_) {
    return;
  }
  if (waiter->timed_) {
    timers_.erase(waiter->timer_);
    waiter->timed_ = false;
  }
  ready_.push_back(std::exchange(waiter->handle_, {}));
}

void Loop::FireTimers(absl::Time now) {
  while (!timers_.empty() && timers_.begin()->first <= now) {
    Waiter* waiter = timers_.begin()->second;
    timers_.erase(timers_.begin());
    waiter->timed_ = false;
    ready_.push_back(std::exchange(waiter->handle_, {}));
  }
}

void Loop::RunReady() {
  while (!ready_.empty()) {
    std::coroutine_handle<> task = ready_.front();
    ready_.pop_front();
    task.resume();
  }
}

Loop::Detached Loop::RunDetached(Loop* loop, Task<void> task) {
  co_await task;
  --loop->tasks_;
}

void Loop::Spawn(Task<void> task) {
  ++tasks_;
  Loop* previous = std::exchange(current_loop, this);
  bool was_running = std::exchange(running_, true);  // a task is on the stack from here
  RunDetached(this, std::move(task));                // runs to its first suspension
  running_ = was_running;
  current_loop = previous;
}

void Loop::Post(std::function<void()> fn) {
  // The eventfd is written under post_mu_, which the destructor takes before it closes it: a
  // loop that Stop let end (its thread sees stop_ at once) cannot close the descriptor, or be
  // freed, while the Post that stopped it is still writing (ThreadSanitizer found the stopping
  // thread's write racing the loop thread's close).
  std::lock_guard<std::mutex> lock(post_mu_);
  PostLocked(std::move(fn));
}

void Loop::PostLocked(std::function<void()> fn) {
  posted_.push_back(std::move(fn));
  if (!std::exchange(wakeup_written_, true)) {
    uint64_t one = 1;
    // EAGAIN (the counter is full) means the loop wakes anyway.
    ssize_t wrote = write(wakeup_fd_, &one, sizeof(one));
    (void)wrote;
  }
}

void Loop::RunPosted() {
  std::vector<std::function<void()>> posted;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted.swap(posted_);
  }
  for (std::function<void()>& fn : posted) {
    fn();
  }
}

void Loop::Stop() {
  // stop_ is set under post_mu_ too: the loop may end (and be freed) as soon as it sees it,
  // and its destructor waits for post_mu_, so nothing here touches it after that.
  std::lock_guard<std::mutex> lock(post_mu_);
  stop_.store(true, std::memory_order_release);
  PostLocked([] {});
}

void Loop::Turn(absl::Duration wait_max) {
  Loop* previous = std::exchange(current_loop, this);
  bool was_running = std::exchange(running_, true);
  RunPosted();
  RunReady();
  absl::Duration wait = wait_max;
  if (!timers_.empty()) {
    wait = std::min(wait, timers_.begin()->first - absl::Now());
  }
  if (stop_.load(std::memory_order_acquire) && tasks_ == 0) {
    wait = absl::ZeroDuration();
  }
  __kernel_timespec timeout = Timespec(wait);
  io_uring_cqe* cqe = nullptr;
  int ret = io_uring_submit_and_wait_timeout(ring_->raw(), &cqe, 1, &timeout, nullptr);
  if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY) {
    // Nothing to do but try again, a little later (each waiting task has its own deadline).
    LOG_ERROR_EVERY(10, "io loop: io_uring_enter: %s", strerror(-ret));
    absl::SleepFor(absl::Milliseconds(10));
  }
  ring_->ForEachCqe([this](const io_uring_cqe& c) {
    --pending_;
    reinterpret_cast<Completion*>(static_cast<uintptr_t>(UserDataCookie(c.user_data)))
        ->OnCompletion(c);
  });
  FireTimers(absl::Now());
  RunReady();
  running_ = was_running;
  current_loop = previous;
}

void Loop::Run() {
  CHECK_MSG(!running_, "a loop run from inside itself");
  while (tasks_ > 0) {
    Turn(kLoopWaitMax);
  }
  // With every task ended, what is left in the ring (but the wake-up read) is the cancels of
  // streams given back by them: waited for now, so that their descriptors go at once.
  absl::Time until = absl::Now() + kLoopDrainMax;
  while (pending_ > (wakeup_armed_ ? 1u : 0u) && absl::Now() < until) {
    Turn(absl::Milliseconds(100));
  }
}

void Loop::RunUntilStopped() {
  CHECK(!running_);
  while (true) {
    Turn(kLoopWaitMax);
    if (stop_.load(std::memory_order_acquire) && tasks_ == 0) {
      // What was posted before the stop runs first: it may start a task (a posted Spawn, as
      // the recipient verifier's and the fleet's Start do), which then runs to its end.
      Turn(absl::ZeroDuration());
      if (tasks_ == 0) {
        break;
      }
    }
  }
  RunPosted();  // posted after that (wakes: no task is left to be woken by them)
}

void RemoteWakes::Wake(Loop* loop, Waiter* waiter) {
  if (Loop::Current() == loop) {
    loop->Wake(waiter);  // it resumes in this turn
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++posted_;
  }
  loop->Post([this, loop, waiter] {
    loop->Wake(waiter);
    std::lock_guard<std::mutex> lock(mu_);
    --posted_;
    done_.notify_all();
  });
}

void RemoteWakes::WaitForPosted() {
  std::unique_lock<std::mutex> lock(mu_);
  done_.wait(lock, [this] { return posted_ == 0; });
}

absl::StatusOr<std::unique_ptr<LoopThread>> LoopThread::Start(std::string name) {
  std::unique_ptr<LoopThread> thread(new LoopThread());
  std::mutex mu;
  std::condition_variable made;
  bool done = false;
  absl::Status status;
  thread->thread_ = std::thread([&, self = thread.get()] {
    absl::StatusOr<std::unique_ptr<Loop>> loop = Loop::Create(kLoopEntries);
    {
      std::lock_guard<std::mutex> lock(mu);
      if (loop.ok()) {
        self->loop_ = loop->get();
      } else {
        status = loop.status();
      }
      done = true;
      made.notify_one();
    }
    if (!loop.ok()) {
      return;
    }
    (*loop)->RunUntilStopped();
  });
  pthread_setname_np(thread->thread_.native_handle(), name.substr(0, 15).c_str());
  std::unique_lock<std::mutex> lock(mu);
  made.wait(lock, [&] { return done; });
  if (!status.ok()) {
    lock.unlock();
    thread->thread_.join();
    return status;
  }
  return thread;
}

void LoopThread::Stop() {
  if (loop_ != nullptr && !std::exchange(stopped_, true)) {
    loop_->Stop();
  }
}

LoopThread::~LoopThread() {
  Stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace chute::io
