// redis.cc: RESP commands out, replies in through hiredis's reader, over a net::UringStream.

#include "fleet/redis.h"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/check.h"
#include "net/socket.h"

namespace chute::fleet {
namespace {

// Plaintext read at a time.
constexpr size_t kReadChunkBytes = 16 * 1024;

// Convert: a hiredis reply as a RespValue; false when it has more than *budget elements.
bool Convert(const redisReply& reply, RespValue* out, size_t* budget) {
  switch (reply.type) {
    case REDIS_REPLY_STRING:
      out->type = RespValue::Type::kString;
      out->str.assign(reply.str, reply.len);
      return true;
    case REDIS_REPLY_STATUS:
      out->type = RespValue::Type::kStatus;
      out->str.assign(reply.str, reply.len);
      return true;
    case REDIS_REPLY_ERROR:
      out->type = RespValue::Type::kError;
      out->str.assign(reply.str, reply.len);
      return true;
    case REDIS_REPLY_INTEGER:
      out->type = RespValue::Type::kInteger;
      out->integer = reply.integer;
      return true;
    case REDIS_REPLY_NIL:
      out->type = RespValue::Type::kNil;
      return true;
    case REDIS_REPLY_ARRAY:
      out->type = RespValue::Type::kArray;
      if (reply.elements > *budget) {
        return false;
      }
      *budget -= reply.elements;
      out->elements.resize(reply.elements);
      for (size_t i = 0; i < reply.elements; ++i) {
        if (!Convert(*reply.element[i], &out->elements[i], budget)) {
          return false;
        }
      }
      return true;
    default:
      return false;
  }
}

}  // namespace

void AppendCommand(std::string* out, absl::Span<const absl::string_view> args) {
  absl::StrAppend(out, "*", args.size(), "\r\n");
  for (absl::string_view arg : args) {
    absl::StrAppend(out, "$", arg.size(), "\r\n", arg, "\r\n");
  }
}

RespReader::RespReader() : reader_(redisReaderCreate()) {
  CHECK_MSG(reader_ != nullptr, "hiredis: out of memory");
}

RespReader::~RespReader() { redisReaderFree(reader_); }

absl::Status RespReader::Feed(absl::string_view bytes) {
  if (reader_->len - reader_->pos + bytes.size() > kRespReplyBytesMax) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a Redis reply larger than ", kRespReplyBytesMax, " bytes"));
  }
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    return absl::InternalError(absl::StrCat("hiredis: ", reader_->errstr));
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> RespReader::Next(RespValue* out) {
  void* reply = nullptr;
  if (redisReaderGetReply(reader_, &reply) != REDIS_OK) {
    return absl::DataLossError(absl::StrCat("not a Redis reply: ", reader_->errstr));
  }
  if (reply == nullptr) {
    return false;
  }
  size_t budget = kRespElementsMax;
  *out = RespValue();
  bool ok = Convert(*static_cast<redisReply*>(reply), out, &budget);
  freeReplyObject(reply);
  if (!ok) {
    return absl::ResourceExhaustedError(
        absl::StrCat("a Redis reply with more than ", kRespElementsMax, " elements"));
  }
  return true;
}

io::Task<absl::StatusOr<std::unique_ptr<RedisConnection>>> RedisConnection::Open(
    io::Loop* loop, std::string target, std::string password, absl::Duration timeout,
    const std::atomic<int64_t>* stop_at_unix_ms) {
  absl::StatusOr<net::SocketAddress> address = net::ParseConnectTarget(target);
  if (!address.ok()) {
    co_return absl::InvalidArgumentError(
        absl::StrCat("redis ", target, ": ", address.status().message()));
  }
  net::StreamOptions options;
  options.io_timeout = timeout;
  options.stop_at_unix_ms = stop_at_unix_ms;
  absl::StatusOr<net::UringStream::Ptr> stream = co_await net::UringStream::Connect(
      loop, address->storage, address->length, absl::StrCat("redis ", target), options);
  if (!stream.ok()) {
    co_return stream.status();
  }
  std::unique_ptr<RedisConnection> connection(
      new RedisConnection(*std::move(stream), std::move(target)));
  if (!password.empty()) {
    std::string command;
    AppendCommand(&command, {"AUTH", password});
    absl::StatusOr<std::vector<RespValue>> replies =
        co_await connection->Exchange(std::move(command), 1, timeout);
    if (!replies.ok()) {
      co_return replies.status();
    }
    if ((*replies)[0].is_error()) {
      co_return absl::PermissionDeniedError(
          absl::StrCat("redis ", connection->target_, " refused AUTH: ", (*replies)[0].str));
    }
  }
  co_return connection;
}

io::Task<absl::StatusOr<std::vector<RespValue>>> RedisConnection::Exchange(std::string commands,
                                                                           size_t count,
                                                                           absl::Duration timeout) {
  if (spent_) {
    co_return absl::FailedPreconditionError("the Redis connection failed before");
  }
  spent_ = true;  // until every reply is in
  absl::Time deadline = absl::Now() + timeout;
  stream_->set_io_timeout(timeout);
  absl::Status written = co_await stream_->Write(commands, /*wait=*/false);
  if (!written.ok()) {
    co_return written;
  }
  std::vector<RespValue> replies;
  replies.reserve(count);
  std::string input;
  while (replies.size() < count) {
    RespValue value;
    absl::StatusOr<bool> next = reader_.Next(&value);
    if (!next.ok()) {
      co_return absl::UnavailableError(
          absl::StrCat(stream_->peer(), ": ", next.status().message()));
    }
    if (*next) {
      replies.push_back(std::move(value));
      continue;
    }
    input.clear();
    absl::Status read =
        co_await stream_->Read(&input, kReadChunkBytes, deadline, nullptr, "reading a reply from");
    if (!read.ok()) {
      co_return read;
    }
    absl::Status fed = reader_.Feed(input);
    if (!fed.ok()) {
      co_return absl::UnavailableError(absl::StrCat(stream_->peer(), ": ", fed.message()));
    }
  }
  spent_ = false;
  co_return replies;
}

}  // namespace chute::fleet
