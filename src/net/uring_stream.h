#pragma once

// UringStream: one connected socket, plain or TLS, whose I/O is a task's on an io::Loop
// (docs/architecture.md, Network and TLS): the delivery stage's connections and probes
// (delivery/smtp_client.h), many to a loop, and the OAuth key fetcher's request (https_get.h).
// Never a shard's loop. The bytes go through net::Transport, the stream the shards use, so that
// chute has one driver of TlsStream. A wait queues the send and the receive it needs and
// suspends the task; the loop's next turn submits them with every other connection's in one
// io_uring_enter.
//
// Every wait is bounded twice: by a deadline, and by a stop flag looked at every
// kStreamStopCheckInterval, so that a stopping chuted never waits for a silent peer. Each
// failure is an Unavailable Status whose message names the peer ("timeout reading from
// 127.0.0.1:24", "connect to 127.0.0.1:24: Connection refused", "TLS handshake with
// 192.0.2.25:25 failed: ..."), and failure() tells its kind, which a caller maps to its own
// codes (delivery: 4.4.1, 4.4.2, 4.7.5).
//
// Lifetime: an operation may still be in the ring when a call returns (a send left to go with
// the next wait, a receive after a timeout). A stream is given back through its Ptr, which
// cancels what is left: inside a running loop the stream frees itself when the last
// completion comes (so no completion ever refers to memory that is gone); outside one it turns
// its loop until then.
//
// One thread: its loop's. One task at a time uses a stream.

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "io/loop.h"
#include "io/ring.h"
#include "io/task.h"
#include "net/tls.h"
#include "net/transport.h"

namespace chute::net {

// How often a wait looks at the stop flag.
inline constexpr absl::Duration kStreamStopCheckInterval = absl::Milliseconds(200);
// Plaintext goes to the transport this much at a time, each piece sent before the next, so
// that a large write is not held twice more (as ciphertext and as the copy being sent).
inline constexpr size_t kStreamWriteChunkBytes = 64 * 1024;
// Bytes one receive may bring (a reply burst, a TLS record and some).
inline constexpr size_t kUringStreamRecvBytes = 16 * 1024;

// StreamFailure: what the last failure was.
enum class StreamFailure {
  kNone,
  kConnect,  // the connection could not be made (refused, unreachable, timed out)
  kIo,       // a read or write failed, timed out, or met the peer's close
  kTls,      // the handshake failed (a certificate that does not verify) or a record was bad
};

struct StreamOptions {
  // io_timeout: how long one wait (connecting, a stalled write) may last. A read takes its
  // own deadline.
  absl::Duration io_timeout = absl::Seconds(30);
  // stop_at_unix_ms: when not null and nonzero, the wall-clock time (Unix ms) after which
  // every wait gives up ("chuted is stopping: gave up reading from ...").
  const std::atomic<int64_t>* stop_at_unix_ms = nullptr;
};

class UringStream : private ReceiveBuffers, private TransportReader, private io::Completion {
 public:
  // Retire: how a stream is given back (see Lifetime above).
  struct Retire {
    void operator()(UringStream* stream) const { stream->GiveBack(); }
  };
  using Ptr = std::unique_ptr<UringStream, Retire>;

  // Connect: a non-blocking TCP or unix stream socket connected to `address` (`length` bytes
  // of it) within options.io_timeout, on `loop` (which outlives the stream). `peer` names the
  // peer in every message. Run by a task on `loop`.
  static io::Task<absl::StatusOr<Ptr>> Connect(io::Loop* loop, sockaddr_storage address,
                                               socklen_t length, std::string peer,
                                               StreamOptions options);
  UringStream(const UringStream&) = delete;
  UringStream& operator=(const UringStream&) = delete;

