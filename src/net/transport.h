#pragma once

// Transport: one connection's byte stream between a socket and its reader, plain or TLS, with
// no I/O of its own (docs/architecture.md, Network and TLS). Whoever owns the socket hands it
// what a receive brought (Received), lets it feed its reader (Pump), asks it what to send next
// (NextSend) and says how much went (Sent). It holds the receive buffers it was given until
// its reader has taken their bytes, and reports each one it lets go to the ReceiveBuffers
// that lent it, so that the owner of the buffers keeps one budget for all its connections.
// The TLS is net::TlsStream, server side (STARTTLS, implicit TLS) or client side.
//
// One thread: the one that owns the connection (a shard's, in chuted).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "net/tls.h"

namespace chute::net {

// Receive buffers one transport holds unread (pipelined input while its reader waits for an
// answer); past it, input_full() says to stop receiving for it.
inline constexpr size_t kInputChunksMax = 16;
// TLS: ciphertext taken into the TLS stream ahead of the reader, and plaintext decrypted at a
// time.
inline constexpr size_t kTlsCiphertextMax = 64 * 1024;
inline constexpr size_t kTlsPlaintextChunkBytes = 16 * 1024;

// ReceiveBuffers: where a transport's input lies: numbered buffers lent by the socket's owner
// (in chuted, the shard's io_uring buffer ring), each held by a reference the owner took
// before Received and the transport gives back with Unref once the bytes are read. Also one
// spare plaintext buffer the owner lends to whichever of its transports is decrypting, so that
// an idle TLS connection holds no kTlsPlaintextChunkBytes of its own.
class ReceiveBuffers {
 public:
  virtual ~ReceiveBuffers() = default;
  virtual const char* Data(uint16_t buffer) const = 0;
  virtual void Unref(uint16_t buffer) = 0;
  virtual std::string& PlaintextSpare() = 0;
};

// TransportReader: what a transport feeds its plaintext to (in chuted, a connection's SMTP
// session).
class TransportReader {
 public:
  virtual ~TransportReader() = default;
  // Reading: whether it takes input now (not while it waits for a commit, a password check
  // or a handshake).
  virtual bool Reading() const = 0;
  // Feed: offers `bytes`, returns how many it took (0: none until it reads again). `buffer` is
  // the receive buffer they lie in, which it may hold with a reference of its own (a body kept
  // without a copy), or -1 when they are the transport's own memory (decrypted plaintext),
  // which is valid only during the call.
  virtual size_t Feed(absl::string_view bytes, int buffer, absl::Time now) = 0;
  // TakeStartTls: after a Feed of plaintext: whether the reader just agreed to start TLS (its
  // reply still to go out in plaintext). Asked once per Feed; true once per agreement.
  virtual bool TakeStartTls() = 0;
};

// PumpResult: what a Pump ran into; the caller acts on it and pumps again (handshake_done,
// starttls) or ends the connection (handshake_failed).
struct PumpResult {
  bool handshake_done = false;    // the TLS handshake just completed
  bool handshake_failed = false;  // it failed (TlsError() says why; an alert may be queued)
  bool peer_closed = false;       // close_notify or a broken record: no more input will come
  bool close_notify = false;      // peer_closed by a close_notify (not a broken record)
  bool starttls = false;          // the reader agreed to STARTTLS; the rest of the input is TLS
};

class Transport {
 public:
  // Transport: plain, its input lent by `buffers`, which must outlive it. A transport
  // destroyed while it holds input gives nothing back (its owner's buffers go with it): Reset
  // first to give them back.
  // `plaintext_chunk_bytes` is how much it decrypts at a time (TlsStream::ReadPlaintext makes
  // room for that much each time it is asked).
  explicit Transport(ReceiveBuffers* buffers,
                     size_t plaintext_chunk_bytes = kTlsPlaintextChunkBytes)
      : buffers_(buffers), plaintext_chunk_bytes_(plaintext_chunk_bytes) {}
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Received: `length` bytes in `buffer`, whose reference the transport now holds.
  void Received(uint16_t buffer, uint32_t length);
  // input_full: it holds kInputChunksMax receive buffers unread: stop receiving until a Pump
  // frees some.
  bool input_full() const { return input_.size() >= kInputChunksMax; }
  bool has_input() const { return !input_.empty(); }
  // DropInput: gives back every receive buffer it holds, unread (a session that ended).
  void DropInput();

