#pragma once

// TLS with BoringSSL over memory BIOs, so that the io_uring engine moves the ciphertext and no
// socket call ever blocks (docs/architecture.md, Network and TLS).
//
// TlsContext: the certificate chain and key of the [tls] section, TLS 1.2 and 1.3 only, ECDSA
// or RSA keys. Session tickets are on; BoringSSL rotates their keys by itself. Immutable once
// loaded; SIGHUP loads a new one and connections in progress keep the one they started with
// (shared_ptr). Any thread.
//
// TlsStream: one connection's TLS state. Ciphertext goes in with PutCiphertext(), plaintext
// comes out of ReadPlaintext(); plaintext to send goes in with Write(), ciphertext to send
// comes out of TakeCiphertext(). Owned by one shard thread (or, client side, by one delivery
// worker).

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace chute::net {

// kPrivateKeyFileBytesMax: a PEM private key is a few KiB (RSA 4096: 3.3 KiB); a larger file
// is not one.
inline constexpr size_t kPrivateKeyFileBytesMax = 64 * 1024;

// CheckPrivateKeyMode: whether a private key file whose permission bits are `mode` may be
// used. PermissionDenied (naming `path` and the mode) when every user may read or write it.
// Otherwise OK with a warning in `*warning` ("" when there is none) when its group may write
// it, or may read it and is not a group chuted runs with (`group_is_ours`): 0640 root:chute,
// as the package installs it, is fine. Pure.
absl::Status CheckPrivateKeyMode(absl::string_view path, uint32_t mode, bool group_is_ours,
                                 std::string* warning);

class TlsContext {
 public:
  // Load: reads the PEM chain and key; InvalidArgument (naming the file) when either is
  // unreadable, malformed, or the key does not match the certificate; PermissionDenied when
  // the key file's mode lets every user read or write it (CheckPrivateKeyMode, whose warning
  // it logs).
  static absl::StatusOr<std::shared_ptr<TlsContext>> Load(const std::string& certificate_path,
                                                          const std::string& private_key_path);
  // NewClient: a context for the client side of STARTTLS towards a downstream server
  // (delivery/smtp_client.h): TLS 1.2 and 1.3, no client certificate, and the server's
  // certificate is not verified: delivery TLS protects against passive eavesdropping only.
  static std::shared_ptr<TlsContext> NewClient();
  ~TlsContext();
  SSL_CTX* ctx() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class TlsStream {
 public:
  enum class Result { kOk, kWantMore, kClosed, kError };

  // TlsStream: a server-side stream; keeps `context` alive.
  explicit TlsStream(std::shared_ptr<TlsContext> context);
  // NewClient: a client-side stream (it sends the ClientHello first); keeps `context` alive.
  static std::unique_ptr<TlsStream> NewClient(std::shared_ptr<TlsContext> context);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  // PutCiphertext: bytes received from the peer (copied into the stream).
  void PutCiphertext(absl::string_view bytes);
  size_t pending_ciphertext() const;
  // Handshake: advances the handshake; kOk once it is complete, kWantMore while it needs
  // more input, kError on failure (then Error() says why).
  Result Handshake();
  bool handshake_done() const { return handshake_done_; }
  // ReadPlaintext: decrypts into `out` (up to `capacity` bytes appended). kWantMore when no
  // whole record is buffered, kClosed on close_notify.
  Result ReadPlaintext(std::string* out, size_t capacity);
  // Write: encrypts `plaintext` (memory BIOs never block, so it is always taken whole).
  Result Write(absl::string_view plaintext);
  // TakeCiphertext: appends what must be sent to the peer to `out`.
  void TakeCiphertext(std::string* out);
  // ReleaseBuffers: frees the memory BIOs' buffers when they hold nothing (a memory BIO keeps
  // the capacity of the most it ever held: the handshake's flights, the largest burst). For a
  // connection gone idle; the next bytes allocate again. BoringSSL frees its own record
  // buffers whenever they are empty.
  void ReleaseBuffers();
  // BufferedBytes: the capacity the memory BIOs hold now, in bytes (empty or not).
  size_t BufferedBytes() const;

  std::string Error() const { return error_; }
  const char* Version() const { return SSL_get_version(ssl_); }
  const char* Cipher() const;

 private:
  Result Fail(int ret);
  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // ciphertext from the peer; owned by ssl_
  BIO* out_ = nullptr;  // ciphertext to the peer; owned by ssl_
  bool handshake_done_ = false;
  std::string error_;
};

}  // namespace chute::net
