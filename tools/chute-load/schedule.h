#pragma once

// Schedule: which message a session may start now. Open loop (a rate): message i is due at
// start + i / rate, whether or not the server kept up, and its latency is measured from that
// time, so a stall the server causes shows in the percentiles instead of slowing the sender
// down (no coordinated omission). Closed loop (no rate): a message is due as soon as a
// session is free, and its scheduled time is when it is taken. Both stop at the message
// count (0 = none) and at the end time. The backlog of due messages is implicit (an index),
// so it takes no memory however far behind the server falls. Pure; one thread owns one.

#include <algorithm>
#include <cstdint>

namespace chute::load {

struct Job {
  uint64_t seq = 0;          // unique across the run's threads
  int64_t scheduled_us = 0;  // when it was due
};

class Schedule {
 public:
  // Schedule: `count` messages (0 = unbounded) from `start_us` until `end_us`, at `rate_per_s`
  // (0 = closed loop). Sequence numbers are seq_base + i * seq_stride (one stride per thread).
  Schedule(int64_t start_us, int64_t end_us, uint64_t count, double rate_per_s, uint64_t seq_base,
           uint64_t seq_stride)
      : start_us_(start_us),
        end_us_(end_us),
        count_(count),
        rate_per_s_(rate_per_s),
        seq_base_(seq_base),
        seq_stride_(seq_stride) {}

  // Take: the next due message at `now_us`, if any; false when none is due (yet, or any more).
  bool Take(int64_t now_us, Job* job) {
    if (Exhausted(now_us)) {
      return false;
    }
    int64_t due = DueTime(taken_);
    if (due > now_us) {
      return false;
    }
    job->seq = seq_base_ + taken_ * seq_stride_;
    job->scheduled_us = rate_per_s_ > 0 ? due : now_us;
    ++taken_;
    return true;
  }
  // Exhausted: no more messages will be due: the count is reached or the end time passed.
  bool Exhausted(int64_t now_us) const {
    return (count_ != 0 && taken_ >= count_) || now_us >= end_us_;
  }
  // NextDueUs: when the next message falls due (open loop), else now.
  int64_t NextDueUs(int64_t now_us) const { return rate_per_s_ > 0 ? DueTime(taken_) : now_us; }
  uint64_t taken() const { return taken_; }
  bool open_loop() const { return rate_per_s_ > 0; }
  // Available: messages a new connection could take now: the due ones (open loop) or the
  // ones left (closed loop; UINT64_MAX when only time bounds the run).
  uint64_t Available(int64_t now_us) const {
    if (rate_per_s_ > 0) {
      return Behind(now_us);
    }
    return count_ == 0 ? UINT64_MAX : count_ - std::min(count_, taken_);
  }
  // Behind: due messages not yet taken (open loop; 0 in closed loop).
  uint64_t Behind(int64_t now_us) const {
    if (rate_per_s_ <= 0 || now_us < start_us_) {
      return 0;
    }
    uint64_t due =
        static_cast<uint64_t>(static_cast<double>(now_us - start_us_) * rate_per_s_ / 1e6) + 1;
    if (count_ != 0 && due > count_) {
      due = count_;
    }
    return due > taken_ ? due - taken_ : 0;
  }

 private:
  int64_t DueTime(uint64_t index) const {
    if (rate_per_s_ <= 0) {
      return start_us_;
    }
    return start_us_ + static_cast<int64_t>(static_cast<double>(index) * 1e6 / rate_per_s_);
  }
  int64_t start_us_;
  int64_t end_us_;
  uint64_t count_;
  double rate_per_s_;
  uint64_t seq_base_;
  uint64_t seq_stride_;
  uint64_t taken_ = 0;
};

}  // namespace chute::load
