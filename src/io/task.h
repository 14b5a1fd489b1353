#pragma once

// Task<T>: a C++20 coroutine that an io::Loop runs (docs/architecture.md, Delivery I/O). A task
// starts when it is awaited (co_await task) or spawned (Loop::Spawn), and hands its result to
// the task that awaited it when it ends, resuming that one at once (symmetric transfer, so a
// chain of tasks does not grow the stack). Tasks are how a delivery thread keeps many
// connections going on one ring: each connection's protocol reads as straight-line code, and
// every wait (a reply, a connect, a sleep until work comes) suspends only its own task.
//
// Rules that keep a task safe (the compiler checks none of them):
// - A task's parameters are kept in its frame: take values, or references and views whose
//   referent outlives the task (the caller awaits at once, so its locals do).
// - Await a named task or a call whose arguments are named: no temporaries that the task
//   refers to after its first suspension (a lambda converted to std::function, say).
// - Never suspend while holding a mutex.
//
// chute builds with -fno-exceptions: a task cannot throw, so unhandled_exception never runs.

#include <coroutine>
#include <cstdlib>
#include <optional>
#include <utility>

namespace chute::io {

namespace internal {

// FinalAwaiter: at a task's end, resumes the task that awaited it (if any).
struct FinalAwaiter {
  bool await_ready() const noexcept { return false; }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> done) noexcept {
    std::coroutine_handle<> next = done.promise().continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() const noexcept {}
};

struct PromiseBase {
  std::coroutine_handle<> continuation;
  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { std::abort(); }
};

}  // namespace internal

template <typename T = void>
class [[nodiscard]] Task;

namespace internal {

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object();
  template <typename U>
  void return_value(U&& result) {
    value.emplace(std::forward<U>(result));
  }
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object();
  void return_void() {}
};

// TaskBase: what every Task is: the owner of its coroutine, started by the task that awaits it.
template <typename T>
class TaskBase {
 public:
  TaskBase(TaskBase&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  TaskBase& operator=(TaskBase&&) = delete;
  TaskBase(const TaskBase&) = delete;
  ~TaskBase() {
    if (handle_) {
      handle_.destroy();
    }
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    handle_.promise().continuation = awaiting;
    return handle_;
  }

 protected:
  explicit TaskBase(std::coroutine_handle<Promise<T>> handle) : handle_(handle) {}
  std::coroutine_handle<Promise<T>> handle_;
};

}  // namespace internal

template <typename T>
class [[nodiscard]] Task : public internal::TaskBase<T> {
 public:
  using promise_type = internal::Promise<T>;
  T await_resume() { return std::move(*this->handle_.promise().value); }

 private:
  friend promise_type;
  using internal::TaskBase<T>::TaskBase;
};

template <>
class [[nodiscard]] Task<void> : public internal::TaskBase<void> {
 public:
  using promise_type = internal::Promise<void>;
  void await_resume() {}

 private:
  friend promise_type;
  using internal::TaskBase<void>::TaskBase;
};

namespace internal {

template <typename T>
Task<T> Promise<T>::get_return_object() {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}

inline Task<void> Promise<void>::get_return_object() {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}

}  // namespace internal

}  // namespace chute::io
