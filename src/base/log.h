#pragma once

// The logger: one line per call on stderr, prefixed with the syslog priority ("<3>" error,
// "<4>" warning, "<6>" info, "<7>" debug) so that journald files each line at its level when
// chuted runs under systemd. Each line is written with one write(2), so lines from different
// threads never interleave. Any thread may log.

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

}  // namespace chute

#define LOG_ERROR(...) ::chute::Logf(::chute::LogLevel::kError, __VA_ARGS__)
#define LOG_WARNING(...) ::chute::Logf(::chute::LogLevel::kWarning, __VA_ARGS__)
#define LOG_INFO(...) ::chute::Logf(::chute::LogLevel::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) ::chute::Logf(::chute::LogLevel::kDebug, __VA_ARGS__)