  // Write: sends all of `bytes` (encrypted once TLS is on). io_timeout bounds each stall, not
  // the whole write: it restarts after each progress. With `wait` false the last (or only)
  // piece is left to go with the next wait, so that a command and the wait for its reply go
  // out together (Read submits both); Flush waits for it. `bytes` must stay valid until the
  // task resumes.
  io::Task<absl::Status> Write(absl::string_view bytes, bool wait = true);
  // Flush: waits until everything written has been sent.
  io::Task<absl::Status> Flush();
  // Read: appends up to `max` bytes of plaintext to `out`, waiting for some until `deadline`.
  // The peer's orderly close (EOF, or TLS close_notify) is a kIo failure ("<peer> closed the
  // connection") unless `closed` is given: then it is OK with *closed = true and nothing
  // appended; over TLS only a close_notify counts (an EOF without it may be a truncation).
  // `reading` is the failure messages' verb ("timeout reading reply from ...").
  io::Task<absl::Status> Read(std::string* out, size_t max, absl::Time deadline,
                              bool* closed = nullptr, absl::string_view reading = "reading from");
  // StartTls: the client handshake within io_timeout, expecting a certificate for
  // `server_name` (TlsStream::NewClient: a DNS name, also sent as SNI, or an IP address).
  // `reading` as for Read.
  io::Task<absl::Status> StartTls(std::shared_ptr<TlsContext> context,
                                  absl::string_view server_name,
                                  absl::string_view reading = "reading from");
  // tls: the TLS stream once StartTls was called (also when it failed), else null.
  const TlsStream* tls() const { return transport_.tls_stream(); }
  // HasUnreadInput: bytes (or EOF) have arrived that nobody read yet. Never waits.
  bool HasUnreadInput() const;

  StreamFailure failure() const { return failure_; }
  const std::string& peer() const { return peer_; }
  void set_io_timeout(absl::Duration io_timeout) { options_.io_timeout = io_timeout; }

 private:
  enum Op : uint8_t { kOpConnect = 1, kOpLinkTimeout, kOpRecv, kOpSend, kOpCancel };

  UringStream(io::Loop* loop, int fd, std::string peer, StreamOptions options);
  ~UringStream() override;
  absl::Status Fail(StreamFailure kind, absl::string_view message);
  // Wait: queues a send of what the transport has to send (if none is under way) and, when
  // `receive`, a receive (if none is under way and the last one was read), then suspends until
  // a completion, `deadline` (and, while a send is stalled, io_timeout after its last
  // progress) or the next look at the stop flag. `what` names the wait in a timeout ("reading
  // reply from").
  io::Task<absl::Status> Wait(bool receive, absl::Time deadline, absl::string_view what);
  void OnCompletion(const io_uring_cqe& cqe) override;
  // GiveBack: cancels what is still in the ring; frees the stream now, or when its last
  // completion comes.
  void GiveBack();

  // ReceiveBuffers: one buffer, the stream's own.
  const char* Data(uint16_t /*buffer*/) const override { return recv_buffer_.get(); }
  void Unref(uint16_t /*buffer*/) override {}
  std::string& PlaintextSpare() override { return plaintext_spare_; }
  // TransportReader: Read's destination, while a Read is under way.
  bool Reading() const override { return reading_into_ != nullptr && reading_room_ > 0; }
  size_t Feed(absl::string_view bytes, int buffer, absl::Time now) override;
  bool TakeStartTls() override { return false; }

  io::Loop* const loop_;
  io::Waiter waiter_;  // the task waiting on this stream
  int fd_;
  std::string peer_;
  StreamOptions options_;
  Transport transport_;
  StreamFailure failure_ = StreamFailure::kNone;
  std::unique_ptr<char[]> recv_buffer_;
  std::string plaintext_spare_;
  int pending_ = 0;  // operations in the ring
  bool recv_armed_ = false;
  bool send_armed_ = false;
  bool eof_ = false;
  bool given_back_ = false;  // freed by its last completion
  int connect_result_ = 1;   // 1: not yet known
  int error_ = 0;            // the errno of a failed receive or send
  absl::Time send_progress_ = absl::InfinitePast();
  // Read's destination and how much more it takes.
  std::string* reading_into_ = nullptr;
  size_t reading_room_ = 0;
};

}  // namespace chute::net
