#pragma once

// Stats: what one thread's sessions measured: counters, latency histograms (microseconds)
// and errors by kind. One thread owns one; the run merges them at the end (Merge) and, for
// the progress line, reads a few counters from the others (relaxed atomics).
//
// An error key is "<phase> <code> <enhanced code>" for an unexpected reply (e.g. "banner 421
// 4.7.0", "auth 454 4.7.0"), "<phase> timeout", "<phase> closed" when the server closed the
// connection unexpectedly, or "connect <errno name>".

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "tools/chute-load/histogram.h"

namespace chute::load {

struct Stats {
  Histogram banner_us;   // TCP connect started -> 220 banner (implicit TLS: includes handshake)
  Histogram tls_us;      // TLS handshake (after STARTTLS's 220, or right after connect)
  Histogram auth_us;     // AUTH sent -> 235
  Histogram data_us;     // end of data sent -> 250
  Histogram message_us;  // scheduled send time (open loop) or MAIL sent (closed) -> 250

  uint64_t connections_started = 0;
  uint64_t connections_established = 0;  // TCP connected
  uint64_t banners = 0;                  // 220 greetings
  uint64_t tls_handshakes = 0;
  uint64_t auths = 0;                  // 235s
  uint64_t sessions_ready = 0;         // reached the point where a message may start
  uint64_t recipients = 0;             // accepted recipients of accepted messages
  uint64_t message_bytes = 0;          // bytes of accepted messages
  std::atomic<uint64_t> messages{0};   // 250 after end of data
  std::atomic<uint64_t> in_flight{0};  // messages started, not yet answered
  std::atomic<uint64_t> error_count{0};
  std::map<std::string, uint64_t> errors;
  std::atomic<uint64_t>* run_errors = nullptr;  // the run's total over threads, if shared

  void AddError(const std::string& key) {
    ++errors[key];
    error_count.fetch_add(1, std::memory_order_relaxed);
    if (run_errors != nullptr) {
      run_errors->fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Merge: adds `other` into this one (the run's end; no session runs any more).
  void Merge(const Stats& other);
};

}  // namespace chute::load
