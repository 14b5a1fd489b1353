#pragma once

// The fleet's Redis client (docs/fleet.md): RESP commands written by chute, replies read by
// hiredis's reader (only its reader: the socket is chute's own, a net::UringStream on an
// io::Loop, so a Redis exchange is a task's like a delivery connection's and never blocks a
// thread).
//
// RedisConnection is one connection that sends a pipeline of commands and reads as many
// replies, every exchange bounded by a timeout. A Redis error reply ("-NOSCRIPT ...",
// "-WRONGTYPE ...") is a value the caller looks at; a failure (connect, timeout, closed, a
// protocol error, a reply past kRespReplyBytesMax) leaves the connection unusable, and the
// caller opens a new one.
//
// Threads: a connection is its loop's (one task at a time uses it). The encoder and RespValue
// are plain values.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "io/loop.h"
#include "io/task.h"
#include "net/uring_stream.h"

struct redisReader;

namespace chute::fleet {

// A reply (or the bytes of replies not complete yet) may take this much at most: the fleet's
// replies are a few integers, so a larger one is a Redis that is not what chute expects.
inline constexpr size_t kRespReplyBytesMax = 1 << 20;
// Elements of one array reply, nested arrays counted, at most.
inline constexpr size_t kRespElementsMax = 4096;

// RespValue: one Redis reply, copied out of the reader.
struct RespValue {
  enum class Type : uint8_t { kString, kArray, kInteger, kNil, kStatus, kError };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;  // kString, kStatus, kError
  std::vector<RespValue> elements;

  bool is_error() const { return type == Type::kError; }
};

// AppendCommand: `args` as one RESP command (an array of bulk strings) at the end of `out`.
void AppendCommand(std::string* out, absl::Span<const absl::string_view> args);

// RespReader: replies out of bytes as they arrive (hiredis's reader, bounded).
class RespReader {
 public:
  RespReader();
  ~RespReader();
  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  // Feed: bytes from the connection. An error when the reader holds more than
  // kRespReplyBytesMax of replies not taken yet.
  absl::Status Feed(absl::string_view bytes);
  // Next: a complete reply into *out (true), none yet (false), or a protocol error.
  absl::StatusOr<bool> Next(RespValue* out);

 private:
  redisReader* reader_;
};

class RedisConnection {
 public:
  // Open: connects to `target` ("host:port" or "unix:/path"), and sends AUTH with `password`
  // when it is not empty, within `timeout`. A task on `loop`, which outlives the connection.
  // `stop_at_unix_ms` as net::StreamOptions's.
  static io::Task<absl::StatusOr<std::unique_ptr<RedisConnection>>> Open(
      io::Loop* loop, std::string target, std::string password, absl::Duration timeout,
      const std::atomic<int64_t>* stop_at_unix_ms);
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Exchange: sends `commands` (`count` RESP commands, from AppendCommand) and reads `count`
  // replies, all within `timeout`. Unavailable on a failure (the connection is then spent).
  io::Task<absl::StatusOr<std::vector<RespValue>>> Exchange(std::string commands, size_t count,
                                                            absl::Duration timeout);
  const std::string& target() const { return target_; }

 private:
  RedisConnection(net::UringStream::Ptr stream, std::string target)
      : stream_(std::move(stream)), target_(std::move(target)) {}

  net::UringStream::Ptr stream_;
  std::string target_;
  RespReader reader_;
  bool spent_ = false;  // a failed exchange left replies unread
};

}  // namespace chute::fleet
