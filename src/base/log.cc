// log.cc: writes log and event lines to stderr or the journal, never waiting for a reader.

#include "base/log.h"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/check.h"
#include "base/histogram.h"

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

std::atomic<bool> g_json{false};
std::atomic<uint64_t> g_dropped{0};
// Whether stderr is a socket (systemd's stream to the journal): then lines are sent without
// waiting. Set by ProbeLogSink.
std::atomic<bool> g_stderr_socket{false};
// A line cut short by a full socket is finished within this long, or given up.
constexpr int kFinishLineWaitMs = 100;

// WriteLogLine: one log line to stderr. On a socket it never waits for room: a journal that
// does not read must not stall a shard's loop. A line the socket has no room for is dropped
// and counted (LogLinesDropped); a line cut short is finished with a short wait.
void WriteLogLine(const char* data, size_t size) {
  if (!g_stderr_socket.load(std::memory_order_relaxed)) {
    WriteAll(data, size);
    return;
  }
  size_t sent = 0;
  while (sent < size) {
    ssize_t n = send(STDERR_FILENO, data + sent, size - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd room{STDERR_FILENO, POLLOUT, 0};
      if (sent == 0 || poll(&room, 1, kFinishLineWaitMs) <= 0) {
        g_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      continue;
    }
    return;  // a broken stderr has nowhere to report to
  }
}

// The journal, when stderr is connected to it: systemd sets JOURNAL_STREAM to the device and
// inode of the stream it gave us. The socket path can be moved for tests
// (CHUTE_JOURNAL_SOCKET); nothing else reads that variable.
constexpr const char* kJournalSocket = "/run/systemd/journal/socket";
// A journal datagram larger than this would need a memfd; such lines go to stderr instead.
constexpr size_t kJournalDatagramBytesMax = 128 * 1024;

struct Journal {
  int fd = -1;
  sockaddr_un address{};
  socklen_t address_bytes = 0;
};

Journal OpenJournal() {
  Journal journal;
  const char* stream = getenv("JOURNAL_STREAM");
  if (stream == nullptr) {
    return journal;
  }
  std::pair<std::string, std::string> parts = absl::StrSplit(stream, ':');
  uint64_t dev = 0;
  uint64_t ino = 0;
  struct stat st {};
  if (!absl::SimpleAtoi(parts.first, &dev) || !absl::SimpleAtoi(parts.second, &ino) ||
      fstat(STDERR_FILENO, &st) != 0 || st.st_dev != dev || st.st_ino != ino) {
    return journal;  // stderr was redirected elsewhere since systemd started us
  }
  const char* path = getenv("CHUTE_JOURNAL_SOCKET");
  if (path == nullptr) {
    path = kJournalSocket;
  }
  if (strlen(path) >= sizeof(journal.address.sun_path)) {
    return journal;
  }
  journal.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  journal.address.sun_family = AF_UNIX;
  strcpy(journal.address.sun_path, path);
  journal.address_bytes = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + strlen(path));
  return journal;
}

const Journal& TheJournal() {
  static const Journal journal = OpenJournal();
  return journal;
}

// AppendJournalField: KEY=value, or (a value with a newline) KEY, LF, its length as 64-bit
// little-endian, the value (journald's native protocol).
void AppendJournalField(std::string* out, absl::string_view key, absl::string_view value) {
  out->append(key.data(), key.size());
  if (value.find('\n') == absl::string_view::npos) {
    out->push_back('=');
    out->append(value.data(), value.size());
  } else {
    out->push_back('\n');
    uint64_t length = value.size();
    for (int i = 0; i < 8; ++i) {
      out->push_back(static_cast<char>((length >> (8 * i)) & 0xff));
    }
    out->append(value.data(), value.size());
  }
  out->push_back('\n');
}

// SendJournal: true when the journal took the entry.
bool SendJournal(LogLevel level, absl::string_view message, absl::string_view event,
                 std::initializer_list<LogField> fields) {
  const Journal& journal = TheJournal();
  if (journal.fd < 0) {
    return false;
  }
  std::string datagram;
  AppendJournalField(&datagram, "PRIORITY", absl::StrCat(static_cast<int>(level)));
  AppendJournalField(&datagram, "SYSLOG_IDENTIFIER", "chuted");
  AppendJournalField(&datagram, "MESSAGE", message);
  if (!event.empty()) {
    AppendJournalField(&datagram, "CHUTE_EVENT", event);
  }
  for (const LogField& field : fields) {
    AppendJournalField(&datagram, absl::StrCat("CHUTE_", absl::AsciiStrToUpper(field.key)),
                       field.value);
  }
  if (datagram.size() > kJournalDatagramBytesMax) {
    return false;
  }
  // Without waiting, as on stderr: a journal that is not reading drops the entry (counted),
  // it does not stall the caller.
  ssize_t sent = sendto(journal.fd, datagram.data(), datagram.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                        reinterpret_cast<const sockaddr*>(&journal.address), journal.address_bytes);
  if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    g_dropped.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return sent == static_cast<ssize_t>(datagram.size());
}

