#pragma once

// TLS with BoringSSL over memory BIOs, so that the io_uring engine moves the ciphertext and no
// socket call ever blocks (docs/architecture.md, Network and TLS).
//
// TlsContext: the certificate chain and key of the [tls] section, TLS 1.2 and 1.3 only, ECDSA
// or RSA keys. Session tickets are on; BoringSSL rotates their keys by itself. Immutable once
// loaded; SIGHUP loads a new one and connections in progress keep the one they started with
// (shared_ptr). Any thread. A client context (delivery's STARTTLS) verifies the server's
// certificate: the chain against a CA file, the name each stream expects, the key's pins.
//
// TlsStream: one connection's TLS state. Ciphertext goes in with PutCiphertext(), plaintext
// comes out of ReadPlaintext(); plaintext to send goes in with Write(), ciphertext to send
// comes out of TakeCiphertext(). Owned by one shard thread (or, client side, by one delivery
// worker).

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/tls_pin.h"

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

// TlsClientOptions: how a client context verifies servers. Every stream of it checks the
// chain against `ca_file`, the name it was made with, and, when `pins` is not empty, that the
// server certificate's public key is one of them.
struct TlsClientOptions {
  std::string ca_file = "/etc/ssl/certs/ca-certificates.crt";  // PEM trust anchors
  std::vector<TlsPin> pins;
  // enforce: a server that fails verification fails the handshake (an alert is sent). When
  // false the handshake goes on and the stream only records why (TlsStream::PeerUnverified).
  bool enforce = true;
};

class TlsContext {
 public:
  // Load: reads the PEM chain and key; InvalidArgument (naming the file) when either is
  // unreadable, malformed, or the key does not match the certificate; PermissionDenied when
  // the key file's mode lets every user read or write it (CheckPrivateKeyMode, whose warning
  // it logs).
  static absl::StatusOr<std::shared_ptr<TlsContext>> Load(const std::string& certificate_path,
                                                          const std::string& private_key_path);
  // NewClient: a context for the client side of STARTTLS towards a downstream server
  // (delivery/smtp_client.h): TLS 1.2 and 1.3, no client certificate, the server verified as
  // `options` say. InvalidArgument naming the file when the CA file is unreadable or holds
  // no certificate.
  static absl::StatusOr<std::shared_ptr<TlsContext>> NewClient(const TlsClientOptions& options);
  // NewUnverifiedClient: a client context that accepts any certificate, for chute-load and
  // tests talking to a chuted with a self-signed one. Never for delivery.
  static std::shared_ptr<TlsContext> NewUnverifiedClient();
  ~TlsContext();
  SSL_CTX* ctx() const { return ctx_; }
  // enforces_verification: a client context whose failed verification fails the handshake.
  bool enforces_verification() const { return enforce_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  static int VerifyServer(X509_STORE_CTX* store, void* arg);
  SSL_CTX* ctx_;
  std::vector<TlsPin> pins_;  // client: see TlsClientOptions
  bool enforce_ = false;      // client: see TlsClientOptions
};

class TlsStream {
 public:
  enum class Result { kOk, kWantMore, kClosed, kError };

  // TlsStream: a server-side stream; keeps `context` alive.
  explicit TlsStream(std::shared_ptr<TlsContext> context);
  // NewClient: a client-side stream (it sends the ClientHello first); keeps `context` alive.
  // `server_name` is the name the server's certificate must carry: a DNS name (also sent as
  // SNI) or an IP address (matched against the certificate's IP addresses; no SNI, RFC 6066
  // §3); "" checks no name.
  static std::unique_ptr<TlsStream> NewClient(std::shared_ptr<TlsContext> context,
                                              absl::string_view server_name = "");
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

  // Error: why the last call failed. A handshake refused because the server's certificate
  // did not verify says why ("certificate verify failed: self signed certificate", "name
  // mismatch: certificate is for evil.invalid, expected mx.example.test").
  std::string Error() const { return error_; }
  // PeerUnverified: client side, once the handshake is done: "" when the server's
  // certificate verified (chain, name, pins), else why not (as Error() would say it).
  const std::string& PeerUnverified() const { return peer_unverified_; }
  // RefusedCertificate: client side: the handshake failed because the server's certificate
  // did not verify and the context enforces verification.
  bool RefusedCertificate() const;
  const char* Version() const { return SSL_get_version(ssl_); }
  const char* Cipher() const;

 private:
  friend class TlsContext;  // VerifyServer records its verdict in peer_unverified_
  Result Fail(int ret);
  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // ciphertext from the peer; owned by ssl_
  BIO* out_ = nullptr;  // ciphertext to the peer; owned by ssl_
  bool handshake_done_ = false;
  std::string error_;
  std::string server_name_;      // client: the name expected; "" = none
  std::string peer_unverified_;  // client: see PeerUnverified()
  bool verify_failed_ = false;   // client: VerifyServer refused the certificate
};

}  // namespace chute::net
