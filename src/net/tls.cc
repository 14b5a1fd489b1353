// tls.cc: BoringSSL TLS contexts and streams over memory BIOs, for shards and delivery.

#include "net/tls.h"

#include <openssl/err.h>

#include "absl/strings/str_cat.h"
#include "base/check.h"

namespace chute::net {
namespace {

std::string OpenSslError() {
  uint32_t code = ERR_get_error();
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  ERR_clear_error();
  return code == 0 ? "unknown error" : text;
}

// MemBioCapacity: the bytes a memory BIO has allocated for its contents.
size_t MemBioCapacity(BIO* bio) {
  BUF_MEM* memory = nullptr;
  return BIO_get_mem_ptr(bio, &memory) == 1 && memory != nullptr ? memory->max : 0;
}

BIO* NewMemBio() {
  BIO* bio = BIO_new(BIO_s_mem());
  CHECK(bio != nullptr);
  return bio;
}

constexpr const char* kServerCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

}  // namespace

absl::StatusOr<std::shared_ptr<TlsContext>> TlsContext::Load(const std::string& certificate_path,
                                                             const std::string& private_key_path) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  CHECK(ctx != nullptr);
  std::shared_ptr<TlsContext> context(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // TLS 1.2: only AEAD suites with forward secrecy (no CBC: LUCKY13), in our order; TLS 1.3's
  // suites are all AEAD with forward secrecy already.
  CHECK(SSL_CTX_set_strict_cipher_list(ctx, kServerCiphers) == 1);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Session-id resumption (TLS 1.2) needs an id context; tickets work without one.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  static constexpr unsigned char kSessionIdContext[] = "chute";
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof(kSessionIdContext) - 1);
  if (SSL_CTX_use_certificate_chain_file(ctx, certificate_path.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(certificate_path, ": cannot load the certificate chain: ", OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, private_key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(private_key_path, ": cannot load the private key: ", OpenSslError()));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(private_key_path, " does not match ", certificate_path, ": ", OpenSslError()));
  }
  return context;
}

std::shared_ptr<TlsContext> TlsContext::NewClient() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  CHECK(ctx != nullptr);
  std::shared_ptr<TlsContext> context(new TlsContext(ctx));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  return context;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsStream::TlsStream(std::shared_ptr<TlsContext> context) : context_(std::move(context)) {
  ssl_ = SSL_new(context_->ctx());
  CHECK(ssl_ != nullptr);
  in_ = NewMemBio();
  out_ = NewMemBio();
  SSL_set_bio(ssl_, in_, out_);
  // The certificate, key and cipher configuration copied into the SSL are not needed once the
  // handshake is done (there is no renegotiation): freed then.
  SSL_set_shed_handshake_config(ssl_, 1);
  SSL_set_accept_state(ssl_);
}

std::unique_ptr<TlsStream> TlsStream::NewClient(std::shared_ptr<TlsContext> context) {
  std::unique_ptr<TlsStream> stream(new TlsStream(std::move(context)));
  SSL_set_connect_state(stream->ssl_);
  return stream;
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

void TlsStream::PutCiphertext(absl::string_view bytes) {
  int written = BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
  CHECK(written == static_cast<int>(bytes.size()));
}

size_t TlsStream::pending_ciphertext() const { return BIO_pending(in_); }

TlsStream::Result TlsStream::Fail(int ret) {
  int error = SSL_get_error(ssl_, ret);
  if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
    return Result::kWantMore;
  }
  if (error == SSL_ERROR_ZERO_RETURN) {
    return Result::kClosed;
  }
  error_ = OpenSslError();
  return Result::kError;
}

TlsStream::Result TlsStream::Handshake() {
  if (handshake_done_) {
    return Result::kOk;
  }
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    return Result::kOk;
  }
  return Fail(ret);
}

TlsStream::Result TlsStream::ReadPlaintext(std::string* out, size_t capacity) {
  size_t old_size = out->size();
  out->resize(old_size + capacity);
  int ret = SSL_read(ssl_, out->data() + old_size, static_cast<int>(capacity));
  if (ret > 0) {
    out->resize(old_size + static_cast<size_t>(ret));
    return Result::kOk;
  }
  out->resize(old_size);
  return Fail(ret);
}

TlsStream::Result TlsStream::Write(absl::string_view plaintext) {
  while (!plaintext.empty()) {
    int ret = SSL_write(ssl_, plaintext.data(), static_cast<int>(plaintext.size()));
    if (ret <= 0) {
      return Fail(ret);
    }
    plaintext.remove_prefix(static_cast<size_t>(ret));
  }
  return Result::kOk;
}

void TlsStream::TakeCiphertext(std::string* out) {
  size_t pending = BIO_pending(out_);
  if (pending == 0) {
    return;
  }
  size_t old_size = out->size();
  out->resize(old_size + pending);
  int read = BIO_read(out_, out->data() + old_size, static_cast<int>(pending));
  out->resize(old_size + static_cast<size_t>(read > 0 ? read : 0));
}

void TlsStream::ReleaseBuffers() {
  // A fresh BIO in place of an empty one: mem BIOs have no call that frees their buffer, and
  // SSL_set0_*bio frees the old one.
  if (BIO_pending(in_) == 0 && MemBioCapacity(in_) > 0) {
    in_ = NewMemBio();
    SSL_set0_rbio(ssl_, in_);
  }
  if (BIO_pending(out_) == 0 && MemBioCapacity(out_) > 0) {
    out_ = NewMemBio();
    SSL_set0_wbio(ssl_, out_);
  }
}

size_t TlsStream::BufferedBytes() const { return MemBioCapacity(in_) + MemBioCapacity(out_); }

const char* TlsStream::Cipher() const {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  return cipher == nullptr ? "" : SSL_CIPHER_get_name(cipher);
}

}  // namespace chute::net
