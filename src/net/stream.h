#pragma once

// Stream: one connected socket, plain or TLS, for the threads that may block (delivery
// workers, the OAuth key fetcher), never for a shard's loop (docs/architecture.md, Network and
// TLS). It is the one driver of a client-side TlsStream over a socket: the SMTP/LMTP client
// and the HTTPS client both talk through it.
//
// Every wait is bounded twice: by a deadline, and by a stop flag looked at every
// kStreamStopCheckInterval, so that a stopping chuted never waits for a silent peer. Each
// failure is an Unavailable Status whose message names the peer ("timeout reading from
// 127.0.0.1:24", "TLS handshake with 192.0.2.25:25 failed: ..."), and failure() tells its
// kind, which a caller maps to its own codes (delivery: 4.4.1, 4.4.2, 4.7.5).
//
// Threads: a Stream belongs to one thread at a time.

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "net/tls.h"

namespace chute::net {

// How often a wait looks at the stop flag.
inline constexpr absl::Duration kStreamStopCheckInterval = absl::Milliseconds(200);
// Plaintext is encrypted this much at a time, so that a large write is not held twice more (as
// ciphertext in the BIO and as the copy taken out of it).
inline constexpr size_t kStreamTlsWriteChunkBytes = 64 * 1024;

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

class Stream {
 public:
  // Connect: a non-blocking TCP or unix stream socket connected to `address` (`length` bytes of
  // it) within options.io_timeout. `peer` names the peer in every message.
  static absl::StatusOr<std::unique_ptr<Stream>> Connect(const sockaddr_storage& address,
                                                         socklen_t length, std::string peer,
                                                         StreamOptions options);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Write: sends all of `bytes` (encrypted once TLS is on). io_timeout bounds each stall, not
  // the whole write: it restarts after each progress.
  absl::Status Write(absl::string_view bytes);
  // Read: appends up to `max` bytes of plaintext to `out`, waiting for some until `deadline`.
  // The peer's orderly close (EOF, or TLS close_notify) is a kIo failure ("<peer> closed the
  // connection") unless `closed` is given: then it is OK with *closed = true and nothing
  // appended; over TLS only a close_notify counts (an EOF without it may be a truncation).
  // `reading` is the failure messages' verb ("timeout reading reply from ...").
  absl::Status Read(std::string* out, size_t max, absl::Time deadline, bool* closed = nullptr,
                    absl::string_view reading = "reading from");
  // StartTls: the client handshake within io_timeout, expecting a certificate for
  // `server_name` (TlsStream::NewClient: a DNS name, also sent as SNI, or an IP address).
  // `reading` as for Read.
  absl::Status StartTls(std::shared_ptr<TlsContext> context, absl::string_view server_name,
                        absl::string_view reading = "reading from");
  // tls: the TLS stream once StartTls was called (also when it failed), else null.
  const TlsStream* tls() const { return tls_.get(); }
  // HasUnreadInput: bytes (or EOF) have arrived that nobody read yet. Never waits.
  bool HasUnreadInput() const;

  StreamFailure failure() const { return failure_; }
  const std::string& peer() const { return peer_; }
  void set_io_timeout(absl::Duration io_timeout) { options_.io_timeout = io_timeout; }

 private:
  Stream(int fd, std::string peer, StreamOptions options)
      : fd_(fd), peer_(std::move(peer)), options_(options) {}
  absl::Status Fail(StreamFailure kind, absl::string_view message);
  absl::Status WaitFor(int16_t events, absl::Time deadline, StreamFailure kind,
                       absl::string_view what);
  absl::Status SendRaw(absl::string_view bytes);
  // RecvRaw: appends up to `max` bytes; *closed on EOF (nothing appended).
  absl::Status RecvRaw(std::string* out, size_t max, absl::Time deadline, bool* closed,
                       absl::string_view reading);
  absl::Status FlushCiphertext();

  int fd_;
  std::string peer_;
  StreamOptions options_;
  std::unique_ptr<TlsStream> tls_;
  StreamFailure failure_ = StreamFailure::kNone;
};

}  // namespace chute::net
