#pragma once

// The logger: one line per call on stderr, prefixed with the syslog priority ("<3>" error,
// "<4>" warning, "<6>" info, "<7>" debug) so that journald files each line at its level when
// chuted runs under systemd. Each line is written with one write(2), so lines from different
// threads never interleave. Any thread may log.

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#include "absl/strings/str_format.h"

namespace chute {

enum class LogLevel { kError = 3, kWarning = 4, kInfo = 6, kDebug = 7 };

// SetLogLevel: lines less severe than `level` are dropped. Default kInfo. Any thread.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// LogLine: writes "<N>" + message + "\n" to stderr.
void LogLine(LogLevel level, absl::string_view message);

template <typename... Args>
void Logf(LogLevel level, const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (LogEnabled(level)) {
    LogLine(level, absl::StrFormat(format, args...));
  }
}

// LogLimiter: one per call site (LOG_*_EVERY). Admit() says whether a line may be written
// now: at most one per `interval_s`; the lines held back meanwhile are counted and reported
// with the next one that is written ("... (and 1234 more like it)"). Lock-free; any thread.
class LogLimiter {
 public:
  // Admit: true when a line may be written; `suppressed` gets how many were held back since
  // the last one.
  bool Admit(int64_t interval_s, uint64_t* suppressed);

 private:
  std::atomic<int64_t> next_s_{0};
  std::atomic<uint64_t> held_{0};
};

template <typename... Args>
void LogfLimited(LogLimiter& limiter, int64_t interval_s, LogLevel level,
                 const absl::FormatSpec<Args...>& format, const Args&... args) {
  uint64_t suppressed = 0;
  if (LogEnabled(level) && limiter.Admit(interval_s, &suppressed)) {
    std::string line = absl::StrFormat(format, args...);
    if (suppressed > 0) {
      absl::StrAppend(&line, " (and ", suppressed, " more like it in the last ", interval_s,
                      " s)");
    }
    LogLine(level, line);
  }
}

}  // namespace chute

// LOG_*_EVERY(seconds, format, ...): a repeated event logs one line per interval with a count,
// never a line per occurrence (an EMFILE storm, a full disk, a dead smarthost).
#define CHUTE_LOG_EVERY(level, seconds, ...)                                         \
  do {                                                                               \
    static ::chute::LogLimiter chute_log_limiter;                                    \
    ::chute::LogfLimited(chute_log_limiter, (seconds), (level), __VA_ARGS__);        \
  } while (false)
#define LOG_ERROR_EVERY(seconds, ...) \
  CHUTE_LOG_EVERY(::chute::LogLevel::kError, seconds, __VA_ARGS__)
#define LOG_WARNING_EVERY(seconds, ...) \
  CHUTE_LOG_EVERY(::chute::LogLevel::kWarning, seconds, __VA_ARGS__)
#define LOG_INFO_EVERY(seconds, ...) \
  CHUTE_LOG_EVERY(::chute::LogLevel::kInfo, seconds, __VA_ARGS__)

#define LOG_ERROR(...) ::chute::Logf(::chute::LogLevel::kError, __VA_ARGS__)
#define LOG_WARNING(...) ::chute::Logf(::chute::LogLevel::kWarning, __VA_ARGS__)
#define LOG_INFO(...) ::chute::Logf(::chute::LogLevel::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) ::chute::Logf(::chute::LogLevel::kDebug, __VA_ARGS__)
