#pragma once

// The logger: one line per call on stderr, prefixed with the syslog priority ("<3>" error,
// "<4>" warning, "<6>" info, "<7>" debug) so that journald files each line at its level when
// chuted runs under systemd. Each line is written with one write(2), so lines from different
// threads never interleave. Any thread may log.

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace chute {

enum class LogLevel { kError = 3, kWarning = 4, kInfo = 6, kDebug = 7 };

// SetLogLevel: lines less severe than `level` are dropped. Default kInfo. Any thread.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// LogLine: writes "<N>" + message + "\n" to stderr (or, with SetLogJson, one JSON object with
// "level" and "msg"; or, when stderr is the journal, one journal entry).
void LogLine(LogLevel level, absl::string_view message);

// NameThisThread: the calling thread's name as top -H, ps -L and /proc show it (at most 15
// bytes: longer names are cut).
void NameThisThread(absl::string_view name);

// ProbeLogSink: looks at what stderr is. When it is a socket (systemd's stream to the journal),
// lines are sent without waiting for room: a journal that stops reading must not stall the
// thread that logs (a shard's loop); such lines are dropped and counted. chuted calls it at
// start, tests after they redirect stderr. Until then stderr is written as a file.
void ProbeLogSink();
// LogLinesDropped: lines (and journal entries) dropped for want of room since start.
uint64_t LogLinesDropped();

// SetLogJson: JSON lines instead of text from now on ([log] json). Set once at start.
void SetLogJson(bool json);

// LogField: one key=value of an event. The value is any absl::AlphaNum (a string, a number);
// it refers to the caller's data and temporaries, so a LogField lives only for the LogEvent
// call it is written in.
struct LogField {
  LogField(absl::string_view key_in, const absl::AlphaNum& value_in)
      : key(key_in), value(value_in.Piece()) {}
  absl::string_view key;  // snake_case ASCII
  absl::string_view value;
};

// LogEvent: one structured line for an event an operator needs (a connection, an AUTH, a
// message accepted, a delivery attempt): "event=NAME key=value ..." with values quoted when
// they need it, or a JSON object with "event" and the fields. When stderr is connected to the
// journal (systemd sets JOURNAL_STREAM), the entry goes over journald's native protocol with
// every field also as CHUTE_<KEY>= (CHUTE_QUEUE_ID= among them), so `journalctl
// CHUTE_QUEUE_ID=...` finds a message's lines. Any thread; one write per event.
void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields);

// FormatEventText / FormatEventJson: the line LogEvent writes (without the priority prefix
// and newline); exposed for tests.
std::string FormatEventText(absl::string_view event, std::initializer_list<LogField> fields);
std::string FormatEventJson(LogLevel level, absl::string_view event,
                            std::initializer_list<LogField> fields);

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
      absl::StrAppend(&line, " (and ", suppressed, " more like it in the last ", interval_s, " s)");
    }
    LogLine(level, line);
  }
}

}  // namespace chute

// LOG_*_EVERY(seconds, format, ...): a repeated event logs one line per interval with a count,
// never a line per occurrence (an EMFILE storm, a full disk, a dead smarthost).
#define CHUTE_LOG_EVERY(level, seconds, ...)                                  \
  do {                                                                        \
    static ::chute::LogLimiter chute_log_limiter;                             \
    ::chute::LogfLimited(chute_log_limiter, (seconds), (level), __VA_ARGS__); \
  } while (false)
#define LOG_ERROR_EVERY(seconds, ...) \
  CHUTE_LOG_EVERY(::chute::LogLevel::kError, seconds, __VA_ARGS__)
#define LOG_WARNING_EVERY(seconds, ...) \
  CHUTE_LOG_EVERY(::chute::LogLevel::kWarning, seconds, __VA_ARGS__)
#define LOG_INFO_EVERY(seconds, ...) CHUTE_LOG_EVERY(::chute::LogLevel::kInfo, seconds, __VA_ARGS__)

#define LOG_ERROR(...) ::chute::Logf(::chute::LogLevel::kError, __VA_ARGS__)
#define LOG_WARNING(...) ::chute::Logf(::chute::LogLevel::kWarning, __VA_ARGS__)
#define LOG_INFO(...) ::chute::Logf(::chute::LogLevel::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) ::chute::Logf(::chute::LogLevel::kDebug, __VA_ARGS__)