  // Pump: plain, feeds the input to `reader` while it reads; TLS, takes ciphertext into the
  // TLS stream (at most kTlsCiphertextMax ahead), advances the handshake, and feeds what it
  // decrypts while the reader reads. Stops at the first event in PumpResult.
  PumpResult Pump(TransportReader& reader, absl::Time now);

  // StartTls: from here on the input and the output are TLS through `stream` (a server stream
  // for STARTTLS or implicit TLS, or a client stream); the handshake must end by `deadline`.
  // Output written before is sent in plaintext first.
  void StartTls(std::unique_ptr<TlsStream> stream, absl::Time deadline);
  bool tls() const { return tls_ != nullptr; }
  bool handshaking() const { return tls_ != nullptr && !tls_->handshake_done(); }
  // HandshakeOverdue: a handshake still under way at `now`, past its deadline.
  bool HandshakeOverdue(absl::Time now) const { return handshaking() && now >= deadline_; }
  absl::string_view TlsVersion() const;
  std::string TlsError() const { return tls_ != nullptr ? tls_->Error() : std::string(); }
  const TlsStream* tls_stream() const { return tls_.get(); }

  // accepts_output: whether Write may be called: not while an implicit-TLS handshake is under
  // way (a reply written then would go out before the handshake, unencrypted).
  bool accepts_output() const { return tls_ == nullptr || tls_->handshake_done(); }
  // Write: `plaintext` to send (encrypted when TLS is on). False when TLS refused it
  // (TlsError() says why).
  bool Write(absl::string_view plaintext);
  // NextSend: the bytes to send next; they stay where they are until Sent. Empty when there is
  // nothing to send. While a send of its view is under way it returns that same view (and
  // only queues more behind it).
  absl::string_view NextSend();
  // Sent: `bytes` of NextSend's view went out.
  void Sent(size_t bytes);
  // sent_all: nothing is left of the last NextSend's view.
  bool sent_all() const { return send_offset_ == sending_.size(); }
  // DropOutput: forgets everything queued (the peer is gone).
  void DropOutput();

  // ReleaseIdle: with nothing unread or unsent, frees the capacity its output buffers and TLS
  // memory kept from their largest use; false (nothing freed) when something is held.
  bool ReleaseIdle();
  // Reset: back to a fresh plain transport: input given back, output dropped, TLS gone.
  void Reset();

 private:
  struct Chunk {
    uint16_t buffer;
    uint32_t offset;
    uint32_t length;
  };
  PumpResult PumpPlain(TransportReader& reader, absl::Time now);
  PumpResult PumpTls(TransportReader& reader, absl::Time now);
  void PopChunk();
  void BorrowPlaintext();
  void ReturnPlaintext();

  ReceiveBuffers* const buffers_;
  const size_t plaintext_chunk_bytes_;
  std::deque<Chunk> input_;
  // Output: bytes queued (out_queue_) and the buffer being sent (sending_ from send_offset_,
  // never touched between NextSend and Sent).
  std::string out_queue_;
  std::string sending_;
  size_t send_offset_ = 0;
  std::unique_ptr<TlsStream> tls_;
  absl::Time deadline_ = absl::InfiniteFuture();
  // Plaintext decrypted but not yet taken by the reader: plain_in_[plain_offset_..], in the
  // buffer lent by ReceiveBuffers::PlaintextSpare while it holds any.
  std::string plain_in_;
  size_t plain_offset_ = 0;
};

}  // namespace chute::net