absl::string_view LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "info";
}

void AppendJsonString(std::string* out, absl::string_view text) {
  out->push_back('"');
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(out, absl::StrFormat("\\u%04x", u));
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

bool NeedsQuotes(absl::string_view value) {
  if (value.empty()) {
    return true;
  }
  for (char c : value) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || u < 0x20 || u == 0x7f) {
      return true;
    }
  }
  return false;
}

void AppendTextValue(std::string* out, absl::string_view value) {
  if (!NeedsQuotes(value)) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('"');
  for (char c : value) {
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(c);
    } else if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(out, absl::StrFormat("\\x%02x", u));
    } else {
      out->push_back(c);
    }
  }
  out->push_back('"');
}

std::string JsonPrefix(LogLevel level) {
  std::string out = "{\"ts\":\"";
  absl::StrAppend(&out, absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
                  "\",\"level\":\"", LevelName(level), "\"");
  return out;
}

void WriteLine(LogLevel level, absl::string_view body) {
  std::string line;
  line.reserve(body.size() + 5);
  if (!g_json.load(std::memory_order_relaxed)) {
    line.push_back('<');
    line.push_back(static_cast<char>('0' + static_cast<int>(level)));
    line.push_back('>');
  }
  line.append(body.data(), body.size());
  line.push_back('\n');
  WriteLogLine(line.data(), line.size());
}

}  // namespace

void ProbeLogSink() {
  struct stat st {};
  g_stderr_socket.store(fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode));
}

uint64_t LogLinesDropped() { return g_dropped.load(std::memory_order_relaxed); }

int64_t MonotonicMicros() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void NameThisThread(absl::string_view name) {
  std::string cut(name.substr(0, 15));
  pthread_setname_np(pthread_self(), cut.c_str());
}

void SetLogJson(bool json) { g_json.store(json); }

namespace {

void AppendEventText(std::string* out, absl::string_view event,
                     std::initializer_list<LogField> fields) {
  absl::StrAppend(out, "event=", event);
  for (const LogField& field : fields) {
    absl::StrAppend(out, " ", field.key, "=");
    AppendTextValue(out, field.value);
  }
}

}  // namespace

std::string FormatEventText(absl::string_view event, std::initializer_list<LogField> fields) {
  std::string out;
  AppendEventText(&out, event, fields);
  return out;
}

std::string FormatEventJson(LogLevel level, absl::string_view event,
                            std::initializer_list<LogField> fields) {
  std::string out = JsonPrefix(level);
  absl::StrAppend(&out, ",\"event\":");
  AppendJsonString(&out, event);
  for (const LogField& field : fields) {
    out.push_back(',');
    AppendJsonString(&out, field.key);
    out.push_back(':');
    AppendJsonString(&out, field.value);
  }
  out.push_back('}');
  return out;
}

void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) {
    return;
  }
  if (TheJournal().fd >= 0 && SendJournal(level, FormatEventText(event, fields), event, fields)) {
    return;
  }
  if (g_json.load(std::memory_order_relaxed)) {
    WriteLine(level, FormatEventJson(level, event, fields));
    return;
  }
  // One buffer per event (a few per message): the priority prefix, the line, the newline.
  std::string line = {'<', static_cast<char>('0' + static_cast<int>(level)), '>'};
  line.reserve(256);
  AppendEventText(&line, event, fields);
  line.push_back('\n');
  WriteLogLine(line.data(), line.size());
}

void SetLogLevel(LogLevel level) { g_log_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= g_log_level.load(std::memory_order_relaxed);
}

void LogLine(LogLevel level, absl::string_view message) {
  if (SendJournal(level, message, "", {})) {
    return;
  }
  if (g_json.load(std::memory_order_relaxed)) {
    std::string json = JsonPrefix(level);
    absl::StrAppend(&json, ",\"msg\":");
    AppendJsonString(&json, message);
    json.push_back('}');
    WriteLine(level, json);
  } else {
    WriteLine(level, message);
  }
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
