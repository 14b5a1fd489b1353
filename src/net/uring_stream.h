#pragma once

// UringStream: one connected socket, plain or TLS, for a thread that may wait (the delivery
// client, delivery/smtp_client.h), with its I/O on an io_uring that thread owns
// (docs/architecture.md, Network and TLS). The bytes go through net::Transport, the stream the
// shards use (TLS through the same client TlsStream), and every wait is one io_uring_enter
// that submits the send and the receive and waits for either: a round trip costs one system
// call where poll/send/recv cost three.
//
// The interface is net::Stream's (stream.h), so that a caller can use either; its failures
// say the same things ("timeout reading reply from ...", "connect to ...: Connection
// refused", "TLS handshake with ... failed: ...") and are classed the same (StreamFailure).
//
// Lifetime: every operation it puts in the ring has completed when a call returns, and the
// destructor cancels and waits for any left (an error path), so that no completion ever
// refers to a stream that is gone and the ring can serve the next one.
//
// One thread: the ring's (io::Ring is SINGLE_ISSUER).

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
#include "io/ring.h"
#include "net/stream.h"
#include "net/tls.h"
#include "net/transport.h"

namespace chute::net {

// Bytes one receive may bring (a reply burst, a TLS record and some).
inline constexpr size_t kUringStreamRecvBytes = 16 * 1024;

class UringStream : private ReceiveBuffers, private TransportReader {
 public:
  // Connect: a non-blocking TCP or unix stream socket connected to `address` (`length` bytes
  // of it) within options.io_timeout, through `ring` (which outlives the stream and has no
  // other user meanwhile). `peer` names the peer in every message.
  static absl::StatusOr<std::unique_ptr<UringStream>> Connect(io::Ring* ring,
                                                              const sockaddr_storage& address,
                                                              socklen_t length, std::string peer,
                                                              StreamOptions options);
  ~UringStream() override;
  UringStream(const UringStream&) = delete;
  UringStream& operator=(const UringStream&) = delete;

  // Write, Read, StartTls, tls, HasUnreadInput: as net::Stream's.
  absl::Status Write(absl::string_view bytes);
  absl::Status Read(std::string* out, size_t max, absl::Time deadline,
                    absl::string_view reading = "reading from");
  absl::Status StartTls(std::shared_ptr<TlsContext> context, absl::string_view server_name,
                        absl::string_view reading = "reading from");
  const TlsStream* tls() const { return transport_.tls_stream(); }
  bool HasUnreadInput() const;

  StreamFailure failure() const { return failure_; }
  const std::string& peer() const { return peer_; }
  void set_io_timeout(absl::Duration io_timeout) { options_.io_timeout = io_timeout; }

 private:
  enum Op : uint8_t { kOpConnect = 1, kOpLinkTimeout, kOpRecv, kOpSend, kOpCancel };

  UringStream(io::Ring* ring, int fd, std::string peer, StreamOptions options);
  absl::Status Fail(StreamFailure kind, absl::string_view message);
  // Wait: submits a send of what the transport has to send (if none is under way) and, when
  // `receive`, a receive (if none is under way and the last one was read), then waits for a
  // completion, up to `deadline` (and, while a send is stalled, io_timeout after its last
  // progress). `what` names the wait in a timeout ("reading reply from").
  absl::Status Wait(bool receive, absl::Time deadline, absl::string_view what);
  absl::Status OnCompletion(const io_uring_cqe& cqe);
  // Flush: waits until everything written has been sent.
  absl::Status Flush();
  // Drain: cancels what is still in the ring and waits for it.
  void Drain();

  // ReceiveBuffers: one buffer, the stream's own.
  const char* Data(uint16_t /*buffer*/) const override { return recv_buffer_.get(); }
  void Unref(uint16_t /*buffer*/) override {}
  std::string& PlaintextSpare() override { return plaintext_spare_; }
  // TransportReader: Read's destination, while a Read is under way.
  bool Reading() const override { return reading_into_ != nullptr && reading_room_ > 0; }
  size_t Feed(absl::string_view bytes, int buffer, absl::Time now) override;
  bool TakeStartTls() override { return false; }

  io::Ring* const ring_;
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
  int error_ = 0;  // the errno of a failed receive or send
  absl::Time send_progress_ = absl::InfinitePast();
  // Read's destination and how much more it takes.
  std::string* reading_into_ = nullptr;
  size_t reading_room_ = 0;
};

}  // namespace chute::net
