#include "base/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <string>

#include "base/check.h"

namespace chute {
namespace {

std::atomic<int> g_log_level{static_cast<int>(LogLevel::kInfo)};

// WriteAll: writes the whole buffer to stderr, retrying on EINTR and short writes. A failing
// stderr has nowhere to report to, so other errors drop the line.
void WriteAll(const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(STDERR_FILENO, data, size);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

void SetLogLevel(LogLevel level) { g_log_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= g_log_level.load(std::memory_order_relaxed);
}

void LogLine(LogLevel level, absl::string_view message) {
  std::string line;
  line.reserve(message.size() + 5);
  line.push_back('<');
  line.push_back(static_cast<char>('0' + static_cast<int>(level)));
  line.push_back('>');
  line.append(message.data(), message.size());
  line.push_back('\n');
  WriteAll(line.data(), line.size());
}

namespace base_internal {

void CheckFailed(const char* file, int line, const char* condition, const char* message) {
  char buffer[1024];
  int n = std::snprintf(buffer, sizeof(buffer), "<2>CHECK failed: %s:%d: %s%s%s\n", file, line,
                        condition, message[0] != '\0' ? ": " : "", message);
  if (n > 0) {
    WriteAll(buffer, std::min(static_cast<size_t>(n), sizeof(buffer) - 1));
  }
  std::abort();
}

}  // namespace base_internal
bool LogLimiter::Admit(int64_t interval_s, uint64_t* suppressed) {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  int64_t now_s = ts.tv_sec;
  int64_t next = next_s_.load(std::memory_order_relaxed);
  if (now_s < next || !next_s_.compare_exchange_strong(next, now_s + interval_s)) {
    held_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *suppressed = held_.exchange(0, std::memory_order_relaxed);
  return true;
}

}  // namespace chute
